//! tract: pure-Rust runtime, always built; the embedded default.

use crate::error::{Result, ValidateError};
use crate::runtime::Runtime;
use crate::tensor::{HostData, HostTensor};
use tract_onnx::prelude::*;

type Plan = std::sync::Arc<TypedRunnableModel>;

#[derive(Default)]
pub struct TractRuntime {
    plan: Option<Plan>,
    input_names: Vec<String>,
    output_names: Vec<String>,
    /// `prepare` takes an NNEF tar (a bundle's tract engine) instead of ONNX
    nnef: bool,
}

impl TractRuntime {
    pub fn new() -> Self {
        Self::default()
    }
    /// A runtime whose `prepare` loads an NNEF archive written by
    /// [`crate::engines::tract_nnef_from_onnx`], with tract-nnef alone (as an edge device would).
    pub fn nnef() -> Self {
        Self {
            nnef: true,
            ..Self::default()
        }
    }

    fn prepare_nnef(&mut self, tar: &[u8]) -> Result<()> {
        let model = tract_nnef::nnef()
            .model_for_read(&mut std::io::Cursor::new(tar))
            .map_err(fail)?;
        // NNEF keeps graph outputs as outlet labels (the node may be named after its op)
        let name_of = |o: &OutletId| {
            model
                .outlet_label(*o)
                .map(String::from)
                .unwrap_or_else(|| model.node(o.node).name.clone())
        };
        self.input_names = model
            .input_outlets()
            .map_err(fail)?
            .iter()
            .map(name_of)
            .collect();
        self.output_names = model
            .output_outlets()
            .map_err(fail)?
            .iter()
            .map(name_of)
            .collect();
        self.plan = Some(
            model
                .into_optimized()
                .map_err(fail)?
                .into_runnable()
                .map_err(fail)?,
        );
        Ok(())
    }
}

fn fail(e: impl std::fmt::Display) -> ValidateError {
    ValidateError::Failed {
        runtime: "tract".into(),
        reason: format!("{e:#}"),
    }
}

fn to_tract(t: &HostTensor) -> TractResult<Tensor> {
    match &t.data {
        HostData::F32(v) => Tensor::from_shape(&t.shape, v),
        HostData::I64(v) => Tensor::from_shape(&t.shape, v),
    }
}

impl Runtime for TractRuntime {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn prepare(&mut self, onnx: &[u8], example_inputs: &[HostTensor]) -> Result<()> {
        if self.nnef {
            return self.prepare_nnef(onnx);
        }
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(fail)?;
        let names: Vec<String> = model
            .input_outlets()
            .map_err(fail)?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        // Inputs keep their declared facts (symbolic batch): the graph's value_info is symbolic
        // too, and concrete input facts would contradict it. Only check every input has a value.
        for name in &names {
            if !example_inputs.iter().any(|t| &t.name == name) {
                return Err(ValidateError::BadInput(format!(
                    "graph input `{name}` has no value"
                )));
            }
        }
        let typed = model.into_optimized().map_err(fail)?;
        self.output_names = crate::runtime::graph_output_names(onnx)?;
        self.plan = Some(typed.into_runnable().map_err(fail)?);
        self.input_names = names;
        Ok(())
    }

    fn run(&mut self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| fail("run before prepare"))?;
        let mut values = TVec::new();
        for name in &self.input_names {
            let t = inputs.iter().find(|t| &t.name == name).ok_or_else(|| {
                ValidateError::BadInput(format!("graph input `{name}` has no value"))
            })?;
            values.push(to_tract(t).map_err(fail)?.into_tvalue());
        }
        let outs = plan.run(values).map_err(fail)?;
        outs.iter()
            .zip(self.output_names.iter())
            .map(|(v, name)| {
                let shape = v.shape().to_vec();
                let cast = v.cast_to::<f32>().map_err(fail)?;
                let data: Vec<f32> = cast
                    .to_plain_array_view::<f32>()
                    .map_err(fail)?
                    .iter()
                    .copied()
                    .collect();
                Ok(HostTensor::f32(name, shape, data))
            })
            .collect()
    }

    fn provider(&self) -> String {
        if self.nnef {
            return "tract-nnef 0.23 (CPU)".into();
        }
        "tract-onnx 0.23 (CPU)".into()
    }
}
