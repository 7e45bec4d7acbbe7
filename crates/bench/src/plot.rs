//! The comparison plot: latency percentiles per workload, one line per server and cluster
//! size, written as a PNG. Text is drawn with a system TrueType font (DejaVu Sans, Debian's
//! `fonts-dejavu-core`, installed by `scripts/setup`).

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::stats::Report;

/// Font files tried in order.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn load_font() -> Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            anyhow!("no DejaVu Sans font found (install fonts-dejavu-core): {FONTS:?}")
        })?;
    let bytes: &'static [u8] = Box::leak(
        std::fs::read(path)
            .with_context(|| format!("reading {path}"))?
            .into_boxed_slice(),
    );
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable TrueType font"))
}

/// One line: a label and its report.
pub struct Series<'a> {
    pub label: String,
    pub report: &'a Report,
    /// Index into the palette (same server, same colour).
    pub colour: usize,
    /// Dashed look for the second cluster size: drawn with hollow markers.
    pub hollow: bool,
}

/// One panel: a workload title and its series.
pub struct Panel<'a> {
    pub title: String,
    pub series: Vec<Series<'a>>,
}

const PERCENTILES: [&str; 5] = ["p50", "p90", "p95", "p99", "p99.9"];

fn values(r: &Report) -> [f64; 5] {
    let l = &r.latency_ms;
    [l.p50, l.p90, l.p95, l.p99, l.p999]
}

/// Panels per row.
const COLUMNS: usize = 3;

/// Rows and columns for `n` panels: up to [`COLUMNS`] a row.
fn grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, COLUMNS);
    (n.max(1).div_ceil(cols), cols)
}

/// Draws the panels, up to three a row, into `out` (PNG).
pub fn latency_percentiles(out: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    load_font()?;
    let (rows, cols) = grid(panels.len());
    let (width, height) = (560 * cols as u32, 40 + 480 * rows as u32);
    let root = BitMapBackend::new(out, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((rows, cols));
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
    ];
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let top = panel
            .series
            .iter()
            .flat_map(|s| values(s.report))
            .fold(0.0f64, f64::max)
            .max(0.1)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.3f64..4.3f64, 0f64..top)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_labels(5)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && (0.0..=4.0).contains(&i) {
                    PERCENTILES[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("latency (ms)")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for s in &panel.series {
            let colour = palette[s.colour % palette.len()];
            let points: Vec<(f64, f64)> = values(s.report)
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64, *v))
                .collect();
            let stroke = colour.stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.clone(), stroke))
                .map_err(|e| anyhow!("{e}"))?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], stroke));
            let hollow = s.hollow;
            chart
                .draw_series(points.into_iter().map(move |p| {
                    if hollow {
                        Circle::new(p, 4, colour.stroke_width(2))
                    } else {
                        Circle::new(p, 4, colour.filled())
                    }
                }))
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_fill_rows_of_three() {
        assert_eq!(grid(0), (1, 1));
        assert_eq!(grid(1), (1, 1));
        assert_eq!(grid(3), (1, 3));
        assert_eq!(grid(4), (2, 3));
        assert_eq!(grid(5), (2, 3));
        assert_eq!(grid(7), (3, 3));
    }
}
