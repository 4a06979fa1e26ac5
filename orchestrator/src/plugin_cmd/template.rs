//! `drover plugin new`: writes a standalone plugin project from the template in
//! `plugins/template/` (embedded with `include_str!`, so an installed drover carries it).

use std::path::{Path, PathBuf};

use crate::error::PluginCmdError;

/// The version of `drover-plugin-api` this drover was released with; the dependency of a new
/// project when drover's source tree is not at hand. The orchestrator does not link the api
/// crate (ARCHITECTURE.md), so this is a literal, kept equal to `plugins/api/Cargo.toml` by the
/// test `api_crate_version_matches_the_manifest`.
const API_CRATE_VERSION: &str = "1.3.0";

/// The api crate's package name, as a `--api-path` manifest must declare it.
const API_CRATE_NAME: &str = "drover-plugin-api";

/// `[package] name` of a `Cargo.toml`, if it parses and has one.
fn package_name(manifest: &str) -> Option<String> {
    let table = manifest.parse::<toml::Table>().ok()?;
    Some(table.get("package")?.get("name")?.as_str()?.to_owned())
}

/// Template files: (path in the new project, contents).
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../plugins/template/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("../../../plugins/template/src/lib.rs")),
    ("src/tests.rs", include_str!("../../../plugins/template/src/tests.rs")),
    ("README.md", include_str!("../../../plugins/template/README.md")),
    ("sweep.toml", include_str!("../../../plugins/template/sweep.toml")),
    (".gitignore", include_str!("../../../plugins/template/gitignore")),
];

/// How the new project depends on `drover-plugin-api`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiDependency {
    /// A path to the crate (`plugins/api` of a drover checkout).
    Path(PathBuf),
    /// A crates.io version requirement.
    Version(String),
}

impl ApiDependency {
    /// `plugins/api` of the source tree this drover was built from, if it is still there;
    /// otherwise the released version.
    pub fn detect() -> Self {
        let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/api");
        match Self::from_path(&api) {
            Ok(dep) => dep,
            Err(_) => ApiDependency::Version(API_CRATE_VERSION.to_string()),
        }
    }

    /// A path dependency on the `drover-plugin-api` crate in `dir` (`--api-path`), made
    /// absolute, so the new project builds wherever it is moved on this machine.
    ///
    /// # Errors
    /// [`PluginCmdError::BadApiPath`] when `dir` does not exist or holds no `Cargo.toml` whose
    /// package is `drover-plugin-api`.
    pub fn from_path(dir: &Path) -> Result<Self, PluginCmdError> {
        let bad = |reason: String| PluginCmdError::BadApiPath { path: dir.to_path_buf(), reason };
        let canonical = dir.canonicalize().map_err(|e| bad(format!("cannot be read ({e})")))?;
        let manifest = canonical.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(|e| {
            bad(format!("no `Cargo.toml` there ({e}); give the folder of the `drover-plugin-api` crate, `<drover>/plugins/api`"))
        })?;
        match package_name(&text).as_deref() {
            Some(API_CRATE_NAME) => Ok(ApiDependency::Path(canonical)),
            Some(other) => Err(bad(format!(
                "its `Cargo.toml` is the crate `{other}`, not `{API_CRATE_NAME}`; give `<drover>/plugins/api`"
            ))),
            None => Err(bad(format!(
                "its `Cargo.toml` names no package (a workspace?), not the crate `{API_CRATE_NAME}`; give `<drover>/plugins/api`"
            ))),
        }
    }

    /// The `Cargo.lock` a new project starts from: for a path dependency, the lock file of the
    /// workspace that crate belongs to, if any.
    ///
    /// Only that workspace's lock pins the versions the api crate was built and tested with
    /// (drover's own). A lock file found another way (say `<api>/../../Cargo.lock` of an api
    /// crate copied elsewhere) belongs to some other project: copied into the new one, cargo
    /// would keep whatever that project happened to pin. Like cargo, the workspace root is
    /// the nearest folder above the crate whose `Cargo.toml` has `[workspace]`, and it counts
    /// only when its `members` list the crate.
    pub fn lockfile(&self) -> Option<PathBuf> {
        let ApiDependency::Path(api) = self else { return None };
        for root in api.ancestors().skip(1) {
            let Ok(text) = std::fs::read_to_string(root.join("Cargo.toml")) else { continue };
            let Ok(manifest) = text.parse::<toml::Table>() else { return None };
            let Some(workspace) = manifest.get("workspace") else { continue };
            let member = api.strip_prefix(root).ok()?;
            let listed = workspace
                .get("members")
                .and_then(toml::Value::as_array)
                .is_some_and(|members| members.iter().filter_map(toml::Value::as_str).any(|m| Path::new(m) == member));
            let lock = root.join("Cargo.lock");
            return (listed && lock.is_file()).then_some(lock);
        }
        None
    }

    fn toml(&self, testing: bool) -> String {
        let features = if testing { r#", features = ["testing"]"# } else { "" };
        match self {
            // A TOML basic string: escape what JSON and TOML escape alike.
            ApiDependency::Path(p) => format!("{{ path = {}{features} }}", serde_json::Value::from(p.display().to_string())),
            ApiDependency::Version(v) => format!("{{ version = {}{features} }}", serde_json::Value::from(v.as_str())),
        }
    }
}

/// What `drover plugin new` was asked for.
#[derive(Debug, Clone)]
pub struct NewPluginSpec {
    /// Plugin name: `[a-z][a-z0-9_]*`; the crate is `drover-plugin-<name>`.
    pub name: String,
    /// The project directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// The `drover-plugin-api` dependency.
    pub api: ApiDependency,
    /// A `Cargo.lock` to start from (drover's own, so the plugin builds with the versions
    /// drover was tested with, and offline when they are cached).
    pub lockfile: Option<PathBuf>,
}

fn check_name(name: &str) -> Result<(), PluginCmdError> {
    let bad = |reason| Err(PluginCmdError::BadName { name: name.to_string(), reason });
    if name.is_empty() || name.len() > 64 {
        return bad("use 1 to 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("start with a lowercase letter");
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return bad("use only lowercase letters, digits and `_` (it names the crate and the library)");
    }
    Ok(())
}

/// Writes the project; returns the files written. Never overwrites anything.
///
/// # Errors
/// A bad name, a non-empty target directory, or an I/O failure (naming the path).
pub fn create_project(spec: &NewPluginSpec) -> Result<Vec<PathBuf>, PluginCmdError> {
    check_name(&spec.name)?;
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| PluginCmdError::Io { action, path, source }
    };
    if spec.dir.exists() {
        let mut entries = std::fs::read_dir(&spec.dir).map_err(io("read directory", &spec.dir))?;
        if entries.next().is_some() {
            return Err(PluginCmdError::DirNotEmpty { dir: spec.dir.clone() });
        }
    }
    let mut written = Vec::new();
    for (rel, text) in FILES {
        let text = text
            .replace("__API_DEPENDENCY_TESTING__", &spec.api.toml(true))
            .replace("__API_DEPENDENCY__", &spec.api.toml(false))
            .replace("__SNAKE__", &spec.name)
            .replace("__NAME__", &spec.name);
        let path = spec.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create directory", parent))?;
        }
        std::fs::write(&path, text).map_err(io("write", &path))?;
        written.push(path);
    }
    if let Some(lock) = spec.lockfile.as_deref().filter(|l| l.is_file()) {
        let path = spec.dir.join("Cargo.lock");
        std::fs::copy(lock, &path).map_err(io("copy Cargo.lock to", &path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_with_the_name_and_dependency_substituted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("algo");
        let spec = NewPluginSpec {
            name: "my_algo".into(),
            dir: dir.clone(),
            api: ApiDependency::Version("0.1.0".into()),
            lockfile: None,
        };
        let files = create_project(&spec).unwrap();
        assert_eq!(files.len(), FILES.len());
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains(r#"name = "drover-plugin-my_algo""#), "{cargo}");
        assert!(cargo.contains(r#"drover-plugin-api = { version = "0.1.0" }"#), "{cargo}");
        assert!(cargo.contains(r#"drover-plugin-api = { version = "0.1.0", features = ["testing"] }"#), "{cargo}");
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains(r#""my_algo","#) && !lib.contains("__"), "placeholders left in src/lib.rs");
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.contains("libdrover_plugin_my_algo.so"), "{readme}");
        for (rel, _) in FILES {
            let text = std::fs::read_to_string(dir.join(rel)).unwrap();
            assert!(!text.contains("__NAME__") && !text.contains("__API_"), "placeholder left in {rel}");
        }

        // Never overwrites.
        let e = create_project(&spec).unwrap_err().to_string();
        assert!(e.contains("already exists and is not empty"), "{e}");
        let e = create_project(&NewPluginSpec { name: "My-Algo".into(), ..spec }).unwrap_err().to_string();
        assert!(e.starts_with("invalid plugin name `My-Algo`"), "{e}");
    }

    /// The template uses the newest API (plugin state, rollout index): a project made without
    /// drover's source tree must ask for that version, not the one drover had when this
    /// constant was written.
    #[test]
    fn api_crate_version_matches_the_manifest() {
        let manifest = include_str!("../../../plugins/api/Cargo.toml");
        let version = manifest
            .lines()
            .find_map(|l| l.strip_prefix("version = "))
            .map(|v| v.trim().trim_matches('"'))
            .expect("plugins/api/Cargo.toml has a version");
        assert_eq!(API_CRATE_VERSION, version, "update API_CRATE_VERSION to plugins/api's version");
    }

    /// Review finding: `<api>/../../Cargo.lock` was copied whatever it was. Only the lock of
    /// the workspace that lists the api crate is drover's.
    #[test]
    fn only_the_lock_file_of_the_api_crates_own_workspace_is_copied() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = tmp.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let api_manifest = "[package]\nname = \"drover-plugin-api\"\n";
        write("drover/Cargo.toml", "[workspace]\nmembers = [\"orchestrator\", \"plugins/api\"]\n");
        write("drover/Cargo.lock", "# drover's\n");
        write("drover/plugins/api/Cargo.toml", api_manifest);
        // An api crate copied out of its workspace, two folders below another project's lock.
        write("project/Cargo.lock", "# someone else's\n");
        write("project/vendor/api/Cargo.toml", api_manifest);
        // A workspace that does not list the crate.
        write("mono/Cargo.toml", "[workspace]\nmembers = [\"tools\"]\n");
        write("mono/Cargo.lock", "# mono's\n");
        write("mono/libs/api/Cargo.toml", api_manifest);

        let dep = |rel: &str| ApiDependency::from_path(&tmp.path().join(rel)).unwrap();
        let drover = dep("drover/plugins/api");
        assert_eq!(drover.lockfile(), Some(tmp.path().canonicalize().unwrap().join("drover/Cargo.lock")));
        assert_eq!(dep("project/vendor/api").lockfile(), None);
        assert_eq!(dep("mono/libs/api").lockfile(), None);
        assert_eq!(ApiDependency::Version("1.3.0".into()).lockfile(), None);

        let dir = tmp.path().join("new");
        let spec = NewPluginSpec { name: "algo".into(), dir: dir.clone(), lockfile: drover.lockfile(), api: drover };
        create_project(&spec).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("Cargo.lock")).unwrap(), "# drover's\n");
    }

    #[test]
    fn a_path_dependency_is_written_as_a_toml_string() {
        let dep = ApiDependency::Path(PathBuf::from("/src/drover \"x\"/plugins/api"));
        assert_eq!(dep.toml(false), r#"{ path = "/src/drover \"x\"/plugins/api" }"#);
        assert!(matches!(ApiDependency::detect(), ApiDependency::Path(p) if p.ends_with("plugins/api")));
    }
}
