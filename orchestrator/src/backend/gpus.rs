//! A machine's GPUs shared among concurrent local runs. Every local run is rank 0 of its own
//! job, so without this every run of `drover run -j 8` on an 8-GPU workstation would open
//! device 0. Each run with `run.device = "cuda"` or `"auto"` instead leases devices from a
//! [`GpuPool`] and sees only those, through `CUDA_VISIBLE_DEVICES`; a run waits while none
//! is free. The job then picks its device by local rank within what it sees.
//!
//! Which GPUs ([`detect`]): `[local] gpus` when the sweep file lists them, else the entries of
//! drover's own `CUDA_VISIBLE_DEVICES` (indices, UUIDs or MIG ids, passed on verbatim), else
//! the devices `drover-job devices` counts. An empty pool manages nothing: runs inherit
//! drover's environment, and `auto` runs fall back to the CPU in the job.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

/// The format of `drover-job devices`'s report this drover reads.
const DEVICES_REPORT_FORMAT_VERSION: u32 = 1;

/// `drover-job devices`'s JSON document (the job side is `jobs/src/devices_cmd.rs`).
#[derive(Debug, Deserialize)]
struct DevicesReport {
    format_version: u32,
    cuda_devices: usize,
    #[serde(default)]
    cuda_unavailable: Option<String>,
}

/// The GPUs to share and where that list came from (for the launch log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// Device ids as `CUDA_VISIBLE_DEVICES` takes them.
    pub ids: Vec<String>,
    /// `[local] gpus`, `CUDA_VISIBLE_DEVICES`, or what `drover-job devices` said.
    pub source: String,
}

/// The GPUs local runs share: `configured` (`[local] gpus`) wins, then `visible` (drover's
/// `CUDA_VISIBLE_DEVICES`, where an empty value means none), then `count` (called only then:
/// it starts a `drover-job devices` subprocess, which loads the CUDA driver).
pub fn detect(
    configured: Option<&[u32]>,
    visible: Option<&str>,
    count: impl FnOnce() -> Result<usize, String>,
) -> Detected {
    if let Some(ids) = configured {
        return Detected { ids: ids.iter().map(u32::to_string).collect(), source: "[local] gpus".into() };
    }
    if let Some(list) = visible {
        let ids = list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        return Detected { ids, source: format!("CUDA_VISIBLE_DEVICES={list}") };
    }
    match count() {
        Ok(n) => Detected { ids: (0..n).map(|i| i.to_string()).collect(), source: "drover-job devices".into() },
        Err(why) => Detected { ids: Vec::new(), source: format!("no CUDA device: {why}") },
    }
}

/// How long `drover-job devices` may take (it loads libcuda and counts devices: well under a second).
const DEVICES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Asks `job_bin devices` how many CUDA devices a job started here would see.
pub fn count_devices(job_bin: &Path) -> Result<usize, String> {
    // CUDA's initialisation can hang on a wedged driver: the sweep then runs as if no GPU were
    // here (`auto` on the CPU), with the reason, rather than never starting.
    let out = crate::subprocess::run(Command::new(job_bin).arg("devices"), None, DEVICES_TIMEOUT)
        .map_err(|e| format!("cannot run `{} devices`: {e}", job_bin.display()))?
        .ok_or_else(|| {
            format!(
                "`{} devices` gave no answer within {} s, so it was stopped (is the GPU driver hung? `nvidia-smi` tells)",
                job_bin.display(),
                DEVICES_TIMEOUT.as_secs_f64()
            )
        })?;
    let report: DevicesReport = serde_json::from_str(&out.stdout).map_err(|e| {
        format!("`{} devices` ({}) did not print its report ({e}): {}", job_bin.display(), out.status, out.stderr.trim())
    })?;
    if report.format_version != DEVICES_REPORT_FORMAT_VERSION {
        return Err(format!(
            "`{} devices` answered report format {} (this drover reads {DEVICES_REPORT_FORMAT_VERSION})",
            job_bin.display(),
            report.format_version
        ));
    }
    match report.cuda_unavailable {
        Some(why) if report.cuda_devices == 0 => Err(why),
        _ => Ok(report.cuda_devices),
    }
}

/// Devices held by one running job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuLease {
    /// Indices into the pool's ids, in the order the job sees them.
    slots: Vec<usize>,
    /// The job's `CUDA_VISIBLE_DEVICES`.
    pub visible: String,
}

/// GPUs and how many more runs each can take now.
#[derive(Debug, Clone)]
pub struct GpuPool {
    ids: Vec<String>,
    free: Vec<u32>,
}

impl GpuPool {
    /// `ids`, each taking up to `runs_per_gpu` runs at once (at least 1).
    pub fn new(ids: Vec<String>, runs_per_gpu: u32) -> Self {
        let free = vec![runs_per_gpu.max(1); ids.len()];
        GpuPool { ids, free }
    }

    /// No GPUs to share: runs are launched as they would be without a pool.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Devices for a job of `ranks` ranks: one per rank, all different, or every device when the
    /// job has more ranks than the pool has devices (its ranks then share them). The devices
    /// with the most room go first, lower index on ties, so runs spread over the machine before
    /// doubling up. `None` while too few devices have room.
    pub fn take(&mut self, ranks: u32) -> Option<GpuLease> {
        let want = (ranks.max(1) as usize).min(self.ids.len());
        if want == 0 {
            return None;
        }
        let mut order: Vec<usize> = (0..self.ids.len()).filter(|&i| self.free[i] > 0).collect();
        if order.len() < want {
            return None;
        }
        order.sort_by_key(|&i| (std::cmp::Reverse(self.free[i]), i));
        let mut slots = order[..want].to_vec();
        slots.sort_unstable();
        for &i in &slots {
            self.free[i] -= 1;
        }
        let visible = slots.iter().map(|&i| self.ids[i].as_str()).collect::<Vec<_>>().join(",");
        Some(GpuLease { slots, visible })
    }

    /// Returns a finished job's devices.
    pub fn give_back(&mut self, lease: &GpuLease) {
        for &i in &lease.slots {
            self.free[i] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, per: u32) -> GpuPool {
        GpuPool::new((0..n).map(|i| i.to_string()).collect(), per)
    }

    #[test]
    fn one_run_per_gpu_until_all_are_taken_then_runs_wait() {
        let mut p = pool(3, 1);
        let a = p.take(1).expect("gpu 0");
        let b = p.take(1).expect("gpu 1");
        let c = p.take(1).expect("gpu 2");
        assert_eq!([a.visible.as_str(), b.visible.as_str(), c.visible.as_str()], ["0", "1", "2"]);
        assert_eq!(p.take(1), None, "every device is busy");
        p.give_back(&b);
        assert_eq!(p.take(1).expect("gpu 1 again").visible, "1");
        assert_eq!(p.take(1), None);
    }

    #[test]
    fn shared_gpus_fill_evenly_before_doubling_up() {
        let mut p = pool(2, 2);
        let seen: Vec<String> = (0..4).map(|_| p.take(1).expect("room").visible).collect();
        assert_eq!(seen, ["0", "1", "0", "1"]);
        assert_eq!(p.take(1), None);
    }

    #[test]
    fn a_multi_rank_job_gets_distinct_devices_or_all_of_them() {
        let mut p = pool(4, 1);
        let two = p.take(2).expect("two devices");
        assert_eq!(two.visible, "0,1");
        assert_eq!(p.take(3), None, "only two are free");
        let other = p.take(2).expect("the other two");
        assert_eq!(other.visible, "2,3");
        p.give_back(&two);
        p.give_back(&other);
        // Eight ranks on four devices: the job takes all four, its ranks share them.
        let all = p.take(8).expect("all four");
        assert_eq!(all.visible, "0,1,2,3");
        assert_eq!(p.take(1), None);
        p.give_back(&all);
        assert_eq!(p.take(1).expect("free again").visible, "0");
    }

    #[test]
    fn the_busiest_device_is_avoided_and_ids_pass_verbatim() {
        let mut p = GpuPool::new(vec!["GPU-aa".into(), "GPU-bb".into(), "MIG-cc".into()], 2);
        let first = p.take(1).expect("room");
        assert_eq!(first.visible, "GPU-aa");
        // GPU-aa has one run; a two-rank job goes to the two empty devices.
        assert_eq!(p.take(2).expect("room").visible, "GPU-bb,MIG-cc");
        assert!(GpuPool::new(Vec::new(), 1).is_empty());
        assert_eq!(GpuPool::new(Vec::new(), 1).take(1), None);
    }

    #[test]
    fn detection_prefers_the_sweep_file_then_the_environment_then_the_driver() {
        let never = || -> Result<usize, String> { panic!("the driver must not be asked") };
        let d = detect(Some(&[3, 1]), Some("0,1"), never);
        assert_eq!((d.ids, d.source.as_str()), (vec!["3".to_string(), "1".to_string()], "[local] gpus"));
        let d = detect(None, Some(" 2, GPU-x ,"), never);
        assert_eq!(d.ids, ["2", "GPU-x"]);
        assert_eq!(detect(None, Some(""), never).ids, Vec::<String>::new(), "an empty CUDA_VISIBLE_DEVICES hides every GPU");
        assert_eq!(detect(None, None, || Ok(2)).ids, ["0", "1"]);
        let none = detect(None, None, || Err("libcuda was not found".into()));
        assert!(none.ids.is_empty());
        assert_eq!(none.source, "no CUDA device: libcuda was not found");
    }
}
