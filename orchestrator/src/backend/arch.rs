//! Machine architectures on a mixed cluster: which one a binary was built for (its ELF header)
//! and how a node's `uname -m` names it.
//!
//! A sweep submitted from an x86-64 login node to an AArch64 partition would otherwise start the
//! login node's `drover-job` there and fail every run with "Exec format error". `[slurm.arch]`
//! names a folder of builds per `uname -m` (`drover-job` and the sweep's plugins, under the same
//! file names); the batch script picks one by the node's `uname -m`, and a node that no build
//! fits ends its run with a reason that says so. Submission checks each folder here first.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, ConfigErrorKind};

/// The file name of the job runtime in a `[slurm.arch]` folder.
pub const JOB_BIN_NAME: &str = "drover-job";

/// What an ELF file's header says it was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltFor {
    /// The header's `e_machine`.
    pub e_machine: u16,
    /// The `uname -m` name of that machine, for the ones drover knows (`None`: another one).
    pub machine: Option<&'static str>,
}

/// Reads the ELF header of `path`: `None` when the file is no ELF file (a wrapper script, say).
pub fn built_for(path: &Path) -> std::io::Result<Option<BuiltFor>> {
    let mut head = [0u8; 20];
    let mut file = std::fs::File::open(path)?;
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    if (4..head.len()).contains(&got) && head[..4] == *b"\x7fELF" {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "its ELF header is cut short (a truncated copy?)"));
    }
    Ok(parse_header(&head[..got]))
}

/// `e_ident` (magic, class, data) and `e_machine` of an ELF header's first 20 bytes.
fn parse_header(head: &[u8]) -> Option<BuiltFor> {
    if head.len() < 20 || head[..4] != *b"\x7fELF" {
        return None;
    }
    let (class64, little) = (head[4] == 2, head[5] != 2);
    let bytes = [head[18], head[19]];
    let e_machine = if little { u16::from_le_bytes(bytes) } else { u16::from_be_bytes(bytes) };
    let machine = match e_machine {
        62 => Some("x86_64"),
        183 => Some("aarch64"),
        3 => Some("i686"),
        40 => Some("armv7l"),
        21 if little => Some("ppc64le"),
        21 => Some("ppc64"),
        22 => Some("s390x"),
        243 if class64 => Some("riscv64"),
        258 => Some("loongarch64"),
        _ => None,
    };
    Some(BuiltFor { e_machine, machine })
}

/// Whether a node whose `uname -m` prints `uname` runs a build for `built` (a name from
/// [`BuiltFor::machine`]): 32-bit x86 and ARM go by several names.
pub fn covers(built: &str, uname: &str) -> bool {
    match built {
        "i686" => matches!(uname, "i386" | "i486" | "i586" | "i686"),
        "armv7l" => uname.starts_with("armv"),
        _ => built == uname,
    }
}

/// The shell `case` pattern of the `uname -m` names that [`covers`] accepts for `built`.
pub fn case_pattern(built: &str) -> &str {
    match built {
        "i686" => "i[3456]86",
        "armv7l" => "armv*",
        _ => built,
    }
}

/// Checks every `[slurm.arch]` folder of the sweep before anything is submitted: it must hold
/// `drover-job` and each plugin the runs load (by file name), built for that architecture where
/// the ELF header tells. A missing or foreign build would otherwise fail every run on those
/// nodes after its wait in the queue. The error names the sweep file and `slurm.arch.<name>`.
pub fn check_builds(arch: &BTreeMap<String, PathBuf>, plugins: &BTreeMap<String, PathBuf>, file: &Path) -> Result<(), ConfigError> {
    if arch.is_empty() {
        return Ok(());
    }
    // A folder holds one file per name: two plugins of one file name (`a/libx.so`, `b/libx.so`)
    // would both load whichever is there.
    let mut by_file: BTreeMap<&OsStr, &Path> = BTreeMap::new();
    for path in plugins.values() {
        let Some(file_name) = path.file_name() else { continue };
        if let Some(other) = by_file.insert(file_name, path).filter(|other| *other != path) {
            let key = format!("slurm.arch.{}", arch.keys().next().map_or("", String::as_str));
            let why = format!(
                "the plugins `{}` and `{}` have the same file name, and a `[slurm.arch]` folder holds one file per name: rename one of them",
                other.display(),
                path.display()
            );
            return Err(ConfigError::new(file, key, ConfigErrorKind::InvalidValue(why)));
        }
    }
    for (name, dir) in arch {
        let refuse = |why: String| ConfigError::new(file, format!("slurm.arch.{name}"), ConfigErrorKind::InvalidValue(why));
        for file_name in build_files(plugins) {
            let is_plugin = file_name != JOB_BIN_NAME;
            let path = dir.join(file_name);
            let what = if is_plugin { "the plugin" } else { "the job runtime" };
            if !path.is_file() {
                return Err(refuse(format!(
                    "`{}` is missing: nodes whose `uname -m` is `{name}` run drover-job and the sweep's plugins from `{}`; build {what} for {name} and put it there under this name",
                    path.display(),
                    dir.display()
                )));
            }
            if !is_plugin && !is_executable(&path) {
                return Err(refuse(format!("`{}` is not executable (copied without its mode? `chmod +x` it)", path.display())));
            }
            let built = built_for(&path).map_err(|e| refuse(format!("cannot read `{}`: {e}", path.display())))?;
            match built {
                Some(BuiltFor { machine: Some(machine), .. }) if !covers(machine, name) => {
                    return Err(refuse(format!(
                        "`{}` is built for {machine}, not for {name}: nodes whose `uname -m` is `{name}` could not run it",
                        path.display()
                    )));
                }
                None if is_plugin => {
                    return Err(refuse(format!("`{}` is not a shared library (it has no ELF header)", path.display())));
                }
                _ => {}
            }
            // A wrapper script standing in for drover-job is taken on trust.
            if !is_plugin && built.is_some() {
                check_job_version(&path).map_err(refuse)?;
            }
        }
    }
    Ok(())
}

/// The tag that precedes the drover version inside a `drover-job` binary
/// (`drover_job::BUILD_MARKER`).
const BUILD_TAG: &[u8] = b"\0drover-job build\0";

/// The drover version a `drover-job` binary names in its build marker, read from the file
/// without running it (it may be built for another machine); `None` when it carries none.
pub fn job_version(path: &Path) -> std::io::Result<Option<String>> {
    Ok(find_job_version(&std::fs::read(path)?))
}

fn find_job_version(bytes: &[u8]) -> Option<String> {
    let at = memchr::memmem::find(bytes, BUILD_TAG)? + BUILD_TAG.len();
    let len = bytes[at..].iter().take(64).position(|&b| b == 0)?;
    std::str::from_utf8(&bytes[at..at + len]).ok().map(str::to_owned)
}

/// A folder's `drover-job` must be of this drover's version: the batch script passes it flags
/// and a spec of this version, which an older runtime refuses only once the run has waited in
/// the queue and reached a node (a forgotten rebuild after an upgrade).
fn check_job_version(path: &Path) -> Result<(), String> {
    let ours = env!("CARGO_PKG_VERSION");
    match job_version(path) {
        Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
        Ok(Some(version)) if version == ours => Ok(()),
        Ok(Some(version)) => Err(format!(
            "`{}` is drover-job {version}, and this drover is {ours}: rebuild it from the same source as this drover",
            path.display()
        )),
        Ok(None) => Err(format!(
            "`{}` does not name its drover version (a drover-job from before drover-job recorded it, or another program): rebuild it from the same source as this drover ({ours})",
            path.display()
        )),
    }
}

/// The files a `[slurm.arch]` folder holds, by name: `drover-job`, then each plugin's file
/// once (what `check_builds` checks and the submission's provenance hashes).
pub fn build_files(plugins: &BTreeMap<String, PathBuf>) -> Vec<&OsStr> {
    let plugin_files: BTreeSet<&OsStr> = plugins.values().filter_map(|p| p.file_name()).collect();
    std::iter::once(OsStr::new(JOB_BIN_NAME)).chain(plugin_files).collect()
}

/// Whether anyone may execute `path` (what the batch script, run as the user, needs).
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF header's first 20 bytes: class, data (1 little, 2 big) and `e_machine`.
    fn header(class: u8, data: u8, e_machine: u16) -> Vec<u8> {
        let mut h = b"\x7fELF".to_vec();
        h.extend([class, data, 1, 0]);
        h.extend([0; 10]);
        h.extend(if data == 2 { e_machine.to_be_bytes() } else { e_machine.to_le_bytes() });
        h
    }

    /// A stand-in `drover-job` for `e_machine` whose build marker names `version`.
    fn job(e_machine: u16, version: &str) -> Vec<u8> {
        let mut bytes = header(2, 1, e_machine);
        bytes.extend([0x90; 100]);
        bytes.extend(BUILD_TAG);
        bytes.extend(version.as_bytes());
        bytes.extend([0, 1, 2]);
        bytes
    }

    #[test]
    fn the_build_marker_names_the_version() {
        assert_eq!(find_job_version(&job(62, "1.2.3")), Some("1.2.3".to_string()));
        assert_eq!(find_job_version(&header(2, 1, 62)), None, "no marker");
        let mut unterminated = header(2, 1, 62);
        unterminated.extend(BUILD_TAG);
        unterminated.extend(b"1.2.3");
        assert_eq!(find_job_version(&unterminated), None, "a marker cut off by the end of the file");
    }

    #[test]
    fn headers_name_their_machine() {
        let cases = [
            (header(2, 1, 62), Some("x86_64")),
            (header(2, 1, 183), Some("aarch64")),
            (header(2, 1, 21), Some("ppc64le")),
            (header(2, 2, 21), Some("ppc64")),
            (header(2, 2, 22), Some("s390x")),
            (header(2, 1, 243), Some("riscv64")),
            (header(1, 1, 243), None),
            (header(1, 1, 3), Some("i686")),
            (header(2, 1, 9999), None),
        ];
        for (bytes, machine) in cases {
            assert_eq!(parse_header(&bytes).map(|b| b.machine), Some(machine), "{bytes:?}");
        }
        assert_eq!(parse_header(&header(2, 2, 22)).map(|b| b.e_machine), Some(22), "big-endian e_machine");
        assert_eq!(parse_header(b"#!/bin/sh\nexec true\n"), None);
        assert_eq!(parse_header(&header(2, 1, 62)[..19]), None, "a truncated header");
    }

    /// The test binary itself is an ELF file built for the machine it runs on.
    #[test]
    fn this_binary_is_built_for_this_machine() {
        let exe = std::env::current_exe().expect("current exe");
        let built = built_for(&exe).expect("readable").expect("ELF");
        let uname = std::process::Command::new("uname").arg("-m").output().expect("uname");
        let uname = String::from_utf8_lossy(&uname.stdout).trim().to_string();
        let machine = built.machine.expect("a machine drover knows");
        assert!(covers(machine, &uname), "built for {machine}, running on {uname}");
        let script = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(script.path(), "#!/bin/sh\n").expect("write");
        assert_eq!(built_for(script.path()).expect("readable"), None);
    }

    #[test]
    fn names_and_case_patterns_agree() {
        for (built, yes, no) in [
            ("x86_64", &["x86_64"][..], &["aarch64", "i686"][..]),
            ("i686", &["i386", "i586", "i686"], &["x86_64", "i786"]),
            ("armv7l", &["armv7l", "armv6l", "armv8l"], &["aarch64", "arm64"]),
            ("aarch64", &["aarch64"], &["arm64", "armv8l"]),
        ] {
            for uname in yes.iter().chain(no) {
                let shell = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("case {uname} in {}) exit 0 ;; *) exit 1 ;; esac", case_pattern(built)))
                    .status()
                    .expect("sh");
                assert_eq!(covers(built, uname), yes.contains(uname), "{built} on {uname}");
                assert_eq!(shell.success(), covers(built, uname), "the shell pattern of {built} on {uname}");
            }
        }
    }

    #[test]
    fn each_arch_folder_needs_every_build_for_its_machine() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("aarch64");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let arch = BTreeMap::from([("aarch64".to_string(), dir.clone())]);
        let plugins = BTreeMap::from([("ppo".to_string(), PathBuf::from("/login/target/release/libdrover_plugin_ppo.so"))]);
        let sweep = Path::new("sweeps/s.toml");
        let error = |expect_in: &str| {
            let err = check_builds(&arch, &plugins, sweep).expect_err(expect_in).to_string();
            assert!(err.contains("sweeps/s.toml") && err.contains("slurm.arch.aarch64") && err.contains(expect_in), "{err}");
        };
        error(&format!("`{}` is missing", dir.join("drover-job").display()));
        std::fs::write(dir.join("drover-job"), header(2, 1, 183)).expect("write");
        error("is not executable");
        std::fs::set_permissions(dir.join("drover-job"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.join("drover-job"), &header(2, 1, 183)[..12]).expect("write");
        error("its ELF header is cut short");
        std::fs::write(dir.join("drover-job"), header(2, 1, 62)).expect("write");
        error("is built for x86_64, not for aarch64");
        std::fs::write(dir.join("drover-job"), header(2, 1, 183)).expect("write");
        error("does not name its drover version");
        std::fs::write(dir.join("drover-job"), job(183, "0.0.9")).expect("write");
        error(&format!("is drover-job 0.0.9, and this drover is {}", env!("CARGO_PKG_VERSION")));
        std::fs::write(dir.join("drover-job"), job(183, env!("CARGO_PKG_VERSION"))).expect("write");
        error(&format!("`{}` is missing", dir.join("libdrover_plugin_ppo.so").display()));
        std::fs::write(dir.join("libdrover_plugin_ppo.so"), "not a library").expect("write");
        error("is not a shared library");
        std::fs::write(dir.join("libdrover_plugin_ppo.so"), header(2, 1, 183)).expect("write");
        check_builds(&arch, &plugins, sweep).expect("both builds present, for aarch64");
        // A wrapper script may stand in for drover-job; an unknown machine is not judged.
        std::fs::write(dir.join("drover-job"), "#!/bin/sh\nexec /opt/drover-job \"$@\"\n").expect("write");
        std::fs::write(dir.join("libdrover_plugin_ppo.so"), header(2, 1, 9999)).expect("write");
        check_builds(&arch, &plugins, sweep).expect("a script and an unknown machine");
        check_builds(&BTreeMap::new(), &plugins, sweep).expect("no [slurm.arch]: nothing to check");
        let twins = BTreeMap::from([
            ("a".to_string(), PathBuf::from("/a/libdrover_plugin_ppo.so")),
            ("b".to_string(), PathBuf::from("/b/libdrover_plugin_ppo.so")),
        ]);
        let err = check_builds(&arch, &twins, sweep).expect_err("two plugins, one file name").to_string();
        assert!(err.contains("`/a/libdrover_plugin_ppo.so` and `/b/libdrover_plugin_ppo.so` have the same file name"), "{err}");
        check_builds(&BTreeMap::new(), &twins, sweep).expect("without [slurm.arch] the two paths are fine");
    }
}
