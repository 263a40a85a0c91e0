//! PNG outputs: loss curves, 2-D scatter plots, image grids, latency. Written to a temp file and
//! renamed.
//!
//! Text (titles, axes, legends) is drawn with DejaVu Sans compiled into the binary
//! (`assets/fonts/`, Bitstream Vera licence beside it): no system font is needed, so plots look
//! the same on a bare CI machine.

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

const FONT: &str = "sans-serif";

/// Registers the embedded font once (plotters' ab_glyph backend keeps a global table).
fn fonts() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = REGISTERED.get_or_init(|| {
        plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../assets/fonts/DejaVuSans.ttf"),
        )
        .is_ok()
    });
    anyhow::ensure!(*ok, "the embedded plot font could not be read");
    Ok(())
}

fn tmp_of(path: &Path) -> std::path::PathBuf {
    path.with_extension("partial.png")
}

fn finish(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// A tick label with 3 significant digits (0.0123, 1.23, 123, 12300).
fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

/// Min and max of `v` (None when empty).
fn bounds(v: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    v.fold(None, |a, x| match a {
        None => Some((x, x)),
        Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
    })
}

/// Loss (log scale) against iteration, with its running mean over 50 iterations.
pub fn loss_curve(path: &Path, losses: &[(usize, f32)]) -> Result<()> {
    if losses.is_empty() {
        return Ok(());
    }
    fonts()?;
    let tmp = tmp_of(path);
    {
        let root = BitMapBackend::new(&tmp, (720, 440)).into_drawing_area();
        root.fill(&WHITE)?;
        let xs = losses.last().unwrap().0.max(1) as f64;
        // log10 coordinates with tick labels in loss units (plotters' own log axis labels only
        // powers of ten, none at all when the loss stays within one decade)
        let vals: Vec<f64> = losses
            .iter()
            .map(|l| (l.1 as f64).max(1e-8).log10())
            .collect();
        let (lo, hi) = bounds(vals.iter().copied()).unwrap();
        let (lo, hi) = (lo - 0.02, hi.max(lo + 1e-3) + 0.02);
        let mut chart = ChartBuilder::on(&root)
            .caption("training loss", (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..xs, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("iteration")
            .y_desc("loss (log scale)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| short(10f64.powf(*v)))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                losses.iter().zip(&vals).map(|(l, &y)| (l.0 as f64, y)),
                RGBColor(120, 150, 230),
            ))?
            .label("per iteration")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RGBColor(120, 150, 230)));
        // the running mean of the log makes the trend readable
        let w = 50.min(vals.len());
        let smooth: Vec<(f64, f64)> = (w - 1..vals.len())
            .map(|i| {
                let mean_log = vals[i + 1 - w..=i].iter().sum::<f64>() / w as f64;
                (losses[i].0 as f64, mean_log)
            })
            .collect();
        chart
            .draw_series(LineSeries::new(smooth, RED.stroke_width(2)))?
            .label(format!("running mean ({w} iterations)"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    finish(&tmp, path)
}

/// Scatter of 2-D points (blue), optionally over reference points (grey), with a title.
pub fn scatter(
    path: &Path,
    title: &str,
    points: &[[f32; 2]],
    reference: &[[f32; 2]],
) -> Result<()> {
    scatter_panels(path, &[(title, points)], reference)
}

/// Scatter panels side by side (one per (title, points)), each over the same reference points:
/// the same axes, so the panels compare at a glance.
pub fn scatter_panels(
    path: &Path,
    panels: &[(&str, &[[f32; 2]])],
    reference: &[[f32; 2]],
) -> Result<()> {
    fonts()?;
    let n = panels.len().max(1);
    let tmp = tmp_of(path);
    {
        let root = BitMapBackend::new(&tmp, (440 * n as u32, 470)).into_drawing_area();
        root.fill(&WHITE)?;
        for (area, (title, points)) in root.split_evenly((1, n)).iter().zip(panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(*title, (FONT, 18))
                .margin(10)
                .x_label_area_size(28)
                .y_label_area_size(34)
                .build_cartesian_2d(-3f32..3f32, -3f32..3f32)?;
            chart
                .configure_mesh()
                .label_style((FONT, 12))
                .light_line_style(RGBColor(238, 238, 238))
                .draw()?;
            if !reference.is_empty() {
                chart
                    .draw_series(
                        reference.iter().map(|p| {
                            Circle::new((p[0], p[1]), 1, RGBColor(185, 185, 185).filled())
                        }),
                    )?
                    .label("data")
                    .legend(|(x, y)| Circle::new((x + 8, y), 3, RGBColor(185, 185, 185).filled()));
            }
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new((p[0], p[1]), 1, BLUE.filled())),
                )?
                .label(format!("samples ({})", points.len()))
                .legend(|(x, y)| Circle::new((x + 8, y), 3, BLUE.filled()));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font((FONT, 12))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
    }
    finish(&tmp, path)
}

/// A grid of images [N, C, H, W] in [-1, 1] (C = 1 or 3), `cols` per row.
pub fn image_grid(path: &Path, data: &[f32], shape: [usize; 4], cols: usize) -> Result<()> {
    let [n, c, h, w] = shape;
    let cols = cols.max(1).min(n.max(1));
    let rows = n.div_ceil(cols);
    let (gw, gh) = ((cols * (w + 1) + 1) as u32, (rows * (h + 1) + 1) as u32);
    let mut img = image::RgbImage::from_pixel(gw, gh, image::Rgb([40, 40, 40]));
    let to_u8 = |v: f32| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8;
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        for y in 0..h {
            for x in 0..w {
                let px = |k: usize| to_u8(data[((i * c + k.min(c - 1)) * h + y) * w + x]);
                let rgb = [px(0), px(1), px(2)];
                img.put_pixel(
                    (col * (w + 1) + 1 + x) as u32,
                    (r * (h + 1) + 1 + y) as u32,
                    image::Rgb(rgb),
                );
            }
        }
    }
    // scale small images up so the grid is viewable
    let scale = (256 / gw.max(1)).clamp(1, 8);
    let img = image::imageops::resize(
        &img,
        gw * scale,
        gh * scale,
        image::imageops::FilterType::Nearest,
    );
    let tmp = tmp_of(path);
    img.save_with_format(&tmp, image::ImageFormat::Png)?;
    finish(&tmp, path)
}

/// p50 latency against batch size, both on log scales, one line per series with a legend;
/// the numbers are in the bench JSON written beside it.
pub fn latency_vs_batch(path: &Path, series: &[(&str, &[crate::bench::Latency])]) -> Result<()> {
    let all = || series.iter().flat_map(|(_, s)| s.iter());
    let (Some((b0, b1)), Some((y0, y1))) = (
        bounds(all().map(|l| (l.batch as f64).log2())),
        bounds(all().map(|l| l.latency_ms.p50.max(1e-6).log10())),
    ) else {
        return Ok(());
    };
    fonts()?;
    let tmp = tmp_of(path);
    {
        let root = BitMapBackend::new(&tmp, (720, 440)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("latency per batch (p50)", (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d((b0 - 0.4)..(b1 + 0.4), (y0 - 0.15)..(y1 + 0.15))?;
        chart
            .configure_mesh()
            .x_desc("batch size, samples per run (log scale)")
            .y_desc("p50 latency, ms (log scale)")
            .x_label_formatter(&|v| short(2f64.powf(*v)))
            .y_label_formatter(&|v| short(10f64.powf(*v)))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        let colors = [BLUE, RED, BLACK, GREEN];
        for (i, (name, s)) in series.iter().enumerate() {
            if s.is_empty() {
                continue;
            }
            let c = colors[i % colors.len()];
            let pts: Vec<(f64, f64)> = s
                .iter()
                .map(|l| ((l.batch as f64).log2(), l.latency_ms.p50.max(1e-6).log10()))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    finish(&tmp, path)
}
