//! Checks before anything is submitted: filesystems the compute nodes may not see, MPI types
//! `srun` does not offer, resources a run would waste, a missing GPU request, an unthrottled
//! large sweep, and `[[slurm.overrides]]` that match no run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::backend::slurm_cmd::Slurm;
use crate::plan::Plan;

use super::plan::{ranks, run_resources, sweep_throttle};

/// A warning when some run has `run.ranks` > 1 and `srun --mpi=list` on this machine does not
/// list the MPI type `slurm.mpi` names: every such run's `srun` would fail to load the plugin
/// and start no rank, which the user would otherwise learn from each run's log.
/// Nothing is asked of `srun` when no run has several ranks or `mpi = "default"`, and nothing is
/// said when `srun` is absent, fails or prints no list ([`Slurm::mpi_types`]). Only a warning:
/// a login node's `srun` may not see the plugins the compute nodes have.
pub fn mpi_warning(plan: &Plan, slurm: &Slurm) -> Option<String> {
    let chosen = plan.sweep.slurm.mpi.as_deref()?;
    if !plan.runs.iter().any(|r| ranks(r) > 1) {
        return None;
    }
    mpi_missing_warning(plan, chosen, &slurm.mpi_types()?)
}

/// [`mpi_warning`]'s words, given what `srun --mpi=list` offers.
pub(super) fn mpi_missing_warning(plan: &Plan, chosen: &str, offered: &[String]) -> Option<String> {
    let multi = plan.runs.iter().filter(|r| ranks(r) > 1).count();
    (multi > 0 && !offered.iter().any(|t| t == chosen)).then(|| {
        format!(
            "{multi} run(s) have run.ranks > 1 and `slurm.mpi` = \"{chosen}\" in `{}`, but `srun --mpi=list` on this \
             machine offers {}: their `srun` would not start the ranks; set `mpi` in [slurm] to one of those, or to \
             \"{}\" for the cluster's `MpiDefault` (ignore this if the compute nodes have MPI plugins this machine lacks)",
            plan.sweep.source.display(),
            offered.join(", "),
            crate::backend::slurm_config::MPI_CLUSTER_DEFAULT
        )
    })
}

/// A warning when runs with `run.device = "cuda"` would be submitted without asking Slurm for a
/// GPU: on a cluster that confines devices to the allocation such a job sees none and fails,
/// which the user would otherwise learn only from every run's log.
pub fn gpu_request_warning(plan: &Plan) -> Option<String> {
    let cuda = |r: &&crate::config::RunSpec| r.run.get("device").and_then(serde_json::Value::as_str) == Some("cuda");
    let missing = plan.runs.iter().filter(cuda).filter(|r| !run_resources(&plan.sweep.slurm, r).requests_gpus()).count();
    (missing > 0).then(|| {
        format!(
            "{missing} run(s) have run.device = \"cuda\" but their [slurm] resources request no GPU; \
             where Slurm confines devices to the allocation they will see none and fail: add \
             `gpus_per_task = 1` (or a `gres`) to [slurm] in `{}`",
            plan.sweep.source.display()
        )
    })
}

/// Warnings for resources a run would waste or fight over: `run.threads` above the CPUs it
/// gets (`cpus_per_task`, 1 when unset: the threads share them), `gpus_per_task` above 1
/// (each rank of `drover-job` uses one device: the others idle; `run.ranks` uses them), and
/// tasks beyond the first for a one-rank run (`ntasks_per_node`, `nodes`, `--ntasks` in
/// `extra`: the batch script starts one process, the other tasks' CPUs idle).
pub fn resource_warnings(plan: &Plan) -> Vec<String> {
    let (mut crowded, mut idle) = (BTreeMap::<(u64, u64), usize>::new(), BTreeMap::<u64, usize>::new());
    let mut extra_tasks = 0usize;
    for run in &plan.runs {
        let r = run_resources(&plan.sweep.slurm, run);
        let more_tasks = r.number("ntasks-per-node").is_some_and(|n| n > 1)
            || r.number("nodes").is_some_and(|n| n > 1)
            || r.extra.iter().any(|e| e.split(' ').any(|w| w.starts_with("--ntasks=") || w == "--ntasks" || w.starts_with("-n")));
        if ranks(run) == 1 && more_tasks {
            extra_tasks += 1;
        }
        let cpus = r.number("cpus-per-task").unwrap_or(1);
        if let Some(threads) = run.run.get("threads").and_then(serde_json::Value::as_u64).filter(|&t| t > cpus) {
            *crowded.entry((threads, cpus)).or_default() += 1;
        }
        if let Some(gpus) = r.number("gpus-per-task").filter(|&g| g > 1) {
            *idle.entry(gpus).or_default() += 1;
        }
    }
    let file = plan.sweep.source.display();
    let mut out: Vec<String> = crowded
        .into_iter()
        .map(|((threads, cpus), n)| {
            format!(
                "{n} run(s) set run.threads = {threads} but get {cpus} CPU(s) each (`cpus_per_task`): the threads \
                 share them; set `cpus_per_task = {threads}` in [slurm] of `{file}`"
            )
        })
        .collect();
    out.extend(idle.into_iter().map(|(gpus, n)| {
        format!(
            "{n} run(s) ask for {gpus} GPUs per task, but each rank of drover-job uses one: the others \
             idle; ask for 1 and set `run.ranks = {gpus}` to use them all (`{file}`)"
        )
    }));
    if extra_tasks > 0 {
        out.push(format!(
            "{extra_tasks} run(s) have run.ranks = 1 but ask Slurm for several tasks (`ntasks_per_node`, `nodes` or \
             `--ntasks` in [slurm] of `{file}`): each run starts one process and the other tasks idle; set \
             `run.ranks` to the tasks for an MPI run, or `cpus_per_task` for more CPUs in one process"
        ));
    }
    out
}

/// A warning naming the `paths` (what, path) that lie on a filesystem in this machine's memory
/// (tmpfs, ramfs: `/tmp` or `/dev/shm` on many login nodes): compute nodes see their own, so
/// every task would fail to find its tasks file, run directory or program. A path not created
/// yet is judged by the nearest folder above it that exists.
pub fn node_local_warning(paths: &[(&str, &Path)]) -> Option<String> {
    let local: Vec<String> = paths
        .iter()
        .filter(|(_, p)| in_memory_filesystem(p))
        .map(|(what, p)| format!("{what} `{}`", p.display()))
        .collect();
    (!local.is_empty()).then(|| {
        format!(
            "{} on a filesystem in this machine's memory (tmpfs): compute nodes other than this one \
             cannot see it, and their tasks would fail; use a shared filesystem (home, project or \
             scratch) unless this machine is the whole cluster",
            local.join(", ")
        )
    })
}

/// Why Slurm cannot be given the results directory `root`, or `None` when it can. Judged on
/// the path the jobs get (symlinks resolved, as `drover run` resolves them; a part not created
/// yet as written). Slurm expands `%` patterns over the task's output path and a `\\` anywhere
/// in it turns that expansion off and is dropped, with no escape for it, so every task would
/// fail to open its output file before its first line; drover escapes `%` itself
/// (`slurm_cmd::output_option`). The batch script names its paths as text, so they must be UTF-8.
pub fn results_path_problem(root: &Path) -> Option<String> {
    let absolute = std::path::absolute(root).ok()?;
    let existing = absolute.ancestors().find(|p| p.exists())?;
    let resolved = match (existing.canonicalize(), absolute.strip_prefix(existing)) {
        (Ok(canonical), Ok(rest)) => canonical.join(rest),
        _ => absolute.clone(),
    };
    let through = if resolved == absolute { String::new() } else { format!(" (resolved: `{}`)", resolved.display()) };
    let Some(text) = resolved.to_str() else {
        return Some(format!(
            "`{}`{through} is not valid UTF-8: the Slurm batch script names its files as text, so its tasks would not find them; use a path of UTF-8 characters",
            root.display()
        ));
    };
    text.contains('\\').then(|| {
        format!(
            "`{}`{through} holds a `\\`: Slurm drops every `\\` of a task's output path and stops expanding its `%A_%a` there, \
             so every task would fail before it starts, and Slurm has no escape for it; use a path without `\\`",
            root.display()
        )
    })
}

/// Whether `path` (or the nearest existing folder above it) is on tmpfs or ramfs.
pub(super) fn in_memory_filesystem(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    filesystem_magic(path).is_some_and(|m| matches!(m, TMPFS_MAGIC | RAMFS_MAGIC))
}

/// `statfs`'s filesystem type of `path`, or of the nearest existing folder above it.
pub(super) fn filesystem_magic(path: &Path) -> Option<i64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs reads the NUL-terminated path and writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_type as i64)
}

/// The name of a filesystem that lives on one machine's own disk (ext4, XFS, Btrfs, an
/// overlay), where a shared one (NFS, Lustre, GPFS, BeeGFS, CephFS, ...) would be seen by every
/// node; `None` for the others and for the unknown.
pub(super) fn local_disk_filesystem(path: &Path) -> Option<&'static str> {
    match filesystem_magic(path)? {
        0xEF53 => Some("ext4"),
        0x5846_5342 => Some("XFS"),
        0x9123_683E => Some("Btrfs"),
        0x794C_7630 => Some("overlayfs"),
        _ => None,
    }
}

/// A warning naming the `paths` (what, path) on this machine's own disk when the cluster has
/// nodes other than this one (`others`): those nodes see their own disks, so the tasks would
/// fail to open their output file or find their program (Slurm then fails them before the
/// batch script runs). A path under a directory this machine exports (`exports`, the first
/// words of `/etc/exports`) is seen by the nodes through NFS and not named.
pub fn local_disk_warning(paths: &[(&str, &Path, &str)], others: bool, exports: &[PathBuf]) -> Option<String> {
    if !others {
        return None;
    }
    let local: Vec<String> = paths
        .iter()
        .filter(|(_, p, _)| !exports.iter().any(|e| p.starts_with(e)))
        .map(|(what, p, fs)| format!("{what} `{}` ({fs})", p.display()))
        .collect();
    (!local.is_empty()).then(|| {
        format!(
            "{} on this machine's own disk, and the cluster has other nodes: they cannot see it unless \
             it is shared with them (a shared home, project or scratch filesystem), and their tasks \
             would fail before starting",
            local.join(", ")
        )
    })
}

/// Whether a Slurm node (hostname, address) is this machine, named `host`: the same short
/// name, or the loopback (a single-node cluster such as the test one names itself `localhost`).
pub(super) fn is_this_machine(name: &str, addr: &str, host: &str) -> bool {
    let short = |h: &str| h.trim().split('.').next().unwrap_or_default().to_ascii_lowercase();
    short(name) == short(host) || short(addr) == short(host) || name == "localhost" || addr == "localhost" || addr.starts_with("127.") || addr == "::1"
}

/// [`local_disk_warning`] for `paths` as they lie here: asks Slurm for its nodes (`sinfo`) only
/// when some path is on a local disk, and says nothing when it cannot tell.
pub fn local_disk_warning_here(paths: &[(&str, &Path)], slurm: &Slurm) -> Option<String> {
    let on_disk: Vec<(&str, &Path, &str)> =
        paths.iter().filter_map(|&(what, p)| local_disk_filesystem(p).map(|fs| (what, p, fs))).collect();
    if on_disk.is_empty() {
        return None;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let others = slurm.node_hosts()?.iter().any(|(name, addr)| !is_this_machine(name, addr, &host));
    let exports: Vec<PathBuf> = export_paths(&std::fs::read_to_string("/etc/exports").unwrap_or_default())
        .into_iter()
        // `paths` are canonical; an export through a symlink is compared where it leads.
        .map(|e| e.canonicalize().unwrap_or(e))
        .collect();
    local_disk_warning(&on_disk, others, &exports)
}

/// The exported directories of an `/etc/exports` text, as exportfs reads them (exports(5)):
/// the first word of each line, or a double-quoted path (`"/srv/my share"`), with `\NNN` octal
/// escapes (`/srv/my\040share`) decoded; comments and lines of no absolute path are skipped.
/// A space in an export would otherwise end the path early, and the results directory under it
/// got a false "local disk" warning.
pub(super) fn export_paths(text: &str) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let raw = match line.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next()?,
                None => line.split_whitespace().next()?,
            };
            let bytes = raw.as_bytes();
            let mut path = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
                match (bytes[i], octal) {
                    (b'\\', Some(d)) => {
                        path.push(d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')) as u8);
                        i += 4;
                    }
                    (b, _) => {
                        path.push(b);
                        i += 1;
                    }
                }
            }
            let path = PathBuf::from(std::ffi::OsString::from_vec(path));
            path.is_absolute().then_some(path)
        })
        .collect()
}

/// Checks that each `[[slurm.overrides]]` applies to some run of the sweep. One whose `when`
/// matches none (a value that is no grid value, `"0.1"` written for the number `0.1`) would
/// leave every script with the base resources without a word, which the user learns from jobs
/// killed for memory or time. Refused (naming the file, `slurm.overrides[i].when` and the
/// values the runs have), except when `--set` or a `DROVER_SWEEP__*` variable shapes the
/// sweep's axes: narrowing the grid for one rerun (`--set 'sweep.grid.run.num_envs=[8]'`)
/// legitimately leaves an override for the other values with no run, and refusing would force
/// the user to edit the file for a one-off; then it is a warning (the `Ok` values).
pub fn unmatched_override_check(plan: &Plan) -> Result<Vec<String>, crate::ConfigError> {
    let mut warnings = Vec::new();
    for (i, o) in plan.sweep.slurm.overrides.iter().enumerate() {
        if plan.runs.iter().any(|r| o.matches(&r.axes)) {
            continue;
        }
        let key = format!("slurm.overrides[{i}].when");
        let why = unmatched_words(&o.when, &plan.runs);
        match plan.overrides.iter().find(|o| shapes_axes(o)) {
            Some(shaping) => warnings.push(format!(
                "`{key}` in `{}` {why}; its resources apply to no run (`{shaping}` sets the sweep's axes, so this may be meant)",
                plan.sweep.source.display()
            )),
            None => {
                return Err(crate::ConfigError::new(
                    &plan.sweep.source,
                    key,
                    crate::error::ConfigErrorKind::InvalidValue(format!(
                        "{why}: its resources would apply to no run, and every script would keep the base ones; write a value the runs have (a number without quotes for a number axis), or remove the override"
                    )),
                ));
            }
        }
    }
    Ok(warnings)
}

/// Whether an override of the sweep file (as `Plan::overrides` lists it: `--set key=value` or
/// `DROVER_KEY=value`) sets the sweep's grid or cases, which decide the runs' axis values.
pub(super) fn shapes_axes(typed: &str) -> bool {
    let key = match typed.strip_prefix("--set ") {
        Some(set) => set.split('=').next().unwrap_or_default().trim().to_ascii_lowercase(),
        None => typed.split('=').next().unwrap_or_default().trim_start_matches("DROVER_").to_ascii_lowercase().replace("__", "."),
    };
    key == "sweep" || key.starts_with("sweep.grid") || key.starts_with("sweep.cases")
}

/// "matches no run of the sweep: it asks for ..., and the runs have ..." for an override's
/// `when`, naming each key's value and the values the runs have for it (at most ten each).
pub(super) fn unmatched_words(when: &BTreeMap<String, serde_json::Value>, runs: &[crate::config::RunSpec]) -> String {
    const SHOWN: usize = 10;
    // (one value, several values) of its kind.
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::Number(_) => ("a number", "numbers"),
        serde_json::Value::String(_) => ("text", "text"),
        serde_json::Value::Bool(_) => ("true or false", "true or false"),
        serde_json::Value::Array(_) => ("a list", "lists"),
        _ => ("a table", "tables"),
    };
    let asked: Vec<String> = when.iter().map(|(k, v)| format!("`{k}` = {v}")).collect();
    let mut have = Vec::new();
    let mut each_found = true;
    for (k, want) in when {
        let mut values: Vec<&serde_json::Value> = Vec::new();
        for v in runs.iter().filter_map(|r| r.axes.get(k)) {
            if !values.iter().any(|seen| crate::backend::slurm_config::same_axis_value(seen, v)) {
                values.push(v);
            }
        }
        each_found &= values.iter().any(|v| crate::backend::slurm_config::same_axis_value(want, v));
        let mut shown: Vec<String> = values.iter().take(SHOWN).map(|v| v.to_string()).collect();
        if values.len() > SHOWN {
            shown.push(format!("… ({} in all)", values.len()));
        }
        let listed = if shown.is_empty() { "no value (no run sets it)".to_string() } else { shown.join(", ") };
        // The same words written as text for a number (or the reverse) is the likely mistake.
        let types = match values.first() {
            Some(v) if kind(v) != kind(want) && values.iter().all(|o| kind(o) == kind(v)) => format!(" ({} where the runs have {})", kind(want).0, kind(v).1),
            _ => String::new(),
        };
        have.push(format!("`{k}` = {listed}{types}"));
    }
    let together = if each_found && when.len() > 1 { " (each value appears, but in no run together)" } else { "" };
    format!("matches no run of the sweep: it asks for {}, and the runs have {}{together}", asked.join(" and "), have.join("; "))
}

/// Runs a sweep may have without a throttle before [`throttle_warning`] speaks up.
pub const UNTHROTTLED_RUNS_WARNED: usize = 500;

/// A warning for a sweep of more than [`UNTHROTTLED_RUNS_WARNED`] runs with no runs-at-once
/// limit: Slurm starts as many as fit, which on a shared partition crowds out every other user
/// until fair-share catches up (an admin's first complaint about array sweeps).
pub fn throttle_warning(plan: &Plan) -> Option<String> {
    (plan.runs.len() > UNTHROTTLED_RUNS_WARNED && sweep_throttle(plan).is_none()).then(|| {
        format!(
            "{} runs and no runs-at-once limit: Slurm starts as many as the partition fits; on a \
             shared cluster set `throttle` in [slurm] (or `max_parallel`) in `{}`",
            plan.runs.len(),
            plan.sweep.source.display()
        )
    })
}

/// A warning for a round whose `tasks` array tasks, with the `held` entries Slurm still lists
/// for the sweep (ended ones too), reach the cluster's `MaxJobCount`: the controller refuses a
/// job that would take it to that many, every user's jobs together, so the arrays past it wait
/// for room (`submit_limit_reason`); said before submitting, since the wait may be long.
/// `wait`: whether this `drover run` goes on to submit them.
pub(super) fn job_count_warning(max_job_count: Option<u32>, tasks: usize, held: usize, wait: bool) -> Option<String> {
    let max = max_job_count? as usize;
    if tasks == 0 || held.saturating_add(tasks) < max {
        return None;
    }
    let beside = if held == 0 { String::new() } else { format!(", beside the {held} of the sweep's Slurm still holds,") };
    let then = if wait { "this `drover run` submits the rest as room frees" } else { "the rest are not submitted: `drover run` again once jobs have ended" };
    Some(format!(
        "{}{beside} reach the cluster's MaxJobCount ({max}): Slurm holds fewer jobs than that at once, every user's together \
         (each array task counts one, an ended job until Slurm forgets it), and refuses arrays past it; {then}. \
         Fewer runs, or several runs per task (`slurm.runs_per_task`), fit; a throttle does not (queued tasks count too)",
        crate::words::count(tasks, "array task")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::slurm::test_support::sweep_plan;

    /// Review: a 10,000-run sweep on a cluster of `MaxJobCount = 10000` ended with an sbatch
    /// timeout and no word of the limit. Warned before submitting when the round, with what
    /// the sweep still has in Slurm, reaches it (Slurm refuses a job that would make the
    /// count equal to it).
    #[test]
    fn a_round_that_reaches_max_job_count_is_warned_about() {
        let warning = job_count_warning(Some(10_000), 10_000, 0, true).expect("warned");
        assert!(
            warning.starts_with("10000 array tasks reach the cluster's MaxJobCount (10000): ") && warning.contains("this `drover run` submits the rest as room frees"),
            "{warning}"
        );
        assert!(warning.contains("`slurm.runs_per_task`"), "{warning}");
        let rerun = job_count_warning(Some(10_000), 1_000, 9_000, false).expect("warned");
        assert!(rerun.starts_with("1000 array tasks, beside the 9000 of the sweep's Slurm still holds, reach") && rerun.contains("`drover run` again"), "{rerun}");
        assert_eq!(job_count_warning(Some(10_000), 999, 9_000, true), None, "9,999 fit");
        assert_eq!(job_count_warning(None, 1_000_000, 0, true), None, "no MaxJobCount line: nothing to say");
        assert_eq!(job_count_warning(Some(10), 0, 50, true), None, "nothing to submit");
    }

    /// Review finding 11: exports(5) quotes a path with spaces or escapes them in octal; both
    /// are exports, as are plain ones, and comments are not.
    #[test]
    fn exports_are_read_quoted_or_escaped_as_exportfs_reads_them() {
        let text = "# /not/this *(rw)\n/srv/plain *(rw)\n\"/srv/my share\" host(rw,sync)\n  /srv/my\\040other\\134x 10.0.0.0/8(ro)\n\nrelative *(rw)\n/srv/tab\\011\n";
        let paths: Vec<PathBuf> = export_paths(text);
        assert_eq!(paths, ["/srv/plain", "/srv/my share", "/srv/my other\\x", "/srv/tab\t"].map(PathBuf::from));
        let under = |p: &str| !paths.iter().any(|e| Path::new(p).starts_with(e));
        let warned = local_disk_warning(&[("the results directory", Path::new("/srv/my share/r"), "ext4")], true, &paths);
        assert_eq!(warned, None, "under a quoted export: no warning");
        assert!(under("/srv/my"), "a prefix of a quoted path is no export");
    }

    /// A `\\` in the results path (or in the folder a symlink leads to) cannot be given to
    /// Slurm; `%`, spaces and quotes can.
    #[test]
    fn a_results_path_slurm_cannot_be_given_is_named_with_the_reason() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for fine in ["exp_%j", "lr 100%", "q'x\"y $HOME", "new/not yet"] {
            assert_eq!(results_path_problem(&tmp.path().join(fine)), None, "{fine}");
        }
        let why = results_path_problem(&tmp.path().join("back\\slash res")).expect("refused");
        assert!(why.contains("back\\slash res") && why.contains("holds a `\\`"), "{why}");
        let target = tmp.path().join("a\\b");
        std::fs::create_dir_all(&target).expect("mkdir");
        std::os::unix::fs::symlink(&target, tmp.path().join("link")).expect("symlink");
        let why = results_path_problem(&tmp.path().join("link").join("r")).expect("refused through the link");
        assert!(why.contains("resolved: ") && why.contains("a\\b"), "{why}");
        use std::os::unix::ffi::OsStrExt;
        let odd = tmp.path().join(std::ffi::OsStr::from_bytes(b"np\xff"));
        assert!(results_path_problem(&odd).expect("refused").contains("not valid UTF-8"));
    }

    /// A sweep of more than 500 runs without a throttle is warned about, naming the file; a
    /// throttle, `max_parallel` or a smaller sweep is not. So are threads beyond a task's CPUs
    /// and GPUs beyond the one each rank uses.
    #[test]
    fn large_sweeps_without_a_throttle_and_wasted_resources_are_warned_about() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plugin = tmp.path().join("libdrover_plugin_x.so");
        std::fs::write(&plugin, b"a build").expect("plugin");
        // `extra` goes before `[run]`, `run_extra` into it.
        let plan_with = |extra: &str, run_extra: &str, count: usize| {
            let sweep_file = tmp.path().join("s.toml");
            let text = format!(
                "name = \"big\"\nbackend = \"slurm\"\n{extra}\n[run]\nenv = \"CartPole-v1\"\nplugin = {:?}\n{run_extra}\n[sweep]\nseeds = {{ count = {count}, start = 1 }}\n",
                plugin.display().to_string()
            );
            std::fs::write(&sweep_file, text).expect("sweep");
            let opts = crate::plan::PlanOptions { sweep_file, results: Some(tmp.path().join("r")), ..Default::default() };
            crate::plan::plan(&opts).expect("plan")
        };
        let plan_of = |extra: &str, count: usize| plan_with(extra, "", count);
        let warning = throttle_warning(&plan_of("", 501)).expect("warned");
        assert!(warning.starts_with("501 runs and no runs-at-once limit") && warning.contains("s.toml"), "{warning}");
        assert_eq!(throttle_warning(&plan_of("", 500)), None);
        assert_eq!(throttle_warning(&plan_of("max_parallel = 50", 501)), None);
        assert_eq!(throttle_warning(&plan_of("[slurm]\nthrottle = 50", 501)), None);

        // Threads beyond the CPUs a task gets, GPUs beyond the one a rank uses.
        let runs = |extra: &str| resource_warnings(&plan_with(extra, "threads = 4", 2));
        assert_eq!(resource_warnings(&plan_of("", 2)), Vec::<String>::new());
        let w = runs("");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("2 run(s) set run.threads = 4 but get 1 CPU(s) each") && w[0].contains("cpus_per_task = 4"), "{w:?}");
        let w = runs("[slurm]\ncpus_per_task = 4\ngpus_per_task = 4");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("2 run(s) ask for 4 GPUs per task") && w[0].contains("run.ranks = 4"), "{w:?}");
        assert_eq!(runs("[slurm]\ncpus_per_task = 4\ngpus_per_task = 1"), Vec::<String>::new());
        // Tasks a one-rank run does not use (review finding: they once started a second copy).
        for tasks in ["[slurm]\nntasks_per_node = 2", "[slurm]\nextra = [\"--ntasks=2\"]", "[slurm]\nnodes = 2"] {
            let w = resource_warnings(&plan_of(tasks, 2));
            assert!(w.len() == 1 && w[0].starts_with("2 run(s) have run.ranks = 1 but ask Slurm for several tasks"), "{tasks}: {w:?}");
        }
        assert_eq!(resource_warnings(&plan_with("[slurm]\nntasks_per_node = 2", "ranks = 2", 2)), Vec::<String>::new(), "an MPI run uses them");
    }

    /// `slurm.mpi` against `srun --mpi=list`: runs with several ranks and a type this
    /// machine's srun does not list are warned about, naming the file, the key, the value and
    /// what srun offers; a listed type, one-rank runs and `"default"` are not. srun is not asked
    /// when no run has several ranks or the type is the cluster's; absent or failing, it says
    /// nothing.
    #[test]
    fn an_mpi_type_that_srun_does_not_list_is_warned_about() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let offered = |types: &[&str]| types.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let plan = sweep_plan(tmp.path(), "", "grid").expect("plan");
        let w = mpi_missing_warning(&plan, "pmix", &offered(&["none", "cray_shasta", "pmi2"])).expect("warned");
        let file = tmp.path().join("s.toml");
        assert!(w.starts_with(&format!("2 run(s) have run.ranks > 1 and `slurm.mpi` = \"pmix\" in `{}`", file.display())), "{w}");
        assert!(
            w.contains("`srun --mpi=list` on this machine offers none, cray_shasta, pmi2:") && w.contains("\"default\" for the cluster's `MpiDefault`"),
            "{w}"
        );
        assert_eq!(mpi_missing_warning(&plan, "pmix_v4", &offered(&["none", "pmix", "pmix_v4"])), None);
        let one_rank = sweep_plan(tmp.path(), "", "").expect("plan");
        assert_eq!(mpi_missing_warning(&one_rank, "pmix", &offered(&["none"])), None);

        // Through a stand-in srun that logs each call.
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let slurm = Slurm { bin_dir: Some(bin.clone()), ..Slurm::default() };
        assert_eq!(mpi_warning(&plan, &slurm), None, "no srun: nothing said");
        let calls = tmp.path().join("calls");
        let srun = |body: &str| crate::subprocess::write_stand_in(&bin.join("srun"), &format!("echo \"$*\" >> '{}'\n{body}", calls.display()));
        srun(r"printf 'srun: MPI types are...\nsrun: none\nsrun: pmi2\n' >&2");
        let w = mpi_warning(&plan, &slurm).expect("warned");
        assert!(w.contains("`slurm.mpi` = \"pmix\"") && w.contains("offers none, pmi2:"), "{w}");
        assert_eq!(std::fs::read_to_string(&calls).expect("calls"), "--mpi=list\n");
        let pmi2 = sweep_plan(tmp.path(), "mpi = \"pmi2\"", "grid").expect("plan");
        assert_eq!(mpi_warning(&pmi2, &slurm), None);
        srun("echo 'srun: error: cannot load plugins' >&2; exit 1");
        assert_eq!(mpi_warning(&plan, &slurm), None, "a failing srun: nothing said");
        std::fs::remove_file(&calls).expect("rm");
        let cluster = sweep_plan(tmp.path(), "mpi = \"default\"", "grid").expect("plan");
        assert_eq!((mpi_warning(&cluster, &slurm), mpi_warning(&one_rank, &slurm)), (None, None));
        assert!(!calls.exists(), "srun is not asked when no run needs it");
    }

    /// Paths in this machine's memory are named (here `/dev/shm`, tmpfs on Linux), paths on a
    /// disk are not; a path not created yet is judged by the folder above it.
    #[test]
    fn paths_on_tmpfs_are_warned_about() {
        let shm = Path::new("/dev/shm");
        if !in_memory_filesystem(shm) {
            eprintln!("no tmpfs at /dev/shm here: only the negative case is checked");
        } else {
            let results = shm.join("drover-not-created-yet/results");
            let w = node_local_warning(&[("the results directory", &results), ("drover-job", Path::new("/"))]).expect("warned");
            assert!(w.starts_with("the results directory `/dev/shm/drover-not-created-yet/results` on a filesystem in this machine's memory"), "{w}");
            assert!(!w.contains("drover-job"), "{w}");
        }
        // The source tree is on a disk wherever the tests run from a checkout.
        let tree = Path::new(env!("CARGO_MANIFEST_DIR"));
        if !in_memory_filesystem(tree) {
            assert_eq!(node_local_warning(&[("the results directory", tree)]), None);
        }
    }

    /// Paths on this machine's own disk are warned about when the cluster has other nodes,
    /// naming each path and its filesystem, except under a directory this machine exports;
    /// a single-node cluster (its node this host, or the loopback) hears nothing.
    #[test]
    fn paths_on_a_local_disk_of_a_multi_node_cluster_are_warned_about() {
        let paths = [("the results directory", Path::new("/scratch/local/r"), "ext4"), ("drover-job", Path::new("/home/u/bin/drover-job"), "XFS")];
        let w = local_disk_warning(&paths, true, &[]).expect("warned");
        assert!(w.starts_with("the results directory `/scratch/local/r` (ext4), drover-job `/home/u/bin/drover-job` (XFS) on this machine's own disk"), "{w}");
        assert_eq!(local_disk_warning(&paths, false, &[]), None, "a single-node cluster");
        let w = local_disk_warning(&paths, true, &[PathBuf::from("/home")]).expect("warned");
        assert!(!w.contains("drover-job"), "exported to the nodes: {w}");
        assert_eq!(local_disk_warning(&paths[1..], true, &[PathBuf::from("/home")]), None);
        assert!(is_this_machine("localhost", "127.0.0.1", "vm") && is_this_machine("node01", "10.0.0.5", "node01.cluster"));
        assert!(!is_this_machine("node02", "10.0.0.6", "login1"));
    }

    /// Review finding (Slurm user): an override whose `when` matched no run (`0.15`, not a
    /// grid value; `"0.1"`, text for a number axis) was ignored without a word, every script
    /// keeping the base resources. Refused naming the file, the key and the runs' values; a
    /// `--set` that narrows the grid makes it a warning; `16.0` matches the grid's `16`.
    #[test]
    fn an_override_that_matches_no_run_is_refused_unless_a_set_shapes_the_grid() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plugin = tmp.path().join("libdrover_plugin_x.so");
        std::fs::write(&plugin, b"a build").expect("plugin");
        let plan = |when: &str, sets: &[&str]| {
            let sweep_file = tmp.path().join("s.toml");
            let text = format!(
                "name = \"o\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = {:?}\n[sweep.grid]\n\"run.num_envs\" = [8, 16]\n\"params.clip_coef\" = [0.1, 0.2]\n[slurm]\nmem = \"1G\"\n[[slurm.overrides]]\nwhen = {when}\nmem = \"8G\"\n",
                plugin.display().to_string()
            );
            std::fs::write(&sweep_file, text).expect("sweep");
            let sets = sets.iter().map(|s| s.to_string()).collect();
            crate::plan::plan(&crate::plan::PlanOptions { sweep_file, sets, results: Some(tmp.path().join("r")), ..Default::default() }).expect("plan")
        };
        let p = plan("{ \"run.num_envs\" = 16.0 }", &[]);
        assert!(unmatched_override_check(&p).expect("it matches").is_empty());
        let big = p.runs.iter().filter(|r| run_resources(&p.sweep.slurm, r).sbatch_lines().contains(&"#SBATCH --mem=8G".to_string())).count();
        assert_eq!(big, 2, "the two runs with 16 envs");
        for (when, words) in [
            ("{ \"params.clip_coef\" = 0.15 }", "matches no run of the sweep: it asks for `params.clip_coef` = 0.15, and the runs have `params.clip_coef` = 0.1, 0.2:"),
            ("{ \"params.clip_coef\" = \"0.1\" }", "and the runs have `params.clip_coef` = 0.1, 0.2 (text where the runs have numbers)"),
            ("{ \"params.clip_coef\" = 0.1, \"run.num_envs\" = 12 }", "`params.clip_coef` = 0.1, 0.2; `run.num_envs` = 8, 16:"),
        ] {
            let err = unmatched_override_check(&plan(when, &[])).expect_err(when);
            assert_eq!(err.key.as_deref(), Some("slurm.overrides[0].when"), "{when}");
            let text = err.to_string();
            assert!(text.contains("s.toml") && text.contains(words), "{text}");
        }
        let narrowed = plan("{ \"run.num_envs\" = 16 }", &["sweep.grid.run.num_envs=[8]"]);
        let warnings = unmatched_override_check(&narrowed).expect("a warning, not a refusal");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("`slurm.overrides[0].when` in `") && warnings[0].contains("`--set sweep.grid.run.num_envs=[8]` sets the sweep's axes"), "{warnings:?}");
    }
}
