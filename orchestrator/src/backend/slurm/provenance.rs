//! What a submission records of where it came from: drover's version, the git revision of the
//! sweep file, the plugins' and builds' SHA-256, the submitting host and user.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// What a run's provenance records at submission (the run's `spec.json` is its resolved config;
/// each attempt adds host and job id to `runs/<id>/attempts.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Provenance {
    /// drover's version.
    pub drover_version: String,
    /// `git rev-parse HEAD` in the sweep file's directory, when it is in a repository.
    pub git_revision: Option<String>,
    /// The sweep file.
    pub sweep_file: PathBuf,
    /// Plugin name → (path, SHA-256).
    pub plugins: BTreeMap<String, (PathBuf, String)>,
    /// The submitting host.
    pub submit_host: String,
    /// The submitting user's uid, whose jobs the sweep's `squeue` calls ask for (absent in
    /// submissions from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_uid: Option<u32>,
    /// `[slurm.arch]`: machine → file name (`drover-job`, each plugin's) → SHA-256 of the build
    /// that nodes of that machine run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arch_builds: BTreeMap<String, BTreeMap<String, String>>,
    /// `slurm.after`: the terms on the user's own jobs that the array waits on (absent when
    /// none, and in submissions from before the setting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

pub(super) fn sha256_file(path: &Path) -> String {
    crate::backend::file_sha256(path).unwrap_or_default()
}

/// How long `git rev-parse HEAD` may take: a repository on a hung network filesystem must not
/// hold the submission up.
const GIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `git rev-parse HEAD` in `dir`: `None` outside a repository, without git, or when it does not
/// answer within [`GIT_TIMEOUT`] (then with a warning, as the provenance lacks what it could
/// have had).
fn git_revision(dir: &Path) -> Option<String> {
    let mut cmd = std::process::Command::new("git");
    cmd.arg("-C").arg(dir).args(["rev-parse", "HEAD"]);
    match crate::subprocess::run(&mut cmd, None, GIT_TIMEOUT) {
        Ok(Some(done)) if done.status.success() => Some(done.stdout.trim().to_string()).filter(|r| !r.is_empty()),
        Ok(Some(_)) | Err(_) => None,
        Ok(None) => {
            tracing::warn!("`git rev-parse HEAD` in `{}` did not answer within {} s: the submission records no git revision", dir.display(), GIT_TIMEOUT.as_secs());
            None
        }
    }
}

pub(super) fn provenance(plan: &Plan) -> Provenance {
    let sweep_dir = plan.sweep.source.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let git_revision = git_revision(sweep_dir);
    Provenance {
        drover_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision,
        sweep_file: std::path::absolute(&plan.sweep.source).unwrap_or_else(|_| plan.sweep.source.clone()),
        plugins: plan.plugins.iter().map(|(name, path)| (name.clone(), (path.clone(), sha256_file(path)))).collect(),
        submit_host: std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
        submit_uid: Some(crate::backend::slurm_cmd::current_uid()),
        arch_builds: plan
            .sweep
            .slurm
            .arch
            .iter()
            .map(|(machine, dir)| {
                let files = crate::backend::arch::build_files(&plan.plugins).into_iter();
                (machine.clone(), files.map(|f| (f.to_string_lossy().into_owned(), sha256_file(&dir.join(f)))).collect())
            })
            .collect(),
        after: plan.sweep.slurm.after.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The revision comes through `subprocess::run` (a timeout, the child's group killed):
    /// the crate's own checkout has one, a fresh directory none.
    #[test]
    fn the_git_revision_is_read_with_a_timeout_and_absent_outside_a_repository() {
        let outside = tempfile::tempdir().expect("tempdir");
        assert_eq!(git_revision(outside.path()), None);
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        if here.join("../.git").exists() {
            let rev = git_revision(here).expect("the checkout's revision");
            assert!(rev.len() >= 40 && rev.chars().all(|c| c.is_ascii_hexdigit()), "{rev}");
        }
    }
}
