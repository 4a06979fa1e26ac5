//! Plugin resolution: `run.plugin` (a name or a path) → the absolute path of a `.so`.
//!
//! The orchestrator never loads the plugin (the job does); it only finds the file, so a typo is
//! reported before anything is launched. The current directory is never searched implicitly.
//! A relative path is relative to the base its caller gives: the sweep file's folder when the
//! file wrote it, the working directory when the command line or the environment did.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::config::sweep::is_plugin_path;
use crate::error::{ConfigError, ConfigErrorKind};

/// What is wrong with a plugin search folder, if anything: "folder `X` does not exist (not built
/// yet?)" or "`X` is not a folder". One wording for `drover run`'s and `drover plugin list`'s
/// warnings.
pub(crate) fn search_folder_problem(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some(format!("`{}` is not a folder", dir.display())),
        Err(_) => Some(format!("folder `{}` does not exist (not built yet?)", dir.display())),
    }
}

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

    /// Finds the plugin `spec` (`run.plugin` as written), a relative path taken from the working
    /// directory; `file` names the sweep file in errors.
    pub fn resolve(&self, spec: &str, file: &Path) -> Result<PathBuf, ConfigError> {
        self.resolve_in(spec, Path::new(""), file)
    }

    /// Finds the plugin `spec`, a relative path in it taken from `base` (the sweep file's folder
    /// for a value the file wrote; empty for the working directory). A missing plugin's error
    /// names the absolute path(s) tried, so a base that was not the one meant shows.
    pub fn resolve_in(&self, spec: &str, base: &Path, file: &Path) -> Result<PathBuf, ConfigError> {
        let not_found = |searched: Vec<PathBuf>, available: Vec<String>| {
            // `absolute` does no I/O beyond reading the working directory; without one, as given.
            // `configs/../target/release` is shown as `target/release`, the folder meant.
            let searched: Vec<PathBuf> = searched.into_iter().map(|p| lexically_normal(&std::path::absolute(&p).unwrap_or(p))).collect();
            let other_builds = other_profile_builds(&searched);
            ConfigError::new(file, "run.plugin", ConfigErrorKind::PluginNotFound { name: spec.to_string(), searched, available, other_builds })
        };
        if is_plugin_path(spec) {
            let path = base.join(spec);
            return match path.canonicalize() {
                Ok(abs) if abs.is_file() => Ok(abs),
                _ => Err(not_found(vec![path], Vec::new())),
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
        Err(not_found(searched, self.available()))
    }

    /// The names of the plugins in the search folders (`libdrover_plugin_<name>.so`), sorted, each
    /// once: a misspelled name's error lists them. Unreadable folders are skipped.
    fn available(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .dirs
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                Some(name.strip_prefix("libdrover_plugin_")?.strip_suffix(".so")?.to_string())
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The files of `searched` that exist in the other cargo profile's folder: for
/// `<dir>/release/<file>` the file `<dir>/debug/<file>`, and back. A plugin built with plain
/// `cargo build` lands in `target/debug`, which a sweep pointing at `target/release` misses.
fn other_profile_builds(searched: &[PathBuf]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for path in searched {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { continue };
        let other = match dir.file_name().and_then(OsStr::to_str) {
            Some("release") => "debug",
            Some("debug") => "release",
            _ => continue,
        };
        let Some(candidate) = dir.parent().map(|root| root.join(other).join(name)) else { continue };
        if candidate.is_file() && !searched.contains(&candidate) && !found.contains(&candidate) {
            found.push(candidate);
        }
    }
    found
}

/// `path` with `.` dropped and each `..` taking away the component before it, on the text alone:
/// no symlink is resolved (a message shows the folder the user named, the file looked for is the
/// same). A `..` with nothing before it stays, and one at the root is the root.
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                Some(Component::ParentDir | Component::CurDir) | None => out.push(component),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// `ppo` → `libdrover_plugin_ppo.so`, `libppo.so`; cargo turns `-` in crate names into `_`.
/// The file names a search for the plugin named `name` finds, the preferred one first.
pub(crate) fn file_names_of_plugin(name: &str) -> Vec<String> {
    candidate_names(name)
}

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
        let cwd = std::env::current_dir().unwrap();
        assert!(err.contains(&format!("plugin `./missing.so` not found; searched `{}`", cwd.join("missing.so").display())), "{err}");
    }

    /// A name not found lists the plugins the search folders hold and the one probably meant.
    #[test]
    fn a_misspelled_name_lists_the_plugins_there() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for (dir, file) in [(&a, "libdrover_plugin_ppo.so"), (&a, "libdrover_plugin_grpo.so"), (&b, "libdrover_plugin_ppo.so"), (&b, "libother.so")] {
            std::fs::write(dir.path().join(file), b"").unwrap();
        }
        let search = PluginSearch::new(&[a.path().to_path_buf(), b.path().to_path_buf()], None, None);
        let f = Path::new("s.toml");
        let err = search.resolve("pop", f).unwrap_err().to_string();
        assert!(err.ends_with("or build the plugin); plugins found there: grpo, ppo; did you mean `ppo`?"), "{err}");
        let err = search.resolve("sac", f).unwrap_err().to_string();
        assert!(err.ends_with("; plugins found there: grpo, ppo"), "{err}");
        let empty = PluginSearch::new(&[b.path().join("none")], None, None);
        assert!(empty.resolve("ppo", f).unwrap_err().to_string().ends_with("or build the plugin)"));
    }

    /// A plugin built with plain `cargo build` (in `target/debug`) while the sweep searches
    /// `target/release` is named where it is, by name and by path; nothing is said without one.
    #[test]
    fn a_build_in_the_other_profile_folder_is_pointed_out() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        for dir in ["target/debug", "target/release"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("target/debug/libdrover_plugin_a2c.so"), b"").unwrap();
        let search = PluginSearch::new(&[root.join("target/release")], None, None);
        let f = root.join("s.toml");
        let debug_build = root.join("target/debug/libdrover_plugin_a2c.so");
        let hint = format!("; a build of it exists at `{}`, in the other cargo profile's folder", debug_build.display());
        let err = search.resolve("a2c", &f).unwrap_err().to_string();
        assert!(err.contains(&hint), "{err}");
        let err = search.resolve_in("target/release/libdrover_plugin_a2c.so", &root, &f).unwrap_err().to_string();
        assert!(err.contains(&hint), "{err}");
        let err = search.resolve("ppo", &f).unwrap_err().to_string();
        assert!(!err.contains("other cargo profile"), "{err}");
        let both = PluginSearch::new(&[root.join("target/release"), root.join("target/debug")], None, None);
        assert_eq!(both.resolve("a2c", &f).unwrap(), debug_build, "a searched debug folder is simply found");
    }

    #[test]
    fn lexical_normal_form_drops_dot_dot_without_reading_the_disk() {
        let cases = [
            ("/work/x/configs/../target/release", "/work/x/target/release"),
            ("/a/./b/../../c", "/c"),
            ("/../a", "/a"),
            ("a/../../b", "../b"),
            ("../../a/b/..", "../../a"),
            ("a/..", "."),
            ("/a/b/", "/a/b"),
        ];
        for (path, normal) in cases {
            assert_eq!(lexically_normal(Path::new(path)), Path::new(normal), "{path}");
        }
    }

    /// A search folder or a plugin path written with `..` is named without it when the plugin is
    /// not found, and the same files are found as before: `dir/sub/../libx.so` is `dir/libx.so`.
    #[test]
    fn not_found_messages_show_folders_without_dot_dot() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("configs")).unwrap();
        std::fs::create_dir_all(root.join("target/release")).unwrap();
        std::fs::write(root.join("target/release/libdrover_plugin_ppo.so"), b"").unwrap();
        let dotted = root.join("configs/../target/release");
        let search = PluginSearch::new(&[dotted], None, None);
        let f = root.join("configs/s.toml");
        assert_eq!(search.resolve("ppo", &f).unwrap(), root.join("target/release/libdrover_plugin_ppo.so"));
        let err = search.resolve("nope", &f).unwrap_err().to_string();
        let clean = root.join("target/release/libdrover_plugin_nope.so");
        assert!(err.contains(&format!("searched `{}`", clean.display())), "{err}");
        assert!(!err.contains("/../"), "{err}");
        let err = search.resolve_in("../lib/libx.so", &root.join("configs"), &f).unwrap_err().to_string();
        assert!(err.contains(&format!("searched `{}`", root.join("lib/libx.so").display())), "{err}");
        assert!(!err.contains("/../"), "{err}");
    }

    /// A relative path is taken from the base given (the sweep file's folder), not from the
    /// working directory, and absolute paths ignore the base; the error names the path tried.
    #[test]
    fn relative_paths_are_taken_from_the_base() {
        let d = tempfile::tempdir().unwrap();
        let exp = d.path().join("exp");
        std::fs::create_dir_all(exp.join("lib")).unwrap();
        std::fs::write(exp.join("lib/libmine.so"), b"").unwrap();
        let search = PluginSearch::default();
        let f = exp.join("sweep.toml");
        let found = search.resolve_in("./lib/libmine.so", &exp, &f).unwrap();
        assert_eq!(found, exp.join("lib/libmine.so").canonicalize().unwrap());
        assert_eq!(search.resolve_in("lib/../lib/libmine.so", &exp, &f).unwrap(), found);
        let abs = exp.join("lib/libmine.so");
        assert_eq!(search.resolve_in(abs.to_str().unwrap(), Path::new("/nonexistent"), &f).unwrap(), found);
        // The same text from the working directory (this test's is not `exp`) is not found.
        assert!(search.resolve("./lib/libmine.so", &f).is_err());
        let err = search.resolve_in("./libother.so", &exp, &f).unwrap_err().to_string();
        assert!(err.contains(&format!("plugin `./libother.so` not found; searched `{}`", exp.join("libother.so").display())), "{err}");
        assert!(err.ends_with("(a relative path is relative to the sweep file's folder when the file wrote it, to the working directory when the command line or DROVER_* did)"), "a path's hint is not the search path's: {err}");
    }
}
