//! The gradient all-reduce path of a multi-rank job: host-staged MPI (the engine copies the
//! gradient to the host and the [`Communicator`] sums it) or NCCL on the devices (the CUDA
//! engines sum it in place on their stream), chosen once per job by `DROVER_ALLREDUCE`.
//!
//! The ranks must agree, or one would wait in an MPI collective while another waits in NCCL.
//! So every decision is taken from values all ranks see after one all-reduce: first each rank's
//! mode and whether it can use NCCL at all (CUDA engine, library loads), carrying the unique id
//! rank 0 made; then, after every rank tried to join the NCCL group, whether all of them did.
//! A rank that joined leaves again when another did not (NCCL refuses two ranks on one GPU:
//! "Duplicate GPU detected"), and `auto` falls back to host-staged MPI on every rank.
//!
//! Known limit: NCCL's join blocks until all ranks joined. The first vote makes every rank join
//! (or none), and NCCL's own failures during the join (duplicate GPU, bootstrap) are reported
//! on every rank; a rank that dies there instead takes the job down through `abort`.

use drover_kernels::cuda::nccl::{self, NcclId, ID_BYTES};
use drover_kernels::{DeviceGroup, DeviceKind, Engine, KernelError};

use super::Communicator;
use crate::JobError;

/// The environment variable that picks the gradient all-reduce path.
pub const ALLREDUCE_ENV: &str = "DROVER_ALLREDUCE";

/// What `DROVER_ALLREDUCE` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllReduceMode {
    /// NCCL when every rank runs the CUDA engine and NCCL loads and initialises; otherwise
    /// host-staged MPI with one log line saying why (the default).
    Auto,
    /// Always host-staged MPI.
    Mpi,
    /// NCCL, or the job fails saying why not.
    Nccl,
}

impl AllReduceMode {
    /// Parses the variable's value (unset or empty = `auto`).
    pub fn parse(value: Option<&str>) -> Result<Self, JobError> {
        match value.map(str::trim) {
            None | Some("" | "auto") => Ok(Self::Auto),
            Some("mpi") => Ok(Self::Mpi),
            Some("nccl") => Ok(Self::Nccl),
            Some(other) => Err(JobError::Env {
                name: ALLREDUCE_ENV,
                reason: format!("expected auto, mpi or nccl, got `{other}`"),
            }),
        }
    }

    /// Reads `DROVER_ALLREDUCE` from the environment.
    pub fn from_env() -> Result<Self, JobError> {
        match std::env::var(ALLREDUCE_ENV) {
            Ok(v) => Self::parse(Some(&v)),
            Err(std::env::VarError::NotPresent) => Self::parse(None),
            Err(std::env::VarError::NotUnicode(v)) => Self::parse(Some(&v.to_string_lossy())),
        }
    }

    fn code(self) -> f64 {
        match self {
            Self::Auto => 1.0,
            Self::Mpi => 2.0,
            Self::Nccl => 3.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Mpi => "mpi",
            Self::Nccl => "nccl",
        }
    }
}

/// Where the job's gradients are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradPath {
    /// One rank: nothing to sum.
    Single,
    /// Copied to the host and summed by the communicator (MPI).
    HostMpi,
    /// Summed in place on the devices by NCCL.
    DeviceNccl,
}

/// The outcome of [`negotiate`] on one rank: the path, and the one line this rank logs (at
/// most one rank of the job gets a line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The path every rank took.
    pub path: GradPath,
    /// What this rank logs, if it is the rank that explains the decision.
    pub log: Option<String>,
}

/// What [`negotiate`] needs from the engine of this rank (a seam, so the agreement is tested
/// without a GPU).
pub trait DeviceReduce {
    /// Whether this rank's engine sums on a device at all (the CUDA engines): under `auto`, a
    /// job whose ranks all run elsewhere takes host-staged MPI without a word, as expected.
    fn on_device(&self) -> bool;
    /// `Ok` when this rank can try NCCL (CUDA engine, library loads), else why not.
    fn ready(&mut self) -> Result<(), String>;
    /// A fresh NCCL unique id (rank 0 only).
    fn make_id(&mut self) -> Result<NcclId, String>;
    /// Joins the group (collective); `Ok(false)` when the engine has no device all-reduce.
    fn join(&mut self, group: &DeviceGroup) -> Result<bool, KernelError>;
    /// Leaves the group again (after a join some rank failed).
    fn leave(&mut self);
}

/// An engine, seen through [`DeviceReduce`].
struct EngineReduce<'e>(&'e mut dyn Engine);

impl DeviceReduce for EngineReduce<'_> {
    fn on_device(&self) -> bool {
        self.0.device() == DeviceKind::Cuda
    }
    fn ready(&mut self) -> Result<(), String> {
        if self.0.device() != DeviceKind::Cuda {
            return Err(format!("the engine runs on the {:?} device, NCCL needs the CUDA engine", self.0.device()));
        }
        nccl::probe().map(drop)
    }
    fn make_id(&mut self) -> Result<NcclId, String> {
        nccl::unique_id().map_err(|e| e.to_string())
    }
    fn join(&mut self, group: &DeviceGroup) -> Result<bool, KernelError> {
        self.0.attach_device_all_reduce(Some(group))
    }
    fn leave(&mut self) {
        // Leaving drops the communicator; it cannot fail in a way that changes the decision.
        let _ = self.0.attach_device_all_reduce(None);
    }
}

/// Chooses and sets up the gradient path of `engine` on every rank of `comm` (collective for
/// more than one rank) and logs the decision once per job.
pub fn setup(engine: &mut dyn Engine, comm: &dyn Communicator, mode: AllReduceMode) -> Result<GradPath, JobError> {
    let decision = negotiate(&mut EngineReduce(engine), comm, mode)?;
    if let Some(line) = &decision.log {
        tracing::info!("{line}");
    }
    Ok(decision.path)
}

/// The agreement itself (see the module docs): two all-reduces of one `f64` buffer each.
/// Every rank returns the same path, or every rank returns an error.
pub fn negotiate(dev: &mut dyn DeviceReduce, comm: &dyn Communicator, mode: AllReduceMode) -> Result<Decision, JobError> {
    let (rank, size) = (comm.rank(), comm.size());
    if size == 1 {
        return Ok(Decision { path: GradPath::Single, log: None });
    }
    // Vote 1: [mode, cannot-use-NCCL] per rank, then rank 0's id, one byte per slot (exact: the
    // other ranks write 0).
    let mut local = if mode == AllReduceMode::Mpi { Ok(()) } else { dev.ready() };
    let mut id = [0u8; ID_BYTES];
    if rank == 0 && mode != AllReduceMode::Mpi && local.is_ok() {
        match dev.make_id() {
            Ok(made) => id = made,
            Err(why) => local = Err(format!("cannot make the NCCL unique id: {why}")),
        }
    }
    // Per rank: 0 ready, 1 NCCL unusable, 2 not a device engine (and so unusable).
    let mut vote = vec![0.0f64; 2 * size + ID_BYTES];
    vote[2 * rank] = mode.code();
    vote[2 * rank + 1] = match (&local, dev.on_device()) {
        (Ok(()), _) => 0.0,
        (Err(_), true) => 1.0,
        (Err(_), false) => 2.0,
    };
    for (slot, &b) in vote[2 * size..].iter_mut().zip(&id) {
        *slot = f64::from(b);
    }
    comm.all_reduce_sum_f64(&mut vote);
    if let Some(r) = (0..size).find(|&r| vote[2 * r] != mode.code()) {
        return Err(JobError::Env {
            name: ALLREDUCE_ENV,
            reason: format!("rank {rank} has `{}` but rank {r} has another value; every rank must see the same", mode.name()),
        });
    }
    if mode == AllReduceMode::Mpi {
        let log = (rank == 0).then(|| format!("gradient all-reduce: host-staged MPI ({ALLREDUCE_ENV}=mpi)"));
        return Ok(Decision { path: GradPath::HostMpi, log });
    }
    let unready: Vec<usize> = (0..size).filter(|&r| vote[2 * r + 1] != 0.0).collect();
    if mode == AllReduceMode::Auto && (0..size).all(|r| vote[2 * r + 1] == 2.0) {
        // No rank sums on a device (a CPU job): host-staged MPI is the only path, not a fallback.
        return Ok(Decision { path: GradPath::HostMpi, log: None });
    }
    if let Some(&first) = unready.first() {
        return fall_back(mode, rank, size, &unready, first, local.err(), "cannot use NCCL");
    }
    for (b, &slot) in id.iter_mut().zip(&vote[2 * size..]) {
        // Each slot holds one byte written by rank 0 alone: an exact small integer.
        *b = slot as u8;
    }

    // Vote 2: did every rank join?
    let joined = match dev.join(&DeviceGroup { id, rank, size }) {
        Ok(true) => Ok(()),
        Ok(false) => Err("the engine has no device all-reduce".to_string()),
        Err(e) => Err(format!("joining the NCCL group failed: {e}")),
    };
    let mut ok = vec![0.0f64; size];
    ok[rank] = f64::from(u8::from(joined.is_err()));
    comm.all_reduce_sum_f64(&mut ok);
    let failed: Vec<usize> = (0..size).filter(|&r| ok[r] != 0.0).collect();
    if let Some(&first) = failed.first() {
        if joined.is_ok() {
            dev.leave();
        }
        return fall_back(mode, rank, size, &failed, first, joined.err(), "could not join the NCCL group");
    }
    let log = (rank == 0).then(|| {
        let version = nccl::probe().unwrap_or_default();
        format!("gradient all-reduce: NCCL on the devices ({size} ranks, {version})")
    });
    Ok(Decision { path: GradPath::DeviceNccl, log })
}

/// Host-staged MPI on every rank (`auto`, the lowest failing rank saying why) or the same error
/// on every rank (`nccl`, each naming the failing ranks; a failing rank adds its reason).
fn fall_back(
    mode: AllReduceMode,
    rank: usize,
    size: usize,
    failing: &[usize],
    first: usize,
    own_reason: Option<String>,
    what: &str,
) -> Result<Decision, JobError> {
    let who = format!("{} of {size} ranks {what} (ranks {failing:?})", failing.len());
    let why = match &own_reason {
        Some(reason) => format!("{who}; rank {rank}: {reason}"),
        None => format!("{who}; see the log of rank {first} for why"),
    };
    match mode {
        AllReduceMode::Nccl => Err(JobError::Env { name: ALLREDUCE_ENV, reason: format!("`nccl` asked for, but {why}") }),
        _ => {
            let log = (rank == first).then(|| format!("{ALLREDUCE_ENV}=auto: gradient all-reduce through host-staged MPI: {why}"));
            Ok(Decision { path: GradPath::HostMpi, log })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted engine: what `ready` and `join` answer, and what it saw.
    #[derive(Default)]
    struct Fake {
        on_cpu: bool,
        not_ready: Option<String>,
        join_error: Option<String>,
        readies: usize,
        joined: Option<DeviceGroup>,
        left: bool,
    }

    /// The id rank 0 makes: every byte value, so a lossy transfer would show.
    fn made_id() -> NcclId {
        std::array::from_fn(|i| (i * 2 + 1) as u8 ^ 0x80)
    }

    impl DeviceReduce for Fake {
        fn on_device(&self) -> bool {
            !self.on_cpu
        }
        fn ready(&mut self) -> Result<(), String> {
            self.readies += 1;
            self.not_ready.clone().map_or(Ok(()), Err)
        }
        fn make_id(&mut self) -> Result<NcclId, String> {
            Ok(made_id())
        }
        fn join(&mut self, group: &DeviceGroup) -> Result<bool, KernelError> {
            self.joined = Some(group.clone());
            match &self.join_error {
                None => Ok(true),
                Some(e) => Err(KernelError::Cuda { context: "ncclCommInitRank", message: e.clone() }),
            }
        }
        fn leave(&mut self) {
            self.left = true;
        }
    }

    /// Runs `negotiate` on one thread per fake engine with the given per-rank modes.
    fn job(fakes: Vec<Fake>, modes: Vec<AllReduceMode>) -> Vec<(Result<Decision, String>, Fake)> {
        let inputs: Vec<_> = fakes.into_iter().zip(modes).map(|x| std::sync::Mutex::new(Some(x))).collect();
        crate::comm::testing::threads(inputs.len(), |comm| {
            let (mut fake, mode) = inputs[comm.rank()].lock().expect("lock").take().expect("once per rank");
            let d = negotiate(&mut fake, comm, mode).map_err(|e| e.to_string());
            (d, fake)
        })
    }

    fn logs(out: &[(Result<Decision, String>, Fake)]) -> Vec<String> {
        out.iter().filter_map(|(d, _)| d.as_ref().ok()?.log.clone()).collect()
    }

    #[test]
    fn mode_parses_and_a_bad_value_names_the_variable() {
        assert_eq!(AllReduceMode::parse(None).ok(), Some(AllReduceMode::Auto));
        assert_eq!(AllReduceMode::parse(Some("")).ok(), Some(AllReduceMode::Auto));
        assert_eq!(AllReduceMode::parse(Some("mpi")).ok(), Some(AllReduceMode::Mpi));
        assert_eq!(AllReduceMode::parse(Some(" nccl ")).ok(), Some(AllReduceMode::Nccl));
        let e = AllReduceMode::parse(Some("gloo")).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e, "environment variable `DROVER_ALLREDUCE`: expected auto, mpi or nccl, got `gloo`");
    }

    #[test]
    fn one_rank_needs_no_collective_and_no_nccl() {
        let mut fake = Fake { not_ready: Some("no GPU".into()), ..Fake::default() };
        let d = negotiate(&mut fake, &crate::comm::Solo, AllReduceMode::Nccl).expect("one rank");
        assert_eq!(d, Decision { path: GradPath::Single, log: None });
        assert_eq!(fake.readies, 0);
    }

    #[test]
    fn auto_without_cuda_falls_back_to_mpi_on_every_rank_with_one_line() {
        let no_cuda = || Fake { not_ready: Some("the engine runs on the Cpu device".into()), ..Fake::default() };
        let out = job(vec![no_cuda(), no_cuda()], vec![AllReduceMode::Auto; 2]);
        for (d, fake) in &out {
            assert_eq!(d.as_ref().map(|d| d.path), Ok(GradPath::HostMpi));
            assert!(fake.joined.is_none(), "no rank may try to join");
        }
        assert_eq!(
            logs(&out),
            ["DROVER_ALLREDUCE=auto: gradient all-reduce through host-staged MPI: 2 of 2 ranks cannot use NCCL \
              (ranks [0, 1]); rank 0: the engine runs on the Cpu device"]
        );
    }

    #[test]
    fn auto_on_cpu_engines_takes_mpi_without_a_word_unless_one_rank_is_on_a_device() {
        let cpu = || Fake { on_cpu: true, not_ready: Some("the engine runs on the Cpu device".into()), ..Fake::default() };
        let out = job(vec![cpu(), cpu()], vec![AllReduceMode::Auto; 2]);
        for (d, fake) in &out {
            assert_eq!(d.as_ref().map(|d| d.path), Ok(GradPath::HostMpi));
            assert!(fake.joined.is_none(), "no rank may try to join");
        }
        assert!(logs(&out).is_empty(), "{:?}", logs(&out));
        // One CUDA rank that cannot use NCCL is a fallback worth a line.
        let no_nccl = Fake { not_ready: Some("libnccl was not found".into()), ..Fake::default() };
        let out = job(vec![cpu(), no_nccl], vec![AllReduceMode::Auto; 2]);
        assert_eq!(logs(&out).len(), 1, "{:?}", logs(&out));
        assert!(out.iter().all(|(d, _)| d.as_ref().map(|d| d.path) == Ok(GradPath::HostMpi)));
    }

    #[test]
    fn nccl_without_cuda_is_an_error_on_every_rank_naming_the_variable() {
        let fakes = vec![Fake::default(), Fake { not_ready: Some("libnccl was not found".into()), ..Fake::default() }];
        let out = job(fakes, vec![AllReduceMode::Nccl; 2]);
        let errors: Vec<String> = out.iter().map(|(d, _)| d.clone().err().unwrap_or_default()).collect();
        assert_eq!(
            errors,
            [
                "environment variable `DROVER_ALLREDUCE`: `nccl` asked for, but 1 of 2 ranks cannot use NCCL (ranks [1]); \
                 see the log of rank 1 for why",
                "environment variable `DROVER_ALLREDUCE`: `nccl` asked for, but 1 of 2 ranks cannot use NCCL (ranks [1]); \
                 rank 1: libnccl was not found",
            ]
        );
    }

    #[test]
    fn rank_zeros_id_reaches_every_rank_and_all_join() {
        let out = job(vec![Fake::default(), Fake::default(), Fake::default()], vec![AllReduceMode::Auto; 3]);
        for (rank, (d, fake)) in out.iter().enumerate() {
            assert_eq!(d.as_ref().map(|d| d.path), Ok(GradPath::DeviceNccl));
            assert_eq!(fake.joined, Some(DeviceGroup { id: made_id(), rank, size: 3 }));
            assert!(!fake.left);
        }
        let lines = logs(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("gradient all-reduce: NCCL on the devices (3 ranks"), "{lines:?}");
    }

    #[test]
    fn a_failed_join_sends_every_rank_back_to_mpi_in_auto_and_fails_all_in_nccl() {
        let dup = "invalid usage: Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1000";
        let fakes = || vec![Fake::default(), Fake { join_error: Some(dup.into()), ..Fake::default() }];
        let out = job(fakes(), vec![AllReduceMode::Auto; 2]);
        assert_eq!(out[0].0.as_ref().map(|d| d.path), Ok(GradPath::HostMpi));
        assert_eq!(out[1].0.as_ref().map(|d| d.path), Ok(GradPath::HostMpi));
        assert!(out[0].1.left, "rank 0 joined, so it must leave again");
        assert!(!out[1].1.left, "rank 1 never joined");
        let lines = logs(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("could not join the NCCL group (ranks [1]); rank 1: joining the NCCL group failed"), "{lines:?}");
        assert!(lines[0].contains("Duplicate GPU detected"), "{lines:?}");

        let out = job(fakes(), vec![AllReduceMode::Nccl; 2]);
        for (d, _) in &out {
            let e = d.clone().err().unwrap_or_default();
            assert!(e.starts_with("environment variable `DROVER_ALLREDUCE`: `nccl` asked for, but 1 of 2 ranks could not join"), "{e}");
        }
        assert!(out[0].1.left);
    }

    #[test]
    fn mpi_mode_never_loads_nccl_and_ranks_must_agree_on_the_mode() {
        let out = job(vec![Fake::default(), Fake::default()], vec![AllReduceMode::Mpi; 2]);
        for (d, fake) in &out {
            assert_eq!(d.as_ref().map(|d| d.path), Ok(GradPath::HostMpi));
            assert_eq!((fake.readies, fake.joined.is_none()), (0, true));
        }
        assert_eq!(logs(&out), ["gradient all-reduce: host-staged MPI (DROVER_ALLREDUCE=mpi)"]);

        let out = job(vec![Fake::default(), Fake::default()], vec![AllReduceMode::Auto, AllReduceMode::Mpi]);
        for (d, fake) in &out {
            let e = d.clone().err().unwrap_or_default();
            assert!(e.contains("DROVER_ALLREDUCE") && e.contains("every rank must see the same"), "{e}");
            assert!(fake.joined.is_none());
        }
    }
}
