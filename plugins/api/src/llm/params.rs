//! The GRPO-family parameters (`clip_ratio`, `clip_ratio_high`, `clip_ratio_c`, `kl_coef`,
//! `loss_agg_mode`, `loss_scale_factor`, `norm_adv_by_std`, `ent_coef`) declared and read in one
//! place, so every plugin that shares verl's keys shares their kinds, ranges and validation.
//!
//! A plugin writes one `const` [`PolicyLossParams`] (which keys it exposes, their defaults, any
//! doc it words differently), adds [`PolicyLossParams::specs`] to its `info()` and builds its
//! config with [`PolicyLossParams::read`]. Keys it does not expose keep their default value.

use crate::{
    authoring::Rollout,
    error::PluginError,
    params::Params,
    types::{Metric, ParamSpec, PluginInfo},
};

use super::{
    advantage::{outcome_advantages, Baseline},
    aggregate::{loss_scale_factor_from_params, LossAggMode},
    policy_loss::{require_reference, PolicyLossConfig},
    surrogate::ClipRange,
};

/// One of the shared parameters, in the order [`PolicyLossKey::ALL`] lists them (GRPO's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyLossKey {
    /// `clip_ratio`: ε of the ratio clip, ε_low and (by default) ε_high; float in [0, 1].
    ClipRatio,
    /// `clip_ratio_high`: ε_high for clip-higher; float ≥ 0, `null` meaning `clip_ratio`.
    ClipRatioHigh,
    /// `clip_ratio_c`: the dual-clip constant; float ≥ 1 that must be > 1, `null` for none.
    ClipRatioC,
    /// `kl_coef`: β of the KL penalty; float ≥ 0.
    KlCoef,
    /// `loss_agg_mode`: a [`LossAggMode`] name.
    LossAggMode,
    /// `loss_scale_factor`: `C` of `seq-mean-token-sum-norm`; float that must be > 0, `null`
    /// for the padded length.
    LossScaleFactor,
    /// `norm_adv_by_std`: divide group-centred scores by the group's std.
    NormAdvByStd,
    /// `ent_coef`: the entropy bonus; float ≥ 0.
    EntCoef,
}

impl PolicyLossKey {
    /// Every key, in GRPO's order.
    pub const ALL: [Self; 8] = [
        Self::ClipRatio,
        Self::ClipRatioHigh,
        Self::ClipRatioC,
        Self::KlCoef,
        Self::LossAggMode,
        Self::LossScaleFactor,
        Self::NormAdvByStd,
        Self::EntCoef,
    ];

    /// The parameter's name (verl's key).
    pub const fn name(self) -> &'static str {
        match self {
            Self::ClipRatio => "clip_ratio",
            Self::ClipRatioHigh => "clip_ratio_high",
            Self::ClipRatioC => "clip_ratio_c",
            Self::KlCoef => "kl_coef",
            Self::LossAggMode => "loss_agg_mode",
            Self::LossScaleFactor => "loss_scale_factor",
            Self::NormAdvByStd => "norm_adv_by_std",
            Self::EntCoef => "ent_coef",
        }
    }

    /// The doc a plugin gets unless it words its own ([`PolicyLossParams::docs`]).
    pub const fn common_doc(self) -> &'static str {
        match self {
            Self::ClipRatio => "Clip range ε of the probability ratio (ε_low, and ε_high unless clip_ratio_high is set); 0.2 in the GRPO paper and verl.",
            Self::ClipRatioHigh => "Upper clip range ε_high for clip-higher (DAPO, arXiv 2503.14476: 0.28); null: equal to clip_ratio.",
            Self::ClipRatioC => "Dual-clip constant c > 1 capping negative-advantage token losses at −A·c (verl clip_ratio_c, 3.0 there; DAPO recipes 10); null: no dual clip, as in the GRPO paper.",
            Self::KlCoef => "β of the k3 KL penalty to the reference policy (verl kl_loss_coef, low_var_kl); 0 as in TRL and in verl without use_kl_loss (verl's kl_loss_coef is 0.001 when on), the GRPO paper used 0.04; > 0 needs run.reference_policy = \"initial\".",
            Self::LossAggMode => "Loss aggregation: token-mean (verl default, DAPO), seq-mean-token-mean (the GRPO paper), seq-mean-token-sum, or seq-mean-token-sum-norm (Dr. GRPO, with loss_scale_factor).",
            Self::LossScaleFactor => "Divisor C of seq-mean-token-sum-norm (Dr. GRPO, arXiv 2503.20783: the generation budget); null: the padded response length T, as verl.",
            Self::NormAdvByStd => "Divide group-centred scores by the group's unbiased std + 1e-6 (GRPO; verl norm_adv_by_std_in_grpo); false gives Dr. GRPO's r − mean.",
            Self::EntCoef => "Entropy bonus coefficient (verl entropy_coeff; 0 in verl's GRPO examples).",
        }
    }
}

/// A plugin's default for each shared parameter; for a key the plugin does not expose, the
/// value it always uses. An `Option` default of `Some(x)` declares a plain float with default
/// `x` (`null` refused), `None` an optional float defaulting to `null`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyLossDefaults {
    /// `clip_ratio`.
    pub clip_ratio: f64,
    /// `clip_ratio_high`; `None`: equal to `clip_ratio`.
    pub clip_ratio_high: Option<f64>,
    /// `clip_ratio_c`; `None`: no dual clip.
    pub clip_ratio_c: Option<f64>,
    /// `kl_coef`.
    pub kl_coef: f64,
    /// `loss_agg_mode`.
    pub loss_agg_mode: LossAggMode,
    /// `loss_scale_factor`; `None`: the padded length.
    pub loss_scale_factor: Option<f64>,
    /// `norm_adv_by_std`.
    pub norm_adv_by_std: bool,
    /// `ent_coef`.
    pub ent_coef: f64,
}

impl PolicyLossDefaults {
    /// GRPO's (verl's): symmetric clip 0.2, no dual clip, no KL, token-mean, the padded length,
    /// std normalization, no entropy bonus. Matches [`PolicyLossConfig::default`].
    pub const GRPO: Self = Self {
        clip_ratio: 0.2,
        clip_ratio_high: None,
        clip_ratio_c: None,
        kl_coef: 0.0,
        loss_agg_mode: LossAggMode::TokenMean,
        loss_scale_factor: None,
        norm_adv_by_std: true,
        ent_coef: 0.0,
    };

    /// Dr. GRPO's: GRPO's with `seq-mean-token-sum-norm` and no std normalization.
    pub const DR_GRPO: Self = Self {
        loss_agg_mode: LossAggMode::SeqMeanTokenSumNorm,
        norm_adv_by_std: false,
        ..Self::GRPO
    };

    /// DAPO's loss: clip-higher 0.28 and dual clip 10 (verl's DAPO recipe), token-mean.
    pub const DAPO: Self = Self {
        clip_ratio_high: Some(0.28),
        clip_ratio_c: Some(10.0),
        ..Self::GRPO
    };
}

impl Default for PolicyLossDefaults {
    fn default() -> Self {
        Self::GRPO
    }
}

/// Which shared parameters a plugin declares, with its defaults and its own wording of any doc;
/// written once as a `const` and used by both `info()` ([`Self::specs`]) and `new()`
/// ([`Self::read`]), so the two cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyLossParams {
    /// The declared keys, in the order `info()` lists them.
    pub keys: &'static [PolicyLossKey],
    /// Defaults of the declared keys and fixed values of the others.
    pub defaults: PolicyLossDefaults,
    /// Docs replacing [`PolicyLossKey::common_doc`] (a plugin-specific paper reference, a
    /// different meaning of the key); keys not listed get the common doc.
    pub docs: &'static [(PolicyLossKey, &'static str)],
}

impl PolicyLossParams {
    /// Every key with GRPO's defaults and the common docs: GRPO's own declaration.
    pub const GRPO: Self = Self {
        keys: &PolicyLossKey::ALL,
        defaults: PolicyLossDefaults::GRPO,
        docs: &[],
    };

    /// The doc of `key`: the plugin's own wording, else the common one.
    pub fn doc(&self, key: PolicyLossKey) -> &'static str {
        self.docs
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(key.common_doc(), |(_, doc)| doc)
    }

    /// The spec of `key` (declared or not): its kind from the default, its range, its doc.
    pub fn spec(&self, key: PolicyLossKey) -> ParamSpec {
        let (name, doc, d) = (key.name(), self.doc(key), &self.defaults);
        let opt = |v: Option<f64>| match v {
            Some(x) => ParamSpec::float(name, x, doc),
            None => ParamSpec::optional_float(name, doc),
        };
        match key {
            PolicyLossKey::ClipRatio => ParamSpec::float(name, d.clip_ratio, doc).range(0.0, 1.0),
            PolicyLossKey::ClipRatioHigh => opt(d.clip_ratio_high).min(0.0),
            PolicyLossKey::ClipRatioC => opt(d.clip_ratio_c).min(1.0),
            PolicyLossKey::KlCoef => ParamSpec::float(name, d.kl_coef, doc).min(0.0),
            PolicyLossKey::LossAggMode => ParamSpec::string(name, d.loss_agg_mode.name(), doc),
            PolicyLossKey::LossScaleFactor => opt(d.loss_scale_factor).min(0.0),
            PolicyLossKey::NormAdvByStd => ParamSpec::bool(name, d.norm_adv_by_std, doc),
            PolicyLossKey::EntCoef => ParamSpec::float(name, d.ent_coef, doc).min(0.0),
        }
    }

    /// The specs of the declared keys, in [`Self::keys`] order.
    pub fn specs(&self) -> Vec<ParamSpec> {
        self.keys.iter().map(|&k| self.spec(k)).collect()
    }

    /// `info` with the declared keys' specs appended (for plugins that list them last).
    pub fn declare(&self, info: PluginInfo) -> PluginInfo {
        self.specs().into_iter().fold(info, PluginInfo::param)
    }

    fn declares(&self, key: PolicyLossKey) -> bool {
        self.keys.contains(&key)
    }

    /// The settings: declared keys from `p`, the others from [`Self::defaults`].
    ///
    /// # Errors
    /// `invalid_params` naming the key: `clip_ratio_c` not greater than 1, `loss_scale_factor`
    /// not positive, an unknown `loss_agg_mode`; `p`'s errors for a key it lacks (a plugin
    /// whose `info()` did not list [`Self::specs`]).
    pub fn read(&self, p: &Params) -> Result<PolicyLossSettings, PluginError> {
        use PolicyLossKey as K;
        let d = &self.defaults;
        let dual_clip = if self.declares(K::ClipRatioC) {
            ClipRange::dual_clip_from_params(p)?
        } else {
            d.clip_ratio_c
        };
        let loss_scale_factor = if self.declares(K::LossScaleFactor) {
            loss_scale_factor_from_params(p)?
        } else {
            d.loss_scale_factor
        };
        let f64_or = |key: PolicyLossKey, default: f64| -> Result<f64, PluginError> {
            if self.declares(key) {
                p.f64(key.name())
            } else {
                Ok(default)
            }
        };
        let low = f64_or(K::ClipRatio, d.clip_ratio)?;
        let high = if self.declares(K::ClipRatioHigh) {
            p.opt_f64(K::ClipRatioHigh.name())?
        } else {
            d.clip_ratio_high
        };
        let agg = if self.declares(K::LossAggMode) {
            LossAggMode::from_params(p, K::LossAggMode.name())?
        } else {
            d.loss_agg_mode
        };
        let norm_adv_by_std = if self.declares(K::NormAdvByStd) {
            p.bool(K::NormAdvByStd.name())?
        } else {
            d.norm_adv_by_std
        };
        Ok(PolicyLossSettings {
            norm_adv_by_std,
            loss: PolicyLossConfig {
                clip: ClipRange {
                    low,
                    high: high.unwrap_or(low),
                    dual_clip,
                },
                agg,
                loss_scale_factor,
                ent_coef: f64_or(K::EntCoef, d.ent_coef)?,
                kl_coef: f64_or(K::KlCoef, d.kl_coef)?,
            },
        })
    }
}

/// What [`PolicyLossParams::read`] returns: GRPO's advantage switch and the token loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyLossSettings {
    /// Divide group-centred scores by the group's std (false: Dr. GRPO).
    pub norm_adv_by_std: bool,
    /// The token loss: clip range, aggregation, entropy bonus, KL coefficient.
    pub loss: PolicyLossConfig,
}

impl Default for PolicyLossSettings {
    /// GRPO's: std normalization and [`PolicyLossConfig::default`].
    fn default() -> Self {
        Self {
            norm_adv_by_std: true,
            loss: PolicyLossConfig::default(),
        }
    }
}

impl PolicyLossSettings {
    /// GRPO's advantage stage: the reference check of `loss.kl_coef` ([`require_reference`],
    /// so a missing `logp_ref` fails at the first call rather than in the first minibatch),
    /// then [`outcome_advantages`] with the group-normalized baseline.
    ///
    /// # Errors
    /// Those of [`require_reference`] and [`outcome_advantages`].
    pub fn group_advantages(
        &self,
        algorithm: &str,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        require_reference(algorithm, self.loss.kl_coef, batch.logp_ref)?;
        let baseline = Baseline::GroupNormalized {
            norm_by_std: self.norm_adv_by_std,
        };
        outcome_advantages(algorithm, batch, baseline, advantages, returns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(params: &PolicyLossParams, json: &str) -> Result<PolicyLossSettings, PluginError> {
        params.read(&Params::parse(&params.specs(), json)?)
    }

    #[test]
    fn grpo_specs_list_every_key_with_verls_defaults_and_ranges() {
        let specs = PolicyLossParams::GRPO.specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "clip_ratio",
                "clip_ratio_high",
                "clip_ratio_c",
                "kl_coef",
                "loss_agg_mode",
                "loss_scale_factor",
                "norm_adv_by_std",
                "ent_coef"
            ]
        );
        let row = |s: &ParamSpec| {
            (
                s.default.to_string(),
                s.min.into_option(),
                s.max.into_option(),
            )
        };
        let rows: Vec<_> = specs.iter().map(row).collect();
        assert_eq!(
            rows,
            [
                ("0.2".to_owned(), Some(0.0), Some(1.0)),
                ("null".to_owned(), Some(0.0), None),
                ("null".to_owned(), Some(1.0), None),
                ("0.0".to_owned(), Some(0.0), None),
                ("\"token-mean\"".to_owned(), None, None),
                ("null".to_owned(), Some(0.0), None),
                ("true".to_owned(), None, None),
                ("0.0".to_owned(), Some(0.0), None),
            ]
        );
        assert_eq!(
            parse(&PolicyLossParams::GRPO, "{}").expect("defaults"),
            PolicyLossSettings::default()
        );
    }

    #[test]
    fn every_key_round_trips_through_specs_and_read() {
        let s = parse(
            &PolicyLossParams::GRPO,
            r#"{"clip_ratio": 0.1, "clip_ratio_high": 0.28, "clip_ratio_c": 3, "kl_coef": 0.04,
                "loss_agg_mode": "seq-mean-token-sum-norm", "loss_scale_factor": 512,
                "norm_adv_by_std": false, "ent_coef": 0.01}"#,
        )
        .expect("valid");
        assert_eq!(
            s,
            PolicyLossSettings {
                norm_adv_by_std: false,
                loss: PolicyLossConfig {
                    clip: ClipRange {
                        low: 0.1,
                        high: 0.28,
                        dual_clip: Some(3.0)
                    },
                    agg: LossAggMode::SeqMeanTokenSumNorm,
                    loss_scale_factor: Some(512.0),
                    ent_coef: 0.01,
                    kl_coef: 0.04,
                },
            }
        );
    }

    /// A subset keeps the plugin's order and doc, and the keys left out take the defaults.
    #[test]
    fn undeclared_keys_take_the_plugin_defaults_and_docs_can_be_reworded() {
        const P: PolicyLossParams = PolicyLossParams {
            keys: &[PolicyLossKey::EntCoef, PolicyLossKey::LossScaleFactor],
            defaults: PolicyLossDefaults {
                clip_ratio: 0.3,
                loss_scale_factor: Some(1.0),
                ..PolicyLossDefaults::DR_GRPO
            },
            docs: &[(PolicyLossKey::EntCoef, "mine")],
        };
        let specs = P.specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ent_coef", "loss_scale_factor"]);
        assert_eq!(specs[0].doc.as_str(), "mine");
        assert_eq!(
            specs[1].doc.as_str(),
            PolicyLossKey::LossScaleFactor.common_doc()
        );
        // A `Some` default is a plain float: `null` is refused by the host's validation.
        assert_eq!(specs[1].default.as_str(), "1.0");
        assert!(Params::parse(&specs, r#"{"loss_scale_factor": null}"#).is_err());
        let s = parse(&P, r#"{"ent_coef": 0.5}"#).expect("valid");
        assert_eq!(s.loss.clip, ClipRange::symmetric(0.3));
        assert_eq!(s.loss.agg, LossAggMode::SeqMeanTokenSumNorm);
        assert_eq!(s.loss.loss_scale_factor, Some(1.0));
        assert_eq!((s.loss.ent_coef, s.loss.kl_coef), (0.5, 0.0));
        assert!(!s.norm_adv_by_std);
        // An undeclared key is the host's unknown-parameter error, naming it.
        let e = parse(&P, r#"{"kl_coef": 0.1}"#).expect_err("not declared");
        assert_eq!(e.key(), Some("kl_coef"));
        let info = P.declare(PluginInfo::new("x", "0.1.0", "test"));
        assert_eq!(info.params.len(), 2);
        assert_eq!(info.params[1], specs[1]);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (json, key, says) in [
            (r#"{"clip_ratio_c": 1.0}"#, "clip_ratio_c", "greater than 1"),
            (
                r#"{"loss_scale_factor": 0}"#,
                "loss_scale_factor",
                "positive",
            ),
            (
                r#"{"loss_agg_mode": "mean"}"#,
                "loss_agg_mode",
                "token-mean",
            ),
            (r#"{"clip_ratio": 1.5}"#, "clip_ratio", ""),
            (r#"{"kl_coef": -0.1}"#, "kl_coef", ""),
            (r#"{"norm_adv_by_std": 1}"#, "norm_adv_by_std", ""),
        ] {
            let e = parse(&PolicyLossParams::GRPO, json).expect_err(json);
            assert_eq!(e.key(), Some(key), "{json}: {e}");
            assert!(e.message().contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn group_advantages_check_the_reference_first() {
        let s = parse(&PolicyLossParams::GRPO, r#"{"kl_coef": 0.04}"#).expect("valid");
        // Two one-token responses of one group, scores [1, 0]: mean ½, unbiased std √½.
        let mask = [1.0f32; 2];
        let rewards = [1.0f32, 0.0];
        let mut batch = Rollout::new(2, 1);
        batch.mask = &mask;
        batch.rewards = &rewards;
        batch.group_ids = &[0, 0];
        let (mut adv, mut ret) = ([0.0f32; 2], [0.0f32; 2]);
        let e = s
            .group_advantages("grpo", &batch, &mut adv, &mut ret)
            .expect_err("no logp_ref");
        assert_eq!(e.key(), Some("kl_coef"));
        let no_kl = PolicyLossSettings {
            loss: PolicyLossConfig::default(),
            ..s
        };
        let m = no_kl
            .group_advantages("grpo", &batch, &mut adv, &mut ret)
            .expect("runs");
        let a = 0.5 / (0.5f64.sqrt() + 1e-6);
        assert!((f64::from(adv[0]) - a).abs() < 1e-6, "{adv:?}");
        assert!((f64::from(adv[1]) + a).abs() < 1e-6, "{adv:?}");
        assert_eq!(ret, adv);
        // Without std normalization: r − mean.
        let dr = PolicyLossSettings {
            norm_adv_by_std: false,
            ..no_kl
        };
        dr.group_advantages("dr_grpo", &batch, &mut adv, &mut ret)
            .expect("runs");
        assert_eq!(adv, [0.5, -0.5]);
        assert!(m
            .iter()
            .any(|m| m.name.as_str() == "score_mean" && m.value == 0.5));
    }
}
