//! The results-directory lock: one `drover run` writes a results directory at a time.
//!
//! Two runs of the same sweep at once would archive each other's unfinished runs and launch
//! every job twice. `drover run` therefore holds an exclusive `flock` on `<results>/.drover.lock`
//! for as long as it lives, and writes who it is (pid, host, start time, command) into the file
//! so that a refused second run can name the holder. The kernel releases the lock when the
//! holder exits however it exits (`SIGKILL` included), so a stale lock cannot outlive its
//! process; the file stays behind with the last holder's details and is simply reused. The
//! descriptor is close-on-exec, so jobs never inherit the lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a results directory.
pub const LOCK_FILE: &str = ".drover.lock";

/// Why the results directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "results directory `{dir}` is in use by another `drover run` ({holder}); wait for it to finish \
         or stop it (Ctrl-C in its terminal, or `kill` its pid), then run this command again"
    )]
    Busy {
        /// The results directory.
        dir: PathBuf,
        /// What the holder wrote about itself.
        holder: String,
    },
    /// The results directory does not exist and cannot be created (a path under a file, a
    /// read-only or virtual filesystem, no permission): a setting to correct, not a fault.
    #[error("cannot create the results directory `{}`", dir.display())]
    CreateDir {
        /// The results directory.
        dir: PathBuf,
        /// The OS error; printed by the error chain, not by this message, so it is said once.
        #[source]
        source: std::io::Error,
    },
    /// The results directory, or its `runs/` or `slurm/` folder, belongs to another user.
    #[error("{why}")]
    NotOwned {
        /// The folder another user owns.
        path: PathBuf,
        /// Whose it is and why that is refused, one sentence.
        why: String,
    },
    /// The lock file could not be created, locked or written.
    #[error("cannot lock `{}`", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error; printed by the error chain, not by this message, so it is said once.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock of the results directory `dir` (created if missing), describing the holder
/// as `command`; refuses at once, without waiting, when another process holds it.
///
/// First, before anything is written: a results directory (or its `runs/` or `slurm/`) that
/// another user owns is refused ([`LockError::NotOwned`]), and one that every user can write
/// is warned about ([`writable_by_others`]), once.
pub fn acquire(dir: &Path, command: &str) -> Result<RunLock, LockError> {
    // SAFETY: geteuid has no preconditions.
    acquire_as(dir, command, None, unsafe { libc::geteuid() })
}

/// [`acquire`] for a local `drover run`, whose stop waits `grace` before SIGKILL: the lock
/// says so (a `grace_seconds` line, [`Holder::grace`]), so that `drover cancel` waits as
/// long as the stop it asks for takes.
pub fn acquire_local(dir: &Path, command: &str, grace: std::time::Duration) -> Result<RunLock, LockError> {
    // SAFETY: geteuid has no preconditions.
    acquire_as(dir, command, Some(grace), unsafe { libc::geteuid() })
}

/// [`acquire`] for the user `euid`.
fn acquire_as(dir: &Path, command: &str, grace: Option<std::time::Duration>, euid: u32) -> Result<RunLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io { path: path.clone(), source };
    if let Some((owned, why)) = owner_problem(dir, euid) {
        // Root is not refused: a container running as root over a bind-mounted folder of the
        // host's user is the common case, and root could take the folder over anyway. Nor is
        // a folder the kernel shows as the unmapped user's (an NFSv4 id it cannot map, an
        // `all_squash` export): its real owner is unknown, likely the caller. Both are told.
        let unmapped = std::fs::metadata(&owned).is_ok_and(|m| m.uid() == unmapped_uid());
        if euid != 0 && !unmapped {
            return Err(LockError::NotOwned { path: owned, why });
        }
        let who = if unmapped { "owned by the unmapped user (an NFS id mapping or squash?)" } else { "running as root" };
        tracing::warn!("{who}: {why}");
    }
    std::fs::create_dir_all(dir).map_err(|source| LockError::CreateDir { dir: dir.to_path_buf(), source })?;
    let open = writable_by_others(dir);
    if !open.is_empty() {
        let named = open.iter().map(|(p, mode)| format!("`{}` (mode {:o})", p.display(), mode & 0o7777)).collect::<Vec<_>>().join(", ");
        tracing::warn!(
            "{named} can be written by every user: another user could replace the results directory or files in it, and with them the plugin library your jobs load; remove that permission (`chmod o-w`) or use a results directory elsewhere"
        );
    }
    let mut file = open_lock_file(&path, true).map_err(io)?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if locks_unsupported(&err) {
            // Refusing would make drover unusable there; the holder's details are still
            // written, so `drover status` names the run that works on the directory.
            tracing::warn!(
                "the filesystem of `{}` does not support file locks ({err}): nothing stops a second `drover run` on these results, so start only one",
                path.display()
            );
        } else if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(err));
        } else {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.lines().collect::<Vec<_>>().join(", ");
            let holder = if holder.is_empty() { "a process that has not written its details yet".into() } else { holder };
            return Err(LockError::Busy { dir: dir.to_path_buf(), holder });
        }
    }
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut extra = vec![format!("since {}", utc_text(since)), format!("command {command}")];
    extra.extend(grace.map(|g| format!("{GRACE_LINE}{}", g.as_secs_f64())));
    let text = holder_text(std::process::id(), &extra);
    file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(text.as_bytes())).map_err(io)?;
    Ok(RunLock { _file: file, path })
}

/// Whether the results directory `dir`, when it exists, or its `runs/` or `slurm/` folder
/// belongs to a user other than `euid`: that folder and why drover refuses it. Whoever can
/// write a results directory chooses what drover's jobs run: each run's `spec.json` names the
/// plugin library `drover-job` loads, read back from disk when the job starts (hours later
/// under Slurm). The owner of a folder can always write it (`chmod` is theirs), so another
/// user's folder is refused outright, like ssh's `StrictModes` and git's `safe.directory`.
/// Group-writable folders are not refused: a lab's shared folder with user private groups is
/// normal, and the group is a choice the owner made.
///
/// A folder root owns is trusted (a CIFS or `vboxsf` mount shows every file as root's; root
/// could do anything anyway), as `drover-job` trusts a root-owned `spec.json`.
pub fn owner_problem(dir: &Path, euid: u32) -> Option<(PathBuf, String)> {
    for folder in [dir.to_path_buf(), dir.join(crate::layout::RUNS_DIR), dir.join("slurm")] {
        let Ok(meta) = std::fs::metadata(&folder) else { continue };
        if meta.uid() != euid && meta.uid() != 0 {
            let why = format!(
                "`{}` belongs to {} (uid {}), not to you ({}, uid {euid}): drover writes only results directories you own, because whoever can write one chooses the plugin library your jobs load (each run's `spec.json` names it) and so runs code as you; give the sweep a results directory of your own (`--results`), or have its owner run it",
                folder.display(),
                user_name(meta.uid()).map_or_else(|| "another user".to_string(), |n| format!("user `{n}`")),
                meta.uid(),
                user_name(euid).map_or_else(|| "this user".to_string(), |n| format!("`{n}`")),
            );
            return Some((folder, why));
        }
    }
    None
}

/// The uid the kernel shows for an owner it cannot map (`/proc/sys/fs/overflowuid`, 65534 by
/// default): an NFSv4 id without an idmap entry, an `all_squash` export's anonymous user.
pub fn unmapped_uid() -> u32 {
    std::fs::read_to_string("/proc/sys/fs/overflowuid").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(65_534)
}

/// The folders from `dir` up that every user may write (`o+w`) without the sticky bit, with
/// their modes: any of them lets another user rename `dir`, or what is in it, and put their
/// own in its place. The walk ends at the first folder that is sticky (`/tmp`, a scratch root)
/// or that root owns (`/`, `/home`) when the caller is not root: above it nobody else can swap
/// what lies below.
pub fn writable_by_others(dir: &Path) -> Vec<(PathBuf, u32)> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let Ok(dir) = std::fs::canonicalize(dir) else { return Vec::new() };
    let mut open = Vec::new();
    for folder in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(folder) else { break };
        let sticky = meta.mode() & 0o1000 != 0;
        if meta.mode() & 0o002 != 0 && !sticky {
            open.push((folder.to_path_buf(), meta.mode()));
        }
        if sticky || (meta.uid() == 0 && euid != 0) {
            break;
        }
    }
    open
}

/// The login name of `uid`, for messages; `None` when it has none.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r writes into `pwd` and `buf` (of the length passed) and sets `result`
    // to `&pwd` or null; `pw_name` points into `buf`, read before `buf` is dropped.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned())
    }
}

/// Opens the lock file `path` for reading and writing (created when `create`), the one way
/// drover opens a lock file of a results directory: never through a symbolic link
/// (`O_NOFOLLOW`) and only a regular file. Whoever can write a results directory could plant a
/// link there to a file of the owner's, which drover would truncate and overwrite with its
/// holder text, or a FIFO, whose read would hang `drover status`; both are errors naming the
/// file ([`open_regular`]).
pub fn open_lock_file(path: &Path, create: bool) -> std::io::Result<File> {
    open_regular(path, OpenOptions::new().read(true).write(true).create(create).truncate(false))
}

/// Opens `path` with `options` plus `O_NOFOLLOW` and `O_NONBLOCK` (so a FIFO never blocks the
/// open), then refuses anything but a regular file. Errors name the file and say why: a
/// symbolic link (`ELOOP` under `O_NOFOLLOW`), a FIFO, socket or device. `O_NONBLOCK` does
/// nothing to reads and writes of a regular file.
pub fn open_regular(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    let file = options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(|e| not_regular(path, e))?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(not_regular_error(path, &meta.file_type()));
    }
    Ok(file)
}

/// The error of an open of `path` that failed with `err`: worded for a symbolic link or a file
/// that is not regular (a write-only open of a FIFO fails with `ENXIO`), else `err` itself.
fn not_regular(path: &Path, err: std::io::Error) -> std::io::Error {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::io::Error::other(format!(
            "`{}` is a symbolic link; drover does not write through links in a results directory (remove it)",
            path.display()
        )),
        Ok(meta) if !meta.file_type().is_file() && !meta.file_type().is_dir() => not_regular_error(path, &meta.file_type()),
        _ => err,
    }
}

fn not_regular_error(path: &Path, kind: &std::fs::FileType) -> std::io::Error {
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "a device or other special file"
    };
    std::io::Error::other(format!(
        "`{}` is not a regular file but {what}; drover only uses regular files there (remove it)",
        path.display()
    ))
}

/// Refuses a file drover is about to truncate that has other hard links: a link planted to a
/// file elsewhere would be clobbered through it (a temporary file is never linked otherwise).
pub fn refuse_hard_links(path: &Path, file: &File) -> std::io::Result<()> {
    let links = file.metadata()?.nlink();
    if links > 1 {
        return Err(std::io::Error::other(format!(
            "`{}` has other hard links ({links} names); drover does not write through links in a results directory (remove it)",
            path.display()
        )));
    }
    Ok(())
}

/// Whether `flock` failed because the filesystem does not do locks at all (Lustre mounted
/// `noflock`, NFS mounted `nolock`: `ENOSYS`, `ENOLCK`, `EOPNOTSUPP`), rather than because the
/// lock is taken.
pub fn locks_unsupported(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::ENOLCK | libc::EOPNOTSUPP))
}

/// A lock held for a moment (one append to a shared file); released when dropped.
#[derive(Debug)]
pub struct BriefLock {
    _file: File,
}

/// Takes an exclusive `flock` on `path` (created if missing) for one short write, waiting up to
/// `patience` for another holder, whose hold lasts one write too. Never an error: on a
/// filesystem without locks (the rule above: warn and go on), a lock file that cannot be
/// opened (a reader without write access, whose write fails anyway and says why), or a holder
/// that keeps it past `patience` (stopped in a debugger), the caller goes on unlocked with a
/// warning where that could matter.
pub fn brief_exclusive(path: &Path, patience: std::time::Duration) -> Option<BriefLock> {
    let file = match open_regular(path, OpenOptions::new().write(true).create(true).truncate(false)) {
        Ok(file) => file,
        Err(e) => {
            tracing::debug!("cannot open the lock file `{}` ({e}); going on unlocked", path.display());
            return None;
        }
    };
    let deadline = std::time::Instant::now() + patience;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Some(BriefLock { _file: file });
        }
        let err = std::io::Error::last_os_error();
        if locks_unsupported(&err) {
            tracing::debug!("`{}`: no file locks on this filesystem ({err}); going on unlocked", path.display());
            return None;
        }
        let busy = matches!(err.raw_os_error(), Some(libc::EWOULDBLOCK | libc::EINTR));
        if !busy || std::time::Instant::now() >= deadline {
            let why = if busy { format!("another process has held it for {} s", patience.as_secs()) } else { err.to_string() };
            tracing::warn!("cannot lock `{}` ({why}); writing without it", path.display());
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The text a lock holder writes into its lock file (`.drover.lock`, a run's `.job.lock`):
/// `pid N` and `host H` lines, then `extra` lines (`since ...`, `command ...`). The host is
/// always there: a results directory on NFS is read from other machines, where the pid means
/// nothing ([`live_holder`] checks a pid only on its own host). [`HolderLines::parse`] reads it
/// back; `drover_job::lock` writes the same first two lines.
pub fn holder_text(pid: u32, extra: &[String]) -> String {
    let mut text = format!("pid {pid}\nhost {}\n", hostname());
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The line of a local `drover run`'s lock text that gives its stop's grace period in seconds.
const GRACE_LINE: &str = "grace_seconds ";

/// The `pid` and `host` lines of a lock file's text ([`holder_text`]), and a local `drover
/// run`'s `grace_seconds` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderLines {
    /// The holder's process id.
    pub pid: u32,
    /// Its host; `None` in a text written before every holder named it (then this host).
    pub host: Option<String>,
    /// How long its stop waits before SIGKILL; `None` when the text does not say (a Slurm
    /// sweep's `drover run`, a job's lock, a text written before the line existed).
    pub grace: Option<std::time::Duration>,
}

impl HolderLines {
    /// Reads the `pid` line (required), the `host` line and the `grace_seconds` line of `text`.
    pub fn parse(text: &str) -> Option<Self> {
        let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
        let pid = field("pid ")?.parse().ok()?;
        // Bounded as the setting is (`local.grace_seconds` ≤ 3600 s): a hand-edited text must not
        // make `drover cancel` wait for ever, or overflow its deadline.
        let grace = field(GRACE_LINE)
            .and_then(|s| s.parse::<f64>().ok())
            .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
            .map(|g| g.min(std::time::Duration::from_secs_f64(crate::backend::local_config::MAX_GRACE_SECONDS)));
        Some(Self { pid, host: field("host ").map(str::to_string), grace })
    }

    /// Whether the holder runs on this host (a text without a host line is taken to).
    pub fn on_this_host(&self) -> bool {
        self.host.as_deref().is_none_or(|h| h == hostname())
    }
}

/// The live holder of a lock file, as it described itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// It runs on this host (else its liveness could not be checked).
    pub this_host: bool,
    /// Its description, one line (`pid 12, host n1, since ..., command ...`).
    pub description: String,
    /// How long a stop it is asked for waits before SIGKILL, when its lock says
    /// ([`HolderLines::grace`]).
    pub grace: Option<std::time::Duration>,
}

/// Who holds the lock file `path`, read without taking it (taking it, even for a moment, could
/// make a `drover run` starting at that instant refuse its results or a run): the holder when
/// its `pid` line names a live drover process on this host that holds the lock, or when it
/// names another host, whose processes this one cannot see. `None` when the file is missing or
/// not a regular file, or its process has ended (the kernel released the lock; the text stays
/// behind).
///
/// A pid read from the text is trusted only as far as it can be checked, because `drover
/// cancel` signals it and a stale text outlives every run: the process must be alive, name
/// drover in its command line, and be shown to hold this very file: the kernel's
/// `/proc/locks` lists an `flock` on its inode (device numbers can differ there on overlay
/// filesystems) by that pid, or by the `drover run` that took a job's lock and handed it down
/// (`started by drover run pid P`: the kernel records who took a lock, not who inherited it);
/// or, where `/proc/locks` shows no lock of it (a filesystem without flock, a FUSE filesystem
/// that keeps its locks itself), the process has the file open. What cannot be checked (no
/// readable `/proc/locks`, another user's descriptors) is taken on trust, as before.
pub fn live_holder(path: &Path) -> Option<Holder> {
    live_holder_as(path, None)
}

/// [`live_holder`] for `drover cancel`, which signals it: only a process of the caller's own
/// (any, for root). A report (`drover status`) names another user's holder too: a PI looking at
/// a student's sweep must not read it as killed.
pub fn holder_to_signal(path: &Path) -> Option<Holder> {
    // SAFETY: geteuid has no preconditions.
    live_holder_as(path, Some(unsafe { libc::geteuid() }))
}

/// [`live_holder`], limited to the processes of `caller_uid` (root: all) when given.
fn live_holder_as(path: &Path, caller_uid: Option<u32>) -> Option<Holder> {
    let mut file = open_regular(path, OpenOptions::new().read(true)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let meta = file.metadata().ok()?;
    // Closed before the holder's descriptors are looked at, so that this one is not among them.
    drop(file);
    let lines = HolderLines::parse(&text)?;
    let pid = lines.pid;
    let description = text.lines().collect::<Vec<_>>().join(", ");
    if !lines.on_this_host() {
        return Some(Holder { pid, this_host: false, description, grace: lines.grace });
    }
    // The cheap checks first: most lock files a `drover status` meets are of ended processes.
    let owner = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
    if caller_uid.is_some_and(|uid| uid != 0 && uid != owner) {
        return None;
    }
    // A pid is reused once its process is gone; the command line tells a drover process apart.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if !String::from_utf8_lossy(&cmdline).contains("drover") {
        return None;
    }
    if let Ok(locks) = std::fs::read_to_string("/proc/locks") {
        let holders = flock_pids(&locks, meta.ino());
        let launcher = text.lines().find_map(|l| l.strip_prefix("started by drover run pid ")).and_then(|p| p.trim().parse().ok());
        let held = holders.iter().any(|&h| h == pid || Some(h) == launcher);
        if !held && (!holders.is_empty() || has_open(pid, meta.dev(), meta.ino()) == Some(false)) {
            return None;
        }
    }
    Some(Holder { pid, this_host: true, description, grace: lines.grace })
}

/// Whether process `pid` has the file `(dev, ino)` open, from its `/proc/<pid>/fd` links:
/// `None` when they cannot be read (another user's process).
fn has_open(pid: u32, dev: u64, ino: u64) -> Option<bool> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino)))
}

/// The pids that hold an `flock` on the inode `ino` in the text of `/proc/locks`
/// (`1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF`); waiters (`->`) hold nothing.
fn flock_pids(locks: &str, ino: u64) -> Vec<u32> {
    locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (kind, pid, file) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
            let on_ino = file.rsplit(':').next()?.parse::<u64>().ok()? == ino;
            (*kind == "FLOCK" && on_ino).then(|| pid.parse().ok()).flatten()
        })
        .collect()
}

/// `2026-11-29 06:40:12 UTC` for unix seconds `secs` (the proleptic Gregorian calendar, by
/// Howard Hinnant's days-to-civil algorithm): a person reads the lock's start time.
pub fn utc_text(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3_600, rem % 3_600 / 60, rem % 60)
}

/// This process's command line as a shell would take it back, as `drover <arguments>`: each
/// argument that is not plain is single-quoted, so `--set` values and paths with spaces read
/// as given.
pub fn command_line() -> String {
    std::iter::once("drover".into())
        .chain(std::env::args_os().skip(1))
        .map(|arg| {
            let arg = arg.to_string_lossy();
            let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain { arg.into_owned() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    /// Review finding (research): `--results /proc/xx` printed the OS error twice (in the
    /// message and again as its source). A directory that cannot be created has its own error,
    /// and each message leaves the OS error to the chain.
    #[test]
    fn a_results_directory_that_cannot_be_created_is_said_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("afile");
        std::fs::write(&file, b"x").expect("write");
        let err = super::acquire(&file.join("results"), "drover run s.toml").expect_err("under a file");
        assert!(matches!(err, super::LockError::CreateDir { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("cannot create the results directory `{}`", file.join("results").display()));
        let source = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(source.contains("os error"), "the OS error is the source: {source}");
        let io = super::LockError::Io { path: file.clone(), source: std::io::Error::from_raw_os_error(libc::EACCES) };
        assert_eq!(io.to_string(), format!("cannot lock `{}`", file.display()));
    }

    /// A filesystem without locks is told apart from a lock that is taken: the first is
    /// warned about and gone past, the second refuses.
    #[test]
    fn a_filesystem_without_locks_is_not_a_busy_lock() {
        for errno in [libc::ENOSYS, libc::ENOLCK, libc::EOPNOTSUPP] {
            assert!(locks_unsupported(&std::io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [libc::EWOULDBLOCK, libc::EACCES, libc::EBADF] {
            assert!(!locks_unsupported(&std::io::Error::from_raw_os_error(errno)), "{errno}");
        }
    }

    use super::*;

    #[test]
    fn start_times_read_as_calendar_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC", "a leap day of a century leap year");
        assert_eq!(utc_text(1_795_934_412), "2026-11-29 06:40:12 UTC");
        assert_eq!(utc_text(4_107_542_399), "2100-02-28 23:59:59 UTC", "2100 is no leap year");
        assert_eq!(utc_text(4_107_542_400), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn second_holder_is_refused_naming_the_first_and_the_lock_is_freed_on_drop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("results");
        let first = acquire(&dir, "drover run a.toml").expect("first");
        // flock locks belong to the open file description, so a second open in the same
        // process conflicts exactly as another process would.
        let err = acquire(&dir, "drover run b.toml").expect_err("second must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("command drover run a.toml"),
            "{msg}"
        );
        assert!(msg.contains("is in use by another `drover run`"), "{msg}");
        drop(first);
        let again = acquire(&dir, "drover run b.toml").expect("free after drop");
        let text = std::fs::read_to_string(again.path()).expect("read");
        assert!(text.contains("command drover run b.toml") && !text.contains("a.toml"), "{text}");
    }

    #[test]
    fn live_holder_names_a_live_drover_process_and_nothing_else() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(LOCK_FILE);
        assert_eq!(live_holder(&path), None, "no file");
        // This test process holds the lock, and its command line names drover (`drover-...`).
        let me = std::process::id();
        let held = acquire(tmp.path(), "drover run a.toml").expect("lock");
        let holder = live_holder(&path).expect("held by a live drover process");
        assert_eq!((holder.pid, holder.this_host), (me, true));
        let text = holder.description;
        assert!(text.starts_with(&format!("pid {me}, host ")) && text.ends_with("command drover run a.toml"), "{text}");
        drop(held);
        assert_eq!(live_holder(&path), None, "a released lock leaves its text behind, naming a live process");
        // A pid that is not running (pid_max is below 2^22 on Linux).
        std::fs::write(&path, format!("pid {}\nhost {}\n", 1 << 23, hostname())).expect("write");
        assert_eq!(live_holder(&path), None, "an ended holder leaves its text behind");
        // pid 1 is alive but is not drover.
        std::fs::write(&path, "pid 1\n").expect("write");
        assert_eq!(live_holder(&path), None, "a reused pid is not the holder");
        std::fs::write(&path, "pid 1\nhost some-other-node\n").expect("write");
        let elsewhere = live_holder(&path).expect("another host cannot be checked");
        assert_eq!((elsewhere.this_host, elsewhere.description.as_str()), (false, "pid 1, host some-other-node"));
    }

    /// A live process that has nothing to do with the lock but whose command line says
    /// "drover" (what a reused pid looks like), started in a process group of its own.
    pub(crate) fn unrelated_drover_process() -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sh").args(["-c", "sleep 30", "drover-stale"]).process_group(0).spawn().expect("sh")
    }

    /// Security review F2: a stale `.drover.lock` (left by every `drover run`) whose pid was
    /// reused by another of the user's processes mentioning "drover" was taken for the holder:
    /// `status` said "running locally" and `cancel` SIGTERMed that process. The pid must now
    /// hold the lock (`/proc/locks`), and its process belong to the caller.
    #[test]
    fn a_stale_lock_naming_a_live_unrelated_process_has_no_holder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(LOCK_FILE);
        let mut other = unrelated_drover_process();
        std::fs::write(&path, holder_text(other.id(), &["command drover run a.toml".into()])).expect("write");
        let found = live_holder(&path);
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(found, None, "not holding the lock, so not the holder");

        // A real holder whose process belongs to another user is reported, but not this
        // caller's to signal.
        let _held = acquire(tmp.path(), "drover run a.toml").expect("lock");
        assert!(live_holder(&path).is_some());
        assert!(holder_to_signal(&path).is_some(), "the caller's own");
        let owner = std::fs::metadata(format!("/proc/{}", std::process::id())).expect("proc").uid();
        assert!(live_holder_as(&path, Some(owner)).is_some());
        assert_eq!(live_holder_as(&path, Some(owner + 1)), None, "another user's process");
        assert!(live_holder_as(&path, Some(0)).is_some(), "root may signal everyone's");
    }

    /// Review: where `/proc/locks` shows no lock of a file (a filesystem without flock, which
    /// drover runs on with a warning), a real holder was taken for a stale one: `status` said
    /// its runs were unfinished and `cancel` found nothing. A holder that has the file open is
    /// one; a live drover process that does not is not.
    #[test]
    fn a_holder_that_has_the_lock_file_open_counts_where_no_flock_shows() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(LOCK_FILE);
        std::fs::write(&path, holder_text(std::process::id(), &["command drover run a.toml".into()])).expect("write");
        let meta = std::fs::metadata(&path).expect("meta");
        let me = std::process::id();
        assert_eq!(has_open(me, meta.dev(), meta.ino()), Some(false));
        let open = std::fs::File::open(&path).expect("open");
        assert_eq!(has_open(me, meta.dev(), meta.ino()), Some(true));
        // This test process is the holder named (its command line is the test binary's, which
        // names drover), has the file open, and no flock of it shows in /proc/locks.
        assert!(live_holder(&path).is_some(), "open, no flock anywhere: the holder");
        drop(open);
        assert_eq!(live_holder(&path), None, "neither flock nor open: stale");
    }

    #[test]
    fn proc_locks_lines_give_the_pids_holding_an_inode() {
        let text = "1: FLOCK  ADVISORY  WRITE 14265 fe:00:10011307 0 EOF\n\
                    2: FLOCK  ADVISORY  READ 13970 00:2f:10011307 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 777 fe:00:10011307 0 EOF\n\
                    3: POSIX  ADVISORY  WRITE 888 fe:00:10011307 0 EOF\n\
                    4: FLOCK  ADVISORY  WRITE 999 fe:00:5 0 EOF\n\
                    garbage\n";
        assert_eq!(flock_pids(text, 10_011_307), [14265, 13970], "any device; not a waiter, not a POSIX lock");
        assert_eq!(flock_pids(text, 5), [999]);
        assert!(flock_pids(text, 6).is_empty());
    }

    /// Security review F1: `.drover.lock` was opened through a symbolic link and truncated, so a
    /// link planted in a results directory clobbered any file the owner could write; a FIFO in
    /// its place made `drover status` hang reading it. Both are refused now, naming the file.
    #[test]
    fn a_planted_link_or_fifo_at_the_lock_is_refused_not_written_through() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let canary = tmp.path().join("canary.txt");
        std::fs::write(&canary, b"precious").expect("canary");
        let dir = tmp.path().join("results");
        std::fs::create_dir(&dir).expect("results");
        std::os::unix::fs::symlink(&canary, dir.join(LOCK_FILE)).expect("link");
        let err = acquire(&dir, "drover run s.toml").expect_err("a link is refused");
        let chain = format!("{err}: {}", std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default());
        assert!(chain.contains("is a symbolic link; drover does not write through links in a results directory"), "{chain}");
        assert!(chain.contains(&dir.join(LOCK_FILE).display().to_string()), "{chain}");
        assert_eq!(std::fs::read(&canary).expect("read"), b"precious", "nothing written through the link");
        assert_eq!(live_holder(&dir.join(LOCK_FILE)), None);

        std::fs::remove_file(dir.join(LOCK_FILE)).expect("unlink");
        let fifo = std::ffi::CString::new(dir.join(LOCK_FILE).into_os_string().into_encoded_bytes()).expect("path");
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let err = acquire(&dir, "drover run s.toml").expect_err("a FIFO is refused");
        let chain = format!("{err}: {}", std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default());
        assert!(chain.contains("is not a regular file"), "{chain}");
        // Read on a thread: before the fix this open blocked for ever.
        let path = dir.join(LOCK_FILE);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(live_holder(&path)));
        let read = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("`status` must not hang on a FIFO");
        assert_eq!(read, None);
    }

    /// Security review F1: drover wrote into a results directory whoever owned it, so another
    /// user who had made it (or its `runs/`) could choose the plugin the jobs load. A folder of
    /// another user's is refused before anything is written, naming it, its owner and why.
    #[test]
    fn a_results_directory_another_user_owns_is_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("results");
        std::fs::create_dir(&dir).expect("results");
        let mut owner = std::fs::metadata(&dir).expect("meta").uid();
        if owner == 0 {
            // Root's folders are trusted: as root, give this one to an ordinary user.
            std::os::unix::fs::chown(&dir, Some(4_242), None).expect("chown");
            owner = 4_242;
        }
        let other = owner + 1;
        let err = acquire_as(&dir, "drover run s.toml", None, other).expect_err("not the caller's");
        let msg = err.to_string();
        assert!(matches!(&err, LockError::NotOwned { path, .. } if *path == dir), "{err:?}");
        assert!(msg.starts_with(&format!("`{}` belongs to ", dir.display())) && msg.contains(&format!("(uid {owner}), not to you")), "{msg}");
        assert!(msg.contains("chooses the plugin library your jobs load"), "{msg}");
        assert!(!dir.join(LOCK_FILE).exists(), "nothing written");
        if std::fs::metadata(tmp.path()).expect("meta").uid() != 0 {
            return; // the rest needs root's chown
        }
        drop(acquire_as(&dir, "drover run s.toml", None, owner).expect("the owner's own"));
        // Root is warned, not refused (a container running as root over the host user's bind
        // mount); another user's `runs/` is refused as well.
        drop(acquire_as(&dir, "drover run s.toml", None, 0).expect("root is warned"));
        std::fs::create_dir(dir.join("runs")).expect("runs");
        std::os::unix::fs::chown(dir.join("runs"), Some(other), None).expect("chown");
        let (path, why) = owner_problem(&dir, owner).expect("runs/ is not the owner's");
        assert_eq!(path, dir.join("runs"));
        assert!(why.contains(&format!("(uid {other})")), "{why}");
        // Review: folders root owns (a CIFS or vboxsf mount shows all as root's) are trusted, and
        // one the kernel shows as the unmapped user's (NFSv4 idmap, all_squash) is warned about.
        std::os::unix::fs::chown(dir.join("runs"), Some(0), None).expect("chown");
        assert_eq!(owner_problem(&dir, owner), None, "root's runs/");
        std::os::unix::fs::chown(&dir, Some(unmapped_uid()), None).expect("chown");
        assert!(owner_problem(&dir, owner).is_some(), "not the caller's...");
        drop(acquire_as(&dir, "drover run s.toml", None, owner).expect("...but its owner is unknown: warned"));
    }

    /// Security review F1: a results directory or a folder above it that every user can
    /// write (not sticky) lets another user swap it; such folders are named in a warning. The
    /// walk stops at a sticky or root-owned folder (here the temporary folder's parent).
    #[test]
    fn folders_every_user_can_write_are_found_up_to_a_sticky_or_roots_folder() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = tmp.path().join("shared");
        let results = shared.join("results");
        std::fs::create_dir_all(&results).expect("mkdir");
        assert!(writable_by_others(&results).is_empty(), "{:?}", writable_by_others(&results));
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let found = writable_by_others(&results);
        assert_eq!(found.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(), [std::fs::canonicalize(&shared).expect("canon")]);
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        assert!(writable_by_others(&results).is_empty(), "sticky, like /tmp");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        assert!(writable_by_others(&results).is_empty(), "group-writable is not warned about");
    }

    #[test]
    fn holder_text_names_pid_and_host_and_parses_back() {
        let text = holder_text(42, &["since x".into(), "command drover run a.toml".into()]);
        assert_eq!(text, format!("pid 42\nhost {}\nsince x\ncommand drover run a.toml\n", hostname()));
        let lines = HolderLines::parse(&text).expect("parses");
        assert_eq!(lines, HolderLines { pid: 42, host: Some(hostname()), grace: None });
        assert!(lines.on_this_host());
        let old = HolderLines::parse("pid 7\nstarted by drover run pid 3\n").expect("parses");
        assert_eq!((old.host, HolderLines::parse("pid 7\n").map(|l| l.on_this_host())), (None, Some(true)));
        assert!(!HolderLines::parse("pid 7\nhost some-other-node\n").expect("parses").on_this_host());
        assert_eq!(HolderLines::parse("host h\n"), None, "no pid");
    }

    /// Follow-up (sixteenth session): `drover cancel` waited the default 10 s grace (+5 s) on
    /// a local sweep whatever its `local.grace_seconds`, and answered "still stopping" for a
    /// sweep given longer. A local `drover run`'s lock says its grace, and the holder carries it.
    #[test]
    fn a_local_runs_lock_says_its_stop_grace() {
        let tmp = tempfile::tempdir().expect("tmp");
        let _held = acquire_local(tmp.path(), "drover run s.toml", std::time::Duration::from_millis(90_500)).expect("lock");
        let text = std::fs::read_to_string(tmp.path().join(LOCK_FILE)).expect("text");
        assert!(text.ends_with("command drover run s.toml\ngrace_seconds 90.5\n"), "{text}");
        let lines = HolderLines::parse(&text).expect("parses");
        assert_eq!(lines.grace, Some(std::time::Duration::from_millis(90_500)));
        let holder = live_holder(&tmp.path().join(LOCK_FILE)).expect("this process holds it");
        assert_eq!(holder.grace, Some(std::time::Duration::from_millis(90_500)));
        drop(_held);
        let _slurm = acquire(tmp.path(), "drover run s.toml").expect("lock");
        assert_eq!(live_holder(&tmp.path().join(LOCK_FILE)).expect("held").grace, None, "a Slurm sweep's run says none");
        let huge = HolderLines::parse("pid 1\ngrace_seconds 1.8e19\n").expect("parses").grace;
        assert_eq!(huge, Some(std::time::Duration::from_secs(3600)), "bounded as the setting is");
        for bad in ["grace_seconds x", "grace_seconds -1", "grace_seconds inf"] {
            assert_eq!(HolderLines::parse(&format!("pid 1\n{bad}\n")).expect("parses").grace, None, "{bad}");
        }
    }
}
