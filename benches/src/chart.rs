//! The iperf bench's results as an SVG chart: for every row that ran, the 1-stream throughput
//! (Gbit/s) and the CPU seconds per Gbit, side by side, with the machine, the date and the
//! background load in the caption. Reads the JSON `benches/iperf/run.sh --json` writes.

use plotters::prelude::*;
use serde_json::Value;

/// One bar pair: the row's label, Gbit/s and CPU s per Gbit (1 stream).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// The row's label.
    pub label: String,
    /// Throughput, 1 TCP stream.
    pub gbit: f64,
    /// CPU seconds per Gbit, 1 stream.
    pub cpu: f64,
}

/// The rows of a results file that ran (`status` ok) with a throughput.
pub fn bars(results: &Value) -> Vec<Bar> {
    results["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "ok")
        .filter_map(|r| {
            Some(Bar {
                label: r["path"].as_str()?.to_owned(),
                gbit: r["iperf_1"]["gbit_per_s"].as_f64()?,
                cpu: r["iperf_1"]["cpu"]["cpu_s_per_gbit"]
                    .as_f64()
                    .unwrap_or(0.0),
            })
        })
        .collect()
}

/// The chart as SVG text.
pub fn render(results: &Value) -> Result<String, String> {
    let bars = bars(results);
    if bars.is_empty() {
        return Err("no row of the results ran".into());
    }
    let caption = format!(
        "{} ({} cores), {}, background load {} cores",
        results["cpu_model"].as_str().unwrap_or("?"),
        results["nproc"].as_u64().unwrap_or(0),
        results["date"].as_str().unwrap_or("?"),
        results["background_busy_cores"].as_f64().unwrap_or(0.0)
    );
    let height = 120 + 34 * bars.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(&caption, ("sans-serif", 16))
            .map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(620);
        panel(&left, &bars, "1 TCP stream, Gbit/s", |b| b.gbit, true)?;
        panel(
            &right,
            &bars,
            "CPU s per Gbit (lower is better)",
            |b| b.cpu,
            false,
        )?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    bars: &[Bar],
    title: &str,
    value: impl Fn(&Bar) -> f64,
    labels: bool,
) -> Result<(), String> {
    let max = bars.iter().map(&value).fold(0.0, f64::max) * 1.15 + 1e-9;
    let n = bars.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(if labels { 280 } else { 10 })
        .build_cartesian_2d(0.0..max, (0..n).into_segmented())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) if labels => (n - 1)
                .checked_sub(*i)
                .and_then(|k| bars.get(k))
                .map(|b| b.label.clone())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let row = n - 1 - i;
            Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row)),
                    (value(b), SegmentValue::Exact(row + 1)),
                ],
                RGBColor(70, 110, 180).filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let row = n - 1 - i;
            Text::new(
                format!("{:.2}", value(b)),
                (value(b), SegmentValue::CenterOf(row)),
                ("sans-serif", 12),
            )
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_results_file_becomes_a_chart_of_the_rows_that_ran() {
        let r = serde_json::json!({
            "date": "2026-12-05", "cpu_model": "AMD EPYC", "nproc": 2, "background_busy_cores": 0.01,
            "rows": [
                {"path": "kernel VXLAN (hand-built)", "status": "ok",
                 "iperf_1": {"gbit_per_s": 13.72, "cpu": {"cpu_s_per_gbit": 0.104}}},
                {"path": "tinc", "status": "na"},
                {"path": "weft sleeve plain", "status": "ok",
                 "iperf_1": {"gbit_per_s": 8.76, "cpu": {"cpu_s_per_gbit": 0.192}}}
            ]
        });
        assert_eq!(bars(&r).len(), 2);
        let svg = render(&r).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["weft sleeve plain", "13.72", "0.19", "AMD EPYC"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(!svg.contains("tinc"));
        assert!(render(&serde_json::json!({"rows": []})).is_err());
    }
}
