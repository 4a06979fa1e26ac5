//! EMPG's advantage modulation on token-level steps.
//!
//! EMPG defines a step as one agent action (a span of tokens) and its entropy as the mean token
//! entropy of the span. drover's sequence tasks have no step boundaries inside a response, so
//! here a step is one token: H is the token's old-policy entropy.

/// The modulation's statistics, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Modulation {
    /// Smallest self-calibrating scale g over valid steps.
    pub g_min: f64,
    /// Largest g.
    pub g_max: f64,
    /// Mean future-clarity bonus f over valid steps (0 on a response's last step).
    pub f_mean: f64,
}

/// Rewrites `adv[i]` (GRPO's advantage on valid step `i`, row-major `B × seq_len`) as
/// `g_i·adv_i + ζ·f_i`, EMPG's `A_mod` (project-page pseudocode):
///
/// - `Ĥ = (H − min H)/(max H − min H)`, min and max over the batch's valid steps (all 0 when
///   they are equal);
/// - `g_i = e^{−k·Ĥ_i} / mean_valid(e^{−k·Ĥ})`, so `g` averages 1 over the batch;
/// - `f_i = e^{−k_f·Ĥ_{i+1}}` with `i + 1` the next step of the same response; a response's last
///   valid step has no next step and gets `f = 0`.
///
/// Padding (`mask ≤ 0`) is left 0 and never read. Returns `None` when no step is valid.
pub fn modulate(
    adv: &mut [f32],
    entropy: &[f32],
    mask: &[f32],
    seq_len: usize,
    k: f64,
    k_f: f64,
    zeta: f64,
) -> Option<Modulation> {
    let valid = |i: usize| mask[i] > 0.0;
    let n = adv.len();
    let (mut lo, mut hi, mut count) = (f64::INFINITY, f64::NEG_INFINITY, 0usize);
    for i in (0..n).filter(|&i| valid(i)) {
        let h = f64::from(entropy[i]);
        lo = lo.min(h);
        hi = hi.max(h);
        count += 1;
    }
    if count == 0 {
        return None;
    }
    let norm = |i: usize| {
        if hi > lo {
            (f64::from(entropy[i]) - lo) / (hi - lo)
        } else {
            0.0
        }
    };
    let mean_e = (0..n)
        .filter(|&i| valid(i))
        .map(|i| (-k * norm(i)).exp())
        .sum::<f64>()
        / count as f64;
    let mut stats = Modulation {
        g_min: f64::INFINITY,
        g_max: f64::NEG_INFINITY,
        f_mean: 0.0,
    };
    for (i, a) in adv.iter_mut().enumerate() {
        if !valid(i) {
            *a = 0.0;
            continue;
        }
        let g = (-k * norm(i)).exp() / mean_e;
        let next = i + 1;
        let f = if next % seq_len != 0 && next < n && valid(next) {
            (-k_f * norm(next)).exp()
        } else {
            0.0
        };
        *a = (g * f64::from(*a) + zeta * f) as f32;
        stats.g_min = stats.g_min.min(g);
        stats.g_max = stats.g_max.max(g);
        stats.f_mean += f / count as f64;
    }
    Some(stats)
}
