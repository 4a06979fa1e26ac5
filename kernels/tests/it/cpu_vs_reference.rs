//! `CpuEngine` against `ReferenceEngine` with the same config and seed.
//!
//! Tolerances: actions, rewards and done flags exact, except that an env whose action differs
//! where the uniform draw is within 1e-5 of the action boundary (GEMM rounding may legally flip
//! it) is dropped from the comparison from then on; floats within `1e-5 * max(1, |ref|)`
//! (per-sample) and gradients within `1e-4 * max |ref grad|` (sums over samples).

// Time-major `t * num_envs + env` indexing reads clearer as index loops.
#![allow(clippy::needless_range_loop)]

use drover_kernels::cpu::{CpuEngine, SimdLevel};
use drover_kernels::reference::ReferenceEngine;
use drover_kernels::rng::{run_key, uniform, STREAM_ACTION};
use drover_kernels::{Engine, EngineConfig, MinibatchEval, ParamLayout, Rollout};

use crate::common::{balancing_actor, config};

fn close(a: f32, b: f32, what: &str, s: usize) {
    assert!(
        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
        "{what}[{s}]: cpu {a} vs reference {b}"
    );
}

/// Compares one rollout; `diverged[env]` marks envs whose trajectories legally split.
fn compare_rollout(
    cpu: &Rollout,
    rf: &Rollout,
    key: u32,
    step0: u64,
    env_offset: usize,
    diverged: &mut [bool],
) {
    let (nt, ne) = (rf.num_steps, rf.num_envs);
    assert_eq!((cpu.num_steps, cpu.num_envs), (nt, ne));
    for v in [
        cpu.actions.len(),
        cpu.logp.len(),
        cpu.entropy.len(),
        cpu.values.len(),
        cpu.next_values.len(),
    ] {
        assert_eq!(v, nt * ne);
    }
    for t in 0..nt {
        for e in 0..ne {
            let s = t * ne + e;
            if diverged[e] {
                continue;
            }
            if cpu.actions[s] != rf.actions[s] {
                let u = uniform(
                    key,
                    STREAM_ACTION,
                    (env_offset + e) as u32,
                    (step0 + t as u64) as u32,
                );
                let p_taken = rf.logp[s].exp();
                let p0 = if rf.actions[s] == 0 {
                    p_taken
                } else {
                    1.0 - p_taken
                };
                assert!(
                    (u - p0).abs() < 1e-5,
                    "action differs at t {t} env {e}: u {u}, p0 {p0}"
                );
                diverged[e] = true;
                continue;
            }
            close(cpu.logp[s], rf.logp[s], "logp", s);
            close(cpu.entropy[s], rf.entropy[s], "entropy", s);
            close(cpu.values[s], rf.values[s], "values", s);
            close(cpu.next_values[s], rf.next_values[s], "next_values", s);
            assert_eq!(cpu.rewards[s], rf.rewards[s]);
            assert_eq!(
                (cpu.terminated[s], cpu.truncated[s]),
                (rf.terminated[s], rf.truncated[s]),
                "done at {s}"
            );
        }
    }
    if !diverged.iter().any(|&d| d) {
        assert_eq!(cpu.finished_lengths, rf.finished_lengths);
        assert_eq!(cpu.finished_returns, rf.finished_returns);
    }
}

/// The instruction-set levels this CPU runs, each announced (a skipped one visibly).
fn levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| {
            let ok = l.is_supported();
            println!("{} level: {}", l.name(), if ok { "tested" } else { "skipped, not supported by this CPU" });
            ok
        })
        .collect()
}

/// Runs `rollouts` rollouts on both engines (the CPU one at `simd`) and compares them;
/// returns the engines.
fn run_pair(
    cfg: EngineConfig,
    simd: SimdLevel,
    balanced: bool,
    rollouts: usize,
) -> (CpuEngine, ReferenceEngine, Rollout, Vec<bool>) {
    let mut cpu = CpuEngine::new(cfg.clone()).expect("cpu engine");
    cpu.set_simd_level(simd).expect("a supported level");
    let mut rf = ReferenceEngine::new(cfg.clone()).expect("reference engine");
    let init = rf.params().expect("params");
    assert_eq!(
        cpu.params().expect("params"),
        init,
        "both engines initialise on the host identically"
    );
    if balanced {
        let mut p = init;
        balancing_actor(rf.layout(), &mut p);
        cpu.set_params(&p).expect("set");
        rf.set_params(&p).expect("set");
    }
    let key = run_key(cfg.seed);
    let mut diverged = vec![false; cfg.num_envs];
    let (mut a, mut b) = (Rollout::default(), Rollout::default());
    let mut stats = (0usize, 0usize);
    for _ in 0..rollouts {
        let step0 = rf.global_step();
        cpu.rollout(&mut a).expect("cpu rollout");
        rf.rollout(&mut b).expect("reference rollout");
        assert_eq!(cpu.global_step(), rf.global_step());
        compare_rollout(&a, &b, key, step0, cfg.env_offset, &mut diverged);
        stats.0 += b.terminated.iter().filter(|&&d| d == 1).count();
        stats.1 += b.truncated.iter().filter(|&&d| d == 1).count();
    }
    if balanced && cfg.num_steps * rollouts >= 500 {
        assert!(
            stats.1 > 0,
            "the balancing policy should reach the time limit: {stats:?}"
        );
    } else if !balanced {
        assert!(
            stats.0 > 0,
            "the random policy should terminate episodes: {stats:?}"
        );
    }
    (cpu, rf, b, diverged)
}

#[test]
fn rollout_random_policy_16x600() {
    // Two rollouts of 300 so per-env episode accumulators carry across rollouts.
    for simd in levels() {
        run_pair(config(16, 300, 64, 1, 1), simd, false, 2);
    }
}

#[test]
fn rollout_balancing_policy_covers_truncation() {
    // 16 x 600 steps: every surviving episode truncates at 500, with V(final obs) bootstrapped.
    for simd in levels() {
        let (_, _, ro, _) = run_pair(config(16, 600, 64, 2, 1), simd, true, 1);
        let trunc = ro.truncated.iter().filter(|&&d| d == 1).count();
        assert!(
            trunc >= 8,
            "{}: expected most envs to hit the time limit, got {trunc}",
            simd.name()
        );
        assert!(ro.finished_lengths.contains(&500));
    }
}

#[test]
fn rollout_threaded_chunks_with_env_offset() {
    // 96 envs over 3 threads (3 env chunks), ranks-style env offset; two rollouts.
    let mut cfg = config(96, 70, 16, 3, 3);
    cfg.env_offset = 96 * 2;
    let mut cpu = CpuEngine::new(cfg.clone()).expect("cpu engine");
    let mut rf = ReferenceEngine::new(cfg.clone()).expect("reference engine");
    assert_eq!(cpu.threads(), 3);
    let key = run_key(cfg.seed);
    let mut diverged = vec![false; 96];
    let (mut a, mut b) = (Rollout::default(), Rollout::default());
    for _ in 0..2 {
        let step0 = rf.global_step();
        cpu.rollout(&mut a).expect("cpu rollout");
        rf.rollout(&mut b).expect("reference rollout");
        // RNG streams use the global env index, so a wrong offset shows as action mismatches.
        compare_rollout(&a, &b, key, step0, cfg.env_offset, &mut diverged);
    }
}

/// Samples of the last rollout on non-diverged envs, with repeats, in a scrambled order.
fn pick_samples(ro: &Rollout, diverged: &[bool], count: usize) -> Vec<u32> {
    let n = ro.num_steps * ro.num_envs;
    (0..count)
        .map(|i| ((i as u64 * 7919 + 13) % n as u64) as u32)
        .filter(|&s| !diverged[s as usize % ro.num_envs])
        .collect()
}

fn compare_grads(cpu: &mut dyn Engine, rf: &mut dyn Engine) {
    let mut g_cpu = Vec::new();
    let mut g_ref = Vec::new();
    cpu.reduce_grads(&mut |g| g_cpu = g.to_vec())
        .expect("reduce");
    rf.reduce_grads(&mut |g| g_ref = g.to_vec())
        .expect("reduce");
    let scale = g_ref.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    assert!(scale > 0.0, "the reference gradient is zero");
    for (i, (a, b)) in g_cpu.iter().zip(&g_ref).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "grad[{i}]: cpu {a} vs reference {b} (scale {scale})"
        );
    }
}

fn evaluate_and_backward(cpu: &mut dyn Engine, rf: &mut dyn Engine, samples: &[u32]) {
    let (mut a, mut b) = (MinibatchEval::default(), MinibatchEval::default());
    cpu.evaluate(samples, &mut a).expect("cpu evaluate");
    rf.evaluate(samples, &mut b).expect("reference evaluate");
    assert_eq!(a.logp.len(), samples.len());
    for s in 0..samples.len() {
        close(a.logp[s], b.logp[s], "eval logp", s);
        close(a.entropy[s], b.entropy[s], "eval entropy", s);
        close(a.values[s], b.values[s], "eval values", s);
    }
    let n = samples.len();
    let d_logp: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) / n as f32).collect();
    let d_value: Vec<f32> = (0..n).map(|i| ((i % 5) as f32 - 1.5) / n as f32).collect();
    let d_ent: Vec<f32> = (0..n)
        .map(|i| -0.01 * (1.0 + (i % 3) as f32) / n as f32)
        .collect();
    cpu.accumulate_grad(&d_logp, &d_value, &d_ent)
        .expect("cpu backward");
    rf.accumulate_grad(&d_logp, &d_value, &d_ent)
        .expect("reference backward");
}

#[test]
fn evaluate_and_accumulate_grad_match_reference() {
    for simd in levels() {
        for (threads, balanced) in [(1, false), (2, true)] {
            let (mut cpu, mut rf, ro, diverged) =
                run_pair(config(16, 64, 64, 4, threads), simd, balanced, 1);
            let samples = pick_samples(&ro, &diverged, 700);
            // Two minibatches accumulate into the same gradient before it is read.
            evaluate_and_backward(&mut cpu, &mut rf, &samples[..300]);
            evaluate_and_backward(&mut cpu, &mut rf, &samples[300..]);
            compare_grads(&mut cpu, &mut rf);
        }
    }
}

#[test]
fn apply_grads_matches_reference_adam_and_clipping() {
    let cfg = config(4, 8, 32, 5, 1);
    let mut cpu = CpuEngine::new(cfg.clone()).expect("cpu engine");
    let mut rf = ReferenceEngine::new(cfg).expect("reference engine");
    let np = cpu.num_params();
    let layout: ParamLayout = rf.layout().clone();
    assert_eq!(np, layout.num_params);
    for step in 0..6u32 {
        // A gradient with norm ~2-4: clipped to 0.5 on even steps, unclipped on odd ones.
        let g: Vec<f32> = (0..np)
            .map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ step) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let g: Vec<f32> = g.iter().map(|v| v * 0.06).collect();
        cpu.reduce_grads(&mut |buf| buf.copy_from_slice(&g))
            .expect("set grads");
        rf.reduce_grads(&mut |buf| buf.copy_from_slice(&g))
            .expect("set grads");
        let clip = if step % 2 == 0 { Some(0.5) } else { None };
        let (na, nb) = (
            cpu.apply_grads(1e-2, clip).expect("apply"),
            rf.apply_grads(1e-2, clip).expect("apply"),
        );
        assert!((na - nb).abs() <= 1e-6 * nb, "norm {na} vs {nb}");
        if step % 2 == 0 {
            assert!(nb > 0.5, "the test gradient should be clipped: norm {nb}");
        }
        let (pa, pb) = (cpu.params().expect("params"), rf.params().expect("params"));
        for i in 0..np {
            assert!(
                (pa[i] - pb[i]).abs() <= 1e-6,
                "step {step} param {i}: {} vs {}",
                pa[i],
                pb[i]
            );
        }
        let mut zero = true;
        cpu.reduce_grads(&mut |buf| zero = buf.iter().all(|&v| v == 0.0))
            .expect("read grads");
        assert!(zero, "apply_grads must zero the gradient");
    }
}

/// The portable instruction-set level sums every dense layer in the reference's order with no
/// FMA, so its rollouts equal the reference's bit for bit (no divergence allowance), threaded
/// or not; the FMA levels (AVX2, AVX-512) are covered by the tolerance tests above.
#[test]
fn portable_level_rollout_equals_reference_exactly() {
    for (threads, balanced) in [(1, false), (2, true)] {
        let cfg = config(40, 260, 64, 11, threads);
        let mut cpu = CpuEngine::new(cfg.clone()).expect("cpu engine");
        cpu.set_simd_level(SimdLevel::Portable).expect("portable is always supported");
        let mut rf = ReferenceEngine::new(cfg).expect("reference engine");
        if balanced {
            let mut p = rf.params().expect("params");
            balancing_actor(rf.layout(), &mut p);
            cpu.set_params(&p).expect("set");
            rf.set_params(&p).expect("set");
        }
        let (mut a, mut b) = (Rollout::default(), Rollout::default());
        for _ in 0..2 {
            cpu.rollout(&mut a).expect("cpu rollout");
            rf.rollout(&mut b).expect("reference rollout");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(a.actions, b.actions);
            assert_eq!((&a.terminated, &a.truncated), (&b.terminated, &b.truncated));
            assert_eq!(bits(&a.logp), bits(&b.logp));
            assert_eq!(bits(&a.entropy), bits(&b.entropy));
            assert_eq!(bits(&a.values), bits(&b.values));
            assert_eq!(bits(&a.next_values), bits(&b.next_values));
            assert_eq!(a.finished_returns, b.finished_returns);
            assert_eq!(a.finished_lengths, b.finished_lengths);
        }
        assert!(!b.finished_lengths.is_empty(), "episodes should finish");
        if balanced {
            assert!(b.truncated.contains(&1), "the balancing policy should reach the time limit");
        }
    }
}

/// Review (kernel numerics): once a logit gap overflows f32 (±3e38 biases), the pushed-out
/// action's `logp` is `-inf` and `p * logp = 0 * -inf` made the entropy NaN, and through
/// `p * (logp + H)` the whole actor gradient NaN, even with `d_entropy = 0`. As PyTorch's
/// `Categorical`, an action of probability 0 adds nothing: entropy 0, gradients finite, on the
/// reference and at every CPU level alike.
#[test]
fn a_saturated_head_has_zero_entropy_and_finite_gradients() {
    let cfg = config(4, 3, 8, 7, 1);
    let layout = ParamLayout::new(&cfg.shape).expect("layout");
    let out = *layout.actor.last().expect("an actor output layer");
    let mut engines: Vec<(String, Box<dyn Engine>)> = vec![("reference".into(), Box::new(ReferenceEngine::new(cfg.clone()).expect("reference engine")))];
    for simd in levels() {
        let mut cpu = CpuEngine::new(cfg.clone()).expect("cpu engine");
        cpu.set_simd_level(simd).expect("a supported level");
        engines.push((simd.name().to_string(), Box::new(cpu)));
    }
    for (name, engine) in &mut engines {
        let mut p = engine.params().expect("params");
        p[out.weight..out.bias].iter_mut().for_each(|w| *w = 0.0);
        (p[out.bias], p[out.bias + 1]) = (3e38, -3e38);
        engine.set_params(&p).expect("set params");
        let mut ro = Rollout::default();
        engine.rollout(&mut ro).expect("rollout");
        assert!(ro.actions.iter().all(|&a| a == 0), "{name}: action 1 has probability 0");
        assert!(ro.entropy.iter().all(|&h| h == 0.0), "{name}: rollout entropy {:?}", ro.entropy);
        let samples: Vec<u32> = (0..12).collect();
        let mut ev = MinibatchEval::default();
        engine.evaluate(&samples, &mut ev).expect("evaluate");
        assert!(ev.entropy.iter().chain(&ev.logp).all(|&x| x == 0.0), "{name}: {:?} {:?}", ev.entropy, ev.logp);
        for d_entropy in [0.0, -0.01] {
            engine.evaluate(&samples, &mut ev).expect("evaluate");
            engine.accumulate_grad(&[1.0; 12], &[0.5; 12], &[d_entropy; 12]).expect("backward");
            let mut g = Vec::new();
            engine.reduce_grads(&mut |x| g = x.to_vec()).expect("reduce");
            let bad = g.iter().filter(|x| !x.is_finite()).count();
            assert_eq!(bad, 0, "{name}, d_entropy {d_entropy}: {bad} of {} gradients not finite", g.len());
            assert!(g.iter().any(|&x| x != 0.0), "{name}: the critic still learns");
        }
    }
}
