//! How deserialization errors read to a user: keys in one spelling (`local.gpus[0]`,
//! `sweep.cases[1].x`) and plain words where serde names Rust types (`u32`, `a sequence`).
//!
//! Every figment or serde error of the sweep configuration becomes `ConfigError` text here, so
//! an error of the file, an env var, a `--set` or a sweep axis value reads the same.

use figment::error::{Actual, Kind};
use figment::value::Value;

use crate::error::ConfigErrorKind;

/// The error's key path as text: `a.b[0].c`, a list index in brackets.
///
/// figment gives list indices as path segments like any table key (`local.gpus.0`); `lookup`
/// returns a top-level value of the merged configuration, and walking it tells an index from a
/// table key that happens to be digits (`[params] "0" = 1`). Segments below a value that is not
/// there (a missing key) are table keys.
pub(crate) fn key_text(segments: &[String], lookup: impl Fn(&str) -> Option<Value>) -> String {
    let mut text = String::new();
    let mut at: Option<Value> = segments.first().and_then(|first| lookup(first));
    for (i, segment) in segments.iter().enumerate() {
        if i == 0 {
            text.push_str(segment);
            continue;
        }
        at = match at {
            Some(Value::Array(_, mut items)) => match segment.parse::<usize>() {
                Ok(index) if index < items.len() => {
                    text.push_str(&format!("[{index}]"));
                    Some(items.swap_remove(index))
                }
                _ => {
                    text.push_str(&format!("[{segment}]"));
                    None
                }
            },
            Some(Value::Dict(_, mut dict)) => {
                text.push('.');
                text.push_str(segment);
                dict.remove(segment)
            }
            _ => {
                text.push('.');
                text.push_str(segment);
                None
            }
        };
    }
    text
}

/// A figment error's kind as a `ConfigErrorKind`, in plain words; the key is named by the caller
/// (for `UnknownField` and `MissingField` the field is the key's last segment).
pub(crate) fn plain_kind(kind: &Kind) -> ConfigErrorKind {
    match kind {
        Kind::InvalidType(actual, expected) => {
            let plain = plain_expected(expected);
            let hint = match actual {
                // `total_steps = 1e6` is a float in TOML, which a reader of the file does not see.
                Actual::Float(v) if v.is_finite() && v.fract() == 0.0 && plain.starts_with("a whole number") => {
                    format!(" (TOML reads `1e6` and `8.0` as fractional numbers: write it as digits, `{v:.0}`)")
                }
                _ => String::new(),
            };
            ConfigErrorKind::WrongType(format!("found {}, expected {plain}{hint}", plain_found(actual)))
        }
        Kind::InvalidValue(actual, expected) => {
            ConfigErrorKind::InvalidValue(format!("found {}, expected {}", plain_found(actual), plain_expected(expected)))
        }
        Kind::InvalidLength(n, expected) => {
            ConfigErrorKind::InvalidValue(format!("{n} items, expected {}", plain_expected(expected)))
        }
        Kind::UnknownVariant(v, expected) => {
            ConfigErrorKind::InvalidValue(format!("`{v}`, expected one of: {}", expected.join(", ")))
        }
        Kind::UnknownField(_, expected) => {
            ConfigErrorKind::UnknownKey { expected: expected.iter().map(|s| s.to_string()).collect() }
        }
        Kind::MissingField(_) => ConfigErrorKind::Missing,
        other => ConfigErrorKind::InvalidValue(other.to_string()),
    }
}

/// The error of a key that TOML read as a table because its dotted name was not quoted:
/// `run.lr = [1e-3]` under `[sweep.grid]` is the table `run = { lr = [1e-3] }`, not the axis
/// `"run.lr"`. `top` is the key found (`run`), `table` its value; `None` when `table` is no
/// table. Each axis meant (`run.lr`) is named with its value, as it should be written.
pub(crate) fn unquoted_dotted_key(top: &str, table: &serde_json::Value) -> Option<ConfigErrorKind> {
    let inner = table.as_object().filter(|t| !t.is_empty())?;
    let quoted: Vec<String> = inner
        .iter()
        .map(|(k, v)| {
            let value = serde_json::to_string(v).ok().filter(|v| v.len() <= 40).unwrap_or_else(|| "...".into());
            format!("\"{top}.{k}\" = {value}")
        })
        .collect();
    let names: Vec<String> = inner.keys().map(|k| format!("{top}.{k}")).collect();
    let (key, name) = if names.len() == 1 { ("key", "name") } else { ("keys", "names") };
    Some(ConfigErrorKind::NestedTable(format!(
        "TOML reads the unquoted {key} {} as nested tables; axis names are dotted keys, so quote the axis {name}: {}",
        names.join(", "),
        quoted.join(", ")
    )))
}

/// The closest of `candidates` to `word` when it is close enough to be a typo of it (letters
/// swapped, one missing or extra or wrong per three), ignoring case; for "did you mean" hints.
pub(crate) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= limit && !c.contains('<'))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The key of `expected` that the unknown `key` (as a message spells it: `run.num_env`,
/// `sweep.grid.param.x`) was probably meant to be, written as that place spells its keys: the
/// last segments of `key`, as many as the candidate has, compared with the candidate, and a
/// `params.<name>` candidate matched by its table's name.
pub(crate) fn suggest_key(key: &str, expected: &[String]) -> Option<String> {
    let segments: Vec<&str> = key.split('.').collect();
    let tail = |n: usize| segments.len().checked_sub(n).map(|start| segments[start..].join("."));
    let mut best: Option<(usize, String)> = None;
    for candidate in expected {
        let n = candidate.split('.').count();
        let Some(typed) = tail(n) else { continue };
        let (distance, meant) = match candidate.strip_suffix(".<name>") {
            // `param.x` for `params.<name>`: the table's name is the typo, the rest is free.
            Some(table) => match typed.split_once('.') {
                Some((t, name)) if t != table => (edit_distance(&t.to_ascii_lowercase(), table), format!("{table}.{name}")),
                _ => continue,
            },
            None => (edit_distance(&typed.to_ascii_lowercase(), candidate), candidate.clone()),
        };
        let limit = (typed.chars().count() / 3).max(1);
        if distance <= limit && distance > 0 && best.as_ref().is_none_or(|(d, _)| distance < *d) {
            best = Some((distance, meant));
        }
    }
    best.map(|(_, meant)| meant)
}

/// Where an unknown key belongs, when it is a known key of another place: TOML gives a key to
/// the last table header above it, so `seeds` written after `[sweep.grid]`, `max_parallel` after
/// `[run]` or `gamma` in `[run]` land in the wrong table, and an axis named without its table
/// (`"lr"`) names none (review F9). `key` as errors spell it (`sweep.grid.seeds`, `run.gamma`).
pub(crate) fn misplaced_key_hint(key: &str) -> Option<String> {
    use crate::config::RunConfig;
    const TOP: [&str; 5] = ["name", "results_dir", "max_parallel", "plugin_path", "backend"];
    const SWEEP: [&str; 3] = ["seeds", "grid", "cases"];
    let above = "a key belongs to the table header above it";
    // An axis: the rest of the key after `sweep.grid.` or `sweep.cases[i].`.
    let axis = key.strip_prefix("sweep.grid.").or_else(|| key.strip_prefix("sweep.cases[").and_then(|rest| rest.split_once("].")).map(|(_, axis)| axis));
    if let Some(axis) = axis.filter(|a| !a.contains('.')) {
        if SWEEP.contains(&axis) {
            return Some(format!("`{axis}` is a key of `[sweep]`, and {above}: move it above `[sweep.grid]` and `[[sweep.cases]]`"));
        }
        let table = if RunConfig::KEYS.contains(&axis) { "run" } else { "params" };
        return Some(format!("an axis names its table: did you mean `{table}.{axis}`?"));
    }
    let (place, name) = key.rsplit_once('.').unwrap_or(("", key));
    if let Some(axis) = key.strip_prefix("sweep.").filter(|a| a.starts_with("run.") || a.starts_with("params.")) {
        return Some(format!("`{axis}` is an axis: its values go under `[sweep.grid]` (a list) or in a `[[sweep.cases]]` entry (one value)"));
    }
    if TOP.contains(&name) && !place.is_empty() {
        return Some(format!("`{name}` is a top-level key, and {above}: write it before the first table header"));
    }
    if SWEEP.contains(&name) && place != "sweep" {
        return Some(format!("`{name}` is a key of `[sweep]`, and {above}: write it under `[sweep]`"));
    }
    if RunConfig::KEYS.contains(&name) && place != "run" {
        return Some(format!("`{name}` is a key of `[run]`, and {above}: write it under `[run]`"));
    }
    if place == "run" {
        return Some(format!("a parameter of the plugin goes in `[params]`: `{name}` there is `params.{name}`"));
    }
    None
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbours (`nmae` → `name` is one), each costing 1.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The value found, as the user wrote it: `string "eight"`, `` `1.5` ``, `a list`; no Rust names.
fn plain_found(actual: &Actual) -> String {
    match actual {
        Actual::Bool(v) => format!("`{v}`"),
        Actual::Unsigned(v) => format!("`{v}`"),
        Actual::Signed(v) => format!("`{v}`"),
        // `{:?}` keeps the `.0` of `8.0`, which is why a whole number was refused.
        Actual::Float(v) => format!("`{v:?}`"),
        Actual::Char(v) => format!("string {:?}", v.to_string()),
        Actual::Str(v) => format!("string {v:?}"),
        Actual::Seq => "a list".into(),
        Actual::Map => "a table".into(),
        Actual::Unit | Actual::Option => "no value".into(),
        other => other.to_string(),
    }
}

/// serde's name of what it wanted (`u32`, `a sequence`, `struct RunConfig`) in plain words;
/// a description of our own (`a list of seeds like [1, 2, 3] or a table`) is kept as written.
pub(crate) fn plain_expected(expected: &str) -> String {
    if let Some(range) = whole_number_range(expected) {
        return range;
    }
    if let Some(ty) = expected.strip_prefix("a nonzero ") {
        if let Some(range) = whole_number_range(ty) {
            return range.replace("from 0 to", "from 1 to").replace(", 0 or more", ", 1 or more");
        }
    }
    match expected {
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a string" | "a borrowed string" | "path string" | "a borrowed path" | "os string" | "a character" | "char" => {
            "text".into()
        }
        "a sequence" => "a list".into(),
        "an empty array" => "an empty list".into(),
        "a map" => "a table".into(),
        "option" => "a value".into(),
        _ if expected.starts_with("struct ") => "a table".into(),
        // A derived enum given a number or a list: its variants are named as text.
        _ if expected.starts_with("enum ") || expected == "variant identifier" => "text naming one of its choices".into(),
        _ => expected.to_string(),
    }
}

/// `kind` for a `[run]` key whose least value is 1 (`sweep::AT_LEAST_ONE`): its type's range
/// starts there too, so a wrong type and a zero are not told two different minimums.
pub(crate) fn from_one(kind: ConfigErrorKind) -> ConfigErrorKind {
    let fix = |text: String| text.replace("a whole number from 0 to", "a whole number from 1 to").replace("a whole number, 0 or more", "a whole number, 1 or more");
    match kind {
        ConfigErrorKind::WrongType(text) => ConfigErrorKind::WrongType(fix(text)),
        ConfigErrorKind::InvalidValue(text) => ConfigErrorKind::InvalidValue(fix(text)),
        other => other,
    }
}

/// `u32` → "a whole number from 0 to 4294967295"; the 64-bit types, whose bounds no one types,
/// get their sign only.
fn whole_number_range(ty: &str) -> Option<String> {
    let range = |min: i128, max: i128| format!("a whole number from {min} to {max}");
    Some(match ty {
        "u8" => range(0, u8::MAX.into()),
        "u16" => range(0, u16::MAX.into()),
        "u32" => range(0, u32::MAX.into()),
        "i8" => range(i8::MIN.into(), i8::MAX.into()),
        "i16" => range(i16::MIN.into(), i16::MAX.into()),
        "i32" => range(i32::MIN.into(), i32::MAX.into()),
        "u64" | "usize" | "u128" => "a whole number, 0 or more".into(),
        "i64" | "isize" | "i128" => "a whole number".into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::value::{Dict, Tag};

    #[test]
    fn every_rust_type_word_has_a_plain_one() {
        let cases = [
            ("u32", "a whole number from 0 to 4294967295"),
            ("u8", "a whole number from 0 to 255"),
            ("i32", "a whole number from -2147483648 to 2147483647"),
            ("u64", "a whole number, 0 or more"),
            ("usize", "a whole number, 0 or more"),
            ("i64", "a whole number"),
            ("a nonzero u32", "a whole number from 1 to 4294967295"),
            ("a nonzero usize", "a whole number, 1 or more"),
            ("f64", "a number"),
            ("f32", "a number"),
            ("a boolean", "true or false"),
            ("a string", "text"),
            ("path string", "text"),
            ("a sequence", "a list"),
            ("a map", "a table"),
            ("struct RunConfig", "a table"),
            ("enum Device", "text naming one of its choices"),
            ("a list of seeds like [1, 2, 3] or a table", "a list of seeds like [1, 2, 3] or a table"),
        ];
        for (rust, plain) in cases {
            assert_eq!(plain_expected(rust), plain, "{rust}");
        }
    }

    #[test]
    fn typos_find_the_key_meant_and_strangers_find_none() {
        let keys = ["name", "num_envs", "num_steps", "max_parallel", "seeds", "params.<name>"];
        let cases = [
            ("nmae", Some("name")),
            ("num_env", Some("num_envs")),
            ("NUM_STEPS", Some("num_steps")),
            ("max_paralel", Some("max_parallel")),
            ("seed", Some("seeds")),
            ("learning_rate", None),
            ("x", None),
            ("params.<name>", None),
        ];
        for (word, meant) in cases {
            assert_eq!(closest(word, keys), meant, "{word}");
        }
        assert_eq!(edit_distance("nmae", "name"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn unknown_keys_suggest_the_key_of_their_place() {
        let run: Vec<String> = ["env", "num_envs", "lr"].iter().map(|s| s.to_string()).collect();
        let axes: Vec<String> = ["run.env", "run.num_envs", "run.lr", "params.<name>"].iter().map(|s| s.to_string()).collect();
        let top: Vec<String> = ["name", "sweep", "run", "params"].iter().map(|s| s.to_string()).collect();
        assert_eq!(suggest_key("run.num_env", &run).as_deref(), Some("num_envs"));
        assert_eq!(suggest_key("nmae", &top).as_deref(), Some("name"));
        assert_eq!(suggest_key("sweeps", &top).as_deref(), Some("sweep"));
        assert_eq!(suggest_key("param", &top).as_deref(), Some("params"));
        assert_eq!(suggest_key("sweep.grid.run.lrr", &axes).as_deref(), Some("run.lr"));
        assert_eq!(suggest_key("sweep.cases[0].run.num_env", &axes).as_deref(), Some("run.num_envs"));
        assert_eq!(suggest_key("sweep.grid.param.ent_coef", &axes).as_deref(), Some("params.ent_coef"));
        assert_eq!(suggest_key("run.learning_rate", &run), None);
        assert_eq!(suggest_key("sweep.grid.foo.bar", &axes), None);
    }

    /// Review finding (research): `run.lr = [1e-3]` unquoted in `[sweep.grid]` said only
    /// "found a table, expected a list".
    #[test]
    fn an_unquoted_dotted_axis_name_is_told_to_be_quoted() {
        let one = serde_json::json!({"lr": [0.001]});
        let kind = unquoted_dotted_key("run", &one).map(|k| k.to_string());
        assert_eq!(
            kind.as_deref(),
            Some("found a table: TOML reads the unquoted key run.lr as nested tables; axis names are dotted keys, so quote the axis name: \"run.lr\" = [0.001]")
        );
        let two = serde_json::json!({"lr": 0.001, "num_envs": 8});
        let kind = unquoted_dotted_key("run", &two).map(|k| k.to_string()).unwrap_or_default();
        assert!(kind.contains("the unquoted keys run.lr, run.num_envs as nested tables") && kind.contains("\"run.lr\" = 0.001, \"run.num_envs\" = 8"), "{kind}");
        assert!(unquoted_dotted_key("run", &serde_json::json!([1])).is_none());
        assert!(unquoted_dotted_key("run", &serde_json::json!({})).is_none());
    }

    /// `total_steps = 1e6` is a float to TOML: the message says so and how to write it.
    #[test]
    fn a_whole_float_for_a_whole_number_says_how_to_write_it() {
        let kind = plain_kind(&Kind::InvalidType(Actual::Float(1e6), "u64".into())).to_string();
        assert_eq!(kind, "wrong type: found `1000000.0`, expected a whole number, 0 or more (TOML reads `1e6` and `8.0` as fractional numbers: write it as digits, `1000000`)");
        let kind = plain_kind(&Kind::InvalidType(Actual::Float(8.5), "u32".into())).to_string();
        assert_eq!(kind, "wrong type: found `8.5`, expected a whole number from 0 to 4294967295");
    }

    #[test]
    fn found_values_keep_the_value_and_lose_the_type_name() {
        let cases = [
            (Actual::Str("eight".into()), "string \"eight\""),
            (Actual::Unsigned(8), "`8`"),
            (Actual::Signed(-1), "`-1`"),
            (Actual::Float(8.0), "`8.0`"),
            (Actual::Float(f64::NAN), "`NaN`"),
            (Actual::Bool(true), "`true`"),
            (Actual::Seq, "a list"),
            (Actual::Map, "a table"),
        ];
        for (actual, plain) in cases {
            assert_eq!(plain_found(&actual), plain, "{actual:?}");
        }
    }

    #[test]
    fn list_indices_are_bracketed_and_digit_table_keys_are_not() {
        let num = |n: u32| Value::from(n);
        let list = Value::Array(Tag::Default, vec![num(0), num(1)]);
        let mut inner = Dict::new();
        inner.insert("gpus".into(), list.clone());
        inner.insert("0".into(), num(5));
        let mut case = Dict::new();
        case.insert("params.x".into(), num(1));
        let cases = Value::Array(Tag::Default, vec![Value::from(Dict::new()), Value::from(case)]);
        let mut sweep = Dict::new();
        sweep.insert("cases".into(), cases);
        let lookup = |top: &str| match top {
            "local" => Some(Value::from(inner.clone())),
            "sweep" => Some(Value::from(sweep.clone())),
            _ => None,
        };
        let seg = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(key_text(&seg(&["local", "gpus", "1"]), lookup), "local.gpus[1]");
        assert_eq!(key_text(&seg(&["local", "0"]), lookup), "local.0");
        assert_eq!(key_text(&seg(&["sweep", "cases", "1", "params.x"]), lookup), "sweep.cases[1].params.x");
        assert_eq!(key_text(&seg(&["sweep", "cases", "1", "nope"]), lookup), "sweep.cases[1].nope");
        assert_eq!(key_text(&seg(&["run", "num_envs"]), lookup), "run.num_envs");
        assert_eq!(key_text(&seg(&["name"]), lookup), "name");
    }
}
