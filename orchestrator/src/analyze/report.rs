//! Output of `drover analyze`: the summary joined with its intervals, CSV/Parquet/Markdown files,
//! the tables printed on the terminal (summary, entropy-performance law), and the frames → plot
//! data conversions.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::load::polars_err;
use super::plot::{Bar, Line, Scatter};
use crate::error::AnalyzeError;

/// The per-group summary with the bootstrap intervals joined on, columns in reading order.
pub fn with_intervals(summary: LazyFrame, intervals: DataFrame, keys: &[String]) -> LazyFrame {
    let frame = summary.left_join(intervals.lazy(), col("group"), col("group"));
    let mut order: Vec<Expr> = keys.iter().map(|k| col(k.as_str())).collect();
    order.push(col("group"));
    for name in [
        "runs",
        "scored",
        "strata",
        "final_return_iqm",
        "final_return_iqm_lo",
        "final_return_iqm_hi",
        "final_return_mean",
        "final_return_mean_lo",
        "final_return_mean_hi",
        "final_return_std",
        "final_return_median",
        "final_return_median_lo",
        "final_return_median_hi",
        "optimality_gap",
        "optimality_gap_lo",
        "optimality_gap_hi",
        "target",
        "auc_mean",
        "auc_mean_lo",
        "auc_mean_hi",
        "steps_to_threshold_mean",
        "reached",
    ] {
        // A group whose strata hold different numbers of runs takes the stratum-balanced point
        // `bootstrap::intervals` computed; a balanced one keeps the summary's (the same value)
        // unless that overflowed (finite returns near `f64::MAX`), where the eager point is
        // computed overflow-safe.
        if super::bootstrap::STATS.contains(&name) {
            let keep = col("balanced").and(col(name).is_finite());
            order.push(when(keep).then(col(name)).otherwise(coalesce(&[col(format!("{name}_point")), col(name)])).alias(name));
        } else {
            order.push(col(name));
        }
    }
    frame.select(order)
}

/// The collected summary with the probability that the best group improves on each
/// (`bootstrap::improvement_over`) as its last columns, rows in the summary's order.
pub fn with_improvement(summary: DataFrame, improvement: DataFrame) -> Result<DataFrame, AnalyzeError> {
    let columns = ["p_best_better", "p_best_better_lo", "p_best_better_hi"];
    summary
        .lazy()
        .with_row_index("__row", None)
        .left_join(improvement.lazy().select([col("group"), cols(columns).as_expr()]), col("group"), col("group"))
        // A left join need not keep the left order.
        .sort(["__row"], SortMultipleOptions::default())
        .drop(cols(["__row"]))
        .collect()
        .map_err(polars_err("joining the probability of improvement"))
}

/// Writes `df` as `<dir>/<stem>.{csv,parquet}` (and `.md` when `markdown` is given); returns the
/// paths. The Parquet file is uncompressed (see the comment below). Each file is encoded in
/// memory and written by `layout::write_atomic`, so an interrupted write leaves no torn table
/// and a failed one no temporary file.
pub fn write_frame(dir: &Path, stem: &str, df: &mut DataFrame, markdown: Option<&str>) -> Result<Vec<PathBuf>, AnalyzeError> {
    std::fs::create_dir_all(dir).map_err(|source| AnalyzeError::Io { action: "create directory", path: dir.to_path_buf(), source })?;
    let mut written = Vec::new();
    for ext in ["csv", "parquet"] {
        let path = dir.join(format!("{stem}.{ext}"));
        let mut bytes = Vec::new();
        let result = if ext == "csv" {
            CsvWriter::new(&mut bytes).finish(df)
        } else {
            // Uncompressed: these tables are small, and every Parquet reader (pandas with either
            // engine, Python polars, DuckDB, arrow-rs without codec features) reads it.
            ParquetWriter::new(&mut bytes).with_compression(ParquetCompression::Uncompressed).finish(df).map(|_| ())
        };
        result.map_err(polars_err(format!("writing `{}`", path.display())))?;
        crate::layout::write_atomic(&path, &bytes).map_err(|source| AnalyzeError::Io { action: "write", path: path.clone(), source })?;
        written.push(path);
    }
    if let Some(md) = markdown {
        let path = dir.join(format!("{stem}.md"));
        crate::layout::write_atomic(&path, md.as_bytes())
            .map_err(|source| AnalyzeError::Io { action: "write", path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

fn f64_values(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, AnalyzeError> {
    let c = df
        .column(name)
        .and_then(|c| c.cast(&DataType::Float64))
        .map_err(polars_err(format!("reading column `{name}`")))?;
    let c = c.f64().map_err(polars_err(format!("reading column `{name}`")))?;
    Ok((0..c.len()).map(|i| c.get(i)).collect())
}

fn str_values(df: &DataFrame, name: &str) -> Result<Vec<String>, AnalyzeError> {
    let c = df.column(name).and_then(|c| c.str().cloned()).map_err(polars_err(format!("reading column `{name}`")))?;
    Ok((0..c.len()).map(|i| c.get(i).unwrap_or("").to_string()).collect())
}

/// The summary as rows of text cells, with the header first.
fn cells(summary: &DataFrame) -> Result<Vec<Vec<String>>, AnalyzeError> {
    // Beyond 1e21 in scientific notation: 1.5e308 in full is a cell of 310 digits.
    let num = |v: Option<f64>, prec: usize| {
        v.filter(|v| v.is_finite()).map_or("-".to_string(), |v| if v.abs() < 1e21 { format!("{v:.prec$}") } else { format!("{v:.prec$e}") })
    };
    // The table's decimals can round a spread away: an interval [39.01, 39.04] would print as
    // [39.0, 39.0] and a std of 0.02 as 0.0, both reading as "no spread at all". Such a cell
    // gets the few more decimals that show it (at most `MAX_DECIMALS`); only an interval that
    // is zero-width prints as one.
    let ci = |p: Option<f64>, lo: Option<f64>, hi: Option<f64>, prec: usize| match (lo, hi) {
        (Some(l), Some(h)) => {
            let mut prec = prec;
            while prec < MAX_DECIMALS && l != h && num(lo, prec) == num(hi, prec) {
                prec += 1;
            }
            format!("{} [{}, {}]", num(p, prec), num(lo, prec), num(hi, prec))
        }
        _ => num(p, prec),
    };
    let spread = |v: Option<f64>, prec: usize| {
        let mut prec = prec;
        while prec < MAX_DECIMALS && v.is_some_and(|v| v != 0.0 && num(Some(v), prec).parse::<f64>() == Ok(0.0)) {
            prec += 1;
        }
        num(v, prec)
    };
    let group = str_values(summary, "group")?;
    let get = |name: &str| f64_values(summary, name);
    let (runs, reached, scored) = (get("runs")?, get("reached")?, get("scored")?);
    // A run without a final return counts in no score: the cell says how many of the runs that is.
    let runs_cell = |i: usize| match (runs[i], scored[i]) {
        (Some(n), Some(k)) if k < n => format!("{} ({} unscored)", num(Some(n), 0), num(Some(n - k), 0)),
        (n, _) => num(n, 0),
    };
    let (iqm, iqm_lo, iqm_hi) = (get("final_return_iqm")?, get("final_return_iqm_lo")?, get("final_return_iqm_hi")?);
    let (mean, std, median) = (get("final_return_mean")?, get("final_return_std")?, get("final_return_median")?);
    let (gap, gap_lo, gap_hi) = (get("optimality_gap")?, get("optimality_gap_lo")?, get("optimality_gap_hi")?);
    let (auc, steps) = (get("auc_mean")?, get("steps_to_threshold_mean")?);
    // Returns of hundreds (CartPole) read well with one decimal; accuracies in [0, 1] need three.
    // One precision per table keeps a column aligned, but one table can hold both (several
    // sweeps analyzed together): a group whose values are all below 1 keeps three decimals
    // rather than printing as 0.0 next to CartPole's returns.
    let magnitude = |values: &[Option<f64>]| values.iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    let scale = magnitude(&[iqm.as_slice(), mean.as_slice()].concat());
    let table_d = if scale < 10.0 { 3 } else if scale < 100.0 { 2 } else { 1 };
    let decimals = |i: usize| if magnitude(&[iqm[i], mean[i], median[i]]) < 1.0 { 3 } else { table_d };
    let improvement = summary.column("p_best_better").is_ok();
    let (p, p_lo, p_hi) = if improvement {
        (get("p_best_better")?, get("p_best_better_lo")?, get("p_best_better_hi")?)
    } else {
        (vec![], vec![], vec![])
    };
    let mut header: Vec<String> =
        ["group", "runs", "IQM [95% CI]", "mean ± std", "median", "optimality gap [95% CI]", "AUC", "reached", "steps to threshold"]
            .map(String::from)
            .to_vec();
    if improvement {
        header.push("P(best > this) [95% CI]".into());
    }
    let mut rows = vec![header];
    for i in 0..summary.height() {
        let d = decimals(i);
        let mut row = vec![
            group[i].clone(),
            runs_cell(i),
            ci(iqm[i], iqm_lo[i], iqm_hi[i], d),
            format!("{} ± {}", num(mean[i], d), spread(std[i], d)),
            num(median[i], d),
            ci(gap[i], gap_lo[i], gap_hi[i], d),
            num(auc[i], d),
            format!("{}/{}", num(reached[i], 0), num(runs[i], 0)),
            num(steps[i], 0),
        ];
        if improvement {
            row.push(ci(p[i], p_lo[i], p_hi[i], 2));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Most decimals a printed cell gets to show a spread that the table's decimals round away.
const MAX_DECIMALS: usize = 6;

/// A fixed-width text table of the summary (first column left-aligned, the rest right-aligned).
pub fn render_table(summary: &DataFrame) -> Result<String, AnalyzeError> {
    Ok(text_table(&cells(summary)?))
}

/// The summary as a Markdown (GitHub) table.
pub fn render_markdown(summary: &DataFrame) -> Result<String, AnalyzeError> {
    Ok(markdown_table(&cells(summary)?))
}

/// The entropy-performance law's per-group summary (`law_summary` columns) as a text table.
pub fn render_law_table(summary: &DataFrame) -> Result<String, AnalyzeError> {
    Ok(text_table(&law_cells(summary)?))
}

/// The entropy-performance law's per-group summary as a Markdown table.
pub fn render_law_markdown(summary: &DataFrame) -> Result<String, AnalyzeError> {
    Ok(markdown_table(&law_cells(summary)?))
}

/// The law summary as rows of text cells, header first: fitted runs of all, then the mean over
/// runs of a, b, R² and the ceiling b − a, each with its 95% interval.
fn law_cells(summary: &DataFrame) -> Result<Vec<Vec<String>>, AnalyzeError> {
    let num = |v: Option<f64>| v.filter(|v| v.is_finite()).map_or("-".to_string(), |v| format!("{v:.3}"));
    let group = str_values(summary, "group")?;
    let (runs, fitted) = (f64_values(summary, "runs")?, f64_values(summary, "fitted")?);
    let mut stats = Vec::new();
    for stat in LAW_STATS {
        stats.push([f64_values(summary, &format!("{stat}_mean"))?, f64_values(summary, &format!("{stat}_lo"))?, f64_values(summary, &format!("{stat}_hi"))?]);
    }
    let header = ["group", "fitted", "a [95% CI]", "b [95% CI]", "R² [95% CI]", "R(H=0) = b − a [95% CI]"];
    let mut rows = vec![header.map(String::from).to_vec()];
    for i in 0..summary.height() {
        let count = |v: Option<f64>| v.map_or(0, |v| v as i64);
        let mut row = vec![group[i].clone(), format!("{}/{}", count(fitted[i]), count(runs[i]))];
        for [mean, lo, hi] in &stats {
            row.push(match (mean[i], lo[i], hi[i]) {
                (Some(m), Some(l), Some(h)) => format!("{} [{}, {}]", num(Some(m)), num(Some(l)), num(Some(h))),
                (m, _, _) => num(m),
            });
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The law statistics summarized per group, in table order.
pub const LAW_STATS: [&str; 4] = ["a", "b", "r2", "ceiling"];

/// Rows of cells as a fixed-width text table (first column left-aligned, the rest right-aligned).
fn text_table(rows: &[Vec<String>]) -> String {
    let mut widths = vec![0; rows.first().map_or(0, Vec::len)];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let parts: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(j, (c, &w))| if j == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Rows of cells (header first) as a Markdown (GitHub) table.
fn markdown_table(rows: &[Vec<String>]) -> String {
    let escape = |c: &str| c.replace('|', "\\|");
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&format!("| {} |\n", row.iter().map(|c| escape(c)).collect::<Vec<_>>().join(" | ")));
        if i == 0 {
            let align: Vec<&str> = (0..row.len()).map(|j| if j == 0 { ":--" } else { "--:" }).collect();
            out.push_str(&format!("| {} |\n", align.join(" | ")));
        }
    }
    out
}

/// Bars of the summary's IQM with its interval, in the summary's order, coloured by row.
pub fn bars(summary: &DataFrame) -> Result<Vec<Bar>, AnalyzeError> {
    let group = str_values(summary, "group")?;
    let (v, lo, hi) = (
        f64_values(summary, "final_return_iqm")?,
        f64_values(summary, "final_return_iqm_lo")?,
        f64_values(summary, "final_return_iqm_hi")?,
    );
    Ok((0..group.len())
        .map(|i| Bar {
            name: group[i].clone(),
            value: v[i].unwrap_or(f64::NAN),
            lo: lo[i].unwrap_or(f64::NAN),
            hi: hi[i].unwrap_or(f64::NAN),
            colour: i,
        })
        .collect())
}

/// Lines of a `(group, x, y, lo, hi)` frame for the groups in `groups`, in that order.
fn lines(df: &DataFrame, groups: &[String], [x, y, lo, hi]: [&str; 4]) -> Result<Vec<Line>, AnalyzeError> {
    let name = str_values(df, "group")?;
    let (xs, ys, los, his) = (f64_values(df, x)?, f64_values(df, y)?, f64_values(df, lo)?, f64_values(df, hi)?);
    Ok(groups
        .iter()
        .map(|g| {
            let mut points: Vec<(f64, f64, f64, f64)> = (0..name.len())
                .filter(|&i| &name[i] == g)
                .filter_map(|i| Some((xs[i]?, ys[i]?, los[i].unwrap_or(f64::NAN), his[i].unwrap_or(f64::NAN))))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Line { name: g.clone(), points }
        })
        .collect())
}

/// Learning-curve lines (IQM over runs, with its band) of `bootstrap::curves`' frame.
pub fn curve_lines(curves: &DataFrame, groups: &[String]) -> Result<Vec<Line>, AnalyzeError> {
    lines(curves, groups, ["step", "iqm", "iqm_lo", "iqm_hi"])
}

/// Performance-profile lines of `bootstrap::profiles`' frame.
pub fn profile_lines(profiles: &DataFrame, groups: &[String]) -> Result<Vec<Line>, AnalyzeError> {
    lines(profiles, groups, ["tau", "fraction", "fraction_lo", "fraction_hi"])
}

/// Most dots per group in the law's scatter plot: beyond it every k-th point is drawn, which
/// keeps the SVG small while the cloud keeps its shape.
const MAX_DOTS: usize = 2000;

/// The law's scatter plot data for the groups in `groups`, in that order: each group's (H, R)
/// points of `points` (columns `group, h, r`) and the curve R = −ā·exp(H) + b̄ over the points'
/// range of H, with ā, b̄ the group's means in `summary`. Since the law is linear in a and b,
/// that curve is the average of the runs' fitted curves.
pub fn law_scatter(points: &DataFrame, summary: &DataFrame, groups: &[String]) -> Result<Vec<Scatter>, AnalyzeError> {
    let (name, h, r) = (str_values(points, "group")?, f64_values(points, "h")?, f64_values(points, "r")?);
    let (summary_group, a, b) = (str_values(summary, "group")?, f64_values(summary, "a_mean")?, f64_values(summary, "b_mean")?);
    Ok(groups
        .iter()
        .map(|g| {
            let all: Vec<(f64, f64)> = (0..name.len())
                .filter(|&i| &name[i] == g)
                .filter_map(|i| Some((h[i]?, r[i]?)))
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            let stride = all.len().div_ceil(MAX_DOTS).max(1);
            let shown: Vec<(f64, f64)> = all.iter().step_by(stride).copied().collect();
            let fit = summary_group.iter().position(|s| s == g).and_then(|k| Some((a[k]?, b[k]?)));
            let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, u), p| (l.min(p.0), u.max(p.0)));
            let curve = match fit {
                Some((a, b)) if lo <= hi => (0..=50).map(|k| lo + (hi - lo) * f64::from(k) / 50.0).map(|x| (x, -a * x.exp() + b)).collect(),
                _ => Vec::new(),
            };
            Scatter { name: g.clone(), points: shown, curve }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review (crash consistency, item 1): tables had their own tmp-and-rename (`.<stem>.csv.tmp`),
    /// which left its temporary file behind when the rename failed; they now go through
    /// `layout::write_atomic`.
    #[test]
    fn a_table_that_cannot_be_written_leaves_no_tmp() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let blocked = tmp.path().join("summary.csv");
        std::fs::create_dir(&blocked).expect("mkdir");
        std::fs::write(blocked.join("keep"), b"kept").expect("write");
        let mut df = df!("group" => ["a"], "x" => [1.0]).expect("frame");
        write_frame(tmp.path(), "summary", &mut df, None).expect_err("a non-empty directory is in the way");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).expect("read").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["summary.csv"]);
        let written = write_frame(&tmp.path().join("tables"), "summary", &mut df, Some("| a |\n")).expect("written");
        assert_eq!(written.len(), 3);
        let mut names: Vec<_> = std::fs::read_dir(tmp.path().join("tables")).expect("read").map(|e| e.expect("entry").file_name()).collect();
        names.sort();
        assert_eq!(names, ["summary.csv", "summary.md", "summary.parquet"]);
    }
}
