//! KL-Cov's token selection and loss (verl `compute_policy_loss_kl_cov`; Cui et al. 2025, arXiv 2505.22617).
//!
//! **Scope:** covariances, `N` and the top-k are computed over the valid tokens of the loss
//! minibatch the host passes (one optimizer minibatch of whole sequences), not verl's per-GPU
//! micro-batch (a decision of drover's, as the host has no micro-batches); the two agree when the micro-batch is the minibatch.
//! Under MPI every rank computes the loss of the whole global minibatch, so the selection is
//! over all ranks' tokens rather than ALGORITHMS.md §7's "per rank": the same tokens whatever
//! the number of ranks, and the runs of a sweep compare across `run.ranks`.

use drover_plugin_api::{
    llm::{approx_kl, token_covariance, LossAggMode, LossWeights, LOG_RATIO_CLAMP},
    LossOutputs, Metric, Minibatch, PluginError,
};

/// KL-Cov's loss settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlCovConfig {
    /// Fraction (not percent) of the valid tokens penalized: `k = max(1, ⌊N·ratio⌋)`.
    pub kl_cov_ratio: f64,
    /// β of the `|logp − logp_old|` penalty.
    pub kl_coef: f64,
    /// Loss aggregation.
    pub agg: LossAggMode,
    /// `C` of `seq-mean-token-sum-norm`; `None`: the padded length.
    pub loss_scale_factor: Option<f64>,
    /// Entropy bonus coefficient.
    pub ent_coef: f64,
}

/// The `k = max(1, ⌊n_valid·ratio⌋)` tokens of largest `cov` (`torch.topk`), `cov` being `−∞`
/// for invalid tokens, which are never taken; ties go to the lower index (torch leaves their
/// order unspecified). Empty when no token is valid.
pub fn select_top_cov(cov: &[f64], n_valid: usize, ratio: f64) -> Vec<usize> {
    if n_valid == 0 {
        return Vec::new();
    }
    // Python's `int()` of the f64 product, as verl computes it.
    let k = ((n_valid as f64 * ratio) as usize).max(1).min(n_valid);
    let mut valid: Vec<usize> = (0..cov.len())
        .filter(|&i| cov[i] > f64::NEG_INFINITY)
        .collect();
    valid.sort_by(|&a, &b| cov[b].total_cmp(&cov[a]).then(a.cmp(&b)));
    valid.truncate(k);
    valid
}

/// Minibatch diagnostics of [`kl_cov_loss`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlCovStats {
    /// The aggregated loss, penalty included (verl `pg_loss`).
    pub policy_loss: f64,
    /// Mean new-policy entropy over valid tokens, when the host sent entropies.
    pub entropy: Option<f64>,
    /// Token mean of `(ρ − 1) − log ρ`.
    pub approx_kl: f64,
    /// Tokens penalized.
    pub cov_selected: usize,
    /// The aggregated penalty `β·|logp − logp_old|` of the penalized tokens.
    pub cov_penalty: f64,
}

impl KlCovStats {
    /// As metrics: `policy_loss`, `entropy` (when known), `approx_kl`, `cov_selected`,
    /// `cov_penalty`.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut m = vec![Metric::new("policy_loss", self.policy_loss)];
        if let Some(h) = self.entropy {
            m.push(Metric::new("entropy", h));
        }
        m.extend([
            Metric::new("approx_kl", self.approx_kl),
            Metric::new("cov_selected", self.cov_selected as f64),
            Metric::new("cov_penalty", self.cov_penalty),
        ]);
        m
    }
}

/// KL-Cov's loss: `l_t = −A_t·ρ_t` on every valid token (no clipping), plus
/// `β·|logp_t − logp_old,t|` on the tokens [`select_top_cov`] picks by the covariance of
/// `A` and `logp_new`; aggregated by `cfg.agg`, minus `ent_coef·H`. The derivative is
/// `−Aρ + β·sign(logp − logp_old)` with `sign(0) = 0` (torch's), so on-policy the first step
/// is plain policy gradient.
///
/// The log-ratio inside `ρ` is clamped to ±20 before `exp` (verl does not); this changes nothing
/// unless `|logp_new − logp_old| > 20`, and keeps `f32` outputs finite.
///
/// Returns `None` (zero outputs) when no token has weight.
///
/// # Errors
/// `invalid_input` when `ent_coef ≠ 0` and the minibatch has no `entropy_new`;
/// `loss_scale_factor` errors of [`aggregation_weights`](drover_plugin_api::llm::aggregation_weights).
pub fn kl_cov_loss(
    cfg: &KlCovConfig,
    mb: &Minibatch<'_>,
    out: &mut LossOutputs<'_>,
) -> Result<Option<KlCovStats>, PluginError> {
    let Some(lw) = LossWeights::new("kl_cov", mb, cfg.agg, cfg.loss_scale_factor, cfg.ent_coef)?
    else {
        return Ok(None);
    };
    let (w, tm, n_valid) = (&lw.agg, &lw.token_mean, lw.n_valid);
    let m = mb.len();
    let cov = token_covariance(mb.advantages, mb.logp_new, mb.token_weights);
    let selected = select_top_cov(&cov, n_valid, cfg.kl_cov_ratio);
    let mut penalized = vec![false; m];
    for &i in &selected {
        penalized[i] = true;
    }
    let mut s = KlCovStats {
        policy_loss: 0.0,
        entropy: lw.mean_entropy,
        approx_kl: 0.0,
        cov_selected: selected.len(),
        cov_penalty: 0.0,
    };
    for i in 0..m {
        if !lw.is_valid(i) {
            continue;
        }
        let adv = f64::from(mb.advantages[i]);
        let raw = f64::from(mb.logp_new[i]) - f64::from(mb.logp_old[i]);
        let log_ratio = raw.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
        let ratio = log_ratio.exp();
        let mut l = -adv * ratio;
        let mut d = if raw == log_ratio { -adv * ratio } else { 0.0 };
        if penalized[i] {
            let pen = cfg.kl_coef * raw.abs();
            l += pen;
            // f64::signum(0.0) is 1; torch.sign(0) is 0.
            d += if raw == 0.0 {
                0.0
            } else {
                cfg.kl_coef * raw.signum()
            };
            s.cov_penalty += w[i] * pen;
        }
        lw.write(out, i, l, d);
        s.policy_loss += w[i] * l;
        s.approx_kl += tm[i] * approx_kl(log_ratio);
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::testing::with_loss_outputs;

    use super::*;

    /// Nine valid tokens and one padding token, Ā = 0 and mean logp = −2 exactly, so
    /// `cov = A·(logp + 2)` = [3, 2, 2, 1, −0.5, 0, 0, 6, 6] (the padding token's inputs are
    /// garbage). logp_old differs from logp_new by δ = [0, 0, 0, 0, 0, 0, 0, 0.1, −0.2].
    struct Case {
        logp_new: Vec<f32>,
        logp_old: Vec<f32>,
        adv: Vec<f32>,
        weights: Vec<f32>,
        seq_index: Vec<u32>,
    }

    fn case() -> Case {
        let adv = vec![2.0, 2.0, -2.0, -1.0, 1.0, -1.0, -1.0, 3.0, -3.0, 40.0];
        let logp_new: Vec<f32> = vec![-0.5, -1.0, -3.0, -3.0, -2.5, -2.0, -2.0, 0.0, -4.0, 9.0];
        let mut logp_old = logp_new.clone();
        logp_old[7] = -0.1;
        logp_old[8] = -3.8;
        logp_old[9] = 30.0;
        let mut weights = vec![1.0; 10];
        weights[9] = 0.0;
        Case {
            logp_new,
            logp_old,
            adv,
            weights,
            seq_index: vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
        }
    }

    fn run(cfg: &KlCovConfig, c: &Case) -> (Vec<f32>, Vec<f32>, KlCovStats) {
        let mut mb = Minibatch::new();
        mb.logp_new = &c.logp_new;
        mb.logp_old = &c.logp_old;
        mb.advantages = &c.adv;
        mb.token_weights = &c.weights;
        mb.seq_index = &c.seq_index;
        mb.num_sequences = 2;
        let (o, s) = with_loss_outputs(mb.len(), |out| kl_cov_loss(cfg, &mb, out));
        let s = s.expect("runs").expect("valid tokens");
        (o.loss, o.d_logp, s)
    }

    fn config(ratio: f64) -> KlCovConfig {
        KlCovConfig {
            kl_cov_ratio: ratio,
            kl_coef: 1.0,
            agg: LossAggMode::TokenMean,
            loss_scale_factor: None,
            ent_coef: 0.0,
        }
    }

    #[test]
    fn which_tokens_are_selected() {
        let c = case();
        let cov = token_covariance(&c.adv, &c.logp_new, &c.weights);
        assert_eq!(&cov[..9], &[3.0, 2.0, 2.0, 1.0, -0.5, 0.0, 0.0, 6.0, 6.0]);
        // Default 0.002: k = max(1, ⌊0.018⌋) = 1 → token 7 (tied with 8 at 6: lower index).
        assert_eq!(select_top_cov(&cov, 9, 0.002), [7]);
        // 0.35: k = ⌊3.15⌋ = 3 → 7, 8, then 0 (cov 3).
        assert_eq!(select_top_cov(&cov, 9, 0.35), [7, 8, 0]);
        // 0.45: k = ⌊4.05⌋ = 4 → … and token 1 (tied with 2 at cov 2).
        assert_eq!(select_top_cov(&cov, 9, 0.45), [7, 8, 0, 1]);
        // The padding token (cov −∞) is never taken, even when k would reach it.
        assert_eq!(select_top_cov(&cov, 9, 1.0).len(), 9);
        assert!(!select_top_cov(&cov, 9, 1.0).contains(&9));
        assert!(select_top_cov(&[f64::NEG_INFINITY], 0, 0.5).is_empty());
    }

    /// ratio 0.35 penalizes tokens 7, 8, 0 with β = 1; w = 1/9 (token-mean):
    /// 7: A = 3, δ = 0.1 → l = −3e^0.1 + 0.1, d = −3e^0.1 + 1;
    /// 8: A = −3, δ = −0.2 → l = 3e^−0.2 + 0.2, d = 3e^−0.2 − 1;
    /// 0: A = 2, δ = 0 → l = −2, d = −2 (sign(0) = 0: no penalty gradient);
    /// the rest: l = d = −A.
    #[test]
    fn loss_by_hand() {
        let c = case();
        let (loss, d, s) = run(&config(0.35), &c);
        let (e1, e2) = (0.1f64.exp(), (-0.2f64).exp());
        let l = [
            -2.0,
            -2.0,
            2.0,
            1.0,
            -1.0,
            1.0,
            1.0,
            -3.0 * e1 + 0.1,
            3.0 * e2 + 0.2,
            0.0,
        ];
        let g = [
            -2.0,
            -2.0,
            2.0,
            1.0,
            -1.0,
            1.0,
            1.0,
            -3.0 * e1 + 1.0,
            3.0 * e2 - 1.0,
            0.0,
        ];
        for i in 0..10 {
            assert!(
                (f64::from(loss[i]) - l[i] / 9.0).abs() < 1e-6,
                "{i}: {loss:?}"
            );
            assert!((f64::from(d[i]) - g[i] / 9.0).abs() < 1e-6, "{i}: {d:?}");
        }
        assert_eq!(s.cov_selected, 3);
        assert!((s.cov_penalty - 0.3 / 9.0).abs() < 1e-6, "{s:?}");
        assert!(
            (s.policy_loss - l.iter().sum::<f64>() / 9.0).abs() < 1e-6,
            "{s:?}"
        );
        // Halving β halves the penalty and its gradient.
        let (_, d_half, _) = run(
            &KlCovConfig {
                kl_coef: 0.5,
                ..config(0.35)
            },
            &c,
        );
        assert!((f64::from(d_half[7]) - (-3.0 * e1 + 0.5) / 9.0).abs() < 1e-6);
    }

    /// No PPO clipping: ρ = e^0.5 with A = 1 keeps its gradient −ρ (PPO would cut it at 1.2).
    #[test]
    fn the_ratio_is_never_clipped() {
        let mut c = case();
        c.logp_old[4] = c.logp_new[4] - 0.5;
        c.adv[4] = 1.0;
        let (_, d, _) = run(&config(0.002), &c);
        assert!((f64::from(d[4]) + 0.5f64.exp() / 9.0).abs() < 1e-6, "{d:?}");
    }
}
