//! The facts of a sweep's results directory that `status`, `cancel` and `run` all need, and
//! the one Slurm job name of a sweep.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::RunId;
use crate::error::RunError;
use crate::layout::{self, SWEEP_JSON, SweepManifest};

/// `drover-<sweep>-<8 hex of the results path>`: one name for all of a sweep's jobs, so one
/// `squeue --name` answers for the whole sweep, and two results directories never mix.
pub fn job_name(sweep: &str, root: &Path) -> (String, String) {
    let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
    let token: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    (format!("drover-{sweep}-{token}"), token)
}

/// The facts of a sweep's results directory that status, cancel and run all need.
pub(crate) struct SweepDir {
    pub(crate) root: PathBuf,
    pub(crate) name: String,
    /// From the plan, or from `sweep.json` through [`SweepManifest::run_ids`]: never unchecked.
    pub(crate) runs: Vec<RunId>,
    pub(super) job_name: String,
}

impl SweepDir {
    pub(crate) fn open(dir: &Path) -> Result<SweepDir, RunError> {
        let root = match dir.canonicalize() {
            Ok(root) if root.is_dir() => root,
            // A file, or a path that is not there: not results, whatever the OS error says.
            Ok(_) => return Err(RunError::NotResults { dir: dir.to_path_buf() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RunError::NotResults { dir: dir.to_path_buf() }),
            Err(source) => return Err(RunError::Io { action: "open", path: dir.to_path_buf(), source }),
        };
        let manifest_path = root.join(SWEEP_JSON);
        let manifest: SweepManifest = layout::read_record(&manifest_path)
            .map_err(|reason| RunError::Ledger { path: manifest_path.clone(), reason })?
            .ok_or_else(|| RunError::NotResults { dir: root.clone() })?;
        // The one place run ids come back from disk: each becomes `runs/<id>/`.
        let runs = manifest.run_ids().map_err(|reason| RunError::Ledger {
            path: manifest_path.clone(),
            reason: format!("{reason}; `drover run` on the sweep file writes it again"),
        })?;
        let (job_name, _) = job_name(&manifest.name, &root);
        Ok(SweepDir { root, name: manifest.name, runs, job_name })
    }

    pub(crate) fn run_dir(&self, run_id: &RunId) -> PathBuf {
        self.root.join("runs").join(run_id.as_str())
    }
}
