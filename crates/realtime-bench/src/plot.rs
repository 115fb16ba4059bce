//! SVG plots of one saved run: latency percentile curves, and deliveries/s and server
//! CPU over time. SVG only: plotters writes text as `<text>` elements, no font is loaded.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::record::{RunRecord, ServerResult};
use crate::report;

/// Tableau 10: distinct on white and readable by most colour-blind readers.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

const FONT: &str = "sans-serif";

/// Most nines drawn on the percentile axis (99.9999 %).
const MAX_NINES: f64 = 6.0;

/// One line of a chart: its legend label and its points.
type Line = (String, Vec<(f64, f64)>);

/// Writes the latency percentile curve of every result that has `latency_buckets` to
/// `path`. `Ok(false)`, and nothing written, when no result has buckets.
pub fn latency_svg(record: &RunRecord, path: &Path) -> anyhow::Result<bool> {
    let lines = series(record, percentile_curve);
    if lines.is_empty() {
        return Ok(false);
    }
    create_parent(path)?;
    let (x_min, x_max) = bounds(&lines, |p| p.0);
    let top = nines_top(&lines);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!("{} — end-to-end latency percentiles", record.scenario);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(((x_min / 1.25)..(x_max * 1.25)).log_scale(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("percentile")
        .y_labels(top as usize + 1)
        .light_line_style(BLACK.mix(0.04))
        .x_label_formatter(&|v| axis_number(*v))
        .y_label_formatter(&|nines| percentile_label(*nines))
        .draw()?;
    for (i, (label, points)) in lines.into_iter().enumerate() {
        let points = points.into_iter().map(|(x, y)| (x, y.min(top)));
        draw_line(&mut chart, i, label, points)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present()?;
    Ok(true)
}

/// Writes deliveries/s over time (upper panel) and server CPU % over time (lower panel)
/// of every result that has a `timeline`. `Ok(false)`, nothing written, when none has.
pub fn throughput_svg(record: &RunRecord, path: &Path) -> anyhow::Result<bool> {
    let deliveries = series(record, |r| timeline(r, |p| p.deliveries_per_s));
    if deliveries.is_empty() {
        return Ok(false);
    }
    let cpu = series(record, |r| timeline(r, |p| p.server_cpu_percent));
    create_parent(path)?;
    let root = SVGBackend::new(path, (800, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!("{} — deliveries and server CPU over time", record.scenario);
    let root = root.titled(&title, (FONT, 22))?;
    let (upper, lower) = root.split_vertically(300);
    time_panel(&upper, deliveries, "deliveries/s", &|v| {
        report::grouped(*v, 0)
    })?;
    time_panel(&lower, cpu, "server CPU (% of one core)", &|v| {
        format!("{}%", axis_number(*v))
    })?;
    root.present()?;
    Ok(true)
}

/// The lines of every result for which `points` has something, labelled for the legend.
fn series(
    record: &RunRecord,
    points: impl Fn(&ServerResult) -> Option<Vec<(f64, f64)>>,
) -> Vec<Line> {
    record
        .results
        .iter()
        .filter_map(|r| Some((legend_label(r), points(r)?)))
        .collect()
}

fn legend_label(r: &ServerResult) -> String {
    if r.label.trim().is_empty() {
        r.server.clone()
    } else {
        r.label.clone()
    }
}

/// `(latency ms, nines)` per non-empty bucket, where nines = −log10(1 − fraction at or
/// below the bucket's bound): 1 is p90, 2 is p99, 3 is p99.9. The last bucket (fraction
/// 1) is drawn at the resolution of the sample, log10(count).
fn percentile_curve(r: &ServerResult) -> Option<Vec<(f64, f64)>> {
    let mut buckets: Vec<(f64, u64)> = r
        .latency_buckets
        .iter()
        .copied()
        .filter(|&(bound, count)| bound > 0.0 && bound.is_finite() && count > 0)
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    if total == 0 {
        return None;
    }
    let floor = 1.0 / total as f64;
    let mut seen = 0;
    let points = buckets.iter().map(|&(bound_us, count)| {
        seen += count;
        let above = (1.0 - seen as f64 / total as f64).max(floor);
        (bound_us / 1000.0, -above.log10())
    });
    Some(points.collect())
}

fn timeline(
    r: &ServerResult,
    value: fn(&crate::record::TimelinePoint) -> f64,
) -> Option<Vec<(f64, f64)>> {
    (!r.timeline.is_empty()).then(|| r.timeline.iter().map(|p| (p.t_s, value(p))).collect())
}

/// Smallest and largest `axis` value over every point of `lines`.
fn bounds(lines: &[Line], axis: fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let values = lines.iter().flat_map(|l| l.1.iter().map(axis));
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The top of the percentile axis: whole nines, at least p99, at most [`MAX_NINES`].
fn nines_top(lines: &[Line]) -> f64 {
    // A sample of 100,100 resolves 5.0004 nines: not worth a sixth on the axis.
    (bounds(lines, |p| p.1).1 - 0.01)
        .ceil()
        .clamp(2.0, MAX_NINES)
}

/// The percentile `nines` nines stand for: `0` → `0%`, `1` → `90%`, `3` → `99.9%`.
fn percentile_label(nines: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-nines));
    let decimals = (nines.ceil() as i32 - 2).max(0) as usize;
    format!("{percent:.decimals$}%")
}

/// An axis tick: no trailing zeros (`0.25`, `2`, `1,000`).
fn axis_number(v: f64) -> String {
    if v.abs() >= 100.0 {
        return report::grouped(v, 0);
    }
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// One panel of values over the seconds of the measurement.
fn time_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    lines: Vec<Line>,
    y_desc: &str,
    y_format: &dyn Fn(&f64) -> String,
) -> anyhow::Result<()> {
    let (_, t_max) = bounds(&lines, |p| p.0);
    let (_, y_max) = bounds(&lines, |p| p.1);
    let t_max = if t_max > 0.0 { t_max } else { 1.0 };
    let y_max = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(85)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since the measurement started (s)")
        .y_desc(y_desc)
        .light_line_style(BLACK.mix(0.04))
        .x_label_formatter(&|v| axis_number(*v))
        .y_label_formatter(y_format)
        .draw()?;
    for (i, (label, points)) in lines.into_iter().enumerate() {
        draw_line(&mut chart, i, label, points)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn draw_line<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    index: usize,
    label: String,
    points: impl IntoIterator<Item = (X::ValueType, Y::ValueType)>,
) -> anyhow::Result<()>
where
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    let color = COLORS[index % COLORS.len()];
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(2)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
    Ok(())
}

fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .draw()?;
    Ok(())
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => Ok(std::fs::create_dir_all(dir)?),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::report::tests::{fanout, idle};

    fn temp_dir(name: &str) -> PathBuf {
        crate::report::tests::temp_dir("plot", name)
    }

    #[test]
    fn percentile_curve_climbs_one_nine_per_tenth() {
        let result = ServerResult {
            latency_buckets: vec![(3000.0, 1), (1000.0, 90), (2000.0, 9), (9000.0, 0)],
            ..ServerResult::default()
        };
        let curve = percentile_curve(&result).unwrap();
        let nines: Vec<f64> = curve
            .iter()
            .map(|p| (p.1 * 1000.0).round() / 1000.0)
            .collect();
        assert_eq!(
            curve.iter().map(|p| p.0).collect::<Vec<_>>(),
            [1.0, 2.0, 3.0]
        );
        assert_eq!(nines, [1.0, 2.0, 2.0]);
        assert!(percentile_curve(&ServerResult::default()).is_none());
    }

    #[test]
    fn percentile_axis_labels_count_nines() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(4.0), "99.99%");
        assert_eq!(percentile_label(0.5), "68%");
        assert_eq!(axis_number(0.25), "0.25");
        assert_eq!(axis_number(2.0), "2");
        assert_eq!(axis_number(20_000.0), "20,000");
    }

    #[test]
    fn latency_svg_draws_one_labelled_line_per_server() {
        let dir = temp_dir("latency");
        let path = dir.join("fanout-latency.svg");
        assert!(latency_svg(&fanout(false), &path).unwrap());
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg"), "not an SVG");
        for label in ["realtime", "ceiling (bare axum)", "Socket.IO 4 (Node 20)"] {
            assert!(svg.contains(label), "legend lacks {label}");
        }
        assert!(svg.contains("99.9%"), "percentile axis not labelled");
        assert!(svg.contains(">\n99.999%"), "100,000 samples reach p99.999");
        assert!(
            !svg.contains(">\n99.9999%"),
            "axis drawn beyond the sample's resolution"
        );
        assert!(svg.contains("latency (ms, log scale)"));
        for color in ["#1F77B4", "#FF7F0E", "#2CA02C"] {
            let strokes = format!("stroke=\"{color}\"");
            assert_eq!(
                svg.matches(&strokes).count(),
                2,
                "{color}: one line, one legend mark"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn throughput_svg_draws_deliveries_and_cpu_panels() {
        let dir = temp_dir("throughput");
        let path = dir.join("nested").join("fanout-throughput.svg");
        assert!(throughput_svg(&fanout(false), &path).unwrap());
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg"));
        assert!(svg.contains("deliveries/s") && svg.contains("server CPU (% of one core)"));
        assert!(svg.contains("Socket.IO 4 (Node 20)") && svg.contains("ceiling (bare axum)"));
        assert!(svg.contains("100,000"), "deliveries axis not grouped");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn nothing_is_written_without_data() {
        let dir = temp_dir("empty");
        let (latency, throughput) = (dir.join("l.svg"), dir.join("t.svg"));
        let record = idle(15_000, 6.0, 9_000.0, 10_000.0);
        assert!(!latency_svg(&record, &latency).unwrap());
        assert!(!throughput_svg(&record, &throughput).unwrap());
        assert!(!latency.exists() && !throughput.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
