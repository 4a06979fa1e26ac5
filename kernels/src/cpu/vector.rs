//! One vector of f32 lanes per instruction-set level, with the operations the micro-kernels
//! are written in, so that each kernel (`minibatch.rs`) is written once and compiled for every
//! level: `__m512` for AVX-512, `__m256` for AVX2, [`F32x8`] (two NEON registers) for NEON.
//!
//! The methods are `#[inline(always)]` wrappers of one intrinsic each (or a short fixed
//! sequence). A kernel is generic over [`F32Vec`] and `#[inline(always)]` too, and each level
//! calls it from one `#[target_feature]` function: everything is inlined there and compiled
//! with that level's features, as if written with its intrinsics directly.

#[cfg(target_arch = "aarch64")]
use core::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use crate::math::{
    TANH_A1, TANH_A11, TANH_A13, TANH_A3, TANH_A5, TANH_A7, TANH_A9, TANH_B0, TANH_B2, TANH_B4, TANH_B6, TANH_CLAMP,
    TANH_TINY,
};

/// A vector of f32 lanes at one instruction-set level.
///
/// # Safety
/// Every method executes instructions of its level: call them only from a function compiled
/// with that level's features (a `#[target_feature]` function of the level, entered after
/// `SimdLevel::is_supported`), and with pointers valid for the lanes they read or write.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) trait F32Vec: Copy {
    /// f32 lanes.
    const LANES: usize;
    /// Which lanes a partial load or store touches.
    type Mask: Copy;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// Every lane `v`.
    unsafe fn splat(v: f32) -> Self;
    /// `LANES` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self;
    /// Stores the lanes at `p` (unaligned).
    unsafe fn store(self, p: *mut f32);
    /// The low `n` lanes, `n` in `0..=LANES`.
    unsafe fn mask(n: usize) -> Self::Mask;
    /// Every lane.
    unsafe fn all() -> Self::Mask;
    /// The lanes of `m` from `p`, zero in the others (which are not read).
    unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self;
    /// Stores the lanes of `m` at `p` (the others are not written).
    unsafe fn store_masked(self, p: *mut f32, m: Self::Mask);
    /// Lane-wise `self + b`.
    unsafe fn add(self, b: Self) -> Self;
    /// Lane-wise `self - b`.
    unsafe fn sub(self, b: Self) -> Self;
    /// Lane-wise `self * b`.
    unsafe fn mul(self, b: Self) -> Self;
    /// Lane-wise `self / b` (IEEE division).
    unsafe fn div(self, b: Self) -> Self;
    /// Lane-wise `self * b + c`, rounded once (fused multiply-add).
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Lane-wise `b < self ? b : self`: `self` where either is NaN (the x86 `min` rule).
    unsafe fn min_or_self(self, b: Self) -> Self;
    /// Lane-wise `b > self ? b : self`: `self` where either is NaN.
    unsafe fn max_or_self(self, b: Self) -> Self;
    /// Lane-wise `|self|` (the sign bit cleared).
    unsafe fn abs(self) -> Self;
    /// Lane-wise `self < b ? t : f` (ordered: false where either is NaN).
    unsafe fn select_lt(self, b: Self, t: Self, f: Self) -> Self;
    /// The sum of the lanes, added in a fixed tree.
    unsafe fn sum(self) -> f32;
    /// `a.len() == LANES` vectors; lane `l` of the result is the sum of the lanes of `a[l]`,
    /// added in a fixed tree (the same for every `l`).
    unsafe fn sum_each(a: &[Self]) -> Self;
    /// Transposes the square of the first `LANES` vectors in place: lane `a` of `b[c]` becomes
    /// lane `c` of `b[a]` (the vectors past `LANES` are left alone).
    unsafe fn transpose_square(b: &mut [Self; 16]);
}

/// `tanh` on every lane with the operations of `math::tanh` in the same order (separate
/// multiplies and adds, a true division), so each lane equals the scalar result bit for bit.
///
/// # Safety
/// As [`F32Vec`].
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(crate) unsafe fn tanh<V: F32Vec>(x: V) -> V {
    // No closures here: they would not get the caller's target features in an unoptimized or
    // incremental build, and every intrinsic in them would become a call.
    let s = V::splat;
    // `min(C, x)` keeps x where x is NaN, as the scalar select does.
    let xc = x.min_or_self(s(TANH_CLAMP));
    let xc = xc.max_or_self(s(-TANH_CLAMP));
    let x2 = xc.mul(xc);
    let mut p = s(TANH_A13).mul(x2).add(s(TANH_A11));
    p = p.mul(x2).add(s(TANH_A9));
    p = p.mul(x2).add(s(TANH_A7));
    p = p.mul(x2).add(s(TANH_A5));
    p = p.mul(x2).add(s(TANH_A3));
    p = p.mul(x2).add(s(TANH_A1));
    p = p.mul(xc);
    let mut q = s(TANH_B6).mul(x2).add(s(TANH_B4));
    q = q.mul(x2).add(s(TANH_B2));
    q = q.mul(x2).add(s(TANH_B0));
    let r = p.div(q);
    x.abs().select_lt(s(TANH_TINY), x, r)
}

#[cfg(target_arch = "x86_64")]
impl F32Vec for __m512 {
    const LANES: usize = 16;
    type Mask = __mmask16;

    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        _mm512_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self)
    }
    #[inline(always)]
    unsafe fn mask(n: usize) -> __mmask16 {
        (((1u32 << n) - 1) & 0xffff) as __mmask16
    }
    #[inline(always)]
    unsafe fn all() -> __mmask16 {
        0xffff
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __mmask16) -> Self {
        _mm512_maskz_loadu_ps(m, p)
    }
    #[inline(always)]
    unsafe fn store_masked(self, p: *mut f32, m: __mmask16) {
        _mm512_mask_storeu_ps(p, m, self)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        _mm512_add_ps(self, b)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        _mm512_sub_ps(self, b)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        _mm512_mul_ps(self, b)
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        _mm512_div_ps(self, b)
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        _mm512_fmadd_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn min_or_self(self, b: Self) -> Self {
        // `min(a, b)` returns its second operand where either is NaN.
        _mm512_min_ps(b, self)
    }
    #[inline(always)]
    unsafe fn max_or_self(self, b: Self) -> Self {
        _mm512_max_ps(b, self)
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(self), _mm512_set1_epi32(0x7fff_ffff)))
    }
    #[inline(always)]
    unsafe fn select_lt(self, b: Self, t: Self, f: Self) -> Self {
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(self, b), f, t)
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        _mm512_reduce_add_ps(self)
    }
    /// Lanes 4L..4L+4 pairwise, then the four 128-bit quarters.
    #[inline(always)]
    unsafe fn sum_each(a: &[Self]) -> Self {
        let a: &[Self; 16] = a.try_into().expect("16 vectors");
        // c[p]: in each quarter, a[2p] partials at positions 0 and 2, a[2p+1] at 1 and 3.
        let mut c = [_mm512_setzero_ps(); 8];
        for (p, v) in c.iter_mut().enumerate() {
            let (x, y) = (a[2 * p], a[2 * p + 1]);
            *v = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
        }
        // e[q]: in each quarter, position m is a partial of a[4q + m].
        let mut e = [_mm512_setzero_ps(); 4];
        for (q, v) in e.iter_mut().enumerate() {
            let (x, y) = (_mm512_castps_pd(c[2 * q]), _mm512_castps_pd(c[2 * q + 1]));
            *v = _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
            );
        }
        // Quarter q of the result: the four quarters of e[q] added.
        add_quarters(add_quarters(e[0], e[1]), add_quarters(e[2], e[3]))
    }
    #[inline(always)]
    unsafe fn transpose_square(b: &mut [Self; 16]) {
        *b = transpose16(*b);
    }
}

#[cfg(target_arch = "x86_64")]
impl F32Vec for __m256 {
    const LANES: usize = 8;
    type Mask = __m256i;

    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        _mm256_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self)
    }
    #[inline(always)]
    unsafe fn mask(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }
    #[inline(always)]
    unsafe fn all() -> __m256i {
        _mm256_set1_epi32(-1)
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __m256i) -> Self {
        _mm256_maskload_ps(p, m)
    }
    #[inline(always)]
    unsafe fn store_masked(self, p: *mut f32, m: __m256i) {
        _mm256_maskstore_ps(p, m, self)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        _mm256_add_ps(self, b)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        _mm256_sub_ps(self, b)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        _mm256_mul_ps(self, b)
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        _mm256_div_ps(self, b)
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        _mm256_fmadd_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn min_or_self(self, b: Self) -> Self {
        _mm256_min_ps(b, self)
    }
    #[inline(always)]
    unsafe fn max_or_self(self, b: Self) -> Self {
        _mm256_max_ps(b, self)
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        _mm256_and_ps(self, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)))
    }
    #[inline(always)]
    unsafe fn select_lt(self, b: Self, t: Self, f: Self) -> Self {
        _mm256_blendv_ps(f, t, _mm256_cmp_ps::<_CMP_LT_OQ>(self, b))
    }
    /// The two halves, then lanes 2 apart, then adjacent lanes.
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(self), _mm256_extractf128_ps::<1>(self));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }
    /// Adjacent pairs, then pairs of pairs (two `hadd` stages), then the two 128-bit halves.
    #[inline(always)]
    unsafe fn sum_each(a: &[Self]) -> Self {
        let a: &[Self; 8] = a.try_into().expect("8 vectors");
        // After two hadd stages, half h of t0 holds the half-h sums of a[0..4] in lanes 0..4,
        // and t1 those of a[4..8].
        let t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        let t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
        _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(t0, t1), _mm256_permute2f128_ps::<0x31>(t0, t1))
    }
    #[inline(always)]
    unsafe fn transpose_square(b: &mut [Self; 16]) {
        let t = transpose8([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        b[..8].copy_from_slice(&t);
    }
}

/// Lanes `(x.q0 + x.q1, x.q2 + x.q3, y.q0 + y.q1, y.q2 + y.q3)` by 128-bit quarter.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn add_quarters(x: __m512, y: __m512) -> __m512 {
    _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(x, y), _mm512_shuffle_f32x4::<0xdd>(x, y))
}

#[cfg(target_arch = "x86_64")]
/// `out[c][a] = b[a][c]` for a 16 x 16 block.
#[inline(always)]
unsafe fn transpose16(b: [__m512; 16]) -> [__m512; 16] {
    // Stage 1: interleave row pairs. Within each 128-bit lane L, t[2p] holds
    // (b[2p][4L], b[2p+1][4L], b[2p][4L+1], b[2p+1][4L+1]) and t[2p+1] the columns 4L+2, 4L+3.
    let mut t = [_mm512_setzero_ps(); 16];
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_ps(b[2 * p], b[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(b[2 * p], b[2 * p + 1]);
    }
    // Stage 2: lane L of u[4q + c] is column 4L + c of rows 4q..4q + 4.
    let mut u = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        let s = 4 * q;
        u[s] = _mm512_shuffle_ps::<0x44>(t[s], t[s + 2]);
        u[s + 1] = _mm512_shuffle_ps::<0xee>(t[s], t[s + 2]);
        u[s + 2] = _mm512_shuffle_ps::<0x44>(t[s + 1], t[s + 3]);
        u[s + 3] = _mm512_shuffle_ps::<0xee>(t[s + 1], t[s + 3]);
    }
    // Stages 3 and 4: column 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let a_even = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let a_odd = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
        let b_even = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let b_odd = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(a_even, b_even);
        out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(a_even, b_even);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(a_odd, b_odd);
        out[12 + c] = _mm512_shuffle_f32x4::<0xdd>(a_odd, b_odd);
    }
    out
}

#[cfg(target_arch = "x86_64")]
/// `out[c][a] = b[a][c]` for an 8 x 8 block.
#[inline(always)]
unsafe fn transpose8(b: [__m256; 8]) -> [__m256; 8] {
    // Stage 1: interleave row pairs within each 128-bit half.
    let mut t = [_mm256_setzero_ps(); 8];
    for p in 0..4 {
        t[2 * p] = _mm256_unpacklo_ps(b[2 * p], b[2 * p + 1]);
        t[2 * p + 1] = _mm256_unpackhi_ps(b[2 * p], b[2 * p + 1]);
    }
    // Stage 2: within each half, u[4q + c] holds column c of the half for rows 4q..4q + 4.
    let mut u = [_mm256_setzero_ps(); 8];
    for q in 0..2 {
        let s = 4 * q;
        u[s] = _mm256_shuffle_ps::<0x44>(t[s], t[s + 2]);
        u[s + 1] = _mm256_shuffle_ps::<0xee>(t[s], t[s + 2]);
        u[s + 2] = _mm256_shuffle_ps::<0x44>(t[s + 1], t[s + 3]);
        u[s + 3] = _mm256_shuffle_ps::<0xee>(t[s + 1], t[s + 3]);
    }
    // Stage 3: column c joins the low halves (c < 4) or the high halves (c >= 4) of the
    // two row groups.
    let mut out = [_mm256_setzero_ps(); 8];
    for c in 0..4 {
        out[c] = _mm256_permute2f128_ps::<0x20>(u[c], u[4 + c]);
        out[4 + c] = _mm256_permute2f128_ps::<0x31>(u[c], u[4 + c]);
    }
    out
}

/// The NEON level's vector: 8 lanes in two 128-bit registers (`.0` lanes 0-3, `.1` lanes 4-7).
/// Eight lanes, not four, so that NEON runs AVX2's tile plans and reduction trees: every
/// operation here does what its `__m256` counterpart does, lane for lane, and AArch64's 32
/// registers hold the 16 vectors the AVX2 plans keep live.
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy)]
pub(crate) struct F32x8(float32x4_t, float32x4_t);

#[cfg(target_arch = "aarch64")]
impl F32x8 {
    /// `hadd` of AVX2 (adjacent pairs of `self`, then of `b`, within each half).
    #[inline(always)]
    unsafe fn hadd(self, b: Self) -> Self {
        Self(vpaddq_f32(self.0, b.0), vpaddq_f32(self.1, b.1))
    }

    /// Half `h` (0: lanes 0-3, 1: lanes 4-7).
    #[inline(always)]
    fn half(self, h: usize) -> float32x4_t {
        if h == 0 {
            self.0
        } else {
            self.1
        }
    }
}

#[cfg(target_arch = "aarch64")]
impl F32Vec for F32x8 {
    const LANES: usize = 8;
    /// The count of low lanes (masks are always a prefix here).
    type Mask = usize;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Self(vdupq_n_f32(0.0), vdupq_n_f32(0.0))
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Self(vdupq_n_f32(v), vdupq_n_f32(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(vld1q_f32(p), vld1q_f32(p.add(4)))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        vst1q_f32(p, self.0);
        vst1q_f32(p.add(4), self.1);
    }
    #[inline(always)]
    unsafe fn mask(n: usize) -> usize {
        n
    }
    #[inline(always)]
    unsafe fn all() -> usize {
        8
    }
    /// NEON has no masked load: a partial vector goes through a zeroed stack buffer, so no
    /// float past `n` is read.
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, n: usize) -> Self {
        if n >= 8 {
            return Self::load(p);
        }
        let mut buf = [0.0f32; 8];
        core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
        Self::load(buf.as_ptr())
    }
    #[inline(always)]
    unsafe fn store_masked(self, p: *mut f32, n: usize) {
        if n >= 8 {
            return self.store(p);
        }
        let mut buf = [0.0f32; 8];
        self.store(buf.as_mut_ptr());
        core::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Self(vaddq_f32(self.0, b.0), vaddq_f32(self.1, b.1))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Self(vsubq_f32(self.0, b.0), vsubq_f32(self.1, b.1))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Self(vmulq_f32(self.0, b.0), vmulq_f32(self.1, b.1))
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        Self(vdivq_f32(self.0, b.0), vdivq_f32(self.1, b.1))
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Self(vfmaq_f32(c.0, self.0, b.0), vfmaq_f32(c.1, self.1, b.1))
    }
    /// A compare and a select, not `vminq_f32`, which returns NaN where either is NaN.
    #[inline(always)]
    unsafe fn min_or_self(self, b: Self) -> Self {
        Self(vbslq_f32(vcltq_f32(b.0, self.0), b.0, self.0), vbslq_f32(vcltq_f32(b.1, self.1), b.1, self.1))
    }
    #[inline(always)]
    unsafe fn max_or_self(self, b: Self) -> Self {
        Self(vbslq_f32(vcgtq_f32(b.0, self.0), b.0, self.0), vbslq_f32(vcgtq_f32(b.1, self.1), b.1, self.1))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Self(vabsq_f32(self.0), vabsq_f32(self.1))
    }
    #[inline(always)]
    unsafe fn select_lt(self, b: Self, t: Self, f: Self) -> Self {
        Self(vbslq_f32(vcltq_f32(self.0, b.0), t.0, f.0), vbslq_f32(vcltq_f32(self.1, b.1), t.1, f.1))
    }
    /// AVX2's tree: the two halves, then lanes 2 apart, then adjacent lanes.
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        let s = vaddq_f32(self.0, self.1);
        let s = vaddq_f32(s, vextq_f32::<2>(s, s));
        vgetq_lane_f32::<0>(s) + vgetq_lane_f32::<1>(s)
    }
    /// AVX2's tree: adjacent pairs and pairs of pairs within each half (`vpaddq_f32` is
    /// `hadd` on one 128-bit half), then the two halves.
    #[inline(always)]
    unsafe fn sum_each(a: &[Self]) -> Self {
        let a: &[Self; 8] = a.try_into().expect("8 vectors");
        let t0 = a[0].hadd(a[1]).hadd(a[2].hadd(a[3]));
        let t1 = a[4].hadd(a[5]).hadd(a[6].hadd(a[7]));
        Self(vaddq_f32(t0.0, t0.1), vaddq_f32(t1.0, t1.1))
    }
    /// Four 4 x 4 blocks, each transposed in registers and moved across the diagonal.
    #[inline(always)]
    unsafe fn transpose_square(b: &mut [Self; 16]) {
        let mut out = [[vdupq_n_f32(0.0); 2]; 8];
        for r in 0..2 {
            for c in 0..2 {
                let t = transpose4([b[4 * r].half(c), b[4 * r + 1].half(c), b[4 * r + 2].half(c), b[4 * r + 3].half(c)]);
                for (j, v) in t.into_iter().enumerate() {
                    out[4 * c + j][r] = v;
                }
            }
        }
        for (v, o) in b.iter_mut().zip(out) {
            *v = Self(o[0], o[1]);
        }
    }
}

/// `out[c][a] = r[a][c]` for a 4 x 4 block: lanes interleaved in pairs, then in halves.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn transpose4(r: [float32x4_t; 4]) -> [float32x4_t; 4] {
    let t0 = vreinterpretq_f64_f32(vtrn1q_f32(r[0], r[1]));
    let t1 = vreinterpretq_f64_f32(vtrn2q_f32(r[0], r[1]));
    let t2 = vreinterpretq_f64_f32(vtrn1q_f32(r[2], r[3]));
    let t3 = vreinterpretq_f64_f32(vtrn2q_f32(r[2], r[3]));
    [
        vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)),
        vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)),
    ]
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;
    use crate::math;

    /// Runs a `lanes`-wide `tanh` over a sweep of [-10, 10] and the edge cases (tiny, clamp,
    /// infinities, NaN) and asserts each lane equals the scalar `math::tanh`; returns the count.
    fn check_vector_tanh(lanes: usize, f: impl Fn(&[f32], &mut [f32])) -> usize {
        let mut xs: Vec<f32> = (-200_000..200_000).map(|i| i as f32 * 5e-5).collect();
        xs.extend([
            0.0, -0.0, 3.9e-4, 4e-4, -4e-4, 7.9, 7.906, -7.906, 50.0, -1e30,
            f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE,
        ]);
        while !xs.len().is_multiple_of(lanes) {
            xs.push(1.0);
        }
        let mut checked = 0;
        let mut out = vec![0.0f32; lanes];
        for c in xs.chunks_exact(lanes) {
            f(c, &mut out);
            for (&x, &y) in c.iter().zip(&out) {
                let want = math::tanh(x);
                assert!(
                    y.to_bits() == want.to_bits() || (y.is_nan() && want.is_nan()),
                    "x = {x}: {lanes} lanes {y} vs scalar {want}"
                );
                checked += 1;
            }
        }
        checked
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tanh_avx512_equals_scalar_bit_for_bit() {
        if !crate::cpu::SimdLevel::Avx512.is_supported() {
            println!("skipped: this CPU has no AVX-512");
            return;
        }
        #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
        unsafe fn run(c: &[f32], out: &mut [f32]) {
            tanh(<__m512 as F32Vec>::load(c.as_ptr())).store(out.as_mut_ptr());
        }
        // SAFETY: the level's features were confirmed above; the slices hold 16 f32 each.
        let checked = check_vector_tanh(16, |c, out| unsafe { run(c, out) });
        assert!(checked >= 400_000);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tanh_avx2_equals_scalar_bit_for_bit() {
        if !crate::cpu::SimdLevel::Avx2.is_supported() {
            println!("skipped: this CPU has no AVX2");
            return;
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run(c: &[f32], out: &mut [f32]) {
            tanh(<__m256 as F32Vec>::load(c.as_ptr())).store(out.as_mut_ptr());
        }
        // SAFETY: the level's features were confirmed above; the slices hold 8 f32 each.
        let checked = check_vector_tanh(8, |c, out| unsafe { run(c, out) });
        assert!(checked >= 400_000);
    }

    /// `sum_each` adds each vector's lanes into its own lane, on inputs whose sums are exact
    /// (small integers), so any tree gives the same answer and a wrong lane shows.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sum_each_puts_each_vectors_sum_in_its_lane() {
        fn inputs(lanes: usize) -> Vec<f32> {
            (0..lanes * lanes).map(|i| ((i * 7919) % 23) as f32 - 11.0).collect()
        }
        fn want(x: &[f32], lanes: usize) -> Vec<f32> {
            x.chunks_exact(lanes).map(|c| c.iter().sum()).collect()
        }
        if crate::cpu::SimdLevel::Avx512.is_supported() {
            #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
            unsafe fn run(x: &[f32], out: &mut [f32]) {
                let v: Vec<__m512> = x.chunks_exact(16).map(|c| <__m512 as F32Vec>::load(c.as_ptr())).collect();
                <__m512 as F32Vec>::sum_each(&v).store(out.as_mut_ptr());
            }
            let x = inputs(16);
            let mut out = [0.0; 16];
            // SAFETY: AVX-512 confirmed; 256 inputs and 16 outputs.
            unsafe { run(&x, &mut out) };
            assert_eq!(out.to_vec(), want(&x, 16));
        }
        if crate::cpu::SimdLevel::Avx2.is_supported() {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn run(x: &[f32], out: &mut [f32]) {
                let v: Vec<__m256> = x.chunks_exact(8).map(|c| <__m256 as F32Vec>::load(c.as_ptr())).collect();
                <__m256 as F32Vec>::sum_each(&v).store(out.as_mut_ptr());
            }
            let x = inputs(8);
            let mut out = [0.0; 8];
            // SAFETY: AVX2 confirmed; 64 inputs and 8 outputs.
            unsafe { run(&x, &mut out) };
            assert_eq!(out.to_vec(), want(&x, 8));
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn tanh_neon_equals_scalar_bit_for_bit() {
        // SAFETY: NEON is part of every AArch64 target Rust builds for; 8 f32 each.
        let checked = check_vector_tanh(8, |c, out| unsafe { tanh(F32x8::load(c.as_ptr())).store(out.as_mut_ptr()) });
        assert!(checked >= 400_000);
    }

    /// Values of many magnitudes and both signs, so that sums round and a different order of
    /// additions shows in the bits.
    fn rounding_values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let m = ((i * 2_654_435_761) % 1_000_003) as f32 / 1_000_003.0 - 0.5;
                m * [1.0, 3e-4, 7e3, 0.11][i % 4]
            })
            .collect()
    }

    /// AVX2's `sum` tree: the halves, then lanes 2 apart, then adjacent lanes.
    fn avx2_sum(a: &[f32]) -> f32 {
        ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
    }

    /// AVX2's `sum_each` tree for one vector: pairs, pairs of pairs, then the halves.
    fn avx2_sum_each(a: &[f32]) -> f32 {
        ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
    }

    /// The 8-lane reductions, transpose and masked moves of `V`, checked bit for bit against
    /// the scalar model of AVX2's trees: what makes the NEON level compute AVX2's bits (each
    /// architecture checks its own type against the same model).
    ///
    /// # Safety
    /// As [`F32Vec`]: call from a function with `V`'s level's features.
    #[inline(always)]
    unsafe fn check_eight_lanes<V: F32Vec>() {
        assert_eq!(V::LANES, 8);
        let x = rounding_values(64);
        let v: Vec<V> = x.chunks_exact(8).map(|c| V::load(c.as_ptr())).collect();
        for (k, c) in x.chunks_exact(8).enumerate() {
            assert_eq!(v[k].sum().to_bits(), avx2_sum(c).to_bits(), "sum of vector {k}");
        }
        let mut out = [0.0f32; 8];
        V::sum_each(&v).store(out.as_mut_ptr());
        for (k, c) in x.chunks_exact(8).enumerate() {
            assert_eq!(out[k].to_bits(), avx2_sum_each(c).to_bits(), "sum_each lane {k}");
        }
        // Transpose: lane a of b[c] becomes lane c of b[a]; vectors past 8 untouched.
        let mut b = [V::splat(-1.0); 16];
        b[..8].copy_from_slice(&v);
        V::transpose_square(&mut b);
        for (c, bv) in b.iter().enumerate() {
            bv.store(out.as_mut_ptr());
            for (a, &o) in out.iter().enumerate() {
                let want = if c < 8 { x[a * 8 + c] } else { -1.0 };
                assert_eq!(o.to_bits(), want.to_bits(), "transpose [{c}][{a}]");
            }
        }
        // Masked moves touch the low `n` lanes only, and load zeros elsewhere.
        for n in 0..=8 {
            let loaded = V::load_masked(x.as_ptr(), V::mask(n));
            loaded.store(out.as_mut_ptr());
            for (l, &o) in out.iter().enumerate() {
                assert_eq!(o.to_bits(), if l < n { x[l].to_bits() } else { 0 }, "load_masked({n}) lane {l}");
            }
            let mut dst = [7.0f32; 8];
            V::splat(2.0).store_masked(dst.as_mut_ptr(), V::mask(n));
            for (l, &d) in dst.iter().enumerate() {
                assert_eq!(d, if l < n { 2.0 } else { 7.0 }, "store_masked({n}) lane {l}");
            }
        }
        // The x86 min/max rule: `self` wherever either operand is NaN.
        let (nan, one) = (V::splat(f32::NAN), V::splat(1.0));
        nan.min_or_self(one).store(out.as_mut_ptr());
        assert!(out.iter().all(|o| o.is_nan()), "min keeps a NaN self");
        one.max_or_self(nan).store(out.as_mut_ptr());
        assert!(out.iter().all(|&o| o == 1.0), "max keeps self against a NaN");
        V::splat(3.0).mul_add(V::splat(1.0 / 3.0), V::splat(-1.0)).store(out.as_mut_ptr());
        let fused = 3.0f32.mul_add(1.0 / 3.0, -1.0);
        assert!(out.iter().all(|o| o.to_bits() == fused.to_bits()) && fused != 0.0, "mul_add rounds once");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_vector_follows_the_eight_lane_model() {
        if !crate::cpu::SimdLevel::Avx2.is_supported() {
            println!("skipped: this CPU has no AVX2");
            return;
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run() {
            check_eight_lanes::<__m256>()
        }
        // SAFETY: AVX2 and FMA confirmed above.
        unsafe { run() }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_vector_follows_the_eight_lane_model() {
        // SAFETY: NEON is part of every AArch64 target Rust builds for.
        unsafe { check_eight_lanes::<F32x8>() }
    }
}
