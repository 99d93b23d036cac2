//! Inference with prepared weights (`ops::FrozenWeights`), with bf16 products
//! (`ops::autocast_bf16`) and with int8 products (`ops::quantize_int8`) against the plain f32
//! forward of the same model.

use candle_core::{Device, Tensor};
use clip::{init, ops, Clip, ClipConfig};

fn tiny_model() -> Clip {
    let cfg = ClipConfig::preset("tiny").unwrap();
    let (model, varmap) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
    init::init_parameters(&varmap, &cfg, 3).unwrap();
    model
}

fn inputs(model: &Clip, n: usize) -> (Tensor, Tensor) {
    let s = model.config.vision_cfg.image_size;
    let ctx = model.config.text_cfg.context_length;
    let pixels = Tensor::randn(0f32, 1.0, (n, 3, s, s), &Device::Cpu).unwrap(); // [n, 3, S, S]
    let ids: Vec<u32> = (0..n * ctx).map(|i| (i * 37 % 500) as u32 + 1).collect();
    let ids = Tensor::from_vec(ids, (n, ctx), &Device::Cpu).unwrap(); // [n, T]
    (pixels, ids)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

#[test]
fn prepared_weights_encode_exactly_as_the_plain_forward_and_are_made_once() {
    let model = tiny_model();
    let (pixels, ids) = inputs(&model, 6);
    let plain_img = ops::inference(|| model.encode_image(&pixels)).unwrap();
    let plain_txt = ops::inference(|| model.encode_text(&ids)).unwrap();
    let frozen = ops::FrozenWeights::new();
    for _ in 0..2 {
        let img = frozen
            .run(|| ops::inference(|| model.encode_image(&pixels)))
            .unwrap();
        let txt = frozen
            .run(|| ops::inference(|| model.encode_text(&ids)))
            .unwrap();
        assert_eq!(rows(&img), rows(&plain_img));
        assert_eq!(rows(&txt), rows(&plain_txt));
    }
    // tiny: 4 image blocks and 4 text blocks, each prepared once over both passes.
    assert_eq!(frozen.len(), 8);
}

#[test]
fn bf16_products_stay_within_bf16_rounding_of_f32() {
    let model = tiny_model();
    let (pixels, ids) = inputs(&model, 8);
    let Some(kernel) = ops::bf16_kernel() else {
        // The f32 fallback: autocast changes nothing.
        let a = ops::inference(|| model.encode_image(&pixels)).unwrap();
        let b = ops::autocast_bf16(|| ops::inference(|| model.encode_image(&pixels))).unwrap();
        assert_eq!(rows(&a), rows(&b));
        eprintln!("no bf16 matrix hardware here: the f32 fallback was checked, not the kernels");
        return;
    };
    for (name, f32_out, bf16_out) in [
        (
            "image",
            ops::inference(|| model.encode_image(&pixels)).unwrap(),
            ops::autocast_bf16(|| ops::inference(|| model.encode_image(&pixels))).unwrap(),
        ),
        (
            "text",
            ops::inference(|| model.encode_text(&ids)).unwrap(),
            ops::autocast_bf16(|| ops::inference(|| model.encode_text(&ids))).unwrap(),
        ),
    ] {
        let (a, b) = (rows(&f32_out), rows(&bf16_out));
        assert_ne!(
            a, b,
            "{name}: bf16 products on {kernel} gave f32's exact values"
        );
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            // Unit embeddings: the cosine is the dot product.
            let cos: f32 = x.iter().zip(y).map(|(u, v)| u * v).sum();
            assert!(
                cos > 0.999,
                "{name} {i}: cosine {cos} between bf16 and f32 embeddings"
            );
        }
    }
}

/// Cosine of unit embeddings, row by row.
fn cosines(a: &Tensor, b: &Tensor) -> Vec<f32> {
    rows(a)
        .iter()
        .zip(&rows(b))
        .map(|(x, y)| x.iter().zip(y).map(|(u, v)| u * v).sum())
        .collect()
}

#[test]
fn int8_products_stay_within_quantisation_error_of_f32_and_only_in_inference() {
    let model = tiny_model();
    let (pixels, ids) = inputs(&model, 8);
    let frozen = ops::FrozenWeights::new();
    for (name, f32_out, int8_out) in [
        (
            "image",
            ops::inference(|| model.encode_image(&pixels)).unwrap(),
            frozen
                .run(|| ops::quantize_int8(|| ops::inference(|| model.encode_image(&pixels))))
                .unwrap(),
        ),
        (
            "text",
            ops::inference(|| model.encode_text(&ids)).unwrap(),
            ops::quantize_int8(|| ops::inference(|| model.encode_text(&ids))).unwrap(),
        ),
    ] {
        assert_ne!(
            rows(&f32_out),
            rows(&int8_out),
            "{name}: int8 products gave f32's exact values"
        );
        for (i, cos) in cosines(&f32_out, &int8_out).into_iter().enumerate() {
            assert!(
                cos > 0.99,
                "{name} {i}: cosine {cos} between int8 and f32 embeddings"
            );
        }
    }
    // Prepared int8 weights are kept apart from f32 ones: the same cache then serves f32
    // exactly again.
    let again = frozen
        .run(|| ops::inference(|| model.encode_image(&pixels)))
        .unwrap();
    let plain = ops::inference(|| model.encode_image(&pixels)).unwrap();
    assert_eq!(rows(&again), rows(&plain));
    // Outside inference (a forward that may be differentiated) the products stay f32.
    let train_fwd = ops::quantize_int8(|| model.encode_image(&pixels)).unwrap();
    let f32_fwd = model.encode_image(&pixels).unwrap();
    assert_eq!(rows(&train_fwd), rows(&f32_fwd));
}

/// The loss and every parameter's gradient of one training step on `model`'s varmap.
fn loss_and_grads(
    model: &Clip,
    varmap: &candle_nn::VarMap,
    pixels: &Tensor,
    ids: &Tensor,
) -> (f32, Vec<(String, Vec<f32>)>) {
    let out = model.forward(pixels, ids).unwrap();
    let loss =
        clip::loss::clip_loss(&out.image_embeds, &out.text_embeds, &out.logit_scale).unwrap();
    let grads = loss.backward().unwrap();
    let mut named: Vec<(String, Vec<f32>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(name, var)| {
            let g = grads.get(var.as_tensor())?;
            Some((name.clone(), g.flatten_all().unwrap().to_vec1().unwrap()))
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    (loss.to_scalar().unwrap(), named)
}

/// A training step under autocast (bf16 products forward and backward: the blocks' x·Wᵀ,
/// dy·W and dyᵀ·x) against f32: the same loss and gradients within bf16 rounding — every
/// block parameter's gradient at cosine ≥ 0.9999 to f32's — and not f32's bits.
#[test]
fn bf16_training_gradients_stay_within_bf16_rounding_of_f32() {
    let cfg = ClipConfig::preset("tiny").unwrap();
    let (model, varmap) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
    init::init_parameters(&varmap, &cfg, 5).unwrap();
    let (pixels, ids) = inputs(&model, 16);
    let (loss32, g32) = loss_and_grads(&model, &varmap, &pixels, &ids);
    let (loss16, g16) = ops::autocast_bf16(|| loss_and_grads(&model, &varmap, &pixels, &ids));
    let Some(kernel) = ops::bf16_kernel() else {
        assert_eq!(
            (loss32, &g32),
            (loss16, &g16),
            "the f32 fallback changes nothing"
        );
        eprintln!("no bf16 matrix hardware here: the f32 fallback was checked, not the kernels");
        return;
    };
    assert!(
        (loss32 - loss16).abs() < 1e-3 * loss32.abs(),
        "loss {loss32} vs {loss16}"
    );
    let mut blocks = 0;
    for ((name, a), (_, b)) in g32.iter().zip(&g16) {
        if !name.contains("resblocks") || !name.ends_with("weight") || a.len() < 1000 {
            continue; // the block products' weights; LayerNorm's are elementwise
        }
        blocks += 1;
        assert_ne!(
            a, b,
            "{name}: bf16 products on {kernel} gave f32's exact gradient"
        );
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (norm(a) * norm(b));
        assert!(cos > 0.9999, "{name}: gradient cosine {cos} to f32's");
    }
    // tiny: 4 + 4 blocks × (in_proj, out_proj, c_fc, c_proj).
    assert_eq!(blocks, 32);
}
