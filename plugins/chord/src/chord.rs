//! CHORD's pure pieces: the μ schedule (Trinity-RFT `mu_schedule_function`), the token weight
//! φ(p) = p(1−p) (`phi_function`) and the SFT token loss on expert tokens.

use std::f64::consts::PI;

/// Trinity-RFT's `mu_schedule_function`: a linear warmup from 0 to `peak` over `warmup` steps,
/// then a cosine decay from `peak` to `valley` over `decay` steps, `valley` after. A step here is
/// a finished training iteration (iteration `i`, 1-based, trains with `at(i − 1)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuSchedule {
    /// Warmup steps (Trinity `mu_warmup_steps`, default 0).
    pub warmup: u64,
    /// Cosine-decay steps (Trinity `mu_decay_steps`, default 0).
    pub decay: u64,
    /// μ at the end of the warmup (Trinity `mu_peak`, default 0.1).
    pub peak: f64,
    /// μ after the decay (Trinity `mu_valley`, default 0.1).
    pub valley: f64,
}

impl MuSchedule {
    /// μ after `step` finished steps, exactly as Trinity-RFT computes it.
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return step as f64 / self.warmup as f64 * self.peak;
        }
        if step >= self.warmup + self.decay {
            return self.valley;
        }
        let progress = (step - self.warmup) as f64 / self.decay as f64;
        let cosine = 0.5 * (1.0 + (PI * progress).cos());
        (self.peak - self.valley) * cosine + self.valley
    }
}

/// CHORD's φ(p) = p·(1 − p): small for tokens the policy already knows (p → 1) and for tokens
/// far from it (p → 0), largest at p = ½.
pub fn phi(p: f64) -> f64 {
    p * (1.0 - p)
}

/// One expert token's SFT term at `logp` (the current policy's log-probability), unweighted.
/// Returns `(value, d_logp, primitive)`:
///
/// - `value`: Trinity's `−φ(p)·logp` with `p = e^logp` (plain SFT: `−logp`), for the metric;
/// - `d_logp`: the gradient CHORD applies, `−φ(p)` with φ detached (plain SFT: `−1`);
/// - `primitive`: a function of `logp` whose derivative is exactly `d_logp`, `e^{2x}/2 − e^x`
///   (plain SFT: `−logp`). The plugin reports it as the token's `loss`, so `Σ loss`
///   differentiates to the gradient applied, as the host and the finite-difference check
///   expect; with φ detached no function of `logp` has both the value and that gradient.
pub fn sft_token_loss(logp: f64, use_phi: bool) -> (f64, f64, f64) {
    if !use_phi {
        return (-logp, -1.0, -logp);
    }
    let p = logp.exp();
    let w = phi(p);
    (-w * logp, -w, 0.5 * p * p - p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Warmup 2, decay 4, peak 0.9, valley 0.1, by hand:
    /// step 0 → 0, 1 → 0.45, 2 → 0.9 (cos 0), 3 → 0.1 + 0.8·½(1 + cos π/4) = 0.782842…,
    /// 4 → 0.5 (cos π/2), 5 → 0.1 + 0.8·½(1 − cos π/4) = 0.217157…, 6 and later → 0.1.
    #[test]
    fn schedule_by_hand() {
        let s = MuSchedule {
            warmup: 2,
            decay: 4,
            peak: 0.9,
            valley: 0.1,
        };
        let expect = [
            0.0,
            0.45,
            0.9,
            0.782_842_712_474_619,
            0.5,
            0.217_157_287_525_381,
            0.1,
            0.1,
        ];
        for (step, e) in expect.iter().enumerate() {
            let mu = s.at(step as u64);
            assert!((mu - e).abs() < 1e-12, "step {step}: {mu} vs {e}");
        }
        assert_eq!(s.at(1_000_000), 0.1);
        // Trinity's defaults (no warmup, no decay, peak = valley = 0.1): constant 0.1.
        let flat = MuSchedule {
            warmup: 0,
            decay: 0,
            peak: 0.1,
            valley: 0.1,
        };
        assert!((0..5).all(|k| flat.at(k) == 0.1));
        // Decay without warmup starts at the peak.
        let decay_only = MuSchedule {
            warmup: 0,
            decay: 2,
            peak: 1.0,
            valley: 0.0,
        };
        assert_eq!(
            [decay_only.at(0), decay_only.at(1), decay_only.at(2)],
            [1.0, 0.5, 0.0]
        );
    }

    /// p = 0.5 → φ = 0.25, value −0.25·ln 0.5 = 0.173286…, d = −0.25; p = 0.9 → φ = 0.09.
    #[test]
    fn phi_and_token_loss_by_hand() {
        assert_eq!(phi(0.5), 0.25);
        assert!((phi(0.9) - 0.09).abs() < 1e-15);
        assert_eq!(phi(1.0), 0.0);
        let (v, d, _) = sft_token_loss(0.5f64.ln(), true);
        assert!((v - 0.173_286_795_139_986_3).abs() < 1e-12, "{v}");
        assert!((d + 0.25).abs() < 1e-12, "{d}");
        let (v, d, prim) = sft_token_loss(0.9f64.ln(), false);
        assert!((v - 0.105_360_515_657_826_3).abs() < 1e-12 && d == -1.0 && prim == v);
        // The primitive's derivative is the detached-φ gradient, by central differences.
        for x in [-3.0, -0.7, -0.05] {
            let h = 1e-6;
            let num = (sft_token_loss(x + h, true).2 - sft_token_loss(x - h, true).2) / (2.0 * h);
            assert!((num - sft_token_loss(x, true).1).abs() < 1e-8, "{x}: {num}");
        }
    }
}
