//! AdamW and the EMA of the weights, with state kept as plain tensors so it can be checkpointed
//! and resumed.
//!
//! Two layouts with the same elementwise arithmetic (bit-identical results, tested):
//! - per parameter: ~18 small ops per parameter tensor per step (the CPU default);
//! - flat: moments, EMA and a copy of the weights in one buffer each, so a step is one gather of
//!   the gradients, ~18 ops in all, and one copy back per parameter. On a GPU every op is a
//!   kernel launch, and a UNet has hundreds of parameter tensors: the flat layout is the GPU
//!   default. `FLASHCTL_FLAT_ADAMW=1|0` forces either.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

enum State {
    PerParam {
        m: Vec<Tensor>,
        v: Vec<Tensor>,
        ema: Vec<Tensor>,
    },
    Flat {
        m: Tensor,
        v: Tensor,
        ema: Tensor,
        /// The weights, flat; the optimiser is the only writer of the vars, so it stays in sync.
        theta: Tensor,
        /// (offset, length) of each parameter in the flat buffers.
        spans: Vec<(usize, usize)>,
    },
}

pub struct AdamW {
    vars: Vec<(String, Var)>,
    lr: f64,
    wd: f64,
    /// Steps taken (the bias correction's t).
    pub step: usize,
    state: State,
}

/// The layout for a device: flat on accelerators, per parameter on the CPU, unless
/// `FLASHCTL_FLAT_ADAMW` says otherwise.
pub fn flat_for(device: &Device) -> bool {
    match std::env::var("FLASHCTL_FLAT_ADAMW").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => !device.is_cpu(),
    }
}

fn flat_cat(ts: &[Tensor]) -> Result<Tensor> {
    let flat = ts
        .iter()
        .map(|t| t.flatten_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&flat, 0)?.detach())
}

impl AdamW {
    /// Zero moments; the EMA starts at the current weights.
    pub fn new(vars: Vec<(String, Var)>, lr: f64, wd: f64, flat: bool) -> Result<Self> {
        let params: Vec<Tensor> = vars.iter().map(|(_, v)| v.as_tensor().clone()).collect();
        let zeros = params
            .iter()
            .map(|p| p.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ema = params
            .iter()
            .map(|p| p.copy().map(|c| c.detach()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut s = Self {
            vars,
            lr,
            wd,
            step: 0,
            state: State::PerParam {
                m: zeros.clone(),
                v: zeros,
                ema,
            },
        };
        if flat {
            s.flatten()?;
        }
        Ok(s)
    }

    /// Switch the per-parameter state to the flat layout.
    fn flatten(&mut self) -> Result<()> {
        let State::PerParam { m, v, ema } = &self.state else {
            return Ok(());
        };
        let mut spans = vec![];
        let mut at = 0;
        for (_, var) in &self.vars {
            let n = var.as_tensor().elem_count();
            spans.push((at, n));
            at += n;
        }
        let params: Vec<Tensor> = self
            .vars
            .iter()
            .map(|(_, v)| v.as_tensor().clone())
            .collect();
        self.state = State::Flat {
            m: flat_cat(m)?,
            v: flat_cat(v)?,
            ema: flat_cat(ema)?,
            theta: flat_cat(&params)?,
            spans,
        };
        Ok(())
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// First moment, second moment and EMA of parameter `i`, shaped like it.
    pub fn moments(&self, i: usize) -> Result<(Tensor, Tensor, Tensor)> {
        match &self.state {
            State::PerParam { m, v, ema } => Ok((m[i].clone(), v[i].clone(), ema[i].clone())),
            State::Flat {
                m, v, ema, spans, ..
            } => {
                let (off, n) = spans[i];
                let shape = self.vars[i].1.as_tensor().shape().clone();
                let part = |t: &Tensor| t.narrow(0, off, n)?.reshape(shape.clone());
                Ok((part(m)?, part(v)?, part(ema)?))
            }
        }
    }

    /// Restore a checkpoint: weights, moments and EMA per parameter (in `vars` order).
    pub fn restore(
        &mut self,
        step: usize,
        params: &[Tensor],
        m: Vec<Tensor>,
        v: Vec<Tensor>,
        ema: Vec<Tensor>,
    ) -> Result<()> {
        for ((_, var), p) in self.vars.iter().zip(params) {
            var.set(p)?;
        }
        let flat = matches!(self.state, State::Flat { .. });
        self.state = State::PerParam { m, v, ema };
        if flat {
            self.flatten()?;
        }
        self.step = step;
        Ok(())
    }

    /// One AdamW step with these gradients (a parameter without a gradient is left alone in the
    /// per-parameter layout; the flat layout needs every parameter in the loss).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let bc1 = 1.0 - BETA1.powi(self.step as i32);
        let bc2 = 1.0 - BETA2.powi(self.step as i32);
        let (lr, wd) = (self.lr, self.wd);
        // the update, as written once for both layouts
        let adam = |p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor| -> Result<[Tensor; 3]> {
            let m = ((m * BETA1)? + (g * (1.0 - BETA1))?)?;
            let v = ((v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let mhat = (&m / bc1)?;
            let vhat = (&v / bc2)?;
            let upd = (mhat / (vhat.sqrt()? + ADAM_EPS)?)?;
            let theta = ((p * (1.0 - lr * wd))? - (upd * lr)?)?;
            // detached: `p` is a variable, so `theta` would otherwise record the op graph back
            // to it, and state kept from step to step would chain every earlier step's tensors
            Ok([theta.detach(), m.detach(), v.detach()])
        };
        match &mut self.state {
            State::PerParam { m, v, .. } => {
                for (i, (_, var)) in self.vars.iter().enumerate() {
                    let Some(g) = grads.get(var.as_tensor()) else {
                        continue;
                    };
                    let [theta, mi, vi] = adam(var.as_tensor(), g, &m[i], &v[i])?;
                    m[i] = mi;
                    v[i] = vi;
                    var.set(&theta)?;
                }
            }
            State::Flat {
                m, v, theta, spans, ..
            } => {
                let mut gs = vec![];
                for (name, var) in &self.vars {
                    match grads.get(var.as_tensor()) {
                        Some(g) => gs.push(g.clone()),
                        None => bail!(
                            "parameter `{name}` got no gradient; the flat AdamW layout needs \
                             every parameter in the loss (FLASHCTL_FLAT_ADAMW=0 for the \
                             per-parameter one)"
                        ),
                    }
                }
                let g = flat_cat(&gs)?;
                let [t, mi, vi] = adam(theta, &g, m, v)?;
                for ((_, var), &(off, n)) in self.vars.iter().zip(spans.iter()) {
                    var.set(&t.narrow(0, off, n)?.reshape(var.as_tensor().shape())?)?;
                }
                *theta = t;
                *m = mi;
                *v = vi;
            }
        }
        Ok(())
    }

    /// ema = decay * ema + (1 - decay) * weights.
    pub fn update_ema(&mut self, decay: f64) -> Result<()> {
        // detached: the weights are variables, so the blend would record an op graph that links
        // each EMA to the previous one, keeping every earlier EMA alive (memory grew by one model
        // per iteration until this)
        let blend = |e: &Tensor, p: &Tensor| -> candle_core::Result<Tensor> {
            Ok(((e * decay)? + (p * (1.0 - decay))?)?.detach())
        };
        match &mut self.state {
            State::PerParam { ema, .. } => {
                for (i, (_, var)) in self.vars.iter().enumerate() {
                    ema[i] = blend(&ema[i], var.as_tensor())?;
                }
            }
            State::Flat { ema, theta, .. } => *ema = blend(ema, theta)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn vars(seed: u64) -> Vec<(String, Var)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        [vec![3, 4], vec![5], vec![2, 3, 2]]
            .into_iter()
            .enumerate()
            .map(|(i, shape)| {
                let n: usize = shape.iter().product();
                let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
                (format!("p{i}"), Var::from_tensor(&t).unwrap())
            })
            .collect()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    /// Three steps of a loss touching every parameter, in one layout.
    fn run(flat: bool, steps: usize) -> AdamW {
        let vs = vars(1);
        let mut opt = AdamW::new(vs.clone(), 1e-2, 0.01, flat).unwrap();
        for k in 0..steps {
            let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
            for (i, (_, v)) in vs.iter().enumerate() {
                let w = (i + k + 1) as f64;
                let term = ((v.as_tensor() * w).unwrap().sin().unwrap().sqr().unwrap())
                    .sum_all()
                    .unwrap();
                loss = (loss + term).unwrap();
            }
            opt.step(&loss.backward().unwrap()).unwrap();
            opt.update_ema(0.9).unwrap();
        }
        opt
    }

    #[test]
    fn flat_and_per_parameter_layouts_are_bit_identical() {
        let (a, b) = (run(false, 3), run(true, 3));
        for i in 0..a.vars().len() {
            assert_eq!(
                bits(a.vars()[i].1.as_tensor()),
                bits(b.vars()[i].1.as_tensor())
            );
            let (ma, va, ea) = a.moments(i).unwrap();
            let (mb, vb, eb) = b.moments(i).unwrap();
            assert_eq!(mb.dims(), a.vars()[i].1.as_tensor().dims());
            assert_eq!(bits(&ma), bits(&mb));
            assert_eq!(bits(&va), bits(&vb));
            assert_eq!(bits(&ea), bits(&eb));
        }
    }

    #[test]
    fn restore_then_step_equals_uninterrupted_in_the_flat_layout() {
        let full = run(true, 3);
        let part = run(true, 2);
        // checkpoint `part` the way train_loop does, restore into a fresh optimiser
        let n = part.vars().len();
        let params: Vec<Tensor> = part
            .vars()
            .iter()
            .map(|(_, v)| v.as_tensor().copy().unwrap())
            .collect();
        let (mut m, mut v, mut e) = (vec![], vec![], vec![]);
        for i in 0..n {
            let (mi, vi, ei) = part.moments(i).unwrap();
            m.push(mi.copy().unwrap());
            v.push(vi.copy().unwrap());
            e.push(ei.copy().unwrap());
        }
        let vs = vars(7); // other values: restore must overwrite them
        let mut fresh = AdamW::new(vs.clone(), 1e-2, 0.01, true).unwrap();
        fresh.restore(part.step, &params, m, v, e).unwrap();
        let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
        for (i, (_, var)) in vs.iter().enumerate() {
            let w = (i + 2 + 1) as f64;
            let term = ((var.as_tensor() * w).unwrap().sin().unwrap().sqr().unwrap())
                .sum_all()
                .unwrap();
            loss = (loss + term).unwrap();
        }
        fresh.step(&loss.backward().unwrap()).unwrap();
        fresh.update_ema(0.9).unwrap();
        for i in 0..n {
            assert_eq!(
                bits(full.vars()[i].1.as_tensor()),
                bits(fresh.vars()[i].1.as_tensor())
            );
            assert_eq!(
                bits(&full.moments(i).unwrap().2),
                bits(&fresh.moments(i).unwrap().2)
            );
        }
    }

    #[test]
    fn flat_layout_names_a_parameter_without_gradient() {
        let vs = vars(1);
        let mut opt = AdamW::new(vs.clone(), 1e-2, 0.0, true).unwrap();
        let loss = vs[0].1.as_tensor().sum_all().unwrap();
        let e = opt.step(&loss.backward().unwrap()).unwrap_err().to_string();
        assert!(e.contains("`p1` got no gradient"), "{e}");
    }
}
