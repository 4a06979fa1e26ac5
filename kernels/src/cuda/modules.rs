//! Kernel sources, NVRTC compilation and the PTX cache.
//!
//! Each [`ModuleId`] is a list of embedded `.cu` files; the network shape is baked in through a
//! generated prelude (widths as compile-time constants, so register tiles and loops are fixed
//! at compile time). PTX is cached per (module, shape, architecture) for the whole process, so
//! engines after the first skip the compile, and on disk (see [`crate::cuda::disk_cache`]), so
//! later processes skip NVRTC too: its first compile costs seconds per job.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};

use crate::{KernelError, NetShape};

const COMMON_CU: &str = include_str!("common.cu");
const POLICY_CU: &str = include_str!("policy.cu");
const ROLLOUT_CU: &str = include_str!("rollout.cu");
const TRAIN_CU: &str = include_str!("train.cu");
const OPTIM_CU: &str = include_str!("optim.cu");
const SEQ_CU: &str = include_str!("seq.cu");

/// One compiled module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ModuleId {
    /// `rollout`, `env_reset_all`, `env_step_actions`, `shape_info` (shape-specific).
    Rollout,
    /// `evaluate_fwd`, `backward_deltas`, `grad_partial`, `grad_sum` (shape-specific).
    Train,
    /// `grad_sqnorm`, `adam_step` (shape-independent, `--fmad=false`).
    Optim,
    /// `seq_rollout`, `seq_build_obs`, `shape_info` (shape- and task-specific).
    Seq,
}

impl ModuleId {
    fn name(self) -> &'static str {
        match self {
            ModuleId::Rollout => "drover_rollout.cu",
            ModuleId::Train => "drover_train.cu",
            ModuleId::Optim => "drover_optim.cu",
            ModuleId::Seq => "drover_seq.cu",
        }
    }

    fn sources(self) -> &'static [&'static str] {
        match self {
            ModuleId::Rollout => &[COMMON_CU, POLICY_CU, ROLLOUT_CU],
            ModuleId::Train => &[COMMON_CU, POLICY_CU, TRAIN_CU],
            ModuleId::Optim => &[OPTIM_CU],
            ModuleId::Seq => &[COMMON_CU, POLICY_CU, SEQ_CU],
        }
    }

    /// Optimiser arithmetic must match reference.rs bit for bit: no contraction into FMA.
    /// The policy modules keep FMA (the env step inside them uses `__f*_rn`, which never fuses).
    fn fmad(self) -> bool {
        !matches!(self, ModuleId::Optim)
    }

    pub(crate) fn functions(self) -> &'static [&'static str] {
        match self {
            ModuleId::Rollout => &["rollout", "env_reset_all", "env_step_actions", "shape_info"],
            ModuleId::Train => &[
                "evaluate_fwd",
                "backward_deltas",
                "grad_partial",
                "grad_sum",
            ],
            ModuleId::Optim => &["grad_sqnorm", "adam_step"],
            ModuleId::Seq => &["seq_rollout", "seq_build_obs", "shape_info"],
        }
    }
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// The shape arithmetic of policy.cu, mirrored on the host (checked against the device's own
/// numbers by the `shape_info` kernel when an engine starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShapeDims {
    pub obs_dim: usize,
    pub n_actions: usize,
    pub hidden: Vec<usize>,
    /// Rows of each per-warp ping-pong buffer.
    pub maxr: usize,
    /// Floats of the padded forward weights (actor + critic).
    pub fw_floats: usize,
    /// Floats of the transposed backward weights (actor + critic).
    pub bw_floats: usize,
    /// Per-warp scratch floats of the forward kernels.
    pub warp_floats: usize,
    /// Per-warp scratch floats of the backward kernel.
    pub bw_warp_floats: usize,
    /// Sequence tasks: (prompt length, response length), the `SEQ_P` and `SEQ_R` of seq.cu.
    pub seq: Option<(usize, usize)>,
}

impl ShapeDims {
    pub(crate) fn new(shape: &NetShape) -> Self {
        let nh = shape.hidden.len();
        let in_dim = |l: usize| {
            if l == 0 {
                shape.obs_dim
            } else {
                shape.hidden[l - 1]
            }
        };
        let hidp = |l: usize| pad8(shape.hidden[l]);
        let fw_off = |l: usize| (0..l).map(|i| (in_dim(i) + 1) * hidp(i)).sum::<usize>();
        let fw_net = |nout: usize| pad8(fw_off(nh) + (in_dim(nh) + 1) * nout);
        let bw_off = |l: usize| {
            (1..l)
                .map(|i| shape.hidden[i] * pad8(in_dim(i)))
                .sum::<usize>()
        };
        let bw_net = |nout: usize| {
            if nh == 0 {
                0
            } else {
                pad8(bw_off(nh) + nout * pad8(in_dim(nh)))
            }
        };
        let maxr = (0..nh)
            .map(hidp)
            .max()
            .unwrap_or(0)
            .max(shape.n_actions)
            .max(1);
        Self {
            obs_dim: shape.obs_dim,
            n_actions: shape.n_actions,
            hidden: shape.hidden.clone(),
            maxr,
            fw_floats: fw_net(shape.n_actions) + fw_net(1),
            bw_floats: bw_net(shape.n_actions) + bw_net(1),
            warp_floats: (shape.obs_dim + 2 * maxr) * 32,
            bw_warp_floats: 2 * maxr * 32,
            seq: None,
        }
    }

    /// The dims of a sequence task's network (`shape` from `task.net_shape`), with the task's
    /// lengths in the prelude.
    pub(crate) fn for_seq(shape: &NetShape, task: &crate::SeqTask) -> Self {
        Self { seq: Some((task.prompt_len, task.response_len())), ..Self::new(shape) }
    }

    /// Rows of every activation-cache slot, in the slot order of policy.cu (`SLOT_*`).
    pub(crate) fn slot_rows(&self) -> Vec<usize> {
        let nh = self.hidden.len();
        let hidp = |l: usize| pad8(self.hidden[l]);
        let mut rows = vec![self.obs_dim];
        rows.extend((0..nh).map(hidp)); // actor h
        rows.extend((0..nh).map(hidp)); // critic h
        rows.extend((0..=nh).map(|l| if l < nh { hidp(l) } else { self.n_actions })); // actor deltas
        rows.extend((0..=nh).map(|l| if l < nh { hidp(l) } else { 1 })); // critic deltas
        rows.push(self.n_actions); // logits
        rows
    }

    /// The generated prelude: shape constants for policy.cu.
    fn prelude(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "// generated by kernels/src/cuda/modules.rs");
        let _ = writeln!(s, "#define OBS_DIM {}", self.obs_dim);
        let _ = writeln!(s, "#define N_ACT {}", self.n_actions);
        let _ = writeln!(s, "#define NH {}", self.hidden.len());
        let _ = writeln!(s, "#define MAXR {}", self.maxr);
        if let Some((p, r)) = self.seq {
            let _ = writeln!(s, "#define SEQ_P {p}");
            let _ = writeln!(s, "#define SEQ_R {r}");
        }
        let mut expr = String::from("0");
        for (l, w) in self.hidden.iter().enumerate().rev() {
            expr = format!("l == {l} ? {w} : ({expr})");
        }
        let _ = writeln!(
            s,
            "__host__ __device__ constexpr int hid(int l) {{ return {expr}; }}"
        );
        s
    }
}

/// Full source of `id` for `dims`.
pub(crate) fn source(id: ModuleId, dims: &ShapeDims) -> String {
    let mut src = String::new();
    if id != ModuleId::Optim {
        src.push_str(&dims.prelude());
    }
    for part in id.sources() {
        src.push_str(part);
        src.push('\n');
    }
    src
}

type CacheKey = (ModuleId, String, (i32, i32));

fn cache() -> &'static Mutex<HashMap<CacheKey, Ptx>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Ptx>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cache_key(id: ModuleId, dims: &ShapeDims, cc: (i32, i32)) -> CacheKey {
    let shape = if id == ModuleId::Optim { String::new() } else { dims.prelude() };
    (id, shape, cc)
}

/// PTX of `id` for `dims` on a device of compute capability `cc`: from the process cache, else
/// the disk cache, else compiled by NVRTC (and then stored in both).
pub(crate) fn ptx(id: ModuleId, dims: &ShapeDims, cc: (i32, i32)) -> Result<PtxSource, KernelError> {
    let src = source(id, dims);
    let key = cache_key(id, dims, cc);
    if let Some(p) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(PtxSource { ptx: p.clone(), cache_file: None });
    }
    // SAFETY: a dlopen of libnvrtc by its usual names; compile_ptx panics when it is missing.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(KernelError::CudaUnavailable(
            "libnvrtc (the CUDA runtime compiler) was not found; add the CUDA toolkit's lib64 to LD_LIBRARY_PATH".into(),
        ));
    }
    let options = id.options(cc);
    let disk_key = super::disk_cache::key(&[
        src.as_bytes(),
        format!("{options:?}").as_bytes(),
        nvrtc_version().as_bytes(),
    ]);
    let file = format!("{}-sm{}{}-{disk_key}.ptx", id.name().trim_end_matches(".cu"), cc.0, cc.1);
    let (text, from_disk) = super::disk_cache::get_or_create(&file, || {
        let started = std::time::Instant::now();
        let ptx = compile_ptx_with_opts(&src, options.clone()).map_err(|e| compile_error(id, e))?;
        tracing::debug!(
            module = id.name(),
            secs = started.elapsed().as_secs_f64(),
            "NVRTC compiled"
        );
        Ok(ptx.to_src())
    })?;
    if from_disk {
        tracing::debug!(module = id.name(), file, "PTX from the kernel cache");
    }
    let ptx = Ptx::from_src(text);
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, ptx.clone());
    Ok(PtxSource { ptx, cache_file: from_disk.then_some(file) })
}

/// PTX for a module, and the kernel-cache file it was read from (if it was).
pub(crate) struct PtxSource {
    /// The PTX text.
    pub ptx: Ptx,
    /// Set when the PTX came from disk: the driver refusing it means a stale or damaged entry,
    /// which the caller removes ([`forget`]) before compiling afresh.
    pub cache_file: Option<String>,
}

/// Drops a module from both caches, after the driver refused PTX read from `cache_file`.
pub(crate) fn forget(id: ModuleId, dims: &ShapeDims, cc: (i32, i32), cache_file: &str) {
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&cache_key(id, dims, cc));
    super::disk_cache::remove(cache_file);
}

/// `major.minor` of the loaded libnvrtc, part of the disk-cache key (a new NVRTC may emit
/// different PTX for the same source).
fn nvrtc_version() -> String {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: libnvrtc is loaded (checked by the caller); the call writes two ints.
    let ok = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if ok == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        format!("{major}.{minor}")
    } else {
        "unknown".to_owned()
    }
}

impl ModuleId {
    fn options(self, cc: (i32, i32)) -> CompileOptions {
        CompileOptions {
        fmad: Some(self.fmad()),
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        options: vec![
            format!("--gpu-architecture=compute_{}{}", cc.0, cc.1),
            "--std=c++17".into(),
        ],
        name: Some(self.name().into()),
        ..Default::default()
        }
    }
}

fn compile_error(id: ModuleId, e: CompileError) -> KernelError {
    let message = match e {
        CompileError::CompileError {
            nvrtc,
            options,
            log,
        } => format!(
            "{} failed ({nvrtc:?}) with options {options:?}; NVRTC log:\n{}",
            id.name(),
            log.to_string_lossy()
        ),
        other => format!("{}: {other:?}", id.name()),
    };
    KernelError::Cuda {
        context: "NVRTC compile",
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_of_64_64_by_hand() {
        let d = ShapeDims::new(&NetShape {
            obs_dim: 4,
            hidden: vec![64, 64],
            n_actions: 2,
        });
        // actor (4+1)*64 + (64+1)*64 + (64+1)*2 = 4610 -> 4616; critic 4545 -> 4552.
        assert_eq!(d.fw_floats, 4616 + 4552);
        // transposed: actor 64*64 + 2*64 = 4224; critic 64*64 + 64 = 4160.
        assert_eq!(d.bw_floats, 4224 + 4160);
        assert_eq!(d.maxr, 64);
        assert_eq!(
            d.slot_rows(),
            vec![4, 64, 64, 64, 64, 64, 64, 2, 64, 64, 1, 2]
        );
        assert!(d
            .prelude()
            .contains("return l == 0 ? 64 : (l == 1 ? 64 : (0));"));
    }

    #[test]
    fn seq_dims_put_the_task_lengths_in_the_prelude() {
        let task = crate::SeqTask {
            family: crate::TaskFamily::Add,
            vocab: 10,
            prompt_len: 4,
            group_size: 4,
            expert_per_group: 1,
        };
        let d = ShapeDims::for_seq(&task.net_shape(vec![24]), &task);
        // The defines emu/shapes.sh writes for the same task (`"4 3"`).
        assert!(d.prelude().contains("#define OBS_DIM 73\n"), "{}", d.prelude());
        assert!(d.prelude().contains("#define SEQ_P 4\n#define SEQ_R 3\n"));
        assert_eq!(d.maxr, 24);
        assert_ne!(cache_key(ModuleId::Train, &d, (9, 0)), cache_key(ModuleId::Train, &ShapeDims::new(&task.net_shape(vec![24])), (9, 0)));
    }

    #[test]
    fn dims_pad_odd_widths_and_allow_no_hidden_layer() {
        let d = ShapeDims::new(&NetShape {
            obs_dim: 4,
            hidden: vec![5, 3],
            n_actions: 3,
        });
        assert_eq!(d.maxr, 8);
        assert_eq!(d.slot_rows(), vec![4, 8, 8, 8, 8, 8, 8, 3, 8, 8, 1, 3]);
        let lin = ShapeDims::new(&NetShape {
            obs_dim: 4,
            hidden: vec![],
            n_actions: 2,
        });
        assert_eq!(lin.bw_floats, 0);
        assert!(lin.prelude().contains("return 0;"));
    }
}
