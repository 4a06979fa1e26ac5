//! The training loop: rollout on the engine → advantages by the plugin → epochs of minibatch
//! forward (engine), per-token loss derivatives (plugin), backward and Adam (engine).
//!
//! Layout note: the engine's rollout is time-major (`t * N + env`); the plugin sees
//! sequence-major batches (`env * T + t`, one sequence per environment), as LLM-style
//! algorithms expect. The conversion happens here and only here.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use drover_kernels::{
    create_engine, rng, AdamConfig, DeviceRequest, Engine, EngineConfig, MinibatchEval, NetShape,
    Rollout,
};
use drover_plugin_host::{AlgorithmHandle, LossBatch, Metric, Plugin, RolloutBatch};

use crate::metrics::{MetricsLog, MetricsRow};
use crate::signals::CancelFlag;
use crate::spec::JobSpec;
use crate::summary::{return_stats, ExitStatus, PluginRecord, Summary, SUMMARY_FORMAT_VERSION};
use crate::{fsio, JobError};

/// CartPole-v1 observation size and action count.
const CARTPOLE_OBS: usize = 4;
const CARTPOLE_ACTIONS: usize = 2;

/// Metric names with a fixed column in the metrics table.
const FIXED_METRICS: [&str; 5] = ["policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"];

/// How a training run ended.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Completed or cancelled (errors are returned as `Err`).
    pub status: ExitStatus,
    /// The summary, when completed.
    pub summary: Option<Summary>,
}

/// Runs one job: trains, and writes `metrics.jsonl`, `metrics.parquet` and `summary.json` in
/// `out_dir` (the caller writes `exit.json`).
pub fn run(spec: &JobSpec, out_dir: &Path, cancel: &CancelFlag) -> Result<TrainOutcome, JobError> {
    let started = Instant::now();
    let plugin = Plugin::load(&spec.plugin_path)?;
    let info = plugin.info();
    let record = PluginRecord {
        name: info.name.clone(),
        version: info.version.clone(),
        interface_version: plugin.interface_version().to_string(),
        path: spec.plugin_path.clone(),
        sha256: plugin.sha256().to_string(),
    };
    let params = serde_json::Value::Object(spec.params.clone()).to_string();
    let key = rng::run_key(spec.run.seed);
    let mut algo = plugin.instantiate(&params, u64::from(rng::draw(key, rng::STREAM_PLUGIN, 0, 0)))?;

    let r = &spec.run;
    let device = match r.device.as_str() {
        "cuda" => DeviceRequest::Cuda,
        "auto" => DeviceRequest::Auto,
        _ => DeviceRequest::Cpu,
    };
    let mut engine = create_engine(
        device,
        EngineConfig {
            num_envs: r.num_envs,
            env_offset: 0,
            num_steps: r.num_steps,
            seed: r.seed,
            shape: NetShape { obs_dim: CARTPOLE_OBS, hidden: r.hidden.clone(), n_actions: CARTPOLE_ACTIONS },
            adam: AdamConfig { eps: r.adam_eps as f32, ..AdamConfig::default() },
            threads: r.threads,
            cuda_ordinal: 0,
        },
    )?;
    tracing::info!(
        run = %spec.run_id, plugin = %info.name, device = ?engine.device(),
        params = engine.num_params(), "training starts"
    );

    let mut log = MetricsLog::create(out_dir)?;
    let mut trainer = Trainer::new(spec, key);
    let batch = r.num_envs * r.num_steps;
    let iterations = (r.total_steps / batch as u64).max(1);
    let mut status = ExitStatus::Completed;
    for iteration in 1..=iterations {
        if cancel.is_raised() {
            status = ExitStatus::Cancelled;
            break;
        }
        let lr = if r.anneal_lr {
            r.lr * (1.0 - (iteration - 1) as f64 / iterations as f64)
        } else {
            r.lr
        };
        let t0 = Instant::now();
        let stats = trainer.iterate(engine.as_mut(), &mut algo, iteration, lr as f32)?;
        let global_step = (iteration * batch as u64) as i64;
        let iteration_metrics: Vec<Metric> = stats.iter().map(|(k, v)| Metric::new(k.as_str(), *v)).collect();
        let control = algo.on_iteration(iteration, global_step as u64, &iteration_metrics)?;
        let episodes = trainer.rollout.finished_returns.len();
        let episodic_return_mean = (episodes > 0).then(|| {
            trainer.rollout.finished_returns.iter().map(|&x| f64::from(x)).sum::<f64>() / episodes as f64
        });
        let mut extra: BTreeMap<String, f64> = stats
            .iter()
            .filter(|(k, _)| !FIXED_METRICS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        extra.extend(control.metrics.iter().map(|m| (m.name.clone(), m.value)));
        let row = MetricsRow {
            iteration: iteration as i64,
            global_step,
            episodic_return_mean,
            episodes: episodes as i64,
            policy_loss: stats.get("policy_loss").copied(),
            value_loss: stats.get("value_loss").copied(),
            entropy: stats.get("entropy").copied(),
            approx_kl: stats.get("approx_kl").copied(),
            clip_frac: stats.get("clip_frac").copied(),
            lr,
            steps_per_sec: batch as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            wall_time_s: started.elapsed().as_secs_f64(),
            extra,
        };
        tracing::debug!(iteration, global_step, ?episodic_return_mean, "iteration done");
        log.push(row)?;
        let solved = episodic_return_mean.is_some_and(|m| m >= r.success_return);
        if control.stop || (r.stop_at_success && solved) {
            break;
        }
    }

    log.write_parquet(&out_dir.join("metrics.parquet"))?;
    if status != ExitStatus::Completed {
        return Ok(TrainOutcome { status, summary: None });
    }
    let rows = log.rows();
    let (final_return, best_return, steps_to_threshold) = return_stats(rows, r.success_return);
    let summary = Summary {
        format_version: SUMMARY_FORMAT_VERSION,
        run_id: spec.run_id.clone(),
        config_id: spec.config_id.clone(),
        label: spec.label.clone(),
        seed: r.seed,
        total_steps: rows.last().map_or(0, |row| row.global_step),
        iterations: rows.len() as i64,
        wall_time_s: started.elapsed().as_secs_f64(),
        final_return,
        best_return,
        steps_to_threshold,
        success_return: r.success_return,
        plugin: record,
    };
    fsio::write_json_atomic(&out_dir.join("summary.json"), &summary)?;
    tracing::info!(run = %spec.run_id, ?final_return, ?steps_to_threshold, "training done");
    Ok(TrainOutcome { status, summary: Some(summary) })
}

/// Buffers reused across iterations, so the loop allocates nothing after the first one.
struct Trainer {
    num_envs: usize,
    num_steps: usize,
    epochs: usize,
    minibatch: usize,
    max_grad_norm: Option<f32>,
    key: u32,
    rollout: Rollout,
    // Sequence-major copies for the plugin.
    seq: SeqBuffers,
    advantages: Vec<f32>,
    returns: Vec<f32>,
    perm: Vec<u32>,
    eval: MinibatchEval,
    mb: MinibatchBuffers,
}

#[derive(Default)]
struct SeqBuffers {
    mask: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<f32>,
    truncated: Vec<f32>,
    values: Vec<f32>,
    next_values: Vec<f32>,
    logp: Vec<f32>,
    entropy: Vec<f32>,
    group_ids: Vec<u32>,
    sample_weights: Vec<f32>,
}

#[derive(Default)]
struct MinibatchBuffers {
    logp_old: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
    values_old: Vec<f32>,
    weights: Vec<f32>,
    seq_index: Vec<u32>,
    loss: Vec<f32>,
    d_logp: Vec<f32>,
    d_value: Vec<f32>,
    d_entropy: Vec<f32>,
}

impl Trainer {
    fn new(spec: &JobSpec, key: u32) -> Self {
        let r = &spec.run;
        let batch = r.num_envs * r.num_steps;
        Self {
            num_envs: r.num_envs,
            num_steps: r.num_steps,
            epochs: r.update_epochs,
            minibatch: batch / r.num_minibatches,
            max_grad_norm: (r.max_grad_norm > 0.0).then_some(r.max_grad_norm as f32),
            key,
            rollout: Rollout::default(),
            seq: SeqBuffers {
                mask: vec![1.0; batch],
                group_ids: (0..r.num_envs as u32).collect(),
                sample_weights: vec![1.0; r.num_envs],
                ..SeqBuffers::default()
            },
            advantages: vec![0.0; batch],
            returns: vec![0.0; batch],
            perm: (0..batch as u32).collect(),
            eval: MinibatchEval::default(),
            mb: MinibatchBuffers::default(),
        }
    }

    /// One iteration; returns the mean of every metric the plugin reported, plus `grad_norm`.
    fn iterate(
        &mut self,
        engine: &mut dyn Engine,
        algo: &mut AlgorithmHandle,
        iteration: u64,
        lr: f32,
    ) -> Result<BTreeMap<String, f64>, JobError> {
        engine.rollout(&mut self.rollout)?;
        self.to_sequence_major();
        let seed = u64::from(rng::draw(self.key, rng::STREAM_PLUGIN, 1, iteration as u32));
        let s = &self.seq;
        let advantage_metrics = algo.compute_advantages(
            &RolloutBatch {
                num_sequences: self.num_envs,
                seq_len: self.num_steps,
                mask: &s.mask,
                rewards: &s.rewards,
                terminated: &s.terminated,
                truncated: &s.truncated,
                values: &s.values,
                next_values: &s.next_values,
                logp_old: &s.logp,
                logp_ref: &[],
                entropy_old: &s.entropy,
                group_ids: &s.group_ids,
                sample_weights: &s.sample_weights,
                metadata: &[],
                seed,
            },
            &mut self.advantages,
            &mut self.returns,
        )?;

        let mut sums: BTreeMap<String, (f64, u32)> =
            advantage_metrics.into_iter().map(|m| (m.name, (m.value, 1))).collect();
        for epoch in 0..self.epochs {
            let mut epoch_sums: BTreeMap<String, (f64, u32)> = BTreeMap::new();
            self.shuffle(iteration, epoch);
            for start in (0..self.perm.len()).step_by(self.minibatch) {
                let end = start + self.minibatch;
                let metrics = self.minibatch_step(engine, algo, start..end, iteration, epoch, lr)?;
                for Metric { name, value } in metrics {
                    let e = epoch_sums.entry(name).or_default();
                    e.0 += value;
                    e.1 += 1;
                }
            }
            let epoch_means: Vec<Metric> =
                epoch_sums.iter().map(|(k, (s, n))| Metric::new(k.as_str(), s / f64::from(*n))).collect();
            for (name, (s, n)) in epoch_sums {
                let e = sums.entry(name).or_default();
                e.0 += s;
                e.1 += n;
            }
            if !algo.on_epoch_end(epoch as u32, &epoch_means)? {
                break;
            }
        }
        Ok(sums.into_iter().map(|(k, (s, n))| (k, s / f64::from(n))).collect())
    }

    fn minibatch_step(
        &mut self,
        engine: &mut dyn Engine,
        algo: &mut AlgorithmHandle,
        range: std::ops::Range<usize>,
        iteration: u64,
        epoch: usize,
        lr: f32,
    ) -> Result<Vec<Metric>, JobError> {
        let samples = &self.perm[range.clone()];
        engine.evaluate(samples, &mut self.eval)?;
        let m = samples.len();
        let mb = &mut self.mb;
        for buf in [
            &mut mb.logp_old,
            &mut mb.advantages,
            &mut mb.returns,
            &mut mb.values_old,
            &mut mb.loss,
            &mut mb.d_logp,
            &mut mb.d_value,
            &mut mb.d_entropy,
        ] {
            buf.clear();
            buf.resize(m, 0.0);
        }
        mb.weights.clear();
        mb.weights.resize(m, 1.0);
        mb.seq_index.clear();
        for (i, &s) in samples.iter().enumerate() {
            let (t, env) = (s as usize / self.num_envs, s as usize % self.num_envs);
            let q = env * self.num_steps + t;
            mb.logp_old[i] = self.seq.logp[q];
            mb.advantages[i] = self.advantages[q];
            mb.returns[i] = self.returns[q];
            mb.values_old[i] = self.seq.values[q];
            mb.seq_index.push(env as u32);
        }
        let seed = u64::from(rng::draw(
            self.key,
            rng::STREAM_PLUGIN,
            2 + epoch as u32,
            (iteration as u32).wrapping_mul(65_536).wrapping_add(range.start as u32),
        ));
        let mut metrics = algo.loss(
            &LossBatch {
                logp_new: &self.eval.logp,
                logp_old: &mb.logp_old,
                logp_ref: &[],
                advantages: &mb.advantages,
                returns: &mb.returns,
                values_new: &self.eval.values,
                values_old: &mb.values_old,
                entropy_new: &self.eval.entropy,
                token_weights: &mb.weights,
                seq_index: &mb.seq_index,
                num_sequences: self.num_envs,
                seed,
            },
            &mut mb.loss,
            &mut mb.d_logp,
            &mut mb.d_value,
            &mut mb.d_entropy,
        )?;
        engine.accumulate_grad(&mb.d_logp, &mb.d_value, &mb.d_entropy)?;
        let grad_norm = engine.apply_grads(lr, self.max_grad_norm)?;
        metrics.push(Metric::new("grad_norm", f64::from(grad_norm)));
        Ok(metrics)
    }

    /// Fisher-Yates over all samples with the counter-based RNG (stream `STREAM_SHUFFLE`), so the
    /// minibatch order is a pure function of (seed, iteration, epoch).
    fn shuffle(&mut self, iteration: u64, epoch: usize) {
        let stream_env = (iteration as u32).wrapping_mul(64).wrapping_add(epoch as u32);
        for i in (1..self.perm.len()).rev() {
            let r = rng::draw(self.key, rng::STREAM_SHUFFLE, stream_env, i as u32);
            let j = ((u64::from(r) * (i as u64 + 1)) >> 32) as usize;
            self.perm.swap(i, j);
        }
    }

    fn to_sequence_major(&mut self) {
        let (n, t) = (self.num_envs, self.num_steps);
        let ro = &self.rollout;
        let s = &mut self.seq;
        transpose(&ro.rewards, n, t, &mut s.rewards, |x| x);
        transpose(&ro.terminated, n, t, &mut s.terminated, f32::from);
        transpose(&ro.truncated, n, t, &mut s.truncated, f32::from);
        transpose(&ro.values, n, t, &mut s.values, |x| x);
        transpose(&ro.next_values, n, t, &mut s.next_values, |x| x);
        transpose(&ro.logp, n, t, &mut s.logp, |x| x);
        transpose(&ro.entropy, n, t, &mut s.entropy, |x| x);
    }
}

/// `src[t * n + env]` → `dst[env * t_len + t]`.
fn transpose<S: Copy>(src: &[S], n: usize, t_len: usize, dst: &mut Vec<f32>, f: impl Fn(S) -> f32) {
    dst.clear();
    dst.resize(n * t_len, 0.0);
    for t in 0..t_len {
        for env in 0..n {
            dst[env * t_len + t] = f(src[t * n + env]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_time_major_to_sequence_major() {
        // 2 envs, 3 steps: time-major [t0e0, t0e1, t1e0, t1e1, t2e0, t2e1].
        let src = [0.0f32, 10.0, 1.0, 11.0, 2.0, 12.0];
        let mut dst = Vec::new();
        transpose(&src, 2, 3, &mut dst, |x| x);
        assert_eq!(dst, vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
    }
}
