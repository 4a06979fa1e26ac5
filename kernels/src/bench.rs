//! Throughput measurements behind `drover bench rollout`: environment-only steps/s, policy
//! rollout steps/s, learning samples/s, the scalar reference as a same-run baseline, and the
//! machine's arithmetic ceiling for each kind of work. Device-agnostic where the [`Engine`]
//! seam allows (rollout, learn), so the CUDA engine is measured by the same functions.
//!
//! Ceilings count vector lane-operations: each f32 add, multiply, divide or compare is one
//! lane-op, a fused multiply-add (allowed in dense layers, forbidden in the environment step by
//! SEMANTICS.md) is one lane-op doing two FLOPs. A core retires at most `fma_pipes * lanes`
//! lane-ops per cycle, so `ceiling = cores * clock * fma_pipes * lanes / lane_ops_per_step`.

use std::time::Instant;

use crate::cpu::{EnvOnly, SimdLevel};
use crate::layout::ParamLayout;
use crate::reference::{cartpole_reset, cartpole_step, ReferenceEngine};
use crate::rng::run_key;
use crate::{Engine, EngineConfig, KernelError, MinibatchEval, NetShape, Rollout};

/// Work done in a timed window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Env steps (or samples) processed.
    pub work: u64,
    /// Wall seconds they took.
    pub seconds: f64,
}

impl Measurement {
    /// Work per second.
    pub fn per_second(&self) -> f64 {
        self.work as f64 / self.seconds.max(1e-12)
    }
}

/// Calls `f` once to warm up, then repeatedly until `min_seconds` have passed; `f` returns
/// the work it did.
pub fn time_until(
    min_seconds: f64,
    mut f: impl FnMut() -> Result<u64, KernelError>,
) -> Result<Measurement, KernelError> {
    f()?;
    let t0 = Instant::now();
    let mut work = 0;
    loop {
        work += f()?;
        let seconds = t0.elapsed().as_secs_f64();
        if seconds >= min_seconds {
            return Ok(Measurement { work, seconds });
        }
    }
}

/// Env-only steps/s of the CPU engine's SoA step and batched autoreset (fixed action pattern
/// `(env + t) % 2`), `num_envs` envs over `threads` threads, 64 steps per timed call.
pub fn env_only_cpu(
    num_envs: usize,
    threads: usize,
    simd: SimdLevel,
    min_seconds: f64,
) -> Result<(Measurement, f64), KernelError> {
    let mut envs = EnvOnly::new(num_envs, threads, 1, simd)?;
    let m = time_until(min_seconds, || Ok(envs.run(64)))?;
    let episode_len = (m.work as f64 + (num_envs * 64) as f64) / envs.resets().max(1) as f64;
    Ok((m, episode_len))
}

/// Env-only steps/s of the scalar reference (`reference::cartpole_step`, one env at a time,
/// one thread), same action pattern: the baseline the CPU figure is divided by.
pub fn env_only_reference(num_envs: usize, min_seconds: f64) -> Result<Measurement, KernelError> {
    let key = run_key(1);
    let mut envs: Vec<([f32; 4], u32)> = (0..num_envs)
        .map(|i| (cartpole_reset(key, i as u32, 0), 0))
        .collect();
    let mut t = 0u32;
    time_until(min_seconds, || {
        for _ in 0..8 {
            for (i, (s, st)) in envs.iter_mut().enumerate() {
                let (_, term, trunc) = cartpole_step(s, st, (i as u32).wrapping_add(t) & 1);
                if term || trunc {
                    *s = cartpole_reset(key, i as u32, t.wrapping_add(1));
                    *st = 0;
                }
            }
            t = t.wrapping_add(1);
        }
        Ok(8 * num_envs as u64)
    })
}

/// Policy rollout steps/s of `engine` (forward, sampling, env step, autoreset, bootstrap).
pub fn rollout(engine: &mut dyn Engine, min_seconds: f64) -> Result<Measurement, KernelError> {
    let mut ro = Rollout::default();
    time_until(min_seconds, || {
        engine.rollout(&mut ro)?;
        Ok((ro.num_envs * ro.num_steps) as u64)
    })
}

/// Rollout steps/s of the scalar [`ReferenceEngine`] with `config`: the baseline.
pub fn rollout_reference(
    config: EngineConfig,
    min_seconds: f64,
) -> Result<Measurement, KernelError> {
    let mut engine = ReferenceEngine::new(config)?;
    rollout(&mut engine, min_seconds)
}

/// Learning samples/s of `engine`: after one rollout, PPO-shaped updates (evaluate, backward,
/// clip + Adam) on minibatches of `minibatch` samples taken in a scrambled order.
pub fn learn(
    engine: &mut dyn Engine,
    minibatch: usize,
    min_seconds: f64,
) -> Result<Measurement, KernelError> {
    let mut ro = Rollout::default();
    engine.rollout(&mut ro)?;
    let total = (ro.num_envs * ro.num_steps) as u64;
    let minibatch = minibatch.clamp(1, total as usize);
    // A fixed odd stride visits every sample once per pass in a cache-unfriendly order, like
    // a shuffled minibatch does.
    let stride = (total / 2 + 1) | 1;
    let mut next = 0u64;
    let mut samples = vec![0u32; minibatch];
    let mut ev = MinibatchEval::default();
    let d_logp = vec![-1e-3f32; minibatch];
    let d_value = vec![1e-3f32; minibatch];
    let d_entropy = vec![-1e-5f32; minibatch];
    time_until(min_seconds, || {
        for s in samples.iter_mut() {
            next = (next + stride) % total;
            *s = next as u32;
        }
        engine.evaluate(&samples, &mut ev)?;
        engine.accumulate_grad(&d_logp, &d_value, &d_entropy)?;
        engine.apply_grads(1e-6, Some(0.5))?;
        Ok(minibatch as u64)
    })
}

/// What the arithmetic ceilings are computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Machine {
    /// Cores this process may use.
    pub cores: usize,
    /// Core clock measured by a chain of dependent integer adds (one per cycle), in Hz.
    pub clock_hz: f64,
    /// f32 lanes per vector register at the instruction set the engine uses.
    pub lanes: usize,
    /// Vector FMA/ALU pipes per core: 2 on the Intel and AMD server cores drover targets, 4
    /// (of 128 bits) on the Arm Neoverse V1 and V2 cores (Graviton 3 and 4, NVIDIA Grace).
    pub fma_pipes: usize,
}

impl Machine {
    /// Probes cores and clock; `simd` gives the vector width.
    pub fn probe(simd: SimdLevel) -> Self {
        // A NEON kernel vector is two 128-bit registers; AArch64 server cores have more,
        // narrower pipes than x86 ones.
        let (lanes, fma_pipes) = if cfg!(target_arch = "aarch64") { (4, 4) } else { (simd.lanes(), 2) };
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            clock_hz: measure_clock_hz(),
            lanes,
            fma_pipes,
        }
    }

    /// Lane-ops per second over `cores` cores.
    pub fn lane_ops_per_second(&self, cores: usize) -> f64 {
        cores as f64 * self.clock_hz * (self.fma_pipes * self.lanes) as f64
    }

    /// Steps (or samples) per second at which `lane_ops` per step saturate every pipe.
    pub fn ceiling(&self, lane_ops: f64, cores: usize) -> f64 {
        self.lane_ops_per_second(cores) / lane_ops
    }
}

/// Clock in Hz from the time of a chain of dependent register adds (latency 1 cycle on every
/// x86 core since the Pentium 4 and on every AArch64 core); the best of three runs, so a
/// preemption does not lower it. On other architectures, 3 GHz is assumed.
pub fn measure_clock_hz() -> f64 {
    const ITERS: u64 = 20_000_000;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let best = (0..3)
            .map(|_| {
                let t0 = Instant::now();
                add_chain(ITERS);
                t0.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        (ITERS * 8) as f64 / best
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        3.0e9
    }
}

/// `iters` rounds of 8 dependent register-register adds (one cycle each).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn add_chain(iters: u64) {
    // SAFETY: register-only arithmetic on the operands, no memory or stack access.
    unsafe {
        // Register-register adds: recent x86 cores fold `add reg, imm` chains at rename,
        // which would read as a multiple of the real clock.
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!(
            "2:",
            "add {x}, {y}", "add {x}, {y}", "add {x}, {y}", "add {x}, {y}",
            "add {x}, {y}", "add {x}, {y}", "add {x}, {y}", "add {x}, {y}",
            "sub {n}, 1",
            "jnz 2b",
            n = inout(reg) iters => _,
            x = inout(reg) 0u64 => _,
            y = in(reg) 1u64,
            options(nomem, nostack),
        );
        #[cfg(target_arch = "aarch64")]
        std::arch::asm!(
            "2:",
            "add {x}, {x}, {y}", "add {x}, {x}, {y}", "add {x}, {x}, {y}", "add {x}, {x}, {y}",
            "add {x}, {x}, {y}", "add {x}, {x}, {y}", "add {x}, {x}, {y}", "add {x}, {x}, {y}",
            "subs {n}, {n}, 1",
            "b.ne 2b",
            n = inout(reg) iters => _,
            x = inout(reg) 0u64 => _,
            y = in(reg) 1u64,
            options(nomem, nostack),
        );
    }
}

/// Lane-ops of one CartPole step (SEMANTICS.md section 2, counted on `math::sincos` and the
/// step's expression, no FMA): sincos 26, force/temp 5, theta_acc 9, x_acc 4, Euler updates
/// 8, termination compares 4 (4 of the 56 are divisions).
pub const ENV_LANE_OPS_PER_STEP: f64 = 56.0;

/// Lane-ops of one `tanh` (`math::tanh`): clamp 2, square 1, numerator 13, denominator 6,
/// division 1, tiny-argument select 3.
pub const TANH_LANE_OPS: f64 = 26.0;

/// Multiply-adds of one forward row of actor and critic.
pub fn forward_macs(shape: &NetShape) -> Result<f64, KernelError> {
    let layout = ParamLayout::new(shape)?;
    Ok(layout
        .actor
        .iter()
        .chain(&layout.critic)
        .map(|l| (l.fan_in * l.fan_out) as f64)
        .sum())
}

/// Hidden activations (tanh) of one forward row of actor and critic.
fn hidden_units(shape: &NetShape) -> f64 {
    2.0 * shape.hidden.iter().sum::<usize>() as f64
}

/// Lane-ops of one policy step: every multiply-add as one FMA lane-op, every tanh as
/// [`TANH_LANE_OPS`] (the head, the RNG and the env step are left out, so the ceiling is high).
pub fn policy_lane_ops_per_step(shape: &NetShape) -> Result<f64, KernelError> {
    Ok(forward_macs(shape)? + hidden_units(shape) * TANH_LANE_OPS)
}

/// Lane-ops of one learning sample: forward as in [`policy_lane_ops_per_step`], then backward
/// `dW = X^T dY` (the forward's MACs again), `dX = dY W^T` (every layer but the first) and
/// `tanh' = 1 - y^2` with its product (3 lane-ops per hidden unit).
pub fn learn_lane_ops_per_sample(shape: &NetShape) -> Result<f64, KernelError> {
    let layout = ParamLayout::new(shape)?;
    let dx: f64 = [&layout.actor, &layout.critic]
        .iter()
        .flat_map(|ls| ls.iter().skip(1))
        .map(|l| (l.fan_in * l.fan_out) as f64)
        .sum();
    Ok(policy_lane_ops_per_step(shape)? + forward_macs(shape)? + dx + 3.0 * hidden_units(shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_op_counts_by_hand_for_64x64() {
        let shape = NetShape {
            obs_dim: 4,
            hidden: vec![64, 64],
            n_actions: 2,
        };
        // Actor 4*64 + 64*64 + 64*2 = 4480, critic 4*64 + 64*64 + 64 = 4416.
        assert_eq!(forward_macs(&shape).expect("shape"), 8896.0);
        // + 256 tanh * 26.
        assert_eq!(
            policy_lane_ops_per_step(&shape).expect("shape"),
            8896.0 + 6656.0
        );
        // + dW 8896 + dX (64*64 + 64*2 + 64*64 + 64) + 3 * 256.
        assert_eq!(
            learn_lane_ops_per_sample(&shape).expect("shape"),
            15552.0 + 8896.0 + 8384.0 + 768.0
        );
    }

    #[test]
    fn ceiling_scales_with_cores_and_width() {
        let m = Machine {
            cores: 2,
            clock_hz: 3e9,
            lanes: 16,
            fma_pipes: 2,
        };
        assert_eq!(m.lane_ops_per_second(2), 192e9);
        assert_eq!(m.ceiling(56.0, 1) * 2.0, m.ceiling(56.0, 2));
    }

    #[test]
    fn clock_measurement_is_plausible() {
        let hz = measure_clock_hz();
        // Any CPU this runs on clocks between 0.5 and 7 GHz (a loaded machine reads lower).
        assert!((5e8..7e9).contains(&hz), "clock {hz} Hz");
    }

    #[test]
    fn env_only_measures_and_resets() {
        let (m, ep_len) = env_only_cpu(256, 1, SimdLevel::Portable, 0.01).expect("bench");
        assert!(
            m.work >= 256 * 64 && m.work % (256 * 64) == 0,
            "work {}",
            m.work
        );
        assert!(m.per_second() > 0.0);
        // Alternating pushes end an episode well before the 500-step limit.
        assert!(
            (5.0..500.0).contains(&ep_len),
            "mean episode length {ep_len}"
        );
    }
}
