//! `SeqEngine`: the sequence tasks behind the `Engine` seam on the CPU. One env is one
//! response; each rollout draws fresh prompts and generates every response token by token,
//! one batched GEMM forward over all envs per token (SEMANTICS.md section 6).

use rayon::prelude::*;

use super::task::{EnvPlan, PromptRef, SeqTask};
use crate::cpu::learner::Learner;
use crate::cpu::mlp::{entropy, sample, NetCache};
use crate::cpu::SimdLevel;
use crate::layout::{validate_sizes, ParamLayout};
use crate::rng::{run_key, uniform, STREAM_ACTION};
use crate::{
    DeviceKind, DeviceRequest, Engine, EngineConfig, EngineState, KernelError, MinibatchEval,
    Rollout,
};

/// Fewest envs worth a thread of their own during a rollout.
const MIN_ENVS_PER_CHUNK: usize = 32;

/// Creates the engine of a sequence task: `Cpu` gives a [`SeqEngine`], `Cuda` a
/// [`CudaSeqEngine`](crate::cuda::CudaSeqEngine) (an error without a usable GPU), `Auto` the
/// CUDA engine when `cuda::probe` finds a GPU, else the CPU engine with one log line saying why.
pub fn create_seq_engine(
    request: DeviceRequest,
    config: EngineConfig,
    task: SeqTask,
) -> Result<Box<dyn Engine>, KernelError> {
    use crate::cuda::CudaSeqEngine;
    match request {
        DeviceRequest::Cpu => Ok(Box::new(SeqEngine::new(config, task)?)),
        DeviceRequest::Cuda => Ok(Box::new(CudaSeqEngine::new(config, task)?)),
        DeviceRequest::Auto => match crate::cuda::probe() {
            Ok(()) => Ok(Box::new(CudaSeqEngine::new(config, task)?)),
            Err(why) => {
                tracing::info!("device = \"auto\": sequence task `{}` runs on the CPU engine ({why})", task.family);
                Ok(Box::new(SeqEngine::new(config, task)?))
            }
        },
    }
}

/// A length error for buffer `name` unless `got == expected`.
fn check_len(name: &'static str, got: usize, expected: usize) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::Length { name, got, expected })
    }
}

/// Fills what a sequence rollout's outputs derive from its responses (SEMANTICS.md section 6),
/// once `out.values` holds the time-major values of `ne` envs over `nt` tokens: the verifier's
/// reward (1 for a `correct` response, in env order) at the last step, `terminated` there, no
/// truncation, `next_values` (the next token's value, 0 after the last), and every response as
/// finished at the last step, in env order. Shared by the CPU and CUDA sequence engines.
pub(crate) fn fill_outcomes(out: &mut Rollout, ne: usize, nt: usize, correct: impl IntoIterator<Item = bool>) {
    let (total, last) = (ne * nt, (nt - 1) * ne);
    out.num_steps = nt;
    out.num_envs = ne;
    out.rewards.clear();
    out.rewards.resize(total, 0.0);
    out.terminated.clear();
    out.terminated.resize(total, 0);
    out.terminated[last..].fill(1);
    out.truncated.clear();
    out.truncated.resize(total, 0);
    out.next_values.clear();
    out.next_values.extend_from_slice(&out.values[ne..total]);
    out.next_values.resize(total, 0.0);
    out.finished_returns.clear();
    out.finished_lengths.clear();
    for (i, ok) in correct.into_iter().enumerate() {
        let r = if ok { 1.0 } else { 0.0 };
        out.rewards[last + i] = r;
        out.finished_returns.push(r);
        out.finished_lengths.push(nt as u32);
    }
}

/// Checks that `st` is a sequence engine's snapshot with `num_params` parameters: no CartPole
/// env state (a CartPole snapshot is refused by its `x` length), and a step that is a whole
/// number of rollouts of `num_steps` tokens (only rollouts advance it).
pub(crate) fn check_snapshot(st: &EngineState, num_params: usize, num_steps: usize) -> Result<(), KernelError> {
    st.check_sizes(num_params, 0)?;
    let nt = num_steps as u64;
    if st.step.is_multiple_of(nt) {
        Ok(())
    } else {
        Err(KernelError::InvalidConfig(format!(
            "checkpoint step {} is not a multiple of num_steps ({nt}): it was not taken by a \
             sequence engine of this task",
            st.step
        )))
    }
}

/// Checks `config` against `task` (SEMANTICS.md section 6) and returns the parameter layout.
pub(crate) fn validate(config: &EngineConfig, task: &SeqTask) -> Result<ParamLayout, KernelError> {
    task.validate()?;
    let bad = |m: String| Err(KernelError::InvalidConfig(m));
    let family = task.family;
    if config.shape.obs_dim != task.obs_dim() || config.shape.n_actions != task.vocab {
        return bad(format!(
            "sequence task `{family}` needs obs_dim {} and n_actions {} (= vocab), got {} and {}",
            task.obs_dim(),
            task.vocab,
            config.shape.obs_dim,
            config.shape.n_actions
        ));
    }
    if config.num_steps != task.response_len() {
        return bad(format!(
            "num_steps ({}) must equal the response length of sequence task `{family}` ({})",
            config.num_steps,
            task.response_len()
        ));
    }
    let g = task.group_size;
    if !config.num_envs.is_multiple_of(g) || !config.env_offset.is_multiple_of(g) {
        return bad(format!(
            "num_envs ({}) and env_offset ({}) must be multiples of group_size ({g}): a group's \
             responses share one prompt and live on one rank",
            config.num_envs, config.env_offset
        ));
    }
    let layout = ParamLayout::new(&config.shape)?;
    validate_sizes(config)?;
    Ok(layout)
}

/// A contiguous range of envs and its chunk-local, time-major (`[t * len + i]`) outputs.
#[derive(Debug)]
struct GenChunk {
    start: usize,
    len: usize,
    net: NetCache,
    uniforms: Vec<f32>,
    /// Responses so far, env-major `[i * nt + t]` (the prefix of each observation).
    resp: Vec<u32>,
    actions: Vec<u32>,
    logp: Vec<f32>,
    entropy: Vec<f32>,
    values: Vec<f32>,
    /// Verifier outcome per env.
    correct: Vec<bool>,
}

/// What every chunk reads during a rollout.
#[derive(Clone, Copy)]
struct GenCtx<'a> {
    layout: &'a ParamLayout,
    params: &'a [f32],
    task: &'a SeqTask,
    /// Prompts of the local envs, `[env][prompt_len]`.
    prompts: &'a [u32],
    /// Answers of the local envs, `[env][response_len]` (read only for expert envs).
    answers: &'a [u32],
    /// Whether each local env is an expert (teacher-forced) response.
    expert: &'a [bool],
    key: u32,
    env_offset: usize,
    step0: u64,
    nt: usize,
    simd: SimdLevel,
}

impl GenChunk {
    fn new(layout: &ParamLayout, start: usize, len: usize, nt: usize) -> Self {
        let mut net = NetCache::new(layout);
        net.ensure(layout, len);
        Self {
            start,
            len,
            net,
            uniforms: vec![0.0; len],
            resp: vec![0; len * nt],
            actions: vec![0; nt * len],
            logp: vec![0.0; nt * len],
            entropy: vec![0.0; nt * len],
            values: vec![0.0; nt * len],
            correct: vec![false; len],
        }
    }

    fn generate(&mut self, c: GenCtx<'_>) {
        let (n, nt, od) = (self.len, c.nt, c.task.obs_dim());
        let pl = c.task.prompt_len;
        let na = c.layout.shape.n_actions;
        let expert = &c.expert[self.start..self.start + n];
        for t in 0..nt {
            // The RNG counter is the low 32 bits of the global step, as in the CartPole engines.
            let gt = c.step0.wrapping_add(t as u64) as u32;
            for i in 0..n {
                let env = self.start + i;
                let prompt = &c.prompts[env * pl..(env + 1) * pl];
                let prefix = &self.resp[i * nt..i * nt + t];
                c.task
                    .observation(prompt, prefix, t, &mut self.net.input[i * od..(i + 1) * od]);
                let global = (c.env_offset + env) as u32;
                self.uniforms[i] = uniform(c.key, STREAM_ACTION, global, gt);
            }
            self.net.forward(c.layout, c.params, n, c.simd);
            for (i, &value) in self.net.values()[..n].iter().enumerate() {
                let lp = &self.net.logp[i * na..(i + 1) * na];
                // An expert response is teacher-forced: the answer's token, scored like a draw.
                let a = if expert[i] {
                    c.answers[(self.start + i) * nt + t]
                } else {
                    sample(lp, self.uniforms[i])
                };
                let s = t * n + i;
                self.actions[s] = a;
                self.logp[s] = lp[a as usize];
                self.entropy[s] = entropy(lp);
                self.values[s] = value;
                self.resp[i * nt + t] = a;
            }
        }
        for i in 0..n {
            let env = self.start + i;
            let prompt = &c.prompts[env * pl..(env + 1) * pl];
            self.correct[i] = c.task.verify(prompt, &self.resp[i * nt..(i + 1) * nt]);
        }
    }
}

/// The CPU engine of the sequence tasks (SEMANTICS.md section 6), tested against
/// `seq::reference::SeqReferenceEngine`.
///
/// Rollout `r` (0-based, `global_step / num_steps`) draws the prompts of rollout index `r`.
/// Envs are split into contiguous chunks (one rayon task each) for the rollout, minibatch rows
/// into ranges with private gradients for `evaluate`/`accumulate_grad`; a row's numbers do
/// not depend on the split. `accumulate_grad` needs an `evaluate` since the last `rollout`,
/// `apply_grads` or `set_params`.
pub struct SeqEngine {
    cfg: EngineConfig,
    task: SeqTask,
    layout: ParamLayout,
    key: u32,
    learn: Learner,
    step: u64,
    simd: SimdLevel,
    gens: Vec<GenChunk>,
    /// The plan of the next rollout (`plan_rollout`); `None`: the default layout.
    plan: Option<Vec<EnvPlan>>,
    /// Prompt of each local env in the last rollout (or `load_sequences`).
    refs: Vec<PromptRef>,
    /// Their tokens, `[local env][prompt_len]`.
    prompts: Vec<u32>,
    /// Their answers, `[local env][response_len]` (used by expert envs only).
    answers: Vec<u32>,
    /// Whether each local env of the last rollout was an expert response.
    expert: Vec<bool>,
    /// Actions of the last rollout, `[t * num_envs + env]`.
    actions: Vec<u32>,
}

impl std::fmt::Debug for SeqEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqEngine")
            .field("task", &self.task)
            .field("num_envs", &self.cfg.num_envs)
            .field("num_params", &self.layout.num_params)
            .field("threads", &self.learn.threads())
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl SeqEngine {
    /// Validates `config` against `task` (shape `task.net_shape(..)`, `num_steps` equal to the
    /// response length, `num_envs` and `env_offset` multiples of the group size) and
    /// initialises the parameters (`reference::init_params`). `threads = 0` uses every core.
    pub fn new(config: EngineConfig, task: SeqTask) -> Result<Self, KernelError> {
        let layout = validate(&config, &task)?;
        let key = run_key(config.seed);
        let (ne, nt) = (config.num_envs, config.num_steps);
        // Each eval chunk's scratch holds a response prefix (at most `nt` tokens).
        let learn = Learner::new(&layout, key, config.threads, nt)?;
        let threads = learn.threads();
        let n_chunks = threads.min(ne / MIN_ENVS_PER_CHUNK).max(1);
        let gens = (0..n_chunks)
            .map(|c| {
                let (start, end) = (c * ne / n_chunks, (c + 1) * ne / n_chunks);
                GenChunk::new(&layout, start, end - start, nt)
            })
            .collect();
        Ok(Self {
            learn,
            step: 0,
            simd: SimdLevel::from_env()?,
            gens,
            plan: None,
            refs: vec![PromptRef::Dataset(0); ne],
            prompts: vec![0; ne * task.prompt_len],
            answers: vec![0; ne * nt],
            expert: vec![false; ne],
            actions: vec![0; ne * nt],
            key,
            layout,
            task,
            cfg: config,
        })
    }

    /// The task this engine generates responses for.
    pub fn task(&self) -> &SeqTask {
        &self.task
    }

    /// The parameter layout of the flat buffer.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Threads this engine uses (after resolving `threads = 0`).
    pub fn threads(&self) -> usize {
        self.learn.threads()
    }

    /// Prompts of the last rollout, `[local env][prompt_len]`; zeros before the first rollout.
    pub fn prompts(&self) -> &[u32] {
        &self.prompts
    }

    /// Draws the tokens (and answers, for expert envs) of the prompts in `self.refs`.
    fn draw_prompts(&mut self) {
        let (pl, nt) = (self.task.prompt_len, self.cfg.num_steps);
        for (i, &which) in self.refs.iter().enumerate() {
            let p = &mut self.prompts[i * pl..(i + 1) * pl];
            self.task.prompt_of(self.key, which, p);
            if self.expert[i] {
                self.task.answer(p, &mut self.answers[i * nt..(i + 1) * nt]);
            }
        }
    }
}

impl Engine for SeqEngine {
    fn simd_level(&self) -> Option<SimdLevel> {
        Some(self.simd)
    }

    fn set_simd_level(&mut self, level: SimdLevel) -> Result<(), KernelError> {
        level.require()?;
        self.simd = level;
        Ok(())
    }

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
        let (ne, nt) = (self.cfg.num_envs, self.cfg.num_steps);
        // `step` is always a multiple of `num_steps` (only rollouts advance it; `load_state`
        // checks), so this is the count of rollouts so far.
        let rollout = (self.step / nt as u64) as u32;
        match self.plan.take() {
            Some(plan) => {
                for (i, p) in plan.into_iter().enumerate() {
                    (self.refs[i], self.expert[i]) = (p.prompt, p.expert);
                }
            }
            None => {
                for i in 0..ne {
                    let p = self.task.default_plan(rollout, self.cfg.env_offset + i);
                    (self.refs[i], self.expert[i]) = (p.prompt, p.expert);
                }
            }
        }
        self.draw_prompts();
        let ctx = GenCtx {
            layout: &self.layout,
            params: self.learn.params(),
            task: &self.task,
            prompts: &self.prompts,
            answers: &self.answers,
            expert: &self.expert,
            key: self.key,
            env_offset: self.cfg.env_offset,
            step0: self.step,
            nt,
            simd: self.simd,
        };
        match (self.learn.pool(), self.gens.len()) {
            (Some(pool), n) if n > 1 => {
                pool.install(|| self.gens.par_iter_mut().for_each(|c| c.generate(ctx)))
            }
            _ => self.gens.iter_mut().for_each(|c| c.generate(ctx)),
        }
        self.step += nt as u64;

        let total = ne * nt;
        out.actions.resize(total, 0);
        out.logp.resize(total, 0.0);
        out.entropy.resize(total, 0.0);
        out.values.resize(total, 0.0);
        for c in &self.gens {
            let n = c.len;
            for t in 0..nt {
                let (src, dst) = (t * n..(t + 1) * n, t * ne + c.start..t * ne + c.start + n);
                out.actions[dst.clone()].copy_from_slice(&c.actions[src.clone()]);
                out.logp[dst.clone()].copy_from_slice(&c.logp[src.clone()]);
                out.entropy[dst.clone()].copy_from_slice(&c.entropy[src.clone()]);
                out.values[dst.clone()].copy_from_slice(&c.values[src.clone()]);
                self.actions[dst].copy_from_slice(&c.actions[src]);
            }
        }
        // The chunks cover the envs in order, so this is each env's verdict in env order.
        fill_outcomes(out, ne, nt, self.gens.iter().flat_map(|c| c.correct.iter().copied()));
        self.learn.rolled_out();
        Ok(())
    }

    fn evaluate(&mut self, samples: &[u32], out: &mut MinibatchEval) -> Result<(), KernelError> {
        let ne = self.cfg.num_envs;
        let total = ne * self.cfg.num_steps;
        let (task, prompts, actions) = (&self.task, &self.prompts[..], &self.actions[..]);
        let pl = task.prompt_len;
        // Sample `s` is token `t` of env `env`: its prefix is that env's first `t` actions.
        let fill = |s: usize, row: &mut [f32], prefix: &mut Vec<u32>| {
            let (t, env) = (s / ne, s % ne);
            prefix.clear();
            prefix.extend((0..t).map(|j| actions[j * ne + env]));
            let prompt = &prompts[env * pl..(env + 1) * pl];
            task.observation(prompt, prefix, t, row);
        };
        self.learn
            .evaluate(&self.layout, self.simd, samples, total, actions, fill, out)
    }

    crate::cpu::learner::delegate_learning!();

    fn plan_rollout(&mut self, plan: &[EnvPlan]) -> Result<(), KernelError> {
        check_len("plan", plan.len(), self.cfg.num_envs)?;
        self.plan = Some(plan.to_vec());
        Ok(())
    }

    fn load_sequences(&mut self, prompts: &[PromptRef], actions: &[u32]) -> Result<(), KernelError> {
        let (ne, nt) = (self.cfg.num_envs, self.cfg.num_steps);
        check_len("prompts", prompts.len(), ne)?;
        check_len("actions", actions.len(), ne * nt)?;
        let vocab = self.task.vocab as u32;
        if let Some(&bad) = actions.iter().find(|&&a| a >= vocab) {
            return Err(KernelError::InvalidConfig(format!("action {bad} is not a token of vocab {vocab}")));
        }
        self.refs.copy_from_slice(prompts);
        // Answers are for generating expert tokens; loaded responses are replayed, not generated.
        self.expert.fill(false);
        self.draw_prompts();
        self.actions.copy_from_slice(actions);
        self.learn.rolled_out();
        Ok(())
    }

    /// Parameters, Adam state and the step: no env state survives a rollout, so the CartPole
    /// vectors of [`EngineState`] stay empty.
    fn save_state(&self) -> Result<EngineState, KernelError> {
        Ok(self.learn.save_state(self.step))
    }

    fn load_state(&mut self, st: &EngineState) -> Result<(), KernelError> {
        check_snapshot(st, self.layout.num_params, self.cfg.num_steps)?;
        self.learn.load_state(st);
        self.step = st.step;
        Ok(())
    }
}
