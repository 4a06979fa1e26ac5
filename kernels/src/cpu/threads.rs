//! The CPU engine's worker threads: one rayon pool per engine, each worker pinned to its own
//! core when there are no more workers than cores, so a chunk's env state stays in one core's
//! L1/L2 across steps.

use crate::KernelError;

/// A pool of `threads` workers (`None` for one thread: the caller's thread does the work).
pub(crate) fn pool(threads: usize) -> Result<Option<rayon::ThreadPool>, KernelError> {
    if threads <= 1 {
        return Ok(None);
    }
    let cores = allowed_cpus();
    let pin = !cores.is_empty() && threads <= cores.len();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("drover-cpu-{i}"))
        .start_handler(move |i| {
            if pin {
                // Best effort: a refused affinity (e.g. a cgroup change) only costs locality.
                pin_current_thread(cores[i % cores.len()]);
            }
        })
        .build()
        .map(Some)
        .map_err(|e| KernelError::InvalidConfig(format!("cannot start {threads} threads: {e}")))
}

/// The CPUs this process may run on, in increasing order (empty where unknown).
fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `cpu_set_t` is plain data, zero is a valid (empty) set, and the kernel writes
        // at most `size_of::<cpu_set_t>()` bytes into it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

fn pin_current_thread(cpu: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: as in `allowed_cpus`; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu;
}
