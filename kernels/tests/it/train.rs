//! End-to-end: a minimal PPO on the CPU engine learns CartPole (catches sign and scale errors
//! that per-kernel comparisons against the reference cannot).

use drover_kernels::cpu::CpuEngine;

use crate::common::{config, train, Ppo};

#[test]
fn ppo_learns_cartpole_on_cpu() {
    // 8 envs x 128 steps x 100 iterations = 102,400 steps.
    let mut e = CpuEngine::new(config(8, 128, 64, 1, 1)).expect("engine");
    let start = std::time::Instant::now();
    let curve = train(&mut e, &Ppo::default(), 100, 1);
    let mean = |s: &[f32]| {
        let v: Vec<f32> = s.iter().copied().filter(|x| x.is_finite()).collect();
        v.iter().sum::<f32>() / v.len().max(1) as f32
    };
    let (early, late) = (mean(&curve[..10]), mean(&curve[90..]));
    eprintln!(
        "early {early:.1}, late {late:.1}, {:.2}s",
        start.elapsed().as_secs_f32()
    );
    // A uniform random policy averages ~22; CleanRL PPO is well above 100 by 100k steps.
    assert!(early < 60.0, "early mean return {early}");
    assert!(late > 100.0, "late mean return {late} (early {early})");
}
