//! KL estimators: the k3 penalty to a reference policy (GRPO's `D_KL[π_θ‖π_ref]`) and the
//! old → new diagnostic `approx_kl`.

/// verl clamps the exponent `logp_ref − logp` of k3 to `±20`.
pub const K3_EXPONENT_CLAMP: f64 = 20.0;
/// verl clamps the k3 value to `[−10, 10]`.
pub const K3_VALUE_CLAMP: f64 = 10.0;

/// The per-token k3 estimator of `KL(π_θ‖π_ref)` and its derivative with respect to `logp`:
/// with `x = clamp(logp_ref − logp, ±20)`, `k3 = e^x − x − 1` clamped to `[−10, 10]`
/// (verl `kl_penalty_forward`, `low_var_kl`); `∂k3/∂logp = 1 − e^{logp_ref − logp}`, and 0 where
/// either clamp is active. Returns `(k3, ∂k3/∂logp)`.
pub fn k3_kl(logp: f64, logp_ref: f64) -> (f64, f64) {
    let raw = logp_ref - logp;
    let x = raw.clamp(-K3_EXPONENT_CLAMP, K3_EXPONENT_CLAMP);
    let e = x.exp();
    let k3 = e - x - 1.0;
    let value = k3.clamp(-K3_VALUE_CLAMP, K3_VALUE_CLAMP);
    let d = if raw != x || value != k3 {
        0.0
    } else {
        1.0 - e
    };
    (value, d)
}

/// CleanRL's `approx_kl` term for one token: `(ρ − 1) − log ρ` with `log ρ = log_ratio =
/// logp_new − logp_old` (k3 in the old → new direction, ≥ 0).
pub fn approx_kl(log_ratio: f64) -> f64 {
    log_ratio.exp_m1() - log_ratio
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3_by_hand() {
        // logp = −1, ref = −1.5: x = −0.5, k3 = e^−0.5 + 0.5 − 1 = 0.106530…, d = 1 − e^−0.5.
        let (v, d) = k3_kl(-1.0, -1.5);
        assert!((v - 0.106_530_659_712_633_4).abs() < 1e-12, "{v}");
        assert!((d - 0.393_469_340_287_366_6).abs() < 1e-12, "{d}");
        // Equal log-probs: 0 and 0.
        assert_eq!(k3_kl(-2.0, -2.0), (0.0, 0.0));
        // ref above logp: x = 1, k3 = e − 2, d = 1 − e < 0 (raising logp lowers the penalty).
        let (v, d) = k3_kl(-2.0, -1.0);
        assert!((v - (std::f64::consts::E - 2.0)).abs() < 1e-12);
        assert!((d - (1.0 - std::f64::consts::E)).abs() < 1e-12);
    }

    #[test]
    fn k3_clamps_have_zero_derivative() {
        // x = 5: e^5 − 6 = 142.4 → clamped to 10.
        assert_eq!(k3_kl(0.0, 5.0), (10.0, 0.0));
        // x = −30 → −20: e^−20 + 19 → clamped to 10.
        assert_eq!(k3_kl(30.0, 0.0), (10.0, 0.0));
        // Just inside: x = 2.5, e^2.5 − 3.5 = 8.68 < 10.
        let (v, d) = k3_kl(0.0, 2.5);
        assert!(
            (v - (2.5f64.exp() - 3.5)).abs() < 1e-12 && (d - (1.0 - 2.5f64.exp())).abs() < 1e-12
        );
    }

    #[test]
    fn approx_kl_by_hand() {
        // ρ = 1.5: 0.5 − ln 1.5 = 0.094534…
        assert!((approx_kl(1.5f64.ln()) - 0.094_534_891_891_835_8).abs() < 1e-12);
        assert_eq!(approx_kl(0.0), 0.0);
    }
}
