//! Scale review: `drover-job` held every metrics row in memory until the end of the run
//! (0.83 KB a row: 844 MB at a million iterations, past a Slurm `mem = "500M"`), encoded
//! `metrics.parquet` whole in memory and read the whole `metrics.jsonl` prefix on resume.
//!
//! This test counts the heap the metrics path takes (a counting global allocator, so no
//! timing and no RSS noise): the peak of a run of 4× the rows is the peak of the shorter run,
//! within a few hundred KB, and a few MB in all. Its own test binary, with a single test, so
//! that no other test allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use drover_job::metrics::{self, MetricsLog, MetricsRow, ROW_GROUP_ROWS};
use drover_job::summary::RowStats;

/// The system allocator, counting the bytes held and their peak.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = HELD.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call goes to `System` with the caller's arguments; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                HELD.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A row like a PPO run's, with a few plugin metrics (one NaN in every row: one range in the
/// non-finite record, which does not grow).
fn row(i: i64) -> MetricsRow {
    let x = i as f64;
    MetricsRow {
        iteration: i,
        global_step: i * 64,
        episodic_return_mean: (i % 3 != 0).then_some(x.sqrt() * 7.25),
        episodes: i % 3,
        policy_loss: Some(-0.01 / x),
        value_loss: Some(1.0 / (x + 0.5)),
        entropy: Some(0.69 - 1e-7 * x),
        approx_kl: Some(1e-3 / x),
        clip_frac: Some(0.1),
        lr: 2.5e-4 * (1.0 - x / 1e6),
        steps_per_sec: 1e6 / (1.0 + x % 7.0),
        wall_time_s: x * 0.013,
        extra: BTreeMap::from([
            ("grad_norm".to_string(), 0.5 + 1.0 / x),
            ("ratio_std".to_string(), f64::NAN),
            ("kl_coef".to_string(), 0.2),
        ]),
    }
}

/// The peak heap, above what was held before, of a run of `rows` rows through the whole
/// metrics path: written, checkpointed halfway, resumed (the prefix read back and checked),
/// written on, then `metrics.parquet` and the summary's statistics at the end.
fn peak_of_a_run(rows: i64) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = HELD.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let mut log = MetricsLog::create(dir.path()).expect("create");
    for i in 1..=rows / 2 {
        log.push(row(i)).expect("push");
    }
    let prefix = log.checkpoint_prefix().expect("checkpoint");
    drop(log);
    let resumed = metrics::read_prefix(dir.path(), &prefix).expect("resume");
    assert_eq!(resumed.rows(), (rows / 2) as u64);
    let mut log = MetricsLog::resume(dir.path(), resumed).expect("resume");
    for i in rows / 2 + 1..=rows {
        log.push(row(i)).expect("push");
    }
    let mut stats = RowStats::new(1e9);
    log.write_parquet(&dir.path().join("metrics.parquet"), |r| stats.add(r))
        .expect("parquet");
    assert_eq!((stats.iterations, stats.total_steps), (rows, rows * 64));
    drop(log);
    PEAK.load(Ordering::SeqCst) - base
}

#[test]
fn the_metrics_path_takes_the_same_memory_at_any_run_length() {
    let short = ROW_GROUP_ROWS as i64 + 4_000;
    let long = 4 * short;
    let (small, large) = (peak_of_a_run(short), peak_of_a_run(long));
    // Held rows (the old `Vec<MetricsRow>`) would add 0.8 KB a row: 48 MB between the two.
    assert!(
        large <= small + 512 * 1024,
        "peak heap grew with the rows: {small} bytes for {short} rows, {large} for {long}"
    );
    assert!(large < 24 << 20, "peak heap {large} bytes for {long} rows");
    eprintln!("peak heap: {small} bytes for {short} rows, {large} bytes for {long} rows");
}
