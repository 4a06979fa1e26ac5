//! Helpers for drover's cross-crate end-to-end tests: where the built binaries and plugins are,
//! and small sweep files written into temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The cargo profile directory the tests were built into (`target/debug`), found from the
/// test executable itself (`target/debug/deps/it-<hash>`), so `CARGO_TARGET_DIR` is respected.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in <profile>/deps")
        .to_path_buf()
}

/// Path of a built workspace artifact; panics with the command to run when it is missing,
/// because `scripts/test.sh` builds the workspace before testing.
pub fn artifact(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.exists(),
        "`{}` is missing: build the workspace first (`cargo build --workspace`, as scripts/test.sh does)",
        path.display()
    );
    path
}

/// The `drover` binary.
pub fn drover() -> Command {
    let mut cmd = Command::new(artifact("drover"));
    cmd.env("CI", "true").env_remove("DROVER_PLUGIN_PATH");
    cmd
}

/// `drover-job --spec dir/spec.json --out dir` for `ranks` ranks: itself for one, `mpirun -np
/// N` for more (as the local backend launches it; `--allow-run-as-root` for root).
pub fn job_in(dir: &Path, ranks: u32) -> Command {
    let job = artifact("drover-job");
    let mut cmd = if ranks <= 1 {
        Command::new(job)
    } else {
        let mut mpirun = Command::new("mpirun");
        mpirun.args(["-np", &ranks.to_string(), "--oversubscribe"]);
        // SAFETY: geteuid(2) has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } == 0 {
            mpirun.arg("--allow-run-as-root");
        }
        mpirun.arg(job);
        mpirun
    };
    cmd.arg("--spec").arg(dir.join("spec.json")).arg("--out").arg(dir);
    cmd
}

/// The metrics rows of a finished run (`metrics.jsonl`), parsed; panics on a missing file or a
/// bad row.
pub fn metrics_rows(run: &Path) -> Vec<serde_json::Value> {
    read_to_string_or_panic(&run.join("metrics.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad row in `{}`: {e}: {l}", run.display())))
        .collect()
}

/// The metrics rows a running job has written so far: none while the file does not exist, and
/// a last line still being written is left out.
pub fn metrics_rows_so_far(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn read_to_string_or_panic(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()))
}

/// Metrics rows without their timing columns (`steps_per_sec`, `wall_time_s`), which differ
/// between any two runs: what a resumed run is compared with an uninterrupted one by.
pub fn untimed(rows: &[serde_json::Value]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            if let Some(row) = r.as_object_mut() {
                row.remove("steps_per_sec");
                row.remove("wall_time_s");
            }
            r
        })
        .collect()
}

/// Runs a command and returns its output, with both streams in the panic message on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "command {cmd:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes `body` as `dir/sweep.toml` and returns its path.
pub fn write_sweep(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("sweep.toml");
    std::fs::write(&path, body).unwrap_or_else(|e| panic!("cannot write `{}`: {e}", path.display()));
    path
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in `{}`: {e}", path.display()))
}

/// Directories of all runs under a results directory.
pub fn run_dirs(results: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(results.join("runs"))
        .expect("runs/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Splits one CSV line: fields may be quoted (`"a,b"`, with `""` for a quote inside).
pub fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// Reads a CSV file written by `drover analyze`: its header and rows.
pub fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
    let mut lines = text.lines();
    let header = csv_fields(lines.next().expect("header"));
    (header, lines.map(csv_fields).collect())
}

/// The children of `pid` (`/proc/<pid>/task/*/children`).
pub fn children(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
                .collect()
        })
        .unwrap_or_default()
}
