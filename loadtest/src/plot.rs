//! The SVG report (`--plot`): the latency percentile spectrum (latency from the intended time
//! and service time, against "percentile" on the usual 1/(1-p) axis) above the timeline
//! (responses per second and p99 per second).

use plotters::prelude::*;

use crate::result::RunResult;

/// Percentiles drawn on the spectrum, as fractions.
fn spectrum_points(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    let mut q = 0.0f64;
    // Halve the distance to 1 in 20 steps per decade, up to 99.9999%.
    while q < 0.999_999 {
        let x = 1.0 / (1.0 - q);
        points.push((x, h.value_at_quantile(q) as f64 / 1e6));
        q = 1.0 - (1.0 - q) * 10f64.powf(-0.05);
    }
    points.push((1e6, h.max() as f64 / 1e6));
    points
}

/// Draws the report into `path` (an `.svg` file).
///
/// # Errors
///
/// Drawing or writing the file failed.
pub fn write_svg(result: &RunResult, path: &std::path::Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(500);
    let title = format!(
        "{} — {} loop, {} conns, achieved {:.0}/s",
        result.target, result.mode, result.connections, result.achieved_rate
    );

    let latency = spectrum_points(&result.latency);
    let service = spectrum_points(&result.service_time);
    let y_max = latency
        .iter()
        .chain(&service)
        .map(|p| p.1)
        .fold(0.001f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(&title, ("sans-serif", 20))
        .margin(25)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0f64..1e6f64).log_scale(), 0.0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| {
            let p = format!("{:.4}", 100.0 * (1.0 - 1.0 / x));
            format!("{}%", p.trim_end_matches('0').trim_end_matches('.'))
        })
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(latency, &RED))
        .map_err(|e| err(&e))?
        .label("latency from intended send time")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(service, &BLUE))
        .map_err(|e| err(&e))?
        .label("service time (from actual send)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| err(&e))?;

    // A run's last interval can be a sliver (the drain after the end): its rate would mislead.
    let seconds: Vec<_> = result
        .timeline
        .iter()
        .filter(|e| e.length_s >= 0.5)
        .collect();
    let t_max = result
        .timeline
        .last()
        .map_or(1.0, |e| e.t_s + e.length_s)
        .max(1.0);
    let rate_max = seconds.iter().map(|e| e.rate).fold(1.0f64, f64::max) * 1.1;
    let p99_max = seconds
        .iter()
        .map(|e| e.latency_ns.p99 as f64 / 1e6)
        .fold(0.001f64, f64::max)
        * 1.1;
    let mut timeline = ChartBuilder::on(&bottom)
        .caption("timeline", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0f64..t_max, 0.0f64..rate_max)
        .map_err(|e| err(&e))?
        .set_secondary_coord(0.0f64..t_max, 0.0f64..p99_max);
    timeline
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("responses/s")
        .draw()
        .map_err(|e| err(&e))?;
    timeline
        .configure_secondary_axes()
        .y_desc("p99 latency (ms)")
        .draw()
        .map_err(|e| err(&e))?;
    timeline
        .draw_series(LineSeries::new(
            seconds.iter().map(|e| (e.t_s + e.length_s / 2.0, e.rate)),
            &BLACK,
        ))
        .map_err(|e| err(&e))?
        .label("responses/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    timeline
        .draw_secondary_series(LineSeries::new(
            seconds
                .iter()
                .map(|e| (e.t_s + e.length_s / 2.0, e.latency_ns.p99 as f64 / 1e6)),
            &RED,
        ))
        .map_err(|e| err(&e))?
        .label("p99 latency")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    timeline
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
