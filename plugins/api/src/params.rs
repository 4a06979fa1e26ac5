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
}
