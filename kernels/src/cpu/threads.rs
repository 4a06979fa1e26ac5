//! The CPU engine's worker threads: one rayon pool per engine, each worker pinned to its own
//! core when the process was given exactly as many CPUs as it has workers (a Slurm task's
//! `--cpus-per-task`, `drover bench` on every core), so a chunk's env state stays in one core's
//! L1/L2 across steps.

use crate::KernelError;

/// A pool of `threads` workers (`None` for one thread: the caller's thread does the work).
pub(crate) fn pool(threads: usize) -> Result<Option<rayon::ThreadPool>, KernelError> {
    if threads <= 1 {
        return Ok(None);
    }
    let cores = allowed_cpus();
    // With more CPUs than workers the process is sharing a machine it does not own: every
    // engine pinning worker i to the i-th allowed CPU would stack concurrent local jobs (and
    // MPI ranks) on the first cores. The scheduler places them better there.
    let pin = should_pin(threads, cores.len());
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

/// Whether `threads` workers pin themselves, given `allowed` CPUs (0: unknown).
fn should_pin(threads: usize, allowed: usize) -> bool {
    allowed > 0 && threads == allowed
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

#[cfg(test)]
mod tests {
    use super::should_pin;

    /// MPI review D5: every engine pinned worker i to the i-th allowed CPU, so concurrent local
    /// jobs with `threads = 2` all ran on CPUs 0 and 1 of a large node.
    #[test]
    fn workers_pin_only_to_a_cpu_set_of_their_own() {
        assert!(should_pin(4, 4), "a Slurm task with --cpus-per-task=4");
        assert!(!should_pin(2, 64), "one of several jobs on a 64-core node");
        assert!(!should_pin(8, 4), "more workers than CPUs");
        assert!(!should_pin(2, 0), "unknown CPU set");
    }
}
