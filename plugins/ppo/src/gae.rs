//! The advantage stage: GAE(λ) over sequence-major rollouts, cut at episode and segment ends.

use drover_plugin_api::{PluginError, Rollout};

use crate::algorithm::PpoConfig;

/// Fills `advantages` and `returns` (`B·T`) with GAE(λ) and `A + V`.
///
/// For each valid step (`mask > 0`), walking each sequence backwards:
/// `δ_t = r_t + γ·next_value_t·(1 − terminated_t) − V_t` and
/// `A_t = δ_t + γλ·A_{t+1}`, where the `A_{t+1}` term is dropped when the step is
/// terminated or truncated, is the sequence's last step, or is followed by padding (a segment
/// end). `next_value_t` is the host's V(s_{t+1}) of the true next state, so a truncated or cut
/// step bootstraps from it. Padding gets `A = returns = 0`.
///
/// With `bootstrap_truncated` false a truncated step counts as terminated (no bootstrap), which
/// is CleanRL's rule (`next_done = terminations | truncations`) and reproduces its numbers.
///
/// # Errors
/// `invalid_input` when the batch lacks `values`, `next_values`, `terminated` or `truncated`.
pub fn gae(
    cfg: &PpoConfig,
    batch: &Rollout<'_>,
    advantages: &mut [f32],
    returns: &mut [f32],
) -> Result<(), PluginError> {
    let values = Rollout::require("ppo", "values", batch.values)?;
    let next_values = Rollout::require("ppo", "next_values", batch.next_values)?;
    let terminated = Rollout::require("ppo", "terminated", batch.terminated)?;
    let truncated = Rollout::require("ppo", "truncated", batch.truncated)?;
    let (mask, rewards) = (batch.mask, batch.rewards);
    let t_len = batch.seq_len;
    let gamma = f64::from(cfg.gamma);
    let gamma_lambda = gamma * f64::from(cfg.gae_lambda);
    for s in 0..batch.num_sequences {
        // A_{t+1} of the step after the current one, already cut where needed.
        let mut next_adv = 0.0f64;
        for t in (0..t_len).rev() {
            let i = s * t_len + t;
            if mask[i] <= 0.0 {
                advantages[i] = 0.0;
                returns[i] = 0.0;
                next_adv = 0.0;
                continue;
            }
            let trunc = truncated[i] > 0.5;
            let term = terminated[i] > 0.5 || (trunc && !cfg.bootstrap_truncated);
            let cut = term || trunc || t + 1 == t_len || mask[i + 1] <= 0.0;
            let not_terminal = if term { 0.0 } else { 1.0 };
            let delta = f64::from(rewards[i]) + gamma * f64::from(next_values[i]) * not_terminal
                - f64::from(values[i]);
            let a = delta + if cut { 0.0 } else { gamma_lambda * next_adv };
            advantages[i] = a as f32;
            returns[i] = (a + f64::from(values[i])) as f32;
            next_adv = a;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::CounterRng;

    use super::*;

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    /// Hand-computed with γ = λ = 0.5 (γλ = 0.25).
    /// Sequence 0: terminated after t=1 (its next value 5 must be ignored), cut by the rollout
    /// end after t=3 (bootstrap V = 2). Sequence 1: truncated after t=0 (bootstrap from the
    /// final observation's V = 3), segment end after t=2 (t=3 is padding).
    #[test]
    fn gae_by_hand_with_termination_truncation_and_segment_end() {
        let cfg = PpoConfig {
            gamma: 0.5,
            gae_lambda: 0.5,
            ..PpoConfig::default()
        };
        let mask = [1., 1., 1., 1., 1., 1., 1., 0.];
        let rewards = [1., 0., 2., 1., 1., 1., 1., 9.];
        let values = [0.5, 1., 0.5, 1., 1., 1., 1., 9.];
        let next_values = [1., 5., 1., 2., 3., 1., 2., 9.];
        let terminated = [0., 1., 0., 0., 0., 0., 0., 0.];
        let truncated = [0., 0., 0., 0., 1., 0., 0., 0.];
        let mut batch = Rollout::new(2, 4);
        batch.mask = &mask;
        batch.rewards = &rewards;
        batch.values = &values;
        batch.next_values = &next_values;
        batch.terminated = &terminated;
        batch.truncated = &truncated;
        batch.check().expect("consistent batch");
        let (mut adv, mut ret) = ([f32::NAN; 8], [f32::NAN; 8]);
        gae(&cfg, &batch, &mut adv, &mut ret).expect("gae runs");
        // δ = [1, −1, 2, 1 | 1.5, 0.5, 1, –]
        // A0 = 1 + .25·(−1); A1 = −1 (terminated); A2 = 2 + .25·1; A3 = 1 (rollout end)
        // A4 = 1.5 (truncated); A5 = .5 + .25·1; A6 = 1 (segment end); A7 padding
        assert!(
            close(&adv, &[0.75, -1.0, 2.25, 1.0, 1.5, 0.75, 1.0, 0.0]),
            "{adv:?}"
        );
        assert!(
            close(&ret, &[1.25, 0.0, 2.75, 2.0, 2.5, 1.75, 2.0, 0.0]),
            "{ret:?}"
        );
        // CleanRL's rule: the truncated step is terminal, A4 = 1 − 1 = 0; nothing else moves.
        let cleanrl = PpoConfig {
            bootstrap_truncated: false,
            ..cfg
        };
        gae(&cleanrl, &batch, &mut adv, &mut ret).expect("gae runs");
        assert!(
            close(&adv, &[0.75, -1.0, 2.25, 1.0, 0.0, 0.75, 1.0, 0.0]),
            "{adv:?}"
        );
    }

    /// CleanRL's loop (ppo.py L217-231), transcribed, for one env of T steps.
    fn cleanrl_gae(
        gamma: f64,
        lam: f64,
        rewards: &[f32],
        values: &[f32],
        dones: &[f32],
        next_value: f32,
        next_done: f32,
    ) -> Vec<f32> {
        let t_len = rewards.len();
        let mut adv = vec![0.0f32; t_len];
        let mut lastgaelam = 0.0f64;
        for t in (0..t_len).rev() {
            let (nnt, nextvalues) = if t == t_len - 1 {
                (1.0 - f64::from(next_done), f64::from(next_value))
            } else {
                (1.0 - f64::from(dones[t + 1]), f64::from(values[t + 1]))
            };
            let delta = f64::from(rewards[t]) + gamma * nextvalues * nnt - f64::from(values[t]);
            lastgaelam = delta + gamma * lam * nnt * lastgaelam;
            adv[t] = lastgaelam as f32;
        }
        adv
    }

    #[test]
    fn matches_cleanrl_when_truncation_counts_as_termination() {
        let mut rng = CounterRng::new(42);
        let t_len = 64;
        let mut uniform = || rng.next_f64() as f32;
        let rewards: Vec<f32> = (0..t_len).map(|_| uniform()).collect();
        let values: Vec<f32> = (0..t_len).map(|_| uniform() * 2.0 - 1.0).collect();
        let dones: Vec<f32> = (0..t_len)
            .map(|_| if uniform() < 0.1 { 1.0 } else { 0.0 })
            .collect();
        let (next_value, next_done) = (0.7f32, 0.0f32);
        let expected = cleanrl_gae(0.99, 0.95, &rewards, &values, &dones, next_value, next_done);

        // drover's contract: done_after[t] = dones[t+1]; next_values = V(s_{t+1}), 0 if done.
        let done_after: Vec<f32> = (0..t_len)
            .map(|t| {
                if t + 1 < t_len {
                    dones[t + 1]
                } else {
                    next_done
                }
            })
            .collect();
        let next_values: Vec<f32> = (0..t_len)
            .map(|t| {
                let v = if t + 1 < t_len {
                    values[t + 1]
                } else {
                    next_value
                };
                v * (1.0 - done_after[t])
            })
            .collect();
        let (mask, zeros) = (vec![1.0; t_len], vec![0.0; t_len]);
        let mut batch = Rollout::new(1, t_len);
        batch.mask = &mask;
        batch.rewards = &rewards;
        batch.values = &values;
        batch.next_values = &next_values;
        batch.terminated = &done_after;
        batch.truncated = &zeros;
        let (mut adv, mut ret) = (vec![0.0; t_len], vec![0.0; t_len]);
        gae(&PpoConfig::default(), &batch, &mut adv, &mut ret).expect("gae runs");
        assert!(close(&adv, &expected), "{adv:?}\n{expected:?}");
        let expected_ret: Vec<f32> = expected.iter().zip(&values).map(|(a, v)| a + v).collect();
        assert!(close(&ret, &expected_ret));

        // The flags a drover host sends: some episodes end truncated, with V(final observation)
        // as their next value. `bootstrap_truncated = false` gives CleanRL's numbers all the same;
        // the default bootstraps there, so it does not.
        let truncated: Vec<f32> = done_after
            .iter()
            .enumerate()
            .map(|(t, &d)| if d > 0.5 && t % 2 == 0 { 1.0 } else { 0.0 })
            .collect();
        assert!(truncated.contains(&1.0), "the case has a truncated step");
        let terminated: Vec<f32> = done_after.iter().zip(&truncated).map(|(d, tr)| d - tr).collect();
        let final_obs_values: Vec<f32> = next_values
            .iter()
            .zip(&truncated)
            .map(|(&v, &tr)| if tr > 0.5 { 5.0 } else { v })
            .collect();
        batch.terminated = &terminated;
        batch.truncated = &truncated;
        batch.next_values = &final_obs_values;
        let cleanrl = PpoConfig {
            bootstrap_truncated: false,
            ..PpoConfig::default()
        };
        gae(&cleanrl, &batch, &mut adv, &mut ret).expect("gae runs");
        assert!(close(&adv, &expected), "{adv:?}\n{expected:?}");
        gae(&PpoConfig::default(), &batch, &mut adv, &mut ret).expect("gae runs");
        assert!(!close(&adv, &expected), "the default bootstraps truncated steps");
    }

    #[test]
    fn missing_values_is_an_error_naming_the_buffer() {
        let mask = [1.0; 2];
        let mut batch = Rollout::new(1, 2);
        batch.mask = &mask;
        batch.rewards = &mask;
        let e = gae(&PpoConfig::default(), &batch, &mut [0.0; 2], &mut [0.0; 2])
            .expect_err("no values");
        assert!(e.to_string().contains("`values`"), "{e}");
    }
}
