//! A run's `[params]` checked against its plugin's description (from `drover-job plugin info`),
//! so a typo or an out-of-range value stops `drover run` before anything is launched.
//!
//! The rules mirror `drover_plugin_api::Params::parse`, which the plugin applies again when the
//! job starts: unknown key, wrong type, out of range, `null` for a non-optional parameter.

use serde_json::{Map, Value};

use super::probe::{ParamDescription, PluginDescription};

/// The first problem found: the `[params]` key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamProblem {
    /// The key within `[params]`.
    pub key: String,
    /// Why it is refused (lowercase fragment).
    pub reason: String,
}

fn problem(key: &str, reason: String) -> ParamProblem {
    ParamProblem { key: key.to_string(), reason }
}

/// Checks `params` (one run's resolved `[params]` table) against `plugin`'s parameters.
///
/// # Errors
/// The first offending key, in the order unknown keys first, then declared parameters in the
/// plugin's order.
pub fn validate_params(plugin: &PluginDescription, params: &Map<String, Value>) -> Result<(), ParamProblem> {
    if let Some(unknown) = params.keys().find(|k| !plugin.params.iter().any(|p| &p.name == *k)) {
        let known: Vec<&str> = plugin.params.iter().map(|p| p.name.as_str()).collect();
        // The hint config's unknown keys get, so a typo reads as one rather than as a list to scan.
        let meant = crate::config::closest(unknown, known.iter().copied()).map_or_else(
            // Review F9: `lr` or `num_envs` in `[params]` is a `[run]` key in the wrong table.
            || match crate::config::RunConfig::KEYS.contains(&unknown.as_str()) {
                true => format!("; `{unknown}` is a key of `[run]`, and a key belongs to the table header above it: write it under `[run]`"),
                false => String::new(),
            },
            |k| format!("; did you mean `{k}`?"),
        );
        let known = if known.is_empty() { "it takes none".to_string() } else { format!("known: {}", known.join(", ")) };
        return Err(problem(unknown, format!("unknown parameter ({known}){meant}")));
    }
    for spec in &plugin.params {
        let value = params.get(&spec.name).unwrap_or(&spec.default);
        check_value(spec, value)?;
    }
    Ok(())
}

/// `params` with each number in its parameter's declared type: a whole number for a `float`
/// parameter becomes that float (`1` → `1.0`), a float with no fractional part for an `int`
/// becomes that integer (`4.0` → `4`). The plugin reads both spellings as one value, so run ids
/// hash this form (review F2: `clip_coef = [1, 1.0]` trained the same configuration twice, under
/// two ids). A number already in its declared type, the form a user writes, is left as written,
/// so the ids of such sweeps do not move. `None` when nothing changes.
pub fn retype_params(plugin: &PluginDescription, params: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut out = params.clone();
    let mut changed = false;
    for spec in &plugin.params {
        let Some(value) = out.get_mut(&spec.name) else { continue };
        let retyped = match spec.kind.as_str() {
            "float" if value.is_i64() || value.is_u64() => value.as_f64().and_then(serde_json::Number::from_f64).map(Value::Number),
            "int" if value.is_f64() => as_integer(value).map(Value::from),
            _ => None,
        };
        if let Some(v) = retyped {
            *value = v;
            changed = true;
        }
    }
    changed.then_some(out)
}

/// The keys of `params` (retyped, `retype_params`) that hold their parameter's declared default:
/// a run without them is the same training.
pub fn keys_at_default<'a>(plugin: &PluginDescription, params: &'a Map<String, Value>) -> Vec<&'a str> {
    params
        .iter()
        .filter(|(key, value)| plugin.params.iter().any(|p| &p.name == *key && p.default == **value))
        .map(|(key, _)| key.as_str())
        .collect()
}

/// An integer, accepting floats with no fractional part (TOML → JSON may give `4.0`).
fn as_integer(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15).map(|x| x as i64))
}

fn check_value(spec: &ParamDescription, value: &Value) -> Result<(), ParamProblem> {
    let name = spec.name.as_str();
    if value.is_null() {
        return if spec.default.is_null() { Ok(()) } else { Err(problem(name, "expected a value, got null".into())) };
    }
    let wrong = || problem(name, format!("expected {}, got {value}", spec.kind));
    let number = match spec.kind.as_str() {
        "float" => Some(value.as_f64().ok_or_else(wrong)?),
        "int" => Some(as_integer(value).ok_or_else(wrong)? as f64),
        "bool" => value.as_bool().map(|_| None).ok_or_else(wrong)?,
        "string" => value.as_str().map(|_| None).ok_or_else(wrong)?,
        // A kind newer than the drover-job that described it: the plugin itself will judge.
        _ => None,
    };
    if let Some(x) = number {
        if let Some(min) = spec.min.filter(|&min| x < min) {
            return Err(problem(name, format!("must be at least {min}, got {x}")));
        }
        if let Some(max) = spec.max.filter(|&max| x > max) {
            return Err(problem(name, format!("must be at most {max}, got {x}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> PluginDescription {
        let p = |name: &str, kind: &str, default: Value, min, max| ParamDescription {
            name: name.into(),
            kind: kind.into(),
            default,
            doc: String::new(),
            min,
            max,
        };
        PluginDescription {
            path: "/x.so".into(),
            name: "ppo".into(),
            version: "0.1.0".into(),
            description: String::new(),
            interface_version: "1.0".into(),
            host_interface_version: "1.0".into(),
            sha256: String::new(),
            params: vec![
                p("gamma", "float", 0.99.into(), Some(0.0), Some(1.0)),
                p("target_kl", "float", Value::Null, Some(0.0), None),
                p("k", "int", 4.into(), Some(1.0), None),
                p("flag", "bool", true.into(), None, None),
                p("mode", "string", "a".into(), None, None),
            ],
        }
    }

    fn check(json: Value) -> Result<(), (String, String)> {
        let Value::Object(map) = json else { panic!("object expected") };
        validate_params(&plugin(), &map).map_err(|p| (p.key, p.reason))
    }

    #[test]
    fn valid_params_pass_and_each_problem_names_its_key() {
        check(serde_json::json!({})).expect("defaults");
        check(serde_json::json!({"gamma": 1, "k": 2.0, "target_kl": null, "mode": "b"})).expect("valid");
        assert_eq!(
            check(serde_json::json!({"gama": 0.9})),
            Err(("gama".into(), "unknown parameter (known: gamma, target_kl, k, flag, mode); did you mean `gamma`?".into()))
        );
        // A stranger gets the list alone; a case slip still finds its key.
        assert_eq!(
            check(serde_json::json!({"learning_rate": 0.1})),
            Err(("learning_rate".into(), "unknown parameter (known: gamma, target_kl, k, flag, mode)".into()))
        );
        assert_eq!(check(serde_json::json!({"Target_KL": 0.1})).map_err(|e| e.1).unwrap_err().rsplit("; ").next(), Some("did you mean `target_kl`?"));
        // Review F9: a `[run]` key in `[params]` says where it belongs.
        assert_eq!(
            check(serde_json::json!({"num_envs": 4})).map_err(|e| e.1),
            Err("unknown parameter (known: gamma, target_kl, k, flag, mode); `num_envs` is a key of `[run]`, and a key belongs to the table header above it: write it under `[run]`".into())
        );
        assert_eq!(check(serde_json::json!({"gamma": "x"})), Err(("gamma".into(), "expected float, got \"x\"".into())));
        assert_eq!(check(serde_json::json!({"gamma": 1.5})), Err(("gamma".into(), "must be at most 1, got 1.5".into())));
        assert_eq!(check(serde_json::json!({"k": 0})), Err(("k".into(), "must be at least 1, got 0".into())));
        assert_eq!(check(serde_json::json!({"k": 1.5})).map_err(|e| e.0), Err("k".into()));
        assert_eq!(check(serde_json::json!({"flag": 1})).map_err(|e| e.0), Err("flag".into()));
        assert_eq!(check(serde_json::json!({"gamma": null})).map_err(|e| e.0), Err("gamma".into()));
    }

    /// Review F2: the spellings the plugin reads as one value are one form; the natural one is
    /// kept as written (the ids of sweeps that write it do not move).
    #[test]
    fn numbers_take_their_declared_type_and_defaults_are_found() {
        let retype = |json: Value| {
            let Value::Object(map) = json else { panic!("object expected") };
            retype_params(&plugin(), &map).map(Value::Object)
        };
        let cases = [
            (serde_json::json!({"gamma": 1}), Some(serde_json::json!({"gamma": 1.0}))),
            (serde_json::json!({"k": 4.0, "gamma": 0.5}), Some(serde_json::json!({"k": 4, "gamma": 0.5}))),
            (serde_json::json!({"gamma": 0.5, "k": 4, "flag": true, "mode": "1"}), None),
            (serde_json::json!({"k": 4.5, "other": 1}), None),
        ];
        for (params, expected) in cases {
            assert_eq!(retype(params.clone()), expected, "{params}");
        }
        let Value::Object(map) = serde_json::json!({"gamma": 0.99, "k": 5, "mode": "a", "flag": false}) else { unreachable!() };
        assert_eq!(keys_at_default(&plugin(), &map), ["gamma", "mode"]);
    }
}
