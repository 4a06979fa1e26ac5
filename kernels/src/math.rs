//! Shared scalar math of SEMANTICS.md section 4: `tanh` and `sincos` as explicit polynomials,
//! so CPU and CUDA produce the same bits instead of depending on each platform's libm.
//!
//! Both functions are branch-free (every `if` below is a select on already-computed values,
//! with no calls), so loops that map them over slices auto-vectorize. They are written with
//! separate multiplies and adds (Rust never fuses them), which is what CUDA's `--fmad=false`
//! reproduces.

// The constants are written with every digit SEMANTICS.md gives, so CUDA can copy them verbatim;
// both sides round them to the same f32.
#![allow(clippy::excessive_precision)]

/// Clamp bound of [`tanh`]: beyond it the rational approximation has saturated to +-1 in f32.
pub const TANH_CLAMP: f32 = 7.905_311_107_635_498_05;
/// Below this magnitude [`tanh`] returns its argument (tanh(x) = x to f32 precision).
pub const TANH_TINY: f32 = 0.0004;

// Eigen's `ptanh_float` coefficients: numerator odd in x, denominator even.
pub(crate) const TANH_A1: f32 = 4.893_524_558_917_86e-03;
pub(crate) const TANH_A3: f32 = 6.372_619_288_754_36e-04;
pub(crate) const TANH_A5: f32 = 1.485_722_357_179_79e-05;
pub(crate) const TANH_A7: f32 = 5.122_297_090_371_14e-08;
pub(crate) const TANH_A9: f32 = -8.604_671_522_137_35e-11;
pub(crate) const TANH_A11: f32 = 2.000_187_904_824_77e-13;
pub(crate) const TANH_A13: f32 = -2.760_768_477_423_55e-16;
pub(crate) const TANH_B0: f32 = 4.893_525_185_543_85e-03;
pub(crate) const TANH_B2: f32 = 2.268_434_632_439_00e-03;
pub(crate) const TANH_B4: f32 = 1.185_347_056_866_54e-04;
pub(crate) const TANH_B6: f32 = 1.198_258_394_667_02e-06;

/// `tanh(x)` per SEMANTICS.md section 4 (Eigen's rational approximation, max abs error < 2e-6).
///
/// Evaluation order (CUDA must match it): `x2 = x*x`; `p = ((((((A13*x2 + A11)*x2 + A9)*x2 + A7)
/// *x2 + A5)*x2 + A3)*x2 + A1) * x`; `q = ((B6*x2 + B4)*x2 + B2)*x2 + B0`; result `p / q`,
/// or the unclamped `x` itself when `|x| < 0.0004`. NaN propagates.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    // Comparisons-as-selects instead of f32::clamp: clamp panics on bad bounds and max/min carry
    // NaN rules that cost extra instructions per lane.
    let xc = if x > TANH_CLAMP { TANH_CLAMP } else { x };
    let xc = if xc < -TANH_CLAMP { -TANH_CLAMP } else { xc };
    let x2 = xc * xc;
    let mut p = TANH_A13 * x2 + TANH_A11;
    p = p * x2 + TANH_A9;
    p = p * x2 + TANH_A7;
    p = p * x2 + TANH_A5;
    p = p * x2 + TANH_A3;
    p = p * x2 + TANH_A1;
    p *= xc;
    let mut q = TANH_B6 * x2 + TANH_B4;
    q = q * x2 + TANH_B2;
    q = q * x2 + TANH_B0;
    let r = p / q;
    let ax = f32::from_bits(x.to_bits() & 0x7fff_ffff);
    if ax < TANH_TINY {
        x
    } else {
        r
    }
}

/// `2/pi` rounded to f32; the reduction's quotient estimate.
const FRAC_2_PI: f32 = core::f32::consts::FRAC_2_PI;
/// `1.5 * 2^23`: adding and subtracting it rounds an f32 of magnitude < 2^22 to the nearest
/// integer (ties to even) with plain adds, avoiding `round()` (a libm call without SSE4.1).
const ROUND_MAGIC: f32 = 12_582_912.0;
// Cephes' three-part pi/4 (DP1..DP3) doubled: pi/2 = PIO2_1 + PIO2_2 + PIO2_3, where the first
// two parts have few mantissa bits so `k * PIO2_1` and `k * PIO2_2` are exact for moderate `k`.
const PIO2_1: f32 = 1.570_312_5;
const PIO2_2: f32 = 4.837_512_969_970_703_125e-4;
const PIO2_3: f32 = 7.549_789_954_891_882_16e-8;
// Cephes sinf / cosf minimax coefficients on [-pi/4, pi/4].
const SIN_C1: f32 = -1.951_529_589_1e-4;
const SIN_C2: f32 = 8.332_160_873_6e-3;
const SIN_C3: f32 = -1.666_665_461_1e-1;
const COS_C1: f32 = 2.443_315_711_809_948e-5;
const COS_C2: f32 = -1.388_731_625_493_765e-3;
const COS_C3: f32 = 4.166_664_568_298_827e-2;

/// `(sin(x), cos(x))` per SEMANTICS.md section 4: for `|x| < 100`, within 2 ulp of the f64
/// values, or within 1e-12 absolute (1e-13 for `|x| < 8`) where the result is tiny (near zeros
/// of sin/cos the reduction error is more than 2 ulp of the result). Valid while `|x| < 2^15`.
///
/// Evaluation order (CUDA must match it): `y = x * (2/pi)`; `k = (y + 1.5*2^23) - 1.5*2^23`
/// (round to nearest, ties even); `r = ((x - k*PIO2_1) - k*PIO2_2) - k*PIO2_3`; `z = r*r`;
/// `s = ((SIN_C1*z + SIN_C2)*z + SIN_C3)*z*r + r` (products left to right);
/// `c = ((COS_C1*z + COS_C2)*z + COS_C3)*z*z - 0.5*z + 1.0` (left to right);
/// quadrant `q = (k as i32) & 3`: 0 -> (s, c), 1 -> (c, -s), 2 -> (-s, -c), 3 -> (-c, s).
#[inline(always)]
pub fn sincos(x: f32) -> (f32, f32) {
    let y = x * FRAC_2_PI;
    let k = (y + ROUND_MAGIC) - ROUND_MAGIC;
    let r = ((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;
    let z = r * r;
    let s = ((SIN_C1 * z + SIN_C2) * z + SIN_C3) * z * r + r;
    let c = ((COS_C1 * z + COS_C2) * z + COS_C3) * z * z - 0.5 * z + 1.0;
    // `k` is an exact small integer, so the float-to-int conversion is exact; in two's
    // complement `& 3` gives the quadrant for negative `k` too.
    let q = k as i32 as u32;
    let swap = q & 1 != 0;
    let (sv, cv) = if swap { (c, s) } else { (s, c) };
    // Sign flips as xor on the sign bit: sin is negative in quadrants 2, 3; cos in 1, 2.
    let sin_sign = (q & 2) << 30;
    let cos_sign = (q.wrapping_add(1) & 2) << 30;
    (
        f32::from_bits(sv.to_bits() ^ sin_sign),
        f32::from_bits(cv.to_bits() ^ cos_sign),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between `got` and the f32 nearest `want`.
    fn ulps(got: f32, want: f64) -> u32 {
        let w = want as f32;
        if got == w {
            return 0;
        }
        // Map the f32 bit patterns onto a monotone integer line so negative values compare too.
        let key = |v: f32| {
            let b = v.to_bits() as i32;
            if b < 0 {
                i32::MIN.wrapping_sub(b) as i64
            } else {
                b as i64
            }
        };
        (key(got) - key(w)).unsigned_abs() as u32
    }

    #[test]
    fn tanh_abs_error_below_2e6() {
        let mut worst = 0.0f64;
        let mut x = -12.0f32;
        while x <= 12.0 {
            let err = (tanh(x) as f64 - (x as f64).tanh()).abs();
            worst = worst.max(err);
            x += 1.0 / 4096.0;
        }
        assert!(worst < 2e-6, "worst abs error {worst}");
        for x in [f32::INFINITY, 1e30, 100.0] {
            assert!((tanh(x) - 1.0).abs() < 2e-6 && (tanh(-x) + 1.0).abs() < 2e-6);
        }
        assert!(tanh(f32::NAN).is_nan());
    }


    #[test]
    fn tanh_tiny_branch_and_oddness() {
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(3e-4), 3e-4);
        assert_eq!(tanh(-3e-4), -3e-4);
        for i in 0..2000 {
            let x = i as f32 * 0.0037;
            assert_eq!(tanh(-x), -tanh(x), "x = {x}");
        }
        // Hand value: tanh(0.5) = 0.46211715726...
        assert!((tanh(0.5) - 0.462_117_16).abs() < 1e-6);
    }

    #[test]
    fn sincos_within_2_ulp_for_abs_x_below_100() {
        let mut worst = (0u32, 0u32);
        // Every 97th f32 in [-100, 100] plus a uniform grid: dense near 0 and at large |x|.
        let mut check = |x: f32| {
            let (s, c) = sincos(x);
            let xs = x as f64;
            let (us, uc) = (ulps(s, xs.sin()), ulps(c, xs.cos()));
            // Within ~1e-5 of a zero of sin/cos the result is tiny and the three-part f32
            // reduction's own error (a few 1e-15 per unit of k) exceeds 2 ulp of it; there an
            // absolute bound applies instead (1e-13 in CartPole's range |x| < 8, else 1e-12).
            let abs_tol = if x.abs() < 8.0 { 1e-13 } else { 1e-12 };
            let ok_s = us <= 2 || (s as f64 - xs.sin()).abs() < abs_tol;
            let ok_c = uc <= 2 || (c as f64 - xs.cos()).abs() < abs_tol;
            if xs.sin().abs() > 1e-5 {
                worst.0 = worst.0.max(us);
            }
            if xs.cos().abs() > 1e-5 {
                worst.1 = worst.1.max(uc);
            }
            assert!(
                ok_s && ok_c,
                "x = {x}: sin {s} ({us} ulp) cos {c} ({uc} ulp)"
            );
        };
        let mut b = 0u32;
        while b < 100f32.to_bits() {
            let x = f32::from_bits(b);
            check(x);
            check(-x);
            b += 97;
        }
        for i in -400_000..=400_000 {
            check(i as f32 * 2.5e-4);
        }
        // Neighbourhoods of multiples of pi/2, where the reduction loses the most.
        for k in -63..=63 {
            let centre = (k as f64 * core::f64::consts::FRAC_PI_2) as f32;
            let mut x = centre;
            for _ in 0..64 {
                x = f32::from_bits(x.to_bits().wrapping_sub(1));
            }
            for _ in 0..128 {
                check(x);
                x = f32::from_bits(x.to_bits().wrapping_add(1));
            }
        }
        assert!(worst.0 <= 2 && worst.1 <= 2, "worst {worst:?}");
    }

    #[test]
    fn sincos_hand_values() {
        let (s, c) = sincos(0.0);
        assert_eq!((s, c), (0.0, 1.0));
        let (s, c) = sincos(core::f32::consts::FRAC_PI_6);
        assert!((s - 0.5).abs() < 1e-7 && (c - 0.866_025_4).abs() < 1e-7);
        let (s, c) = sincos(-2.0);
        // sin(-2) = -0.9092974268, cos(-2) = -0.4161468365 (quadrant 3 after rounding -1.27).
        assert!((s + 0.909_297_43).abs() < 1e-7 && (c + 0.416_146_84).abs() < 1e-7);
    }
}
