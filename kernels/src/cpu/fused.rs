//! The rollout's policy forward on blocks of [`BLOCK`] envs in feature-major layout
//! (`[feature][env]`, envs in vector lanes). The SoA env state already has that layout, so the
//! observations need no transpose, and each dense layer is a register-blocked micro-kernel:
//! 2 x 16 envs by 8 outputs of accumulators, weights broadcast from the row-major `W[k][j]`.
//! Activations of a block stay in L1; the policy head and the sampling run on the block.

use super::simd::SimdLevel;
use crate::layout::{LayerLayout, ParamLayout};
use crate::math::tanh;

/// Envs per block: two AVX-512 registers of lanes.
pub(crate) const BLOCK: usize = 32;

/// Feature-major buffers of one block: the input and every layer's output.
#[derive(Debug, Clone)]
pub(crate) struct BlockNet {
    /// Input `[obs_dim][BLOCK]`.
    pub input: Vec<f32>,
    actor: Vec<Vec<f32>>,
    critic: Vec<Vec<f32>>,
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
        }
    }

    /// Forward of the critic, and of the actor when `actor` is set, on the whole block
    /// (lanes past the live envs compute garbage that nobody reads).
    pub fn forward(&mut self, layout: &ParamLayout, params: &[f32], simd: SimdLevel, actor: bool) {
        if actor {
            mlp(&layout.actor, params, &self.input, &mut self.actor, simd);
        }
        mlp(&layout.critic, params, &self.input, &mut self.critic, simd);
    }

    /// Logits of the last actor forward, `[n_actions][BLOCK]`.
    pub fn logits(&self) -> &[f32] {
        &self.actor[self.actor.len() - 1]
    }

    /// Values of the last forward, `[BLOCK]`.
    pub fn values(&self) -> &[f32] {
        &self.critic[self.critic.len() - 1][..BLOCK]
    }
}

fn mlp(
    layers: &[LayerLayout],
    params: &[f32],
    input: &[f32],
    acts: &mut [Vec<f32>],
    simd: SimdLevel,
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
        );
    }
}

/// `y[j][e] = act(b[j] + sum_k x[k][e] * w[k][j])` for one block.
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
) {
    assert!(
        w.len() >= fi * fo && b.len() >= fo && x.len() >= fi * BLOCK && y.len() >= fo * BLOCK,
        "dense: buffers too short for {fi} -> {fo}"
    );
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the assert above covers every index the kernel touches; an `Avx512` level
        // exists only where `SimdLevel::is_supported` confirmed the features.
        SimdLevel::Avx512 => unsafe { avx512::dense(fi, fo, w, b, x, y, act) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for the `Avx2` level.
        SimdLevel::Avx2 => unsafe { avx2::dense(fi, fo, w, b, x, y, act) },
        _ => dense_portable(fi, fo, w, b, x, y, act),
    }
}

/// Plain loops, summing in `k` order then adding the bias, as `reference::dense` does: the
/// result equals the reference bit for bit.
fn dense_portable(fi: usize, fo: usize, w: &[f32], b: &[f32], x: &[f32], y: &mut [f32], act: bool) {
    for j in 0..fo {
        let mut acc = [0.0f32; BLOCK];
        for k in 0..fi {
            let wk = w[k * fo + j];
            let xr = &x[k * BLOCK..(k + 1) * BLOCK];
            for (a, &xv) in acc.iter_mut().zip(xr) {
                *a += xv * wk;
            }
        }
        let yr = &mut y[j * BLOCK..(j + 1) * BLOCK];
        for (o, &a) in yr.iter_mut().zip(&acc) {
            let v = b[j] + a;
            *o = if act { tanh(v) } else { v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    use super::BLOCK;
    use crate::math::tanh_avx512;

    /// Tiles of 8 outputs, then 4, 2, 1 for the remainder (output layers have 1 or 2).
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn dense(
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
            tile::<8, 1>(fi, fo, j, w, b, x, y, act);
            j += 8;
        }
        if j + 4 <= fo {
            tile::<4, 2>(fi, fo, j, w, b, x, y, act);
            j += 4;
        }
        if j + 2 <= fo {
            tile::<2, 4>(fi, fo, j, w, b, x, y, act);
            j += 2;
        }
        if j < fo {
            tile::<1, 8>(fi, fo, j, w, b, x, y, act);
        }
    }

    /// Outputs `j0..j0 + J` of the block: `J x 2` accumulator registers per `k` partial sum;
    /// narrow tiles split `k` over `KS` partial sums so enough FMA chains run in parallel to
    /// hide the FMA latency. Partial sums are added in order, then the bias.
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const J: usize, const KS: usize>(
        fi: usize,
        fo: usize,
        j0: usize,
        w: *const f32,
        b: *const f32,
        x: *const f32,
        y: *mut f32,
        act: bool,
    ) {
        let mut acc = [[[_mm512_setzero_ps(); 2]; J]; KS];
        let mut k = 0;
        while k + KS <= fi {
            for (s, part) in acc.iter_mut().enumerate() {
                let xr = x.add((k + s) * BLOCK);
                let (x0, x1) = (_mm512_loadu_ps(xr), _mm512_loadu_ps(xr.add(16)));
                let wr = w.add((k + s) * fo + j0);
                for (jj, a) in part.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*wr.add(jj));
                    a[0] = _mm512_fmadd_ps(x0, wv, a[0]);
                    a[1] = _mm512_fmadd_ps(x1, wv, a[1]);
                }
            }
            k += KS;
        }
        while k < fi {
            let xr = x.add(k * BLOCK);
            let (x0, x1) = (_mm512_loadu_ps(xr), _mm512_loadu_ps(xr.add(16)));
            let wr = w.add(k * fo + j0);
            for (jj, a) in acc[0].iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*wr.add(jj));
                a[0] = _mm512_fmadd_ps(x0, wv, a[0]);
                a[1] = _mm512_fmadd_ps(x1, wv, a[1]);
            }
            k += 1;
        }
        for jj in 0..J {
            let bias = _mm512_set1_ps(*b.add(j0 + jj));
            for h in 0..2 {
                let mut v = acc[0][jj][h];
                for part in &acc[1..] {
                    v = _mm512_add_ps(v, part[jj][h]);
                }
                v = _mm512_add_ps(bias, v);
                if act {
                    v = tanh_avx512(v);
                }
                _mm512_storeu_ps(y.add((j0 + jj) * BLOCK + 16 * h), v);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    use super::BLOCK;
    use crate::math::tanh_avx2;

    /// Vectors of 8 lanes per block.
    const H: usize = BLOCK / 8;

    /// Tiles of 2 outputs (8 accumulators: 2 outputs x 4 vectors, enough independent FMA
    /// chains for two pipes of 4-cycle FMAs within 16 registers), then 1 with the inputs split
    /// over 2 partial sums.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dense(
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
        while j + 2 <= fo {
            tile::<2, 1>(fi, fo, j, w, b, x, y, act);
            j += 2;
        }
        if j < fo {
            tile::<1, 2>(fi, fo, j, w, b, x, y, act);
        }
    }

    /// Outputs `j0..j0 + J` of the block, the inputs split over `KS` partial sums added in
    /// order at the end, then the bias: the AVX-512 tile's order at 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const J: usize, const KS: usize>(
        fi: usize,
        fo: usize,
        j0: usize,
        w: *const f32,
        b: *const f32,
        x: *const f32,
        y: *mut f32,
        act: bool,
    ) {
        let mut acc = [[[_mm256_setzero_ps(); H]; J]; KS];
        let step = |part: &mut [[__m256; H]; J], k: usize| {
            let xr = x.add(k * BLOCK);
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
                _mm256_storeu_ps(y.add((j0 + jj) * BLOCK + 8 * h), v);
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

    /// Runs the block forward on `rows` observations and compares with `reference::forward`:
    /// the portable level must match bit for bit, AVX-512 (FMA sums) within 1e-5 relative.
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
        for (e, o) in obs.iter().enumerate() {
            for (k, &v) in o.iter().enumerate() {
                net.input[k * BLOCK + e] = v;
            }
        }
        net.forward(&layout, &params, simd, true);
        for (e, o) in obs.iter().enumerate() {
            let (logits, value) = forward(&layout, &params, o);
            let got_v = net.values()[e];
            let got_l: Vec<f32> = (0..n_actions)
                .map(|a| net.logits()[a * BLOCK + e])
                .collect();
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
        }
    }
}
