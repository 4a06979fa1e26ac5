//! `drover-job devices`: the CUDA devices this process sees, as one JSON document
//! (`DevicesReport`) that the local backend reads to share a machine's GPUs among concurrent
//! runs, so the orchestrator never loads the CUDA driver itself.

use serde::Serialize;

use crate::exit_codes;

/// Format of the JSON document printed on stdout; bumped on any incompatible change.
pub const DEVICES_REPORT_FORMAT_VERSION: u32 = 1;

/// The JSON document.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DevicesReport {
    /// Always [`DEVICES_REPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// CUDA devices usable by a job started in the same environment (0 when none is).
    pub cuda_devices: usize,
    /// Why no CUDA device is usable, when none is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_unavailable: Option<String>,
}

impl DevicesReport {
    /// The report for what [`drover_kernels::cuda::device_count`] answered.
    pub fn from_count(count: Result<usize, String>) -> Self {
        let (cuda_devices, cuda_unavailable) = match count {
            Ok(n) => (n, None),
            Err(why) => (0, Some(why)),
        };
        DevicesReport { format_version: DEVICES_REPORT_FORMAT_VERSION, cuda_devices, cuda_unavailable }
    }
}

/// Handles `drover-job devices` and returns the exit code; `None` for any other command line.
pub fn run_if_requested() -> Option<u8> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new("devices")) {
        return None;
    }
    if let Some(extra) = args.next() {
        eprintln!("drover-job devices: takes no arguments, got `{}`", extra.to_string_lossy());
        return Some(exit_codes::USAGE);
    }
    let report = DevicesReport::from_count(drover_kernels::cuda::device_count());
    match serde_json::to_string(&report) {
        Ok(json) => {
            println!("{json}");
            Some(exit_codes::COMPLETED)
        }
        Err(e) => {
            eprintln!("drover-job devices: cannot encode the report: {e}");
            Some(exit_codes::FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_how_many_devices_or_why_none() {
        let two = serde_json::to_value(DevicesReport::from_count(Ok(2))).expect("json");
        assert_eq!(two, serde_json::json!({"format_version": 1, "cuda_devices": 2}));
        let none = serde_json::to_value(DevicesReport::from_count(Err("libcuda was not found".into()))).expect("json");
        assert_eq!(
            none,
            serde_json::json!({"format_version": 1, "cuda_devices": 0, "cuda_unavailable": "libcuda was not found"})
        );
    }
}
