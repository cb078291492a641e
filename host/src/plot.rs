//! PNG plots (plotters, with an embedded DejaVu Sans Mono font so that
//! nothing depends on system fonts): training curves, sweep heat-maps and
//! line plots.

use crate::checkpoint::EpochRecord;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
static INIT: Once = Once::new();

fn init_font() {
    INIT.call_once(|| {
        // An embedded, known-good font: registration cannot fail in practice;
        // if it did, text would simply be missing from the plots.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn e<E: std::fmt::Display>(x: E) -> anyhow::Error {
    anyhow!("plot: {x}")
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Colour `i` of the palette.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

/// Loss and accuracy curves of a run (train and test per epoch).
pub fn curves(path: &Path, title: &str, h: &[EpochRecord]) -> Result<()> {
    init_font();
    let root = BitMapBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(e)?;
    let panels = root.split_evenly((1, 2));
    let ep = (
        h.first().map_or(0, |r| r.epoch) as f64 - 0.5,
        h.last().map_or(1, |r| r.epoch) as f64 + 0.5,
    );
    type Getter = fn(&EpochRecord) -> f64;
    let specs: [(&str, Getter, Getter); 2] = [
        ("loss", |r| r.train_loss, |r| r.test_loss),
        ("accuracy", |r| r.train_acc, |r| r.test_acc),
    ];
    for (panel, (name, tr, te)) in panels.iter().zip(specs) {
        let (lo, hi) = range(h.iter().flat_map(|r| [tr(r), te(r)]));
        let mut ch = ChartBuilder::on(panel)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(ep.0..ep.1, lo..hi)
            .map_err(e)?;
        ch.configure_mesh()
            .x_desc("epoch")
            .y_desc(name)
            .draw()
            .map_err(e)?;
        for (i, (label, g)) in [("train", tr), ("test", te)].into_iter().enumerate() {
            let c = color(i);
            ch.draw_series(LineSeries::new(
                h.iter().map(|r| (r.epoch as f64, g(r))),
                c.stroke_width(2),
            ))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        ch.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(if name == "loss" {
                SeriesLabelPosition::UpperRight
            } else {
                SeriesLabelPosition::LowerRight
            })
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// A heat-map of `values[row][col]` (NaN = empty cell) with the value
/// printed in each cell.
pub fn heatmap(
    path: &Path,
    title: &str,
    x_name: &str,
    xs: &[String],
    y_name: &str,
    ys: &[String],
    values: &[Vec<f64>],
) -> Result<()> {
    init_font();
    let w = 160 + 110 * xs.len() as u32;
    let hgt = 140 + 60 * ys.len() as u32;
    let root = BitMapBackend::new(path, (w.max(420), hgt.max(260))).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (lo, hi) = range(values.iter().flatten().copied());
    let mut ch = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..xs.len() as f64, 0.0..ys.len() as f64)
        .map_err(e)?;
    let xl = |v: &f64| xs.get(v.floor() as usize).cloned().unwrap_or_default();
    let yl = |v: &f64| ys.get(v.floor() as usize).cloned().unwrap_or_default();
    ch.configure_mesh()
        .disable_mesh()
        .x_desc(x_name)
        .y_desc(y_name)
        .x_labels(xs.len() * 2 + 1)
        .y_labels(ys.len() * 2 + 1)
        .x_label_formatter(&|v| {
            if (v.fract() - 0.5).abs() < 1e-6 {
                xl(v)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| {
            if (v.fract() - 0.5).abs() < 1e-6 {
                yl(v)
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(e)?;
    for (r, row) in values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let (x0, y0) = (c as f64, r as f64);
            let fill = if v.is_finite() {
                let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
                RGBColor(
                    (68.0 + t * 185.0) as u8,
                    (1.0 + t * 230.0) as u8,
                    (84.0 + t * (37.0 - 84.0)) as u8,
                )
            } else {
                RGBColor(235, 235, 235)
            };
            ch.draw_series(std::iter::once(Rectangle::new(
                [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                fill.filled(),
            )))
            .map_err(e)?;
            let label = if v.is_finite() {
                format!("{v:.2}")
            } else {
                "-".into()
            };
            let txt = if v.is_finite() && (v - lo) / (hi - lo) > 0.6 {
                BLACK
            } else {
                WHITE
            };
            ch.draw_series(std::iter::once(Text::new(
                label,
                (x0 + 0.3, y0 + 0.6),
                ("sans-serif", 14).into_font().color(&txt),
            )))
            .map_err(e)?;
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

/// One line of a line plot.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
    /// Dashed (reference lines).
    pub dashed: bool,
}

/// A line plot with a legend.
pub fn lines(
    path: &Path,
    title: &str,
    x_name: &str,
    y_name: &str,
    series: &[Series],
) -> Result<()> {
    init_font();
    let root = BitMapBackend::new(path, (820, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (x0, x1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut ch = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    ch.configure_mesh()
        .x_desc(x_name)
        .y_desc(y_name)
        .draw()
        .map_err(e)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let style = c.stroke_width(2);
        let pts = s.points.clone();
        if s.dashed {
            ch.draw_series(DashedLineSeries::new(pts, 8, 5, style))
                .map_err(e)?
        } else {
            ch.draw_series(LineSeries::new(pts.clone(), style))
                .map_err(e)?;
            ch.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                .map_err(e)?
        }
        .label(s.label.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    ch.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
