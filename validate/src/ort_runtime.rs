//! ONNX Runtime through `ort` with `load-dynamic`: CPU always, CUDA and TensorRT behind features.
//!
//! Execution providers are registered with `error_on_failure`, so a missing CUDA or TensorRT
//! library is an error rather than a silent fall-back to CPU that would report a false pass.

use crate::error::{Result, ValidateError};
use crate::runtime::Runtime;
use crate::tensor::{HostData, HostTensor};
use ort::session::Session;
use std::path::PathBuf;
use std::sync::OnceLock;

static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// Where `libonnxruntime.so` is: `ORT_DYLIB_PATH`, else the copy the test setup script installs
/// (`.cache/py/onnxruntime/capi/`) under the current directory or the executable's ancestors.
pub fn find_ort_library() -> std::result::Result<PathBuf, String> {
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ORT_DYLIB_PATH={} does not exist", p.display()))
        };
    }
    let rel = ".cache/py/onnxruntime/capi";
    let mut roots = vec![];
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(|p| p.to_path_buf()));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().map(|p| p.to_path_buf()));
    }
    for root in roots {
        let dir = root.join(rel);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("libonnxruntime.so") {
                    return Ok(e.path());
                }
            }
        }
    }
    Err("libonnxruntime.so not found: set ORT_DYLIB_PATH (pip install onnxruntime==1.31.1 provides it; scripts/setup.sh installs it)".into())
}

fn environment() -> std::result::Result<&'static ort::environment::Environment, String> {
    let env = ENV.get_or_init(|| {
        let lib = find_ort_library()?;
        let builder =
            ort::init_from(&lib).map_err(|e| format!("loading {}: {e}", lib.display()))?;
        builder
            .with_name("flashctl")
            .build()
            .map_err(|e| e.to_string())
    });
    env.as_ref().map_err(|e| e.clone())
}

/// Load ONNX Runtime (once); the error says why it cannot be.
pub fn ensure_environment() -> Result<()> {
    environment()
        .map(|_| ())
        .map_err(|reason| ValidateError::Unavailable {
            runtime: "ort".into(),
            reason,
        })
}

pub struct OrtRuntime {
    name: &'static str,
    session: Option<Session>,
    output_names: Vec<String>,
    /// ORT's per-node profile is being recorded (`FLASHCTL_ORT_PROFILE`); written on drop.
    profiling: bool,
}

impl Drop for OrtRuntime {
    fn drop(&mut self) {
        if let (true, Some(s)) = (self.profiling, self.session.as_mut()) {
            // ORT writes the profile only when asked to end it
            let _ = s.end_profiling();
        }
    }
}

/// `FLASHCTL_ORT_PROFILE=DIR`: every ORT session records ONNX Runtime's own per-node profile
/// (chrome-trace JSON) as DIR/RUNTIME-NNN_DATE.json, to see where the time goes on a device.
fn profile_prefix(name: &str) -> Option<std::path::PathBuf> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::var_os("FLASHCTL_ORT_PROFILE")?;
    let _ = std::fs::create_dir_all(&dir);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(std::path::Path::new(&dir).join(format!("{name}-{n:03}")))
}

impl OrtRuntime {
    /// `name`: `ort-cpu`, `ort-cuda` or `ort-tensorrt`.
    pub fn new(name: &str) -> Result<Self> {
        let name: &'static str = match name {
            "ort-cpu" => "ort-cpu",
            "ort-cuda" => "ort-cuda",
            "ort-tensorrt" => "ort-tensorrt",
            other => {
                return Err(ValidateError::BadInput(format!(
                    "not an ORT runtime: {other}"
                )))
            }
        };
        let unavailable = |reason: String| ValidateError::Unavailable {
            runtime: name.into(),
            reason,
        };
        environment().map_err(unavailable)?;
        if name == "ort-cuda" && !cfg!(feature = "ort-cuda") {
            return Err(unavailable("built without the `ort-cuda` feature".into()));
        }
        if name == "ort-tensorrt" && !cfg!(feature = "ort-tensorrt") {
            return Err(unavailable(
                "built without the `ort-tensorrt` feature".into(),
            ));
        }
        Ok(Self {
            name,
            session: None,
            output_names: vec![],
            profiling: false,
        })
    }

    fn providers(&self) -> Vec<ort::ep::ExecutionProviderDispatch> {
        let mut v = vec![];
        #[cfg(feature = "ort-tensorrt")]
        if self.name == "ort-tensorrt" {
            v.push(ort::ep::TensorRT::default().build().error_on_failure());
        }
        #[cfg(feature = "ort-cuda")]
        if self.name == "ort-cuda" {
            v.push(
                ort::ep::CUDA::default()
                    .with_tf32(cuda_tf32())
                    .build()
                    .error_on_failure(),
            );
        }
        if self.name == "ort-cpu" {
            v.push(ort::ep::CPU::default().build().error_on_failure());
        }
        v
    }

    /// ORT's offline optimisation: the graph optimised at the `extended` level (portable across
    /// machines of the same execution provider) written to `out`. TensorRT: ORT cannot save a
    /// model whose nodes the provider compiled, so `out` is the graph itself and the session is
    /// created with the provider's engine cache in `engine_dir` (fp16 engines with `fp16`); the
    /// engines appear there when the graph first runs (unverified here: no TensorRT 10 libs).
    pub fn write_optimized(
        &self,
        onnx: &[u8],
        out: &std::path::Path,
        fp16: bool,
        engine_dir: &std::path::Path,
    ) -> Result<()> {
        let _ = (fp16, engine_dir);
        let mut providers = self.providers();
        #[cfg(feature = "ort-tensorrt")]
        if self.name == "ort-tensorrt" {
            providers = vec![ort::ep::TensorRT::default()
                .with_engine_cache(true)
                .with_engine_cache_path(engine_dir.display().to_string())
                .with_fp16(fp16)
                .build()
                .error_on_failure()];
        }
        let env = environment().map_err(|e| self.fail(e))?;
        let mut builder = Session::builder(env)
            .map_err(|e| self.fail(e))?
            .with_execution_providers(std::mem::take(&mut providers))
            .map_err(|e| self.fail(e))?
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level2)
            .map_err(|e| self.fail(e))?;
        if self.name == "ort-tensorrt" {
            builder.commit_from_memory(onnx).map_err(|e| self.fail(e))?;
            return std::fs::write(out, onnx).map_err(|e| self.fail(e));
        }
        builder
            .with_optimized_model_path(out)
            .map_err(|e| self.fail(e))?
            .commit_from_memory(onnx)
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn fail(&self, e: impl std::fmt::Display) -> ValidateError {
        ValidateError::Failed {
            runtime: self.name.into(),
            reason: e.to_string(),
        }
    }
}

impl Runtime for OrtRuntime {
    fn name(&self) -> &'static str {
        self.name
    }

    fn prepare(&mut self, onnx: &[u8], _example_inputs: &[HostTensor]) -> Result<()> {
        self.output_names = crate::runtime::graph_output_names(onnx)?;
        let providers = self.providers();
        let env = environment().map_err(|e| self.fail(e))?;
        let mut builder = Session::builder(env)
            .map_err(|e| self.fail(e))?
            .with_execution_providers(providers)
            .map_err(|e| self.fail(e))?;
        if let Some(prefix) = profile_prefix(self.name) {
            builder = builder.with_profiling(prefix).map_err(|e| self.fail(e))?;
            self.profiling = true;
        }
        let session = builder.commit_from_memory(onnx).map_err(|e| self.fail(e))?;
        self.session = Some(session);
        Ok(())
    }

    fn run(&mut self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        let mut values: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![];
        for t in inputs {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            let v: ort::value::DynValue = match &t.data {
                HostData::F32(d) => ort::value::Tensor::from_array((shape, d.clone()))
                    .map_err(|e| self.fail(e))?
                    .into_dyn(),
                HostData::I64(d) => ort::value::Tensor::from_array((shape, d.clone()))
                    .map_err(|e| self.fail(e))?
                    .into_dyn(),
            };
            values.push((t.name.clone(), v.into()));
        }
        let name = self.name;
        let session = self.session.as_mut().ok_or_else(|| ValidateError::Failed {
            runtime: name.into(),
            reason: "run before prepare".into(),
        })?;
        let outputs = session.run(values).map_err(|e| ValidateError::Failed {
            runtime: name.into(),
            reason: e.to_string(),
        })?;
        let mut result = vec![];
        for out in &self.output_names {
            let v = outputs
                .get(out.as_str())
                .ok_or_else(|| ValidateError::Failed {
                    runtime: name.into(),
                    reason: format!("no output `{out}`"),
                })?;
            let (shape, data) =
                v.try_extract_tensor::<f32>()
                    .map_err(|e| ValidateError::Failed {
                        runtime: name.into(),
                        reason: e.to_string(),
                    })?;
            let shape = shape.iter().map(|&d| d as usize).collect();
            result.push(HostTensor::f32(out, shape, data.to_vec()));
        }
        Ok(result)
    }

    fn provider(&self) -> String {
        match self.name {
            "ort-cuda" if cuda_tf32() => "onnxruntime CUDAExecutionProvider (TF32)".into(),
            "ort-cuda" => "onnxruntime CUDAExecutionProvider (fp32, TF32 off)".into(),
            "ort-tensorrt" => "onnxruntime TensorrtExecutionProvider".into(),
            _ => "onnxruntime CPUExecutionProvider".into(),
        }
    }
}

/// ORT's CUDA provider computes MatMul/Conv in strict fp32 unless `FLASHCTL_ORT_CUDA_TF32=1`
/// (ORT's `use_tf32`, PyTorch's `allow_tf32`): a speed knob for benchmarks; parity runs keep it
/// off, and the provider name in every report says which was used.
pub fn cuda_tf32() -> bool {
    std::env::var("FLASHCTL_ORT_CUDA_TF32").is_ok_and(|v| v == "1")
}
