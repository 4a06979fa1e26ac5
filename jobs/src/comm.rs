//! The communicator seam: how ranks of one job exchange data. `Solo` is the one-rank case (no
//! MPI at all); `Mpi` (feature `mpi`) wraps rsmpi's world communicator. The gradient may skip
//! the host instead: [`nccl`] chooses, with every rank agreeing through this trait, whether the
//! CUDA engines sum it on their devices with NCCL (`DROVER_ALLREDUCE`).
//!
//! Every collective here is one SUM all-reduce over one flat buffer (never one call per tensor): gathers are expressed as sums
//! over buffers in which each rank wrote only its own slots (exact, since the others are 0).

pub mod nccl;

/// What the training loop needs from the ranks of a job.
pub trait Communicator {
    /// This rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks in the job.
    fn size(&self) -> usize;
    /// Rank among the ranks on this node (device pick).
    fn local_rank(&self) -> usize;
    /// In-place sum over all ranks of one flat `f32` buffer.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]);
    /// In-place sum over all ranks of one flat `f64` buffer.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// Stops every rank of the job at once (a failing rank must not leave the others hanging
    /// in a collective).
    fn abort(&self, code: i32) -> !;
}

/// A job of one rank: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) {}
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// How many ranks hold `flag` (one f64 sum all-reduce; every rank gets the same count). The
/// ranks' decisions are taken from such counts, so that no rank leaves the loop, or skips a
/// collective, that another still enters.
pub fn count_ranks(comm: &dyn Communicator, flag: bool) -> usize {
    let mut v = [f64::from(u8::from(flag))];
    comm.all_reduce_sum_f64(&mut v);
    v[0] as usize
}

/// The value rank 0 holds, on every rank (the others' `value` is ignored): a sum all-reduce in
/// which only rank 0 writes, exact for integers below 2^53.
pub fn from_rank0(comm: &dyn Communicator, value: u32) -> u32 {
    let mut v = [if comm.rank() == 0 { f64::from(value) } else { 0.0 }];
    comm.all_reduce_sum_f64(&mut v);
    v[0] as u32
}

/// Local rank from the launcher's environment (OpenMPI, Slurm, MPICH), else 0.
pub fn local_rank_from_env() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
        .unwrap_or(0)
}

/// The CUDA device a rank opens: its local rank modulo the devices it sees. Under `mpirun` every
/// rank on a node sees all of them, so local ranks 0..n take devices 0..n; under
/// `srun --gpus-per-task=1` each task sees only its own device, which is ordinal 0 for every
/// local rank. Ranks beyond the visible count share devices, and each such rank says so once.
pub fn cuda_ordinal(local_rank: usize, visible: usize) -> usize {
    let visible = visible.max(1);
    let ordinal = local_rank % visible;
    if local_rank >= visible {
        tracing::warn!(
            "local rank {local_rank} shares CUDA device {ordinal} with local rank {ordinal}: this \
             process sees {visible} device(s) (CUDA_VISIBLE_DEVICES or the scheduler's binding)"
        );
    }
    ordinal
}

#[cfg(feature = "mpi")]
pub use imp::Mpi;

#[cfg(feature = "mpi")]
mod imp {
    use std::cell::RefCell;

    use mpi::collective::SystemOperation;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    /// The ranks of an MPI job (rsmpi's world communicator).
    pub struct Mpi {
        world: SimpleCommunicator,
        local_rank: usize,
        scratch_f32: RefCell<Vec<f32>>,
        scratch_f64: RefCell<Vec<f64>>,
    }

    impl Mpi {
        /// Wraps the world communicator of an initialised `Universe`; the `Universe` itself
        /// stays in `main` and finalizes MPI when it drops, after everything else.
        pub fn new(universe: &mpi::environment::Universe) -> Self {
            Self {
                world: universe.world(),
                local_rank: super::local_rank_from_env(),
                scratch_f32: RefCell::new(Vec::new()),
                scratch_f64: RefCell::new(Vec::new()),
            }
        }
    }

    /// Sum all-reduce whose result lands in `buf` (MPI 4.0 §6.9.6, rsmpi
    /// `examples/reduce.rs`). rsmpi offers no `MPI_IN_PLACE` (its value is implementation
    /// defined), so the input is first copied into a scratch buffer kept across calls: one
    /// memcpy of the gradient, no allocation per step.
    fn all_reduce_into_place<T: Equivalence + Copy>(
        world: &SimpleCommunicator,
        scratch: &mut Vec<T>,
        buf: &mut [T],
    ) {
        scratch.clear();
        scratch.extend_from_slice(buf);
        world.all_reduce_into(&scratch[..], buf, SystemOperation::sum());
    }

    impl super::Communicator for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn local_rank(&self) -> usize {
            self.local_rank
        }
        fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
            all_reduce_into_place(&self.world, &mut self.scratch_f32.borrow_mut(), buf);
        }
        fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
            all_reduce_into_place(&self.world, &mut self.scratch_f64.borrow_mut(), buf);
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}

/// An in-process job of threads standing in for ranks, for tests of collective logic.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Condvar, Mutex};

    use super::Communicator;

    /// What the threads share: the running sum, how many ranks added to it, the generation
    /// (collectives completed) and the last result.
    struct Shared {
        n: usize,
        state: Mutex<(Vec<f64>, usize, u64, Vec<f64>)>,
        cv: Condvar,
    }

    /// One rank of a [`threads`] job: sums in f64 (exact for the integers and bit patterns
    /// below 2^53 the collectives here carry).
    struct ThreadComm<'s> {
        rank: usize,
        shared: &'s Shared,
    }

    impl Communicator for ThreadComm<'_> {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.shared.n
        }
        fn local_rank(&self) -> usize {
            self.rank
        }
        fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
            let mut wide: Vec<f64> = buf.iter().map(|&v| f64::from(v)).collect();
            self.all_reduce_sum_f64(&mut wide);
            for (b, w) in buf.iter_mut().zip(wide) {
                *b = w as f32;
            }
        }
        fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
            let s = self.shared;
            let mut g = s.state.lock().expect("lock");
            let generation = g.2;
            if g.1 == 0 {
                g.0 = vec![0.0; buf.len()];
            }
            assert_eq!(g.0.len(), buf.len(), "ranks disagree on the buffer length of a collective");
            for (a, b) in g.0.iter_mut().zip(buf.iter()) {
                *a += b;
            }
            g.1 += 1;
            if g.1 == s.n {
                g.3 = std::mem::take(&mut g.0);
                g.1 = 0;
                g.2 += 1;
                s.cv.notify_all();
            } else {
                while g.2 == generation {
                    g = s.cv.wait(g).expect("wait");
                }
            }
            buf.copy_from_slice(&g.3);
        }
        fn abort(&self, code: i32) -> ! {
            panic!("rank {} aborted with {code}", self.rank)
        }
    }

    /// Runs `f` on `n` threads, one per rank, and returns their results in rank order.
    pub(crate) fn threads<R: Send>(n: usize, f: impl Fn(&dyn Communicator) -> R + Sync) -> Vec<R> {
        let shared = Shared { n, state: Mutex::new(Default::default()), cv: Condvar::new() };
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .map(|rank| {
                    let (shared, f) = (&shared, &f);
                    scope.spawn(move || f(&ThreadComm { rank, shared }))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("rank thread")).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solo_collectives_are_identity() {
        let mut v = [1.5f32, -2.0];
        Solo.all_reduce_sum_f32(&mut v);
        assert_eq!(v, [1.5, -2.0]);
        assert_eq!((Solo.rank(), Solo.size()), (0, 1));
        assert_eq!((count_ranks(&Solo, true), count_ranks(&Solo, false)), (1, 0));
        assert_eq!(from_rank0(&Solo, 7), 7);
    }

    #[test]
    fn cuda_ordinal_follows_the_local_rank_within_the_visible_devices() {
        // mpirun on a 4-GPU node: every rank sees all four.
        assert_eq!((0..4).map(|r| cuda_ordinal(r, 4)).collect::<Vec<_>>(), [0, 1, 2, 3]);
        // srun --gpus-per-task=1: every task sees only its own device.
        assert_eq!((0..4).map(|r| cuda_ordinal(r, 1)).collect::<Vec<_>>(), [0, 0, 0, 0]);
        // Six ranks on four devices share them round-robin.
        assert_eq!((0..6).map(|r| cuda_ordinal(r, 4)).collect::<Vec<_>>(), [0, 1, 2, 3, 0, 1]);
        // srun --gpus-per-task=2: each task's two devices are its ordinals 0 and 1.
        assert_eq!(cuda_ordinal(3, 2), 1);
        assert_eq!(cuda_ordinal(2, 0), 0);
    }
}
