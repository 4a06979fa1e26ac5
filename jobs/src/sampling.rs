//! Generation batches of sequence tasks: which prompts a rollout answers and how many responses
//! each gets (a fixed prompt dataset visited epoch by epoch; per-prompt group sizes from the
//! plugin, Knapsack RL), and which prompt groups of several rollouts make up the training batch
//! (DAPO's dynamic sampling). Pure bookkeeping; `train.rs` drives the engine and the plugin.

use drover_kernels::rng;
use drover_kernels::{EnvPlan, PromptRef};

/// A fixed dataset of `size` prompts, visited in a seeded order that changes every epoch.
///
/// The `n`-th prompt the run ever draws (its cursor) is position `n mod size` of epoch
/// `n / size`'s permutation, so the schedule is a function of the seed and the cursor alone:
/// a resumed run continues it from the rollout count.
#[derive(Debug, Clone)]
pub struct PromptSchedule {
    size: usize,
    key: u32,
    /// The permutation of `epoch`, built on first use.
    cached: Option<(u64, Vec<u32>)>,
}

impl PromptSchedule {
    /// A dataset of `size` prompts (at least 1), ordered with the run key `key`.
    pub fn new(size: usize, key: u32) -> Self {
        Self { size: size.max(1), key, cached: None }
    }

    /// Dataset index of the prompt at `cursor`.
    pub fn prompt_at(&mut self, cursor: u64) -> u32 {
        let (epoch, pos) = (cursor / self.size as u64, (cursor % self.size as u64) as usize);
        if self.cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut perm: Vec<u32> = (0..self.size as u32).collect();
            for i in (1..perm.len()).rev() {
                let r = rng::draw(self.key, rng::STREAM_EPOCH, epoch as u32, i as u32);
                let j = ((u64::from(r) * (i as u64 + 1)) >> 32) as usize;
                perm.swap(i, j);
            }
            self.cached = Some((epoch, perm));
        }
        self.cached.as_ref().map_or(0, |(_, perm)| perm[pos])
    }

    /// Dataset indices of the `count` prompts from `cursor` on.
    pub fn window(&mut self, cursor: u64, count: usize) -> Vec<u32> {
        (0..count as u64).map(|j| self.prompt_at(cursor + j)).collect()
    }
}

/// One prompt group of a generation batch: `size` consecutive envs answering `prompt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSpec {
    /// The prompt.
    pub prompt: PromptRef,
    /// Responses (at least 1).
    pub size: usize,
}

/// The per-env plan of a generation batch, in env order: group by group, the last
/// `min(experts, size - 1)` responses of each group teacher-forced (every group keeps a sampled
/// response).
pub fn plan(groups: &[GroupSpec], experts: usize) -> Vec<EnvPlan> {
    groups
        .iter()
        .flat_map(|g| {
            let e = experts.min(g.size.saturating_sub(1));
            (0..g.size).map(move |j| EnvPlan { prompt: g.prompt, expert: j >= g.size - e })
        })
        .collect()
}

/// Checks per-prompt group sizes a plugin asked for against the next batch: one per prompt,
/// summing to the budget. Returns the groups (prompts with size 0 left out).
pub fn sized_groups(prompts: &[u32], sizes: &[u32], budget: usize) -> Result<Vec<GroupSpec>, String> {
    if sizes.len() != prompts.len() {
        return Err(format!(
            "asked for {} group sizes, but the next generation batch has {} prompts \
             (one size per prompt of IterationInfo::next_prompts, in order)",
            sizes.len(),
            prompts.len()
        ));
    }
    let total: u64 = sizes.iter().map(|&n| u64::from(n)).sum();
    if total != budget as u64 {
        return Err(format!(
            "asked for group sizes summing to {total}, but the budget of a generation \
             batch is {budget} responses (run.num_envs)"
        ));
    }
    Ok(prompts
        .iter()
        .zip(sizes)
        .filter(|(_, &n)| n > 0)
        .map(|(&p, &n)| GroupSpec { prompt: PromptRef::Dataset(p), size: n as usize })
        .collect())
}

/// What enters the training batch from one generation batch: contiguous row ranges of it, in
/// its order, each with a weight (1 for an accepted group, 0 for padding).
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// First env (row) of the generation batch.
    pub start: usize,
    /// Rows.
    pub len: usize,
    /// Sample weight of these rows.
    pub weight: f32,
}

/// Chooses the rows of a generation batch (groups of `sizes`, accepted where `keep`) for a
/// training batch with `room` free rows.
///
/// Accepted groups enter while they fit, in order. On the `last` batch (no further one will be
/// generated) the rest of the room is padded with weight 0: refused groups that fit whole, then
/// single rows of any group not taken. Picks come back in generation order, so a batch that
/// fills an empty training batch whole is that batch, row for row.
pub fn pick_groups(sizes: &[usize], keep: &[bool], room: usize, last: bool) -> Vec<Pick> {
    let starts: Vec<usize> = sizes.iter().scan(0, |acc, &n| { let s = *acc; *acc += n; Some(s) }).collect();
    let mut taken = vec![0usize; sizes.len()];
    let mut weight = vec![1.0f32; sizes.len()];
    let mut free = room;
    for (g, &n) in sizes.iter().enumerate() {
        if keep[g] && n <= free {
            (taken[g], free) = (n, free - n);
        }
    }
    if last {
        for (g, &n) in sizes.iter().enumerate() {
            if taken[g] == 0 && n <= free {
                (taken[g], weight[g], free) = (n, 0.0, free - n);
            }
        }
        for (g, &n) in sizes.iter().enumerate() {
            if taken[g] == 0 && free > 0 {
                let k = n.min(free);
                (taken[g], weight[g], free) = (k, 0.0, free - k);
            }
        }
    }
    (0..sizes.len())
        .filter(|&g| taken[g] > 0)
        .map(|g| Pick { start: starts[g], len: taken[g], weight: if keep[g] && taken[g] == sizes[g] { weight[g] } else { 0.0 } })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_visits_every_prompt_once_per_epoch_in_a_new_order() {
        let mut s = PromptSchedule::new(10, rng::run_key(3));
        let e0 = s.window(0, 10);
        let e1 = s.window(10, 10);
        for epoch in [&e0, &e1] {
            let mut sorted = epoch.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<u32>>());
        }
        assert_ne!(e0, e1, "the order changes between epochs");
        // A window across the epoch boundary, and the same cursor from a fresh schedule.
        assert_eq!(s.window(8, 4), [e0[8], e0[9], e1[0], e1[1]]);
        assert_eq!(PromptSchedule::new(10, rng::run_key(3)).prompt_at(13), e1[3]);
        assert_ne!(PromptSchedule::new(10, rng::run_key(4)).window(0, 10), e0, "the seed orders");
    }

    #[test]
    fn plans_put_experts_last_and_keep_a_sampled_response() {
        let d = |i| PromptRef::Dataset(i);
        let groups = [GroupSpec { prompt: d(4), size: 3 }, GroupSpec { prompt: d(1), size: 1 }, GroupSpec { prompt: d(2), size: 2 }];
        let p = plan(&groups, 1);
        let flags: Vec<(PromptRef, bool)> = p.iter().map(|e| (e.prompt, e.expert)).collect();
        assert_eq!(flags, [(d(4), false), (d(4), false), (d(4), true), (d(1), false), (d(2), false), (d(2), true)]);
        assert!(plan(&groups, 0).iter().all(|e| !e.expert));
    }

    #[test]
    fn sized_groups_check_shape_and_budget() {
        let g = sized_groups(&[7, 3, 5], &[4, 0, 2], 6).expect("valid");
        assert_eq!(g, [GroupSpec { prompt: PromptRef::Dataset(7), size: 4 }, GroupSpec { prompt: PromptRef::Dataset(5), size: 2 }]);
        let e = sized_groups(&[7, 3], &[4, 0, 2], 6).expect_err("length");
        assert!(e.contains("3 group sizes") && e.contains("2 prompts"), "{e}");
        let e = sized_groups(&[7, 3, 5], &[4, 1, 2], 6).expect_err("sum");
        assert!(e.contains("summing to 7") && e.contains("6 responses"), "{e}");
    }

    #[test]
    fn picks_fill_with_accepted_groups_then_pad_on_the_last_batch() {
        let pick = |start, len, weight| Pick { start, len, weight };
        // One batch that fills the training batch whole: every group, in order.
        assert_eq!(
            pick_groups(&[2, 2, 2], &[true, false, true], 6, true),
            [pick(0, 2, 1.0), pick(2, 2, 0.0), pick(4, 2, 1.0)]
        );
        // Not the last batch: accepted groups only.
        assert_eq!(pick_groups(&[2, 2, 2], &[true, false, true], 6, false), [pick(0, 2, 1.0), pick(4, 2, 1.0)]);
        // Accepted groups first even when a refused one comes earlier; the rest is padding.
        assert_eq!(pick_groups(&[2, 2, 2], &[false, true, true], 2, true), [pick(2, 2, 1.0)]);
        assert_eq!(pick_groups(&[2, 2, 2], &[false, false, true], 4, true), [pick(0, 2, 0.0), pick(4, 2, 1.0)]);
        // Uneven sizes: a group that does not fit is skipped for a smaller one, and the last
        // rows are a part of a group at weight 0.
        assert_eq!(pick_groups(&[3, 1, 2], &[true, true, true], 4, false), [pick(0, 3, 1.0), pick(3, 1, 1.0)]);
        assert_eq!(pick_groups(&[3, 3], &[true, false], 5, true), [pick(0, 3, 1.0), pick(3, 2, 0.0)]);
        assert!(pick_groups(&[2], &[true], 0, true).is_empty());
    }
}
