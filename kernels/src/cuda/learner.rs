//! [`CudaLearner`]: the learning half that both CUDA engines share (device and kernel setup,
//! parameters, evaluate, backward, gradient reduction, clip + Adam, host transfers), as
//! `cpu/learner.rs` is for the CPU engines. An engine owns one and fills the rollout buffers
//! that [`CudaLearner::evaluate`] reads.

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{
    result as cu, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
    DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use rayon::prelude::*;

use super::modules::{self, ModuleId, ShapeDims};
use crate::layout::ParamLayout;
use crate::{reference, AdamConfig, EngineConfig, EngineState, KernelError, MinibatchEval};

/// Maps a driver error to [`KernelError::Cuda`] with what drover was doing.
pub(super) fn cuda_err(context: &'static str) -> impl Fn(DriverError) -> KernelError {
    move |e| KernelError::Cuda {
        context,
        message: e.to_string(),
    }
}

/// The kernels of the train and optimiser modules.
struct TrainKernels {
    evaluate_fwd: CudaFunction,
    backward_deltas: CudaFunction,
    grad_partial: CudaFunction,
    grad_sum: CudaFunction,
    grad_sqnorm: CudaFunction,
    adam_step: CudaFunction,
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

/// Device, parameters, optimiser state and minibatch buffers of one CUDA engine.
pub(super) struct CudaLearner {
    /// The NCCL group `reduce_grads` sums over, when joined. Declared before `ctx` so that it
    /// is aborted while the context its buffers live in still exists.
    nccl: Option<super::nccl::Comm>,
    pub(super) layout: ParamLayout,
    pub(super) dims: ShapeDims,
    adam: AdamConfig,
    pub(super) ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    cc: (i32, i32),
    k: TrainKernels,
    num_sms: usize,
    smem_optin: usize,
    warps_override: Option<usize>,
    pub(super) params: CudaSlice<f32>,
    grads: CudaSlice<f32>,
    adam_m: CudaSlice<f32>,
    adam_v: CudaSlice<f32>,
    sqnorm: CudaSlice<f64>,
    norm: CudaSlice<f32>,
    adam_t: u64,
    mb: Option<MinibatchBufs>,
    evaluated: usize,
    host_grads: Vec<f32>,
    /// Page-locked staging for large transfers (None until first use).
    staging: Option<PinnedHostSlice<u32>>,
    /// Staging choice: None = by size ([`PINNED_MIN_BYTES`]), Some(true/false) = forced.
    pinned: Option<bool>,
}

/// Raw device address of `s` plus `offset` elements, for kernel arguments that point inside a
/// buffer. Valid while `s` lives; event tracking is off, so no synchronisation is implied.
pub(super) fn dptr<T>(s: &CudaSlice<T>, stream: &CudaStream, offset: usize) -> u64 {
    let (p, _sync) = s.device_ptr(stream);
    p + (offset * std::mem::size_of::<T>()) as u64
}

pub(super) fn grid_1d(n: usize, threads: u32) -> LaunchConfig {
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
pub(super) fn download<T: DeviceRepr + Copy + Default + Send + Sync>(
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

impl CudaLearner {
    /// Opens device `cfg.cuda_ordinal`, checks that the network's shared memory fits, loads the
    /// train and optimiser modules for `dims` and uploads [`reference::init_params`] of `key`.
    /// [`KernelError::CudaUnavailable`] when no GPU, driver or NVRTC is usable.
    pub(super) fn new(cfg: &EngineConfig, dims: ShapeDims, key: u32) -> Result<Self, KernelError> {
        super::probe().map_err(KernelError::CudaUnavailable)?;
        let layout = ParamLayout::new(&cfg.shape)?;
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
        let mut t = load_module(&ctx, &dims, cc, ModuleId::Train)?.into_iter();
        let mut o = load_module(&ctx, &dims, cc, ModuleId::Optim)?.into_iter();
        let next = |it: &mut std::vec::IntoIter<CudaFunction>| it.next().expect("function list");
        let k = TrainKernels {
            evaluate_fwd: next(&mut t),
            backward_deltas: next(&mut t),
            grad_partial: next(&mut t),
            grad_sum: next(&mut t),
            grad_sqnorm: next(&mut o),
            adam_step: next(&mut o),
        };
        let n = layout.num_params;
        let init = reference::init_params(&layout, key);
        let params = stream
            .clone_htod(&init)
            .map_err(cuda_err("upload params"))?;
        let zeros = |len: usize| stream.alloc_zeros::<f32>(len).map_err(cuda_err("alloc"));
        let learner = Self {
            grads: zeros(n)?,
            adam_m: zeros(n)?,
            adam_v: zeros(n)?,
            sqnorm: stream.alloc_zeros::<f64>(1).map_err(cuda_err("alloc"))?,
            norm: zeros(1)?,
            params,
            nccl: None,
            adam: cfg.adam,
            adam_t: 0,
            mb: None,
            evaluated: 0,
            host_grads: vec![0.0; n],
            staging: None,
            pinned: None,
            warps_override: None,
            num_sms,
            smem_optin,
            k,
            cc,
            dims,
            layout,
            stream,
            ctx,
        };
        learner.allow_dynamic_smem(&learner.k.evaluate_fwd)?;
        learner.allow_dynamic_smem(&learner.k.backward_deltas)?;
        Ok(learner)
    }

    /// The functions of module `id` (in [`ModuleId::functions`] order), compiled for this
    /// engine's shape.
    pub(super) fn load(&self, id: ModuleId) -> Result<Vec<CudaFunction>, KernelError> {
        load_module(&self.ctx, &self.dims, self.cc, id)
    }

    /// Lets a warp-tiled kernel use all the shared memory the device allows per block.
    pub(super) fn allow_dynamic_smem(&self, f: &CudaFunction) -> Result<(), KernelError> {
        let dyn_attr = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        f.set_attribute(dyn_attr, self.smem_optin as i32)
            .map_err(cuda_err("cuFuncSetAttribute"))
    }

    /// Runs `shape_info` (of any module that includes policy.cu): the device's own shape
    /// arithmetic must agree with the host's.
    pub(super) fn check_shape(&self, shape_info: &CudaFunction) -> Result<(), KernelError> {
        let mut info = self.stream.alloc_zeros::<i32>(8).map_err(cuda_err("alloc"))?;
        {
            let mut b = self.stream.launch_builder(shape_info);
            b.arg(&mut info);
            // SAFETY: matches `shape_info(int* out)` of policy.cu; `info` holds 8 ints (6 written).
            unsafe { b.launch(grid_1d(1, 32)) }.map_err(cuda_err("launch shape_info"))?;
        }
        let info = self.stream.clone_dtoh(&info).map_err(cuda_err("download"))?;
        let (layout, dims) = (&self.layout, &self.dims);
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
        Ok(())
    }

    /// Device name and the resource use (registers, spill bytes) of `kernels` and of the
    /// learner's own, for logs and benches.
    pub(super) fn report(&self, kernels: &[(&str, &CudaFunction)]) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "?".into());
        let mut s = format!(
            "{name}: {} SMs, {} B shared memory per block (opt-in)",
            self.num_sms, self.smem_optin
        );
        let own = [
            ("evaluate_fwd", &self.k.evaluate_fwd),
            ("backward_deltas", &self.k.backward_deltas),
            ("grad_partial", &self.k.grad_partial),
        ];
        for (label, f) in kernels.iter().copied().chain(own) {
            let regs = f.num_regs().unwrap_or(-1);
            let local = f.local_size_bytes().unwrap_or(-1);
            s.push_str(&format!("; {label}: {regs} regs, {local} B local"));
        }
        s
    }

    /// Copies the first `len` elements of `src` into `dst` through this engine's staging
    /// choice (see [`download`]).
    pub(super) fn download<T: DeviceRepr + Copy + Default + Send + Sync>(
        &mut self,
        src: &CudaSlice<T>,
        len: usize,
        dst: &mut Vec<T>,
    ) -> Result<(), KernelError> {
        download(&self.ctx, &self.stream, &mut self.staging, self.pinned, src, len, dst)
    }

    /// Waits for all work queued on the engine's stream.
    pub(super) fn synchronize(&self) -> Result<(), KernelError> {
        self.stream
            .synchronize()
            .map_err(cuda_err("cuStreamSynchronize"))
    }

    /// Forces host transfers through page-locked staging (`Some(true)`) or straight to pageable
    /// memory (`Some(false)`); `None` (the default) picks by size. Benchmarks compare the two.
    pub(super) fn set_pinned_staging(&mut self, choice: Option<bool>) {
        self.pinned = choice;
    }

    /// Forces the warps per block of the warp-tiled kernels (benchmarks); `None` = automatic.
    pub(super) fn set_warps_per_block(&mut self, warps: Option<usize>) {
        self.warps_override = warps.map(|w| w.clamp(1, 8));
    }

    /// Launch shape for `warps` warps of a warp-tiled kernel with `fixed` + `per_warp` floats of
    /// shared memory per block: the most warps per block (up to 8) that still give every SM a block.
    pub(super) fn warp_launch(&self, warps: usize, fixed: usize, per_warp: usize) -> LaunchConfig {
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

    /// [`Engine::evaluate`](crate::Engine::evaluate) on the samples `s < total` of `obs`
    /// (`obs_dim` floats per sample, sample-major) and `actions`.
    pub(super) fn evaluate(
        &mut self,
        obs: &CudaSlice<f32>,
        actions: &CudaSlice<u32>,
        total: usize,
        samples: &[u32],
        out: &mut MinibatchEval,
    ) -> Result<(), KernelError> {
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
            .arg(obs)
            .arg(actions)
            .arg(&mb.samples)
            .arg(&bpi);
        lb.arg(&mut mb.cache).arg(&mb.slots).arg(&mut mb.act_g);
        lb.arg(&mut mb.logp).arg(&mut mb.entropy).arg(&mut mb.value);
        // SAFETY: matches `evaluate_fwd(...)` of train.cu. Every sample index is < total (checked
        // above), obs holds total * OBS_DIM floats and actions total tokens, the cache slots were laid out for bp, and the per-sample buffers hold cap >= bp.
        unsafe { lb.launch(cfg) }.map_err(cuda_err("launch evaluate_fwd"))?;
        let (c, st, pin) = (&self.ctx, &mut self.staging, self.pinned);
        download(c, s, st, pin, &mb.logp, b, &mut out.logp)?;
        download(c, s, st, pin, &mb.entropy, b, &mut out.entropy)?;
        download(c, s, st, pin, &mb.value, b, &mut out.values)?;
        self.synchronize()
    }

    /// [`Engine::accumulate_grad`](crate::Engine::accumulate_grad) of the last `evaluate`.
    pub(super) fn accumulate_grad(
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
        let nh = self.dims.hidden.len();
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

    /// [`Engine::reduce_grads`](crate::Engine::reduce_grads).
    pub(super) fn reduce_grads(&mut self, reduce: &mut dyn FnMut(&mut [f32])) -> Result<(), KernelError> {
        if let Some(nccl) = &self.nccl {
            self.ctx.bind_to_thread().map_err(cuda_err("bind context"))?;
            let n = self.grads.len();
            let (ptr, _sync) = self.grads.device_ptr_mut(&self.stream);
            // SAFETY: `grads` holds n floats on this engine's device and lives as long as the
            // engine; the reduction runs on the engine's one stream, ordered before apply_grads.
            return unsafe { nccl.all_reduce_sum_f32(ptr, n, self.stream.cu_stream().cast()) };
        }
        self.stream
            .memcpy_dtoh(&self.grads, self.host_grads.as_mut_slice())
            .map_err(cuda_err("download grads"))?;
        self.synchronize()?;
        reduce(&mut self.host_grads);
        self.stream
            .memcpy_htod(self.host_grads.as_slice(), &mut self.grads)
            .map_err(cuda_err("upload grads"))
    }

    /// [`Engine::attach_device_all_reduce`](crate::Engine::attach_device_all_reduce).
    pub(super) fn attach_device_all_reduce(
        &mut self,
        group: Option<&crate::DeviceGroup>,
    ) -> Result<bool, KernelError> {
        // Leaving first: a failed join must not keep an older group.
        self.nccl = None;
        let Some(g) = group else { return Ok(false) };
        // NCCL picks the device from the thread's current context.
        self.ctx.bind_to_thread().map_err(cuda_err("bind context"))?;
        self.nccl = Some(super::nccl::Comm::join(&g.id, g.rank, g.size)?);
        Ok(true)
    }

    /// [`Engine::apply_grads`](crate::Engine::apply_grads).
    pub(super) fn apply_grads(&mut self, lr: f32, max_grad_norm: Option<f32>) -> Result<f32, KernelError> {
        self.adam_t += 1;
        let adam = self.adam;
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

    /// [`Engine::params`](crate::Engine::params).
    pub(super) fn params(&self) -> Result<Vec<f32>, KernelError> {
        let p = self
            .stream
            .clone_dtoh(&self.params)
            .map_err(cuda_err("download params"))?;
        self.synchronize()?;
        Ok(p)
    }

    /// [`Engine::set_params`](crate::Engine::set_params).
    pub(super) fn set_params(&mut self, params: &[f32]) -> Result<(), KernelError> {
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

    /// Parameters, Adam moments and step, with `step` and no env state (an engine with env
    /// state fills those vectors itself).
    pub(super) fn save_state(&self, step: u64) -> Result<EngineState, KernelError> {
        let s = &self.stream;
        let dl = cuda_err("download state");
        let st = EngineState {
            params: s.clone_dtoh(&self.params).map_err(&dl)?,
            adam_m: s.clone_dtoh(&self.adam_m).map_err(&dl)?,
            adam_v: s.clone_dtoh(&self.adam_v).map_err(&dl)?,
            adam_t: self.adam_t,
            step,
            ..EngineState::default()
        };
        self.synchronize()?;
        Ok(st)
    }

    /// Restores parameters, Adam moments and step from `st` (sizes checked by the caller) and
    /// zeroes the gradient.
    pub(super) fn load_state(&mut self, st: &EngineState) -> Result<(), KernelError> {
        let s = &self.stream;
        let up = cuda_err("upload state");
        s.memcpy_htod(st.params.as_slice(), &mut self.params)
            .map_err(&up)?;
        s.memcpy_htod(st.adam_m.as_slice(), &mut self.adam_m)
            .map_err(&up)?;
        s.memcpy_htod(st.adam_v.as_slice(), &mut self.adam_v)
            .map_err(&up)?;
        s.memset_zeros(&mut self.grads).map_err(&up)?;
        self.adam_t = st.adam_t;
        Ok(())
    }
}

/// Compiles (or reuses) module `id` for `dims` and returns its functions in
/// [`ModuleId::functions`] order.
fn load_module(
    ctx: &Arc<CudaContext>,
    dims: &ShapeDims,
    cc: (i32, i32),
    id: ModuleId,
) -> Result<Vec<CudaFunction>, KernelError> {
    let src = modules::ptx(id, dims, cc)?;
    let module = match (ctx.load_module(src.ptx), src.cache_file) {
        (Ok(m), _) => m,
        // A cached file the driver refuses (damaged, or from a newer toolkit than this
        // driver) is dropped and compiled afresh, once.
        (Err(e), Some(file)) => {
            tracing::warn!(file, error = ?e, "the driver refused cached PTX; compiling again");
            modules::forget(id, dims, cc, &file);
            ctx.load_module(modules::ptx(id, dims, cc)?.ptx)
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
}

/// The `Engine` methods that only forward to the [`CudaLearner`] in `self.learn`.
macro_rules! delegate_learning {
    () => {
        fn accumulate_grad(
            &mut self,
            d_logp: &[f32],
            d_value: &[f32],
            d_entropy: &[f32],
        ) -> Result<(), $crate::KernelError> {
            self.learn.accumulate_grad(d_logp, d_value, d_entropy)
        }

        fn reduce_grads(
            &mut self,
            reduce: &mut dyn FnMut(&mut [f32]),
        ) -> Result<(), $crate::KernelError> {
            self.learn.reduce_grads(reduce)
        }

        fn attach_device_all_reduce(
            &mut self,
            group: Option<&$crate::DeviceGroup>,
        ) -> Result<bool, $crate::KernelError> {
            self.learn.attach_device_all_reduce(group)
        }

        fn apply_grads(
            &mut self,
            lr: f32,
            max_grad_norm: Option<f32>,
        ) -> Result<f32, $crate::KernelError> {
            self.learn.apply_grads(lr, max_grad_norm)
        }

        fn params(&self) -> Result<Vec<f32>, $crate::KernelError> {
            self.learn.params()
        }

        fn set_params(&mut self, params: &[f32]) -> Result<(), $crate::KernelError> {
            self.learn.set_params(params)
        }
    };
}
pub(super) use delegate_learning;
