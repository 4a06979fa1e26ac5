//! What every LLM-style token loss does around its own per-token term: check the inputs it
//! needs, compute the aggregation weights, and write `w_t·(l_t − ent_coef·H_t)` out.

use crate::{
    authoring::{LossOutputs, Minibatch},
    error::PluginError,
};

use super::aggregate::{aggregation_weights_with_copies, valid_token_mean, LossAggMode};

/// The weights of one minibatch's token loss, from [`LossWeights::new`]: a loss computes its
/// term `l_t` and derivative `∂l_t` for each token with [`LossWeights::is_valid`], and hands
/// them to [`LossWeights::write`].
#[derive(Debug, Clone, PartialEq)]
pub struct LossWeights<'a> {
    /// `w_t` of the loss's [`LossAggMode`] (0 on padding).
    pub agg: Vec<f64>,
    /// `w_t` of [`LossAggMode::TokenMean`], for token-mean diagnostics (clip fractions, KL).
    pub token_mean: Vec<f64>,
    /// Tokens with weight > 0; at least 1.
    pub n_valid: usize,
    /// The minibatch's `entropy_new` (empty when the host sent none and `ent_coef` is 0).
    pub entropy: &'a [f32],
    /// Mean new-policy entropy over valid tokens (verl `entropy`); `None` without entropies.
    pub mean_entropy: Option<f64>,
    /// Entropy bonus coefficient: the loss gets `− ent_coef·H`.
    pub ent_coef: f64,
}

impl<'a> LossWeights<'a> {
    /// The weights of `mb` under `agg` (with `loss_scale_factor`, see [`aggregation_weights`]),
    /// or `None` when no token has weight (the loss then leaves its outputs 0).
    ///
    /// # Errors
    /// `invalid_input` naming `algorithm` when `ent_coef ≠ 0` and the minibatch has no
    /// `entropy_new`; `loss_scale_factor` errors of [`aggregation_weights`].
    pub fn new(
        algorithm: &str,
        mb: &Minibatch<'a>,
        agg: LossAggMode,
        loss_scale_factor: Option<f64>,
        ent_coef: f64,
    ) -> Result<Option<Self>, PluginError> {
        Self::with_copies(algorithm, mb, agg, loss_scale_factor, ent_coef, None)
    }

    /// [`LossWeights::new`] when sequence `s` counts `copies[s]` times (see
    /// [`aggregation_weights_with_copies`](super::aggregation_weights_with_copies)): the loss
    /// and its token-mean diagnostics are those of a minibatch resampled by the copies.
    ///
    /// # Errors
    /// Those of [`LossWeights::new`], and `invalid_input` for copies that are not one finite
    /// value ≥ 0 per sequence.
    pub fn with_copies(
        algorithm: &str,
        mb: &Minibatch<'a>,
        agg: LossAggMode,
        loss_scale_factor: Option<f64>,
        ent_coef: f64,
        copies: Option<&[f64]>,
    ) -> Result<Option<Self>, PluginError> {
        let entropy = if ent_coef != 0.0 {
            Minibatch::require(algorithm, "entropy_new", mb.entropy_new)?
        } else {
            mb.entropy_new
        };
        let w = aggregation_weights_with_copies(agg, mb, loss_scale_factor, copies)?;
        let tm = aggregation_weights_with_copies(LossAggMode::TokenMean, mb, None, copies)?;
        let n_valid = tm.iter().filter(|&&x| x > 0.0).count();
        if n_valid == 0 {
            return Ok(None);
        }
        let mean_entropy = match copies {
            None => valid_token_mean(entropy, mb.token_weights),
            Some(_) => (!entropy.is_empty())
                .then(|| tm.iter().zip(entropy).map(|(w, &h)| w * f64::from(h)).sum()),
        };
        Ok(Some(Self {
            agg: w,
            token_mean: tm,
            n_valid,
            entropy,
            mean_entropy,
            ent_coef,
        }))
    }

    /// Whether token `i` has weight (the others' outputs stay 0).
    pub fn is_valid(&self, i: usize) -> bool {
        self.token_mean[i] > 0.0
    }

    /// Writes token `i`'s outputs from its term `loss` and `d_logp = ∂loss/∂logp_new`:
    /// `loss_i = w_i·(loss − ent_coef·H_i)`, `d_logp_i = w_i·d_logp`, and
    /// `d_entropy_i = −w_i·ent_coef` when there is an entropy bonus.
    pub fn write(&self, out: &mut LossOutputs<'_>, i: usize, loss: f64, d_logp: f64) {
        let w = self.agg[i];
        let mut loss = loss;
        if self.ent_coef != 0.0 {
            loss -= self.ent_coef * f64::from(self.entropy[i]);
            out.d_entropy[i] = (-w * self.ent_coef) as f32;
        }
        out.loss[i] = (w * loss) as f32;
        out.d_logp[i] = (w * d_logp) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sequences: s0 = tokens 0, 1; s1 = token 2 and a padding token.
    fn mb<'a>(entropy: &'a [f32], weights: &'a [f32]) -> Minibatch<'a> {
        let mut mb = Minibatch::new();
        mb.logp_new = &[0.0; 4];
        mb.logp_old = &[0.0; 4];
        mb.advantages = &[0.0; 4];
        mb.entropy_new = entropy;
        mb.token_weights = weights;
        mb.seq_index = &[0, 0, 1, 1];
        mb.num_sequences = 2;
        mb
    }

    #[test]
    fn weights_and_written_outputs_by_hand() {
        let weights = [1.0f32, 1.0, 1.0, 0.0];
        let entropy = [1.0f32, 2.0, 3.0, 9.0];
        let m = mb(&entropy, &weights);
        let lw = LossWeights::new("t", &m, LossAggMode::SeqMeanTokenMean, None, 0.5)
            .expect("valid")
            .expect("valid tokens");
        assert_eq!(lw.agg, [0.25, 0.25, 0.5, 0.0]);
        let t = 1.0 / 3.0;
        assert_eq!(lw.token_mean, [t, t, t, 0.0]);
        assert_eq!(lw.n_valid, 3);
        assert_eq!(lw.mean_entropy, Some(2.0));
        assert!(lw.is_valid(2) && !lw.is_valid(3));
        let (mut loss, mut d, mut dv, mut dh) =
            ([0.0f32; 4], [0.0f32; 4], [0.0f32; 4], [0.0f32; 4]);
        let mut out = LossOutputs {
            loss: &mut loss,
            d_logp: &mut d,
            d_value: &mut dv,
            d_entropy: &mut dh,
        };
        // Token 2: w = ½, l = 4, ∂l = −2, H = 3: loss ½(4 − 1.5), d −1, d_entropy −¼.
        lw.write(&mut out, 2, 4.0, -2.0);
        assert_eq!((loss[2], d[2], dh[2], dv[2]), (1.25, -1.0, -0.25, 0.0));
    }

    #[test]
    fn no_valid_token_is_none_and_a_bonus_needs_entropies() {
        let lw = LossWeights::new("t", &mb(&[], &[0.0; 4]), LossAggMode::TokenMean, None, 0.0)
            .expect("valid");
        assert!(lw.is_none());
        let e = LossWeights::new(
            "algo",
            &mb(&[], &[1.0; 4]),
            LossAggMode::TokenMean,
            None,
            0.1,
        )
        .expect_err("no entropy_new");
        assert!(e.to_string().contains("entropy_new"), "{e}");
        let lw = LossWeights::new("t", &mb(&[], &[1.0; 4]), LossAggMode::TokenMean, None, 0.0)
            .expect("no bonus, no entropies needed")
            .expect("valid tokens");
        assert_eq!(lw.mean_entropy, None);
    }
}
