//! The facts of a sweep's results directory that `status`, `cancel` and `run` all need, and
//! the one Slurm job name of a sweep.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::RunId;
use crate::error::RunError;
use crate::layout::{self, SWEEP_JSON, SweepManifest};

use super::ledger::Ledger;

/// The sweep's job name and the token of its submissions' comments (`drover:<token>:<n>`):
/// the ones its `ledger`'s first intent recorded ([`Ledger::recorded_job_name`]), else
/// [`new_job_name`]. One name for all of a sweep's jobs, so one `squeue --name` answers for the
/// whole sweep. Read back rather than computed again, since the path it was made from is not
/// the only one: the same folder reached through a bind mount, autofs or another login node's
/// mount point canonicalizes to another path, whose name would find none of the sweep's live
/// jobs (reported cancelled, then submitted again).
pub fn job_name(sweep: &str, root: &Path, ledger: &Ledger) -> (String, String) {
    ledger.recorded_job_name().unwrap_or_else(|| new_job_name(sweep, root))
}

/// `drover-<sweep>-<8 hex>`, for a sweep with no submission yet: a hash of the results path,
/// the time and this process, so that two results directories never mix, not even a new
/// sweep made at the path of one moved away (whose ledger keeps its own name: a dangling
/// submission of it must not adopt the new sweep's array by its comment). The first intent
/// records it, and [`job_name`] reads it back from then on.
pub fn new_job_name(sweep: &str, root: &Path) -> (String, String) {
    let mut hasher = Sha256::new();
    hasher.update(root.as_os_str().as_encoded_bytes());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.update(now.as_nanos().to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    let digest = hasher.finalize();
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
        // A ledger that cannot be read names no job: `status` and `cancel` report it as they
        // load it themselves.
        let (job_name, _) = job_name(&manifest.name, &root, &Ledger::load(&root).unwrap_or_default());
        Ok(SweepDir { root, name: manifest.name, runs, job_name })
    }

    pub(crate) fn run_dir(&self, run_id: &RunId) -> PathBuf {
        self.root.join("runs").join(run_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::slurm::ledger::{Ledger, LedgerEvent};
    use crate::backend::slurm::test_support::intent;

    /// Review finding 3: the same results directory reached through another path (a bind
    /// mount, another login node's mount point) canonicalizes elsewhere; the job name the
    /// ledger recorded is the one its jobs have, not one made from the path at hand.
    #[test]
    fn a_sweeps_job_name_is_the_one_its_ledger_recorded_whatever_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        std::fs::write(root.join(SWEEP_JSON), serde_json::json!({"format_version": 1, "name": "s", "source": "s.toml", "runs": [], "created_at": "0"}).to_string())
            .expect("sweep.json");
        let fresh = new_job_name("s", &root);
        assert!(fresh.0.starts_with("drover-s-") && fresh.1.len() == 8, "{fresh:?}");
        // Review: a sweep made anew at the path of one moved away shared its name and comment
        // token, so a dangling submission of the moved one could adopt the new one's array.
        assert_ne!(new_job_name("s", &root), fresh, "not a function of the path alone");

        // Submitted from the other mount point: the name and comments carry that path's hash.
        let (there, token) = new_job_name("s", Path::new("/gpfs/fs1/home/u/results"));
        let mut ledger = Ledger::load(&root).expect("ledger");
        for n in 0..2 {
            let mut event = intent(n, vec![format!("{n:016x}")], None, None);
            if let LedgerEvent::Intent { job_name, comment, .. } = &mut event {
                (*job_name, *comment) = (there.clone(), format!("drover:{token}:{n}"));
            }
            ledger.append(event).expect("intent");
        }
        assert_ne!(fresh.0, there);
        assert_eq!(job_name("s", &root, &Ledger::load(&root).expect("ledger")), (there.clone(), token.clone()));
        assert_eq!(SweepDir::open(&root).expect("open").job_name, there);

        // A first intent that drover cannot have written is not trusted.
        let ledger_path = root.join(crate::backend::slurm::SLURM_DIR).join(crate::backend::slurm::ledger::LEDGER);
        let text = std::fs::read_to_string(&ledger_path).expect("ledger");
        std::fs::write(&ledger_path, text.replacen(&there, "x;rm -rf", 1)).expect("tamper");
        assert_eq!(job_name("s", &root, &Ledger::load(&root).expect("ledger")).0, there, "the next intent's");
    }
}
