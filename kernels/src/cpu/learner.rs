//! `Learner`: the learning half of the host engines (`CpuEngine`, `SeqEngine`). It owns the
//! parameters, gradients, Adam state, the thread pool and the minibatch row chunks; an engine
//! only says how a sample's observation is built, so both learn with the same numerics.

use rayon::prelude::*;

use super::mlp::{transposed_weights, BackwardScratch, NetCache};
use super::optim::{adam_step_and_zero, clip_grad_norm};
use super::simd::SimdLevel;
use crate::layout::ParamLayout;
use crate::reference::{check_grad_lengths, copy_params, init_params};
use crate::{AdamConfig, EngineState, KernelError, MinibatchEval};

/// Fewest minibatch rows worth a thread of their own.
const MIN_ROWS_PER_CHUNK: usize = 128;

/// Rows of one pass of the network: a chunk's rows go through the forward (and later the
/// backward) in blocks of this many, so a block's activations (about 270 floats a row for
/// 64x64 actor and critic, 280 KB) stay in L2 from one layer to the next; whole chunks of
/// thousands of rows spill to memory at every layer and ran at half the speed. A row's
/// forward does not depend on its block; the gradient does (narrow layers sum a block's rows
/// in vector lanes before adding them in), through this constant only, so results stay the
/// same from run to run for a given thread count.
const PASS_ROWS: usize = 256;

/// A row range of the current minibatch with its cached activations (one [`NetCache`] per
/// [`PASS_ROWS`] rows) and private gradient.
#[derive(Debug)]
struct EvalChunk {
    start: usize,
    len: usize,
    nets: Vec<NetCache>,
    /// Backward buffers, shared by the passes.
    scratch_back: BackwardScratch,
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
        let (od, na) = (layout.shape.obs_dim, layout.shape.n_actions);
        while self.nets.len() < self.len.div_ceil(PASS_ROWS) {
            self.nets.push(NetCache::new(layout));
        }
        self.logp.resize(self.len, 0.0);
        self.entropy.resize(self.len, 0.0);
        self.values.resize(self.len, 0.0);
        let chunk = &samples[self.start..self.start + self.len];
        for (rows, net) in pass_ranges(self.len).zip(self.nets.iter_mut()) {
            let (first, n) = (rows.start, rows.len());
            net.ensure(layout, n);
            for (r, &s) in chunk[first..first + n].iter().enumerate() {
                let s = s as usize;
                fill(s, &mut net.input[r * od..(r + 1) * od], &mut self.scratch);
                net.actions[r] = actions[s];
            }
            net.forward(layout, params, n, simd);
            net.head_stats(layout, n);
            for (r, lp) in self.logp[first..first + n].iter_mut().enumerate() {
                *lp = net.logp[r * na + net.actions[r] as usize];
            }
            self.entropy[first..first + n].copy_from_slice(&net.entropies()[..n]);
            self.values[first..first + n].copy_from_slice(&net.values()[..n]);
        }
    }

    /// Backward of the last [`EvalChunk::evaluate`], pass after pass (so rows add into
    /// `grads` in row order); the derivatives are the whole minibatch's, of which it takes
    /// this chunk's rows.
    #[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
    fn backward(
        &mut self,
        layout: &ParamLayout,
        wt: &[f32],
        d_logp: &[f32],
        d_value: &[f32],
        d_entropy: &[f32],
        grads: &mut [f32],
        simd: SimdLevel,
    ) {
        for (rows, net) in pass_ranges(self.len).zip(self.nets.iter()) {
            let (n, r) = (rows.len(), self.start + rows.start..self.start + rows.end);
            net.backward(
                &mut self.scratch_back,
                layout,
                wt,
                n,
                &d_logp[r.clone()],
                &d_value[r.clone()],
                &d_entropy[r],
                grads,
                simd,
            );
        }
    }
}

/// The row ranges, within a chunk of `len` rows, of its passes of at most [`PASS_ROWS`] rows.
fn pass_ranges(len: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..len).step_by(PASS_ROWS).map(move |first| first..(first + PASS_ROWS).min(len))
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
    /// The weights transposed for the backward (`mlp::transposed_weights`), rebuilt by every
    /// `accumulate_grad`.
    wt: Vec<f32>,
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
    /// Instruction set of the last `evaluate`, which its backward uses too.
    eval_simd: SimdLevel,
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
                nets: Vec::new(),
                scratch_back: BackwardScratch::default(),
                grads: Vec::new(),
                scratch: Vec::with_capacity(scratch_capacity),
                logp: Vec::new(),
                entropy: Vec::new(),
                values: Vec::new(),
            })
            .collect();
        Ok(Self {
            params: init_params(layout, key),
            wt: Vec::with_capacity(np),
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
            eval_simd: SimdLevel::Portable,
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
    #[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
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
        self.eval_simd = simd;
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
        let simd = self.eval_simd;
        transposed_weights(simd, layout, &self.params, &mut self.wt);
        let wt = &self.wt[..];
        let np = layout.num_params;
        let back = |e: &mut EvalChunk, grads: &mut [f32]| e.backward(layout, wt, d_logp, d_value, d_entropy, grads, simd);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{backward, entropy, forward, log_softmax};
    use crate::NetShape;

    /// Observations of `n` samples: spread over CartPole-like ranges, some large enough to
    /// saturate a `tanh`.
    fn observations(n: usize, od: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|s| {
                (0..od)
                    .map(|k| {
                        ((s * 7 + k * 13) % 29) as f32 / 7.0 - 2.0 + 0.3 * (s as f32 * 0.1).sin()
                    })
                    .collect()
            })
            .collect()
    }

    /// `evaluate` and `accumulate_grad` of the [`Learner`] against the reference, sample by
    /// sample, over 600 rows (three passes, the last one partial, so the pass split and the
    /// padding rows are exercised), two minibatches accumulating into one gradient. The
    /// portable level with one thread must equal the reference bit for bit (same operations in
    /// the same order); AVX-512 (FMA, lane sums) within the engine tests' tolerances.
    fn check(shape: NetShape, simd: SimdLevel, threads: usize) {
        let layout = ParamLayout::new(&shape).expect("layout");
        let mut learn = Learner::new(&layout, 5, threads, 0).expect("learner");
        // Non-zero biases, so the bias paths matter.
        let mut params = learn.params().to_vec();
        for (i, p) in params.iter_mut().enumerate() {
            *p += ((i % 11) as f32 - 5.0) * 0.01;
        }
        learn.set_params(&params).expect("params");
        learn.rolled_out();
        let (od, na) = (shape.obs_dim, shape.n_actions);
        let total = 900;
        let obs = observations(total, od);
        let actions: Vec<u32> = (0..total).map(|s| ((s * 5) % na) as u32).collect();
        let mut g_ref = vec![0.0f32; layout.num_params];
        let exact = simd == SimdLevel::Portable && threads == 1;
        for (mb, rows) in [(0u32, 600usize), (1, 333)] {
            let samples: Vec<u32> = (0..rows)
                .map(|i| ((i * 7 + mb as usize * 101) % total) as u32)
                .collect();
            let mut ev = MinibatchEval::default();
            let fill = |s: usize, row: &mut [f32], _: &mut Vec<u32>| row.copy_from_slice(&obs[s]);
            learn
                .evaluate(&layout, simd, &samples, total, &actions, fill, &mut ev)
                .expect("evaluate");
            let d_logp: Vec<f32> = (0..rows)
                .map(|i| ((i % 7) as f32 - 3.0) / rows as f32)
                .collect();
            let d_value: Vec<f32> = (0..rows)
                .map(|i| ((i % 5) as f32 - 1.5) / rows as f32)
                .collect();
            let d_ent: Vec<f32> = (0..rows)
                .map(|i| -0.01 * (1.0 + (i % 3) as f32) / rows as f32)
                .collect();
            for (i, &s) in samples.iter().enumerate() {
                let s = s as usize;
                let (logits, value) = forward(&layout, &params, &obs[s]);
                let lp = log_softmax(&logits);
                let want = [lp[actions[s] as usize], entropy(&lp), value];
                let got = [ev.logp[i], ev.entropy[i], ev.values[i]];
                for (what, (g, w)) in ["logp", "entropy", "value"]
                    .iter()
                    .zip(got.iter().zip(&want))
                {
                    if exact {
                        assert_eq!(g.to_bits(), w.to_bits(), "{what} of row {i}: {g} vs {w}");
                    } else {
                        assert!(
                            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                            "{what} of row {i}: {g} vs {w}"
                        );
                    }
                }
                backward(
                    &layout, &params, &obs[s], actions[s], d_logp[i], d_value[i], d_ent[i],
                    &mut g_ref,
                );
            }
            learn
                .accumulate_grad(&layout, &d_logp, &d_value, &d_ent)
                .expect("backward");
        }
        let scale = g_ref.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(scale > 0.0, "the reference gradient is zero");
        for (i, (g, w)) in learn.grads.iter().zip(&g_ref).enumerate() {
            if exact {
                assert_eq!(g.to_bits(), w.to_bits(), "grad[{i}]: {g} vs {w}");
            } else {
                assert!(
                    (g - w).abs() <= 1e-4 * scale,
                    "grad[{i}]: {g} vs {w} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn learner_matches_reference_on_every_level() {
        let shapes = [
            NetShape {
                obs_dim: 4,
                hidden: vec![64, 64],
                n_actions: 2,
            },
            // Widths off every vector and tile size, and a wide first layer.
            NetShape {
                obs_dim: 37,
                hidden: vec![19, 33],
                n_actions: 5,
            },
        ];
        for simd in crate::cpu::simd::testable_levels() {
            for shape in &shapes {
                for threads in [1, 2] {
                    check(shape.clone(), simd, threads);
                }
            }
        }
    }
}
