//! `drover-job bench allreduce`: the gradient all-reduce path's throughput between the ranks of
//! one job (run it under `mpirun -np 2`), next to a plain `memcpy` of the same buffer measured
//! in the same run, with the ratio. Bandwidth counts the buffer's bytes once per call (the
//! "algorithm bandwidth" of nccl-tests).

use std::io::Write;
use std::time::Instant;

use clap::Args;

use crate::comm::Communicator;

/// Options of `bench allreduce`.
#[derive(Debug, Clone, Args)]
pub struct AllreduceArgs {
    /// Buffer sizes in MiB, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub mib: Vec<usize>,
    /// Minimum seconds timed per size.
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,
}

/// Times `op` repeatedly for at least `seconds` (after one warm-up call); seconds per call.
/// All ranks must agree on the number of calls, so the count is decided by rank 0's clock and
/// shared through the communicator.
fn time_per_call(comm: &dyn Communicator, seconds: f64, mut op: impl FnMut()) -> f64 {
    op();
    let mut calls = 1usize;
    loop {
        let t0 = Instant::now();
        for _ in 0..calls {
            op();
        }
        let mut elapsed = [t0.elapsed().as_secs_f64()];
        if comm.rank() != 0 {
            elapsed[0] = 0.0;
        }
        comm.all_reduce_sum_f64(&mut elapsed);
        if elapsed[0] >= seconds {
            return elapsed[0] / calls as f64;
        }
        calls *= 2;
    }
}

/// Runs the benchmark on `comm` and prints a table on rank 0.
pub fn allreduce(comm: &dyn Communicator, args: &AllreduceArgs, out: &mut dyn Write) -> std::io::Result<()> {
    if comm.rank() == 0 {
        writeln!(out, "drover bench allreduce: {} ranks, f32 SUM all-reduce of one flat buffer", comm.size())?;
        writeln!(out, "{:>8} {:>14} {:>14} {:>10}", "MiB", "allreduce GB/s", "memcpy GB/s", "ratio")?;
    }
    for &mib in &args.mib {
        let n = mib * (1 << 20) / 4;
        let mut buf = vec![1.0f32; n];
        let src = vec![2.0f32; n];
        let reduce = time_per_call(comm, args.seconds, || comm.all_reduce_sum_f32(&mut buf));
        let copy = time_per_call(comm, args.seconds, || {
            buf.copy_from_slice(&src);
            std::hint::black_box(&mut buf);
        });
        let bytes = (n * 4) as f64;
        let (reduce_gbs, copy_gbs) = (bytes / reduce / 1e9, bytes / copy / 1e9);
        if comm.rank() == 0 {
            writeln!(out, "{mib:>8} {reduce_gbs:>14.2} {copy_gbs:>14.2} {:>10.3}", reduce_gbs / copy_gbs)?;
        }
    }
    Ok(())
}
