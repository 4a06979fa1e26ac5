//! The `[local]` table of a sweep file: `LocalFile` (serde mirror) → `LocalSettings` (validated).
//!
//! ```toml
//! [local]
//! max_retries = 2                   # a failed run is relaunched this often (`--max-retries` wins)
//! gpus = [0, 1]                     # GPUs to share among runs (default: CUDA_VISIBLE_DEVICES, else all)
//! runs_per_gpu = 1                  # runs that may hold one GPU at once
//! grace_seconds = 10                # a stop's SIGTERM → SIGKILL wait (iterations longer than this need more)
//! ```
//!
//! Like `[slurm]`, these are launch settings: they never enter a run's configuration, so they
//! never change a run id (changing the retry budget must not make finished runs look new).

use serde::Deserialize;

use crate::error::ConfigErrorKind;

/// The most relaunches of one failed run, from the sweep file or `--max-retries`: a run that
/// failed this often will not succeed by being relaunched again, and a typo such as `1000000`
/// would otherwise keep a broken sweep relaunching for days.
pub const MAX_LOCAL_RETRIES: u32 = 100;

/// The `[local]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFile {
    /// Relaunches of a failed run. A signed 64-bit integer rather than a `u32`, so that a
    /// negative or huge value gets the range message instead of a type error.
    pub max_retries: Option<i64>,
    /// Device indices local runs share (see `gpus.rs`); `[]` turns the sharing off.
    pub gpus: Option<Vec<i64>>,
    /// Runs one GPU takes at once.
    pub runs_per_gpu: Option<i64>,
    /// Seconds between a stop's SIGTERM and the SIGKILL of jobs still running.
    pub grace_seconds: Option<f64>,
}

/// The most runs one GPU may take at once: beyond this a typo, not a plan.
pub const MAX_RUNS_PER_GPU: u32 = 64;

/// The longest `local.grace_seconds`: beyond an hour a stop that waits is a typo, not a plan.
pub const MAX_GRACE_SECONDS: f64 = 3600.0;

/// The validated `[local]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// Relaunches of a failed run when the command line does not say (0: never).
    pub max_retries: u32,
    /// The GPUs to share when the sweep file lists them; else they are detected (`gpus.rs`).
    pub gpus: Option<Vec<u32>>,
    /// Runs one GPU takes at once (default 1).
    pub runs_per_gpu: u32,
    /// How long a stop waits for its jobs after SIGTERM before it SIGKILLs them (default
    /// [`DEFAULT_GRACE`](crate::backend::local::DEFAULT_GRACE)). A job checkpoints at the end of
    /// the iteration it is in, so a sweep whose iterations take longer needs more, or its stopped
    /// runs start over instead of resuming.
    pub grace: std::time::Duration,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings { max_retries: 0, gpus: None, runs_per_gpu: 1, grace: crate::backend::local::DEFAULT_GRACE }
    }
}

impl LocalSettings {
    /// Validates the `[local]` table. The error is `(dotted key, reason)`; the caller adds the file.
    pub fn validate(file: LocalFile) -> Result<LocalSettings, (String, ConfigErrorKind)> {
        let max_retries = match file.max_retries {
            None => 0,
            Some(n) => u32::try_from(n).ok().filter(|n| *n <= MAX_LOCAL_RETRIES).ok_or_else(|| {
                (
                    "local.max_retries".to_string(),
                    ConfigErrorKind::InvalidValue(format!("must be between 0 and {MAX_LOCAL_RETRIES}, got {n}")),
                )
            })?,
        };
        let gpus = match file.gpus {
            None => None,
            Some(ids) => Some(
                ids.iter()
                    .enumerate()
                    .map(|(i, &id)| {
                        u32::try_from(id).map_err(|_| {
                            let why = if id < 0 { "is 0 or more" } else { "fits in 32 bits (a CUDA device ordinal)" };
                            (format!("local.gpus[{i}]"), ConfigErrorKind::InvalidValue(format!("a device index {why}, got {id}")))
                        })
                    })
                    .collect::<Result<Vec<u32>, _>>()?,
            ),
        };
        if let Some(ids) = &gpus {
            if let Some((i, id)) = ids.iter().enumerate().find(|(i, id)| ids[..*i].contains(id)) {
                return Err((format!("local.gpus[{i}]"), ConfigErrorKind::InvalidValue(format!("device {id} is listed twice"))));
            }
        }
        let runs_per_gpu = match file.runs_per_gpu {
            None => 1,
            Some(n) => u32::try_from(n).ok().filter(|n| (1..=MAX_RUNS_PER_GPU).contains(n)).ok_or_else(|| {
                (
                    "local.runs_per_gpu".to_string(),
                    ConfigErrorKind::InvalidValue(format!("must be between 1 and {MAX_RUNS_PER_GPU}, got {n}")),
                )
            })?,
        };
        let grace = match file.grace_seconds {
            None => crate::backend::local::DEFAULT_GRACE,
            Some(s) if s.is_finite() && s > 0.0 && s <= MAX_GRACE_SECONDS => std::time::Duration::from_secs_f64(s),
            Some(s) => {
                return Err((
                    "local.grace_seconds".to_string(),
                    ConfigErrorKind::InvalidValue(format!("must be more than 0 and at most {MAX_GRACE_SECONDS} seconds, got {s}")),
                ))
            }
        };
        Ok(LocalSettings { max_retries, gpus, runs_per_gpu, grace })
    }

    /// The retry budget of a local sweep: `drover run --max-retries` when given, else the
    /// sweep file's `[local] max_retries`, else 0.
    pub fn effective_max_retries(&self, cli: Option<u32>) -> u32 {
        cli.unwrap_or(self.max_retries)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{load_str, parse_set, Sweep};

    const FILE: &str = "configs/x.toml";
    const BASE: &str = "name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n[sweep]\nseeds = [1, 2]\n";

    fn sweep(text: &str, sets: &[&str]) -> Result<Sweep, String> {
        let file = Path::new(FILE);
        let sets = sets.iter().map(|s| parse_set(s, file)).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
        let parsed = load_str(file, text, &[], &sets).map_err(|e| e.to_string())?;
        Sweep::validate(parsed, file).map_err(|e| e.to_string())
    }

    /// A stop waited a fixed 10 s before SIGKILL, so a sweep whose iterations take longer had
    /// every stopped run killed mid-iteration (redone, not resumed): `local.grace_seconds`.
    #[test]
    fn local_grace_seconds_sets_the_stops_sigkill_wait_within_bounds() {
        assert_eq!(sweep(BASE, &[]).expect("valid").local.grace, crate::backend::local::DEFAULT_GRACE);
        let set = sweep(&format!("{BASE}[local]\ngrace_seconds = 120\n"), &[]).expect("valid");
        assert_eq!(set.local.grace, std::time::Duration::from_secs(120));
        let half = sweep(BASE, &["local.grace_seconds=0.5"]).expect("--set reaches it");
        assert_eq!(half.local.grace, std::time::Duration::from_millis(500));
        for bad in ["0", "-1", "3601", "inf", "nan"] {
            let err = sweep(BASE, &[&format!("local.grace_seconds={bad}")]).expect_err(bad);
            assert!(err.contains("local.grace_seconds") && err.contains("must be more than 0 and at most 3600 seconds"), "{bad}: {err}");
        }
    }

    #[test]
    fn local_max_retries_is_read_from_the_sweep_file_and_the_flag_wins() {
        let absent = sweep(BASE, &[]).expect("valid");
        assert_eq!(absent.local.max_retries, 0);
        assert_eq!(absent.local.effective_max_retries(None), 0, "default");
        assert_eq!(absent.local.effective_max_retries(Some(4)), 4, "flag alone");

        let set = sweep(&format!("{BASE}[local]\nmax_retries = 3\n"), &[]).expect("valid");
        assert_eq!(set.local.max_retries, 3);
        assert_eq!(set.local.effective_max_retries(None), 3, "sweep file over the default");
        assert_eq!(set.local.effective_max_retries(Some(1)), 1, "flag over the sweep file");
        assert_eq!(set.local.effective_max_retries(Some(0)), 0, "an explicit 0 on the command line wins too");

        let overridden = sweep(&format!("{BASE}[local]\nmax_retries = 3\n"), &["local.max_retries=5"]).expect("valid");
        assert_eq!(overridden.local.max_retries, 5, "--set reaches [local] like any key");
        let edge = sweep(&format!("{BASE}[local]\nmax_retries = {MAX_LOCAL_RETRIES}\n"), &[]).expect("the cap itself is allowed");
        assert_eq!(edge.local.max_retries, MAX_LOCAL_RETRIES);
    }

    #[test]
    fn bad_local_values_name_the_file_key_and_reason() {
        let cases = [
            ("max_retries = -1", "key `local.max_retries`: invalid value: must be between 0 and 100, got -1"),
            ("max_retries = 101", "key `local.max_retries`: invalid value: must be between 0 and 100, got 101"),
            ("max_retries = 99999999999", "key `local.max_retries`: invalid value: must be between 0 and 100, got 99999999999"),
            ("max_retries = \"two\"", "key `local.max_retries`: wrong type: found string \"two\", expected a whole number"),
            ("max_retries = 1.5", "key `local.max_retries`: wrong type: found `1.5`, expected a whole number"),
            ("max_retry = 1", "key `local.max_retry`: unknown key, expected one of: max_retries, gpus, runs_per_gpu"),
            ("gpus = [0, -1]", "key `local.gpus[1]`: invalid value: a device index is 0 or more, got -1"),
            ("gpus = [99999999999]", "key `local.gpus[0]`: invalid value: a device index fits in 32 bits (a CUDA device ordinal), got 99999999999"),
            ("gpus = [2, 3, 2]", "key `local.gpus[2]`: invalid value: device 2 is listed twice"),
            ("gpus = \"all\"", "key `local.gpus`: wrong type: found string \"all\", expected a list"),
            ("runs_per_gpu = 0", "key `local.runs_per_gpu`: invalid value: must be between 1 and 64, got 0"),
            ("runs_per_gpu = 65", "key `local.runs_per_gpu`: invalid value: must be between 1 and 64, got 65"),
        ];
        for (line, expected) in cases {
            let msg = sweep(&format!("{BASE}[local]\n{line}\n"), &[]).err().unwrap_or_else(|| panic!("{line}: accepted"));
            assert!(msg.starts_with(&format!("failed to load sweep file `{FILE}`")), "{line}: {msg}");
            assert!(msg.contains(expected), "{line}:\n  got      {msg}\n  expected {expected}");
        }
        let msg = sweep(BASE, &["local=3"]).expect_err("[local] must be a table");
        assert!(msg.contains("key `local`"), "{msg}");
    }

    #[test]
    fn gpus_and_runs_per_gpu_are_read_with_their_defaults() {
        let absent = sweep(BASE, &[]).expect("valid");
        assert_eq!((absent.local.gpus, absent.local.runs_per_gpu), (None, 1), "detected, one run per GPU");
        let set = sweep(&format!("{BASE}[local]\ngpus = [3, 1]\nruns_per_gpu = 2\n"), &[]).expect("valid");
        assert_eq!((set.local.gpus, set.local.runs_per_gpu), (Some(vec![3, 1]), 2));
        let off = sweep(&format!("{BASE}[local]\ngpus = []\n"), &[]).expect("valid");
        assert_eq!(off.local.gpus, Some(Vec::new()), "an empty list turns the sharing off");
    }

    #[test]
    fn local_settings_do_not_change_run_ids() {
        let ids = |text: &str| sweep(text, &[]).expect("valid").expand().into_iter().map(|r| r.run_id).collect::<Vec<_>>();
        let plain = ids(BASE);
        assert_eq!(plain.len(), 2);
        assert_eq!(ids(&format!("{BASE}[local]\nmax_retries = 7\n")), plain);
        assert_eq!(ids(&format!("{BASE}[local]\n")), plain);
        assert_eq!(ids(&format!("{BASE}[local]\ngpus = [1]\nruns_per_gpu = 3\n")), plain);
    }
}
