//! Shared helpers of the kernels integration tests: configs, a hand-built balancing policy,
//! and a minimal PPO loop (CleanRL defaults) driving any `Engine`.

use drover_kernels::{
    AdamConfig, Engine, EngineConfig, MinibatchEval, NetShape, ParamLayout, Rollout,
};

/// A CartPole config with a `[h, h]` network.
pub fn config(
    num_envs: usize,
    num_steps: usize,
    hidden: usize,
    seed: u64,
    threads: usize,
) -> EngineConfig {
    EngineConfig {
        num_envs,
        env_offset: 0,
        num_steps,
        seed,
        shape: NetShape {
            obs_dim: 4,
            hidden: vec![hidden, hidden],
            n_actions: 2,
        },
        adam: AdamConfig::default(),
        threads,
        cuda_ordinal: 0,
    }
}

/// Replaces the actor of `params` with a controller that pushes right when
/// `0.1 x + 0.5 x_dot + theta + 0.5 theta_dot > 0` (balances CartPole for 500 steps), keeping
/// the critic. The policy is sharp away from the switching surface and random near it.
pub fn balancing_actor(layout: &ParamLayout, params: &mut [f32]) {
    let end = layout.critic[0].weight;
    params[..end].iter_mut().for_each(|p| *p = 0.0);
    let (l0, l1, l2) = (layout.actor[0], layout.actor[1], layout.actor[2]);
    for (k, w) in [0.1f32, 0.5, 1.0, 0.5].iter().enumerate() {
        params[l0.weight + k * l0.fan_out] = 5.0 * w;
    }
    params[l1.weight] = 3.0;
    params[l2.weight] = -20.0;
    params[l2.weight + 1] = 20.0;
}

/// Mini PPO hyperparameters (CleanRL `ppo.py` CartPole defaults).
pub struct Ppo {
    pub epochs: usize,
    pub minibatches: usize,
    pub gamma: f32,
    pub lambda: f32,
    pub clip: f32,
    pub ent_coef: f32,
    pub vf_coef: f32,
    pub lr: f32,
    pub max_grad_norm: f32,
}

impl Default for Ppo {
    fn default() -> Self {
        Self {
            epochs: 4,
            minibatches: 4,
            gamma: 0.99,
            lambda: 0.95,
            clip: 0.2,
            ent_coef: 0.01,
            vf_coef: 0.5,
            lr: 2.5e-4,
            max_grad_norm: 0.5,
        }
    }
}

/// Trains for `iterations` rollouts; returns the mean return of episodes finished in each one
/// (NaN when none finished).
pub fn train(engine: &mut dyn Engine, ppo: &Ppo, iterations: usize, seed: u64) -> Vec<f32> {
    let mut ro = Rollout::default();
    let mut ev = MinibatchEval::default();
    let mut curve = Vec::new();
    let mut rng = seed | 1;
    for it in 0..iterations {
        // CleanRL anneals the learning rate linearly to 0.
        let lr = ppo.lr * (1.0 - it as f32 / iterations as f32);
        engine.rollout(&mut ro).expect("rollout");
        let (nt, ne) = (ro.num_steps, ro.num_envs);
        let n = nt * ne;
        let mut adv = vec![0.0f32; n];
        for e in 0..ne {
            let mut last = 0.0f32;
            for t in (0..nt).rev() {
                let s = t * ne + e;
                let done = ro.terminated[s] == 1 || ro.truncated[s] == 1;
                // `next_values` already holds V(final obs) at truncations and 0 at terminations.
                let delta = ro.rewards[s] + ppo.gamma * ro.next_values[s] - ro.values[s];
                let carry = if done { 0.0 } else { last };
                last = delta + ppo.gamma * ppo.lambda * carry;
                adv[s] = last;
            }
        }
        let returns: Vec<f32> = adv.iter().zip(&ro.values).map(|(a, v)| a + v).collect();
        let mut idx: Vec<u32> = (0..n as u32).collect();
        let mb = n / ppo.minibatches;
        for _ in 0..ppo.epochs {
            for i in (1..n).rev() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                idx.swap(i, (rng % (i as u64 + 1)) as usize);
            }
            for chunk in idx.chunks(mb) {
                engine.evaluate(chunk, &mut ev).expect("evaluate");
                let b = chunk.len() as f32;
                let a: Vec<f32> = chunk.iter().map(|&s| adv[s as usize]).collect();
                let mean = a.iter().sum::<f32>() / b;
                let sd =
                    (a.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / (b - 1.0)).sqrt();
                let mut d_logp = vec![0.0; chunk.len()];
                let mut d_value = vec![0.0; chunk.len()];
                let d_ent = vec![-ppo.ent_coef / b; chunk.len()];
                for (j, &s) in chunk.iter().enumerate() {
                    let s = s as usize;
                    let an = (a[j] - mean) / (sd + 1e-8);
                    let ratio = (ev.logp[j] - ro.logp[s]).exp();
                    let clipped = ratio.clamp(1.0 - ppo.clip, 1.0 + ppo.clip);
                    // max(-A r, -A clip(r)): the gradient flows only through the unclipped branch.
                    if -an * ratio >= -an * clipped {
                        d_logp[j] = -an * ratio / b;
                    }
                    d_value[j] = ppo.vf_coef * (ev.values[j] - returns[s]) / b;
                }
                engine
                    .accumulate_grad(&d_logp, &d_value, &d_ent)
                    .expect("accumulate_grad");
                engine
                    .apply_grads(lr, Some(ppo.max_grad_norm))
                    .expect("apply_grads");
            }
        }
        let f = &ro.finished_returns;
        curve.push(if f.is_empty() {
            f32::NAN
        } else {
            f.iter().sum::<f32>() / f.len() as f32
        });
    }
    curve
}
