//! Plugin resolution: `run.plugin` (a name or a path) → the absolute path of a `.so`.
//!
//! The orchestrator never loads the plugin (the job does); it only finds the file, so a typo is
//! reported before anything is launched. The current directory is never searched implicitly.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, ConfigErrorKind};

/// Where plugins are looked for, in order.
#[derive(Debug, Clone, Default)]
pub struct PluginSearch {
    dirs: Vec<PathBuf>,
}

impl PluginSearch {
    /// The search order: the sweep's `plugin_path`, then `DROVER_PLUGIN_PATH` (colon-separated),
    /// then `<exe dir>/plugins/`, then `<exe dir>/` (where cargo puts the workspace's cdylibs).
    pub fn new(sweep_dirs: &[PathBuf], env_path: Option<&OsStr>, exe_dir: Option<&Path>) -> Self {
        let mut dirs: Vec<PathBuf> = sweep_dirs.to_vec();
        if let Some(env_path) = env_path {
            dirs.extend(std::env::split_paths(env_path).filter(|p| !p.as_os_str().is_empty()));
        }
        if let Some(exe_dir) = exe_dir {
            dirs.push(exe_dir.join("plugins"));
            dirs.push(exe_dir.to_path_buf());
        }
        PluginSearch { dirs }
    }

    /// The directories searched, in order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Finds the plugin `spec` (`run.plugin` as written); `file` names the sweep file in errors.
    pub fn resolve(&self, spec: &str, file: &Path) -> Result<PathBuf, ConfigError> {
        let not_found = |searched: Vec<PathBuf>| {
            ConfigError::new(file, "run.plugin", ConfigErrorKind::PluginNotFound { name: spec.to_string(), searched })
        };
        if spec.contains('/') || spec.ends_with(".so") {
            let path = PathBuf::from(spec);
            return match path.canonicalize() {
                Ok(abs) if abs.is_file() => Ok(abs),
                _ => Err(not_found(vec![path])),
            };
        }
        let candidates = candidate_names(spec);
        let mut searched = Vec::new();
        for dir in &self.dirs {
            for name in &candidates {
                let path = dir.join(name);
                if path.is_file() {
                    // Absolute, so the job finds it whatever its working directory.
                    return path.canonicalize().or(Ok(path));
                }
                searched.push(path);
            }
        }
        Err(not_found(searched))
    }
}

/// `ppo` → `libdrover_plugin_ppo.so`, `libppo.so`; cargo turns `-` in crate names into `_`.
fn candidate_names(name: &str) -> Vec<String> {
    let mut names = vec![format!("libdrover_plugin_{name}.so"), format!("lib{name}.so")];
    if name.contains('-') {
        let snake = name.replace('-', "_");
        names.push(format!("libdrover_plugin_{snake}.so"));
        names.push(format!("lib{snake}.so"));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_name_in_order_and_names_every_tried_file_when_missing() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("libdrover_plugin_ppo.so"), b"").unwrap();
        std::fs::write(a.path().join("libother.so"), b"").unwrap();
        let search = PluginSearch::new(&[a.path().to_path_buf()], Some(b.path().as_os_str()), None);
        let f = Path::new("s.toml");
        let found = search.resolve("ppo", f).unwrap();
        assert_eq!(found, b.path().join("libdrover_plugin_ppo.so").canonicalize().unwrap());
        assert_eq!(search.resolve("other", f).unwrap(), a.path().join("libother.so").canonicalize().unwrap());

        let err = search.resolve("nope", f).unwrap_err().to_string();
        assert!(err.starts_with("failed to load sweep file `s.toml`: key `run.plugin`: plugin `nope` not found; searched"), "{err}");
        assert!(err.contains(&a.path().join("libdrover_plugin_nope.so").display().to_string()), "{err}");
        assert!(err.contains(&b.path().join("libnope.so").display().to_string()), "{err}");
    }

    #[test]
    fn paths_are_taken_as_paths_and_made_absolute() {
        let d = tempfile::tempdir().unwrap();
        let so = d.path().join("x.so");
        std::fs::write(&so, b"").unwrap();
        let search = PluginSearch::default();
        assert_eq!(search.resolve(so.to_str().unwrap(), Path::new("s.toml")).unwrap(), so.canonicalize().unwrap());
        let err = search.resolve("./missing.so", Path::new("s.toml")).unwrap_err().to_string();
        assert!(err.contains("plugin `./missing.so` not found; searched `./missing.so`"), "{err}");
    }
}
