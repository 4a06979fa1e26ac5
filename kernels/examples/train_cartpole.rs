//! Times the CPU engine on CleanRL's CartPole PPO setting (8 envs x 128 steps, 4 epochs x 4
//! minibatches, 64x64 policy): `cargo run --release -p drover-kernels --example train_cartpole
//! -- [total_steps] [threads]`.

// The integration tests' PPO loop, shared rather than copied.
#[allow(dead_code)]
#[path = "../tests/it/common.rs"]
mod common;

use drover_kernels::cpu::CpuEngine;
use drover_kernels::{Engine, MinibatchEval, Rollout};

fn main() -> Result<(), drover_kernels::KernelError> {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(500_000);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let iters = total / (8 * 128);

    // Rollout alone, then the full PPO loop, so the split is visible.
    let mut e = CpuEngine::new(common::config(8, 128, 64, 1, threads))?;
    let mut ro = Rollout::default();
    let t0 = std::time::Instant::now();
    for _ in 0..iters {
        e.rollout(&mut ro)?;
    }
    let rollout_s = t0.elapsed().as_secs_f64();
    let mut ev = MinibatchEval::default();
    let samples: Vec<u32> = (0..256).collect();
    let d = vec![1e-3f32; 256];
    let t0 = std::time::Instant::now();
    for _ in 0..iters * 16 {
        e.evaluate(&samples, &mut ev)?;
        e.accumulate_grad(&d, &d, &d)?;
        e.apply_grads(1e-5, Some(0.5))?;
    }
    let train_s = t0.elapsed().as_secs_f64();

    let mut e = CpuEngine::new(common::config(8, 128, 64, 1, threads))?;
    let t0 = std::time::Instant::now();
    let curve = common::train(&mut e, &common::Ppo::default(), iters, 1);
    let ppo_s = t0.elapsed().as_secs_f64();
    let tail: Vec<f32> = curve
        .iter()
        .rev()
        .take(10)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    println!(
        "{} steps: rollouts {rollout_s:.2}s, 16 minibatch updates per rollout {train_s:.2}s, \
         full PPO {ppo_s:.2}s ({:.0} steps/s); final mean return {:.1}",
        iters * 1024,
        (iters * 1024) as f64 / ppo_s,
        tail.iter().sum::<f32>() / tail.len().max(1) as f32
    );
    Ok(())
}
