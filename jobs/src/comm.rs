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

/// Local rank from the launcher's environment (OpenMPI, Slurm, MPICH), else 0.
pub fn local_rank_from_env() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solo_collectives_are_identity() {
        let mut v = [1.5f32, -2.0];
        Solo.all_reduce_sum_f32(&mut v);
        assert_eq!(v, [1.5, -2.0]);
        assert_eq!((Solo.rank(), Solo.size()), (0, 1));
    }
}
