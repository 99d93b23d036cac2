//! Each fused op against the plain candle composition it replaces: values and gradients.

use candle_core::{Device, Tensor, Var};
use clip::ops;

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Forward values and the gradients of Σ f(inputs)·r w.r.t. every input, both ways.
fn check(
    name: &str,
    inputs: &[Var],
    fused: impl Fn(&[Tensor]) -> Tensor,
    plain: impl Fn(&[Tensor]) -> Tensor,
    tol: f32,
) {
    let ts: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let (yf, yp) = (fused(&ts), plain(&ts));
    assert!(
        max_diff(&yf, &yp) <= tol,
        "{name} values differ by {}",
        max_diff(&yf, &yp)
    );
    let r = Tensor::randn(0f32, 1., yf.shape(), &Device::Cpu).unwrap();
    let gf = (yf * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gp = (yp * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, v) in inputs.iter().enumerate() {
        let (a, b) = (
            gf.get(v.as_tensor()).expect("fused gradient"),
            gp.get(v.as_tensor()).expect("plain gradient"),
        );
        let scale = b
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1.0);
        assert!(
            max_diff(a, b) <= tol * scale,
            "{name} gradient of input {i} differs by {}",
            max_diff(a, b)
        );
    }
}

fn var(shape: &[usize], scale: f64) -> Var {
    Var::from_tensor(&(Tensor::randn(0f32, 1., shape, &Device::Cpu).unwrap() * scale).unwrap())
        .unwrap()
}

/// x `[b, t, w]`, then a residual block's twelve parameters (hidden width `h`) in open_clip's
/// order: LayerNorm gains and biases around 0.5, projections around 0.3.
fn block_vars(b: usize, t: usize, w: usize, h: usize) -> Vec<Var> {
    vec![
        var(&[b, t, w], 1.0),
        var(&[w], 0.5),
        var(&[w], 0.5),
        var(&[3 * w, w], 0.3),
        var(&[3 * w], 0.3),
        var(&[w, w], 0.3),
        var(&[w], 0.3),
        var(&[w], 0.5),
        var(&[w], 0.5),
        var(&[h, w], 0.3),
        var(&[h], 0.3),
        var(&[w, h], 0.3),
        var(&[w], 0.3),
    ]
}

/// The twelve tensors of [`block_vars`] (without x) as the fused ops take them.
fn block_params(p: &[Tensor]) -> ops::BlockParams<'_> {
    ops::BlockParams {
        ln_1_weight: &p[0],
        ln_1_bias: &p[1],
        in_proj_weight: &p[2],
        in_proj_bias: &p[3],
        out_proj_weight: &p[4],
        out_proj_bias: &p[5],
        ln_2_weight: &p[6],
        ln_2_bias: &p[7],
        c_fc_weight: &p[8],
        c_fc_bias: &p[9],
        c_proj_weight: &p[10],
        c_proj_bias: &p[11],
    }
}

/// A block's shape: `width` split into `heads`, MLP `hidden`, LayerNorm ε 1e-5.
fn block_cfg(
    width: usize,
    heads: usize,
    hidden: usize,
    quick_gelu: bool,
    causal: bool,
) -> ops::BlockCfg {
    ops::BlockCfg {
        width,
        heads,
        hidden,
        act: if quick_gelu {
            ops::Activation::QuickGelu
        } else {
            ops::Activation::Gelu
        },
        causal,
        eps: 1e-5,
    }
}

#[test]
fn layer_norm_matches_composition() {
    let (x, w, b) = (var(&[3, 70, 33], 2.0), var(&[33], 1.0), var(&[33], 1.0));
    check(
        "layer_norm",
        &[x, w, b],
        |t| ops::layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap(),
        |t| ops::layer_norm_composed(&t[0], &t[1], &t[2], 1e-5).unwrap(),
        1e-5,
    );
}

#[test]
fn softmax_matches_composition_with_a_causal_mask() {
    let x = var(&[2, 3, 17, 17], 3.0);
    let mask = ops::causal_mask(17, &Device::Cpu).unwrap();
    check(
        "softmax",
        &[x],
        |t| ops::softmax_last_dim(&t[0].broadcast_add(&mask).unwrap()).unwrap(),
        |t| {
            candle_nn::ops::softmax(&t[0].broadcast_add(&mask).unwrap(), candle_core::D::Minus1)
                .unwrap()
        },
        1e-6,
    );
}

#[test]
fn gelu_matches_erf_composition() {
    check(
        "gelu",
        &[var(&[1000, 37], 3.0)],
        |t| ops::gelu(&t[0]).unwrap(),
        |t| t[0].gelu_erf().unwrap(),
        2e-6,
    );
}

#[test]
fn quick_gelu_matches_sigmoid_composition() {
    check(
        "quick_gelu",
        &[var(&[1000, 37], 3.0)],
        |t| ops::quick_gelu(&t[0]).unwrap(),
        |t| {
            t[0].mul(&candle_nn::ops::sigmoid(&(&t[0] * 1.702).unwrap()).unwrap())
                .unwrap()
        },
        1e-6,
    );
}

#[test]
fn linear_matches_matmul_and_broadcast_add() {
    // Odd sizes, and enough rows for the product to run on several threads.
    for rows in [5, 1030] {
        let (x, w, b) = (var(&[rows, 67], 1.0), var(&[45, 67], 0.3), var(&[45], 1.0));
        check(
            "linear",
            &[x, w, b],
            |t| ops::linear(&t[0], &t[1], &t[2]).unwrap(),
            |t| ops::linear_composed(&t[0], &t[1], &t[2]).unwrap(),
            2e-5,
        );
    }
}

#[test]
fn attention_matches_composition_with_and_without_causal_mask() {
    // qkv [B, T, 3W] with W = heads · Dh = 3 · 8; T odd, as the ViT's patches + class token.
    for causal in [false, true] {
        let qkv = var(&[4, 13, 72], 1.5);
        check(
            &format!("attention causal={causal}"),
            &[qkv],
            |t| ops::attention(&t[0], 3, causal).unwrap(),
            |t| ops::attention_composed(&t[0], 3, causal).unwrap(),
            2e-5,
        );
    }
}

#[test]
fn residual_block_matches_the_separate_ops() {
    // W = 24 (3 heads of 8), hidden 40, T odd; GELU and QuickGELU, causal and not. 61 batch
    // elements of 9 tokens: the fused op runs whole elements ~256 rows at a time (29 here),
    // so this spans three tasks, the last one short, and sums their parameter gradients.
    let (w, h) = (24, 40);
    for (quick_gelu, causal) in [(false, false), (true, true)] {
        let vars = block_vars(61, 9, w, h);
        let cfg = block_cfg(w, 3, h, quick_gelu, causal);
        let block = |t: &[Tensor], fused: bool| {
            let p = &t[1..];
            let bp = block_params(p);
            if fused {
                ops::residual_block(&t[0], &bp, &cfg).unwrap()
            } else {
                ops::residual_block_composed(&t[0], &bp, &cfg).unwrap()
            }
        };
        check(
            &format!("residual block quick_gelu={quick_gelu} causal={causal}"),
            &vars,
            |t| block(t, true),
            |t| block(t, false),
            5e-5,
        );
    }
}

#[test]
fn blocks_run_under_inference_keep_nothing_for_backward() {
    // 150 elements of 3 tokens: two tasks on scratch (86 elements, then 64).
    let vars = block_vars(150, 3, 8, 16);
    let x = &vars[0];
    let t: Vec<Tensor> = vars[1..].iter().map(|v| v.as_tensor().clone()).collect();
    let bp = block_params(&t);
    let cfg = block_cfg(8, 2, 16, false, false);
    let yi = ops::inference(|| ops::residual_block(x.as_tensor(), &bp, &cfg).unwrap());
    let err = yi.sum_all().unwrap().backward().unwrap_err().to_string();
    assert!(err.contains("no activations kept"), "{err}");
    let y = ops::residual_block(x.as_tensor(), &bp, &cfg).unwrap();
    assert_eq!(max_diff(&y, &yi), 0.0, "inference changed the values");
    assert!(y.sum_all().unwrap().backward().is_ok());

    // The pooled last block likewise (five tasks of 32 pooled rows in its second phase).
    let pos: Vec<usize> = (0..150).map(|i| i % 3).collect();
    let pooled = || ops::residual_block_pooled(x.as_tensor(), &bp, &cfg, &pos).unwrap();
    let yi = ops::inference(pooled);
    let err = yi.sum_all().unwrap().backward().unwrap_err().to_string();
    assert!(err.contains("no activations kept"), "{err}");
    let y = pooled();
    assert_eq!(
        max_diff(&y, &yi),
        0.0,
        "inference changed the pooled values"
    );
    assert!(y.sum_all().unwrap().backward().is_ok());
}

#[test]
fn pooled_block_matches_the_full_block_then_a_gather() {
    // 61 elements of 9 tokens: phase one runs ~256 rows per task (three tasks), phase two 32
    // pooled rows per task (two). Positions vary per element (the end-of-text token), so under
    // the causal mask each pooled query sees a different number of keys.
    let (w, h) = (24, 40);
    let pos: Vec<usize> = (0..61).map(|i| (i * 5 + 2) % 9).collect();
    for (quick_gelu, causal) in [(false, false), (true, true), (false, true)] {
        let vars = block_vars(61, 9, w, h);
        let cfg = block_cfg(w, 3, h, quick_gelu, causal);
        let block = |t: &[Tensor], fused: bool| {
            let p = &t[1..];
            let bp = block_params(p);
            if fused {
                ops::residual_block_pooled(&t[0], &bp, &cfg, &pos).unwrap()
            } else {
                ops::residual_block_pooled_composed(&t[0], &bp, &cfg, &pos).unwrap()
            }
        };
        check(
            &format!("pooled block quick_gelu={quick_gelu} causal={causal}"),
            &vars,
            |t| block(t, true),
            |t| block(t, false),
            5e-5,
        );
    }
}
