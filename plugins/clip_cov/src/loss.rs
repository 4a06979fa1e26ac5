//! Clip-Cov's token selection and loss (verl `compute_policy_loss_clip_cov`; Cui et al. 2025, arXiv 2505.22617).
//!
//! **Scope:** covariances, `N` and the selection are computed over the valid tokens of the loss
//! minibatch the host passes (one optimizer minibatch of whole sequences), not verl's per-GPU
//! micro-batch (a decision of drover's, as the host has no micro-batches); the two agree when the micro-batch is the minibatch.
//! Under MPI every rank computes the loss of the whole global minibatch, so the selection is
//! over all ranks' tokens rather than ALGORITHMS.md §7's "per rank": the same tokens whatever
//! the number of ranks, and the runs of a sweep compare across `run.ranks`.

use drover_plugin_api::{
    llm::{approx_kl, clipped_surrogate, token_covariance, ClipRange, LossAggMode, LossWeights},
    CounterRng, LossOutputs, Metric, Minibatch, PluginError,
};

/// Which tokens Clip-Cov may cut, and how many.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CovBand {
    /// Fraction of the minibatch's valid tokens to cut: `n = max(⌊ratio·N⌋, 1)`.
    pub ratio: f64,
    /// Exclusive lower bound of the covariance band.
    pub lb: f64,
    /// Exclusive upper bound of the covariance band.
    pub ub: f64,
    /// Take the `n` largest covariances instead of `n` uniformly random candidates (a
    /// documented deviation from verl, for reproducibility studies).
    pub deterministic: bool,
}

/// Clip-Cov's loss settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipCovConfig {
    /// PPO clip range (no dual clip: verl's Clip-Cov has none).
    pub clip: ClipRange,
    /// The covariance band and the number of tokens cut.
    pub band: CovBand,
    /// Loss aggregation.
    pub agg: LossAggMode,
    /// `C` of `seq-mean-token-sum-norm`; `None`: the padded length.
    pub loss_scale_factor: Option<f64>,
    /// Entropy bonus coefficient.
    pub ent_coef: f64,
}

/// The tokens Clip-Cov cuts in one minibatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CovSelection {
    /// Tokens eligible: valid, not already clipped by PPO, covariance strictly inside the band.
    pub candidates: usize,
    /// Minibatch indices of the tokens cut, in selection order.
    pub selected: Vec<usize>,
}

/// Picks the tokens to cut: among valid tokens not clipped by PPO (`clip_by_origin`), those with
/// `lb < cov < ub` (`cov` is `−∞` for invalid tokens) are candidates, in minibatch order; then
/// `n = max(⌊ratio·n_valid⌋, 1)` of them uniformly without replacement (verl's
/// `torch.randperm(#cand)[:n]`, here [`CounterRng::sample_indices`] of `CounterRng::new(seed)`),
/// or all of them when there are at most `n`. With `deterministic`, the `n` largest
/// covariances, ties to the lower index.
pub fn select_clip_cov(
    cov: &[f64],
    clip_by_origin: &[bool],
    n_valid: usize,
    band: &CovBand,
    seed: u64,
) -> CovSelection {
    let candidates: Vec<usize> = (0..cov.len())
        .filter(|&i| !clip_by_origin[i] && cov[i] > band.lb && cov[i] < band.ub)
        .collect();
    // Python's `int()` of the f64 product, as verl computes it.
    let n = ((band.ratio * n_valid as f64) as usize).max(1);
    let selected = if candidates.len() <= n {
        candidates.clone()
    } else if band.deterministic {
        let mut by_cov = candidates.clone();
        by_cov.sort_by(|&a, &b| cov[b].total_cmp(&cov[a]).then(a.cmp(&b)));
        by_cov.truncate(n);
        by_cov
    } else {
        CounterRng::new(seed)
            .sample_indices(candidates.len(), n)
            .into_iter()
            .map(|k| candidates[k])
            .collect()
    };
    CovSelection {
        candidates: candidates.len(),
        selected,
    }
}

/// Minibatch diagnostics of [`clip_cov_loss`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipCovStats {
    /// The aggregated surrogate after the cut (verl `pg_loss`).
    pub policy_loss: f64,
    /// Mean new-policy entropy over valid tokens, when the host sent entropies.
    pub entropy: Option<f64>,
    /// Token mean of `(ρ − 1) − log ρ`.
    pub approx_kl: f64,
    /// Token fraction whose gradient the PPO clip cuts (`clip_by_origin`), as GRPO's `clip_frac`.
    pub clip_frac: f64,
    /// Candidate tokens (valid, unclipped, covariance inside the band).
    pub cov_candidates: usize,
    /// Tokens whose gradient Clip-Cov cut.
    pub cov_selected: usize,
    /// `cov_selected` over the valid tokens: verl's `pg_clipfrac` for Clip-Cov.
    pub cov_clip_frac: f64,
}

impl ClipCovStats {
    /// As metrics: `policy_loss`, `entropy` (when known), `approx_kl`, `clip_frac`,
    /// `cov_candidates`, `cov_selected`, `cov_clip_frac`.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut m = vec![Metric::new("policy_loss", self.policy_loss)];
        if let Some(h) = self.entropy {
            m.push(Metric::new("entropy", h));
        }
        m.extend([
            Metric::new("approx_kl", self.approx_kl),
            Metric::new("clip_frac", self.clip_frac),
            Metric::new("cov_candidates", self.cov_candidates as f64),
            Metric::new("cov_selected", self.cov_selected as f64),
            Metric::new("cov_clip_frac", self.cov_clip_frac),
        ]);
        m
    }
}

/// Clip-Cov's loss: `l_t = max(−Aρ, −A·clip(ρ, 1−ε_low, 1+ε_high))·corr_t` with `corr_t = 0` on
/// the tokens [`select_clip_cov`] picks (loss and derivative 0) and 1 elsewhere, aggregated by
/// `cfg.agg`, minus `ent_coef·H` (not cut). The covariance uses `logp_new` and only selects.
/// The selection's randomness comes from `mb.seed`, so a minibatch gives the same cut every time.
///
/// The log-ratio is clamped to ±20 before `exp` (verl clamps it in the vanilla loss only); this
/// changes nothing unless `|logp_new − logp_old| > 20`, and keeps `f32` outputs finite.
///
/// Returns `None` (zero outputs) when no token has weight.
///
/// # Errors
/// `invalid_input` when `ent_coef ≠ 0` and the minibatch has no `entropy_new`;
/// `loss_scale_factor` errors of [`aggregation_weights`](drover_plugin_api::llm::aggregation_weights).
pub fn clip_cov_loss(
    cfg: &ClipCovConfig,
    mb: &Minibatch<'_>,
    out: &mut LossOutputs<'_>,
) -> Result<Option<ClipCovStats>, PluginError> {
    let Some(lw) = LossWeights::new("clip_cov", mb, cfg.agg, cfg.loss_scale_factor, cfg.ent_coef)?
    else {
        return Ok(None);
    };
    let (w, tm, n_valid) = (&lw.agg, &lw.token_mean, lw.n_valid);
    let m = mb.len();
    let surrogate: Vec<_> = (0..m)
        .map(|i| {
            clipped_surrogate(
                f64::from(mb.logp_new[i]),
                f64::from(mb.logp_old[i]),
                f64::from(mb.advantages[i]),
                &cfg.clip,
            )
        })
        .collect();
    let clip_by_origin: Vec<bool> = (0..m)
        .map(|i| tm[i] > 0.0 && surrogate[i].clipped)
        .collect();
    let cov = token_covariance(mb.advantages, mb.logp_new, mb.token_weights);
    let sel = select_clip_cov(&cov, &clip_by_origin, n_valid, &cfg.band, mb.seed);
    let mut cut = vec![false; m];
    for &i in &sel.selected {
        cut[i] = true;
    }
    let mut s = ClipCovStats {
        policy_loss: 0.0,
        entropy: lw.mean_entropy,
        approx_kl: 0.0,
        clip_frac: 0.0,
        cov_candidates: sel.candidates,
        cov_selected: sel.selected.len(),
        cov_clip_frac: sel.selected.len() as f64 / n_valid as f64,
    };
    for i in 0..m {
        if !lw.is_valid(i) {
            continue;
        }
        let sur = &surrogate[i];
        let (l, d) = if cut[i] {
            (0.0, 0.0)
        } else {
            (sur.loss, sur.d_logp)
        };
        lw.write(out, i, l, d);
        s.policy_loss += w[i] * l;
        s.approx_kl += tm[i] * approx_kl(sur.log_ratio);
        s.clip_frac += if clip_by_origin[i] { tm[i] } else { 0.0 };
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::testing::with_loss_outputs;

    use super::*;

    /// Nine valid tokens and one padding token. Ā = 0 and mean logp = −2 exactly, so
    /// `cov = A·(logp + 2)` = [3, 2, 2, 1, −0.5, 0, 0, 6, 6]. Token 1 has ρ = 1.5 with A = 2 > 0:
    /// PPO already clipped it (`clip_by_origin`). Token 3 sits exactly on lb = 1 and tokens 7, 8
    /// above ub = 5. So the candidates are tokens 0 and 2.
    struct Case {
        logp_new: Vec<f32>,
        logp_old: Vec<f32>,
        adv: Vec<f32>,
        weights: Vec<f32>,
        seq_index: Vec<u32>,
    }

    fn case() -> Case {
        let adv = vec![2.0, 2.0, -2.0, -1.0, 1.0, -1.0, -1.0, 3.0, -3.0, 40.0];
        let logp_new = vec![-0.5, -1.0, -3.0, -3.0, -2.5, -2.0, -2.0, 0.0, -4.0, 9.0];
        let mut logp_old = logp_new.clone();
        logp_old[1] = -1.0 - 1.5f32.ln();
        logp_old[9] = -7.0;
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

    impl Case {
        fn mb(&self, seed: u64) -> Minibatch<'_> {
            let mut mb = Minibatch::new();
            mb.logp_new = &self.logp_new;
            mb.logp_old = &self.logp_old;
            mb.advantages = &self.adv;
            mb.token_weights = &self.weights;
            mb.seq_index = &self.seq_index;
            mb.num_sequences = 2;
            mb.seed = seed;
            mb
        }
    }

    fn config(ratio: f64, deterministic: bool) -> ClipCovConfig {
        ClipCovConfig {
            clip: ClipRange::symmetric(0.2),
            band: CovBand {
                ratio,
                lb: 1.0,
                ub: 5.0,
                deterministic,
            },
            agg: LossAggMode::TokenMean,
            loss_scale_factor: None,
            ent_coef: 0.0,
        }
    }

    fn run(cfg: &ClipCovConfig, mb: &Minibatch<'_>) -> (Vec<f32>, Vec<f32>, ClipCovStats) {
        let (o, s) = with_loss_outputs(mb.len(), |out| clip_cov_loss(cfg, mb, out));
        let s = s.expect("runs").expect("valid tokens");
        (o.loss, o.d_logp, s)
    }

    #[test]
    fn covariances_of_the_case_are_as_stated() {
        let c = case();
        let cov = token_covariance(&c.adv, &c.logp_new, &c.weights);
        assert_eq!(&cov[..9], &[3.0, 2.0, 2.0, 1.0, -0.5, 0.0, 0.0, 6.0, 6.0]);
    }

    /// n = max(⌊2e-4·9⌋, 1) = 1 of the two candidates {0, 2}: which one depends on the seed
    /// only, follows `CounterRng::new(seed).sample_indices(2, 1)`, and both occur.
    #[test]
    fn the_random_pick_is_one_candidate_reproducible_from_the_seed() {
        let c = case();
        let mut seen = [0usize; 2];
        for seed in 0..64u64 {
            let (_, _, s) = run(&config(2e-4, false), &c.mb(seed));
            assert_eq!((s.cov_candidates, s.cov_selected), (2, 1));
            let (loss, d, _) = run(&config(2e-4, false), &c.mb(seed));
            let picked = if d[0] == 0.0 { 0 } else { 2 };
            // The other candidate keeps its gradient; the picked one has loss 0 and d 0.
            assert_eq!(loss[picked], 0.0);
            assert_ne!(d[2 - picked], 0.0);
            let expected = [0usize, 2][CounterRng::new(seed).sample_indices(2, 1)[0]];
            assert_eq!(picked, expected, "seed {seed}");
            seen[picked / 2] += 1;
            // Same seed, same pick.
            assert_eq!(run(&config(2e-4, false), &c.mb(seed)).1, d);
        }
        assert!(seen[0] > 10 && seen[1] > 10, "{seen:?}");
    }

    /// With ratio 0.25, n = ⌊2.25⌋ = 2 ≥ #candidates: both are cut whatever the seed, and the
    /// loss is, per token (w = 1/9): 0: cut; 1: clipped, −2·1.2; 2: −(−2)·1 = 2 but cut;
    /// 3: 1; 4: −1; 5, 6: 1; 7: −3; 8: 3.
    #[test]
    fn loss_by_hand_when_every_candidate_is_cut() {
        let c = case();
        let (loss, d, s) = run(&config(0.25, false), &c.mb(99));
        let w = 1.0 / 9.0;
        let expect_loss = [0.0, -2.4, 0.0, 1.0, -1.0, 1.0, 1.0, -3.0, 3.0, 0.0].map(|x| x * w);
        let expect_d = [0.0, 0.0, 0.0, 1.0, -1.0, 1.0, 1.0, -3.0, 3.0, 0.0].map(|x| x * w);
        for i in 0..10 {
            assert!(
                (f64::from(loss[i]) - expect_loss[i]).abs() < 1e-6,
                "{loss:?}"
            );
            assert!((f64::from(d[i]) - expect_d[i]).abs() < 1e-6, "{d:?}");
        }
        assert_eq!((s.cov_candidates, s.cov_selected), (2, 2));
        assert!((s.cov_clip_frac - 2.0 / 9.0).abs() < 1e-12);
        assert!((s.clip_frac - 1.0 / 9.0).abs() < 1e-12);
        assert!((s.policy_loss - (-0.4 / 9.0)).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn deterministic_mode_takes_the_largest_covariance() {
        let c = case();
        for seed in [1, 2, 3] {
            let (_, d, s) = run(&config(2e-4, true), &c.mb(seed));
            assert_eq!(s.cov_selected, 1);
            assert_eq!(d[0], 0.0, "token 0 (cov 3) is cut");
            assert_ne!(d[2], 0.0, "token 2 (cov 2) is not");
        }
        let sel = select_clip_cov(
            &[2.0, 3.0, 2.0, 2.0],
            &[false; 4],
            4,
            &CovBand {
                ratio: 0.5,
                lb: 1.0,
                ub: 5.0,
                deterministic: true,
            },
            0,
        );
        // Ties in covariance go to the lower index.
        assert_eq!(sel.selected, [1, 0]);
    }

    #[test]
    fn no_candidate_means_plain_ppo() {
        let c = case();
        let mut cfg = config(2e-4, false);
        cfg.band.lb = 10.0;
        cfg.band.ub = 20.0;
        let (_, d, s) = run(&cfg, &c.mb(0));
        assert_eq!((s.cov_candidates, s.cov_selected), (0, 0));
        assert!((f64::from(d[0]) + 2.0 / 9.0).abs() < 1e-6);
    }
}
