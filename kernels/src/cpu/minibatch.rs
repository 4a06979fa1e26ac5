//! Dense-layer kernels of the minibatch pass (`mlp.rs`) on feature-major activations
//! (`[feature][row]`, rows in vector lanes, each feature's rows padded to a multiple of
//! [`ROW_BLOCK`] and stored [`row_stride`] floats apart): the forward with bias and `tanh`
//! fused, the input gradient with `tanh'` fused, and the weight and bias gradients. The
//! weights are read in place, never packed: the layers of these policies stay in L1.
//!
//! Summation orders: every output of [`dense`] sums its inputs in input order; [`grad`] adds
//! the rows into the gradient one after the other, in row order. The portable level computes
//! exactly the reference's expressions in the reference's order (no FMA), so its results equal
//! `reference.rs` bit for bit; the AVX-512 level fuses each multiply-add (last-bit differences).

use super::simd::SimdLevel;
use crate::math::tanh;

/// Rows per register block of [`dense`]: two AVX-512 vectors.
pub(crate) const ROW_BLOCK: usize = 32;

/// `rows` rounded up to a multiple of [`ROW_BLOCK`]: the rows the kernels compute (the
/// padding rows hold finite values nobody reads).
pub(crate) fn padded_rows(rows: usize) -> usize {
    rows.div_ceil(ROW_BLOCK) * ROW_BLOCK
}

/// Floats from one feature's rows to the next in a feature-major buffer of `rows` rows: the
/// padded rows plus one vector, an odd number of 64-byte lines. A power-of-two stride (256
/// rows, 1 KiB) would put the same rows of every feature into a few L1 sets, and a kernel
/// reading 64 features at once would miss on every pass; an odd line count spreads them
/// over all sets.
pub(crate) fn row_stride(rows: usize) -> usize {
    padded_rows(rows) + 16
}

/// `wt[o][i] = w[i][o]` for a row-major `w: [n_in][n_out]`: the layout [`dense`] needs to run
/// a layer backward (`dX = dY W^T`). Done once per backward of a minibatch, so small next to
/// the backward itself.
pub(crate) fn transpose_weights(
    simd: SimdLevel,
    w: &[f32],
    n_in: usize,
    n_out: usize,
    wt: &mut [f32],
) {
    if n_out.is_multiple_of(16) {
        // `w` is `[n_in][n_out]` feature-major with `n_out` rows per feature.
        transpose(simd, w, n_in, n_out, n_out, wt);
        return;
    }
    for (i, wr) in w.chunks_exact(n_out).take(n_in).enumerate() {
        for (o, &v) in wr.iter().enumerate() {
            wt[o * n_in + i] = v;
        }
    }
}

/// What [`dense`] does to an output's sum before storing it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// `tanh(b[o] + sum)`: a hidden layer's forward.
    BiasTanh(&'a [f32]),
    /// `b[o] + sum`: an output layer's forward.
    Bias(&'a [f32]),
    /// `sum * (1 - h[o][r]^2)`: a gradient through the `tanh` whose output is `h`
    /// (feature-major, the same stride as the output).
    TanhGrad(&'a [f32]),
}

/// `y[o][r] = epilogue(sum_i x[i][r] * w[i][o])` for every output `o < n_out` and every row
/// `r < padded_rows(rows)`; `w` is row-major `[n_in][n_out]`, `x` is `[n_in][ld]`, `y` is
/// `[n_out][ld]`. Panics (a programming error) if a buffer is too short or `ld` is less than
/// the padded rows.
#[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
pub(crate) fn dense(
    simd: SimdLevel,
    n_in: usize,
    n_out: usize,
    w: &[f32],
    x: &[f32],
    rows: usize,
    ld: usize,
    y: &mut [f32],
    epi: Epilogue<'_>,
) {
    dense_rows(simd, n_in, n_out, w, x, padded_rows(rows), ld, ROW_BLOCK, y, epi);
}

/// [`dense`] on one block of `width` rows stored `width` apart (one of [`BLOCK_WIDTHS`]): the
/// rollout's forward on a block of envs (`fused.rs`). Every lane computes what it would in a
/// full block, bit for bit.
#[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
pub(crate) fn dense_block(
    simd: SimdLevel,
    n_in: usize,
    n_out: usize,
    w: &[f32],
    x: &[f32],
    width: usize,
    y: &mut [f32],
    epi: Epilogue<'_>,
) {
    assert!(BLOCK_WIDTHS.contains(&width), "dense_block: {width} rows");
    dense_rows(simd, n_in, n_out, w, x, width, width, width, y, epi);
}

/// The row blocks the kernels run on: [`ROW_BLOCK`] (two AVX-512 vectors), and a half and a
/// quarter of it for a few rows (a small rollout block).
pub(crate) const BLOCK_WIDTHS: [usize; 3] = [ROW_BLOCK / 4, ROW_BLOCK / 2, ROW_BLOCK];

/// [`dense`] on rows `0..np` in blocks of `block` rows (one of [`BLOCK_WIDTHS`]).
#[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
fn dense_rows(
    simd: SimdLevel,
    n_in: usize,
    n_out: usize,
    w: &[f32],
    x: &[f32],
    np: usize,
    ld: usize,
    block: usize,
    y: &mut [f32],
    epi: Epilogue<'_>,
) {
    if n_out == 0 || np == 0 {
        return;
    }
    assert!(
        np <= ld && n_in > 0 && np.is_multiple_of(block) && BLOCK_WIDTHS.contains(&block),
        "dense: stride {ld} below the {np} padded rows, rows not in blocks of {block}, or no inputs ({n_in})"
    );
    assert!(
        x.len() >= n_in * ld && y.len() >= n_out * ld && w.len() >= n_in * n_out,
        "dense: buffers too short for {n_in} -> {n_out} at stride {ld}"
    );
    match epi {
        Epilogue::BiasTanh(b) | Epilogue::Bias(b) => {
            assert!(b.len() >= n_out, "dense: bias too short")
        }
        Epilogue::TanhGrad(h) => assert!(h.len() >= n_out * ld, "dense: activations too short"),
    }
    // SAFETY (each level): the asserts above cover every index the kernel reads or writes
    // (rows below `np <= ld` in whole blocks of one of `BLOCK_WIDTHS`, inputs below `n_in`,
    // outputs below `n_out`); a level exists only where `SimdLevel::is_supported` confirmed its
    // features.
    match simd {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { avx512::dense(block, n_in, n_out, w, x, np, ld, y, epi) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { avx2::dense(block, n_in, n_out, w, x, np, ld, y, epi) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => unsafe { neon::dense(block, n_in, n_out, w, x, np, ld, y, epi) },
        _ => dense_portable(n_in, n_out, w, x, np, ld, y, epi),
    }
}

/// Plain loops in the reference's order: the sum over inputs in input order starting from
/// zero, then `b + sum` or `sum * (1 - h * h)`.
#[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
fn dense_portable(
    n_in: usize,
    n_out: usize,
    w: &[f32],
    x: &[f32],
    np: usize,
    ld: usize,
    y: &mut [f32],
    epi: Epilogue<'_>,
) {
    for (o, yr) in y.chunks_exact_mut(ld).take(n_out).enumerate() {
        let yr = &mut yr[..np];
        yr.fill(0.0);
        for (i, xr) in x.chunks_exact(ld).take(n_in).enumerate() {
            let wv = w[i * n_out + o];
            for (a, &xv) in yr.iter_mut().zip(&xr[..np]) {
                *a += xv * wv;
            }
        }
        match epi {
            Epilogue::BiasTanh(b) => yr.iter_mut().for_each(|v| *v = tanh(b[o] + *v)),
            Epilogue::Bias(b) => yr.iter_mut().for_each(|v| *v += b[o]),
            Epilogue::TanhGrad(h) => {
                for (v, &hv) in yr.iter_mut().zip(&h[o * ld..o * ld + np]) {
                    *v *= 1.0 - hv * hv;
                }
            }
        }
    }
}

/// Adds `x[i][r] * dy[o][r]` into `gw[i * n_out + o]` and `dy[o][r]` into `gb[o]` for every
/// row `r < rows`; `x` and `dy` are feature-major (`[n_in][ld]`, `[n_out][ld]`), `scratch` is
/// room for `rows * n_out` floats. Panics (a programming error) on short buffers.
///
/// Two orders, both fixed: where both widths are large ([`by_rows`]), `dy` is transposed into
/// `scratch` and the rows are added into the gradient one after the other, in row order (the
/// portable level always does this, and then equals the reference bit for bit); where one
/// width is small (an output layer, a first layer), each vector lane sums every 16th (AVX2,
/// NEON: 8th) row and the lanes are then added in a fixed tree, which needs no transpose.
#[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
pub(crate) fn grad(
    simd: SimdLevel,
    n_in: usize,
    n_out: usize,
    x: &[f32],
    dy: &[f32],
    ld: usize,
    rows: usize,
    scratch: &mut [f32],
    gw: &mut [f32],
    gb: &mut [f32],
) {
    if rows == 0 || n_out == 0 || n_in == 0 {
        return;
    }
    assert!(
        padded_rows(rows) <= ld
            && x.len() >= n_in * ld
            && dy.len() >= n_out * ld
            && gw.len() >= n_in * n_out
            && gb.len() >= n_out,
        "grad: buffers too short for {n_in} -> {n_out} over {rows} rows"
    );
    if !by_rows(n_in, n_out) {
        // SAFETY (each level): the assert above covers every index read (`x` and `dy` in
        // whole vectors that end at or before the padded rows, so within `ld`) and written
        // (both gradients); a level exists only where its features were confirmed.
        match simd {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => return unsafe { avx512::grad_lanes(n_in, n_out, x, dy, ld, rows, gw, gb) },
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => return unsafe { avx2::grad_lanes(n_in, n_out, x, dy, ld, rows, gw, gb) },
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => return unsafe { neon::grad_lanes(n_in, n_out, x, dy, ld, rows, gw, gb) },
            _ => {}
        }
    }
    transpose(simd, dy, n_out, ld, rows, scratch);
    let dyt = &scratch[..rows * n_out];
    // SAFETY (each level): as above, and `dyt` holds `rows * n_out` floats (checked by
    // `transpose`).
    match simd {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { avx512::grad_rows(n_in, n_out, x, ld, dyt, rows, gw, gb) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { avx2::grad_rows(n_in, n_out, x, ld, dyt, rows, gw, gb) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => unsafe { neon::grad_rows(n_in, n_out, x, ld, dyt, rows, gw, gb) },
        _ => {
            for (r, d) in dyt.chunks_exact(n_out).enumerate() {
                for (i, g) in gw.chunks_exact_mut(n_out).take(n_in).enumerate() {
                    let xv = x[i * ld + r];
                    for (gv, &dv) in g.iter_mut().zip(d) {
                        *gv += xv * dv;
                    }
                }
                for (gv, &dv) in gb.iter_mut().zip(d) {
                    *gv += dv;
                }
            }
        }
    }
}

/// Whether [`grad`] at a vector level adds rows in order through a transpose of `dy` (both
/// widths large: the `dy` rows of a pass stay in L1 while `x` is broadcast) rather than summing
/// rows in vector lanes (one width small: that side stays in registers and the other streams
/// once).
fn by_rows(n_in: usize, n_out: usize) -> bool {
    n_out >= 16 && n_in > 8
}

/// `dst[r][i] = src[i][r]` for `i < n`, `r < rows`: feature-major `[n][ld]` to row-major
/// `[rows][n]`. Panics (a programming error) on short buffers or `ld` below `rows` rounded up
/// to 16 (the AVX-512 level reads rows 16 at a time).
pub(crate) fn transpose(
    simd: SimdLevel,
    src: &[f32],
    n: usize,
    ld: usize,
    rows: usize,
    dst: &mut [f32],
) {
    if n == 0 || rows == 0 {
        return;
    }
    assert!(
        rows.next_multiple_of(16) <= ld && src.len() >= n * ld && dst.len() >= rows * n,
        "transpose: buffers too short for {n} x {rows} (stride {ld})"
    );
    // SAFETY (each level): the assert above bounds every read (rows are read in blocks of the
    // level's lanes, at most 16, that end at or before `rows` rounded up to 16, so within
    // `ld`) and every store (masked to `n` features, only rows below `rows`); the level's
    // features were confirmed.
    match simd {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { avx512::transpose(src, n, ld, rows, dst) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { avx2::transpose(src, n, ld, rows, dst) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => unsafe { neon::transpose(src, n, ld, rows, dst) },
        _ => {
            for (r, d) in dst.chunks_exact_mut(n).take(rows).enumerate() {
                for (i, v) in d.iter_mut().enumerate() {
                    *v = src[i * ld + r];
                }
            }
        }
    }
}

/// The micro-kernels, written once over the level's vector type ([`F32Vec`]) and instantiated
/// by each level's entry points (`avx512`, `avx2`, `neon` below) inside one `#[target_feature]`
/// function, where everything here is inlined. The tile shapes are the levels' choices: a
/// level with more registers holds more accumulators.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod generic {
    use super::super::vector::{tanh, F32Vec};
    use super::Epilogue;

    /// Epilogue kinds, a const parameter of the micro-kernels so that each is compiled
    /// without a branch and its accumulators stay in registers.
    const BIAS_TANH: u8 = 0;
    const BIAS: u8 = 1;
    const TANH_GRAD: u8 = 2;

    /// The operands of one `dense` call; `e` is the bias (`BIAS_TANH`, `BIAS`) or the
    /// activation `h` (`TANH_GRAD`).
    pub(super) struct Kernel {
        pub n_in: usize,
        pub n_out: usize,
        w: *const f32,
        x: *const f32,
        ld: usize,
        y: *mut f32,
        e: *const f32,
    }

    impl Kernel {
        /// The operands, and the epilogue kind to instantiate the tiles with.
        fn new(n_in: usize, n_out: usize, w: &[f32], x: &[f32], ld: usize, y: &mut [f32], epi: Epilogue<'_>) -> (Self, u8) {
            let (kind, e) = match epi {
                Epilogue::BiasTanh(b) => (BIAS_TANH, b.as_ptr()),
                Epilogue::Bias(b) => (BIAS, b.as_ptr()),
                Epilogue::TanhGrad(h) => (TANH_GRAD, h.as_ptr()),
            };
            (Self { n_in, n_out, w: w.as_ptr(), x: x.as_ptr(), ld, y: y.as_mut_ptr(), e }, kind)
        }

        /// Outputs `o0..o0 + J` of rows `r0..r0 + H * LANES`: `J x H` accumulators per partial
        /// sum; narrow tiles split the inputs over `KS` partial sums (added in order at the
        /// end) so that enough independent FMA chains hide the FMA latency. Each lane's
        /// operations depend on `KS`, not on `J` or `H`. The input and weight rows are walked
        /// by pointer, so every load in the loop has a constant offset.
        ///
        /// # Safety
        /// As [`F32Vec`]; `dense`'s asserts cover the rows, inputs and outputs read and written.
        #[inline(always)]
        pub unsafe fn tile<V: F32Vec, const H: usize, const J: usize, const KS: usize, const E: u8>(&self, r0: usize, o0: usize) {
            let (ld, no) = (self.ld, self.n_out);
            let mut xr = self.x.add(r0);
            let mut wr = self.w.add(o0);
            let mut acc = [[[V::zero(); H]; J]; KS];
            let step = dense_step::<V, H, J>;
            let mut i = 0;
            // Two rounds per iteration: half the loop overhead, the same order of FMAs.
            while i + 2 * KS <= self.n_in {
                for round in 0..2 {
                    for (s, part) in acc.iter_mut().enumerate() {
                        let k = round * KS + s;
                        step(part, xr.add(k * ld), wr.add(k * no));
                    }
                }
                xr = xr.add(2 * KS * ld);
                wr = wr.add(2 * KS * no);
                i += 2 * KS;
            }
            while i + KS <= self.n_in {
                for (s, part) in acc.iter_mut().enumerate() {
                    step(part, xr.add(s * ld), wr.add(s * no));
                }
                xr = xr.add(KS * ld);
                wr = wr.add(KS * no);
                i += KS;
            }
            while i < self.n_in {
                step(&mut acc[0], xr, wr);
                xr = xr.add(ld);
                wr = wr.add(no);
                i += 1;
            }
            let one = V::splat(1.0);
            for jj in 0..J {
                let o = o0 + jj;
                for h in 0..H {
                    let mut v = acc[0][jj][h];
                    for part in &acc[1..] {
                        v = v.add(part[jj][h]);
                    }
                    let at = o * ld + r0 + V::LANES * h;
                    v = match E {
                        BIAS_TANH => tanh(V::splat(*self.e.add(o)).add(v)),
                        BIAS => V::splat(*self.e.add(o)).add(v),
                        _ => {
                            let hv = V::load(self.e.add(at));
                            v.mul(one.sub(hv.mul(hv)))
                        }
                    };
                    v.store(self.y.add(at));
                }
            }
        }
    }

    /// A level's dense tile plan: which tiles cover the outputs of each block of `LANES * H`
    /// rows (below `np`), calling [`Kernel::tile`] with the level's shapes.
    pub(super) trait DenseTiles {
        /// # Safety
        /// As [`F32Vec`]; `dense`'s asserts cover the rows, inputs and outputs.
        unsafe fn blocks<V: F32Vec, const H: usize, const E: u8>(k: &Kernel, np: usize);
    }

    /// `dense` at a level: the operands, then the level's tiles instantiated for the epilogue.
    ///
    /// # Safety
    /// As [`F32Vec`]; `dense`'s asserts cover the rows, inputs and outputs.
    #[inline(always)]
    #[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
    pub unsafe fn dense<T: DenseTiles, V: F32Vec, const H: usize>(n_in: usize, n_out: usize, w: &[f32], x: &[f32], np: usize, ld: usize, y: &mut [f32], epi: Epilogue<'_>) {
        let (k, kind) = Kernel::new(n_in, n_out, w, x, ld, y, epi);
        match kind {
            BIAS_TANH => T::blocks::<V, H, BIAS_TANH>(&k, np),
            BIAS => T::blocks::<V, H, BIAS>(&k, np),
            _ => T::blocks::<V, H, TANH_GRAD>(&k, np),
        }
    }

    /// One input row into the partial sum `part` of a dense tile: `H` vectors of `xr`, each
    /// multiplied by `J` weights `wr[0..J]` broadcast. A function, not a closure: a closure
    /// would not get the level's target features in an unoptimized or incremental build, and
    /// its intrinsics would become calls.
    #[inline(always)]
    unsafe fn dense_step<V: F32Vec, const H: usize, const J: usize>(part: &mut [[V; H]; J], xr: *const f32, wr: *const f32) {
        let mut xv = [V::zero(); H];
        for (h, v) in xv.iter_mut().enumerate() {
            *v = V::load(xr.add(V::LANES * h));
        }
        for (jj, a) in part.iter_mut().enumerate() {
            let wv = V::splat(*wr.add(jj));
            for (av, &xh) in a.iter_mut().zip(&xv) {
                *av = xh.mul_add(wv, *av);
            }
        }
    }

    /// The operands of one row-ordered weight gradient (`grad_rows`).
    pub(super) struct Grad {
        pub n_in: usize,
        pub n_out: usize,
        x: *const f32,
        ld: usize,
        dyt: *const f32,
        gw: *mut f32,
    }

    impl Grad {
        /// The operands: `x` feature-major at stride `ld`, `dyt` row-major `[rows][n_out]`.
        pub fn new(n_in: usize, n_out: usize, x: &[f32], ld: usize, dyt: &[f32], gw: &mut [f32]) -> Self {
            Self { n_in, n_out, x: x.as_ptr(), ld, dyt: dyt.as_ptr(), gw: gw.as_mut_ptr() }
        }

        /// Every input for outputs `o0..o0 + LANES * JV` (the last vector masked by `last`):
        /// tiles of `KT` inputs, then 4, 2, 1 for the rest.
        ///
        /// # Safety
        /// As [`F32Vec`]; `grad`'s asserts cover what is read and written.
        #[inline(always)]
        pub unsafe fn inputs<V: F32Vec, const JV: usize, const KT: usize>(&self, o0: usize, last: V::Mask, r0: usize, r1: usize) {
            let mut i = 0;
            while i + KT <= self.n_in {
                self.tile::<V, KT, JV>(i, o0, last, r0, r1);
                i += KT;
            }
            while i + 4 <= self.n_in {
                self.tile::<V, 4, JV>(i, o0, last, r0, r1);
                i += 4;
            }
            if i + 2 <= self.n_in {
                self.tile::<V, 2, JV>(i, o0, last, r0, r1);
                i += 2;
            }
            if i < self.n_in {
                self.tile::<V, 1, JV>(i, o0, last, r0, r1);
            }
        }

        /// `gw[i0..i0 + KT][o0..o0 + LANES * JV] += sum_{r0 <= r < r1} x[i][r] * dyt[r][o]`:
        /// loaded once, one FMA per row into each accumulator (so rows add in order), stored
        /// once.
        #[inline(always)]
        unsafe fn tile<V: F32Vec, const KT: usize, const JV: usize>(&self, i0: usize, o0: usize, last: V::Mask, r0: usize, r1: usize) {
            let all = V::all();
            let n_out = self.n_out;
            let mut acc = [[V::zero(); JV]; KT];
            for (i, a) in acc.iter_mut().enumerate() {
                for (v, av) in a.iter_mut().enumerate() {
                    *av = V::load_masked(self.gw.add((i0 + i) * n_out + o0 + V::LANES * v), if v + 1 == JV { last } else { all });
                }
            }
            let x = self.x.add(i0 * self.ld);
            for r in r0..r1 {
                let d = self.dyt.add(r * n_out + o0);
                let mut dv = [V::zero(); JV];
                for (v, dvv) in dv.iter_mut().enumerate() {
                    *dvv = V::load_masked(d.add(V::LANES * v), if v + 1 == JV { last } else { all });
                }
                for (i, a) in acc.iter_mut().enumerate() {
                    let xb = V::splat(*x.add(i * self.ld + r));
                    for (av, &d) in a.iter_mut().zip(&dv) {
                        *av = xb.mul_add(d, *av);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate() {
                for (v, &av) in a.iter().enumerate() {
                    av.store_masked(self.gw.add((i0 + i) * n_out + o0 + V::LANES * v), if v + 1 == JV { last } else { all });
                }
            }
        }
    }

    /// Rows per pass of the row-ordered weight gradient: the pass's `dyt` rows (128 x 64
    /// floats for a 64-wide layer) stay in L1 while every input tile reads them; the
    /// accumulators go back to memory once per pass.
    const GRAD_ROWS: usize = 128;

    /// A level's row-ordered gradient tile plan: outputs in chunks of up to `CHUNK` vectors,
    /// each run by `chunk` with the level's tile shapes ([`Grad::inputs`]).
    pub(super) trait GradTiles {
        /// The level's vector.
        type V: F32Vec;
        /// Vectors of outputs per chunk.
        const CHUNK: usize;
        /// Outputs `o0..` in `vectors` vectors (`vectors <= CHUNK`, the last one masked by
        /// `last`) over rows `r0..r1`.
        ///
        /// # Safety
        /// As [`F32Vec`]; `grad`'s asserts cover what is read and written.
        unsafe fn chunk(g: &Grad, o0: usize, vectors: usize, last: <Self::V as F32Vec>::Mask, r0: usize, r1: usize);
    }

    impl Grad {
        /// The whole row-ordered gradient: passes of [`GRAD_ROWS`] rows, each over the level's
        /// chunks of outputs, then the bias.
        ///
        /// # Safety
        /// As [`F32Vec`]; `grad`'s asserts cover what is read and written.
        #[inline(always)]
        pub unsafe fn run<T: GradTiles>(&self, dyt: &[f32], rows: usize, gb: &mut [f32]) {
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + GRAD_ROWS).min(rows);
                let lanes = T::V::LANES;
                let mut o0 = 0;
                while o0 < self.n_out {
                    let width = (self.n_out - o0).min(T::CHUNK * lanes);
                    let last = T::V::mask(width - lanes * ((width - 1) / lanes));
                    T::chunk(self, o0, width.div_ceil(lanes), last, r0, r1);
                    o0 += T::CHUNK * lanes;
                }
                r0 = r1;
            }
            bias_rows::<T::V>(self.n_out, dyt, rows, gb);
        }
    }

    /// Bias gradient of the row-ordered path: the rows of `dyt` added in order, `LANES`
    /// outputs per vector.
    ///
    /// # Safety
    /// As [`F32Vec`]; `dyt` holds `rows * n_out` floats and `gb` `n_out`.
    #[inline(always)]
    unsafe fn bias_rows<V: F32Vec>(n_out: usize, dyt: &[f32], rows: usize, gb: &mut [f32]) {
        let mut o0 = 0;
        while o0 < n_out {
            let m = V::mask((n_out - o0).min(V::LANES));
            let mut acc = V::load_masked(gb.as_ptr().add(o0), m);
            for r in 0..rows {
                acc = acc.add(V::load_masked(dyt.as_ptr().add(r * n_out + o0), m));
            }
            acc.store_masked(gb.as_mut_ptr().add(o0), m);
            o0 += V::LANES;
        }
    }

    /// `dst[r][i] = src[i][r]` (`super::transpose`) in blocks of `LANES` features x `LANES`
    /// rows: each block is loaded, transposed in registers (`F32Vec::transpose_square`), and
    /// stored masked to the block's features. Loop
    /// trip counts are constant so the block stays in registers: a block with fewer features
    /// reloads its last feature in the missing places, and the stores mask those lanes out.
    ///
    /// # Safety
    /// As [`F32Vec`]; `transpose`'s assert bounds every read (rows in blocks of `LANES`, within
    /// `ld`) and store (masked to `n` features, only rows below `rows`).
    #[inline(always)]
    pub unsafe fn transpose<V: F32Vec>(src: &[f32], n: usize, ld: usize, rows: usize, dst: &mut [f32]) {
        let lanes = V::LANES;
        let (src, dst) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i0 = 0;
        while i0 < n {
            let ni = (n - i0).min(lanes);
            let m = V::mask(ni);
            let mut r0 = 0;
            while r0 < rows {
                let mut b = [V::zero(); 16];
                for (a, v) in b.iter_mut().take(lanes).enumerate() {
                    *v = V::load(src.add((i0 + a.min(ni - 1)) * ld + r0));
                }
                V::transpose_square(&mut b);
                for (r, v) in b.iter().take(lanes.min(rows - r0)).enumerate() {
                    v.store_masked(dst.add((r0 + r) * n + i0), m);
                }
                r0 += lanes;
            }
            i0 += lanes;
        }
    }

    /// One vector of rows into the in-lanes accumulators: `acc[ii * JO + oo] += xv[ii] * dv[oo]`.
    /// A function for the reason given at [`dense_step`].
    #[inline(always)]
    unsafe fn lanes_step<V: F32Vec, const KI: usize, const JO: usize>(acc: &mut [V; 16], xv: [V; KI], dv: [V; JO]) {
        for (ii, &xi) in xv.iter().enumerate() {
            for (oo, &d) in dv.iter().enumerate() {
                acc[ii * JO + oo] = xi.mul_add(d, acc[ii * JO + oo]);
            }
        }
    }

    /// The operands of one in-lanes weight gradient (`grad_lanes`); `tail` masks the rows of
    /// the last vector.
    pub(super) struct Lanes<M> {
        pub n_in: usize,
        pub n_out: usize,
        x: *const f32,
        dy: *const f32,
        ld: usize,
        rows: usize,
        tail: M,
        gw: *mut f32,
    }

    impl<M: Copy> Lanes<M> {
        /// The operands, with the mask of the last partial vector of rows.
        ///
        /// # Safety
        /// As [`F32Vec`], with `V::Mask == M`.
        #[inline(always)]
        pub unsafe fn new<V: F32Vec<Mask = M>>(n_in: usize, n_out: usize, x: &[f32], dy: &[f32], ld: usize, rows: usize, gw: &mut [f32]) -> Self {
            let tail = V::mask(rows - V::LANES * ((rows - 1) / V::LANES));
            Self { n_in, n_out, x: x.as_ptr(), dy: dy.as_ptr(), ld, rows, tail, gw: gw.as_mut_ptr() }
        }

        /// Outputs `o0..o0 + JO` for every input: tiles of `KI` inputs, then halves of it.
        ///
        /// # Safety
        /// As [`F32Vec`]; `grad`'s asserts cover what is read and written; `KI * JO <= LANES`.
        #[inline(always)]
        unsafe fn inputs<V: F32Vec<Mask = M>, const JO: usize, const KI: usize>(&self, o0: usize) {
            let mut i = 0;
            while i + KI <= self.n_in {
                self.tile::<V, KI, JO>(i, o0);
                i += KI;
            }
            // The rest in tiles of at most KI / 2, 4, 2, 1 inputs (KI is a power of two).
            if KI > 8 && i + 8 <= self.n_in {
                self.tile::<V, 8, JO>(i, o0);
                i += 8;
            }
            if KI > 4 && i + 4 <= self.n_in {
                self.tile::<V, 4, JO>(i, o0);
                i += 4;
            }
            if KI > 2 && i + 2 <= self.n_in {
                self.tile::<V, 2, JO>(i, o0);
                i += 2;
            }
            if KI > 1 && i < self.n_in {
                self.tile::<V, 1, JO>(i, o0);
            }
        }

        /// `gw[i0 + ii][o0 + oo] += sum_r x[i0 + ii][r] * dy[o0 + oo][r]`: accumulator
        /// `ii * JO + oo` sums the rows `r = l mod LANES` in lane `l`, then `sum_each`.
        #[inline(always)]
        unsafe fn tile<V: F32Vec<Mask = M>, const KI: usize, const JO: usize>(&self, i0: usize, o0: usize) {
            let ld = self.ld;
            let (x, dy) = (self.x.add(i0 * ld), self.dy.add(o0 * ld));
            // Room for the widest level; the accumulators past KI * JO stay zero.
            let mut acc = [V::zero(); 16];
            let step = lanes_step::<V, KI, JO>;
            let mut r = 0;
            while r + V::LANES <= self.rows {
                let mut xv = [V::zero(); KI];
                for (ii, v) in xv.iter_mut().enumerate() {
                    *v = V::load(x.add(ii * ld + r));
                }
                let mut dv = [V::zero(); JO];
                for (oo, v) in dv.iter_mut().enumerate() {
                    *v = V::load(dy.add(oo * ld + r));
                }
                step(&mut acc, xv, dv);
                r += V::LANES;
            }
            if r < self.rows {
                let mut xv = [V::zero(); KI];
                for (ii, v) in xv.iter_mut().enumerate() {
                    *v = V::load(x.add(ii * ld + r));
                }
                // Masking `dy` alone zeroes the products of the rows past `rows`.
                let mut dv = [V::zero(); JO];
                for (oo, v) in dv.iter_mut().enumerate() {
                    *v = V::load_masked(dy.add(oo * ld + r), self.tail);
                }
                step(&mut acc, xv, dv);
            }
            let mut sums = [0.0f32; 16];
            V::sum_each(&acc[..V::LANES]).store(sums.as_mut_ptr());
            for ii in 0..KI {
                let g = self.gw.add((i0 + ii) * self.n_out + o0);
                for (oo, &s) in sums[ii * JO..(ii + 1) * JO].iter().enumerate() {
                    *g.add(oo) += s;
                }
            }
        }

        /// The whole gradient in lanes: outputs in tiles of 4, 2, 1 with inputs in tiles of
        /// `K4`, `K2`, `K1` (`LANES / JO`, so every tile fills the level's accumulators), then
        /// the bias.
        ///
        /// # Safety
        /// As [`F32Vec`]; `grad`'s asserts cover what is read and written.
        #[inline(always)]
        pub unsafe fn run<V: F32Vec<Mask = M>, const K4: usize, const K2: usize, const K1: usize>(&self, gb: &mut [f32]) {
            let mut o = 0;
            while o + 4 <= self.n_out {
                self.inputs::<V, 4, K4>(o);
                o += 4;
            }
            if o + 2 <= self.n_out {
                self.inputs::<V, 2, K2>(o);
                o += 2;
            }
            if o < self.n_out {
                self.inputs::<V, 1, K1>(o);
            }
            self.bias::<V>(gb);
        }

        /// Bias gradient in lanes: each output's rows summed in lanes, then `V::sum`.
        #[inline(always)]
        unsafe fn bias<V: F32Vec<Mask = M>>(&self, gb: &mut [f32]) {
            for (o, b) in gb.iter_mut().enumerate().take(self.n_out) {
                let d = self.dy.add(o * self.ld);
                let mut acc = V::zero();
                let mut r = 0;
                while r + V::LANES <= self.rows {
                    acc = acc.add(V::load(d.add(r)));
                    r += V::LANES;
                }
                if r < self.rows {
                    acc = acc.add(V::load_masked(d.add(r), self.tail));
                }
                *b += acc.sum();
            }
        }
    }

    /// The tile plans of the 8-lane levels with 16 vectors' worth of registers: AVX2 (16
    /// `__m256`) and NEON (pairs of 4-lane registers, 32 of them). Dense: rows in blocks of
    /// `8 * H`, outputs in tiles of `8 / H` (8, 4 or 2), then 4 and 2, then a last odd output
    /// with its inputs split over 2 partial sums; every output but that last one sums in one
    /// chain at any width, so each lane's operations do not depend on `H`. Row-ordered
    /// gradient: chunks of up to 2 vectors, tiles of 12 accumulators.
    pub(super) struct Plan8<V>(core::marker::PhantomData<V>);

    impl<W: F32Vec> DenseTiles for Plan8<W> {
        #[inline(always)]
        unsafe fn blocks<V: F32Vec, const H: usize, const E: u8>(k: &Kernel, np: usize) {
            let mut r0 = 0;
            while r0 < np {
                let mut o = 0;
                if H == 1 {
                    while o + 8 <= k.n_out {
                        k.tile::<V, H, 8, 1, E>(r0, o);
                        o += 8;
                    }
                }
                if H <= 2 {
                    while o + 4 <= k.n_out {
                        k.tile::<V, H, 4, 1, E>(r0, o);
                        o += 4;
                    }
                }
                while o + 2 <= k.n_out {
                    k.tile::<V, H, 2, 1, E>(r0, o);
                    o += 2;
                }
                if o < k.n_out {
                    k.tile::<V, H, 1, 2, E>(r0, o);
                }
                r0 += V::LANES * H;
            }
        }
    }

    impl<W: F32Vec> GradTiles for Plan8<W> {
        type V = W;
        const CHUNK: usize = 2;

        #[inline(always)]
        unsafe fn chunk(g: &Grad, o0: usize, vectors: usize, last: W::Mask, r0: usize, r1: usize) {
            if vectors == 2 {
                g.inputs::<W, 2, 6>(o0, last, r0, r1);
            } else {
                g.inputs::<W, 1, 12>(o0, last, r0, r1);
            }
        }
    }
}

/// A level's entry points: one `#[target_feature]` function per kernel, in which the generic
/// kernels are instantiated with the level's vector type and tile plans and inlined whole.
/// `dense` maps each of [`BLOCK_WIDTHS`] to a vector type and a count `H` of vectors per row
/// block; `lanes` gives `Lanes::run`'s input tiles (`K4`, `K2`, `K1`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! level_entry_points {
    (
        features: $f:literal,
        vector: $V:ty,
        tiles: $T:ty,
        blocks: { $($b:literal => ($W:ty, $H:literal)),+ $(,)? },
        lanes: ($k4:literal, $k2:literal, $k1:literal) $(,)?
    ) => {
        use super::generic::{self, Grad, Lanes};
        use super::Epilogue;

        /// `super::dense_rows` on blocks of `block` rows, `block` one of `BLOCK_WIDTHS`.
        #[target_feature(enable = $f)]
        #[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
        pub(super) unsafe fn dense(block: usize, n_in: usize, n_out: usize, w: &[f32], x: &[f32], np: usize, ld: usize, y: &mut [f32], epi: Epilogue<'_>) {
            match block {
                $($b => generic::dense::<$T, $W, $H>(n_in, n_out, w, x, np, ld, y, epi),)+
                _ => unreachable!("dense: a block of {block} rows"),
            }
        }

        /// `super::grad` in row order, over the transposed `dyt`.
        #[target_feature(enable = $f)]
        #[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
        pub(super) unsafe fn grad_rows(n_in: usize, n_out: usize, x: &[f32], ld: usize, dyt: &[f32], rows: usize, gw: &mut [f32], gb: &mut [f32]) {
            Grad::new(n_in, n_out, x, ld, dyt, gw).run::<$T>(dyt, rows, gb);
        }

        /// `super::grad` with rows in vector lanes.
        #[target_feature(enable = $f)]
        #[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
        pub(super) unsafe fn grad_lanes(n_in: usize, n_out: usize, x: &[f32], dy: &[f32], ld: usize, rows: usize, gw: &mut [f32], gb: &mut [f32]) {
            Lanes::new::<$V>(n_in, n_out, x, dy, ld, rows, gw).run::<$V, $k4, $k2, $k1>(gb);
        }

        /// `super::transpose` in square blocks of the vector's lanes, transposed in registers.
        #[target_feature(enable = $f)]
        pub(super) unsafe fn transpose(src: &[f32], n: usize, ld: usize, rows: usize, dst: &mut [f32]) {
            generic::transpose::<$V>(src, n, ld, rows, dst)
        }
    };
}

/// The AVX-512 level: 32 registers, so 16 accumulators per dense tile (8 outputs x 2
/// vectors). A block of 8 rows runs the same tiles on half vectors (`__m256`), so each lane's
/// operations are the same at every width.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    use super::generic::{DenseTiles, GradTiles, Kernel};
    use crate::cpu::vector::F32Vec;

    level_entry_points! {
        features: "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma",
        vector: __m512,
        tiles: Tiles,
        blocks: { 8 => (__m256, 1), 16 => (__m512, 1), 32 => (__m512, 2) },
        // 16 accumulators per in-lanes tile.
        lanes: (4, 8, 16),
    }

    /// This level's tile plans.
    struct Tiles;

    /// Rows `0..np` in blocks of `V::LANES * H`, outputs in tiles of 8, then 4, 2, 1 for the
    /// rest (each narrower tile with twice the partial sums). A block's inputs (`n_in x 16H`
    /// floats) stay in L1 across its output tiles.
    impl DenseTiles for Tiles {
        #[inline(always)]
        unsafe fn blocks<V: F32Vec, const H: usize, const E: u8>(k: &Kernel, np: usize) {
            let mut r0 = 0;
            while r0 < np {
                let mut o = 0;
                while o + 8 <= k.n_out {
                    k.tile::<V, H, 8, 1, E>(r0, o);
                    o += 8;
                }
                if o + 4 <= k.n_out {
                    k.tile::<V, H, 4, 2, E>(r0, o);
                    o += 4;
                }
                if o + 2 <= k.n_out {
                    k.tile::<V, H, 2, 4, E>(r0, o);
                    o += 2;
                }
                if o < k.n_out {
                    k.tile::<V, H, 1, 8, E>(r0, o);
                }
                r0 += V::LANES * H;
            }
        }
    }

    /// Outputs in chunks of up to 4 vectors (64 floats, the last one masked), inputs in tiles
    /// whose `KT x JV` accumulators (up to 24) stay in registers for a whole pass of rows.
    impl GradTiles for Tiles {
        type V = __m512;
        const CHUNK: usize = 4;

        #[inline(always)]
        unsafe fn chunk(g: &Grad, o0: usize, vectors: usize, last: __mmask16, r0: usize, r1: usize) {
            match vectors {
                4 => g.inputs::<__m512, 4, 6>(o0, last, r0, r1),
                3 => g.inputs::<__m512, 3, 8>(o0, last, r0, r1),
                2 => g.inputs::<__m512, 2, 12>(o0, last, r0, r1),
                _ => g.inputs::<__m512, 1, 16>(o0, last, r0, r1),
            }
        }
    }
}

/// The AVX2 level: 16 registers of 8 lanes, [`generic::Plan8`].
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::__m256;

    level_entry_points! {
        features: "avx2,fma",
        vector: __m256,
        tiles: generic::Plan8<__m256>,
        blocks: { 8 => (__m256, 1), 16 => (__m256, 2), 32 => (__m256, 4) },
        // 8 accumulators per in-lanes tile.
        lanes: (2, 4, 8),
    }
}

/// The NEON level: AVX2's plans on pairs of 4-lane registers ([`F32x8`], 32 registers hold
/// AVX2's 16 vectors), so every kernel does AVX2's operations in AVX2's order.
///
/// [`F32x8`]: crate::cpu::vector::F32x8
#[cfg(target_arch = "aarch64")]
mod neon {
    use crate::cpu::vector::F32x8;

    level_entry_points! {
        features: "neon",
        vector: F32x8,
        tiles: generic::Plan8<F32x8>,
        blocks: { 8 => (F32x8, 1), 16 => (F32x8, 2), 32 => (F32x8, 4) },
        lanes: (2, 4, 8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::simd::testable_levels;

    /// A deterministic spread of values in [-1, 1].
    fn vals(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i ^ seed).wrapping_mul(2_654_435_761).rotate_left(13) ^ seed;
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn close(got: f32, want: f32, exact: bool, what: &str) {
        if exact {
            assert_eq!(got.to_bits(), want.to_bits(), "{what}: {got} vs {want}");
        } else {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{what}: {got} vs {want}"
            );
        }
    }

    /// Each epilogue, each weight orientation, widths that hit every output tile (8, 4, 2, 1),
    /// the partial-sum remainders and more than one row block, against plain f32 sums in the
    /// reference's order (bit for bit on the portable level).
    #[test]
    fn dense_matches_plain_sums_on_every_level() {
        for simd in testable_levels() {
            for (n_in, n_out, rows) in [
                (4, 64, 70),
                (64, 2, 40),
                (15, 7, 33),
                (3, 1, 5),
                (64, 64, 96),
            ] {
                let ld = row_stride(rows);
                let x = vals(n_in * ld, 1);
                let w = vals(n_in * n_out, 2);
                let b = vals(n_out, 3);
                let h = vals(n_out * ld, 4);
                for transposed in [false, true] {
                    // Transposed: `w` holds a `[n_out][n_in]` matrix, run as W^T.
                    let wv = if transposed {
                        let mut wt = vec![0.0; n_in * n_out];
                        transpose_weights(simd, &w, n_out, n_in, &mut wt);
                        wt
                    } else {
                        w.clone()
                    };
                    for epi in 0..3 {
                        let e = match epi {
                            0 => Epilogue::BiasTanh(&b),
                            1 => Epilogue::Bias(&b),
                            _ => Epilogue::TanhGrad(&h),
                        };
                        let mut y = vec![f32::NAN; n_out * ld];
                        dense(simd, n_in, n_out, &wv, &x, rows, ld, &mut y, e);
                        for o in 0..n_out {
                            for r in 0..padded_rows(rows) {
                                let mut acc = 0.0f32;
                                for i in 0..n_in {
                                    let wio = if transposed {
                                        w[o * n_in + i]
                                    } else {
                                        w[i * n_out + o]
                                    };
                                    acc += x[i * ld + r] * wio;
                                }
                                let want = match epi {
                                    0 => tanh(b[o] + acc),
                                    1 => b[o] + acc,
                                    _ => acc * (1.0 - h[o * ld + r] * h[o * ld + r]),
                                };
                                let what = format!(
                                    "{} {n_in}->{n_out} t{transposed} e{epi} y[{o}][{r}]",
                                    simd.name()
                                );
                                close(y[o * ld + r], want, simd == SimdLevel::Portable, &what);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Weight and bias gradients on both AVX-512 paths (rows in order: both widths large;
    /// rows in lanes: one width small) with row counts that hit the row passes, the masked
    /// vectors and the last partial vector, added onto non-zero gradients, against per-row sums
    /// in row order (bit for bit on the portable level). Padding rows of `dy` hold garbage that
    /// must not leak in.
    #[test]
    fn grad_matches_row_ordered_sums_on_every_level() {
        let shapes = [
            (4, 64, 300),
            (64, 2, 129),
            (15, 7, 33),
            (7, 100, 20),
            (64, 64, 256),
            (1, 1, 1),
            (9, 16, 50),
            (20, 33, 77),
            (64, 100, 40),
        ];
        for simd in testable_levels() {
            for (n_in, n_out, rows) in shapes {
                let ld = row_stride(rows);
                let x = vals(n_in * ld, 5);
                let mut dy = vals(n_out * ld, 6);
                for o in 0..n_out {
                    dy[o * ld + rows..(o + 1) * ld].fill(1e30);
                }
                let gw0 = vals(n_in * n_out, 7);
                let gb0 = vals(n_out, 8);
                let (mut gw, mut gb) = (gw0.clone(), gb0.clone());
                let mut scratch = vec![0.0; rows * n_out];
                grad(
                    simd,
                    n_in,
                    n_out,
                    &x,
                    &dy,
                    ld,
                    rows,
                    &mut scratch,
                    &mut gw,
                    &mut gb,
                );
                let exact = simd == SimdLevel::Portable;
                let what = |p: &str| format!("{} {n_in}->{n_out} x {rows} {p}", simd.name());
                for i in 0..n_in {
                    for o in 0..n_out {
                        let mut want = gw0[i * n_out + o];
                        for r in 0..rows {
                            want += x[i * ld + r] * dy[o * ld + r];
                        }
                        let got = gw[i * n_out + o];
                        // Sums of `rows` products in [-1, 1]: error relative to the row count.
                        let tol = if exact { 0.0 } else { 1e-6 * rows as f32 };
                        assert!(
                            (got - want).abs() <= tol,
                            "{}: {got} vs {want}",
                            what(&format!("gw[{i}][{o}]"))
                        );
                    }
                }
                for o in 0..n_out {
                    let mut want = gb0[o];
                    for r in 0..rows {
                        want += dy[o * ld + r];
                    }
                    // Row order (exact) unless the lanes path summed them.
                    let tol = if exact || by_rows(n_in, n_out) {
                        0.0
                    } else {
                        1e-6 * rows as f32
                    };
                    assert!(
                        (gb[o] - want).abs() <= tol,
                        "{}: {} vs {want}",
                        what(&format!("gb[{o}]")),
                        gb[o]
                    );
                }
            }
        }
    }

    #[test]
    fn transpose_moves_every_element_and_nothing_else() {
        for simd in testable_levels() {
            // Strides of activations (`row_stride`) and of weight matrices (`ld == rows`).
            let cases = [
                (64, 256, 0),
                (2, 37, 0),
                (17, 64, 0),
                (1, 1, 0),
                (33, 100, 0),
                (64, 64, 64),
                (4, 64, 64),
                (33, 16, 16),
            ];
            for (n, rows, ld) in cases {
                let ld = if ld == 0 { row_stride(rows) } else { ld };
                let src: Vec<f32> = (0..n * ld).map(|v| v as f32).collect();
                // One sentinel past the end: nothing may be written there.
                let mut dst = vec![-1.0f32; rows * n + 1];
                transpose(simd, &src, n, ld, rows, &mut dst);
                for r in 0..rows {
                    for i in 0..n {
                        assert_eq!(
                            dst[r * n + i],
                            src[i * ld + r],
                            "{} {n}x{rows} [{r}][{i}]",
                            simd.name()
                        );
                    }
                }
                assert_eq!(
                    dst[rows * n],
                    -1.0,
                    "{} {n}x{rows}: wrote past the end",
                    simd.name()
                );
            }
        }
    }
}
