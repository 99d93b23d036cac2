//! The residual block's matrix products, one thread, through the `gemm` crate as the fused ops
//! call it: GFLOP/s per product, best of several runs. `scripts/gemm_weigh.sh` prints it beside
//! OpenBLAS (numpy) and MKL (PyTorch) on the same shapes.
//! `cargo run --release -p clip --example gemm_weigh -- [rows] [reps]`
#![allow(unsafe_code)] // gemm takes raw pointers; the library wraps it in ops::gemm, private.

use std::time::Instant;

/// c `[m, n]` (row-major, rows ldc apart) = or += a·b; a(i, p) = a[i·ars + p·acs], b(p, j) =
/// b[p·brs + j·bcs]. One thread, as each task of the fused block calls it.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    c: &mut [f32],
    acc: bool,
    a: &[f32],
    ars: usize,
    acs: usize,
    b: &[f32],
    brs: usize,
    bcs: usize,
) {
    assert!(
        c.len() >= m * n
            && a.len() > (m - 1) * ars + (k - 1) * acs
            && b.len() > (k - 1) * brs + (n - 1) * bcs
    );
    // SAFETY: the asserts keep every index inside its slice; c is exclusively borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            acc,
            a.as_ptr(),
            acs as isize,
            ars as isize,
            b.as_ptr(),
            bcs as isize,
            brs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| match s.parse() {
            Ok(v) if v > 0 => v,
            _ => {
                eprintln!("gemm_weigh: expected [rows] [reps] as positive integers, got {s:?}");
                std::process::exit(2);
            }
        })
        .collect();
    let r = args.first().copied().unwrap_or(260); // rows per task: 4 images of 65 tokens
    let reps = args.get(1).copied().unwrap_or(20);
    let fill = |n: usize, s: f32| (0..n).map(|i| (i as f32 * s).sin()).collect::<Vec<f32>>();
    println!("engine,preset,weight,product,gflops");
    // (preset, weight name, in, out) of the block's four weights.
    for (preset, w, h) in [("tiny", 128usize, 512usize), ("small", 384, 1536)] {
        for (name, din, dout) in [
            ("in_proj", w, 3 * w),
            ("out_proj", w, w),
            ("c_fc", w, h),
            ("c_proj", h, w),
        ] {
            let (x, dy, wt) = (
                fill(r * din, 0.02),
                fill(r * dout, 0.01),
                fill(dout * din, 0.03),
            );
            let (mut y, mut dx, mut dw) = (
                vec![0f32; r * dout],
                vec![0f32; r * din],
                vec![0f32; dout * din],
            );
            let flop = 2.0 * (r * din * dout) as f64;
            let run = |product: &str, f: &mut dyn FnMut()| {
                f();
                let best = (0..reps)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::MAX, f64::min);
                println!(
                    "gemm crate,{preset},{name},{product},{:.1}",
                    flop / best / 1e9
                );
            };
            // forward y = x·Wᵀ [r, out]; W [out, in] row-major, read as Wᵀ (p = in, j = out).
            run("y = x·Wᵀ", &mut || {
                gemm(r, din, dout, &mut y, false, &x, din, 1, &wt, 1, din)
            });
            // backward dx = dy·W [r, in].
            run("dx = dy·W", &mut || {
                gemm(r, dout, din, &mut dx, false, &dy, dout, 1, &wt, din, 1)
            });
            // backward dW += dyᵀ·x [out, in].
            run("dW += dyᵀ·x", &mut || {
                gemm(dout, r, din, &mut dw, true, &dy, 1, dout, &x, din, 1)
            });
        }
    }
}
