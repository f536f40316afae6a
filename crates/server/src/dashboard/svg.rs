//! A small SVG chart renderer: line charts over categories (with gaps), bar charts, and time
//! scatter charts whose points carry a shape as well as a colour. Output is plain SVG text with
//! a `<title>` and `<desc>`, drawn in a fixed view box that scales to the page width; colours
//! come from CSS classes so the stylesheet decides them.

use std::fmt::Write;

/// View box width.
pub const WIDTH: f64 = 640.0;
/// View box height.
pub const HEIGHT: f64 = 240.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;

/// Escapes text for SVG/HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A linear map from a data range onto a pixel range.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Scale {
    /// Maps `[d0, d1]` onto `[r0, r1]` (a flat domain maps to the middle of the range).
    pub fn new(d0: f64, d1: f64, r0: f64, r1: f64) -> Self {
        Self { d0, d1, r0, r1 }
    }

    /// The pixel of a value.
    pub fn map(&self, v: f64) -> f64 {
        if (self.d1 - self.d0).abs() < f64::EPSILON {
            return (self.r0 + self.r1) / 2.0;
        }
        self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)
    }
}

/// Round tick values covering `[lo, hi]`, about `target` intervals apart, on steps of 1, 2 or 5
/// times a power of ten. The first tick is at or below `lo`, the last at or above `hi`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (mut lo, mut hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    if !lo.is_finite() || !hi.is_finite() {
        return vec![0.0, 1.0];
    }
    if (hi - lo).abs() < 1e-12 {
        if lo == 0.0 {
            hi = 1.0;
        } else {
            let pad = lo.abs() * 0.5;
            lo -= pad;
            hi += pad;
            if lo < 0.0 && hi > 0.0 && lo >= -pad {
                lo = 0.0;
            }
        }
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let exp = raw.log10().floor() as i32;
    let mag = 10f64.powi(exp);
    let m = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|m| m * mag >= raw * 0.999)
        .unwrap_or(10.0);
    let step = m * mag;
    // Ticks as whole multiples of `m`, scaled by an exact power of ten, so 3 × 0.1 prints 0.3.
    let at = |k: f64| {
        if exp < 0 {
            k * m / 10f64.powi(-exp)
        } else {
            k * m * mag
        }
    };
    let first = (lo / step).floor();
    let last = (hi / step - 1e-9).ceil();
    let n = (last - first).max(1.0) as usize;
    (0..=n).map(|i| at(first + i as f64)).collect()
}

/// Tick positions at UTC midnights (epoch milliseconds) covering `[min_ms, max_ms]`, a whole
/// number of days apart, at most about `target` of them.
pub fn day_ticks(min_ms: f64, max_ms: f64, target: usize) -> Vec<f64> {
    const DAY: f64 = 86_400_000.0;
    if max_ms <= min_ms {
        return vec![(min_ms / DAY).floor() * DAY];
    }
    let days = ((max_ms - min_ms) / DAY).max(1.0);
    let step = (days / target.max(1) as f64).ceil().max(1.0);
    let step = [1.0, 2.0, 7.0, 14.0, 28.0]
        .into_iter()
        .find(|s| *s >= step)
        .unwrap_or((step / 28.0).ceil() * 28.0);
    let mut t = (min_ms / DAY).ceil() * DAY;
    let mut out = Vec::new();
    while t <= max_ms && out.len() < 1_000 {
        out.push(t);
        t += step * DAY;
    }
    out
}

fn fmt_num(v: f64) -> String {
    format!("{:.1}", v)
}

/// A series of a line chart: one value (or a gap) per category.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// CSS class of its colour (`s-1`, `s-2`…).
    pub class: &'static str,
    /// Values, aligned with the chart's categories; `None` is a gap.
    pub values: Vec<Option<f64>>,
}

/// The frame every chart shares: the y axis with its grid, the title and description.
struct Frame<'a> {
    id: &'a str,
    title: &'a str,
    desc: String,
    ticks: Vec<f64>,
    y_format: fn(f64) -> String,
}

impl Frame<'_> {
    fn y(&self) -> Scale {
        let lo = self.ticks.first().copied().unwrap_or(0.0);
        let hi = self.ticks.last().copied().unwrap_or(1.0);
        Scale::new(lo, hi, HEIGHT - BOTTOM, TOP)
    }

    fn open(&self, out: &mut String) {
        let id = esc(self.id);
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{id}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-t {id}-d"><title id="{id}-t">{}</title><desc id="{id}-d">{}</desc>"#,
            esc(self.title),
            esc(&self.desc)
        );
        let y = self.y();
        out.push_str(r#"<g class="grid">"#);
        for t in &self.ticks {
            let py = y.map(*t);
            let _ = write!(
                out,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}"/>"#,
                fmt_num(LEFT),
                fmt_num(py),
                fmt_num(WIDTH - RIGHT),
                fmt_num(py)
            );
        }
        out.push_str(r#"</g><g class="axis y-axis">"#);
        for t in &self.ticks {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                fmt_num(LEFT - 6.0),
                fmt_num(y.map(*t) + 4.0),
                esc(&(self.y_format)(*t))
            );
        }
        out.push_str("</g>");
    }
}

/// Category labels under the plot, thinned to about eight.
fn x_labels(out: &mut String, labels: &[String], x: impl Fn(usize) -> f64) {
    out.push_str(r#"<g class="axis x-axis">"#);
    let every = labels.len().div_ceil(8).max(1);
    for (i, l) in labels.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="{}">{}</text>"#,
            fmt_num(x(i)),
            fmt_num(HEIGHT - BOTTOM + 18.0),
            anchor(x(i)),
            esc(l)
        );
    }
    out.push_str("</g>");
}

/// Labels near either edge are aligned inwards so they are not cut off.
fn anchor(x: f64) -> &'static str {
    if x > WIDTH - RIGHT - 36.0 {
        "end"
    } else if x < LEFT + 20.0 {
        "start"
    } else {
        "middle"
    }
}

/// The y ticks for values, from zero (or below, for negatives) unless bounds are forced.
fn y_ticks<'a>(
    values: impl Iterator<Item = &'a f64>,
    forced: (Option<f64>, Option<f64>),
) -> Vec<f64> {
    let (mut lo, mut hi) = (0.0f64, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(*v);
        hi = hi.max(*v);
    }
    if hi == f64::NEG_INFINITY {
        hi = 1.0;
    }
    let lo = forced.0.unwrap_or(lo);
    let hi = forced.1.unwrap_or(hi).max(lo);
    nice_ticks(lo, hi, 4)
}

/// A line chart over categories (weeks, days).
#[derive(Debug, Clone)]
pub struct LineChart<'a> {
    /// Element id (unique on the page).
    pub id: &'a str,
    /// Title (also the accessible name).
    pub title: &'a str,
    /// Category labels.
    pub x_labels: Vec<String>,
    /// The lines.
    pub series: Vec<Series>,
    /// Forced lower bound of the y axis.
    pub y_min: Option<f64>,
    /// Forced upper bound of the y axis.
    pub y_max: Option<f64>,
    /// Tick and tooltip text of a value.
    pub y_format: fn(f64) -> String,
}

impl LineChart<'_> {
    /// The SVG.
    pub fn render(&self) -> String {
        let n = self.x_labels.len();
        let values = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .filter(|v| v.is_finite());
        let points: usize = self
            .series
            .iter()
            .map(|s| s.values.iter().flatten().count())
            .sum();
        let frame = Frame {
            id: self.id,
            title: self.title,
            desc: format!(
                "Line chart, {} series over {} periods ({}), {} values.",
                self.series.len(),
                n,
                match (self.x_labels.first(), self.x_labels.last()) {
                    (Some(a), Some(b)) => format!("{a} to {b}"),
                    _ => "no periods".into(),
                },
                points
            ),
            ticks: y_ticks(values, (self.y_min, self.y_max)),
            y_format: self.y_format,
        };
        let mut out = String::with_capacity(4096);
        frame.open(&mut out);
        let x = |i: usize| {
            if n <= 1 {
                (LEFT + WIDTH - RIGHT) / 2.0
            } else {
                Scale::new(0.0, (n - 1) as f64, LEFT + 10.0, WIDTH - RIGHT - 10.0).map(i as f64)
            }
        };
        x_labels(&mut out, &self.x_labels, x);
        let y = frame.y();
        for s in &self.series {
            let _ = write!(out, r#"<g class="series {}">"#, esc(s.class));
            // One polyline per run of consecutive values: a gap is not drawn across.
            let mut run: Vec<(f64, f64)> = Vec::new();
            let flush = |run: &mut Vec<(f64, f64)>, out: &mut String| {
                if run.len() > 1 {
                    let pts: Vec<String> = run
                        .iter()
                        .map(|(a, b)| format!("{},{}", fmt_num(*a), fmt_num(*b)))
                        .collect();
                    let _ = write!(out, r#"<polyline points="{}"/>"#, pts.join(" "));
                }
                run.clear();
            };
            for (i, v) in s.values.iter().enumerate().take(n) {
                match v.filter(|v| v.is_finite()) {
                    Some(v) => run.push((x(i), y.map(v))),
                    None => flush(&mut run, &mut out),
                }
            }
            flush(&mut run, &mut out);
            for (i, v) in s.values.iter().enumerate().take(n) {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    let _ = write!(
                        out,
                        r#"<circle cx="{}" cy="{}" r="3"><title>{}: {} ({})</title></circle>"#,
                        fmt_num(x(i)),
                        fmt_num(y.map(v)),
                        esc(&s.label),
                        esc(&(self.y_format)(v)),
                        esc(&self.x_labels[i])
                    );
                }
            }
            out.push_str("</g>");
        }
        out.push_str("</svg>");
        out
    }
}

/// One bar.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Category label.
    pub label: String,
    /// Value.
    pub value: f64,
}

/// A bar chart over categories.
#[derive(Debug, Clone)]
pub struct BarChart<'a> {
    /// Element id.
    pub id: &'a str,
    /// Title.
    pub title: &'a str,
    /// Bars, in order.
    pub bars: Vec<Bar>,
    /// CSS class of the bars.
    pub class: &'static str,
    /// Tick and label text of a value.
    pub y_format: fn(f64) -> String,
}

impl BarChart<'_> {
    /// The SVG.
    pub fn render(&self) -> String {
        let n = self.bars.len();
        let total: f64 = self.bars.iter().map(|b| b.value).sum();
        let frame = Frame {
            id: self.id,
            title: self.title,
            desc: format!(
                "Bar chart, {} bars ({}), total {}.",
                n,
                match (self.bars.first(), self.bars.last()) {
                    (Some(a), Some(b)) => format!("{} to {}", a.label, b.label),
                    _ => "none".into(),
                },
                (self.y_format)(total)
            ),
            ticks: y_ticks(
                self.bars.iter().map(|b| &b.value).filter(|v| v.is_finite()),
                (None, None),
            ),
            y_format: self.y_format,
        };
        let mut out = String::with_capacity(4096);
        frame.open(&mut out);
        let band = (WIDTH - RIGHT - LEFT) / n.max(1) as f64;
        let x = |i: usize| LEFT + band * (i as f64 + 0.5);
        let labels: Vec<String> = self.bars.iter().map(|b| b.label.clone()).collect();
        x_labels(&mut out, &labels, x);
        let y = frame.y();
        let base = y.map(0.0f64.max(frame.ticks.first().copied().unwrap_or(0.0)));
        let _ = write!(out, r#"<g class="series {}">"#, esc(self.class));
        for (i, b) in self.bars.iter().enumerate() {
            if !b.value.is_finite() {
                continue;
            }
            let top = y.map(b.value);
            let (y0, h) = if top < base {
                (top, base - top)
            } else {
                (base, top - base)
            };
            let w = band * 0.7;
            let _ = write!(
                out,
                r#"<rect x="{}" y="{}" width="{}" height="{}"><title>{}: {}</title></rect>"#,
                fmt_num(x(i) - w / 2.0),
                fmt_num(y0),
                fmt_num(w),
                fmt_num(h.max(0.0)),
                esc(&b.label),
                esc(&(self.y_format)(b.value))
            );
            if n <= 16 {
                let _ = write!(
                    out,
                    r#"<text class="value" x="{}" y="{}" text-anchor="middle">{}</text>"#,
                    fmt_num(x(i)),
                    fmt_num(y0 - 4.0),
                    esc(&(self.y_format)(b.value))
                );
            }
        }
        out.push_str("</g></svg>");
        out
    }
}

/// The mark of a scatter point, so that results differ by shape as well as colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A dot.
    Circle,
    /// A triangle pointing up.
    Triangle,
    /// A square.
    Square,
}

/// One point of a scatter chart.
#[derive(Debug, Clone)]
pub struct Point {
    /// X (epoch milliseconds).
    pub x: f64,
    /// Y.
    pub y: f64,
    /// CSS class of its colour.
    pub class: &'static str,
    /// Its mark.
    pub shape: Shape,
    /// Tooltip text.
    pub title: String,
    /// Where clicking it leads.
    pub href: Option<String>,
}

/// A scatter chart over time.
#[derive(Debug, Clone)]
pub struct Scatter<'a> {
    /// Element id.
    pub id: &'a str,
    /// Title.
    pub title: &'a str,
    /// Points.
    pub points: Vec<Point>,
    /// X range (epoch milliseconds).
    pub x_range: (f64, f64),
    /// Text of an x tick.
    pub x_format: fn(f64) -> String,
    /// Text of a y value.
    pub y_format: fn(f64) -> String,
}

fn mark(out: &mut String, shape: Shape, cx: f64, cy: f64) {
    let r = 4.0;
    let _ = match shape {
        Shape::Circle => write!(
            out,
            r#"<circle cx="{}" cy="{}" r="{}">"#,
            fmt_num(cx),
            fmt_num(cy),
            r
        ),
        Shape::Square => write!(
            out,
            r#"<rect x="{}" y="{}" width="{}" height="{}">"#,
            fmt_num(cx - r),
            fmt_num(cy - r),
            2.0 * r,
            2.0 * r
        ),
        Shape::Triangle => write!(
            out,
            r#"<path d="M{},{} L{},{} L{},{} Z">"#,
            fmt_num(cx),
            fmt_num(cy - r - 1.0),
            fmt_num(cx + r + 1.0),
            fmt_num(cy + r),
            fmt_num(cx - r - 1.0),
            fmt_num(cy + r)
        ),
    };
}

fn close_mark(out: &mut String, shape: Shape) {
    out.push_str(match shape {
        Shape::Circle => "</circle>",
        Shape::Square => "</rect>",
        Shape::Triangle => "</path>",
    });
}

impl Scatter<'_> {
    /// The SVG.
    pub fn render(&self) -> String {
        let (x0, x1) = self.x_range;
        let frame = Frame {
            id: self.id,
            title: self.title,
            desc: format!("Scatter chart of {} points over time.", self.points.len()),
            ticks: y_ticks(
                self.points.iter().map(|p| &p.y).filter(|v| v.is_finite()),
                (None, None),
            ),
            y_format: self.y_format,
        };
        let mut out = String::with_capacity(256 + self.points.len() * 160);
        frame.open(&mut out);
        let x = Scale::new(x0, x1, LEFT + 8.0, WIDTH - RIGHT - 8.0);
        out.push_str(r#"<g class="axis x-axis">"#);
        for t in day_ticks(x0, x1, 7) {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" text-anchor="{}">{}</text>"#,
                fmt_num(x.map(t)),
                fmt_num(HEIGHT - BOTTOM + 18.0),
                anchor(x.map(t)),
                esc(&(self.x_format)(t))
            );
        }
        out.push_str("</g>");
        let y = frame.y();
        out.push_str(r#"<g class="points">"#);
        for p in &self.points {
            if !p.x.is_finite() || !p.y.is_finite() {
                continue;
            }
            if let Some(h) = &p.href {
                let _ = write!(out, r#"<a href="{}" tabindex="-1">"#, esc(h));
            }
            let _ = write!(out, r#"<g class="{}">"#, esc(p.class));
            mark(&mut out, p.shape, x.map(p.x), y.map(p.y));
            let _ = write!(out, "<title>{}</title>", esc(&p.title));
            close_mark(&mut out, p.shape);
            out.push_str("</g>");
            if p.href.is_some() {
                out.push_str("</a>");
            }
        }
        out.push_str("</g></svg>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(hay: &str, needle: &str) -> usize {
        hay.matches(needle).count()
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 100.0, 4), vec![0.0, 50.0, 100.0]);
        assert_eq!(nice_ticks(0.0, 7.0, 4), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(nice_ticks(0.0, 0.3, 3), vec![0.0, 0.1, 0.2, 0.3]);
        let t = nice_ticks(3.2, 97.1, 5);
        assert!(t[0] <= 3.2 && *t.last().unwrap() >= 97.1, "{t:?}");
        assert_eq!(nice_ticks(0.0, 0.0, 4), vec![0.0, 0.5, 1.0]);
        let flat = nice_ticks(5.0, 5.0, 4);
        assert!(flat[0] <= 5.0 && *flat.last().unwrap() >= 5.0, "{flat:?}");
        assert_eq!(nice_ticks(10.0, 0.0, 2), vec![0.0, 5.0, 10.0]);
        assert_eq!(nice_ticks(f64::NAN, 1.0, 4), vec![0.0, 1.0]);
    }

    #[test]
    fn day_ticks_fall_on_midnights() {
        let day = 86_400_000.0;
        let t = day_ticks(10.5 * day, 40.2 * day, 7);
        assert!(t.iter().all(|v| v % day == 0.0));
        assert_eq!(t[0], 11.0 * day);
        assert!(t.len() <= 8, "{t:?}");
        assert!(*t.last().unwrap() <= 40.2 * day);
        assert_eq!(day_ticks(5.0 * day, 5.0 * day, 7), vec![5.0 * day]);
    }

    #[test]
    fn scale_maps_and_inverts_direction() {
        let s = Scale::new(0.0, 10.0, 200.0, 0.0);
        assert_eq!(s.map(0.0), 200.0);
        assert_eq!(s.map(10.0), 0.0);
        assert_eq!(s.map(5.0), 100.0);
        assert_eq!(Scale::new(3.0, 3.0, 0.0, 10.0).map(3.0), 5.0);
    }

    #[test]
    fn line_chart_breaks_at_gaps_and_escapes() {
        let c = LineChart {
            id: "lead",
            title: "Lead <time>",
            x_labels: vec![
                "W1".into(),
                "W2".into(),
                "W3".into(),
                "W4".into(),
                "W5".into(),
            ],
            series: vec![Series {
                label: "median & p90".into(),
                class: "s-1",
                values: vec![Some(1.0), Some(2.0), None, Some(4.0), Some(3.0)],
            }],
            y_min: None,
            y_max: None,
            y_format: |v| format!("{v} h"),
        }
        .render();
        assert!(c.starts_with("<svg") && c.ends_with("</svg>"));
        assert!(c.contains(r#"role="img""#));
        assert!(c.contains("<title id=\"lead-t\">Lead &lt;time&gt;</title>"));
        assert_eq!(count(&c, "<polyline"), 2, "two segments around the gap");
        assert_eq!(count(&c, "<circle"), 4);
        assert!(c.contains("median &amp; p90: 4 h (W4)"));
        assert!(!c.contains("<time>"));
        // y axis from 0 to 4 with round ticks
        assert!(c.contains(">0 h</text>") && c.contains(">4 h</text>"));
        // The last category label sits at the right edge: aligned inwards.
        assert!(c.contains(r#"text-anchor="end">W5</text>"#), "{c}");
    }

    #[test]
    fn line_chart_points_sit_where_values_say() {
        let c = LineChart {
            id: "x",
            title: "t",
            x_labels: vec!["a".into(), "b".into()],
            series: vec![Series {
                label: "s".into(),
                class: "s-1",
                values: vec![Some(0.0), Some(100.0)],
            }],
            y_min: Some(0.0),
            y_max: Some(100.0),
            y_format: |v| format!("{v}"),
        }
        .render();
        // 0 sits on the bottom of the plot, 100 on the top.
        let bottom = fmt_num(HEIGHT - BOTTOM);
        let top = fmt_num(TOP);
        assert!(c.contains(&format!(r#"cy="{bottom}""#)), "{c}");
        assert!(c.contains(&format!(r#"cy="{top}""#)), "{c}");
    }

    #[test]
    fn bar_chart_draws_one_bar_per_category_from_zero() {
        let c = BarChart {
            id: "deploys",
            title: "Deployments per week",
            bars: (0..5)
                .map(|i| Bar {
                    label: format!("W{i}"),
                    value: i as f64,
                })
                .collect(),
            class: "s-1",
            y_format: |v| format!("{v}"),
        }
        .render();
        assert_eq!(count(&c, "<rect"), 5);
        assert!(c.contains("<title>W4: 4</title>"));
        assert!(c.contains(r#"height="0.0""#), "the zero bar is flat");
        assert!(c.contains("total 10"));
    }

    #[test]
    fn empty_charts_still_render() {
        let c = BarChart {
            id: "e",
            title: "empty",
            bars: vec![],
            class: "s-1",
            y_format: |v| format!("{v}"),
        }
        .render();
        assert!(c.contains("</svg>"));
        let l = LineChart {
            id: "l",
            title: "empty",
            x_labels: vec![],
            series: vec![],
            y_min: None,
            y_max: None,
            y_format: |v| format!("{v}"),
        }
        .render();
        assert!(l.contains("no periods"));
    }

    #[test]
    fn scatter_points_have_shapes_links_and_titles() {
        let day = 86_400_000.0;
        let c = Scatter {
            id: "durations",
            title: "Durations",
            points: vec![
                Point {
                    x: day,
                    y: 60.0,
                    class: "r-success",
                    shape: Shape::Circle,
                    title: "#1 success".into(),
                    href: Some("/runs/a?x=1&y=2".into()),
                },
                Point {
                    x: 2.0 * day,
                    y: 90.0,
                    class: "r-failure",
                    shape: Shape::Triangle,
                    title: "#2 failure".into(),
                    href: None,
                },
                Point {
                    x: 3.0 * day,
                    y: f64::NAN,
                    class: "r-neutral",
                    shape: Shape::Square,
                    title: "skipped".into(),
                    href: None,
                },
            ],
            x_range: (day, 3.0 * day),
            x_format: |v| format!("d{}", v / 86_400_000.0),
            y_format: |v| format!("{v} s"),
        }
        .render();
        assert_eq!(count(&c, "<circle"), 1);
        assert_eq!(count(&c, "<path"), 1);
        assert_eq!(
            count(&c, "<rect"),
            0,
            "a point without a value is not drawn"
        );
        assert!(c.contains(r#"<a href="/runs/a?x=1&amp;y=2" tabindex="-1">"#));
        assert!(c.contains("<title>#2 failure</title>"));
        assert!(c.contains(">d1</text>") && c.contains(">d3</text>"));
    }
}
