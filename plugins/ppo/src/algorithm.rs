//! PPO's parameters and its `AlgorithmImpl`: wiring GAE, the loss and the `target_kl` stop.

use drover_plugin_api::{
    AlgorithmImpl, LossOutputs, Metric, Minibatch, ParamSpec, Params, PluginError, PluginInfo,
    Rollout,
};

use crate::{gae::gae, loss::ppo_loss};

/// PPO's hyper-parameters: CleanRL's defaults, except that a truncated step bootstraps from
/// its final observation (`bootstrap_truncated`; `false` is CleanRL's rule). Learning rate, epochs, minibatches and
/// gradient clipping belong to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct PpoConfig {
    /// Discount γ.
    pub gamma: f32,
    /// GAE λ.
    pub gae_lambda: f32,
    /// Clip range ε for the ratio and (with `clip_vloss`) the value.
    pub clip_coef: f32,
    /// Clip the value loss around the old value.
    pub clip_vloss: bool,
    /// Entropy bonus coefficient.
    pub ent_coef: f32,
    /// Value loss coefficient.
    pub vf_coef: f32,
    /// Normalize advantages per minibatch.
    pub norm_adv: bool,
    /// Stop an iteration's epochs once approx_kl exceeds this.
    pub target_kl: Option<f64>,
    /// Bootstrap a truncated episode's last step from V(final observation); false treats
    /// truncation as termination, CleanRL's rule (`next_done = terminations | truncations`).
    pub bootstrap_truncated: bool,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            gamma: 0.99,
            gae_lambda: 0.95,
            clip_coef: 0.2,
            clip_vloss: true,
            ent_coef: 0.01,
            vf_coef: 0.5,
            norm_adv: true,
            target_kl: None,
            bootstrap_truncated: true,
        }
    }
}

impl PpoConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        // Params are validated f64s; f32 is the precision of every buffer we compute on.
        Ok(Self {
            gamma: p.f64("gamma")? as f32,
            gae_lambda: p.f64("gae_lambda")? as f32,
            clip_coef: p.f64("clip_coef")? as f32,
            clip_vloss: p.bool("clip_vloss")?,
            ent_coef: p.f64("ent_coef")? as f32,
            vf_coef: p.f64("vf_coef")? as f32,
            norm_adv: p.bool("norm_adv")?,
            target_kl: p.opt_f64("target_kl")?,
            bootstrap_truncated: p.bool("bootstrap_truncated")?,
        })
    }
}

/// The PPO algorithm instance.
#[derive(Debug, Clone)]
pub struct Ppo {
    config: PpoConfig,
    /// approx_kl of the last minibatch this instance computed (CleanRL's early-stop input).
    last_approx_kl: Option<f64>,
}

impl Ppo {
    /// An instance with `config`.
    pub fn with_config(config: PpoConfig) -> Self {
        Self {
            config,
            last_approx_kl: None,
        }
    }
}

impl AlgorithmImpl for Ppo {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "ppo",
            env!("CARGO_PKG_VERSION"),
            "PPO with GAE(λ), CleanRL conventions (a truncated episode bootstraps from its final observation unless bootstrap_truncated = false)",
        )
        .param(ParamSpec::float("gamma", 0.99, "Discount factor γ.").range(0.0, 1.0))
        .param(
            ParamSpec::float(
                "gae_lambda",
                0.95,
                "GAE λ (1: Monte-Carlo returns, 0: TD(0)).",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::float(
                "clip_coef",
                0.2,
                "Clip range ε of the probability ratio, and of the value with `clip_vloss`.",
            )
            .min(0.0),
        )
        .param(ParamSpec::bool(
            "clip_vloss",
            true,
            "Clip the value loss around the rollout's value (CleanRL).",
        ))
        .param(ParamSpec::float("ent_coef", 0.01, "Entropy bonus coefficient.").min(0.0))
        .param(ParamSpec::float("vf_coef", 0.5, "Value loss coefficient.").min(0.0))
        .param(ParamSpec::bool(
            "norm_adv",
            true,
            "Normalize advantages per minibatch: (A − mean)/(std + 1e-8), unbiased std.",
        ))
        .param(
            ParamSpec::optional_float(
                "target_kl",
                "Stop the iteration's remaining epochs once the last minibatch's approx_kl exceeds this, as CleanRL does (null: never).",
            )
            .min(0.0),
        )
        .param(ParamSpec::bool(
            "bootstrap_truncated",
            true,
            "Bootstrap a time-limit-truncated episode's last step from V(final observation) (Pardo et al. 2018); false: treat truncation as termination, CleanRL's rule, to reproduce its numbers.",
        ))
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // PPO draws no random numbers itself: minibatch shuffling is the host's.
        Ok(Self::with_config(PpoConfig::from_params(params)?))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        gae(&self.config, batch, advantages, returns)?;
        Ok(Vec::new())
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        let stats = ppo_loss(&self.config, mb, out)?;
        if let Some(s) = &stats {
            self.last_approx_kl = Some(s.approx_kl);
        }
        Ok(stats.map(|s| s.metrics()).unwrap_or_default())
    }

    /// CleanRL (L292-293) breaks after an epoch whose approx_kl exceeds `target_kl`, judged on
    /// the epoch's last minibatch: this instance's last value, the same on every rank (each
    /// computes the loss of the whole global minibatch). The host's epoch mean of `approx_kl`
    /// only stands in when this instance computed none.
    fn on_epoch_end(&mut self, _epoch: u32, metrics: &[Metric]) -> Result<bool, PluginError> {
        let Some(target) = self.config.target_kl else {
            return Ok(true);
        };
        let host_kl = metrics
            .iter()
            .find(|m| m.name.as_str() == "approx_kl")
            .map(|m| m.value);
        Ok(match self.last_approx_kl.or(host_kl) {
            Some(kl) => kl <= target,
            None => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(json: &str) -> Result<Ppo, PluginError> {
        let params = Params::parse(&Ppo::info().params, json)?;
        Ppo::new(&params, 0)
    }

    #[test]
    fn defaults_are_cleanrls_but_truncation_bootstraps() {
        let ppo = make("{}").expect("defaults are valid");
        assert_eq!(ppo.config, PpoConfig::default());
        assert!(ppo.config.bootstrap_truncated);
        let e = make(r#"{"clip_coef": -0.1}"#).expect_err("negative clip");
        assert_eq!(e.key(), Some("clip_coef"));
        let e = make(r#"{"lr": 0.1}"#).expect_err("lr is the host's");
        assert_eq!(e.key(), Some("lr"));
    }

    #[test]
    fn target_kl_stops_epochs() {
        let mut ppo = make(r#"{"target_kl": 0.01}"#).expect("valid");
        let kl = |v| vec![Metric::new("approx_kl", v)];
        // Before any minibatch of its own, the host's epoch mean stands in.
        assert_eq!(ppo.on_epoch_end(0, &kl(0.005)).ok(), Some(true));
        assert_eq!(ppo.on_epoch_end(0, &kl(0.02)).ok(), Some(false));
        // The last minibatch's value decides, as in CleanRL, whatever the epoch's mean.
        ppo.last_approx_kl = Some(0.5);
        assert_eq!(ppo.on_epoch_end(1, &[]).ok(), Some(false));
        assert_eq!(ppo.on_epoch_end(1, &kl(0.001)).ok(), Some(false));
        ppo.last_approx_kl = Some(0.001);
        assert_eq!(ppo.on_epoch_end(1, &kl(0.5)).ok(), Some(true));
        let mut never = make("{}").expect("valid");
        assert_eq!(never.on_epoch_end(0, &kl(10.0)).ok(), Some(true));
    }
}
