//! A `VarBuilder` backend that creates trainable variables from a seeded RNG.
//!
//! candle's CPU device cannot be seeded, so `VarBuilder::from_varmap` initialises differently on
//! every run; this backend draws each parameter from an RNG seeded by (seed, parameter name), so
//! `--seed` reproduces a run exactly and creation order does not matter.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub struct SeededVars {
    map: VarMap,
    seed: u64,
    /// Values to start from by name (a student initialised from its teacher).
    initial: std::collections::HashMap<String, Tensor>,
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the run seed
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Draw an initial value for `shape` from `init` with `rng`.
pub fn sample_init(init: Init, shape: &Shape, rng: &mut StdRng) -> Vec<f32> {
    let n = shape.elem_count();
    let normal = |rng: &mut StdRng, mean: f64, std: f64| -> Vec<f32> {
        let d = Normal::new(mean, std.max(1e-12)).unwrap();
        (0..n).map(|_| d.sample(rng) as f32).collect()
    };
    let uniform = |rng: &mut StdRng, lo: f64, up: f64| -> Vec<f32> {
        (0..n)
            .map(|_| rng.gen_range(lo..up.max(lo + 1e-12)) as f32)
            .collect()
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Normal => normal(rng, 0.0, std),
                candle_nn::init::NormalOrUniform::Uniform => {
                    let b = 3f64.sqrt() * std;
                    uniform(rng, -b, b)
                }
            }
        }
    }
}

impl SeededVars {
    pub fn new(seed: u64) -> Self {
        Self {
            map: VarMap::new(),
            seed,
            initial: Default::default(),
        }
    }
    pub fn with_initial(mut self, initial: std::collections::HashMap<String, Tensor>) -> Self {
        self.initial = initial;
        self
    }
    pub fn var_map(&self) -> &VarMap {
        &self.map
    }
    pub fn into_var_builder(self, device: &Device) -> (VarMap, VarBuilder<'static>) {
        let map = self.map.clone();
        (
            map,
            VarBuilder::from_backend(Box::new(self), DType::F32, device.clone()),
        )
    }
}

impl SimpleBackend for SeededVars {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.map.data().lock().unwrap();
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "parameter `{name}`: shape {:?}, requested {:?}",
                    v.shape(),
                    s
                );
            }
            return Ok(v.as_tensor().clone());
        }
        let t = match self.initial.get(name) {
            Some(v) if v.shape() != &s => candle_core::bail!(
                "initial value of `{name}` has shape {:?}, the model needs {:?}",
                v.shape(),
                s
            ),
            Some(v) => v.to_dtype(dtype)?.to_device(dev)?.copy()?,
            None => {
                let mut rng = StdRng::seed_from_u64(name_seed(self.seed, name));
                let values = sample_init(h, &s, &mut rng);
                Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?
            }
        };
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        match self.map.data().lock().unwrap().get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("parameter `{name}` does not exist"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().unwrap().contains_key(name)
    }
}
