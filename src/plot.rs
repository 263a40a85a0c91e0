//! PNG outputs: loss curves, 2-D scatter plots, image grids. Written to a temp file and renamed.
//!
//! plotters is built without font support (no system font dependency), so plots carry no text;
//! the numbers they show are in the CSV/JSON written beside them.

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

fn tmp_of(path: &Path) -> std::path::PathBuf {
    path.with_extension("partial.png")
}

fn finish(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Loss (log scale) against iteration.
pub fn loss_curve(path: &Path, losses: &[(usize, f32)]) -> Result<()> {
    if losses.is_empty() {
        return Ok(());
    }
    let tmp = tmp_of(path);
    {
        let root = BitMapBackend::new(&tmp, (640, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let xs = losses.last().unwrap().0.max(1) as f64;
        let logs: Vec<f64> = losses
            .iter()
            .map(|l| (l.1.max(1e-8) as f64).log10())
            .collect();
        let lo = logs.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = logs
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max)
            .max(lo + 1e-3);
        let mut chart = ChartBuilder::on(&root)
            .margin(20)
            .build_cartesian_2d(0f64..xs, lo..hi)?;
        chart.draw_series(LineSeries::new(
            losses.iter().zip(&logs).map(|(l, &y)| (l.0 as f64, y)),
            BLUE,
        ))?;
        // running mean over 50 iterations makes the trend readable
        let w = 50.min(logs.len());
        let smooth: Vec<(f64, f64)> = (w - 1..logs.len())
            .map(|i| {
                (
                    losses[i].0 as f64,
                    logs[i + 1 - w..=i].iter().sum::<f64>() / w as f64,
                )
            })
            .collect();
        chart.draw_series(LineSeries::new(smooth, RED.stroke_width(2)))?;
        root.draw(&Rectangle::new(
            [(20, 20), (620, 380)],
            BLACK.stroke_width(1),
        ))?;
        root.present()?;
    }
    finish(&tmp, path)
}

/// Scatter of 2-D points, optionally over reference points (grey).
pub fn scatter(path: &Path, points: &[[f32; 2]], reference: &[[f32; 2]]) -> Result<()> {
    let tmp = tmp_of(path);
    {
        let root = BitMapBackend::new(&tmp, (512, 512)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .build_cartesian_2d(-3f32..3f32, -3f32..3f32)?;
        chart.draw_series(
            reference
                .iter()
                .map(|p| Circle::new((p[0], p[1]), 1, RGBColor(180, 180, 180).filled())),
        )?;
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new((p[0], p[1]), 1, BLUE.filled())),
        )?;
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

/// p50 latency (log10 ms) against batch size (log2), one line per series; the numbers are in
/// the bench JSON written beside it.
pub fn latency_vs_batch(path: &Path, series: &[(&str, &[crate::bench::Latency])]) -> Result<()> {
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, s)| {
            s.iter()
                .map(|l| ((l.batch as f64).log2(), l.latency_ms.p50.max(1e-6).log10()))
        })
        .collect();
    if points.is_empty() {
        return Ok(());
    }
    let (x0, x1) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
            (a.0.min(p.0), a.1.max(p.0))
        });
    let (y0, y1) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
            (a.0.min(p.1), a.1.max(p.1))
        });
    let tmp = tmp_of(path);
    {
        let root = BitMapBackend::new(&tmp, (640, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(20)
            .build_cartesian_2d((x0 - 0.2)..(x1 + 0.2).max(x0 + 0.5), (y0 - 0.1)..(y1 + 0.1))?;
        let colors = [BLUE, RED, BLACK, GREEN];
        for (i, (_, s)) in series.iter().enumerate() {
            let c = colors[i % colors.len()];
            let pts: Vec<(f64, f64)> = s
                .iter()
                .map(|l| ((l.batch as f64).log2(), l.latency_ms.p50.max(1e-6).log10()))
                .collect();
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
        }
        root.present()?;
    }
    finish(&tmp, path)
}
