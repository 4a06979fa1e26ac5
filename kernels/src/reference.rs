//! Plain scalar transcription of SEMANTICS.md: one env, one sample, one loop at a time.
//! It favours being obviously right over being fast; the CPU and CUDA engines are tested
//! against it (directly, or through [`ReferenceEngine`], which runs it behind the `Engine` seam).

use crate::layout::{LayerLayout, ParamLayout};
use crate::math::{sincos, tanh};
use crate::rng::{uniform, STREAM_ACTION, STREAM_INIT, STREAM_RESET};
use crate::{AdamConfig, DeviceKind, Engine, EngineConfig, KernelError, MinibatchEval, Rollout};

/// CartPole-v1 constants (SEMANTICS.md section 2), as the f32 values every backend uses.
pub mod cartpole {
    /// Gravity.
    pub const GRAVITY: f32 = 9.8;
    /// Pole mass.
    pub const MASS_POLE: f32 = 0.1;
    /// Cart plus pole mass.
    pub const TOTAL_MASS: f32 = 1.1;
    /// Half the pole length.
    pub const HALF_LENGTH: f32 = 0.5;
    /// `MASS_POLE * HALF_LENGTH`.
    pub const POLEMASS_LENGTH: f32 = 0.05;
    /// Magnitude of the push.
    pub const FORCE_MAG: f32 = 10.0;
    /// Euler time step.
    pub const TAU: f32 = 0.02;
    /// `4/3` as the f32 constant `1.3333334`.
    pub const FOUR_THIRDS: f32 = 1.333_333_4;
    /// Pole angle limit, `12 * 2 * pi / 360` radians.
    pub const THETA_THRESHOLD: f32 = 0.209_439_51;
    /// Cart position limit.
    pub const X_THRESHOLD: f32 = 2.4;
    /// Time limit (gymnasium's `max_episode_steps`).
    pub const MAX_STEPS: u32 = 500;
}

/// Initial state of env `env` (global index) for reset counter `reset_counter`:
/// component `k` is `uniform(key, STREAM_RESET, env, 4 * reset_counter + k) * 0.1 - 0.05`.
pub fn cartpole_reset(key: u32, env: u32, reset_counter: u32) -> [f32; 4] {
    let mut s = [0.0f32; 4];
    for (k, v) in s.iter_mut().enumerate() {
        let counter = reset_counter.wrapping_mul(4).wrapping_add(k as u32);
        *v = uniform(key, STREAM_RESET, env, counter) * 0.1 - 0.05;
    }
    s
}

/// One CartPole step of `state = (x, x_dot, theta, theta_dot)` with `action` (1 pushes right,
/// anything else left); increments `steps`. Returns `(reward, terminated, truncated)`.
/// Does not reset: the caller applies the same-step autoreset.
pub fn cartpole_step(state: &mut [f32; 4], steps: &mut u32, action: u32) -> (f32, bool, bool) {
    use cartpole::*;
    let [mut x, mut x_dot, mut theta, mut theta_dot] = *state;
    let force = if action == 1 { FORCE_MAG } else { -FORCE_MAG };
    let (s, c) = sincos(theta);
    let temp = (force + POLEMASS_LENGTH * theta_dot * theta_dot * s) / TOTAL_MASS;
    let theta_acc =
        (GRAVITY * s - c * temp) / (HALF_LENGTH * (FOUR_THIRDS - MASS_POLE * c * c / TOTAL_MASS));
    let x_acc = temp - POLEMASS_LENGTH * theta_acc * c / TOTAL_MASS;
    x += TAU * x_dot;
    x_dot += TAU * x_acc;
    theta += TAU * theta_dot;
    theta_dot += TAU * theta_acc;
    *state = [x, x_dot, theta, theta_dot];
    *steps += 1;
    #[expect(
        clippy::manual_range_contains,
        reason = "exactly as SEMANTICS.md writes it: `!range.contains` would also terminate on NaN"
    )]
    let terminated =
        x < -X_THRESHOLD || x > X_THRESHOLD || theta < -THETA_THRESHOLD || theta > THETA_THRESHOLD;
    let truncated = !terminated && *steps >= MAX_STEPS;
    (1.0, terminated, truncated)
}

/// The `j`-th standard normal of parameter initialisation: Box-Muller (cosine branch only) on
/// `u1 = 1 - uniform(key, STREAM_INIT, 0, 2j)` (in `(0, 1]`) and `u2 = uniform(.., 2j + 1)`,
/// computed in f64.
pub fn init_gaussian(key: u32, j: u32) -> f64 {
    let u1 = 1.0 - uniform(key, STREAM_INIT, 0, j.wrapping_mul(2)) as f64;
    let u2 = uniform(key, STREAM_INIT, 0, j.wrapping_mul(2).wrapping_add(1)) as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * core::f64::consts::PI * u2).cos()
}

/// Fills one `[fan_in][fan_out]` weight with a scaled orthogonal matrix, as PyTorch's
/// `orthogonal_` does (columns orthonormal when `fan_in >= fan_out`, rows otherwise).
///
/// Exact procedure (host-side; every backend uses this function's output): the tall matrix
/// `A` of `rows = max(fan_in, fan_out)` by `cols = min(..)` is filled row-major with Gaussians
/// `init_gaussian(key, j)` for consecutive `j` starting at `*next_j`; modified Gram-Schmidt in
/// f64 orthonormalises its columns left to right; `W = gain * A` when `fan_in >= fan_out`, else
/// `gain * A^T`.
fn orthogonal_into(w: &mut [f32], layer: &LayerLayout, gain: f64, key: u32, next_j: &mut u32) {
    let (rows, cols) = (
        layer.fan_in.max(layer.fan_out),
        layer.fan_in.min(layer.fan_out),
    );
    let mut a = vec![0.0f64; rows * cols];
    for v in a.iter_mut() {
        *v = init_gaussian(key, *next_j);
        *next_j = next_j.wrapping_add(1);
    }
    for c in 0..cols {
        for prev in 0..c {
            let dot: f64 = (0..rows)
                .map(|r| a[r * cols + c] * a[r * cols + prev])
                .sum();
            for r in 0..rows {
                a[r * cols + c] -= dot * a[r * cols + prev];
            }
        }
        let norm = (0..rows)
            .map(|r| a[r * cols + c] * a[r * cols + c])
            .sum::<f64>()
            .sqrt();
        // A Gaussian column is linearly dependent with probability 0; guard the division anyway.
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        for r in 0..rows {
            a[r * cols + c] *= inv;
        }
    }
    for i in 0..layer.fan_in {
        for o in 0..layer.fan_out {
            let v = if layer.fan_in >= layer.fan_out {
                a[i * cols + o]
            } else {
                a[o * cols + i]
            };
            w[i * layer.fan_out + o] = (gain * v) as f32;
        }
    }
}

/// Initial flat parameters (CleanRL `layer_init`): orthogonal weights with gain `sqrt(2)` on
/// hidden layers, `0.01` on the actor output, `1.0` on the critic output; zero biases.
/// Gaussian index `j` runs over all weight entries in buffer order (actor first). Both engines
/// initialise on the host with this function.
pub fn init_params(layout: &ParamLayout, key: u32) -> Vec<f32> {
    let mut p = vec![0.0f32; layout.num_params];
    let mut next_j = 0u32;
    for (layers, out_gain) in [(&layout.actor, 0.01f64), (&layout.critic, 1.0f64)] {
        for (i, layer) in layers.iter().enumerate() {
            let gain = if i + 1 == layers.len() {
                out_gain
            } else {
                core::f64::consts::SQRT_2
            };
            let w = &mut p[layer.weight..layer.weight + layer.fan_in * layer.fan_out];
            orthogonal_into(w, layer, gain, key, &mut next_j);
        }
    }
    p
}

/// One dense layer on one row: `y[j] = b[j] + sum_k x[k] * W[k][j]` (sum in k order, then bias).
fn dense(layer: &LayerLayout, params: &[f32], x: &[f32]) -> Vec<f32> {
    let w = &params[layer.weight..layer.bias];
    let b = &params[layer.bias..layer.bias + layer.fan_out];
    (0..layer.fan_out)
        .map(|j| {
            let mut acc = 0.0f32;
            for k in 0..layer.fan_in {
                acc += x[k] * w[k * layer.fan_out + j];
            }
            b[j] + acc
        })
        .collect()
}

/// Activations of one MLP on one row: `[input, tanh(h1), ..., output (no activation)]`.
fn mlp_activations(layers: &[LayerLayout], params: &[f32], obs: &[f32]) -> Vec<Vec<f32>> {
    let mut acts = vec![obs.to_vec()];
    for (i, layer) in layers.iter().enumerate() {
        let mut y = dense(layer, params, &acts[i]);
        if i + 1 < layers.len() {
            y.iter_mut().for_each(|v| *v = tanh(*v));
        }
        acts.push(y);
    }
    acts
}

/// Actor logits and critic value of one observation row.
pub fn forward(layout: &ParamLayout, params: &[f32], obs: &[f32]) -> (Vec<f32>, f32) {
    let logits = mlp_activations(&layout.actor, params, obs)
        .pop()
        .unwrap_or_default();
    let value = mlp_activations(&layout.critic, params, obs)
        .pop()
        .unwrap_or_default();
    (logits, value[0])
}

/// Critic value of one observation row.
pub fn value(layout: &ParamLayout, params: &[f32], obs: &[f32]) -> f32 {
    mlp_activations(&layout.critic, params, obs)
        .pop()
        .unwrap_or_default()[0]
}

/// `logp[a] = logit[a] - logsumexp(logits)`, with `logsumexp = max + ln(sum exp(logit - max))`.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - m).exp()).sum();
    let lse = m + sum.ln();
    logits.iter().map(|&l| l - lse).collect()
}

/// `-sum p[a] logp[a]` with `p = exp(logp)`.
pub fn entropy(logp: &[f32]) -> f32 {
    // `p_logp`: an action of probability 0 adds nothing, though its logp is -inf.
    -logp.iter().map(|&lp| p_logp(lp.exp(), lp)).sum::<f32>()
}

/// `p * logp`, the entropy's term of one action: 0 where `p` is 0. An action pushed out of reach
/// has `logp = -inf` once its logit gap overflows f32, and `0 * -inf` would make the entropy,
/// and through it every gradient, NaN; a NaN `p` (a NaN logit) still propagates.
#[inline]
pub fn p_logp(p: f32, lp: f32) -> f32 {
    if p == 0.0 {
        0.0
    } else {
        p * lp
    }
}

/// `d_entropy * p * (lp + h)`, the entropy's part of dL/dlogit of one action: 0 where `p` is 0,
/// for the reason of [`p_logp`].
#[inline]
pub fn d_entropy_term(d_entropy: f32, p: f32, lp: f32, h: f32) -> f32 {
    if p == 0.0 {
        0.0
    } else {
        d_entropy * p * (lp + h)
    }
}

/// The smallest action `a` with `u < sum_{b<=a} exp(logp[b])` (the last one if rounding leaves
/// none).
pub fn sample(logp: &[f32], u: f32) -> u32 {
    let mut cum = 0.0f32;
    for (a, &lp) in logp.iter().enumerate() {
        cum += lp.exp();
        if u < cum {
            return a as u32;
        }
    }
    logp.len().saturating_sub(1) as u32
}

/// Backward of one MLP given dL/d(output); adds into `grads`.
fn mlp_backward(
    layers: &[LayerLayout],
    params: &[f32],
    acts: &[Vec<f32>],
    d_out: Vec<f32>,
    grads: &mut [f32],
) {
    let mut dy = d_out;
    for (i, layer) in layers.iter().enumerate().rev() {
        let x = &acts[i];
        for k in 0..layer.fan_in {
            for j in 0..layer.fan_out {
                grads[layer.weight + k * layer.fan_out + j] += x[k] * dy[j];
            }
        }
        for j in 0..layer.fan_out {
            grads[layer.bias + j] += dy[j];
        }
        if i > 0 {
            // Through W then through the tanh of the previous layer: d pre = dx * (1 - y^2).
            dy = (0..layer.fan_in)
                .map(|k| {
                    let mut dx = 0.0f32;
                    for j in 0..layer.fan_out {
                        dx += params[layer.weight + k * layer.fan_out + j] * dy[j];
                    }
                    dx * (1.0 - x[k] * x[k])
                })
                .collect();
        }
    }
}

/// dL/dlogits of one sample for `L = d_logp * logp[action] + d_entropy * H`:
/// `d_logp * (1[i == action] - p_i) - d_entropy * p_i * (logp_i + H)`.
pub fn d_logits(logp: &[f32], action: u32, d_logp: f32, d_entropy: f32) -> Vec<f32> {
    let h = entropy(logp);
    logp.iter()
        .enumerate()
        .map(|(i, &lp)| {
            let p = lp.exp();
            let onehot = if i as u32 == action { 1.0 } else { 0.0 };
            d_logp * (onehot - p) - d_entropy_term(d_entropy, p, lp, h)
        })
        .collect()
}

/// Adds dL/dtheta of one sample into `grads`, for
/// `L = d_logp * logp[action] + d_value * V + d_entropy * H` at observation `obs`.
#[expect(clippy::too_many_arguments, reason = "a kernel takes its dimensions, operand slices and strides flat, as BLAS does, so the hot loops see plain slices")]
pub fn backward(
    layout: &ParamLayout,
    params: &[f32],
    obs: &[f32],
    action: u32,
    d_logp: f32,
    d_value: f32,
    d_entropy: f32,
    grads: &mut [f32],
) {
    let actor = mlp_activations(&layout.actor, params, obs);
    let logp = log_softmax(&actor[actor.len() - 1]);
    let dl = d_logits(&logp, action, d_logp, d_entropy);
    mlp_backward(&layout.actor, params, &actor, dl, grads);
    let critic = mlp_activations(&layout.critic, params, obs);
    mlp_backward(&layout.critic, params, &critic, vec![d_value], grads);
}

/// Global L2 norm of `grads` (squares summed in f64).
pub fn grad_norm(grads: &[f32]) -> f32 {
    grads
        .iter()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt() as f32
}

/// PyTorch `clip_grad_norm_`: when `norm > max_norm`, scales by `max_norm / (norm + 1e-6)`.
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grad_norm(grads);
    if norm > max_norm {
        let coef = max_norm / (norm + 1e-6);
        grads.iter_mut().for_each(|g| *g *= coef);
    }
    norm
}

/// Bias corrections `(1 - b1^t, 1 - b2^t)` of Adam step `t` (1-based), computed in f64 and
/// rounded to f32 (PyTorch computes them as Python floats).
pub fn adam_bias_corrections(cfg: &AdamConfig, t: u64) -> (f32, f32) {
    let t = t.min(i32::MAX as u64) as i32;
    (
        (1.0 - (cfg.beta1 as f64).powi(t)) as f32,
        (1.0 - (cfg.beta2 as f64).powi(t)) as f32,
    )
}

/// One Adam step `t` (1-based, already incremented) with PyTorch semantics:
/// `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr * (m / bc1) / (sqrt(v / bc2) + eps)`.
pub fn adam_step(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    t: u64,
    lr: f32,
    cfg: &AdamConfig,
) {
    let (bc1, bc2) = adam_bias_corrections(cfg, t);
    for i in 0..params.len() {
        let g = grads[i];
        m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g;
        v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g * g;
        let m_hat = m[i] / bc1;
        let v_hat = v[i] / bc2;
        params[i] -= lr * m_hat / (v_hat.sqrt() + cfg.eps);
    }
}

/// `Engine::accumulate_grad`'s length contract: one upstream gradient per evaluated row.
pub(crate) fn check_grad_lengths(
    rows: usize,
    d_logp: &[f32],
    d_value: &[f32],
    d_entropy: &[f32],
) -> Result<(), KernelError> {
    for (name, got) in [
        ("d_logp", d_logp.len()),
        ("d_value", d_value.len()),
        ("d_entropy", d_entropy.len()),
    ] {
        if got != rows {
            return Err(KernelError::Length {
                name,
                got,
                expected: rows,
            });
        }
    }
    Ok(())
}

/// `Engine::set_params`: copies `src` over `params` when the lengths agree.
pub(crate) fn copy_params(params: &mut [f32], src: &[f32]) -> Result<(), KernelError> {
    if src.len() != params.len() {
        return Err(KernelError::Length {
            name: "params",
            got: src.len(),
            expected: params.len(),
        });
    }
    params.copy_from_slice(src);
    Ok(())
}

/// The learning half of the reference engines (`ReferenceEngine` and
/// `seq::reference::SeqReferenceEngine`): parameters, gradients, Adam state and the last
/// rollout's observations and actions (`[t * N + env]`), evaluated one row at a time.
#[derive(Debug)]
pub(crate) struct RefLearner<O> {
    pub(crate) params: Vec<f32>,
    grads: Vec<f32>,
    adam_m: Vec<f32>,
    adam_v: Vec<f32>,
    adam_t: u64,
    /// Observations of the last rollout, filled by the engine.
    pub(crate) obs: Vec<O>,
    /// Actions of the last rollout, filled by the engine.
    pub(crate) actions: Vec<u32>,
    /// Samples of the last `evaluate`; `None` once a rollout, `apply_grads` or `set_params`
    /// made them stale (as in the CPU engine).
    pub(crate) evaluated: Option<Vec<u32>>,
}

impl<O: AsRef<[f32]>> RefLearner<O> {
    /// Parameters from [`init_params`], zero gradient and Adam state, no rollout.
    pub(crate) fn new(layout: &ParamLayout, key: u32) -> Self {
        let n = layout.num_params;
        Self {
            params: init_params(layout, key),
            grads: vec![0.0; n],
            adam_m: vec![0.0; n],
            adam_v: vec![0.0; n],
            adam_t: 0,
            obs: Vec::new(),
            actions: Vec::new(),
            evaluated: None,
        }
    }

    /// The current parameters.
    pub(crate) fn params(&self) -> &[f32] {
        &self.params
    }

    /// `Engine::evaluate` over the stored rollout.
    pub(crate) fn evaluate(
        &mut self,
        layout: &ParamLayout,
        samples: &[u32],
        out: &mut MinibatchEval,
    ) -> Result<(), KernelError> {
        out.logp.clear();
        out.entropy.clear();
        out.values.clear();
        for &s in samples {
            let s = s as usize;
            if s >= self.obs.len() {
                return Err(KernelError::InvalidConfig(format!(
                    "sample {s} out of range (rollout has {})",
                    self.obs.len()
                )));
            }
            let (logits, value) = forward(layout, &self.params, self.obs[s].as_ref());
            let logp = log_softmax(&logits);
            out.logp.push(logp[self.actions[s] as usize]);
            out.entropy.push(entropy(&logp));
            out.values.push(value);
        }
        self.evaluated = Some(samples.to_vec());
        Ok(())
    }

    /// `Engine::accumulate_grad`: row-by-row backward of the last `evaluate`.
    pub(crate) fn accumulate_grad(
        &mut self,
        layout: &ParamLayout,
        d_logp: &[f32],
        d_value: &[f32],
        d_entropy: &[f32],
    ) -> Result<(), KernelError> {
        let Some(evaluated) = &self.evaluated else {
            return Err(KernelError::InvalidConfig(
                "accumulate_grad needs an evaluate since the last rollout, apply_grads or set_params"
                    .into(),
            ));
        };
        check_grad_lengths(evaluated.len(), d_logp, d_value, d_entropy)?;
        for (i, &s) in evaluated.iter().enumerate() {
            let s = s as usize;
            backward(
                layout,
                &self.params,
                self.obs[s].as_ref(),
                self.actions[s],
                d_logp[i],
                d_value[i],
                d_entropy[i],
                &mut self.grads,
            );
        }
        Ok(())
    }

    /// `Engine::reduce_grads`.
    pub(crate) fn reduce_grads(&mut self, reduce: &mut dyn FnMut(&mut [f32])) {
        reduce(&mut self.grads);
    }

    /// `Engine::apply_grads`: clip, one Adam step, zero the gradient; the pre-clip norm.
    pub(crate) fn apply_grads(
        &mut self,
        lr: f32,
        max_grad_norm: Option<f32>,
        adam: &AdamConfig,
    ) -> f32 {
        let norm = match max_grad_norm {
            Some(max) => clip_grad_norm(&mut self.grads, max),
            None => grad_norm(&self.grads),
        };
        self.adam_t += 1;
        adam_step(
            &mut self.params,
            &self.grads,
            &mut self.adam_m,
            &mut self.adam_v,
            self.adam_t,
            lr,
            adam,
        );
        self.grads.iter_mut().for_each(|g| *g = 0.0);
        self.evaluated = None;
        norm
    }

    /// `Engine::set_params` (length-checked).
    pub(crate) fn set_params(&mut self, params: &[f32]) -> Result<(), KernelError> {
        copy_params(&mut self.params, params)?;
        self.evaluated = None;
        Ok(())
    }
}

/// The reference as an [`Engine`]: per-env, per-sample loops over the functions above.
/// Slow; meant for tests of other engines (same config, same seed, compare outputs).
#[derive(Debug)]
pub struct ReferenceEngine {
    cfg: EngineConfig,
    layout: ParamLayout,
    key: u32,
    learn: RefLearner<[f32; 4]>,
    step: u64,
    state: Vec<[f32; 4]>,
    steps: Vec<u32>,
    ep_return: Vec<f32>,
    ep_len: Vec<u32>,
    has_rollout: bool,
}

impl ReferenceEngine {
    /// Builds the engine: parameters from [`init_params`], every env reset with counter 0.
    pub fn new(cfg: EngineConfig) -> Result<Self, KernelError> {
        let layout = crate::layout::validate_config(&cfg)?;
        let key = crate::rng::run_key(cfg.seed);
        let state = (0..cfg.num_envs)
            .map(|i| cartpole_reset(key, (cfg.env_offset + i) as u32, 0))
            .collect();
        Ok(Self {
            key,
            learn: RefLearner::new(&layout, key),
            step: 0,
            state,
            steps: vec![0; cfg.num_envs],
            ep_return: vec![0.0; cfg.num_envs],
            ep_len: vec![0; cfg.num_envs],
            has_rollout: false,
            layout,
            cfg,
        })
    }

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }
}

impl Engine for ReferenceEngine {
    fn device(&self) -> DeviceKind {
        DeviceKind::Cpu
    }

    fn num_params(&self) -> usize {
        self.layout.num_params
    }

    fn global_step(&self) -> u64 {
        self.step
    }

    fn rollout(&mut self, out: &mut Rollout) -> Result<(), KernelError> {
        let (nt, ne) = (self.cfg.num_steps, self.cfg.num_envs);
        *out = Rollout {
            num_steps: nt,
            num_envs: ne,
            ..Rollout::default()
        };
        self.learn.obs.clear();
        self.learn.actions.clear();
        // V(final obs) of a truncation, filled in once known.
        let mut final_values = vec![None; nt * ne];
        for t in 0..nt {
            let gt = self.step as u32;
            for i in 0..ne {
                let env = (self.cfg.env_offset + i) as u32;
                let obs = self.state[i];
                let (logits, value) = forward(&self.layout, &self.learn.params, &obs);
                let logp = log_softmax(&logits);
                let a = sample(&logp, uniform(self.key, STREAM_ACTION, env, gt));
                self.learn.obs.push(obs);
                self.learn.actions.push(a);
                out.actions.push(a);
                out.logp.push(logp[a as usize]);
                out.entropy.push(entropy(&logp));
                out.values.push(value);
                let (r, term, trunc) = cartpole_step(&mut self.state[i], &mut self.steps[i], a);
                out.rewards.push(r);
                out.terminated.push(term as u8);
                out.truncated.push(trunc as u8);
                self.ep_return[i] += r;
                self.ep_len[i] += 1;
                if term || trunc {
                    if trunc {
                        final_values[t * ne + i] =
                            Some(value_of(&self.layout, &self.learn.params, &self.state[i]));
                    }
                    out.finished_returns.push(self.ep_return[i]);
                    out.finished_lengths.push(self.ep_len[i]);
                    self.ep_return[i] = 0.0;
                    self.ep_len[i] = 0;
                    self.state[i] = cartpole_reset(self.key, env, gt.wrapping_add(1));
                    self.steps[i] = 0;
                }
            }
            self.step += 1;
        }
        for t in 0..nt {
            for i in 0..ne {
                let s = t * ne + i;
                let nv = if out.terminated[s] == 1 {
                    0.0
                } else if let Some(v) = final_values[s] {
                    v
                } else if t + 1 < nt {
                    out.values[s + ne]
                } else {
                    value_of(&self.layout, &self.learn.params, &self.state[i])
                };
                out.next_values.push(nv);
            }
        }
        self.has_rollout = true;
        self.learn.evaluated = None;
        Ok(())
    }

    fn evaluate(&mut self, samples: &[u32], out: &mut MinibatchEval) -> Result<(), KernelError> {
        if !self.has_rollout {
            return Err(KernelError::InvalidConfig(
                "evaluate called before rollout".into(),
            ));
        }
        self.learn.evaluate(&self.layout, samples, out)
    }

    crate::cpu::learner::delegate_learning!();
}

fn value_of(layout: &ParamLayout, params: &[f32], state: &[f32; 4]) -> f32 {
    value(layout, params, state)
}

#[cfg(test)]
mod tests;
