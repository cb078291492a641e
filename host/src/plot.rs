//! PNG plots (plotters, with an embedded DejaVu Sans Mono font so that
//! nothing depends on system fonts): training curves, sweep heat-maps and
//! line plots.
//!
//! Every plot is drawn in memory and encoded as a PNG first, then written
//! atomically ([`crate::checkpoint::atomic_write`]: a temporary file in the
//! same directory, fsync, rename): a full disk or a kill leaves the
//! previous file or none, never a torn one.

use crate::checkpoint::{atomic_write, EpochRecord};
use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::io::Write;
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

/// The 8-byte signature that starts every PNG file.
const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Draws with `draw` on a white-backgrounded canvas of `size` pixels in
/// memory and returns it encoded as a PNG.
fn render(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<Vec<u8>> {
    init_font();
    let (w, h) = (size.0.max(1), size.1.max(1));
    let len = (w as usize)
        .checked_mul(h as usize)
        .and_then(|p| p.checked_mul(3))
        .context("plot: image too large")?;
    let mut rgb = vec![0u8; len];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        draw(&root)?;
        root.present().map_err(e)?;
    }
    encode_png(w, h, &rgb)
}

/// Renders with [`render`] and writes the PNG to `path` atomically.
fn write_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    let png = render(size, draw)?;
    atomic_write(path, &png)
}

/// A PNG (8-bit RGB, no interlace) of `w`×`h` pixels `rgb`, row-major.
fn encode_png(w: u32, h: u32, rgb: &[u8]) -> Result<Vec<u8>> {
    let stride = (w as usize) * 3;
    // each scanline: filter type 0 (none), then its pixels
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    for row in rgb.chunks_exact(stride.max(1)).take(h as usize) {
        z.write_all(&[0])?;
        z.write_all(row)?;
    }
    let idat = z.finish()?;
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    // bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = PNG_SIGNATURE.to_vec();
    for (kind, data) in [
        (b"IHDR", &ihdr[..]),
        (b"IDAT", &idat[..]),
        (b"IEND", &[][..]),
    ] {
        let len = u32::try_from(data.len()).context("plot: PNG chunk too large")?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&chunk_crc(kind, data).to_be_bytes());
    }
    Ok(out)
}

/// The CRC-32 of a PNG chunk (over its type and data).
fn chunk_crc(kind: &[u8], data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(kind);
    c.update(data);
    c.sum()
}

/// True when `b` is a whole PNG file: the signature, then chunks whose
/// lengths and CRCs check, the first IHDR and the last IEND, nothing after
/// it.
pub fn is_complete_png(b: &[u8]) -> bool {
    let Some(mut rest) = b.strip_prefix(&PNG_SIGNATURE[..]) else {
        return false;
    };
    let mut first = true;
    while rest.len() >= 12 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(end) = len.checked_add(12).filter(|&e| e <= rest.len()) else {
            return false;
        };
        let (kind, data) = (&rest[4..8], &rest[8..8 + len]);
        let crc = u32::from_be_bytes([rest[end - 4], rest[end - 3], rest[end - 2], rest[end - 1]]);
        if crc != chunk_crc(kind, data) || (first && kind != b"IHDR") {
            return false;
        }
        first = false;
        rest = &rest[end..];
        if kind == b"IEND" {
            return rest.is_empty();
        }
    }
    false
}

/// True when the file at `path` is a whole PNG ([`is_complete_png`]).
pub fn is_complete_png_file(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| is_complete_png(&b))
}

/// Loss and accuracy curves of a run (train and test per epoch), written
/// atomically to `path`.
pub fn curves(path: &Path, title: &str, h: &[EpochRecord]) -> Result<()> {
    write_png(path, (1100, 420), |root| curves_on(root, title, h))
}

fn curves_on(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    h: &[EpochRecord],
) -> Result<()> {
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
    Ok(())
}

/// A heat-map of `values[row][col]` (NaN = empty cell) with the value
/// printed in each cell, written atomically to `path`.
pub fn heatmap(
    path: &Path,
    title: &str,
    x_name: &str,
    xs: &[String],
    y_name: &str,
    ys: &[String],
    values: &[Vec<f64>],
) -> Result<()> {
    let side = |n: usize, each: u32, base: u32, min: u32| {
        u32::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(each))
            .and_then(|v| v.checked_add(base))
            .map(|v| v.max(min))
            .context("plot: heat-map too large")
    };
    let size = (
        side(xs.len(), 110, 160, 420)?,
        side(ys.len(), 60, 140, 260)?,
    );
    write_png(path, size, |root| {
        heatmap_on(root, title, x_name, xs, y_name, ys, values)
    })
}

fn heatmap_on(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x_name: &str,
    xs: &[String],
    y_name: &str,
    ys: &[String],
    values: &[Vec<f64>],
) -> Result<()> {
    let (lo, hi) = range(values.iter().flatten().copied());
    let mut ch = ChartBuilder::on(root)
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

/// A line plot with a legend, written atomically to `path`.
pub fn lines(
    path: &Path,
    title: &str,
    x_name: &str,
    y_name: &str,
    series: &[Series],
) -> Result<()> {
    write_png(path, (820, 520), |root| {
        lines_on(root, title, x_name, y_name, series)
    })
}

fn lines_on(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x_name: &str,
    y_name: &str,
    series: &[Series],
) -> Result<()> {
    let (x0, x1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut ch = ChartBuilder::on(root)
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn history() -> Vec<EpochRecord> {
        (1..=3)
            .map(|i| EpochRecord {
                eval_train_loss: None,
                eval_train_acc: None,
                epoch: i,
                step: 10 * i,
                lr: 0.1,
                train_loss: 1.0 / i as f64,
                train_acc: 0.5 + 0.1 * i as f64,
                test_loss: 1.2 / i as f64,
                test_acc: 0.4 + 0.1 * i as f64,
                seconds: i as f64,
            })
            .collect()
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The pixels of a PNG written by [`encode_png`]: (width, height,
    /// decompressed scanlines).
    fn decode(b: &[u8]) -> (u32, u32, Vec<u8>) {
        assert!(is_complete_png(b));
        let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (w, h) = (be(16), be(20));
        let idat_len = be(33) as usize;
        assert_eq!(&b[37..41], b"IDAT");
        let mut raw = vec![];
        flate2::read::ZlibDecoder::new(&b[41..41 + idat_len])
            .read_to_end(&mut raw)
            .unwrap();
        (w, h, raw)
    }

    #[test]
    fn every_plot_replaces_a_torn_file_with_a_whole_png_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        for n in ["curves.png", "heatmap.png", "lines.png"] {
            // a torn file from an earlier, interrupted write
            std::fs::write(p(n), &PNG_SIGNATURE[..5]).unwrap();
        }
        curves(&p("curves.png"), "run", &history()).unwrap();
        let xs = vec!["0.01".to_string(), "0.1".to_string()];
        let ys = vec!["a".to_string()];
        heatmap(
            &p("heatmap.png"),
            "t",
            "x",
            &xs,
            "y",
            &ys,
            &[vec![0.5, f64::NAN]],
        )
        .unwrap();
        let s = [Series {
            label: "s".into(),
            points: vec![(0.0, 1.0), (1.0, 2.0)],
            dashed: false,
        }];
        lines(&p("lines.png"), "t", "x", "y", &s).unwrap();
        assert_eq!(names(d.path()), ["curves.png", "heatmap.png", "lines.png"]);
        for (n, size) in [
            ("curves.png", (1100, 420)),
            ("heatmap.png", (420, 260)),
            ("lines.png", (820, 520)),
        ] {
            let b = std::fs::read(p(n)).unwrap();
            let (w, h, raw) = decode(&b);
            assert_eq!((w, h), size, "{n}");
            assert_eq!(raw.len(), (h * (1 + 3 * w)) as usize, "{n}");
            // something was drawn on the white background
            assert!(raw.iter().any(|&v| v != 0 && v != 255), "{n}");
        }
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_and_no_partial_target() {
        let d = tempfile::tempdir().unwrap();
        // the target is a non-empty directory: the rename onto it fails
        // after the PNG was written to its temporary file
        let target = d.path().join("curves.png");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        assert!(curves(&target, "run", &history()).is_err());
        assert_eq!(names(d.path()), ["curves.png"]);
        assert_eq!(names(&target), ["keep"]);
        // a directory that does not exist: an error, nothing created
        let missing = d.path().join("no-such-dir").join("curves.png");
        assert!(curves(&missing, "run", &history()).is_err());
        assert_eq!(names(d.path()), ["curves.png"]);
    }

    #[test]
    fn only_whole_pngs_are_complete() {
        let png = encode_png(3, 2, &[7u8; 18]).unwrap();
        assert!(is_complete_png(&png));
        for cut in 0..png.len() {
            assert!(!is_complete_png(&png[..cut]), "cut at {cut}");
        }
        let mut longer = png.clone();
        longer.push(0);
        assert!(!is_complete_png(&longer));
        let mut flipped = png.clone();
        flipped[45] ^= 1;
        assert!(!is_complete_png(&flipped));
        assert!(!is_complete_png(b"not a png at all"));
    }
}
