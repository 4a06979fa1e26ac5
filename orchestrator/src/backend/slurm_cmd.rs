//! The one place that runs Slurm's commands: every call has a timeout, is retried with
//! exponential backoff when the controller is busy or stalled, and fails with a `SlurmError`
//! that keeps the command line and Slurm's stderr.
//!
//! `sbatch` is never simply retried: a timed-out `sbatch` may have submitted the job after all,
//! so `Slurm::submit` first looks for it by job name and comment (`squeue`), and retries only
//! when it is not there.
//!
//! `srun --mpi=list` (`Slurm::mpi_types`) is the one question whose failure is no error: it
//! only feeds a warning, so it is asked once, briefly, and any trouble means "no answer".

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::SlurmError;
use crate::subprocess::{Finished, Ran};

/// Timeouts and retries of Slurm calls.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// How long one call may take.
    pub timeout: Duration,
    /// Attempts per call (1 = no retry).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub backoff: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        CallPolicy { timeout: Duration::from_secs(30), attempts: 4, backoff: Duration::from_millis(500) }
    }
}

impl crate::error::SlurmError {
    /// Whether the controller did not answer (timed out, or said it is busy or unreachable)
    /// rather than answered "no": what a waiting `drover run` sits out.
    pub fn is_unavailable(&self) -> bool {
        match self {
            crate::error::SlurmError::Timeout { .. } => true,
            crate::error::SlurmError::Refused { stderr, .. } => TRANSIENT.iter().any(|t| stderr.contains(t)),
            _ => false,
        }
    }
}

impl crate::error::SlurmError {
    /// The reason, when Slurm refused a submission because the user, account or QOS already
    /// has as many jobs queued as it may (`MaxSubmitJobs`, `GrpSubmitJobs`; each array task
    /// counts as a job): not a bad setting but back-pressure, which jobs ending relieve.
    pub fn submit_limit(&self) -> Option<String> {
        match self {
            crate::error::SlurmError::Refused { stderr, .. } => submit_limit_reason(stderr),
            _ => None,
        }
    }
}

/// The submit-limit reason in `sbatch`'s stderr (see [`SlurmError::submit_limit`]). Slurm
/// prints the policy's reason (`sbatch: error: QOSMaxSubmitJobPerUserLimit`) before the generic
/// "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
/// which also covers size and time limits: a named reason decides, and only without one does
/// the generic message count as a submit limit (older Slurm, or a site's job_submit plugin).
///
/// `sbatch`'s "Slurm temporarily unable to accept job" ([`SBATCH_RETRYING`]) is the cluster's
/// `MaxJobCount` ([`JOB_COUNT_LIMIT`]): back-pressure too, which jobs ending (and Slurm
/// forgetting them, `MinJobAge` later) relieve.
pub fn submit_limit_reason(stderr: &str) -> Option<String> {
    if SBATCH_RETRYING.iter().any(|said| stderr.contains(said)) {
        return Some(JOB_COUNT_LIMIT.to_string());
    }
    let words = || stderr.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| w.starts_with("QOS") || w.starts_with("Assoc"));
    if let Some(w) = words().find(|w| w.contains("SubmitJob")) {
        return Some(w.to_string());
    }
    let named_other = words().any(|w| w.ends_with("Limit") || w.starts_with("QOSMin") || w.starts_with("QOSMax"));
    (!named_other && stderr.contains("job submit limit")).then(|| "job submit limit".to_string())
}

/// How messages name the submit limit `limit` (a [`submit_limit_reason`]), and what makes
/// room under it: (`Slurm's submit limit (QOSMaxSubmitJobPerUserLimit)`, `jobs of yours end`).
pub fn submit_limit_words(limit: &str) -> (String, &'static str) {
    if limit == JOB_COUNT_LIMIT {
        ("Slurm's MaxJobCount (the jobs the whole cluster holds at once)".to_string(), "jobs end and Slurm forgets them")
    } else {
        (format!("Slurm's submit limit ({limit})"), "jobs of yours end")
    }
}

/// The `[slurm]` setting an `sbatch` refusal names, by Slurm's wording (22.05 and later), for
/// the error to point at it; `None` when the answer names none drover knows.
pub fn setting_refused(stderr: &str) -> Option<&'static str> {
    // The generic submit-limit line speaks of "size and/or time limits" without naming one.
    if submit_limit_reason(stderr).is_some() {
        return None;
    }
    let text = stderr.to_ascii_lowercase();
    const NAMED: [(&str, &str); 9] = [
        ("invalid partition", "`slurm.partition`"),
        ("invalid account", "`slurm.account`"),
        ("invalid qos", "`slurm.qos`"),
        ("time limit", "`slurm.time`"),
        ("memory specification", "`slurm.mem`"),
        ("invalid generic resource", "`slurm.gres` or `slurm.gpus_per_task`"),
        ("invalid feature specification", "`slurm.constraint`"),
        ("node count specification", "`slurm.nodes`"),
        ("requested node configuration is not available", "`slurm.cpus_per_task`, `mem` or `gpus_per_task` (more than any node of the partition has)"),
    ];
    NAMED.iter().find(|(words, _)| text.contains(words)).map(|(_, key)| *key)
}

/// Slurm's error messages that mean "busy, try again" rather than "no".
const TRANSIENT: &[&str] = &[
    "Socket timed out",
    "Unable to contact slurm controller",
    "Zero Bytes were transmitted or received",
    "Resource temporarily unavailable",
    "Connection refused",
    "slurm_persist_conn",
    "Communication connection failure",
];

/// How long `srun --mpi=list` may take: it loads this machine's MPI plugins and asks the
/// controller nothing, so it ends in well under a second where it works at all.
const MPI_LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// This process's real uid: the user its `sbatch` submits as.
pub fn current_uid() -> u32 {
    // SAFETY: getuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::getuid() }
}

/// How to reach Slurm: the command directory (empty: `PATH`) and the call policy.
#[derive(Debug, Clone, Default)]
pub struct Slurm {
    /// Directory holding `sbatch`, `squeue`, ... (`None`: found on `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// Timeouts and retries.
    pub policy: CallPolicy,
}

/// One line of `squeue`: an array task of one of our submissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The array's job id (`%F`).
    pub array_job_id: String,
    /// The task index (`%K`), `None` for a job that is not an array task.
    pub task: Option<u32>,
    /// Slurm's state name (`PENDING`, `RUNNING`, `COMPLETED`, `TIMEOUT`, ...).
    pub state: String,
    /// Slurm's reason (`None`, `Priority`, `BeginTime`, ...).
    pub reason: String,
    /// The job comment, where drover stores the submission number.
    pub comment: String,
    /// The dependency terms still to hold (`%E`: `afterok:4242(unfulfilled),afterany:41_*(unfulfilled)`;
    /// a term that held is gone from it), `None` when none are left or `squeue` did not say.
    pub dependency: Option<String>,
}

/// Outcome of a single attempt.
enum Attempt {
    Done(Finished),
    /// Killed at the timeout, with what it had printed on stderr.
    TimedOut(String),
    /// Killed as it said it would sleep and retry ([`SBATCH_RETRYING`]), with its stderr.
    Retrying(String),
}

/// What `sbatch` prints when the controller refuses a job for now (`EAGAIN`: most often the
/// cluster holds `MaxJobCount` jobs already, every array task counting one) or its job table
/// is full, before it sleeps and asks again, up to 15 times over two minutes (Slurm 22.05
/// `sbatch.c`). drover stops it there: the refusal is back-pressure it waits out itself
/// ([`submit_limit_reason`]), rather than a stalled `sbatch` that times out without a word.
pub const SBATCH_RETRYING: [&str; 2] = ["Slurm temporarily unable to accept job", "Slurm job queue full"];

/// The name drover gives the limit behind an [`SBATCH_RETRYING`] refusal.
pub const JOB_COUNT_LIMIT: &str = "MaxJobCount";

impl Slurm {
    fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    fn command_line(program: &str, args: &[String]) -> String {
        let mut line = program.to_string();
        for a in args {
            line.push(' ');
            line.push_str(&crate::words::shell_quote(a));
        }
        line
    }

    /// Runs `program args` once, killing it (and what it started) at the timeout, without the
    /// input variables that would override what drover asks ([`scrub_environment`]; for
    /// sbatch, `script_options` are the options its batch script sets).
    /// A program that prints one of `stop_on` on stderr is killed there ([`Attempt::Retrying`]).
    fn attempt(&self, program: &str, args: &[String], cwd: Option<&Path>, script_options: &[&str], stop_on: &[&str]) -> Result<Attempt, SlurmError> {
        refuse_other_cluster()?;
        let mut cmd = Command::new(self.program(program));
        cmd.args(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let present = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
        warn_once_removed(&scrub_environment(&mut cmd, script_options, present));
        let ran = crate::subprocess::run_watched(&mut cmd, None, self.policy.timeout, stop_on)
            .map_err(|source| SlurmError::Spawn { command: Self::command_line(program, args), source })?;
        Ok(match ran {
            Ran::Finished(done) => Attempt::Done(done),
            Ran::TimedOut(printed) => Attempt::TimedOut(printed.stderr),
            Ran::Stopped(printed) => Attempt::Retrying(printed.stderr),
        })
    }

    /// Runs a read-only or idempotent command with timeout and retries; stdout on success.
    pub fn call(&self, program: &str, args: &[String]) -> Result<String, SlurmError> {
        let line = Self::command_line(program, args);
        let mut wait = self.policy.backoff;
        let attempts = self.policy.attempts.max(1);
        for n in 1..=attempts {
            match self.attempt(program, args, None, &[], &[])? {
                Attempt::Done(f) if f.status.success() => return Ok(f.stdout),
                Attempt::Done(f) => {
                    let transient = TRANSIENT.iter().any(|t| f.stderr.contains(t));
                    if !transient || n == attempts {
                        return Err(SlurmError::Refused { command: line, status: f.status.to_string(), stderr: f.stderr });
                    }
                    tracing::warn!(command = %line, "Slurm is busy ({}); retrying in {:?}", f.stderr.trim(), wait);
                }
                // Not watched for: a call's stop phrases are none.
                Attempt::TimedOut(stderr) | Attempt::Retrying(stderr) if n == attempts => {
                    return Err(SlurmError::Timeout { command: line, attempts, timeout_s: self.policy.timeout.as_secs_f64(), stderr });
                }
                Attempt::TimedOut(_) | Attempt::Retrying(_) => tracing::warn!(command = %line, "timed out; retrying in {:?}", wait),
            }
            std::thread::sleep(wait);
            wait *= 2;
        }
        unreachable!("the last attempt returns")
    }

    /// The cluster's limits on submissions, from `scontrol show config` ([`ClusterLimits`]).
    pub fn cluster_limits(&self) -> Result<ClusterLimits, SlurmError> {
        let args = vec!["show".to_string(), "config".to_string()];
        let out = self.call("scontrol", &args)?;
        parse_cluster_limits(&out).ok_or_else(|| SlurmError::Parse {
            command: Self::command_line("scontrol", &args),
            reason: "no `MaxArraySize = <n>` line".into(),
        })
    }

    /// Every task of the jobs named `job_name`, in any state Slurm still remembers: one call.
    /// With `user` (a uid), only that user's jobs: the controller then filters by user itself,
    /// where by name alone `squeue` loads the whole job table, which on a busy cluster is the
    /// cost of every poll.
    pub fn queue(&self, job_name: &str, user: Option<u32>) -> Result<Vec<QueueEntry>, SlurmError> {
        let args: Vec<String> = ["--noheader", "--array", "--states=all", "--format=%F|%K|%T|%r|%k|%E"]
            .iter()
            .map(|s| s.to_string())
            .chain(user.map(|uid| format!("--user={uid}")))
            .chain([format!("--name={job_name}")])
            .collect();
        let out = self.call("squeue", &args)?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                parse_queue_line(l).ok_or_else(|| SlurmError::Parse {
                    command: Self::command_line("squeue", &args),
                    reason: format!("unexpected line `{l}`"),
                })
            })
            .collect()
    }

    /// The cluster's nodes as (hostname, address) (`sinfo --Node --format=%n|%o`), or `None`
    /// when Slurm does not say: one question, only asked for a warning.
    pub fn node_hosts(&self) -> Option<Vec<(String, String)>> {
        let args: Vec<String> = ["--noheader", "--Node", "--format=%n|%o"].iter().map(|s| s.to_string()).collect();
        let out = Slurm { policy: CallPolicy { attempts: 1, ..self.policy.clone() }, ..self.clone() }.call("sinfo", &args).ok()?;
        let nodes: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| l.trim().split_once('|'))
            .map(|(name, addr)| (name.trim().to_string(), addr.trim().to_string()))
            .collect();
        (!nodes.is_empty()).then_some(nodes)
    }

    /// The jobs `ids` (plain job ids or array job ids) that Slurm still lists, in any state,
    /// with their states (`%T`): keyed by each listed task's array job id (`%F`, so an array's
    /// key gathers every task's state), job id (`%A`) and task (`%i`, `4242_7`); `--array` lists
    /// an array's pending tasks one by one. An id Slurm does not list has no key: `squeue
    /// --jobs=<id>` refuses with "Invalid job id specified" for a job it does not know, and
    /// "Invalid job id: <id>" for an id beyond its job id range (neither is an error here).
    pub fn known_jobs(&self, ids: &[String]) -> Result<BTreeMap<String, Vec<String>>, SlurmError> {
        let mut known: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // One call per id: an id beyond the job id range fails the whole call, the known ones
        // with it (22.05).
        for id in ids {
            let args: Vec<String> = ["--noheader", "--array", "--states=all", "--format=%F|%A|%i|%T"].iter().map(|s| s.to_string()).chain([format!("--jobs={id}")]).collect();
            let out = match self.call("squeue", &args) {
                Ok(out) => out,
                Err(SlurmError::Refused { stderr, .. }) if stderr.contains("Invalid job id") => continue,
                Err(e) => return Err(e),
            };
            for line in out.lines().filter(|l| !l.trim().is_empty()) {
                let fields: Vec<&str> = line.split('|').map(str::trim).collect();
                let (keys, state) = if fields.len() == 4 { (&fields[..3], Some(fields[3])) } else { (&fields[..], None) };
                // A plain job is its own array id and task: one state, not three.
                let keys: BTreeSet<&str> = keys.iter().copied().filter(|k| !k.is_empty()).collect();
                for key in keys {
                    known.entry(key.to_string()).or_default().extend(state.map(str::to_string));
                }
            }
        }
        Ok(known)
    }

    /// Whether user `uid` has any job in the queue (pending, running, ...): a submit limit
    /// that refuses even one task while the user has none is no back-pressure that jobs
    /// ending relieve (a limit of 0, a missing `--account`/`--qos`).
    pub fn user_has_jobs(&self, uid: u32) -> Result<bool, SlurmError> {
        let args = vec!["--noheader".to_string(), "--format=%i".to_string(), format!("--user={uid}")];
        Ok(self.call("squeue", &args)?.lines().any(|l| !l.trim().is_empty()))
    }

    /// Submits `script` (run from `cwd`, the results directory's `slurm/`), never twice: after
    /// a timeout the queue is searched for `job_name` + `comment` before trying again. Returns
    /// the array's job id.
    pub fn submit(&self, script: &Path, cwd: &Path, job_name: &str, comment: &str) -> Result<String, SlurmError> {
        let args = vec!["--parsable".to_string(), output_option(cwd), script.display().to_string()];
        let line = Self::command_line("sbatch", &args);
        // An unreadable script fails sbatch itself, which says so.
        let script_text = std::fs::read_to_string(cwd.join(script)).unwrap_or_default();
        let script_options = crate::backend::sbatch_options::script_options(&script_text);
        let mut wait = self.policy.backoff;
        let attempts = self.policy.attempts.max(1);
        for n in 1..=attempts {
            match self.attempt("sbatch", &args, Some(cwd), &script_options, &SBATCH_RETRYING)? {
                Attempt::Done(f) if f.status.success() => {
                    // `--parsable` prints `<jobid>[;<cluster>]`.
                    let id = f.stdout.trim().split(';').next().unwrap_or_default().to_string();
                    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
                        return Err(SlurmError::Parse { command: line, reason: format!("no job id in `{}`", f.stdout.trim()) });
                    }
                    return Ok(id);
                }
                Attempt::Done(f) => {
                    let transient = TRANSIENT.iter().any(|t| f.stderr.contains(t));
                    if !transient || n == attempts {
                        return Err(SlurmError::Refused { command: line, status: f.status.to_string(), stderr: f.stderr });
                    }
                    tracing::warn!(command = %line, "Slurm is busy ({}); retrying in {:?}", f.stderr.trim(), wait);
                }
                // sbatch prints it after the controller said no and before it sleeps (1 s) to ask
                // again, so the job was normally not submitted: a refusal. But a drover stalled
                // for that second (an overloaded login node) kills an sbatch whose retry may
                // have been accepted; a refusal recorded then would hide a live array from
                // status and cancel and submit its runs twice: look first, as after a timeout.
                Attempt::Retrying(stderr) => {
                    if let Some(id) = self.find_submitted(job_name, comment)? {
                        tracing::warn!(command = %line, job = %id, "sbatch was stopped as it retried, but its retry was submitted");
                        return Ok(id);
                    }
                    return Err(SlurmError::Refused { command: line, status: "stopped by drover as it began to retry".into(), stderr });
                }
                Attempt::TimedOut(stderr) => {
                    // The controller may have accepted it: look before submitting again.
                    if let Some(id) = self.find_submitted(job_name, comment)? {
                        tracing::warn!(command = %line, job = %id, "sbatch timed out but the job was submitted");
                        return Ok(id);
                    }
                    if n == attempts {
                        return Err(SlurmError::Timeout { command: line, attempts, timeout_s: self.policy.timeout.as_secs_f64(), stderr });
                    }
                    tracing::warn!(command = %line, "sbatch timed out and the job is not queued; retrying in {:?}", wait);
                }
            }
            std::thread::sleep(wait);
            wait *= 2;
        }
        unreachable!("the last attempt returns")
    }

    /// The job id of submission `comment` of `job_name`, if Slurm has it.
    pub fn find_submitted(&self, job_name: &str, comment: &str) -> Result<Option<String>, SlurmError> {
        Ok(self.queue(job_name, Some(current_uid()))?.into_iter().find(|e| e.comment == comment).map(|e| e.array_job_id))
    }

    /// `scontrol update JobId=<array> ArrayTaskThrottle=<n>`: how many of the array's tasks may
    /// run at once from now on (idempotent, so retried like a query). Slurm 22.05 answers per
    /// range of the array's tasks and exits 1 when any range refused, tasks that have finished
    /// always do ("3239_0-2: Job has already finished", then "3239_2-8: No error" for the
    /// rest, which took it): that answer is success, not a failure to retry every poll.
    pub fn set_array_throttle(&self, job_id: &str, throttle: u32) -> Result<(), SlurmError> {
        let args = vec!["update".to_string(), format!("JobId={job_id}"), format!("ArrayTaskThrottle={throttle}")];
        match self.call("scontrol", &args) {
            Err(SlurmError::Refused { stderr, .. }) if only_finished_tasks_refused(&stderr) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// `scontrol update JobId=<array> Dependency=<terms>`: replaces the array's dependency with
    /// `terms` (empty: none, so Slurm may start its tasks within its `ArrayTaskThrottle`
    /// without waiting for the jobs it named; a term on a job that already ended as it asks
    /// holds at once). Idempotent while the array is pending; Slurm refuses it for tasks
    /// already started.
    pub fn set_dependency(&self, job_id: &str, terms: &str) -> Result<(), SlurmError> {
        let args = vec!["update".to_string(), format!("JobId={job_id}"), format!("Dependency={terms}")];
        self.call("scontrol", &args).map(|_| ())
    }

    /// `scancel --state=PENDING` of arrays: their queued tasks only, the running ones go on.
    pub fn cancel_pending(&self, job_ids: &[String]) -> Result<(), SlurmError> {
        if job_ids.is_empty() {
            return Ok(());
        }
        let args: Vec<String> = std::iter::once("--state=PENDING".to_string()).chain(job_ids.iter().cloned()).collect();
        self.call("scancel", &args).map(|_| ())
    }

    /// The MPI plugin types `srun --mpi=list` offers on this machine ([`parse_mpi_list`]), or
    /// `None` when there is no telling: `srun` is absent, fails, outlives a short timeout, or
    /// prints no list. One try: the answer only decides whether to warn.
    pub fn mpi_types(&self) -> Option<Vec<String>> {
        let mut cmd = Command::new(self.program("srun"));
        cmd.arg("--mpi=list");
        let done = crate::subprocess::run(&mut cmd, None, self.policy.timeout.min(MPI_LIST_TIMEOUT)).ok()??;
        if !done.status.success() {
            return None;
        }
        // Slurm 22.05 and later print the list on stdout; older ones log it on stderr.
        parse_mpi_list(&format!("{}\n{}", done.stdout, done.stderr))
    }

    /// `scancel` of whole arrays (their pending and running tasks).
    pub fn cancel(&self, job_ids: &[String]) -> Result<(), SlurmError> {
        if job_ids.is_empty() {
            return Ok(());
        }
        self.call("scancel", job_ids).map(|_| ())
    }
}

/// The variables that send Slurm's commands to other clusters.
const CLUSTER_VARIABLES: [&str; 2] = ["SLURM_CLUSTERS", "SBATCH_CLUSTERS"];

/// The first of [`CLUSTER_VARIABLES`] set to a value, with it. Environment modules on
/// multi-cluster sites set them to reach, say, the GPU cluster from a shared login node; without
/// them drover would submit to and watch the login node's own cluster, where the partition may
/// exist on other hardware, and with them its `squeue` answers change shape. So drover refuses
/// rather than redirect the sweep.
fn other_cluster() -> Option<(String, String)> {
    other_cluster_in(|name| std::env::var_os(name))
}

/// Refuses to go on while a cluster variable has a value ([`other_cluster`]): `drover run`
/// asks before it writes anything, and every Slurm command drover runs asks again.
pub fn refuse_other_cluster() -> Result<(), SlurmError> {
    match other_cluster() {
        Some((name, value)) => Err(SlurmError::OtherCluster { name, value }),
        None => Ok(()),
    }
}

/// [`other_cluster`] over the variables `var` gives.
fn other_cluster_in(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<(String, String)> {
    CLUSTER_VARIABLES.iter().find_map(|name| {
        let value = var(name)?;
        (!value.is_empty()).then(|| (name.to_string(), value.to_string_lossy().into_owned()))
    })
}

/// The query variables that only shape what drover's own command-line options set again
/// (`--format`, `--states`, `--array`, `--noheader`) or sort its answers: removed without a
/// word, since many users set them in their dotfiles and they never changed what drover read.
const RESHAPING_VARIABLES: &[&str] =
    &["SQUEUE_FORMAT", "SQUEUE_FORMAT2", "SQUEUE_SORT", "SQUEUE_STATES", "SQUEUE_ARRAY", "SINFO_FORMAT", "SINFO_SORT"];

/// Why drover's Slurm calls run without an input variable of the user's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// It would change how drover finds, maps, logs or requeues its jobs: ignored always.
    DroversOwn,
    /// It reshapes an answer in a way drover's own options undo ([`RESHAPING_VARIABLES`]):
    /// ignored always, and not worth a warning.
    Reshaping,
    /// It sets an option (named) that the batch script sets from the sweep file, over which
    /// Slurm would rank the variable: the file wins.
    SweepSets(&'static str),
}

/// Why drover's Slurm calls run without the variable `name` ([`Removed`]), or `None` when it
/// is passed on; `script_options` are the options the batch script sets (sbatch only).
/// The rule (docs/design/slurm.md, "Slurm's input variables"): Slurm ranks `SBATCH_*` above
/// the script's `#SBATCH` lines, and `SQUEUE_*`, `SCANCEL_*`, `SCONTROL_*` and `SINFO_*` add
/// filters to the questions drover asks, so any of these could hide drover's own jobs from it
/// or undo what it set. Every option drover needs it gives itself, so those commands' variables
/// all go (the ones drover's own options undo anyway, [`RESHAPING_VARIABLES`], silently), as
/// does `SLURM_BITSTR_LEN` (it shortens the task lists drover reads), and sbatch's for the
/// options of drover's own
/// bookkeeping. An sbatch variable of a resource (`SBATCH_ACCOUNT`, `SBATCH_PARTITION`,
/// `SBATCH_QOS`, `SBATCH_TIMELIMIT`, ...) is the user's or the site's default and stays, unless
/// the batch script sets that option (from `[slurm]` or `slurm.extra`), where the sweep file
/// wins. Everything else (`SLURM_CONF`, `SBATCH_EXPORT`, ...) is passed on.
/// The cluster variables ([`CLUSTER_VARIABLES`]) are not removed: drover refuses to run Slurm's
/// commands while one is set.
pub fn removed_variable(name: &str, script_options: &[&str]) -> Option<Removed> {
    if CLUSTER_VARIABLES.contains(&name) {
        return None;
    }
    if RESHAPING_VARIABLES.contains(&name) {
        return Some(Removed::Reshaping);
    }
    let query = ["SQUEUE_", "SCANCEL_", "SCONTROL_", "SINFO_"].iter().any(|p| name.starts_with(p));
    if query || name == "SLURM_BITSTR_LEN" {
        return Some(Removed::DroversOwn);
    }
    let (_, options) = crate::backend::sbatch_options::OPTION_VARIABLES.iter().find(|(var, _)| *var == name)?;
    // The variables of the options drover sets for its own bookkeeping (name, array, logs,
    // requeue, signal, dependency) or that would make sbatch wait for the job to end: the same
    // list `slurm.extra` is refused by.
    if options.iter().any(|o| crate::backend::sbatch_options::DROVERS_OWN.contains(o)) {
        return Some(Removed::DroversOwn);
    }
    options.iter().find(|o| script_options.contains(o)).map(|o| Removed::SweepSets(o))
}

/// Removes from `cmd`'s environment each variable of `present` (the names set in drover's
/// environment) that [`removed_variable`] names, and returns them with the reason.
pub fn scrub_environment(cmd: &mut Command, script_options: &[&str], present: impl Iterator<Item = String>) -> Vec<(String, Removed)> {
    let mut removed: Vec<(String, Removed)> = present.filter_map(|name| removed_variable(&name, script_options).map(|why| (name, why))).collect();
    removed.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, _) in &removed {
        cmd.env_remove(name);
    }
    removed
}

/// One warning per variable and process: a waiting `drover run` calls Slurm at every poll.
fn warn_once_removed(removed: &[(String, Removed)]) {
    static WARNED: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let Ok(mut warned) = WARNED.lock() else { return };
    let fresh: Vec<&(String, Removed)> = removed.iter().filter(|(name, _)| warned.insert(name.clone())).collect();
    let own: Vec<String> = fresh.iter().filter(|(_, why)| *why == Removed::DroversOwn).map(|(name, _)| format!("`{name}`")).collect();
    if !own.is_empty() {
        tracing::warn!(
            "ignoring {} from the environment in drover's Slurm commands: {} would narrow drover's questions to Slurm or undo \
             the options drover sets on its jobs, and drover would lose track of them (docs/design/slurm.md, \"Slurm's input variables\")",
            own.join(", "),
            if own.len() == 1 { "it" } else { "they" }
        );
    }
    for (name, why) in fresh {
        if let Removed::SweepSets(option) = why {
            tracing::warn!("ignoring `{name}` from the environment: the sweep file's [slurm] table sets `--{option}` for the batch script, and it wins");
        }
    }
}

/// `--output=<slurm_dir>/logs/%A_%a.out` for drover's own `sbatch` call, with every `%` of
/// `slurm_dir` doubled. Slurm expands its `%` patterns over the whole output path, and puts
/// the job's working directory before a relative one: the script's relative
/// `logs/%A_%a.out` under a results path holding `%j` or `%%` named a folder that does not
/// exist, and every task failed before its first line. An absolute path whose own `%` are
/// escaped is read back exactly; on the command line it also needs no quoting (spaces, quotes)
/// and wins over `SBATCH_OUTPUT` and the script's `#SBATCH` line. A `\` turns Slurm's
/// expansion off altogether (and is dropped), which no escape undoes: such a results path is
/// refused before submission (`slurm::results_path_problem`).
pub fn output_option(slurm_dir: &Path) -> String {
    format!("--output={}/logs/%A_%a.out", slurm_dir.display().to_string().replace('%', "%%"))
}

/// What `scontrol show config` says of the cluster's limits on submissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterLimits {
    /// `MaxArraySize`: array indices run `0..MaxArraySize-1`.
    pub max_array_size: u32,
    /// `SchedulerParameters=max_array_tasks=<n>`: at most n tasks in one array, a cap lower
    /// than `MaxArraySize` that leaves the indices alone.
    pub max_array_tasks: Option<u32>,
    /// `MaxJobCount`: how many jobs the controller holds at once, every user's together, each
    /// array task counting one and an ended job until Slurm forgets it (`MinJobAge` later);
    /// past it `sbatch` is refused ([`SBATCH_RETRYING`]).
    pub max_job_count: Option<u32>,
}

impl ClusterLimits {
    /// The most tasks one array may have.
    pub fn array_tasks(&self) -> u32 {
        self.max_array_tasks.map_or(self.max_array_size, |n| n.min(self.max_array_size))
    }
}

/// The [`ClusterLimits`] in `scontrol show config` output (`MaxArraySize             = 1001`,
/// `MaxJobCount             = 10000`, `SchedulerParameters     = bf_interval=2,max_array_tasks=500`);
/// `None` without a `MaxArraySize` line.
pub fn parse_cluster_limits(config: &str) -> Option<ClusterLimits> {
    let value = |key: &str| {
        config.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim())
        })
    };
    let max_array_tasks = value("SchedulerParameters")
        .and_then(|params| params.split(',').find_map(|p| p.trim().strip_prefix("max_array_tasks=")?.trim().parse().ok()));
    Some(ClusterLimits {
        max_array_size: value("MaxArraySize")?.parse().ok()?,
        max_array_tasks,
        max_job_count: value("MaxJobCount").and_then(|v| v.parse().ok()),
    })
}

/// The MPI plugin types in the output of `srun --mpi=list` (stdout and stderr together), in the
/// order printed, each once; `None` when the output holds no list (no "... types are..."
/// header, or nothing after it). The shapes seen:
/// - Slurm 22.05 and later, on stdout: `MPI plugin types are...`, then one tab-indented type per
///   line, then `specific pmix plugin versions available: pmix_v4,pmix_v5` (those are types too);
/// - older releases, logged on stderr: `srun: MPI types are...`, then `srun: pmi2` per type,
///   versioned pmix plugins (`pmix_v3`) among them, and in the oldest `srun: mpi/pmi2`.
///
/// Lines that are not a single word (`srun: error: ...`, debug output) are skipped.
pub fn parse_mpi_list(text: &str) -> Option<Vec<String>> {
    let mut header = false;
    let mut types: Vec<String> = Vec::new();
    let mut add = |t: &str| {
        let t = t.strip_prefix("mpi/").unwrap_or(t);
        let plain = !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if plain && !types.iter().any(|seen| seen == t) {
            types.push(t.to_string());
        }
    };
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("srun:").map_or(line, str::trim_start);
        if line.to_ascii_lowercase().contains("types are") {
            header = true;
        } else if !header || line.is_empty() {
            continue;
        } else if let Some((_, versions)) = line.split_once("versions available:") {
            versions.split([',', ' ', '\t']).for_each(&mut add);
        } else if !line.contains(char::is_whitespace) {
            add(line);
        }
    }
    (header && !types.is_empty()).then_some(types)
}

/// Whether an `scontrol update` of an array refused only for tasks that have finished: every
/// line of its answer is a task range's "Job has already finished" or "No error".
fn only_finished_tasks_refused(stderr: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    !lines.is_empty() && lines.iter().all(|l| l.ends_with("Job has already finished") || l.ends_with("No error"))
}

/// `123|4|PENDING|Dependency|drover:abc:0|afterok:99(unfulfilled)` → an entry (`%K` is `N/A`
/// for non-array jobs, `%E` is `(null)` without a dependency left and may be missing).
pub fn parse_queue_line(line: &str) -> Option<QueueEntry> {
    let mut parts = line.trim().splitn(6, '|');
    let array_job_id = parts.next()?.trim().to_string();
    let task = parts.next()?.trim();
    let state = parts.next()?.trim().to_string();
    let reason = parts.next()?.trim().to_string();
    let comment = parts.next().unwrap_or("").trim().to_string();
    let dependency = parts.next().map(str::trim).filter(|d| !d.is_empty() && *d != "(null)").map(str::to_string);
    if array_job_id.is_empty() || state.is_empty() {
        return None;
    }
    Some(QueueEntry { array_job_id, task: task.parse().ok(), state, reason, comment, dependency })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Only a controller that does not answer is sat out by a waiting `drover run`; a plain
    /// "no", a missing program or output it cannot read ends it at once.
    #[test]
    fn unavailable_means_timed_out_busy_or_unreachable() {
        let refused = |stderr: &str| SlurmError::Refused { command: "squeue".into(), status: "exit status: 1".into(), stderr: stderr.into() };
        assert!(SlurmError::Timeout { command: "squeue".into(), attempts: 4, timeout_s: 30.0, stderr: String::new() }.is_unavailable());
        assert!(refused("slurm_load_jobs error: Unable to contact slurm controller (connect failure)").is_unavailable());
        assert!(refused("Socket timed out on send/recv operation").is_unavailable());
        assert!(!refused("squeue: error: Invalid user: nobody").is_unavailable());
        let spawn = SlurmError::Spawn { command: "squeue".into(), source: std::io::Error::from(std::io::ErrorKind::NotFound) };
        assert!(!spawn.is_unavailable());
    }

    #[test]
    fn parses_scontrol_and_squeue_output() {
        let config = "Configuration data as of 2026-01-01\nMaxArraySize            = 1001\nMaxJobCount = 10000\n";
        let limits = parse_cluster_limits(config).expect("limits");
        assert_eq!(limits, ClusterLimits { max_array_size: 1001, max_array_tasks: None, max_job_count: Some(10000) });
        assert_eq!(limits.array_tasks(), 1001);
        assert_eq!(parse_cluster_limits("nothing"), None);
        let e = parse_queue_line("123|4|PENDING|JobArrayTaskLimit|drover:ab12:0").expect("entry");
        assert_eq!(
            e,
            QueueEntry {
                array_job_id: "123".into(),
                task: Some(4),
                state: "PENDING".into(),
                reason: "JobArrayTaskLimit".into(),
                comment: "drover:ab12:0".into(),
                dependency: None,
            }
        );
        assert_eq!(parse_queue_line("77|N/A|RUNNING|None|").expect("entry").task, None);
        assert_eq!(parse_queue_line("77|0|RUNNING|None|drover:ab12:0|(null)").expect("entry").dependency, None);
        let waiting = parse_queue_line("78|3|PENDING|Dependency|drover:ab12:1|afterok:99(unfulfilled),afterany:77_*(unfulfilled)").expect("entry");
        assert_eq!((waiting.comment.as_str(), waiting.dependency.as_deref()), ("drover:ab12:1", Some("afterok:99(unfulfilled),afterany:77_*(unfulfilled)")));
        assert_eq!(parse_queue_line("garbage"), None);
    }

    /// Slurm 22.05's `scontrol show config` as it reads on a cluster that caps arrays below
    /// `MaxArraySize` (`max_array_tasks`, among other scheduler parameters) and one that sets
    /// no scheduler parameters; a `MaxArraySize` line is the one that must be there.
    #[test]
    fn cluster_limits_come_from_scontrol_show_config() {
        let config = "Configuration data as of 2026-12-01T10:00:00\n\
                      AccountingStorageBackupHost = (null)\n\
                      MaxArraySize            = 100001\n\
                      MaxDBDMsgs              = 20004\n\
                      MaxJobCount             = 250000\n\
                      MaxJobId                = 67043328\n\
                      MinJobAge               = 300 sec\n\
                      SchedulerParameters     = bf_interval=30,default_queue_depth=400,max_array_tasks=1000,bf_max_job_test=500\n\
                      SchedulerTimeSlice      = 30 sec\n";
        let limits = parse_cluster_limits(config).expect("limits");
        assert_eq!(limits, ClusterLimits { max_array_size: 100001, max_array_tasks: Some(1000), max_job_count: Some(250000) });
        assert_eq!(limits.array_tasks(), 1000, "max_array_tasks caps arrays below MaxArraySize");
        let higher = config.replace("max_array_tasks=1000", "max_array_tasks=200000");
        assert_eq!(parse_cluster_limits(&higher).expect("limits").array_tasks(), 100001, "never above MaxArraySize");
        let plain = "MaxArraySize            = 1001\nMaxJobCount             = 10000\nSchedulerParameters     = (null)\n";
        assert_eq!(parse_cluster_limits(plain).expect("limits"), ClusterLimits { max_array_size: 1001, max_array_tasks: None, max_job_count: Some(10000) });
        assert_eq!(parse_cluster_limits("MaxJobCount = 10000\nSchedulerParameters = max_array_tasks=5\n"), None);
    }

    /// The setting an sbatch refusal names, by Slurm's words; none for a submit limit, whose
    /// generic line speaks of time limits without naming one.
    #[test]
    fn a_refusal_names_the_setting_slurm_refused() {
        assert_eq!(setting_refused("sbatch: error: invalid partition specified: nope"), Some("`slurm.partition`"));
        assert_eq!(setting_refused("sbatch: error: Invalid account or account/partition combination specified"), Some("`slurm.account`"));
        assert_eq!(setting_refused("sbatch: error: Requested time limit is invalid (missing or exceeds some limit)"), Some("`slurm.time`"));
        assert_eq!(setting_refused("sbatch: error: Memory specification can not be satisfied"), Some("`slurm.mem`"));
        let generic = "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)";
        assert_eq!(setting_refused(generic), None);
        assert_eq!(setting_refused("sbatch: error: something new"), None);
    }

    /// Slurm 22.05's answer to raising the throttle of an array some of whose tasks have
    /// finished: exit 1, one line per task range; only the finished ranges refused.
    #[test]
    fn a_throttle_refused_only_by_finished_tasks_took() {
        assert!(only_finished_tasks_refused("3239_0-2: Job has already finished\n3239_2-8: No error\n"));
        assert!(only_finished_tasks_refused("3239_0-8: Job has already finished\n"), "nothing left to throttle");
        assert!(!only_finished_tasks_refused("slurm_update error: Access/permission denied\n"));
        assert!(!only_finished_tasks_refused("3239_0-2: Job has already finished\n3239_3: Invalid job id specified\n"));
        assert!(!only_finished_tasks_refused(""));
        let tmp = tempfile::tempdir().expect("tempdir");
        crate::subprocess::write_stand_in(
            &tmp.path().join("scontrol"),
            "echo '3239_0-2: Job has already finished' >&2; echo '3239_2-8: No error' >&2; exit 1",
        );
        let slurm = Slurm { bin_dir: Some(tmp.path().to_path_buf()), policy: CallPolicy { attempts: 1, ..Default::default() } };
        assert!(slurm.set_array_throttle("3239", 3).is_ok());
    }

    /// Both shapes of `srun --mpi=list` (Slurm 22.05+ on stdout, older releases on stderr with
    /// `srun: ` before each line, the oldest with `mpi/`), and output that holds no list.
    #[test]
    fn parses_both_shapes_of_srun_mpi_list() {
        let slurm_22 = "MPI plugin types are...\n\tnone\n\tcray_shasta\n\tpmi2\n\tpmix\nspecific pmix plugin versions available: pmix_v4\n";
        assert_eq!(parse_mpi_list(slurm_22).expect("list"), ["none", "cray_shasta", "pmi2", "pmix", "pmix_v4"]);
        let two_versions = "MPI plugin types are...\n\tpmix\n\tnone\nspecific pmix plugin versions available: pmix_v4,pmix_v5\n";
        assert_eq!(parse_mpi_list(two_versions).expect("list"), ["pmix", "none", "pmix_v4", "pmix_v5"]);
        let older = "srun: MPI types are...\nsrun: none\nsrun: pmi2\n";
        assert_eq!(parse_mpi_list(older).expect("list"), ["none", "pmi2"]);
        let versioned = "srun: MPI types are...\nsrun: pmix_v3\nsrun: pmi2\nsrun: none\nsrun: pmix\nsrun: cray_shasta\n";
        assert_eq!(parse_mpi_list(versioned).expect("list"), ["pmix_v3", "pmi2", "none", "pmix", "cray_shasta"]);
        let oldest = "srun: MPI types are...\nsrun: mpi/none\nsrun: mpi/openmpi\nsrun: mpi/pmi2\n";
        assert_eq!(parse_mpi_list(oldest).expect("list"), ["none", "openmpi", "pmi2"]);
        // Unprefixed, unindented; noise around the list is skipped.
        let noisy = "srun: debug: some plugin said hello\nMPI types are...\npmi2\nsrun: error: cannot read mpi.conf\n\nnone\n";
        assert_eq!(parse_mpi_list(noisy).expect("list"), ["pmi2", "none"]);
        for nothing in ["", "srun: error: invalid MPI type 'list'\n", "MPI plugin types are...\n", "none\npmix\n"] {
            assert_eq!(parse_mpi_list(nothing), None, "{nothing:?}");
        }
    }

    /// `srun --mpi=list` is asked once and its trouble is no error: absent, failing or silent,
    /// there is no answer. The list is read from stdout or stderr.
    #[test]
    fn srun_mpi_list_answers_or_says_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slurm = Slurm { bin_dir: Some(dir.path().to_path_buf()), ..Slurm::default() };
        assert_eq!(slurm.mpi_types(), None, "no srun");
        let srun = |body: &str| {
            crate::subprocess::write_stand_in(&dir.path().join("srun"), body);
            slurm.mpi_types()
        };
        let listed = srun(r"[ $1 = --mpi=list ] && printf 'MPI plugin types are...\n\tnone\n\tpmi2\n'");
        assert_eq!(listed.expect("list"), ["none", "pmi2"]);
        assert_eq!(srun(r"printf 'srun: MPI types are...\nsrun: none\nsrun: pmix\n' >&2").expect("list"), ["none", "pmix"]);
        assert_eq!(srun("echo 'srun: error: no slurm.conf' >&2; exit 1"), None);
        assert_eq!(srun("echo hello"), None);
        // A hanging srun is killed at the timeout (the policy's, when below 10 s).
        crate::subprocess::write_stand_in(&dir.path().join("srun"), "sleep 5");
        let hasty = Slurm { policy: CallPolicy { timeout: Duration::from_millis(100), ..CallPolicy::default() }, ..slurm.clone() };
        let t0 = Instant::now();
        assert_eq!(hasty.mpi_types(), None);
        assert!(t0.elapsed() < Duration::from_secs(3), "killed at the timeout");
    }

    #[test]
    fn a_stalled_command_times_out_and_keeps_the_command_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("squeue");
        std::fs::write(&fake, "#!/bin/sh\nsleep 5\n").expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let slurm = Slurm {
            bin_dir: Some(dir.path().to_path_buf()),
            policy: CallPolicy { timeout: Duration::from_millis(100), attempts: 2, backoff: Duration::from_millis(10) },
        };
        let t0 = Instant::now();
        let err = slurm.queue("x", None).expect_err("times out");
        assert!(t0.elapsed() < Duration::from_secs(3), "the child is killed at the timeout");
        let text = err.to_string();
        assert!(text.starts_with("`squeue --noheader --array --states=all '--format=%F|%K|%T|%r|%k|%E' --name=x` timed out after 2 attempt(s)"), "{text}");
    }

    #[test]
    fn a_timed_out_sbatch_that_did_submit_is_found_by_comment_not_resubmitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let calls = dir.path().join("calls");
        let write = |name: &str, body: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).expect("write");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        };
        // A stalled controller: sbatch queues the job, then hangs past the timeout.
        write("sbatch", format!("#!/bin/sh\necho sbatch >> {0}\ntouch {0}.queued\nsleep 5\n", calls.display()));
        write(
            "squeue",
            format!("#!/bin/sh\n[ -e {0}.queued ] && echo '77|0|PENDING|None|drover:tok:3'\necho '12|0|RUNNING|None|drover:tok:2'\n", calls.display()),
        );
        let slurm = Slurm {
            bin_dir: Some(dir.path().to_path_buf()),
            policy: CallPolicy { timeout: Duration::from_millis(300), attempts: 3, backoff: Duration::from_millis(10) },
        };
        let id = slurm.submit(Path::new("a.sbatch"), dir.path(), "n", "drover:tok:3").expect("found in the queue");
        assert_eq!(id, "77");
        assert_eq!(std::fs::read_to_string(&calls).expect("calls").lines().count(), 1, "sbatch ran once");
    }

    #[test]
    fn submit_limits_are_told_from_other_accounting_refusals() {
        let generic = "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)";
        for (reason, expect) in [
            ("QOSMaxSubmitJobPerUserLimit", Some("QOSMaxSubmitJobPerUserLimit")),
            ("AssocMaxSubmitJobLimit", Some("AssocMaxSubmitJobLimit")),
            ("QOSGrpSubmitJobsLimit", Some("QOSGrpSubmitJobsLimit")),
            ("AssocGrpSubmitJobsLimit", Some("AssocGrpSubmitJobsLimit")),
            ("QOSMaxSubmitJobPerAccountLimit", Some("QOSMaxSubmitJobPerAccountLimit")),
            // Size and time limits say the same generic line: never back-pressure.
            ("QOSMaxWallDurationPerJobLimit", None),
            ("AssocMaxCpuPerJobLimit", None),
            ("QOSMinGRES", None),
        ] {
            let stderr = format!("sbatch: error: {reason}\n{generic}\n");
            assert_eq!(submit_limit_reason(&stderr).as_deref(), expect, "{reason}");
        }
        assert_eq!(submit_limit_reason(generic).as_deref(), Some("job submit limit"));
        assert_eq!(submit_limit_reason("sbatch: error: invalid partition specified: gpu"), None);
        let refused = SlurmError::Refused { command: "sbatch x".into(), status: "exit status: 1".into(), stderr: format!("sbatch: error: AssocMaxSubmitJobLimit\n{generic}") };
        assert_eq!(refused.submit_limit().as_deref(), Some("AssocMaxSubmitJobLimit"));
        let timeout = SlurmError::Timeout { command: "sbatch x".into(), attempts: 1, timeout_s: 1.0, stderr: String::new() };
        assert_eq!(timeout.submit_limit(), None);
    }

    /// Slurm ranks its input variables above the options drover writes into the batch script
    /// and adds them to drover's questions: `SBATCH_JOB_NAME` or `SQUEUE_PARTITION` hid a
    /// sweep's live jobs from it (reported cancelled, then submitted twice), `SCANCEL_STATE`
    /// made `drover cancel` cancel nothing. Those go; a resource's variable stays as the user's
    /// default unless the script sets that option from the sweep file; the rest stays.
    #[test]
    fn slurm_commands_run_without_the_variables_that_override_drover() {
        let present = [
            "SBATCH_JOB_NAME", "SBATCH_ARRAY_INX", "SBATCH_OUTPUT", "SBATCH_NO_REQUEUE", "SBATCH_SIGNAL", "SBATCH_WAIT", "SQUEUE_PARTITION",
            "SQUEUE_STATES", "SQUEUE_NAMES", "SCANCEL_STATE", "SCONTROL_FEDERATION", "SINFO_PARTITION", "SLURM_BITSTR_LEN", "SQUEUE_FORMAT",
            "SINFO_SORT",
            "SBATCH_PARTITION", "SBATCH_ACCOUNT", "SBATCH_QOS", "SBATCH_TIMELIMIT", "SBATCH_MEM_PER_CPU", "SBATCH_EXPORT", "SLURM_CONF",
            "SBATCH_DEBUG", "HOME", "PATH",
        ];
        let present = || present.iter().map(|s| s.to_string());
        let mut cmd = Command::new("sbatch");
        let removed = scrub_environment(&mut cmd, &["job-name", "partition", "mem", "time"], present());
        let names = |removed: &[(String, Removed)], why: fn(&Removed) -> bool| removed.iter().filter(|(_, w)| why(w)).map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&removed, |w| *w == Removed::DroversOwn),
            [
                "SBATCH_ARRAY_INX", "SBATCH_JOB_NAME", "SBATCH_NO_REQUEUE", "SBATCH_OUTPUT", "SBATCH_SIGNAL", "SBATCH_WAIT", "SCANCEL_STATE",
                "SCONTROL_FEDERATION", "SINFO_PARTITION", "SLURM_BITSTR_LEN", "SQUEUE_NAMES", "SQUEUE_PARTITION"
            ]
        );
        // Those drover's own options undo go without a warning (review: every `drover status`
        // warned about a `SQUEUE_FORMAT` from a dotfile).
        assert_eq!(names(&removed, |w| *w == Removed::Reshaping), ["SINFO_SORT", "SQUEUE_FORMAT", "SQUEUE_STATES"]);
        // The sweep sets partition, memory (by node: a per-CPU request is the same family) and time.
        let swept: Vec<(String, Removed)> = removed.iter().filter(|(_, w)| matches!(w, Removed::SweepSets(_))).cloned().collect();
        assert_eq!(
            swept,
            [
                ("SBATCH_MEM_PER_CPU".to_string(), Removed::SweepSets("mem")),
                ("SBATCH_PARTITION".to_string(), Removed::SweepSets("partition")),
                ("SBATCH_TIMELIMIT".to_string(), Removed::SweepSets("time")),
            ]
        );
        let gone: BTreeSet<String> = cmd.get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k.to_string_lossy().into_owned()).collect();
        assert_eq!(gone, removed.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>(), "each is removed from the child's environment");
        // Without those options in the script, the user's defaults for them stay.
        let plain = scrub_environment(&mut Command::new("sbatch"), &["job-name"], present());
        assert!(plain.iter().all(|(_, w)| matches!(w, Removed::DroversOwn | Removed::Reshaping)), "{plain:?}");
        for kept in ["SBATCH_ACCOUNT", "SBATCH_QOS", "SBATCH_EXPORT", "SLURM_CONF", "SBATCH_DEBUG", "HOME", "PATH", "SBATCH_PARTITION"] {
            assert!(!plain.iter().any(|(n, _)| n == kept), "{kept} is passed on");
        }
    }

    /// Review: drover stripped `SLURM_CLUSTERS`, so a sweep meant for the cluster a module
    /// named went to the login node's own. A cluster variable with a value now refuses every
    /// Slurm command, naming it; unset or empty, it is no cluster.
    #[test]
    fn a_cluster_variable_refuses_slurm_commands_instead_of_redirecting_them() {
        let env = |pairs: &'static [(&'static str, &'static str)]| move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| std::ffi::OsString::from(v));
        assert_eq!(other_cluster_in(env(&[("SLURM_CONF", "/etc/slurm.conf")])), None);
        assert_eq!(other_cluster_in(env(&[("SLURM_CLUSTERS", "")])), None, "empty is unset");
        assert_eq!(other_cluster_in(env(&[("SBATCH_CLUSTERS", "gpu")])), Some(("SBATCH_CLUSTERS".to_string(), "gpu".to_string())));
        let err = SlurmError::OtherCluster { name: "SLURM_CLUSTERS".into(), value: "gpu".into() }.to_string();
        assert!(err.starts_with("`SLURM_CLUSTERS=gpu` in the environment sends Slurm's commands to the cluster(s) it names") && err.contains("env -u SLURM_CLUSTERS"), "{err}");
        assert_eq!(removed_variable("SLURM_CLUSTERS", &[]), None, "refused, not removed");
    }

    /// The output path sbatch is given is absolute, with the results path's own `%` doubled
    /// so that Slurm's pattern expansion gives it back as it is; the task's patterns stay.
    #[test]
    fn sbatch_gets_an_absolute_output_path_with_its_percent_signs_escaped() {
        assert_eq!(output_option(Path::new("/r/res/slurm")), "--output=/r/res/slurm/logs/%A_%a.out");
        assert_eq!(output_option(Path::new("/r/exp_%j/slurm")), "--output=/r/exp_%%j/slurm/logs/%A_%a.out");
        assert_eq!(output_option(Path::new("/s/lr=50%x/p %A q/x%%y/slurm")), "--output=/s/lr=50%%x/p %%A q/x%%%%y/slurm/logs/%A_%a.out");
        let dir = tempfile::tempdir().expect("tempdir");
        let args = dir.path().join("args");
        crate::subprocess::write_stand_in(&dir.path().join("sbatch"), &format!("printf '%s\\n' \"$@\" > '{}'; echo 42", args.display()));
        let slurm = Slurm { bin_dir: Some(dir.path().to_path_buf()), policy: CallPolicy::default() };
        let cwd = dir.path().join("r 100%j").join("slurm");
        std::fs::create_dir_all(&cwd).expect("mkdir");
        assert_eq!(slurm.submit(Path::new("array-0.sbatch"), &cwd, "n", "c").expect("submitted"), "42");
        let given = std::fs::read_to_string(&args).expect("args");
        let expect = format!("--parsable\n--output={}/r 100%%j/slurm/logs/%A_%a.out\narray-0.sbatch\n", dir.path().display());
        assert_eq!(given, expect);
    }

    /// Review: an sbatch killed at the timeout lost what it had printed, so the error never
    /// said why it waited. The timeout keeps it; and sbatch's own "sleeping and retrying"
    /// after the controller refused (`MaxJobCount`) stops it at once as a refusal (tried once,
    /// no squeue needed: it submitted nothing), not after four timeouts.
    #[test]
    fn a_timed_out_or_retrying_sbatch_keeps_what_it_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let calls = dir.path().join("calls");
        let slurm = Slurm {
            bin_dir: Some(dir.path().to_path_buf()),
            policy: CallPolicy { timeout: Duration::from_millis(300), attempts: 2, backoff: Duration::from_millis(10) },
        };
        crate::subprocess::write_stand_in(&dir.path().join("squeue"), "exit 0");
        crate::subprocess::write_stand_in(&dir.path().join("sbatch"), &format!("echo x >> '{}'; echo 'sbatch: error: slurm_receive_msg: stalled' >&2; sleep 5", calls.display()));
        let err = slurm.submit(Path::new("a.sbatch"), dir.path(), "n", "c").expect_err("times out");
        assert!(matches!(err, SlurmError::Timeout { .. }) && err.to_string().ends_with("timed out after 2 attempt(s) of 0.3 s each; it had printed: sbatch: error: slurm_receive_msg: stalled"), "{err}");

        std::fs::remove_file(&calls).expect("calls");
        let retrying = "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying";
        crate::subprocess::write_stand_in(&dir.path().join("sbatch"), &format!("echo x >> '{}'; echo '{retrying}' >&2; sleep 5; exit 1", calls.display()));
        let patient = Slurm { policy: CallPolicy { timeout: Duration::from_secs(60), ..slurm.policy.clone() }, ..slurm.clone() };
        let t0 = Instant::now();
        let err = patient.submit(Path::new("a.sbatch"), dir.path(), "n", "c").expect_err("refused");
        assert!(t0.elapsed() < Duration::from_secs(4), "stopped at its retry line, not at the end of its sleep: {:?}", t0.elapsed());
        assert!(err.to_string().ends_with(&format!("failed (stopped by drover as it began to retry): {retrying}")), "{err}");
        assert_eq!(err.submit_limit().as_deref(), Some("MaxJobCount"));
        assert!(!err.is_unavailable(), "a refusal to wait out as a submit limit, not an outage");
        assert_eq!(std::fs::read_to_string(&calls).expect("calls").lines().count(), 1, "tried once");
        assert_eq!(submit_limit_reason("sbatch: error: Slurm job queue full, sleeping and retrying").as_deref(), Some("MaxJobCount"));

        // Code review: a drover stalled past sbatch's 1-s sleep may stop an sbatch whose retry
        // was accepted; the queue is asked first, and the live array is the answer, not a
        // refusal (which would submit its runs again).
        crate::subprocess::write_stand_in(&dir.path().join("squeue"), "echo '4242|0|PENDING|None|c|(null)'");
        let found = patient.submit(Path::new("a.sbatch"), dir.path(), "n", "c").expect("the accepted retry");
        assert_eq!(found, "4242");
    }

    #[test]
    fn a_refusal_keeps_slurms_message_and_is_not_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let count = dir.path().join("count");
        let fake = dir.path().join("sbatch");
        std::fs::write(&fake, format!("#!/bin/sh\necho x >> {}\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n", count.display())).expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let slurm = Slurm { bin_dir: Some(dir.path().to_path_buf()), policy: CallPolicy::default() };
        let err = slurm.submit(Path::new("a.sbatch"), dir.path(), "n", "c").expect_err("refused");
        assert!(err.to_string().ends_with("sbatch: error: invalid partition specified: nope"), "{err}");
        assert_eq!(std::fs::read_to_string(&count).expect("count").lines().count(), 1, "a refusal is final");
    }
}
