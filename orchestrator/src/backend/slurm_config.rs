//! The `[slurm]` table of a sweep file: `SlurmFile` (serde mirror) → `SlurmSettings` (validated).
//!
//! ```toml
//! backend = "slurm"                 # or `drover run --backend slurm`
//! [slurm]
//! partition = "debug"               # account, qos, constraint likewise (Slurm names)
//! time = "00:10:00"                 # [D-]HH:MM:SS, MM:SS or minutes
//! nodes = 1
//! ntasks_per_node = 1
//! cpus_per_task = 1
//! gpus_per_task = 1                 # or gres = "gpu:a100:1"
//! mem = "2G"
//! extra = ["--exclusive"]           # raw `#SBATCH` options, one per line
//! throttle = 4                      # `--array=...%4`: at most 4 runs at once
//! max_retries = 2                   # failed runs are resubmitted this often
//! max_timeouts = 3                  # time-limit requeues before a run counts as failed
//! max_preemptions = 10              # preemptions before a run counts as failed
//! fail_fast = 5                     # stop the sweep after 5 attempts fail untrained (0: never)
//! checkpoint_minutes = 30           # also checkpoint every 30 min (node failures lose less)
//! signal = "USR1"                   # checkpoint signal: `--signal=B:USR1@<signal_seconds>`
//! signal_seconds = 120                # must be shorter than every `time` (checked)
//! mpi = "pmix"                      # multi-rank runs: `srun --mpi=pmix`; "default": no `--mpi`
//! max_array_size = 1000             # cap below the cluster's MaxArraySize (never above it)
//! runs_per_task = 10                # short runs: 10 back to back per array task (`time` is the task's)
//! after = "afterok:4242"            # start only once job 4242 has succeeded (`sbatch --dependency`)
//! [[slurm.overrides]]               # per-axis resources: runs whose axes match get these
//! when = { "run.num_envs" = 64 }
//! mem = "8G"
//! [slurm.arch]                      # nodes of other architectures, by `uname -m`: a folder
//! aarch64 = "/shared/drover/aarch64"  # with drover-job and the sweep's plugins built for it
//! ```
//!
//! Validation is pure (no I/O) and strict: every value that reaches the batch script is checked
//! against the characters Slurm accepts for it, so no value can end a line or run a command.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::ConfigErrorKind;

/// Which backend runs the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Child processes on this machine.
    #[default]
    Local,
    /// A Slurm job array per sweep.
    Slurm,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Local => "local",
            BackendKind::Slurm => "slurm",
        })
    }
}

/// Resource keys, as written in the file (all optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesFile {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time`.
    pub time: Option<String>,
    /// `--nodes`.
    pub nodes: Option<u32>,
    /// `--ntasks-per-node`.
    pub ntasks_per_node: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--gpus-per-task`.
    pub gpus_per_task: Option<u32>,
    /// `--gres`.
    pub gres: Option<String>,
    /// `--mem`.
    pub mem: Option<String>,
    /// `--constraint`.
    pub constraint: Option<String>,
    /// Raw `#SBATCH` options.
    pub extra: Option<Vec<String>>,
}

/// `[[slurm.overrides]]`: resources for the runs whose axis values match `when`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideFile {
    /// Dotted axis key → value; all must match.
    pub when: BTreeMap<String, Value>,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time`.
    pub time: Option<String>,
    /// `--nodes`.
    pub nodes: Option<u32>,
    /// `--ntasks-per-node`.
    pub ntasks_per_node: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--gpus-per-task`.
    pub gpus_per_task: Option<u32>,
    /// `--gres`.
    pub gres: Option<String>,
    /// `--mem`.
    pub mem: Option<String>,
    /// `--constraint`.
    pub constraint: Option<String>,
    /// Raw `#SBATCH` options.
    pub extra: Option<Vec<String>>,
}

impl OverrideFile {
    fn resources(&self) -> ResourcesFile {
        ResourcesFile {
            partition: self.partition.clone(),
            account: self.account.clone(),
            qos: self.qos.clone(),
            time: self.time.clone(),
            nodes: self.nodes,
            ntasks_per_node: self.ntasks_per_node,
            cpus_per_task: self.cpus_per_task,
            gpus_per_task: self.gpus_per_task,
            gres: self.gres.clone(),
            mem: self.mem.clone(),
            constraint: self.constraint.clone(),
            extra: self.extra.clone(),
        }
    }
}

/// Seconds between two `squeue` polls of a waiting `drover run` unless `slurm.poll_seconds`
/// says otherwise: runs take minutes to days, and every poll is a request to the controller
/// that all its users share.
pub const DEFAULT_POLL_SECONDS: f64 = 10.0;

/// Attempts failing before their first iteration (no run trained) that stop a sweep unless
/// `slurm.fail_fast` says otherwise: enough that a few unlucky nodes do not stop a sweep, few
/// enough that a broken setup costs a handful of jobs, not thousands.
pub const DEFAULT_FAIL_FAST: u32 = 5;

/// The `[slurm]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmFile {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time`.
    pub time: Option<String>,
    /// `--nodes`.
    pub nodes: Option<u32>,
    /// `--ntasks-per-node`.
    pub ntasks_per_node: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--gpus-per-task`.
    pub gpus_per_task: Option<u32>,
    /// `--gres`.
    pub gres: Option<String>,
    /// `--mem`.
    pub mem: Option<String>,
    /// `--constraint`.
    pub constraint: Option<String>,
    /// Raw `#SBATCH` options.
    pub extra: Option<Vec<String>>,
    /// Runs at once (`%N` of `--array`); default: the sweep's `max_parallel`, else unlimited.
    pub throttle: Option<u32>,
    /// Resubmissions of a failed run.
    pub max_retries: Option<u32>,
    /// Time-limit requeues of a run.
    pub max_timeouts: Option<u32>,
    /// Preemptions of a run.
    pub max_preemptions: Option<u32>,
    /// Attempts failing before their first iteration, with no run trained, that stop the sweep
    /// (0: never).
    pub fail_fast: Option<u32>,
    /// Minutes between a job's own checkpoints besides the ones signals ask for.
    pub checkpoint_minutes: Option<f64>,
    /// The checkpoint signal's name.
    pub signal: Option<String>,
    /// Seconds before the time limit at which Slurm sends `signal`.
    pub signal_seconds: Option<u32>,
    /// Largest array this sweep submits (the cluster's `MaxArraySize - 1` caps it too).
    pub max_array_size: Option<u32>,
    /// Runs one array task trains, one after another (default 1).
    pub runs_per_task: Option<u32>,
    /// Seconds between two `squeue` polls while `drover run` waits (default
    /// [`DEFAULT_POLL_SECONDS`]).
    pub poll_seconds: Option<f64>,
    /// The `srun --mpi` type of multi-rank runs (default [`DEFAULT_MPI`]; [`MPI_CLUSTER_DEFAULT`]:
    /// no `--mpi`).
    pub mpi: Option<String>,
    /// Jobs of the user's own that every array of the sweep waits for (`--dependency`).
    pub after: Option<AfterFile>,
    /// Per-axis resource overrides.
    #[serde(default)]
    pub overrides: Vec<OverrideFile>,
    /// Builds for nodes of other architectures: `uname -m` name → folder.
    #[serde(default)]
    pub arch: BTreeMap<String, PathBuf>,
}

/// `slurm.after` as written: one job id or dependency, or a list of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum AfterFile {
    /// `after = 4242` (waits until job 4242 has succeeded).
    Id(u64),
    /// `after = "afterany:4242:4243"`, or several joined by `,` as `sbatch --dependency` takes them.
    Text(String),
    /// `after = [4242, "afterany:4300"]`: all of them.
    List(Vec<AfterItem>),
}

/// One entry of a `slurm.after` list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum AfterItem {
    /// A job id (`afterok`).
    Id(u64),
    /// A dependency as `sbatch --dependency` takes it.
    Text(String),
}

/// Validated resources of one job array.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resources {
    /// `(option, value)` pairs in a fixed order, e.g. `("partition", "debug")`.
    pub options: Vec<(&'static str, String)>,
    /// Raw `#SBATCH` options.
    pub extra: Vec<String>,
}

impl Resources {
    /// Whether these options ask Slurm for a GPU: `gpus-per-task`, a `gres` naming `gpu`, or a
    /// raw `--gpus*`/`--gres`/`-G` option. Without one, a job on a cluster that confines devices
    /// to what was allocated sees no GPU.
    pub fn requests_gpus(&self) -> bool {
        self.options.iter().any(|(k, v)| *k == "gpus-per-task" || (*k == "gres" && v.contains("gpu")))
            || self.extra.iter().any(|e| {
                let e = e.trim_start();
                e.starts_with("--gpus") || e.starts_with("--gres") || e.starts_with("-G")
            })
    }

    /// The number value of option `key` (`cpus-per-task`, `gpus-per-task`), when set.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.options.iter().find(|(k, _)| *k == key).and_then(|(_, v)| v.parse().ok())
    }

    /// The `#SBATCH` lines.
    pub fn sbatch_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.options.iter().map(|(k, v)| format!("#SBATCH --{k}={v}")).collect();
        lines.extend(self.extra.iter().map(|e| format!("#SBATCH {e}")));
        lines
    }
}

/// A validated per-axis override.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Axis key → value that a run must have.
    pub when: BTreeMap<String, Value>,
    /// What it sets (merged over the sweep's resources).
    pub set: ResourcesFile,
}

impl Override {
    /// Whether a run with these axis values gets this override: every `when` key has the run's
    /// value, numbers compared by value (see [`same_axis_value`]).
    pub fn matches(&self, axes: &BTreeMap<String, Value>) -> bool {
        self.when.iter().all(|(k, v)| axes.get(k).is_some_and(|have| same_axis_value(v, have)))
    }
}

/// Whether a `when` value names an axis value. TOML tells `16` from `16.0`, and serde_json
/// keeps them apart (`Number(16) != Number(16.0)`), but the axis means one number: a `when`
/// written `16.0` for a grid of `[8, 16]` must match. Two whole numbers compare exactly (as
/// f64, ids above 2^53 would collide); text never equals a number (`"0.1"` is not `0.1`).
pub fn same_axis_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_axis_value(x, y)),
        _ => a == b,
    }
}

/// The checkpoint signals drover can ask for: none is taken by NCCL or common launchers
/// (NCCL and PyTorch's elastic agent handle SIGTERM/SIGINT; USR1 is free by default).
pub const SIGNALS: &[&str] = &["USR1", "USR2", "HUP", "ALRM", "URG", "XCPU"];

/// The MPI type a multi-rank run's `srun` is given unless `slurm.mpi` says otherwise: what
/// drover's batch script always used before the setting (OpenMPI 5 and MPICH 4 take PMIx).
pub const DEFAULT_MPI: &str = "pmix";

/// The `slurm.mpi` value that leaves `--mpi` out, so `srun` uses the job's `SLURM_MPI_TYPE` if
/// set, else the cluster's `MpiDefault` (slurm.conf).
pub const MPI_CLUSTER_DEFAULT: &str = "default";

/// The most runs one array task may train one after another: beyond it one task is a long
/// job of its own, better cut into more tasks.
pub const MAX_RUNS_PER_TASK: u32 = 1000;

/// The validated `[slurm]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmSettings {
    /// Resources of every run before overrides.
    pub base: ResourcesFile,
    /// Per-axis overrides, in file order (later ones win).
    pub overrides: Vec<Override>,
    /// `%N`, if any.
    pub throttle: Option<u32>,
    /// Resubmissions of a failed run.
    pub max_retries: u32,
    /// Time-limit requeues of a run.
    pub max_timeouts: u32,
    /// Preemptions of a run.
    pub max_preemptions: u32,
    /// How many attempts failing before their first iteration, while no run of the sweep has
    /// trained one, make a waiting `drover run` stop the sweep (cancel its queued tasks, retry
    /// nothing): a broken setup fails every run alike. `None`: never (`fail_fast = 0`).
    pub fail_fast: Option<u32>,
    /// Minutes between a job's own checkpoints (besides the signals'): what a node failure or
    /// an out-of-memory kill, which come without a signal, can cost at most. `None`: only at
    /// signals.
    pub checkpoint_minutes: Option<f64>,
    /// Checkpoint signal name (one of [`SIGNALS`]).
    pub signal: String,
    /// Seconds before the time limit.
    pub signal_seconds: u32,
    /// Cap on the array size.
    pub max_array_size: Option<u32>,
    /// Runs one array task trains one after another: short runs packed so that the cluster
    /// schedules, starts and accounts for one job per `runs_per_task` runs (each start costs
    /// seconds of scheduling and prolog, and submit limits count jobs). `time` is the task's.
    pub runs_per_task: u32,
    /// Seconds between polls.
    pub poll_seconds: f64,
    /// `srun --mpi=<type>` for multi-rank runs (a plugin name: letters, digits, `_`); `None`
    /// for `mpi = "default"`, where the batch script passes no `--mpi` and `srun` takes the
    /// cluster's `MpiDefault`. Not part of any run id: it says how ranks are started, not what
    /// they compute.
    pub mpi: Option<String>,
    /// `slurm.after`: dependencies on the user's own jobs, each `TYPE:JOBID[:JOBID...]` as
    /// `sbatch --dependency` takes them (a bare job id reads as `afterok`). Every array of the
    /// sweep is submitted with them, beside the `afterany` on its own arrays that the throttle
    /// may add, and a lift keeps them (`slurm::user_dependency`). Not part of any run id: it
    /// says when runs start, not what they compute.
    pub after: Vec<String>,
    /// Builds for nodes of other architectures: a node's `uname -m` → the absolute folder that
    /// holds `drover-job` and the sweep's plugins built for it (same file names). Nodes of the
    /// architecture `drover-job` itself is built for need no entry.
    pub arch: BTreeMap<String, PathBuf>,
}

impl Default for SlurmSettings {
    fn default() -> Self {
        SlurmSettings {
            base: ResourcesFile::default(),
            overrides: Vec::new(),
            throttle: None,
            max_retries: 2,
            max_timeouts: 3,
            max_preemptions: 10,
            fail_fast: Some(DEFAULT_FAIL_FAST),
            checkpoint_minutes: None,
            signal: "USR1".into(),
            signal_seconds: 120,
            max_array_size: None,
            runs_per_task: 1,
            poll_seconds: DEFAULT_POLL_SECONDS,
            mpi: Some(DEFAULT_MPI.into()),
            after: Vec::new(),
            arch: BTreeMap::new(),
        }
    }
}

type KeyError = (String, ConfigErrorKind);

fn invalid(key: impl Into<String>, why: impl Into<String>) -> KeyError {
    (key.into(), ConfigErrorKind::InvalidValue(why.into()))
}

/// A Slurm name (partition, account, qos, constraint expression, gres): no whitespace, no
/// quotes, nothing a shell or sbatch's option parser would give meaning to.
fn check_name(key: &str, value: &str, extra_chars: &str) -> Result<(), KeyError> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c) || extra_chars.contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{value}`: only letters, digits and `_-.{extra_chars}` are allowed in this Slurm value"),
        ))
    }
}

/// `--time`: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.
fn check_time(key: &str, value: &str) -> Result<(), KeyError> {
    let (days, rest) = match value.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, value),
    };
    let numeric = |s: &str| !s.is_empty() && s.len() <= 6 && s.chars().all(|c| c.is_ascii_digit());
    let parts: Vec<&str> = rest.split(':').collect();
    let ok = days.is_none_or(numeric) && parts.len() <= 3 && parts.iter().all(|p| numeric(p));
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("`{value}`: expected a Slurm time such as 30, 10:00, 01:30:00 or 2-00:00:00")))
    }
}

/// Seconds of a `--time` value that passed `check_time`, as Slurm reads it (a lone number is
/// minutes, two fields are MM:SS, a day prefix makes them HH, HH:MM, HH:MM:SS); `None` for
/// `0`, which Slurm takes as no limit.
fn time_seconds(value: &str) -> Option<u64> {
    let (days, rest) = match value.split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().ok()?, rest),
        None => (0, value),
    };
    let f: Vec<u64> = rest.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let dayless = value.split_once('-').is_none();
    let secs = match (dayless, f.as_slice()) {
        (true, [m]) => m * 60,
        (true, [m, s]) => m * 60 + s,
        (_, [h, m, s]) => h * 3600 + m * 60 + s,
        (false, [h]) => h * 3600,
        (false, [h, m]) => h * 3600 + m * 60,
        _ => return None,
    } + days * 86_400;
    (secs > 0).then_some(secs)
}

/// The checkpoint signal must come before the time limit with time to spare: Slurm sends it
/// `signal_seconds` before the limit, so with a limit no longer than that it comes at Slurm's
/// first time check after each start (seen: about 30 s in), and every attempt checkpoints and
/// requeues after less than a minute of training until `max_timeouts` runs out.
fn check_signal_fits(time_key: &str, time: &str, signal_seconds: u32) -> Result<(), KeyError> {
    match time_seconds(time) {
        Some(limit) if limit <= u64::from(signal_seconds) => Err(invalid(
            "slurm.signal_seconds",
            format!(
                "{signal_seconds} s is not shorter than `{time_key}` = `{time}` ({limit} s): Slurm would send the \
                 checkpoint signal at its first time check after each start, so every attempt would stop and requeue \
                 after less than a minute of training until `slurm.max_timeouts` is spent; lower `slurm.signal_seconds` or raise `{time_key}`"
            ),
        )),
        _ => Ok(()),
    }
}

/// `--mem`: a number with an optional K/M/G/T unit.
fn check_mem(key: &str, value: &str) -> Result<(), KeyError> {
    let digits = value.trim_end_matches(['K', 'M', 'G', 'T']);
    let ok = !digits.is_empty() && digits.len() <= 12 && digits.chars().all(|c| c.is_ascii_digit()) && value.len() - digits.len() <= 1;
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("`{value}`: expected a size such as 2000, 500M or 8G")))
    }
}

/// A raw `#SBATCH` option: one line, starting with `-`, printable ASCII without quotes or
/// backslashes (sbatch parses these lines itself; they never reach a shell).
fn check_extra(key: &str, value: &str) -> Result<(), KeyError> {
    let ok = value.starts_with('-')
        && value.len() <= 512
        && value.chars().all(|c| c.is_ascii_graphic() && !"\"'\\`$".contains(c) || c == ' ');
    if !ok {
        return Err(invalid(
            key,
            format!("`{value}`: an extra #SBATCH option starts with `-` and is one line of printable characters without quotes, `\\`, `` ` `` or `$`"),
        ));
    }
    // The options drover's batch script sets itself: it finds its jobs by name and comment,
    // maps array tasks to runs, reads the logs and requeues at the signal. Given again here
    // they would win (a later #SBATCH line does) and drover would lose its jobs, resubmitting
    // runs that are still running into the same directories.
    // sbatch reads every option on a `#SBATCH` line, so each word that is an option counts,
    // read as sbatch reads it: every letter of a short-option group (`-HJx` names the job) and
    // a long option's unambiguous prefix (`--j=x` is `--job-name=x`).
    use crate::backend::sbatch_options::{options_in, Named};
    for named in value.split(' ').flat_map(options_in) {
        match named {
            Named::Option("dependency") => {
                return Err(invalid(
                    key,
                    format!("`{value}`: drover sets `--dependency` itself (to share the throttle between a sweep's arrays); give your own as `slurm.after` (for example `after = \"afterok:4242\"`), which it keeps beside its own"),
                ))
            }
            Named::Option(long) if crate::backend::sbatch_options::DROVERS_OWN.contains(&long) => {
                return Err(invalid(
                    key,
                    format!("`{value}`: `--{long}` is drover's to set (it finds, maps and requeues its jobs by their name, comment, array, logs and signal, in one cluster's queue); leave it out of `extra`"),
                ))
            }
            // sbatch would refuse it, and a guess at what it meant could be one of drover's.
            Named::Ambiguous(candidates) => {
                return Err(invalid(
                    key,
                    format!(
                        "`{value}`: an abbreviation sbatch cannot resolve, of {}; write the option in full",
                        candidates.iter().map(|c| format!("`--{c}`")).collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
            Named::Option(_) => {}
        }
    }
    Ok(())
}


/// `slurm.mpi`: a plugin type as `srun --mpi=list` prints it (`pmix`, `pmix_v4`, `pmi2`,
/// `cray_shasta`, `none`), written into the batch script as `--mpi=<type>`, so only letters,
/// digits and `_`; or [`MPI_CLUSTER_DEFAULT`] for no `--mpi` (`None`). Whether this cluster
/// has the plugin is a warning at submission (`slurm::mpi_warning`), not a refusal: the login
/// node's `srun` may not see the compute nodes' plugins.
fn check_mpi(value: &str) -> Result<Option<String>, KeyError> {
    const KEY: &str = "slurm.mpi";
    if value == MPI_CLUSTER_DEFAULT {
        return Ok(None);
    }
    // srun's plugin names are lowercase (`mpi/pmix`): `PMIx` would only fail on the node.
    if value.is_empty() || value.len() > 64 || !value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(invalid(
            KEY,
            format!(
                "`{value}`: expected an MPI plugin type of srun such as pmix, pmix_v4 or pmi2 (lowercase letters, digits and `_`: \
                 it becomes `srun --mpi=<type>` in the batch script), or \"{MPI_CLUSTER_DEFAULT}\" for the cluster's `MpiDefault`"
            ),
        ));
    }
    if value == "list" {
        return Err(invalid(
            KEY,
            format!(
                "`list` makes srun print its MPI plugin types instead of starting the ranks: name one of those \
                 (`srun --mpi=list` shows them), or \"{MPI_CLUSTER_DEFAULT}\" for the cluster's `MpiDefault`"
            ),
        ));
    }
    Ok(Some(value.to_string()))
}

/// The dependency types `slurm.after` takes. `aftercorr` pairs array tasks by index, and a
/// sweep's task indices are drover's own; `singleton` would hold back every array of the sweep
/// but one (they share a job name); `afterburstbuffer` is a site feature.
pub const AFTER_TYPES: [&str; 4] = ["afterok", "afterany", "afternotok", "after"];

/// `slurm.after` → dependency terms (`TYPE:JOBID[:JOBID...]`), each as `sbatch --dependency`
/// takes it: a bare job id is `afterok:<id>`; a job id may name an array task (`4242_7`) or
/// every task (`4242_*`); `after:` may add `+<minutes>`. Several terms in one string are joined
/// by `,` (all must hold). `?` (any one) is refused: drover adds its own terms, which must
/// hold as well. The terms go into a `#SBATCH` line, so only these characters pass.
fn check_after(value: &AfterFile) -> Result<Vec<String>, KeyError> {
    const KEY: &str = "slurm.after";
    let items: Vec<(String, AfterItem)> = match value {
        AfterFile::Id(id) => vec![(KEY.to_string(), AfterItem::Id(*id))],
        AfterFile::Text(text) => vec![(KEY.to_string(), AfterItem::Text(text.clone()))],
        AfterFile::List(list) => list.iter().enumerate().map(|(i, item)| (format!("{KEY}[{i}]"), item.clone())).collect(),
    };
    let mut terms = Vec::new();
    for (key, item) in items {
        let text = match item {
            AfterItem::Id(id) => id.to_string(),
            AfterItem::Text(text) => text,
        };
        if text.contains('?') {
            return Err(invalid(
                key,
                format!("`{text}`: `?` (start when any one holds) is not supported: the sweep's arrays also wait on each other, which must hold as well; list the jobs to wait for all of"),
            ));
        }
        for term in text.split(',').map(str::trim) {
            terms.push(after_term(&key, term)?);
        }
    }
    Ok(terms)
}

/// One `slurm.after` term, checked and with a bare job id made `afterok:<id>`.
fn after_term(key: &str, term: &str) -> Result<String, KeyError> {
    let job_id = |id: &str, plus: bool| {
        let (id, minutes) = match id.split_once('+') {
            Some((id, m)) if plus => (id, Some(m)),
            _ => (id, None),
        };
        let (job, task) = match id.split_once('_') {
            Some((job, task)) => (job, Some(task)),
            None => (id, None),
        };
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        // Slurm's job ids are 32-bit and start at 1 (`sbatch` refuses a dependency on job 0).
        let job_id = digits(job) && job.parse::<u32>().is_ok_and(|n| n > 0);
        job_id && task.is_none_or(|t| t == "*" || digits(t)) && minutes.is_none_or(digits)
    };
    if job_id(term, false) {
        return Ok(format!("afterok:{term}"));
    }
    let reason = match term.split_once(':') {
        _ if term == "singleton" => {
            "`singleton` would let only one of the sweep's arrays run at a time (they share a job name); drover's throttle (`slurm.throttle`) limits runs at once".to_string()
        }
        Some(("aftercorr", _)) => "`aftercorr` pairs array tasks by index, and a sweep's task indices are drover's own: wait for the whole job (`afterok`)".to_string(),
        Some((kind, ids)) if AFTER_TYPES.contains(&kind) => {
            if ids.split(':').all(|id| job_id(id, kind == "after")) {
                return Ok(term.to_string());
            }
            format!("`{term}`: expected job ids after `{kind}:` (such as `4242`, `4242_7` or `4242_*`, `:` between several)")
        }
        _ => format!(
            "`{term}`: expected a job id (the sweep waits until it has succeeded) or `TYPE:JOBID[:JOBID...]` as `sbatch --dependency` takes it, TYPE one of {}",
            AFTER_TYPES.join(", ")
        ),
    };
    Err(invalid(key, reason))
}

fn check_positive(key: &str, value: Option<u32>) -> Result<(), KeyError> {
    match value {
        Some(0) => Err(invalid(key, "must be at least 1")),
        _ => Ok(()),
    }
}

/// A `[slurm.arch]` entry: a machine name as `uname -m` prints it (it becomes a shell `case`
/// pattern, so only plain characters) and an absolute folder (the compute nodes read it, from
/// wherever the batch script starts).
fn check_arch(name: &str, dir: &Path) -> Result<(), KeyError> {
    let key = format!("slurm.arch.{name}");
    let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if name.is_empty() || name.len() > 32 || !name.chars().all(plain) {
        return Err(invalid(
            key,
            format!("`{name}` is not a machine name as `uname -m` prints it (such as x86_64, aarch64 or ppc64le)"),
        ));
    }
    let text = dir.to_string_lossy();
    crate::config::check_path_text(&text).map_err(|why| invalid(&key, why))?;
    if !dir.is_absolute() {
        return Err(invalid(key, format!("`{text}` is not an absolute path: the compute nodes read it, from wherever the batch script starts")));
    }
    Ok(())
}

fn check_resources(prefix: &str, r: &ResourcesFile) -> Result<(), KeyError> {
    let k = |name: &str| format!("{prefix}.{name}");
    for (name, value, extra) in [
        ("partition", &r.partition, ","),
        ("account", &r.account, ""),
        ("qos", &r.qos, ""),
        ("gres", &r.gres, ":,"),
        ("constraint", &r.constraint, ":,&|*[]()"),
    ] {
        if let Some(v) = value {
            check_name(&k(name), v, extra)?;
        }
    }
    if let Some(t) = &r.time {
        check_time(&k("time"), t)?;
    }
    if let Some(m) = &r.mem {
        check_mem(&k("mem"), m)?;
    }
    for (name, v) in [
        ("nodes", r.nodes),
        ("ntasks_per_node", r.ntasks_per_node),
        ("cpus_per_task", r.cpus_per_task),
        ("gpus_per_task", r.gpus_per_task),
    ] {
        check_positive(&k(name), v)?;
    }
    for (i, e) in r.extra.iter().flatten().enumerate() {
        check_extra(&format!("{prefix}.extra[{i}]"), e)?;
    }
    Ok(())
}

impl SlurmSettings {
    /// Validates the `[slurm]` table; `axes` are the sweep's axis keys (for `overrides.when`).
    /// The error is `(dotted key, reason)`; the caller adds the file.
    pub fn validate(file: SlurmFile, axes: &[String]) -> Result<SlurmSettings, KeyError> {
        let base = ResourcesFile {
            partition: file.partition,
            account: file.account,
            qos: file.qos,
            time: file.time,
            nodes: file.nodes,
            ntasks_per_node: file.ntasks_per_node,
            cpus_per_task: file.cpus_per_task,
            gpus_per_task: file.gpus_per_task,
            gres: file.gres,
            mem: file.mem,
            constraint: file.constraint,
            extra: file.extra,
        };
        check_resources("slurm", &base)?;
        let mut overrides = Vec::new();
        for (i, o) in file.overrides.iter().enumerate() {
            let prefix = format!("slurm.overrides[{i}]");
            if o.when.is_empty() {
                return Err((format!("{prefix}.when"), ConfigErrorKind::Missing));
            }
            for (key, value) in &o.when {
                if !axes.contains(key) {
                    let nested = (!key.contains('.')).then(|| crate::config::unquoted_dotted_key(key, value)).flatten();
                    return Err((
                        format!("{prefix}.when.{key}"),
                        nested.unwrap_or_else(|| ConfigErrorKind::UnknownKey { expected: axes.to_vec() }),
                    ));
                }
            }
            let set = o.resources();
            check_resources(&prefix, &set)?;
            overrides.push(Override { when: o.when.clone(), set });
        }
        check_positive("slurm.throttle", file.throttle)?;
        check_positive("slurm.max_array_size", file.max_array_size)?;
        check_positive("slurm.runs_per_task", file.runs_per_task)?;
        if file.runs_per_task.is_some_and(|k| k > MAX_RUNS_PER_TASK) {
            return Err(invalid("slurm.runs_per_task", format!("must be at most {MAX_RUNS_PER_TASK}")));
        }
        let signal = file.signal.unwrap_or_else(|| "USR1".into());
        let bare = signal.trim_start_matches("SIG").to_string();
        if !SIGNALS.contains(&bare.as_str()) {
            return Err(invalid("slurm.signal", format!("`{signal}`: expected one of {}", SIGNALS.join(", "))));
        }
        let checkpoint_minutes = file.checkpoint_minutes;
        if checkpoint_minutes.is_some_and(|m| !(m.is_finite() && (0.01..=1e6).contains(&m))) {
            return Err(invalid("slurm.checkpoint_minutes", "must be a number of minutes between 0.01 and 1000000"));
        }
        let poll_seconds = file.poll_seconds.unwrap_or(DEFAULT_POLL_SECONDS);
        if !(poll_seconds.is_finite() && (0.05..=3600.0).contains(&poll_seconds)) {
            return Err(invalid("slurm.poll_seconds", "must be between 0.05 and 3600"));
        }
        let d = SlurmSettings::default();
        let signal_seconds = file.signal_seconds.unwrap_or(d.signal_seconds);
        let times = std::iter::once(("slurm.time".to_string(), &base.time))
            .chain(overrides.iter().enumerate().map(|(i, o)| (format!("slurm.overrides[{i}].time"), &o.set.time)));
        for (key, time) in times {
            if let Some(time) = time {
                check_signal_fits(&key, time, signal_seconds)?;
            }
        }
        for (name, dir) in &file.arch {
            check_arch(name, dir)?;
        }
        let mpi = match &file.mpi {
            Some(value) => check_mpi(value)?,
            None => d.mpi,
        };
        let after = file.after.as_ref().map(check_after).transpose()?.unwrap_or_default();
        Ok(SlurmSettings {
            base,
            overrides,
            throttle: file.throttle,
            max_retries: file.max_retries.unwrap_or(d.max_retries),
            max_timeouts: file.max_timeouts.unwrap_or(d.max_timeouts),
            max_preemptions: file.max_preemptions.unwrap_or(d.max_preemptions),
            fail_fast: file.fail_fast.map_or(d.fail_fast, |n| (n > 0).then_some(n)),
            checkpoint_minutes,
            signal: bare,
            signal_seconds,
            max_array_size: file.max_array_size,
            runs_per_task: file.runs_per_task.unwrap_or(d.runs_per_task),
            poll_seconds,
            mpi,
            after,
            arch: file.arch,
        })
    }

    /// The resources of a run with these axis values: the base, then each matching override.
    pub fn resources_for(&self, axes: &BTreeMap<String, Value>) -> Resources {
        let mut r = self.base.clone();
        for o in &self.overrides {
            if o.matches(axes) {
                let s = &o.set;
                macro_rules! take {
                    ($($f:ident),*) => { $( if s.$f.is_some() { r.$f = s.$f.clone(); } )* };
                }
                take!(partition, account, qos, time, nodes, ntasks_per_node, cpus_per_task, gpus_per_task, gres, mem, constraint, extra);
            }
        }
        let mut options = Vec::new();
        let mut push = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                options.push((k, v));
            }
        };
        push("partition", r.partition);
        push("account", r.account);
        push("qos", r.qos);
        push("time", r.time);
        push("nodes", r.nodes.map(|n| n.to_string()));
        push("ntasks-per-node", r.ntasks_per_node.map(|n| n.to_string()));
        push("cpus-per-task", r.cpus_per_task.map(|n| n.to_string()));
        push("gpus-per-task", r.gpus_per_task.map(|n| n.to_string()));
        push("gres", r.gres);
        push("mem", r.mem);
        push("constraint", r.constraint);
        Resources { options, extra: r.extra.unwrap_or_default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml_text: &str) -> SlurmFile {
        toml::from_str(toml_text).expect("valid slurm table")
    }

    #[test]
    fn values_that_could_run_commands_are_refused_with_their_key() {
        let cases = [
            ("partition = \"a; rm -rf ~\"", "slurm.partition"),
            ("account = \"$(id)\"", "slurm.account"),
            ("time = \"10:00\\n#SBATCH --x\"", "slurm.time"),
            ("mem = \"8G; reboot\"", "slurm.mem"),
            ("extra = [\"--comment=`id`\"]", "slurm.extra[0]"),
            ("extra = [\"x\"]", "slurm.extra[0]"),
            ("extra = [\"--a\\n--b\"]", "slurm.extra[0]"),
            ("signal = \"TERM\"", "slurm.signal"),
            ("throttle = 0", "slurm.throttle"),
            ("[[overrides]]\nwhen = { \"params.x\" = 1 }\nqos = \"a b\"", "slurm.overrides[0].qos"),
            ("[[overrides]]\nwhen = { \"params.nope\" = 1 }", "slurm.overrides[0].when.params.nope"),
            ("[arch]\n\"x86-64\" = \"/opt/x\"", "slurm.arch.x86-64"),
            ("[arch]\n\"a)\" = \"/opt/x\"", "slurm.arch.a)"),
            ("[arch]\naarch64 = \"builds/arm\"", "slurm.arch.aarch64"),
            ("[arch]\naarch64 = \"/opt/a\\nb\"", "slurm.arch.aarch64"),
            ("checkpoint_minutes = 0", "slurm.checkpoint_minutes"),
            ("checkpoint_minutes = -5", "slurm.checkpoint_minutes"),
            ("checkpoint_minutes = nan", "slurm.checkpoint_minutes"),
            ("mpi = \"pmix; id\"", "slurm.mpi"),
            ("mpi = \"$(id)\"", "slurm.mpi"),
            ("mpi = \"pmix\\n#SBATCH --uid=0\"", "slurm.mpi"),
            ("mpi = \"pmix v4\"", "slurm.mpi"),
            ("mpi = \"pmix-v4\"", "slurm.mpi"),
            ("mpi = \"\"", "slurm.mpi"),
            ("mpi = \"list\"", "slurm.mpi"),
            ("runs_per_task = 0", "slurm.runs_per_task"),
            ("runs_per_task = 1001", "slurm.runs_per_task"),
            ("after = \"afterok:1;id\"", "slurm.after"),
            ("after = \"afterok:1\\n#SBATCH --uid=0\"", "slurm.after"),
            ("after = \"afterok:$(id)\"", "slurm.after"),
            ("after = [12, \"afterok:1?afterany:2\"]", "slurm.after[1]"),
            ("after = \"singleton\"", "slurm.after"),
            ("after = \"aftercorr:12\"", "slurm.after"),
            ("after = \"afterok:\"", "slurm.after"),
            ("after = \"afterok:12,\"", "slurm.after"),
            ("after = \"afterok:12+5\"", "slurm.after"),
            ("after = \"later:12\"", "slurm.after"),
            ("after = \"afterok:12_x\"", "slurm.after"),
            ("after = 0", "slurm.after"),
            ("after = 99999999999", "slurm.after"),
        ];
        for (text, key) in cases {
            let err = SlurmSettings::validate(file(text), &["params.x".to_string()]).expect_err(text);
            assert_eq!(err.0, key, "{text}: {}", err.1);
        }
    }

    /// `slurm.after` takes what `sbatch --dependency` takes for the user's own jobs: a bare job
    /// id waits for its success; several terms (a list, or `,` in one string) all hold.
    #[test]
    fn after_takes_job_ids_and_dependency_terms() {
        let after = |text: &str| SlurmSettings::validate(file(text), &[]).expect(text).after;
        assert_eq!(after(""), Vec::<String>::new());
        assert_eq!(after("after = 4242"), ["afterok:4242"]);
        assert_eq!(after("after = \"4242_3\""), ["afterok:4242_3"]);
        assert_eq!(after("after = \"afterany:1:2, afternotok:3_*\""), ["afterany:1:2", "afternotok:3_*"]);
        assert_eq!(after("after = [7, \"after:8+10\", \"afterok:9\"]"), ["afterok:7", "after:8+10", "afterok:9"]);
        let err = SlurmSettings::validate(file("extra = [\"--dependency=afterok:1\"]"), &[]).expect_err("extra");
        assert!(err.1.to_string().contains("give your own as `slurm.after`"), "{}", err.1);
        let err = SlurmSettings::validate(file("after = \"later:12\""), &[]).expect_err("type");
        assert!(err.1.to_string().contains("TYPE one of afterok, afterany, afternotok, after"), "{}", err.1);
    }

    /// Review finding (research): `when = { run.num_envs = 64 }` is a nested table to TOML.
    #[test]
    fn an_unquoted_dotted_when_key_is_told_to_be_quoted() {
        let axes = ["run.num_envs".to_string()];
        let err = SlurmSettings::validate(file("[[overrides]]\nwhen = { run.num_envs = 64 }\nmem = \"8G\""), &axes).expect_err("nested");
        assert_eq!(err.0, "slurm.overrides[0].when.run");
        assert_eq!(
            err.1.to_string(),
            "found a table: TOML reads the unquoted key run.num_envs as nested tables; axis names are dotted keys, so quote the axis name: \"run.num_envs\" = 64"
        );
    }

    /// `extra` cannot take back an option drover's script sets: with another `--job-name` a
    /// running run read as lost and was submitted twice more into the same directory.
    #[test]
    fn extra_options_that_drover_sets_itself_are_refused() {
        for extra in [
            "--job-name=foo", "-J foo", "-Jfoo", "--array=0-3", "-a 1", "--comment=x", "--output=o.log", "-o x", "--error=e", "--signal=B:USR2@60", "--no-requeue",
            "--dependency=afterok:1", "--chdir=/tmp", "--parsable", "--job=foo", "--arr=1", "--exclusive --job-name=mine", "-M other", "--clusters=b",
            // Review finding 6: grouped short options and short prefixes (sbatch 22.05 takes each).
            "-HJother", "-vJx", "-Ho/tmp/x", "-vvd afterok:1", "--j=other", "--jo=x", "--hold -HJx", "-W", "--wait",
        ] {
            let text = format!("extra = [{extra:?}]");
            let err = SlurmSettings::validate(file(&text), &[]).expect_err(extra);
            assert_eq!(err.0, "slurm.extra[0]", "{extra}");
            assert!(err.1.to_string().contains("is drover's to set") || err.1.to_string().contains("drover sets `--dependency` itself"), "{extra}: {}", err.1);
        }
        for extra in ["--exclusive", "--mail-type=END", "--exclude=node1", "-w node2", "--job-name-is-not-this", "-H", "--hold", "-pJx", "-vH", "--part=debug", "--reservation=r"] {
            let text = format!("extra = [{extra:?}]");
            assert!(SlurmSettings::validate(file(&text), &[]).is_ok(), "{extra}");
        }
        // sbatch refuses an ambiguous abbreviation; so does the check, naming what it could be.
        for (extra, candidates) in [("--o=x", "`--open-mode`, `--output`"), ("--co=x", "`--comment`, `--constraint`"), ("--wai", "`--wait`, `--wait-all-nodes`")] {
            let err = SlurmSettings::validate(file(&format!("extra = [{extra:?}]")), &[]).expect_err(extra);
            assert!(err.1.to_string().contains("an abbreviation sbatch cannot resolve") && err.1.to_string().contains(candidates), "{extra}: {}", err.1);
        }
    }

    #[test]
    fn overrides_apply_to_matching_runs_only() {
        let s = SlurmSettings::validate(
            file("partition = \"debug\"\nmem = \"1G\"\ntime = \"10\"\nextra = [\"--exclusive\"]\n[[overrides]]\nwhen = { \"params.x\" = 2 }\nmem = \"8G\"\ngpus_per_task = 1"),
            &["params.x".to_string()],
        )
        .expect("valid");
        let one = s.resources_for(&BTreeMap::from([("params.x".to_string(), Value::from(1))]));
        let two = s.resources_for(&BTreeMap::from([("params.x".to_string(), Value::from(2))]));
        assert_eq!(
            one.sbatch_lines(),
            ["#SBATCH --partition=debug", "#SBATCH --time=10", "#SBATCH --mem=1G", "#SBATCH --exclusive"]
        );
        assert_eq!(
            two.sbatch_lines(),
            ["#SBATCH --partition=debug", "#SBATCH --time=10", "#SBATCH --gpus-per-task=1", "#SBATCH --mem=8G", "#SBATCH --exclusive"]
        );
        assert_eq!(s.signal, "USR1");
        assert_eq!((s.max_retries, s.max_timeouts, s.max_preemptions), (2, 3, 10));
        assert_eq!(s.fail_fast, Some(DEFAULT_FAIL_FAST));
        assert_eq!(s.runs_per_task, 1, "one run per task unless asked");
        assert_eq!(SlurmSettings::validate(file("runs_per_task = 8"), &[]).expect("valid").runs_per_task, 8);
        assert_eq!(SlurmSettings::validate(file("fail_fast = 0"), &[]).expect("valid").fail_fast, None, "0 turns it off");
        assert_eq!(SlurmSettings::validate(file("fail_fast = 20"), &[]).expect("valid").fail_fast, Some(20));
        assert_eq!((s.checkpoint_minutes, s.poll_seconds), (None, DEFAULT_POLL_SECONDS));
        let periodic = SlurmSettings::validate(file("checkpoint_minutes = 30"), &[]).expect("valid");
        assert_eq!(periodic.checkpoint_minutes, Some(30.0));
    }

    /// `slurm.mpi`: `pmix` unless set (the batch script's `--mpi` before the setting), any
    /// plugin name as given, and `"default"` for none (srun then takes the cluster's
    /// `MpiDefault`). Refusals say what is allowed and why; `list` would print instead of run.
    #[test]
    fn the_mpi_type_defaults_to_pmix_and_default_leaves_it_to_the_cluster() {
        let mpi = |text: &str| SlurmSettings::validate(file(text), &[]).expect(text).mpi;
        assert_eq!(mpi(""), Some("pmix".to_string()));
        assert_eq!(SlurmSettings::default().mpi.as_deref(), Some(DEFAULT_MPI));
        for name in ["pmi2", "pmix_v4", "cray_shasta", "none"] {
            assert_eq!(mpi(&format!("mpi = {name:?}")), Some(name.to_string()), "{name}");
        }
        assert_eq!(mpi("mpi = \"default\""), None);
        let why = |text: &str| SlurmSettings::validate(file(text), &[]).expect_err(text).1.to_string();
        let bad = why("mpi = \"pmix; id\"");
        assert!(bad.starts_with("invalid value: `pmix; id`: expected an MPI plugin type of srun") && bad.contains("lowercase letters, digits and `_`"), "{bad}");
        assert!(why("mpi = \"PMIx\"").contains("lowercase"), "srun's names are lowercase");
        assert!(bad.contains("\"default\" for the cluster's `MpiDefault`"), "{bad}");
        let list = why("mpi = \"list\"");
        assert!(list.contains("`list` makes srun print its MPI plugin types instead of starting the ranks"), "{list}");
    }

    #[test]
    fn arch_folders_are_kept_by_machine_name() {
        let s = SlurmSettings::validate(file("[arch]\naarch64 = \"/shared/drover/arm\"\nppc64le = \"/shared/p\""), &[]).expect("valid");
        assert_eq!(
            s.arch,
            BTreeMap::from([("aarch64".to_string(), PathBuf::from("/shared/drover/arm")), ("ppc64le".to_string(), PathBuf::from("/shared/p"))])
        );
        let err = SlurmSettings::validate(file("[arch]\naarch64 = \"arm\""), &[]).expect_err("relative");
        assert!(err.1.to_string().contains("`arm` is not an absolute path"), "{}", err.1);
        assert!(SlurmSettings::validate(file(""), &[]).expect("empty").arch.is_empty());
    }

    #[test]
    fn gpu_requests_are_recognised_in_options_and_raw_lines() {
        let with = |options: Vec<(&'static str, &str)>, extra: &[&str]| Resources {
            options: options.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
            extra: extra.iter().map(|e| e.to_string()).collect(),
        };
        assert!(with(vec![("gpus-per-task", "1")], &[]).requests_gpus());
        assert!(with(vec![("gres", "gpu:a100:2")], &[]).requests_gpus());
        assert!(with(vec![], &["--gpus=4"]).requests_gpus());
        assert!(with(vec![], &["--gres=gpu:1"]).requests_gpus());
        assert!(with(vec![], &["-G 2"]).requests_gpus());
        assert!(!with(vec![("partition", "gpu"), ("gres", "tmpfs:10G")], &["--exclusive"]).requests_gpus());
    }

    #[test]
    fn slurm_time_formats() {
        for ok in ["30", "10:00", "01:30:00", "2-00", "2-00:00:00"] {
            assert!(check_time("t", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1h", "1:2:3:4", "-5", "10:00 "] {
            assert!(check_time("t", bad).is_err(), "{bad}");
        }
        let secs: Vec<Option<u64>> = ["30", "10:05", "01:30:00", "2-00", "2-01:30", "1-00:00:07", "0"].iter().map(|t| time_seconds(t)).collect();
        assert_eq!(secs, [Some(1800), Some(605), Some(5400), Some(172_800), Some(178_200), Some(86_407), None]);
    }

    /// A time limit no longer than `signal_seconds` would send the checkpoint signal as each
    /// attempt starts: refused, naming both keys, in the base table and in overrides.
    #[test]
    fn a_time_limit_within_the_signal_lead_is_refused() {
        let err = SlurmSettings::validate(file("time = \"00:00:30\"\nsignal_seconds = 60"), &[]).expect_err("30 s limit, 60 s lead");
        assert_eq!(err.0, "slurm.signal_seconds");
        let why = err.1.to_string();
        assert!(why.contains("`slurm.time` = `00:00:30` (30 s)") && why.contains("lower `slurm.signal_seconds`"), "{why}");
        // The default lead is 120 s.
        assert_eq!(SlurmSettings::validate(file("time = \"2\""), &[]).expect_err("2 min, 120 s lead").0, "slurm.signal_seconds");
        let text = "time = \"10\"\n[[overrides]]\nwhen = { \"params.x\" = 1 }\ntime = \"1\"";
        let err = SlurmSettings::validate(file(text), &["params.x".to_string()]).expect_err("override");
        assert!(err.1.to_string().contains("`slurm.overrides[0].time` = `1`"), "{}", err.1);
        for ok in ["time = \"3\"", "time = \"0\"", "time = \"00:01:00\"\nsignal_seconds = 20", "signal_seconds = 600"] {
            assert!(SlurmSettings::validate(file(ok), &[]).is_ok(), "{ok}");
        }
    }

    /// Review finding (Slurm user): `when = { "run.num_envs" = 16.0 }` for a grid of `[8, 16]`
    /// matched no run (serde_json keeps `16` and `16.0` apart), so every run kept the base
    /// resources. Numbers match by value; text still never matches a number.
    #[test]
    fn a_when_value_matches_the_same_number_however_it_is_written() {
        let axes = ["run.num_envs".to_string(), "params.x".to_string()];
        let text = "mem = \"1G\"\n[[overrides]]\nwhen = { \"run.num_envs\" = 16.0 }\nmem = \"8G\"\n[[overrides]]\nwhen = { \"params.x\" = \"0.1\" }\nmem = \"2G\"";
        let s = SlurmSettings::validate(file(text), &axes).expect("valid");
        let mem = |envs: Value, x: Value| {
            s.resources_for(&BTreeMap::from([("run.num_envs".to_string(), envs), ("params.x".to_string(), x)])).sbatch_lines()
        };
        assert_eq!(mem(Value::from(16), Value::from(0.2)), ["#SBATCH --mem=8G"], "16 is 16.0");
        assert_eq!(mem(Value::from(16.0), Value::from(0.2)), ["#SBATCH --mem=8G"]);
        assert_eq!(mem(Value::from(8), Value::from(0.2)), ["#SBATCH --mem=1G"]);
        assert_eq!(mem(Value::from(8), Value::from(0.1)), ["#SBATCH --mem=1G"], "text is not a number");
        assert_eq!(mem(Value::from(8), Value::from("0.1")), ["#SBATCH --mem=2G"]);
        assert!(same_axis_value(&serde_json::json!([64, 64.0]), &serde_json::json!([64.0, 64])), "lists element by element");
        assert!(!same_axis_value(&Value::from(u64::MAX), &Value::from(u64::MAX - 1)), "whole numbers exactly");
    }
}
