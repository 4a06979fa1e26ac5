//! `CpuEngine`: the `Engine` on host memory. Envs are split into contiguous chunks that roll
//! out independently (one rayon task each, no per-step synchronisation); minibatches are split
//! into row ranges with private gradient buffers summed at the end.

use rayon::prelude::*;

use super::env::CartPoleSoa;
use super::mlp::{entropy, sample, NetCache};
use super::optim::{adam_step_and_zero, clip_grad_norm};
use crate::layout::{validate_config, ParamLayout};
use crate::reference::init_params;
use crate::rng::{run_key, uniform, STREAM_ACTION};
use crate::{DeviceKind, Engine, EngineConfig, KernelError, MinibatchEval, Rollout};

/// Fewest envs worth a thread of their own: below it, spawn and merge cost more than the work.
const MIN_ENVS_PER_CHUNK: usize = 32;
/// Fewest minibatch rows worth a thread of their own.
const MIN_ROWS_PER_CHUNK: usize = 128;

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
    net: NetCache,
    obs: Vec<f32>,
    actions: Vec<u32>,
    logp: Vec<f32>,
    entropy: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    term: Vec<u8>,
    trunc: Vec<u8>,
    next_values: Vec<f32>,
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
        let mut net = NetCache::new(layout);
        net.ensure(layout, len);
        Self {
            start,
            env: CartPoleSoa::new(key, global_start, len),
            ep_return: vec![0.0; len],
            ep_len: vec![0; len],
            net,
            obs: vec![0.0; nt * len * 4],
            actions: vec![0; nt * len],
            logp: vec![0.0; nt * len],
            entropy: vec![0.0; nt * len],
            values: vec![0.0; nt * len],
            rewards: vec![0.0; nt * len],
            term: vec![0; nt * len],
            trunc: vec![0; nt * len],
            next_values: vec![0.0; nt * len],
            // An env finishes at most once per step; reserve one episode per env and let
            // the rare longer list grow once.
            finished: Vec::with_capacity(len * 2),
            trunc_rows: Vec::with_capacity(len),
        }
    }

    /// Rolls this chunk's envs `nt` steps starting at global step `step0`.
    fn rollout(&mut self, layout: &ParamLayout, params: &[f32], key: u32, step0: u64, nt: usize) {
        let n = self.env.len();
        let na = layout.shape.n_actions;
        self.finished.clear();
        for t in 0..nt {
            // The RNG counter is the low 32 bits of the global step (wraps after 2^32 steps).
            let gt = step0.wrapping_add(t as u64) as u32;
            let base = t * n;
            for i in 0..n {
                self.env.obs(i, &mut self.net.input[i * 4..i * 4 + 4]);
            }
            self.obs[base * 4..(base + n) * 4].copy_from_slice(&self.net.input[..n * 4]);
            self.net.forward(layout, params, n);
            let values = self.net.values();
            for (i, &value) in values[..n].iter().enumerate() {
                let lp = &self.net.logp[i * na..(i + 1) * na];
                let env = self.env.first_env.wrapping_add(i as u32);
                let a = sample(lp, uniform(key, STREAM_ACTION, env, gt));
                self.actions[base + i] = a;
                self.logp[base + i] = lp[a as usize];
                self.entropy[base + i] = entropy(lp);
                self.values[base + i] = value;
            }
            let r = base..base + n;
            self.env.step(
                &self.actions[r.clone()],
                &mut self.rewards[r.clone()],
                &mut self.term[r.clone()],
                &mut self.trunc[r],
            );
            self.trunc_rows.clear();
            for i in 0..n {
                self.ep_return[i] += self.rewards[base + i];
                self.ep_len[i] += 1;
                let (term, trunc) = (self.term[base + i] != 0, self.trunc[base + i] != 0);
                if !(term || trunc) {
                    continue;
                }
                if trunc {
                    // The final state is needed for V(final obs); the input rows of this step
                    // are consumed, so stage it there.
                    let row = self.trunc_rows.len();
                    self.env.obs(i, &mut self.net.input[row * 4..row * 4 + 4]);
                    self.trunc_rows.push(i);
                }
                self.finished.push(Finished {
                    t,
                    ret: self.ep_return[i],
                    len: self.ep_len[i],
                });
                self.ep_return[i] = 0.0;
                self.ep_len[i] = 0;
                self.env.reset(key, i, gt.wrapping_add(1));
            }
            if !self.trunc_rows.is_empty() {
                self.net
                    .forward_critic(layout, params, self.trunc_rows.len());
                for (row, &i) in self.trunc_rows.iter().enumerate() {
                    self.next_values[base + i] = self.net.values()[row];
                }
            }
        }
        // Bootstrap values of the observations after the last step.
        for i in 0..n {
            self.env.obs(i, &mut self.net.input[i * 4..i * 4 + 4]);
        }
        self.net.forward_critic(layout, params, n);
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
                    self.next_values[s] = self.net.values()[i];
                }
            }
        }
    }
}

/// A row range of the current minibatch with its cached activations and private gradient.
#[derive(Debug)]
struct EvalChunk {
    start: usize,
    len: usize,
    net: NetCache,
    /// Private gradient (only used when more than one chunk is active).
    grads: Vec<f32>,
    logp: Vec<f32>,
    entropy: Vec<f32>,
    values: Vec<f32>,
}

impl EvalChunk {
    fn evaluate(
        &mut self,
        layout: &ParamLayout,
        params: &[f32],
        samples: &[u32],
        obs: &[f32],
        actions: &[u32],
    ) {
        let n = self.len;
        let na = layout.shape.n_actions;
        self.net.ensure(layout, n);
        for (r, &s) in samples[self.start..self.start + n].iter().enumerate() {
            let s = s as usize;
            self.net.input[r * 4..r * 4 + 4].copy_from_slice(&obs[s * 4..s * 4 + 4]);
            self.net.actions[r] = actions[s];
        }
        self.net.forward(layout, params, n);
        self.logp.resize(n, 0.0);
        self.entropy.resize(n, 0.0);
        self.values.resize(n, 0.0);
        for r in 0..n {
            let lp = &self.net.logp[r * na..(r + 1) * na];
            self.logp[r] = lp[self.net.actions[r] as usize];
            self.entropy[r] = entropy(lp);
            self.values[r] = self.net.values()[r];
        }
    }
}

/// The CPU implementation of [`Engine`] (SEMANTICS.md), tested against `reference`.
///
/// Workspaces are sized at construction (rollout) or by the largest minibatch seen so far
/// (`evaluate`), so steady-state calls allocate nothing of their own; `matrixmultiply` still
/// mallocs a small packing buffer per GEMM, and may use its own threads for large GEMMs
/// (capped by `MATMUL_NUM_THREADS`). `accumulate_grad` needs an `evaluate` since the last
/// `rollout`, `apply_grads` or `set_params` (the cached activations are stale after those).
pub struct CpuEngine {
    cfg: EngineConfig,
    layout: ParamLayout,
    key: u32,
    params: Vec<f32>,
    grads: Vec<f32>,
    adam_m: Vec<f32>,
    adam_v: Vec<f32>,
    adam_t: u64,
    step: u64,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
    envs: Vec<EnvChunk>,
    evals: Vec<EvalChunk>,
    /// Observations of the last rollout, `[t * num_envs + env][4]`.
    obs: Vec<f32>,
    /// Actions of the last rollout, `[t * num_envs + env]`.
    actions: Vec<u32>,
    has_rollout: bool,
    /// Per-chunk read positions while merging finished episodes.
    merge_cursor: Vec<usize>,
    /// Chunks holding the activations of the last `evaluate` (0 = nothing to backward).
    eval_active: usize,
    eval_rows: usize,
}

impl std::fmt::Debug for CpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuEngine")
            .field("num_envs", &self.cfg.num_envs)
            .field("num_steps", &self.cfg.num_steps)
            .field("num_params", &self.layout.num_params)
            .field("threads", &self.threads)
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
        let threads = match config.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("drover-cpu-{i}"))
                .build()
                .map_err(|e| {
                    KernelError::InvalidConfig(format!("cannot start {threads} threads: {e}"))
                })?;
            Some(pool)
        } else {
            None
        };
        let (ne, nt) = (config.num_envs, config.num_steps);
        let n_chunks = threads.min(ne / MIN_ENVS_PER_CHUNK).max(1);
        let envs = (0..n_chunks)
            .map(|c| {
                let (start, end) = (c * ne / n_chunks, (c + 1) * ne / n_chunks);
                let global = (config.env_offset + start) as u32;
                EnvChunk::new(&layout, key, global, start, end - start, nt)
            })
            .collect();
        let np = layout.num_params;
        let evals = (0..threads)
            .map(|_| EvalChunk {
                start: 0,
                len: 0,
                net: NetCache::new(&layout),
                grads: Vec::new(),
                logp: Vec::new(),
                entropy: Vec::new(),
                values: Vec::new(),
            })
            .collect();
        Ok(Self {
            params: init_params(&layout, key),
            grads: vec![0.0; np],
            adam_m: vec![0.0; np],
            adam_v: vec![0.0; np],
            adam_t: 0,
            step: 0,
            threads,
            pool,
            envs,
            evals,
            obs: vec![0.0; ne * nt * 4],
            actions: vec![0; ne * nt],
            has_rollout: false,
            merge_cursor: vec![0; n_chunks],
            eval_active: 0,
            eval_rows: 0,
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
        self.threads
    }
}

impl Engine for CpuEngine {
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
        let (layout, params, key, step0) = (&self.layout, &self.params[..], self.key, self.step);
        match (&self.pool, self.envs.len()) {
            (Some(pool), n) if n > 1 => pool.install(|| {
                self.envs
                    .par_iter_mut()
                    .for_each(|c| c.rollout(layout, params, key, step0, nt))
            }),
            _ => self
                .envs
                .iter_mut()
                .for_each(|c| c.rollout(layout, params, key, step0, nt)),
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
        self.has_rollout = true;
        self.eval_active = 0;
        Ok(())
    }

    fn evaluate(&mut self, samples: &[u32], out: &mut MinibatchEval) -> Result<(), KernelError> {
        if !self.has_rollout {
            return Err(KernelError::InvalidConfig(
                "evaluate called before the first rollout".into(),
            ));
        }
        let total = self.cfg.num_envs * self.cfg.num_steps;
        if let Some(&bad) = samples.iter().find(|&&s| s as usize >= total) {
            return Err(KernelError::InvalidConfig(format!(
                "sample index {bad} out of range: the rollout has {total} samples"
            )));
        }
        let rows = samples.len();
        let n_chunks = self.threads.min(rows / MIN_ROWS_PER_CHUNK).max(1);
        for (c, e) in self.evals.iter_mut().enumerate().take(n_chunks) {
            e.start = c * rows / n_chunks;
            e.len = (c + 1) * rows / n_chunks - e.start;
        }
        let (layout, params, obs, actions) = (
            &self.layout,
            &self.params[..],
            &self.obs[..],
            &self.actions[..],
        );
        let active = &mut self.evals[..n_chunks];
        match &self.pool {
            Some(pool) if n_chunks > 1 => pool.install(|| {
                active
                    .par_iter_mut()
                    .for_each(|e| e.evaluate(layout, params, samples, obs, actions))
            }),
            _ => active
                .iter_mut()
                .for_each(|e| e.evaluate(layout, params, samples, obs, actions)),
        }
        out.logp.clear();
        out.entropy.clear();
        out.values.clear();
        for e in &self.evals[..n_chunks] {
            out.logp.extend_from_slice(&e.logp[..e.len]);
            out.entropy.extend_from_slice(&e.entropy[..e.len]);
            out.values.extend_from_slice(&e.values[..e.len]);
        }
        self.eval_active = n_chunks;
        self.eval_rows = rows;
        Ok(())
    }

    fn accumulate_grad(
        &mut self,
        d_logp: &[f32],
        d_value: &[f32],
        d_entropy: &[f32],
    ) -> Result<(), KernelError> {
        if self.eval_active == 0 {
            return Err(KernelError::InvalidConfig(
                "accumulate_grad needs an evaluate since the last rollout, apply_grads or set_params".into(),
            ));
        }
        let n = self.eval_rows;
        for (name, got) in [
            ("d_logp", d_logp.len()),
            ("d_value", d_value.len()),
            ("d_entropy", d_entropy.len()),
        ] {
            if got != n {
                return Err(KernelError::Length {
                    name,
                    got,
                    expected: n,
                });
            }
        }
        let (layout, params) = (&self.layout, &self.params[..]);
        let np = layout.num_params;
        let back = |e: &mut EvalChunk, grads: &mut [f32]| {
            let r = e.start..e.start + e.len;
            e.net.backward(
                layout,
                params,
                e.len,
                &d_logp[r.clone()],
                &d_value[r.clone()],
                &d_entropy[r],
                grads,
            );
        };
        if self.eval_active == 1 {
            back(&mut self.evals[0], &mut self.grads);
            return Ok(());
        }
        let active = &mut self.evals[..self.eval_active];
        let run = |e: &mut EvalChunk| {
            e.grads.resize(np, 0.0);
            e.grads.iter_mut().for_each(|g| *g = 0.0);
            let mut g = std::mem::take(&mut e.grads);
            back(e, &mut g);
            e.grads = g;
        };
        match &self.pool {
            Some(pool) => pool.install(|| active.par_iter_mut().for_each(run)),
            None => active.iter_mut().for_each(run),
        }
        for e in active.iter() {
            for (g, &v) in self.grads.iter_mut().zip(&e.grads) {
                *g += v;
            }
        }
        Ok(())
    }

    fn reduce_grads(&mut self, reduce: &mut dyn FnMut(&mut [f32])) -> Result<(), KernelError> {
        reduce(&mut self.grads);
        Ok(())
    }

    fn apply_grads(&mut self, lr: f32, max_grad_norm: Option<f32>) -> Result<f32, KernelError> {
        let norm = clip_grad_norm(&mut self.grads, max_grad_norm);
        self.adam_t += 1;
        adam_step_and_zero(
            &mut self.params,
            &mut self.grads,
            &mut self.adam_m,
            &mut self.adam_v,
            self.adam_t,
            lr,
            &self.cfg.adam,
        );
        self.eval_active = 0;
        Ok(norm)
    }

    fn params(&self) -> Result<Vec<f32>, KernelError> {
        Ok(self.params.clone())
    }

    fn set_params(&mut self, params: &[f32]) -> Result<(), KernelError> {
        if params.len() != self.params.len() {
            return Err(KernelError::Length {
                name: "params",
                got: params.len(),
                expected: self.params.len(),
            });
        }
        self.params.copy_from_slice(params);
        self.eval_active = 0;
        Ok(())
    }
}
