//! The slice syntax of `drover analyze`: `--where KEY OP VALUE` filters and `--group-by`/`--compare` keys.
//!
//! A key is a column of the runs table: a hyperparameter (`params.clip_coef`, `run.lr`), one of
//! `sweep`, `label`, `config_id`, `seed`, or a unique suffix of a hyperparameter (`clip_coef`,
//! `lr`); `algo` means `run.plugin` and `env` means `run.env`. OP is one of `=` (or `==`), `!=`,
//! `<`, `<=`, `>`, `>=`. For `=` and `!=` the value may be a comma-separated list (any of / none of);
//! a value in quotes is one value, and a `label` list is split into the labels there are.
//! Numbers compare as numbers, `true`/`false` as booleans, anything else as text.

use polars::prelude::*;

use crate::error::AnalyzeError;

/// Columns of the runs table that can be named besides the hyperparameters.
pub const RUN_COLUMNS: [&str; 5] = ["sweep", "label", "config_id", "seed", "run_id"];

/// A comparison operator of `--where`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=` or `==`: equal to one of the values.
    Eq,
    /// `!=`: equal to none of the values.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

fn query_err(expr: &str, reason: impl Into<String>) -> AnalyzeError {
    AnalyzeError::Query { expr: expr.to_string(), reason: reason.into() }
}

/// Turns a key error of [`resolve_key`]/[`parse_keys`] into one of the option `flag`
/// (`--group-by`): those take keys, not `--where` expressions, and the message says which.
pub(crate) fn for_flag(flag: &'static str) -> impl Fn(AnalyzeError) -> AnalyzeError {
    move |e| match e {
        AnalyzeError::Query { expr, reason } => AnalyzeError::Flag { flag, value: expr, reason },
        other => other,
    }
}

/// Resolves a user-given key to a column of `schema` (see the module doc for the rules).
pub fn resolve_key(key: &str, expr: &str, schema: &Schema) -> Result<String, AnalyzeError> {
    let key = key.trim();
    let alias = match key {
        "algo" | "algorithm" => "run.plugin",
        "env" => "run.env",
        other => other,
    };
    // The analysis's own columns (`load::RUN_KEY`) are not the user's to group or filter by:
    // they never reach a table, and the entropy law's frames have none.
    if schema.contains(alias) && !alias.starts_with("__drover") {
        return Ok(alias.to_string());
    }
    let hyper = || schema.iter_names().filter(|n| n.starts_with("run.") || n.starts_with("params."));
    let suffix = format!(".{key}");
    let mut matches: Vec<String> = hyper().filter(|n| n.ends_with(&suffix)).map(|n| n.to_string()).collect();
    matches.sort();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => {
            // The aliases too: a user who mistyped `algo` should see that it exists.
            let known: Vec<String> = RUN_COLUMNS
                .iter()
                .map(|s| s.to_string())
                .chain(hyper().map(|n| n.to_string()))
                .chain(["algo (run.plugin)".to_string(), "env (run.env)".to_string()])
                .collect();
            // The key meant by a typo: a column's whole name or its last part (`clip_cof`).
            let candidates = known.iter().map(|k| k.split(' ').next().unwrap_or(k)).chain(hyper().filter_map(|n| n.rsplit('.').next()));
            let meant = crate::config::closest(key, candidates).map_or(String::new(), |m| format!("; did you mean `{m}`?"));
            Err(query_err(expr, format!("unknown key `{key}`; known keys: {}{meant}", known.join(", "))))
        }
        many => Err(query_err(expr, format!("key `{key}` is ambiguous: {}", many.join(", ")))),
    }
}

/// Parses a comma-separated `--group-by` list into resolved column names (duplicates refused).
pub fn parse_keys(text: &str, schema: &Schema) -> Result<Vec<String>, AnalyzeError> {
    let mut keys = Vec::new();
    for part in text.split(',') {
        if part.trim().is_empty() {
            return Err(query_err(text, "empty key in the list"));
        }
        let key = resolve_key(part, text, schema)?;
        if keys.contains(&key) {
            return Err(query_err(text, format!("key `{key}` is named twice")));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Splits `KEY OP VALUE` at its first operator.
fn split(expr: &str) -> Result<(&str, Op, &str), AnalyzeError> {
    let at = expr.find(['=', '!', '<', '>']).ok_or_else(|| {
        query_err(expr, "expected KEY OP VALUE with OP one of =, ==, !=, <, <=, >, >=")
    })?;
    let rest = &expr[at..];
    let (op, len) = if rest.starts_with("==") {
        (Op::Eq, 2)
    } else if rest.starts_with("!=") {
        (Op::Ne, 2)
    } else if rest.starts_with("<=") {
        (Op::Le, 2)
    } else if rest.starts_with(">=") {
        (Op::Ge, 2)
    } else if rest.starts_with('=') {
        (Op::Eq, 1)
    } else if rest.starts_with('<') {
        (Op::Lt, 1)
    } else if rest.starts_with('>') {
        (Op::Gt, 1)
    } else {
        return Err(query_err(expr, "`!` must be followed by `=`"));
    };
    let (key, value) = (expr[..at].trim(), rest[len..].trim());
    if key.is_empty() {
        return Err(query_err(expr, "no key before the operator"));
    }
    if value.is_empty() {
        return Err(query_err(expr, "no value after the operator"));
    }
    Ok((key, op, value))
}

/// Splits at top-level commas, trimming each part: a comma inside brackets or braces belongs
/// to a list value (`hidden=[64,64],[32,32]` is two values), so list-valued hyperparameters can
/// be matched at all (`--where` value lists) and configuration labels split into their keys.
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    split_ranges(value).into_iter().map(|r| value[r].trim()).collect()
}

/// `split_list`'s parts as byte ranges of `value`, untrimmed.
fn split_ranges(value: &str) -> Vec<std::ops::Range<usize>> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in value.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(start..i);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(start..value.len());
    parts
}

/// The text inside matching double or single quotes around `value`, if it is quoted: one value,
/// commas and all (`label="a=1,b=2"`).
fn unquoted(value: &str) -> Option<&str> {
    ['"', '\''].into_iter().find_map(|q| value.strip_prefix(q)?.strip_suffix(q)).filter(|v| !v.is_empty())
}

/// The values of a `label=` list: the top-level comma-separated parts of `value` joined back
/// into labels of `labels` where they make up a sequence of them, longest labels first
/// (`params.x=1,params.y=2` is one label of two axes when that label exists); otherwise each
/// part on its own, as for any other key.
///
/// A run of parts is tried as its text in `value` (`lib ppo, v2=1.so`: a value with ", " in it,
/// as a plugin path can have), then as its trimmed parts joined by `,` (`x=1, y=2` for the
/// label `x=1,y=2`); splitting and joining alone turned the first into `lib ppo,v2=1.so`.
pub(crate) fn label_values(value: &str, labels: &[String]) -> Vec<String> {
    let ranges = split_ranges(value);
    let parts = split_list(value);
    let n = parts.len();
    let candidate = |from: usize, to: usize| -> Option<String> {
        let text = value[ranges[from].start..ranges[to - 1].end].trim();
        [text.to_string(), parts[from..to].join(",")].into_iter().find(|c| labels.contains(c))
    };
    let known = |from: usize, to: usize| candidate(from, to).is_some();
    // `ends[i]`: where the label starting at part i ends, when parts i.. split into labels.
    let mut ends: Vec<Option<usize>> = vec![None; n + 1];
    let mut tail_ok = vec![false; n + 1];
    tail_ok[n] = true;
    for i in (0..n).rev() {
        ends[i] = (i + 1..=n).rev().find(|&j| tail_ok[j] && known(i, j));
        tail_ok[i] = ends[i].is_some();
    }
    if !tail_ok[0] {
        return parts.into_iter().map(str::to_string).collect();
    }
    let (mut out, mut i) = (Vec::new(), 0);
    while let Some(j) = ends[i] {
        out.push(candidate(i, j).unwrap_or_else(|| parts[i..j].join(",")));
        i = j;
    }
    out
}

/// A list or table value as the runs table spells it (compact JSON: `[64, 64]` → `[64,64]`);
/// any other text unchanged.
fn json_text(value: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_))) => v.to_string(),
        _ => value.to_string(),
    }
}

/// Relative difference under which `=` and `!=` take two numbers as equal: they agree to about
/// 12 significant digits, far finer than any two settings a sweep means to tell apart.
pub const NUMBER_TOLERANCE: f64 = 1e-12;

/// The column a `--where` expression tests, resolved as `parse_where` resolves it.
pub fn where_key(expr: &str, schema: &Schema) -> Result<String, AnalyzeError> {
    let (key, _, _) = split(expr)?;
    resolve_key(key, expr, schema)
}

/// Parses one `--where` expression against the runs table's `schema` into a filter predicate.
pub fn parse_where(expr: &str, schema: &Schema) -> Result<Expr, AnalyzeError> {
    parse_where_with_labels(expr, schema, &[])
}

/// `parse_where`, knowing the `labels` of the runs: a configuration label joins its axes with
/// commas (`params.clip_coef=0.1,run.lr=0.001`), the same commas that separate the values of a
/// list, so `label=` values are read as the labels in `labels` they make up (`label_values`).
pub fn parse_where_with_labels(expr: &str, schema: &Schema, labels: &[String]) -> Result<Expr, AnalyzeError> {
    let (key, op, value) = split(expr)?;
    let column = resolve_key(key, expr, schema)?;
    let dtype = schema.get(&column).cloned().unwrap_or(DataType::Null);
    let quoted = unquoted(value);
    let values: Vec<String> = match (op, quoted) {
        (Op::Eq | Op::Ne, Some(one)) => vec![one.to_string()],
        (Op::Eq | Op::Ne, None) if column == "label" => label_values(value, labels),
        (Op::Eq | Op::Ne, None) => split_list(value).into_iter().map(str::to_string).collect(),
        _ => vec![value.to_string()],
    };
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    if values.iter().any(|v| v.is_empty()) {
        return Err(query_err(expr, "empty value in the list"));
    }
    let target = col(column.as_str());
    let numbers: Vec<f64> = if dtype.is_primitive_numeric() {
        values
            .iter()
            .map(|v| v.parse::<f64>().map_err(|_| query_err(expr, format!("`{v}` is not a number (key `{column}` is numeric)"))))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let literals: Vec<Expr> = if dtype.is_primitive_numeric() {
        numbers.iter().map(|&v| lit(v)).collect()
    } else if dtype == DataType::Boolean {
        if !matches!(op, Op::Eq | Op::Ne) {
            return Err(query_err(expr, format!("key `{column}` is true/false: only = and != apply")));
        }
        values
            .iter()
            .map(|v| match *v {
                "true" => Ok(lit(true)),
                "false" => Ok(lit(false)),
                other => Err(query_err(expr, format!("`{other}` is not true or false (key `{column}` is true/false)"))),
            })
            .collect::<Result<_, _>>()?
    } else {
        if !matches!(op, Op::Eq | Op::Ne) {
            return Err(query_err(expr, format!("key `{column}` is text: only = and != apply")));
        }
        values.iter().map(|v| lit(json_text(v))).collect()
    };
    let target = if dtype.is_primitive_numeric() { target.cast(DataType::Float64) } else { target };
    let any_equal = || {
        let equal: Vec<Expr> = if dtype.is_primitive_numeric() {
            // Equal within `NUMBER_TOLERANCE`: a grid written by a generator's
            // arithmetic holds 0.00030000000000000003 where the user types 0.0003.
            numbers
                .iter()
                .map(|&v| {
                    let tolerance = v.abs() * NUMBER_TOLERANCE;
                    target.clone().gt_eq(lit(v - tolerance)).and(target.clone().lt_eq(lit(v + tolerance)))
                })
                .collect()
        } else {
            literals.iter().cloned().map(|l| target.clone().eq(l)).collect()
        };
        equal.into_iter().reduce(|a, b| a.or(b)).unwrap_or(lit(false))
    };
    // A missing value (null) never matches; `fill_null` keeps `!=` from letting it through as null.
    let predicate = match op {
        Op::Eq => any_equal(),
        Op::Ne => any_equal().not(),
        Op::Lt => target.lt(literals[0].clone()),
        Op::Le => target.lt_eq(literals[0].clone()),
        Op::Gt => target.gt(literals[0].clone()),
        Op::Ge => target.gt_eq(literals[0].clone()),
    };
    Ok(predicate.fill_null(lit(false)))
}
