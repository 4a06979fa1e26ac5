//! End-to-end: a minimal PPO on the CPU engine learns CartPole (catches sign and scale errors
//! that per-kernel comparisons against the reference cannot).

use drover_kernels::cpu::{CpuEngine, SimdLevel};
use drover_kernels::Engine;

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

/// AVX2 (x86-64) and NEON (AArch64) run the same tile plans and reduction trees, so a short
/// training run at either level ends with the same parameters, bit for bit.
/// `scripts/test-aarch64.sh` runs this test at AVX2 on the build machine with
/// `DROVER_CROSS_DIGEST=write:<file>`, then at NEON under qemu with `check:<file>`; without the
/// variable it checks that two runs in this process agree.
#[test]
fn eight_lane_levels_train_to_the_same_bits() {
    let Some(level) = [SimdLevel::Avx2, SimdLevel::Neon].into_iter().find(|l| l.is_supported()) else {
        eprintln!("eight_lane_levels_train_to_the_same_bits: skipped: neither AVX2 nor NEON here");
        return;
    };
    let digest = || {
        // Two threads and 24 envs: blocks of 8 and 16 lanes, the threaded rollout split.
        let mut e = CpuEngine::new(config(24, 64, 64, 7, 2)).expect("engine");
        e.set_simd_level(level).expect("level");
        let curve = train(&mut e, &Ppo::default(), 6, 7);
        let params = e.params().expect("params");
        // FNV-1a over the bits of the parameters and of the return curve.
        let bits = params.iter().chain(&curve).map(|v| v.to_bits());
        let h = bits.fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
        format!("{h:016x} ({} parameters, {} iterations)", params.len(), curve.len())
    };
    let got = digest();
    eprintln!("{}: {got}", level.name());
    match std::env::var("DROVER_CROSS_DIGEST").ok().as_deref().and_then(|v| v.split_once(':')) {
        Some(("write", path)) => std::fs::write(path, &got).expect("write the digest"),
        Some(("check", path)) => {
            let want = std::fs::read_to_string(path).expect("read the digest");
            assert_eq!(got, want, "{} here against the other architecture's 8-lane level ({path})", level.name());
        }
        _ => assert_eq!(got, digest(), "two runs at {}", level.name()),
    }
}
