//! The verifiable-reward task family of SEMANTICS.md section 6: prompt draw, the one correct
//! answer, the exact-match verifier and the policy's observation features.

use std::fmt;
use std::str::FromStr;

use crate::rng::{below, run_key, DATASET_SEED, STREAM_DATASET, STREAM_PROMPT};
use crate::{KernelError, NetShape};

/// Which transformation the policy must learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskFamily {
    /// Answer = the prompt reversed.
    Reverse,
    /// Answer = the prompt's tokens in ascending order.
    Sort,
    /// Prompt = two base-`vocab` numbers (least-significant digit first); answer = their sum.
    Add,
}

impl TaskFamily {
    /// Every family, in documentation order.
    pub const ALL: [TaskFamily; 3] = [TaskFamily::Reverse, TaskFamily::Sort, TaskFamily::Add];

    /// The name used in configs: `reverse`, `sort` or `add`.
    pub fn name(self) -> &'static str {
        match self {
            TaskFamily::Reverse => "reverse",
            TaskFamily::Sort => "sort",
            TaskFamily::Add => "add",
        }
    }
}

impl fmt::Display for TaskFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskFamily {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                KernelError::InvalidConfig(format!(
                    "unknown sequence task family `{s}`: expected one of `reverse`, `sort`, `add`"
                ))
            })
    }
}

/// One task of the family: sizes of prompts and responses, and how many responses share a
/// prompt. Pure and deterministic; every method is a function of its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqTask {
    /// The transformation.
    pub family: TaskFamily,
    /// Tokens are `0..vocab` (the policy's action count); for `add`, the number base.
    pub vocab: usize,
    /// Tokens per prompt.
    pub prompt_len: usize,
    /// Responses per prompt (G), consecutive global envs.
    pub group_size: usize,
    /// The last `expert_per_group` responses of every group are the known answer, teacher-forced
    /// (CHORD's expert samples); the first `group_size - expert_per_group` are sampled. 0: none.
    pub expert_per_group: usize,
}

/// Which prompt a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptRef {
    /// The prompt drawn for global group `group` of rollout `rollout` (the default layout:
    /// fresh prompts every rollout).
    Drawn {
        /// 0-based rollout index (`global_step / response_len` at its start).
        rollout: u32,
        /// Global group index.
        group: u32,
    },
    /// Prompt `i` of the task's fixed dataset (`run.dataset_size`), the same for every seed.
    Dataset(u32),
}

/// What one env generates in a sequence rollout (see `Engine::plan_rollout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvPlan {
    /// The prompt it answers.
    pub prompt: PromptRef,
    /// Teacher-force the prompt's answer (an expert response) instead of sampling.
    pub expert: bool,
}

/// Largest `vocab`, `prompt_len` and `group_size` accepted: tokens and counters are u32, and a
/// larger one-hot observation is a configuration mistake rather than a workload.
const MAX_SIZE: usize = 1 << 16;

impl SeqTask {
    /// Tokens per response: `prompt_len` for reverse and sort, `prompt_len / 2 + 1` for add.
    pub fn response_len(&self) -> usize {
        match self.family {
            TaskFamily::Reverse | TaskFamily::Sort => self.prompt_len,
            TaskFamily::Add => self.prompt_len / 2 + 1,
        }
    }

    /// Observation features: one-hot prompt (`prompt_len * vocab`), one-hot response prefix
    /// (`response_len * vocab`), one-hot position (`response_len`).
    pub fn obs_dim(&self) -> usize {
        (self.prompt_len + self.response_len()) * self.vocab + self.response_len()
    }

    /// The network shape this task needs: `obs_dim` inputs, `vocab` actions.
    pub fn net_shape(&self, hidden: Vec<usize>) -> NetShape {
        NetShape {
            obs_dim: self.obs_dim(),
            hidden,
            n_actions: self.vocab,
        }
    }

    /// Whether global env `env` is an expert (teacher-forced) response: its position in its
    /// group is one of the last `expert_per_group`.
    pub fn is_expert(&self, env: usize) -> bool {
        env % self.group_size.max(1) >= self.group_size.saturating_sub(self.expert_per_group)
    }

    /// Checks the sizes; the error names the offending field and why.
    pub fn validate(&self) -> Result<(), KernelError> {
        let bad = |m: String| {
            Err(KernelError::InvalidConfig(format!(
                "sequence task `{}`: {m}",
                self.family
            )))
        };
        if self.vocab < 2 {
            return bad(format!("`vocab` must be at least 2, got {}", self.vocab));
        }
        if self.prompt_len < 1 {
            return bad("`prompt_len` must be at least 1, got 0".into());
        }
        if self.group_size < 1 {
            return bad("`group_size` must be at least 1, got 0".into());
        }
        for (name, v) in [
            ("vocab", self.vocab),
            ("prompt_len", self.prompt_len),
            ("group_size", self.group_size),
        ] {
            if v > MAX_SIZE {
                return bad(format!("`{name}` must be at most {MAX_SIZE}, got {v}"));
            }
        }
        if self.expert_per_group >= self.group_size {
            return bad(format!(
                "`expert_per_group` ({}) must be less than `group_size` ({}): every group needs a \
                 sampled response",
                self.expert_per_group, self.group_size
            ));
        }
        if self.family == TaskFamily::Add && !self.prompt_len.is_multiple_of(2) {
            return bad(format!(
                "`prompt_len` must be even (two numbers of prompt_len / 2 digits), got {}",
                self.prompt_len
            ));
        }
        Ok(())
    }

    /// Fills `out[..prompt_len]` with the prompt of global group `group` in rollout `rollout`:
    /// token `k` is `below(key, STREAM_PROMPT, group, rollout * prompt_len + k, vocab)`
    /// (u32 wrapping arithmetic). Panics if `out` is shorter than `prompt_len` (a caller bug).
    pub fn prompt(&self, key: u32, rollout: u32, group: u32, out: &mut [u32]) {
        let base = rollout.wrapping_mul(self.prompt_len as u32);
        for (k, tok) in out[..self.prompt_len].iter_mut().enumerate() {
            *tok = below(
                key,
                STREAM_PROMPT,
                group,
                base.wrapping_add(k as u32),
                self.vocab as u32,
            );
        }
    }

    /// Fills `out[..prompt_len]` with the prompt `which` names: a drawn prompt
    /// ([`SeqTask::prompt`] with the run's `key`), or dataset prompt `i`, whose token `k` is
    /// `below(run_key(DATASET_SEED), STREAM_DATASET, i, k, vocab)` for every run seed.
    pub fn prompt_of(&self, key: u32, which: PromptRef, out: &mut [u32]) {
        match which {
            PromptRef::Drawn { rollout, group } => self.prompt(key, rollout, group, out),
            PromptRef::Dataset(i) => {
                let dataset_key = run_key(DATASET_SEED);
                for (k, tok) in out[..self.prompt_len].iter_mut().enumerate() {
                    *tok = below(dataset_key, STREAM_DATASET, i, k as u32, self.vocab as u32);
                }
            }
        }
    }

    /// The default layout's plan for global env `env` in rollout `rollout`: its group's drawn
    /// prompt, and an expert response when it is one of the group's last `expert_per_group`.
    pub fn default_plan(&self, rollout: u32, env: usize) -> EnvPlan {
        EnvPlan {
            prompt: PromptRef::Drawn { rollout, group: (env / self.group_size.max(1)) as u32 },
            expert: self.is_expert(env),
        }
    }

    /// Writes the one correct response to `prompt` into `out[..response_len]`. Panics if a
    /// slice is shorter than the task's lengths (a caller bug).
    pub fn answer(&self, prompt: &[u32], out: &mut [u32]) {
        let (p, out) = (&prompt[..self.prompt_len], &mut out[..self.response_len()]);
        match self.family {
            TaskFamily::Reverse => {
                for (o, &t) in out.iter_mut().zip(p.iter().rev()) {
                    *o = t;
                }
            }
            TaskFamily::Sort => {
                out.copy_from_slice(p);
                out.sort_unstable();
            }
            TaskFamily::Add => {
                let half = self.prompt_len / 2;
                let base = self.vocab as u32;
                let mut carry = 0u32;
                for (i, o) in out[..half].iter_mut().enumerate() {
                    let s = p[i] + p[half + i] + carry;
                    *o = s % base;
                    carry = s / base;
                }
                out[half] = carry;
            }
        }
    }

    /// The verifier: true exactly when `response` equals the answer to `prompt` (a response of
    /// the wrong length is wrong).
    pub fn verify(&self, prompt: &[u32], response: &[u32]) -> bool {
        if prompt.len() != self.prompt_len || response.len() != self.response_len() {
            return false;
        }
        let mut expected = vec![0u32; self.response_len()];
        self.answer(prompt, &mut expected);
        expected == response
    }

    /// Writes the observation of response step `t` into `out[..obs_dim]`: one-hot of each prompt
    /// token, one-hot of each of the `t` prefix tokens (later positions all zero), one-hot of
    /// `t`. `prefix` holds at least `t` tokens; tokens outside `0..vocab` are a caller bug.
    pub fn observation(&self, prompt: &[u32], prefix: &[u32], t: usize, out: &mut [f32]) {
        let (v, pl, rl) = (self.vocab, self.prompt_len, self.response_len());
        let out = &mut out[..self.obs_dim()];
        out.iter_mut().for_each(|x| *x = 0.0);
        for (k, &tok) in prompt[..pl].iter().enumerate() {
            out[k * v + tok as usize] = 1.0;
        }
        let resp = pl * v;
        for (j, &tok) in prefix[..t].iter().enumerate() {
            out[resp + j * v + tok as usize] = 1.0;
        }
        out[resp + rl * v + t] = 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::run_key;

    fn task(family: TaskFamily, vocab: usize, prompt_len: usize) -> SeqTask {
        SeqTask {
            family,
            vocab,
            prompt_len,
            group_size: 4,
            expert_per_group: 0,
        }
    }

    fn answer(t: &SeqTask, prompt: &[u32]) -> Vec<u32> {
        let mut out = vec![u32::MAX; t.response_len()];
        t.answer(prompt, &mut out);
        out
    }

    #[test]
    fn reverse_by_hand() {
        let t = task(TaskFamily::Reverse, 5, 4);
        assert_eq!(t.response_len(), 4);
        assert_eq!(answer(&t, &[1, 4, 0, 2]), vec![2, 0, 4, 1]);
        assert!(t.verify(&[1, 4, 0, 2], &[2, 0, 4, 1]));
        assert!(!t.verify(&[1, 4, 0, 2], &[1, 4, 0, 2]));
    }

    #[test]
    fn sort_by_hand() {
        let t = task(TaskFamily::Sort, 5, 5);
        assert_eq!(answer(&t, &[3, 1, 4, 1, 0]), vec![0, 1, 1, 3, 4]);
        assert!(t.verify(&[3, 1, 4, 1, 0], &[0, 1, 1, 3, 4]));
        assert!(!t.verify(&[3, 1, 4, 1, 0], &[0, 1, 3, 4, 1]));
    }

    #[test]
    fn add_by_hand() {
        let t = task(TaskFamily::Add, 10, 4);
        assert_eq!(t.response_len(), 3);
        // 99 + 01 = 100, digits least-significant first.
        assert_eq!(answer(&t, &[9, 9, 1, 0]), vec![0, 0, 1]);
        // 21 + 43 = 64.
        assert_eq!(answer(&t, &[1, 2, 3, 4]), vec![4, 6, 0]);
        // Base 2: 11 + 11 = 110 (3 + 3 = 6).
        let b = task(TaskFamily::Add, 2, 4);
        assert_eq!(answer(&b, &[1, 1, 1, 1]), vec![0, 1, 1]);
        // Base 3, 3 digits: 212 (=2+3+18=23) + 001 (=9) = 32 = 1012 in base 3 (LSD first 2,1,0,1).
        let c = task(TaskFamily::Add, 3, 6);
        assert_eq!(answer(&c, &[2, 1, 2, 0, 0, 1]), vec![2, 1, 0, 1]);
        assert!(t.verify(&[9, 9, 1, 0], &[0, 0, 1]));
        assert!(!t.verify(&[9, 9, 1, 0], &[0, 0, 0]));
        assert!(!t.verify(&[9, 9, 1, 0], &[0, 0]), "wrong length is wrong");
    }

    #[test]
    fn verifier_accepts_exactly_the_answer() {
        // Every response of a small task: exactly one is accepted per prompt.
        for family in TaskFamily::ALL {
            let t = task(family, 3, 2);
            let rl = t.response_len();
            for p in 0..9u32 {
                let prompt = [p % 3, p / 3];
                let mut accepted = 0;
                for r in 0..3u32.pow(rl as u32) {
                    let resp: Vec<u32> = (0..rl).map(|j| r / 3u32.pow(j as u32) % 3).collect();
                    if t.verify(&prompt, &resp) {
                        accepted += 1;
                        assert_eq!(resp, answer(&t, &prompt), "{family}");
                    }
                }
                assert_eq!(accepted, 1, "{family} prompt {prompt:?}");
            }
        }
    }

    #[test]
    fn prompts_are_uniform_tokens_keyed_by_rollout_and_group() {
        let t = task(TaskFamily::Sort, 7, 6);
        let key = run_key(11);
        let draw = |r, g| {
            let mut p = vec![0u32; 6];
            t.prompt(key, r, g, &mut p);
            p
        };
        assert_eq!(draw(3, 5), draw(3, 5));
        assert_ne!(draw(3, 5), draw(3, 6));
        assert_ne!(draw(3, 5), draw(4, 5));
        assert_ne!(draw(3, 5), {
            let mut p = vec![0u32; 6];
            t.prompt(run_key(12), 3, 5, &mut p);
            p
        });
        let mut counts = [0u32; 7];
        for g in 0..500 {
            for tok in draw(0, g) {
                assert!(tok < 7);
                counts[tok as usize] += 1;
            }
        }
        // 3000 tokens, ~428.6 per value, sd ~19; 6 sigma bound.
        assert!(
            counts.iter().all(|&c| (c as f64 - 428.6).abs() < 115.0),
            "{counts:?}"
        );
        // Token k of rollout r is counter r * prompt_len + k of the group's stream.
        assert_eq!(draw(2, 9)[4], below(key, STREAM_PROMPT, 9, 2 * 6 + 4, 7));
    }

    #[test]
    fn observation_layout_by_hand() {
        // vocab 3, prompt_len 2, response_len 2: 6 + 6 + 2 = 14 features.
        let t = task(TaskFamily::Reverse, 3, 2);
        assert_eq!(t.obs_dim(), 14);
        let mut o = vec![9.0f32; 14];
        t.observation(&[2, 0], &[1, 2], 1, &mut o);
        let expected = [
            0., 0., 1., /* prompt[1] */ 1., 0., 0., //
            0., 1., 0., /* position 1 not yet generated */ 0., 0., 0., //
            0., 1.,
        ];
        assert_eq!(o, expected);
        t.observation(&[2, 0], &[], 0, &mut o);
        assert_eq!(&o[6..], &[0., 0., 0., 0., 0., 0., 1., 0.]);
    }

    #[test]
    fn validate_names_the_field() {
        let msg = |t: SeqTask| {
            t.validate()
                .map_err(|e| e.to_string())
                .err()
                .unwrap_or_default()
        };
        assert!(msg(task(TaskFamily::Reverse, 1, 2)).contains("`vocab` must be at least 2"));
        assert!(msg(task(TaskFamily::Sort, 4, 0)).contains("`prompt_len`"));
        assert!(msg(task(TaskFamily::Add, 10, 3)).contains("`prompt_len` must be even"));
        let mut g = task(TaskFamily::Reverse, 4, 2);
        g.group_size = 0;
        assert!(msg(g).contains("`group_size`"));
        let mut x = task(TaskFamily::Reverse, 4, 2);
        x.expert_per_group = 4;
        assert!(
            msg(x).contains("`expert_per_group` (4) must be less than `group_size` (4)"),
            "{}",
            msg(x)
        );
        x.expert_per_group = 3;
        assert!(x.validate().is_ok());
        // Group size 4, one expert: positions 3, 7, ... are experts.
        x.expert_per_group = 1;
        let experts: Vec<usize> = (0..8).filter(|&e| x.is_expert(e)).collect();
        assert_eq!(experts, [3, 7]);
        x.expert_per_group = 0;
        assert!((0..8).all(|e| !x.is_expert(e)));
        assert!(task(TaskFamily::Add, 10, 4).validate().is_ok());
        assert_eq!("add".parse::<TaskFamily>().ok(), Some(TaskFamily::Add));
        let e = "Reverse"
            .parse::<TaskFamily>()
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(e.contains("unknown sequence task family `Reverse`"), "{e}");
    }
}
