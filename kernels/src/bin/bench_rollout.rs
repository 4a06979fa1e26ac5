//! Throughput of the CUDA engine against the CPU engine (CartPole-v1, 64x64 actor and critic).
//!
//! `bench_rollout [--quick] [--no-train]`. Prints, per env count: CUDA env steps/s of
//! `Engine::rollout` (device work plus copying every per-step array to the host), of the same
//! rollout left on the device, and of inference only (actor + sampling + env step, nothing
//! stored); the CPU engine's `Engine::rollout` at the small sizes; and the CUDA/CPU ratio.
//! Then times a PPO-shaped training loop on the GPU (10M env steps: rollout, then 4 epochs x 4
//! minibatches of evaluate / backward / Adam). The per-sample loss derivatives of that loop are a
//! STAND-IN computed on the host (one-step TD advantage, no PPO clipping): the timing is of the
//! engine calls and transfers, not of an algorithm.

use std::time::Instant;

use rayon::prelude::*;

use drover_kernels::cuda::CudaEngine;
use drover_kernels::{
    create_engine, rng, AdamConfig, DeviceRequest, Engine, EngineConfig, MinibatchEval, NetShape,
    Rollout,
};

fn config(num_envs: usize, num_steps: usize) -> EngineConfig {
    EngineConfig {
        num_envs,
        env_offset: 0,
        num_steps,
        seed: 1,
        shape: NetShape {
            obs_dim: 4,
            hidden: vec![64, 64],
            n_actions: 2,
        },
        adam: AdamConfig::default(),
        threads: 0,
        cuda_ordinal: 0,
    }
}

/// Repeats `f` (after one warm-up call) until `min_secs` have passed; returns seconds per call.
fn time<F: FnMut()>(min_secs: f64, mut f: F) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0u32;
    while calls < 2 || start.elapsed().as_secs_f64() < min_secs {
        f();
        calls += 1;
    }
    start.elapsed().as_secs_f64() / calls as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let train = !args.iter().any(|a| a == "--no-train");
    let min_secs = if quick { 0.2 } else { 1.0 };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let probe = CudaEngine::new(config(1024, 8))?;
    println!("device: {}", probe.report());
    drop(probe);

    println!("\n| envs | T | CUDA rollout to host (pinned staging) | CUDA rollout to host (pageable) | CUDA rollout on device | CUDA inference only | CPU rollout ({threads} threads) | CUDA/CPU (to host) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &(n, t, cpu) in &[
        (1024usize, 128usize, true),
        (16_384, 128, true),
        (262_144, 64, false),
        (1_048_576, 32, false),
    ] {
        let steps = (n * t) as f64;
        let mut g = CudaEngine::new(config(n, t))?;
        let mut ro = Rollout::default();
        g.set_pinned_staging(Some(true));
        let host = time(min_secs, || g.rollout(&mut ro).expect("rollout"));
        g.set_pinned_staging(Some(false));
        let pageable = time(min_secs, || g.rollout(&mut ro).expect("rollout"));
        g.set_pinned_staging(None);
        let dev = time(min_secs, || g.rollout_on_device().expect("rollout"));
        let inf = time(min_secs, || {
            g.run_inference(t).expect("inference");
        });
        let cpu_rate = if cpu {
            let mut c = create_engine(DeviceRequest::Cpu, config(n, t))?;
            let mut cro = Rollout::default();
            Some(steps / time(min_secs, || c.rollout(&mut cro).expect("cpu rollout")))
        } else {
            None
        };
        let fmt = |r: f64| format!("{:.3e}", r);
        println!(
            "| {n} | {t} | {} | {} | {} | {} | {} | {} |",
            fmt(steps / host),
            fmt(steps / pageable),
            fmt(steps / dev),
            fmt(steps / inf),
            cpu_rate.map_or("-".into(), fmt),
            cpu_rate.map_or("-".into(), |c| format!("{:.1}x", steps / host / c)),
        );
    }

    // Launch shape of the inference kernel at 1M envs.
    let (n, t) = (1_048_576usize, 128usize);
    let mut g = CudaEngine::new(config(n, t))?;
    let mut line = String::from("inference at 1M envs, T=128, by warps per block:");
    for w in [1usize, 2, 4, 8] {
        g.set_warps_per_block(Some(w));
        let s = time(min_secs, || {
            g.run_inference(t).expect("inference");
        });
        line.push_str(&format!(" {w}: {:.3e}", (n * t) as f64 / s));
    }
    println!("{line}");
    drop(g);

    if train {
        train_loop()?;
    }
    Ok(())
}

/// PPO-shaped loop: 16384 envs x 128 steps per rollout, 5 rollouts (10.5M steps), 4 epochs x 4
/// minibatches each. Loss derivatives: host STAND-IN (see the file docs).
fn train_loop() -> Result<(), Box<dyn std::error::Error>> {
    let (n, t, iters, epochs, minibatches) = (16_384usize, 128usize, 5usize, 4usize, 4usize);
    let mut g = CudaEngine::new(config(n, t))?;
    let total = n * t;
    let b = total / minibatches;
    let mut ro = Rollout::default();
    let mut ev = MinibatchEval::default();
    let (mut t_roll, mut t_learn) = (0.0f64, 0.0f64);
    // Breakdown of the learning phase: permutation, evaluate (incl. download), host stand-in loss,
    // accumulate_grad (incl. upload and the GPU backward), reduce_grads, apply_grads.
    let mut tb = [0.0f64; 6];
    let mut perm: Vec<u32> = vec![0; total];
    let (mut dl, mut dv, mut de) = (vec![0.0f32; b], vec![0.0f32; b], vec![0.0f32; b]);
    let mut adv = vec![0.0f32; total];
    let mut ret = vec![0.0f32; total];
    let mut mean_returns = Vec::new();
    let start = Instant::now();
    let lap = |since: &mut Instant| {
        let e = since.elapsed().as_secs_f64();
        *since = Instant::now();
        e
    };
    for it in 0..iters {
        let s = Instant::now();
        g.rollout(&mut ro)?;
        t_roll += s.elapsed().as_secs_f64();
        let s = Instant::now();
        let mut l = Instant::now();
        // Stand-in advantage: one-step TD error, normalised.
        for i in 0..total {
            ret[i] = ro.rewards[i] + 0.99 * ro.next_values[i];
            adv[i] = ret[i] - ro.values[i];
        }
        let mean = adv.iter().map(|&a| a as f64).sum::<f64>() / total as f64;
        let var = adv.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / total as f64;
        let inv = 1.0 / (var.sqrt() + 1e-8);
        adv.iter_mut()
            .for_each(|a| *a = ((*a as f64 - mean) * inv) as f32);
        tb[2] += lap(&mut l);
        let key = rng::run_key(99);
        for epoch in 0..epochs {
            // Stand-in minibatch permutation: an affine bijection i -> (a i + c) mod total
            // (total is a power of two, a odd), cheap on the host.
            let e = (it * epochs + epoch) as u32;
            let a = (rng::draw(key, rng::STREAM_SHUFFLE, e, 0) | 1) as usize;
            let c = rng::draw(key, rng::STREAM_SHUFFLE, e, 1) as usize;
            debug_assert!(total.is_power_of_two());
            perm.par_iter_mut()
                .enumerate()
                .for_each(|(i, p)| *p = (a.wrapping_mul(i).wrapping_add(c) & (total - 1)) as u32);
            tb[0] += lap(&mut l);
            for mb in 0..minibatches {
                let samples = &perm[mb * b..(mb + 1) * b];
                g.evaluate(samples, &mut ev)?;
                tb[1] += lap(&mut l);
                let inv_b = 1.0 / b as f32;
                for (k, &sidx) in samples.iter().enumerate() {
                    let s = sidx as usize;
                    dl[k] = -adv[s] * (ev.logp[k] - ro.logp[s]).exp() * inv_b;
                    dv[k] = (ev.values[k] - ret[s]) * inv_b;
                    de[k] = -0.01 * inv_b;
                }
                tb[2] += lap(&mut l);
                g.accumulate_grad(&dl, &dv, &de)?;
                g.synchronize()?;
                tb[3] += lap(&mut l);
                g.reduce_grads(&mut |_g| {})?;
                tb[4] += lap(&mut l);
                g.apply_grads(2.5e-4, Some(0.5))?;
                tb[5] += lap(&mut l);
            }
        }
        t_learn += s.elapsed().as_secs_f64();
        if !ro.finished_returns.is_empty() {
            let m = ro.finished_returns.iter().sum::<f32>() / ro.finished_returns.len() as f32;
            mean_returns.push(format!("{m:.1}"));
        }
    }
    g.synchronize()?;
    let wall = start.elapsed().as_secs_f64();
    let steps = (iters * total) as f64;
    println!(
        "\ntraining loop (GPU, {n} envs x {t} steps x {iters} rollouts = {:.1}M steps, {epochs} epochs x {minibatches} minibatches of {b}; loss derivatives: host stand-in):",
        steps / 1e6
    );
    println!(
        "  wall {wall:.2} s = {:.3e} env steps/s; rollouts {t_roll:.2} s, learning {t_learn:.2} s ({:.1} ms per minibatch update); mean episode return per rollout: {}",
        steps / wall,
        1e3 * t_learn / (iters * epochs * minibatches) as f64,
        mean_returns.join(", ")
    );
    let per = |x: f64| 1e3 * x / (iters * epochs * minibatches) as f64;
    println!(
        "  per minibatch update (ms): permutation {:.2}, evaluate {:.2}, host stand-in loss {:.2}, accumulate_grad {:.2}, reduce_grads {:.2}, apply_grads {:.2}",
        per(tb[0]), per(tb[1]), per(tb[2]), per(tb[3]), per(tb[4]), per(tb[5])
    );
    Ok(())
}
