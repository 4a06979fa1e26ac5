//! [`CudaEngine`]: the [`Engine`] on one CUDA device.

use cudarc::driver::{CudaFunction, CudaSlice, PushKernelArg};

use super::learner::{cuda_err, delegate_learning, grid_1d, CudaLearner};
use super::modules::{ModuleId, ShapeDims};
use crate::layout::ParamLayout;
use crate::{rng, DeviceKind, Engine, EngineConfig, EngineState, KernelError, MinibatchEval, Rollout};

const MODE_STORE: i32 = 1;
const MODE_CRITIC: i32 = 2;

/// The kernels of the CartPole rollout module.
struct Kernels {
    rollout: CudaFunction,
    env_reset_all: CudaFunction,
    env_step_actions: CudaFunction,
}

/// Env state on the device, structure of arrays.
struct EnvBufs {
    x: CudaSlice<f32>,
    x_dot: CudaSlice<f32>,
    theta: CudaSlice<f32>,
    theta_dot: CudaSlice<f32>,
    steps: CudaSlice<u32>,
    ep_ret: CudaSlice<f32>,
}

/// Per-step arrays of one rollout (`[t * num_envs + env]`) and the finished-episode list.
struct RolloutBufs {
    obs: CudaSlice<f32>,
    actions: CudaSlice<u32>,
    logp: CudaSlice<f32>,
    entropy: CudaSlice<f32>,
    values: CudaSlice<f32>,
    rewards: CudaSlice<f32>,
    terminated: CudaSlice<u8>,
    truncated: CudaSlice<u8>,
    next_values: CudaSlice<f32>,
    fin_count: CudaSlice<u32>,
    fin_key: CudaSlice<u32>,
    fin_ret: CudaSlice<f32>,
    fin_len: CudaSlice<u32>,
}

/// Result of [`CudaEngine::step_with_actions`], one entry per env.
#[derive(Debug, Clone, Default)]
pub struct EnvStep {
    /// Observation for the next step (after the same-step autoreset), `[N][4]`.
    pub obs: Vec<[f32; 4]>,
    /// Post-step state before any reset, `[N][4]`.
    pub final_obs: Vec<[f32; 4]>,
    /// Rewards.
    pub rewards: Vec<f32>,
    /// 1 when the episode terminated.
    pub terminated: Vec<u8>,
    /// 1 when the episode was truncated.
    pub truncated: Vec<u8>,
}

/// Episode counts of [`CudaEngine::run_inference`].
#[derive(Debug, Clone, Copy, Default)]
pub struct InferenceStats {
    /// Episodes that finished.
    pub episodes: f64,
    /// Sum of their returns.
    pub return_sum: f64,
}

/// The CUDA engine (see the module docs and `README.md`).
pub struct CudaEngine {
    cfg: EngineConfig,
    key: u32,
    /// Device, parameters, optimiser and the learning step.
    learn: CudaLearner,
    k: Kernels,
    ep_stats: CudaSlice<f64>,
    step: u64,
    env: EnvBufs,
    ro: Option<RolloutBufs>,
    has_rollout: bool,
}

impl std::fmt::Debug for CudaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaEngine")
            .field("ordinal", &self.cfg.cuda_ordinal)
            .field("num_envs", &self.cfg.num_envs)
            .field("num_steps", &self.cfg.num_steps)
            .field("shape", &self.cfg.shape)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl CudaEngine {
    /// Starts the engine on device `cfg.cuda_ordinal`: compiles (or reuses) the kernels, uploads
    /// [`reference::init_params`] and resets every env with reset counter 0.
    /// [`KernelError::CudaUnavailable`] when no GPU, driver or NVRTC is usable.
    pub fn new(cfg: EngineConfig) -> Result<Self, KernelError> {
        super::probe().map_err(KernelError::CudaUnavailable)?;
        if cfg.shape.obs_dim != 4 || cfg.shape.n_actions != 2 {
            return Err(KernelError::InvalidConfig(format!(
                "CartPole needs obs_dim 4 and n_actions 2, got {} and {}",
                cfg.shape.obs_dim, cfg.shape.n_actions
            )));
        }
        let key = rng::run_key(cfg.seed);
        let learn = CudaLearner::new(&cfg, ShapeDims::new(&cfg.shape), key)?;
        let mut r = learn.load(ModuleId::Rollout)?.into_iter();
        let mut next = || r.next().expect("function list");
        let k = Kernels {
            rollout: next(),
            env_reset_all: next(),
            env_step_actions: next(),
        };
        learn.allow_dynamic_smem(&k.rollout)?;
        learn.check_shape(&next())?;
        let stream = &learn.stream;
        let zeros = |len: usize| stream.alloc_zeros::<f32>(len).map_err(cuda_err("alloc"));
        let ne = cfg.num_envs;
        let env = EnvBufs {
            x: zeros(ne)?,
            x_dot: zeros(ne)?,
            theta: zeros(ne)?,
            theta_dot: zeros(ne)?,
            steps: stream.alloc_zeros::<u32>(ne).map_err(cuda_err("alloc"))?,
            ep_ret: zeros(ne)?,
        };
        let mut engine = Self {
            ep_stats: stream.alloc_zeros::<f64>(2).map_err(cuda_err("alloc"))?,
            env,
            key,
            learn,
            k,
            step: 0,
            ro: None,
            has_rollout: false,
            cfg,
        };
        engine.reset_envs(0)?;
        Ok(engine)
    }

    /// Device name and the kernels' resource use (registers, spill bytes), for logs and benches.
    pub fn report(&self) -> String {
        self.learn.report(&[("rollout", &self.k.rollout)])
    }

    /// Forces host transfers through page-locked staging (`Some(true)`) or straight to pageable
    /// memory (`Some(false)`); `None` (the default) picks by size. Benchmarks compare the two.
    pub fn set_pinned_staging(&mut self, choice: Option<bool>) {
        self.learn.set_pinned_staging(choice);
    }

    /// Forces the warps per block of the warp-tiled kernels (benchmarks); `None` = automatic.
    pub fn set_warps_per_block(&mut self, warps: Option<usize>) {
        self.learn.set_warps_per_block(warps);
    }

    fn reset_envs(&mut self, counter: u32) -> Result<(), KernelError> {
        let e = &mut self.env;
        let (n, off) = (self.cfg.num_envs as i32, self.cfg.env_offset as u32);
        let mut b = self.learn.stream.launch_builder(&self.k.env_reset_all);
        b.arg(&mut e.x)
            .arg(&mut e.x_dot)
            .arg(&mut e.theta)
            .arg(&mut e.theta_dot);
        b.arg(&mut e.steps)
            .arg(&mut e.ep_ret)
            .arg(&n)
            .arg(&off)
            .arg(&self.key)
            .arg(&counter);
        // SAFETY: matches `env_reset_all(float*, float*, float*, float*, u32*, float*, int, u32,
        // u32, u32)` of rollout.cu; every buffer holds num_envs elements.
        unsafe { b.launch(grid_1d(self.cfg.num_envs, 256)) }
            .map_err(cuda_err("launch env_reset_all"))?;
        Ok(())
    }

    fn ensure_rollout_bufs(&mut self) -> Result<(), KernelError> {
        if self.ro.is_some() {
            return Ok(());
        }
        let len = self.cfg.num_envs * self.cfg.num_steps;
        let s = &self.learn.stream;
        let f = |n: usize| s.alloc_zeros::<f32>(n).map_err(cuda_err("alloc rollout"));
        let u = |n: usize| s.alloc_zeros::<u32>(n).map_err(cuda_err("alloc rollout"));
        let b = |n: usize| s.alloc_zeros::<u8>(n).map_err(cuda_err("alloc rollout"));
        self.ro = Some(RolloutBufs {
            obs: f(4 * len)?,
            actions: u(len)?,
            logp: f(len)?,
            entropy: f(len)?,
            values: f(len)?,
            rewards: f(len)?,
            terminated: b(len)?,
            truncated: b(len)?,
            next_values: f(len)?,
            fin_count: u(1)?,
            fin_key: u(len)?,
            fin_ret: f(len)?,
            fin_len: u(len)?,
        });
        Ok(())
    }

    /// Launches the fused rollout kernel for `steps` vectorized steps.
    fn launch_rollout(&mut self, steps: usize, mode: i32) -> Result<(), KernelError> {
        self.ensure_rollout_bufs()?;
        let cfg = self.learn.warp_launch(
            self.cfg.num_envs.div_ceil(32),
            self.learn.dims.fw_floats,
            self.learn.dims.warp_floats,
        );
        let ro = self.ro.as_mut().expect("allocated above");
        let e = &mut self.env;
        let (n, off, t0, nt) = (
            self.cfg.num_envs as i32,
            self.cfg.env_offset as u32,
            self.step,
            steps as i32,
        );
        let mut b = self.learn.stream.launch_builder(&self.k.rollout);
        b.arg(&self.learn.params);
        b.arg(&mut e.x)
            .arg(&mut e.x_dot)
            .arg(&mut e.theta)
            .arg(&mut e.theta_dot);
        b.arg(&mut e.steps).arg(&mut e.ep_ret);
        b.arg(&n)
            .arg(&off)
            .arg(&self.key)
            .arg(&t0)
            .arg(&nt)
            .arg(&mode);
        b.arg(&mut ro.obs)
            .arg(&mut ro.actions)
            .arg(&mut ro.logp)
            .arg(&mut ro.entropy);
        b.arg(&mut ro.values)
            .arg(&mut ro.rewards)
            .arg(&mut ro.terminated)
            .arg(&mut ro.truncated);
        b.arg(&mut ro.next_values);
        b.arg(&mut ro.fin_count)
            .arg(&mut ro.fin_key)
            .arg(&mut ro.fin_ret)
            .arg(&mut ro.fin_len);
        b.arg(&mut self.ep_stats);
        // SAFETY: matches `rollout(...)` of rollout.cu argument for argument. With MODE_STORE the
        // kernel writes t * n + i for t < steps <= num_steps, within the num_steps * num_envs
        // rollout buffers; fin_* receive at most that many entries (fin_count was zeroed).
        // Without MODE_STORE only env state and ep_stats are written.
        unsafe { b.launch(cfg) }.map_err(cuda_err("launch rollout"))?;
        self.step += steps as u64;
        Ok(())
    }

    /// Runs one rollout and keeps every array on the device (no copy to the host): the device
    /// part of [`Engine::rollout`], for benchmarks and device-side training loops.
    pub fn rollout_on_device(&mut self) -> Result<(), KernelError> {
        self.ensure_rollout_bufs()?;
        let ro = self.ro.as_mut().expect("allocated");
        self.learn.stream
            .memset_zeros(&mut ro.fin_count)
            .map_err(cuda_err("memset"))?;
        self.launch_rollout(self.cfg.num_steps, MODE_STORE | MODE_CRITIC)?;
        self.has_rollout = true;
        self.synchronize()
    }

    /// Policy inference only (actor, sampling, env step; no critic, no per-step arrays) for
    /// `steps` vectorized steps in one launch; advances the env state and the global step.
    pub fn run_inference(&mut self, steps: usize) -> Result<InferenceStats, KernelError> {
        self.learn.stream
            .memset_zeros(&mut self.ep_stats)
            .map_err(cuda_err("memset"))?;
        self.launch_rollout(steps, 0)?;
        let s = self
            .learn
            .stream
            .clone_dtoh(&self.ep_stats)
            .map_err(cuda_err("download"))?;
        Ok(InferenceStats {
            episodes: s[0],
            return_sum: s[1],
        })
    }

    /// Waits for all work queued on the engine's stream.
    pub fn synchronize(&self) -> Result<(), KernelError> {
        self.learn.synchronize()
    }

    /// One vectorized env step with the given actions (no policy), with the same autoreset and
    /// RNG counters as a rollout step; advances the global step.
    pub fn step_with_actions(&mut self, actions: &[u32]) -> Result<EnvStep, KernelError> {
        let n = self.cfg.num_envs;
        if actions.len() != n {
            return Err(KernelError::Length {
                name: "actions",
                got: actions.len(),
                expected: n,
            });
        }
        let s = &self.learn.stream;
        let acts = s.clone_htod(actions).map_err(cuda_err("upload actions"))?;
        let mut obs = s.alloc_zeros::<f32>(4 * n).map_err(cuda_err("alloc"))?;
        let mut fin = s.alloc_zeros::<f32>(4 * n).map_err(cuda_err("alloc"))?;
        let mut rew = s.alloc_zeros::<f32>(n).map_err(cuda_err("alloc"))?;
        let mut term = s.alloc_zeros::<u8>(n).map_err(cuda_err("alloc"))?;
        let mut trunc = s.alloc_zeros::<u8>(n).map_err(cuda_err("alloc"))?;
        let e = &mut self.env;
        let (ni, off, t) = (n as i32, self.cfg.env_offset as u32, self.step);
        let mut b = s.launch_builder(&self.k.env_step_actions);
        b.arg(&mut e.x)
            .arg(&mut e.x_dot)
            .arg(&mut e.theta)
            .arg(&mut e.theta_dot);
        b.arg(&mut e.steps)
            .arg(&mut e.ep_ret)
            .arg(&ni)
            .arg(&off)
            .arg(&self.key)
            .arg(&t);
        b.arg(&acts)
            .arg(&mut obs)
            .arg(&mut fin)
            .arg(&mut rew)
            .arg(&mut term)
            .arg(&mut trunc);
        // SAFETY: matches `env_step_actions(...)` of rollout.cu; every buffer holds num_envs
        // elements (float4 ones 4 * num_envs floats).
        unsafe { b.launch(grid_1d(n, 256)) }.map_err(cuda_err("launch env_step_actions"))?;
        self.step += 1;
        let quads = |v: Vec<f32>| {
            v.chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect()
        };
        let dl = cuda_err("download");
        Ok(EnvStep {
            obs: quads(s.clone_dtoh(&obs).map_err(&dl)?),
            final_obs: quads(s.clone_dtoh(&fin).map_err(&dl)?),
            rewards: s.clone_dtoh(&rew).map_err(&dl)?,
            terminated: s.clone_dtoh(&term).map_err(&dl)?,
            truncated: s.clone_dtoh(&trunc).map_err(&dl)?,
        })
    }

    /// Observations of the last rollout, `[t * num_envs + env][4]` (tests and debugging).
    pub fn rollout_observations(&self) -> Result<Vec<[f32; 4]>, KernelError> {
        let ro = self
            .ro
            .as_ref()
            .ok_or_else(|| KernelError::InvalidConfig("no rollout yet".into()))?;
        let v = self
            .learn
            .stream
            .clone_dtoh(&ro.obs)
            .map_err(cuda_err("download"))?;
        Ok(v.chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect())
    }

    /// Current env observations `[N][4]` (tests and debugging).
    pub fn observations(&self) -> Result<Vec<[f32; 4]>, KernelError> {
        let dl = cuda_err("download");
        let e = &self.env;
        let (x, xd, th, thd) = (
            self.learn.stream.clone_dtoh(&e.x).map_err(&dl)?,
            self.learn.stream.clone_dtoh(&e.x_dot).map_err(&dl)?,
            self.learn.stream.clone_dtoh(&e.theta).map_err(&dl)?,
            self.learn.stream.clone_dtoh(&e.theta_dot).map_err(&dl)?,
        );
        Ok((0..self.cfg.num_envs)
            .map(|i| [x[i], xd[i], th[i], thd[i]])
            .collect())
    }

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.learn.layout
    }
}

impl Engine for CudaEngine {
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
        self.rollout_on_device()?;
        let (nt, ne) = (self.cfg.num_steps, self.cfg.num_envs);
        let ro = self.ro.as_ref().expect("rollout ran");
        let dl = cuda_err("download rollout");
        out.num_steps = nt;
        out.num_envs = ne;
        let len = nt * ne;
        let l = &mut self.learn;
        l.download(&ro.actions, len, &mut out.actions)?;
        l.download(&ro.logp, len, &mut out.logp)?;
        l.download(&ro.entropy, len, &mut out.entropy)?;
        l.download(&ro.values, len, &mut out.values)?;
        l.download(&ro.rewards, len, &mut out.rewards)?;
        l.download(&ro.terminated, len, &mut out.terminated)?;
        l.download(&ro.truncated, len, &mut out.truncated)?;
        l.download(&ro.next_values, len, &mut out.next_values)?;
        let s = &self.learn.stream;
        let count = s.clone_dtoh(&ro.fin_count).map_err(&dl)?[0] as usize;
        out.finished_returns.clear();
        out.finished_lengths.clear();
        if count > 0 {
            let keys = s.clone_dtoh(&ro.fin_key.slice(..count)).map_err(&dl)?;
            let rets = s.clone_dtoh(&ro.fin_ret.slice(..count)).map_err(&dl)?;
            let lens = s.clone_dtoh(&ro.fin_len.slice(..count)).map_err(&dl)?;
            // Atomic appends arrive in any order; the contract is t-major, then env.
            let mut order: Vec<usize> = (0..count).collect();
            order.sort_unstable_by_key(|&i| keys[i]);
            out.finished_returns.extend(order.iter().map(|&i| rets[i]));
            out.finished_lengths.extend(order.iter().map(|&i| lens[i]));
        }
        self.synchronize()
    }

    fn evaluate(&mut self, samples: &[u32], out: &mut MinibatchEval) -> Result<(), KernelError> {
        let ro = match (&self.ro, self.has_rollout) {
            (Some(ro), true) => ro,
            _ => {
                return Err(KernelError::InvalidConfig(
                    "evaluate called before rollout".into(),
                ))
            }
        };
        let total = self.cfg.num_envs * self.cfg.num_steps;
        self.learn
            .evaluate(&ro.obs, &ro.actions, total, samples, out)
    }

    delegate_learning!();

    fn save_state(&self) -> Result<EngineState, KernelError> {
        let s = &self.learn.stream;
        let dl = cuda_err("download state");
        let e = &self.env;
        let steps = s.clone_dtoh(&e.steps).map_err(&dl)?;
        let st = EngineState {
            x: s.clone_dtoh(&e.x).map_err(&dl)?,
            x_dot: s.clone_dtoh(&e.x_dot).map_err(&dl)?,
            theta: s.clone_dtoh(&e.theta).map_err(&dl)?,
            theta_dot: s.clone_dtoh(&e.theta_dot).map_err(&dl)?,
            ep_return: s.clone_dtoh(&e.ep_ret).map_err(&dl)?,
            // An episode's length is its env step counter (both restart at every reset).
            ep_len: steps.clone(),
            env_steps: steps,
            ..self.learn.save_state(self.step)?
        };
        self.learn.synchronize()?;
        Ok(st)
    }

    fn load_state(&mut self, st: &EngineState) -> Result<(), KernelError> {
        st.check_sizes(self.learn.layout.num_params, self.cfg.num_envs)?;
        if st.ep_len != st.env_steps {
            return Err(KernelError::InvalidConfig(
                "the CUDA engine keeps an episode's length in its env step counter; this snapshot has ep_len != env_steps".into(),
            ));
        }
        self.learn.load_state(st)?;
        let s = &self.learn.stream;
        let up = cuda_err("upload state");
        let e = &mut self.env;
        s.memcpy_htod(st.x.as_slice(), &mut e.x).map_err(&up)?;
        s.memcpy_htod(st.x_dot.as_slice(), &mut e.x_dot)
            .map_err(&up)?;
        s.memcpy_htod(st.theta.as_slice(), &mut e.theta)
            .map_err(&up)?;
        s.memcpy_htod(st.theta_dot.as_slice(), &mut e.theta_dot)
            .map_err(&up)?;
        s.memcpy_htod(st.env_steps.as_slice(), &mut e.steps)
            .map_err(&up)?;
        s.memcpy_htod(st.ep_return.as_slice(), &mut e.ep_ret)
            .map_err(&up)?;
        self.step = st.step;
        self.learn.synchronize()
    }
}

// The engine moves to the job's training thread: keep it `Send` (checked at compile time).
const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<CudaEngine>();
};
