//! The rollout's policy forward on blocks of [`BLOCK`] envs in feature-major layout
//! (`[feature][env]`, envs in vector lanes). The SoA env state already has that layout, so the
//! observations need no transpose, and each dense layer is the minibatch forward's
//! register-blocked micro-kernel on one block of rows (`minibatch::dense_block`; at AVX-512,
//! 2 x 16 envs by 8 outputs of accumulators, weights broadcast from the row-major `W[k][j]`).
//! Activations of a block stay in L1; the policy head and the sampling run on the block.
//!
//! A block of at most 16 or 8 live envs (a small run's only block, a chunk's last one, a few
//! truncated states) runs at half or quarter width: the same tiles on one vector of envs (a
//! half vector at AVX-512 for 8) instead of two, so a half or a quarter of the work. Every
//! lane does the same operations in the same order at any width, so the results do not depend
//! on it.

use super::minibatch::{dense_block, Epilogue, BLOCK_WIDTHS, ROW_BLOCK};
use super::simd::SimdLevel;
use crate::layout::{LayerLayout, ParamLayout};

/// Envs per block: two AVX-512 registers of lanes, the minibatch kernels' row block.
pub(crate) const BLOCK: usize = ROW_BLOCK;

/// The narrowest block width that holds `live` envs ([`BLOCK`] for more than a block).
fn block_width(live: usize) -> usize {
    BLOCK_WIDTHS.into_iter().find(|&w| live <= w).unwrap_or(BLOCK)
}

/// Feature-major buffers of one block: the input and every layer's output, each
/// `[features][width]` for the width of the last [`BlockNet::fit`].
#[derive(Debug, Clone)]
pub(crate) struct BlockNet {
    /// Input `[obs_dim][width]`.
    pub input: Vec<f32>,
    actor: Vec<Vec<f32>>,
    critic: Vec<Vec<f32>>,
    width: usize,
}

impl BlockNet {
    pub fn new(layout: &ParamLayout) -> Self {
        let bufs = |layers: &[LayerLayout]| {
            layers
                .iter()
                .map(|l| vec![0.0; l.fan_out * BLOCK])
                .collect()
        };
        Self {
            input: vec![0.0; layout.shape.obs_dim * BLOCK],
            actor: bufs(&layout.actor),
            critic: bufs(&layout.critic),
            width: BLOCK,
        }
    }

    /// Sizes the block for `live` envs (at most [`BLOCK`]): the narrowest of 8, 16 or 32 lanes
    /// that holds them. Returns the width, the stride of `input` and of the outputs until the
    /// next call.
    pub fn fit(&mut self, live: usize) -> usize {
        debug_assert!(live <= BLOCK, "{live} envs in one block");
        self.width = block_width(live);
        self.width
    }

    /// Forward of the critic, and of the actor when `actor` is set, on the whole block
    /// (lanes past the live envs compute garbage that nobody reads).
    pub fn forward(&mut self, layout: &ParamLayout, params: &[f32], simd: SimdLevel, actor: bool) {
        let width = self.width;
        if actor {
            mlp(&layout.actor, params, &self.input, &mut self.actor, simd, width);
        }
        mlp(&layout.critic, params, &self.input, &mut self.critic, simd, width);
    }

    /// Logits of the last actor forward, `[n_actions][width]`.
    pub fn logits(&self) -> &[f32] {
        &self.actor[self.actor.len() - 1]
    }

    /// Values of the last forward, `[width]`.
    pub fn values(&self) -> &[f32] {
        &self.critic[self.critic.len() - 1][..self.width]
    }
}

fn mlp(
    layers: &[LayerLayout],
    params: &[f32],
    input: &[f32],
    acts: &mut [Vec<f32>],
    simd: SimdLevel,
    width: usize,
) {
    for (l, layer) in layers.iter().enumerate() {
        let (prev, cur) = acts.split_at_mut(l);
        let x: &[f32] = if l == 0 { input } else { &prev[l - 1] };
        let w = &params[layer.weight..layer.bias];
        let b = &params[layer.bias..layer.bias + layer.fan_out];
        // `y[j][e] = act(b[j] + sum_k x[k][e] * w[k][j])`, `tanh` on hidden layers. At the
        // portable level this sums in `k` order then adds the bias, as `reference::dense`
        // does, so it equals the reference bit for bit.
        let epi = if l + 1 < layers.len() { Epilogue::BiasTanh(b) } else { Epilogue::Bias(b) };
        dense_block(simd, layer.fan_in, layer.fan_out, w, x, width, &mut cur[0], epi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ParamLayout;
    use crate::reference::{forward, init_params};
    use crate::NetShape;

    /// Runs the block forward on a full block of observations and compares with
    /// `reference::forward`: the portable level must match bit for bit, the FMA levels within
    /// 1e-5 relative. Then runs the first 16 and 8 (and 5) of them at half and quarter width,
    /// which must give the full block's bits on every level.
    fn check(hidden: Vec<usize>, n_actions: usize, simd: SimdLevel) {
        let shape = NetShape {
            obs_dim: 4,
            hidden,
            n_actions,
        };
        let layout = ParamLayout::new(&shape).expect("layout");
        let mut params = init_params(&layout, 7);
        // Non-zero biases so the bias path is exercised.
        for (i, p) in params.iter_mut().enumerate() {
            if *p == 0.0 {
                *p = ((i % 13) as f32 - 6.0) * 0.01;
            }
        }
        let mut net = BlockNet::new(&layout);
        let obs: Vec<[f32; 4]> = (0..BLOCK)
            .map(|e| {
                let f = e as f32;
                [
                    0.1 * f - 1.5,
                    (f * 0.37).sin(),
                    0.01 * f - 0.15,
                    (f * 1.3).cos() * 2.0,
                ]
            })
            .collect();
        let run = |net: &mut BlockNet, live: usize| -> Vec<(u32, Vec<u32>)> {
            let w = net.fit(live);
            assert_eq!(w, block_width(live), "width for {live}");
            assert!(w >= live && (w == 8 || w / 2 < live), "width {w} for {live}");
            for (e, o) in obs[..live].iter().enumerate() {
                for (k, &v) in o.iter().enumerate() {
                    net.input[k * w + e] = v;
                }
            }
            net.forward(&layout, &params, simd, true);
            (0..live)
                .map(|e| {
                    let l = (0..n_actions).map(|a| net.logits()[a * w + e].to_bits()).collect();
                    (net.values()[e].to_bits(), l)
                })
                .collect()
        };
        let full = run(&mut net, BLOCK);
        for (e, (o, (got_v, got_l))) in obs.iter().zip(&full).enumerate() {
            let (logits, value) = forward(&layout, &params, o);
            let got_v = f32::from_bits(*got_v);
            let got_l: Vec<f32> = got_l.iter().map(|&b| f32::from_bits(b)).collect();
            if simd == SimdLevel::Portable {
                assert_eq!(got_v.to_bits(), value.to_bits(), "value of row {e}");
                assert_eq!(got_l, logits, "logits of row {e}");
            } else {
                assert!(
                    (got_v - value).abs() <= 1e-5 * value.abs().max(1.0),
                    "value {e}: {got_v} vs {value}"
                );
                for (g, r) in got_l.iter().zip(&logits) {
                    assert!(
                        (g - r).abs() <= 1e-5 * r.abs().max(1.0),
                        "logit {e}: {g} vs {r}"
                    );
                }
            }
        }
        for live in [16, 9, 8, 5, 1] {
            let half = run(&mut net, live);
            assert_eq!(half[..], full[..live], "{}: half-width block of {live}", simd.name());
        }
    }

    #[test]
    fn block_forward_matches_reference_on_every_level() {
        for simd in crate::cpu::simd::testable_levels() {
            check(vec![64, 64], 2, simd);
            // Widths that exercise every tile (8, 4, 2, 1) and a k remainder.
            check(vec![15, 7], 3, simd);
            check(vec![1], 5, simd);
            check(vec![6, 5], 1, simd);
        }
    }
}
