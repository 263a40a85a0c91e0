use std::time::Instant;
fn bench(m: usize, n: usize, k: usize, threads: usize) -> f64 {
    let a = vec![1.0f32; m * k];
    let b = vec![0.5f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let run = |c: &mut [f32]| unsafe {
        gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize,
            b.as_ptr(), 1, n as isize, 0.0f32, 1.0f32, false, false, false, par);
    };
    for _ in 0..3 { run(&mut c); }
    let reps = ((2e9 / (2.0 * (m * n * k) as f64)) as usize).max(3);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps { run(&mut c); }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}
fn main() {
    // conv-as-GEMM shapes of the Fashion-MNIST small UNet (per sample): [Cout, Cin*9] x [Cin*9, H*W]
    for &(m, k, n) in &[(32usize, 288usize, 784usize), (64, 576, 196), (64, 288, 196), (32, 576, 784), (288, 32, 784), (576, 64, 196)] {
        println!("m {m:4} k {k:4} n {n:4}: 1 thread {:6.1} GFLOP/s, 2 threads {:6.1} GFLOP/s", bench(m, n, k, 1), bench(m, n, k, 2));
    }
}
