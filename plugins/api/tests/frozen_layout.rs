//! Pins the layout of every type that crosses the plugin ABI, so that changing a frozen type
//! fails CI instead of silently locking out every plugin already built.
//!
//! The rule (`docs/design/plugin-abi.md`): within interface major 1, `AlgorithmMod`, the
//! `Algorithm` trait, the views and every released extension table (`ext::v1_N`) never change.
//! abi_stable refuses a plugin whose prefix types have fewer fields or methods than the
//! host's, so a field or method appended in 1.x would refuse every plugin built against an
//! earlier 1.y. This test is also what makes the two-builds test in
//! `plugins/host/tests/plugins.rs` honest: a plugin built against a 1.0 snapshot of this crate
//! has exactly the layout dumped here.
//!
//! The dump walks abi_stable's `TypeLayout` graph (names, sizes, alignments, fields, function
//! signatures) and leaves out source line numbers and crate versions, which change without
//! changing the ABI. Regenerate the expected files only for a new major interface version:
//! `DROVER_BLESS_ABI_LAYOUT=1 cargo test -p drover-plugin-api --test frozen_layout`.

use std::{collections::HashSet, fmt::Write as _, path::PathBuf};

use abi_stable::{std_types::UTypeId, type_layout::TypeLayout, StableAbi};
use drover_plugin_api::{
    ext::{v1_1, v1_3},
    AlgorithmMod_Ref,
};

/// Every layout reachable from `root`, depth first, each once, without line numbers and
/// crate versions.
fn dump(root: &'static TypeLayout) -> String {
    fn walk(l: &'static TypeLayout, seen: &mut HashSet<UTypeId>, out: &mut String) {
        // `full_type` omits generic arguments, so `RResult<A, E>` and `RResult<B, E>` print
        // alike: identify types by id, and print each instantiation.
        if !seen.insert(l.get_utypeid()) {
            return;
        }
        let _ = writeln!(
            out,
            "=== {}::{}\nsize {} align {} nonzero {} repr {:?} refl {:?}",
            l.item_info().mod_path,
            l.full_type(),
            l.size(),
            l.alignment(),
            l.is_nonzero(),
            l.repr_attr(),
            l.mod_refl_mode(),
        );
        let data = l.data().to_string();
        let data: Vec<&str> = data
            .lines()
            .filter(|line| !line.trim_start().starts_with("package:"))
            .collect();
        let _ = writeln!(out, "data:\n{}", data.join("\n"));
        let _ = writeln!(out, "tag: {}", l.tag());
        for nested in l.shared_vars().type_layouts() {
            walk(nested(), seen, out);
        }
    }
    let mut out = String::new();
    walk(root, &mut HashSet::new(), &mut out);
    out
}

fn check(file: &str, root: &'static TypeLayout) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(file);
    let actual = dump(root);
    if std::env::var_os("DROVER_BLESS_ABI_LAYOUT").is_some() {
        std::fs::write(&path, &actual).expect("write the expected layout");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if actual != expected {
        let first = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or(actual.lines().count().min(expected.lines().count()));
        panic!(
            "the ABI layout dumped in {} changed (first difference at line {}: expected {:?}, \
             found {:?}).\nThese types are frozen for interface major 1: a plugin built against \
             an earlier 1.x would be refused. Add an extension table in `plugins/api/src/ext.rs` \
             (a new `v1_N` module and minor version) instead; see docs/design/plugin-abi.md. \
             Only a new major version may regenerate this file (DROVER_BLESS_ABI_LAYOUT=1).",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<end>"),
            actual.lines().nth(first).unwrap_or("<end>"),
        );
    }
}

#[test]
fn v1_root_module_layout_is_frozen() {
    check(
        "v1_root_module.layout",
        <AlgorithmMod_Ref as StableAbi>::LAYOUT,
    );
}

#[test]
fn v1_1_sequence_loss_table_is_frozen() {
    check(
        "v1_1_sequence_loss.layout",
        <v1_1::SequenceLoss as StableAbi>::LAYOUT,
    );
}

#[test]
fn v1_3_plugin_state_table_is_frozen() {
    check(
        "v1_3_plugin_state.layout",
        <v1_3::PluginState as StableAbi>::LAYOUT,
    );
}

#[test]
fn v1_3_minibatch_context_table_is_frozen() {
    check(
        "v1_3_minibatch_context.layout",
        <v1_3::MinibatchContext as StableAbi>::LAYOUT,
    );
    // The struct it passes by reference is part of the pinned graph.
    let dump = dump(<v1_3::MinibatchContext as StableAbi>::LAYOUT);
    for needle in ["MinibatchInfo", "rollout_index", "rollout_sequences", "minibatch"] {
        assert!(dump.contains(needle), "`{needle}` missing from the dump:\n{dump}");
    }
}

/// The dump must see a change: one field more is one more field line in the data section.
#[test]
fn the_dump_sees_fields_and_signatures() {
    let root = dump(<AlgorithmMod_Ref as StableAbi>::LAYOUT);
    for needle in [
        "resolve_params",
        "keep_group",
        "extension",
        "seq_group_ids",
        "PluginError",
    ] {
        assert!(
            root.contains(needle),
            "`{needle}` missing from the dump:\n{root}"
        );
    }
    assert!(
        !root.contains("line:") && !root.contains("version:'"),
        "line numbers and crate versions would make the pin brittle"
    );
}
