//! The on-disk kernel cache: NVRTC output kept between processes.
//!
//! NVRTC's first compile of drover's modules takes seconds, as long as a whole CartPole PPO run
//! on a GPU, and every job of a sweep would pay it again. The PTX is a pure function of the
//! module source (shape prelude included), the compile options and the NVRTC version, so a file
//! named by a hash of those is valid forever; a changed `.cu` file or toolkit gets a new name.
//!
//! Location: `$DROVER_CACHE_DIR/kernels`, else `$XDG_CACHE_HOME/drover/kernels`, else
//! `~/.cache/drover/kernels`; `DROVER_KERNEL_CACHE=off` disables it. Entries are written to a
//! temporary file and renamed into place, so concurrent jobs (a Slurm array on a shared home)
//! never read a partial file; a cache that cannot be read or written only costs the compile.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::KernelError;

/// The cache directory, or `None` when disabled or no home is known.
pub(crate) fn dir() -> Option<PathBuf> {
    if std::env::var("DROVER_KERNEL_CACHE").is_ok_and(|v| v == "off" || v == "0") {
        return None;
    }
    let env_dir = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = env_dir("DROVER_CACHE_DIR")
        .or_else(|| env_dir("XDG_CACHE_HOME").map(|d| d.join("drover")))
        .or_else(|| env_dir("HOME").map(|d| d.join(".cache/drover")))?;
    Some(base.join("kernels"))
}

/// Hex SHA-256 of the parts, each length-prefixed so that no two part lists collide.
pub(crate) fn key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The cached text of `file`, or `create()`'s, stored for next time. The flag says whether it
/// came from disk.
pub(crate) fn get_or_create(
    file: &str,
    create: impl FnOnce() -> Result<String, KernelError>,
) -> Result<(String, bool), KernelError> {
    get_or_create_in(dir(), file, create)
}

fn get_or_create_in(
    dir: Option<PathBuf>,
    file: &str,
    create: impl FnOnce() -> Result<String, KernelError>,
) -> Result<(String, bool), KernelError> {
    let Some(dir) = dir else {
        return Ok((create()?, false));
    };
    let path = dir.join(file);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if !text.is_empty() {
            return Ok((text, true));
        }
    }
    let text = create()?;
    if let Err(e) = store(&dir, file, &text) {
        tracing::debug!(path = %path.display(), error = %e, "kernel cache not written");
    }
    Ok((text, false))
}

fn store(dir: &std::path::Path, file: &str, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Pids repeat across the nodes that share a home directory: the host tells them apart.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let tmp = dir.join(format!(".{file}.{host}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(file)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes an entry (the driver refused it).
pub(crate) fn remove(file: &str) {
    if let Some(dir) = dir() {
        let _ = std::fs::remove_file(dir.join(file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lookup_reads_the_file_instead_of_compiling() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = Some(tmp.path().join("kernels"));
        let mut compiles = 0;
        let (a, hit) = get_or_create_in(dir.clone(), "m-abc.ptx", || {
            compiles += 1;
            Ok("// ptx one".into())
        })
        .expect("first");
        assert_eq!((a.as_str(), hit), ("// ptx one", false));
        let (b, hit) = get_or_create_in(dir.clone(), "m-abc.ptx", || {
            compiles += 1;
            Ok("// ptx two".into())
        })
        .expect("second");
        assert_eq!((b.as_str(), hit, compiles), ("// ptx one", true, 1));
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("kernels"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["m-abc.ptx"], "no temporary file is left behind");
    }

    #[test]
    fn empty_entry_is_recompiled_and_unwritable_dir_only_costs_the_compile() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("m.ptx"), "").expect("write");
        let (t, hit) = get_or_create_in(Some(tmp.path().into()), "m.ptx", || Ok("x".into())).expect("empty");
        assert_eq!((t.as_str(), hit), ("x", false));
        assert_eq!(std::fs::read_to_string(tmp.path().join("m.ptx")).expect("read"), "x");

        let file = tmp.path().join("a-file");
        std::fs::write(&file, "not a dir").expect("write");
        let (t, hit) = get_or_create_in(Some(file.join("kernels")), "m.ptx", || Ok("y".into())).expect("unwritable");
        assert_eq!((t.as_str(), hit), ("y", false));
        let err = get_or_create_in(None, "m.ptx", || Err(KernelError::InvalidConfig("nvrtc failed".into())));
        assert!(err.is_err(), "a compile error is returned, not cached");
    }

    #[test]
    fn key_depends_on_every_part_and_on_the_split() {
        let k = key(&[b"src", b"opts"]);
        assert_eq!(k.len(), 64);
        assert_ne!(k, key(&[b"src", b"opts2"]));
        assert_ne!(k, key(&[b"sr", b"copts"]));
        assert_eq!(k, key(&[b"src", b"opts"]));
    }
}
