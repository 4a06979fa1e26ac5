//! The host half of the CUDA sequence engine (SEMANTICS.md section 6): what a rollout or a
//! replay uploads (each local env's prompt, answer and expert flag) and the rollout outputs the
//! host derives from the generated tokens. Pure code, so the CPU emulation of the kernels
//! (`emu/driver`) runs exactly what the engine runs.

use crate::seq::{EnvPlan, PromptRef, SeqTask};
use crate::Rollout;

/// Per-local-env inputs of the `seq_rollout` and `seq_build_obs` kernels.
#[derive(Debug, Clone)]
pub struct SeqInputs {
    task: SeqTask,
    /// Which prompt each local env answers.
    pub refs: Vec<PromptRef>,
    /// Prompt tokens, `[env][prompt_len]`.
    pub prompts: Vec<u32>,
    /// The correct response to each prompt, `[env][response_len]` (the expert tokens, and what
    /// the verifier compares with).
    pub answers: Vec<u32>,
    /// 1 when the env is teacher-forced (an expert response), else 0.
    pub expert: Vec<u8>,
}

impl SeqInputs {
    /// Inputs for `num_envs` local envs of `task` (all dataset prompt 0 until filled).
    pub fn new(task: SeqTask, num_envs: usize) -> Self {
        Self {
            task,
            refs: vec![PromptRef::Dataset(0); num_envs],
            prompts: vec![0; num_envs * task.prompt_len],
            answers: vec![0; num_envs * task.response_len()],
            expert: vec![0; num_envs],
        }
    }

    /// The inputs of rollout `rollout` (0-based): `plan` when the host gave one
    /// (`Engine::plan_rollout`), else the default layout of global envs `env_offset..`.
    /// A plan's length is the caller's to check.
    pub fn for_rollout(&mut self, key: u32, env_offset: usize, rollout: u32, plan: Option<&[EnvPlan]>) {
        for i in 0..self.refs.len() {
            let p = match plan {
                Some(plan) => plan[i],
                None => self.task.default_plan(rollout, env_offset + i),
            };
            (self.refs[i], self.expert[i]) = (p.prompt, u8::from(p.expert));
        }
        self.draw(key);
    }

    /// The inputs of a replay (`Engine::load_sequences`): the given prompts, no expert (loaded
    /// responses are evaluated, never generated).
    pub fn for_replay(&mut self, key: u32, prompts: &[PromptRef]) {
        self.refs.copy_from_slice(prompts);
        self.expert.fill(0);
        self.draw(key);
    }

    fn draw(&mut self, key: u32) {
        let (pl, rl) = (self.task.prompt_len, self.task.response_len());
        for (i, &which) in self.refs.iter().enumerate() {
            let p = &mut self.prompts[i * pl..(i + 1) * pl];
            self.task.prompt_of(key, which, p);
            self.task.answer(p, &mut self.answers[i * rl..(i + 1) * rl]);
        }
    }

    /// Fills the outputs that follow from the tokens (`out.actions`) and values (`out.values`),
    /// both already time-major `[t * num_envs + env]`: verifier rewards at the last step,
    /// `terminated` there, no truncation, `next_values` (the next token's value, 0 after the
    /// last), and the finished responses in env order.
    pub fn outcomes(&self, out: &mut Rollout) {
        let (ne, nt) = (self.refs.len(), self.task.response_len());
        let correct: Vec<bool> =
            (0..ne).map(|i| (0..nt).all(|t| out.actions[t * ne + i] == self.answers[i * nt + t])).collect();
        crate::seq::fill_outcomes(out, ne, nt, correct);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::run_key;
    use crate::seq::{SeqEngine, TaskFamily};
    use crate::{AdamConfig, Engine, EngineConfig};

    /// The host half reproduces `SeqEngine`'s prompts and every output that is not a network
    /// value, from its tokens and values, for the default layout and for a plan with experts.
    #[test]
    fn inputs_and_outcomes_match_the_cpu_engine() {
        for (family, vocab, prompt_len) in [(TaskFamily::Add, 10, 4), (TaskFamily::Sort, 3, 5)] {
            let task = SeqTask { family, vocab, prompt_len, group_size: 4, expert_per_group: 1 };
            let (ne, off) = (12, 8);
            let cfg = EngineConfig {
                num_envs: ne,
                env_offset: off,
                num_steps: task.response_len(),
                seed: 3,
                shape: task.net_shape(vec![8]),
                adam: AdamConfig::default(),
                threads: 1,
                cuda_ordinal: 0,
            };
            let mut cpu = SeqEngine::new(cfg, task).expect("engine");
            let mut inputs = SeqInputs::new(task, ne);
            let plan: Vec<EnvPlan> = (0..ne)
                .map(|i| EnvPlan {
                    prompt: if i % 2 == 0 { PromptRef::Dataset(i as u32) } else { PromptRef::Drawn { rollout: 9, group: i as u32 } },
                    expert: i % 3 == 0,
                })
                .collect();
            for (r, plan) in [(0u32, None), (1, Some(&plan[..]))] {
                if let Some(p) = plan {
                    cpu.plan_rollout(p).expect("plan");
                }
                let mut want = Rollout::default();
                cpu.rollout(&mut want).expect("rollout");
                inputs.for_rollout(run_key(3), off, r, plan);
                assert_eq!(inputs.prompts, cpu.prompts(), "{family} rollout {r}");
                let nt = task.response_len();
                for i in 0..ne {
                    let expert = plan.map_or(task.is_expert(off + i), |p| p[i].expert);
                    assert_eq!(inputs.expert[i], u8::from(expert));
                    if expert {
                        let tokens: Vec<u32> = (0..nt).map(|t| want.actions[t * ne + i]).collect();
                        assert_eq!(tokens, &inputs.answers[i * nt..(i + 1) * nt]);
                    }
                }
                let mut got = Rollout { actions: want.actions.clone(), values: want.values.clone(), ..Rollout::default() };
                inputs.outcomes(&mut got);
                assert_eq!((got.num_steps, got.num_envs), (want.num_steps, want.num_envs));
                assert_eq!(got.rewards, want.rewards);
                assert_eq!(got.terminated, want.terminated);
                assert_eq!(got.truncated, want.truncated);
                assert_eq!(got.next_values, want.next_values);
                assert_eq!(got.finished_returns, want.finished_returns);
                assert_eq!(got.finished_lengths, want.finished_lengths);
                assert!(want.rewards.contains(&1.0), "experts are correct");
            }
            let refs: Vec<PromptRef> = (0..ne as u32).map(PromptRef::Dataset).collect();
            inputs.for_replay(run_key(3), &refs);
            assert!(inputs.expert.iter().all(|&e| e == 0));
            let mut p = vec![0; prompt_len];
            task.prompt_of(run_key(3), PromptRef::Dataset(5), &mut p);
            assert_eq!(&inputs.prompts[5 * prompt_len..6 * prompt_len], &p[..]);
        }
    }
}
