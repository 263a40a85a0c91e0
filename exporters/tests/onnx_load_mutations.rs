//! Stable-toolchain companion of the cargo-fuzz target `fuzz/fuzz_targets/onnx_load.rs`: random
//! truncations, byte flips and insertions of the seed graphs through the same loading path must
//! give Ok or an error, never a panic.

use flashctl_exporters::{check::check_structure, decode_model, summarize, targets};
use proptest::prelude::*;

fn seeds() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/onnx_load");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn load(data: &[u8]) {
    if let Ok(m) = decode_model(data) {
        let _ = check_structure(&m);
        let _ = summarize(&m);
        for name in ["generic", "tensorrt10", "ort-mobile"] {
            let _ = targets::check_target(&m, targets::target_by_name(name).unwrap());
        }
    }
}

#[test]
fn seeds_load_and_pass_the_structural_checks() {
    for s in seeds() {
        check_structure(&decode_model(&s).unwrap()).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn mutated_graphs_never_panic(
        seed in 0usize..2,
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..16),
        insert in proptest::collection::vec(any::<u8>(), 0..8),
        at in 0.0f64..1.0,
    ) {
        let seeds = seeds();
        let mut data = seeds[seed % seeds.len()].clone();
        for (pos, byte) in flips {
            let i = (pos * data.len() as f64) as usize % data.len();
            data[i] ^= byte;
        }
        let i = (at * data.len() as f64) as usize;
        data.splice(i..i, insert);
        let keep = ((1.0 - cut * cut) * data.len() as f64) as usize;
        data.truncate(keep.max(1));
        load(&data);
    }
}
