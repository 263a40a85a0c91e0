//! Run-time dispatch of the CPU kernels' inner loops to AVX-512 / AVX2 code.
//!
//! The crate is built for baseline x86-64 (SSE2: 4 lanes, so it runs everywhere). A function
//! written through [`multiversion!`] is compiled three times, for AVX-512, for AVX2 + FMA and for
//! the baseline, and the widest one the CPU has is chosen at run time (detected once). The loops
//! are written lane-structured (fixed accumulators, no reassociation the compiler would need
//! fast-math for), so every version computes the same bits: results do not depend on the CPU.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Level {
    Baseline,
    Avx2,
    Avx512,
}

/// The widest instruction set of this CPU the kernels use (cached; `FLASHCTL_SIMD=baseline`
/// or `avx2` caps it, for measuring).
pub(crate) fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var("FLASHCTL_SIMD").unwrap_or_default();
        detected(&cap)
    })
}

#[cfg(target_arch = "x86_64")]
fn detected(cap: &str) -> Level {
    let avx512 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl");
    let avx2 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    match cap {
        "baseline" => Level::Baseline,
        "avx2" if avx2 => Level::Avx2,
        _ if avx512 && cap != "avx2" => Level::Avx512,
        _ if avx2 => Level::Avx2,
        _ => Level::Baseline,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detected(_cap: &str) -> Level {
    Level::Baseline
}

/// `multiversion! { fn name(args) { body } }`: `name` runs `body` compiled for the widest
/// [`Level`] this CPU has. The body should call only `#[inline(always)]` helpers (they are
/// inlined into each version and compiled with its features).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match $crate::simd::level() {
                    // SAFETY: level() returns a level only when the CPU has its features
                    $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Level::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    multiversion! {
        fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
            let mut acc = [0f32; 8];
            for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
                for i in 0..8 {
                    acc[i] += ca[i] * cb[i];
                }
            }
            acc.iter().sum()
        }
    }

    #[test]
    fn every_level_gives_the_same_bits() {
        let a: Vec<f32> = (0..1024).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..1024).map(|i| (i as f32 * 0.11).cos()).collect();
        let dispatched = dot_lanes(&a, &b);
        let mut acc = [0f32; 8];
        for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
            for i in 0..8 {
                acc[i] += ca[i] * cb[i];
            }
        }
        let scalar: f32 = acc.iter().sum();
        assert_eq!(dispatched.to_bits(), scalar.to_bits());
        assert!(detected("baseline") == Level::Baseline);
        let _ = level();
    }
}
