//! Helpers shared by the Slurm backend's unit tests: ledger records, small plans, fake Slurm
//! commands.

use std::path::Path;

use crate::backend::slurm::ledger::{Ledger, LedgerEvent};
use crate::backend::slurm::provenance::Provenance;
use crate::backend::slurm::sweep_dir::SweepDir;
use crate::backend::slurm_cmd::{QueueEntry, Slurm};
use crate::backend::slurm_config::Resources;
use crate::config::RunId;
use crate::plan::Plan;

pub(super) fn res(p: &str) -> Resources {
    Resources { options: vec![("partition", p.to_string())], extra: Vec::new() }
}

/// The ledger's record of submission `n` (comment `c<n>`, script `array-<n>.sbatch`) of `runs`.
pub(super) fn intent(n: u32, runs: Vec<String>, throttle: Option<u32>, raise_to: Option<u32>) -> LedgerEvent {
    intent_after(n, runs, throttle, raise_to, Vec::new())
}

/// [`intent`] of an array submitted with `slurm.after` = `after`.
pub(super) fn intent_after(n: u32, runs: Vec<String>, throttle: Option<u32>, raise_to: Option<u32>, after: Vec<String>) -> LedgerEvent {
    LedgerEvent::Intent {
        submission: n,
        job_name: "j".into(),
        comment: format!("c{n}"),
        script: format!("array-{n}.sbatch"),
        runs,
        provenance: Box::new(Provenance { after, ..Provenance::default() }),
        throttle,
        raise_to,
    }
}

/// Two runs submitted as array 77 (submission 0) in the results directory `root`: the
/// ledger and the sweep as status sees them.
pub(super) fn two_runs_in_array_77(root: &Path) -> (Ledger, SweepDir, [&'static str; 2]) {
    let ids = ["0123456789abcdef", "fedcba9876543210"];
    let mut ledger = Ledger::load(root).expect("empty ledger");
    ledger.append(intent(0, ids.iter().map(|s| s.to_string()).collect(), None, None)).expect("intent");
    ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "77".into() }).expect("submitted");
    let runs = ids.iter().map(|s| RunId::parse(s).expect("id")).collect();
    (ledger, SweepDir { root: root.to_path_buf(), name: "s".into(), runs, job_name: "j".into() }, ids)
}

/// A stand-in `bin/` whose `sbatch` takes arrays while the tasks accepted so far plus the
/// array's fit in `limit` (a QOS `MaxSubmitJobsPerUser`), refusing with Slurm's words, and
/// whose `squeue` lists `user_jobs` lines; returns the `Slurm` that calls them.
pub(super) fn submit_limited(dir: &Path, limit: usize, user_jobs: usize) -> Slurm {
    limited(dir, &format!("-gt {limit}"), "echo 'sbatch: error: QOSMaxSubmitJobPerUserLimit' >&2; exit 1", user_jobs)
}

/// [`submit_limited`] by a cluster's `MaxJobCount` of `limit`, as Slurm 22.05 enforces it: a
/// job that would take the count to `limit` is refused, and `sbatch` says so, then sleeps to
/// retry (for two minutes, here for a minute); `squeue` lists nothing.
pub(super) fn job_count_limited(dir: &Path, limit: usize) -> Slurm {
    let retrying = "echo 'sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying' >&2; sleep 60; exit 1";
    limited(dir, &format!("-ge {limit}"), retrying, 0)
}

/// The stand-ins of [`submit_limited`]: `sbatch` runs `refuse` when the tasks so far plus the
/// array's are `over` (a `test` comparison).
fn limited(dir: &Path, over: &str, refuse: &str, user_jobs: usize) -> Slurm {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let count = dir.join("accepted-tasks");
    let sbatch = format!(
        "#!/bin/sh\nfor a in \"$@\"; do script=\"$a\"; done\n\
         last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' \"$script\")\n\
         n=$(cat '{count}' 2>/dev/null || echo 0)\n\
         if [ $((n + last + 1)) {over} ]; then {refuse}; fi\n\
         echo $((n + last + 1)) > '{count}'\necho $((100 + n))\n",
        count = count.display()
    );
    let squeue = format!("#!/bin/sh\ni=0\nwhile [ $i -lt {user_jobs} ]; do echo $((500 + i)); i=$((i + 1)); done\n");
    for (name, body) in [("sbatch", sbatch), ("squeue", squeue)] {
        // Through `write_stand_in`, which waits until no other test's fork still holds the file
        // open for writing: a plain write here failed now and then with ETXTBSY under load.
        crate::subprocess::write_stand_in(&bin.join(name), body.strip_prefix("#!/bin/sh\n").unwrap_or(&body));
    }
    Slurm { bin_dir: Some(bin), policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, ..Default::default() } }
}

/// A Slurm sweep of `count` seeds (throttle `throttle`) planned in `dir`.
pub(super) fn seeds_plan(dir: &Path, count: usize, throttle: u32) -> Plan {
    let plugin = dir.join("libdrover_plugin_x.so");
    std::fs::write(&plugin, b"a build").expect("plugin");
    let sweep_file = dir.join("s.toml");
    let text = format!(
        "name = \"limited\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = {:?}\n[sweep]\nseeds = {{ count = {count}, start = 1 }}\n[slurm]\nthrottle = {throttle}\n",
        plugin.display().to_string()
    );
    std::fs::write(&sweep_file, text).expect("sweep");
    let opts = crate::plan::PlanOptions { sweep_file, results: Some(dir.join("r")), ..Default::default() };
    crate::plan::plan(&opts).expect("plan")
}

/// The plan of sweep `s.toml` in `dir` (a stand-in plugin file there): `slurm` is the
/// `[slurm]` table's body, `run_extra` goes into `[run]`, with a grid of two `ranks`
/// values when `run_extra` is `"grid"`.
pub(super) fn sweep_plan(dir: &Path, slurm: &str, run_extra: &str) -> Result<Plan, crate::ConfigError> {
    let plugin = dir.join("libdrover_plugin_x.so");
    std::fs::write(&plugin, b"a build").expect("plugin");
    let sweep_file = dir.join("s.toml");
    let (run_extra, grid) = if run_extra == "grid" { ("", "[sweep.grid]\n\"run.ranks\" = [1, 2]\n") } else { (run_extra, "") };
    let text = format!(
        "name = \"mpi\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = {:?}\n{run_extra}\n[sweep]\nseeds = [1, 2]\n{grid}[slurm]\n{slurm}\n",
        plugin.display().to_string()
    );
    std::fs::write(&sweep_file, text).expect("sweep");
    crate::plan::plan(&crate::plan::PlanOptions { sweep_file, results: Some(dir.join("r")), ..Default::default() })
}

/// `count` tasks of array `job` from index `from`, all in `state` for `reason`.
pub(super) fn tasks(job: &str, from: u32, count: u32, state: &str, reason: &str) -> Vec<QueueEntry> {
    (from..from + count)
        .map(|task| QueueEntry { array_job_id: job.into(), task: Some(task), state: state.into(), reason: reason.into(), comment: String::new(), dependency: None })
        .collect()
}

/// A `Slurm` whose `squeue` is the stand-in shell `body`, written into `bin`, asked once a call.
pub(super) fn with_squeue(bin: &Path, body: &str) -> Slurm {
    crate::subprocess::write_stand_in(&bin.join("squeue"), body);
    Slurm { bin_dir: Some(bin.to_path_buf()), policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, ..Default::default() } }
}
