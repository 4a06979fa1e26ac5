//! NCCL, loaded at run time: the device-side gradient all-reduce between the CUDA engines of a
//! job's ranks (one communicator per engine), and the unique id that rank 0 makes for it.
//!
//! Why not cudarc's `nccl` feature: with `dynamic-loading`, cudarc 0.19 dlopens `libnccl.so`,
//! `libnccl.so.13`, `.12`, ... but never `libnccl.so.2`, the soname that every NCCL package
//! installs (pip's `nvidia-nccl-cu*`, Debian's `libnccl2`; only `-dev` packages add the bare
//! `libnccl.so`), and its loader panics when none is found. Six entry points are all drover
//! needs, so they are loaded here with `libloading`, from `$DROVER_NCCL_LIBRARY` (a path) or
//! the usual names, and a missing library is an error, never a panic.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use crate::KernelError;

/// Bytes of an NCCL unique id (`NCCL_UNIQUE_ID_BYTES`).
pub const ID_BYTES: usize = 128;

/// The token every rank passes to `ncclCommInitRank` (an `ncclUniqueId`): made once by rank 0
/// with [`unique_id`] and sent to the other ranks by the caller.
pub type NcclId = [u8; ID_BYTES];

/// Environment variable naming the NCCL library file to load instead of searching.
pub const LIBRARY_ENV: &str = "DROVER_NCCL_LIBRARY";

/// Names tried, in order, when `$DROVER_NCCL_LIBRARY` is unset.
const LIBRARY_NAMES: [&str; 2] = ["libnccl.so.2", "libnccl.so"];

// The C ABI of nccl.h (stable since NCCL 2.0): results and enums are `int`, the communicator an
// opaque pointer, the unique id a 128-byte struct passed by value.
type NcclResult = c_int;
type NcclComm = *mut c_void;
#[repr(C)]
#[derive(Clone, Copy)]
struct RawId {
    internal: [c_char; ID_BYTES],
}
const NCCL_SUCCESS: NcclResult = 0;
const NCCL_FLOAT32: c_int = 7;
const NCCL_SUM: c_int = 0;

type GetVersion = unsafe extern "C" fn(*mut c_int) -> NcclResult;
type GetUniqueId = unsafe extern "C" fn(*mut RawId) -> NcclResult;
type CommInitRank = unsafe extern "C" fn(*mut NcclComm, c_int, RawId, c_int) -> NcclResult;
type AllReduce = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    NcclComm,
    *mut c_void,
) -> NcclResult;
type CommAbort = unsafe extern "C" fn(NcclComm) -> NcclResult;
type GetErrorString = unsafe extern "C" fn(NcclResult) -> *const c_char;
type GetLastError = unsafe extern "C" fn(NcclComm) -> *const c_char;

/// The loaded library and its entry points (the `Library` keeps the pointers valid).
struct Api {
    _lib: libloading::Library,
    file: String,
    version: c_int,
    get_unique_id: GetUniqueId,
    comm_init_rank: CommInitRank,
    all_reduce: AllReduce,
    comm_abort: CommAbort,
    get_error_string: GetErrorString,
    /// NCCL >= 2.13 only: the last error's text (e.g. "Duplicate GPU detected ...").
    get_last_error: Option<GetLastError>,
}

impl Api {
    fn load() -> Result<Api, String> {
        let names: Vec<String> = match std::env::var(LIBRARY_ENV) {
            Ok(path) if !path.is_empty() => vec![path],
            _ => LIBRARY_NAMES.iter().map(|s| s.to_string()).collect(),
        };
        Self::load_from(&names)
    }

    fn load_from(names: &[String]) -> Result<Api, String> {
        let mut tried = Vec::new();
        for name in names {
            // SAFETY: loading NCCL runs its (side-effect free) library constructors only.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => return Self::from_library(lib, name.clone()),
                Err(e) => tried.push(format!("{name}: {e}")),
            }
        }
        Err(format!(
            "libnccl was not found ({}); set {LIBRARY_ENV} to its path or add its folder to LD_LIBRARY_PATH",
            tried.join("; ")
        ))
    }

    fn from_library(lib: libloading::Library, file: String) -> Result<Api, String> {
        /// Copies one function pointer out of `lib`, or says which symbol is missing.
        fn sym<T: Copy>(lib: &libloading::Library, file: &str, name: &str) -> Result<T, String> {
            // SAFETY: each `T` above is the exact C signature of `name` in nccl.h; the pointer
            // stays valid while `lib` is loaded, and `Api` keeps `lib` for as long as it lives.
            unsafe { lib.get::<T>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|e| format!("{file} has no `{name}`: {e}"))
        }
        let get_version: GetVersion = sym(&lib, &file, "ncclGetVersion")?;
        let mut version = 0;
        // SAFETY: writes one int.
        let rc = unsafe { get_version(&mut version) };
        // Codes are MAJOR*10000 + MINOR*100 + PATCH since 2.9 (MAJOR*1000 + ... before).
        if rc != NCCL_SUCCESS || version < 20_900 {
            return Err(format!("{file}: ncclGetVersion returned {rc} (version code {version}); NCCL >= 2.9 is needed"));
        }
        Ok(Api {
            get_unique_id: sym(&lib, &file, "ncclGetUniqueId")?,
            comm_init_rank: sym(&lib, &file, "ncclCommInitRank")?,
            all_reduce: sym(&lib, &file, "ncclAllReduce")?,
            comm_abort: sym(&lib, &file, "ncclCommAbort")?,
            get_error_string: sym(&lib, &file, "ncclGetErrorString")?,
            get_last_error: sym(&lib, &file, "ncclGetLastError").ok(),
            version,
            file,
            _lib: lib,
        })
    }

    /// `name failed: <NCCL's text for rc>[: <last error>]`.
    fn error(&self, name: &'static str, rc: NcclResult, comm: NcclComm) -> KernelError {
        let text = |p: *const c_char| {
            // SAFETY: NCCL returns a NUL-terminated static or thread-local string, or null.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().trim().to_string())
        };
        // SAFETY: ncclGetErrorString accepts any result code.
        let mut message = text(unsafe { (self.get_error_string)(rc) }).unwrap_or_else(|| format!("result {rc}"));
        // SAFETY: ncclGetLastError accepts a null or live communicator.
        if let Some(last) = self.get_last_error.and_then(|f| text(unsafe { f(comm) })).filter(|s| !s.is_empty()) {
            message = format!("{message}: {last}");
        }
        KernelError::Cuda { context: name, message }
    }
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

fn api() -> Result<&'static Api, KernelError> {
    API.get_or_init(Api::load)
        .as_ref()
        .map_err(|why| KernelError::CudaUnavailable(format!("NCCL: {why}")))
}

/// `Ok("NCCL 2.27.3 (libnccl.so.2)")` when the library loads; otherwise why not. Loads it once
/// per process and never panics.
pub fn probe() -> Result<String, String> {
    let api = api().map_err(|e| match e {
        KernelError::CudaUnavailable(why) => why,
        other => other.to_string(),
    })?;
    let v = api.version;
    Ok(format!("NCCL {}.{}.{} ({})", v / 10_000, v / 100 % 100, v % 100, api.file))
}

/// A fresh unique id (`ncclGetUniqueId`), made by one rank and shared with the others. It
/// opens the bootstrap socket the other ranks connect to, so the rank that makes it must also
/// join the communicator.
pub fn unique_id() -> Result<NcclId, KernelError> {
    unique_id_from(api()?)
}

fn unique_id_from(api: &Api) -> Result<NcclId, KernelError> {
    let mut raw = RawId { internal: [0; ID_BYTES] };
    // SAFETY: writes one ncclUniqueId.
    let rc = unsafe { (api.get_unique_id)(&mut raw) };
    if rc != NCCL_SUCCESS {
        return Err(api.error("ncclGetUniqueId", rc, std::ptr::null_mut()));
    }
    // `c_char` is `i8` on x86-64 and `u8` on AArch64: the bytes either way. `allow`, not
    // `expect`: the cast is needless only on AArch64, so an expectation fails on x86-64.
    #[allow(clippy::unnecessary_cast)]
    Ok(raw.internal.map(|c| c as u8))
}

/// One rank's NCCL communicator. Made with the engine's CUDA context current on the thread
/// (NCCL takes the device from it); aborted (not destroyed) on drop, which never waits for
/// the other ranks, so leaving a group some ranks failed to join cannot hang.
pub(crate) struct Comm {
    api: &'static Api,
    comm: NcclComm,
}

// SAFETY: an NCCL communicator may be used from any thread, one call at a time; `Comm` is
// only used through `&mut CudaEngine`, which serialises the calls.
unsafe impl Send for Comm {}

impl Comm {
    /// Joins the group of `size` ranks named by `id` as `rank` (`ncclCommInitRank`): blocks
    /// until every rank has joined, so every rank must call it. The CUDA context of the device
    /// to use must be current on this thread.
    pub(crate) fn join(id: &NcclId, rank: usize, size: usize) -> Result<Comm, KernelError> {
        Self::join_with(api()?, id, rank, size)
    }

    fn join_with(api: &'static Api, id: &NcclId, rank: usize, size: usize) -> Result<Comm, KernelError> {
        if size == 0 || rank >= size || size > c_int::MAX as usize {
            return Err(KernelError::InvalidConfig(format!("NCCL group: rank {rank} of {size} ranks")));
        }
        let raw = RawId { internal: id.map(|b| b as c_char) };
        let mut comm: NcclComm = std::ptr::null_mut();
        // SAFETY: `comm` receives the new communicator; sizes were checked to fit an int.
        let rc = unsafe { (api.comm_init_rank)(&mut comm, size as c_int, raw, rank as c_int) };
        if rc != NCCL_SUCCESS {
            let err = api.error("ncclCommInitRank", rc, comm);
            if !comm.is_null() {
                // NCCL >= 2.14 leaves a failed communicator allocated; abort frees it
                // (earlier versions free it themselves and return null).
                // SAFETY: `comm` came from ncclCommInitRank and is not used afterwards.
                unsafe { (api.comm_abort)(comm) };
            }
            return Err(err);
        }
        Ok(Comm { api, comm })
    }

    /// Enqueues an in-place SUM all-reduce of `count` floats at device address `ptr` on
    /// `stream` (`ncclAllReduce`); returns once it is enqueued.
    ///
    /// # Safety
    /// `ptr` must hold `count` f32 on this communicator's device, stay allocated until the
    /// stream has run the reduction, and no other work may touch it meanwhile except on
    /// `stream`; `stream` must belong to the communicator's device.
    pub(crate) unsafe fn all_reduce_sum_f32(
        &self,
        ptr: u64,
        count: usize,
        stream: *mut c_void,
    ) -> Result<(), KernelError> {
        let p = ptr as *mut c_void;
        // SAFETY: per this function's contract; send == recv is NCCL's in-place form.
        let rc = unsafe { (self.api.all_reduce)(p, p, count, NCCL_FLOAT32, NCCL_SUM, self.comm, stream) };
        if rc != NCCL_SUCCESS {
            return Err(self.api.error("ncclAllReduce", rc, self.comm));
        }
        Ok(())
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        // SAFETY: `comm` is live and dropped exactly once; its result is only a status.
        unsafe { (self.api.comm_abort)(self.comm) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_never_panics_and_agrees_with_unique_id() {
        match probe() {
            Ok(version) => {
                assert!(version.starts_with("NCCL 2."), "{version}");
                // Making an id needs no GPU, only the library and a network interface.
                let id = unique_id().expect("unique id");
                assert!(id.iter().any(|&b| b != 0), "an all-zero id");
            }
            Err(why) => {
                assert!(why.contains("libnccl"), "{why}");
                match unique_id() {
                    Err(KernelError::CudaUnavailable(msg)) => assert!(msg.starts_with("NCCL: "), "{msg}"),
                    other => panic!("expected CudaUnavailable without NCCL, got {:?}", other.map(|_| ())),
                }
            }
        }
    }

    #[test]
    fn a_missing_or_foreign_library_is_an_error_naming_it() {
        let missing = Api::load_from(&["/nonexistent/libnccl.so.2".into()]).err().unwrap_or_default();
        assert!(missing.starts_with("libnccl was not found (/nonexistent/libnccl.so.2: "), "{missing}");
        assert!(missing.contains(LIBRARY_ENV), "{missing}");
        // A library that loads but is not NCCL (glibc is always there).
        let foreign = Api::load_from(&["libc.so.6".into()]).err().unwrap_or_default();
        assert!(foreign.starts_with("libc.so.6 has no `ncclGetVersion`"), "{foreign}");
    }

    /// A stand-in libnccl with the real C signatures: `ncclCommInitRank` checks that the id
    /// arrived byte for byte (it is passed by value) and refuses two ranks the way NCCL refuses
    /// two ranks on one GPU, leaving the failed communicator allocated as NCCL >= 2.14 does.
    const FAKE_NCCL: &str = r#"
typedef struct { char internal[128]; } ncclUniqueId;
static int aborts = 0;
static char comm_storage[2];
int ncclGetVersion(int* v) { *v = 22703; return 0; }
int ncclGetUniqueId(ncclUniqueId* id) { for (int i = 0; i < 128; i++) id->internal[i] = (char)(255 - i); return 0; }
int ncclCommInitRank(void** comm, int n, ncclUniqueId id, int rank) {
  for (int i = 0; i < 128; i++) if ((unsigned char)id.internal[i] != 255 - i) return 4;
  *comm = &comm_storage[rank];
  return n == 1 ? 0 : 5;
}
int ncclAllReduce(const void* s, void* r, unsigned long n, int t, int op, void* c, void* st) { return s == r && t == 7 && op == 0 ? 0 : 4; }
int ncclCommAbort(void* c) { aborts++; return 0; }
const char* ncclGetErrorString(int rc) { return rc == 5 ? "invalid usage (run with NCCL_DEBUG=WARN for details)" : "invalid argument"; }
const char* ncclGetLastError(void* c) { return "Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1000"; }
int fake_aborts(void) { return aborts; }
"#;

    #[test]
    fn the_c_abi_round_trips_through_a_stand_in_library() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, so) = (dir.path().join("fake_nccl.c"), dir.path().join("libnccl.so.2"));
        std::fs::write(&src, FAKE_NCCL).expect("write C source");
        // `TARGET_CC` (the `cc` crate's name for the compiler of the target) when the test runs
        // on another architecture than the build (scripts/test-aarch64.sh, under qemu).
        let cc = std::env::var("TARGET_CC").unwrap_or_else(|_| "cc".into());
        let built = std::process::Command::new(&cc).arg("-shared").arg("-fPIC").arg("-o").arg(&so).arg(&src).status();
        if !built.is_ok_and(|s| s.success()) {
            // scripts/test.sh installs a C compiler (the kernels' CPU emulation needs g++).
            eprintln!("the_c_abi_round_trips_through_a_stand_in_library: skipped: no C compiler (`{cc}`)");
            return;
        }
        let so = so.display().to_string();
        let api: &'static Api = Box::leak(Box::new(Api::load_from(std::slice::from_ref(&so)).expect("fake loads")));
        assert_eq!((api.version, api.file.as_str()), (22703, so.as_str()));
        // SAFETY: the fake's own counter, `int fake_aborts(void)`.
        let aborts = || unsafe { (*api._lib.get::<unsafe extern "C" fn() -> c_int>(b"fake_aborts").expect("counter"))() };

        let id = unique_id_from(api).expect("id");
        assert_eq!(id[0], 255);
        assert_eq!(id[127], 128);
        let one = Comm::join_with(api, &id, 0, 1).expect("a group of one");
        // SAFETY: the fake never dereferences the pointers.
        unsafe { one.all_reduce_sum_f32(0x1000, 7, std::ptr::null_mut()) }.expect("all-reduce enqueued");
        drop(one);
        assert_eq!(aborts(), 1, "dropping a communicator aborts it");

        let e = Comm::join_with(api, &id, 1, 2).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            e,
            "cuda error in ncclCommInitRank: invalid usage (run with NCCL_DEBUG=WARN for details): \
             Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1000"
        );
        assert_eq!(aborts(), 2, "a failed join frees the communicator NCCL left behind");
        let mut wrong = id;
        wrong[5] ^= 1;
        let e = Comm::join_with(api, &wrong, 0, 1).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.ends_with("invalid argument: Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1000"), "{e}");
    }

    #[test]
    fn join_refuses_bad_ranks_before_touching_nccl() {
        // Without NCCL the library error comes first; with it, the rank check does. Either
        // way no call into NCCL is made with a rank outside the group.
        let err = Comm::join(&[0; ID_BYTES], 2, 2).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("rank 2 of 2 ranks") || err.contains("libnccl"), "{err}");
    }
}
