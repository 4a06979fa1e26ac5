//! The PPO clipped surrogate per token, with asymmetric clip ranges (DAPO's clip-higher) and
//! the optional dual clip, and its derivative with respect to the new log-prob.

use crate::{error::PluginError, params::Params};

/// verl clamps the log-ratio `logp_new − logp_old` to `±20` before `exp` (a ratio of
/// e^20 ≈ 5·10^8 is already meaningless); beyond it the derivative is 0.
pub const LOG_RATIO_CLAMP: f64 = 20.0;

/// The clip range of the probability ratio ρ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipRange {
    /// ε_low: ρ is clipped below at `1 − low`.
    pub low: f64,
    /// ε_high: ρ is clipped above at `1 + high` (DAPO's clip-higher sets it above `low`).
    pub high: f64,
    /// Dual clip `c > 1` (verl `clip_ratio_c`): for `A < 0` the loss is capped at `−A·c`.
    pub dual_clip: Option<f64>,
}

impl ClipRange {
    /// The symmetric range `[1 − eps, 1 + eps]`, no dual clip.
    pub fn symmetric(eps: f64) -> Self {
        Self {
            low: eps,
            high: eps,
            dual_clip: None,
        }
    }

    /// The range in params `clip_ratio` (ε_low) and `clip_ratio_high` (optional float; `null`:
    /// ε_low), no dual clip: the keys verl and drover's GRPO-family plugins use.
    ///
    /// # Errors
    /// Those of [`Params::f64`] and [`Params::opt_f64`].
    pub fn from_params(p: &Params) -> Result<Self, PluginError> {
        let eps = p.f64("clip_ratio")?;
        Ok(Self {
            low: eps,
            high: p.opt_f64("clip_ratio_high")?.unwrap_or(eps),
            dual_clip: None,
        })
    }

    /// The dual-clip constant in the optional float param `clip_ratio_c` (verl's name);
    /// `null`: no dual clip.
    ///
    /// # Errors
    /// `invalid_params` (`clip_ratio_c`) when it is not greater than 1.
    pub fn dual_clip_from_params(p: &Params) -> Result<Option<f64>, PluginError> {
        let dual_clip = p.opt_f64("clip_ratio_c")?;
        if let Some(c) = dual_clip {
            if c <= 1.0 {
                return Err(PluginError::invalid_params(
                    "clip_ratio_c",
                    format!("the dual-clip constant must be greater than 1, got {c}"),
                ));
            }
        }
        Ok(dual_clip)
    }
}

/// One token's clipped surrogate (verl `compute_policy_loss_vanilla`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Surrogate {
    /// `l = max(−Aρ, −A·clip(ρ, 1−ε_low, 1+ε_high))`, then for `A < 0` with a dual clip
    /// `min(l, −A·c)`.
    pub loss: f64,
    /// `∂l/∂logp_new`: `−Aρ` where the unclipped term is the one taken (and the log-ratio is
    /// inside [`LOG_RATIO_CLAMP`]), else 0.
    pub d_logp: f64,
    /// The (clamped) log-ratio `logp_new − logp_old`.
    pub log_ratio: f64,
    /// ρ = e^log_ratio.
    pub ratio: f64,
    /// The clipped term is strictly larger than the unclipped one, so the token's gradient is
    /// cut (verl `pg_clipfrac` counts these).
    pub clipped: bool,
    /// The dual clip capped the loss (verl `pg_clipfrac_lower` counts these).
    pub dual_clipped: bool,
}

/// The clipped surrogate of one token with advantage `adv`. At exact ties the unclipped branch
/// is taken (as CleanRL's, whose gradients agree there).
pub fn clipped_surrogate(logp_new: f64, logp_old: f64, adv: f64, clip: &ClipRange) -> Surrogate {
    let raw = logp_new - logp_old;
    let log_ratio = raw.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
    let inside = raw == log_ratio;
    let ratio = log_ratio.exp();
    let unclipped = -adv * ratio;
    let clipped_term = -adv * ratio.clamp(1.0 - clip.low, 1.0 + clip.high);
    let clipped = clipped_term > unclipped;
    let (mut loss, mut d_logp) = if clipped {
        (clipped_term, 0.0)
    } else {
        (unclipped, if inside { -adv * ratio } else { 0.0 })
    };
    let mut dual_clipped = false;
    if let Some(c) = clip.dual_clip {
        let cap = -adv * c;
        if adv < 0.0 && cap < loss {
            loss = cap;
            d_logp = 0.0;
            dual_clipped = true;
        }
    }
    Surrogate {
        loss,
        d_logp,
        log_ratio,
        ratio,
        clipped,
        dual_clipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_range_and_dual_clip_from_params() {
        let specs = [
            crate::ParamSpec::float("clip_ratio", 0.2, "ε"),
            crate::ParamSpec::optional_float("clip_ratio_high", "ε_high"),
            crate::ParamSpec::optional_float("clip_ratio_c", "c"),
        ];
        let p = Params::parse(&specs, "{}").expect("defaults");
        assert_eq!(
            ClipRange::from_params(&p).expect("ok"),
            ClipRange::symmetric(0.2)
        );
        assert_eq!(ClipRange::dual_clip_from_params(&p).expect("ok"), None);
        let p = Params::parse(&specs, r#"{"clip_ratio_high": 0.28, "clip_ratio_c": 3}"#)
            .expect("valid");
        let clip = ClipRange::from_params(&p).expect("ok");
        assert_eq!((clip.low, clip.high), (0.2, 0.28));
        assert_eq!(ClipRange::dual_clip_from_params(&p).expect("ok"), Some(3.0));
        let p = Params::parse(&specs, r#"{"clip_ratio_c": 1.0}"#).expect("a float");
        let e = ClipRange::dual_clip_from_params(&p).expect_err("not > 1");
        assert_eq!(e.key(), Some("clip_ratio_c"));
    }

    fn at(ratio: f64, adv: f64, clip: &ClipRange) -> Surrogate {
        clipped_surrogate(ratio.ln() - 1.0, -1.0, adv, clip)
    }

    fn near(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn every_clipping_case_by_hand() {
        let sym = ClipRange::symmetric(0.2);
        // Inside the range: −Aρ, derivative −Aρ.
        let s = at(1.1, 2.0, &sym);
        assert!(
            near(s.loss, -2.2) && near(s.d_logp, -2.2) && !s.clipped,
            "{s:?}"
        );
        // A > 0, ρ above 1 + ε: clipped at −A·1.2, derivative 0.
        let s = at(1.5, 1.0, &sym);
        assert!(near(s.loss, -1.2) && s.d_logp == 0.0 && s.clipped, "{s:?}");
        // A > 0, ρ below 1 − ε: the unclipped term is larger, gradient kept.
        let s = at(0.5, 1.0, &sym);
        assert!(
            near(s.loss, -0.5) && near(s.d_logp, -0.5) && !s.clipped,
            "{s:?}"
        );
        // A < 0, ρ below 1 − ε: clipped at −A·0.8 = 0.8.
        let s = at(0.5, -1.0, &sym);
        assert!(near(s.loss, 0.8) && s.d_logp == 0.0 && s.clipped, "{s:?}");
        // A < 0, ρ above 1 + ε: unclipped 1.5, gradient kept (no dual clip).
        let s = at(1.5, -1.0, &sym);
        assert!(near(s.loss, 1.5) && near(s.d_logp, 1.5), "{s:?}");
        assert!(near(s.ratio, 1.5) && near(s.log_ratio, 1.5f64.ln()));
    }

    #[test]
    fn clip_higher_and_dual_clip() {
        // DAPO: ε_low 0.2, ε_high 0.28. ρ = 1.25, A > 0 is inside now; ρ = 1.3 is clipped at 1.28.
        let dapo = ClipRange {
            low: 0.2,
            high: 0.28,
            dual_clip: None,
        };
        let s = at(1.25, 1.0, &dapo);
        assert!(near(s.loss, -1.25) && near(s.d_logp, -1.25), "{s:?}");
        let s = at(1.3, 1.0, &dapo);
        assert!(near(s.loss, -1.28) && s.d_logp == 0.0, "{s:?}");
        // Lower side unchanged: A < 0, ρ = 0.7 clipped at 0.8.
        assert!(near(at(0.7, -1.0, &dapo).loss, 0.8));
        // Dual clip c = 3: A = −2, ρ = 4 → unclipped 8 capped at 6, derivative 0.
        let dual = ClipRange {
            dual_clip: Some(3.0),
            ..ClipRange::symmetric(0.2)
        };
        let s = at(4.0, -2.0, &dual);
        assert!(
            near(s.loss, 6.0) && s.d_logp == 0.0 && s.dual_clipped,
            "{s:?}"
        );
        // Below the cap (ρ = 2 → 4 < 6) the gradient −Aρ = 4 is kept.
        let s = at(2.0, -2.0, &dual);
        assert!(
            near(s.loss, 4.0) && near(s.d_logp, 4.0) && !s.dual_clipped,
            "{s:?}"
        );
        // A > 0 never dual-clips.
        assert!(!at(10.0, 1.0, &dual).dual_clipped);
    }

    #[test]
    fn the_log_ratio_is_clamped_at_twenty() {
        let s = clipped_surrogate(30.0, 0.0, -1.0, &ClipRange::symmetric(0.2));
        assert!(
            near(s.log_ratio, 20.0) && near(s.loss, 20f64.exp()),
            "{s:?}"
        );
        assert_eq!(s.d_logp, 0.0);
    }
}
