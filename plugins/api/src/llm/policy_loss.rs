//! The whole clipped policy loss of GRPO, RLOO and DAPO-style variants, per token: clipped
//! surrogate, optional k3 KL to the reference policy and entropy bonus, aggregated by a
//! [`LossAggMode`] and written into [`LossOutputs`].

use crate::{
    authoring::{LossOutputs, Minibatch},
    error::PluginError,
    types::Metric,
};

use super::{
    aggregate::LossAggMode,
    kl::{approx_kl, k3_kl},
    surrogate::{clipped_surrogate, ClipRange},
    token_loss::LossWeights,
};

/// Settings of [`clipped_policy_loss`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyLossConfig {
    /// The ratio's clip range (and optional dual clip).
    pub clip: ClipRange,
    /// How token losses are aggregated.
    pub agg: LossAggMode,
    /// `C` of [`LossAggMode::SeqMeanTokenSumNorm`]; `None`: the padded length.
    pub loss_scale_factor: Option<f64>,
    /// Entropy bonus coefficient: the loss gets `− ent_coef·H`.
    pub ent_coef: f64,
    /// β of the k3 KL penalty to the reference policy; 0 disables it.
    pub kl_coef: f64,
}

impl Default for PolicyLossConfig {
    /// verl's defaults: symmetric clip 0.2, no dual clip, token-mean, no entropy bonus, no KL.
    fn default() -> Self {
        Self {
            clip: ClipRange::symmetric(0.2),
            agg: LossAggMode::TokenMean,
            loss_scale_factor: None,
            ent_coef: 0.0,
            kl_coef: 0.0,
        }
    }
}

/// Minibatch diagnostics of [`clipped_policy_loss`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyLossStats {
    /// The aggregated clipped surrogate (verl `pg_loss`), without entropy or KL terms.
    pub policy_loss: f64,
    /// Mean new-policy entropy over valid tokens; `None` when the host sent no entropies.
    pub entropy: Option<f64>,
    /// Token mean of `(ρ − 1) − log ρ` (CleanRL).
    pub approx_kl: f64,
    /// Token fraction whose gradient the ratio clip cuts (verl `pg_clipfrac`).
    pub clip_frac: f64,
    /// Token fraction capped by the dual clip (verl `pg_clipfrac_lower`); 0 without one.
    pub clip_frac_lower: f64,
    /// The aggregated k3 KL to the reference (verl `kl_loss`), when the minibatch has `logp_ref`.
    pub kl_ref: Option<f64>,
}

impl PolicyLossStats {
    /// As metrics: `policy_loss`, `entropy`, `approx_kl`, `clip_frac`, `clip_frac_lower`,
    /// `kl_ref` (the two optional ones only when known).
    pub fn metrics(&self) -> Vec<Metric> {
        let mut m = vec![Metric::new("policy_loss", self.policy_loss)];
        if let Some(h) = self.entropy {
            m.push(Metric::new("entropy", h));
        }
        m.push(Metric::new("approx_kl", self.approx_kl));
        m.push(Metric::new("clip_frac", self.clip_frac));
        m.push(Metric::new("clip_frac_lower", self.clip_frac_lower));
        if let Some(kl) = self.kl_ref {
            m.push(Metric::new("kl_ref", kl));
        }
        m
    }
}

/// `Ok` when a KL penalty to the reference can be computed: `kl_coef` is 0, or `logp_ref` is
/// present. Called from both stages so the error comes at the first call.
///
/// # Errors
/// `invalid_params` (`kl_coef`) telling to set `run.reference_policy = "initial"`.
pub fn require_reference(
    algorithm: &str,
    kl_coef: f64,
    logp_ref: &[f32],
) -> Result<(), PluginError> {
    if kl_coef > 0.0 && logp_ref.is_empty() {
        return Err(PluginError::invalid_params(
            "kl_coef",
            format!(
                "{algorithm} with kl_coef = {kl_coef} needs the reference policy's log-probs \
                 (`logp_ref`), but the batch has none: set run.reference_policy = \"initial\" \
                 in the sweep, or kl_coef = 0"
            ),
        ));
    }
    Ok(())
}

/// verl's policy loss for GRPO-style algorithms, per token:
/// `loss_t = w_t·(l_t − ent_coef·H_t + kl_coef·k3_t)`, with `l_t` the [`clipped_surrogate`],
/// `k3_t` the [`k3_kl`] to the reference and `w_t` the [`aggregation_weights`] of `cfg.agg`
/// (verl aggregates the three terms with the same mode). Writes `d_logp = w_t·(∂l_t + kl_coef·
/// ∂k3_t)`, `d_entropy = −w_t·ent_coef`, and leaves `d_value` 0 (no critic).
///
/// Returns `None` (outputs untouched, i.e. zero) when no token has weight.
///
/// # Errors
/// `invalid_params` (`kl_coef`) when `kl_coef > 0` and the minibatch has no `logp_ref`;
/// `invalid_input` when `ent_coef ≠ 0` and it has no `entropy_new`; `loss_scale_factor` errors
/// of [`aggregation_weights`].
pub fn clipped_policy_loss(
    algorithm: &str,
    cfg: &PolicyLossConfig,
    mb: &Minibatch<'_>,
    out: &mut LossOutputs<'_>,
) -> Result<Option<PolicyLossStats>, PluginError> {
    clipped_policy_loss_with_copies(algorithm, cfg, mb, None, out)
}

/// [`clipped_policy_loss`] when sequence `s` counts `copies[s]` times: the loss of the
/// minibatch resampled by the copies (PF-PPO), under every aggregation mode (see
/// [`LossWeights::with_copies`]). `None` is [`clipped_policy_loss`].
///
/// # Errors
/// Those of [`clipped_policy_loss`], and `invalid_input` for copies that are not one finite
/// value ≥ 0 per sequence.
pub fn clipped_policy_loss_with_copies(
    algorithm: &str,
    cfg: &PolicyLossConfig,
    mb: &Minibatch<'_>,
    copies: Option<&[f64]>,
    out: &mut LossOutputs<'_>,
) -> Result<Option<PolicyLossStats>, PluginError> {
    require_reference(algorithm, cfg.kl_coef, mb.logp_ref)?;
    let Some(lw) = LossWeights::with_copies(
        algorithm,
        mb,
        cfg.agg,
        cfg.loss_scale_factor,
        cfg.ent_coef,
        copies,
    )?
    else {
        return Ok(None);
    };
    let (w, tm) = (&lw.agg, &lw.token_mean);
    let mut s = PolicyLossStats {
        policy_loss: 0.0,
        entropy: lw.mean_entropy,
        approx_kl: 0.0,
        clip_frac: 0.0,
        clip_frac_lower: 0.0,
        kl_ref: (!mb.logp_ref.is_empty()).then_some(0.0),
    };
    for i in 0..mb.len() {
        if !lw.is_valid(i) {
            continue; // zero weight: outputs stay 0
        }
        let logp = f64::from(mb.logp_new[i]);
        let sur = clipped_surrogate(
            logp,
            f64::from(mb.logp_old[i]),
            f64::from(mb.advantages[i]),
            &cfg.clip,
        );
        let (mut loss, mut d) = (sur.loss, sur.d_logp);
        if let Some(kl_sum) = s.kl_ref.as_mut() {
            let (k3, dk3) = k3_kl(logp, f64::from(mb.logp_ref[i]));
            *kl_sum += w[i] * k3;
            loss += cfg.kl_coef * k3;
            d += cfg.kl_coef * dk3;
        }
        lw.write(out, i, loss, d);
        s.policy_loss += w[i] * sur.loss;
        s.approx_kl += tm[i] * approx_kl(sur.log_ratio);
        s.clip_frac += if sur.clipped { tm[i] } else { 0.0 };
        s.clip_frac_lower += if sur.dual_clipped { tm[i] } else { 0.0 };
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Outs {
        loss: Vec<f32>,
        d_logp: Vec<f32>,
        d_value: Vec<f32>,
        d_entropy: Vec<f32>,
    }

    fn run(
        cfg: &PolicyLossConfig,
        mb: &Minibatch<'_>,
    ) -> Result<(Outs, Option<PolicyLossStats>), PluginError> {
        let m = mb.len();
        let mut o = Outs {
            loss: vec![0.0; m],
            d_logp: vec![0.0; m],
            d_value: vec![0.0; m],
            d_entropy: vec![0.0; m],
        };
        let mut out = LossOutputs {
            loss: &mut o.loss,
            d_logp: &mut o.d_logp,
            d_value: &mut o.d_value,
            d_entropy: &mut o.d_entropy,
        };
        let s = clipped_policy_loss("grpo", cfg, mb, &mut out)?;
        Ok((o, s))
    }

    fn close(a: &[f32], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&x, &y)| (f64::from(x) - y).abs() < 1e-6)
    }

    /// Two sequences: s0 = tokens 0, 1 (ρ = 1.1 with A = 1, ρ = 1.5 with A = 1: clipped);
    /// s1 = token 2 (ρ = 0.5, A = −1: clipped) and token 3 (padding, garbage).
    /// logp_old = 0 everywhere, logp_ref = [0, 0, −0.5, 9].
    #[test]
    fn seq_mean_token_mean_with_kl_and_entropy_by_hand() {
        let logp_new = [1.1f32.ln(), 1.5f32.ln(), 0.5f32.ln(), 5.0];
        let zeros = [0.0f32; 4];
        let logp_ref = [0.0f32, 0.0, -0.5, 9.0];
        let adv = [1.0f32, 1.0, -1.0, 100.0];
        let entropy = [1.0f32, 2.0, 3.0, 9.0];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &zeros;
        mb.logp_ref = &logp_ref;
        mb.advantages = &adv;
        mb.entropy_new = &entropy;
        mb.token_weights = &[1.0, 1.0, 1.0, 0.0];
        mb.seq_index = &[0, 0, 1, 1];
        mb.num_sequences = 2;
        mb.check().expect("consistent");
        let cfg = PolicyLossConfig {
            clip: ClipRange::symmetric(0.2),
            agg: LossAggMode::SeqMeanTokenMean,
            loss_scale_factor: None,
            ent_coef: 0.1,
            kl_coef: 0.04,
        };
        let (o, s) = run(&cfg, &mb).expect("runs");
        // w = [¼, ¼, ½, 0]. Surrogates: [−1.1, −1.2, 0.8]; derivatives [−1.1, 0, 0].
        // k3: token 0: x = −ln 1.1 → 1/1.1 + ln 1.1 − 1 = 0.0044011…, d = 1 − 1/1.1 = 0.0909…;
        //     token 1: 1/1.5 + ln 1.5 − 1 = 0.0721318…, d = 1/3;
        //     token 2: x = −0.5 − ln 0.5 = 0.193147…, e^x = 1.213061…, k3 = 0.019914…,
        //              d = 1 − 1.213061… = −0.213061…
        let k3 = |x: f64| x.exp() - x - 1.0;
        let x = [-(1.1f64.ln()), -(1.5f64.ln()), -0.5 - 0.5f64.ln()];
        let (w, sur, dsur, h) = (
            [0.25, 0.25, 0.5],
            [-1.1, -1.2, 0.8],
            [-1.1, 0.0, 0.0],
            [1.0, 2.0, 3.0],
        );
        let exp_loss: Vec<f64> = (0..3)
            .map(|i| w[i] * (sur[i] + 0.04 * k3(x[i]) - 0.1 * h[i]))
            .chain([0.0])
            .collect();
        let exp_d: Vec<f64> = (0..3)
            .map(|i| w[i] * (dsur[i] + 0.04 * (1.0 - x[i].exp())))
            .chain([0.0])
            .collect();
        assert!(close(&o.loss, &exp_loss), "{:?} vs {exp_loss:?}", o.loss);
        assert!(close(&o.d_logp, &exp_d), "{:?} vs {exp_d:?}", o.d_logp);
        // Spot values so the formula above is not the only oracle.
        assert!(
            (exp_loss[0] - (-0.299_955_8)).abs() < 1e-6,
            "{}",
            exp_loss[0]
        );
        assert!((exp_d[2] - (-0.004_261_2)).abs() < 1e-6, "{}", exp_d[2]);
        assert!(close(&o.d_entropy, &[-0.025, -0.025, -0.05, 0.0]));
        assert_eq!(o.d_value, [0.0; 4]);
        let s = s.expect("valid tokens");
        // policy_loss = ¼(−1.1) + ¼(−1.2) + ½(0.8) = −0.175.
        assert!((s.policy_loss + 0.175).abs() < 1e-6, "{s:?}");
        assert_eq!(s.entropy, Some(2.0));
        assert!((s.clip_frac - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.clip_frac_lower, 0.0);
        let kl_ref = 0.25 * k3(x[0]) + 0.25 * k3(x[1]) + 0.5 * k3(x[2]);
        assert!((s.kl_ref.expect("logp_ref given") - kl_ref).abs() < 1e-6);
        let ak = |r: f64| r - 1.0 - r.ln();
        assert!((s.approx_kl - (ak(1.1) + ak(1.5) + ak(0.5)) / 3.0).abs() < 1e-6);
        let names: Vec<String> = s.metrics().iter().map(|m| m.name.to_string()).collect();
        assert_eq!(
            names,
            [
                "policy_loss",
                "entropy",
                "approx_kl",
                "clip_frac",
                "clip_frac_lower",
                "kl_ref"
            ]
        );
    }

    #[test]
    fn kl_without_reference_says_how_to_get_one() {
        let zeros = [0.0f32; 2];
        let mut mb = Minibatch::new();
        mb.logp_new = &zeros;
        mb.logp_old = &zeros;
        mb.advantages = &zeros;
        mb.token_weights = &[1.0, 1.0];
        mb.seq_index = &[0, 0];
        mb.num_sequences = 1;
        let cfg = PolicyLossConfig {
            clip: ClipRange::symmetric(0.2),
            agg: LossAggMode::TokenMean,
            loss_scale_factor: None,
            ent_coef: 0.0,
            kl_coef: 0.04,
        };
        let e = run(&cfg, &mb).err().expect("no reference");
        assert_eq!(e.key(), Some("kl_coef"));
        assert!(
            e.message().contains("run.reference_policy = \"initial\""),
            "{e}"
        );
        // Without the KL term the same minibatch is fine, and needs no entropies either.
        let (o, s) = run(
            &PolicyLossConfig {
                kl_coef: 0.0,
                ..cfg
            },
            &mb,
        )
        .expect("runs");
        assert_eq!(o.loss, [0.0, 0.0]);
        let s = s.expect("valid");
        assert_eq!(s.entropy, None);
        assert!(s.kl_ref.is_none());
    }
}
