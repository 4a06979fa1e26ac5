//! The seam between the job runtime and a device: one `Engine` owns env state, parameters,
//! gradients and optimiser state on its device, and exchanges only per-sample scalars with the host.

use crate::KernelError;

/// Shape of the actor and critic MLPs (CleanRL layout, SEMANTICS.md section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetShape {
    /// Observation features (4 for CartPole).
    pub obs_dim: usize,
    /// Hidden layer widths, shared by actor and critic (e.g. `[64, 64]`).
    pub hidden: Vec<usize>,
    /// Number of discrete actions (2 for CartPole).
    pub n_actions: usize,
}

/// Adam hyperparameters (PyTorch semantics, SEMANTICS.md section 5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-5 }
    }
}

/// Which device the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The CPU engine.
    Cpu,
    /// The CUDA engine; an error when no GPU is usable.
    Cuda,
    /// CUDA when a GPU is usable, else CPU (with one log line saying why).
    Auto,
}

/// Which device an engine runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The CPU engine.
    Cpu,
    /// The CUDA engine.
    Cuda,
}

/// Everything an engine needs to start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Environments stepped by this engine (this rank).
    pub num_envs: usize,
    /// Global index of this engine's first environment (rank * num_envs), for RNG streams.
    pub env_offset: usize,
    /// Vectorized steps per rollout (T).
    pub num_steps: usize,
    /// Run seed; the RNG key is `rng::run_key(seed)`.
    pub seed: u64,
    /// Network shape.
    pub shape: NetShape,
    /// Optimiser settings.
    pub adam: AdamConfig,
    /// CPU threads the engine may use (CPU engine only; 0 = all cores).
    pub threads: usize,
    /// CUDA device ordinal (CUDA engine only; the job picks it by local rank).
    pub cuda_ordinal: usize,
}

/// One rollout of `num_steps` x `num_envs`, time-major (`[t * num_envs + env]`), on the host.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    /// Steps per env in this rollout (T).
    pub num_steps: usize,
    /// Environments (N).
    pub num_envs: usize,
    /// Action taken at (t, env).
    pub actions: Vec<u32>,
    /// Log-probability of that action under the behaviour policy.
    pub logp: Vec<f32>,
    /// Policy entropy at (t, env).
    pub entropy: Vec<f32>,
    /// Critic value V(s_t).
    pub values: Vec<f32>,
    /// Reward received after the action.
    pub rewards: Vec<f32>,
    /// 1 when the episode terminated after this step.
    pub terminated: Vec<u8>,
    /// 1 when the episode was truncated (time limit) after this step.
    pub truncated: Vec<u8>,
    /// V(s_{t+1}) of the true next state: `values[t+1]` inside an episode, V(final obs) at a
    /// truncation, V(obs after the last step) at `t = T-1`; 0 where the episode terminated.
    pub next_values: Vec<f32>,
    /// Returns of the episodes that finished during this rollout.
    pub finished_returns: Vec<f32>,
    /// Lengths of the episodes that finished during this rollout.
    pub finished_lengths: Vec<u32>,
}

/// Per-sample outputs of [`Engine::evaluate`], in the order of the requested samples.
#[derive(Debug, Clone, Default)]
pub struct MinibatchEval {
    /// Log-probability of the stored action under the current parameters.
    pub logp: Vec<f32>,
    /// Entropy of the current policy at the stored observation.
    pub entropy: Vec<f32>,
    /// Current critic value at the stored observation.
    pub values: Vec<f32>,
}

/// One rank's place in a device all-reduce group ([`Engine::attach_device_all_reduce`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGroup {
    /// The group's NCCL unique id, made by rank 0 ([`crate::cuda::nccl::unique_id`]) and
    /// shared by the caller (kernels know nothing of how ranks talk).
    pub id: crate::cuda::nccl::NcclId,
    /// This engine's rank, `0..size`.
    pub rank: usize,
    /// Ranks in the group.
    pub size: usize,
}

/// A device that rolls out environments and trains the policy (see SEMANTICS.md).
pub trait Engine: Send {
    /// The device this engine runs on.
    fn device(&self) -> DeviceKind;
    /// Number of parameters in the flat buffer.
    fn num_params(&self) -> usize;
    /// Vectorized steps taken so far (the RNG counter `t` of the next step).
    fn global_step(&self) -> u64;
    /// Steps all envs `num_steps` times with the current parameters and fills `out`.
    /// The observations stay inside the engine for [`Engine::evaluate`].
    fn rollout(&mut self, out: &mut Rollout) -> Result<(), KernelError>;
    /// Forward pass on the samples (`t * num_envs + env`) of the last rollout; keeps what the
    /// backward pass needs for [`Engine::accumulate_grad`].
    fn evaluate(&mut self, samples: &[u32], out: &mut MinibatchEval) -> Result<(), KernelError>;
    /// Backward pass of the last `evaluate`: adds dL/dtheta into the gradient buffer, given
    /// per-sample dL/dlogp, dL/dvalue and dL/dentropy.
    fn accumulate_grad(
        &mut self,
        d_logp: &[f32],
        d_value: &[f32],
        d_entropy: &[f32],
    ) -> Result<(), KernelError>;
    /// Gradient all-reduce point: hands the flat gradient buffer (on the host) to `reduce`,
    /// or, once [`Engine::attach_device_all_reduce`] returned `true`, sums it over the group on
    /// the device without calling `reduce`. Either way the result is the SUM over ranks.
    fn reduce_grads(&mut self, reduce: &mut dyn FnMut(&mut [f32])) -> Result<(), KernelError>;
    /// Joins (`Some`) or leaves (`None`) a group of engines, one per rank, that all-reduce
    /// gradients on their devices (NCCL); returns whether [`Engine::reduce_grads`] now does so.
    /// Joining is collective: it blocks until every rank of the group has called it. Engines
    /// without a device all-reduce keep the default, `Ok(false)`: the host closure is used.
    fn attach_device_all_reduce(&mut self, group: Option<&DeviceGroup>) -> Result<bool, KernelError> {
        let _ = group;
        Ok(false)
    }
    /// Clips the gradient by global norm (when given), takes one Adam step with `lr`, zeroes the
    /// gradient, and returns the gradient norm before clipping.
    fn apply_grads(&mut self, lr: f32, max_grad_norm: Option<f32>) -> Result<f32, KernelError>;
    /// Copies the flat parameter buffer to the host.
    fn params(&self) -> Result<Vec<f32>, KernelError>;
    /// Replaces the flat parameter buffer.
    fn set_params(&mut self, params: &[f32]) -> Result<(), KernelError>;
    /// Sequence engines: what each local env generates in the next rollout only (its prompt,
    /// sampled or expert), instead of the default layout (SEMANTICS.md section 6). Prompt
    /// datasets and per-prompt group sizes are built from this; groups are the host's business.
    /// Other engines keep the default, an error saying so.
    fn plan_rollout(&mut self, plan: &[crate::EnvPlan]) -> Result<(), KernelError> {
        let _ = plan;
        Err(KernelError::InvalidConfig(format!("only sequence-task engines take a rollout plan, not the {:?} engine", self.device())))
    }
    /// Sequence engines: replaces the responses of the last rollout that [`Engine::evaluate`]
    /// reads with these (each local env's prompt, and time-major actions `[t * num_envs +
    /// env]`), e.g. a training batch composed of accepted groups of several rollouts (DAPO's
    /// dynamic sampling). Other engines keep the default, an error saying so.
    fn load_sequences(&mut self, prompts: &[crate::PromptRef], actions: &[u32]) -> Result<(), KernelError> {
        let _ = (prompts, actions);
        Err(KernelError::InvalidConfig(format!("only sequence-task engines load sequences, not the {:?} engine", self.device())))
    }
    /// Snapshots everything needed to continue exactly from here (checkpointing): parameters,
    /// Adam moments and step, every env's state and episode accumulators, and the global step.
    /// Engines that cannot do this yet keep the default, an error saying so.
    fn save_state(&self) -> Result<EngineState, KernelError> {
        Err(KernelError::InvalidConfig(format!("checkpointing is unsupported on the {:?} engine", self.device())))
    }
    /// CPU engines: the instruction-set level their kernels run at. The bits of a run depend
    /// on it (FMA sums differ in the last place between levels), so a checkpoint records it
    /// and a resume goes on at the same level. Other engines keep the default, `None`.
    fn simd_level(&self) -> Option<crate::cpu::SimdLevel> {
        None
    }
    /// CPU engines: runs the kernels at `level` from now on; an error when this CPU cannot.
    /// Other engines keep the default, an error saying so.
    fn set_simd_level(&mut self, level: crate::cpu::SimdLevel) -> Result<(), KernelError> {
        Err(KernelError::InvalidConfig(format!(
            "the {:?} engine has no CPU instruction-set level (asked for `{}`)",
            self.device(),
            level.name()
        )))
    }
    /// Restores a [`Engine::save_state`] snapshot taken by an engine of the same configuration
    /// (any device or thread count); the next `rollout` continues as if never interrupted.
    fn load_state(&mut self, state: &EngineState) -> Result<(), KernelError> {
        let _ = state;
        Err(KernelError::InvalidConfig(format!("resuming from a checkpoint is unsupported on the {:?} engine", self.device())))
    }
}

/// A device-independent snapshot of an engine, in global env order (see [`Engine::save_state`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineState {
    /// The flat parameter buffer.
    pub params: Vec<f32>,
    /// Adam first moments.
    pub adam_m: Vec<f32>,
    /// Adam second moments.
    pub adam_v: Vec<f32>,
    /// Adam steps taken (bias correction).
    pub adam_t: u64,
    /// Vectorized steps taken so far ([`Engine::global_step`]).
    pub step: u64,
    /// CartPole state per env: cart position.
    pub x: Vec<f32>,
    /// Cart velocity.
    pub x_dot: Vec<f32>,
    /// Pole angle.
    pub theta: Vec<f32>,
    /// Pole angular velocity.
    pub theta_dot: Vec<f32>,
    /// Steps of the current episode (time limit).
    pub env_steps: Vec<u32>,
    /// Return accumulated by the current episode.
    pub ep_return: Vec<f32>,
    /// Length of the current episode.
    pub ep_len: Vec<u32>,
}

impl EngineState {
    /// Checks every buffer's length against an engine of `num_params` parameters and
    /// `num_envs` environments, before any of it is loaded.
    pub fn check_sizes(&self, num_params: usize, num_envs: usize) -> Result<(), KernelError> {
        let (np, ne) = (num_params, num_envs);
        for (name, got, expected) in [
            ("params", self.params.len(), np),
            ("adam_m", self.adam_m.len(), np),
            ("adam_v", self.adam_v.len(), np),
            ("x", self.x.len(), ne),
            ("x_dot", self.x_dot.len(), ne),
            ("theta", self.theta.len(), ne),
            ("theta_dot", self.theta_dot.len(), ne),
            ("env_steps", self.env_steps.len(), ne),
            ("ep_return", self.ep_return.len(), ne),
            ("ep_len", self.ep_len.len(), ne),
        ] {
            if got != expected {
                return Err(KernelError::Length { name, got, expected });
            }
        }
        Ok(())
    }
}

/// Creates the engine for `request`; `Auto` picks CUDA when a GPU is usable.
pub fn create_engine(
    request: DeviceRequest,
    config: EngineConfig,
) -> Result<Box<dyn Engine>, KernelError> {
    match request {
        DeviceRequest::Cpu => Ok(Box::new(crate::cpu::CpuEngine::new(config)?)),
        DeviceRequest::Cuda => Ok(Box::new(crate::cuda::CudaEngine::new(config)?)),
        DeviceRequest::Auto => match crate::cuda::probe() {
            Ok(()) => Ok(Box::new(crate::cuda::CudaEngine::new(config)?)),
            Err(why) => {
                tracing::info!("device = \"auto\": using the CPU engine ({why})");
                Ok(Box::new(crate::cpu::CpuEngine::new(config)?))
            }
        },
    }
}
