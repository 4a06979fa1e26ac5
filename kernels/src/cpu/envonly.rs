//! Environment-only stepping, the first figure of the rollout benchmark: the engine's own SoA
//! step and batched autoreset with a fixed action pattern instead of a policy.

use rayon::prelude::*;

use super::env::{collect_done, CartPoleSoa};
use super::simd::SimdLevel;
use crate::rng::run_key;
use crate::KernelError;

/// One thread's envs and per-step buffers.
struct Chunk {
    env: CartPoleSoa,
    actions: Vec<u32>,
    rewards: Vec<f32>,
    term: Vec<u8>,
    trunc: Vec<u8>,
    done: Vec<u32>,
    resets: u64,
}

impl Chunk {
    /// `steps` vectorized steps from global step `step0`; the action of (global) env `i` at step
    /// `t` is `(i + t) % 2` (alternating pushes), and finished envs reset as in a rollout.
    fn run(&mut self, key: u32, step0: u64, steps: usize, simd: SimdLevel) {
        for t in 0..steps {
            let gt = step0.wrapping_add(t as u64) as u32;
            let first = self.env.first_env.wrapping_add(gt);
            for (i, a) in self.actions.iter_mut().enumerate() {
                *a = first.wrapping_add(i as u32) & 1;
            }
            self.env.step(
                simd,
                &self.actions,
                &mut self.rewards,
                &mut self.term,
                &mut self.trunc,
            );
            self.done.clear();
            collect_done(&self.term, &self.trunc, &mut self.done);
            self.env.reset_many(key, &self.done, gt.wrapping_add(1));
            self.resets += self.done.len() as u64;
        }
    }
}

/// CartPole envs split over threads, stepped without a policy (see `bench::env_only_cpu`).
pub struct EnvOnly {
    chunks: Vec<Chunk>,
    pool: Option<rayon::ThreadPool>,
    simd: SimdLevel,
    key: u32,
    step: u64,
}

impl EnvOnly {
    /// `num_envs` envs (reset with counter 0) over `threads` pinned threads at `simd` width.
    pub fn new(
        num_envs: usize,
        threads: usize,
        seed: u64,
        simd: SimdLevel,
    ) -> Result<Self, KernelError> {
        if num_envs == 0 || num_envs > u32::MAX as usize {
            return Err(KernelError::InvalidConfig(format!(
                "num_envs {num_envs} is out of range"
            )));
        }
        simd.require()?;
        let threads = threads.clamp(1, num_envs);
        let key = run_key(seed);
        let chunks = (0..threads)
            .map(|c| {
                let (start, end) = (c * num_envs / threads, (c + 1) * num_envs / threads);
                let n = end - start;
                Chunk {
                    env: CartPoleSoa::new(key, start as u32, n),
                    actions: vec![0; n],
                    rewards: vec![0.0; n],
                    term: vec![0; n],
                    trunc: vec![0; n],
                    done: Vec::with_capacity(n),
                    resets: 0,
                }
            })
            .collect();
        Ok(Self {
            chunks,
            pool: super::threads::pool(threads)?,
            simd,
            key,
            step: 0,
        })
    }

    /// Steps every env `steps` times; returns the env steps taken (`num_envs * steps`).
    pub fn run(&mut self, steps: usize) -> u64 {
        let (key, step0, simd) = (self.key, self.step, self.simd);
        match &self.pool {
            Some(pool) => pool.install(|| {
                self.chunks
                    .par_iter_mut()
                    .for_each(|c| c.run(key, step0, steps, simd))
            }),
            None => self
                .chunks
                .iter_mut()
                .for_each(|c| c.run(key, step0, steps, simd)),
        }
        self.step += steps as u64;
        self.chunks.iter().map(|c| c.env.len() as u64).sum::<u64>() * steps as u64
    }

    /// Episodes ended (and envs reset) so far.
    pub fn resets(&self) -> u64 {
        self.chunks.iter().map(|c| c.resets).sum()
    }

    /// `(x, x_dot, theta, theta_dot, steps)` of every env, in env order (for tests).
    pub fn states(&self) -> Vec<([f32; 4], u32)> {
        self.chunks
            .iter()
            .flat_map(|c| {
                let e = &c.env;
                (0..e.len())
                    .map(move |i| ([e.x[i], e.x_dot[i], e.theta[i], e.theta_dot[i]], e.steps[i]))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{cartpole_reset, cartpole_step};

    /// The env-only runner is the engine's step and autoreset: it must track the reference
    /// bit for bit at every level and thread count.
    #[test]
    fn env_only_matches_reference_bit_for_bit() {
        let (n, steps, seed) = (203usize, 150usize, 9u64);
        let key = run_key(seed);
        let mut want: Vec<([f32; 4], u32)> = (0..n)
            .map(|i| (cartpole_reset(key, i as u32, 0), 0))
            .collect();
        let mut resets = 0;
        for t in 0..steps as u32 {
            for (i, (s, st)) in want.iter_mut().enumerate() {
                let (_, term, trunc) = cartpole_step(s, st, (i as u32 + t) & 1);
                if term || trunc {
                    *s = cartpole_reset(key, i as u32, t + 1);
                    *st = 0;
                    resets += 1;
                }
            }
        }
        assert!(
            resets > n as u64,
            "the pattern should end episodes: {resets}"
        );
        for simd in crate::cpu::simd::testable_levels() {
            for threads in [1, 2] {
                let mut e = EnvOnly::new(n, threads, seed, simd).expect("env-only");
                // Two calls, so the step counter carries across them.
                assert_eq!(e.run(100) + e.run(steps - 100), (n * steps) as u64);
                assert_eq!(e.resets(), resets);
                for (i, (got, w)) in e.states().iter().zip(&want).enumerate() {
                    let bits = |s: &[f32; 4]| s.map(f32::to_bits);
                    assert_eq!(
                        (bits(&got.0), got.1),
                        (bits(&w.0), w.1),
                        "env {i} ({simd:?}, {threads} threads)"
                    );
                }
            }
        }
    }
}
