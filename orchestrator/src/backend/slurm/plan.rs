//! Planning job arrays (runs grouped by resources, split at `MaxArraySize`, packed
//! `runs_per_task` to a task) and rendering their batch scripts, for submission and
//! `--dry-run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::backend::slurm_cmd::{ClusterLimits, Slurm};
use crate::backend::DryRunAction;
use crate::backend::slurm_config::{Resources, SlurmSettings};
use crate::backend::slurm_script::{self, ScriptParams};
use crate::error::RunError;
use crate::plan::Plan;

use super::SLURM_DIR;
use super::ledger::Ledger;
use super::rerun::dry_run_slurm;
use super::run::SlurmOptions;
use super::sweep_dir::job_name;
use super::throttle::{ArrayLimits, round_limits};

/// One array to submit: runs with identical resources, at most `MaxArraySize` tasks of
/// `runs_per_task` runs each.
#[derive(Debug, Clone)]
pub struct ArrayPlan {
    /// Resources of every run in it.
    pub resources: Resources,
    /// Run ids: task `i` trains `runs[i * runs_per_task..]`, up to `runs_per_task` of them.
    pub runs: Vec<String>,
    /// Runs per task (1: one run per array index).
    pub runs_per_task: usize,
}

impl ArrayPlan {
    /// Its array tasks: `runs_per_task` runs each, the last one the rest.
    pub fn tasks(&self) -> usize {
        self.runs.len().div_ceil(self.runs_per_task.max(1))
    }
}

/// A run's Slurm resources: the sweep's `[slurm]` settings with their overrides, plus one task
/// per MPI rank (`run.ranks`), which the batch script launches with one `srun` step of the MPI
/// type `slurm.mpi` names (`--mpi=pmix` unless set; none with `mpi = "default"`). Runs with
/// different rank counts land in different arrays, since arrays are split by resources.
pub(super) fn run_resources(settings: &SlurmSettings, run: &crate::config::RunSpec) -> Resources {
    let mut r = settings.resources_for(&run.axes);
    let ranks = ranks(run);
    if ranks > 1 {
        r.options.retain(|(k, _)| *k != "ntasks");
        r.options.push(("ntasks", ranks.to_string()));
    }
    r
}

/// `run.ranks` of a run (1 when unset).
pub(super) fn ranks(run: &crate::config::RunSpec) -> u64 {
    run.run.get("ranks").and_then(serde_json::Value::as_u64).unwrap_or(1)
}

/// Groups runs by resources (first appearance order) into arrays of at most `max_tasks` tasks
/// of `runs_per_task` runs each.
pub fn plan_arrays(runs: &[(String, Resources)], max_tasks: usize, runs_per_task: usize) -> Vec<ArrayPlan> {
    let mut groups: Vec<(Resources, Vec<String>)> = Vec::new();
    for (id, res) in runs {
        match groups.iter_mut().find(|(r, _)| r == res) {
            Some((_, ids)) => ids.push(id.clone()),
            None => groups.push((res.clone(), vec![id.clone()])),
        }
    }
    let runs_per_task = runs_per_task.max(1);
    let max_runs = max_tasks.max(1).saturating_mul(runs_per_task);
    groups
        .into_iter()
        .flat_map(|(resources, ids)| {
            ids.chunks(max_runs).map(|c| ArrayPlan { resources: resources.clone(), runs: c.to_vec(), runs_per_task }).collect::<Vec<_>>()
        })
        .collect()
}

/// The largest array to submit, asking Slurm for its limits ([`largest_array`]).
pub(super) fn max_array(settings: &SlurmSettings, slurm: &Slurm) -> Result<usize, RunError> {
    Ok(largest_array(settings, &slurm.cluster_limits()?))
}

/// The largest array to submit: the cluster's `MaxArraySize` (indices `0..MaxArraySize-1`), or
/// its lower `SchedulerParameters=max_array_tasks` (a larger array is refused), capped by
/// `slurm.max_array_size`.
pub(super) fn largest_array(settings: &SlurmSettings, cluster: &ClusterLimits) -> usize {
    let cluster = cluster.array_tasks();
    settings.max_array_size.map_or(cluster, |cap| cap.min(cluster)) as usize
}

/// The results directory as `run_sweep` names it once it exists (symlinks resolved: the job
/// name hashes the path), or absolute while it does not: where a dry run looks.
pub(super) fn dry_run_root(plan: &Plan) -> std::io::Result<PathBuf> {
    plan.results.root().canonicalize().or_else(|_| std::path::absolute(plan.results.root()))
}

/// The batch scripts `drover run --dry-run --backend slurm` would submit, as (file name, text).
pub fn dry_run_scripts(plan: &Plan, opts: &SlurmOptions, actions: &[DryRunAction]) -> Result<Vec<(String, String)>, RunError> {
    let root = dry_run_root(plan).map_err(|source| RunError::Io { action: "resolve", path: plan.results.root().to_path_buf(), source })?;
    let ledger = Ledger::load(&root)?;
    let settings = &plan.sweep.slurm;
    let quick = dry_run_slurm(opts);
    let max = match max_array(settings, &quick) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("cannot ask Slurm for MaxArraySize ({e}); assuming 1001");
            settings.max_array_size.map_or(1001, |c| c.min(1001) as usize)
        }
    };
    // What the rerun would submit: neither the completed runs nor the live ones it re-attaches
    // to (`actions`, from [`dry_run_actions`]).
    let runs: Vec<(String, Resources)> = plan
        .runs
        .iter()
        .zip(actions)
        .filter(|(_, action)| action.submits())
        .map(|(r, _)| (r.run_id.to_string(), run_resources(settings, r)))
        .collect();
    let (name, token) = job_name(&plan.sweep.name, &root, &ledger);
    let mut out = Vec::new();
    let arrays = plan_arrays(&runs, max, settings.runs_per_task as usize);
    let sizes: Vec<usize> = arrays.iter().map(ArrayPlan::tasks).collect();
    // As a first submission would share the throttle (a dry run asks Slurm nothing of live runs).
    let limits = round_limits(sweep_throttle(plan), &BTreeMap::new(), &sizes);
    let first = ledger.next_submission();
    for (k, (array, limits)) in arrays.into_iter().zip(limits).enumerate() {
        let n = first + k as u32;
        let script_name = format!("array-{n}.sbatch");
        let mut text = render(plan, &root, &name, &token, n, &script_name, &array, opts, &limits);
        if limits.after_earlier {
            // The job ids it would wait for exist only once the earlier arrays are submitted.
            let earlier: Vec<String> = (first..n).map(|m| format!("array-{m}")).collect();
            let note = format!(
                "# (submitted with --dependency=afterany: on the job ids of {}: the throttle leaves it no slot; drover lifts the dependency once one is free)\n",
                earlier.join(", ")
            );
            if let Some(at) = text.find("#SBATCH --array=").and_then(|i| text[i..].find('\n').map(|j| i + j + 1)) {
                text.insert_str(at, &note);
            }
        }
        out.push((script_name, text));
    }
    Ok(out)
}

#[expect(clippy::too_many_arguments, reason = "the parts of one script, each from a different owner")]
pub(super) fn render(
    plan: &Plan,
    root: &Path,
    job_name: &str,
    token: &str,
    n: u32,
    script_name: &str,
    array: &ArrayPlan,
    opts: &SlurmOptions,
    limits: &ArrayLimits,
) -> String {
    let s = &plan.sweep.slurm;
    let tasks = root.join(SLURM_DIR).join(format!("array-{n}.tasks"));
    let runs = root.join("runs");
    let comment = format!("drover:{token}:{n}");
    slurm_script::render(&ScriptParams {
        sweep: &plan.sweep.name,
        submission: n,
        count: array.runs.len(),
        runs_per_task: array.runs_per_task,
        script_name,
        job_name,
        comment: &comment,
        throttle: limits.throttle,
        signal: &s.signal,
        signal_seconds: s.signal_seconds,
        resources: &array.resources,
        tasks: &tasks,
        runs: &runs,
        job_bin: &opts.job_bin,
        job_bin_machine: crate::backend::arch::built_for(&opts.job_bin).ok().flatten().and_then(|b| b.machine),
        arch: &s.arch,
        max_timeouts: s.max_timeouts,
        max_preemptions: s.max_preemptions,
        checkpoint_every_s: s.checkpoint_minutes.map(|m| m * 60.0),
        mpi: s.mpi.as_deref(),
        // `run_resources` adds `ntasks` for multi-rank runs only.
        ranks: array.resources.number("ntasks").unwrap_or(1),
        after: &limits.after,
        user_after: &s.after,
    })
}

/// The sweep's limit on runs at once: `-j N`, else `slurm.throttle`, else `max_parallel`.
pub(super) fn sweep_throttle(plan: &Plan) -> Option<u32> {
    let jobs = plan.jobs.map(|j| u32::try_from(j.get()).unwrap_or(u32::MAX));
    jobs.or(plan.sweep.slurm.throttle).or(plan.sweep.max_parallel.map(|m| m.get() as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::slurm::test_support::{res, seeds_plan, sweep_plan};

    #[test]
    fn arrays_split_at_the_size_limit_and_by_resources() {
        let runs: Vec<(String, Resources)> =
            (0..12).map(|i| (format!("r{i}"), if i % 4 == 3 { res("big") } else { res("small") })).collect();
        let arrays = plan_arrays(&runs, 5, 1);
        let sizes: Vec<(String, usize)> = arrays.iter().map(|a| (a.resources.options[0].1.clone(), a.runs.len())).collect();
        assert_eq!(sizes, [("small".into(), 5), ("small".into(), 4), ("big".into(), 3)]);
        assert_eq!(arrays[2].runs, ["r3", "r7", "r11"]);
        assert_eq!(plan_arrays(&runs, 1000, 1).len(), 2);
        // Packed: at most 2 tasks of 3 runs per array; the last task of an array takes the rest.
        let packed = plan_arrays(&runs, 2, 3);
        let shape: Vec<(usize, usize)> = packed.iter().map(|a| (a.runs.len(), a.tasks())).collect();
        assert_eq!(shape, [(6, 2), (3, 1), (3, 1)]);
    }

    /// A cluster whose `SchedulerParameters` hold `max_array_tasks=3` refuses an array of more
    /// tasks whatever its `MaxArraySize`: the sweep is split at 3, or at `slurm.max_array_size`
    /// where that is lower.
    #[test]
    fn arrays_split_at_the_schedulers_max_array_tasks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        crate::subprocess::write_stand_in(
            &bin.join("scontrol"),
            "printf 'MaxArraySize            = 1001\\nMaxJobCount             = 10000\\nSchedulerParameters     = bf_interval=2,max_array_tasks=3\\n'",
        );
        let plan = seeds_plan(tmp.path(), 7, 7);
        let opts = SlurmOptions { job_bin: tmp.path().join("drover-job"), wait: false, slurm: Slurm { bin_dir: Some(bin), ..Slurm::default() }, quiet: true };
        let scripts = dry_run_scripts(&plan, &opts, &[DryRunAction::New; 7]).expect("scripts");
        let arrays: Vec<&str> =
            scripts.iter().filter_map(|(_, text)| text.lines().find_map(|l| l.strip_prefix("#SBATCH --array="))).map(|a| a.split('%').next().unwrap_or(a)).collect();
        assert_eq!(arrays, ["0-2", "0-2", "0-0"], "{scripts:?}");
        let limits = ClusterLimits { max_array_size: 1001, max_array_tasks: Some(3), max_job_count: None };
        let lower = SlurmSettings { max_array_size: Some(2), ..SlurmSettings::default() };
        assert_eq!((largest_array(&SlurmSettings::default(), &limits), largest_array(&lower, &limits)), (3, 2));
    }

    /// `-j N` is the sweep's runs-at-once limit on Slurm too, over `slurm.throttle` (review
    /// finding: it was ignored, and a sweep without a throttle ran unthrottled without a word).
    #[test]
    fn dash_j_throttles_a_slurm_sweep() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = seeds_plan(tmp.path(), 6, 4);
        assert_eq!(sweep_throttle(&plan), Some(4));
        let plan = Plan { jobs: std::num::NonZeroUsize::new(2), ..plan };
        assert_eq!(sweep_throttle(&plan), Some(2));
        // No scontrol in the stand-in folder: the dry run assumes MaxArraySize, as off a cluster.
        let slurm = Slurm { bin_dir: Some(tmp.path().join("no-slurm-here")), ..Slurm::default() };
        let opts = SlurmOptions { job_bin: tmp.path().join("drover-job"), wait: false, slurm, quiet: true };
        let scripts = dry_run_scripts(&plan, &opts, &[DryRunAction::New; 6]).expect("scripts");
        assert!(scripts[0].1.contains("#SBATCH --array=0-5%2\n"), "{}", scripts[0].1);
    }

    /// `slurm.mpi` changes no run id (it says how ranks start, not what they compute), reaches
    /// the scripts `--dry-run` prints, and a bad value is refused naming file, key and reason.
    #[test]
    fn the_mpi_setting_keeps_run_ids_reaches_dry_run_scripts_and_refuses_bad_values() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ids = |slurm: &str| sweep_plan(tmp.path(), slurm, "grid").expect("plan").runs.iter().map(|r| r.run_id.to_string()).collect::<Vec<_>>();
        let before = ids("");
        assert_eq!(before.len(), 4);
        assert_eq!(ids("mpi = \"pmi2\""), before);
        assert_eq!(ids("mpi = \"default\""), before);

        // No scontrol in the stand-in folder: the dry run assumes MaxArraySize, as off a cluster.
        let opts = SlurmOptions {
            job_bin: tmp.path().join("drover-job"),
            wait: false,
            slurm: Slurm { bin_dir: Some(tmp.path().join("no-slurm-here")), ..Slurm::default() },
            quiet: true,
        };
        let scripts = |slurm: &str| {
            let plan = sweep_plan(tmp.path(), slurm, "grid").expect("plan");
            let actions = vec![DryRunAction::New; plan.runs.len()];
            dry_run_scripts(&plan, &opts, &actions).expect("scripts").into_iter().map(|(_, text)| text).collect::<Vec<_>>()
        };
        let pmi2 = scripts("mpi = \"pmi2\"");
        assert_eq!(pmi2.len(), 2, "one array per rank count");
        assert!(pmi2.iter().all(|t| t.contains("launcher=(srun --mpi=pmi2 --kill-on-bad-exit=1 ")), "{pmi2:?}");
        assert!(scripts("").iter().all(|t| t.contains("launcher=(srun --mpi=pmix --kill-on-bad-exit=1 ")));
        assert!(scripts("mpi = \"default\"").iter().all(|t| t.contains("launcher=(srun --kill-on-bad-exit=1 ") && !t.contains("--mpi")));

        let err = sweep_plan(tmp.path(), "mpi = \"pmix; reboot\"", "").expect_err("refused").to_string();
        let file = tmp.path().join("s.toml");
        assert!(
            err.starts_with(&format!(
                "failed to load sweep file `{}`: key `slurm.mpi`: invalid value: `pmix; reboot`: expected an MPI plugin type",
                file.display()
            )),
            "{err}"
        );
    }
}
