//! [`CudaEngine`]: the [`Engine`] on one CUDA device.

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{
    result as cu, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use rayon::prelude::*;

use super::modules::{self, ModuleId, ShapeDims};
use crate::layout::ParamLayout;
use crate::{
    reference, rng, DeviceKind, Engine, EngineConfig, EngineState, KernelError, MinibatchEval,
    Rollout,
};

const MODE_STORE: i32 = 1;
const MODE_CRITIC: i32 = 2;

fn cuda_err(context: &'static str) -> impl Fn(DriverError) -> KernelError {
    move |e| KernelError::Cuda {
        context,
        message: e.to_string(),
    }
}

/// The kernels of the three modules.
struct Kernels {
    rollout: CudaFunction,
    env_reset_all: CudaFunction,
    env_step_actions: CudaFunction,
    evaluate_fwd: CudaFunction,
    backward_deltas: CudaFunction,
    grad_partial: CudaFunction,
    grad_sum: CudaFunction,
    grad_sqnorm: CudaFunction,
    adam_step: CudaFunction,
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

/// Minibatch buffers of evaluate / accumulate_grad, sized for `cap` padded samples.
struct MinibatchBufs {
    cap: usize,
    cache: CudaSlice<f32>,
    slots: CudaSlice<u64>,
    slot_offsets: Vec<u64>,
    slots_bp: usize,
    samples: CudaSlice<u32>,
    act_g: CudaSlice<u32>,
    logp: CudaSlice<f32>,
    entropy: CudaSlice<f32>,
    value: CudaSlice<f32>,
    d_logp: CudaSlice<f32>,
    d_value: CudaSlice<f32>,
    d_entropy: CudaSlice<f32>,
    partial: CudaSlice<f32>,
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
    layout: ParamLayout,
    dims: ShapeDims,
    key: u32,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    k: Kernels,
    num_sms: usize,
    smem_optin: usize,
    warps_override: Option<usize>,
    params: CudaSlice<f32>,
    grads: CudaSlice<f32>,
    adam_m: CudaSlice<f32>,
    adam_v: CudaSlice<f32>,
    sqnorm: CudaSlice<f64>,
    norm: CudaSlice<f32>,
    ep_stats: CudaSlice<f64>,
    adam_t: u64,
    step: u64,
    env: EnvBufs,
    ro: Option<RolloutBufs>,
    has_rollout: bool,
    mb: Option<MinibatchBufs>,
    evaluated: usize,
    host_grads: Vec<f32>,
    /// Page-locked staging for large transfers (None until first use).
    staging: Option<PinnedHostSlice<u32>>,
    /// Staging choice: None = by size ([`PINNED_MIN_BYTES`]), Some(true/false) = forced.
    pinned: Option<bool>,
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

/// Raw device address of `s` plus `offset` elements, for kernel arguments that point inside a
/// buffer. Valid while `s` lives; event tracking is off, so no synchronisation is implied.
fn dptr<T>(s: &CudaSlice<T>, stream: &CudaStream, offset: usize) -> u64 {
    let (p, _sync) = s.device_ptr(stream);
    p + (offset * std::mem::size_of::<T>()) as u64
}

fn grid_1d(n: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u32).div_ceil(threads).max(1), 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Transfers of at least this many bytes go through page-locked staging by default. Measured on
/// an H100 machine (README.md): for 8 MB arrays the pageable copy was faster (2.1e8 vs 1.6e8
/// rollout steps/s to the host), from 64 MB arrays on the staged copy was (2.5e8 vs 2.1e8).
const PINNED_MIN_BYTES: usize = 32 << 20;

fn use_pinned(choice: Option<bool>, bytes: usize) -> bool {
    choice.unwrap_or(bytes >= PINNED_MIN_BYTES)
}

/// Page-locked staging of at least `bytes`, reallocated when too small.
fn staging_ptr(
    ctx: &Arc<CudaContext>,
    staging: &mut Option<PinnedHostSlice<u32>>,
    bytes: usize,
) -> Result<*mut u8, KernelError> {
    let words = bytes.div_ceil(4).max(1 << 20);
    if staging.as_ref().is_none_or(|s| s.len() < words) {
        *staging = None;
        // SAFETY: the buffer is only read after a device copy into it has completed.
        let fresh = unsafe { ctx.alloc_pinned_with_flags::<u32>(words, 0) }
            .map_err(cuda_err("cuMemHostAlloc"))?;
        *staging = Some(fresh);
    }
    let s = staging.as_mut().expect("allocated above");
    Ok(s.as_mut_ptr().map_err(cuda_err("pinned staging"))? as *mut u8)
}

/// Copies the first `len` elements of `src` into `dst` (resized to `len`): through page-locked
/// staging and a parallel host copy when [`use_pinned`] says so, else into pageable memory.
fn download<T: DeviceRepr + Copy + Default + Send + Sync>(
    ctx: &Arc<CudaContext>,
    stream: &Arc<CudaStream>,
    staging: &mut Option<PinnedHostSlice<u32>>,
    pinned: Option<bool>,
    src: &CudaSlice<T>,
    len: usize,
    dst: &mut Vec<T>,
) -> Result<(), KernelError> {
    assert!(len <= src.len());
    if dst.len() != len {
        dst.clear();
        dst.resize(len, T::default());
    }
    if len == 0 {
        return Ok(());
    }
    let dl = cuda_err("download");
    if !use_pinned(pinned, len * std::mem::size_of::<T>()) {
        return stream
            .memcpy_dtoh(&src.slice(..len), dst.as_mut_slice())
            .map_err(&dl);
    }
    let ptr = staging_ptr(ctx, staging, len * std::mem::size_of::<T>())? as *mut T;
    // SAFETY: the staging buffer holds at least len * size_of::<T>() bytes, is page-aligned, and
    // nothing else uses it until this function returns.
    let stage = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    let (sp, _sync) = src.device_ptr(stream);
    // SAFETY: src holds at least len elements; the copy completes before the synchronize returns.
    unsafe { cu::memcpy_dtoh_async(stage, sp, stream.cu_stream()) }.map_err(&dl)?;
    stream.synchronize().map_err(&dl)?;
    const CHUNK: usize = 1 << 16;
    dst.par_chunks_mut(CHUNK)
        .zip(stage.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
    Ok(())
}

impl CudaEngine {
    /// Starts the engine on device `cfg.cuda_ordinal`: compiles (or reuses) the kernels, uploads
    /// [`reference::init_params`] and resets every env with reset counter 0.
    /// [`KernelError::CudaUnavailable`] when no GPU, driver or NVRTC is usable.
    pub fn new(cfg: EngineConfig) -> Result<Self, KernelError> {
        super::probe().map_err(KernelError::CudaUnavailable)?;
        let layout = ParamLayout::new(&cfg.shape)?;
        if cfg.shape.obs_dim != 4 || cfg.shape.n_actions != 2 {
            return Err(KernelError::InvalidConfig(format!(
                "CartPole needs obs_dim 4 and n_actions 2, got {} and {}",
                cfg.shape.obs_dim, cfg.shape.n_actions
            )));
        }
        if cfg.num_envs == 0 || cfg.num_steps == 0 {
            return Err(KernelError::InvalidConfig(
                "num_envs and num_steps must be >= 1".into(),
            ));
        }
        let samples = cfg.num_envs.saturating_mul(cfg.num_steps);
        if samples > u32::MAX as usize || cfg.num_envs > i32::MAX as usize {
            return Err(KernelError::InvalidConfig(format!(
                "the CUDA engine indexes samples with u32: num_envs * num_steps = {samples} is too large"
            )));
        }
        let count = CudaContext::device_count().map_err(cuda_err("cuDeviceGetCount"))?;
        if cfg.cuda_ordinal >= count.max(0) as usize {
            return Err(KernelError::CudaUnavailable(format!(
                "CUDA device {} requested, {count} present",
                cfg.cuda_ordinal
            )));
        }
        let dims = ShapeDims::new(&cfg.shape);
        let ctx =
            CudaContext::new(cfg.cuda_ordinal).map_err(cuda_err("cuCtx (primary context)"))?;
        // One stream, ordered work: cudarc's per-buffer events would only add overhead.
        // SAFETY: nothing has been allocated on this context by this engine yet, and the engine
        // uses a single stream for every buffer it owns.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let cc = ctx
            .compute_capability()
            .map_err(cuda_err("compute capability"))?;
        let attr = |a| ctx.attribute(a).map_err(cuda_err("device attribute"));
        let num_sms = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize;
        let smem_optin =
            attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?
                as usize;
        let fw_need = 4 * (dims.fw_floats + dims.warp_floats);
        let bw_need = 4 * (dims.bw_floats + dims.bw_warp_floats);
        if fw_need.max(bw_need) > smem_optin {
            return Err(KernelError::InvalidConfig(format!(
                "network {:?} needs {} bytes of shared memory per block, the device allows {smem_optin}",
                cfg.shape,
                fw_need.max(bw_need)
            )));
        }

        let load = |id: ModuleId| -> Result<Vec<CudaFunction>, KernelError> {
            let src = modules::ptx(id, &dims, cc)?;
            let module = match (ctx.load_module(src.ptx), src.cache_file) {
                (Ok(m), _) => m,
                // A cached file the driver refuses (damaged, or from a newer toolkit than this
                // driver) is dropped and compiled afresh, once.
                (Err(e), Some(file)) => {
                    tracing::warn!(file, error = ?e, "the driver refused cached PTX; compiling again");
                    modules::forget(id, &dims, cc, &file);
                    ctx.load_module(modules::ptx(id, &dims, cc)?.ptx)
                        .map_err(cuda_err("cuModuleLoadData (PTX JIT)"))?
                }
                (Err(e), None) => return Err(cuda_err("cuModuleLoadData (PTX JIT)")(e)),
            };
            id.functions()
                .iter()
                .map(|name| {
                    module
                        .load_function(name)
                        .map_err(cuda_err("cuModuleGetFunction"))
                })
                .collect()
        };
        let mut r = load(ModuleId::Rollout)?.into_iter();
        let mut t = load(ModuleId::Train)?.into_iter();
        let mut o = load(ModuleId::Optim)?.into_iter();
        let next = |it: &mut std::vec::IntoIter<CudaFunction>| it.next().expect("function list");
        let (rollout, env_reset_all, env_step_actions, shape_info) =
            (next(&mut r), next(&mut r), next(&mut r), next(&mut r));
        let k = Kernels {
            rollout,
            env_reset_all,
            env_step_actions,
            evaluate_fwd: next(&mut t),
            backward_deltas: next(&mut t),
            grad_partial: next(&mut t),
            grad_sum: next(&mut t),
            grad_sqnorm: next(&mut o),
            adam_step: next(&mut o),
        };
        let dyn_attr = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        for f in [&k.rollout, &k.evaluate_fwd, &k.backward_deltas] {
            f.set_attribute(dyn_attr, smem_optin as i32)
                .map_err(cuda_err("cuFuncSetAttribute"))?;
        }

        // The device's own shape arithmetic must agree with the host's.
        let mut info = stream.alloc_zeros::<i32>(8).map_err(cuda_err("alloc"))?;
        {
            let mut b = stream.launch_builder(&shape_info);
            b.arg(&mut info);
            // SAFETY: matches `shape_info(int* out)` of policy.cu; `info` holds 8 ints (6 written).
            unsafe { b.launch(grid_1d(1, 32)) }.map_err(cuda_err("launch shape_info"))?;
        }
        let info = stream.clone_dtoh(&info).map_err(cuda_err("download"))?;
        let want = [
            layout.actor.last().map_or(0, |l| l.bias + l.fan_out) as i32,
            layout.num_params as i32,
            dims.fw_floats as i32,
            dims.bw_floats as i32,
            dims.warp_floats as i32,
            dims.slot_rows().len() as i32,
        ];
        if info[..6] != want {
            return Err(KernelError::Cuda {
                context: "shape check",
                message: format!(
                    "device layout {:?} differs from host layout {want:?}",
                    &info[..6]
                ),
            });
        }

        let key = rng::run_key(cfg.seed);
        let n = layout.num_params;
        let init = reference::init_params(&layout, key);
        let params = stream
            .clone_htod(&init)
            .map_err(cuda_err("upload params"))?;
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
            grads: zeros(n)?,
            adam_m: zeros(n)?,
            adam_v: zeros(n)?,
            sqnorm: stream.alloc_zeros::<f64>(1).map_err(cuda_err("alloc"))?,
            norm: zeros(1)?,
            ep_stats: stream.alloc_zeros::<f64>(2).map_err(cuda_err("alloc"))?,
            params,
            env,
            key,
            dims,
            layout,
            k,
            num_sms,
            smem_optin,
            warps_override: None,
            adam_t: 0,
            step: 0,
            ro: None,
            has_rollout: false,
            mb: None,
            evaluated: 0,
            host_grads: vec![0.0; n],
            staging: None,
            pinned: None,
            stream,
            ctx,
            cfg,
        };
        engine.reset_envs(0)?;
        Ok(engine)
    }

    /// Device name and the kernels' resource use (registers, spill bytes), for logs and benches.
    pub fn report(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "?".into());
        let mut s = format!(
            "{name}: {} SMs, {} B shared memory per block (opt-in)",
            self.num_sms, self.smem_optin
        );
        for (label, f) in [
            ("rollout", &self.k.rollout),
            ("evaluate_fwd", &self.k.evaluate_fwd),
            ("backward_deltas", &self.k.backward_deltas),
            ("grad_partial", &self.k.grad_partial),
        ] {
            let regs = f.num_regs().unwrap_or(-1);
            let local = f.local_size_bytes().unwrap_or(-1);
            s.push_str(&format!("; {label}: {regs} regs, {local} B local"));
        }
        s
    }

    /// Forces host transfers through page-locked staging (`Some(true)`) or straight to pageable
    /// memory (`Some(false)`); `None` (the default) picks by size. Benchmarks compare the two.
    pub fn set_pinned_staging(&mut self, choice: Option<bool>) {
        self.pinned = choice;
    }

    /// Forces the warps per block of the warp-tiled kernels (benchmarks); `None` = automatic.
    pub fn set_warps_per_block(&mut self, warps: Option<usize>) {
        self.warps_override = warps.map(|w| w.clamp(1, 8));
    }

    /// Launch shape for `warps` warps of a warp-tiled kernel with `fixed` + `per_warp` floats of
    /// shared memory per block: the most warps per block (up to 8) that still give every SM a block.
    fn warp_launch(&self, warps: usize, fixed: usize, per_warp: usize) -> LaunchConfig {
        let fits = |w: usize| 4 * (fixed + w * per_warp) <= self.smem_optin;
        let w = match self.warps_override {
            Some(w) if fits(w) => w,
            _ => [8usize, 4, 2, 1]
                .into_iter()
                .find(|&w| fits(w) && warps.div_ceil(w) >= self.num_sms)
                .unwrap_or(1),
        };
        LaunchConfig {
            grid_dim: (warps.div_ceil(w) as u32, 1, 1),
            block_dim: (32 * w as u32, 1, 1),
            shared_mem_bytes: (4 * (fixed + w * per_warp)) as u32,
        }
    }

    fn reset_envs(&mut self, counter: u32) -> Result<(), KernelError> {
        let e = &mut self.env;
        let (n, off) = (self.cfg.num_envs as i32, self.cfg.env_offset as u32);
        let mut b = self.stream.launch_builder(&self.k.env_reset_all);
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
        let s = &self.stream;
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
        let cfg = self.warp_launch(
            self.cfg.num_envs.div_ceil(32),
            self.dims.fw_floats,
            self.dims.warp_floats,
        );
        let ro = self.ro.as_mut().expect("allocated above");
        let e = &mut self.env;
        let (n, off, t0, nt) = (
            self.cfg.num_envs as i32,
            self.cfg.env_offset as u32,
            self.step,
            steps as i32,
        );
        let mut b = self.stream.launch_builder(&self.k.rollout);
        b.arg(&self.params);
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
        self.stream
            .memset_zeros(&mut ro.fin_count)
            .map_err(cuda_err("memset"))?;
        self.launch_rollout(self.cfg.num_steps, MODE_STORE | MODE_CRITIC)?;
        self.has_rollout = true;
        self.synchronize()
    }

    /// Policy inference only (actor, sampling, env step; no critic, no per-step arrays) for
    /// `steps` vectorized steps in one launch; advances the env state and the global step.
    pub fn run_inference(&mut self, steps: usize) -> Result<InferenceStats, KernelError> {
        self.stream
            .memset_zeros(&mut self.ep_stats)
            .map_err(cuda_err("memset"))?;
        self.launch_rollout(steps, 0)?;
        let s = self
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
        self.stream
            .synchronize()
            .map_err(cuda_err("cuStreamSynchronize"))
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
        let s = &self.stream;
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
            self.stream.clone_dtoh(&e.x).map_err(&dl)?,
            self.stream.clone_dtoh(&e.x_dot).map_err(&dl)?,
            self.stream.clone_dtoh(&e.theta).map_err(&dl)?,
            self.stream.clone_dtoh(&e.theta_dot).map_err(&dl)?,
        );
        Ok((0..self.cfg.num_envs)
            .map(|i| [x[i], xd[i], th[i], thd[i]])
            .collect())
    }

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Minibatch buffers for at least `bp` padded samples, with the slot table for `bp`.
    fn ensure_minibatch(&mut self, bp: usize) -> Result<(), KernelError> {
        let rows = self.dims.slot_rows();
        let row_sum: usize = rows.iter().sum();
        let s = self.stream.clone();
        if self.mb.as_ref().is_none_or(|m| m.cap < bp) {
            let cap = bp.max(self.mb.as_ref().map_or(0, |m| 2 * m.cap)).max(32);
            let f = |n: usize| s.alloc_zeros::<f32>(n).map_err(cuda_err("alloc minibatch"));
            let max_len = self
                .layout
                .actor
                .iter()
                .chain(&self.layout.critic)
                .map(|l| l.len())
                .max()
                .unwrap_or(1);
            let (_, n_chunks) = self.chunking(cap);
            self.mb = Some(MinibatchBufs {
                cap,
                cache: f(row_sum * cap)?,
                slots: s
                    .alloc_zeros::<u64>(rows.len())
                    .map_err(cuda_err("alloc"))?,
                slot_offsets: Vec::new(),
                slots_bp: 0,
                samples: s.alloc_zeros::<u32>(cap).map_err(cuda_err("alloc"))?,
                act_g: s.alloc_zeros::<u32>(cap).map_err(cuda_err("alloc"))?,
                logp: f(cap)?,
                entropy: f(cap)?,
                value: f(cap)?,
                d_logp: f(cap)?,
                d_value: f(cap)?,
                d_entropy: f(cap)?,
                partial: f(n_chunks * max_len)?,
            });
        }
        let mb = self.mb.as_mut().expect("allocated above");
        if mb.slots_bp != bp {
            let mut acc = 0u64;
            mb.slot_offsets = rows
                .iter()
                .map(|r| {
                    let o = acc;
                    acc += (r * bp) as u64;
                    o
                })
                .collect();
            s.memcpy_htod(&mb.slot_offsets, &mut mb.slots)
                .map_err(cuda_err("upload slots"))?;
            mb.slots_bp = bp;
        }
        Ok(())
    }

    /// (samples per chunk, chunks) of the gradient reduction over `bp` padded samples.
    fn chunking(&self, bp: usize) -> (usize, usize) {
        let chunk = (bp.div_ceil(4 * self.num_sms).div_ceil(32) * 32).max(256);
        (chunk, bp.div_ceil(chunk).max(1))
    }

    fn grad_reduce_layer(
        &mut self,
        x_slot: usize,
        d_slot: usize,
        n_in: usize,
        n_out: usize,
        grad_off: usize,
        bp: usize,
    ) -> Result<(), KernelError> {
        let (chunk, n_chunks) = self.chunking(bp);
        let mb = self.mb.as_mut().expect("evaluate ran");
        let s = &self.stream;
        let x = dptr(&mb.cache, s, mb.slot_offsets[x_slot] as usize);
        let d = dptr(&mb.cache, s, mb.slot_offsets[d_slot] as usize);
        let (ni, no, bpi, ch) = (n_in as i32, n_out as i32, bp as i32, chunk as i32);
        let cfg = LaunchConfig {
            grid_dim: (
                (n_in + 1).div_ceil(64) as u32,
                n_out.div_ceil(64) as u32,
                n_chunks as u32,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.k.grad_partial);
        b.arg(&x)
            .arg(&d)
            .arg(&ni)
            .arg(&no)
            .arg(&bpi)
            .arg(&ch)
            .arg(&mut mb.partial);
        // SAFETY: matches `grad_partial(const float* X, const float* D, int n_in, int n_out,
        // int bp, int chunk, float* partial)` of train.cu. X has n_in rows and D n_out rows of bp
        // floats inside the cache (slots sized by slot_rows); partial holds n_chunks x
        // (n_in + 1) * n_out floats (sized for the largest layer and for cap >= bp).
        unsafe { b.launch(cfg) }.map_err(cuda_err("launch grad_partial"))?;
        let len = (n_in + 1) * n_out;
        let g = dptr(&self.grads, s, grad_off);
        let (nc, leni) = (n_chunks as i32, len as i32);
        let mut b = s.launch_builder(&self.k.grad_sum);
        b.arg(&mb.partial).arg(&nc).arg(&leni).arg(&g);
        // SAFETY: matches `grad_sum(const float* partial, int n_chunks, int len, float* grad)`;
        // grad points at the layer's W (then b) block of len floats inside the flat gradient.
        unsafe { b.launch(grid_1d(len, 256)) }.map_err(cuda_err("launch grad_sum"))?;
        Ok(())
    }
}

impl Engine for CudaEngine {
    fn device(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    fn num_params(&self) -> usize {
        self.layout.num_params
    }

    fn global_step(&self) -> u64 {
        self.step
    }

    fn rollout(&mut self, out: &mut Rollout) -> Result<(), KernelError> {
        self.rollout_on_device()?;
        let (nt, ne) = (self.cfg.num_steps, self.cfg.num_envs);
        let ro = self.ro.as_ref().expect("rollout ran");
        let s = &self.stream;
        let dl = cuda_err("download rollout");
        out.num_steps = nt;
        out.num_envs = ne;
        let len = nt * ne;
        let (c, st, pin) = (&self.ctx, &mut self.staging, self.pinned);
        download(c, s, st, pin, &ro.actions, len, &mut out.actions)?;
        download(c, s, st, pin, &ro.logp, len, &mut out.logp)?;
        download(c, s, st, pin, &ro.entropy, len, &mut out.entropy)?;
        download(c, s, st, pin, &ro.values, len, &mut out.values)?;
        download(c, s, st, pin, &ro.rewards, len, &mut out.rewards)?;
        download(c, s, st, pin, &ro.terminated, len, &mut out.terminated)?;
        download(c, s, st, pin, &ro.truncated, len, &mut out.truncated)?;
        download(c, s, st, pin, &ro.next_values, len, &mut out.next_values)?;
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
        if !self.has_rollout {
            return Err(KernelError::InvalidConfig(
                "evaluate called before rollout".into(),
            ));
        }
        let total = self.cfg.num_envs * self.cfg.num_steps;
        if let Some(&bad) = samples.iter().find(|&&s| s as usize >= total) {
            return Err(KernelError::InvalidConfig(format!(
                "sample {bad} out of range (rollout has {total})"
            )));
        }
        out.logp.clear();
        out.entropy.clear();
        out.values.clear();
        self.evaluated = samples.len();
        if samples.is_empty() {
            return Ok(());
        }
        let b = samples.len();
        let bp = b.div_ceil(32) * 32;
        self.ensure_minibatch(bp)?;
        let cfg = self.warp_launch(bp / 32, self.dims.fw_floats, self.dims.warp_floats);
        let mb = self.mb.as_mut().expect("ensured");
        let ro = self.ro.as_ref().expect("rollout ran");
        let s = &self.stream;
        // Padding repeats the first sample (real data); its outputs are dropped and its
        // gradient inputs are zero.
        let mut padded = samples.to_vec();
        padded.resize(bp, samples[0]);
        s.memcpy_htod(&padded, &mut mb.samples)
            .map_err(cuda_err("upload samples"))?;
        let bpi = bp as i32;
        let mut lb = s.launch_builder(&self.k.evaluate_fwd);
        lb.arg(&self.params)
            .arg(&ro.obs)
            .arg(&ro.actions)
            .arg(&mb.samples)
            .arg(&bpi);
        lb.arg(&mut mb.cache).arg(&mb.slots).arg(&mut mb.act_g);
        lb.arg(&mut mb.logp).arg(&mut mb.entropy).arg(&mut mb.value);
        // SAFETY: matches `evaluate_fwd(...)` of train.cu. Every sample index is < T * N (checked
        // above), the cache slots were laid out for bp, and the per-sample buffers hold cap >= bp.
        unsafe { lb.launch(cfg) }.map_err(cuda_err("launch evaluate_fwd"))?;
        let (c, st, pin) = (&self.ctx, &mut self.staging, self.pinned);
        download(c, s, st, pin, &mb.logp, b, &mut out.logp)?;
        download(c, s, st, pin, &mb.entropy, b, &mut out.entropy)?;
        download(c, s, st, pin, &mb.value, b, &mut out.values)?;
        self.synchronize()
    }

    fn accumulate_grad(
        &mut self,
        d_logp: &[f32],
        d_value: &[f32],
        d_entropy: &[f32],
    ) -> Result<(), KernelError> {
        let b = self.evaluated;
        for (name, got) in [
            ("d_logp", d_logp.len()),
            ("d_value", d_value.len()),
            ("d_entropy", d_entropy.len()),
        ] {
            if got != b {
                return Err(KernelError::Length {
                    name,
                    got,
                    expected: b,
                });
            }
        }
        if b == 0 {
            return Ok(());
        }
        let bp = b.div_ceil(32) * 32;
        let cfg = self.warp_launch(bp / 32, self.dims.bw_floats, self.dims.bw_warp_floats);
        {
            let mb = self.mb.as_mut().expect("evaluate ran");
            let s = &self.stream;
            let up = cuda_err("upload loss derivatives");
            let srcs = [d_logp, d_value, d_entropy];
            let dsts = [&mut mb.d_logp, &mut mb.d_value, &mut mb.d_entropy];
            if use_pinned(self.pinned, 3 * bp * 4) {
                let ptr = staging_ptr(&self.ctx, &mut self.staging, 3 * bp * 4)? as *mut f32;
                // SAFETY: the staging buffer holds 3 * bp floats and is not in use (every earlier
                // transfer through it was synchronised); the copies below finish before the
                // synchronize at the end of this block.
                let stage = unsafe { std::slice::from_raw_parts_mut(ptr, 3 * bp) };
                for (k, (src, dst)) in srcs.into_iter().zip(dsts).enumerate() {
                    let part = &mut stage[k * bp..(k + 1) * bp];
                    part[..b].copy_from_slice(src);
                    part[b..].fill(0.0);
                    let (dp, _sync) = dst.device_ptr(s);
                    // SAFETY: dst holds cap >= bp floats.
                    unsafe { cu::memcpy_htod_async(dp, &*part, s.cu_stream()) }.map_err(&up)?;
                }
                s.synchronize().map_err(&up)?;
            } else {
                let mut staging = vec![0.0f32; bp];
                for (src, dst) in srcs.into_iter().zip(dsts) {
                    staging[..b].copy_from_slice(src);
                    s.memcpy_htod(&staging, dst).map_err(&up)?;
                }
            }
            let bpi = bp as i32;
            let mut lb = s.launch_builder(&self.k.backward_deltas);
            lb.arg(&self.params)
                .arg(&bpi)
                .arg(&mut mb.cache)
                .arg(&mb.slots)
                .arg(&mb.act_g);
            lb.arg(&mb.d_logp).arg(&mb.d_value).arg(&mb.d_entropy);
            // SAFETY: matches `backward_deltas(...)` of train.cu; the cache and act_g were filled
            // by evaluate_fwd for the same bp; the d_* buffers hold bp floats, zero past b.
            unsafe { lb.launch(cfg) }.map_err(cuda_err("launch backward_deltas"))?;
        }
        // Gradient reduction, layer by layer: dW|db += sum_n [x_n; 1] (x) delta_n.
        let nh = self.cfg.shape.hidden.len();
        let (slot_ah, slot_ch, slot_ad, slot_cd) = (1, 1 + nh, 1 + 2 * nh, 2 + 3 * nh);
        let actor = self.layout.actor.clone();
        let critic = self.layout.critic.clone();
        for (layers, h0, d0) in [(&actor, slot_ah, slot_ad), (&critic, slot_ch, slot_cd)] {
            for (l, layer) in layers.iter().enumerate() {
                let x_slot = if l == 0 { 0 } else { h0 + l - 1 };
                self.grad_reduce_layer(
                    x_slot,
                    d0 + l,
                    layer.fan_in,
                    layer.fan_out,
                    layer.weight,
                    bp,
                )?;
            }
        }
        Ok(())
    }

    fn reduce_grads(&mut self, reduce: &mut dyn FnMut(&mut [f32])) -> Result<(), KernelError> {
        self.stream
            .memcpy_dtoh(&self.grads, self.host_grads.as_mut_slice())
            .map_err(cuda_err("download grads"))?;
        self.synchronize()?;
        reduce(&mut self.host_grads);
        self.stream
            .memcpy_htod(self.host_grads.as_slice(), &mut self.grads)
            .map_err(cuda_err("upload grads"))
    }

    fn apply_grads(&mut self, lr: f32, max_grad_norm: Option<f32>) -> Result<f32, KernelError> {
        self.adam_t += 1;
        let adam = self.cfg.adam;
        let (bc1, bc2) = reference::adam_bias_corrections(&adam, self.adam_t);
        let n = self.layout.num_params as i32;
        let s = &self.stream;
        {
            let mut b = s.launch_builder(&self.k.grad_sqnorm);
            b.arg(&self.grads).arg(&n).arg(&mut self.sqnorm);
            // SAFETY: matches `grad_sqnorm(const float* g, int n, double* out)` of optim.cu; one
            // block of 1024 threads (the kernel's shared array size).
            unsafe { b.launch(grid_1d(1024, 1024)) }.map_err(cuda_err("launch grad_sqnorm"))?;
        }
        let (clip, max_norm) = match max_grad_norm {
            Some(m) => (1i32, m),
            None => (0i32, 0.0f32),
        };
        let mut b = s.launch_builder(&self.k.adam_step);
        b.arg(&mut self.params)
            .arg(&mut self.grads)
            .arg(&mut self.adam_m)
            .arg(&mut self.adam_v);
        b.arg(&n)
            .arg(&lr)
            .arg(&adam.beta1)
            .arg(&adam.beta2)
            .arg(&adam.eps)
            .arg(&bc1)
            .arg(&bc2);
        b.arg(&clip)
            .arg(&max_norm)
            .arg(&self.sqnorm)
            .arg(&mut self.norm);
        // SAFETY: matches `adam_step(...)` of optim.cu; p, g, m, v hold num_params floats.
        unsafe { b.launch(grid_1d(self.layout.num_params, 256)) }
            .map_err(cuda_err("launch adam_step"))?;
        let norm = s
            .clone_dtoh(&self.norm)
            .map_err(cuda_err("download norm"))?[0];
        Ok(norm)
    }

    fn params(&self) -> Result<Vec<f32>, KernelError> {
        let p = self
            .stream
            .clone_dtoh(&self.params)
            .map_err(cuda_err("download params"))?;
        self.synchronize()?;
        Ok(p)
    }

    fn save_state(&self) -> Result<EngineState, KernelError> {
        let s = &self.stream;
        let dl = cuda_err("download state");
        let e = &self.env;
        let steps = s.clone_dtoh(&e.steps).map_err(&dl)?;
        let st = EngineState {
            params: s.clone_dtoh(&self.params).map_err(&dl)?,
            adam_m: s.clone_dtoh(&self.adam_m).map_err(&dl)?,
            adam_v: s.clone_dtoh(&self.adam_v).map_err(&dl)?,
            adam_t: self.adam_t,
            step: self.step,
            x: s.clone_dtoh(&e.x).map_err(&dl)?,
            x_dot: s.clone_dtoh(&e.x_dot).map_err(&dl)?,
            theta: s.clone_dtoh(&e.theta).map_err(&dl)?,
            theta_dot: s.clone_dtoh(&e.theta_dot).map_err(&dl)?,
            ep_return: s.clone_dtoh(&e.ep_ret).map_err(&dl)?,
            // An episode's length is its env step counter (both restart at every reset).
            ep_len: steps.clone(),
            env_steps: steps,
        };
        self.synchronize()?;
        Ok(st)
    }

    fn load_state(&mut self, st: &EngineState) -> Result<(), KernelError> {
        st.check_sizes(self.layout.num_params, self.cfg.num_envs)?;
        if st.ep_len != st.env_steps {
            return Err(KernelError::InvalidConfig(
                "the CUDA engine keeps an episode's length in its env step counter; this snapshot has ep_len != env_steps".into(),
            ));
        }
        let s = &self.stream;
        let up = cuda_err("upload state");
        s.memcpy_htod(st.params.as_slice(), &mut self.params)
            .map_err(&up)?;
        s.memcpy_htod(st.adam_m.as_slice(), &mut self.adam_m)
            .map_err(&up)?;
        s.memcpy_htod(st.adam_v.as_slice(), &mut self.adam_v)
            .map_err(&up)?;
        s.memset_zeros(&mut self.grads).map_err(&up)?;
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
        self.adam_t = st.adam_t;
        self.step = st.step;
        self.synchronize()
    }

    fn set_params(&mut self, params: &[f32]) -> Result<(), KernelError> {
        if params.len() != self.layout.num_params {
            return Err(KernelError::Length {
                name: "params",
                got: params.len(),
                expected: self.layout.num_params,
            });
        }
        self.stream
            .memcpy_htod(params, &mut self.params)
            .map_err(cuda_err("upload params"))?;
        self.synchronize()
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<CudaEngine>();
}
