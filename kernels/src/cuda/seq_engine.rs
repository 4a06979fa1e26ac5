//! [`CudaSeqEngine`]: the sequence tasks (SEMANTICS.md section 6) behind the [`Engine`] seam on
//! one CUDA device. The host draws prompts and answers ([`SeqInputs`]); `seq_rollout` (seq.cu)
//! generates every response token by token in one launch; `seq_build_obs` writes the one-hot
//! observation rows that the shared learning half ([`CudaLearner`]) evaluates.

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use super::learner::{cuda_err, delegate_learning, CudaLearner};
use super::modules::{ModuleId, ShapeDims};
use super::seq_host::SeqInputs;
use crate::seq::{EnvPlan, PromptRef, SeqTask};
use crate::{rng, DeviceKind, Engine, EngineConfig, EngineState, KernelError, MinibatchEval, Rollout};

/// The kernels of the sequence module.
struct SeqKernels {
    seq_rollout: CudaFunction,
    seq_build_obs: CudaFunction,
}

/// Device buffers of one rollout or replay: the uploaded inputs, the generated tokens and their
/// scores (`[t * num_envs + env]`), and the observation rows (`obs_dim` floats per sample).
struct SeqBufs {
    prompts: CudaSlice<u32>,
    answers: CudaSlice<u32>,
    expert: CudaSlice<u8>,
    actions: CudaSlice<u32>,
    logp: CudaSlice<f32>,
    entropy: CudaSlice<f32>,
    values: CudaSlice<f32>,
    obs: CudaSlice<f32>,
}

/// The CUDA engine of the sequence tasks, with the semantics of `SeqEngine` (tested against it
/// on a GPU in `kernels/tests/cuda_seq.rs`, and its kernels against `seq::reference` by the CPU
/// emulation in `emu/`).
pub struct CudaSeqEngine {
    cfg: EngineConfig,
    task: SeqTask,
    key: u32,
    learn: CudaLearner,
    k: SeqKernels,
    step: u64,
    /// The plan of the next rollout (`plan_rollout`); `None`: the default layout.
    plan: Option<Vec<EnvPlan>>,
    inputs: SeqInputs,
    bufs: SeqBufs,
    /// Whether `bufs` hold a rollout or a replay that `evaluate` may read.
    has_rollout: bool,
}

impl std::fmt::Debug for CudaSeqEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaSeqEngine")
            .field("ordinal", &self.cfg.cuda_ordinal)
            .field("task", &self.task)
            .field("num_envs", &self.cfg.num_envs)
            .field("shape", &self.cfg.shape)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl CudaSeqEngine {
    /// Checks `config` against `task` as `SeqEngine::new` does, then starts on device
    /// `config.cuda_ordinal`: compiles (or reuses) the kernels for this shape and task and
    /// uploads `reference::init_params`. [`KernelError::CudaUnavailable`] without a usable GPU.
    pub fn new(config: EngineConfig, task: SeqTask) -> Result<Self, KernelError> {
        crate::seq::validate(&config, &task)?;
        let key = rng::run_key(config.seed);
        let learn = CudaLearner::new(&config, ShapeDims::for_seq(&config.shape, &task), key)?;
        let mut f = learn.load(ModuleId::Seq)?.into_iter();
        let mut next = || f.next().expect("function list");
        let k = SeqKernels {
            seq_rollout: next(),
            seq_build_obs: next(),
        };
        learn.allow_dynamic_smem(&k.seq_rollout)?;
        learn.check_shape(&next())?;
        let (ne, len) = (config.num_envs, config.num_envs * config.num_steps);
        let s = &learn.stream;
        let alloc = cuda_err("alloc sequence buffers");
        let bufs = SeqBufs {
            prompts: s.alloc_zeros::<u32>(ne * task.prompt_len).map_err(&alloc)?,
            answers: s.alloc_zeros::<u32>(len).map_err(&alloc)?,
            expert: s.alloc_zeros::<u8>(ne).map_err(&alloc)?,
            actions: s.alloc_zeros::<u32>(len).map_err(&alloc)?,
            logp: s.alloc_zeros::<f32>(len).map_err(&alloc)?,
            entropy: s.alloc_zeros::<f32>(len).map_err(&alloc)?,
            values: s.alloc_zeros::<f32>(len).map_err(&alloc)?,
            obs: s.alloc_zeros::<f32>(len * config.shape.obs_dim).map_err(&alloc)?,
        };
        Ok(Self {
            inputs: SeqInputs::new(task, ne),
            step: 0,
            plan: None,
            has_rollout: false,
            bufs,
            k,
            learn,
            key,
            task,
            cfg: config,
        })
    }

    /// The task this engine generates responses for.
    pub fn task(&self) -> &SeqTask {
        &self.task
    }

    /// Prompts of the last rollout or replay, `[local env][prompt_len]`; zeros before the first.
    pub fn prompts(&self) -> &[u32] {
        &self.inputs.prompts
    }

    /// The observation rows `evaluate` reads, `[(t * num_envs + env) * obs_dim + k]` (tests).
    pub fn observations(&self) -> Result<Vec<f32>, KernelError> {
        let v = self
            .learn
            .stream
            .clone_dtoh(&self.bufs.obs)
            .map_err(cuda_err("download observations"))?;
        self.learn.synchronize()?;
        Ok(v)
    }

    /// Device name and the kernels' resource use (registers, spill bytes), for logs and benches.
    pub fn report(&self) -> String {
        self.learn.report(&[("seq_rollout", &self.k.seq_rollout)])
    }

    /// Uploads the prompts, answers and expert flags of `self.inputs`.
    fn upload_inputs(&mut self) -> Result<(), KernelError> {
        let (s, b, i) = (&self.learn.stream, &mut self.bufs, &self.inputs);
        let up = cuda_err("upload prompts");
        s.memcpy_htod(i.prompts.as_slice(), &mut b.prompts).map_err(&up)?;
        s.memcpy_htod(i.answers.as_slice(), &mut b.answers).map_err(&up)?;
        s.memcpy_htod(i.expert.as_slice(), &mut b.expert).map_err(&up)
    }

    /// Rebuilds the observation rows from the uploaded prompts and tokens.
    fn build_obs(&mut self) -> Result<(), KernelError> {
        let total = self.cfg.num_envs * self.cfg.num_steps * self.cfg.shape.obs_dim;
        // A grid-stride loop: a bounded grid covers any size.
        let blocks = total.div_ceil(256).clamp(1, 1 << 16) as u32;
        let n = self.cfg.num_envs as i32;
        let b = &mut self.bufs;
        let mut lb = self.learn.stream.launch_builder(&self.k.seq_build_obs);
        lb.arg(&b.prompts).arg(&b.actions).arg(&n).arg(&mut b.obs);
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `seq_build_obs(const u32* prompts, const u32* actions, int n_envs,
        // float* obs)` of seq.cu: prompts hold num_envs * SEQ_P tokens, actions num_envs * SEQ_R
        // (SEQ_R = num_steps, checked by `validate`), obs num_envs * SEQ_R * OBS_DIM floats.
        unsafe { lb.launch(cfg) }.map_err(cuda_err("launch seq_build_obs"))?;
        Ok(())
    }
}

impl Engine for CudaSeqEngine {
    fn device(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    fn num_params(&self) -> usize {
        self.learn.layout.num_params
    }

    fn global_step(&self) -> u64 {
        self.step
    }

    fn rollout(&mut self, out: &mut Rollout) -> Result<(), KernelError> {
        let (ne, nt) = (self.cfg.num_envs, self.cfg.num_steps);
        // `step` is always a multiple of `num_steps` (only rollouts advance it; `load_state`
        // checks), so this is the count of rollouts so far.
        let rollout = (self.step / nt as u64) as u32;
        let plan = self.plan.take();
        self.inputs
            .for_rollout(self.key, self.cfg.env_offset, rollout, plan.as_deref());
        self.upload_inputs()?;
        let launch = self.learn.warp_launch(
            ne.div_ceil(32),
            self.learn.dims.fw_floats,
            self.learn.dims.warp_floats,
        );
        let (n, off, t0) = (ne as i32, self.cfg.env_offset as u32, self.step);
        let b = &mut self.bufs;
        let mut lb = self.learn.stream.launch_builder(&self.k.seq_rollout);
        lb.arg(&self.learn.params)
            .arg(&b.prompts)
            .arg(&b.answers)
            .arg(&b.expert);
        lb.arg(&n).arg(&off).arg(&self.key).arg(&t0);
        lb.arg(&mut b.actions)
            .arg(&mut b.logp)
            .arg(&mut b.entropy)
            .arg(&mut b.values);
        // SAFETY: matches `seq_rollout(const float* params, const u32* prompts, const u32*
        // answers, const u8* expert, int n_envs, u32 env_offset, u32 key, u64 t0, u32* actions,
        // float* logp, float* ent, float* values)` of seq.cu. Inputs hold num_envs * SEQ_P,
        // num_envs * SEQ_R and num_envs entries; the kernel writes t * n + i for t < SEQ_R =
        // num_steps, inside the num_steps * num_envs outputs. Shared memory is sized by
        // warp_launch for the forward weights plus per-warp scratch, as rollout.cu.
        unsafe { lb.launch(launch) }.map_err(cuda_err("launch seq_rollout"))?;
        self.build_obs()?;
        self.step += nt as u64;
        self.has_rollout = true;
        let len = ne * nt;
        let (l, b) = (&mut self.learn, &self.bufs);
        l.download(&b.actions, len, &mut out.actions)?;
        l.download(&b.logp, len, &mut out.logp)?;
        l.download(&b.entropy, len, &mut out.entropy)?;
        l.download(&b.values, len, &mut out.values)?;
        self.inputs.outcomes(out);
        self.learn.synchronize()
    }

    fn evaluate(&mut self, samples: &[u32], out: &mut MinibatchEval) -> Result<(), KernelError> {
        if !self.has_rollout {
            return Err(KernelError::InvalidConfig(
                "evaluate called before rollout or load_sequences".into(),
            ));
        }
        let total = self.cfg.num_envs * self.cfg.num_steps;
        let b = &self.bufs;
        self.learn
            .evaluate(&b.obs, &b.actions, total, samples, out)
    }

    delegate_learning!();

    fn plan_rollout(&mut self, plan: &[EnvPlan]) -> Result<(), KernelError> {
        if plan.len() != self.cfg.num_envs {
            return Err(KernelError::Length {
                name: "plan",
                got: plan.len(),
                expected: self.cfg.num_envs,
            });
        }
        self.plan = Some(plan.to_vec());
        Ok(())
    }

    fn load_sequences(&mut self, prompts: &[PromptRef], actions: &[u32]) -> Result<(), KernelError> {
        let (ne, nt) = (self.cfg.num_envs, self.cfg.num_steps);
        for (name, got, expected) in [("prompts", prompts.len(), ne), ("actions", actions.len(), ne * nt)] {
            if got != expected {
                return Err(KernelError::Length { name, got, expected });
            }
        }
        let vocab = self.task.vocab as u32;
        if let Some(&bad) = actions.iter().find(|&&a| a >= vocab) {
            return Err(KernelError::InvalidConfig(format!(
                "action {bad} is not a token of vocab {vocab}"
            )));
        }
        self.inputs.for_replay(self.key, prompts);
        self.upload_inputs()?;
        self.learn
            .stream
            .memcpy_htod(actions, &mut self.bufs.actions)
            .map_err(cuda_err("upload actions"))?;
        self.build_obs()?;
        self.has_rollout = true;
        self.learn.synchronize()
    }

    /// Parameters, Adam state and the step: no env state survives a rollout, so the CartPole
    /// vectors of [`EngineState`] stay empty (as `SeqEngine`'s, so snapshots move between them).
    fn save_state(&self) -> Result<EngineState, KernelError> {
        self.learn.save_state(self.step)
    }

    fn load_state(&mut self, st: &EngineState) -> Result<(), KernelError> {
        crate::seq::check_snapshot(st, self.learn.layout.num_params, self.cfg.num_steps)?;
        self.learn.load_state(st)?;
        self.step = st.step;
        self.learn.synchronize()
    }
}
