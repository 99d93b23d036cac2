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
