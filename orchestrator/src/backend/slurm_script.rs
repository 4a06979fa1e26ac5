//! The batch script of one job array, rendered from `slurm_template.sbatch`.
//!
//! Values reach the script in two ways only: `#SBATCH` lines (validated in `slurm_config`, never
//! seen by a shell) and shell variables, which are always single-quoted by `shell_quote`. Run
//! configurations (axis values, labels) never appear in the script at all: a task finds its run
//! id (16 hex digits) in the tasks file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::backend::arch::{case_pattern, covers, JOB_BIN_NAME};
use crate::backend::slurm_config::Resources;
use crate::words::shell_quote;

/// The template, compiled in so the binary needs no data files.
pub const TEMPLATE: &str = include_str!("slurm_template.sbatch");

/// `s` as it may appear on a comment or `#SBATCH` line: one line, control characters escaped.
///
/// The values written there (sweep name, job name, comment) are validated upstream to plain
/// characters; this keeps a future caller that forgets from turning a newline into a script line.
fn one_line(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_debug().to_string()
    } else {
        s.to_string()
    }
}

/// Everything one batch script says.
#[derive(Debug, Clone)]
pub struct ScriptParams<'a> {
    /// The sweep name.
    pub sweep: &'a str,
    /// Submission number within the sweep.
    pub submission: u32,
    /// Number of runs.
    pub count: usize,
    /// Runs each array task trains, one after another (the last task the rest).
    pub runs_per_task: usize,
    /// The script's file name (for the header).
    pub script_name: &'a str,
    /// `--job-name`.
    pub job_name: &'a str,
    /// `--comment`.
    pub comment: &'a str,
    /// Runs at once (`%N`).
    pub throttle: Option<u32>,
    /// Checkpoint signal name (validated).
    pub signal: &'a str,
    /// Seconds before the time limit.
    pub signal_seconds: u32,
    /// Resources of the array.
    pub resources: &'a Resources,
    /// The tasks file (absolute).
    pub tasks: &'a Path,
    /// `runs/` (absolute).
    pub runs: &'a Path,
    /// The `drover-job` binary (absolute).
    pub job_bin: &'a Path,
    /// The `uname -m` name of the machine `job_bin` is built for, when it is an ELF file of a
    /// machine drover knows; nodes of other machines then need a `[slurm.arch]` folder.
    pub job_bin_machine: Option<&'a str>,
    /// `[slurm.arch]`: a node's `uname -m` → the folder of its builds (validated names).
    pub arch: &'a BTreeMap<String, PathBuf>,
    /// Time-limit requeues allowed.
    pub max_timeouts: u32,
    /// Preemptions allowed.
    pub max_preemptions: u32,
    /// Seconds between the job's own checkpoints (`--checkpoint-every`), if any.
    pub checkpoint_every_s: Option<f64>,
    /// `slurm.mpi`: the `--mpi=<type>` of a multi-rank run's `srun` (validated); `None`: no
    /// `--mpi`, so `srun` takes the cluster's `MpiDefault`.
    pub mpi: Option<&'a str>,
    /// `run.ranks` of the array's runs (the same for all: ranks are part of an array's
    /// resources): above 1, each run is one `srun` step of that many tasks.
    pub ranks: u64,
    /// Arrays this one waits for (`--dependency=afterany:...`): earlier submissions of the
    /// sweep whose live runs already fill its throttle.
    pub after: &'a [String],
    /// `slurm.after`: the user's own dependency terms (validated), which hold as well.
    pub user_after: &'a [String],
}

/// Renders the template.
pub fn render(p: &ScriptParams<'_>) -> String {
    let last = p.count.div_ceil(p.runs_per_task.max(1)).saturating_sub(1);
    let array = match p.throttle {
        Some(t) => format!("0-{last}%{t}"),
        None => format!("0-{last}"),
    };
    let mut resources = p.resources.sbatch_lines().join("\n");
    if resources.is_empty() {
        resources = "# (no resources set: the cluster's defaults apply)".into();
    }
    let checkpoint_every = p.checkpoint_every_s.map_or(String::new(), |s| format!(" --checkpoint-every {s}"));
    // Validated to plain characters; quoted all the same, so a caller that skipped validation
    // still gives srun one word.
    let srun_mpi = p.mpi.map_or(String::new(), |t| format!(" {}", shell_quote(&format!("--mpi={t}"))));
    let vars: [(&str, String); 21] = [
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("sweep", one_line(p.sweep)),
        ("submission", p.submission.to_string()),
        ("count", p.count.to_string()),
        ("runs_per_task", p.runs_per_task.max(1).to_string()),
        ("script_name", one_line(p.script_name)),
        ("job_name", one_line(p.job_name)),
        ("comment", one_line(p.comment)),
        ("array", array),
        ("signal", one_line(p.signal)),
        ("signal_seconds", p.signal_seconds.to_string()),
        ("resources", resources),
        ("tasks", shell_quote(&p.tasks.display().to_string())),
        ("runs", shell_quote(&p.runs.display().to_string())),
        ("job_bin", shell_quote(&p.job_bin.display().to_string())),
        ("arch_cases", arch_cases(p.arch, p.job_bin_machine)),
        ("max_timeouts", p.max_timeouts.to_string()),
        ("max_preemptions", p.max_preemptions.to_string()),
        ("checkpoint_every", checkpoint_every),
        ("srun_mpi", srun_mpi),
        ("ranks", p.ranks.max(1).to_string()),
    ];
    // Job ids are digits (`sbatch --parsable`, checked), so they cannot add a line or option.
    let after: Vec<&str> = p.after.iter().map(String::as_str).filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).collect();
    // `,`: every term must hold, the user's and the throttle's.
    let mut terms: Vec<String> = p.user_after.iter().map(|t| one_line(t)).collect();
    if !after.is_empty() {
        terms.push(format!("afterany:{}", after.join(":")));
    }
    let dependency = if terms.is_empty() { String::new() } else { format!("#SBATCH --dependency={}\n", terms.join(",")) };
    let mut out = TEMPLATE.replace("{{dependency}}\n", &dependency);
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), &v);
    }
    out
}

/// The arms of the batch script's `case "$machine"`: each `[slurm.arch]` folder, then the
/// machine `job_bin` is built for, then a refusal for any other node (which would otherwise fail
/// with "Exec format error" and no word on why). A `job_bin` of unknown machine (a wrapper
/// script) runs on every node that no folder is named for.
fn arch_cases(arch: &BTreeMap<String, PathBuf>, job_bin_machine: Option<&str>) -> String {
    let mut lines = Vec::new();
    // Names are written inside single quotes: only the plain ones `slurm_config` lets through,
    // so none can close the quote.
    let plain = |name: &&String| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    for (name, dir) in arch.iter().filter(|(name, _)| plain(name)) {
        let bin = shell_quote(&dir.join(JOB_BIN_NAME).display().to_string());
        let dir = shell_quote(&dir.display().to_string());
        // Quoted, so that a name such as `esac` stays a pattern.
        lines.push(format!("    '{name}') job_bin={bin}; plugin_dir=(--plugin-dir {dir}) ;;"));
    }
    let Some(built) = job_bin_machine else {
        lines.push("    *) ;; # job_bin is no ELF file of a known machine (a wrapper?): every other node runs it".into());
        return lines.join("\n");
    };
    if !arch.keys().any(|name| covers(built, name)) {
        lines.push(format!("    {}) ;; # job_bin is built for {built}", case_pattern(built)));
    }
    lines.push(format!(
        r#"    *)
        reason="this node is ${{machine:-unknown}} (uname -m), but drover-job is built for {built} and [slurm.arch] names no build for ${{machine:-unknown}}: add a folder with drover-job and the plugins built for it as [slurm.arch] ${{machine:-unknown}} in the sweep file"
        : >>"$run/attempt-$n.stdout.log"
        echo "drover: run $run_id: $reason" | tee -a "$run/attempt-$n.stderr.log" >&2
        printf '{{"format_version":1,"run_id":"%s","status":"failed","reason":"%s","finished_at":"%s"}}\n' "$run_id" "$reason" "$(date +%s)" >"$run/exit.json.tmp"
        mv -f "$run/exit.json.tmp" "$run/exit.json"
        printf '1\n' >"$run/attempt-$n.rc"
        return 1 ;;"#
    ));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_ARCH: BTreeMap<String, PathBuf> = BTreeMap::new();

    #[test]
    fn quoting_keeps_every_value_one_inert_word() {
        assert_eq!(shell_quote("/abs/path-1.2"), "/abs/path-1.2");
        assert_eq!(shell_quote("a; rm -rf ~"), "'a; rm -rf ~'");
        assert_eq!(shell_quote("it's $(id) `x`"), r"'it'\''s $(id) `x`'");
        assert_eq!(shell_quote(""), "''");
        // The shell itself agrees: each quoted value comes back as exactly one argument.
        for value in ["a; rm -rf ~", "it's", "$(touch /nonexistent/x)", "new\nline", "*", "~"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", shell_quote(value)))
                .output()
                .expect("sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), value);
        }
    }

    /// Any string at all comes back from the shell as exactly itself, as one word.
    #[test]
    fn quoting_survives_arbitrary_strings() {
        use proptest::prelude::*;
        let config = proptest::test_runner::Config { cases: 48, failure_persistence: None, ..Default::default() };
        proptest::proptest!(config, |(value in "[^\\x00]{0,24}")| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("set -- {}; printf '%s|%s' \"$#\" \"$1\"", shell_quote(&value)))
                .output()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout), format!("1|{value}"));
        });
    }

    /// Hostile strings in the one-line fields (sweep name, job name, comment) cannot add lines.
    #[test]
    fn header_values_cannot_add_script_lines() {
        let resources = Resources { options: vec![], extra: vec![] };
        let render_with = |hostile: &str| {
            render(&ScriptParams {
                sweep: hostile,
                submission: 0,
                count: 1,
                runs_per_task: 1,
                script_name: hostile,
                job_name: hostile,
                comment: hostile,
                throttle: None,
                signal: "USR1",
                signal_seconds: 90,
                resources: &resources,
                tasks: Path::new("/r/t"),
                runs: Path::new("/r/runs"),
                job_bin: Path::new("/bin/drover-job"),
                job_bin_machine: None,
                arch: &NO_ARCH,
                max_timeouts: 3,
                max_preemptions: 10,
                checkpoint_every_s: None,
                mpi: Some("pmix"),
                ranks: 1,
                after: &[],
                // Validated, but kept to one line all the same.
                user_after: &[hostile.to_string()],
            })
        };
        let benign = render_with("s");
        let hostile = render_with("s\ntouch /tmp/pwned\r\n#SBATCH --uid=0");
        assert_eq!(benign.lines().count(), hostile.lines().count(), "{hostile}");
        assert!(!hostile.lines().any(|l| l.starts_with("touch") || l.starts_with("#SBATCH --uid")), "{hostile}");
    }

    /// The rendered script, run by bash as Slurm would (job binary `/bin/true`), refuses a
    /// tasks-file line whose run id is not one, before making any directory from it.
    #[test]
    fn the_script_refuses_a_bad_run_id_in_the_tasks_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (tasks, runs) = (tmp.path().join("slurm").join("array-0.tasks"), tmp.path().join("a").join("b").join("runs"));
        std::fs::create_dir_all(tasks.parent().expect("parent")).expect("mkdir");
        std::fs::create_dir_all(&runs).expect("mkdir");
        let resources = Resources { options: vec![], extra: vec![] };
        let script = render(&ScriptParams { count: 1, runs_per_task: 1, throttle: None, tasks: &tasks, runs: &runs, job_bin: Path::new("/bin/true"), ..params(&resources) });
        let run_task = |id: &str| {
            std::fs::write(&tasks, format!("{id}\t{{}}\n")).expect("tasks file");
            run_script(tmp.path(), None, &script, &[("SLURM_ARRAY_TASK_ID", "0")])
        };
        for bad in ["../../x", "a b", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "$(touch pwned)abcdef"] {
            let out = run_task(bad);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{bad:?}: {stderr}");
            assert!(stderr.contains(&format!("run id '{bad}' is not 16 lowercase hex digits")), "{bad:?}: {stderr}");
            assert!(stderr.contains(&tasks.display().to_string()), "{stderr}");
            let mut made: Vec<_> = walk(tmp.path());
            made.sort();
            assert_eq!(made, [tmp.path().join("a"), tmp.path().join("a/b"), runs.clone(), tmp.path().join("slurm"), tasks.clone()], "{bad:?}");
        }
        // A real id goes through: its directory, spec and attempt record are made under `runs/`.
        let out = run_task("0123456789abcdef");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(runs.join("0123456789abcdef").join("attempts.jsonl").is_file());
    }

    /// The batch script of a one-task array holding the run `0123456789abcdef` under `tmp`,
    /// started as `job_bin`, and that run's folder.
    fn one_run_task(tmp: &Path, job_bin: &Path) -> (String, PathBuf) {
        let (tasks, runs) = (tmp.join("array-0.tasks"), tmp.join("runs"));
        let id = ONE_RUN_TASK_ID;
        let run = runs.join(id);
        std::fs::create_dir_all(&run).expect("mkdir");
        std::fs::write(&tasks, format!("{id}\t{{}}\n")).expect("tasks file");
        let resources = Resources { options: vec![], extra: vec![] };
        let script = render(&ScriptParams { count: 1, runs_per_task: 1, throttle: None, tasks: &tasks, runs: &runs, job_bin, ..params(&resources) });
        (script, run)
    }

    /// The run of [`one_run_task`]'s task.
    const ONE_RUN_TASK_ID: &str = "0123456789abcdef";

    /// Slurm's environment for [`one_run_task`]'s task.
    const ONE_RUN_TASK_ENV: [(&str, &str); 3] = [("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_JOB_ID", "50"), ("SLURM_JOB_ID", "77")];

    /// A write to `attempts.jsonl` cut short (a full disk, a node crash) left a fragment without
    /// its newline, and the next attempt's line was appended right after it: the script now
    /// ends the fragment first, so the new attempt has a line of its own. A file that ends in a
    /// newline, or is empty, gets no line added.
    #[test]
    fn an_attempt_after_a_torn_line_gets_a_line_of_its_own() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (script, run) = one_run_task(tmp.path(), Path::new("/bin/true"));
        let env = ONE_RUN_TASK_ENV;
        let attempts = run.join("attempts.jsonl");
        let torn = r#"{"format_version":1,"attempt":1,"slurm_job_id":"7"#;
        for (before, lines) in [(torn, 2), ("", 1), ("{\"format_version\":1,\"attempt\":1}\n", 2)] {
            std::fs::write(&attempts, before).expect("attempts");
            for log in ["attempt-1.stdout.log", "attempt-1.stderr.log", "attempt-1.rc"] {
                let _ = std::fs::remove_file(run.join(log));
            }
            let _ = std::fs::remove_file(run.join("exit.json"));
            let out = run_script(tmp.path(), None, &script, &env);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = std::fs::read_to_string(&attempts).expect("attempts");
            assert!(text.starts_with(before) && text.ends_with('\n'), "{text:?}");
            let got: Vec<&str> = text.lines().collect();
            assert_eq!(got.len(), lines, "{before:?}: {text:?}");
            let last: serde_json::Value = serde_json::from_str(got[lines - 1]).expect("the new attempt is a whole line");
            assert_eq!((&last["slurm_job_id"], &last["array_job_id"]), (&serde_json::json!("77"), &serde_json::json!("50")), "{text:?}");
        }
    }

    /// Review (crash consistency, item 4): the script told a completed or failed run by
    /// grepping for `"status": "completed"`, serde's pretty spacing; the tests wrote that very
    /// string, so no test read a marker as its writers write it, and the script's own compact
    /// failure marker (`"status":"failed"`) never matched. Markers written by `drover-job`'s
    /// own call (`serde_json::to_vec_pretty`, `fsio::write_json_atomic`), compactly, and with
    /// other spacing are each read right.
    #[test]
    fn the_script_reads_markers_as_their_writers_write_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // `/bin/false`: a run the script does not recognise as done would be started, and fail.
        let (script, run) = one_run_task(tmp.path(), Path::new("/bin/false"));
        let (env, id) = (ONE_RUN_TASK_ENV, ONE_RUN_TASK_ID);
        type Writer = fn(&serde_json::Value) -> Vec<u8>;
        let writers: [(&str, Writer); 3] = [
            // drover-job's `fsio::write_json_atomic` (and the local backend's `write_marker`).
            ("pretty", |v| {
                let mut text = serde_json::to_vec_pretty(v).expect("json");
                text.push(b'\n');
                text
            }),
            ("compact", |v| serde_json::to_vec(v).expect("json")),
            ("other spacing", |v| serde_json::to_string(v).expect("json").replace("\":", "\"\t :  ").into_bytes()),
        ];
        for (how, write) in writers {
            let marker = |status: &str| serde_json::json!({"format_version": 1, "run_id": id, "status": status, "reason": null, "finished_at": "1"});
            std::fs::write(run.join("exit.json"), write(&marker("completed"))).expect("marker");
            let out = run_script(tmp.path(), None, &script, &env);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && stdout.contains(&format!("run {id} already completed")), "{how}: {stdout} {}", String::from_utf8_lossy(&out.stderr));

            std::fs::write(run.join("exit.json"), write(&marker("failed"))).expect("marker");
            std::fs::write(run.join("attempts.jsonl"), "{\"slurm_job_id\":\"77\"}\n").expect("attempts");
            let out = run_script(tmp.path(), None, &script, &env);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains(&format!("run {id} failed in an earlier start of this job")), "{how}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
            std::fs::remove_file(run.join("attempts.jsonl")).expect("rm");
        }
    }

    /// A task of several runs (`runs_per_task = 3`, run by bash as Slurm would, with a
    /// stand-in `drover-job` whose behaviour each run's mode file sets and a stand-in
    /// `scontrol`): its runs train one after another, a failure or a crash does not stop the
    /// ones after it (the task's exit code is the last failure's), and each attempt leaves its
    /// `.rc`; the array's last task holds the rest. A checkpoint for the time limit requeues the
    /// task and leaves the runs after it to the next start, which skips completed runs and runs
    /// that failed in this job, and resumes the stopped one. The time-limit signal arriving while
    /// a run ends well requeues the task before the next run starts.
    #[test]
    fn a_task_of_several_runs_trains_them_in_turn_and_requeues_at_the_time_limit() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (tasks, runs, modes, bin) = (tmp.path().join("array-0.tasks"), tmp.path().join("runs"), tmp.path().join("modes"), tmp.path().join("bin"));
        for dir in [&runs, &modes, &bin] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        let (log, requeues) = (tmp.path().join("trained"), tmp.path().join("requeues"));
        let ids: Vec<String> = (0..7).map(|i| format!("{i:016x}")).collect();
        std::fs::write(&tasks, ids.iter().map(|id| format!("{id}\t{{}}\n")).collect::<String>()).expect("tasks");
        let job = bin.join("drover-job");
        crate::subprocess::write_stand_in(
            &job,
            &format!(
                "trap '' USR1\nout=''; prev=''\nfor a in \"$@\"; do [ \"$prev\" = --out ] && out=\"$a\"; prev=\"$a\"; done\n\
                 id=$(basename \"$out\")\necho \"$id\" >> '{log}'\nmode=$(cat '{modes}'/\"$id\" 2>/dev/null || echo ok)\n\
                 case \"$mode\" in\n\
                 ok) printf '{{\"status\": \"completed\"}}' > \"$out/exit.json\"; exit 0;;\n\
                 fail) printf '{{\"status\": \"failed\"}}' > \"$out/exit.json\"; exit 1;;\n\
                 crash) exit 137;;\n\
                 stop) echo ok > '{modes}'/\"$id\"; printf '{{\"status\": \"cancelled\"}}' > \"$out/exit.json\"; exit 75;;\n\
                 near) echo ok > '{modes}'/\"$id\"; kill -USR1 $PPID; sleep 0.3; printf '{{\"status\": \"completed\"}}' > \"$out/exit.json\"; exit 0;;\n\
                 esac\n",
                log = log.display(),
                modes = modes.display()
            ),
        );
        crate::subprocess::write_stand_in(&bin.join("scontrol"), &format!("echo \"$*\" >> '{}'", requeues.display()));
        let resources = Resources { options: vec![], extra: vec![] };
        let script = render(&ScriptParams { count: 7, runs_per_task: 3, throttle: None, tasks: &tasks, runs: &runs, job_bin: &job, ..params(&resources) });
        let mode = |i: usize, m: &str| std::fs::write(modes.join(&ids[i]), m).expect("mode");
        let start = |task: u32, job: u32| {
            std::fs::remove_file(&log).ok();
            let (task, job) = (task.to_string(), job.to_string());
            let env = [("SLURM_ARRAY_TASK_ID", task.as_str()), ("SLURM_ARRAY_JOB_ID", "50"), ("SLURM_JOB_ID", job.as_str())];
            let out = run_script(tmp.path(), Some(&bin), &script, &env);
            let trained: Vec<usize> =
                std::fs::read_to_string(&log).unwrap_or_default().lines().map(|id| ids.iter().position(|i| i == id).expect("a run id")).collect();
            (out.status.code(), trained)
        };
        let rc = |i: usize, n: u32| std::fs::read_to_string(runs.join(&ids[i]).join(format!("attempt-{n}.rc"))).ok();

        // Task 1: runs 3, 4, 5; run 4 fails and run 5 still trains.
        mode(4, "fail");
        assert_eq!(start(1, 61), (Some(1), vec![3, 4, 5]));
        assert_eq!((rc(3, 1).as_deref(), rc(4, 1).as_deref()), (Some("0\n"), Some("1\n")));
        // Task 2 holds only run 6; a crash without a marker is the task's exit code.
        mode(6, "crash");
        assert_eq!(start(2, 62), (Some(137), vec![6]));
        assert_eq!(rc(6, 1).as_deref(), Some("137\n"));

        // Task 0: run 1 checkpoints for the time limit: requeued, run 2 left for the next start.
        mode(1, "stop");
        assert_eq!(start(0, 60), (Some(75), vec![0, 1]));
        assert_eq!(std::fs::read_to_string(&requeues).expect("requeued"), "requeue 50_0\n");
        // The next start of job 60 skips the completed run 0, resumes run 1, trains run 2.
        assert_eq!(start(0, 60), (Some(0), vec![1, 2]));
        // Task 1 started again in its job 61: runs 3 and 5 completed, and run 4 failed in this
        // job, so it is drover's to retry: nothing is trained, and the task ends failed as the
        // run did.
        assert_eq!(start(1, 61), (Some(1), Vec::<usize>::new()));
        // The time-limit signal while run 3 ends well (task 1 as a new job, run 3 redone).
        std::fs::remove_file(runs.join(&ids[3]).join("exit.json")).expect("rm");
        std::fs::remove_file(&requeues).expect("rm");
        mode(3, "near");
        mode(4, "ok");
        assert_eq!(start(1, 71), (Some(75), vec![3]), "run 4 waits for the requeue");
        assert_eq!(std::fs::read_to_string(&requeues).expect("requeued"), "requeue 50_1\n");
        // The signal while the next run is being set up (here from `uname`, which the script
        // calls then): that run does not start, and the task requeues.
        std::fs::remove_file(&requeues).expect("rm");
        let trigger = tmp.path().join("signal-from-uname");
        crate::subprocess::write_stand_in(
            &bin.join("uname"),
            &format!(
                "if [ -e '{t}' ]; then rm -f '{t}'; kill -USR1 \"$(awk '{{print $4}}' /proc/$PPID/stat)\"; sleep 0.2; fi\nexec {u} \"$@\"",
                t = trigger.display(),
                u = ["/usr/bin/uname", "/bin/uname"].into_iter().find(|p| Path::new(p).exists()).expect("uname")
            ),
        );
        std::fs::write(&trigger, "").expect("trigger");
        std::fs::remove_file(runs.join(&ids[6]).join("exit.json")).ok();
        mode(6, "ok");
        assert_eq!(start(2, 72), (Some(75), Vec::<usize>::new()), "run 6 not started");
        assert_eq!(std::fs::read_to_string(&requeues).expect("requeued"), "requeue 50_2\n");
        assert_eq!(start(2, 72), (Some(0), vec![6]), "and trained at the next start");
    }

    /// The node's `uname -m` (a stand-in `uname` on PATH) picks the build: a `[slurm.arch]`
    /// folder's drover-job with `--plugin-dir`, the default one on its own machine, and on any
    /// other node a failed run whose exit marker says why, without starting anything.
    #[test]
    fn the_nodes_machine_picks_the_build_and_a_foreign_node_fails_with_a_reason() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (tasks, runs, bin) = (tmp.path().join("array-0.tasks"), tmp.path().join("runs"), tmp.path().join("bin"));
        let arm = tmp.path().join("arm builds");
        for dir in [&runs, &bin, &arm] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        let calls = tmp.path().join("calls");
        let executable = |path: &Path, body: String| {
            std::fs::write(path, body).expect("write");
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        };
        // Stand-ins for drover-job that log how they were called.
        let fake = |path: &Path, who: &str| executable(path, format!("#!/bin/sh\necho \"{who} $*\" >> '{}'\n", calls.display()));
        let default_bin = tmp.path().join("drover-job");
        fake(&default_bin, "default");
        fake(&arm.join("drover-job"), "arm");
        let arch = BTreeMap::from([("aarch64".to_string(), arm.clone())]);
        let resources = Resources { options: vec![], extra: vec![] };
        let script = |job_bin_machine: Option<&'static str>, arch: &BTreeMap<String, PathBuf>| {
            render(&ScriptParams { tasks: &tasks, runs: &runs, job_bin: &default_bin, job_bin_machine, arch, ..params(&resources) })
        };
        let run_on = |machine: &str, script: &str, id: &str| {
            executable(&bin.join("uname"), format!("#!/bin/sh\necho '{machine}'\n"));
            std::fs::write(&tasks, format!("{id}\t{{}}\n")).expect("tasks file");
            let out = run_script(tmp.path(), Some(&bin), script, &[("SLURM_ARRAY_TASK_ID", "0")]);
            let calls = std::fs::read_to_string(&calls).unwrap_or_default();
            (out, calls)
        };
        let mixed = script(Some("x86_64"), &arch);
        let (out, calls_now) = run_on("x86_64", &mixed, "000000000000000a");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(calls_now.starts_with("default --spec ") && !calls_now.contains("--plugin-dir"), "{calls_now}");
        let (out, calls_now) = run_on("aarch64", &mixed, "000000000000000b");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let arm_call = calls_now.lines().last().unwrap_or_default();
        assert!(arm_call.starts_with("arm --spec ") && arm_call.contains(&format!("--plugin-dir {} ", arm.display())), "{calls_now}");

        let (out, calls_now) = run_on("riscv64", &mixed, "000000000000000c");
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(calls_now.lines().count(), 2, "nothing started on the foreign node: {calls_now}");
        let run = runs.join("000000000000000c");
        let marker: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("exit.json")).expect("exit.json")).expect("JSON");
        assert_eq!((marker["status"].as_str(), marker["run_id"].as_str()), (Some("failed"), Some("000000000000000c")), "{marker}");
        assert!(marker["finished_at"].as_str().is_some_and(|s| s.parse::<u64>().is_ok()), "unix seconds as a string, as drover-job writes them: {marker}");
        let reason = marker["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("this node is riscv64") && reason.contains("built for x86_64") && reason.contains("[slurm.arch] riscv64"), "{reason}");
        let stderr_log = std::fs::read_to_string(run.join("attempt-1.stderr.log")).expect("stderr log");
        assert!(stderr_log.contains(reason), "{stderr_log}");
        assert!(run.join("attempt-1.stdout.log").is_file(), "the attempt is numbered like any other");
        let attempt = std::fs::read_to_string(run.join("attempts.jsonl")).expect("attempts");
        assert!(attempt.contains("\"machine\":\"riscv64\""), "{attempt}");

        // A job_bin of no known machine (a wrapper script) runs wherever no folder is named.
        let (out, calls_now) = run_on("riscv64", &script(None, &NO_ARCH), "000000000000000d");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(calls_now.lines().last().unwrap_or_default().starts_with("default --spec "), "{calls_now}");
        // Every name `slurm_config` lets through stays a pattern, even a shell keyword.
        let keyword = BTreeMap::from([("esac".to_string(), arm.clone()), ("in".to_string(), arm.clone())]);
        let syntax = std::process::Command::new("bash").arg("-n").arg("-c").arg(script(Some("x86_64"), &keyword)).output().expect("bash -n");
        assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
        // A folder named for the default's own machine wins over the default.
        let own = BTreeMap::from([("x86_64".to_string(), arm.clone())]);
        let (_, calls_now) = run_on("x86_64", &script(Some("x86_64"), &own), "000000000000000e");
        assert!(calls_now.lines().last().unwrap_or_default().starts_with("arm --spec "), "{calls_now}");
    }

    /// Security review F8: the script ran in the results directory's `slurm/` folder (its
    /// submit folder) and called its tools through PATH, so a PATH holding `.` ran a planted
    /// `hostname` from there. It now works from `/`, and drover-job starts there too.
    #[test]
    fn the_script_works_from_root_not_its_submit_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (tasks, runs, bin) = (tmp.path().join("array-0.tasks"), tmp.path().join("runs"), tmp.path().join("bin"));
        for dir in [&runs, &bin] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        let executable = |path: &Path, body: String| {
            std::fs::write(path, body).expect("write");
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        };
        let cwd = tmp.path().join("cwd");
        let job_bin = bin.join("drover-job");
        executable(&job_bin, format!("#!/bin/sh
pwd > '{}'
", cwd.display()));
        let pwned = tmp.path().join("pwned");
        executable(&tmp.path().join("hostname"), format!("#!/bin/sh
touch '{}'
echo planted
", pwned.display()));
        std::fs::write(&tasks, "000000000000000a	{}
").expect("tasks file");
        let resources = Resources { options: vec![], extra: vec![] };
        let script = render(&ScriptParams { tasks: &tasks, runs: &runs, job_bin: &job_bin, job_bin_machine: None, arch: &NO_ARCH, ..params(&resources) });
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c").arg(&script).env("SLURM_ARRAY_TASK_ID", "0").current_dir(tmp.path());
        cmd.env("PATH", format!(".:{}", std::env::var("PATH").unwrap_or_default()));
        let out = cmd.output().expect("bash");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!pwned.exists(), "a `hostname` in the submit folder ran");
        assert_eq!(std::fs::read_to_string(&cwd).expect("drover-job ran"), "/\n");
    }

    /// `slurm.mpi` reaches a multi-rank run's `srun` as `--mpi=<type>`, and `None` (`mpi =
    /// "default"`) leaves `--mpi` out so srun takes the cluster's `MpiDefault`: the rendered
    /// text, and the script run by bash with `SLURM_NTASKS=2` and a stand-in `srun` on PATH.
    #[test]
    fn the_mpi_setting_reaches_srun_and_default_leaves_it_out() {
        let resources = Resources { options: vec![], extra: vec![] };
        let pmi2 = render(&ScriptParams { mpi: Some("pmi2"), ranks: 2, ..params(&resources) });
        assert!(pmi2.contains("if [ 2 -gt 1 ]; then\n        launcher=(srun --mpi=pmi2 --kill-on-bad-exit=1 --ntasks=2)\n"), "{pmi2}");
        assert_eq!(pmi2.matches("--mpi").count(), 1, "{pmi2}");
        let pmix = render(&params(&resources));
        assert!(pmix.contains("launcher=(srun --mpi=pmix --kill-on-bad-exit=1 "), "the default before the setting: {pmix}");
        let cluster = render(&ScriptParams { mpi: None, ranks: 2, ..params(&resources) });
        assert!(cluster.contains("launcher=(srun --kill-on-bad-exit=1 --ntasks=2)\n"), "{cluster}");
        assert!(!cluster.contains("--mpi"), "{cluster}");

        let tmp = tempfile::tempdir().expect("tempdir");
        let (tasks, runs, bin) = (tmp.path().join("array-0.tasks"), tmp.path().join("runs"), tmp.path().join("bin"));
        std::fs::create_dir_all(&runs).expect("mkdir");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let calls = tmp.path().join("calls");
        crate::subprocess::write_stand_in(&bin.join("srun"), &format!("echo \"srun $*\" >> '{}'", calls.display()));
        // Only named: the stand-in srun does not start it.
        let job_bin = tmp.path().join("drover-job");
        crate::subprocess::write_stand_in(&job_bin, &format!("echo \"job $*\" >> '{}'", calls.display()));
        let launch = |mpi: Option<&str>, ranks: u64, id: &str| {
            let script = render(&ScriptParams { tasks: &tasks, runs: &runs, job_bin: &job_bin, mpi, ranks, ..params(&resources) });
            std::fs::write(&tasks, format!("{id}\t{{}}\n")).expect("tasks file");
            let out = run_script(tmp.path(), Some(&bin), &script, &[("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_NTASKS", "2")]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            std::fs::read_to_string(&calls).unwrap_or_default().lines().last().unwrap_or_default().to_string()
        };
        let srun_line = |mpi: Option<&str>, id: &str| launch(mpi, 2, id);
        let job = job_bin.display().to_string();
        // A one-rank run given two tasks (`ntasks_per_node = 2`) starts one drover-job, not two
        // on the same run directory (review finding: the second found the run locked and the
        // step's failure killed the first).
        let single = launch(Some("pmix"), 1, "000000000000000d");
        assert!(single.starts_with("job --spec ") && !single.contains("srun"), "{single}");
        assert!(srun_line(Some("pmi2"), "000000000000000a").starts_with(&format!("srun --mpi=pmi2 --kill-on-bad-exit=1 --ntasks=2 {job} --spec ")));
        assert!(srun_line(None, "000000000000000b").starts_with(&format!("srun --kill-on-bad-exit=1 --ntasks=2 {job} --spec ")));
        // A value that skipped validation is still one word to srun, never a command.
        let hostile = srun_line(Some("x; touch pwned"), "000000000000000c");
        assert!(hostile.starts_with("srun --mpi=x; touch pwned --kill-on-bad-exit=1 "), "{hostile}");
        assert!(!tmp.path().join("pwned").exists());
    }

    /// Every path under `dir`, recursively.
    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
        out
    }

    /// Runs `script` under bash as Slurm would, in `dir`, with `bin` (stand-ins) first on PATH
    /// and the `SLURM_*` variables `env`.
    fn run_script(dir: &Path, bin: Option<&Path>, script: &str, env: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c").arg(script).envs(env.iter().copied()).current_dir(dir);
        if let Some(bin) = bin {
            cmd.env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()));
        }
        cmd.output().expect("bash")
    }

    fn params(resources: &Resources) -> ScriptParams<'_> {
        ScriptParams {
            sweep: "s",
            submission: 2,
            count: 12,
            runs_per_task: 1,
            script_name: "array-2.sbatch",
            job_name: "drover-s-0123abcd",
            comment: "drover:0123abcd:2",
            throttle: Some(4),
            signal: "USR1",
            signal_seconds: 90,
            resources,
            tasks: Path::new("/r/slurm/array-2.tasks"),
            runs: Path::new("/r dir/runs"),
            job_bin: Path::new("/bin/drover-job"),
            job_bin_machine: None,
            arch: &NO_ARCH,
            max_timeouts: 3,
            max_preemptions: 10,
            checkpoint_every_s: None,
            mpi: Some("pmix"),
            ranks: 1,
            after: &[],
            user_after: &[],
        }
    }

    #[test]
    fn render_fills_every_placeholder() {
        let resources = Resources { options: vec![("partition", "debug".into())], extra: vec!["--exclusive".into()] };
        let script = render(&params(&resources));
        assert!(!script.contains("{{"), "{script}");
        assert!(script.contains("#SBATCH --array=0-11%4\n"));
        assert!(script.contains("#SBATCH --signal=B:USR1@90\n"));
        assert!(script.contains("#SBATCH --partition=debug\n#SBATCH --exclusive\n"));
        assert!(script.contains("runs='/r dir/runs'\n"));
        assert!(script.contains("trap 'near_limit=1; if [ -n \"$child\" ]; then kill -s USR1 \"$child\" 2>/dev/null; fi' USR1"), "{script}");
        assert!(script.contains("(12 run(s), 1 per array task)") && script.contains("per_task=1\n"), "{script}");
        // Packed: 12 runs of 5 per task are 3 tasks, the last of 2.
        let packed = render(&ScriptParams { runs_per_task: 5, ..params(&resources) });
        assert!(packed.contains("#SBATCH --array=0-2%4\n") && packed.contains("per_task=5\n"), "{packed}");
        assert!(!script.contains("--dependency"), "{script}");
        let after = ["41".to_string(), "42".to_string(), "4;2\n#SBATCH --uid=0".to_string()];
        let waiting = render(&ScriptParams { after: &after, ..params(&resources) });
        assert!(waiting.contains("#SBATCH --array=0-11%4\n#SBATCH --dependency=afterany:41:42\n"), "{waiting}");
        assert!(!waiting.contains("--uid"), "{waiting}");
        // `slurm.after`: the user's terms and the throttle's, all of which must hold.
        let user = ["afterok:4242".to_string(), "afterany:7_*".to_string()];
        let theirs = render(&ScriptParams { user_after: &user, ..params(&resources) });
        assert!(theirs.contains("#SBATCH --array=0-11%4\n#SBATCH --dependency=afterok:4242,afterany:7_*\n"), "{theirs}");
        let both = render(&ScriptParams { user_after: &user, after: &after, ..params(&resources) });
        assert!(both.contains("#SBATCH --dependency=afterok:4242,afterany:7_*,afterany:41:42\n"), "{both}");
        // `slurm.checkpoint_minutes`: the job checkpoints on its own as well.
        assert!(script.contains("--max-preemptions 10 \\\n"), "no periodic checkpoints unless asked: {script}");
        let periodic = render(&ScriptParams { checkpoint_every_s: Some(1800.0), ..params(&resources) });
        assert!(periodic.contains("--max-preemptions 10 --checkpoint-every 1800 \\\n"), "{periodic}");
    }
}
