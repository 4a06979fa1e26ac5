//! Plain transcription of SEMANTICS.md section 6 behind the `Engine` seam: one env, one token,
//! one row at a time over the scalar `crate::reference` network, with its own prompt draw and
//! observation encoding. Slow; `SeqEngine` is tested against it.

use super::task::SeqTask;
use crate::reference::{
    adam_step, backward, clip_grad_norm, entropy, forward, grad_norm, init_params, log_softmax,
    sample,
};
use crate::rng::{draw, run_key, uniform, STREAM_ACTION, STREAM_PROMPT};
use crate::{DeviceKind, Engine, EngineConfig, KernelError, MinibatchEval, ParamLayout, Rollout};

/// The prompt of global group `group` in rollout `rollout`: token `k` is the high word of
/// `draw(key, STREAM_PROMPT, group, rollout * prompt_len + k) * vocab`.
pub fn prompt(task: &SeqTask, key: u32, rollout: u32, group: u32) -> Vec<u32> {
    let pl = task.prompt_len as u32;
    (0..pl)
        .map(|k| {
            let d = draw(
                key,
                STREAM_PROMPT,
                group,
                rollout.wrapping_mul(pl).wrapping_add(k),
            );
            ((d as u64 * task.vocab as u64) >> 32) as u32
        })
        .collect()
}

/// The observation of response step `t` given the prompt and the first `t` response tokens.
pub fn observation(task: &SeqTask, prompt: &[u32], prefix: &[u32], t: usize) -> Vec<f32> {
    let (v, pl, rl) = (task.vocab, task.prompt_len, task.response_len());
    let mut prompt_part = vec![0.0f32; pl * v];
    for k in 0..pl {
        prompt_part[k * v + prompt[k] as usize] = 1.0;
    }
    let mut prefix_part = vec![0.0f32; rl * v];
    for j in 0..t {
        prefix_part[j * v + prefix[j] as usize] = 1.0;
    }
    let mut position = vec![0.0f32; rl];
    position[t] = 1.0;
    [prompt_part, prefix_part, position].concat()
}

/// The reference sequence engine: same config and contracts as `SeqEngine`, computed one row at
/// a time. Config checks are `SeqEngine`'s; build one only from a config that engine accepts.
#[derive(Debug)]
pub struct SeqReferenceEngine {
    cfg: EngineConfig,
    task: SeqTask,
    layout: ParamLayout,
    key: u32,
    params: Vec<f32>,
    grads: Vec<f32>,
    adam_m: Vec<f32>,
    adam_v: Vec<f32>,
    adam_t: u64,
    step: u64,
    /// Observations and actions of the last rollout, `[t * N + env]`.
    obs: Vec<Vec<f32>>,
    actions: Vec<u32>,
    evaluated: Option<Vec<u32>>,
}

impl SeqReferenceEngine {
    /// Builds the engine (parameters from `init_params`); sizes are checked as `SeqEngine` does.
    pub fn new(cfg: EngineConfig, task: SeqTask) -> Result<Self, KernelError> {
        // The checks are the fast engine's; constructing one is the simplest way to run them.
        drop(super::SeqEngine::new(
            EngineConfig {
                threads: 1,
                ..cfg.clone()
            },
            task,
        )?);
        let layout = ParamLayout::new(&cfg.shape)?;
        let key = run_key(cfg.seed);
        let n = layout.num_params;
        Ok(Self {
            params: init_params(&layout, key),
            grads: vec![0.0; n],
            adam_m: vec![0.0; n],
            adam_v: vec![0.0; n],
            adam_t: 0,
            step: 0,
            obs: Vec::new(),
            actions: Vec::new(),
            evaluated: None,
            key,
            layout,
            task,
            cfg,
        })
    }
}

impl Engine for SeqReferenceEngine {
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
        let (nt, ne, g) = (self.cfg.num_steps, self.cfg.num_envs, self.task.group_size);
        let rollout = (self.step / nt as u64) as u32;
        *out = Rollout {
            num_steps: nt,
            num_envs: ne,
            ..Rollout::default()
        };
        let prompts: Vec<Vec<u32>> = (0..ne)
            .map(|i| {
                prompt(
                    &self.task,
                    self.key,
                    rollout,
                    ((self.cfg.env_offset + i) / g) as u32,
                )
            })
            .collect();
        let mut responses = vec![Vec::new(); ne];
        self.obs.clear();
        self.actions.clear();
        for t in 0..nt {
            let gt = (self.step + t as u64) as u32;
            for i in 0..ne {
                let obs = observation(&self.task, &prompts[i], &responses[i], t);
                let (logits, value) = forward(&self.layout, &self.params, &obs);
                let logp = log_softmax(&logits);
                let u = uniform(
                    self.key,
                    STREAM_ACTION,
                    (self.cfg.env_offset + i) as u32,
                    gt,
                );
                let a = sample(&logp, u);
                responses[i].push(a);
                self.obs.push(obs);
                self.actions.push(a);
                out.actions.push(a);
                out.logp.push(logp[a as usize]);
                out.entropy.push(entropy(&logp));
                out.values.push(value);
                let last = t + 1 == nt;
                let reward = if last && self.task.verify(&prompts[i], &responses[i]) {
                    1.0
                } else {
                    0.0
                };
                out.rewards.push(reward);
                out.terminated.push(last as u8);
                out.truncated.push(0);
            }
        }
        for s in 0..nt * ne {
            out.next_values.push(if s + ne < nt * ne {
                out.values[s + ne]
            } else {
                0.0
            });
        }
        out.finished_returns = out.rewards[(nt - 1) * ne..].to_vec();
        out.finished_lengths = vec![nt as u32; ne];
        self.step += nt as u64;
        self.evaluated = None;
        Ok(())
    }

    fn evaluate(&mut self, samples: &[u32], out: &mut MinibatchEval) -> Result<(), KernelError> {
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
            let (logits, value) = forward(&self.layout, &self.params, &self.obs[s]);
            let logp = log_softmax(&logits);
            out.logp.push(logp[self.actions[s] as usize]);
            out.entropy.push(entropy(&logp));
            out.values.push(value);
        }
        self.evaluated = Some(samples.to_vec());
        Ok(())
    }

    fn accumulate_grad(
        &mut self,
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
        for (name, got) in [
            ("d_logp", d_logp.len()),
            ("d_value", d_value.len()),
            ("d_entropy", d_entropy.len()),
        ] {
            if got != evaluated.len() {
                return Err(KernelError::Length {
                    name,
                    got,
                    expected: evaluated.len(),
                });
            }
        }
        for (i, &s) in evaluated.iter().enumerate() {
            let s = s as usize;
            backward(
                &self.layout,
                &self.params,
                &self.obs[s],
                self.actions[s],
                d_logp[i],
                d_value[i],
                d_entropy[i],
                &mut self.grads,
            );
        }
        Ok(())
    }

    fn reduce_grads(&mut self, reduce: &mut dyn FnMut(&mut [f32])) -> Result<(), KernelError> {
        reduce(&mut self.grads);
        Ok(())
    }

    fn apply_grads(&mut self, lr: f32, max_grad_norm: Option<f32>) -> Result<f32, KernelError> {
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
            &self.cfg.adam,
        );
        self.grads.iter_mut().for_each(|g| *g = 0.0);
        self.evaluated = None;
        Ok(norm)
    }

    fn params(&self) -> Result<Vec<f32>, KernelError> {
        Ok(self.params.clone())
    }

    fn set_params(&mut self, params: &[f32]) -> Result<(), KernelError> {
        if params.len() != self.params.len() {
            return Err(KernelError::Length {
                name: "params",
                got: params.len(),
                expected: self.params.len(),
            });
        }
        self.params.copy_from_slice(params);
        self.evaluated = None;
        Ok(())
    }
}
