//! Validation of a plugin's params JSON against its `ParamSpec`s, with defaults filled in.

use serde_json::{Map, Value};

use crate::{
    error::PluginError,
    types::{ParamKind, ParamSpec},
};

/// A validated params object: every declared key present (defaults filled in), no unknown
/// key, every value of its declared kind and within range.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    values: Map<String, Value>,
}

impl Params {
    /// Parses `json` (a JSON object; empty text means `{}`) and validates it against `specs`.
    ///
    /// # Errors
    /// [`PluginError`] of kind `InvalidParams` naming the key: unknown key, wrong type, out of
    /// range, or a malformed default in the plugin's own spec.
    pub fn parse(specs: &[ParamSpec], json: &str) -> Result<Self, PluginError> {
        let given: Value = if json.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(json).map_err(|e| {
                PluginError::invalid_params("<params>", format!("not valid JSON: {e}"))
            })?
        };
        let Value::Object(given) = given else {
            return Err(PluginError::invalid_params(
                "<params>",
                format!("expected a JSON object, got {}", type_name(&given)),
            ));
        };
        if let Some(unknown) = given
            .keys()
            .find(|k| !specs.iter().any(|s| s.name.as_str() == k.as_str()))
        {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(PluginError::invalid_params(
                unknown.as_str(),
                format!("unknown parameter (known: {})", known.join(", ")),
            ));
        }
        let mut values = Map::new();
        for spec in specs {
            let name = spec.name.as_str();
            let default: Value = serde_json::from_str(spec.default.as_str()).map_err(|e| {
                PluginError::invalid_params(
                    name,
                    format!("the plugin's default is not valid JSON: {e}"),
                )
            })?;
            let value = given.get(name).cloned().unwrap_or_else(|| default.clone());
            check_value(spec, &value, default.is_null())?;
            values.insert(name.to_owned(), value);
        }
        Ok(Self { values })
    }

    /// The resolved object, defaults included.
    pub fn json(&self) -> Value {
        Value::Object(self.values.clone())
    }

    fn get(&self, key: &str) -> Result<&Value, PluginError> {
        self.values.get(key).ok_or_else(|| {
            PluginError::internal(format!(
                "parameter `{key}` is not declared in the plugin's info"
            ))
        })
    }

    /// A float parameter.
    ///
    /// # Errors
    /// When `key` was not declared or is `null`.
    pub fn f64(&self, key: &str) -> Result<f64, PluginError> {
        self.opt_f64(key)?
            .ok_or_else(|| PluginError::invalid_params(key, "expected a number, got null"))
    }

    /// An optional float parameter (`None` for `null`).
    ///
    /// # Errors
    /// When `key` was not declared.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, PluginError> {
        Ok(self.get(key)?.as_f64())
    }

    /// An integer parameter.
    ///
    /// # Errors
    /// When `key` was not declared or is `null`.
    pub fn i64(&self, key: &str) -> Result<i64, PluginError> {
        let v = self.get(key)?;
        as_integer(v).ok_or_else(|| {
            PluginError::invalid_params(key, format!("expected an integer, got {v}"))
        })
    }

    /// An optional integer parameter (`None` for `null`).
    ///
    /// # Errors
    /// When `key` was not declared.
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, PluginError> {
        let v = self.get(key)?;
        if v.is_null() {
            return Ok(None);
        }
        as_integer(v).map(Some).ok_or_else(|| {
            PluginError::invalid_params(key, format!("expected an integer, got {v}"))
        })
    }

    /// A boolean parameter.
    ///
    /// # Errors
    /// When `key` was not declared or is `null`.
    pub fn bool(&self, key: &str) -> Result<bool, PluginError> {
        let v = self.get(key)?;
        v.as_bool()
            .ok_or_else(|| PluginError::invalid_params(key, format!("expected a bool, got {v}")))
    }

    /// A string parameter.
    ///
    /// # Errors
    /// When `key` was not declared or is `null`.
    pub fn str(&self, key: &str) -> Result<&str, PluginError> {
        let v = self.get(key)?;
        v.as_str()
            .ok_or_else(|| PluginError::invalid_params(key, format!("expected a string, got {v}")))
    }

    /// An optional string parameter (`None` for `null`).
    ///
    /// # Errors
    /// When `key` was not declared.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, PluginError> {
        let v = self.get(key)?;
        if v.is_null() {
            return Ok(None);
        }
        v.as_str()
            .map(Some)
            .ok_or_else(|| PluginError::invalid_params(key, format!("expected a string, got {v}")))
    }
}

/// See [`PluginInfo::check_params`](crate::PluginInfo::check_params).
pub(crate) fn check_declarations(specs: &[ParamSpec]) -> Result<(), String> {
    for (i, spec) in specs.iter().enumerate() {
        let name = spec.name.as_str();
        if name.is_empty() {
            return Err(format!("param {} of {}: empty name", i + 1, specs.len()));
        }
        if specs[..i].iter().any(|s| s.name.as_str() == name) {
            return Err(format!("param `{name}`: declared twice"));
        }
        let Some(kind) = spec.kind() else {
            continue; // a kind newer than this crate: the host that knows it checks it
        };
        let (min, max) = (spec.min.into_option(), spec.max.into_option());
        let numeric = matches!(kind, ParamKind::Float | ParamKind::Int);
        if !numeric && (min.is_some() || max.is_some()) {
            return Err(format!(
                "param `{name}`: a {} param has a range (ranges apply to float and int params)",
                kind.name()
            ));
        }
        if let Some(bound) = [min, max].into_iter().flatten().find(|b| b.is_nan()) {
            return Err(format!("param `{name}`: its range has a bound of {bound}"));
        }
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                return Err(format!("param `{name}`: its range [{lo}, {hi}] is empty (min > max)"));
            }
        }
        let default: Value = serde_json::from_str(spec.default.as_str())
            .map_err(|e| format!("param `{name}`: default `{}` is not JSON: {e}", spec.default))?;
        if default.is_null() {
            continue;
        }
        let number = match kind {
            ParamKind::Float => default.as_f64(),
            ParamKind::Int => as_integer(&default).map(|x| x as f64),
            ParamKind::Bool => default.as_bool().map(|_| f64::NAN),
            ParamKind::Str => default.as_str().map(|_| f64::NAN),
        };
        let Some(x) = number else {
            return Err(format!("param `{name}`: default {default} is not {}", kind.name()));
        };
        if min.is_some_and(|lo| x < lo) || max.is_some_and(|hi| x > hi) {
            let range = format!(
                "[{}, {}]",
                min.map_or("-inf".to_owned(), |b| b.to_string()),
                max.map_or("inf".to_owned(), |b| b.to_string())
            );
            return Err(format!("param `{name}`: default {x} is outside its own range {range}"));
        }
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An integer, accepting floats with no fractional part (TOML → JSON may give `4.0`).
fn as_integer(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
            .map(|x| x as i64)
    })
}

fn check_value(spec: &ParamSpec, value: &Value, nullable: bool) -> Result<(), PluginError> {
    let name = spec.name.as_str();
    if value.is_null() {
        return if nullable {
            Ok(())
        } else {
            Err(PluginError::invalid_params(
                name,
                "expected a value, got null",
            ))
        };
    }
    let Some(kind) = spec.kind() else {
        return Err(PluginError::invalid_params(
            name,
            "parameter kind unknown to this drover version",
        ));
    };
    let wrong =
        || PluginError::invalid_params(name, format!("expected {}, got {value}", kind.name()));
    let number = match kind {
        ParamKind::Float => Some(value.as_f64().ok_or_else(wrong)?),
        ParamKind::Int => Some(as_integer(value).ok_or_else(wrong)? as f64),
        ParamKind::Bool => value.as_bool().map(|_| None).ok_or_else(wrong)?,
        ParamKind::Str => value.as_str().map(|_| None).ok_or_else(wrong)?,
    };
    if let Some(x) = number {
        if let Some(min) = spec.min.into_option() {
            if x < min {
                return Err(PluginError::invalid_params(
                    name,
                    format!("must be at least {min}, got {x}"),
                ));
            }
        }
        if let Some(max) = spec.max.into_option() {
            if x > max {
                return Err(PluginError::invalid_params(
                    name,
                    format!("must be at most {max}, got {x}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::float("gamma", 0.99, "discount").range(0.0, 1.0),
            ParamSpec::optional_float("target_kl", "early stop").min(0.0),
            ParamSpec::int("k", 4, "count").min(1.0),
            ParamSpec::bool("flag", true, "a flag"),
            ParamSpec::string("mode", "a", "a mode"),
        ]
    }

    fn err_key(json: &str) -> (String, String) {
        let e = Params::parse(&specs(), json).expect_err("should be rejected");
        (e.key().unwrap_or("").to_owned(), e.message().to_owned())
    }

    #[test]
    fn defaults_are_filled() {
        let p = Params::parse(&specs(), "").expect("empty params are valid");
        assert_eq!(p.f64("gamma").ok(), Some(0.99));
        assert_eq!(p.opt_f64("target_kl").ok(), Some(None));
        assert_eq!(p.i64("k").ok(), Some(4));
        assert_eq!(p.bool("flag").ok(), Some(true));
        assert_eq!(p.str("mode").ok(), Some("a"));
        let p = Params::parse(&specs(), r#"{"gamma": 0.5, "target_kl": 0.01, "k": 2.0}"#)
            .expect("valid");
        assert_eq!(p.f64("gamma").ok(), Some(0.5));
        assert_eq!(p.opt_f64("target_kl").ok(), Some(Some(0.01)));
        assert_eq!(p.i64("k").ok(), Some(2));
    }

    /// An int or string may be optional as a float is: absent is `None`, a value is checked
    /// against its kind and range as usual.
    #[test]
    fn optional_ints_and_strings_read_as_none_or_their_value() {
        let specs = vec![
            ParamSpec::optional_int("max_len", "a cap").min(1.0),
            ParamSpec::optional_string("dataset", "a name"),
        ];
        assert_eq!(check_declarations(&specs), Ok(()));
        let p = Params::parse(&specs, "").expect("absent is fine");
        assert_eq!((p.opt_i64("max_len").ok(), p.opt_str("dataset").ok()), (Some(None), Some(None)));
        let p = Params::parse(&specs, r#"{"max_len": 8.0, "dataset": "gsm8k"}"#).expect("valid");
        assert_eq!((p.opt_i64("max_len").ok(), p.opt_str("dataset").ok()), (Some(Some(8)), Some(Some("gsm8k"))));
        assert!(p.i64("max_len").is_ok() && p.str("dataset").is_ok());
        let p = Params::parse(&specs, r#"{"max_len": null}"#).expect("null is absent");
        assert!(p.i64("max_len").is_err(), "the non-optional getter refuses null");
        let e = Params::parse(&specs, r#"{"max_len": 0}"#).expect_err("below the range");
        assert_eq!(e.key(), Some("max_len"));
        let e = Params::parse(&specs, r#"{"dataset": 3}"#).expect_err("not a string");
        assert_eq!(e.key(), Some("dataset"));
    }

    #[test]
    fn rejections_name_the_key() {
        assert_eq!(err_key(r#"{"gama": 0.9}"#).0, "gama");
        assert!(err_key(r#"{"gama": 0.9}"#).1.contains("unknown parameter"));
        assert_eq!(
            err_key(r#"{"gamma": "x"}"#),
            ("gamma".into(), "expected float, got \"x\"".into())
        );
        assert_eq!(
            err_key(r#"{"gamma": 1.5}"#),
            ("gamma".into(), "must be at most 1, got 1.5".into())
        );
        assert_eq!(
            err_key(r#"{"k": 0}"#),
            ("k".into(), "must be at least 1, got 0".into())
        );
        assert_eq!(err_key(r#"{"k": 1.5}"#).0, "k");
        assert_eq!(err_key(r#"{"flag": 1}"#).0, "flag");
        assert_eq!(err_key(r#"{"gamma": null}"#).0, "gamma");
        assert_eq!(err_key("[1]").0, "<params>");
        assert_eq!(err_key("{").0, "<params>");
    }

    /// Review finding 6: the plugin's own declarations, checked once, each mistake named.
    #[test]
    fn bad_declarations_are_named_with_their_param() {
        let problem = |extra: ParamSpec| {
            let mut all = specs();
            all.push(extra);
            check_declarations(&all).err()
        };
        assert_eq!(check_declarations(&specs()), Ok(()));
        let cases = [
            (ParamSpec::float("coef", 2.0, "c").range(0.0, 1.0), "param `coef`: default 2 is outside its own range [0, 1]"),
            (ParamSpec::int("n", 0, "c").min(1.0), "param `n`: default 0 is outside its own range [1, inf]"),
            (ParamSpec::float("coef", 0.5, "c").range(1.0, 0.0), "param `coef`: its range [1, 0] is empty (min > max)"),
            (ParamSpec::float("coef", 0.5, "c").max(f64::NAN), "param `coef`: its range has a bound of NaN"),
            (ParamSpec::int("k", 1, "again"), "param `k`: declared twice"),
            (ParamSpec::bool("b", true, "c").range(0.0, 0.5), "param `b`: a bool param has a range (ranges apply to float and int params)"),
            (ParamSpec::string("s", "x", "c").min(1.0), "param `s`: a string param has a range (ranges apply to float and int params)"),
            (ParamSpec::float("", 1.0, "c"), "param 6 of 6: empty name"),
        ];
        for (spec, expected) in cases {
            assert_eq!(problem(spec).as_deref(), Some(expected));
        }
        let mut wrong_kind = ParamSpec::int("w", 1, "c");
        wrong_kind.default = "\"one\"".into();
        assert_eq!(problem(wrong_kind).as_deref(), Some("param `w`: default \"one\" is not int"));
        let mut not_json = ParamSpec::float("w", 1.0, "c");
        not_json.default = "inf".into();
        assert!(problem(not_json).is_some_and(|p| p.starts_with("param `w`: default `inf` is not JSON")));
        // An optional float (default null) with a range is fine.
        assert_eq!(problem(ParamSpec::optional_float("o", "c").min(0.0)), None);
    }

    /// A non-finite float default used to become `null`, silently making the param optional.
    #[test]
    fn a_non_finite_float_default_is_refused_where_it_is_written() {
        for x in [f64::INFINITY, f64::NAN] {
            let panic = std::panic::catch_unwind(|| ParamSpec::float("max_norm", x, "c")).expect_err("refused");
            let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(text.starts_with("ParamSpec::float(`max_norm`): the default"), "{text}");
            assert!(text.contains("ParamSpec::optional_float"), "{text}");
        }
    }
}
