//! `--device cpu|cuda[:N]`: where candle trains and samples. CUDA needs a binary built with the
//! `cuda` cargo feature (docs/gpu.md); the default build refuses it with one line, not a panic.
//!
//! Random draws (initial weights, noise, timesteps) are always made on the host from the seeded
//! RNG and copied to the device, so a run's draws do not depend on the device; only the float
//! arithmetic does.

use crate::validation::BadInput;
use candle_core::Device;

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!(
                    "--device {s}: expected cpu, cuda or cuda:N (N a device ordinal)"
                )),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this binary was built with CUDA support.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

impl DeviceSpec {
    /// Open the device: a CUDA device needs the `cuda` build and a working driver.
    pub fn open(self) -> Result<Device, BadInput> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) if !CUDA_BUILT => Err(BadInput(format!(
                "--device cuda:{n}: this flashctl was built without CUDA; rebuild with \
                 `cargo build --release --features cuda` (docs/gpu.md)"
            ))),
            DeviceSpec::Cuda(n) => Device::new_cuda(n)
                .map_err(|e| BadInput(format!("--device cuda:{n}: cannot open the device: {e}"))),
        }
    }
}

/// Parse and open a `--device` value in one step.
pub fn open(spec: &str) -> Result<Device, BadInput> {
    spec.parse::<DeviceSpec>().map_err(BadInput)?.open()
}

/// Short name for reports: `cpu` or `cuda:N`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_cuda_ordinals() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
        for bad in ["cuda:", "cuda:x", "tpu", "CPU", "cuda:-1"] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.contains("expected cpu, cuda or cuda:N"), "{bad}: {e}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn cpu_opens_and_cuda_without_the_feature_says_how_to_get_it() {
        assert!(open("cpu").unwrap().is_cpu());
        if !CUDA_BUILT {
            let e = open("cuda:1").unwrap_err().0;
            assert!(e.contains("built without CUDA"), "{e}");
            assert!(e.contains("--features cuda"), "{e}");
        }
        assert_eq!(name(&Device::Cpu), "cpu");
    }
}
