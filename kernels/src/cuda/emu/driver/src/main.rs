//! Compares the CPU emulation of the CUDA kernels (see ../README.md) with the reference engines
//! (CartPole: `reference`; sequence tasks: `seq::reference` and `SeqEngine`).
use drover_kernels::reference::{self, ReferenceEngine};
use drover_kernels::rng::{self, uniform};
use drover_kernels::cuda::SeqInputs;
use drover_kernels::seq::reference::SeqReferenceEngine;
use drover_kernels::{
    create_seq_engine, AdamConfig, DeviceRequest, Engine, EngineConfig, EnvPlan, MinibatchEval, NetShape, ParamLayout,
    PromptRef, Rollout, SeqTask, TaskFamily,
};
use std::io::{Read, Write};
use std::process::Command;

fn w<T: Copy>(f: &mut Vec<u8>, v: &[T]) {
    let b =
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) };
    f.extend_from_slice(b);
}
struct R {
    b: Vec<u8>,
    p: usize,
}
impl R {
    fn take<T: Copy + Default>(&mut self, n: usize) -> Vec<T> {
        let sz = std::mem::size_of::<T>() * n;
        let mut v = vec![T::default(); n];
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.b[self.p..self.p + sz].as_ptr(),
                v.as_mut_ptr() as *mut u8,
                sz,
            )
        };
        self.p += sz;
        v
    }
}
/// What the emulated `rollout` mode writes, in its order: per step (`l` = steps x envs)
/// observations, actions, log-probs, entropies, values, rewards, flags and next values, then the
/// finished episodes (env, return, length).
struct EmuRollout {
    obs: Vec<f32>,
    act: Vec<u32>,
    lp: Vec<f32>,
    en: Vec<f32>,
    val: Vec<f32>,
    rew: Vec<f32>,
    te: Vec<u8>,
    tr: Vec<u8>,
    nv: Vec<f32>,
    fk: Vec<u32>,
    fr: Vec<f32>,
    fl: Vec<u32>,
}
impl EmuRollout {
    fn read(r: &mut R, l: usize) -> Self {
        let (obs, act, lp, en, val, rew) = (r.take(4 * l), r.take(l), r.take(l), r.take(l), r.take(l), r.take(l));
        let (te, tr, nv) = (r.take(l), r.take(l), r.take(l));
        let finished = r.take::<u32>(1)[0] as usize;
        let (fk, fr, fl) = (r.take(finished), r.take(finished), r.take(finished));
        EmuRollout { obs, act, lp, en, val, rew, te, tr, nv, fk, fr, fl }
    }
}
fn run(bin: &str, mode: &str, input: &[u8]) -> R {
    std::fs::write(
        &format!("{}/in.bin", std::env::var("EMU_BIN_DIR").unwrap()),
        input,
    )
    .unwrap();
    let st = Command::new(bin)
        .args([
            mode,
            &format!("{}/in.bin", std::env::var("EMU_BIN_DIR").unwrap()),
            &format!("{}/out.bin", std::env::var("EMU_BIN_DIR").unwrap()),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let mut b = Vec::new();
    std::fs::File::open(&format!(
        "{}/out.bin",
        std::env::var("EMU_BIN_DIR").unwrap()
    ))
    .unwrap()
    .read_to_end(&mut b)
    .unwrap();
    R { b, p: 0 }
}
fn close(a: f32, b: f32, abs: f32, rel: f32) -> bool {
    (a - b).abs() <= abs + rel * b.abs()
}

/// Saturates the actor's head: output weights 0, biases +3e38 for action 0 and -3e38 for the
/// others, so their logit gap overflows f32: their logp is -inf and their probability 0, where
/// `p * logp = 0 * -inf` would be NaN without the kernels' guard (policy.cu `p_logp`, train.cu;
/// reference.rs `p_logp`, `d_entropy_term`).
fn saturate(shape: &NetShape, p: &mut [f32]) {
    let layout = ParamLayout::new(shape).unwrap();
    let out = *layout.actor.last().expect("an actor output layer");
    p[out.weight..out.bias].iter_mut().for_each(|w| *w = 0.0);
    for a in 0..shape.n_actions {
        p[out.bias + a] = if a == 0 { 3e38 } else { -3e38 };
    }
}

/// Entries that are not exactly 0 (NaN included; -0 is 0): a saturated head's entropies.
fn not_zero(v: &[f32]) -> usize {
    v.iter().filter(|&&x| x != 0.0).count()
}

/// Emulated rollout vs the reference's; `saturated`: with [`saturate`]d parameters, where every
/// action must be 0 and every entropy exactly 0 (emulated and reference alike).
fn rollout_check(bin: &str, hidden: Vec<usize>, n_act: usize, n: usize, t: usize, warps: i32, saturated: bool) -> usize {
    let shape = NetShape {
        obs_dim: 4,
        hidden,
        n_actions: n_act,
    };
    let cfg = EngineConfig {
        num_envs: n,
        env_offset: 7,
        num_steps: t,
        seed: 5,
        shape: shape.clone(),
        adam: AdamConfig::default(),
        threads: 1,
        cuda_ordinal: 0,
    };
    let mut re = ReferenceEngine::new(cfg.clone()).unwrap();
    let mut params = re.params().unwrap();
    if saturated {
        saturate(&shape, &mut params);
        re.set_params(&params).unwrap();
    }
    let key = rng::run_key(5);
    let mut inp = Vec::new();
    w(
        &mut inp,
        &[
            n as i32,
            t as i32,
            7,
            key as i32,
            params.len() as i32,
            warps,
        ],
    );
    w(&mut inp, &params);
    let mut r = run(bin, "rollout", &inp);
    let l = n * t;
    let EmuRollout { obs, act, lp, en, val, rew, te, tr, nv, fk, fr, fl } = EmuRollout::read(&mut r, l);
    let mut ro = Rollout::default();
    re.rollout(&mut ro).unwrap();
    let mut bad = 0;
    let mut worst = 0f32;
    for i in 0..l {
        if act[i] != ro.actions[i] {
            bad += 1;
            if bad < 5 {
                println!("action mismatch at {i}: {} vs {}", act[i], ro.actions[i]);
            }
        }
        for (name, a, b) in [
            ("logp", lp[i], ro.logp[i]),
            ("ent", en[i], ro.entropy[i]),
            ("value", val[i], ro.values[i]),
            ("next_value", nv[i], ro.next_values[i]),
            ("reward", rew[i], ro.rewards[i]),
        ] {
            worst = worst.max((a - b).abs() / (1e-6 + b.abs()));
            if !close(a, b, 1e-5, 1e-5) {
                bad += 1;
                if bad < 10 {
                    println!("{name} at {i}: {a} vs {b}");
                }
            }
        }
        if te[i] != ro.terminated[i] || tr[i] != ro.truncated[i] {
            bad += 1;
            println!("flags at {i}");
        }
    }
    // observations: reference keeps them private; compare by re-deriving from reset + steps is implicit via
    // actions/flags; check the first step's obs against cartpole_reset directly.
    for e in 0..n {
        let s = reference::cartpole_reset(key, 7 + e as u32, 0);
        for k in 0..4 {
            if obs[4 * e + k].to_bits() != s[k].to_bits() {
                bad += 1;
                println!("reset obs env {e}");
            }
        }
    }
    let mut order: Vec<usize> = (0..fk.len()).collect();
    order.sort_by_key(|&i| fk[i]);
    let rets: Vec<f32> = order.iter().map(|&i| fr[i]).collect();
    let lens: Vec<u32> = order.iter().map(|&i| fl[i]).collect();
    if rets != ro.finished_returns || lens != ro.finished_lengths {
        bad += 1;
        println!(
            "finished episodes differ: {} vs {}",
            rets.len(),
            ro.finished_returns.len()
        );
    }
    if saturated {
        let (emu_h, ref_h) = (not_zero(&en), not_zero(&ro.entropy));
        let moved = act.iter().filter(|&&a| a != 0).count();
        if emu_h + ref_h + moved > 0 {
            bad += emu_h + ref_h + moved;
            println!("  saturated head: entropies not exactly 0: {emu_h} emulated (first {:?}), {ref_h} reference; actions of probability 0 taken: {moved}", en.iter().find(|&&x| x != 0.0));
        }
    }
    let head = if saturated { " saturated head" } else { "" };
    println!("rollout {:?}{head} n={n} t={t} warps={warps}: {} episodes, worst rel {worst:e}, mismatches {bad}", shape.hidden, rets.len());
    // trajectory bit-identity: replay reference env with emulated actions
    let mut st: Vec<[f32; 4]> = (0..n)
        .map(|e| reference::cartpole_reset(key, 7 + e as u32, 0))
        .collect();
    let mut steps = vec![0u32; n];
    let mut obad = 0;
    for tt in 0..t {
        for e in 0..n {
            let i = tt * n + e;
            for k in 0..4 {
                if obs[4 * i + k].to_bits() != st[e][k].to_bits() {
                    obad += 1;
                }
            }
            let (_, term, trunc) = reference::cartpole_step(&mut st[e], &mut steps[e], act[i]);
            if term || trunc {
                st[e] = reference::cartpole_reset(key, 7 + e as u32, tt as u32 + 1);
                steps[e] = 0;
            }
        }
    }
    println!("  obs bit mismatches vs reference replay: {obad}");
    bad + obad
}

/// Emulated evaluate + backward vs the reference's; `saturated`: with [`saturate`]d parameters
/// (the random actions include ones of probability 0, logp -inf on both sides), where every
/// entropy must be exactly 0 and every gradient finite and equal to the reference's.
fn train_check(bin: &str, hidden: Vec<usize>, n_act: usize, b: usize, warps: i32, saturated: bool) -> usize {
    let shape = NetShape {
        obs_dim: 4,
        hidden,
        n_actions: n_act,
    };
    let layout = ParamLayout::new(&shape).unwrap();
    let key = rng::run_key(11);
    let mut p = reference::init_params(&layout, key);
    for (i, v) in p.iter_mut().enumerate() {
        *v += 0.3 * (uniform(key, 9, 0, i as u32) - 0.5);
    }
    if saturated {
        saturate(&shape, &mut p);
    }
    let tn = 300usize;
    let obs: Vec<[f32; 4]> = (0..tn)
        .map(|i| {
            let u = |k: u32| uniform(key, 10, i as u32, k) * 2.0 - 1.0;
            [u(0) * 2.0, u(1), u(2) * 0.2, u(3)]
        })
        .collect();
    let acts: Vec<u32> = (0..tn).map(|i| draw_act(key, i, n_act)).collect();
    let samples: Vec<u32> = (0..b)
        .map(|i| rng::draw(key, 12, 0, i as u32) % tn as u32)
        .collect();
    let d = |s: u32| -> Vec<f32> { (0..b).map(|i| uniform(key, s, 0, i as u32) - 0.5).collect() };
    let (dl, dv, de) = (d(13), d(14), d(15));
    let mut inp = Vec::new();
    w(&mut inp, &[p.len() as i32, tn as i32, b as i32, warps]);
    w(&mut inp, &p);
    w(&mut inp, &obs);
    w(&mut inp, &acts);
    w(&mut inp, &samples);
    w(&mut inp, &dl);
    w(&mut inp, &dv);
    w(&mut inp, &de);
    let mut r = run(bin, "train", &inp);
    let olp: Vec<f32> = r.take(b);
    let oen: Vec<f32> = r.take(b);
    let ov: Vec<f32> = r.take(b);
    let g: Vec<f32> = r.take(p.len());
    let mut bad = 0;
    let mut gref = vec![0.0f32; p.len()];
    for (i, &s) in samples.iter().enumerate() {
        let s = s as usize;
        let (logits, v) = reference::forward(&layout, &p, &obs[s]);
        let lp = reference::log_softmax(&logits);
        for (name, a, bb) in [
            ("logp", olp[i], lp[acts[s] as usize]),
            ("ent", oen[i], reference::entropy(&lp)),
            ("value", ov[i], v),
        ] {
            // Equal infinities (the logp of an action of probability 0) match.
            if a != bb && !close(a, bb, 1e-5, 1e-5) {
                bad += 1;
                if bad < 10 {
                    println!("{name} {i}: {a} vs {bb}");
                }
            }
        }
        reference::backward(
            &layout, &p, &obs[s], acts[s], dl[i], dv[i], de[i], &mut gref,
        );
    }
    let scale = gref.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = 0f32;
    for i in 0..p.len() {
        let e = (g[i] - gref[i]).abs() / (scale + gref[i].abs());
        worst = worst.max(e);
        if !g[i].is_finite() || !close(g[i], gref[i], 1e-5 * scale, 1e-4) {
            bad += 1;
            if bad < 20 {
                println!("grad {i}: {} vs {}", g[i], gref[i]);
            }
        }
    }
    if saturated {
        let (nonzero, infinite) = (not_zero(&oen), olp.iter().filter(|x| x.is_infinite()).count());
        bad += nonzero + usize::from(infinite == 0);
        println!("  saturated head: {nonzero} entropies not exactly 0, {infinite} samples of an action of probability 0 (logp -inf)");
    }
    let head = if saturated { " saturated head" } else { "" };
    println!("train {:?}{head} n_act={n_act} b={b} warps={warps}: grad scale {scale:e}, worst mixed err {worst:e}, mismatches {bad}", shape.hidden);
    bad
}
fn draw_act(key: u32, i: usize, n: usize) -> u32 {
    rng::draw(key, 16, 0, i as u32) % n as u32
}

/// Path of an emulator binary built by ../run.sh.
fn emu(name: &str) -> String {
    format!(
        "{}/{name}",
        std::env::var("EMU_BIN_DIR").expect("EMU_BIN_DIR (set by run.sh)")
    )
}

fn truncation_check(bin: &str) -> usize {
    // Every env starts 490 steps into its episode: survivors truncate within the rollout.
    let (n, t) = (64usize, 30usize);
    let shape = NetShape {
        obs_dim: 4,
        hidden: vec![64, 64],
        n_actions: 2,
    };
    let cfg = EngineConfig {
        num_envs: n,
        env_offset: 7,
        num_steps: t,
        seed: 5,
        shape,
        adam: AdamConfig::default(),
        threads: 1,
        cuda_ordinal: 0,
    };
    let mut cpu =
        drover_kernels::create_engine(drover_kernels::DeviceRequest::Cpu, cfg.clone()).unwrap();
    let mut st = cpu.save_state().unwrap();
    st.env_steps.iter_mut().for_each(|s| *s = 490);
    st.ep_len.iter_mut().for_each(|s| *s = 490);
    st.ep_return.iter_mut().for_each(|s| *s = 490.0);
    cpu.load_state(&st).unwrap();
    let params = cpu.params().unwrap();
    let key = rng::run_key(5);
    let mut inp = Vec::new();
    w(
        &mut inp,
        &[n as i32, t as i32, 7, key as i32, params.len() as i32, 2],
    );
    w(&mut inp, &params);
    std::env::set_var("EMU_START_STEPS", "490");
    let mut r = run(bin, "rollout", &inp);
    std::env::remove_var("EMU_START_STEPS");
    let l = n * t;
    let EmuRollout { act, lp, val, te, tr, nv, fk, fr, fl, .. } = EmuRollout::read(&mut r, l);
    let mut ro = Rollout::default();
    cpu.rollout(&mut ro).unwrap();
    let mut bad = 0;
    for i in 0..l {
        if act[i] != ro.actions[i] || te[i] != ro.terminated[i] || tr[i] != ro.truncated[i] {
            bad += 1;
        }
        if !close(lp[i], ro.logp[i], 1e-5, 1e-5)
            || !close(val[i], ro.values[i], 1e-5, 1e-5)
            || !close(nv[i], ro.next_values[i], 1e-5, 1e-5)
        {
            bad += 1;
            if bad < 10 {
                println!(
                    "t {} env {}: nv {} vs {} (trunc {})",
                    i / n,
                    i % n,
                    nv[i],
                    ro.next_values[i],
                    tr[i]
                );
            }
        }
    }
    let mut order: Vec<usize> = (0..fk.len()).collect();
    order.sort_by_key(|&i| fk[i]);
    let rets: Vec<f32> = order.iter().map(|&i| fr[i]).collect();
    let lens: Vec<u32> = order.iter().map(|&i| fl[i]).collect();
    if rets != ro.finished_returns || lens != ro.finished_lengths {
        bad += 1;
        println!("finished differ");
    }
    let truncs = tr.iter().filter(|&&x| x == 1).count();
    println!(
        "truncation check (vs CPU engine): {truncs} truncations, {} episodes, mismatches {bad}",
        rets.len()
    );
    bad
}

/// What the emulated `seq` mode writes: tokens, logp, entropy, value (`[t * n + env]`) and the
/// observation rows (`obs_dim` floats per sample).
struct EmuSeq {
    act: Vec<u32>,
    lp: Vec<f32>,
    en: Vec<f32>,
    val: Vec<f32>,
    obs: Vec<f32>,
}

/// Runs `seq_rollout` (or, given `replay` tokens, only `seq_build_obs`) on the emulator.
fn seq_emu(bin: &str, cfg: &EngineConfig, params: &[f32], inputs: &SeqInputs, t0: u64, replay: Option<&[u32]>, warps: i32) -> EmuSeq {
    let (n, l) = (cfg.num_envs, cfg.num_envs * cfg.num_steps);
    let key = rng::run_key(cfg.seed);
    let mut inp = Vec::new();
    let head = [n as i32, cfg.env_offset as i32, key as i32, params.len() as i32, warps, t0 as u32 as i32, (t0 >> 32) as i32, replay.is_some() as i32];
    w(&mut inp, &head);
    w(&mut inp, params);
    w(&mut inp, &inputs.prompts);
    w(&mut inp, &inputs.answers);
    w(&mut inp, &inputs.expert.iter().map(|&e| e as u32).collect::<Vec<_>>());
    if let Some(a) = replay {
        w(&mut inp, a);
    }
    let mut r = run(bin, "seq", &inp);
    EmuSeq { act: r.take(l), lp: r.take(l), en: r.take(l), val: r.take(l), obs: r.take(l * cfg.shape.obs_dim) }
}

/// Observation rows differing in any bit from `SeqTask::observation` of the given prompts and
/// tokens.
fn seq_obs_mismatches(task: &SeqTask, cfg: &EngineConfig, prompts: &[u32], act: &[u32], obs: &[f32]) -> usize {
    let (n, nt, od, pl) = (cfg.num_envs, cfg.num_steps, cfg.shape.obs_dim, task.prompt_len);
    let mut want = vec![0f32; od];
    let mut bad = 0;
    for t in 0..nt {
        for i in 0..n {
            let prefix: Vec<u32> = (0..t).map(|j| act[j * n + i]).collect();
            task.observation(&prompts[i * pl..(i + 1) * pl], &prefix, t, &mut want);
            let s = t * n + i;
            if want.iter().zip(&obs[s * od..(s + 1) * od]).any(|(a, b)| a.to_bits() != b.to_bits()) {
                bad += 1;
            }
        }
    }
    bad
}

/// Emulated rollout vs a reference rollout (and the CPU engine's): tokens equal, scores within
/// the CUDA tolerance, the host outcomes (SeqInputs::outcomes) equal, observations bit-identical.
fn seq_rollout_mismatches(label: &str, task: &SeqTask, cfg: &EngineConfig, e: &EmuSeq, inputs: &SeqInputs, want: &Rollout, cpu: &Rollout) -> usize {
    let mut bad = 0;
    let mut got = Rollout { actions: e.act.clone(), values: e.val.clone(), ..Rollout::default() };
    inputs.outcomes(&mut got);
    let mut worst = 0f32;
    for (s, &a) in e.act.iter().enumerate() {
        if a != want.actions[s] || a != cpu.actions[s] {
            bad += 1;
            println!("  {label} token {s}: emu {a}, reference {}, cpu {}", want.actions[s], cpu.actions[s]);
        }
        for (name, x, y, z) in [
            ("logp", e.lp[s], want.logp[s], cpu.logp[s]),
            ("entropy", e.en[s], want.entropy[s], cpu.entropy[s]),
            ("value", e.val[s], want.values[s], cpu.values[s]),
            ("next_value", got.next_values[s], want.next_values[s], cpu.next_values[s]),
        ] {
            worst = worst.max((x - y).abs() / y.abs().max(1.0));
            if !close(x, y, 1e-5, 1e-5) || !close(x, z, 1e-5, 1e-5) {
                bad += 1;
                if bad < 10 {
                    println!("  {label} {name} {s}: emu {x}, reference {y}, cpu {z}");
                }
            }
        }
    }
    if got.rewards != want.rewards || got.terminated != want.terminated || got.truncated != want.truncated
        || got.finished_returns != want.finished_returns || got.finished_lengths != want.finished_lengths
    {
        bad += 1;
        println!("  {label}: rewards, flags or finished responses differ");
    }
    let obad = seq_obs_mismatches(task, cfg, &inputs.prompts, &e.act, &e.obs);
    let correct = want.finished_returns.iter().filter(|&&r| r == 1.0).count();
    println!("  {label}: {} tokens, {correct} correct responses, worst logp/entropy/value error {worst:e}, obs rows differing {obad}, mismatches {bad}", e.act.len());
    bad + obad
}

/// Emulated evaluate + backward on the emulated observation rows vs the reference engine's
/// evaluate and gradient of the same samples (the reference builds its own observations).
fn seq_train_mismatches(label: &str, bin: &str, cfg: &EngineConfig, params: &[f32], e: &EmuSeq, re: &mut SeqReferenceEngine, warps: i32) -> usize {
    let tn = cfg.num_envs * cfg.num_steps;
    let key = rng::run_key(77);
    let b = 2 * tn / 3 + 5;
    let samples: Vec<u32> = (0..b).map(|i| rng::draw(key, 12, 0, i as u32) % tn as u32).collect();
    let d = |st: u32| -> Vec<f32> { (0..b).map(|i| (uniform(key, st, 0, i as u32) - 0.5) / b as f32).collect() };
    let (dl, dv, de) = (d(13), d(14), d(15));
    let mut inp = Vec::new();
    w(&mut inp, &[params.len() as i32, tn as i32, b as i32, warps]);
    for v in [params, &e.obs[..]] {
        w(&mut inp, v);
    }
    w(&mut inp, &e.act);
    w(&mut inp, &samples);
    for v in [&dl, &dv, &de] {
        w(&mut inp, v);
    }
    let mut r = run(bin, "train", &inp);
    let (olp, oen, ov, g): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) = (r.take(b), r.take(b), r.take(b), r.take(params.len()));
    let mut ev = MinibatchEval::default();
    re.evaluate(&samples, &mut ev).unwrap();
    re.accumulate_grad(&dl, &dv, &de).unwrap();
    let mut gref = Vec::new();
    re.reduce_grads(&mut |v| {
        gref = v.to_vec();
        v.fill(0.0);
    })
    .unwrap();
    let mut bad = 0;
    for i in 0..b {
        for (name, x, y) in [("logp", olp[i], ev.logp[i]), ("entropy", oen[i], ev.entropy[i]), ("value", ov[i], ev.values[i])] {
            if !close(x, y, 1e-5, 1e-5) {
                bad += 1;
                if bad < 10 {
                    println!("  {label} evaluate {name} {i}: emu {x}, reference {y}");
                }
            }
        }
    }
    let scale = gref.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = 0f32;
    for i in 0..gref.len() {
        let err = (g[i] - gref[i]).abs() / (scale + gref[i].abs());
        worst = worst.max(err);
        // The CUDA tests' gradient bound: |gpu - ref| <= 1e-5 (|ref| + max|ref|).
        if !g[i].is_finite() || err > 1e-5 {
            bad += 1;
            if bad < 20 {
                println!("  {label} grad {i}: emu {} vs reference {}", g[i], gref[i]);
            }
        }
    }
    println!("  {label} train: b={b}, grad scale {scale:e}, worst mixed error {worst:e}, mismatches {bad}");
    bad
}

/// One sequence task through the emulated kernels: a default rollout, then a second rollout with
/// a plan (dataset and drawn prompts, experts moved), then a `load_sequences` replay; each
/// followed by evaluate + gradients on its observation rows.
fn seq_check(bin: &str, task: SeqTask, hidden: Vec<usize>, num_envs: usize, warps: i32) -> usize {
    let cfg = EngineConfig {
        num_envs,
        env_offset: 2 * task.group_size,
        num_steps: task.response_len(),
        seed: 9,
        shape: task.net_shape(hidden),
        adam: AdamConfig::default(),
        threads: 1,
        cuda_ordinal: 0,
    };
    println!("seq {} V={} P={} G={} experts={} {:?} n={num_envs} warps={warps}", task.family, task.vocab, task.prompt_len, task.group_size, task.expert_per_group, cfg.shape.hidden);
    let mut re = SeqReferenceEngine::new(cfg.clone(), task).unwrap();
    let mut cpu = create_seq_engine(DeviceRequest::Cpu, cfg.clone(), task).unwrap();
    // Perturbed parameters: a policy far from uniform, so draws and scores discriminate.
    let key = rng::run_key(cfg.seed);
    let mut params = re.params().unwrap();
    for (i, v) in params.iter_mut().enumerate() {
        *v += 0.6 * (uniform(key, 9, 0, i as u32) - 0.5);
    }
    re.set_params(&params).unwrap();
    cpu.set_params(&params).unwrap();
    let (ne, nt) = (cfg.num_envs, cfg.num_steps);
    let mut inputs = SeqInputs::new(task, ne);
    let plan: Vec<EnvPlan> = (0..ne)
        .map(|i| EnvPlan {
            prompt: if i % 3 == 0 { PromptRef::Dataset((7 * i % 11) as u32) } else { PromptRef::Drawn { rollout: 5, group: (i / 2) as u32 } },
            expert: i % 5 == 1,
        })
        .collect();
    let mut bad = 0;
    let mut rollouts = Vec::new();
    for r in 0..2u32 {
        let plan = (r == 1).then_some(&plan[..]);
        if let Some(p) = plan {
            re.plan_rollout(p).unwrap();
            cpu.plan_rollout(p).unwrap();
        }
        let t0 = re.global_step();
        let (mut want, mut cpu_out) = (Rollout::default(), Rollout::default());
        re.rollout(&mut want).unwrap();
        cpu.rollout(&mut cpu_out).unwrap();
        inputs.for_rollout(key, cfg.env_offset, r, plan);
        let e = seq_emu(bin, &cfg, &params, &inputs, t0, None, warps);
        let label = if r == 0 { "rollout 0 (default layout)" } else { "rollout 1 (plan)" };
        bad += seq_rollout_mismatches(label, &task, &cfg, &e, &inputs, &want, &cpu_out);
        bad += seq_train_mismatches(label, bin, &cfg, &params, &e, &mut re, warps);
        rollouts.push(e.act);
    }
    // Replay: the first rollout's tokens with other prompts (dataset and drawn), as DAPO's
    // dynamic sampling hands back responses of earlier rollouts.
    let refs: Vec<PromptRef> = (0..ne)
        .map(|i| if i % 2 == 0 { PromptRef::Dataset(i as u32 / 2) } else { PromptRef::Drawn { rollout: 0, group: (i / task.group_size) as u32 } })
        .collect();
    let actions = rollouts.swap_remove(0);
    re.load_sequences(&refs, &actions).unwrap();
    inputs.for_replay(key, &refs);
    let e = seq_emu(bin, &cfg, &params, &inputs, 0, Some(&actions), warps);
    let obad = seq_obs_mismatches(&task, &cfg, &inputs.prompts, &actions, &e.obs);
    println!("  replay: obs rows differing {obad} of {}", ne * nt);
    bad += obad + usize::from(e.act != actions);
    bad += seq_train_mismatches("replay", bin, &cfg, &params, &e, &mut re, warps);
    bad
}

fn main() {
    let mut bad = seq_check(
        &emu("emuseqrev"),
        SeqTask { family: TaskFamily::Reverse, vocab: 4, prompt_len: 3, group_size: 4, expert_per_group: 0 },
        vec![64, 64],
        64,
        2,
    );
    bad += seq_check(
        &emu("emuseqadd"),
        SeqTask { family: TaskFamily::Add, vocab: 10, prompt_len: 4, group_size: 4, expert_per_group: 1 },
        vec![24],
        44,
        1,
    );
    bad += truncation_check(&emu("emu64"));
    let _ = std::io::stdout().flush();
    bad += rollout_check(&emu("emu64"), vec![64, 64], 2, 80, 40, 2, false);
    bad += rollout_check(&emu("emu52"), vec![5, 3], 2, 40, 30, 1, false);
    bad += train_check(&emu("emu53"), vec![5, 3], 3, 70, 2, false);
    bad += train_check(&emu("emu64"), vec![64, 64], 2, 70, 1, false);
    bad += rollout_check(&emu("emu7216"), vec![72, 16], 2, 50, 20, 2, false);
    bad += train_check(&emu("emu7216"), vec![72, 16], 2, 45, 2, false);
    bad += rollout_check(&emu("emulin"), vec![], 2, 33, 20, 1, false);
    bad += train_check(&emu("emulin"), vec![], 2, 33, 1, false);
    // A saturated head (an action of probability 0, logp -inf): entropy exactly 0 and finite
    // gradients equal to the reference's, where `0 * -inf` made both NaN before the guard.
    bad += rollout_check(&emu("emu52"), vec![5, 3], 2, 40, 30, 1, true);
    bad += rollout_check(&emu("emu7216"), vec![72, 16], 2, 40, 10, 2, true);
    bad += train_check(&emu("emu53"), vec![5, 3], 3, 70, 2, true);
    bad += train_check(&emu("emu64"), vec![64, 64], 2, 70, 1, true);
    // A mismatch anywhere fails the run, so CI (scripts/test.sh) catches a .cu regression.
    if bad > 0 {
        eprintln!("emulated CUDA kernels: {bad} mismatches against the reference");
        std::process::exit(1);
    }
    println!("emulated CUDA kernels: all checks match the reference");
}
