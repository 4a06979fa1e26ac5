//! `drover-job bench rollout`: throughput of the kernels on this machine (env-only steps/s,
//! policy rollout steps/s, learning samples/s), each against the scalar reference measured in
//! the same run and against the machine's arithmetic ceiling (see `drover_kernels::bench`).
//! `drover bench rollout` runs this in a child process, since the orchestrator does not link the
//! kernels.

use std::ffi::OsString;
use std::io::Write;

use clap::{Args, Parser, Subcommand, ValueEnum};
use drover_kernels::bench::{self, Machine, Measurement, ENV_LANE_OPS_PER_STEP};
use drover_kernels::cpu::{CpuEngine, SimdLevel};
use drover_kernels::reference::ReferenceEngine;
use drover_kernels::{
    create_engine, AdamConfig, DeviceRequest, Engine, EngineConfig, KernelError, NetShape,
};
use serde::Serialize;

use crate::exit_codes;

/// Format of the `--json` records; bumped on any incompatible change.
pub const BENCH_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Parser)]
#[command(name = "drover-job bench")]
struct BenchCli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// CartPole-v1 rollout throughput: env-only, policy (MLP forward + sampling), learning.
    Rollout(RolloutArgs),
    /// Gradient all-reduce throughput between the job's ranks (run under `mpirun -np 2`),
    /// next to a memcpy of the same size.
    Allreduce(crate::bench_allreduce::AllreduceArgs),
}

/// Which engine to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchDevice {
    /// The CPU engine.
    Cpu,
    /// The CUDA engine (rollout and learning; env-only is CPU only).
    Cuda,
}

/// Options of `bench rollout`.
#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    /// Engine to measure.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: BenchDevice,
    /// Parallel environment counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1024,4096,16384,65536")]
    pub envs: Vec<usize>,
    /// Threads of the CPU engine; by default every count from 1 to the number of cores is
    /// tried and the best is reported.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Steps per rollout (T) of the policy and learning figures.
    #[arg(long, default_value_t = 16)]
    pub num_steps: usize,
    /// Hidden layer width of the 2-layer actor and critic.
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    /// Minimum seconds timed per figure.
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,
    /// Print one JSON record per figure (for `benches/compare/`) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Instruction set of the CPU engine: `auto` (`DROVER_SIMD`, else the best this CPU has),
    /// or `avx512`, `avx2`, `neon`, `portable` to measure a lower level, e.g. what an AVX2-only
    /// node would run.
    #[arg(long, default_value = "auto")]
    pub simd: String,
}

/// The level `--simd` names, checked against this CPU; `auto` is the engines' own choice
/// (`DROVER_SIMD`, else the best level this CPU has).
fn simd_level(name: &str) -> Result<SimdLevel, BenchError> {
    if name == "auto" {
        return Ok(SimdLevel::from_env()?);
    }
    SimdLevel::parse(name).map_err(|reason| BenchError::Usage { option: "--simd", reason })
}

/// One measured figure (`--json` prints one per line).
#[derive(Debug, Clone, Serialize)]
pub struct BenchRecord {
    /// Always [`BENCH_FORMAT_VERSION`].
    pub format_version: u32,
    /// `env_only`, `policy` (rollout copied to the host) or `learn`; CUDA adds `inference`
    /// (fused actor + sampling + env step, nothing stored) and `on_device` (rollout kept on the GPU).
    pub kind: &'static str,
    /// `cpu` or `cuda`.
    pub device: &'static str,
    /// Instruction set of the CPU engine (`avx512`, `avx2`, `neon`, `portable`), or `cuda`.
    pub isa: &'static str,
    /// Parallel environments.
    pub envs: usize,
    /// Best thread count (CPU).
    pub threads: usize,
    /// Env steps per second (`env_only`, `policy`) or samples per second (`learn`).
    pub per_second: f64,
    /// The scalar reference's figure measured in this run (one thread).
    pub reference_per_second: f64,
    /// Arithmetic ceiling over `threads` cores (CPU only).
    pub ceiling_per_second: Option<f64>,
    /// Lane-ops per step (or sample) the ceiling is computed from.
    pub lane_ops: Option<f64>,
}

/// Handles `drover-job bench ...`; `None` when the command line is not a bench command.
pub fn run_if_requested() -> Option<u8> {
    let mut args = std::env::args_os();
    let _program = args.next();
    if args.next().as_deref() != Some(std::ffi::OsStr::new("bench")) {
        return None;
    }
    // `drover bench` runs this and says which name the user typed, for usage and errors.
    let name = std::env::var("DROVER_BENCH_AS").unwrap_or_else(|_| "drover-job bench".into());
    let argv = std::iter::once(OsString::from(&name)).chain(args);
    let cli = match BenchCli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Some(if e.use_stderr() { exit_codes::USAGE } else { exit_codes::COMPLETED });
        }
    };
    let args = match cli.command {
        BenchCommand::Rollout(args) => args,
        BenchCommand::Allreduce(args) => return Some(run_allreduce(&args)),
    };
    let mut out = std::io::stdout().lock();
    match rollout(&args, &mut out) {
        Ok(()) => Some(exit_codes::COMPLETED),
        Err(BenchError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Some(exit_codes::COMPLETED),
        // Out-of-range options are usage errors, as clap's own are (exit code 2).
        Err(e @ BenchError::Usage { .. }) => {
            eprintln!("{name} rollout: {e}");
            Some(exit_codes::USAGE)
        }
        Err(e) => {
            eprintln!("{name} rollout: {e}");
            Some(exit_codes::FAILED)
        }
    }
}

/// `bench allreduce` on MPI's world when built with MPI (one rank without it, which still
/// measures the call's overhead and says so).
fn run_allreduce(args: &crate::bench_allreduce::AllreduceArgs) -> u8 {
    #[cfg(feature = "mpi")]
    let universe = mpi::initialize();
    #[cfg(feature = "mpi")]
    let world = universe.as_ref().map(crate::comm::Mpi::new);
    #[cfg(feature = "mpi")]
    let comm: &dyn crate::comm::Communicator = match &world {
        Some(w) => w,
        None => &crate::comm::Solo,
    };
    #[cfg(not(feature = "mpi"))]
    let comm: &dyn crate::comm::Communicator = &crate::comm::Solo;
    if comm.size() == 1 {
        eprintln!("drover-job bench allreduce: one rank (run it under `mpirun -np 2` with an MPI build)");
    }
    match crate::bench_allreduce::allreduce(comm, args, &mut std::io::stdout().lock()) {
        Ok(()) => exit_codes::COMPLETED,
        Err(e) => {
            eprintln!("drover-job bench allreduce: {e}");
            exit_codes::FAILED
        }
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of range.
    #[error("option `{option}`: {reason}")]
    Usage {
        /// The option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `--device cuda` where no CUDA device is usable (checked before anything is measured).
    #[error("cuda unavailable: {0}")]
    NoCuda(String),
    /// The engine failed.
    #[error("kernel error: {0}")]
    Kernel(#[from] KernelError),
    /// Writing the report failed.
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
}

fn engine_config(num_envs: usize, num_steps: usize, hidden: usize, threads: usize) -> EngineConfig {
    EngineConfig {
        num_envs,
        env_offset: 0,
        num_steps,
        seed: 1,
        shape: NetShape { obs_dim: 4, hidden: vec![hidden, hidden], n_actions: 2 },
        adam: AdamConfig::default(),
        threads,
        cuda_ordinal: 0,
    }
}

/// Runs `bench rollout` and writes its report to `out`.
pub fn rollout(args: &RolloutArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    if args.envs.is_empty() || args.envs.iter().any(|&n| n == 0 || n > 1 << 24) {
        return Err(BenchError::Usage { option: "--envs", reason: "each count must be in 1..=16777216".into() });
    }
    if args.num_steps == 0 || args.hidden == 0 || !(args.seconds > 0.0 && args.seconds <= 60.0) {
        return Err(BenchError::Usage {
            option: "--num-steps/--hidden/--seconds",
            reason: "steps and width must be positive, seconds in (0, 60]".into(),
        });
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let thread_counts: Vec<usize> = match args.threads {
        Some(0) => return Err(BenchError::Usage { option: "--threads", reason: "must be at least 1".into() }),
        Some(t) => vec![t],
        None => (1..=cores).collect(),
    };
    let simd = simd_level(&args.simd)?;
    if matches!(args.device, BenchDevice::Cuda) {
        drover_kernels::cuda::probe().map_err(BenchError::NoCuda)?;
    }
    let machine = Machine::probe(simd);
    let shape = engine_config(1, 1, args.hidden, 1).shape;
    let policy_ops = bench::policy_lane_ops_per_step(&shape)?;
    let learn_ops = bench::learn_lane_ops_per_sample(&shape)?;
    let (device, isa) = match args.device {
        BenchDevice::Cpu => ("cpu", simd.name()),
        BenchDevice::Cuda => ("cuda", "cuda"),
    };

    // Same-run baselines: the scalar reference, one thread.
    let base_secs = (args.seconds * 0.5).max(0.1);
    let ref_env = bench::env_only_reference(1024, base_secs)?.per_second();
    let ref_policy =
        bench::rollout_reference(engine_config(256, 4, args.hidden, 1), base_secs)?.per_second();
    let ref_learn = {
        let mut e = ReferenceEngine::new(engine_config(256, 4, args.hidden, 1))?;
        bench::learn(&mut e, 256, base_secs)?.per_second()
    };
    if !args.json {
        writeln!(
            out,
            "drover bench rollout: CartPole-v1, {h}x{h} actor and critic, device {device} ({isa}), \
             {cores} cores",
            h = args.hidden
        )?;
        writeln!(
            out,
            "machine: clock {:.2} GHz (measured: dependent adds), {} f32 lanes x {} FMA pipes = {} \
             lane-ops/cycle/core; ceiling = cores x clock x pipes x lanes / lane-ops per step",
            machine.clock_hz / 1e9,
            machine.lanes,
            machine.fma_pipes,
            machine.lanes * machine.fma_pipes
        )?;
        writeln!(
            out,
            "lane-ops per step: env {ENV_LANE_OPS_PER_STEP} (no FMA), policy {policy_ops} (MACs + tanh), \
             learn {learn_ops} per sample"
        )?;
        writeln!(
            out,
            "baseline (scalar reference, this run, 1 thread, at fixed sizes: env-only 1024 envs, policy \
             256 envs x 4 steps, learn 256-sample minibatches): env-only {}, policy {}, learn {} per s; \
             `x ref` = a figure over its baseline, so it includes the figure's threads and size",
            si(ref_env),
            si(ref_policy),
            si(ref_learn)
        )?;
        writeln!(
            out,
            "{:<9} {:>6} {:>7} {:>12} {:>10} {:>12} {:>9}",
            "figure", "envs", "threads", "per second", "x ref", "ceiling", "of ceil"
        )?;
    }
    let emit = |out: &mut dyn Write, r: BenchRecord| -> Result<(), BenchError> {
        if args.json {
            let line = serde_json::to_string(&r).map_err(|e| std::io::Error::other(e.to_string()))?;
            writeln!(out, "{line}")?;
        } else {
            let (ceil, frac) = match r.ceiling_per_second {
                Some(c) => (si(c), format!("{:.1}%", 100.0 * r.per_second / c)),
                None => ("-".into(), "-".into()),
            };
            writeln!(
                out,
                "{:<9} {:>6} {:>7} {:>12} {:>9.1}x {:>12} {:>9}",
                r.kind,
                r.envs,
                r.threads,
                si(r.per_second),
                r.per_second / r.reference_per_second,
                ceil,
                frac
            )?;
        }
        out.flush()?;
        Ok(())
    };

    for &envs in &args.envs {
        let record = |kind, threads, m: Measurement, reference, ops: Option<f64>| BenchRecord {
            format_version: BENCH_FORMAT_VERSION,
            kind,
            device,
            isa,
            envs,
            threads,
            per_second: m.per_second(),
            reference_per_second: reference,
            ceiling_per_second: ops.filter(|_| device == "cpu").map(|o| machine.ceiling(o, threads.min(cores))),
            lane_ops: ops,
        };
        let minibatch = (envs * args.num_steps / 4).max(1);
        match args.device {
            BenchDevice::Cpu => {
                let best = |f: &mut dyn FnMut(usize) -> Result<Measurement, BenchError>| {
                    let mut best: Option<(usize, Measurement)> = None;
                    for &t in &thread_counts {
                        let m = f(t)?;
                        if best.is_none_or(|(_, b)| m.per_second() > b.per_second()) {
                            best = Some((t, m));
                        }
                    }
                    best.ok_or(BenchError::Usage { option: "--threads", reason: "no thread count".into() })
                };
                let (t, m) = best(&mut |t| Ok(bench::env_only_cpu(envs, t, simd, args.seconds)?.0))?;
                emit(out, record("env_only", t, m, ref_env, Some(ENV_LANE_OPS_PER_STEP)))?;
                let engine = |t| -> Result<CpuEngine, BenchError> {
                    let mut e = CpuEngine::new(engine_config(envs, args.num_steps, args.hidden, t))?;
                    e.set_simd_level(simd)?;
                    Ok(e)
                };
                let (t, m) = best(&mut |t| Ok(bench::rollout(&mut engine(t)?, args.seconds)?))?;
                emit(out, record("policy", t, m, ref_policy, Some(policy_ops)))?;
                let (t, m) = best(&mut |t| {
                    Ok(bench::learn(&mut engine(t)?, minibatch, args.seconds)?)
                })?;
                emit(out, record("learn", t, m, ref_learn, Some(learn_ops)))?;
            }
            BenchDevice::Cuda => {
                let mut e: Box<dyn Engine> =
                    create_engine(DeviceRequest::Cuda, engine_config(envs, args.num_steps, args.hidden, 1))?;
                let cuda_policy = bench::rollout(e.as_mut(), args.seconds)?;
                emit(out, record("policy", 1, cuda_policy, ref_policy, None))?;
                let cuda_learn = bench::learn(e.as_mut(), minibatch, args.seconds)?;
                emit(out, record("learn", 1, cuda_learn, ref_learn, None))?;
                drop(e);
                // The fused kernel's own figures: inference only (actor + sampling + env step,
                // nothing stored, 64 steps per launch) and the training rollout kept on the device.
                let mut ce = drover_kernels::cuda::CudaEngine::new(engine_config(envs, args.num_steps, args.hidden, 1))?;
                let inference = bench::time_until(args.seconds, || {
                    ce.run_inference(64)?;
                    Ok((envs * 64) as u64)
                })?;
                emit(out, record("inference", 1, inference, ref_policy, None))?;
                let on_device = bench::time_until(args.seconds, || {
                    ce.rollout_on_device()?;
                    Ok((envs * args.num_steps) as u64)
                })?;
                emit(out, record("on_device", 1, on_device, ref_policy, None))?;
                drop(ce);
                // The CPU engine on every core, same run, as the ratio's baseline. Past 64k envs
                // the CPU figure no longer grows, so it is measured at 64k to keep the run short.
                let cpu_envs = envs.min(1 << 16);
                let mut c = CpuEngine::new(engine_config(cpu_envs, args.num_steps, args.hidden, cores))?;
                c.set_simd_level(simd)?;
                let cpu_policy = bench::rollout(&mut c, args.seconds)?;
                let cpu_learn = bench::learn(&mut c, (cpu_envs * args.num_steps / 4).max(1), args.seconds)?;
                if !args.json {
                    writeln!(
                        out,
                        "  cpu engine ({cores} threads, {cpu_envs} envs, this run): policy {} (cuda/cpu: to host {:.1}x, inference {:.1}x), learn {} (cuda/cpu {:.1}x)",
                        si(cpu_policy.per_second()),
                        cuda_policy.per_second() / cpu_policy.per_second(),
                        inference.per_second() / cpu_policy.per_second(),
                        si(cpu_learn.per_second()),
                        cuda_learn.per_second() / cpu_learn.per_second(),
                    )?;
                } else {
                    let cpu_record = |kind, m: Measurement, reference| BenchRecord {
                        device: "cpu",
                        isa: simd.name(),
                        envs: cpu_envs,
                        threads: cores,
                        ..record(kind, cores, m, reference, None)
                    };
                    let r = cpu_record("policy", cpu_policy, ref_policy);
                    emit(out, r)?;
                    let r = cpu_record("learn", cpu_learn, ref_learn);
                    emit(out, r)?;
                }
            }
        }
    }
    Ok(())
}

/// `1.23e8`-style figure with 3 significant digits.
fn si(v: f64) -> String {
    format!("{v:.2e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny CPU run: 64 envs, 1 thread, 4 steps, 8 hidden, 10 ms a figure, JSON records.
    fn tiny(simd: &str) -> RolloutArgs {
        RolloutArgs {
            device: BenchDevice::Cpu,
            envs: vec![64],
            threads: Some(1),
            num_steps: 4,
            hidden: 8,
            seconds: 0.01,
            json: true,
            simd: simd.into(),
        }
    }

    #[test]
    fn json_records_cover_every_figure_with_positive_rates() {
        let args = tiny("auto");
        let mut buf = Vec::new();
        rollout(&args, &mut buf).expect("bench");
        let text = String::from_utf8(buf).expect("utf-8");
        let kinds: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                assert_eq!(v["format_version"], BENCH_FORMAT_VERSION);
                assert!(v["per_second"].as_f64().is_some_and(|x| x > 0.0), "{l}");
                assert!(v["ceiling_per_second"].as_f64().is_some_and(|x| x > 0.0), "{l}");
                v["kind"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        assert_eq!(kinds, ["env_only", "policy", "learn"]);
    }

    #[test]
    fn bad_options_are_usage_errors() {
        let mut args = RolloutArgs { envs: vec![0], threads: None, ..tiny("auto") };
        let err = rollout(&args, &mut Vec::new()).expect_err("zero envs");
        assert!(err.to_string().contains("--envs"), "{err}");
        args.envs = vec![8];
        args.threads = Some(0);
        let err = rollout(&args, &mut Vec::new()).expect_err("zero threads");
        assert!(err.to_string().contains("--threads"), "{err}");
        args.threads = Some(1);
        args.simd = "sse9".into();
        let err = rollout(&args, &mut Vec::new()).expect_err("unknown level");
        assert!(err.to_string().contains("--simd") && err.to_string().contains("sse9"), "{err}");
    }

    #[test]
    fn every_supported_level_can_be_measured() {
        for level in SimdLevel::ALL {
            let args = tiny(level.name());
            let mut buf = Vec::new();
            match rollout(&args, &mut buf) {
                Ok(()) => {
                    let text = String::from_utf8(buf).expect("utf-8");
                    for l in text.lines() {
                        let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                        assert_eq!(v["isa"], level.name(), "{l}");
                    }
                    assert_eq!(text.lines().count(), 3, "{text}");
                }
                Err(e) => {
                    assert!(!level.is_supported(), "{}: {e}", level.name());
                    assert!(e.to_string().contains("cannot run"), "{e}");
                }
            }
        }
    }
}
