//! Plain transcription of SEMANTICS.md section 6 behind the `Engine` seam: one env, one token,
//! one row at a time over the scalar `crate::reference` network, with its own prompt draw and
//! observation encoding. Slow; `SeqEngine` is tested against it.

use super::task::{EnvPlan, PromptRef, SeqTask};
use crate::reference::{entropy, forward, log_softmax, sample, RefLearner};
use crate::rng::{draw, run_key, uniform, DATASET_SEED, STREAM_ACTION, STREAM_DATASET, STREAM_PROMPT};
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

/// The prompt `which` names: [`prompt`], or dataset prompt `i`, whose token `k` is the high
/// word of `draw(run_key(DATASET_SEED), STREAM_DATASET, i, k) * vocab`.
pub fn prompt_of(task: &SeqTask, key: u32, which: PromptRef) -> Vec<u32> {
    match which {
        PromptRef::Drawn { rollout, group } => prompt(task, key, rollout, group),
        PromptRef::Dataset(i) => (0..task.prompt_len as u32)
            .map(|k| ((draw(run_key(DATASET_SEED), STREAM_DATASET, i, k) as u64 * task.vocab as u64) >> 32) as u32)
            .collect(),
    }
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
    /// Parameters, optimiser and the last rollout's observations and actions.
    learn: RefLearner<Vec<f32>>,
    step: u64,
    /// The plan of the next rollout; `None`: the default layout.
    plan: Option<Vec<EnvPlan>>,
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
        Ok(Self {
            learn: RefLearner::new(&layout, key),
            step: 0,
            plan: None,
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
        let plan: Vec<EnvPlan> = self.plan.take().unwrap_or_else(|| {
            (0..ne)
                .map(|i| {
                    let e = self.cfg.env_offset + i;
                    EnvPlan {
                        prompt: PromptRef::Drawn { rollout, group: (e / g) as u32 },
                        expert: self.task.is_expert(e),
                    }
                })
                .collect()
        });
        let prompts: Vec<Vec<u32>> = plan.iter().map(|p| prompt_of(&self.task, self.key, p.prompt)).collect();
        let answers: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| {
                let mut a = vec![0; nt];
                self.task.answer(p, &mut a);
                a
            })
            .collect();
        let mut responses = vec![Vec::new(); ne];
        self.learn.obs.clear();
        self.learn.actions.clear();
        #[expect(
            clippy::needless_range_loop,
            reason = "`t` is the time step (used in arithmetic) and the inner index of `answers[env][t]`; the suggested `answers.iter().enumerate()` would walk envs, not steps"
        )]
        for t in 0..nt {
            let gt = (self.step + t as u64) as u32;
            for i in 0..ne {
                let obs = observation(&self.task, &prompts[i], &responses[i], t);
                let (logits, value) = forward(&self.layout, &self.learn.params, &obs);
                let logp = log_softmax(&logits);
                let u = uniform(
                    self.key,
                    STREAM_ACTION,
                    (self.cfg.env_offset + i) as u32,
                    gt,
                );
                // Expert envs (the last `expert_per_group` of each group) take the answer's token.
                let a = if plan[i].expert {
                    answers[i][t]
                } else {
                    sample(&logp, u)
                };
                responses[i].push(a);
                self.learn.obs.push(obs);
                self.learn.actions.push(a);
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
        self.learn.evaluated = None;
        Ok(())
    }

    fn evaluate(&mut self, samples: &[u32], out: &mut MinibatchEval) -> Result<(), KernelError> {
        self.learn.evaluate(&self.layout, samples, out)
    }

    fn plan_rollout(&mut self, plan: &[EnvPlan]) -> Result<(), KernelError> {
        if plan.len() != self.cfg.num_envs {
            return Err(KernelError::Length { name: "plan", got: plan.len(), expected: self.cfg.num_envs });
        }
        self.plan = Some(plan.to_vec());
        Ok(())
    }

    fn load_sequences(&mut self, prompts: &[PromptRef], actions: &[u32]) -> Result<(), KernelError> {
        let (ne, nt) = (self.cfg.num_envs, self.cfg.num_steps);
        if prompts.len() != ne || actions.len() != ne * nt {
            return Err(KernelError::Length { name: "prompts/actions", got: prompts.len(), expected: ne });
        }
        let prompts: Vec<Vec<u32>> = prompts.iter().map(|&p| prompt_of(&self.task, self.key, p)).collect();
        self.learn.obs.clear();
        self.learn.actions.clear();
        for t in 0..nt {
            for (i, p) in prompts.iter().enumerate() {
                let prefix: Vec<u32> = (0..t).map(|j| actions[j * ne + i]).collect();
                self.learn.obs.push(observation(&self.task, p, &prefix, t));
                self.learn.actions.push(actions[t * ne + i]);
            }
        }
        self.learn.evaluated = None;
        Ok(())
    }

    crate::cpu::learner::delegate_learning!();
}
