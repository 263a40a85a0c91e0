//! The function an export traces — the unrolled sampler, or one denoiser call — written once as
//! a function of named inputs, so tracing, the eager runtime in `validate` and `--bisect` replay
//! exactly the same thing.

use crate::models::Denoiser;
use crate::sampler::{self, SamplerPlan};
use flashctl_graphs::ops::DENOISER_SCOPE;
use flashctl_graphs::{DType, Dim, Graph, Ops, Recording, TraceOps, Traced};

/// An exported network: `Sampler` (inputs `noise` [, `class_labels`], output `image`) or
/// `Denoiser` (inputs `x`, `t` [, `class_labels`], output `denoiser_out`).
pub enum Network<'a> {
    Sampler {
        denoiser: &'a Denoiser,
        plan: &'a SamplerPlan,
    },
    Denoiser {
        denoiser: &'a Denoiser,
    },
}

/// A graph input: name, dtype, shape (batch symbolic).
pub struct InputSpec {
    pub name: &'static str,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl Network<'_> {
    fn denoiser(&self) -> &Denoiser {
        match self {
            Network::Sampler { denoiser, .. } | Network::Denoiser { denoiser } => denoiser,
        }
    }

    pub fn graph_name(&self) -> &'static str {
        match self {
            Network::Sampler { .. } => "flashctl_sampler",
            Network::Denoiser { .. } => "flashctl_denoiser",
        }
    }

    pub fn output_name(&self) -> &'static str {
        match self {
            Network::Sampler { .. } => "image",
            Network::Denoiser { .. } => "denoiser_out",
        }
    }

    /// Graph inputs in the order [`Network::run`] takes them.
    pub fn inputs(&self) -> Vec<InputSpec> {
        let d = self.denoiser();
        let mut sample = vec![Dim::Batch];
        sample.extend(d.sample_shape().into_iter().map(Dim::Known));
        let mut v = match self {
            Network::Sampler { .. } => vec![InputSpec {
                name: "noise",
                dtype: DType::F32,
                shape: sample,
            }],
            Network::Denoiser { .. } => vec![
                InputSpec {
                    name: "x",
                    dtype: DType::F32,
                    shape: sample,
                },
                InputSpec {
                    name: "t",
                    dtype: DType::F32,
                    shape: vec![Dim::Batch],
                },
            ],
        };
        if d.num_classes().is_some() {
            v.push(InputSpec {
                name: "class_labels",
                dtype: DType::I64,
                shape: vec![Dim::Batch],
            });
        }
        v
    }

    /// Run on any backend; `inputs` in the order of [`Network::inputs`].
    pub fn run<O: Ops>(&self, o: &O, inputs: &[&O::T]) -> flashctl_graphs::Result<O::T> {
        let labels = self
            .denoiser()
            .num_classes()
            .map(|_| *inputs.last().unwrap());
        match self {
            Network::Sampler { denoiser, plan } => {
                sampler::sample(o, denoiser, plan, inputs[0], labels)
            }
            Network::Denoiser { denoiser } => o.scoped(DENOISER_SCOPE, || {
                denoiser.forward(o, inputs[0], inputs[1], labels)
            }),
        }
    }

    /// Trace into the graph IR; with `record`, also every primitive's traced value in call
    /// order (the final one renamed to the output, as the graph names it).
    pub fn trace_recorded(
        &self,
        vb: candle_nn::VarBuilder<'static>,
        record: bool,
    ) -> anyhow::Result<(Graph, Vec<Traced>)> {
        let ops = TraceOps::new(vb, self.graph_name());
        let inputs: Vec<Traced> = self
            .inputs()
            .into_iter()
            .map(|s| ops.input(s.name, s.dtype, s.shape))
            .collect();
        let refs: Vec<&Traced> = inputs.iter().collect();
        let (y, mut taps) = if record {
            let rec = Recording::new(&ops);
            let y = self.run(&rec, &refs)?;
            (y, rec.into_taps())
        } else {
            (self.run(&ops, &refs)?, vec![])
        };
        let out = self.output_name();
        for t in taps.iter_mut().filter(|t| t.name == y.name) {
            t.name = out.to_string();
        }
        Ok((ops.finish(&[(out, &y)])?, taps))
    }

    pub fn trace(&self, vb: candle_nn::VarBuilder<'static>) -> anyhow::Result<Graph> {
        Ok(self.trace_recorded(vb, false)?.0)
    }
}
