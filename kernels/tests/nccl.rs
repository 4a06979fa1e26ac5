//! NCCL plumbing on one GPU: a CUDA engine in a one-rank NCCL group sums its gradient on the
//! device (a sum over one rank is the identity) and must then train bit for bit like an engine
//! that uses the host path; leaving the group brings the host path back.
//!
//! Without a usable GPU the test prints `skipped: <reason>` and returns (fails under
//! `DROVER_REQUIRE_GPU=1`); without libnccl likewise (fails under `DROVER_REQUIRE_NCCL=1`, set
//! on a GPU machine known to have NCCL, with `DROVER_NCCL_LIBRARY` if it is not on the path).

use std::io::Write;

use drover_kernels::cuda::{nccl, probe, CudaEngine};
use drover_kernels::rng::{self, uniform};
use drover_kernels::{AdamConfig, DeviceGroup, Engine, EngineConfig, MinibatchEval, NetShape, Rollout};

/// True when a GPU and NCCL are usable; otherwise prints why (or panics when required).
fn gpu_and_nccl(test: &str) -> bool {
    let required = |var: &str| std::env::var(var).as_deref() == Ok("1");
    let missing = match (probe(), nccl::probe()) {
        (Err(why), _) => Some(("DROVER_REQUIRE_GPU", why)),
        (Ok(()), Err(why)) => Some(("DROVER_REQUIRE_NCCL", why)),
        (Ok(()), Ok(_)) => None,
    };
    match missing {
        None => true,
        Some((var, why)) => {
            assert!(!required(var) && !required("DROVER_REQUIRE_NCCL"), "{test}: {var}=1 but: {why}");
            let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
            false
        }
    }
}

#[test]
fn one_rank_nccl_group_trains_exactly_like_the_host_path() {
    if !gpu_and_nccl("one_rank_nccl_group_trains_exactly_like_the_host_path") {
        return;
    }
    let cfg = EngineConfig {
        num_envs: 256,
        env_offset: 0,
        num_steps: 16,
        seed: 20_260_128,
        shape: NetShape { obs_dim: 4, hidden: vec![64, 64], n_actions: 2 },
        adam: AdamConfig::default(),
        threads: 1,
        cuda_ordinal: 0,
    };
    let mut host = CudaEngine::new(cfg.clone()).expect("engine");
    let mut dev = CudaEngine::new(cfg.clone()).expect("engine");
    let id = nccl::unique_id().expect("unique id");
    assert!(dev.attach_device_all_reduce(Some(&DeviceGroup { id, rank: 0, size: 1 })).expect("join"));
    let key = rng::run_key(cfg.seed);
    let (mut ro_h, mut ro_d) = (Rollout::default(), Rollout::default());
    let (mut ev_h, mut ev_d) = (MinibatchEval::default(), MinibatchEval::default());
    for step in 0..3u32 {
        host.rollout(&mut ro_h).expect("rollout");
        dev.rollout(&mut ro_d).expect("rollout");
        assert_eq!(ro_h.actions, ro_d.actions, "step {step}: the engines diverged");
        let samples: Vec<u32> = (0..(cfg.num_envs * cfg.num_steps) as u32).step_by(3).collect();
        host.evaluate(&samples, &mut ev_h).expect("evaluate");
        dev.evaluate(&samples, &mut ev_d).expect("evaluate");
        let b = samples.len();
        let d = |s: u32| -> Vec<f32> { (0..b).map(|i| (uniform(key, 9 + s, step, i as u32) - 0.5) / b as f32).collect() };
        let (dl, dv, de) = (d(0), d(1), d(2));
        host.accumulate_grad(&dl, &dv, &de).expect("backward");
        dev.accumulate_grad(&dl, &dv, &de).expect("backward");
        let mut host_called = false;
        host.reduce_grads(&mut |_| host_called = true).expect("host reduce");
        let mut dev_called = false;
        dev.reduce_grads(&mut |_| dev_called = true).expect("nccl reduce");
        assert!(host_called && !dev_called, "the NCCL engine must not use the host closure");
        let clip = (step == 2).then_some(0.1);
        let (nh, nd) = (host.apply_grads(3e-3, clip).expect("adam"), dev.apply_grads(3e-3, clip).expect("adam"));
        assert_eq!(nh.to_bits(), nd.to_bits(), "step {step}: gradient norm {nh} vs {nd}");
        let (ph, pd) = (host.params().expect("params"), dev.params().expect("params"));
        let diff = ph.iter().zip(&pd).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(diff, 0, "step {step}: {diff} parameters differ");
    }
    assert!(!dev.attach_device_all_reduce(None).expect("leave"));
    let mut called = false;
    dev.reduce_grads(&mut |_| called = true).expect("host reduce");
    assert!(called, "after leaving, the host closure is back");
}
