//! Sharing the sweep's throttle across its arrays: each round's limits (`round_limits`),
//! raising lowered throttles (`throttle_raises`) and lifting waiting arrays (`throttle_lifts`)
//! from one `squeue` answer, and the cache of throttles already set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::backend::slurm_cmd::{QueueEntry, Slurm};
use crate::layout;
use crate::status::RunState;

use super::SLURM_DIR;
use super::after::{dependency_terms, user_dependency};
use super::ledger::{Ledger, LedgerEvent};
use super::status::{is_live_entry, listed_state};
use super::submit::SubmittedArray;

/// The limits of one array: its `%N`, and how it shares the sweep's throttle with the sweep's
/// other arrays (older ones still live, and the others of its own round).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ArrayLimits {
    /// `--array=...%N`; never 0, which Slurm reads as no limit at all.
    pub(super) throttle: Option<u32>,
    /// The sweep's throttle, when `throttle` is lower for now (other arrays hold the rest).
    pub(super) raise_to: Option<u32>,
    /// Older arrays to wait for (`--dependency=afterany:`), when nothing of the throttle is left.
    pub(super) after: Vec<String>,
    /// Whether it also waits for the arrays submitted before it in the same round (whose job
    /// ids are known only once they are submitted).
    pub(super) after_earlier: bool,
}

/// Live (queued, requeued or running) tasks per array of the sweep's accepted submissions.
pub(super) fn live_per_array(ledger: &Ledger, queue: &[QueueEntry]) -> BTreeMap<String, usize> {
    let ours = ledger.accepted_jobs();
    let mut live = BTreeMap::new();
    for e in queue.iter().filter(|e| ours.contains(e.array_job_id.as_str()) && is_live_entry(e)) {
        *live.entry(e.array_job_id.clone()).or_insert(0) += 1;
    }
    live
}

/// The limits of the arrays of one round (a `drover run`'s first submission, or one poll's
/// resubmissions), in submission order, `sizes` being their task counts. Slurm applies `%N`
/// per array, so the sweep's throttle `N` is shared: the `L` live runs of older arrays keep
/// their slots, and the `N - L` left are dealt out one at a time across the new arrays (no
/// array gets more slots than tasks), so each array starts at once with its share. An array
/// whose share is below both `N` and its size records `raise_to = N` and is raised as other
/// runs end (`throttle_raises`). An array that gets no slot cannot be given `%0` (Slurm's "no
/// limit"): it waits with `--dependency=afterany` for the older live arrays and every array
/// before it in the round, so Slurm starts it by itself (no drover process needed) once all
/// of those have ended, and then it may have the whole `%N`.
pub(super) fn round_limits(throttle: Option<u32>, older: &BTreeMap<String, usize>, sizes: &[usize]) -> Vec<ArrayLimits> {
    let Some(n) = throttle else { return vec![ArrayLimits::default(); sizes.len()] };
    let live = u32::try_from(older.values().sum::<usize>()).unwrap_or(u32::MAX);
    let shares = deal(n.saturating_sub(live), sizes);
    shares
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (&share, &size))| match share {
            0 => ArrayLimits { throttle: Some(n), raise_to: None, after: older.keys().cloned().collect(), after_earlier: i > 0 },
            t => ArrayLimits {
                throttle: Some(t),
                raise_to: (t < n && (t as usize) < size).then_some(n),
                ..ArrayLimits::default()
            },
        })
        .collect()
}

/// Deals `free` slots across arrays of `sizes` tasks, round by round, one slot to each array
/// that still has a task without one, earlier arrays first; whole rounds at once, so a large
/// throttle costs no more than a small one.
pub(super) fn deal(mut free: u32, sizes: &[usize]) -> Vec<u32> {
    let mut shares = vec![0u32; sizes.len()];
    loop {
        let open: Vec<usize> = (0..sizes.len()).filter(|&i| (shares[i] as usize) < sizes[i]).collect();
        if free == 0 || open.is_empty() {
            return shares;
        }
        // Every open array can take this many more in whole rounds; below one round, the
        // earliest arrays take one each.
        let fewest = open.iter().map(|&i| sizes[i] - shares[i] as usize).min().unwrap_or(0);
        let rounds = (free as usize / open.len()).min(fewest);
        if rounds == 0 {
            for &i in open.iter().take(free as usize) {
                shares[i] += 1;
            }
            return shares;
        }
        for &i in &open {
            shares[i] += rounds as u32;
        }
        free -= (rounds * open.len()) as u32;
    }
}

/// What one `squeue` answer says of the sweep's arrays, for sharing its throttle: the live
/// runs of each, and which of them wait on their dependency.
pub(super) struct Occupancy {
    /// Live (queued, requeued or running) tasks per array.
    pub(super) live: BTreeMap<String, usize>,
    /// Submission number of each accepted array.
    pub(super) submission_of: BTreeMap<String, u32>,
    /// Arrays whose live tasks all wait on their dependency on the sweep's own arrays
    /// (`--dependency=afterany`): none of their tasks runs until Slurm finds the dependency met
    /// or drover lifts the array. An array that waits only on `slurm.after`'s jobs is not one:
    /// it starts at its own `%N` once they end, as the arrays of its round do.
    pub(super) waiting: BTreeSet<String>,
}

/// The job id a dependency term's job names (`41` of `41_*`, `41_3` or `41+5`).
pub(super) fn dependency_job(id: &str) -> &str {
    id.split(['_', '+']).next().unwrap_or(id)
}

/// Whether a task waits on its dependency on one of the sweep's own arrays (`ours`): pending
/// for `Dependency`, and its dependency names one (or `squeue` did not say which it has, as
/// before drover asked: then it is the throttle's, the only one drover gave before
/// `slurm.after`).
pub(super) fn waits_on_sweep(e: &QueueEntry, ours: &BTreeSet<&str>) -> bool {
    e.state == "PENDING"
        && e.reason == "Dependency"
        && e.dependency.as_deref().is_none_or(|d| {
            dependency_terms(d).iter().any(|(_, ids)| ids.iter().any(|id| ours.contains(dependency_job(id))))
        })
}

impl Occupancy {
    pub(super) fn new(ledger: &Ledger, queue: &[QueueEntry]) -> Occupancy {
        let live = live_per_array(ledger, queue);
        let submission_of = ledger.submissions.iter().filter_map(|(n, s)| Some((s.job_id.clone()?, *n))).collect();
        let ours = ledger.accepted_jobs();
        let waiting = live
            .keys()
            .filter(|job| {
                queue.iter().filter(|e| &e.array_job_id == *job && is_live_entry(e)).all(|e| waits_on_sweep(e, &ours))
            })
            .cloned()
            .collect();
        Occupancy { live, submission_of, waiting }
    }

    /// How many runs the sweep's arrays other than submission `n` (array `job`) may run while
    /// `job` is live: every live task of theirs, queued ones included (they may start at any
    /// time, and a task pending behind its own array's `%N` is counted too, which only errs
    /// low), except those of an array submitted after `n` that waits on its dependency:
    /// `round_limits` made it wait for every array of the sweep live at its submission (`job`
    /// among them, as it is still live), so it cannot start while `job` runs, and should drover
    /// lift it, the lift's own bound counts every live task of `job`.
    pub(super) fn others(&self, n: u32, job: &str) -> u32 {
        let waits_for_this = |id: &str| self.submission_of.get(id).is_some_and(|&m| m > n) && self.waiting.contains(id);
        let others: usize = self.live.iter().filter(|(id, _)| id.as_str() != job && !waits_for_this(id)).map(|(_, k)| k).sum();
        u32::try_from(others).unwrap_or(u32::MAX)
    }
}

/// `(array, %N)` for each array that started below the sweep's throttle (`raise_to`) and still
/// has queued tasks, whose throttle can grow now: the sweep's throttle less what the sweep's
/// other arrays may run (`Occupancy::others`), when that is above the array's starting `%N`.
/// An array still waiting on its dependency is left to `throttle_lifts`.
pub(super) fn throttle_raises(ledger: &Ledger, queue: &[QueueEntry]) -> Vec<(String, u32)> {
    let occupancy = Occupancy::new(ledger, queue);
    ledger
        .submissions
        .iter()
        .filter_map(|(&n, s)| {
            let (job, target, start) = (s.job_id.as_deref()?, s.raise_to?, s.throttle?);
            if occupancy.waiting.contains(job) {
                return None;
            }
            let queued = queue.iter().any(|e| {
                e.array_job_id == job && listed_state(&e.state) == RunState::Pending
            });
            let now = target.saturating_sub(occupancy.others(n, job));
            (queued && now > start).then(|| (job.to_string(), now))
        })
        .collect()
}

/// A waiting array to lift and the `%N` it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lift {
    /// The array's submission number.
    pub(super) submission: u32,
    /// The array's job id.
    pub(super) job: String,
    /// The free slots: the sweep's throttle less what its other arrays may run; never 0,
    /// which Slurm reads as no limit.
    pub(super) throttle: u32,
    /// The sweep's throttle (the array's `%N` at submission), which it is raised toward later.
    pub(super) raise_to: u32,
    /// The dependency it keeps: `slurm.after`'s terms not yet held ([`user_dependency`]).
    pub(super) keep: String,
}

/// The waiting arrays (`--dependency=afterany`, given no slot by `round_limits`) that may start
/// now, in submission order: those for which the sweep's throttle less what its other arrays
/// may run (`Occupancy::others`) leaves a slot, each given that many. Each bound counts every
/// live task of the arrays before it, lifted or waiting alike, so lifts computed from one answer
/// never add up past the throttle; a later waiting array does not count for an earlier one
/// since it waits for it, and if it is lifted too, its own bound counts the earlier one's tasks.
pub(super) fn throttle_lifts(ledger: &Ledger, queue: &[QueueEntry]) -> Vec<Lift> {
    let occupancy = Occupancy::new(ledger, queue);
    let ours = ledger.accepted_jobs();
    ledger
        .submissions
        .iter()
        .filter_map(|(&n, s)| {
            let job = s.job_id.as_deref().filter(|job| occupancy.waiting.contains(*job))?;
            // A waiting array was submitted at the sweep's `%N`; an earlier lift recorded it.
            let target = s.raise_to.or(s.throttle)?;
            let free = target.saturating_sub(occupancy.others(n, job));
            let listed = queue.iter().find(|e| e.array_job_id == job && waits_on_sweep(e, &ours));
            let keep = user_dependency(listed.and_then(|e| e.dependency.as_deref()), &ours);
            (free > 0).then(|| Lift { submission: n, job: job.to_string(), throttle: free, raise_to: target, keep })
        })
        .collect()
}

/// Sets the throttles `throttle_raises` asks for, skipping those this process already set
/// (`set`); a refusal is logged, not fatal: the next poll or `drover status` tries again.
pub(super) fn raise_throttles(ledger: &Ledger, queue: &[QueueEntry], slurm: &Slurm, set: &mut BTreeMap<String, u32>) {
    for (job, n) in throttle_raises(ledger, queue) {
        if set.get(&job) == Some(&n) {
            continue;
        }
        match slurm.set_array_throttle(&job, n) {
            Ok(()) => {
                tracing::info!(job = %job, throttle = n, "raised the array's throttle as older runs of the sweep ended");
                set.insert(job, n);
            }
            Err(e) => tracing::warn!("cannot raise the throttle of array {job} to {n} ({e}); the next poll or `drover status` tries again"),
        }
    }
}

/// `slurm/throttles.json`: the `ArrayTaskThrottle` each array was last set to by a drover
/// command, so that `drover status` run again and again (`watch drover status`) does not send
/// the controller the same `scontrol update` each time. Only a cache: missing, unreadable or
/// unwritable (a colleague's read-only view), it costs one repeated call.
pub(super) const THROTTLES_JSON: &str = "throttles.json";

/// The throttles [`THROTTLES_JSON`] records (empty when it cannot be read).
pub(super) fn throttles_set(root: &Path) -> BTreeMap<String, u32> {
    let path = root.join(SLURM_DIR).join(THROTTLES_JSON);
    let value: Option<serde_json::Value> = layout::read_record(&path).ok().flatten();
    value
        .filter(|v| v["format_version"] == 1)
        .and_then(|v| serde_json::from_value(v["set"].clone()).ok())
        .unwrap_or_default()
}

/// Records `set` in [`THROTTLES_JSON`] when it differs from `before`; best effort.
pub(super) fn remember_throttles(root: &Path, before: &BTreeMap<String, u32>, set: &BTreeMap<String, u32>) {
    if before == set {
        return;
    }
    let path = root.join(SLURM_DIR).join(THROTTLES_JSON);
    let text = serde_json::json!({ "format_version": 1, "set": set }).to_string();
    if let Err(e) = layout::write_atomic(&path, text.as_bytes()) {
        tracing::debug!("cannot record the throttles set in `{}` ({e})", path.display());
    }
}

/// [`share_free_slots`] with the throttles set so far read from and recorded in
/// [`THROTTLES_JSON`], so that another drover command does not set them again; `set` also
/// carries them across one command's polls.
pub(super) fn share_free_slots_remembered(root: &Path, ledger: &mut Ledger, queue: &[QueueEntry], slurm: &Slurm, set: &mut BTreeMap<String, u32>) -> BTreeMap<String, String> {
    let before = set.clone();
    let lifted = share_free_slots(ledger, queue, slurm, set);
    remember_throttles(root, &before, set);
    lifted
}

/// Hands the sweep's free slots out as one `squeue` answer shows them (a poll of a waiting
/// `drover run`, `drover status`, the start of the next `drover run`): raises lowered throttles
/// (`raise_throttles`) and lifts waiting arrays (`throttle_lifts`). A lift is recorded in the
/// ledger, then sets the array's `ArrayTaskThrottle`, then clears its dependency (all but
/// `slurm.after`'s terms not yet held, which it keeps), in that order:
/// until the second call the array still waits, so at no instant may the sweep run more than
/// its throttle. Recorded first so that an array whose throttle was lowered is always known to
/// be raised later, even if drover dies before the dependency is cleared and Slurm releases it.
/// A failure is logged, not fatal: the array keeps waiting, and the next poll or `drover status`
/// tries again. Returns the arrays whose dependency it set, each with the terms it kept.
pub(super) fn share_free_slots(ledger: &mut Ledger, queue: &[QueueEntry], slurm: &Slurm, set: &mut BTreeMap<String, u32>) -> BTreeMap<String, String> {
    raise_throttles(ledger, queue, slurm, set);
    let mut lifted = BTreeMap::new();
    for Lift { submission, job, throttle, raise_to, keep } in throttle_lifts(ledger, queue) {
        let recorded = ledger.submissions.get(&submission).is_some_and(|s| s.lifted == Some(throttle));
        if !recorded {
            if let Err(e) = ledger.append(LedgerEvent::Lifted { submission, throttle, raise_to }) {
                tracing::warn!("cannot record the lift of waiting array {job} ({e}); it keeps waiting for now");
                continue;
            }
        }
        if let Err(e) = slurm.set_array_throttle(&job, throttle) {
            tracing::warn!("cannot set the throttle of waiting array {job} to {throttle} ({e}); it keeps waiting, and the next poll or `drover status` tries again");
            continue;
        }
        set.insert(job.clone(), throttle);
        if let Err(e) = slurm.set_dependency(&job, &keep) {
            tracing::warn!("array {job} may run {throttle} at once but still waits on its dependency ({e}); the next poll or `drover status` tries again");
            continue;
        }
        tracing::info!(job = %job, throttle, "lifted the waiting array's dependency: {throttle} of the sweep's {raise_to} slots are free");
        lifted.insert(job, keep);
    }
    lifted
}

/// The queue answer as Slurm gives it once the `lifted` arrays' dependencies are set to the
/// terms they kept: with none, their pending tasks' reason is `None` at once, so status no
/// longer says they wait for another job; with `slurm.after`'s, they wait on those alone.
pub(super) fn mark_lifted(queue: &mut [QueueEntry], lifted: &BTreeMap<String, String>) {
    for e in queue.iter_mut().filter(|e| e.reason == "Dependency") {
        match lifted.get(&e.array_job_id) {
            Some(keep) if keep.is_empty() => {
                e.reason = "None".to_string();
                e.dependency = None;
            }
            Some(keep) => e.dependency = Some(keep.clone()),
            None => {}
        }
    }
}

/// What `drover run` says of how its new arrays share the sweep's throttle `n` with each other
/// and with the `live` runs of older arrays; nothing when every array runs all it may at once.
/// Without `wait` (`--no-wait`) no drover process stays to raise a lowered throttle or lift a
/// waiting array, so it says which command does.
pub(super) fn sharing_words(n: u32, live: usize, arrays: &[SubmittedArray], wait: bool) -> Vec<String> {
    let lowered = arrays.iter().any(|a| a.limits.raise_to.is_some());
    let waiting = arrays.iter().any(|a| !a.limits.after.is_empty());
    if !lowered && !waiting {
        return Vec::new();
    }
    let lifter = if wait { "this `drover run`" } else { "`drover status` (or the next `drover run`)" };
    let older = crate::words::count(live, "run");
    let mut lines = Vec::new();
    match arrays {
        [one] if lowered => lines.push(format!(
            "{older} of earlier submissions still queued or running: the new runs start at {} at once, raised to {n} as those end (the sweep's throttle)",
            one.limits.throttle.unwrap_or(n)
        )),
        [one] => lines.push(format!(
            "{older} of earlier submissions still queued or running {} the sweep's throttle: the new runs wait for them (array {}); \
             Slurm starts them once those end, or {lifter} as soon as one ends and frees a slot",
            if live == 1 { "fills" } else { "fill" },
            one.limits.after.join(", ")
        )),
        _ => {
            let parts: Vec<String> = arrays
                .iter()
                .map(|a| match (&a.limits.after[..], a.limits.raise_to) {
                    ([], Some(_)) => format!("array {} starts at {} at once", a.job_id, a.limits.throttle.unwrap_or(n)),
                    ([], None) => format!("array {} runs {} at once", a.job_id, a.limits.throttle.unwrap_or(n)),
                    (after, _) => {
                        let which = if after.len() == 1 { "array" } else { "arrays" };
                        format!("array {} waits for {which} {} to end or for a free slot", a.job_id, after.join(", "))
                    }
                })
                .collect();
            let with = if live == 0 { String::new() } else { format!(" and {older} of earlier submissions still queued or running") };
            let raised = if lowered { format!("; lowered throttles are raised toward {n} as other runs of the sweep end") } else { String::new() };
            lines.push(format!(
                "the sweep's throttle ({n} at once) is shared by its {} new arrays{with} (Slurm applies `%N` per array): {}{raised}",
                arrays.len(),
                parts.join(", ")
            ));
        }
    }
    // A lone waiting array's line already names who lifts it.
    if !wait && (lowered || arrays.len() > 1) {
        let what = match (lowered, waiting) {
            (true, false) => "raises the lowered throttle",
            (false, _) => "starts a waiting array before the arrays it waits for end",
            (true, true) => "raises a lowered throttle or starts a waiting array early",
        };
        lines.push(format!(
            "with --no-wait no drover process {what}: {lifter} does, as runs end; until one runs, the sweep runs fewer than {n} at once, never more"
        ));
    }
    lines
}

/// How many failed runs may be resubmitted now: a resubmission is a new array whose own
/// throttle Slurm applies apart from the first array's, so only the sweep's free slots (its
/// throttle less the runs queued or running) are handed out, and the rest wait for a later poll.
pub(super) fn retry_slots(throttle: Option<u32>, live: usize) -> usize {
    throttle.map_or(usize::MAX, |t| (t as usize).saturating_sub(live))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::slurm::after::{NEVER_SATISFIED, after_job_ids, never_satisfied, waits_for_user_job};
    use crate::backend::slurm::ledger::LEDGER;
    use crate::backend::slurm::test_support::{intent, tasks};

    /// The throttles a drover command set are remembered in `slurm/throttles.json`, so a
    /// `drover status` run again (or the next `drover run`) does not send the same `scontrol
    /// update` again; a missing or damaged file only costs one repeated call.
    #[test]
    fn a_throttle_set_once_is_not_set_again_by_the_next_command() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let (bin, calls) = (root.join("bin"), root.join("calls"));
        std::fs::create_dir_all(&bin).expect("mkdir");
        crate::subprocess::write_stand_in(&bin.join("scontrol"), &format!("echo \"$*\" >> '{}'\nexit 0", calls.display()));
        let slurm = Slurm { bin_dir: Some(bin), policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, ..Default::default() } };
        let mut ledger = Ledger::load(root).expect("empty");
        // Array 42 started at %1 below the sweep's 3 while array 41 ran; 41 has ended.
        ledger.append(intent(0, vec![format!("{:016x}", 0)], Some(3), None)).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "41".into() }).expect("submitted");
        ledger.append(intent(1, (1..7).map(|n| format!("{n:016x}")).collect(), Some(1), Some(3))).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 1, job_id: "42".into() }).expect("submitted");
        let queue = [tasks("42", 0, 1, "RUNNING", "None"), tasks("42", 1, 6, "PENDING", "JobArrayTaskLimit")].concat();
        // What `drover status` does, twice.
        let status_like = |ledger: &mut Ledger| {
            share_free_slots_remembered(root, ledger, &queue, &slurm, &mut throttles_set(root));
        };
        status_like(&mut ledger);
        let calls_so_far = || std::fs::read_to_string(&calls).unwrap_or_default();
        assert_eq!(calls_so_far(), "update JobId=42 ArrayTaskThrottle=3\n");
        status_like(&mut ledger);
        assert_eq!(calls_so_far(), "update JobId=42 ArrayTaskThrottle=3\n", "not sent again");
        assert_eq!(throttles_set(root), BTreeMap::from([("42".to_string(), 3)]));
        std::fs::write(root.join(SLURM_DIR).join(THROTTLES_JSON), "{garbled").expect("damage");
        status_like(&mut ledger);
        assert_eq!(calls_so_far().lines().count(), 2, "a damaged cache costs one repeated call");
    }

    /// Failed runs are resubmitted only into the sweep's free slots: each resubmission is an
    /// array with its own throttle, which Slurm does not add up with the first array's.
    #[test]
    fn resubmissions_fill_only_the_free_slots_of_the_throttle() {
        assert_eq!(retry_slots(Some(4), 0), 4);
        assert_eq!(retry_slots(Some(4), 3), 1);
        assert_eq!(retry_slots(Some(1), 1), 0, "one run at once, and it is running: the retry waits");
        assert_eq!(retry_slots(Some(2), 7), 0);
        assert_eq!(retry_slots(None, 100), usize::MAX);
    }

    fn live(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|&(id, n)| (id.to_string(), n)).collect()
    }

    fn at(throttle: u32, raise_to: Option<u32>) -> ArrayLimits {
        ArrayLimits { throttle: Some(throttle), raise_to, ..ArrayLimits::default() }
    }

    fn waits(throttle: u32, after: &[&str], after_earlier: bool) -> ArrayLimits {
        ArrayLimits { throttle: Some(throttle), raise_to: None, after: after.iter().map(|s| s.to_string()).collect(), after_earlier }
    }

    /// A rerun's first array shares the sweep's throttle with runs of earlier arrays still
    /// live: it starts at what they leave, or waits for them when they fill it.
    #[test]
    fn a_reruns_first_array_starts_within_what_older_live_runs_leave() {
        assert_eq!(round_limits(Some(4), &live(&[]), &[10]), [at(4, None)]);
        assert_eq!(round_limits(None, &live(&[("41", 9)]), &[10, 3]), [ArrayLimits::default(), ArrayLimits::default()], "no throttle, nothing to share");
        assert_eq!(round_limits(Some(4), &live(&[("41", 1), ("42", 2)]), &[10]), [at(1, Some(4))]);
        assert_eq!(round_limits(Some(3), &live(&[("41", 2), ("42", 1)]), &[10]), [waits(3, &["41", "42"], false)]);
        assert_eq!(round_limits(Some(4), &live(&[("41", 1)]), &[2]), [at(2, None)], "as many slots as tasks: nothing to raise");
    }

    /// Issue (slurm2): a round split into several arrays (by `MaxArraySize` or by
    /// `[[slurm.overrides]]`) gave each array the whole `%N`, so k arrays ran k·N at once.
    /// The free slots are dealt across the arrays; an array left without one waits for all
    /// that came before it rather than get `%0`, which Slurm reads as no limit.
    #[test]
    fn a_round_of_several_arrays_shares_one_throttle() {
        assert_eq!(round_limits(Some(4), &live(&[]), &[10, 10]), [at(2, Some(4)), at(2, Some(4))]);
        assert_eq!(round_limits(Some(4), &live(&[]), &[1, 10]), [at(1, None), at(3, Some(4))], "a one-run array needs one slot");
        assert_eq!(round_limits(Some(5), &live(&[]), &[2, 10]), [at(2, None), at(3, Some(5))]);
        assert_eq!(round_limits(Some(5), &live(&[]), &[3, 3, 3]), [at(2, Some(5)), at(2, Some(5)), at(1, Some(5))], "earlier arrays first");
        assert_eq!(round_limits(Some(4), &live(&[]), &[2, 2]), [at(2, None), at(2, None)]);
        assert_eq!(
            round_limits(Some(2), &live(&[]), &[2, 2, 2, 2]),
            [at(1, Some(2)), at(1, Some(2)), waits(2, &[], true), waits(2, &[], true)],
            "more arrays than slots: the rest wait, each for every array before it"
        );
        assert_eq!(round_limits(Some(4), &live(&[("41", 3)]), &[5, 5]), [at(1, Some(4)), waits(4, &["41"], true)]);
        assert_eq!(
            round_limits(Some(3), &live(&[("41", 3)]), &[5, 5]),
            [waits(3, &["41"], false), waits(3, &["41"], true)],
            "older runs fill the throttle: the arrays wait one after another"
        );
        // Over many shapes: never `%0`, never more than the throttle at once, no slot left idle
        // while an array waits, and an array waits only when no slot is left.
        for n in 1..7u32 {
            for older in 0..8usize {
                for sizes in [vec![1], vec![3], vec![1, 1, 1], vec![2, 7], vec![7, 2, 1, 4], vec![9; 5]] {
                    let limits = round_limits(Some(n), &live(&[("41", older)][..usize::from(older > 0)]), &sizes);
                    let what = format!("n={n} older={older} sizes={sizes:?}: {limits:?}");
                    assert!(limits.iter().all(|l| l.throttle.is_some_and(|t| t > 0)), "{what}");
                    let starting: u32 = limits.iter().filter(|l| l.after.is_empty() && !l.after_earlier).map(|l| l.throttle.unwrap_or(0)).sum();
                    let waiting = limits.iter().any(|l| !l.after.is_empty() || l.after_earlier);
                    assert!(older as u32 + starting <= n.max(older as u32), "{what}");
                    assert_eq!(waiting, older as u32 + starting >= n && sizes.len() > limits.iter().filter(|l| l.after.is_empty() && !l.after_earlier).count(), "{what}");
                    for (l, &size) in limits.iter().zip(&sizes) {
                        assert!(l.raise_to.is_none() || l.throttle.is_some_and(|t| (t as usize) < size), "{what}");
                    }
                }
            }
        }
        assert_eq!(deal(u32::MAX, &[3, 5]), [3, 5], "a huge throttle, dealt in whole rounds");
        assert_eq!(deal(7, &[1, 100, 100]), [1, 3, 3]);
    }

    /// What `drover run` says of the split, and that with `--no-wait` it names the commands
    /// that raise a lowered throttle (no drover process stays to do it).
    #[test]
    fn drover_run_says_how_its_arrays_share_the_throttle_and_who_raises_it() {
        let arr = |id: &str, limits: ArrayLimits| SubmittedArray { job_id: id.into(), limits, runs: 0, tasks: 0 };
        assert!(sharing_words(4, 0, &[arr("50", at(4, None))], false).is_empty(), "nothing shared, nothing said");
        let one = sharing_words(3, 2, &[arr("50", at(1, Some(3)))], true);
        assert_eq!(one, ["2 runs of earlier submissions still queued or running: the new runs start at 1 at once, raised to 3 as those end (the sweep's throttle)"]);
        let no_wait = sharing_words(3, 2, &[arr("50", at(1, Some(3)))], false);
        assert_eq!(no_wait.len(), 2, "{no_wait:?}");
        assert!(no_wait[1].starts_with("with --no-wait no drover process raises the lowered throttle: `drover status` (or the next `drover run`) does"), "{no_wait:?}");
        let waiting = sharing_words(3, 3, &[arr("50", waits(3, &["41"], false))], false);
        assert_eq!(waiting.len(), 1, "Slurm releases a waiting array by itself: {waiting:?}");
        assert!(
            waiting[0].ends_with(
                "wait for them (array 41); Slurm starts them once those end, or `drover status` (or the next `drover run`) as soon as one ends and frees a slot"
            ),
            "{waiting:?}"
        );
        let waiting = sharing_words(3, 3, &[arr("50", waits(3, &["41"], false))], true);
        assert!(waiting[0].ends_with("Slurm starts them once those end, or this `drover run` as soon as one ends and frees a slot"), "{waiting:?}");
        let split = sharing_words(2, 0, &[arr("50", at(1, Some(2))), arr("51", at(1, Some(2))), arr("52", waits(2, &["50", "51"], true))], true);
        assert_eq!(
            split,
            ["the sweep's throttle (2 at once) is shared by its 3 new arrays (Slurm applies `%N` per array): array 50 starts at 1 at once, \
              array 51 starts at 1 at once, array 52 waits for arrays 50, 51 to end or for a free slot; lowered throttles are raised toward 2 as other runs of the sweep end"]
        );
        let split = sharing_words(1, 0, &[arr("50", at(1, None)), arr("51", waits(1, &["50"], true))], false);
        assert_eq!(split.len(), 2, "{split:?}");
        assert!(split[0].ends_with("array 50 runs 1 at once, array 51 waits for array 50 to end or for a free slot"), "{split:?}");
        assert!(
            split[1].starts_with("with --no-wait no drover process starts a waiting array before the arrays it waits for end: `drover status` (or the next `drover run`) does"),
            "{split:?}"
        );
    }

    /// A lowered array is raised to the sweep's throttle less what the other arrays still run,
    /// only upward and only while it has queued tasks.
    #[test]
    fn a_lowered_throttle_is_raised_as_older_runs_end() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::load(tmp.path()).expect("empty");
        for (n, job, throttle, raise_to) in [(0, "41", Some(3), None), (1, "42", Some(1), Some(3))] {
            ledger.append(intent(n, vec![format!("{n:016x}")], throttle, raise_to)).expect("intent");
            ledger.append(LedgerEvent::Submitted { submission: n, job_id: job.into() }).expect("submitted");
        }
        let back = Ledger::load(tmp.path()).expect("reload");
        assert_eq!((back.submissions[&1].throttle, back.submissions[&1].raise_to), (Some(1), Some(3)), "kept in the ledger");
        let entry = |job: &str, task, state: &str| QueueEntry {
            array_job_id: job.into(),
            task: Some(task),
            state: state.into(),
            reason: "None".into(),
            comment: String::new(),
            dependency: None,
        };
        let new_array = [entry("42", 0, "RUNNING"), entry("42", 1, "PENDING"), entry("42", 2, "PENDING")];
        let with_older = |older: &[QueueEntry]| throttle_raises(&back, &[older, &new_array[..]].concat());
        assert!(with_older(&[entry("41", 0, "RUNNING"), entry("41", 1, "RUNNING")]).is_empty(), "two older runs live: stays at 1");
        assert_eq!(with_older(&[entry("41", 0, "RUNNING"), entry("41", 1, "COMPLETED")]), [("42".to_string(), 2)]);
        assert_eq!(with_older(&[entry("41", 1, "CANCELLED")]), [("42".to_string(), 3)]);
        assert_eq!(with_older(&[]), [("42".to_string(), 3)], "Slurm forgot the older array");
        let nothing_queued = [entry("42", 0, "RUNNING"), entry("42", 1, "COMPLETED")];
        assert!(throttle_raises(&back, &nothing_queued).is_empty(), "no queued task, nothing to raise");
    }

    /// A later array that waits on its dependency (it was given no slot, so it waits for every
    /// array live at its submission) cannot start while the lowered array runs: it does not
    /// hold the lowered array down. An older waiting array, which does not wait for it, does.
    #[test]
    fn a_later_array_waiting_on_its_dependency_does_not_hold_a_raise_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::load(tmp.path()).expect("empty");
        for (n, job, throttle, raise_to) in [(0, "50", Some(3), None), (1, "51", Some(1), Some(2)), (2, "52", Some(2), None)] {
            ledger.append(intent(n, vec![format!("{n:016x}")], throttle, raise_to)).expect("intent");
            ledger.append(LedgerEvent::Submitted { submission: n, job_id: job.into() }).expect("submitted");
        }
        let back = Ledger::load(tmp.path()).expect("reload");
        let entry = |job: &str, task, state: &str, reason: &str| QueueEntry {
            array_job_id: job.into(),
            task: Some(task),
            state: state.into(),
            reason: reason.into(),
            comment: String::new(),
            dependency: None,
        };
        let lowered = [entry("51", 0, "RUNNING", "None"), entry("51", 1, "PENDING", "JobArrayTaskLimit")];
        let later_waiting = [entry("52", 0, "PENDING", "Dependency"), entry("52", 1, "PENDING", "Dependency")];
        assert_eq!(throttle_raises(&back, &[&lowered[..], &later_waiting[..]].concat()), [("51".to_string(), 2)]);
        // The same array with a task running no longer waits: its runs count.
        let later_running = [entry("52", 0, "RUNNING", "None"), entry("52", 1, "PENDING", "Dependency")];
        assert!(throttle_raises(&back, &[&lowered[..], &later_running[..]].concat()).is_empty());
        // An older array waiting on a dependency does not wait for the lowered one: it counts.
        let older_waiting = [entry("50", 0, "PENDING", "Dependency")];
        assert!(throttle_raises(&back, &[&older_waiting[..], &lowered[..]].concat()).is_empty(), "1 older + 1 running = 2");
    }

    /// A ledger folded in memory from `(submission, job id, throttle, raise_to)` per array.
    fn ledger_of(arrays: &[(u32, &str, Option<u32>, Option<u32>)]) -> Ledger {
        let mut ledger = Ledger::default();
        for &(n, job, throttle, raise_to) in arrays {
            ledger.apply(intent(n, vec![format!("{n:016x}")], throttle, raise_to));
            ledger.apply(LedgerEvent::Submitted { submission: n, job_id: job.into() });
        }
        ledger
    }

    fn lift(submission: u32, job: &str, throttle: u32, raise_to: u32) -> Lift {
        Lift { submission, job: job.into(), throttle, raise_to, keep: String::new() }
    }

    /// A waiting array (given no slot, so `--dependency=afterany` on the older live array) is
    /// lifted as soon as the older array's runs leave a slot, to as many slots as they leave,
    /// before all of them end; never while they fill the throttle, and never once it runs.
    /// Lifted, it counts as an array started at that `%N` and is raised as the rest end.
    #[test]
    fn a_waiting_array_is_lifted_into_the_slots_older_runs_leave() {
        let ledger = ledger_of(&[(0, "41", Some(4), None), (1, "42", Some(4), None)]);
        let waiting = tasks("42", 0, 6, "PENDING", "Dependency");
        let with_older = |older: Vec<QueueEntry>| throttle_lifts(&ledger, &[older, waiting.clone()].concat());
        assert!(with_older(tasks("41", 0, 4, "RUNNING", "None")).is_empty(), "four older runs fill the throttle of 4");
        let three_left = [tasks("41", 0, 3, "RUNNING", "None"), tasks("41", 3, 1, "COMPLETED", "None")].concat();
        assert_eq!(with_older(three_left), [lift(1, "42", 1, 4)], "one run ended: one slot");
        assert_eq!(with_older(tasks("41", 0, 1, "RUNNING", "None")), [lift(1, "42", 3, 4)], "the last older run still going");
        let requeued = [tasks("41", 0, 1, "RUNNING", "None"), tasks("41", 1, 1, "PENDING", "BeginTime")].concat();
        assert_eq!(with_older(requeued), [lift(1, "42", 2, 4)], "a queued older task may start at any time: it counts");
        assert_eq!(with_older(Vec::new()), [lift(1, "42", 4, 4)], "Slurm forgot the older array");
        let started = [tasks("41", 0, 1, "RUNNING", "None"), tasks("42", 0, 1, "RUNNING", "None"), tasks("42", 1, 5, "PENDING", "Dependency")].concat();
        assert!(throttle_lifts(&ledger, &started).is_empty(), "an array with a task running does not wait");
        assert!(throttle_raises(&ledger, &[tasks("41", 0, 1, "RUNNING", "None"), waiting.clone()].concat()).is_empty(), "lifts are not raises");

        // Lifted at 3 while one older run goes: it is raised to 4 once that run ends, not before.
        let mut ledger = ledger;
        ledger.apply(LedgerEvent::Lifted { submission: 1, throttle: 3, raise_to: 4 });
        assert_eq!((ledger.submissions[&1].throttle, ledger.submissions[&1].raise_to, ledger.submissions[&1].lifted), (Some(3), Some(4), Some(3)));
        let lifted = [tasks("42", 0, 3, "RUNNING", "None"), tasks("42", 3, 3, "PENDING", "JobArrayTaskLimit")].concat();
        assert!(throttle_raises(&ledger, &[tasks("41", 0, 1, "RUNNING", "None"), lifted.clone()].concat()).is_empty());
        assert!(throttle_lifts(&ledger, &[tasks("41", 0, 1, "RUNNING", "None"), lifted.clone()].concat()).is_empty());
        assert_eq!(throttle_raises(&ledger, &lifted), [("42".to_string(), 4)]);

        // Status reads a lifted array's tasks as Slurm gives them once the dependency is gone.
        let mut queue = [tasks("41", 0, 1, "RUNNING", "None"), waiting].concat();
        mark_lifted(&mut queue, &BTreeMap::from([("42".to_string(), String::new())]));
        assert!(queue.iter().all(|e| e.reason == "None"), "{queue:?}");
    }

    /// Two waiting arrays (the second also waits for the first: same round, or a later rerun)
    /// are lifted in submission order, each bound counting every live task of the arrays before
    /// it, so together they never pass the throttle; the first does not count the second, which
    /// cannot start before it ends unless lifted itself.
    #[test]
    fn waiting_arrays_are_lifted_in_submission_order_within_the_throttle() {
        let ledger = ledger_of(&[(0, "41", Some(4), None), (1, "42", Some(4), None), (2, "43", Some(4), None)]);
        let older = tasks("41", 0, 1, "RUNNING", "None");
        let second = tasks("43", 0, 5, "PENDING", "Dependency");
        let small_first = [older.clone(), tasks("42", 0, 2, "PENDING", "Dependency"), second.clone()].concat();
        assert_eq!(throttle_lifts(&ledger, &small_first), [lift(1, "42", 3, 4), lift(2, "43", 1, 4)], "1 older + 2 + 1 = 4");
        let big_first = [older.clone(), tasks("42", 0, 5, "PENDING", "Dependency"), second.clone()].concat();
        assert_eq!(throttle_lifts(&ledger, &big_first), [lift(1, "42", 3, 4)], "the first array takes every free slot");
        let full = [tasks("41", 0, 4, "RUNNING", "None"), tasks("42", 0, 2, "PENDING", "Dependency"), second.clone()].concat();
        assert!(throttle_lifts(&ledger, &full).is_empty(), "no slot free, nothing lifted");

        // Once the first is lifted (at 3) and runs, the second waits until the first's tasks fit.
        let mut ledger = ledger;
        ledger.apply(LedgerEvent::Lifted { submission: 1, throttle: 3, raise_to: 4 });
        let first_runs = [tasks("42", 0, 3, "RUNNING", "None"), tasks("42", 3, 2, "PENDING", "JobArrayTaskLimit")].concat();
        let queue = [older.clone(), first_runs, second.clone()].concat();
        assert!(throttle_lifts(&ledger, &queue).is_empty());
        assert!(throttle_raises(&ledger, &queue).is_empty(), "3 is all the older run leaves the first array");
        let first_ending = [tasks("42", 0, 2, "RUNNING", "None"), tasks("42", 2, 3, "COMPLETED", "None")].concat();
        assert_eq!(throttle_lifts(&ledger, &[older, first_ending, second].concat()), [lift(2, "43", 1, 4)]);
    }

    /// A lift survives a reload of the ledger; a ledger written before lifts existed loads as
    /// before, and a lift of a submission the ledger does not hold changes nothing.
    #[test]
    fn a_lift_is_kept_in_the_ledger_and_an_older_ledger_still_loads() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::load(tmp.path()).expect("empty");
        ledger.append(intent(0, vec!["a".into()], Some(2), None)).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "41".into() }).expect("submitted");
        ledger.append(LedgerEvent::Lifted { submission: 0, throttle: 1, raise_to: 2 }).expect("lifted");
        ledger.append(LedgerEvent::Lifted { submission: 9, throttle: 1, raise_to: 2 }).expect("lifted");
        let text = std::fs::read_to_string(tmp.path().join(SLURM_DIR).join(LEDGER)).expect("ledger");
        assert!(text.contains(r#""kind":"lifted","submission":0,"throttle":1,"raise_to":2"#), "{text}");
        let back = Ledger::load(tmp.path()).expect("reload");
        let s = &back.submissions[&0];
        assert_eq!((s.throttle, s.raise_to, s.lifted), (Some(1), Some(2), Some(1)));
        assert_eq!(back.submissions.len(), 1);

        let old = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(old.path().join(SLURM_DIR)).expect("mkdir");
        let lines = [
            r#"{"format_version":1,"at":"1","kind":"intent","submission":0,"job_name":"j","comment":"c","script":"array-0.sbatch","runs":["a"],"provenance":{"drover_version":"0","git_revision":null,"sweep_file":"s.toml","plugins":{},"submit_host":"h"},"throttle":2}"#,
            r#"{"format_version":1,"at":"2","kind":"submitted","submission":0,"job_id":"41"}"#,
        ];
        std::fs::write(old.path().join(SLURM_DIR).join(LEDGER), lines.join("\n") + "\n").expect("old ledger");
        let old = Ledger::load(old.path()).expect("an old ledger loads");
        let s = &old.submissions[&0];
        assert_eq!((s.throttle, s.raise_to, s.lifted, s.job_id.as_deref()), (Some(2), None, None, Some("41")));
    }

    /// `share_free_slots` records a lift, then sets the throttle, then clears the dependency, so
    /// between the two `scontrol` calls the array still waits; when Slurm refuses the throttle
    /// the dependency is left alone, and a refused clear is tried again by the next call
    /// without a second ledger line. A fake `scontrol` logs its calls.
    #[test]
    fn a_lift_sets_the_throttle_before_it_clears_the_dependency() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (bin, calls) = (tmp.path().join("bin"), tmp.path().join("calls"));
        std::fs::create_dir_all(&bin).expect("mkdir");
        let refuse = |what: &str| tmp.path().join(format!("refuse-{what}"));
        std::fs::write(
            bin.join("scontrol"),
            format!(
                "#!/bin/sh\necho \"$*\" >> '{calls}'\n\
                 case \"$*\" in *Throttle*) [ -e '{t}' ] && {{ echo 'slurm_update error: Access/permission denied' >&2; exit 1; }};; \
                 *Dependency=) [ -e '{d}' ] && {{ echo 'slurm_update error: Job is no longer pending execution' >&2; exit 1; }};; esac\nexit 0\n",
                calls = calls.display(),
                t = refuse("throttle").display(),
                d = refuse("dependency").display()
            ),
        )
        .expect("fake scontrol");
        std::fs::set_permissions(bin.join("scontrol"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let slurm = Slurm { bin_dir: Some(bin), policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, ..Default::default() } };
        let mut ledger = Ledger::load(tmp.path()).expect("empty");
        for (n, job) in [(0, "41"), (1, "42")] {
            ledger.append(intent(n, vec![format!("{n:016x}")], Some(4), None)).expect("intent");
            ledger.append(LedgerEvent::Submitted { submission: n, job_id: job.into() }).expect("submitted");
        }
        let queue = [tasks("41", 0, 1, "RUNNING", "None"), tasks("42", 0, 6, "PENDING", "Dependency")].concat();
        let calls_so_far = || std::fs::read_to_string(&calls).unwrap_or_default();
        let lifted_lines = || {
            let text = std::fs::read_to_string(tmp.path().join(SLURM_DIR).join(LEDGER)).expect("ledger");
            text.lines().filter(|l| l.contains(r#""kind":"lifted""#)).count()
        };

        std::fs::write(refuse("throttle"), "").expect("refuse");
        assert!(share_free_slots(&mut ledger, &queue, &slurm, &mut BTreeMap::new()).is_empty());
        assert_eq!(calls_so_far(), "update JobId=42 ArrayTaskThrottle=3\n", "no dependency cleared without the throttle");
        std::fs::remove_file(refuse("throttle")).expect("rm");

        std::fs::write(refuse("dependency"), "").expect("refuse");
        assert!(share_free_slots(&mut ledger, &queue, &slurm, &mut BTreeMap::new()).is_empty(), "still waiting");
        std::fs::remove_file(refuse("dependency")).expect("rm");
        assert_eq!(share_free_slots(&mut ledger, &queue, &slurm, &mut BTreeMap::new()), BTreeMap::from([("42".to_string(), String::new())]));
        let throttle_then_dependency = "update JobId=42 ArrayTaskThrottle=3\nupdate JobId=42 Dependency=\n";
        assert_eq!(calls_so_far(), format!("update JobId=42 ArrayTaskThrottle=3\n{throttle_then_dependency}{throttle_then_dependency}"));
        assert_eq!(lifted_lines(), 1, "the same lift is recorded once");
        let back = Ledger::load(tmp.path()).expect("reload");
        assert_eq!((back.submissions[&1].throttle, back.submissions[&1].raise_to), (Some(3), Some(4)));

        // With `slurm.after`'s term still to hold, the lift keeps it: only the throttle's goes.
        let waiting_on_both: Vec<QueueEntry> = tasks("42", 0, 6, "PENDING", "Dependency")
            .into_iter()
            .map(|e| QueueEntry { dependency: Some("afterok:99(unfulfilled),afterany:41_*(unfulfilled)".into()), ..e })
            .collect();
        let queue = [tasks("41", 0, 1, "RUNNING", "None"), waiting_on_both].concat();
        let before = calls_so_far().len();
        let kept = share_free_slots(&mut ledger, &queue, &slurm, &mut BTreeMap::new());
        assert_eq!(kept, BTreeMap::from([("42".to_string(), "afterok:99".to_string())]));
        assert_eq!(&calls_so_far()[before..], "update JobId=42 ArrayTaskThrottle=3\nupdate JobId=42 Dependency=afterok:99\n");
    }

    /// `slurm.after`: every array of the sweep also waits on the user's own jobs. An array given
    /// slots that waits only on those is not taken for one waiting on the throttle (a "lift"
    /// would have cleared the user's dependency), and counts in full; a waiting array is lifted
    /// into the slots left keeping the user's terms; status says what a run waits for; a term
    /// that can never hold stops the sweep.
    #[test]
    fn a_user_dependency_is_kept_by_lifts_and_never_taken_for_the_throttles() {
        let ours = BTreeSet::from(["41", "42"]);
        // As Slurm 22.05 prints `%E`: one term per job id (a whole array as `<id>_*`, `after`'s
        // minutes after it), a failed term among unfulfilled ones.
        let dep = "afterok:2973(failed),afterok:2972(unfulfilled),afterany:41_*(unfulfilled),after:3000_*+1(unfulfilled),afterany:2998(unfulfilled)";
        assert_eq!(user_dependency(Some(dep), &ours), "afterok:2973,afterok:2972,after:3000_*+1,afterany:2998");
        // Forms Slurm takes (a term of several ids, `singleton`) pass too.
        assert_eq!(user_dependency(Some("afterany:41_3:98(unfulfilled),singleton(unfulfilled)"), &ours), "afterany:98,singleton");
        assert_eq!(user_dependency(Some("afterany:41_*(unfulfilled)"), &ours), "");
        assert_eq!(user_dependency(None, &ours), "");
        assert_eq!(after_job_ids(&["afterok:7_*".into(), "afterany:8:7".into(), "after:9+5".into()]), ["7", "8", "9"]);

        let ledger = ledger_of(&[(0, "41", Some(4), None), (1, "42", Some(4), None)]);
        let with = |job: &str, from, count, state: &str, reason: &str, dependency: &str| -> Vec<QueueEntry> {
            tasks(job, from, count, state, reason).into_iter().map(|e| QueueEntry { dependency: Some(dependency.into()), ..e }).collect()
        };
        // Round one: 41 has the 4 slots and 42 none (it waits on 41); both wait on job 99.
        let first = with("41", 0, 4, "PENDING", "Dependency", "afterok:99(unfulfilled)");
        let second = with("42", 0, 6, "PENDING", "Dependency", "afterok:99(unfulfilled),afterany:41_*(unfulfilled)");
        assert!(throttle_lifts(&ledger, &first).is_empty(), "41 waits on the user's job alone: nothing of it is drover's to lift");
        assert!(throttle_lifts(&ledger, &[first.clone(), second.clone()].concat()).is_empty(), "41's queued runs fill the throttle");
        assert!(throttle_raises(&ledger, &[first.clone(), second.clone()].concat()).is_empty());
        // Job 99 ended well (its term is gone); one of 41's runs has ended: one slot for 42.
        let going = [tasks("41", 0, 3, "RUNNING", "None"), tasks("41", 3, 1, "COMPLETED", "None")].concat();
        let second_now = with("42", 0, 6, "PENDING", "Dependency", "afterany:41_*(unfulfilled)");
        assert_eq!(throttle_lifts(&ledger, &[going.clone(), second_now].concat()), [lift(1, "42", 1, 4)]);
        // A term still to hold (a job named by a later `slurm.after`) is kept through the lift.
        let keeping = throttle_lifts(&ledger, &[going, second.clone()].concat());
        assert_eq!(keeping, [Lift { keep: "afterok:99".into(), ..lift(1, "42", 1, 4) }]);
        let mut marked = second.clone();
        mark_lifted(&mut marked, &BTreeMap::from([("42".to_string(), "afterok:99".to_string())]));
        assert!(marked.iter().all(|e| e.reason == "Dependency" && e.dependency.as_deref() == Some("afterok:99")), "{marked:?}");

        assert_eq!(waits_for_user_job(&first[0], &ours).as_deref(), Some("waits for `afterok:99` (`slurm.after`)"));
        // Right after `sbatch` Slurm lists the terms before its scheduler gives the reason.
        let fresh = with("41", 0, 1, "PENDING", "None", "afterok:99(unfulfilled)");
        assert_eq!(waits_for_user_job(&fresh[0], &ours).as_deref(), Some("waits for `afterok:99` (`slurm.after`)"));
        assert_eq!(waits_for_user_job(&with("42", 0, 1, "PENDING", "Dependency", "afterany:41_*(unfulfilled)")[0], &ours), None, "the throttle's turn");
        assert_eq!(waits_for_user_job(&tasks("41", 0, 1, "PENDING", "Priority")[0], &ours), None);

        // Job 99 failed: `afterok` can never hold, and the sweep stops rather than wait forever.
        assert_eq!(never_satisfied(&ledger, &[first.clone(), second.clone()].concat()), None);
        let failed = with("41", 0, 4, "PENDING", NEVER_SATISFIED, "afterok:99(failed),afterok:98(unfulfilled)");
        let also = with("42", 0, 6, "PENDING", NEVER_SATISFIED, "afterok:99(failed),afterok:98(unfulfilled),afterany:41_*(unfulfilled)");
        let queue = [failed.clone(), also].concat();
        let (why, arrays) = never_satisfied(&ledger, &queue).expect("stops");
        assert!(why.starts_with("its dependency `afterok:99` (`slurm.after`) can never hold"), "only the failed term: {why}");
        assert_eq!(arrays, BTreeSet::from(["41".to_string(), "42".to_string()]));
        assert!(throttle_lifts(&ledger, &queue).is_empty(), "a dependency that can never hold is not lifted");
        assert!(waits_for_user_job(&failed[0], &ours).expect("words").starts_with("can never start: its dependency `afterok:99` "));
        assert_eq!(never_satisfied(&ledger_of(&[(0, "51", Some(4), None)]), &queue), None, "another sweep's arrays");
        // Under `DependencyParameters=kill_invalid_depend` Slurm cancels the tasks itself.
        let killed = with("41", 0, 4, "CANCELLED", NEVER_SATISFIED, "afterok:99(failed)");
        assert_eq!(never_satisfied(&ledger, &killed).map(|(_, a)| a), Some(BTreeSet::from(["41".to_string()])));
        assert!(waits_for_user_job(&killed[0], &ours).expect("words").starts_with("cancelled by Slurm: its dependency `afterok:99`"));
        assert_eq!(waits_for_user_job(&with("41", 0, 1, "CANCELLED", "None", "afterok:99(unfulfilled)")[0], &ours), None, "a cancel by hand");
    }

    /// A small model of Slurm's side of a sweep, to check the throttle over many interleavings:
    /// each array has its `%N`, the arrays it waits for (met once none of them has a live task)
    /// and its tasks.
    #[derive(Debug, Clone)]
    struct SimArray {
        job: String,
        throttle: u32,
        after: Vec<String>,
        tasks: Vec<SimTask>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum SimTask {
        Pending,
        Running,
        Done,
    }

    struct Sim {
        n: u32,
        arrays: Vec<SimArray>,
        ledger: Ledger,
        rng: u64,
        log: Vec<String>,
        /// Lifts applied, and tasks started while an array their array first waited for still had live tasks.
        lifts: usize,
        early_starts: usize,
        /// The dependency each array was submitted with.
        submitted_after: BTreeMap<String, Vec<String>>,
    }

    impl Sim {
        fn rand(&mut self, below: u64) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng % below
        }

        fn live(&self, job: &str) -> bool {
            self.arrays.iter().any(|a| a.job == job && a.tasks.iter().any(|t| *t != SimTask::Done))
        }

        fn running(&self) -> usize {
            self.arrays.iter().flat_map(|a| &a.tasks).filter(|t| **t == SimTask::Running).count()
        }

        fn queue(&self) -> Vec<QueueEntry> {
            let mut out = Vec::new();
            for a in &self.arrays {
                for (i, t) in a.tasks.iter().enumerate() {
                    let (state, reason) = match t {
                        SimTask::Pending if !a.after.is_empty() => ("PENDING", "Dependency"),
                        SimTask::Pending => ("PENDING", "JobArrayTaskLimit"),
                        SimTask::Running => ("RUNNING", "None"),
                        SimTask::Done => ("COMPLETED", "None"),
                    };
                    out.push(QueueEntry { array_job_id: a.job.clone(), task: Some(i as u32), state: state.into(), reason: reason.into(), comment: String::new(), dependency: None });
                }
            }
            out
        }

        /// One pass of Slurm's scheduler: drops met dependencies, starts what each `%N` allows.
        fn schedule(&mut self) {
            for i in 0..self.arrays.len() {
                let waits = self.arrays[i].after.clone();
                if waits.iter().any(|d| self.live(d)) {
                    continue;
                }
                let early = self.submitted_after[&self.arrays[i].job].iter().any(|d| self.live(d));
                let a = &mut self.arrays[i];
                a.after.clear();
                while a.tasks.iter().filter(|t| **t == SimTask::Running).count() < a.throttle as usize {
                    let Some(t) = a.tasks.iter_mut().find(|t| **t == SimTask::Pending) else { break };
                    *t = SimTask::Running;
                    self.early_starts += usize::from(early);
                }
            }
            assert!(self.running() <= self.n as usize, "{} running with a throttle of {}:\n{}\n{:#?}", self.running(), self.n, self.log.join("\n"), self.arrays);
        }

        fn end_one(&mut self) {
            let running: Vec<(usize, usize)> = (0..self.arrays.len())
                .flat_map(|i| (0..self.arrays[i].tasks.len()).map(move |j| (i, j)))
                .filter(|&(i, j)| self.arrays[i].tasks[j] == SimTask::Running)
                .collect();
            if !running.is_empty() {
                let (i, j) = running[self.rand(running.len() as u64) as usize];
                self.arrays[i].tasks[j] = SimTask::Done;
                self.log.push(format!("end {}_{j}", self.arrays[i].job));
            }
        }

        fn set_throttle(&mut self, job: &str, t: u32) {
            assert!(t > 0, "ArrayTaskThrottle=0 is Slurm's no limit");
            self.arrays.iter_mut().filter(|a| a.job == job).for_each(|a| a.throttle = t);
        }

        /// A `drover run` round of arrays of `sizes`, from the queue as it is now.
        fn submit_round(&mut self, sizes: &[usize]) {
            let older = live_per_array(&self.ledger, &self.queue());
            let mut earlier = Vec::new();
            for (k, limits) in round_limits(Some(self.n), &older, sizes).into_iter().enumerate() {
                let n = self.ledger.next_submission();
                let job = format!("{}", 100 + n);
                let mut after = limits.after.clone();
                if limits.after_earlier {
                    after.extend(earlier.iter().cloned());
                }
                self.ledger.apply(intent(n, vec![format!("{n:016x}"); sizes[k]], limits.throttle, limits.raise_to));
                self.ledger.apply(LedgerEvent::Submitted { submission: n, job_id: job.clone() });
                self.log.push(format!("submit {job} %{:?} x{} after {after:?} raise_to {:?}", limits.throttle, sizes[k], limits.raise_to));
                self.submitted_after.insert(job.clone(), after.clone());
                let throttle = limits.throttle.unwrap_or(u32::MAX);
                self.arrays.push(SimArray { job: job.clone(), throttle, after, tasks: vec![SimTask::Pending; sizes[k]] });
                earlier.push(job);
            }
        }

        /// What `share_free_slots` does with one queue answer, with Slurm going on meanwhile:
        /// the answer may be stale, and Slurm may schedule or end runs between the calls.
        fn drover_pass(&mut self, stale: bool, meddle: bool) {
            let queue = self.queue();
            if stale {
                self.schedule();
                self.end_one();
            }
            for (job, t) in throttle_raises(&self.ledger, &queue) {
                self.log.push(format!("raise {job} to {t}"));
                self.set_throttle(&job, t);
                if meddle {
                    self.schedule();
                }
            }
            for Lift { submission, job, throttle, raise_to, .. } in throttle_lifts(&self.ledger, &queue) {
                self.ledger.apply(LedgerEvent::Lifted { submission, throttle, raise_to });
                self.set_throttle(&job, throttle);
                if meddle {
                    self.schedule();
                    self.end_one();
                }
                // Slurm sometimes refuses the second call: the array keeps waiting.
                let cleared = self.rand(5) != 0;
                self.log.push(format!("lift {job} at {throttle} (dependency cleared: {cleared})"));
                if cleared {
                    self.arrays.iter_mut().filter(|a| a.job == job).for_each(|a| a.after.clear());
                    self.lifts += 1;
                }
                if meddle {
                    self.schedule();
                }
            }
        }
    }

    /// Issue (slurm-lift): over many random interleavings of reruns, runs ending, Slurm's
    /// scheduler passes (between the two calls of a lift too), stale queue answers and refused
    /// dependency clears, the sweep never runs more than its throttle, waiting arrays do start
    /// before everything they waited for ended, and every run completes in the end.
    #[test]
    fn the_sweep_never_runs_more_than_its_throttle_whatever_the_order_of_events() {
        let (mut lifts, mut early_starts) = (0, 0);
        for seed in 1..=400u64 {
            let mut sim = Sim {
                n: 1 + (seed % 4) as u32,
                arrays: Vec::new(),
                ledger: Ledger::default(),
                rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                log: vec![format!("seed {seed}")],
                lifts: 0,
                early_starts: 0,
                submitted_after: BTreeMap::new(),
            };
            let mut rounds = 0;
            for _ in 0..80 {
                match sim.rand(10) {
                    0..=2 => sim.schedule(),
                    3..=5 => sim.end_one(),
                    6..=8 => {
                        let (stale, meddle) = (sim.rand(2) == 0, sim.rand(2) == 0);
                        sim.drover_pass(stale, meddle);
                    }
                    _ if rounds < 4 => {
                        rounds += 1;
                        let sizes: Vec<usize> = (0..1 + sim.rand(3)).map(|_| 1 + sim.rand(5) as usize).collect();
                        sim.submit_round(&sizes);
                    }
                    _ => sim.schedule(),
                }
                sim.schedule();
            }
            for _ in 0..200 {
                sim.drover_pass(false, false);
                sim.schedule();
                sim.end_one();
            }
            let left: Vec<&SimArray> = sim.arrays.iter().filter(|a| sim.live(&a.job)).collect();
            assert!(left.is_empty(), "seed {seed}: runs never completed: {left:?}\n{}", sim.log.join("\n"));
            (lifts, early_starts) = (lifts + sim.lifts, early_starts + sim.early_starts);
        }
        assert!(lifts > 100 && early_starts > 100, "the interleavings lift arrays: {lifts} lifts, {early_starts} early starts");
    }
}
