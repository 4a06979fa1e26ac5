//! Config and call-order errors of `CpuEngine`: user-controlled sizes never panic.

use drover_kernels::cpu::CpuEngine;
use drover_kernels::{Engine, KernelError, MinibatchEval, Rollout};

use crate::common::config;

#[test]
fn bad_configs_are_invalid_config_errors() {
    let mut bad = Vec::new();
    bad.push(config(0, 8, 8, 0, 1));
    bad.push(config(8, 0, 8, 0, 1));
    bad.push(config(8, 8, 0, 0, 1));
    let mut c = config(8, 8, 8, 0, 1);
    c.shape.obs_dim = 3;
    bad.push(c);
    let mut c = config(8, 8, 8, 0, 1);
    c.shape.n_actions = 3;
    bad.push(c);
    bad.push(config(1 << 20, 1 << 13, 8, 0, 1));
    let mut c = config(8, 8, 8, 0, 1);
    c.env_offset = u32::MAX as usize;
    bad.push(c);
    let mut c = config(8, 8, 8, 0, 1);
    c.adam.beta2 = 1.0;
    bad.push(c);
    for cfg in bad {
        match CpuEngine::new(cfg.clone()) {
            Err(KernelError::InvalidConfig(_)) => {}
            other => panic!("{cfg:?} gave {other:?}"),
        }
    }
}

#[test]
fn call_order_and_length_errors() {
    let mut e = CpuEngine::new(config(4, 8, 8, 0, 1)).expect("engine");
    let mut ev = MinibatchEval::default();
    assert!(matches!(
        e.evaluate(&[0], &mut ev),
        Err(KernelError::InvalidConfig(_))
    ));
    e.rollout(&mut Rollout::default()).expect("rollout");
    assert!(matches!(
        e.accumulate_grad(&[], &[], &[]),
        Err(KernelError::InvalidConfig(_))
    ));
    assert!(matches!(
        e.evaluate(&[32], &mut ev),
        Err(KernelError::InvalidConfig(_))
    ));
    e.evaluate(&[0, 31], &mut ev).expect("evaluate");
    assert!(matches!(
        e.accumulate_grad(&[0.0, 0.0], &[0.0], &[0.0, 0.0]),
        Err(KernelError::Length {
            name: "d_value",
            got: 1,
            expected: 2
        })
    ));
    assert!(matches!(
        e.set_params(&[0.0; 3]),
        Err(KernelError::Length { .. })
    ));
}
