//! Structure-of-arrays CartPole-v1 (SEMANTICS.md section 2) for a contiguous range of envs.
//! The step loop is branch-free per lane so it vectorizes (at AVX-512 width when the CPU has it);
//! resets are gathered into an index list and drawn 16 lanes at a time.

use super::simd::SimdLevel;
use crate::math::sincos;
use crate::reference::cartpole::*;
use crate::rng::{uniform, STREAM_RESET};

/// State of `len` envs whose global indices start at `first_env`.
#[derive(Debug, Clone)]
pub(crate) struct CartPoleSoa {
    pub first_env: u32,
    pub x: Vec<f32>,
    pub x_dot: Vec<f32>,
    pub theta: Vec<f32>,
    pub theta_dot: Vec<f32>,
    pub steps: Vec<u32>,
}

impl CartPoleSoa {
    /// `len` envs, each reset with reset counter 0 (the first reset of a run).
    pub fn new(key: u32, first_env: u32, len: usize) -> Self {
        let mut s = Self {
            first_env,
            x: vec![0.0; len],
            x_dot: vec![0.0; len],
            theta: vec![0.0; len],
            theta_dot: vec![0.0; len],
            steps: vec![0; len],
        };
        for i in 0..len {
            s.reset(key, i, 0);
        }
        s
    }

    /// Number of envs.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// Resets local env `i` with reset counter `counter`.
    pub fn reset(&mut self, key: u32, i: usize, counter: u32) {
        let env = self.first_env.wrapping_add(i as u32);
        let c = counter.wrapping_mul(4);
        let comp = |k: u32| uniform(key, STREAM_RESET, env, c.wrapping_add(k)) * 0.1 - 0.05;
        self.x[i] = comp(0);
        self.x_dot[i] = comp(1);
        self.theta[i] = comp(2);
        self.theta_dot[i] = comp(3);
        self.steps[i] = 0;
    }

    /// Writes local env `i`'s observation `(x, x_dot, theta, theta_dot)` into `out[..4]`.
    #[inline]
    pub fn obs(&self, i: usize, out: &mut [f32]) {
        out[0] = self.x[i];
        out[1] = self.x_dot[i];
        out[2] = self.theta[i];
        out[3] = self.theta_dot[i];
    }

    /// Resets the local envs listed in `idx` with reset counter `counter`, as [`Self::reset`]
    /// does one by one; the draws of 16 envs are computed together so the hashes vectorize.
    pub fn reset_many(&mut self, key: u32, idx: &[u32], counter: u32) {
        const L: usize = 16;
        let c = counter.wrapping_mul(4);
        for group in idx.chunks(L) {
            let mut env = [0u32; L];
            for (e, &i) in env.iter_mut().zip(group) {
                *e = self.first_env.wrapping_add(i);
            }
            let mut vals = [[0.0f32; L]; 4];
            for (k, row) in vals.iter_mut().enumerate() {
                for (v, &e) in row.iter_mut().zip(&env) {
                    *v = uniform(key, STREAM_RESET, e, c.wrapping_add(k as u32)) * 0.1 - 0.05;
                }
            }
            for (l, &i) in group.iter().enumerate() {
                let i = i as usize;
                self.x[i] = vals[0][l];
                self.x_dot[i] = vals[1][l];
                self.theta[i] = vals[2][l];
                self.theta_dot[i] = vals[3][l];
                self.steps[i] = 0;
            }
        }
    }

    /// Steps every env with `actions`, writing reward and done flags; no reset. Runs the
    /// vectorized loop at `simd` width; every level gives the same bits (no FMA, same order).
    pub fn step(
        &mut self,
        simd: SimdLevel,
        actions: &[u32],
        rewards: &mut [f32],
        term: &mut [u8],
        trunc: &mut [u8],
    ) {
        match simd {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                // SAFETY: an `Avx512` level is only handed out after `SimdLevel::is_supported`
                // confirmed every feature `step_avx512` enables (engine constructor and setter).
                unsafe { self.step_avx512(actions, rewards, term, trunc) }
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                // SAFETY: as above, for the features `step_avx2` enables.
                unsafe { self.step_avx2(actions, rewards, term, trunc) }
            }
            _ => self.step_body(actions, rewards, term, trunc),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn step_avx2(
        &mut self,
        actions: &[u32],
        rewards: &mut [f32],
        term: &mut [u8],
        trunc: &mut [u8],
    ) {
        // As `step_avx512`: the same body at 8 lanes, the same bits.
        self.step_body(actions, rewards, term, trunc)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
    unsafe fn step_avx512(
        &mut self,
        actions: &[u32],
        rewards: &mut [f32],
        term: &mut [u8],
        trunc: &mut [u8],
    ) {
        // The body is inlined here and compiled with the features above; Rust never contracts
        // `a * b + c` into an FMA, so the bits equal the portable loop's.
        self.step_body(actions, rewards, term, trunc)
    }

    #[inline(always)]
    fn step_body(
        &mut self,
        actions: &[u32],
        rewards: &mut [f32],
        term: &mut [u8],
        trunc: &mut [u8],
    ) {
        let n = self.len();
        // Equal lengths up front let LLVM drop the per-element bounds checks and vectorize.
        let (x, xd, th, thd, st) = (
            &mut self.x[..n],
            &mut self.x_dot[..n],
            &mut self.theta[..n],
            &mut self.theta_dot[..n],
            &mut self.steps[..n],
        );
        let (actions, rewards, term, trunc) = (
            &actions[..n],
            &mut rewards[..n],
            &mut term[..n],
            &mut trunc[..n],
        );
        for i in 0..n {
            // Same expression order as `reference::cartpole_step` (no FMA, left to right).
            let force = if actions[i] == 1 {
                FORCE_MAG
            } else {
                -FORCE_MAG
            };
            let (s, c) = sincos(th[i]);
            let temp = (force + POLEMASS_LENGTH * thd[i] * thd[i] * s) / TOTAL_MASS;
            let theta_acc = (GRAVITY * s - c * temp)
                / (HALF_LENGTH * (FOUR_THIRDS - MASS_POLE * c * c / TOTAL_MASS));
            let x_acc = temp - POLEMASS_LENGTH * theta_acc * c / TOTAL_MASS;
            let nx = x[i] + TAU * xd[i];
            xd[i] += TAU * x_acc;
            let nth = th[i] + TAU * thd[i];
            thd[i] += TAU * theta_acc;
            x[i] = nx;
            th[i] = nth;
            st[i] += 1;
            #[expect(
                clippy::manual_range_contains,
                reason = "exactly as SEMANTICS.md writes them: `!range.contains` would turn a NaN state into a termination, which the reference does not do"
            )]
            let t = (nx < -X_THRESHOLD)
                | (nx > X_THRESHOLD)
                | (nth < -THETA_THRESHOLD)
                | (nth > THETA_THRESHOLD);
            term[i] = t as u8;
            trunc[i] = (!t & (st[i] >= MAX_STEPS)) as u8;
            rewards[i] = 1.0;
        }
    }
}

/// Appends to `out` the indices `i` where `term[i] | trunc[i]` is set, in increasing order.
/// Skips 8 envs at a time where none finished (most of them at CartPole's episode lengths).
pub(crate) fn collect_done(term: &[u8], trunc: &[u8], out: &mut Vec<u32>) {
    let n = term.len().min(trunc.len());
    let (term, trunc) = (&term[..n], &trunc[..n]);
    let mut i = 0;
    while i + 8 <= n {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&term[i..i + 8]);
        b.copy_from_slice(&trunc[i..i + 8]);
        if u64::from_ne_bytes(a) | u64::from_ne_bytes(b) != 0 {
            for j in i..i + 8 {
                if term[j] | trunc[j] != 0 {
                    out.push(j as u32);
                }
            }
        }
        i += 8;
    }
    for j in i..n {
        if term[j] | trunc[j] != 0 {
            out.push(j as u32);
        }
    }
}
