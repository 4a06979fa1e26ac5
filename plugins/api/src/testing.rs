//! Test helpers for plugin authors (feature `testing`): finite-difference checks of `loss`.

use crate::{
    authoring::{AlgorithmImpl, LossOutputs, Minibatch},
    error::PluginError,
};

/// Which input a derivative is taken with respect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrt {
    /// `logp_new`, checked against `d_logp`.
    LogpNew,
    /// `values_new`, checked against `d_value`.
    ValuesNew,
    /// `entropy_new`, checked against `d_entropy`.
    EntropyNew,
}

/// A derivative that disagrees with its finite-difference estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The input perturbed.
    pub wrt: Wrt,
    /// The token.
    pub index: usize,
    /// What `loss` reported.
    pub analytic: f64,
    /// Central difference of `Σ loss`.
    pub numeric: f64,
}

/// Outcome of [`check_loss_derivatives`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FdReport {
    /// Derivatives compared.
    pub checked: usize,
    /// Derivatives skipped because `Σ loss` has a kink within `h` (the one-sided slopes differ
    /// by more than half their size, e.g. at a clip boundary).
    pub skipped_kinks: usize,
    /// Disagreements.
    pub mismatches: Vec<Mismatch>,
}

/// Outputs of one `loss` call, owned.
fn run_loss<T: AlgorithmImpl>(
    alg: &mut T,
    mb: &Minibatch<'_>,
) -> Result<[Vec<f32>; 4], PluginError> {
    let m = mb.len();
    let (mut loss, mut d_logp, mut d_value, mut d_entropy) =
        (vec![0.0; m], vec![0.0; m], vec![0.0; m], vec![0.0; m]);
    let mut out = LossOutputs {
        loss: &mut loss,
        d_logp: &mut d_logp,
        d_value: &mut d_value,
        d_entropy: &mut d_entropy,
    };
    alg.loss(mb, &mut out)?;
    Ok([loss, d_logp, d_value, d_entropy])
}

fn total<T: AlgorithmImpl>(alg: &mut T, mb: &Minibatch<'_>) -> Result<f64, PluginError> {
    Ok(run_loss(alg, mb)?[0].iter().map(|&x| f64::from(x)).sum())
}

/// Compares every derivative `loss` reports on `mb` with a central difference of `Σ loss`,
/// step `h`, tolerance `atol + rtol·|numeric|`. Inputs that `mb` leaves empty are skipped.
///
/// Assumes `loss` is deterministic for a fixed minibatch (it is called many times).
///
/// # Errors
/// Whatever `loss` returns.
pub fn check_loss_derivatives<T: AlgorithmImpl>(
    alg: &mut T,
    mb: &Minibatch<'_>,
    h: f32,
    atol: f64,
    rtol: f64,
) -> Result<FdReport, PluginError> {
    mb.check()?;
    let [_, d_logp, d_value, d_entropy] = run_loss(alg, mb)?;
    let mut report = FdReport::default();
    for (wrt, analytic) in [
        (Wrt::LogpNew, &d_logp),
        (Wrt::ValuesNew, &d_value),
        (Wrt::EntropyNew, &d_entropy),
    ] {
        let base: Vec<f32> = match wrt {
            Wrt::LogpNew => mb.logp_new,
            Wrt::ValuesNew => mb.values_new,
            Wrt::EntropyNew => mb.entropy_new,
        }
        .to_vec();
        for i in 0..base.len() {
            let mut eval = |delta: f32| -> Result<f64, PluginError> {
                let mut x = base.clone();
                x[i] += delta;
                let mut p = mb.clone();
                match wrt {
                    Wrt::LogpNew => p.logp_new = &x,
                    Wrt::ValuesNew => p.values_new = &x,
                    Wrt::EntropyNew => p.entropy_new = &x,
                }
                total(alg, &p)
            };
            let (plus, zero, minus) = (eval(h)?, eval(0.0)?, eval(-h)?);
            let hh = f64::from(h);
            let (fwd, bwd) = ((plus - zero) / hh, (zero - minus) / hh);
            let numeric = (plus - minus) / (2.0 * hh);
            // A kink (slope jump, e.g. at a clip boundary) makes the one-sided slopes differ by
            // a sizeable fraction of themselves; smooth curvature only by O(h).
            if (fwd - bwd).abs() > 0.5 * fwd.abs().max(bwd.abs()) + 10.0 * atol {
                report.skipped_kinks += 1;
                continue;
            }
            report.checked += 1;
            let a = f64::from(analytic[i]);
            if (a - numeric).abs() > atol + rtol * numeric.abs() {
                report.mismatches.push(Mismatch {
                    wrt,
                    index: i,
                    analytic: a,
                    numeric,
                });
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Metric, Params, PluginInfo, Rollout};

    /// `loss_i = w·logp_i²`, reporting `d_logp = factor·w·logp_i` (correct for factor 2).
    struct Square {
        factor: f32,
    }

    impl AlgorithmImpl for Square {
        fn info() -> PluginInfo {
            PluginInfo::new("square", "0.0.0", "test")
        }
        fn new(_: &Params, _: u64) -> Result<Self, PluginError> {
            Ok(Self { factor: 2.0 })
        }
        fn compute_advantages(
            &mut self,
            _: &Rollout<'_>,
            _: &mut [f32],
            _: &mut [f32],
        ) -> Result<Vec<Metric>, PluginError> {
            Ok(Vec::new())
        }
        fn loss(
            &mut self,
            mb: &Minibatch<'_>,
            out: &mut LossOutputs<'_>,
        ) -> Result<Vec<Metric>, PluginError> {
            for (i, &l) in mb.logp_new.iter().enumerate() {
                out.loss[i] = 0.5 * l * l;
                out.d_logp[i] = self.factor * 0.5 * l;
            }
            Ok(Vec::new())
        }
    }

    #[test]
    fn a_wrong_derivative_is_reported_and_a_right_one_is_not() {
        let logp = [-1.0f32, -0.5, 0.25];
        let zeros = [0.0f32; 3];
        let idx = [0u32; 3];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp;
        mb.logp_old = &zeros;
        mb.advantages = &zeros;
        mb.token_weights = &[1.0; 3];
        mb.seq_index = &idx;
        mb.num_sequences = 1;
        let right = check_loss_derivatives(&mut Square { factor: 2.0 }, &mb, 1e-2, 1e-4, 1e-2)
            .expect("runs");
        assert_eq!((right.checked, right.mismatches.len()), (3, 0), "{right:?}");
        let wrong = check_loss_derivatives(&mut Square { factor: 1.0 }, &mb, 1e-2, 1e-4, 1e-2)
            .expect("runs");
        assert_eq!(wrong.mismatches.len(), 3, "{wrong:?}");
        assert_eq!(wrong.mismatches[0].wrt, Wrt::LogpNew);
    }
}
