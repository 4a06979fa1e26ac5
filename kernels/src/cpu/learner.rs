//! `Learner`: the learning half of the host engines (`CpuEngine`, `SeqEngine`). It owns the
//! parameters, gradients, Adam state, the thread pool and the minibatch row chunks; an engine
//! only says how a sample's observation is built, so both learn with the same numerics.

use rayon::prelude::*;

use super::mlp::{entropy, NetCache};
use super::optim::{adam_step_and_zero, clip_grad_norm};
use super::simd::SimdLevel;
use crate::layout::ParamLayout;
use crate::reference::{check_grad_lengths, copy_params, init_params};
use crate::{AdamConfig, EngineState, KernelError, MinibatchEval};

/// Fewest minibatch rows worth a thread of their own.
const MIN_ROWS_PER_CHUNK: usize = 128;

/// A row range of the current minibatch with its cached activations and private gradient.
#[derive(Debug)]
struct EvalChunk {
    start: usize,
    len: usize,
    net: NetCache,
    /// Private gradient (only used when more than one chunk is active).
    grads: Vec<f32>,
    /// Per-chunk scratch for the engine's observation builder (e.g. a response prefix).
    scratch: Vec<u32>,
    logp: Vec<f32>,
    entropy: Vec<f32>,
    values: Vec<f32>,
}

impl EvalChunk {
    /// Forward of this chunk's rows; `fill(sample, input_row, scratch)` writes a sample's
    /// observation.
    fn evaluate<F>(
        &mut self,
        layout: &ParamLayout,
        params: &[f32],
        samples: &[u32],
        actions: &[u32],
        simd: SimdLevel,
        fill: &F,
    ) where
        F: Fn(usize, &mut [f32], &mut Vec<u32>),
    {
        let n = self.len;
        let (od, na) = (layout.shape.obs_dim, layout.shape.n_actions);
        self.net.ensure(layout, n);
        for (r, &s) in samples[self.start..self.start + n].iter().enumerate() {
            let s = s as usize;
            fill(
                s,
                &mut self.net.input[r * od..(r + 1) * od],
                &mut self.scratch,
            );
            self.net.actions[r] = actions[s];
        }
        self.net.forward(layout, params, n, simd);
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

/// Parameters, gradients and Adam state of a host engine, with the minibatch machinery:
/// `evaluate` splits rows into ranges (one rayon task each) whose private gradients
/// `accumulate_grad` sums in chunk order, so a row's numbers do not depend on the split.
///
/// `accumulate_grad` needs an `evaluate` since the last rollout (`rolled_out`),
/// `apply_grads`, `set_params` or `load_state` (the cached activations are stale after those).
#[derive(Debug)]
pub(crate) struct Learner {
    params: Vec<f32>,
    grads: Vec<f32>,
    adam_m: Vec<f32>,
    adam_v: Vec<f32>,
    adam_t: u64,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
    evals: Vec<EvalChunk>,
    has_rollout: bool,
    /// Chunks holding the activations of the last `evaluate` (0 = nothing to backward).
    eval_active: usize,
    eval_rows: usize,
}

impl Learner {
    /// Parameters from `init_params(layout, key)`; `threads = 0` uses every core.
    /// `scratch_capacity` reserves each chunk's observation-builder scratch.
    pub(crate) fn new(
        layout: &ParamLayout,
        key: u32,
        threads: usize,
        scratch_capacity: usize,
    ) -> Result<Self, KernelError> {
        let threads = match threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let pool = super::threads::pool(threads)?;
        let np = layout.num_params;
        let evals = (0..threads)
            .map(|_| EvalChunk {
                start: 0,
                len: 0,
                net: NetCache::new(layout),
                grads: Vec::new(),
                scratch: Vec::with_capacity(scratch_capacity),
                logp: Vec::new(),
                entropy: Vec::new(),
                values: Vec::new(),
            })
            .collect();
        Ok(Self {
            params: init_params(layout, key),
            grads: vec![0.0; np],
            adam_m: vec![0.0; np],
            adam_v: vec![0.0; np],
            adam_t: 0,
            threads,
            pool,
            evals,
            has_rollout: false,
            eval_active: 0,
            eval_rows: 0,
        })
    }

    /// Threads in use (after resolving `threads = 0`).
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// The pool of those threads (`None` for one thread).
    pub(crate) fn pool(&self) -> Option<&rayon::ThreadPool> {
        self.pool.as_ref()
    }

    /// The current parameters.
    pub(crate) fn params(&self) -> &[f32] {
        &self.params
    }

    /// Records a new rollout: `evaluate` may run, earlier activations are stale.
    pub(crate) fn rolled_out(&mut self) {
        self.has_rollout = true;
        self.eval_active = 0;
    }

    /// Forward of `samples` (indices below `total` into the last rollout, whose actions are
    /// `actions`); `fill(sample, input_row, scratch)` writes a sample's observation.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn evaluate<F>(
        &mut self,
        layout: &ParamLayout,
        simd: SimdLevel,
        samples: &[u32],
        total: usize,
        actions: &[u32],
        fill: F,
        out: &mut MinibatchEval,
    ) -> Result<(), KernelError>
    where
        F: Fn(usize, &mut [f32], &mut Vec<u32>) + Sync,
    {
        if !self.has_rollout {
            return Err(KernelError::InvalidConfig(
                "evaluate called before the first rollout".into(),
            ));
        }
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
        let params = &self.params[..];
        let fill = &fill;
        let active = &mut self.evals[..n_chunks];
        match &self.pool {
            Some(pool) if n_chunks > 1 => pool.install(|| {
                active
                    .par_iter_mut()
                    .for_each(|e| e.evaluate(layout, params, samples, actions, simd, fill))
            }),
            _ => active
                .iter_mut()
                .for_each(|e| e.evaluate(layout, params, samples, actions, simd, fill)),
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

    /// Backward of the last `evaluate`, added to the gradient (chunk gradients summed in
    /// chunk order).
    pub(crate) fn accumulate_grad(
        &mut self,
        layout: &ParamLayout,
        d_logp: &[f32],
        d_value: &[f32],
        d_entropy: &[f32],
    ) -> Result<(), KernelError> {
        if self.eval_active == 0 {
            return Err(KernelError::InvalidConfig(
                "accumulate_grad needs an evaluate since the last rollout, apply_grads or set_params"
                    .into(),
            ));
        }
        check_grad_lengths(self.eval_rows, d_logp, d_value, d_entropy)?;
        let params = &self.params[..];
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

    /// Hands the gradient to `reduce` (e.g. an all-reduce across ranks).
    pub(crate) fn reduce_grads(&mut self, reduce: &mut dyn FnMut(&mut [f32])) {
        reduce(&mut self.grads);
    }

    /// Clips the gradient, takes one Adam step and zeroes the gradient; returns the
    /// pre-clip norm.
    pub(crate) fn apply_grads(
        &mut self,
        lr: f32,
        max_grad_norm: Option<f32>,
        adam: &AdamConfig,
    ) -> f32 {
        let norm = clip_grad_norm(&mut self.grads, max_grad_norm);
        self.adam_t += 1;
        adam_step_and_zero(
            &mut self.params,
            &mut self.grads,
            &mut self.adam_m,
            &mut self.adam_v,
            self.adam_t,
            lr,
            adam,
        );
        self.eval_active = 0;
        norm
    }

    /// Replaces the parameters (length-checked).
    pub(crate) fn set_params(&mut self, params: &[f32]) -> Result<(), KernelError> {
        copy_params(&mut self.params, params)?;
        self.eval_active = 0;
        Ok(())
    }

    /// Parameters, Adam state and `step`; the env vectors are left for the engine.
    pub(crate) fn save_state(&self, step: u64) -> EngineState {
        EngineState {
            params: self.params.clone(),
            adam_m: self.adam_m.clone(),
            adam_v: self.adam_v.clone(),
            adam_t: self.adam_t,
            step,
            ..EngineState::default()
        }
    }

    /// Loads parameters and Adam state from `st` (sizes already checked by the engine),
    /// zeroes the gradient and forgets the last rollout.
    pub(crate) fn load_state(&mut self, st: &EngineState) {
        self.params.copy_from_slice(&st.params);
        self.adam_m.copy_from_slice(&st.adam_m);
        self.adam_v.copy_from_slice(&st.adam_v);
        self.adam_t = st.adam_t;
        self.grads.iter_mut().for_each(|g| *g = 0.0);
        self.has_rollout = false;
        self.eval_active = 0;
    }
}

/// The learning methods of `Engine` (`accumulate_grad`, `reduce_grads`, `apply_grads`,
/// `params`, `set_params`) for an engine whose `learn` field ([`Learner`] or
/// `reference::RefLearner`) does the work with the engine's `layout` and `cfg.adam`.
/// Expands inside an `impl Engine for ...` block.
macro_rules! delegate_learning {
    () => {
        fn accumulate_grad(
            &mut self,
            d_logp: &[f32],
            d_value: &[f32],
            d_entropy: &[f32],
        ) -> Result<(), $crate::KernelError> {
            self.learn
                .accumulate_grad(&self.layout, d_logp, d_value, d_entropy)
        }

        fn reduce_grads(
            &mut self,
            reduce: &mut dyn FnMut(&mut [f32]),
        ) -> Result<(), $crate::KernelError> {
            self.learn.reduce_grads(reduce);
            Ok(())
        }

        fn apply_grads(
            &mut self,
            lr: f32,
            max_grad_norm: Option<f32>,
        ) -> Result<f32, $crate::KernelError> {
            Ok(self.learn.apply_grads(lr, max_grad_norm, &self.cfg.adam))
        }

        fn params(&self) -> Result<Vec<f32>, $crate::KernelError> {
            Ok(self.learn.params().to_vec())
        }

        fn set_params(&mut self, params: &[f32]) -> Result<(), $crate::KernelError> {
            self.learn.set_params(params)
        }
    };
}
pub(crate) use delegate_learning;
