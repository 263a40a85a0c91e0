//! The ONNX loading path `validate` runs before any runtime sees a file: decode, structural
//! checks, summary, every deployment target's allow-list. Any input must give Ok or an error,
//! never a panic, hang or abort.
//!
//! cargo +nightly fuzz run onnx_load fuzz/corpus/onnx_load fuzz/seeds/onnx_load -- -runs=200000
//! (new corpus entries go to the ignored fuzz/corpus; fuzz/seeds holds two exported graphs)
#![no_main]

use flashctl_exporters::{check::check_structure, decode_model, summarize, targets};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_model(data) {
        let _ = check_structure(&m);
        let _ = summarize(&m);
        for name in ["generic", "tensorrt10", "ort-mobile"] {
            if let Ok(t) = targets::target_by_name(name) {
                let _ = targets::check_target(&m, t);
            }
        }
    }
});
