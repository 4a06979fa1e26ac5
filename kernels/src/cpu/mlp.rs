//! Batched actor/critic MLP: one GEMM per layer over all rows, activations cached for the
//! backward pass, which is three GEMM-shaped updates per layer (dW = X^T dY, db, dX = dY W^T).

use super::gemm::{sgemm, View};
use crate::layout::{LayerLayout, ParamLayout};
use super::simd::SimdLevel;
use crate::math::tanh;

/// Per-row buffers of one batch: inputs, every layer's outputs, policy head and backward
/// scratch. Grows only when a larger batch arrives, so steady-state calls do not allocate.
#[derive(Debug, Clone)]
pub(crate) struct NetCache {
    cap: usize,
    /// Input rows `[rows][obs_dim]`.
    pub input: Vec<f32>,
    /// Actor layer outputs (`tanh` applied on hidden layers; logits last).
    pub actor: Vec<Vec<f32>>,
    /// Critic layer outputs (value last).
    pub critic: Vec<Vec<f32>>,
    /// `log_softmax` of the logits, `[rows][n_actions]`.
    pub logp: Vec<f32>,
    /// Action of each row (the stored action in `evaluate`).
    pub actions: Vec<u32>,
    /// Backward ping-pong buffers, `[rows][max_width]`.
    dy: Vec<f32>,
    dx: Vec<f32>,
}

impl NetCache {
    /// An empty cache for `layout`; call [`NetCache::ensure`] before use.
    pub fn new(layout: &ParamLayout) -> Self {
        Self {
            cap: 0,
            input: Vec::new(),
            actor: vec![Vec::new(); layout.actor.len()],
            critic: vec![Vec::new(); layout.critic.len()],
            logp: Vec::new(),
            actions: Vec::new(),
            dy: Vec::new(),
            dx: Vec::new(),
        }
    }

    /// Makes room for `rows` rows (allocates only when `rows` exceeds every earlier batch).
    pub fn ensure(&mut self, layout: &ParamLayout, rows: usize) {
        if rows <= self.cap {
            return;
        }
        let w = layout.max_width();
        self.input.resize(rows * layout.shape.obs_dim, 0.0);
        for (buf, l) in self.actor.iter_mut().zip(&layout.actor) {
            buf.resize(rows * l.fan_out, 0.0);
        }
        for (buf, l) in self.critic.iter_mut().zip(&layout.critic) {
            buf.resize(rows * l.fan_out, 0.0);
        }
        self.logp.resize(rows * layout.shape.n_actions, 0.0);
        self.actions.resize(rows, 0);
        self.dy.resize(rows * w, 0.0);
        self.dx.resize(rows * w, 0.0);
        self.cap = rows;
    }

    /// Forward of the actor and the critic on the first `rows` input rows, then the
    /// `log_softmax` of every row's logits into `logp`.
    pub fn forward(&mut self, layout: &ParamLayout, params: &[f32], rows: usize, simd: SimdLevel) {
        mlp_forward(&layout.actor, params, &self.input, rows, &mut self.actor, simd);
        mlp_forward(&layout.critic, params, &self.input, rows, &mut self.critic, simd);
        let a = layout.shape.n_actions;
        let logits = &self.actor[self.actor.len() - 1];
        for (lg, lp) in logits[..rows * a]
            .chunks_exact(a)
            .zip(self.logp.chunks_exact_mut(a))
        {
            log_softmax(lg, lp);
        }
    }

    /// Critic values of the last forward.
    pub fn values(&self) -> &[f32] {
        &self.critic[self.critic.len() - 1]
    }

    /// Backward of the last [`NetCache::forward`] on `rows` rows: adds into `grads` the gradient
    /// of `sum_n d_logp[n] logp[n][action[n]] + d_value[n] V[n] + d_entropy[n] H[n]`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        layout: &ParamLayout,
        params: &[f32],
        rows: usize,
        d_logp: &[f32],
        d_value: &[f32],
        d_entropy: &[f32],
        grads: &mut [f32],
    ) {
        let a = layout.shape.n_actions;
        for r in 0..rows {
            let lp = &self.logp[r * a..(r + 1) * a];
            let dz = &mut self.dy[r * a..(r + 1) * a];
            d_logits(lp, self.actions[r], d_logp[r], d_entropy[r], dz);
        }
        mlp_backward(
            &layout.actor,
            params,
            &self.input,
            rows,
            &self.actor,
            &mut self.dy,
            &mut self.dx,
            grads,
        );
        self.dy[..rows].copy_from_slice(&d_value[..rows]);
        mlp_backward(
            &layout.critic,
            params,
            &self.input,
            rows,
            &self.critic,
            &mut self.dy,
            &mut self.dx,
            grads,
        );
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
        s += lp.exp() * lp;
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

/// dL/dlogits of one row (same formula as `reference::d_logits`).
#[inline]
fn d_logits(logp: &[f32], action: u32, d_logp: f32, d_entropy: f32, out: &mut [f32]) {
    let h = entropy(logp);
    for (i, (o, &lp)) in out.iter_mut().zip(logp).enumerate() {
        let p = lp.exp();
        let onehot = if i as u32 == action { 1.0 } else { 0.0 };
        *o = d_logp * (onehot - p) - d_entropy * p * (lp + h);
    }
}

/// `acts[l] = act(acts[l-1] W_l + b_l)` for every layer, `acts[-1]` being `input`.
fn mlp_forward(
    layers: &[LayerLayout],
    params: &[f32],
    input: &[f32],
    rows: usize,
    acts: &mut [Vec<f32>],
    simd: SimdLevel,
) {
    for (l, layer) in layers.iter().enumerate() {
        let (prev, cur) = acts.split_at_mut(l);
        let x: &[f32] = if l == 0 { input } else { &prev[l - 1] };
        let (fi, fo) = (layer.fan_in, layer.fan_out);
        let y = &mut cur[0][..rows * fo];
        let bias = &params[layer.bias..layer.bias + fo];
        for row in y.chunks_exact_mut(fo) {
            row.copy_from_slice(bias);
        }
        let w = View {
            data: &params[layer.weight..layer.bias],
            rs: fo,
            cs: 1,
        };
        sgemm(
            rows,
            fi,
            fo,
            1.0,
            View {
                data: x,
                rs: fi,
                cs: 1,
            },
            w,
            1.0,
            y,
            fo,
        );
        if l + 1 < layers.len() {
            tanh_in_place(simd, y);
        }
    }
}

/// Backward through every layer given dL/d(output) in `dy[..rows * out]`; `dx` is scratch.
#[allow(clippy::too_many_arguments)]
fn mlp_backward(
    layers: &[LayerLayout],
    params: &[f32],
    input: &[f32],
    rows: usize,
    acts: &[Vec<f32>],
    dy: &mut Vec<f32>,
    dx: &mut Vec<f32>,
    grads: &mut [f32],
) {
    for (l, layer) in layers.iter().enumerate().rev() {
        let x: &[f32] = if l == 0 { input } else { &acts[l - 1] };
        let (fi, fo) = (layer.fan_in, layer.fan_out);
        let d = &dy[..rows * fo];
        // dW += X^T dY: X read through transposed strides.
        let gw = &mut grads[layer.weight..layer.bias];
        sgemm(
            fi,
            rows,
            fo,
            1.0,
            View {
                data: x,
                rs: 1,
                cs: fi,
            },
            View {
                data: d,
                rs: fo,
                cs: 1,
            },
            1.0,
            gw,
            fo,
        );
        let gb = &mut grads[layer.bias..layer.bias + fo];
        for row in d.chunks_exact(fo) {
            for (g, &v) in gb.iter_mut().zip(row) {
                *g += v;
            }
        }
        if l > 0 {
            // dX = dY W^T, then through the previous layer's tanh: * (1 - y^2).
            let w = View {
                data: &params[layer.weight..layer.bias],
                rs: 1,
                cs: fo,
            };
            let out = &mut dx[..rows * fi];
            sgemm(
                rows,
                fo,
                fi,
                1.0,
                View {
                    data: d,
                    rs: fo,
                    cs: 1,
                },
                w,
                0.0,
                out,
                fi,
            );
            for (g, &y) in out.iter_mut().zip(&x[..rows * fi]) {
                *g *= 1.0 - y * y;
            }
            std::mem::swap(dy, dx);
        }
    }
}

/// `v = tanh(v)` over a slice; 16 lanes at a time on AVX-512 (`math::tanh_avx512`, the same
/// bits as the scalar function), scalar elsewhere and for the tail.
fn tanh_in_place(simd: SimdLevel, y: &mut [f32]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx512` level exists only where `SimdLevel::is_supported` confirmed it.
        SimdLevel::Avx512 => unsafe { tanh_avx512_slice(y) },
        _ => y.iter_mut().for_each(|v| *v = tanh(*v)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tanh_avx512_slice(y: &mut [f32]) {
    use core::arch::x86_64::*;
    let mut chunks = y.chunks_exact_mut(16);
    for c in &mut chunks {
        // `c` holds exactly 16 f32 for the unaligned load and store.
        let v = crate::math::tanh_avx512(_mm512_loadu_ps(c.as_ptr()));
        _mm512_storeu_ps(c.as_mut_ptr(), v);
    }
    chunks.into_remainder().iter_mut().for_each(|v| *v = tanh(*v));
}
