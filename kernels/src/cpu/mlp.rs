//! Batched actor/critic MLP of the minibatch pass: activations feature-major (`[feature][row]`,
//! rows padded to a multiple of `minibatch::ROW_BLOCK`), one fused dense kernel per layer
//! forward (bias and `tanh` in registers), and per layer backward the weight and bias
//! gradients and the input gradient with `tanh'` fused (kernels in `minibatch.rs`). Row-major
//! only at the edges: input rows, `logp` rows.

use super::minibatch::{dense, grad, row_stride, transpose_weights, Epilogue};
use super::simd::SimdLevel;
use crate::layout::{LayerLayout, ParamLayout};

/// Per-row buffers of one batch: inputs, every layer's outputs and the policy head, kept from
/// the forward for the backward. Grows only when a larger batch arrives, so steady-state calls
/// do not allocate.
#[derive(Debug, Clone)]
pub(crate) struct NetCache {
    /// Row stride the buffers have room for (`minibatch::row_stride` of the largest batch).
    cap: usize,
    /// Rows of the last forward, and the row stride of its feature-major buffers.
    rows: usize,
    ld: usize,
    /// Input rows `[rows][obs_dim]`, written by the caller before [`NetCache::forward`].
    pub input: Vec<f32>,
    /// The input feature-major, `[obs_dim][ld]`; padding rows are zero.
    input_fm: Vec<f32>,
    /// Actor layer outputs `[fan_out][ld]` (`tanh` applied on hidden layers; logits last).
    actor: Vec<Vec<f32>>,
    /// Critic layer outputs `[fan_out][ld]` (value last).
    critic: Vec<Vec<f32>>,
    /// `log_softmax` of the logits, `[rows][n_actions]`.
    pub logp: Vec<f32>,
    /// `exp(logp)`, `[rows][n_actions]` (filled by [`NetCache::head_stats`]).
    probs: Vec<f32>,
    /// Entropy of each row (filled by [`NetCache::head_stats`]).
    entropy: Vec<f32>,
    /// Action of each row (the stored action in `evaluate`).
    pub actions: Vec<u32>,
    /// One row's logits, gathered from the feature-major output.
    logits_row: Vec<f32>,
}

impl NetCache {
    /// An empty cache for `layout`; call [`NetCache::ensure`] before use.
    pub fn new(layout: &ParamLayout) -> Self {
        Self {
            cap: 0,
            rows: 0,
            ld: 0,
            input: Vec::new(),
            input_fm: Vec::new(),
            actor: vec![Vec::new(); layout.actor.len()],
            critic: vec![Vec::new(); layout.critic.len()],
            logp: Vec::new(),
            probs: Vec::new(),
            entropy: Vec::new(),
            actions: Vec::new(),
            logits_row: vec![0.0; layout.shape.n_actions],
        }
    }

    /// Makes room for `rows` rows (allocates only when `rows` exceeds every earlier batch).
    pub fn ensure(&mut self, layout: &ParamLayout, rows: usize) {
        let ld = row_stride(rows);
        if ld <= self.cap {
            return;
        }
        let (od, na) = (layout.shape.obs_dim, layout.shape.n_actions);
        self.input.resize(ld * od, 0.0);
        self.input_fm.resize(od * ld, 0.0);
        for (buf, l) in self.actor.iter_mut().zip(&layout.actor) {
            buf.resize(l.fan_out * ld, 0.0);
        }
        for (buf, l) in self.critic.iter_mut().zip(&layout.critic) {
            buf.resize(l.fan_out * ld, 0.0);
        }
        self.logp.resize(ld * na, 0.0);
        self.probs.resize(ld * na, 0.0);
        self.entropy.resize(ld, 0.0);
        self.actions.resize(ld, 0);
        self.cap = ld;
    }

    /// Forward of the actor and the critic on the first `rows` input rows, then the
    /// `log_softmax` of every row's logits into `logp`.
    pub fn forward(&mut self, layout: &ParamLayout, params: &[f32], rows: usize, simd: SimdLevel) {
        self.ensure(layout, rows);
        let ld = row_stride(rows);
        (self.rows, self.ld) = (rows, ld);
        let od = layout.shape.obs_dim;
        for (k, col) in self.input_fm.chunks_exact_mut(ld).take(od).enumerate() {
            for (r, v) in col[..rows].iter_mut().enumerate() {
                *v = self.input[r * od + k];
            }
            col[rows..].fill(0.0);
        }
        mlp_forward(
            &layout.actor,
            params,
            &self.input_fm,
            rows,
            ld,
            &mut self.actor,
            simd,
        );
        mlp_forward(
            &layout.critic,
            params,
            &self.input_fm,
            rows,
            ld,
            &mut self.critic,
            simd,
        );
        let a = layout.shape.n_actions;
        let logits = &self.actor[self.actor.len() - 1];
        for (r, lp) in self.logp.chunks_exact_mut(a).take(rows).enumerate() {
            for (j, l) in self.logits_row.iter_mut().enumerate() {
                *l = logits[j * ld + r];
            }
            log_softmax(&self.logits_row, lp);
        }
    }

    /// Critic values of the rows of the last forward.
    pub fn values(&self) -> &[f32] {
        &self.critic[self.critic.len() - 1][..self.rows]
    }

    /// Probabilities and entropy of the first `rows` rows of the last forward, kept for
    /// [`NetCache::backward`] (the same `exp(logp)` values `entropy` and `d_logits` compute).
    pub fn head_stats(&mut self, layout: &ParamLayout, rows: usize) {
        let a = layout.shape.n_actions;
        let rows_lp = self.logp[..rows * a].chunks_exact(a);
        for ((lp, p), h) in rows_lp
            .zip(self.probs.chunks_exact_mut(a))
            .zip(&mut self.entropy)
        {
            let mut s = 0.0f32;
            for (pv, &l) in p.iter_mut().zip(lp) {
                *pv = l.exp();
                s += crate::reference::p_logp(*pv, l);
            }
            *h = -s;
        }
    }

    /// Entropies computed by the last [`NetCache::head_stats`].
    pub fn entropies(&self) -> &[f32] {
        &self.entropy
    }

    /// Backward of the last [`NetCache::forward`] and [`NetCache::head_stats`] on `rows` rows:
    /// adds into `grads` the gradient of
    /// `sum_n d_logp[n] logp[n][action[n]] + d_value[n] V[n] + d_entropy[n] H[n]`.
    /// `wt` is [`transposed_weights`] of the forward's parameters.
    #[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
    pub fn backward(
        &self,
        scratch: &mut BackwardScratch,
        layout: &ParamLayout,
        wt: &[f32],
        rows: usize,
        d_logp: &[f32],
        d_value: &[f32],
        d_entropy: &[f32],
        grads: &mut [f32],
        simd: SimdLevel,
    ) {
        let (a, ld) = (layout.shape.n_actions, self.ld);
        debug_assert_eq!(rows, self.rows, "backward rows differ from the forward's");
        scratch.ensure(layout, rows);
        for (j, col) in scratch.dy.chunks_exact_mut(ld).take(a).enumerate() {
            for (r, d) in col[..rows].iter_mut().enumerate() {
                let lp = self.logp[r * a + j];
                let p = self.probs[r * a + j];
                let onehot = if self.actions[r] as usize == j {
                    1.0
                } else {
                    0.0
                };
                // `reference::d_logits`, with the entropy and `exp(logp)` of `head_stats`.
                *d = d_logp[r] * (onehot - p) - crate::reference::d_entropy_term(d_entropy[r], p, lp, self.entropy[r]);
            }
            col[rows..].fill(0.0);
        }
        scratch.mlp(
            &layout.actor,
            wt,
            &self.input_fm,
            ld,
            rows,
            &self.actor,
            grads,
            simd,
        );
        scratch.dy[..rows].copy_from_slice(&d_value[..rows]);
        scratch.dy[rows..ld].fill(0.0);
        scratch.mlp(
            &layout.critic,
            wt,
            &self.input_fm,
            ld,
            rows,
            &self.critic,
            grads,
            simd,
        );
    }
}

/// Every weight matrix of `params` transposed in place of the original (`W^T` as
/// `[fan_out][fan_in]` at each layer's weight offset; biases are left as they are): what
/// [`NetCache::backward`] reads, built once per minibatch.
pub(crate) fn transposed_weights(
    simd: SimdLevel,
    layout: &ParamLayout,
    params: &[f32],
    wt: &mut Vec<f32>,
) {
    wt.resize(layout.num_params, 0.0);
    for l in layout.actor.iter().chain(&layout.critic) {
        let (w, wt) = (&params[l.weight..l.bias], &mut wt[l.weight..l.bias]);
        transpose_weights(simd, w, l.fan_in, l.fan_out, wt);
    }
}

/// `logp = logits - (max + ln(sum exp(logits - max)))`, as `reference::log_softmax`.
#[inline]
pub(crate) fn log_softmax(logits: &[f32], logp: &mut [f32]) {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for &l in logits {
        sum += (l - m).exp();
    }
    let lse = m + sum.ln();
    for (o, &l) in logp.iter_mut().zip(logits) {
        *o = l - lse;
    }
}

/// `-sum exp(logp) * logp`.
#[inline]
pub(crate) fn entropy(logp: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &lp in logp {
        s += crate::reference::p_logp(lp.exp(), lp);
    }
    -s
}

/// The smallest action whose cumulative probability exceeds `u` (the last if none does).
#[inline]
pub(crate) fn sample(logp: &[f32], u: f32) -> u32 {
    let mut cum = 0.0f32;
    for (a, &lp) in logp.iter().enumerate() {
        cum += lp.exp();
        if u < cum {
            return a as u32;
        }
    }
    logp.len().saturating_sub(1) as u32
}

/// `acts[l] = act(acts[l-1] W_l + b_l)` for every layer, `acts[-1]` being `input`, all
/// feature-major with row stride `ld`.
fn mlp_forward(
    layers: &[LayerLayout],
    params: &[f32],
    input: &[f32],
    rows: usize,
    ld: usize,
    acts: &mut [Vec<f32>],
    simd: SimdLevel,
) {
    for (l, layer) in layers.iter().enumerate() {
        let (prev, cur) = acts.split_at_mut(l);
        let x: &[f32] = if l == 0 { input } else { &prev[l - 1] };
        let (fi, fo) = (layer.fan_in, layer.fan_out);
        let w = &params[layer.weight..layer.bias];
        let b = &params[layer.bias..layer.bias + fo];
        let epi = if l + 1 < layers.len() {
            Epilogue::BiasTanh(b)
        } else {
            Epilogue::Bias(b)
        };
        dense(simd, fi, fo, w, x, rows, ld, &mut cur[0], epi);
    }
}

/// The scratch buffers of a backward, shared by the [`NetCache`]s of one thread (only the
/// activations must outlive the forward). Grows only when a larger batch arrives.
#[derive(Debug, Clone, Default)]
pub(crate) struct BackwardScratch {
    cap: usize,
    /// dL/d(layer output), feature-major `[width][ld]`; padding rows are zero.
    dy: Vec<f32>,
    /// dL/d(layer input) being computed, `[width][ld]`.
    dx: Vec<f32>,
    /// Scratch of the weight gradient (`dy` row-major).
    dyt: Vec<f32>,
}

impl BackwardScratch {
    /// Makes room for a backward of `rows` rows.
    pub fn ensure(&mut self, layout: &ParamLayout, rows: usize) {
        let ld = row_stride(rows);
        if ld <= self.cap {
            return;
        }
        let w = layout.max_width();
        self.dy.resize(w * ld, 0.0);
        self.dx.resize(w * ld, 0.0);
        self.dyt.resize(ld * w, 0.0);
        self.cap = ld;
    }

    /// Backward through every layer given dL/d(output) in `dy`, adding into `grads`; `wt`
    /// holds the transposed weights ([`transposed_weights`]).
    #[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
    fn mlp(
        &mut self,
        layers: &[LayerLayout],
        wt: &[f32],
        input: &[f32],
        ld: usize,
        rows: usize,
        acts: &[Vec<f32>],
        grads: &mut [f32],
        simd: SimdLevel,
    ) {
        for (l, layer) in layers.iter().enumerate().rev() {
            let x: &[f32] = if l == 0 { input } else { &acts[l - 1] };
            let (fi, fo) = (layer.fan_in, layer.fan_out);
            let (gw, gb) = grads[layer.weight..layer.bias + fo].split_at_mut(fi * fo);
            grad(simd, fi, fo, x, &self.dy, ld, rows, &mut self.dyt, gw, gb);
            if l > 0 {
                // dX = dY W^T, then through the previous layer's tanh: * (1 - y^2).
                let w = &wt[layer.weight..layer.bias];
                dense(
                    simd,
                    fo,
                    fi,
                    w,
                    &self.dy,
                    rows,
                    ld,
                    &mut self.dx,
                    Epilogue::TanhGrad(x),
                );
                std::mem::swap(&mut self.dy, &mut self.dx);
            }
        }
    }
}
