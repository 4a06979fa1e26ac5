//! The training loop: rollout on the engine → advantages by the plugin → epochs of minibatch
//! forward (engine), per-token loss derivatives (plugin), backward and Adam (engine).
//!
//! Layout note: the engine's rollout is time-major (`t * N + env`); the plugin sees
//! sequence-major batches (`env * T + t`, one sequence per environment), as LLM-style
//! algorithms expect. The conversion happens here and only here.
//!
//! Ranks: each rank steps its own slice of the environments (global env index = rank offset +
//! local index, so RNG streams are those of a one-rank run) and does forward/backward only for
//! its own samples. The per-sample scalars of the rollout and of each minibatch are gathered so
//! that every rank calls the plugin on the *global* batch (cheap: a few floats per sample), and
//! the gradient is one in-place SUM all-reduce of the flat buffer. Hence a 2-rank run computes
//! the same algorithm as a 1-rank run with the same total batch, and all ranks take identical
//! Adam steps (checked by a parameter hash).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use drover_kernels::{
    create_engine, create_seq_engine, rng, AdamConfig, DeviceRequest, Engine, EngineConfig, EngineState,
    EnvPlan, MinibatchEval, NetShape, PromptRef, Rollout,
};
use drover_plugin_host::{
    AlgorithmHandle, LossBatch, Metric, MinibatchContext, Plugin, PluginState, RolloutBatch,
    SequenceLoss,
};

use drover_plugin_api::{host_metrics, metadata as meta};

use crate::comm::{self, Communicator};
use crate::sampling::{self, GroupSpec, PromptSchedule};
use crate::metrics::{MetricsLog, MetricsRow, METRICS_PARQUET};
use crate::checkpoint::{self, Checkpoint, PluginStateRecord, RunState};
use crate::signals::{CancelFlag, StopCause};
use crate::spec::JobSpec;
use crate::summary::{ExitStatus, PluginRecord, RowStats, Summary, SUMMARY_FORMAT_VERSION};
use crate::{fsio, JobError};

/// CartPole-v1 observation size and action count.
const CARTPOLE_OBS: usize = 4;
const CARTPOLE_ACTIONS: usize = 2;

/// Metric names with a fixed column in the metrics table.
const FIXED_METRICS: [&str; 5] = ["policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"];

/// How a training run ended.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Completed or cancelled (errors are returned as `Err`).
    pub status: ExitStatus,
    /// The summary, when completed.
    pub summary: Option<Summary>,
    /// Iterations completed at the checkpoint saved when a signal stopped a checkpointing job.
    pub checkpoint: Option<u64>,
    /// What stopped the run early, as every rank agreed ([`agreed_stop`]); `None` otherwise.
    pub stop: Option<StopCause>,
}

/// Runs one job: trains, and writes `metrics.jsonl` in `out_dir`, and `metrics.parquet` and
/// `summary.json` when the run completes (the caller writes `exit.json`).
pub fn run(
    spec: &JobSpec,
    out_dir: &Path,
    cancel: &CancelFlag,
    comm: &dyn Communicator,
    checkpoint_every: Option<std::time::Duration>,
) -> Result<TrainOutcome, JobError> {
    let started = Instant::now();
    let r = &spec.run;
    let (rank, size) = (comm.rank(), comm.size());
    if size != r.ranks {
        return Err(JobError::Ranks(format!(
            "the spec asks for {} ranks but the job was launched with {size}",
            r.ranks
        )));
    }
    if !r.num_envs.is_multiple_of(size) {
        return Err(JobError::Ranks(format!(
            "run.num_envs = {} is not divisible by {size} ranks",
            r.num_envs
        )));
    }
    let local_envs = r.num_envs / size;
    let plugin = Plugin::load(&spec.plugin_path).inspect_err(crate::plugin_cmd::log_full_report)?;
    let info = plugin.info();
    let record = PluginRecord {
        name: info.name.clone(),
        version: info.version.clone(),
        interface_version: plugin.interface_version().to_string(),
        path: spec.plugin_path.clone(),
        sha256: plugin.sha256().to_string(),
    };
    let params = serde_json::Value::Object(spec.params.clone()).to_string();
    let key = rng::run_key(spec.run.seed);
    let mut algo = plugin.instantiate(&params, u64::from(rng::draw(key, rng::STREAM_PLUGIN, 0, 0)))?;

    let device = match r.device.as_str() {
        "cuda" => DeviceRequest::Cuda,
        "auto" => DeviceRequest::Auto,
        _ => DeviceRequest::Cpu,
    };
    // With no usable device, `cuda` fails and `auto` falls back when the engine is created,
    // each saying why; the ordinal does not matter then.
    let cuda_ordinal = match device {
        DeviceRequest::Cpu => 0,
        _ => drover_kernels::cuda::device_count()
            .map_or(0, |visible| comm::cuda_ordinal(comm.local_rank(), visible)),
    };
    // Checked when the spec was read.
    let task = r.task().map_err(JobError::Ranks)?;
    let config = EngineConfig {
        num_envs: local_envs,
        env_offset: rank * local_envs,
        num_steps: r.num_steps,
        seed: r.seed,
        shape: match &task {
            Some(task) => task.net_shape(r.hidden.clone()),
            None => NetShape { obs_dim: CARTPOLE_OBS, hidden: r.hidden.clone(), n_actions: CARTPOLE_ACTIONS },
        },
        adam: AdamConfig { eps: r.adam_eps as f32, ..AdamConfig::default() },
        threads: r.threads,
        cuda_ordinal,
    };
    let mut engine = match task {
        Some(task) => create_seq_engine(device, config, task)?,
        None => create_engine(device, config)?,
    };
    // Host-staged MPI or NCCL on the devices; the call site of `reduce_grads` is the same.
    let grad_path = crate::comm::nccl::setup(
        engine.as_mut(),
        comm,
        crate::comm::nccl::AllReduceMode::from_env()?,
    )?;
    // Which GPUs the launcher gave this job (the local backend shares a machine's GPUs this way).
    let cuda_visible_devices = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    tracing::info!(
        run = %spec.run_id, plugin = %info.name, device = ?engine.device(), cuda_ordinal, cuda_visible_devices,
        compute = %checkpoint::compute_of(engine.as_ref()),
        params = engine.num_params(), rank, ranks = size, grad_allreduce = ?grad_path, "training starts"
    );

    let mut trainer = Trainer::new(spec, key, comm, local_envs);
    // The frozen reference policy: the initial parameters, taken before any checkpoint is
    // loaded (initialisation is a pure function of the seed, so a resumed run gets the same).
    if r.initial_reference() {
        trainer.reference = Some(engine.params()?);
    }
    if trainer.group_size.is_some() {
        trainer.sequence_loss = plugin.sequence_loss()?;
        if trainer.sequence_loss.is_some() {
            tracing::info!(plugin = %info.name, "the plugin's sequence-level loss (`sequence_loss`, interface 1.1) trains in place of its token `loss`");
            if r.initial_reference() {
                tracing::warn!(
                    plugin = %info.name,
                    "run.reference_policy is set, but the sequence-level loss sees only each response's log-ratio: a per-token KL to the reference is not applied (the plugin may fold a sequence-level one into its objective from `logp_ref`)"
                );
            }
        }
    }
    // A requeued Slurm job continues right after its last checkpointed iteration.
    let checkpointing = cancel.checkpointing();
    // Looked up only when checkpointing, so a plugin's state table matters to no other run.
    let state_ext = if checkpointing { plugin.plugin_state()? } else { None };
    let (mut first, mut wall_offset, mut checkpoint) = (1, 0.0, None);
    // The levels and plugin builds of the attempts before this one (from the checkpoint).
    let mut provenance = checkpoint::Provenance::default();
    // What the last `on_iteration` asked of the next generation batch (checkpointed with it).
    let mut next_group_sizes: Vec<u32> = Vec::new();
    // Rank 0's metrics rows so far (it alone writes `metrics.jsonl`, the others need none).
    let mut resumed_metrics = None;
    if checkpointing {
        // Every rank reads the one checkpoint and takes its own environments from it; the ranks
        // then agree, so that none trains on while another stopped.
        let mut resume = || -> Result<bool, JobError> {
            let Some(ck) = checkpoint::load(out_dir, &spec.run_id)? else { return Ok(false) };
            if ck.perm.len() != trainer.perm.len() {
                return Err(JobError::Checkpoint {
                    path: out_dir.join(checkpoint::CHECKPOINT_JSON),
                    reason: format!("{} samples per rollout, the spec has {}", ck.perm.len(), trainer.perm.len()),
                });
            }
            let own = checkpoint::rank_engine_state(EngineState::from(&ck.engine), trainer.num_envs, trainer.env_offset, trainer.local_envs)
                .map_err(|reason| JobError::Checkpoint { path: out_dir.join(checkpoint::CHECKPOINT_JSON), reason })?;
            match checkpoint::resume_level(
                ck.compute.as_deref(),
                &checkpoint::compute_of(engine.as_ref()),
                drover_kernels::cpu::SimdLevel::pinned_by_env(),
            ) {
                checkpoint::ResumeLevel::Same => {}
                checkpoint::ResumeLevel::Switch(level) => {
                    engine.set_simd_level(level)?;
                    tracing::info!(run = %spec.run_id, rank, compute = %checkpoint::compute_of(engine.as_ref()), "resuming at the checkpoint's CPU level, so the run continues bit for bit");
                }
                checkpoint::ResumeLevel::Differs(why) => tracing::warn!(run = %spec.run_id, rank, "{why}"),
            }
            if let Some(why) = checkpoint::plugin_build_changed(ck.plugin_sha256.as_deref(), plugin.sha256()) {
                tracing::warn!(run = %spec.run_id, rank, "{why}");
            }
            provenance = checkpoint::Provenance::of_checkpoint(&ck);
            // A checkpoint that parses but does not fit the engine (damaged, or edited): name the
            // file, not only the buffer the engine found wrong.
            engine.load_state(&own).map_err(|e| JobError::Checkpoint {
                path: out_dir.join(checkpoint::CHECKPOINT_JSON),
                reason: format!("its engine state does not fit this run: {e}"),
            })?;
            trainer.perm.clone_from(&ck.perm);
            if rank == 0 {
                resumed_metrics = Some(ck.metrics(out_dir).map_err(|reason| JobError::Checkpoint {
                    path: out_dir.join(checkpoint::CHECKPOINT_JSON),
                    reason,
                })?);
            }
            // The engine's step is restored, so these are the prompts the sizes were asked for.
            let next = trainer.next_prompts(engine.as_ref());
            trainer.set_group_sizes(next.as_ref(), &ck.next_group_sizes).map_err(|reason| JobError::Checkpoint {
                path: out_dir.join(checkpoint::CHECKPOINT_JSON),
                reason: format!("`next_group_sizes`: {reason}"),
            })?;
            next_group_sizes.clone_from(&ck.next_group_sizes);
            restore_plugin_state(&mut algo, state_ext, &ck, &spec.run_id, out_dir)?;
            (first, wall_offset) = (ck.iteration + 1, ck.wall_time_s);
            tracing::info!(run = %spec.run_id, iteration = ck.iteration, rank, "resumed from checkpoint");
            Ok(true)
        };
        let resumed = resume();
        if size > 1 {
            let failed = comm::count_ranks(comm, resumed.is_err());
            let found = comm::count_ranks(comm, matches!(resumed, Ok(true)));
            if resumed.is_ok() && failed > 0 {
                // A checkpoint error on this rank too, so that the marker's cause says so.
                return Err(JobError::Checkpoint {
                    path: out_dir.join(checkpoint::CHECKPOINT_JSON),
                    reason: format!("{failed} of {size} ranks could not resume from it (see their errors)"),
                });
            }
            if resumed.is_ok() && found != 0 && found != size {
                return Err(JobError::Ranks(format!("{found} of {size} ranks found a checkpoint in {}", out_dir.display())));
            }
        }
        resumed?;
    }
    // After a resume's level switch: the level this attempt computes at from here on.
    provenance.note(&checkpoint::compute_of(engine.as_ref()), plugin.sha256());
    // Rank 0 alone writes files; opened after the checkpoint was accepted, so a refused one
    // leaves the interrupted attempt's metrics file as it was. A resumed log keeps the lines
    // the checkpoint vouches for and drops those written after it.
    let mut log = match (rank, resumed_metrics) {
        (0, Some(resumed)) => Some(MetricsLog::resume(out_dir, resumed)?),
        (0, None) => Some(MetricsLog::create(out_dir)?),
        _ => None,
    };
    if log.is_some() {
        remove_stale_parquet(out_dir);
    }
    let batch = r.num_envs * r.num_steps;
    let iterations = (r.total_steps / batch as u64).max(1);
    let (mut status, mut stop) = (ExitStatus::Completed, None);
    let mut last_checkpoint = Instant::now();
    for iteration in first..=iterations {
        let stopping = agreed_stop(cancel, comm);
        // A checkpoint every `checkpoint_every` as well, so that a node failure or a kill
        // without warning loses at most that much; the ranks agree, as it is collective.
        let periodic = stopping.is_none()
            && iteration > first
            && checkpointing
            && checkpoint_every.is_some_and(|every| {
                let due = last_checkpoint.elapsed() >= every;
                if size > 1 { comm::count_ranks(comm, due) > 0 } else { due }
            });
        if let Some(cause) = stopping {
            (status, stop) = (ExitStatus::Cancelled, Some(cause));
        }
        // A checkpoint now: a periodic one, or at a stop other than SIGINT (which stops without).
        if periodic || (checkpointing && stopping.is_some_and(|c| c != StopCause::Interrupt)) {
            // Collective: every rank's environments, gathered on every rank.
            if let Some(engine_state) = checkpoint::job_engine_state(engine.as_ref(), comm, trainer.num_envs, trainer.env_offset)? {
                // Rank 0, which alone has the metrics log, writes it (the other ranks' trainer
                // and plugin are the same).
                let mut write = |log: &mut MetricsLog| -> Result<(), JobError> {
                    let wall = wall_offset + started.elapsed().as_secs_f64();
                    let plugin_state = match state_ext {
                        Some(ext) => Some(PluginStateRecord::new(&info.name, &info.version, &algo.save_state(ext)?)),
                        None => None,
                    };
                    let state = RunState {
                        perm: trainer.perm.clone(),
                        next_group_sizes: next_group_sizes.clone(),
                        plugin_state,
                        compute: checkpoint::compute_of(engine.as_ref()),
                        plugin_sha256: plugin.sha256().to_string(),
                        provenance: provenance.clone(),
                    };
                    checkpoint::take(out_dir, &spec.run_id, iteration - 1, &engine_state, state, log, wall)
                };
                let written = log.as_mut().map_or(Ok(()), &mut write);
                let failed = if size > 1 { comm::count_ranks(comm, written.is_err()) } else { 0 };
                written?;
                if failed > 0 {
                    return Err(JobError::Ranks("rank 0 could not write the checkpoint (see its error)".into()));
                }
                if stopping.is_some() {
                    checkpoint = Some(iteration - 1);
                }
                last_checkpoint = Instant::now();
            }
        }
        if stopping.is_some() {
            break;
        }
        let lr = if r.anneal_lr {
            r.lr * (1.0 - (iteration - 1) as f64 / iterations as f64)
        } else {
            r.lr
        };
        if iteration == 2 && fault_kill_rank() == Some(rank) {
            tracing::error!(rank, "DROVER_FAULT_KILL_RANK: aborting this rank on purpose");
            std::process::abort();
        }
        let t0 = Instant::now();
        let stats = trainer.iterate(engine.as_mut(), &mut algo, iteration, lr as f32)?;
        let global_step = (iteration * batch as u64) as i64;
        let mut iteration_metrics: Vec<Metric> = stats.iter().map(|(k, v)| Metric::new(k.as_str(), *v)).collect();
        // Interface 1.2 inputs (never logged): the prompts of the next generation batch.
        let next = trainer.next_prompts(engine.as_ref());
        if let Some(next) = &next {
            iteration_metrics.extend(next.to_metrics().iter().map(|m| Metric::new(m.name.as_str(), m.value)));
        }
        let control = algo.on_iteration(iteration, global_step as u64, &iteration_metrics)?;
        trainer.set_group_sizes(next.as_ref(), &control.group_sizes).map_err(|reason| JobError::PluginRequest {
            plugin: info.name.clone(),
            version: info.version.clone(),
            call: "on_iteration",
            reason,
        })?;
        next_group_sizes = control.group_sizes.clone();
        let (return_sum, episodes) = trainer.episode_totals();
        // A sequence task's return is its `accuracy`: per prompt, so that per-prompt budgets
        // (Knapsack RL) do not weight the prompts they favour.
        let episodic_return_mean =
            (episodes > 0).then(|| trainer.accuracy().unwrap_or(return_sum / episodes as f64));
        let mut extra: BTreeMap<String, f64> = trainer.sequence_metrics().into_iter().collect();
        extra.extend(stats
            .iter()
            .filter(|(k, _)| !FIXED_METRICS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), *v)));
        // The loss stage's fixed columns come from `stats`; the same name from `on_iteration`
        // would be a second column of that name (host columns are refused by the handle).
        if let Some(m) = control.metrics.iter().find(|m| FIXED_METRICS.contains(&m.name.as_str())) {
            return Err(JobError::PluginRequest {
                plugin: info.name.clone(),
                version: info.version.clone(),
                call: "on_iteration",
                reason: format!(
                    "returned metric `{}`, the name of a column the advantage and loss \
                     stages fill ({}); report it from those stages, or rename it",
                    m.name,
                    FIXED_METRICS.join(", ")
                ),
            });
        }
        extra.extend(control.metrics.iter().map(|m| (m.name.clone(), m.value)));
        let row = MetricsRow {
            iteration: iteration as i64,
            global_step,
            episodic_return_mean,
            episodes: episodes as i64,
            policy_loss: stats.get("policy_loss").copied(),
            value_loss: stats.get("value_loss").copied(),
            entropy: stats.get("entropy").copied(),
            approx_kl: stats.get("approx_kl").copied(),
            clip_frac: stats.get("clip_frac").copied(),
            lr,
            steps_per_sec: batch as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            wall_time_s: wall_offset + started.elapsed().as_secs_f64(),
            extra,
        };
        tracing::debug!(iteration, global_step, ?episodic_return_mean, "iteration done");
        if cfg!(debug_assertions) {
            check_params_agree(engine.as_ref(), comm)?;
        }
        if let Some(log) = log.as_mut() {
            log.push(row)?;
        }
        let solved = episodic_return_mean.is_some_and(|m| m >= r.success_return);
        if control.stop || (r.stop_at_success && solved) {
            break;
        }
    }

    let param_hash = check_params_agree(engine.as_ref(), comm)?;
    let Some(mut log) = log else {
        return Ok(TrainOutcome { status, checkpoint, summary: None, stop });
    };
    let Some(totals) = completed_metrics(&mut log, out_dir, status, r.success_return)? else {
        return Ok(TrainOutcome { status, checkpoint, summary: None, stop });
    };
    let (computes, plugin_sha256s) = provenance.mixed();
    let (final_return, best_return, steps_to_threshold) = totals.return_stats();
    let summary = Summary {
        format_version: SUMMARY_FORMAT_VERSION,
        run_id: spec.run_id.clone(),
        config_id: spec.config_id.clone(),
        label: spec.label.clone(),
        seed: r.seed,
        total_steps: totals.total_steps,
        iterations: totals.iterations,
        wall_time_s: wall_offset + started.elapsed().as_secs_f64(),
        final_return,
        best_return,
        steps_to_threshold,
        success_return: r.success_return,
        ranks: size,
        param_hash: format!("{param_hash:016x}"),
        plugin: record,
        params: crate::summary::resolved_params(&spec.params, info.params.iter().map(|p| (p.name.as_str(), p.default.as_str()))),
        compute: Some(checkpoint::compute_of(engine.as_ref())),
        computes,
        plugin_sha256s,
    };
    fsio::write_json_atomic(&out_dir.join("summary.json"), &summary)?;
    checkpoint::remove(out_dir);
    tracing::info!(run = %spec.run_id, ?final_return, ?steps_to_threshold, "training done");
    Ok(TrainOutcome { status, checkpoint, summary: Some(summary), stop })
}

/// Writes `metrics.parquet` of a completed run and returns the summary's figures, which come
/// from the same pass over `metrics.jsonl` (no row is held in memory: docs/design/results-layout.md,
/// "Memory"). A stopped run (`status` not completed) writes nothing and returns `None`: the pass
/// reads every row back (about 2 s per 100,000), which a stop cannot afford inside its grace
/// period or Slurm's `KillWait` (a SIGKILL mid-write left `metrics.parquet.tmp` and no
/// `exit.json`), and no reader wants the file of a stopped run (`drover status` counts the lines
/// of `metrics.jsonl`, `drover analyze` and a rerun's checks read completed runs only, and a
/// stopped run writes no `summary.json`).
fn completed_metrics(
    log: &mut MetricsLog,
    out_dir: &Path,
    status: ExitStatus,
    success_return: f64,
) -> Result<Option<RowStats>, JobError> {
    if status != ExitStatus::Completed {
        return Ok(None);
    }
    let mut totals = RowStats::new(success_return);
    log.write_parquet(&out_dir.join(METRICS_PARQUET), |row| totals.add(row))?;
    Ok(Some(totals))
}

/// Removes the `metrics.parquet` (and a temporary file of it) an earlier attempt of the run left
/// when rank 0 starts writing metrics: this attempt rewrites `metrics.jsonl` from the checkpoint
/// or from scratch, so that file no longer holds the run's rows, and a stop writes none
/// ([`completed_metrics`]; older drover-jobs wrote one at every stop). The file is then
/// there only once the run completed. A file that cannot be removed is only a warning: the
/// completed run replaces it by rename anyway.
fn remove_stale_parquet(out_dir: &Path) {
    let parquet = out_dir.join(METRICS_PARQUET);
    for path in [fsio::tmp_path(&parquet), parquet] {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed an earlier attempt's metrics file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), "cannot remove an earlier attempt's metrics file: {e}"),
        }
    }
}

/// Gives a resumed run's fresh plugin instance the state the checkpoint holds (interface 1.3).
/// A state the plugin cannot take back is an error that keeps the checkpoint: resuming without
/// it would silently diverge from the interrupted run.
fn restore_plugin_state(
    algo: &mut AlgorithmHandle,
    ext: Option<PluginState>,
    ck: &Checkpoint,
    run_id: &str,
    out_dir: &Path,
) -> Result<(), JobError> {
    let plugin = algo.plugin_name().to_string();
    let fail = |reason: String| JobError::PluginState {
        run: run_id.to_string(),
        path: out_dir.join(checkpoint::CHECKPOINT_JSON),
        plugin: plugin.clone(),
        reason,
    };
    let Some(record) = &ck.plugin_state else {
        if ext.is_some() {
            tracing::warn!(
                run = %run_id, plugin = %plugin, format_version = ck.format_version,
                "the checkpoint holds no plugin state (format 1 predates it, or the plugin had no state table): the plugin starts fresh"
            );
        }
        return Ok(());
    };
    if record.plugin != plugin {
        return Err(fail(format!("the checkpoint holds the state of plugin `{}` {}", record.plugin, record.version)));
    }
    let bytes = record.bytes().map_err(&fail)?;
    let Some(ext) = ext else {
        return Err(fail(format!(
            "the checkpoint holds its state ({} bytes, saved by {} {}), but the plugin loaded now exports no \
             `drover.plugin_state` table to take it back",
            bytes.len(),
            record.plugin,
            record.version
        )));
    };
    algo.load_state(ext, &bytes).map_err(|e| {
        fail(format!(
            "`load_state` refused the state saved by {} {} ({} bytes): {}",
            record.plugin,
            record.version,
            bytes.len(),
            e.kind
        ))
    })?;
    tracing::info!(run = %run_id, plugin = %plugin, bytes = bytes.len(), "plugin state restored");
    Ok(())
}

/// The stop every rank takes at this iteration boundary, or `None` to go on. A signal reaches
/// the ranks of a job at slightly different times (or one rank only), so each rank's flag is
/// shared (one all-reduce of three f64) and all ranks act on the sum: a rank leaving the loop
/// alone would leave the others waiting in the next collective. Mixed causes: SIGTERM
/// (preemption) before the checkpoint signal before SIGINT.
fn agreed_stop(cancel: &CancelFlag, comm: &dyn Communicator) -> Option<StopCause> {
    let own = cancel.is_raised().then(|| cancel.cause().unwrap_or(StopCause::Terminate));
    if comm.size() == 1 {
        return own;
    }
    const ORDER: [StopCause; 3] = [StopCause::Terminate, StopCause::CheckpointSignal, StopCause::Interrupt];
    let mut votes = [0.0f64; 3];
    if let Some(i) = own.and_then(|c| ORDER.iter().position(|&o| o == c)) {
        votes[i] = 1.0;
    }
    comm.all_reduce_sum_f64(&mut votes);
    ORDER.iter().zip(votes).find(|(_, v)| *v > 0.0).map(|(&c, _)| c)
}

/// Fault injection for the multi-rank failure test: `DROVER_FAULT_KILL_RANK=<rank>` makes that
/// rank abort (like a crash) at iteration 2.
fn fault_kill_rank() -> Option<usize> {
    std::env::var("DROVER_FAULT_KILL_RANK").ok()?.parse().ok()
}

/// FNV-1a over the bit patterns of the parameters: equal hashes on all ranks mean the ranks
/// hold bit-identical parameters. Returns the hash; an error when ranks disagree.
fn check_params_agree(engine: &dyn Engine, comm: &dyn Communicator) -> Result<u64, JobError> {
    let params = engine.params()?;
    let hash = params.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, p| {
        (h ^ u64::from(p.to_bits())).wrapping_mul(0x0000_0100_0000_01b3)
    });
    if comm.size() == 1 {
        return Ok(hash);
    }
    // Each rank writes its hash, as two exact 32-bit halves, into its own slots.
    let mut all = vec![0.0f64; 2 * comm.size()];
    all[2 * comm.rank()] = (hash >> 32) as f64;
    all[2 * comm.rank() + 1] = (hash & 0xffff_ffff) as f64;
    comm.all_reduce_sum_f64(&mut all);
    let hashes: Vec<u64> = all.chunks(2).map(|c| ((c[0] as u64) << 32) | c[1] as u64).collect();
    if hashes.iter().any(|&h| h != hash) {
        return Err(JobError::Ranks(format!(
            "parameters differ between ranks (hashes {hashes:016x?})"
        )));
    }
    Ok(hash)
}

/// Channels of the gathered rollout, in buffer order (`logp_ref` is zero without a reference
/// policy; the last, the actions as exact small floats, lets any rank replay any response).
const ROLLOUT_CHANNELS: usize = 9;

/// Buffers reused across iterations, so the loop allocates nothing after the first one.
struct Trainer<'c> {
    comm: &'c dyn Communicator,
    /// Environments of the whole job (all ranks).
    num_envs: usize,
    /// Environments of this rank, and the global index of its first one.
    local_envs: usize,
    env_offset: usize,
    num_steps: usize,
    epochs: usize,
    minibatch: usize,
    max_grad_norm: Option<f32>,
    key: u32,
    /// Responses per prompt of a sequence task; `None` for CartPole. Sequence tasks group
    /// sequences by prompt and train on minibatches of whole sequences.
    group_size: Option<usize>,
    /// Expert (teacher-forced) responses per group (`run.expert_per_group`); 0 for none.
    expert_per_group: usize,
    /// Most generation batches per iteration (`run.max_gen_batches`, DAPO's dynamic sampling).
    max_gen_batches: usize,
    /// The prompt dataset (`run.dataset_size`); `None`: fresh prompts every rollout.
    schedule: Option<PromptSchedule>,
    /// Group sizes the plugin asked for, for the next generation batch's prompts (Knapsack RL).
    pending_groups: Option<Vec<GroupSpec>>,
    /// What the generation batches of this iteration produced.
    report: GenReport,
    /// Parameters of the frozen reference policy (`run.reference_policy = "initial"`).
    reference: Option<Vec<f32>>,
    /// The plugin's sequence-level loss (interface 1.1 `drover.sequence_loss`), which trains in
    /// place of its token `loss` on the sequence tasks, whose minibatches hold whole responses
    /// (the objective is a function of each response's log-ratio). `None` on CartPole, whose
    /// "sequences" are environment rows of many episodes cut into token minibatches.
    sequence_loss: Option<SequenceLoss>,
    /// This rank's `logp_ref` of the last rollout, time-major.
    local_logp_ref: Vec<f32>,
    rollout: Rollout,
    /// The whole job's rollout scalars, time-major, `ROLLOUT_CHANNELS` channels of `T * N`.
    gathered: Vec<f32>,
    /// Sum and count of the returns of episodes finished this iteration, over all ranks.
    episodes: [f64; 2],
    // Sequence-major copies for the plugin: the training batch, and (sequence tasks) the
    // generation batch it is composed from.
    seq: SeqBuffers,
    gen: SeqBuffers,
    advantages: Vec<f32>,
    returns: Vec<f32>,
    perm: Vec<u32>,
    eval: MinibatchEval,
    mb: MinibatchBuffers,
}

#[derive(Default)]
struct SeqBuffers {
    mask: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<f32>,
    truncated: Vec<f32>,
    values: Vec<f32>,
    next_values: Vec<f32>,
    logp: Vec<f32>,
    entropy: Vec<f32>,
    group_ids: Vec<u32>,
    sample_weights: Vec<f32>,
    logp_ref: Vec<f32>,
    /// Valid tokens of each sequence (the `length` metadata column of sequence tasks).
    lengths: Vec<f32>,
    /// 1 for an expert (teacher-forced) response, else 0 (the `is_expert` metadata column,
    /// sent when `run.expert_per_group > 0`).
    is_expert: Vec<f32>,
    /// Actions (tokens), sequence-major, as exact floats.
    actions: Vec<f32>,
    /// The prompt of each sequence (sequence tasks).
    refs: Vec<PromptRef>,
    /// Dataset index of each sequence's prompt (the `prompt_id` metadata column of dataset runs).
    prompt_ids: Vec<f32>,
}

impl SeqBuffers {
    /// Copies sequence `src` of `from` into sequence `dst` of `self` (`t_len` steps each),
    /// every per-token channel and the per-sequence columns that travel with a response.
    /// `mask` is not copied: every response has the task's full length, so it is all ones in
    /// both buffers.
    fn copy_sequence(&mut self, from: &SeqBuffers, src: usize, dst: usize, t_len: usize) {
        let (a, b) = (src * t_len..(src + 1) * t_len, dst * t_len..(dst + 1) * t_len);
        for (to, from) in self.gathered_channels_mut().into_iter().zip(from.gathered_channels()) {
            to[b.clone()].copy_from_slice(&from[a.clone()]);
        }
        self.is_expert[dst] = from.is_expert[src];
        self.refs[dst] = from.refs[src];
    }

    /// The per-token channels of the gathered rollout, in its buffer order.
    fn gathered_channels_mut(&mut self) -> [&mut Vec<f32>; ROLLOUT_CHANNELS] {
        [
            &mut self.rewards,
            &mut self.terminated,
            &mut self.truncated,
            &mut self.values,
            &mut self.next_values,
            &mut self.logp,
            &mut self.entropy,
            &mut self.logp_ref,
            &mut self.actions,
        ]
    }

    /// [`SeqBuffers::gathered_channels_mut`], read-only.
    fn gathered_channels(&self) -> [&Vec<f32>; ROLLOUT_CHANNELS] {
        [
            &self.rewards,
            &self.terminated,
            &self.truncated,
            &self.values,
            &self.next_values,
            &self.logp,
            &self.entropy,
            &self.logp_ref,
            &self.actions,
        ]
    }
}

/// What the generation batches of one iteration produced (sequence tasks).
#[derive(Debug, Default, Clone)]
struct GenReport {
    /// Generation batches (rollouts).
    batches: usize,
    /// Prompt groups generated, and those the plugin's `keep_group` accepted.
    groups: usize,
    kept: usize,
    /// Training-batch sequences with weight 1.
    accepted_rows: usize,
    /// Smallest and largest prompt group of the first generation batch (its layout is the
    /// one a plugin's group sizes set).
    group_range: (usize, usize),
    /// Entropy summed over the tokens of sampled (not expert) responses, and their count.
    entropy_sum: f64,
    entropy_tokens: usize,
    /// Success rate of each prompt group (its sampled responses), summed, and the groups.
    accuracy_sum: f64,
    accuracy_groups: usize,
}

#[derive(Default)]
struct MinibatchBuffers {
    logp_old: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
    values_old: Vec<f32>,
    logp_ref: Vec<f32>,
    weights: Vec<f32>,
    seq_index: Vec<u32>,
    /// Minibatch-local index of each job-wide sequence (`u32::MAX`: not in this minibatch).
    seq_slot: Vec<u32>,
    seq_envs: Vec<u32>,
    seq_group_ids: Vec<u32>,
    /// This rank's samples of the minibatch: engine-local indices and minibatch positions.
    local_samples: Vec<u32>,
    local_pos: Vec<usize>,
    /// Gathered `[logp_new | values_new | entropy_new]` of the whole minibatch.
    new: Vec<f32>,
    local_d_logp: Vec<f32>,
    local_d_value: Vec<f32>,
    local_d_entropy: Vec<f32>,
    loss: Vec<f32>,
    /// Per-sequence losses of a sequence-level loss call.
    seq_loss: Vec<f32>,
    d_logp: Vec<f32>,
    d_value: Vec<f32>,
    d_entropy: Vec<f32>,
}

impl<'c> Trainer<'c> {
    fn new(spec: &JobSpec, key: u32, comm: &'c dyn Communicator, local_envs: usize) -> Self {
        let r = &spec.run;
        let batch = r.num_envs * r.num_steps;
        let task = r.task().ok().flatten();
        let group_size = task.map(|t| t.group_size);
        let expert_per_group = task.map_or(0, |t| t.expert_per_group);
        let group = group_size.unwrap_or(1) as u32;
        let per_seq = if task.is_some() { r.num_envs } else { 0 };
        let buffers = || {
            let mut b = SeqBuffers {
                mask: vec![1.0; batch],
                group_ids: (0..r.num_envs as u32).map(|env| env / group).collect(),
                sample_weights: vec![1.0; r.num_envs],
                is_expert: vec![0.0; per_seq],
                refs: vec![PromptRef::Dataset(0); per_seq],
                ..SeqBuffers::default()
            };
            for channel in b.gathered_channels_mut() {
                channel.resize(batch, 0.0);
            }
            b
        };
        Self {
            comm,
            num_envs: r.num_envs,
            local_envs,
            env_offset: comm.rank() * local_envs,
            num_steps: r.num_steps,
            epochs: r.update_epochs,
            minibatch: batch / r.num_minibatches,
            max_grad_norm: (r.max_grad_norm > 0.0).then_some(r.max_grad_norm as f32),
            key,
            group_size,
            expert_per_group,
            max_gen_batches: r.max_gen_batches.unwrap_or(1).max(1),
            schedule: r.dataset_size.filter(|_| task.is_some()).map(|d| PromptSchedule::new(d, key)),
            pending_groups: None,
            report: GenReport::default(),
            reference: None,
            sequence_loss: None,
            local_logp_ref: Vec::new(),
            rollout: Rollout::default(),
            gathered: vec![0.0; ROLLOUT_CHANNELS * batch],
            episodes: [0.0; 2],
            seq: buffers(),
            gen: buffers(),
            advantages: vec![0.0; batch],
            returns: vec![0.0; batch],
            perm: (0..batch as u32).collect(),
            eval: MinibatchEval::default(),
            mb: MinibatchBuffers { seq_slot: vec![u32::MAX; r.num_envs], ..MinibatchBuffers::default() },
        }
    }

    /// Host metrics of a sequence task's iteration: `accuracy` (the success rate of a prompt,
    /// averaged over the prompt groups of every generation batch, so that per-prompt budgets do
    /// not weight prompts; with equal groups, the mean verifier reward) and `token_entropy`
    /// (mean policy entropy over the tokens). Both count sampled responses only: expert
    /// responses are the answer, always right.
    fn sequence_metrics(&self) -> Vec<(String, f64)> {
        let Some(accuracy) = self.accuracy() else {
            return Vec::new();
        };
        let rep = &self.report;
        vec![
            (host_metrics::ACCURACY.into(), accuracy),
            (host_metrics::TOKEN_ENTROPY.into(), rep.entropy_sum / rep.entropy_tokens.max(1) as f64),
        ]
    }

    /// The iteration's `accuracy` (see [`Trainer::sequence_metrics`]); `None` for CartPole.
    fn accuracy(&self) -> Option<f64> {
        self.group_size?;
        Some(self.report.accuracy_sum / self.report.accuracy_groups.max(1) as f64)
    }

    /// The prompts of the next generation batch, for the plugin's `on_iteration` (interface
    /// 1.2); `None` without a prompt dataset.
    fn next_prompts(&mut self, engine: &dyn Engine) -> Option<drover_plugin_api::NextPrompts> {
        let g = self.group_size?;
        let per_batch = self.num_envs / g;
        let cursor = engine.global_step() / self.num_steps as u64 * per_batch as u64;
        let schedule = self.schedule.as_mut()?;
        Some(drover_plugin_api::NextPrompts {
            prompt_ids: schedule.window(cursor, per_batch),
            budget: self.num_envs as u32,
            group_size: g as u32,
        })
    }

    /// Takes the group sizes `on_iteration` returned for the prompts `next` (empty: the run's
    /// `group_size` for each); the reason when they do not fit.
    fn set_group_sizes(&mut self, next: Option<&drover_plugin_api::NextPrompts>, sizes: &[u32]) -> Result<(), String> {
        self.pending_groups = None;
        if sizes.is_empty() {
            return Ok(());
        }
        let Some(next) = next else {
            return Err(format!(
                "asked for {} group sizes, but per-prompt group sizes need a prompt \
                 dataset (set `run.dataset_size` on a sequence task)",
                sizes.len()
            ));
        };
        self.pending_groups = Some(sampling::sized_groups(&next.prompt_ids, sizes, self.num_envs)?);
        Ok(())
    }

    /// The prompt groups of the next rollout and its per-env plan, with the engine planned for
    /// them: the plugin's sizes over the dataset's next prompts, or the run's `group_size` over
    /// them, or (no dataset) the engine's default layout of fresh prompts, which needs no plan.
    fn next_groups(&mut self, engine: &mut dyn Engine) -> Result<(Vec<GroupSpec>, Vec<EnvPlan>), JobError> {
        let g = self.group_size.unwrap_or(1);
        let per_batch = self.num_envs / g;
        let rollout = engine.global_step() / self.num_steps as u64;
        let Some(schedule) = self.schedule.as_mut() else {
            let groups: Vec<GroupSpec> = (0..per_batch)
                .map(|k| GroupSpec { prompt: PromptRef::Drawn { rollout: rollout as u32, group: k as u32 }, size: g })
                .collect();
            let plan = sampling::plan(&groups, self.expert_per_group);
            return Ok((groups, plan));
        };
        let groups = match self.pending_groups.take() {
            Some(groups) => groups,
            None => schedule
                .window(rollout * per_batch as u64, per_batch)
                .into_iter()
                .map(|i| GroupSpec { prompt: PromptRef::Dataset(i), size: g })
                .collect(),
        };
        let plan = sampling::plan(&groups, self.expert_per_group);
        engine.plan_rollout(&plan[self.env_offset..self.env_offset + self.local_envs])?;
        Ok((groups, plan))
    }

    /// Sequence tasks: generation batches until the training batch (`self.seq`) is full of
    /// prompt groups the plugin's `keep_group` accepts (DAPO's dynamic sampling), or
    /// `max_gen_batches` were generated; then the rest is padding at weight 0 (refused groups,
    /// which add nothing to the loss). With one batch this is that batch, refused groups
    /// weighted 0. When the training batch is not the last rollout, the engine replays it.
    fn generate(&mut self, engine: &mut dyn Engine, algo: &AlgorithmHandle) -> Result<(), JobError> {
        let (n, t_len) = (self.num_envs, self.num_steps);
        self.report = GenReport::default();
        self.episodes = [0.0; 2];
        let (mut filled, mut replay) = (0, false);
        for gen in 0..self.max_gen_batches {
            let (groups, plan) = self.next_groups(engine)?;
            for (env, p) in plan.iter().enumerate() {
                self.gen.is_expert[env] = if p.expert { 1.0 } else { 0.0 };
                self.gen.refs[env] = p.prompt;
            }
            engine.rollout(&mut self.rollout)?;
            self.evaluate_reference(engine)?;
            let episodes = self.gather_rollout();
            self.episodes[0] += episodes[0];
            self.episodes[1] += episodes[1];
            to_sequence_major(&self.gathered, n, t_len, &mut self.gen);
            let rep = &mut self.report;
            for (env, row) in self.gen.entropy.chunks(t_len).enumerate() {
                if self.gen.is_expert[env] == 0.0 {
                    rep.entropy_sum += row.iter().map(|&h| f64::from(h)).sum::<f64>();
                    rep.entropy_tokens += row.len();
                }
            }
            let sizes: Vec<usize> = groups.iter().map(|g| g.size).collect();
            let mut keep = Vec::with_capacity(sizes.len());
            let mut start = 0;
            for &size in &sizes {
                let scores: Vec<f32> =
                    (start..start + size).map(|e| self.gen.rewards[e * t_len..(e + 1) * t_len].iter().sum()).collect();
                let sampled: Vec<f64> = (start..start + size)
                    .filter(|&e| self.gen.is_expert[e] == 0.0)
                    .map(|e| f64::from(scores[e - start]))
                    .collect();
                if !sampled.is_empty() {
                    rep.accuracy_sum += sampled.iter().sum::<f64>() / sampled.len() as f64;
                    rep.accuracy_groups += 1;
                }
                keep.push(algo.keep_group(&scores)?);
                start += size;
            }
            if rep.batches == 0 {
                rep.group_range = sizes.iter().fold((usize::MAX, 0), |(lo, hi), &n| (lo.min(n), hi.max(n)));
            }
            rep.batches += 1;
            rep.groups += sizes.len();
            rep.kept += keep.iter().filter(|&&k| k).count();
            let picks = sampling::pick_groups(&sizes, &keep, n - filled, gen + 1 == self.max_gen_batches);
            let taken: usize = picks.iter().map(|p| p.len).sum();
            // Every row of this batch, in order, into an empty training batch: it is the rollout.
            replay = !(filled == 0 && taken == n);
            for pick in &picks {
                let group_id = if filled == 0 { 0 } else { self.seq.group_ids[filled - 1] + 1 };
                for k in 0..pick.len {
                    self.seq.copy_sequence(&self.gen, pick.start + k, filled + k, t_len);
                    self.seq.group_ids[filled + k] = group_id;
                    self.seq.sample_weights[filled + k] = pick.weight;
                }
                if pick.weight > 0.0 {
                    self.report.accepted_rows += pick.len;
                }
                filled += pick.len;
            }
            if filled == n {
                break;
            }
        }
        let s = &mut self.seq;
        s.lengths.clear();
        s.lengths.extend(s.mask.chunks(t_len).map(|m| m.iter().sum::<f32>()));
        s.prompt_ids.clear();
        if self.schedule.is_some() {
            s.prompt_ids.extend(s.refs.iter().map(|r| match r {
                PromptRef::Dataset(i) => *i as f32,
                PromptRef::Drawn { .. } => -1.0,
            }));
        }
        if replay {
            let (off, nl) = (self.env_offset, self.local_envs);
            let mut actions = vec![0u32; nl * t_len];
            for i in 0..nl {
                for t in 0..t_len {
                    actions[t * nl + i] = s.actions[(off + i) * t_len + t] as u32;
                }
            }
            engine.load_sequences(&s.refs[off..off + nl], &actions)?;
        }
        Ok(())
    }

    /// `logp_ref` of every local sample of the last rollout under the reference parameters;
    /// the engine's own parameters are put back afterwards (Adam state is untouched).
    fn evaluate_reference(&mut self, engine: &mut dyn Engine) -> Result<(), JobError> {
        let Some(reference) = &self.reference else {
            return Ok(());
        };
        let current = engine.params()?;
        engine.set_params(reference)?;
        let samples: Vec<u32> = (0..(self.local_envs * self.num_steps) as u32).collect();
        let evaluated = engine.evaluate(&samples, &mut self.eval);
        engine.set_params(&current)?;
        evaluated?;
        self.local_logp_ref.clone_from(&self.eval.logp);
        Ok(())
    }

    /// One iteration; returns the mean of every metric the plugin reported, plus `grad_norm`.
    fn iterate(
        &mut self,
        engine: &mut dyn Engine,
        algo: &mut AlgorithmHandle,
        iteration: u64,
        lr: f32,
    ) -> Result<BTreeMap<String, f64>, JobError> {
        if self.group_size.is_some() {
            self.generate(engine, algo)?;
        } else {
            engine.rollout(&mut self.rollout)?;
            self.episodes = self.gather_rollout();
            to_sequence_major(&self.gathered, self.num_envs, self.num_steps, &mut self.seq);
        }
        let seed = u64::from(rng::draw(self.key, rng::STREAM_PLUGIN, 1, iteration as u32));
        let s = &self.seq;
        let mut metadata: Vec<(&str, &[f32])> = Vec::new();
        if self.group_size.is_some() {
            metadata.push((meta::LENGTH, &s.lengths));
            if self.expert_per_group > 0 {
                metadata.push((meta::IS_EXPERT, &s.is_expert));
            }
            if self.schedule.is_some() {
                metadata.push((meta::PROMPT_ID, &s.prompt_ids));
            }
        }
        let advantage_metrics = algo.compute_advantages(
            &RolloutBatch {
                num_sequences: self.num_envs,
                seq_len: self.num_steps,
                mask: &s.mask,
                rewards: &s.rewards,
                terminated: &s.terminated,
                truncated: &s.truncated,
                values: &s.values,
                next_values: &s.next_values,
                logp_old: &s.logp,
                logp_ref: if self.reference.is_some() { &s.logp_ref } else { &[] },
                entropy_old: &s.entropy,
                group_ids: &s.group_ids,
                sample_weights: &s.sample_weights,
                metadata: &metadata,
                seed,
            },
            &mut self.advantages,
            &mut self.returns,
        )?;

        let mut sums: BTreeMap<String, (f64, u32)> =
            advantage_metrics.into_iter().map(|m| (m.name, (m.value, 1))).collect();
        let mut epochs = self.epochs;
        if self.group_size.is_some() {
            let rep = &self.report;
            sums.insert(host_metrics::KEPT_GROUP_FRAC.into(), (rep.kept as f64 / rep.groups.max(1) as f64, 1));
            if self.schedule.is_some() {
                sums.insert(host_metrics::GROUP_SIZE_MIN.into(), (rep.group_range.0 as f64, 1));
                sums.insert(host_metrics::GROUP_SIZE_MAX.into(), (rep.group_range.1 as f64, 1));
            }
            if self.max_gen_batches > 1 {
                sums.insert(host_metrics::GEN_BATCHES.into(), (rep.batches as f64, 1));
                sums.insert(host_metrics::BATCH_FILL.into(), (rep.accepted_rows as f64 / self.num_envs as f64, 1));
            }
            // Every group filtered out: nothing to learn from this rollout.
            if rep.accepted_rows == 0 {
                epochs = 0;
            }
        }
        for epoch in 0..epochs {
            let mut epoch_sums: BTreeMap<String, (f64, u32)> = BTreeMap::new();
            self.shuffle(iteration, epoch);
            for start in (0..self.perm.len()).step_by(self.minibatch) {
                let end = start + self.minibatch;
                let metrics = self.minibatch_step(engine, algo, start..end, iteration, epoch, lr)?;
                for Metric { name, value } in metrics {
                    let e = epoch_sums.entry(name).or_default();
                    e.0 += value;
                    e.1 += 1;
                }
            }
            let epoch_means: Vec<Metric> =
                epoch_sums.iter().map(|(k, (s, n))| Metric::new(k.as_str(), s / f64::from(*n))).collect();
            for (name, (s, n)) in epoch_sums {
                let e = sums.entry(name).or_default();
                e.0 += s;
                e.1 += n;
            }
            if !algo.on_epoch_end(epoch as u32, &epoch_means)? {
                break;
            }
        }
        Ok(sums.into_iter().map(|(k, (s, n))| (k, s / f64::from(n))).collect())
    }

    fn minibatch_step(
        &mut self,
        engine: &mut dyn Engine,
        algo: &mut AlgorithmHandle,
        range: std::ops::Range<usize>,
        iteration: u64,
        epoch: usize,
        lr: f32,
    ) -> Result<Vec<Metric>, JobError> {
        let samples = &self.perm[range.clone()];
        let m = samples.len();
        let mb = &mut self.mb;
        // This rank's share of the global minibatch.
        mb.local_samples.clear();
        mb.local_pos.clear();
        for (i, &s) in samples.iter().enumerate() {
            let (t, env) = (s as usize / self.num_envs, s as usize % self.num_envs);
            if (self.env_offset..self.env_offset + self.local_envs).contains(&env) {
                mb.local_samples.push((t * self.local_envs + env - self.env_offset) as u32);
                mb.local_pos.push(i);
            }
        }
        mb.new.clear();
        mb.new.resize(3 * m, 0.0);
        if !mb.local_samples.is_empty() {
            engine.evaluate(&mb.local_samples, &mut self.eval)?;
            for (j, &i) in mb.local_pos.iter().enumerate() {
                mb.new[i] = self.eval.logp[j];
                mb.new[m + i] = self.eval.values[j];
                mb.new[2 * m + i] = self.eval.entropy[j];
            }
        }
        if self.comm.size() > 1 {
            self.comm.all_reduce_sum_f32(&mut mb.new);
        }
        for buf in [
            &mut mb.logp_old,
            &mut mb.advantages,
            &mut mb.returns,
            &mut mb.values_old,
            &mut mb.logp_ref,
            &mut mb.loss,
            &mut mb.d_logp,
            &mut mb.d_value,
            &mut mb.d_entropy,
        ] {
            buf.clear();
            buf.resize(m, 0.0);
        }
        mb.weights.clear();
        mb.weights.resize(m, 1.0);
        if self.group_size.is_some() {
            for (w, &s) in mb.weights.iter_mut().zip(samples) {
                *w = self.seq.sample_weights[s as usize % self.num_envs];
            }
        }
        mb.seq_index.clear();
        mb.seq_envs.clear();
        mb.seq_group_ids.clear();
        for (i, &s) in samples.iter().enumerate() {
            let (t, env) = (s as usize / self.num_envs, s as usize % self.num_envs);
            let q = env * self.num_steps + t;
            mb.logp_old[i] = self.seq.logp[q];
            mb.advantages[i] = self.advantages[q];
            mb.returns[i] = self.returns[q];
            mb.values_old[i] = self.seq.values[q];
            mb.logp_ref[i] = self.seq.logp_ref[q];
            // Sequences are numbered within the minibatch, in order of first appearance.
            if mb.seq_slot[env] == u32::MAX {
                mb.seq_slot[env] = mb.seq_envs.len() as u32;
                mb.seq_envs.push(env as u32);
                mb.seq_group_ids.push(self.seq.group_ids[env]);
            }
            mb.seq_index.push(mb.seq_slot[env]);
        }
        for &env in &mb.seq_envs {
            mb.seq_slot[env as usize] = u32::MAX;
        }
        let seed = u64::from(rng::draw(
            self.key,
            rng::STREAM_PLUGIN,
            2 + epoch as u32,
            (iteration as u32).wrapping_mul(65_536).wrapping_add(range.start as u32),
        ));
        let batch = LossBatch {
            logp_new: &mb.new[..m],
            logp_old: &mb.logp_old,
            logp_ref: if self.reference.is_some() { &mb.logp_ref } else { &[] },
            advantages: &mb.advantages,
            returns: &mb.returns,
            values_new: &mb.new[m..2 * m],
            values_old: &mb.values_old,
            entropy_new: &mb.new[2 * m..],
            token_weights: &mb.weights,
            seq_index: &mb.seq_index,
            num_sequences: mb.seq_envs.len(),
            seq_group_ids: if self.group_size.is_some() { &mb.seq_group_ids } else { &[] },
            seed,
            // Each minibatch sequence is one env's row of the batch `compute_advantages`
            // saw (env = job-wide sequence index, the same on every rank).
            context: Some(MinibatchContext {
                rollout_index: &mb.seq_envs,
                rollout_sequences: self.num_envs,
                iteration,
                epoch: epoch as u32,
                minibatch: (range.start / self.minibatch) as u32,
            }),
        };
        let mut metrics = match self.sequence_loss {
            // The objective has no value or entropy term: those gradients stay zero.
            Some(ext) => {
                mb.seq_loss.clear();
                mb.seq_loss.resize(batch.num_sequences, 0.0);
                algo.sequence_loss(ext, &batch, &mut mb.seq_loss, &mut mb.d_logp)?
            }
            None => algo.loss(&batch, &mut mb.loss, &mut mb.d_logp, &mut mb.d_value, &mut mb.d_entropy)?,
        };
        if !mb.local_samples.is_empty() {
            let own = |all: &[f32], out: &mut Vec<f32>| {
                out.clear();
                out.extend(mb.local_pos.iter().map(|&i| all[i]));
            };
            own(&mb.d_logp, &mut mb.local_d_logp);
            own(&mb.d_value, &mut mb.local_d_value);
            own(&mb.d_entropy, &mut mb.local_d_entropy);
            engine.accumulate_grad(&mb.local_d_logp, &mb.local_d_value, &mb.local_d_entropy)?;
        }
        if self.comm.size() > 1 {
            let comm = self.comm;
            engine.reduce_grads(&mut |grads: &mut [f32]| comm.all_reduce_sum_f32(grads))?;
        }
        let grad_norm = engine.apply_grads(lr, self.max_grad_norm)?;
        metrics.push(Metric::new(host_metrics::GRAD_NORM, f64::from(grad_norm)));
        Ok(metrics)
    }

    /// Fisher-Yates with the counter-based RNG (stream `STREAM_SHUFFLE`), so the minibatch
    /// order is a function of (seed, iteration, epoch): over all samples for CartPole, over
    /// whole sequences (each followed by its tokens) for sequence tasks, whose losses
    /// normalise per sequence and whose minibatches must hold every token of a response.
    fn shuffle(&mut self, iteration: u64, epoch: usize) {
        let stream_env = (iteration as u32).wrapping_mul(64).wrapping_add(epoch as u32);
        let fisher_yates = |perm: &mut [u32]| {
            for i in (1..perm.len()).rev() {
                let r = rng::draw(self.key, rng::STREAM_SHUFFLE, stream_env, i as u32);
                let j = ((u64::from(r) * (i as u64 + 1)) >> 32) as usize;
                perm.swap(i, j);
            }
        };
        if self.group_size.is_none() {
            fisher_yates(&mut self.perm);
            return;
        }
        let mut sequences: Vec<u32> = (0..self.num_envs as u32).collect();
        fisher_yates(&mut sequences);
        let (n, t_len) = (self.num_envs as u32, self.num_steps);
        for (k, &env) in sequences.iter().enumerate() {
            for t in 0..t_len {
                self.perm[k * t_len + t] = t as u32 * n + env;
            }
        }
    }

    /// Writes this rank's rollout scalars into its slots of the job-wide buffer and sums it over
    /// ranks, so every rank holds the whole job's rollout; likewise the episode totals.
    /// Returns the episode totals `[sum, count]` of this rollout over all ranks.
    fn gather_rollout(&mut self) -> [f64; 2] {
        let (n, nl, t_len, off) = (self.num_envs, self.local_envs, self.num_steps, self.env_offset);
        let ro = &self.rollout;
        let plane = n * t_len;
        if self.comm.size() > 1 {
            self.gathered.fill(0.0);
        }
        for t in 0..t_len {
            for e in 0..nl {
                let (src, dst) = (t * nl + e, t * n + off + e);
                let g = &mut self.gathered;
                g[dst] = ro.rewards[src];
                g[plane + dst] = f32::from(ro.terminated[src]);
                g[2 * plane + dst] = f32::from(ro.truncated[src]);
                g[3 * plane + dst] = ro.values[src];
                g[4 * plane + dst] = ro.next_values[src];
                g[5 * plane + dst] = ro.logp[src];
                g[6 * plane + dst] = ro.entropy[src];
                g[7 * plane + dst] = self.local_logp_ref.get(src).copied().unwrap_or(0.0);
                g[8 * plane + dst] = ro.actions[src] as f32;
            }
        }
        let mut episodes = if self.expert_per_group > 0 {
            // Sequence tasks finish every response in env order; expert responses (always
            // right) are not episodes of the policy, so returns and accuracy skip them.
            let sampled = ro.finished_returns.iter().enumerate().filter(|&(i, _)| self.gen.is_expert[off + i] == 0.0);
            let (sum, count) = sampled.fold((0.0, 0.0), |(s, c), (_, &x)| (s + f64::from(x), c + 1.0));
            [sum, count]
        } else {
            [ro.finished_returns.iter().map(|&x| f64::from(x)).sum(), ro.finished_returns.len() as f64]
        };
        if self.comm.size() > 1 {
            self.comm.all_reduce_sum_f32(&mut self.gathered);
            self.comm.all_reduce_sum_f64(&mut episodes);
        }
        episodes
    }

    /// Sum of the returns of the episodes finished this iteration, and their number (all ranks).
    fn episode_totals(&self) -> (f64, usize) {
        (self.episodes[0], self.episodes[1] as usize)
    }
}

/// Moves the gathered, time-major rollout (`ROLLOUT_CHANNELS` planes of `t_len * n`) into the
/// sequence-major buffers `s`.
fn to_sequence_major(gathered: &[f32], n: usize, t_len: usize, s: &mut SeqBuffers) {
    let plane = n * t_len;
    for (c, dst) in s.gathered_channels_mut().into_iter().enumerate() {
        transpose(&gathered[c * plane..(c + 1) * plane], n, t_len, dst, |x| x);
    }
}

/// `src[t * n + env]` → `dst[env * t_len + t]`.
fn transpose<S: Copy>(src: &[S], n: usize, t_len: usize, dst: &mut Vec<f32>, f: impl Fn(S) -> f32) {
    dst.clear();
    dst.resize(n * t_len, 0.0);
    for t in 0..t_len {
        for env in 0..n {
            dst[env * t_len + t] = f(src[t * n + env]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(iteration: i64) -> MetricsRow {
        MetricsRow {
            iteration,
            global_step: iteration * 64,
            episodic_return_mean: Some(iteration as f64),
            episodes: 1,
            policy_loss: None,
            value_loss: None,
            entropy: None,
            approx_kl: None,
            clip_frac: None,
            lr: 2.5e-4,
            steps_per_sec: 1.0,
            wall_time_s: 0.0,
            extra: BTreeMap::new(),
        }
    }

    /// Review (stop cost): every stop (cancel, Slurm requeue, preemption) wrote
    /// `metrics.parquet`, reading all of `metrics.jsonl` back (about 2 s per 100,000 rows), so
    /// a long run's stop overran its grace period and was SIGKILLed mid-write. A stopped run now
    /// reads nothing back and writes no Parquet file; a completed one writes it and gets its
    /// summary's figures from that pass.
    #[test]
    fn only_a_completed_run_writes_metrics_parquet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = MetricsLog::create(dir.path()).expect("log");
        for i in 1..=3 {
            log.push(row(i)).expect("push");
        }
        let parquet = dir.path().join(METRICS_PARQUET);
        // A metrics file changed under the job fails a read-back: a stop must not do one.
        let jsonl = dir.path().join(crate::metrics::METRICS_JSONL);
        let rows = std::fs::read(&jsonl).expect("jsonl");
        std::fs::write(&jsonl, b"not the rows the job wrote\n").expect("edit");
        let stopped = completed_metrics(&mut log, dir.path(), ExitStatus::Cancelled, 2.0);
        assert!(matches!(stopped, Ok(None)), "{stopped:?}");
        assert!(!parquet.exists() && !fsio::tmp_path(&parquet).exists(), "a stop writes no metrics.parquet");

        std::fs::write(&jsonl, rows).expect("restore");
        let totals = completed_metrics(&mut log, dir.path(), ExitStatus::Completed, 2.0).expect("write").expect("completed");
        assert_eq!((totals.iterations, totals.total_steps), (3, 192));
        assert_eq!(totals.return_stats().2, Some(128), "the threshold first reached at iteration 2");
        assert!(parquet.metadata().expect("metrics.parquet").len() > 0);
    }

    /// A new attempt removes the `metrics.parquet` (and temporary file) an earlier attempt left,
    /// which no longer holds the run's rows, so a run stopped again is not left with it.
    #[test]
    fn an_earlier_attempts_metrics_parquet_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parquet = dir.path().join(METRICS_PARQUET);
        std::fs::write(&parquet, b"PAR1 of an earlier attempt PAR1").expect("write");
        std::fs::write(fsio::tmp_path(&parquet), b"PAR1 half").expect("write");
        remove_stale_parquet(dir.path());
        assert!(!parquet.exists() && !fsio::tmp_path(&parquet).exists());
        remove_stale_parquet(dir.path());
    }

    #[test]
    fn transpose_moves_time_major_to_sequence_major() {
        // 2 envs, 3 steps: time-major [t0e0, t0e1, t1e0, t1e1, t2e0, t2e1].
        let src = [0.0f32, 10.0, 1.0, 11.0, 2.0, 12.0];
        let mut dst = Vec::new();
        transpose(&src, 2, 3, &mut dst, |x| x);
        assert_eq!(dst, vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
    }
}
