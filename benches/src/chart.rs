//! Draws `vswitch-bench` results as one self-contained SVG (chart.svg): a panel of bars per scenario and worker-scaling panels.
//!
//! The SVG is written by hand rather than through a plotting crate: the chart is small and fixed
//! in shape, and a plain file with no scripts or embedded fonts opens the same in a browser and
//! in `rsvg-convert`. Text cannot be measured without a font engine, so labels are truncated or
//! rotated against a conservative per-character width estimate.

use std::fmt::Write;

/// One bar: a system's median with its min–max over runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub system: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// One scenario's panel of grouped bars (its own y axis and unit).
#[derive(Debug, Clone, PartialEq)]
pub struct BarGroup {
    /// e.g. "l2-tcp mtu 1500".
    pub scenario: String,
    /// e.g. "Gbit/s".
    pub unit: String,
    pub higher_is_better: bool,
    pub bars: Vec<Bar>,
}

/// One line of a scaling chart: a system's medians (with min–max) against worker counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub system: String,
    /// (workers, median, min, max).
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// One scenario's scaling panel; `flat` holds peers measured once (drawn as a horizontal dashed line at their median, labelled).
#[derive(Debug, Clone, PartialEq)]
pub struct LineGroup {
    pub scenario: String,
    pub unit: String,
    pub higher_is_better: bool,
    pub lines: Vec<Line>,
    pub flat: Vec<Bar>,
}

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 260.0;
const GAP: f64 = 16.0;
const MARGIN: f64 = 20.0;
const COLS: usize = 3;
/// Plot area inside a panel: room above for the title lines, left for tick labels and the unit.
const PLOT_LEFT: f64 = 54.0;
const PLOT_TOP: f64 = 56.0;
const PLOT_RIGHT_PAD: f64 = 12.0;
/// Scaling panels keep a column right of the plot for the series' end labels.
const END_LABEL_W: f64 = 84.0;
/// DejaVu Sans (what rsvg falls back to for sans-serif) averages under 0.6 em per character;
/// overestimating keeps estimated labels from touching.
const CHAR_EM: f64 = 0.6;
const BAR_LABEL_ANGLE: f64 = 35.0;

/// vswitch is the subject of the comparison, so its family gets the warm, saturated colours
/// and every peer a cooler one; more than one vswitch variant can share a panel
/// (vswitch and vswitch-routed), hence several.
const VSWITCH_COLOURS: [&str; 3] = ["#e8590c", "#b02318", "#f2a20c"];
const PEER_COLOURS: [&str; 9] = ["#4e79a7", "#59a14f", "#8e6bb0", "#7f7f7f", "#2ba3b8", "#9c755f", "#d37295", "#2f4b7c", "#8f9a2c"];

/// Renders the whole chart.svg: a title line, a subtitle line (machine, date, runs), bar panels
/// in a grid (small multiples, 3 per row), then scaling panels on rows of their own.
///
/// Each system keeps one colour throughout; non-finite values are left out rather than drawn.
pub fn render(title: &str, subtitle: &str, bars: &[BarGroup], scaling: &[LineGroup]) -> String {
    let colours = assign_colours(bars, scaling);
    let cols = COLS.min(bars.len().max(scaling.len())).max(1);
    let width = 2.0 * MARGIN + cols as f64 * PANEL_W + (cols - 1) as f64 * GAP;

    let legend = legend_layout(&colours, width);
    let legend_top = 66.0;
    let legend_h = legend.last().map_or(0.0, |item| item.y + 20.0);
    let panels_top = legend_top + legend_h + 8.0;
    let bar_rows = bars.len().div_ceil(cols);
    let scaling_rows = scaling.len().div_ceil(cols);
    let rows = bar_rows + scaling_rows;
    let height = panels_top + rows as f64 * (PANEL_H + GAP) - if rows > 0 { GAP } else { 0.0 } + MARGIN;

    let mut svg = Svg::default();
    svg.raw(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n",
        w = num(width),
        h = num(height),
    ));
    svg.raw(&format!("<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>\n", num(width), num(height)));
    let text_w = width - 2.0 * MARGIN;
    svg.text(MARGIN, 30.0, &fit(title, text_w, 18.0), &Style { size: 18.0, bold: true, fill: "#1a1a1a", ..Style::default() });
    svg.text(MARGIN, 50.0, &fit(subtitle, text_w, 12.0), &Style { size: 12.0, fill: "#555555", ..Style::default() });
    for item in &legend {
        let (x, y) = (MARGIN + item.x, legend_top + item.y);
        svg.raw(&format!("<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" rx=\"2\" fill=\"{}\"/>\n", num(x), num(y), item.colour));
        svg.text(x + 17.0, y + 10.5, &item.label, &Style { size: 12.0, fill: "#333333", ..Style::default() });
    }

    let origin = |index: usize, row_offset: usize| {
        let row = row_offset + index / cols;
        let col = index % cols;
        (MARGIN + col as f64 * (PANEL_W + GAP), panels_top + row as f64 * (PANEL_H + GAP))
    };
    for (i, group) in bars.iter().enumerate() {
        let (x, y) = origin(i, 0);
        bar_panel(&mut svg, x, y, group, &colours);
    }
    for (i, group) in scaling.iter().enumerate() {
        let (x, y) = origin(i, bar_rows);
        line_panel(&mut svg, x, y, group, &colours);
    }
    svg.raw("</svg>\n");
    svg.out
}

/// Colours by system, in order of first appearance so that a system keeps its colour in every
/// panel and across reruns with the same systems.
fn assign_colours(bars: &[BarGroup], scaling: &[LineGroup]) -> Vec<(String, &'static str)> {
    let names = bars
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| &b.system))
        .chain(scaling.iter().flat_map(|g| g.lines.iter().map(|l| &l.system).chain(g.flat.iter().map(|b| &b.system))));
    let mut out: Vec<(String, &'static str)> = Vec::new();
    let (mut own, mut peers) = (0, 0);
    for name in names {
        if out.iter().any(|(n, _)| n == name) {
            continue;
        }
        let colour = if name.starts_with("vswitch") {
            own += 1;
            VSWITCH_COLOURS[(own - 1) % VSWITCH_COLOURS.len()]
        } else {
            peers += 1;
            PEER_COLOURS[(peers - 1) % PEER_COLOURS.len()]
        };
        out.push((name.clone(), colour));
    }
    out
}

fn colour_of(colours: &[(String, &'static str)], system: &str) -> &'static str {
    colours.iter().find(|(n, _)| n == system).map_or("#7f7f7f", |(_, c)| *c)
}

struct LegendItem {
    x: f64,
    y: f64,
    label: String,
    colour: &'static str,
}

/// Lays the legend out left to right, wrapping onto new rows at the chart's width.
fn legend_layout(colours: &[(String, &'static str)], width: f64) -> Vec<LegendItem> {
    let avail = width - 2.0 * MARGIN;
    let (mut x, mut y) = (0.0, 0.0);
    let mut out = Vec::new();
    for (name, colour) in colours {
        let label = fit_name(name, avail - 17.0, 12.0);
        let w = 17.0 + text_width(&label, 12.0) + 22.0;
        if x > 0.0 && x + w > avail {
            x = 0.0;
            y += 20.0;
        }
        out.push(LegendItem { x, y, label, colour });
        x += w;
    }
    out
}

/// Draws the frame, title, better-direction note and y axis shared by both panel kinds;
/// returns the y scale (value to pixel) for the plot area.
fn panel_frame(svg: &mut Svg, scenario: &str, unit: &str, higher_is_better: bool, plot: &Rect, top_value: &[f64]) -> impl Fn(f64) -> f64 {
    svg.raw(&format!(
        "<rect x=\"0.5\" y=\"0.5\" width=\"{}\" height=\"{}\" rx=\"4\" fill=\"none\" stroke=\"#dddddd\"/>\n",
        num(PANEL_W - 1.0),
        num(PANEL_H - 1.0)
    ));
    svg.text(10.0, 20.0, &fit(scenario, PANEL_W - 20.0, 13.0), &Style { size: 13.0, bold: true, fill: "#1a1a1a", ..Style::default() });
    let better = if higher_is_better { "higher is better" } else { "lower is better" };
    svg.text(10.0, 35.0, better, &Style { size: 10.0, fill: "#888888", ..Style::default() });

    let ticks = nice_ticks(top_value.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max));
    let top = ticks.last().copied().unwrap_or(1.0);
    let step = if ticks.len() > 1 { ticks[1] } else { top };
    let (bottom, height) = (plot.y + plot.h, plot.h);
    let y_of = move |v: f64| {
        let v = if v.is_finite() { v.clamp(0.0, top) } else { 0.0 };
        bottom - v / top * height
    };
    let scale = Suffix::for_max(top);
    for &t in &ticks {
        let y = y_of(t);
        let stroke = if t == 0.0 { "#999999" } else { "#e8e8e8" };
        svg.line(plot.x, y, plot.x + plot.w, y, stroke, 1.0);
        svg.text(
            plot.x - 6.0,
            y + 3.5,
            &fmt_tick(t, step, scale),
            &Style { size: 10.0, fill: "#555555", anchor: "end", ..Style::default() },
        );
    }
    let unit_y = plot.y + plot.h / 2.0;
    let unit = fit(unit, plot.h, 10.0);
    svg.raw(&format!(
        "<text x=\"14\" y=\"{y}\" font-size=\"10\" fill=\"#555555\" text-anchor=\"middle\" \
         transform=\"rotate(-90 14 {y})\">{}</text>\n",
        escape(&unit),
        y = num(unit_y)
    ));
    y_of
}

fn bar_panel(svg: &mut Svg, px: f64, py: f64, group: &BarGroup, colours: &[(String, &'static str)]) {
    svg.raw(&format!("<g transform=\"translate({},{})\">\n", num(px), num(py)));
    let bars: Vec<&Bar> = group.bars.iter().filter(|b| b.median.is_finite()).collect();
    let n = bars.len().max(1) as f64;
    let plot_w = PANEL_W - PLOT_LEFT - PLOT_RIGHT_PAD;
    let slot = plot_w / n;
    let name_size = 11.0;
    let horizontal = bars.iter().all(|b| text_width(&b.system, name_size) <= slot - 4.0);
    let label_h = if horizontal { 24.0 } else { 70.0 };
    let plot = Rect { x: PLOT_LEFT, y: PLOT_TOP, w: plot_w, h: PANEL_H - PLOT_TOP - label_h };
    let tops: Vec<f64> = bars.iter().flat_map(|b| [b.median, whisker(b).map_or(0.0, |w| w.1)]).collect();
    let y_of = panel_frame(svg, &group.scenario, &group.unit, group.higher_is_better, &plot, &tops);
    let bottom = plot.y + plot.h;

    if bars.is_empty() {
        no_data(svg, &plot);
    }
    let bar_w = (slot * 0.7).min(56.0);
    let values: Vec<String> = bars.iter().map(|b| fmt_value(b.median)).collect();
    let widest = values.iter().map(|v| v.chars().count()).max().unwrap_or(1).max(1) as f64;
    // Value labels shrink rather than collide once many systems share a panel.
    let value_size = (slot / (widest * CHAR_EM)).clamp(7.0, 10.5);
    for (i, (bar, value)) in bars.iter().zip(&values).enumerate() {
        let cx = plot.x + slot * (i as f64 + 0.5);
        let colour = colour_of(colours, &bar.system);
        let y = y_of(bar.median);
        svg.raw(&format!(
            "<rect class=\"bar\" data-system=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>\n",
            escape(&bar.system),
            num(cx - bar_w / 2.0),
            num(y),
            num(bar_w),
            num(bottom - y),
            colour,
            escape(&tooltip(&bar.system, bar.median, whisker(bar), &group.unit)),
        ));
        let mut label_base = y;
        if let Some((lo, hi)) = whisker(bar) {
            let (ylo, yhi) = (y_of(lo), y_of(hi));
            let cap = (bar_w * 0.3).clamp(3.0, 8.0);
            svg.line(cx, ylo, cx, yhi, "#333333", 1.0);
            svg.line(cx - cap, yhi, cx + cap, yhi, "#333333", 1.0);
            svg.line(cx - cap, ylo, cx + cap, ylo, "#333333", 1.0);
            label_base = label_base.min(yhi);
        }
        svg.text(cx, label_base - 4.0, value, &Style { size: value_size, fill: "#222222", anchor: "middle", ..Style::default() });
        if horizontal {
            svg.text(cx, bottom + 15.0, &bar.system, &Style { size: name_size, fill: "#333333", anchor: "middle", ..Style::default() });
        } else {
            // Rotated labels hang down-left from the bar's foot: the room below the plot
            // and the room left of the bar both bound how long a name can be.
            let (sin, cos) = BAR_LABEL_ANGLE.to_radians().sin_cos();
            let below = (label_h - 14.0) / sin;
            let left = (cx - 4.0) / cos;
            let name = fit_name(&bar.system, below.min(left), name_size);
            let (ax, ay) = (cx + 3.0, bottom + 12.0);
            svg.raw(&format!(
                "<text x=\"{x}\" y=\"{y}\" font-size=\"{}\" fill=\"#333333\" text-anchor=\"end\" \
                 transform=\"rotate(-{} {x} {y})\">{}</text>\n",
                num(name_size),
                num(BAR_LABEL_ANGLE),
                escape(&name),
                x = num(ax),
                y = num(ay),
            ));
        }
    }
    svg.raw("</g>\n");
}

fn line_panel(svg: &mut Svg, px: f64, py: f64, group: &LineGroup, colours: &[(String, &'static str)]) {
    svg.raw(&format!("<g transform=\"translate({},{})\">\n", num(px), num(py)));
    let plot = Rect { x: PLOT_LEFT, y: PLOT_TOP, w: PANEL_W - PLOT_LEFT - END_LABEL_W, h: PANEL_H - PLOT_TOP - 44.0 };
    let lines: Vec<(&str, Vec<Point>)> = group
        .lines
        .iter()
        .map(|l| {
            let mut pts: Vec<Point> = l
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, median, lo, hi)| Point {
                    x,
                    median,
                    whisker: (lo.is_finite() && hi.is_finite()).then(|| (lo.min(hi), lo.max(hi))),
                })
                .collect();
            pts.sort_by(|a, b| a.x.total_cmp(&b.x));
            (l.system.as_str(), pts)
        })
        .collect();
    let flat: Vec<&Bar> = group.flat.iter().filter(|b| b.median.is_finite()).collect();
    let tops: Vec<f64> = lines
        .iter()
        .flat_map(|(_, pts)| pts.iter().flat_map(|p| [p.median, p.whisker.map_or(0.0, |w| w.1)]))
        .chain(flat.iter().map(|b| b.median))
        .collect();
    let y_of = panel_frame(svg, &group.scenario, &group.unit, group.higher_is_better, &plot, &tops);
    let bottom = plot.y + plot.h;

    let mut xs: Vec<f64> = lines.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.x)).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let x_of = x_scale(&xs, plot.x, plot.w);
    let mut last_label_x = f64::NEG_INFINITY;
    let label_gap = xs.iter().map(|&x| text_width(&fmt_count(x), 10.0)).fold(0.0, f64::max) + 6.0;
    for &x in &xs {
        let sx = x_of(x);
        svg.line(sx, plot.y, sx, bottom, "#f0f0f0", 1.0);
        svg.line(sx, bottom, sx, bottom + 4.0, "#999999", 1.0);
        // Linear axes with many worker counts would crowd; a skipped label keeps its tick.
        if sx - last_label_x >= label_gap {
            svg.text(sx, bottom + 15.0, &fmt_count(x), &Style { size: 10.0, fill: "#555555", anchor: "middle", ..Style::default() });
            last_label_x = sx;
        }
    }
    svg.text(plot.x + plot.w / 2.0, bottom + 32.0, "workers", &Style { size: 10.0, fill: "#555555", anchor: "middle", ..Style::default() });
    if lines.iter().all(|(_, pts)| pts.is_empty()) && flat.is_empty() {
        no_data(svg, &plot);
    }

    let mut end_labels: Vec<(f64, &str, &'static str, String)> = Vec::new();
    for bar in &flat {
        let colour = colour_of(colours, &bar.system);
        let y = y_of(bar.median);
        svg.raw(&format!(
            "<line class=\"flat\" data-system=\"{}\" x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{}\" \
             stroke-width=\"1.5\" stroke-dasharray=\"6 4\"><title>{}</title></line>\n",
            escape(&bar.system),
            num(plot.x),
            num(plot.x + plot.w),
            colour,
            escape(&tooltip(&bar.system, bar.median, whisker(bar), &group.unit)),
            y = num(y),
        ));
        end_labels.push((y, &bar.system, colour, fmt_value(bar.median)));
    }
    // vswitch's own lines go on top where lines cross.
    let mut drawing: Vec<&(&str, Vec<Point>)> = lines.iter().collect();
    drawing.sort_by_key(|(system, _)| system.starts_with("vswitch"));
    for (system, pts) in drawing {
        let colour = colour_of(colours, system);
        if pts.len() > 1 {
            let path: Vec<String> = pts.iter().map(|p| format!("{},{}", num(x_of(p.x)), num(y_of(p.median)))).collect();
            svg.raw(&format!(
                "<polyline data-system=\"{}\" points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-linejoin=\"round\"/>\n",
                escape(system),
                path.join(" "),
                colour
            ));
        }
        for p in pts {
            let (sx, sy) = (x_of(p.x), y_of(p.median));
            if let Some((lo, hi)) = p.whisker {
                let (ylo, yhi) = (y_of(lo), y_of(hi));
                svg.line(sx, ylo, sx, yhi, colour, 1.2);
                svg.line(sx - 3.0, ylo, sx + 3.0, ylo, colour, 1.2);
                svg.line(sx - 3.0, yhi, sx + 3.0, yhi, colour, 1.2);
            }
            svg.raw(&format!(
                "<circle class=\"point\" data-system=\"{}\" cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{}\" stroke=\"#ffffff\" stroke-width=\"1\"><title>{}</title></circle>\n",
                escape(system),
                num(sx),
                num(sy),
                colour,
                escape(&format!("{} workers: {}", fmt_count(p.x), tooltip(system, p.median, p.whisker, &group.unit))),
            ));
        }
        if let Some(last) = pts.last() {
            end_labels.push((y_of(last.median), system, colour, fmt_value(last.median)));
        }
    }
    // End labels name every series beside the plot, nudged apart so that close values stay legible.
    end_labels.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ys = spread(&end_labels.iter().map(|l| l.0).collect::<Vec<_>>(), 12.0, plot.y, bottom + 10.0);
    for ((_, name, colour, value), y) in end_labels.iter().zip(ys) {
        let room = END_LABEL_W - 10.0 - text_width(value, 10.0) - text_width(" ", 10.0);
        let _ = writeln!(
            svg.out,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"{colour}\">{} <tspan fill=\"#555555\">{}</tspan></text>",
            num(plot.x + plot.w + 6.0),
            num(y + 3.5),
            escape(&fit_name(name, room, 10.0)),
            escape(value),
        );
    }
    svg.raw("</g>\n");
}

/// Marks an empty plot, on a white patch so that the gridline through the middle does not strike it out.
fn no_data(svg: &mut Svg, plot: &Rect) {
    let (cx, cy) = (plot.x + plot.w / 2.0, plot.y + plot.h / 2.0);
    svg.raw(&format!("<rect x=\"{}\" y=\"{}\" width=\"60\" height=\"18\" fill=\"#ffffff\"/>\n", num(cx - 30.0), num(cy - 9.0)));
    svg.text(cx, cy + 4.0, "no data", &Style { size: 11.0, fill: "#999999", anchor: "middle", ..Style::default() });
}

struct Point {
    x: f64,
    median: f64,
    whisker: Option<(f64, f64)>,
}

struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

fn whisker(bar: &Bar) -> Option<(f64, f64)> {
    (bar.min.is_finite() && bar.max.is_finite()).then(|| (bar.min.min(bar.max), bar.min.max(bar.max)))
}

fn tooltip(system: &str, median: f64, whisker: Option<(f64, f64)>, unit: &str) -> String {
    match whisker {
        Some((lo, hi)) => format!("{system}: {} {unit} (min {}, max {})", fmt_value(median), fmt_value(lo), fmt_value(hi)),
        None => format!("{system}: {} {unit}", fmt_value(median)),
    }
}

/// Moves sorted positions apart to at least `gap`, staying within `lo..=hi` where there is room.
fn spread(ys: &[f64], gap: f64, lo: f64, hi: f64) -> Vec<f64> {
    let mut out: Vec<f64> = ys.to_vec();
    for i in 0..out.len() {
        let min = if i == 0 { lo } else { out[i - 1] + gap };
        out[i] = out[i].max(min);
    }
    for i in (0..out.len()).rev() {
        let max = if i + 1 == out.len() { hi } else { out[i + 1] - gap };
        out[i] = out[i].min(max);
    }
    out
}

/// Whether worker counts read better on a log2 axis: powers of two that span at least 4×
/// (1 2 4 8 16 would otherwise bunch up at the left).
fn use_log2(xs: &[f64]) -> bool {
    let powers = !xs.is_empty() && xs.iter().all(|&x| x > 0.0 && x.is_finite() && x.log2().fract() == 0.0);
    let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    powers && hi / lo >= 4.0
}

/// Maps worker counts to pixels across `left..left + width`, inset so end markers are not cut.
fn x_scale(xs: &[f64], left: f64, width: f64) -> impl Fn(f64) -> f64 {
    let log = use_log2(xs);
    let t = move |x: f64| if log { x.log2() } else { x };
    let lo = xs.first().map_or(0.0, |&x| t(x));
    let hi = xs.last().map_or(1.0, |&x| t(x));
    let inset = 12.0;
    let span = hi - lo;
    move |x: f64| {
        if span > 0.0 && span.is_finite() {
            left + inset + (t(x) - lo) / span * (width - 2.0 * inset)
        } else {
            left + width / 2.0
        }
    }
}

/// Ticks from 0 to a round number at or above `max`: 4 or 5 of them, spaced 1, 2, 2.5 or 5 × 10^k.
fn nice_ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let base = 10f64.powf(max.log10().floor() - 1.0);
    for step in [1.0, 2.0, 2.5, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0].map(|m| m * base) {
        // A hair of tolerance so that 20 (not 20.000000001) ends the axis for a max of 20.
        let intervals = (max / step * (1.0 - 1e-9)).ceil().max(1.0);
        if intervals <= 4.0 {
            let ticks: Vec<f64> = (0..=intervals as usize).map(|i| i as f64 * step).collect();
            if ticks.iter().all(|t| t.is_finite()) && step > 0.0 {
                return ticks;
            }
            break;
        }
    }
    vec![0.0, 0.25, 0.5, 0.75, 1.0]
}

/// Thousands suffix shared by all ticks of one axis, so they read as one scale.
#[derive(Clone, Copy)]
struct Suffix {
    div: f64,
    name: &'static str,
}

impl Suffix {
    fn for_max(v: f64) -> Suffix {
        let v = v.abs();
        let (div, name) = if v >= 1e12 {
            (1e12, "T")
        } else if v >= 1e9 {
            (1e9, "G")
        } else if v >= 1e6 {
            (1e6, "M")
        } else if v >= 1e3 {
            (1e3, "k")
        } else {
            (1.0, "")
        };
        Suffix { div, name }
    }
}

fn fmt_tick(v: f64, step: f64, suffix: Suffix) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let step = step / suffix.div;
    let decimals = (0..=9).find(|&d| {
        let scaled = step * 10f64.powi(d);
        (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
    });
    let s = format!("{:.*}", decimals.unwrap_or(3) as usize, v / suffix.div);
    format!("{}{}", trim_zeros(&s), suffix.name)
}

/// A value to 3 significant figures (17.3, 127, 0.845, 17.0), with k/M/G/T past a thousand;
/// trailing zeros stay so that every label carries the same precision.
fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    if a < 1e-3 {
        // Fixed notation would need ever more zeros to reach 3 significant figures.
        return format!("{v:.2e}");
    }
    let scale = 10f64.powi(2 - a.log10().floor() as i32);
    // Round before choosing the suffix so that 999.7 becomes 1.00k rather than 1000.
    let rounded = Some((a * scale).round() / scale).filter(|r| r.is_finite() && *r > 0.0).unwrap_or(a);
    if rounded >= 1e15 {
        // Past the last suffix, fixed notation would print every digit of the float.
        return format!("{v:.2e}");
    }
    let suffix = Suffix::for_max(rounded);
    let x = rounded / suffix.div;
    let decimals = (2 - x.log10().floor() as i32).max(0) as usize;
    let sign = if v < 0.0 { "-" } else { "" };
    format!("{sign}{x:.decimals$}{}", suffix.name)
}

/// A worker count: whole numbers as such (1, 2, 16), anything else to 3 significant figures.
fn fmt_count(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e6 {
        format!("{}", v as i64)
    } else {
        fmt_value(v)
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * CHAR_EM
}

/// Shortens `s` with a trailing ellipsis to fit `width` pixels at font `size`.
fn fit(s: &str, width: f64, size: f64) -> String {
    let max = max_chars(width, size);
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Shortens a system name with an ellipsis in the middle: variants of one system tend to
/// share a prefix and differ at the end (vswitch-routed, slirp4netns-v2), so both ends stay.
fn fit_name(s: &str, width: f64, size: f64) -> String {
    let max = max_chars(width, size);
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= max {
        return s.to_string();
    }
    let head = max.saturating_sub(1) / 2;
    let tail = max.saturating_sub(1) - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

fn max_chars(width: f64, size: f64) -> usize {
    (width / (size * CHAR_EM)).floor().max(1.0) as usize
}

/// Escapes text for both element content and attribute values; characters XML 1.0 forbids
/// (most controls) are replaced, since one stray byte from a system name would void the file.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate or size for an attribute: one decimal, and never NaN or inf.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".to_string();
    }
    let r = (v * 10.0).round() / 10.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

struct Style {
    size: f64,
    bold: bool,
    fill: &'static str,
    anchor: &'static str,
}

impl Default for Style {
    fn default() -> Self {
        Style { size: 11.0, bold: false, fill: "#000000", anchor: "start" }
    }
}

#[derive(Default)]
struct Svg {
    out: String,
}

impl Svg {
    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn text(&mut self, x: f64, y: f64, content: &str, style: &Style) {
        let _ = write!(self.out, "<text x=\"{}\" y=\"{}\" font-size=\"{}\" fill=\"{}\"", num(x), num(y), num(style.size), style.fill);
        if style.bold {
            self.out.push_str(" font-weight=\"bold\"");
        }
        if style.anchor != "start" {
            let _ = write!(self.out, " text-anchor=\"{}\"", style.anchor);
        }
        let _ = writeln!(self.out, ">{}</text>", escape(content));
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, width: f64) {
        let _ = write!(
            self.out,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\" stroke-width=\"{}\"",
            num(x1),
            num(y1),
            num(x2),
            num(y2),
            num(width)
        );
        self.out.push_str("/>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(system: &str, median: f64) -> Bar {
        Bar { system: system.to_string(), median, min: median * 0.97, max: median * 1.02 }
    }

    fn group(scenario: &str, unit: &str, higher_is_better: bool, bars: &[(&str, f64)]) -> BarGroup {
        BarGroup {
            scenario: scenario.to_string(),
            unit: unit.to_string(),
            higher_is_better,
            bars: bars.iter().map(|&(s, m)| bar(s, m)).collect(),
        }
    }

    fn scaling_line(system: &str, medians: &[f64]) -> Line {
        Line {
            system: system.to_string(),
            points: [1.0, 2.0, 4.0, 8.0, 16.0].iter().zip(medians).map(|(&w, &m)| (w, m, m * 0.95, m * 1.04)).collect(),
        }
    }

    fn demo() -> (Vec<BarGroup>, Vec<LineGroup>) {
        let bars = vec![
            group("l2-tcp mtu 1500", "Gbit/s", true, &[("bridge", 15.8), ("ovs", 6.1), ("vswitch", 17.3), ("null", 17.4)]),
            group("l2-tcp mtu 65520", "Gbit/s", true, &[("bridge", 31.0), ("ovs", 8.0), ("vswitch", 21.3), ("null", 20.1)]),
            group("l2-pps", "kpps", true, &[("bridge", 177.0), ("ovs", 90.0), ("vswitch", 127.0), ("null", 117.0)]),
            group("l2-rtt p50", "µs", false, &[("bridge", 69.5), ("ovs", 80.0), ("vswitch", 84.4), ("null", 77.2)]),
            group("l3-tcp", "Gbit/s", true, &[("kernel-router", 14.8), ("vswitch-routed", 17.0), ("null", 17.4)]),
            group("nat-out", "Gbit/s", true, &[("vswitch", 20.1), ("pasta", 14.2), ("slirp4netns", 1.2)]),
            group("conn-rate", "conn/s", true, &[("vswitch", 9500.0), ("pasta", 10100.0), ("slirp4netns", 3100.0)]),
            group("dns-qps", "qps", true, &[("dnsmasq", 140_000.0), ("vswitch", 136_000.0)]),
        ];
        let scaling = vec![LineGroup {
            scenario: "l2-tcp scaling".to_string(),
            unit: "Gbit/s".to_string(),
            higher_is_better: true,
            lines: vec![scaling_line("vswitch", &[17.3, 31.5, 55.2, 88.0, 112.0]), scaling_line("null", &[17.4, 33.0, 60.1, 97.5, 131.0])],
            flat: vec![bar("bridge", 15.8)],
        }];
        (bars, scaling)
    }

    /// Everything degenerate at once: one system, zeros, non-finite values, empty panels.
    fn degenerate() -> (Vec<BarGroup>, Vec<LineGroup>) {
        let zero = Bar { system: "vswitch".into(), median: 0.0, min: 0.0, max: 0.0 };
        let mut bars = vec![
            BarGroup { scenario: "all zero".into(), unit: "Gbit/s".into(), higher_is_better: true, bars: vec![zero.clone()] },
            BarGroup { scenario: "empty".into(), unit: "".into(), higher_is_better: false, bars: vec![] },
            BarGroup {
                scenario: "non-finite".into(),
                unit: "qps".into(),
                higher_is_better: true,
                bars: vec![
                    Bar { system: "vswitch".into(), median: f64::NAN, min: 1.0, max: 2.0 },
                    Bar { system: "vswitch".into(), median: 3.0, min: f64::NEG_INFINITY, max: f64::INFINITY },
                ],
            },
        ];
        bars.push(BarGroup {
            scenario: "extremes".into(),
            unit: "x".into(),
            higher_is_better: true,
            bars: vec![
                Bar { system: "vswitch".into(), median: 1e300, min: f64::MAX, max: 1e299 },
                Bar { system: "vswitch".into(), median: -5.0, min: -7.0, max: 1e-310 },
            ],
        });
        let scaling = vec![LineGroup {
            scenario: "zero scaling".into(),
            unit: "Gbit/s".into(),
            higher_is_better: true,
            lines: vec![
                Line {
                    system: "vswitch".into(),
                    points: vec![(1.0, 0.0, 0.0, 0.0), (f64::NAN, 1.0, 1.0, 1.0), (2.0, f64::INFINITY, 0.0, 0.0)],
                },
                Line { system: "vswitch".into(), points: vec![] },
            ],
            flat: vec![zero],
        }];
        (bars, scaling)
    }

    /// Checks what an XML parser would: tags nest and close, attributes are quoted, and
    /// every `&` starts an entity; enough to catch unescaped text and unbalanced output.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>").expect("XML declaration");
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            rest = &rest[open + 1..];
            let close = rest.find('>').expect("unterminated tag");
            let tag = &rest[..close];
            rest = &rest[close + 1..];
            assert!(!tag.contains('<'), "'<' inside tag {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.trim()), "mismatched close tag {name}");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let (name, attrs) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
            assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'), "bad tag name {name:?}");
            check_attrs(attrs);
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed tags {stack:?}");
        assert_eq!(roots, 1, "one root element");
    }

    fn check_attrs(mut attrs: &str) {
        let mut seen = Vec::new();
        loop {
            attrs = attrs.trim_start();
            if attrs.is_empty() {
                return;
            }
            let eq = attrs.find('=').unwrap_or_else(|| panic!("attribute without value in {attrs:?}"));
            let name = attrs[..eq].trim();
            assert!(!seen.contains(&name), "duplicate attribute {name}");
            seen.push(name);
            let value = attrs[eq + 1..].strip_prefix('"').unwrap_or_else(|| panic!("unquoted attribute {name}"));
            let end = value.find('"').expect("unterminated attribute");
            check_text(&value[..end]);
            attrs = &value[end + 1..];
        }
    }

    fn check_text(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity), "bare '&' in {text:?}");
        }
    }

    fn assert_finite(svg: &str) {
        for bad in ["NaN", "inf"] {
            assert!(!svg.contains(bad), "{bad} in output");
        }
    }

    /// The fill of every bar drawn for `system`, in document order.
    fn bar_fills<'a>(svg: &'a str, system: &str) -> Vec<&'a str> {
        let key = format!("class=\"bar\" data-system=\"{system}\"");
        svg.match_indices(&key)
            .map(|(i, _)| {
                let tag = &svg[i..i + svg[i..].find('>').unwrap()];
                let fill = &tag[tag.find("fill=\"").unwrap() + 6..];
                &fill[..fill.find('"').unwrap()]
            })
            .collect()
    }

    #[test]
    fn demo_is_well_formed_and_finite() {
        let (bars, scaling) = demo();
        let svg = render("vswitch vs peers", "host · 2025-01-01 · 5 runs", &bars, &scaling);
        assert_well_formed(&svg);
        assert_finite(&svg);
        assert!(svg.contains("font-family=\"sans-serif\""));
        assert!(svg.contains(">lower is better<"));
    }

    #[test]
    fn degenerate_inputs_render_without_nan() {
        let (bars, scaling) = degenerate();
        let svg = render("t", "s", &bars, &scaling);
        assert_well_formed(&svg);
        assert_finite(&svg);
        assert!(svg.contains("no data"));
        let svg = render("", "", &[], &[]);
        assert_well_formed(&svg);
        assert_finite(&svg);
    }

    #[test]
    fn escapes_text_everywhere() {
        let nasty = "a<b&\"c\"\u{1}>";
        let bars = vec![group(nasty, nasty, true, &[(nasty, 1.0), ("x", 2.0)])];
        let scaling = vec![LineGroup {
            scenario: nasty.into(),
            unit: nasty.into(),
            higher_is_better: false,
            lines: vec![scaling_line(nasty, &[1.0, 2.0, 3.0])],
            flat: vec![bar(&format!("{nasty}2"), 1.5)],
        }];
        let svg = render(nasty, nasty, &bars, &scaling);
        assert_well_formed(&svg);
        assert!(svg.contains("a&lt;b&amp;&quot;c&quot;\u{FFFD}&gt;"));
        assert!(!svg.contains("a<b"));
        assert!(!svg.contains('\u{1}'));
    }

    #[test]
    fn colours_are_stable_per_system_and_vswitch_is_prominent() {
        let (bars, scaling) = demo();
        let svg = render("t", "s", &bars, &scaling);
        for system in ["bridge", "ovs", "vswitch", "null", "pasta", "slirp4netns", "dnsmasq"] {
            let fills = bar_fills(&svg, system);
            assert!(!fills.is_empty(), "{system} drawn");
            assert!(fills.iter().all(|f| *f == fills[0]), "{system} has one colour: {fills:?}");
        }
        let colours = assign_colours(&bars, &scaling);
        assert_eq!(colour_of(&colours, "vswitch"), VSWITCH_COLOURS[0]);
        assert_eq!(colour_of(&colours, "vswitch-routed"), VSWITCH_COLOURS[1]);
        assert_eq!(colour_of(&colours, "bridge"), PEER_COLOURS[0]);
        assert_ne!(colour_of(&colours, "bridge"), colour_of(&colours, "ovs"));
        let order: Vec<&str> = colours.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(order[..4], ["bridge", "ovs", "vswitch", "null"]);
        // The same data in another call gives the same colours.
        assert_eq!(colours, assign_colours(&bars, &scaling));
        let flat = "class=\"flat\" data-system=\"bridge\"";
        let at = svg.find(flat).unwrap();
        assert!(svg[at..at + 200].contains(PEER_COLOURS[0]));
    }

    #[test]
    fn nice_ticks_are_round_and_four_or_five() {
        assert_eq!(nice_ticks(17.3), [0.0, 5.0, 10.0, 15.0, 20.0]);
        assert_eq!(nice_ticks(20.0), [0.0, 5.0, 10.0, 15.0, 20.0]);
        assert_eq!(nice_ticks(177.0), [0.0, 50.0, 100.0, 150.0, 200.0]);
        assert_eq!(nice_ticks(84.4), [0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(nice_ticks(1.0), [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(nice_ticks(0.0), [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(nice_ticks(f64::NAN), [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(nice_ticks(140_000.0), [0.0, 50_000.0, 100_000.0, 150_000.0]);
        let mut max = 0.0013;
        while max < 1e7 {
            let ticks = nice_ticks(max);
            assert!((4..=5).contains(&ticks.len()), "{max}: {ticks:?}");
            assert!(*ticks.last().unwrap() >= max);
            let step = ticks[1];
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!([1.0, 2.0, 2.5, 5.0].iter().any(|m| (m - mantissa).abs() < 1e-9), "{max}: step {step}");
            max *= 1.37;
        }
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(fmt_value(17.3), "17.3");
        assert_eq!(fmt_value(127.0), "127");
        assert_eq!(fmt_value(0.845), "0.845");
        assert_eq!(fmt_value(17.04), "17.0");
        assert_eq!(fmt_value(8.0), "8.00");
        assert_eq!(fmt_value(9500.0), "9.50k");
        assert_eq!(fmt_value(10_149.0), "10.1k");
        assert_eq!(fmt_value(140_000.0), "140k");
        assert_eq!(fmt_value(999.7), "1.00k");
        assert_eq!(fmt_value(2_500_000.0), "2.50M");
        assert_eq!(fmt_value(0.0), "0");
        assert_eq!(fmt_value(-4.56789), "-4.57");
        assert_eq!(fmt_value(f64::NAN), "");
        assert_eq!(fmt_value(0.000_123_4), "1.23e-4");
        assert_eq!(fmt_value(f64::MIN_POSITIVE), "2.23e-308");
        assert_eq!(fmt_value(f64::MAX), "1.80e308");
        assert_eq!(fmt_value(4.2e13), "42.0T");
        assert_eq!(fmt_count(16.0), "16");
        assert_eq!(fmt_count(1.5), "1.50");
        let k = Suffix::for_max(150_000.0);
        assert_eq!(fmt_tick(50_000.0, 50_000.0, k), "50k");
        let one = Suffix::for_max(10.0);
        assert_eq!(fmt_tick(7.5, 2.5, one), "7.5");
        assert_eq!(fmt_tick(5.0, 2.5, one), "5");
        assert_eq!(fmt_tick(0.75, 0.25, one), "0.75");
    }

    #[test]
    fn log2_axis_for_spread_powers_of_two() {
        assert!(use_log2(&[1.0, 2.0, 4.0, 8.0, 16.0]));
        assert!(use_log2(&[2.0, 8.0]));
        assert!(!use_log2(&[1.0, 2.0]), "spans only 2×");
        assert!(!use_log2(&[1.0, 2.0, 3.0, 4.0]), "3 is not a power of two");
        assert!(!use_log2(&[0.0, 1.0, 4.0]));
        assert!(!use_log2(&[]));
        let x = x_scale(&[1.0, 2.0, 4.0, 8.0, 16.0], 0.0, 424.0);
        let gaps: Vec<f64> = [1.0, 2.0, 4.0, 8.0].iter().map(|&w| x(w * 2.0) - x(w)).collect();
        assert!(gaps.iter().all(|g| (g - 100.0).abs() < 1e-9), "evenly spaced: {gaps:?}");
    }

    #[test]
    fn long_names_and_many_systems_are_shortened() {
        let names: Vec<String> = (0..10).map(|i| format!("a-very-long-system-name-number-{i}")).collect();
        let bars = vec![BarGroup {
            scenario: "many".into(),
            unit: "Gbit/s".into(),
            higher_is_better: true,
            bars: names.iter().map(|n| bar(n, 12.5)).collect(),
        }];
        let svg = render("t", "s", &bars, &[]);
        assert_well_formed(&svg);
        assert!(svg.contains("rotate(-35"));
        let last = svg.lines().find(|l| l.contains("rotate(-35") && l.ends_with("-9</text>")).expect("last name drawn");
        assert!(last.contains(">a-ver") && last.contains('…'), "middle ellipsis keeps both ends: {last}");
        assert_eq!(fit_name("abcdefgh", 6.0 * 10.0 * CHAR_EM, 10.0), "ab…fgh");
        assert_eq!(fit("abcdef", 6.0 * 10.0 * CHAR_EM, 10.0), "abcdef");
        assert_eq!(fit("abcdefg", 6.0 * 10.0 * CHAR_EM, 10.0), "abcde…");
    }

    #[test]
    fn spread_keeps_labels_apart_within_bounds() {
        assert_eq!(spread(&[50.0, 52.0, 100.0], 12.0, 0.0, 200.0), [50.0, 62.0, 100.0]);
        assert_eq!(spread(&[195.0, 198.0], 12.0, 0.0, 200.0), [188.0, 200.0]);
    }

    /// Writes /tmp/chart-demo.svg and /tmp/chart-degenerate.svg to look at (`rsvg-convert`).
    #[test]
    #[ignore]
    fn write_demo() {
        let (bars, scaling) = demo();
        let svg = render(
            "vswitch-bench: vswitch vs Linux bridge, OVS, null forwarder, pasta, slirp4netns, dnsmasq",
            "AMD EPYC 9454P 16 cores · Linux 6.8 · 2025-06-01 · median of 5 runs, whiskers min–max",
            &bars,
            &scaling,
        );
        std::fs::write("/tmp/chart-demo.svg", svg).unwrap();
        let (bars, scaling) = degenerate();
        std::fs::write("/tmp/chart-degenerate.svg", render("degenerate", "one system, zeros", &bars, &scaling)).unwrap();
        let names: Vec<String> = (0..9).map(|i| format!("system-with-a-rather-long-name-{i}")).collect();
        let many = vec![
            BarGroup {
                scenario: "nine systems with long names".into(),
                unit: "Gbit/s".into(),
                higher_is_better: true,
                bars: names.iter().enumerate().map(|(i, n)| bar(n, 3.0 + 1.7 * i as f64)).collect(),
            },
            group("one bar", "conn/s", true, &[("vswitch", 9500.0)]),
        ];
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0];
        let linear = vec![LineGroup {
            scenario: "linear workers, close end labels".into(),
            unit: "Mpps".into(),
            higher_is_better: true,
            lines: (0..3)
                .map(|i| Line {
                    system: format!("system-with-a-rather-long-name-{i}"),
                    points: xs.iter().map(|&w| (w, w * (1.0 + 0.02 * i as f64), w * 0.9, w * 1.1)).collect(),
                })
                .collect(),
            flat: vec![bar("vswitch", 6.0), bar("bridge", 6.3)],
        }];
        std::fs::write("/tmp/chart-many.svg", render("many", "long names", &many, &linear)).unwrap();
    }
}
