use crate::error::{Result, ValidateError};
use crate::tensor::HostTensor;

/// One inference runtime: prepare a graph for given input shapes, run named inputs, and say which
/// execution provider really ran.
pub trait Runtime {
    /// Stable name used on the command line and in reports (`tract`, `ort-cpu`, ...).
    fn name(&self) -> &'static str;
    /// Load and optimise the graph for the shapes of `example_inputs`.
    fn prepare(&mut self, onnx: &[u8], example_inputs: &[HostTensor]) -> Result<()>;
    /// Run prepared graph; outputs in graph order with their names.
    fn run(&mut self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>>;
    /// The provider that executed the graph (for ORT: the registered execution provider).
    fn provider(&self) -> String;
    /// Wall-clock milliseconds of `runs` runs of the prepared graph after `warmup` untimed ones.
    fn time(&mut self, inputs: &[HostTensor], warmup: usize, runs: usize) -> Result<Vec<f64>> {
        time_ms(warmup, runs, || self.run(inputs).map(|_| ()))
    }
}

/// The `p`-quantile (0..=1, nearest rank) of `values`; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n => v[((n as f64 - 1.0) * p).round() as usize],
    }
}

/// Milliseconds of `runs` calls of `f` after `warmup` untimed calls; the first error stops it.
pub fn time_ms<E>(
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<Vec<f64>, E> {
    for _ in 0..warmup {
        f()?;
    }
    (0..runs)
        .map(|_| {
            let t0 = std::time::Instant::now();
            f()?;
            Ok(t0.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
}

/// Every runtime `validate` knows. `candle`, the eager reference, is built by the flashctl crate
/// (it reruns the exported model code), so [`runtime_by_name`] does not construct it.
pub const RUNTIME_NAMES: &[&str] = &["tract", "ort-cpu", "ort-cuda", "ort-tensorrt", "candle"];

/// Construct a runtime by name; an ORT runtime fails here when its library cannot be loaded.
pub fn runtime_by_name(name: &str) -> Result<Box<dyn Runtime>> {
    match name {
        "tract" => Ok(Box::new(crate::TractRuntime::new())),
        "ort-cpu" | "ort-cuda" | "ort-tensorrt" => Ok(Box::new(crate::OrtRuntime::new(name)?)),
        other => Err(ValidateError::BadInput(format!(
            "unknown runtime `{other}` (known: {})",
            RUNTIME_NAMES.join(", ")
        ))),
    }
}

/// Output names of an ONNX graph, in order.
pub fn graph_output_names(onnx: &[u8]) -> Result<Vec<String>> {
    let m = flashctl_exporters::decode_model(onnx)
        .map_err(|e| ValidateError::BadInput(e.to_string()))?;
    Ok(m.graph
        .map(|g| g.output.into_iter().map(|o| o.name).collect())
        .unwrap_or_default())
}
