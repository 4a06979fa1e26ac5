//! The sequence tasks' `SeqEngine` against `SeqReferenceEngine`, its layout contracts (groups,
//! ranks, threads, checkpoints), its config errors, and a learnability smoke test.
//!
//! Tolerances as in `cpu_vs_reference`: actions exact, except that a response whose token
//! differs where the uniform draw is within 1e-5 of a cumulative-probability boundary (GEMM
//! rounding may legally flip it) is dropped from the comparison; floats within
//! `1e-5 * max(1, |ref|)`; gradients within `1e-4 * max |ref grad|`.

// Time-major `t * num_envs + env` indexing reads clearer as index loops.
#![allow(clippy::needless_range_loop)]

use drover_kernels::reference::{forward, log_softmax};
use drover_kernels::rng::{run_key, uniform, STREAM_ACTION};
use drover_kernels::seq::reference::{observation, prompt, prompt_of, SeqReferenceEngine};
use drover_kernels::seq::SeqEngine;
use drover_kernels::{
    create_seq_engine, AdamConfig, DeviceRequest, Engine, EngineConfig, EngineState, EnvPlan, MinibatchEval,
    PromptRef, Rollout, SeqTask, TaskFamily,
};

fn task(family: TaskFamily, vocab: usize, prompt_len: usize, group_size: usize) -> SeqTask {
    SeqTask {
        family,
        vocab,
        prompt_len,
        group_size,
        expert_per_group: 0,
    }
}

fn seq_config(
    task: &SeqTask,
    num_envs: usize,
    hidden: Vec<usize>,
    seed: u64,
    threads: usize,
) -> EngineConfig {
    EngineConfig {
        num_envs,
        env_offset: 0,
        num_steps: task.response_len(),
        seed,
        shape: task.net_shape(hidden),
        adam: AdamConfig::default(),
        threads,
        cuda_ordinal: 0,
    }
}

fn close(a: f32, b: f32, what: &str, s: usize) {
    assert!(
        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
        "{what}[{s}]: engine {a} vs reference {b}"
    );
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Sharpens the initial policy (the actor output starts at gain 0.01, nearly uniform) so that
/// tokens depend on the prompt and prefix and the comparison exercises real logits.
fn sharpen(engine: &mut dyn Engine, rf: &mut dyn Engine) {
    let mut p = engine.params().expect("params");
    for (i, v) in p.iter_mut().enumerate() {
        *v = *v * 3.0 + 0.3 * (((i * 7919) % 13) as f32 / 13.0 - 0.5);
    }
    engine.set_params(&p).expect("set");
    rf.set_params(&p).expect("set");
}

/// Compares one rollout of both engines; `diverged[env]` marks responses that legally split.
/// `plan`: the rollout's plan, `None` for the default layout.
#[allow(clippy::too_many_arguments)]
fn compare_rollout(
    a: &Rollout,
    b: &Rollout,
    task: &SeqTask,
    cfg: &EngineConfig,
    params: &[f32],
    step0: u64,
    plan: Option<&[EnvPlan]>,
    diverged: &mut [bool],
) {
    let (nt, ne) = (b.num_steps, b.num_envs);
    assert_eq!((a.num_steps, a.num_envs), (nt, ne));
    let key = run_key(cfg.seed);
    let layout = drover_kernels::ParamLayout::new(&cfg.shape).expect("layout");
    for e in 0..ne {
        for t in 0..nt {
            let s = t * ne + e;
            if a.actions[s] != b.actions[s] {
                // Recompute the reference distribution there: the draw must sit on a boundary.
                let rollout = (step0 / nt as u64) as u32;
                let pr = match plan {
                    Some(plan) => prompt_of(task, key, plan[e].prompt),
                    None => prompt(task, key, rollout, ((cfg.env_offset + e) / task.group_size) as u32),
                };
                let prefix: Vec<u32> = (0..t).map(|j| b.actions[j * ne + e]).collect();
                let (logits, _) = forward(&layout, params, &observation(task, &pr, &prefix, t));
                let u = uniform(
                    key,
                    STREAM_ACTION,
                    (cfg.env_offset + e) as u32,
                    (step0 + t as u64) as u32,
                );
                let mut cum = 0.0f32;
                let near = log_softmax(&logits).iter().any(|lp| {
                    cum += lp.exp();
                    (u - cum).abs() < 1e-5
                });
                assert!(
                    near,
                    "token differs at t {t} env {e}: u {u} is not on a boundary"
                );
                diverged[e] = true;
                break;
            }
            close(a.logp[s], b.logp[s], "logp", s);
            close(a.entropy[s], b.entropy[s], "entropy", s);
            close(a.values[s], b.values[s], "values", s);
            close(a.next_values[s], b.next_values[s], "next_values", s);
            assert_eq!(a.rewards[s], b.rewards[s], "reward at {s}");
            assert_eq!(
                (a.terminated[s], a.truncated[s]),
                (b.terminated[s], b.truncated[s]),
                "flags at {s}"
            );
        }
        if !diverged[e] {
            assert_eq!(a.finished_returns[e], b.finished_returns[e]);
        }
    }
    assert_eq!(a.finished_lengths, vec![nt as u32; ne]);
    assert_eq!(a.finished_returns.len(), ne);
}

#[test]
fn seq_engine_matches_reference_rollout_evaluate_and_grad() {
    for (family, threads) in [
        (TaskFamily::Reverse, 1),
        (TaskFamily::Add, 2),
        (TaskFamily::Sort, 3),
    ] {
        let tk = task(family, 5, 4, 4);
        let cfg = seq_config(&tk, 96, vec![16, 16], 5, threads);
        let mut eng = SeqEngine::new(cfg.clone(), tk).expect("engine");
        let mut rf = SeqReferenceEngine::new(cfg.clone(), tk).expect("reference");
        assert_eq!(
            eng.params().expect("p"),
            rf.params().expect("p"),
            "same initialisation"
        );
        sharpen(&mut eng, &mut rf);
        let (mut a, mut b) = (Rollout::default(), Rollout::default());
        let mut diverged = vec![false; cfg.num_envs];
        let nt = tk.response_len();
        for r in 0..3u64 {
            let params = rf.params().expect("p");
            eng.rollout(&mut a).expect("rollout");
            rf.rollout(&mut b).expect("reference rollout");
            assert_eq!(eng.global_step(), (r + 1) * nt as u64);
            assert_eq!(rf.global_step(), eng.global_step());
            compare_rollout(&a, &b, &tk, &cfg, &params, r * nt as u64, None, &mut diverged);
        }
        assert!(
            diverged.iter().filter(|&&d| d).count() <= 2,
            "{family}: too many splits"
        );
        // The sharpened policy must not be trivially constant: several distinct tokens occur.
        let distinct = (0..5u32).filter(|v| b.actions.contains(v)).count();
        assert!(distinct >= 3, "{family}: only {distinct} distinct tokens");

        // Evaluate a shuffled subset on both, twice into one gradient, then compare.
        let n = nt * cfg.num_envs;
        let samples: Vec<u32> = (0..n)
            .map(|i| ((i * 37 + 11) % n) as u32)
            .filter(|&s| !diverged[s as usize % cfg.num_envs])
            .collect();
        for part in [&samples[..samples.len() / 3], &samples[samples.len() / 3..]] {
            let (mut ea, mut eb) = (MinibatchEval::default(), MinibatchEval::default());
            eng.evaluate(part, &mut ea).expect("evaluate");
            rf.evaluate(part, &mut eb).expect("reference evaluate");
            for j in 0..part.len() {
                close(ea.logp[j], eb.logp[j], "eval logp", j);
                close(ea.entropy[j], eb.entropy[j], "eval entropy", j);
                close(ea.values[j], eb.values[j], "eval values", j);
            }
            let m = part.len();
            let d_logp: Vec<f32> = (0..m).map(|i| ((i % 7) as f32 - 3.0) / m as f32).collect();
            let d_value: Vec<f32> = (0..m).map(|i| ((i % 5) as f32 - 1.5) / m as f32).collect();
            let d_ent: Vec<f32> = (0..m)
                .map(|i| -0.01 * (1.0 + (i % 3) as f32) / m as f32)
                .collect();
            eng.accumulate_grad(&d_logp, &d_value, &d_ent)
                .expect("backward");
            rf.accumulate_grad(&d_logp, &d_value, &d_ent)
                .expect("reference backward");
        }
        let (mut ga, mut gb) = (Vec::new(), Vec::new());
        eng.reduce_grads(&mut |g| ga = g.to_vec()).expect("reduce");
        rf.reduce_grads(&mut |g| gb = g.to_vec()).expect("reduce");
        let scale = gb.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(scale > 0.0, "the reference gradient is zero");
        for (i, (x, y)) in ga.iter().zip(&gb).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * scale,
                "{family} grad[{i}]: {x} vs {y}"
            );
        }
        // One Adam step with clipping on both gives the same parameters.
        let na = eng.apply_grads(1e-2, Some(0.5)).expect("apply");
        let nb = rf.apply_grads(1e-2, Some(0.5)).expect("apply");
        assert!((na - nb).abs() <= 1e-5 * nb, "norm {na} vs {nb}");
        for (x, y) in eng
            .params()
            .expect("p")
            .iter()
            .zip(&rf.params().expect("p"))
        {
            assert!((x - y).abs() <= 1e-5, "params after Adam: {x} vs {y}");
        }
    }
}

#[test]
fn evaluate_reproduces_rollout_logp_exactly() {
    let tk = task(TaskFamily::Add, 4, 6, 8);
    for threads in [1, 2] {
        let cfg = seq_config(&tk, 160, vec![32], 9, threads);
        let mut eng = SeqEngine::new(cfg.clone(), tk).expect("engine");
        let mut ro = Rollout::default();
        eng.rollout(&mut ro).expect("rollout");
        let n = (ro.num_steps * ro.num_envs) as u32;
        // Reverse order, so rows land in other chunks and other GEMM positions than in the rollout.
        let samples: Vec<u32> = (0..n).rev().collect();
        let mut ev = MinibatchEval::default();
        eng.evaluate(&samples, &mut ev).expect("evaluate");
        for (j, &s) in samples.iter().enumerate() {
            let s = s as usize;
            assert_eq!(ev.logp[j].to_bits(), ro.logp[s].to_bits(), "logp at {s}");
            assert_eq!(
                ev.entropy[j].to_bits(),
                ro.entropy[s].to_bits(),
                "entropy at {s}"
            );
            assert_eq!(
                ev.values[j].to_bits(),
                ro.values[s].to_bits(),
                "value at {s}"
            );
        }
    }
}

/// Expert responses (SEMANTICS.md section 6): the last `expert_per_group` envs of each group
/// are the answer, teacher-forced, scored under the current policy like sampled tokens; the
/// engine matches the reference (over two ranks' offsets and several threads), `evaluate`
/// reproduces the experts' numbers exactly, and the sampled envs draw exactly what a run
/// without experts draws.
#[test]
fn expert_responses_are_teacher_forced_answers_and_match_the_reference() {
    for (family, experts, threads, offset) in [
        (TaskFamily::Reverse, 1, 1, 0),
        (TaskFamily::Add, 2, 2, 8),
        (TaskFamily::Sort, 3, 3, 0),
    ] {
        let tk = SeqTask {
            expert_per_group: experts,
            ..task(family, 5, 4, 4)
        };
        let cfg = EngineConfig {
            env_offset: offset,
            ..seq_config(&tk, 64, vec![16, 16], 7, threads)
        };
        let mut eng = SeqEngine::new(cfg.clone(), tk).expect("engine");
        let mut rf = SeqReferenceEngine::new(cfg.clone(), tk).expect("reference");
        let plain = SeqTask {
            expert_per_group: 0,
            ..tk
        };
        let mut none = SeqEngine::new(cfg.clone(), plain).expect("engine without experts");
        sharpen(&mut eng, &mut rf);
        none.set_params(&eng.params().expect("p")).expect("set");
        let (nt, ne) = (tk.response_len(), cfg.num_envs);
        let key = run_key(cfg.seed);
        let layout = drover_kernels::ParamLayout::new(&cfg.shape).expect("layout");
        let (mut a, mut b, mut c) = (Rollout::default(), Rollout::default(), Rollout::default());
        let mut diverged = vec![false; ne];
        for r in 0..2u64 {
            let params = rf.params().expect("p");
            eng.rollout(&mut a).expect("rollout");
            rf.rollout(&mut b).expect("reference rollout");
            none.rollout(&mut c).expect("rollout without experts");
            compare_rollout(&a, &b, &tk, &cfg, &params, r * nt as u64, None, &mut diverged);
            let mut n_expert = 0;
            for e in 0..ne {
                let pr = prompt(&tk, key, r as u32, ((offset + e) / 4) as u32);
                let mut answer = vec![0u32; nt];
                tk.answer(&pr, &mut answer);
                let resp: Vec<u32> = (0..nt).map(|t| a.actions[t * ne + e]).collect();
                if !tk.is_expert(offset + e) {
                    // The sampled envs: the very tokens of a run without experts.
                    let plain_resp: Vec<u32> = (0..nt).map(|t| c.actions[t * ne + e]).collect();
                    assert_eq!(resp, plain_resp, "{family}: sampled env {e} changed");
                    continue;
                }
                n_expert += 1;
                assert!(!diverged[e], "{family}: an expert response cannot split");
                assert_eq!(resp, answer, "{family}: expert env {e} is not the answer");
                assert_eq!(a.finished_returns[e], 1.0, "{family}: expert env {e} is wrong");
                // logp and entropy of the forced token under the current policy, by hand.
                for t in 0..nt {
                    let (logits, value) =
                        forward(&layout, &params, &observation(&tk, &pr, &answer[..t], t));
                    let lp = log_softmax(&logits);
                    close(a.logp[t * ne + e], lp[answer[t] as usize], "expert logp", e);
                    close(a.values[t * ne + e], value, "expert value", e);
                }
            }
            assert_eq!(n_expert, ne / 4 * experts, "{family}: expert count");
        }
        // Evaluate reproduces every token, the forced ones included, bit for bit.
        let n = (nt * ne) as u32;
        let samples: Vec<u32> = (0..n).rev().collect();
        let mut ev = MinibatchEval::default();
        eng.evaluate(&samples, &mut ev).expect("evaluate");
        for (j, &s) in samples.iter().enumerate() {
            let s = s as usize;
            assert_eq!(ev.logp[j].to_bits(), a.logp[s].to_bits(), "{family}: logp at {s}");
            assert_eq!(ev.entropy[j].to_bits(), a.entropy[s].to_bits(), "{family}: entropy at {s}");
        }
    }
}

/// `sum d_logp * logp + d_value * V + d_entropy * H` over `samples` at the current parameters.
fn loss(eng: &mut dyn Engine, samples: &[u32], d: &[[f32; 3]]) -> f64 {
    let mut ev = MinibatchEval::default();
    eng.evaluate(samples, &mut ev).expect("evaluate");
    (0..samples.len())
        .map(|j| (d[j][0] * ev.logp[j] + d[j][1] * ev.values[j] + d[j][2] * ev.entropy[j]) as f64)
        .sum()
}

#[test]
fn accumulate_grad_matches_finite_differences() {
    let tk = task(TaskFamily::Reverse, 3, 2, 2);
    let cfg = seq_config(&tk, 8, vec![4], 21, 1);
    let mut eng = SeqEngine::new(cfg, tk).expect("engine");
    let mut p0 = eng.params().expect("p");
    // Larger actor output weights than the initialisation, so the log-probabilities curve.
    p0.iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = *v * 4.0 + 0.2 * ((i % 5) as f32 - 2.0));
    eng.set_params(&p0).expect("set");
    eng.rollout(&mut Rollout::default()).expect("rollout");
    let samples: Vec<u32> = (0..16).collect();
    let d: Vec<[f32; 3]> = (0..16)
        .map(|i| {
            [
                ((i % 5) as f32 - 2.0) * 0.3,
                ((i % 3) as f32 - 1.0) * 0.2,
                0.1 * ((i % 2) as f32 - 0.5),
            ]
        })
        .collect();
    let mut ev = MinibatchEval::default();
    eng.evaluate(&samples, &mut ev).expect("evaluate");
    let col = |k: usize| d.iter().map(|x| x[k]).collect::<Vec<f32>>();
    eng.accumulate_grad(&col(0), &col(1), &col(2))
        .expect("backward");
    let mut grad = Vec::new();
    eng.reduce_grads(&mut |g| grad = g.to_vec())
        .expect("reduce");
    let eps = 1e-2f32;
    let mut checked = 0;
    for i in 0..p0.len() {
        let mut p = p0.clone();
        p[i] = p0[i] + eps;
        eng.set_params(&p).expect("set");
        let up = loss(&mut eng, &samples, &d);
        p[i] = p0[i] - eps;
        eng.set_params(&p).expect("set");
        let down = loss(&mut eng, &samples, &d);
        let fd = ((up - down) / (2.0 * eps as f64)) as f32;
        assert!(
            (fd - grad[i]).abs() <= 2e-3 + 2e-2 * fd.abs(),
            "param {i}: finite difference {fd} vs backward {}",
            grad[i]
        );
        if grad[i].abs() > 1e-3 {
            checked += 1;
        }
    }
    assert!(
        checked > p0.len() / 3,
        "too few non-zero gradients: {checked} of {}",
        p0.len()
    );
}

#[test]
fn groups_share_prompts_and_ranks_split_exactly() {
    let tk = task(TaskFamily::Reverse, 4, 3, 8);
    let whole_cfg = seq_config(&tk, 64, vec![16], 3, 1);
    let mut whole = SeqEngine::new(whole_cfg.clone(), tk).expect("engine");
    let mut ranks: Vec<SeqEngine> = (0..2)
        .map(|r| {
            let cfg = EngineConfig {
                num_envs: 32,
                env_offset: 32 * r,
                threads: 1 + r,
                ..whole_cfg.clone()
            };
            SeqEngine::new(cfg, tk).expect("rank engine")
        })
        .collect();
    let (mut w, mut parts) = (Rollout::default(), [Rollout::default(), Rollout::default()]);
    let mut previous = Vec::new();
    for _ in 0..3 {
        whole.rollout(&mut w).expect("rollout");
        for (e, p) in ranks.iter_mut().zip(parts.iter_mut()) {
            e.rollout(p).expect("rank rollout");
        }
        // Prompts: rank r holds global envs 32r..32r+32, identical to the whole run's, and the
        // 8 envs of a group share one prompt.
        let pl = tk.prompt_len;
        assert_eq!(whole.prompts().len(), 64 * pl);
        assert_eq!(ranks[0].prompts(), &whole.prompts()[..32 * pl]);
        assert_eq!(ranks[1].prompts(), &whole.prompts()[32 * pl..]);
        let envs: Vec<&[u32]> = whole.prompts().chunks(pl).collect();
        assert!(envs.chunks(8).all(|g| g.iter().all(|p| *p == g[0])), "a group's envs differ in prompt");
        let groups: Vec<&[u32]> = envs.iter().step_by(8).copied().collect();
        assert!(
            groups.iter().any(|g| *g != groups[0]),
            "all groups drew the same prompt"
        );
        assert_ne!(
            whole.prompts(),
            &previous[..],
            "a new rollout draws new prompts"
        );
        previous = whole.prompts().to_vec();
        // Every response's reward is the verifier's verdict on its group's prompt.
        let (nt, ne) = (w.num_steps, w.num_envs);
        let mut correct = 0;
        for e in 0..ne {
            let resp: Vec<u32> = (0..nt).map(|t| w.actions[t * ne + e]).collect();
            let ok = tk.verify(groups[e / 8], &resp);
            assert_eq!(w.rewards[(nt - 1) * ne + e], if ok { 1.0 } else { 0.0 });
            correct += ok as usize;
            for t in 0..nt - 1 {
                assert_eq!(w.rewards[t * ne + e], 0.0);
                assert_eq!(w.terminated[t * ne + e], 0);
                assert_eq!(w.next_values[t * ne + e], w.values[(t + 1) * ne + e]);
            }
            assert_eq!(
                (
                    w.terminated[(nt - 1) * ne + e],
                    w.next_values[(nt - 1) * ne + e]
                ),
                (1, 0.0)
            );
        }
        assert!(w.truncated.iter().all(|&x| x == 0));
        assert_eq!(w.finished_returns.iter().sum::<f32>() as usize, correct);
        // The two ranks' rollouts, side by side, are the whole run's, bit for bit.
        for t in 0..nt {
            for (r, p) in parts.iter().enumerate() {
                let (src, dst) = (t * 32..(t + 1) * 32, t * ne + 32 * r..t * ne + 32 * (r + 1));
                assert_eq!(p.actions[src.clone()], w.actions[dst.clone()]);
                assert_eq!(bits(&p.logp[src.clone()]), bits(&w.logp[dst.clone()]));
                assert_eq!(bits(&p.entropy[src.clone()]), bits(&w.entropy[dst.clone()]));
                assert_eq!(bits(&p.values[src.clone()]), bits(&w.values[dst]));
            }
        }
    }
}

#[test]
fn checkpoint_resumes_exactly() {
    let tk = task(TaskFamily::Sort, 4, 3, 4);
    let cfg = seq_config(&tk, 32, vec![16], 8, 1);
    let mut a = SeqEngine::new(cfg.clone(), tk).expect("engine");
    let mut ro = Rollout::default();
    let mut ev = MinibatchEval::default();
    let step = |e: &mut SeqEngine, ro: &mut Rollout, ev: &mut MinibatchEval| {
        e.rollout(ro).expect("rollout");
        let s: Vec<u32> = (0..96).collect();
        e.evaluate(&s, ev).expect("evaluate");
        let d: Vec<f32> = ro.rewards.iter().map(|r| -(r - 0.2) / 96.0).collect();
        e.accumulate_grad(&d, &vec![0.0; 96], &vec![0.0; 96])
            .expect("backward");
        e.apply_grads(1e-2, None).expect("apply");
    };
    step(&mut a, &mut ro, &mut ev);
    let st = a.save_state().expect("save");
    assert!(
        st.x.is_empty() && st.ep_len.is_empty(),
        "no env state survives a rollout"
    );
    assert_eq!(st.step, 3);
    let mut b = SeqEngine::new(
        EngineConfig {
            threads: 2,
            ..cfg.clone()
        },
        tk,
    )
    .expect("engine");
    b.load_state(&st).expect("load");
    let mut rb = Rollout::default();
    for _ in 0..2 {
        step(&mut a, &mut ro, &mut ev);
        step(&mut b, &mut rb, &mut ev);
        assert_eq!(ro.actions, rb.actions);
        assert_eq!(bits(&ro.logp), bits(&rb.logp));
    }
    assert_eq!(bits(&a.params().expect("p")), bits(&b.params().expect("p")));
    // A CartPole snapshot (env state present) and a step between rollouts are refused.
    let cartpole = EngineState {
        x: vec![0.0; 32],
        ..st.clone()
    };
    assert!(b
        .load_state(&cartpole)
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default()
        .contains("`x`"));
    let mid = EngineState { step: 4, ..st };
    let msg = b
        .load_state(&mid)
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
    assert!(msg.contains("not a multiple of num_steps (3)"), "{msg}");
}

#[test]
fn config_errors_name_the_field() {
    let tk = task(TaskFamily::Add, 10, 4, 4);
    let good = seq_config(&tk, 16, vec![8], 1, 1);
    let err = |cfg: EngineConfig, t: SeqTask, req: DeviceRequest| {
        create_seq_engine(req, cfg, t)
            .map(|_| ())
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default()
    };
    assert!(create_seq_engine(DeviceRequest::Cpu, good.clone(), tk).is_ok());
    // Auto takes the CUDA sequence engine exactly when a GPU is usable; Cuda without one is a
    // clean `cuda unavailable` error (the GPU half is kernels/tests/cuda_seq.rs).
    let gpu = drover_kernels::cuda::probe().is_ok();
    let auto = create_seq_engine(DeviceRequest::Auto, good.clone(), tk).expect("auto engine");
    let want = if gpu { drover_kernels::DeviceKind::Cuda } else { drover_kernels::DeviceKind::Cpu };
    assert_eq!(auto.device(), want);
    if !gpu {
        let cuda = err(good.clone(), tk, DeviceRequest::Cuda);
        assert!(cuda.starts_with("cuda unavailable: "), "{cuda}");
    }
    let m = err(
        EngineConfig {
            num_steps: 4,
            ..good.clone()
        },
        tk,
        DeviceRequest::Cpu,
    );
    assert!(
        m.contains("num_steps (4) must equal the response length of sequence task `add` (3)"),
        "{m}"
    );
    let m = err(
        EngineConfig {
            num_envs: 18,
            ..good.clone()
        },
        tk,
        DeviceRequest::Cpu,
    );
    assert!(
        m.contains("num_envs (18)") && m.contains("group_size (4)"),
        "{m}"
    );
    let m = err(
        EngineConfig {
            env_offset: 2,
            ..good.clone()
        },
        tk,
        DeviceRequest::Cpu,
    );
    assert!(m.contains("env_offset (2)"), "{m}");
    let m = err(
        EngineConfig {
            shape: tk.net_shape(vec![8]),
            ..good.clone()
        },
        SeqTask { vocab: 9, ..tk },
        DeviceRequest::Cpu,
    );
    assert!(m.contains("needs obs_dim 66 and n_actions 9"), "{m}");
    let m = err(
        good,
        SeqTask {
            prompt_len: 5,
            ..tk
        },
        DeviceRequest::Cpu,
    );
    assert!(m.contains("`prompt_len` must be even"), "{m}");
    let mut eng = SeqEngine::new(seq_config(&tk, 8, vec![8], 1, 1), tk).expect("engine");
    let mut ev = MinibatchEval::default();
    assert!(
        eng.evaluate(&[0], &mut ev).is_err(),
        "evaluate before a rollout"
    );
    eng.rollout(&mut Rollout::default()).expect("rollout");
    let m = eng
        .evaluate(&[24], &mut ev)
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
    assert!(m.contains("sample index 24 out of range"), "{m}");
}

#[test]
fn reinforce_with_group_baseline_learns_reverse() {
    let tk = task(TaskFamily::Reverse, 4, 2, 8);
    let cfg = seq_config(&tk, 64, vec![64, 64], 1, 1);
    let mut eng = create_seq_engine(DeviceRequest::Cpu, cfg, tk).expect("engine");
    let (mut ro, mut ev) = (Rollout::default(), MinibatchEval::default());
    let (nt, ne, g) = (tk.response_len(), 64, tk.group_size);
    let samples: Vec<u32> = (0..(nt * ne) as u32).collect();
    let n = samples.len() as f32;
    let mut acc = Vec::new();
    for _ in 0..300 {
        eng.rollout(&mut ro).expect("rollout");
        let r = &ro.finished_returns;
        acc.push(r.iter().sum::<f32>() / ne as f32);
        eng.evaluate(&samples, &mut ev).expect("evaluate");
        let d_logp: Vec<f32> = samples
            .iter()
            .map(|&s| {
                let e = s as usize % ne;
                let grp = &r[e / g * g..(e / g + 1) * g];
                -(r[e] - grp.iter().sum::<f32>() / g as f32) / n
            })
            .collect();
        eng.accumulate_grad(
            &d_logp,
            &vec![0.0; samples.len()],
            &vec![0.0; samples.len()],
        )
        .expect("backward");
        eng.apply_grads(3e-3, Some(1.0)).expect("apply");
    }
    let first: f32 = acc[..20].iter().sum::<f32>() / 20.0;
    let last: f32 = acc[acc.len() - 20..].iter().sum::<f32>() / 20.0;
    // Chance is 1/16 for a uniform policy over 4^2 responses.
    assert!(
        first < 0.15,
        "the initial policy should be near chance: {first}"
    );
    assert!(
        last > 0.6,
        "accuracy should rise well above chance: first {first}, last {last}"
    );
}

/// A plan with dataset prompts, groups of uneven size and experts anywhere: both engines follow
/// it (prompts, teacher forcing), the plan lasts one rollout, and the default layout returns.
#[test]
fn planned_rollouts_follow_the_plan_and_match_the_reference() {
    let tk = SeqTask { expert_per_group: 1, ..task(TaskFamily::Sort, 5, 4, 4) };
    let cfg = seq_config(&tk, 16, vec![16, 16], 11, 2);
    let mut eng = SeqEngine::new(cfg.clone(), tk).expect("engine");
    let mut rf = SeqReferenceEngine::new(cfg.clone(), tk).expect("reference");
    let mut plain = SeqEngine::new(cfg.clone(), tk).expect("engine");
    sharpen(&mut eng, &mut rf);
    plain.set_params(&eng.params().expect("p")).expect("set");
    let (nt, ne) = (tk.response_len(), cfg.num_envs);
    // Groups of sizes 5, 1, 7, 3 over dataset prompts 9, 0, 4 and a drawn prompt.
    let sizes = [5usize, 1, 7, 3];
    let sources = [PromptRef::Dataset(9), PromptRef::Dataset(0), PromptRef::Dataset(4), PromptRef::Drawn { rollout: 77, group: 3 }];
    let mut plan = Vec::new();
    for (&n, &src) in sizes.iter().zip(&sources) {
        plan.extend((0..n).map(|j| EnvPlan { prompt: src, expert: j == 0 && n > 1 }));
    }
    assert_eq!(plan.len(), ne);
    eng.plan_rollout(&plan).expect("plan");
    rf.plan_rollout(&plan).expect("reference plan");
    let (mut a, mut b, mut c) = (Rollout::default(), Rollout::default(), Rollout::default());
    let params = rf.params().expect("p");
    eng.rollout(&mut a).expect("rollout");
    rf.rollout(&mut b).expect("reference rollout");
    let mut diverged = vec![false; ne];
    compare_rollout(&a, &b, &tk, &cfg, &params, 0, Some(&plan), &mut diverged);
    let key = run_key(cfg.seed);
    for (e, p) in plan.iter().enumerate() {
        let pr = prompt_of(&tk, key, p.prompt);
        assert_eq!(&eng.prompts()[e * 4..e * 4 + 4], &pr[..], "env {e} prompt");
        if p.expert {
            let mut answer = vec![0u32; nt];
            tk.answer(&pr, &mut answer);
            let resp: Vec<u32> = (0..nt).map(|t| a.actions[t * ne + e]).collect();
            assert_eq!(resp, answer, "expert env {e}");
        }
    }
    // Dataset prompts are the same for every run seed, drawn prompts are not.
    let other = SeqTask { ..tk };
    assert_eq!(prompt_of(&other, run_key(99), PromptRef::Dataset(9)), prompt_of(&tk, key, PromptRef::Dataset(9)));
    // The plan is spent: the next rollout is the default layout's, as in an engine never planned.
    plain.rollout(&mut c).expect("plain rollout");
    eng.rollout(&mut a).expect("rollout");
    plain.rollout(&mut c).expect("plain rollout");
    assert_eq!(a.actions, c.actions);
    assert_eq!(bits(&a.logp), bits(&c.logp));
    assert!(eng.plan_rollout(&plan[1..]).is_err(), "a short plan is refused");
}

/// `load_sequences` replays responses of an earlier rollout: `evaluate` then gives the logp,
/// entropy and values that rollout recorded, bit for bit, and matches the reference engine's
/// replay; bad buffers are refused.
#[test]
fn loaded_sequences_replay_an_earlier_rollout_exactly() {
    let tk = SeqTask { expert_per_group: 1, ..task(TaskFamily::Reverse, 4, 3, 4) };
    let cfg = seq_config(&tk, 32, vec![16], 5, 2);
    let mut eng = SeqEngine::new(cfg.clone(), tk).expect("engine");
    let mut rf = SeqReferenceEngine::new(cfg.clone(), tk).expect("reference");
    sharpen(&mut eng, &mut rf);
    let (nt, ne) = (tk.response_len(), cfg.num_envs);
    let (mut first, mut second) = (Rollout::default(), Rollout::default());
    eng.rollout(&mut first).expect("rollout");
    let refs: Vec<PromptRef> = (0..ne).map(|e| tk.default_plan(0, e).prompt).collect();
    eng.rollout(&mut second).expect("second rollout");
    assert_ne!(first.actions, second.actions);
    eng.load_sequences(&refs, &first.actions).expect("load");
    rf.load_sequences(&refs, &first.actions).expect("reference load");
    let samples: Vec<u32> = (0..(nt * ne) as u32).rev().collect();
    let (mut ev, mut rev) = (MinibatchEval::default(), MinibatchEval::default());
    eng.evaluate(&samples, &mut ev).expect("evaluate");
    rf.evaluate(&samples, &mut rev).expect("reference evaluate");
    for (j, &s) in samples.iter().enumerate() {
        let s = s as usize;
        assert_eq!(ev.logp[j].to_bits(), first.logp[s].to_bits(), "logp at {s}");
        assert_eq!(ev.entropy[j].to_bits(), first.entropy[s].to_bits(), "entropy at {s}");
        assert_eq!(ev.values[j].to_bits(), first.values[s].to_bits(), "value at {s}");
        close(ev.logp[j], rev.logp[j], "reference logp", s);
    }
    let mut bad = first.actions.clone();
    bad[3] = 4;
    assert!(eng.load_sequences(&refs, &bad).is_err(), "a token outside the vocab is refused");
    assert!(eng.load_sequences(&refs[1..], &first.actions).is_err(), "short prompts are refused");
}
