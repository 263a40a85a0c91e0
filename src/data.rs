//! Training data: built-in 2-D sets, Fashion-MNIST from IDX files, a folder of PNGs.
//!
//! Every dataset yields float32 samples; images are scaled to [-1, 1] as [C, H, W].

use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` package installs the IDX files.
pub const FASHION_MNIST_DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("unknown dataset `{0}` (checkerboard, gaussian-mixture, two-moons, fashion-mnist, or a folder of PNGs)")]
    Unknown(String),
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}

fn ferr(path: &Path, msg: impl ToString) -> DataError {
    DataError::File {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toy2d {
    Checkerboard,
    GaussianMixture,
    TwoMoons,
}

impl Toy2d {
    pub fn sample(self, rng: &mut StdRng) -> [f32; 2] {
        match self {
            // 4x4 board on [-2, 2]^2, alternate cells filled
            Toy2d::Checkerboard => loop {
                let x: f32 = rng.gen_range(-2.0..2.0);
                let y: f32 = rng.gen_range(-2.0..2.0);
                if ((x.floor() + y.floor()) as i32).rem_euclid(2) == 0 {
                    return [x, y];
                }
            },
            // 8 gaussians on a circle of radius 2, std 0.15
            Toy2d::GaussianMixture => {
                let k = rng.gen_range(0..8) as f32;
                let a = k * std::f32::consts::TAU / 8.0;
                let n: f32 = StandardNormal.sample(rng);
                let m: f32 = StandardNormal.sample(rng);
                [2.0 * a.cos() + 0.15 * n, 2.0 * a.sin() + 0.15 * m]
            }
            // sklearn-style two moons, scaled and centred, noise 0.05
            Toy2d::TwoMoons => {
                let u: f32 = rng.gen_range(0.0..std::f32::consts::PI);
                let (x, y) = if rng.gen_bool(0.5) {
                    (u.cos(), u.sin())
                } else {
                    (1.0 - u.cos(), 0.5 - u.sin())
                };
                let n: f32 = StandardNormal.sample(rng);
                let m: f32 = StandardNormal.sample(rng);
                [1.5 * (x - 0.5) + 0.05 * n, 1.5 * (y - 0.25) + 0.05 * m]
            }
        }
    }
}

/// A dataset of fixed-shape samples, optionally labelled.
pub enum Dataset {
    Toy(Toy2d),
    Images {
        name: String,
        /// [C, H, W]
        shape: [usize; 3],
        pixels: Vec<f32>,
        labels: Option<Vec<i64>>,
        num_classes: Option<usize>,
    },
}

impl Dataset {
    pub fn name(&self) -> String {
        match self {
            Dataset::Toy(Toy2d::Checkerboard) => "checkerboard".into(),
            Dataset::Toy(Toy2d::GaussianMixture) => "gaussian-mixture".into(),
            Dataset::Toy(Toy2d::TwoMoons) => "two-moons".into(),
            Dataset::Images { name, .. } => name.clone(),
        }
    }

    pub fn sample_shape(&self) -> Vec<usize> {
        match self {
            Dataset::Toy(_) => vec![2],
            Dataset::Images { shape, .. } => shape.to_vec(),
        }
    }

    pub fn num_classes(&self) -> Option<usize> {
        match self {
            Dataset::Toy(_) => None,
            Dataset::Images { num_classes, .. } => *num_classes,
        }
    }

    /// A random batch: flat values [B * prod(shape)] and labels when the set has them.
    pub fn batch(&self, rng: &mut StdRng, b: usize) -> (Vec<f32>, Option<Vec<i64>>) {
        match self {
            Dataset::Toy(t) => ((0..b).flat_map(|_| t.sample(rng)).collect(), None),
            Dataset::Images {
                shape,
                pixels,
                labels,
                ..
            } => {
                let per = shape.iter().product::<usize>();
                let n = pixels.len() / per;
                let idx: Vec<usize> = (0..b).map(|_| rng.gen_range(0..n)).collect();
                let x = idx
                    .iter()
                    .flat_map(|&i| pixels[i * per..(i + 1) * per].iter().copied())
                    .collect();
                let y = labels.as_ref().map(|l| idx.iter().map(|&i| l[i]).collect());
                (x, y)
            }
        }
    }
}

/// Open a dataset by name, or a PNG folder by path. `data_dir` overrides Fashion-MNIST's location.
pub fn open(
    name: &str,
    data_dir: Option<&Path>,
    image_size: Option<usize>,
) -> Result<Dataset, DataError> {
    match name {
        "checkerboard" => Ok(Dataset::Toy(Toy2d::Checkerboard)),
        "gaussian-mixture" => Ok(Dataset::Toy(Toy2d::GaussianMixture)),
        "two-moons" => Ok(Dataset::Toy(Toy2d::TwoMoons)),
        "fashion-mnist" => fashion_mnist(&fashion_mnist_dir(data_dir)),
        other => {
            let p = Path::new(other);
            if p.is_dir() {
                png_folder(p, image_size.unwrap_or(32))
            } else {
                Err(DataError::Unknown(other.to_string()))
            }
        }
    }
}

pub fn fashion_mnist_dir(data_dir: Option<&Path>) -> PathBuf {
    data_dir
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DEFAULT_DIR))
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| ferr(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = vec![];
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| ferr(path, format!("corrupt gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse an IDX file (magic 0x0000_08_NN, big-endian dims, unsigned bytes): (dims, data).
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(ferr(path, "not an unsigned-byte IDX file (bad magic)"));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(ferr(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        return Err(ferr(
            path,
            format!(
                "truncated IDX data: expected {} bytes, found {}",
                header + n,
                bytes.len()
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

fn find_idx(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for cand in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&cand);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(ferr(
        &dir.join(stem),
        "missing (install Debian's dataset-fashion-mnist, or pass --data-dir with the IDX files)",
    ))
}

/// Fashion-MNIST training split: 60k images 1x28x28 in [-1, 1], 10 labels.
pub fn fashion_mnist(dir: &Path) -> Result<Dataset, DataError> {
    fashion_mnist_split(dir, "train")
}

/// A Fashion-MNIST split: `train` (60k) or `t10k` (the 10k test images, held out from training
/// and used as the reference set of `flashctl eval`).
pub fn fashion_mnist_split(dir: &Path, split: &str) -> Result<Dataset, DataError> {
    let ip = find_idx(dir, &format!("{split}-images-idx3-ubyte"))?;
    let lp = find_idx(dir, &format!("{split}-labels-idx1-ubyte"))?;
    let (idims, ibytes) = parse_idx(&read_maybe_gz(&ip)?, &ip)?;
    let (ldims, lbytes) = parse_idx(&read_maybe_gz(&lp)?, &lp)?;
    if idims.len() != 3 || ldims.len() != 1 || idims[0] != ldims[0] {
        return Err(ferr(
            &ip,
            format!("image dims {idims:?} do not match label dims {ldims:?}"),
        ));
    }
    Ok(Dataset::Images {
        name: "fashion-mnist".into(),
        shape: [1, idims[1], idims[2]],
        pixels: ibytes.iter().map(|&b| b as f32 / 127.5 - 1.0).collect(),
        labels: Some(lbytes.iter().map(|&b| b as i64).collect()),
        num_classes: Some(10),
    })
}

/// Every `*.png` in `dir`, resized to `size`x`size`; grayscale if all inputs are, else RGB.
pub fn png_folder(dir: &Path, size: usize) -> Result<Dataset, DataError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ferr(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .map(|e| e.eq_ignore_ascii_case("png"))
                .unwrap_or(false)
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ferr(dir, "no .png files"));
    }
    let imgs: Vec<image::DynamicImage> = files
        .iter()
        .map(|f| image::open(f).map_err(|e| ferr(f, e)))
        .collect::<Result<_, _>>()?;
    let gray = imgs.iter().all(|i| i.color().channel_count() <= 2);
    let c = if gray { 1 } else { 3 };
    let mut pixels = Vec::with_capacity(imgs.len() * c * size * size);
    for img in &imgs {
        let r = img.resize_exact(
            size as u32,
            size as u32,
            image::imageops::FilterType::Triangle,
        );
        let planar = |buf: Vec<u8>, ch: usize| {
            (0..ch)
                .flat_map(move |k| (0..size * size).map(move |i| (k, i)))
                .map(move |(k, i)| buf[i * ch + k] as f32 / 127.5 - 1.0)
                .collect::<Vec<_>>()
        };
        if gray {
            pixels.extend(planar(r.to_luma8().into_raw(), 1));
        } else {
            pixels.extend(planar(r.to_rgb8().into_raw(), 3));
        }
    }
    Ok(Dataset::Images {
        name: dir.display().to_string(),
        shape: [c, size, size],
        pixels,
        labels: None,
        num_classes: None,
    })
}
