//! The rollout's policy forward on blocks of [`BLOCK`] envs in feature-major layout
//! (`[feature][env]`, envs in vector lanes). The SoA env state already has that layout, so the
//! observations need no transpose, and each dense layer is a register-blocked micro-kernel:
//! 2 x 16 envs by 8 outputs of accumulators, weights broadcast from the row-major `W[k][j]`.
//! Activations of a block stay in L1; the policy head and the sampling run on the block.
//!
//! A block of at most [`HALF_BLOCK`] live envs (a small run's only block, a chunk's last one,
//! a few truncated states) runs at half width: the same tiles on one vector of envs instead of
//! two, so half the work. Every lane does the same operations in the same order at either
//! width, so the results do not depend on it.

use super::simd::SimdLevel;
use crate::layout::{LayerLayout, ParamLayout};
use crate::math::tanh;

/// Envs per block: two AVX-512 registers of lanes.
pub(crate) const BLOCK: usize = 32;
/// Envs per half-width block: one AVX-512 register of lanes.
pub(crate) const HALF_BLOCK: usize = BLOCK / 2;

/// Feature-major buffers of one block: the input and every layer's output, each
/// `[features][width]` for the current [`BlockNet::width`].
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

    /// Sizes the block for `live` envs (at most [`BLOCK`]): [`HALF_BLOCK`] lanes when they fit,
    /// else [`BLOCK`]. Returns the width, the stride of `input` and of the outputs until the
    /// next call.
    pub fn fit(&mut self, live: usize) -> usize {
        debug_assert!(live <= BLOCK, "{live} envs in one block");
        self.width = if live <= HALF_BLOCK { HALF_BLOCK } else { BLOCK };
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
        dense(
            simd,
            layer.fan_in,
            layer.fan_out,
            w,
            b,
            x,
            &mut cur[0],
            l + 1 < layers.len(),
            width,
        );
    }
}

/// `y[j][e] = act(b[j] + sum_k x[k][e] * w[k][j])` for one block of `width` envs
/// ([`BLOCK`] or [`HALF_BLOCK`]); `x` is `[fi][width]`, `y` is `[fo][width]`.
#[allow(clippy::too_many_arguments)]
fn dense(
    simd: SimdLevel,
    fi: usize,
    fo: usize,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    act: bool,
    width: usize,
) {
    assert!(
        (width == BLOCK || width == HALF_BLOCK)
            && w.len() >= fi * fo
            && b.len() >= fo
            && x.len() >= fi * width
            && y.len() >= fo * width,
        "dense: buffers too short for {fi} -> {fo} at width {width}"
    );
    let half = width == HALF_BLOCK;
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the assert above covers every index the kernel touches (`width` lanes of
        // each of `fi` input and `fo` output rows); an `Avx512` level exists only where
        // `SimdLevel::is_supported` confirmed the features.
        SimdLevel::Avx512 => unsafe {
            if half {
                avx512::dense::<1>(fi, fo, w, b, x, y, act)
            } else {
                avx512::dense::<2>(fi, fo, w, b, x, y, act)
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for the `Avx2` level.
        SimdLevel::Avx2 => unsafe {
            if half {
                avx2::dense::<2>(fi, fo, w, b, x, y, act)
            } else {
                avx2::dense::<4>(fi, fo, w, b, x, y, act)
            }
        },
        _ if half => dense_portable::<HALF_BLOCK>(fi, fo, w, b, x, y, act),
        _ => dense_portable::<BLOCK>(fi, fo, w, b, x, y, act),
    }
}

/// Plain loops on `W` lanes, summing in `k` order then adding the bias, as `reference::dense`
/// does: the result equals the reference bit for bit.
fn dense_portable<const W: usize>(
    fi: usize,
    fo: usize,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    act: bool,
) {
    for j in 0..fo {
        let mut acc = [0.0f32; W];
        for k in 0..fi {
            let wk = w[k * fo + j];
            let xr = &x[k * W..(k + 1) * W];
            for (a, &xv) in acc.iter_mut().zip(xr) {
                *a += xv * wk;
            }
        }
        let yr = &mut y[j * W..(j + 1) * W];
        for (o, &a) in yr.iter_mut().zip(&acc) {
            let v = b[j] + a;
            *o = if act { tanh(v) } else { v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    use crate::math::tanh_avx512;

    /// Blocks of `16 * H` envs (`H` = 2: [`super::BLOCK`], 1: [`super::HALF_BLOCK`]). Tiles
    /// of 8 outputs, then 4, 2, 1 for the remainder (output layers have 1 or 2).
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn dense<const H: usize>(
        fi: usize,
        fo: usize,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        y: &mut [f32],
        act: bool,
    ) {
        let (w, b, x, y) = (w.as_ptr(), b.as_ptr(), x.as_ptr(), y.as_mut_ptr());
        let mut j = 0;
        while j + 8 <= fo {
            tile::<8, 1, H>(fi, fo, j, w, b, x, y, act);
            j += 8;
        }
        if j + 4 <= fo {
            tile::<4, 2, H>(fi, fo, j, w, b, x, y, act);
            j += 4;
        }
        if j + 2 <= fo {
            tile::<2, 4, H>(fi, fo, j, w, b, x, y, act);
            j += 2;
        }
        if j < fo {
            tile::<1, 8, H>(fi, fo, j, w, b, x, y, act);
        }
    }

    /// Outputs `j0..j0 + J` of the block: `J x H` accumulator registers per `k` partial sum;
    /// narrow tiles split `k` over `KS` partial sums so enough FMA chains run in parallel to
    /// hide the FMA latency. Partial sums are added in order, then the bias. Each lane's
    /// operations do not depend on `H`.
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const J: usize, const KS: usize, const H: usize>(
        fi: usize,
        fo: usize,
        j0: usize,
        w: *const f32,
        b: *const f32,
        x: *const f32,
        y: *mut f32,
        act: bool,
    ) {
        let width = 16 * H;
        let mut acc = [[[_mm512_setzero_ps(); H]; J]; KS];
        let step = |part: &mut [[__m512; H]; J], k: usize| {
            let xr = x.add(k * width);
            let mut xv = [_mm512_setzero_ps(); H];
            for (h, v) in xv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(xr.add(16 * h));
            }
            let wr = w.add(k * fo + j0);
            for (jj, a) in part.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*wr.add(jj));
                for (av, &xh) in a.iter_mut().zip(&xv) {
                    *av = _mm512_fmadd_ps(xh, wv, *av);
                }
            }
        };
        let mut k = 0;
        while k + KS <= fi {
            for (s, part) in acc.iter_mut().enumerate() {
                step(part, k + s);
            }
            k += KS;
        }
        while k < fi {
            step(&mut acc[0], k);
            k += 1;
        }
        for jj in 0..J {
            let bias = _mm512_set1_ps(*b.add(j0 + jj));
            for h in 0..H {
                let mut v = acc[0][jj][h];
                for part in &acc[1..] {
                    v = _mm512_add_ps(v, part[jj][h]);
                }
                v = _mm512_add_ps(bias, v);
                if act {
                    v = tanh_avx512(v);
                }
                _mm512_storeu_ps(y.add((j0 + jj) * width + 16 * h), v);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    use crate::math::tanh_avx2;

    /// Blocks of `8 * H` envs (`H` = 4: [`super::BLOCK`], 2: [`super::HALF_BLOCK`]). Tiles of
    /// `8 / H` outputs (8 accumulators, enough independent FMA chains for two pipes of 4-cycle
    /// FMAs within 16 registers), then 2, then a last odd output with the inputs split over 2
    /// partial sums. Every output but that last one sums in one chain at either width, so
    /// each lane's operations do not depend on `H`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dense<const H: usize>(
        fi: usize,
        fo: usize,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        y: &mut [f32],
        act: bool,
    ) {
        let (w, b, x, y) = (w.as_ptr(), b.as_ptr(), x.as_ptr(), y.as_mut_ptr());
        let mut j = 0;
        if H <= 2 {
            while j + 4 <= fo {
                tile::<4, 1, H>(fi, fo, j, w, b, x, y, act);
                j += 4;
            }
        }
        while j + 2 <= fo {
            tile::<2, 1, H>(fi, fo, j, w, b, x, y, act);
            j += 2;
        }
        if j < fo {
            tile::<1, 2, H>(fi, fo, j, w, b, x, y, act);
        }
    }

    /// Outputs `j0..j0 + J` of the block, the inputs split over `KS` partial sums added in
    /// order at the end, then the bias: the AVX-512 tile's order at 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const J: usize, const KS: usize, const H: usize>(
        fi: usize,
        fo: usize,
        j0: usize,
        w: *const f32,
        b: *const f32,
        x: *const f32,
        y: *mut f32,
        act: bool,
    ) {
        let width = 8 * H;
        let mut acc = [[[_mm256_setzero_ps(); H]; J]; KS];
        let step = |part: &mut [[__m256; H]; J], k: usize| {
            let xr = x.add(k * width);
            let wr = w.add(k * fo + j0);
            for (jj, a) in part.iter_mut().enumerate() {
                let wv = _mm256_set1_ps(*wr.add(jj));
                for (h, av) in a.iter_mut().enumerate() {
                    *av = _mm256_fmadd_ps(_mm256_loadu_ps(xr.add(8 * h)), wv, *av);
                }
            }
        };
        let mut k = 0;
        while k + KS <= fi {
            for (s, part) in acc.iter_mut().enumerate() {
                step(part, k + s);
            }
            k += KS;
        }
        while k < fi {
            step(&mut acc[0], k);
            k += 1;
        }
        for jj in 0..J {
            let bias = _mm256_set1_ps(*b.add(j0 + jj));
            for h in 0..H {
                let mut v = acc[0][jj][h];
                for part in &acc[1..] {
                    v = _mm256_add_ps(v, part[jj][h]);
                }
                v = _mm256_add_ps(bias, v);
                if act {
                    v = tanh_avx2(v);
                }
                _mm256_storeu_ps(y.add((j0 + jj) * width + 8 * h), v);
            }
        }
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
    /// 1e-5 relative. Then runs the first [`HALF_BLOCK`] of them at half width, which must
    /// give the full block's bits on every level.
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
            assert_eq!(w, if live <= HALF_BLOCK { HALF_BLOCK } else { BLOCK }, "width for {live}");
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
        for live in [HALF_BLOCK, 5] {
            let half = run(&mut net, live);
            assert_eq!(half[..], full[..live], "{}: half-width block of {live}", simd.name());
        }
    }

    #[test]
    fn block_forward_matches_reference_on_every_level() {
        for simd in SimdLevel::ALL {
            if !simd.is_supported() {
                println!("skipped {}: not supported by this CPU", simd.name());
                continue;
            }
            check(vec![64, 64], 2, simd);
            // Widths that exercise every tile (8, 4, 2, 1) and a k remainder.
            check(vec![15, 7], 3, simd);
            check(vec![1], 5, simd);
            check(vec![6, 5], 1, simd);
        }
    }
}
