//! The CUDA sequence engine (`CudaSeqEngine`) against the CPU `SeqEngine` (itself tested against
//! `seq::reference`), SEMANTICS.md section 6.
//!
//! Without a usable GPU every test prints `skipped: <reason>` and returns (`gpu/mod.rs`); with
//! `DROVER_REQUIRE_GPU=1` a missing GPU fails instead. `config_errors_come_before_the_device`
//! runs everywhere. Tolerances are those of `cuda.rs`: tokens, rewards, flags, prompts and
//! observation rows exactly; logp/entropy/value within `1e-5 max(|cpu|, 1)`; gradients within
//! `1e-5 (|cpu| + max|cpu|)`; Adam bit for bit without clipping, 1e-6 relative with it.

mod gpu;
use gpu::{close_fwd, gpu};

use drover_kernels::cuda::CudaSeqEngine;
use drover_kernels::seq::SeqEngine;
use drover_kernels::rng::{self, uniform};
use drover_kernels::{
    create_seq_engine, AdamConfig, DeviceKind, DeviceRequest, Engine, EngineConfig, EnvPlan, KernelError,
    MinibatchEval, PromptRef, Rollout, SeqTask, TaskFamily,
};

fn task(family: TaskFamily, vocab: usize, prompt_len: usize, group_size: usize, experts: usize) -> SeqTask {
    SeqTask { family, vocab, prompt_len, group_size, expert_per_group: experts }
}

fn config(t: &SeqTask, num_envs: usize, hidden: Vec<usize>) -> EngineConfig {
    EngineConfig {
        num_envs,
        env_offset: 3 * t.group_size,
        num_steps: t.response_len(),
        seed: 20_260_128,
        shape: t.net_shape(hidden),
        adam: AdamConfig::default(),
        threads: 2,
        cuda_ordinal: 0,
    }
}

/// The cases of the rollout and learning tests: (task, envs, hidden widths).
fn cases() -> Vec<(SeqTask, usize, Vec<usize>)> {
    vec![
        (task(TaskFamily::Reverse, 4, 3, 4, 0), 300, vec![64, 64]),
        (task(TaskFamily::Add, 10, 4, 4, 1), 100, vec![24]),
        (task(TaskFamily::Sort, 5, 6, 8, 2), 64, vec![72, 16]),
        (task(TaskFamily::Add, 5, 4, 8, 0), 512, vec![64, 64]),
    ]
}

/// A CUDA and a CPU engine from the same config, with the same perturbed parameters (a policy
/// far from uniform, so draws and scores discriminate).
fn engines(t: &SeqTask, cfg: &EngineConfig) -> (CudaSeqEngine, SeqEngine) {
    let mut g = CudaSeqEngine::new(cfg.clone(), *t).expect("cuda engine");
    let mut c = SeqEngine::new(cfg.clone(), *t).expect("cpu engine");
    let mut p = c.params().expect("params");
    assert_eq!(g.params().expect("params"), p, "same init");
    let key = rng::run_key(cfg.seed);
    for (i, v) in p.iter_mut().enumerate() {
        *v += 0.6 * (uniform(key, 9, 0, i as u32) - 0.5);
    }
    g.set_params(&p).expect("set params");
    c.set_params(&p).expect("set params");
    (g, c)
}

/// A plan with dataset and drawn prompts and experts where the default layout has none.
fn plan(n: usize) -> Vec<EnvPlan> {
    (0..n)
        .map(|i| EnvPlan {
            prompt: if i % 3 == 0 {
                PromptRef::Dataset((7 * i % 23) as u32)
            } else {
                PromptRef::Drawn { rollout: 4, group: (i / 2) as u32 }
            },
            expert: i % 5 == 1,
        })
        .collect()
}

fn check_rollout(label: &str, a: &Rollout, b: &Rollout) {
    assert_eq!((a.num_steps, a.num_envs), (b.num_steps, b.num_envs), "{label}");
    assert_eq!(a.actions, b.actions, "{label}: tokens");
    for s in 0..a.actions.len() {
        for (name, x, y) in [
            ("logp", a.logp[s], b.logp[s]),
            ("entropy", a.entropy[s], b.entropy[s]),
            ("value", a.values[s], b.values[s]),
            ("next_value", a.next_values[s], b.next_values[s]),
        ] {
            assert!(close_fwd(x, y), "{label} sample {s} {name}: gpu {x} cpu {y}");
        }
    }
    assert_eq!(a.rewards, b.rewards, "{label}");
    assert_eq!(a.terminated, b.terminated, "{label}");
    assert_eq!(a.truncated, b.truncated, "{label}");
    assert_eq!(a.finished_returns, b.finished_returns, "{label}");
    assert_eq!(a.finished_lengths, b.finished_lengths, "{label}");
}

/// The engine's observation rows equal `SeqTask::observation` of its prompts and `tokens`, bit
/// for bit.
fn check_observations(label: &str, g: &CudaSeqEngine, cfg: &EngineConfig, tokens: &[u32]) {
    let t = *g.task();
    let (ne, nt, od, pl) = (cfg.num_envs, cfg.num_steps, cfg.shape.obs_dim, t.prompt_len);
    let obs = g.observations().expect("observations");
    let mut want = vec![0.0f32; od];
    for s in 0..ne * nt {
        let (step, i) = (s / ne, s % ne);
        let prefix: Vec<u32> = (0..step).map(|j| tokens[j * ne + i]).collect();
        t.observation(&g.prompts()[i * pl..(i + 1) * pl], &prefix, step, &mut want);
        let got = &obs[s * od..(s + 1) * od];
        assert!(
            got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{label}: observation row of t {step} env {i}"
        );
    }
}

#[test]
fn config_errors_come_before_the_device() {
    let t = task(TaskFamily::Add, 10, 4, 4, 0);
    let bad = EngineConfig { num_steps: 4, ..config(&t, 16, vec![8]) };
    let msg = CudaSeqEngine::new(bad, t).map(|_| ()).map_err(|e| e.to_string()).err().unwrap_or_default();
    assert!(msg.contains("num_steps (4) must equal the response length of sequence task `add` (3)"), "{msg}");
    if drover_kernels::cuda::probe().is_err() {
        match CudaSeqEngine::new(config(&t, 16, vec![8]), t) {
            Err(KernelError::CudaUnavailable(m)) => assert!(!m.is_empty()),
            other => panic!("expected CudaUnavailable, got {other:?}"),
        }
    }
}

#[test]
fn seq_rollouts_match_the_cpu_engine() {
    if !gpu("seq_rollouts_match_the_cpu_engine") {
        return;
    }
    for (t, ne, hidden) in cases() {
        let cfg = config(&t, ne, hidden.clone());
        let (mut g, mut c) = engines(&t, &cfg);
        let p = plan(ne);
        // Rollout 0: the default layout; rollout 1: a plan; rollout 2: the default layout again
        // (a plan is for one rollout only).
        for r in 0..3 {
            let label = format!("{} {hidden:?} rollout {r}", t.family);
            if r == 1 {
                g.plan_rollout(&p).expect("plan");
                c.plan_rollout(&p).expect("plan");
            }
            let (mut a, mut b) = (Rollout::default(), Rollout::default());
            g.rollout(&mut a).expect("gpu rollout");
            c.rollout(&mut b).expect("cpu rollout");
            assert_eq!(g.prompts(), c.prompts(), "{label}: prompts");
            check_rollout(&label, &a, &b);
            check_observations(&label, &g, &cfg, &a.actions);
            assert_eq!(g.global_step(), c.global_step());
            // Evaluating the whole rollout gives its own log-probabilities bit for bit.
            let all: Vec<u32> = (0..(ne * cfg.num_steps) as u32).collect();
            let mut ev = MinibatchEval::default();
            g.evaluate(&all, &mut ev).expect("evaluate");
            let diff = ev.logp.iter().zip(&a.logp).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            assert_eq!(diff, 0, "{label}: evaluate differs from the rollout's logp in {diff} samples");
            let correct = a.finished_returns.iter().filter(|&&x| x == 1.0).count();
            println!("{label}: {ne} responses match the CPU engine, {correct} correct");
        }
    }
}

#[test]
fn seq_replay_evaluate_gradients_and_adam_match_the_cpu_engine() {
    if !gpu("seq_replay_evaluate_gradients_and_adam_match_the_cpu_engine") {
        return;
    }
    for (t, ne, hidden) in cases() {
        let cfg = config(&t, ne, hidden.clone());
        let (mut g, mut c) = engines(&t, &cfg);
        let (mut a, mut b) = (Rollout::default(), Rollout::default());
        g.rollout(&mut a).expect("gpu rollout");
        c.rollout(&mut b).expect("cpu rollout");
        let total = (ne * cfg.num_steps) as u32;
        let key = rng::run_key(7);
        for step in 0..4u32 {
            let label = format!("{} {hidden:?} step {step}", t.family);
            if step == 2 {
                // Replay: the rollout's tokens, reversed across envs, under other prompts.
                let refs: Vec<PromptRef> = (0..ne)
                    .map(|i| if i % 2 == 0 { PromptRef::Dataset(i as u32) } else { PromptRef::Drawn { rollout: 2, group: i as u32 } })
                    .collect();
                let actions: Vec<u32> = (0..ne * cfg.num_steps).map(|s| a.actions[s - s % ne + (ne - 1 - s % ne)]).collect();
                g.load_sequences(&refs, &actions).expect("load");
                c.load_sequences(&refs, &actions).expect("load");
                assert_eq!(g.prompts(), c.prompts(), "{label}: replay prompts");
                check_observations(&label, &g, &cfg, &actions);
            }
            // A minibatch that is not a multiple of 32, with repeats.
            let bsz = 37 + 101 * step as usize;
            let samples: Vec<u32> = (0..bsz).map(|i| rng::draw(key, 5, step, i as u32) % total).collect();
            let (mut eg, mut ec) = (MinibatchEval::default(), MinibatchEval::default());
            g.evaluate(&samples, &mut eg).expect("evaluate");
            c.evaluate(&samples, &mut ec).expect("evaluate");
            for i in 0..bsz {
                for (name, x, y) in [("logp", eg.logp[i], ec.logp[i]), ("entropy", eg.entropy[i], ec.entropy[i]), ("value", eg.values[i], ec.values[i])] {
                    assert!(close_fwd(x, y), "{label} sample {i} {name}: gpu {x} cpu {y}");
                }
            }
            let d = |s: u32| -> Vec<f32> { (0..bsz).map(|i| (uniform(key, 6 + s, step, i as u32) - 0.5) / bsz as f32).collect() };
            let (dl, dv, de) = (d(0), d(1), d(2));
            g.accumulate_grad(&dl, &dv, &de).expect("backward");
            c.accumulate_grad(&dl, &dv, &de).expect("backward");
            let (mut gg, mut gc) = (Vec::new(), Vec::new());
            g.reduce_grads(&mut |v| gg = v.to_vec()).expect("reduce");
            c.reduce_grads(&mut |v| gc = v.to_vec()).expect("reduce");
            let scale = gc.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let mut worst = 0.0f32;
            for i in 0..gc.len() {
                let err = (gg[i] - gc[i]).abs() / (gc[i].abs() + scale);
                worst = worst.max(err);
                assert!(err <= 1e-5, "{label} grad {i}: gpu {} cpu {} (scale {scale})", gg[i], gc[i]);
            }
            // From here on both engines hold the same gradient, so Adam compares exactly.
            g.reduce_grads(&mut |v| v.copy_from_slice(&gc)).expect("reduce");
            let clip = (step == 3).then(|| 0.5 * scale.max(1e-3));
            let ng = g.apply_grads(3e-3, clip).expect("adam");
            let nc = c.apply_grads(3e-3, clip).expect("adam");
            assert!((ng - nc).abs() <= 1e-6 * nc, "{label}: norm {ng} vs {nc}");
            let (pg, pc) = (g.params().expect("params"), c.params().expect("params"));
            if clip.is_none() {
                let diff = pg.iter().zip(&pc).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                assert_eq!(diff, 0, "{label}: Adam differs in {diff} parameters");
            } else {
                for (x, y) in pg.iter().zip(&pc) {
                    assert!((x - y).abs() <= 1e-6 * y.abs().max(1e-3), "{label}: clipped Adam {x} vs {y}");
                }
                g.set_params(&pc).expect("set params");
            }
            println!("{label}: b {bsz}, grad worst mixed error {worst:e}, norm {ng} / {nc}");
        }
        // After the updates a second rollout still matches (parameters equal again).
        let (mut a2, mut b2) = (Rollout::default(), Rollout::default());
        g.rollout(&mut a2).expect("gpu rollout");
        c.rollout(&mut b2).expect("cpu rollout");
        check_rollout(&format!("{} {hidden:?} after training", t.family), &a2, &b2);
    }
}

#[test]
fn seq_save_and_load_state_continue_exactly() {
    if !gpu("seq_save_and_load_state_continue_exactly") {
        return;
    }
    let t = task(TaskFamily::Reverse, 6, 5, 4, 1);
    let cfg = config(&t, 128, vec![32, 32]);
    let mut a = CudaSeqEngine::new(cfg.clone(), t).expect("engine");
    let mut ro = Rollout::default();
    a.rollout(&mut ro).expect("rollout");
    let samples: Vec<u32> = (0..100).collect();
    let mut ev = MinibatchEval::default();
    a.evaluate(&samples, &mut ev).expect("evaluate");
    let d = vec![0.01f32; samples.len()];
    a.accumulate_grad(&d, &d, &d).expect("backward");
    a.apply_grads(1e-3, Some(0.5)).expect("adam");
    let snap = a.save_state().expect("save");
    assert!(snap.x.is_empty(), "no env state in a sequence snapshot");
    let mut b = CudaSeqEngine::new(cfg.clone(), t).expect("engine");
    b.load_state(&snap).expect("load");
    assert_eq!(b.save_state().expect("save"), snap);
    // The snapshot moves between devices: the CPU engine continues the same way.
    let mut c = SeqEngine::new(cfg, t).expect("cpu engine");
    c.load_state(&snap).expect("load");
    let (mut ra, mut rb, mut rc) = (Rollout::default(), Rollout::default(), Rollout::default());
    a.rollout(&mut ra).expect("rollout");
    b.rollout(&mut rb).expect("rollout");
    c.rollout(&mut rc).expect("rollout");
    assert_eq!(ra.actions, rb.actions);
    assert_eq!(ra.logp, rb.logp);
    assert_eq!(ra.finished_returns, rb.finished_returns);
    assert_eq!(a.global_step(), b.global_step());
    check_rollout("after load_state, cpu", &ra, &rc);
}

#[test]
fn create_seq_engine_picks_the_cuda_engine() {
    if !gpu("create_seq_engine_picks_the_cuda_engine") {
        return;
    }
    let t = task(TaskFamily::Sort, 4, 4, 2, 0);
    for req in [DeviceRequest::Cuda, DeviceRequest::Auto] {
        let e = create_seq_engine(req, config(&t, 8, vec![8]), t).expect("engine");
        assert_eq!(e.device(), DeviceKind::Cuda, "{req:?}");
    }
}
