//! Charts of the experiment report: lines of a metric against a training step (one per sampler),
//! horizontal stacked bars (seconds per phase and sampler) and horizontal bars with a 95% interval
//! whisker (a test metric per system).
//!
//! Every chart is written twice, as `<stem>.png` and `<stem>.svg`, each through
//! [`aisle_core::io::write_atomic`] (a temporary file beside it, flushed to disk, renamed into
//! place), so a crash never leaves half a file; the PNG is first drawn into a scratch file beside
//! it, because plotters' bitmap encoder writes to a path only. The
//! PNG backend rasterises its own text, so DejaVu Sans (`assets/DejaVuSans.ttf`, its licence next
//! to it) is embedded in the binary and registered as `sans-serif`: CI machines have no system font
//! libraries (fontconfig, FreeType) to find a font with. The SVG writes its text as `<text>`
//! elements in the `sans-serif` family, measured with the same embedded font.

use std::ffi::OsString;
use std::fmt::Display;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// DejaVu Sans, embedded so that rendering needs no system font (see `assets/`).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The family every text of a chart uses.
const FAMILY: &str = "sans-serif";

const WIDTH: u32 = 900;
const LINE_HEIGHT: u32 = 560;
// Font sizes are even: plotters' ab_glyph rasteriser truncates half a size when it places each
// glyph, which shifts some glyphs (a decimal point) a pixel up at odd sizes.
const TITLE_SIZE: f64 = 22.0;
const LABEL_SIZE: f64 = 14.0;
const TICK_SIZE: f64 = 12.0;
const MARGIN: u32 = 16;
/// Pixels per bar of a bar chart: its height grows with the number of bars.
const ROW: u32 = 34;
/// Widest label area of a bar chart; longer labels are shortened with an ellipsis.
const MAX_LABEL_WIDTH: u32 = WIDTH * 45 / 100;

/// Distinct colours (matplotlib's tab10); further series take colours of `Palette99`.
const COLOURS: [RGBColor; 10] = [
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

/// Why a chart was not written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The input holds nothing to draw (no series, no bars, no finite point).
    #[error("{stem}: nothing to draw ({what})")]
    NoData { stem: PathBuf, what: String },
    /// The input cannot be drawn as asked (a bad stem, parts that do not match their names).
    #[error("{stem}: {message}")]
    Invalid { stem: PathBuf, message: String },
    /// The embedded font could not be registered.
    #[error("the embedded DejaVu Sans font could not be loaded")]
    Font,
    /// Plotters failed to draw or encode a file.
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
    /// A file could not be written or renamed into place.
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Result of the chart functions.
pub type PlotResult<T> = std::result::Result<T, PlotError>;

/// One line of a [`line_chart`]: its legend name and its `(x, y)` points, joined in the given order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One bar of [`stacked_bars`]: its label and one value (>= 0) per part name.
#[derive(Clone, Debug, PartialEq)]
pub struct StackedBar {
    pub label: String,
    /// One value per part name, in the order of the names.
    pub parts: Vec<f64>,
}

/// One bar of [`interval_bars`]: its label, its value and the bounds of its interval.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalBar {
    pub label: String,
    pub value: f64,
    /// Lower bound of the interval (e.g. the 2.5% bootstrap quantile).
    pub low: f64,
    /// Upper bound of the interval (e.g. the 97.5% bootstrap quantile).
    pub high: f64,
}

/// Several lines on one plot with a legend (e.g. validation Recall@10 against training step, one
/// line per sampler), each point also drawn as a small circle. Axis ranges fit the data with a
/// margin (a range of zero width is widened); NaN and infinite points are skipped. The legend sits
/// in the corner with the fewest points, with room made above the data when every corner is taken.
/// Writes `<stem>.png` and `<stem>.svg` (900 x 560 px; the folder must exist) and returns their
/// paths.
pub fn line_chart(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> PlotResult<[PathBuf; 2]> {
    if series.is_empty() {
        return Err(no_data(stem, "no series"));
    }
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let finite = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            (s.name.as_str(), finite)
        })
        .collect();
    let all = || lines.iter().flat_map(|l| l.1.iter());
    let (Some(xs), Some(ys)) = (bounds(all().map(|p| p.0)), bounds(all().map(|p| p.1))) else {
        return Err(no_data(stem, "no finite point"));
    };
    ensure_font()?;
    let x = padded(xs, 0.03);
    let mut y = padded(ys, 0.06);

    // The legend's share of the plotting area, estimated from its text.
    let name_width = lines
        .iter()
        .map(|l| text_width(l.0, LABEL_SIZE))
        .max()
        .unwrap_or(0);
    let legend_w = f64::from(name_width + 64);
    let legend_h = (lines.len() as f64) * (LABEL_SIZE + 8.0) + 24.0;
    let plot_w = f64::from(WIDTH - 2 * MARGIN - 72);
    let plot_h = f64::from(LINE_HEIGHT - 2 * MARGIN - 40 - 52);
    let fw = (legend_w / plot_w).min(0.9);
    let fh = (legend_h / plot_h).min(0.6);
    let samples = samples(&lines, &x, &y);
    let corners = [
        (Corner::UpperRight, 1.0 - fw, 1.0, 1.0 - fh, 1.0),
        (Corner::UpperLeft, 0.0, fw, 1.0 - fh, 1.0),
        (Corner::LowerRight, 1.0 - fw, 1.0, 0.0, fh),
        (Corner::LowerLeft, 0.0, fw, 0.0, fh),
    ];
    let count = |&(_, x0, x1, y0, y1): &(Corner, f64, f64, f64, f64)| {
        samples
            .iter()
            .filter(|(sx, sy)| (x0..=x1).contains(sx) && (y0..=y1).contains(sy))
            .count()
    };
    let best = corners
        .iter()
        .min_by_key(|c| count(c))
        .unwrap_or(&corners[0]);
    let legend = if count(best) == 0 {
        best.0
    } else {
        // Every corner holds data: lift the top of the y range so the data stays below the legend.
        y.end += (y.end - y.start) * fh / (1.0 - fh);
        Corner::UpperRight
    };

    let chart = LineChart {
        title,
        x_label,
        y_label,
        lines,
        x,
        y,
        legend,
    };
    render(stem, &chart)
}

/// Horizontal stacked bars, one per label top to bottom in the given order, with the total written
/// after each bar; `part_names` name the stack segments (e.g. sampling / forward / backward /
/// refresh seconds per sampler), shown in a legend above the plot. Every bar needs one value per
/// part name; a NaN or infinite value is drawn as 0 and a negative one is an error. Writes
/// `<stem>.png` and `<stem>.svg` (900 px wide, taller with more bars) and returns their paths.
pub fn stacked_bars(
    stem: &Path,
    title: &str,
    value_label: &str,
    part_names: &[&str],
    bars: &[StackedBar],
) -> PlotResult<[PathBuf; 2]> {
    if bars.is_empty() {
        return Err(no_data(stem, "no bars"));
    }
    if part_names.is_empty() {
        return Err(no_data(stem, "no part names"));
    }
    let mut clean = Vec::with_capacity(bars.len());
    for bar in bars {
        if bar.parts.len() != part_names.len() {
            return Err(invalid(
                stem,
                format!(
                    "bar {:?} has {} parts for {} part names",
                    bar.label,
                    bar.parts.len(),
                    part_names.len()
                ),
            ));
        }
        if let Some(v) = bar.parts.iter().find(|v| **v < 0.0) {
            return Err(invalid(
                stem,
                format!("bar {:?} has a negative part {v}", bar.label),
            ));
        }
        let parts: Vec<f64> = bar
            .parts
            .iter()
            .map(|&v| if v.is_finite() { v } else { 0.0 })
            .collect();
        clean.push(parts);
    }
    ensure_font()?;
    let totals: Vec<f64> = clean.iter().map(|p| p.iter().sum()).collect();
    let max_total = totals.iter().copied().fold(0.0, f64::max);
    let span = if max_total > 0.0 { max_total } else { 1.0 };
    let decimals = value_decimals(span);
    let texts: Vec<String> = totals.iter().map(|t| format!("{t:.decimals$}")).collect();
    let rows = Rows::new(bars.iter().map(|b| b.label.as_str()), &texts, 0.0..span);
    let legend = LegendStrip::new(part_names);
    let chart = StackedChart {
        title,
        value_label,
        parts: clean,
        totals,
        legend,
        rows,
    };
    render(stem, &chart)
}

/// One horizontal bar per label (top to bottom in the given order, labels on the left, so long
/// labels fit) with a whisker from `low` to `high` (e.g. test Recall@10 per system with its 95%
/// interval) and the value and interval written after it. A non-finite value draws no bar and
/// non-finite bounds no whisker. Writes `<stem>.png` and `<stem>.svg` (900 px wide, taller with
/// more bars) and returns their paths.
pub fn interval_bars(
    stem: &Path,
    title: &str,
    value_label: &str,
    bars: &[IntervalBar],
) -> PlotResult<[PathBuf; 2]> {
    if bars.is_empty() {
        return Err(no_data(stem, "no bars"));
    }
    ensure_font()?;
    let values = bars
        .iter()
        .flat_map(|b| [b.value, b.low, b.high])
        .chain([0.0]);
    let (lo, hi) = bounds(values.filter(|v| v.is_finite())).unwrap_or((0.0, 1.0));
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
    let decimals = value_decimals(hi - lo);
    let texts: Vec<String> = bars
        .iter()
        .map(|b| match (b.value.is_finite(), whisker(b)) {
            (true, Some((l, h))) => format!("{:.d$} [{l:.d$}, {h:.d$}]", b.value, d = decimals),
            (true, None) => format!("{:.decimals$}", b.value),
            (false, _) => "n/a".to_string(),
        })
        .collect();
    let rows = Rows::new(bars.iter().map(|b| b.label.as_str()), &texts, lo..hi);
    let chart = IntervalChart {
        title,
        value_label,
        bars,
        rows,
    };
    render(stem, &chart)
}

fn no_data(stem: &Path, what: &str) -> PlotError {
    PlotError::NoData {
        stem: stem.to_path_buf(),
        what: what.to_string(),
    }
}

fn invalid(stem: &Path, message: String) -> PlotError {
    PlotError::Invalid {
        stem: stem.to_path_buf(),
        message,
    }
}

fn draw_error(path: &Path, e: impl Display) -> PlotError {
    PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PlotError + '_ {
    move |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Registers the embedded font once per process.
fn ensure_font() -> PlotResult<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

fn font(size: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FAMILY), size, FontStyle::Normal)
}

/// Draws `title` centred in the top band of `root` and returns the area below it.
fn title_band<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> DrawResult<DrawingArea<DB, Shift>, DB> {
    let (top, body) = root.split_vertically(TITLE_BAND);
    top.draw_text(
        title,
        &anchored(TITLE_SIZE, HPos::Center, VPos::Center),
        ((WIDTH / 2) as i32, (TITLE_BAND / 2) as i32),
    )?;
    Ok(body)
}

fn anchored(size: f64, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from(font(size)).pos(Pos::new(h, v))
}

/// Width of `text` in pixels, measured with the embedded font (estimated if that fails).
fn text_width(text: &str, size: f64) -> u32 {
    font(size)
        .box_size(text)
        .map_or((text.chars().count() as f64 * size * 0.6) as u32, |b| b.0)
}

/// `label` shortened with an ellipsis until it is at most `max` pixels wide.
fn fit(label: &str, max: u32) -> String {
    if text_width(label, LABEL_SIZE) <= max {
        return label.to_string();
    }
    let mut chars: Vec<char> = label.chars().collect();
    while chars.pop().is_some() {
        let short: String = chars.iter().chain(['…'].iter()).collect();
        if text_width(&short, LABEL_SIZE) <= max {
            return short;
        }
    }
    "…".to_string()
}

fn colour(i: usize) -> RGBColor {
    match COLOURS.get(i) {
        Some(&c) => c,
        None => {
            let (r, g, b) = Palette99::pick(i).rgb();
            RGBColor(r, g, b)
        }
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// `lo..hi` widened by `frac` of its width on each side; a range of zero width is widened by a
/// tenth of its value (or by 1 around 0).
fn padded((lo, hi): (f64, f64), frac: f64) -> Range<f64> {
    let span = hi - lo;
    if span > 0.0 && span.is_finite() {
        (lo - span * frac)..(hi + span * frac)
    } else if span > 0.0 {
        lo..hi
    } else {
        let pad = if lo != 0.0 { lo.abs() * 0.1 } else { 1.0 };
        (lo - pad)..(hi + pad)
    }
}

/// Points and a few points along each segment, in `[0, 1]` coordinates of the plotting area.
fn samples(lines: &[(&str, Vec<(f64, f64)>)], x: &Range<f64>, y: &Range<f64>) -> Vec<(f64, f64)> {
    let norm = |(px, py): (f64, f64)| {
        (
            (px - x.start) / (x.end - x.start),
            (py - y.start) / (y.end - y.start),
        )
    };
    let mut out = Vec::new();
    for (_, points) in lines {
        if let Some(&first) = points.first() {
            out.push(norm(first));
        }
        for w in points.windows(2) {
            for k in 1..=4 {
                let t = f64::from(k) / 4.0;
                out.push(norm((
                    w[0].0 + (w[1].0 - w[0].0) * t,
                    w[0].1 + (w[1].1 - w[0].1) * t,
                )));
            }
        }
    }
    out
}

/// Tick labels for an axis `span` wide: as many decimals as the tick step needs, trailing zeros
/// dropped.
fn tick_formatter(span: f64) -> impl Fn(&f64) -> String {
    let decimals = (1.0 - (span / 10.0).log10().floor()).clamp(0.0, 10.0) as usize;
    move |v: &f64| {
        let s = format!("{:.decimals$}", v + 0.0);
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            &s
        };
        if s == "-0" {
            "0".to_string()
        } else {
            s.to_string()
        }
    }
}

/// Decimals of the values written next to bars on an axis `span` wide.
fn value_decimals(span: f64) -> usize {
    (2.0 - span.log10().floor()).clamp(0.0, 8.0) as usize
}

/// The whisker of a bar: its bounds in order, if both are finite.
fn whisker(b: &IntervalBar) -> Option<(f64, f64)> {
    (b.low.is_finite() && b.high.is_finite()).then(|| (b.low.min(b.high), b.low.max(b.high)))
}

/// A chart drawn the same way on the PNG and the SVG backend.
trait Chart {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<(), DB>;
}

/// `stem` with `.ext` appended (a stem may hold dots of its own).
fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s: OsString = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// A scratch file beside `dest` for the bitmap backend to draw into (it picks its encoder from
/// the name's extension), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn beside(dest: &Path, ext: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = OsString::from(".");
        name.push(dest.file_name().unwrap_or_default());
        name.push(format!(".{}-{n}.tmp.{ext}", std::process::id()));
        Scratch(dest.with_file_name(name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Writes `bytes` to `path` with [`aisle_core::io::write_atomic`].
fn write_file(path: &Path, bytes: &[u8]) -> PlotResult<()> {
    aisle_core::io::write_atomic(path, |w| w.write_all(bytes)).map_err(io_error(path))
}

/// Draws `chart` to `<stem>.png` and `<stem>.svg`. Neither is written unless both were drawn.
fn render<C: Chart>(stem: &Path, chart: &C) -> PlotResult<[PathBuf; 2]> {
    if stem.file_name().is_none() {
        return Err(invalid(stem, "the stem names no file".to_string()));
    }
    ensure_font()?;
    let size = chart.size();
    let png = with_ext(stem, "png");
    let svg = with_ext(stem, "svg");

    let scratch = Scratch::beside(&png, "png");
    {
        let root = BitMapBackend::new(&scratch.0, size).into_drawing_area();
        chart.draw(&root).map_err(|e| draw_error(&png, e))?;
        root.present().map_err(|e| draw_error(&png, e))?;
    }
    let png_bytes = fs::read(&scratch.0).map_err(io_error(&png))?;
    drop(scratch);
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        chart.draw(&root).map_err(|e| draw_error(&svg, e))?;
        root.present().map_err(|e| draw_error(&svg, e))?;
    }
    write_file(&png, &png_bytes)?;
    write_file(&svg, text.as_bytes())?;
    Ok([png, svg])
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Corner {
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

impl Corner {
    fn position(self) -> SeriesLabelPosition {
        match self {
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
        }
    }
}

struct LineChart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    lines: Vec<(&'a str, Vec<(f64, f64)>)>,
    x: Range<f64>,
    y: Range<f64>,
    legend: Corner,
}

impl Chart for LineChart<'_> {
    fn size(&self) -> (u32, u32) {
        (WIDTH, LINE_HEIGHT)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<(), DB> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, font(TITLE_SIZE))
            .margin(MARGIN)
            .x_label_area_size(52)
            .y_label_area_size(72)
            .build_cartesian_2d(self.x.clone(), self.y.clone())?;
        let x_ticks = tick_formatter(self.x.end - self.x.start);
        let y_ticks = tick_formatter(self.y.end - self.y.start);
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .x_label_formatter(&x_ticks)
            .y_label_formatter(&y_ticks)
            .label_style(font(TICK_SIZE))
            .axis_desc_style(font(LABEL_SIZE))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .max_light_lines(4)
            .draw()?;
        for (i, (name, points)) in self.lines.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (22, 0)], c.stroke_width(2))
                        + Circle::new((11, 0), 3, c.filled())
                });
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(self.legend.position())
            .margin(12)
            .legend_area_size(30)
            .label_font(font(LABEL_SIZE))
            .background_style(WHITE)
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
        Ok(())
    }
}

/// The rows of a horizontal bar chart: labels (shortened to fit), texts after the bars and the
/// value axis, widened on the right so those texts fit.
struct Rows {
    labels: Vec<String>,
    texts: Vec<String>,
    label_width: u32,
    x: Range<f64>,
}

impl Rows {
    fn new<'a>(labels: impl Iterator<Item = &'a str>, texts: &[String], data: Range<f64>) -> Self {
        let labels: Vec<String> = labels.map(|l| fit(l, MAX_LABEL_WIDTH)).collect();
        let label_width = labels
            .iter()
            .map(|l| text_width(l, LABEL_SIZE))
            .max()
            .unwrap_or(0);
        let text_px = texts
            .iter()
            .map(|t| text_width(t, TICK_SIZE))
            .max()
            .unwrap_or(0)
            + 14;
        let plot_px = f64::from(
            (WIDTH - 2 * MARGIN - 24)
                .saturating_sub(label_width)
                .max(100),
        );
        let text_frac = (f64::from(text_px) / plot_px).min(0.5);
        let span = data.end - data.start;
        let start = if data.start < 0.0 {
            data.start - span * 0.03
        } else {
            data.start
        };
        let end = data.end + span * (0.02 + text_frac / (1.0 - text_frac));
        Self {
            labels,
            texts: texts.to_vec(),
            label_width,
            x: start..end,
        }
    }

    fn n(&self) -> usize {
        self.labels.len()
    }

    /// Centre of bar `i` (the first on top) on the row axis.
    fn centre(&self, i: usize) -> f64 {
        (self.n() - 1 - i) as f64
    }

    fn plot_height(&self) -> u32 {
        (self.n() as u32).saturating_mul(ROW).max(2 * ROW)
    }

    /// Draws the value axis and its grid on `area`, returning the chart to draw bars on.
    fn chart<'a, DB: DrawingBackend>(
        &self,
        area: &'a DrawingArea<DB, Shift>,
        value_label: &str,
    ) -> DrawResult<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>, DB> {
        let mut chart = ChartBuilder::on(area)
            .margin_left(MARGIN)
            .margin_right(MARGIN + 8)
            .margin_top(4)
            .margin_bottom(MARGIN)
            .x_label_area_size(48)
            .y_label_area_size(self.label_width + 12)
            .build_cartesian_2d(self.x.clone(), -0.5..(self.n() as f64 - 0.5))?;
        let ticks = tick_formatter(self.x.end - self.x.start);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(value_label)
            .x_label_formatter(&ticks)
            .label_style(font(TICK_SIZE))
            .axis_desc_style(font(LABEL_SIZE))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .max_light_lines(4)
            .draw()?;
        if self.x.start < 0.0 {
            let zero = vec![(0.0, -0.5), (0.0, self.n() as f64 - 0.5)];
            chart.draw_series(std::iter::once(PathElement::new(
                zero,
                BLACK.stroke_width(1),
            )))?;
        }
        Ok(chart)
    }

    /// Writes the labels left of the plot and the texts after the bars (`ends`: where each bar
    /// ends on the value axis).
    fn annotate<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        chart: &ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
        ends: &[f64],
    ) -> DrawResult<(), DB> {
        let label_style = anchored(LABEL_SIZE, HPos::Right, VPos::Center);
        let text_style = anchored(TICK_SIZE, HPos::Left, VPos::Center);
        for (i, label) in self.labels.iter().enumerate() {
            let y = self.centre(i);
            let (x0, py) = chart.backend_coord(&(self.x.start, y));
            root.draw_text(label, &label_style, (x0 - 8, py))?;
            let end = ends.get(i).copied().unwrap_or(0.0);
            let (px, py) = chart.backend_coord(&(end.max(0.0), y));
            if let Some(text) = self.texts.get(i) {
                root.draw_text(text, &text_style, (px + 7, py))?;
            }
        }
        Ok(())
    }
}

/// Part names laid out left to right above a bar chart, wrapping onto more lines if needed.
struct LegendStrip {
    items: Vec<(String, (i32, i32))>,
    height: u32,
}

impl LegendStrip {
    const LINE: i32 = 22;

    fn new(names: &[&str]) -> Self {
        let right = (WIDTH - MARGIN) as i32;
        let (mut x, mut y) = (MARGIN as i32, 0);
        let mut items = Vec::with_capacity(names.len());
        for name in names {
            let w = 14 + 6 + text_width(name, LABEL_SIZE) as i32;
            if x + w > right && x > MARGIN as i32 {
                x = MARGIN as i32;
                y += Self::LINE;
            }
            items.push((name.to_string(), (x, y)));
            x += w + 22;
        }
        Self {
            items,
            height: (y + Self::LINE + 8) as u32,
        }
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<(), DB> {
        let style = anchored(LABEL_SIZE, HPos::Left, VPos::Center);
        for (i, (name, (x, y))) in self.items.iter().enumerate() {
            let (x, y) = (*x, *y + 4);
            area.draw(&Rectangle::new(
                [(x, y), (x + 14, y + 14)],
                colour(i).filled(),
            ))?;
            area.draw_text(name, &style, (x + 20, y + 7))?;
        }
        Ok(())
    }
}

/// Height of the title band of a bar chart.
const TITLE_BAND: u32 = 48;

struct StackedChart<'a> {
    title: &'a str,
    value_label: &'a str,
    parts: Vec<Vec<f64>>,
    totals: Vec<f64>,
    legend: LegendStrip,
    rows: Rows,
}

impl Chart for StackedChart<'_> {
    fn size(&self) -> (u32, u32) {
        let h = TITLE_BAND + self.legend.height + self.rows.plot_height() + 4 + 48 + MARGIN;
        (WIDTH, h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<(), DB> {
        root.fill(&WHITE)?;
        let body = title_band(root, self.title)?;
        let (legend, plot) = body.split_vertically(self.legend.height);
        self.legend.draw(&legend)?;
        let mut chart = self.rows.chart(&plot, self.value_label)?;
        for (i, parts) in self.parts.iter().enumerate() {
            let y = self.rows.centre(i);
            let mut start = 0.0;
            for (j, &v) in parts.iter().enumerate() {
                if v > 0.0 {
                    let bar = [(start, y - 0.32), (start + v, y + 0.32)];
                    chart.draw_series(std::iter::once(Rectangle::new(bar, colour(j).filled())))?;
                }
                start += v;
            }
        }
        self.rows.annotate(root, &chart, &self.totals)
    }
}

struct IntervalChart<'a> {
    title: &'a str,
    value_label: &'a str,
    bars: &'a [IntervalBar],
    rows: Rows,
}

impl Chart for IntervalChart<'_> {
    fn size(&self) -> (u32, u32) {
        (
            WIDTH,
            TITLE_BAND + self.rows.plot_height() + 4 + 48 + MARGIN,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<(), DB> {
        root.fill(&WHITE)?;
        let plot = title_band(root, self.title)?;
        let mut chart = self.rows.chart(&plot, self.value_label)?;
        let fill = colour(0).mix(0.75).filled();
        let ink = RGBColor(40, 40, 40).stroke_width(2);
        let mut ends = Vec::with_capacity(self.bars.len());
        for (i, b) in self.bars.iter().enumerate() {
            let y = self.rows.centre(i);
            let mut end = 0.0f64;
            if b.value.is_finite() {
                let bar = [(0.0, y - 0.3), (b.value, y + 0.3)];
                chart.draw_series(std::iter::once(Rectangle::new(bar, fill)))?;
                end = end.max(b.value);
            }
            if let Some((lo, hi)) = whisker(b) {
                let cap = 0.14;
                chart.draw_series([
                    PathElement::new(vec![(lo, y), (hi, y)], ink),
                    PathElement::new(vec![(lo, y - cap), (lo, y + cap)], ink),
                    PathElement::new(vec![(hi, y - cap), (hi, y + cap)], ink),
                ])?;
                end = end.max(hi);
            }
            ends.push(end);
        }
        self.rows.annotate(root, &chart, &ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = fs::read(path).unwrap();
        assert_eq!(
            &bytes[..8],
            b"\x89PNG\r\n\x1a\n",
            "{} is no PNG",
            path.display()
        );
        let be = |r: Range<usize>| u32::from_be_bytes(bytes[r].try_into().unwrap());
        (be(16..20), be(20..24))
    }

    fn svg_text(path: &Path) -> String {
        let text = fs::read_to_string(path).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(80)]);
        text
    }

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series {
            name: name.to_string(),
            points: points.to_vec(),
        }
    }

    /// Only the two charts are left in the folder (no temporary file).
    fn assert_only(dir: &Path, files: &[PathBuf; 2]) {
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let mut want = files.to_vec();
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn line_chart_writes_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("recall.v1");
        let lines = [
            series("uniform", &[(0.0, 0.21), (500.0, 0.33), (1000.0, 0.38)]),
            series(
                "in-batch + hard",
                &[(0.0, 0.2), (500.0, 0.36), (1000.0, 0.44)],
            ),
            series(
                "popularity^0.75",
                &[(0.0, 0.22), (500.0, 0.3), (1000.0, 0.31)],
            ),
        ];
        let files = line_chart(&stem, "Validation Recall@10", "step", "Recall@10", &lines).unwrap();
        assert_eq!(files[0], dir.path().join("recall.v1.png"));
        assert_eq!(files[1], dir.path().join("recall.v1.svg"));
        assert_eq!(png_size(&files[0]), (WIDTH, LINE_HEIGHT));
        let svg = svg_text(&files[1]);
        assert!(svg.contains("Validation Recall@10"));
        for s in &lines {
            assert!(svg.contains(&s.name), "{} missing", s.name);
        }
        assert!(svg.contains("step") && svg.contains("sans-serif"));
        assert_only(dir.path(), &files);
        // Drawing again replaces both files.
        let again = line_chart(&stem, "Again", "step", "Recall@10", &lines).unwrap();
        assert!(svg_text(&again[1]).contains("Again"));
        assert_only(dir.path(), &again);
    }

    #[test]
    fn line_chart_skips_non_finite_points_and_widens_flat_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            series(
                "a",
                &[
                    (1.0, 0.5),
                    (2.0, f64::NAN),
                    (f64::INFINITY, 0.5),
                    (3.0, 0.5),
                ],
            ),
            series("only nan", &[(f64::NAN, f64::NAN)]),
        ];
        let files = line_chart(&dir.path().join("flat"), "Flat", "x", "y", &lines).unwrap();
        assert_eq!(png_size(&files[0]).0, WIDTH);
        let svg = svg_text(&files[1]);
        assert!(svg.contains("only nan") && svg.contains("Flat"));
        // One point: both ranges have zero width.
        let one = [series("one", &[(7.0, 0.0)])];
        let files = line_chart(&dir.path().join("one"), "One", "x", "y", &one).unwrap();
        assert_eq!(png_size(&files[0]).0, WIDTH);
    }

    #[test]
    fn line_chart_without_data_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("none");
        let err = line_chart(&stem, "t", "x", "y", &[]).unwrap_err();
        assert!(matches!(err, PlotError::NoData { .. }), "{err}");
        assert!(err.to_string().contains("none"), "{err}");
        let nan = [series("nan", &[(f64::NAN, 1.0)]), series("empty", &[])];
        let err = line_chart(&stem, "t", "x", "y", &nan).unwrap_err();
        assert!(matches!(err, PlotError::NoData { .. }), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn line_chart_into_a_missing_folder_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("missing").join("chart");
        let err = line_chart(&stem, "t", "x", "y", &[series("a", &[(0.0, 1.0)])]).unwrap_err();
        assert!(
            matches!(err, PlotError::Draw { .. } | PlotError::Io { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chart.png"), "{err}");
    }

    #[test]
    fn legend_takes_an_empty_corner() {
        let y = |x: f64| x.sqrt();
        let pts: Vec<(f64, f64)> = (0..=20).map(|i| (f64::from(i), y(f64::from(i)))).collect();
        let lines = vec![("rising", pts)];
        let samples = samples(&lines, &(0.0..20.0), &(0.0..y(20.0)));
        // The rising curve leaves the upper left and the lower right empty.
        let in_box = |x0: f64, x1: f64, y0: f64, y1: f64| {
            samples
                .iter()
                .filter(|(sx, sy)| (x0..=x1).contains(sx) && (y0..=y1).contains(sy))
                .count()
        };
        assert_eq!(in_box(0.0, 0.3, 0.8, 1.0), 0);
        assert!(in_box(0.7, 1.0, 0.8, 1.0) > 0);
    }

    #[test]
    fn stacked_bars_writes_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let parts = ["sampling", "forward", "backward", "refresh"];
        let bars: Vec<StackedBar> = ["uniform", "in-batch", "hard negatives from the ANN index"]
            .iter()
            .enumerate()
            .map(|(i, l)| StackedBar {
                label: l.to_string(),
                parts: vec![1.0 + i as f64, 10.0, 20.0, 5.0 * i as f64],
            })
            .collect();
        let files = stacked_bars(
            &dir.path().join("time"),
            "Seconds per sampler",
            "seconds",
            &parts,
            &bars,
        )
        .unwrap();
        let (w, h3) = png_size(&files[0]);
        assert_eq!(w, WIDTH);
        let svg = svg_text(&files[1]);
        assert!(svg.contains("Seconds per sampler") && svg.contains("seconds"));
        for name in parts
            .iter()
            .copied()
            .chain(bars.iter().map(|b| b.label.as_str()))
        {
            assert!(svg.contains(name), "{name} missing");
        }
        assert_only(dir.path(), &files);
        // More bars, taller chart; NaN parts draw as 0.
        let mut many = bars.clone();
        for i in 0..7 {
            many.push(StackedBar {
                label: format!("extra {i}"),
                parts: vec![f64::NAN, 1.0, 2.0, 0.0],
            });
        }
        let files = stacked_bars(&dir.path().join("many"), "Many", "s", &parts, &many).unwrap();
        assert!(png_size(&files[0]).1 > h3);
    }

    #[test]
    fn stacked_bars_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("bad");
        let bar = |parts: Vec<f64>| StackedBar {
            label: "x".to_string(),
            parts,
        };
        let err = stacked_bars(&stem, "t", "s", &["a"], &[]).unwrap_err();
        assert!(matches!(err, PlotError::NoData { .. }), "{err}");
        let err = stacked_bars(&stem, "t", "s", &[], &[bar(vec![])]).unwrap_err();
        assert!(matches!(err, PlotError::NoData { .. }), "{err}");
        let err = stacked_bars(&stem, "t", "s", &["a", "b"], &[bar(vec![1.0])]).unwrap_err();
        assert!(matches!(err, PlotError::Invalid { .. }), "{err}");
        let err = stacked_bars(&stem, "t", "s", &["a"], &[bar(vec![-1.0])]).unwrap_err();
        assert!(matches!(err, PlotError::Invalid { .. }), "{err}");
        // All zero still draws.
        let files = stacked_bars(&stem, "t", "s", &["a"], &[bar(vec![0.0])]).unwrap();
        assert_eq!(png_size(&files[0]).0, WIDTH);
    }

    #[test]
    fn interval_bars_writes_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let bar = |label: &str, value: f64, low: f64, high: f64| IntervalBar {
            label: label.to_string(),
            value,
            low,
            high,
        };
        let bars = vec![
            bar("BM25", 0.31, 0.29, 0.33),
            bar("popularity", 0.05, 0.04, 0.06),
            bar("dense, in-batch negatives, 3 epochs", 0.42, 0.40, 0.44),
            bar("dense + BM25 hybrid (reciprocal rank)", 0.45, 0.43, 0.47),
            bar("no interval", 0.2, f64::NAN, f64::NAN),
            bar("no value", f64::NAN, f64::NAN, f64::NAN),
        ];
        let files = interval_bars(
            &dir.path().join("test"),
            "Test Recall@10",
            "Recall@10",
            &bars,
        )
        .unwrap();
        let (w, h6) = png_size(&files[0]);
        assert_eq!(w, WIDTH);
        let svg = svg_text(&files[1]);
        assert!(svg.contains("Test Recall@10"));
        for b in &bars {
            assert!(svg.contains(&b.label), "{} missing", b.label);
        }
        assert!(svg.contains("0.450 [0.430, 0.470]"), "value text missing");
        assert_only(dir.path(), &files);
        let files = interval_bars(&dir.path().join("two"), "Two", "v", &bars[..2]).unwrap();
        assert!(png_size(&files[0]).1 < h6);
        // Negative values and equal values draw too.
        let odd = [
            bar("below zero", -0.2, -0.3, 0.1),
            bar("same", 1.0, 1.0, 1.0),
        ];
        let files = interval_bars(&dir.path().join("odd"), "Odd", "v", &odd).unwrap();
        assert_eq!(png_size(&files[0]).0, WIDTH);
        let same = [bar("zero", 0.0, 0.0, 0.0)];
        let files = interval_bars(&dir.path().join("zero"), "Zero", "v", &same).unwrap();
        assert_eq!(png_size(&files[0]).0, WIDTH);
    }

    #[test]
    fn interval_bars_without_bars_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = interval_bars(&dir.path().join("none"), "t", "v", &[]).unwrap_err();
        assert!(matches!(err, PlotError::NoData { .. }), "{err}");
    }

    #[test]
    fn long_labels_are_shortened_to_fit() {
        ensure_font().unwrap();
        let long = "x".repeat(400);
        let short = fit(&long, MAX_LABEL_WIDTH);
        assert!(short.ends_with('…') && short.len() < long.len());
        assert!(text_width(&short, LABEL_SIZE) <= MAX_LABEL_WIDTH);
        assert_eq!(fit("BM25", MAX_LABEL_WIDTH), "BM25");
    }

    #[test]
    fn ticks_use_the_decimals_the_step_needs() {
        let f = tick_formatter(0.5);
        assert_eq!(f(&0.25), "0.25");
        assert_eq!(f(&0.3), "0.3");
        assert_eq!(f(&-0.0), "0");
        let f = tick_formatter(2000.0);
        assert_eq!(f(&1500.0), "1500");
        assert_eq!(value_decimals(0.5), 3);
        assert_eq!(value_decimals(1000.0), 0);
    }
}
