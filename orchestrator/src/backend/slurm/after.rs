//! `slurm.after`: dependencies on the user's own jobs. Checked with Slurm before submission,
//! kept by every lift, and a dependency that can never hold stops the sweep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::backend::slurm_cmd::{QueueEntry, Slurm};
use crate::plan::Plan;

use super::job_files::ever_ran_in;
use super::ledger::Ledger;
use super::throttle::dependency_job;

/// The terms of a task's dependency (`QueueEntry::dependency`) as (type, job ids), Slurm's
/// `(unfulfilled)` status cut off: `afterok:99(unfulfilled),afterany:41_*(unfulfilled)` →
/// `[("afterok", ["99"]), ("afterany", ["41_*"])]`.
pub(super) fn dependency_terms(dependency: &str) -> Vec<(&str, Vec<&str>)> {
    dependency
        .split(',')
        .map(|term| term.split_once('(').map_or(term, |(t, _)| t).trim())
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once(':') {
            Some((kind, ids)) => (kind, ids.split(':').collect()),
            None => (t, Vec::new()),
        })
        .collect()
}

/// Why a task waits, or waited, for jobs of the user's (`slurm.after`), in words: the terms
/// not yet held, or, when they never will (a job that `afterok` names failed), the ones that
/// failed; with `DependencyParameters=kill_invalid_depend` Slurm cancels such a task itself.
/// Keyed on the terms (`%E`) rather than the reason alone: Slurm gives a task reason `None`
/// until its next scheduling pass after `sbatch` or a dependency update. `None` for a task
/// that waits on nothing, or only on the sweep's own arrays (the throttle's turn).
pub(super) fn waits_for_user_job(e: &QueueEntry, ours: &BTreeSet<&str>) -> Option<String> {
    let never = e.reason == NEVER_SATISFIED;
    let pending = e.state == "PENDING" && (e.reason.starts_with("Dependency") || e.reason == "None");
    if !(pending || (e.state == "CANCELLED" && never)) {
        return None;
    }
    let terms = if never { failed_terms(e, ours) } else { user_dependency(e.dependency.as_deref(), ours) };
    if terms.is_empty() {
        return None;
    }
    Some(match (never, e.state.as_str()) {
        (true, "CANCELLED") => format!("cancelled by Slurm: its dependency `{terms}` (`slurm.after`) can never hold, as a job it names ended otherwise"),
        (true, _) => format!("can never start: its dependency `{terms}` (`slurm.after`) can never hold, as a job it names ended otherwise"),
        (false, _) => format!("waits for `{terms}` (`slurm.after`)"),
    })
}

/// The terms of a task's dependency that failed (`afterok:4242(failed)`: they can never hold),
/// else all of `slurm.after`'s it still lists.
pub(super) fn failed_terms(e: &QueueEntry, ours: &BTreeSet<&str>) -> String {
    let dependency = e.dependency.as_deref().unwrap_or_default();
    let failed: Vec<&str> = dependency.split(',').filter_map(|t| t.trim().strip_suffix("(failed)")).collect();
    if failed.is_empty() { user_dependency(e.dependency.as_deref(), ours) } else { failed.join(",") }
}

/// The job ids `slurm.after`'s terms name (`4242` of `afterok:4242_*`), once each, in order.
pub(super) fn after_job_ids(terms: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for (_, term_ids) in terms.iter().flat_map(|t| dependency_terms(t)) {
        for id in term_ids.into_iter().map(dependency_job) {
            if !ids.iter().any(|known| known == id) {
                ids.push(id.to_string());
            }
        }
    }
    ids
}

/// Whether a run of the sweep started in an array submitted with a `slurm.after` term on job
/// `job`: Slurm held that dependency met then.
pub(super) fn held_before(ledger: &Ledger, runs: &Path, job: &str) -> bool {
    ledger.submissions.values().any(|s| {
        let names_job = after_job_ids(&s.after).iter().any(|id| id == job);
        names_job && s.job_id.as_deref().is_some_and(|array| s.runs.iter().any(|r| ever_ran_in(&runs.join(r), array)))
    })
}

/// Checks `slurm.after`'s job ids with Slurm before anything is submitted. Slurm counts a
/// dependency on a job it does not know as met at once (measured on 22.05: an id never used,
/// or a job that ended more than `MinJobAge` ago and was forgotten, failed or not), so a typo
/// would start the sweep at once instead of making it wait. An unknown id is refused, naming
/// the key, unless a run of this sweep already started under it (the dependency held then,
/// and Slurm has since forgotten the job, as it does; a rerun may go on). So is a term on a job
/// that has already ended so that it can never hold (`afterok` on a job that failed): Slurm
/// would take the arrays and keep them queued as `DependencyNeverSatisfied` for ever; with the
/// same exception, since a rerun after the job held may meet it ended, as it then is.
pub fn check_after_jobs(plan: &Plan, slurm: &Slurm) -> Result<(), crate::ConfigError> {
    let after = &plan.sweep.slurm.after;
    if after.is_empty() {
        return Ok(());
    }
    let ids = after_job_ids(after);
    let known = match slurm.known_jobs(&ids) {
        Ok(known) => known,
        Err(e) => {
            // The submission that follows meets the same trouble and says so.
            tracing::warn!("cannot ask Slurm about `slurm.after`'s jobs ({e})");
            return Ok(());
        }
    };
    let root = plan.results.root();
    let ledger = Ledger::load(root).unwrap_or_default();
    let held = |id: &str| held_before(&ledger, &root.join("runs"), id);
    let unknown: Vec<&String> = ids.iter().filter(|id| !known.contains_key(*id) && !held(id)).collect();
    let refuse = |why: String| Err(crate::ConfigError::new(&plan.sweep.source, "slurm.after", crate::error::ConfigErrorKind::InvalidValue(why)));
    if !unknown.is_empty() {
        let list = unknown.iter().map(|id| format!("`{id}`")).collect::<Vec<_>>().join(", ");
        return refuse(format!(
            "Slurm does not know job {list} (a wrong id, or a job that ended more than `MinJobAge` ago and was forgotten), and counts a dependency on a job it does not know as met: the sweep would start at once instead of waiting; give the id of a job `squeue --jobs=<id>` lists, or leave `after` out if that job has ended as the sweep needs"
        ));
    }
    let mut never = Vec::new();
    for (kind, term_ids) in after.iter().flat_map(|t| dependency_terms(t)) {
        for id in term_ids {
            let job = dependency_job(id);
            // A task named alone (`4242_7`) is judged by its own state; while Slurm lists it
            // only inside its array's pending record, not at all.
            let task = id.split('+').next().unwrap_or(id);
            let key = if task.contains('_') && !task.ends_with("_*") { task } else { job };
            let states = known.get(key).map(Vec::as_slice).unwrap_or_default();
            // `held` reads the runs' attempt records: asked only of a term that would be refused.
            if never_holds(kind, states) && !held(job) {
                let wants = if kind == "afterok" { "success" } else { "failure" };
                never.push(format!("`{kind}:{id}` can never hold: {}, and {kind} waits for its {wants}", ended_words(key, states)));
            }
        }
    }
    if never.is_empty() {
        return Ok(());
    }
    refuse(format!(
        "{}: Slurm would keep the sweep's runs queued for ever (DependencyNeverSatisfied); name a job that can still end as asked, `afterany:<id>` to follow a job however it ended, or leave `after` out",
        never.join("; ")
    ))
}

/// The states in which a job (or array task) has ended otherwise than COMPLETED, for good: an
/// `afterok` on it can never hold.
pub(super) const ENDED_NOT_COMPLETED: &[&str] = &["FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"];

/// Whether a dependency term of type `kind` on a job whose tasks are in `states` (one for a
/// plain job, every task's for an array) can never hold: `afterok` once any task ended not
/// COMPLETED, `afternotok` once every task COMPLETED. `after` and `afterany` always hold once
/// the job has ended; no states (not listed) are not judged here.
pub(super) fn never_holds(kind: &str, states: &[String]) -> bool {
    match kind {
        "afterok" => states.iter().any(|s| ENDED_NOT_COMPLETED.contains(&s.as_str())),
        "afternotok" => !states.is_empty() && states.iter().all(|s| s == "COMPLETED"),
        _ => false,
    }
}

/// How job `key`'s tasks stand, for a message: `job `4242` ended FAILED`, or for an array
/// `the tasks of array job `4242` are 3 COMPLETED, 1 FAILED`.
pub(super) fn ended_words(key: &str, states: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in states {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    match (states, counts.len()) {
        ([one], _) => format!("job `{key}` ended {one}"),
        ([first, ..], 1) => format!("the {} tasks of array job `{key}` ended {first}", states.len()),
        _ => format!("the tasks of array job `{key}` are {}", counts.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")),
    }
}

/// Slurm's reason for a task whose dependency can never hold (`afterok` on a job that failed,
/// `afternotok` on one that succeeded): it stays queued until someone cancels it.
pub(super) const NEVER_SATISFIED: &str = "DependencyNeverSatisfied";

/// Why the sweep cannot go on, and the arrays it concerns, when one of its tasks waits on a
/// dependency that can never hold (or Slurm cancelled it for that, under
/// `DependencyParameters=kill_invalid_depend`): every array carries `slurm.after`'s terms, so
/// each of its queued tasks would wait forever (and a waiting `drover run` with them).
pub(super) fn never_satisfied(ledger: &Ledger, queue: &[QueueEntry]) -> Option<(String, BTreeSet<String>)> {
    let ours = ledger.accepted_jobs();
    // A task cancelled by drover or by the user keeps Slurm's last reason: only one Slurm
    // cancelled itself counts.
    let by_slurm = |job: &str| !ledger.cancel_reasons.contains_key(job) && !ledger.cancelled_jobs.contains(job) && ledger.cancelled_upto.is_none();
    let hit = |e: &&QueueEntry| {
        let state = e.state == "PENDING" || (e.state == "CANCELLED" && by_slurm(&e.array_job_id));
        ours.contains(e.array_job_id.as_str()) && state && e.reason == NEVER_SATISFIED
    };
    let e = queue.iter().find(hit)?;
    let arrays = queue.iter().filter(hit).map(|e| e.array_job_id.clone()).collect();
    let why = format!(
        "its dependency `{}` (`slurm.after`) can never hold: a job it names did not end as it asks (Slurm: {NEVER_SATISFIED}), so its queued runs would wait forever",
        failed_terms(e, &ours)
    );
    Some((why, arrays))
}

/// A warning for a rerun whose `slurm.after` differs from the one queued arrays of the sweep
/// were submitted with and still wait on: re-attached, they keep their old dependency.
pub(super) fn changed_after_warning(ledger: &Ledger, queue: &[QueueEntry], after: &[String]) -> Option<String> {
    let ours = ledger.accepted_jobs();
    let mut stale: BTreeMap<&str, (&Vec<String>, usize)> = BTreeMap::new();
    for s in ledger.submissions.values().filter(|s| s.after != after) {
        let Some(job) = s.job_id.as_deref() else { continue };
        let waiting = queue.iter().filter(|e| e.array_job_id == job && e.state == "PENDING" && !user_dependency(e.dependency.as_deref(), &ours).is_empty()).count();
        if waiting > 0 {
            stale.insert(job, (&s.after, waiting));
        }
    }
    let (_, (old, _)) = stale.first_key_value()?;
    let tasks: usize = stale.values().map(|(_, n)| n).sum();
    let shown = |terms: &[String]| if terms.is_empty() { "none".to_string() } else { format!("`{}`", terms.join(",")) };
    Some(format!(
        "{} of array {} still wait on `slurm.after` = {} as submitted, not on {}: re-attached arrays keep their dependency; `drover cancel`, then `drover run` again, to have them wait on the new one",
        crate::words::count(tasks, "queued task"),
        stale.keys().copied().collect::<Vec<_>>().join(", "),
        shown(old),
        shown(after)
    ))
}

/// The terms of a dependency not on the sweep's own arrays (`ours`): `slurm.after`'s, as
/// `scontrol update Dependency=` takes them back when drover lifts the throttle's part. Empty
/// when none is left (then the lift clears the dependency).
pub(super) fn user_dependency(dependency: Option<&str>, ours: &BTreeSet<&str>) -> String {
    let terms = dependency.map(dependency_terms).unwrap_or_default();
    terms
        .into_iter()
        .filter_map(|(kind, ids)| {
            if ids.is_empty() {
                return Some(kind.to_string());
            }
            let kept: Vec<&str> = ids.into_iter().filter(|id| !ours.contains(dependency_job(id))).collect();
            (!kept.is_empty()).then(|| format!("{kind}:{}", kept.join(":")))
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::slurm::ledger::LedgerEvent;
    use crate::backend::slurm::test_support::{intent_after, sweep_plan, tasks, with_squeue};
    use crate::layout;

    /// A rerun whose `slurm.after` differs from the one queued arrays were submitted with, and
    /// still wait on, says that they keep it; arrays whose dependency held, or that were
    /// submitted with the same, are not named.
    #[test]
    fn a_rerun_with_another_after_warns_that_queued_arrays_keep_theirs() {
        let mut ledger = Ledger::default();
        for (n, job, after) in [(0, "41", vec!["afterok:7".to_string()]), (1, "42", vec!["afterok:7".to_string()]), (2, "43", vec!["afterok:8".to_string()])] {
            ledger.apply(intent_after(n, vec![format!("{n:016x}")], Some(4), None, after));
            ledger.apply(LedgerEvent::Submitted { submission: n, job_id: job.into() });
        }
        assert_eq!(ledger.submissions[&0].after, ["afterok:7"], "the ledger keeps each submission's terms");
        let with = |job: &str, state: &str, dependency: Option<&str>| QueueEntry { dependency: dependency.map(str::to_string), ..tasks(job, 0, 1, state, "Dependency")[0].clone() };
        let queue = [with("41", "PENDING", Some("afterok:7(unfulfilled)")), with("42", "RUNNING", None), with("43", "PENDING", Some("afterok:8(unfulfilled)"))];
        let now = ["afterok:8".to_string()];
        let warning = changed_after_warning(&ledger, &queue, &now).expect("warns");
        assert!(warning.starts_with("1 queued task of array 41 still wait on `slurm.after` = `afterok:7` as submitted, not on `afterok:8`"), "{warning}");
        assert_eq!(changed_after_warning(&ledger, &queue[1..], &now), None, "42's dependency held; 43 has the same");
    }

    /// `slurm.after` on a job Slurm does not know is refused before anything is submitted
    /// (Slurm would count it as met), unless a run of the sweep already started under it; a
    /// job Slurm lists passes.
    #[test]
    fn after_on_a_job_slurm_does_not_know_is_refused_unless_it_held_before() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // The results directory of the check, apart from the one `sweep_plan` plans into.
        let (bin, root) = (tmp.path().join("bin"), tmp.path().join("results"));
        std::fs::create_dir_all(&bin).expect("mkdir");
        // A stand-in `squeue --jobs` that knows job 7 only.
        let slurm = with_squeue(
            &bin,
            "case \"$*\" in *--jobs=7) echo '7|7';; *) echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1;; esac\n",
        );
        let plan = |after: &str| {
            let mut plan = sweep_plan(tmp.path(), &format!("after = {after}"), "").expect("plan");
            plan.results = layout::ResultsDir::new(&root);
            plan
        };
        assert!(check_after_jobs(&plan("7"), &slurm).is_ok());
        let err = check_after_jobs(&plan("[7, 999]"), &slurm).expect_err("999 is unknown");
        assert_eq!(err.key.as_deref(), Some("slurm.after"));
        assert!(err.to_string().contains("Slurm does not know job `999`"), "{err}");
        // A run of the sweep started in an array submitted with `afterok:999`: it held then.
        let mut ledger = Ledger::load(&root).expect("empty");
        let run = "00000000000000aa";
        ledger.append(intent_after(0, vec![run.into()], None, None, vec!["afterok:999".into()])).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "60".into() }).expect("submitted");
        assert!(check_after_jobs(&plan("999"), &slurm).is_err(), "submitted, but no run started under it");
        std::fs::create_dir_all(root.join("runs").join(run)).expect("mkdir");
        std::fs::write(root.join("runs").join(run).join("attempts.jsonl"), "{\"array_job_id\":\"60\",\"array_task_id\":\"0\"}\n").expect("attempt");
        assert!(check_after_jobs(&plan("999"), &slurm).is_ok());
    }

    /// Review finding (Slurm user): `slurm.after` on a job that had already ended so that the
    /// term could never hold (`afterok` on a failed job) was submitted, and the arrays sat in
    /// `DependencyNeverSatisfied`. Refused before submission, naming the term and the job's
    /// state(s), an array judged by all its tasks and a task named alone by its own; `after` and
    /// `afterany` always hold once the job ended; a term a run of the sweep already started
    /// under is let through.
    #[test]
    fn after_on_a_job_that_ended_so_it_can_never_hold_is_refused_unless_it_held_before() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (bin, root) = (tmp.path().join("bin"), tmp.path().join("results"));
        std::fs::create_dir_all(&bin).expect("mkdir");
        // `%F|%A|%i|%T`: 10 failed, 11 succeeded, 12 runs; array 20 mixed, array 30 all well.
        let slurm = with_squeue(
            &bin,
            "case \"$*\" in
    *--jobs=10) echo '10|10|10|FAILED';;
    *--jobs=11) echo '11|11|11|COMPLETED';;
    *--jobs=12) echo '12|12|12|RUNNING';;
    *--jobs=20) printf '20|21|20_0|COMPLETED\\n20|22|20_1|FAILED\\n20|23|20_2|PENDING\\n';;
    *--jobs=30) printf '30|31|30_0|COMPLETED\\n30|32|30_1|COMPLETED\\n';;
    *) echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1;;
    esac\n",
        );
        let check = |after: &str| {
            let mut plan = sweep_plan(tmp.path(), &format!("after = {after:?}"), "").expect("plan");
            plan.results = layout::ResultsDir::new(&root);
            check_after_jobs(&plan, &slurm)
        };
        for holds in ["afterany:10", "after:10", "afternotok:10", "afterok:11", "afterany:11", "afterok:12", "afternotok:12", "afterok:20_0", "afterok:20_2", "afternotok:20", "afterok:30_*", "afterok:30_1"] {
            assert!(check(holds).is_ok(), "{holds}: {:?}", check(holds).err());
        }
        for (never, words) in [
            ("afterok:10", "`afterok:10` can never hold: job `10` ended FAILED, and afterok waits for its success"),
            ("10", "`afterok:10` can never hold: job `10` ended FAILED"),
            ("afternotok:11", "`afternotok:11` can never hold: job `11` ended COMPLETED, and afternotok waits for its failure"),
            ("afterok:20", "`afterok:20` can never hold: the tasks of array job `20` are 1 COMPLETED, 1 FAILED, 1 PENDING"),
            ("afterok:20_*", "the tasks of array job `20` are"),
            ("afterok:20_1", "`afterok:20_1` can never hold: job `20_1` ended FAILED"),
            ("afternotok:30", "`afternotok:30` can never hold: the 2 tasks of array job `30` ended COMPLETED"),
            ("afterany:12,afterok:10", "`afterok:10` can never hold: job `10` ended FAILED"),
        ] {
            let err = check(never).expect_err(never);
            assert_eq!(err.key.as_deref(), Some("slurm.after"), "{never}");
            let text = err.to_string();
            assert!(text.contains(words) && text.contains("DependencyNeverSatisfied"), "{never}: {text}");
        }
        // A run of the sweep started in an array submitted with `afterok:10`: it held then.
        let mut ledger = Ledger::load(&root).expect("empty");
        let run = "00000000000000aa";
        ledger.append(intent_after(0, vec![run.into()], None, None, vec!["afterok:10".into()])).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "60".into() }).expect("submitted");
        std::fs::create_dir_all(root.join("runs").join(run)).expect("mkdir");
        std::fs::write(root.join("runs").join(run).join("attempts.jsonl"), "{\"array_job_id\":\"60\",\"array_task_id\":\"0\"}\n").expect("attempt");
        assert!(check("afterok:10").is_ok(), "held before");
    }
}
