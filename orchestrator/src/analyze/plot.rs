//! Plots of `drover analyze` (plotters): learning curves and performance profiles as lines with
//! bootstrap bands, final scores as bars with interval whiskers, the entropy-performance law as
//! points with fitted curves; each written as PNG and SVG.
//!
//! Text is drawn with a DejaVu Sans subset embedded in the binary (`fonts/`), so plots look the
//! same on a cluster login node without any system font.

use std::path::{Path, PathBuf};
use std::sync::Once;

use ab_glyph::{Font, FontRef, ScaleFont};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

use crate::error::AnalyzeError;

pub(super) const FONT: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (1000, 620);

/// Tableau 10: distinguishable, and readable for the common forms of colour blindness.
pub(super) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One line with its band: `(x, y, lower, upper)` points in increasing x.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The legend entry.
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// One bar with its interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// The axis label.
    pub name: String,
    /// The bar's length (not finite: no bar is drawn, only the name).
    pub value: f64,
    /// Lower end of the whisker.
    pub lo: f64,
    /// Upper end of the whisker.
    pub hi: f64,
    /// Index into the palette: the group's rank by IQM, the index its line has in the other
    /// charts of the analysis, so a group has one colour in all of them.
    pub colour: usize,
}

/// One group of a scatter chart: its points and the curve fitted to them.
#[derive(Clone, Debug, PartialEq)]
pub struct Scatter {
    /// The legend entry.
    pub name: String,
    /// The points, drawn as dots.
    pub points: Vec<(f64, f64)>,
    /// The fitted curve, drawn as a line in increasing x (may be empty: nothing was fitted).
    pub curve: Vec<(f64, f64)>,
}

/// Titles and legend placement of a line chart.
#[derive(Clone, Debug)]
pub struct LineChart<'a> {
    /// Caption above the chart.
    pub title: &'a str,
    /// X axis label.
    pub x_desc: &'a str,
    /// Y axis label.
    pub y_desc: &'a str,
    /// Legend preferably in the lower right (rising curves) or the upper right (falling ones);
    /// it goes to another corner where that one would cover fewer points of the data.
    pub legend_low: bool,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse (a unit test draws with it), so failure
        // here would be a build defect; text then renders blank rather than aborting the analysis.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Compact tick labels (500000 → 500k, 1500000 → 1.5M) with as many decimals as the spacing
/// `step` of the axis' ticks needs, so neighbouring ticks never read the same: a narrow range
/// of returns near 100 gets `100.5, 101.0, 101.5`, not `100, 101, 102, 102`.
pub(super) fn tick_label(v: f64, step: f64) -> String {
    let a = v.abs();
    let (scaled, unit, step) = if a >= 1e6 {
        (v / 1e6, "M", step / 1e6)
    } else if a >= 1e3 {
        (v / 1e3, "k", step / 1e3)
    } else {
        (v, "", step)
    };
    // The fewest decimals that write a multiple of the step exactly (steps are 1, 2 or 5 × 10^k).
    let decimals = (0..=6usize)
        .find(|&d| {
            let x = step.abs() * 10f64.powi(d as i32);
            !x.is_finite() || x == 0.0 || (x - x.round()).abs() < 1e-6 * x.max(1.0)
        })
        .unwrap_or(6);
    let text = format!("{scaled:.decimals$}");
    // `-0` from a tick just below zero reads as a different number.
    let text = if text.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') { text.trim_start_matches('-').to_string() } else { text };
    format!("{text}{unit}")
}

/// Tick labels for an axis over `lo..hi` with `count` labels, as the mesh places them.
fn tick_formatter(lo: f64, hi: f64, count: usize) -> impl Fn(&f64) -> String {
    let points = RangedCoordf64::from(lo..hi).key_points(count);
    let step = match points.as_slice() {
        [a, b, ..] => b - a,
        _ => (hi - lo).abs(),
    };
    move |v: &f64| tick_label(*v, step)
}

/// Labels the mesh puts on each axis (plotters' default).
const TICKS: usize = 10;

/// Range `[lo, hi]` of finite values padded by 5% (a unit range around a single value).
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1.0) * 0.5 };
    (lo - pad, hi + pad)
}

/// The frame every x/y chart shares: caption, margins, axes with short numbers, light grid.
fn frame<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    chart: &LineChart<'_>,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut ctx = ChartBuilder::on(root)
        .caption(chart.title, (FAMILY, 22))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    let (x_label, y_label) = (tick_formatter(x0, x1, TICKS), tick_formatter(y0, y1, TICKS));
    ctx.configure_mesh()
        .x_desc(chart.x_desc)
        .y_desc(chart.y_desc)
        .axis_desc_style((FAMILY, 17))
        .label_style((FAMILY, 14))
        .x_labels(TICKS)
        .y_labels(TICKS)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .light_line_style(RGBColor(244, 244, 244))
        .draw()
        .map_err(e)?;
    Ok(ctx)
}

/// Where the legend goes and the y axis' top that leaves room for it: the corner of the plot
/// whose legend box covers the fewest of `points` (data coordinates: the lines' vertices and
/// band edges, sampled along each segment), preferring the right side, low or high as
/// `chart.legend_low` says, on ties. When every corner would cover some, the y axis is raised
/// by the box's height and the legend goes top right, above all the data. `names` are the
/// legend's entries, which size the box; `x`, `y` are the axes' ranges.
pub(super) fn legend_place(chart: &LineChart<'_>, names: &[&str], points: &[(f64, f64)], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> (SeriesLabelPosition, f64) {
    // The box as plotters draws it with 15 px text, as fractions of the plotting area (the
    // image less the margins, caption and label areas of `frame`).
    let (area_w, area_h) = (f64::from(SIZE.0 - 36 - 70), f64::from(SIZE.1 - 36 - 30 - 50));
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) as f64;
    let (box_w, box_h) = ((longest * 8.5 + 60.0) / area_w, (names.len() as f64 * 20.0 + 30.0) / area_h);
    let (low, high) = (SeriesLabelPosition::LowerRight, SeriesLabelPosition::UpperRight);
    let mut corners = if chart.legend_low { vec![low, high] } else { vec![high, low] };
    corners.extend([SeriesLabelPosition::UpperLeft, SeriesLabelPosition::LowerLeft]);
    let covered = |corner: &SeriesLabelPosition| {
        let (right, top) = match corner {
            SeriesLabelPosition::UpperLeft => (false, true),
            SeriesLabelPosition::LowerLeft => (false, false),
            SeriesLabelPosition::LowerRight => (true, false),
            _ => (true, true),
        };
        points
            .iter()
            .filter(|(x, y)| {
                let (fx, fy) = ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
                let in_x = if right { fx >= 1.0 - box_w } else { fx <= box_w };
                let in_y = if top { fy >= 1.0 - box_h } else { fy <= box_h };
                in_x && in_y
            })
            .count()
    };
    let counts: Vec<usize> = corners.iter().map(covered).collect();
    let best = (0..corners.len()).min_by_key(|&k| (counts[k], k)).unwrap_or(0);
    if counts[best] > 0 && box_h < 0.5 {
        return (SeriesLabelPosition::UpperRight, y0 + (y1 - y0) / (1.0 - box_h));
    }
    (corners.swap_remove(best), y1)
}

/// The points a line chart's legend should not cover: each line's vertices, its band's edges,
/// and three more points along each segment (curves are drawn straight between vertices).
fn line_points(lines: &[Line]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for line in lines {
        for pair in line.points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            for t in [0.0, 0.25, 0.5, 0.75] {
                out.push((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)));
            }
        }
        for p in &line.points {
            out.extend([(p.0, p.1), (p.0, p.2), (p.0, p.3)]);
        }
    }
    out.retain(|p| p.0.is_finite() && p.1.is_finite());
    out
}

/// Draws the legend of the series labelled so far in `corner`, then writes the image out.
fn legend_and_present<'a, DB: DrawingBackend + 'a>(
    root: &DrawingArea<DB, Shift>,
    corner: SeriesLabelPosition,
    ctx: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    ctx.configure_series_labels()
        .position(corner)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn draw_lines<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &LineChart<'_>, lines: &[Line]) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (x0, x1) = padded(lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)));
    let (y0, y1) = padded(lines.iter().flat_map(|l| l.points.iter().flat_map(|p| [p.1, p.2, p.3])));
    let names: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
    let (corner, y1) = legend_place(chart, &names, &line_points(lines), (x0, x1), (y0, y1));
    let mut ctx = frame(root, chart, (x0, x1), (y0, y1))?;
    for (i, line) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let band: Vec<(f64, f64)> = line
            .points
            .iter()
            .map(|p| (p.0, p.3))
            .chain(line.points.iter().rev().map(|p| (p.0, p.2)))
            .filter(|p| p.1.is_finite())
            .collect();
        if band.len() > 2 {
            ctx.draw_series(std::iter::once(Polygon::new(band, color.mix(0.2).filled()))).map_err(e)?;
        }
        ctx.draw_series(LineSeries::new(line.points.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))
            .map_err(e)?
            .label(line.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
    }
    legend_and_present(root, corner, &mut ctx)
}

fn draw_scatter<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &LineChart<'_>, groups: &[Scatter]) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let all = || groups.iter().flat_map(|g| g.points.iter().chain(&g.curve));
    let (x0, x1) = padded(all().map(|p| p.0));
    let (y0, y1) = padded(all().map(|p| p.1));
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    let points: Vec<(f64, f64)> = all().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    let (corner, y1) = legend_place(chart, &names, &points, (x0, x1), (y0, y1));
    let mut ctx = frame(root, chart, (x0, x1), (y0, y1))?;
    for (i, group) in groups.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let dots = group.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite());
        ctx.draw_series(dots.map(|&p| Circle::new(p, 2, color.mix(0.35).filled()))).map_err(e)?;
        // The curve carries the legend entry; a group without a fit gets a dot in the legend.
        let series = ctx.draw_series(LineSeries::new(group.curve.iter().copied(), color.stroke_width(3))).map_err(e)?;
        series.label(group.name.as_str());
        if group.curve.is_empty() {
            series.legend(move |(x, y)| Circle::new((x + 12, y), 4, color.filled()));
        } else {
            series.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        }
    }
    legend_and_present(root, corner, &mut ctx)
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, x_desc: &str, bars: &[Bar]) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (lo, hi) = padded(bars.iter().flat_map(|b| [b.value, b.lo, b.hi]).chain([0.0]));
    let (_, height) = root.dim_in_pixel();
    // A bar's height in pixels (the plotting area less caption and axis, shared by the bars);
    // the gap between bars and the whisker caps are a share of it, so many bars stay bars.
    let bar_px = f64::from(height.saturating_sub(36 + 30 + 50)) / bars.len().max(1) as f64;
    let gap = (bar_px * 0.15).round().clamp(1.0, 6.0) as u32;
    let cap = (bar_px * 0.3).round().clamp(2.0, 7.0) as i32;
    let longest = bars.iter().map(|b| b.name.chars().count()).max().unwrap_or(1) as u32;
    let n = bars.len() as i32;
    // Bar k (the first on top) spans y = c-1 .. c+1 around its centre c = 2(n-1-k); the odd
    // integers between bars are gaps, the even ones carry the names.
    let centre = |k: usize| 2 * (n - 1 - k as i32);
    let mut ctx = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size((longest * 8 + 20).clamp(60, 420))
        .build_cartesian_2d(lo.min(0.0)..hi, -1..2 * n - 1)
        .map_err(e)?;
    let names: Vec<String> = bars.iter().map(|b| b.name.clone()).collect();
    let x_label = tick_formatter(lo.min(0.0), hi, TICKS);
    let label = move |y: &i32| match (*y % 2, (2 * (n - 1) - *y) / 2) {
        (0, k) if *y >= 0 && k >= 0 => names.get(k as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    ctx.configure_mesh()
        .x_desc(x_desc)
        .axis_desc_style((FAMILY, 17))
        .label_style((FAMILY, 14))
        .x_labels(TICKS)
        .x_label_formatter(&x_label)
        .y_label_formatter(&label)
        .y_labels((2 * n + 1) as usize)
        .disable_y_mesh()
        .light_line_style(RGBColor(244, 244, 244))
        .draw()
        .map_err(e)?;
    for (k, bar) in bars.iter().enumerate() {
        let color = PALETTE[bar.colour % PALETTE.len()];
        let c = centre(k);
        // A group without a score has its name on the axis and no bar: a NaN length would be
        // drawn from 0 to the axis' edge.
        if bar.value.is_finite() {
            let mut rect = Rectangle::new([(0.0, c - 1), (bar.value, c + 1)], color.mix(0.75).filled());
            rect.set_margin(gap, gap, 0, 0);
            ctx.draw_series(std::iter::once(rect)).map_err(e)?;
        }
        if bar.lo.is_finite() && bar.hi.is_finite() {
            let whisker = BLACK.stroke_width(2);
            ctx.draw_series([PathElement::new(vec![(bar.lo, c), (bar.hi, c)], whisker)]).map_err(e)?;
            for end in [bar.lo, bar.hi] {
                // Caps: short vertical strokes at the ends, as pixel offsets from the centre line.
                ctx.draw_series(std::iter::once(EmptyElement::at((end, c)) + PathElement::new(vec![(0, -cap), (0, cap)], whisker)))
                    .map_err(e)?;
            }
        }
    }
    root.present().map_err(e)
}

fn plot_err(path: &Path, reason: impl Into<String>) -> AnalyzeError {
    AnalyzeError::Plot { path: path.to_path_buf(), reason: reason.into() }
}

/// `BitMapBackend` with its own text drawing. plotters 0.3.7's `ab_glyph` text drops each
/// glyph's left side bearing (`px_bounds().min.x`), which misplaces narrow glyphs ("cl" reads
/// as "d"); this places every glyph at its outline bounds and puts the baseline at the font's
/// ascent. Layout (advances and kerning) is the same as plotters', so its boxes still fit.
struct Bitmap<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

type BitmapError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

impl DrawingBackend for Bitmap<'_> {
    type ErrorType = BitmapError;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.present()
    }
    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(&mut self, from: BackendCoord, to: BackendCoord, style: &S) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(&mut self, path: I, style: &S) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(&mut self, center: BackendCoord, radius: u32, style: &S, fill: bool) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(&mut self, vert: I, style: &S) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.fill_polygon(vert, style)
    }
    fn draw_text<T: BackendTextStyle>(&mut self, text: &str, style: &T, pos: BackendCoord) -> Result<(), DrawingErrorKind<BitmapError>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size() as f32;
        let font = self.font.as_scaled(size);
        let (mut x, mut prev, mut glyphs) = (0f32, None, Vec::new());
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                x += font.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(size, ab_glyph::point(x, font.ascent())));
            x += font.h_advance(id);
            prev = Some(id);
        }
        // The box plotters lays this text out in: its width, and a height of size / 1.24.
        let (width, height) = (x as i32, (style.size() / 1.24) as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        let (w, h) = self.get_size();
        let mut pixels = Vec::new();
        for glyph in glyphs {
            if let Some(outline) = font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                let (x0, y0) = (bounds.min.x as i32, bounds.min.y as i32);
                outline.draw(|px, py, coverage| pixels.push((x0 + px as i32, y0 + py as i32, coverage)));
            }
        }
        for (gx, gy, coverage) in pixels {
            let (tx, ty) = transform.transform(gx + dx, gy + dy);
            let (px, py) = (pos.0 + tx, pos.1 + ty);
            if coverage > 0.0 && px >= 0 && py >= 0 && px < w as i32 && py < h as i32 {
                let alpha = color.alpha * f64::from(coverage.min(1.0));
                self.inner.draw_pixel((px, py), BackendColor { alpha, rgb: color.rgb })?;
            }
        }
        Ok(())
    }
}

/// A chart to draw.
#[derive(Clone, Debug)]
pub enum Chart<'a> {
    /// Lines with bands (learning curves, performance profiles).
    Lines(LineChart<'a>, &'a [Line]),
    /// Horizontal bars with whiskers: title, x axis label, bars from top to bottom.
    Bars(&'a str, &'a str, &'a [Bar]),
    /// Points with a fitted curve per group (the entropy-performance law).
    Scatter(LineChart<'a>, &'a [Scatter]),
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart<'_>) -> Result<(), String> {
    match chart {
        Chart::Lines(spec, lines) => draw_lines(root, spec, lines),
        Chart::Bars(title, x_desc, bars) => draw_bars(root, title, x_desc, bars),
        Chart::Scatter(spec, groups) => draw_scatter(root, spec, groups),
    }
}

/// The image size of `chart`: `SIZE`, taller for a bar chart of many bars, so that each bar
/// keeps at least `MIN_BAR_PX` pixels.
fn chart_size(chart: &Chart<'_>) -> (u32, u32) {
    match chart {
        Chart::Bars(_, _, bars) => (SIZE.0, SIZE.1.max(150 + MIN_BAR_PX * bars.len() as u32)),
        _ => SIZE,
    }
}

/// Fewest pixels a bar of the bar chart gets (bar and gap).
const MIN_BAR_PX: u32 = 22;

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), AnalyzeError> {
    crate::layout::write_atomic(path, bytes).map_err(|source| AnalyzeError::Io { action: "write", path: path.to_path_buf(), source })
}

/// Draws `chart` into `<stem>.png` and `<stem>.svg` (each written to a temporary name and
/// renamed); returns both paths.
pub fn render(stem: &Path, chart: &Chart<'_>) -> Result<Vec<PathBuf>, AnalyzeError> {
    register_font();
    let png_path = PathBuf::from(format!("{}.png", stem.display()));
    let svg_path = PathBuf::from(format!("{}.svg", stem.display()));
    let (w, h) = chart_size(chart);
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    {
        let font = FontRef::try_from_slice(FONT).map_err(|e| plot_err(&png_path, format!("the embedded font: {e}")))?;
        let root = Bitmap { inner: BitMapBackend::with_buffer(&mut pixels, (w, h)), font }.into_drawing_area();
        draw(&root, chart).map_err(|r| plot_err(&png_path, r))?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| plot_err(&png_path, e.to_string()))?;
        writer.write_image_data(&pixels).map_err(|e| plot_err(&png_path, e.to_string()))?;
    }
    write_file(&png_path, &png_bytes)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        draw(&root, chart).map_err(|r| plot_err(&svg_path, r))?;
    }
    write_file(&svg_path, svg.as_bytes())?;
    Ok(vec![png_path, svg_path])
}
