//! `CpuEngine`: the `Engine` on host memory. Envs are split into contiguous chunks that roll
//! out independently (one rayon task each, no per-step synchronisation); minibatches are split
//! into row ranges with private gradient buffers summed at the end.

use rayon::prelude::*;

use super::env::{collect_done, CartPoleSoa};
use super::fused::{BlockNet, BLOCK};
use super::learner::Learner;
use super::mlp::{entropy, log_softmax, sample};
use super::simd::SimdLevel;
use crate::layout::{validate_config, ParamLayout};
use crate::rng::{run_key, uniform, STREAM_ACTION};
use crate::{DeviceKind, Engine, EngineConfig, EngineState, KernelError, MinibatchEval, Rollout};

/// Fewest envs worth a thread of their own: below it, spawn and merge cost more than the work.
const MIN_ENVS_PER_CHUNK: usize = 32;

/// An episode that ended at rollout step `t` (entries kept in `(t, env)` order).
#[derive(Debug, Clone, Copy)]
struct Finished {
    t: usize,
    ret: f32,
    len: u32,
}

/// A contiguous range of envs with its state and chunk-local, time-major (`[t * len + i]`)
/// rollout outputs.
#[derive(Debug)]
struct EnvChunk {
    start: usize,
    env: CartPoleSoa,
    ep_return: Vec<f32>,
    ep_len: Vec<u32>,
    block: BlockNet,
    /// Action-sampling uniforms of the current step, one per env.
    uniforms: Vec<f32>,
    /// Envs that finished at the current step.
    done: Vec<u32>,
    /// Post-step states of the envs truncated at the current step (for V(final obs)).
    trunc_obs: Vec<[f32; 4]>,
    /// Head scratch: one row's logits and log-probabilities.
    head_lg: Vec<f32>,
    head_lp: Vec<f32>,
    obs: Vec<f32>,
    actions: Vec<u32>,
    logp: Vec<f32>,
    entropy: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    term: Vec<u8>,
    trunc: Vec<u8>,
    next_values: Vec<f32>,
    last_values: Vec<f32>,
    finished: Vec<Finished>,
    trunc_rows: Vec<usize>,
}

impl EnvChunk {
    fn new(
        layout: &ParamLayout,
        key: u32,
        global_start: u32,
        start: usize,
        len: usize,
        nt: usize,
    ) -> Self {
        let na = layout.shape.n_actions;
        Self {
            start,
            env: CartPoleSoa::new(key, global_start, len),
            ep_return: vec![0.0; len],
            ep_len: vec![0; len],
            block: BlockNet::new(layout),
            uniforms: vec![0.0; len],
            done: Vec::with_capacity(len),
            trunc_obs: Vec::with_capacity(len),
            head_lg: vec![0.0; na],
            head_lp: vec![0.0; na],
            obs: vec![0.0; nt * len * 4],
            actions: vec![0; nt * len],
            logp: vec![0.0; nt * len],
            entropy: vec![0.0; nt * len],
            values: vec![0.0; nt * len],
            rewards: vec![0.0; nt * len],
            term: vec![0; nt * len],
            trunc: vec![0; nt * len],
            next_values: vec![0.0; nt * len],
            last_values: vec![0.0; len],
            // An env finishes at most once per step; reserve one episode per env and let
            // the rare longer list grow once.
            finished: Vec::with_capacity(len * 2),
            trunc_rows: Vec::with_capacity(len),
        }
    }

    /// Loads envs `start..start + len` (`len <= BLOCK`) into the block input, zero-padded,
    /// with the block sized for them; returns its width.
    fn load_block(&mut self, start: usize, len: usize) -> usize {
        let w = self.block.fit(len);
        let e = &self.env;
        let inp = &mut self.block.input;
        for (k, src) in [&e.x, &e.x_dot, &e.theta, &e.theta_dot].into_iter().enumerate() {
            let row = &mut inp[k * w..(k + 1) * w];
            row[..len].copy_from_slice(&src[start..start + len]);
            row[len..].iter_mut().for_each(|v| *v = 0.0);
        }
        w
    }

    /// Critic values of the staged truncation states, into `next_values[base + i]`.
    fn truncation_values(&mut self, layout: &ParamLayout, params: &[f32], simd: SimdLevel, base: usize) {
        for (g, rows) in self.trunc_obs.chunks(BLOCK).enumerate() {
            let w = self.block.fit(rows.len());
            let inp = &mut self.block.input;
            inp.iter_mut().for_each(|v| *v = 0.0);
            for (e, o) in rows.iter().enumerate() {
                for k in 0..4 {
                    inp[k * w + e] = o[k];
                }
            }
            self.block.forward(layout, params, simd, false);
            for (e, &v) in self.block.values()[..rows.len()].iter().enumerate() {
                let i = self.trunc_rows[g * BLOCK + e];
                self.next_values[base + i] = v;
            }
        }
    }

    /// Rolls this chunk's envs `nt` steps starting at global step `step0`.
    fn rollout(
        &mut self,
        layout: &ParamLayout,
        params: &[f32],
        key: u32,
        step0: u64,
        nt: usize,
        simd: SimdLevel,
    ) {
        let n = self.env.len();
        let na = layout.shape.n_actions;
        self.finished.clear();
        for t in 0..nt {
            // The RNG counter is the low 32 bits of the global step (wraps after 2^32 steps).
            let gt = step0.wrapping_add(t as u64) as u32;
            let base = t * n;
            fill_uniforms(simd, key, self.env.first_env, gt, &mut self.uniforms[..n]);
            {
                let e = &self.env;
                let obs = &mut self.obs[base * 4..(base + n) * 4];
                for (i, o) in obs.chunks_exact_mut(4).enumerate() {
                    o[0] = e.x[i];
                    o[1] = e.x_dot[i];
                    o[2] = e.theta[i];
                    o[3] = e.theta_dot[i];
                }
            }
            for b0 in (0..n).step_by(BLOCK) {
                let len = BLOCK.min(n - b0);
                let w = self.load_block(b0, len);
                self.block.forward(layout, params, simd, true);
                let (logits, values) = (self.block.logits(), self.block.values());
                for e in 0..len {
                    for a in 0..na {
                        self.head_lg[a] = logits[a * w + e];
                    }
                    log_softmax(&self.head_lg, &mut self.head_lp);
                    let s = base + b0 + e;
                    let a = sample(&self.head_lp, self.uniforms[b0 + e]);
                    self.actions[s] = a;
                    self.logp[s] = self.head_lp[a as usize];
                    self.entropy[s] = entropy(&self.head_lp);
                    self.values[s] = values[e];
                }
            }
            let r = base..base + n;
            self.env.step(
                simd,
                &self.actions[r.clone()],
                &mut self.rewards[r.clone()],
                &mut self.term[r.clone()],
                &mut self.trunc[r.clone()],
            );
            for ((ret, len), &rw) in self
                .ep_return
                .iter_mut()
                .zip(self.ep_len.iter_mut())
                .zip(&self.rewards[r.clone()])
            {
                *ret += rw;
                *len += 1;
            }
            self.done.clear();
            collect_done(&self.term[r.clone()], &self.trunc[r], &mut self.done);
            if self.done.is_empty() {
                continue;
            }
            self.trunc_rows.clear();
            self.trunc_obs.clear();
            for &i in &self.done {
                let i = i as usize;
                if self.trunc[base + i] != 0 {
                    let mut o = [0.0f32; 4];
                    self.env.obs(i, &mut o);
                    self.trunc_obs.push(o);
                    self.trunc_rows.push(i);
                }
                self.finished.push(Finished {
                    t,
                    ret: self.ep_return[i],
                    len: self.ep_len[i],
                });
                self.ep_return[i] = 0.0;
                self.ep_len[i] = 0;
            }
            self.env.reset_many(key, &self.done, gt.wrapping_add(1));
            if !self.trunc_rows.is_empty() {
                self.truncation_values(layout, params, simd, base);
            }
        }
        // Bootstrap values of the observations after the last step.
        for b0 in (0..n).step_by(BLOCK) {
            let len = BLOCK.min(n - b0);
            self.load_block(b0, len);
            self.block.forward(layout, params, simd, false);
            self.last_values[b0..b0 + len].copy_from_slice(&self.block.values()[..len]);
        }
        for t in 0..nt {
            for i in 0..n {
                let s = t * n + i;
                if self.term[s] != 0 {
                    self.next_values[s] = 0.0;
                } else if self.trunc[s] != 0 {
                    // Already V(final obs).
                } else if t + 1 < nt {
                    self.next_values[s] = self.values[s + n];
                } else {
                    self.next_values[s] = self.last_values[i];
                }
            }
        }
    }
}

/// `u[i] = uniform(key, STREAM_ACTION, first_env + i, counter)`, vectorized at `simd` width.
fn fill_uniforms(simd: SimdLevel, key: u32, first_env: u32, counter: u32, u: &mut [f32]) {
    #[inline(always)]
    fn body(key: u32, first_env: u32, counter: u32, u: &mut [f32]) {
        for (i, v) in u.iter_mut().enumerate() {
            *v = uniform(key, STREAM_ACTION, first_env.wrapping_add(i as u32), counter);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
    unsafe fn avx512(key: u32, first_env: u32, counter: u32, u: &mut [f32]) {
        body(key, first_env, counter, u)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(key: u32, first_env: u32, counter: u32, u: &mut [f32]) {
        body(key, first_env, counter, u)
    }
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a level exists only where `SimdLevel::is_supported` confirmed its features.
        SimdLevel::Avx512 => unsafe { avx512(key, first_env, counter, u) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { avx2(key, first_env, counter, u) },
        _ => body(key, first_env, counter, u),
    }
}

/// The CPU implementation of [`Engine`] (SEMANTICS.md), tested against `reference`.
///
/// Workspaces are sized at construction (rollout) or by the largest minibatch seen so far
/// (`evaluate`), so steady-state calls allocate nothing. `accumulate_grad` needs an `evaluate`
/// since the last `rollout`, `apply_grads` or `set_params` (the cached activations are stale
/// after those).
pub struct CpuEngine {
    cfg: EngineConfig,
    layout: ParamLayout,
    key: u32,
    learn: Learner,
    step: u64,
    simd: SimdLevel,
    envs: Vec<EnvChunk>,
    /// Observations of the last rollout, `[t * num_envs + env][4]`.
    obs: Vec<f32>,
    /// Actions of the last rollout, `[t * num_envs + env]`.
    actions: Vec<u32>,
    /// Per-chunk read positions while merging finished episodes.
    merge_cursor: Vec<usize>,
}

impl std::fmt::Debug for CpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuEngine")
            .field("num_envs", &self.cfg.num_envs)
            .field("num_steps", &self.cfg.num_steps)
            .field("num_params", &self.layout.num_params)
            .field("threads", &self.learn.threads())
            .field("simd", &self.simd)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl CpuEngine {
    /// Validates `config`, initialises parameters (`reference::init_params`) and resets every
    /// env with reset counter 0. `threads = 0` uses every core; small batches use one thread.
    pub fn new(config: EngineConfig) -> Result<Self, KernelError> {
        let layout = validate_config(&config)?;
        let key = run_key(config.seed);
        let learn = Learner::new(&layout, key, config.threads, 0)?;
        let threads = learn.threads();
        let (ne, nt) = (config.num_envs, config.num_steps);
        let n_chunks = threads.min(ne / MIN_ENVS_PER_CHUNK).max(1);
        let envs = (0..n_chunks)
            .map(|c| {
                let (start, end) = (c * ne / n_chunks, (c + 1) * ne / n_chunks);
                let global = (config.env_offset + start) as u32;
                EnvChunk::new(&layout, key, global, start, end - start, nt)
            })
            .collect();
        Ok(Self {
            learn,
            step: 0,
            simd: SimdLevel::from_env()?,
            envs,
            obs: vec![0.0; ne * nt * 4],
            actions: vec![0; ne * nt],
            merge_cursor: vec![0; n_chunks],
            key,
            layout,
            cfg: config,
        })
    }

    /// The parameter layout of the flat buffer.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Threads this engine uses (after resolving `threads = 0`).
    pub fn threads(&self) -> usize {
        self.learn.threads()
    }

    /// The instruction set of the hot loops (the best the CPU supports, unless set).
    pub fn simd_level(&self) -> SimdLevel {
        self.simd
    }

    /// Chooses the instruction set of the hot loops (tests and benchmarks compare levels);
    /// an error when this CPU cannot run `level`.
    pub fn set_simd_level(&mut self, level: SimdLevel) -> Result<(), KernelError> {
        level.require()?;
        self.simd = level;
        Ok(())
    }
}

impl Engine for CpuEngine {
    fn simd_level(&self) -> Option<SimdLevel> {
        Some(self.simd)
    }

    fn set_simd_level(&mut self, level: SimdLevel) -> Result<(), KernelError> {
        CpuEngine::set_simd_level(self, level)
    }

    fn device(&self) -> DeviceKind {
        DeviceKind::Cpu
    }

    fn num_params(&self) -> usize {
        self.layout.num_params
    }

    fn global_step(&self) -> u64 {
        self.step
    }

    fn rollout(&mut self, out: &mut Rollout) -> Result<(), KernelError> {
        let (ne, nt) = (self.cfg.num_envs, self.cfg.num_steps);
        let params = self.learn.params();
        let (layout, key, step0, simd) = (&self.layout, self.key, self.step, self.simd);
        match (self.learn.pool(), self.envs.len()) {
            (Some(pool), n) if n > 1 => pool.install(|| {
                self.envs
                    .par_iter_mut()
                    .for_each(|c| c.rollout(layout, params, key, step0, nt, simd))
            }),
            _ => self
                .envs
                .iter_mut()
                .for_each(|c| c.rollout(layout, params, key, step0, nt, simd)),
        }
        self.step += nt as u64;

        let total = ne * nt;
        out.num_steps = nt;
        out.num_envs = ne;
        out.actions.resize(total, 0);
        out.logp.resize(total, 0.0);
        out.entropy.resize(total, 0.0);
        out.values.resize(total, 0.0);
        out.rewards.resize(total, 0.0);
        out.terminated.resize(total, 0);
        out.truncated.resize(total, 0);
        out.next_values.resize(total, 0.0);
        out.finished_returns.clear();
        out.finished_lengths.clear();
        for c in &self.envs {
            let n = c.env.len();
            for t in 0..nt {
                let (src, dst) = (t * n..(t + 1) * n, t * ne + c.start..t * ne + c.start + n);
                out.actions[dst.clone()].copy_from_slice(&c.actions[src.clone()]);
                out.logp[dst.clone()].copy_from_slice(&c.logp[src.clone()]);
                out.entropy[dst.clone()].copy_from_slice(&c.entropy[src.clone()]);
                out.values[dst.clone()].copy_from_slice(&c.values[src.clone()]);
                out.rewards[dst.clone()].copy_from_slice(&c.rewards[src.clone()]);
                out.terminated[dst.clone()].copy_from_slice(&c.term[src.clone()]);
                out.truncated[dst.clone()].copy_from_slice(&c.trunc[src.clone()]);
                out.next_values[dst.clone()].copy_from_slice(&c.next_values[src.clone()]);
                self.actions[dst.clone()].copy_from_slice(&c.actions[src.clone()]);
                self.obs[dst.start * 4..dst.end * 4]
                    .copy_from_slice(&c.obs[src.start * 4..src.end * 4]);
            }
        }
        // Merge finished episodes in (t, env) order: chunks cover increasing env ranges.
        self.merge_cursor.iter_mut().for_each(|c| *c = 0);
        for t in 0..nt {
            for (c, cur) in self.envs.iter().zip(self.merge_cursor.iter_mut()) {
                while let Some(f) = c.finished.get(*cur).filter(|f| f.t == t) {
                    out.finished_returns.push(f.ret);
                    out.finished_lengths.push(f.len);
                    *cur += 1;
                }
            }
        }
        self.learn.rolled_out();
        Ok(())
    }

    fn evaluate(&mut self, samples: &[u32], out: &mut MinibatchEval) -> Result<(), KernelError> {
        let total = self.cfg.num_envs * self.cfg.num_steps;
        let obs = &self.obs[..];
        let fill = |s: usize, row: &mut [f32], _: &mut Vec<u32>| {
            row.copy_from_slice(&obs[s * 4..s * 4 + 4]);
        };
        let (layout, simd, actions) = (&self.layout, self.simd, &self.actions[..]);
        self.learn
            .evaluate(layout, simd, samples, total, actions, fill, out)
    }

    crate::cpu::learner::delegate_learning!();

    fn save_state(&self) -> Result<EngineState, KernelError> {
        let mut st = self.learn.save_state(self.step);
        // Chunks cover increasing env ranges, so concatenation is global env order.
        for c in &self.envs {
            st.x.extend_from_slice(&c.env.x);
            st.x_dot.extend_from_slice(&c.env.x_dot);
            st.theta.extend_from_slice(&c.env.theta);
            st.theta_dot.extend_from_slice(&c.env.theta_dot);
            st.env_steps.extend_from_slice(&c.env.steps);
            st.ep_return.extend_from_slice(&c.ep_return);
            st.ep_len.extend_from_slice(&c.ep_len);
        }
        Ok(st)
    }

    fn load_state(&mut self, st: &EngineState) -> Result<(), KernelError> {
        st.check_sizes(self.layout.num_params, self.cfg.num_envs)?;
        self.learn.load_state(st);
        self.step = st.step;
        for c in &mut self.envs {
            let r = c.start..c.start + c.env.len();
            c.env.x.copy_from_slice(&st.x[r.clone()]);
            c.env.x_dot.copy_from_slice(&st.x_dot[r.clone()]);
            c.env.theta.copy_from_slice(&st.theta[r.clone()]);
            c.env.theta_dot.copy_from_slice(&st.theta_dot[r.clone()]);
            c.env.steps.copy_from_slice(&st.env_steps[r.clone()]);
            c.ep_return.copy_from_slice(&st.ep_return[r.clone()]);
            c.ep_len.copy_from_slice(&st.ep_len[r]);
        }
        Ok(())
    }
}
