//! `drover run --backend slurm` (`run_sweep`): prepare the run directories and submit the
//! first round; with `wait`, [`Waiter`] then polls until every run has ended.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::backend::slurm_cmd::Slurm;
use crate::error::RunError;
use crate::layout;
use crate::plan::Plan;
use crate::status::StatusReport;

use super::io_err;
use super::after::changed_after_warning;
use super::ledger::{Ledger, LedgerEvent};
use super::plan::{ArrayPlan, largest_array, plan_arrays, sweep_throttle};
use super::provenance::provenance;
use super::rerun::{PreparedRuns, prepare_runs, submitting_words};
use super::submit::{Submitter, WaitingRoom};
use super::sweep_dir::{SweepDir, job_name};
use super::throttle::{live_per_array, share_free_slots_remembered, sharing_words, throttles_set};
use super::warnings::job_count_warning;
use super::wait::{FirstRound, Waiter};

/// Options of `drover run --backend slurm`.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The `drover-job` binary the batch script runs (absolute).
    pub job_bin: PathBuf,
    /// Wait for the sweep to finish (retrying failed runs), or return once submitted.
    pub wait: bool,
    /// How to reach Slurm.
    pub slurm: Slurm,
    /// Progress lines go here (stderr in the CLI).
    pub quiet: bool,
}

/// What `run_sweep` did.
#[derive(Debug, Clone, Default)]
pub struct SlurmReport {
    /// Runs skipped because they had completed.
    pub skipped: usize,
    /// Runs found queued or running and watched instead of submitted.
    pub attached: usize,
    /// Runs submitted by this call (retries included).
    pub submitted: usize,
    /// Job ids of the arrays submitted by this call.
    pub job_ids: Vec<String>,
    /// The final status (when waiting), or the status right after submission.
    pub status: Option<StatusReport>,
    /// Set when a SIGINT/SIGTERM stopped the waiting (the jobs go on).
    pub interrupted: bool,
    /// Runs not submitted (yet) because Slurm's submit limit refused them: a waiting
    /// `drover run` submits them as jobs end; after `--no-wait` or Ctrl-C, `drover run` again.
    pub deferred: usize,
    /// The limit that held the `deferred` runs back ([`crate::backend::slurm_cmd::submit_limit_reason`]).
    pub limit: Option<String>,
    /// Seconds from the start of `run_sweep` until the last array of the first round was
    /// accepted (run directories, specs, scripts, ledger, Slurm calls): what the submission
    /// benchmark compares.
    pub submit_seconds: f64,
}

/// `drover run --backend slurm`: skip completed runs, re-attach to live ones, submit the rest
/// as job arrays; then (with `wait`) poll until every run has ended, resubmitting within the
/// retry budgets.
pub fn run_sweep(plan: &Plan, opts: &SlurmOptions) -> Result<SlurmReport, RunError> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // SIGHUP too (unless ignored, as under nohup): a closed terminal stops the waiting, and
    // the jobs go on.
    for sig in crate::backend::stop_signals().map_err(RunError::Signals)? {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(RunError::Signals)?;
    }
    let runs_dir = plan.results.runs_dir();
    std::fs::create_dir_all(&runs_dir).map_err(io_err("create directory", &runs_dir))?;
    let root = plan.results.root().canonicalize().map_err(io_err("resolve", plan.results.root()))?;
    let plan = &Plan { results: layout::ResultsDir::new(&root), ..plan.clone() };
    crate::backend::prepare::write_sweep_files(plan, &root)?;
    let settings = &plan.sweep.slurm;
    let mut ledger = Ledger::load(&root)?;
    let (job_name, token) = job_name(&plan.sweep.name, &root, &ledger);
    let dir = SweepDir { root: root.clone(), name: plan.sweep.name.clone(), runs: plan.runs.iter().map(|r| r.run_id.clone()).collect(), job_name: job_name.clone() };
    // Submissions whose sbatch outcome was never recorded: find them in the queue by comment.
    if !ledger.dangling().is_empty() {
        let queue = opts.slurm.queue(&job_name, ledger.submitter())?;
        for n in ledger.find_dangling(&queue, &token, true) {
            ledger.append(LedgerEvent::Refused { submission: n, message: "not found in the queue: never submitted".into() })?;
        }
    }
    // Subprocess waits (git, scontrol, squeue) overlap with each other and with preparing the
    // run directories.
    let (provenance, cluster, prepared) = std::thread::scope(|scope| {
        let provenance = scope.spawn(|| provenance(plan));
        let cluster = scope.spawn(|| opts.slurm.cluster_limits().map_err(RunError::from));
        let prepared = (|| {
            // A sweep with no submission yet has nothing in the queue to ask about.
            let queue = if ledger.submissions.is_empty() { Vec::new() } else { opts.slurm.queue(&job_name, ledger.submitter())? };
            prepare_runs(plan, &dir, &ledger, &queue, settings).map(|prepared| (prepared, queue))
        })();
        let panicked = || RunError::Io { action: "ask Slurm for MaxArraySize", path: root.clone(), source: std::io::Error::other("thread panicked") };
        (provenance.join().unwrap_or_default(), cluster.join().unwrap_or_else(|_| Err(panicked())), prepared)
    });
    let cluster = cluster?;
    let max_array = largest_array(settings, &cluster);
    let (PreparedRuns { to_submit, skipped, attached, resumed, redone }, queue) = prepared?;
    // Runs of earlier `drover run`s still live share the sweep's throttle with the new arrays.
    let mut raised = throttles_set(&root);
    share_free_slots_remembered(&root, &mut ledger, &queue, &opts.slurm, &mut raised);
    let older = live_per_array(&ledger, &queue);
    if let Some(warning) = changed_after_warning(&ledger, &queue, &settings.after).filter(|_| !opts.quiet) {
        crate::say!("drover: warning: {warning}");
    }
    tracing::debug!(elapsed = ?started.elapsed(), "run directories ready");
    let specs = plan.runs.iter().map(|r| (r.run_id.to_string(), plan.job_spec(r))).collect();
    let submitter = Submitter {
        plan,
        root: root.clone(),
        job_name: job_name.clone(),
        token,
        opts,
        provenance,
        max_array,
        specs,
        room: std::cell::Cell::new(None),
    };

    let mut report = SlurmReport { skipped, attached, ..SlurmReport::default() };
    if !opts.quiet {
        // Whether stopped runs start over is the first thing a user rerunning a sweep asks.
        crate::say!(
            "drover: sweep `{}`: {}: {} completed, {} queued or running (re-attached), {} -> {}",
            plan.sweep.name,
            crate::words::count(plan.runs.len(), "run"),
            report.skipped,
            report.attached,
            submitting_words(to_submit.len(), resumed, redone),
            root.display()
        );
    }
    let packed = settings.runs_per_task as usize;
    // Every entry Slurm lists for the sweep, ended ones too, counts against `MaxJobCount`.
    let tasks = plan_arrays(&to_submit, max_array, packed).iter().map(ArrayPlan::tasks).sum();
    if let Some(warning) = job_count_warning(cluster.max_job_count, tasks, queue.len(), opts.wait).filter(|_| !opts.quiet) {
        crate::say!("drover: warning: {warning}");
    }
    let round = submitter.submit(&mut ledger, &to_submit, packed, sweep_throttle(plan), &older)?;
    report.submit_seconds = started.elapsed().as_secs_f64();
    if let (false, Some(n)) = (opts.quiet, sweep_throttle(plan)) {
        for line in sharing_words(n, older.values().sum(), &round.arrays, opts.wait) {
            crate::say!("drover: {line}");
        }
    }
    let live_then = older.values().sum::<usize>();
    let mut waiting_room = WaitingRoom::default();
    waiting_room.took(&mut report, &to_submit, round, live_then, &opts.slurm)?;
    if !opts.quiet {
        if let Some(limit) = &waiting_room.limit {
            let (limit, _) = crate::backend::slurm_cmd::submit_limit_words(limit);
            let rest = if opts.wait {
                "wait for room, and this `drover run` submits them as jobs end"
            } else {
                "are not submitted: `drover run` again (without --no-wait it waits and submits them as jobs end)"
            };
            crate::say!(
                "drover: warning: {limit} took {} of {}; the other {} {rest}",
                report.submitted,
                crate::words::count(to_submit.len(), "run"),
                waiting_room.runs().len()
            );
        }
    }
    if !opts.wait {
        return Ok(report);
    }
    Waiter::new(&submitter, &dir, &stop, FirstRound { ledger, raised, waiting_room, report }).wait()
}
