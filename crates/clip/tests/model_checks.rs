//! Behaviour checks of our own: initialisation statistics (open_clip's stds), gradient flow to
//! every parameter, logit-scale clamp, and the weight loader's errors on bad files.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use clip::model::{LOGIT_SCALE_INIT, LOGIT_SCALE_MAX};
use clip::{clamp_logit_scale, clip_loss, init, weights, Clip, ClipConfig};

fn std_of(t: &Tensor) -> f64 {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
}

fn small_cfg(head: &str) -> ClipConfig {
    let text = format!(
        r#"{{"embed_dim": 16,
        "vision_cfg": {{"image_size": 16, "patch_size": 4, "width": 32, "layers": 2, "head_width": 16, "proj_type": "{head}"}},
        "text_cfg": {{"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 2, "proj_type": "{head}"}}}}"#
    );
    ClipConfig::from_json_str(&text, "test").unwrap()
}

#[test]
fn initialisation_follows_open_clip() {
    let cfg = ClipConfig::preset("tiny").unwrap();
    let (_, varmap) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
    init::init_parameters(&varmap, &cfg, 0).unwrap();
    let data = varmap.data().lock().unwrap();
    let w = 128f64;
    let expect = [
        ("token_embedding.weight", 0.02),
        ("positional_embedding", 0.01),
        ("text_projection", w.powf(-0.5)),
        ("transformer.resblocks.0.attn.in_proj_weight", w.powf(-0.5)),
        (
            "transformer.resblocks.3.attn.out_proj.weight",
            w.powf(-0.5) * 8f64.powf(-0.5),
        ),
        (
            "transformer.resblocks.1.mlp.c_fc.weight",
            (2.0 * w).powf(-0.5),
        ),
        (
            "transformer.resblocks.2.mlp.c_proj.weight",
            w.powf(-0.5) * 8f64.powf(-0.5),
        ),
        ("visual.class_embedding", w.powf(-0.5)),
        ("visual.positional_embedding", w.powf(-0.5)),
        ("visual.proj", w.powf(-0.5)),
        // xavier_uniform over [3W, W]: bound √(6/4W), std bound/√3
        (
            "visual.transformer.resblocks.0.attn.in_proj_weight",
            (6.0 / (4.0 * w)).sqrt() / 3f64.sqrt(),
        ),
        // PyTorch Linear default U(±1/√fan_in): std 1/√(3·fan_in)
        (
            "visual.transformer.resblocks.0.mlp.c_fc.weight",
            1.0 / (3.0 * w).sqrt(),
        ),
    ];
    for (key, want) in expect {
        let got = std_of(data[key].as_tensor());
        assert!(
            (got / want - 1.0).abs() < 0.05,
            "{key}: std {got}, expected {want}"
        );
    }
    let ls: f32 = data["logit_scale"].as_tensor().to_scalar().unwrap();
    assert!(
        (ls as f64 - LOGIT_SCALE_INIT).abs() < 1e-6
            && (LOGIT_SCALE_INIT.exp() - 1.0 / 0.07).abs() < 1e-9
    );
    let ln: Vec<f32> = data["ln_final.weight"].as_tensor().to_vec1().unwrap();
    assert!(ln.iter().all(|&x| x == 1.0));
    let bias: Vec<f32> = data["visual.transformer.resblocks.0.attn.in_proj_bias"]
        .as_tensor()
        .to_vec1()
        .unwrap();
    assert!(bias.iter().all(|&x| x == 0.0));
}

#[test]
fn initialisation_is_reproducible_by_seed() {
    let cfg = small_cfg("linear");
    let draw = |seed| {
        let (_, vm) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
        init::init_parameters(&vm, &cfg, seed).unwrap();
        let d = vm.data().lock().unwrap();
        d["visual.conv1.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(draw(3), draw(3));
    assert_ne!(draw(3), draw(4));
}

/// Guards against the silent gradient loss of candle's fused LayerNorm (it has no backward).
#[test]
fn every_parameter_receives_a_gradient() {
    for head in ["linear", "mlp"] {
        let cfg = small_cfg(head);
        let dev = Device::Cpu;
        let (model, varmap) = Clip::with_varmap(&cfg, &dev).unwrap();
        init::init_parameters(&varmap, &cfg, 1).unwrap();
        let pixels = Tensor::randn(0f32, 1., (4, 3, 16, 16), &dev).unwrap();
        let ids = Tensor::from_vec(
            vec![
                62u32, 5, 63, 0, 0, 0, 0, 0, 62, 7, 8, 63, 0, 0, 0, 0, 62, 9, 10, 11, 63, 0, 0, 0,
                62, 63, 0, 0, 0, 0, 0, 0,
            ],
            (4, 8),
            &dev,
        )
        .unwrap();
        let out = model.forward(&pixels, &ids).unwrap();
        let loss = clip_loss(&out.image_embeds, &out.text_embeds, &out.logit_scale).unwrap();
        let grads = loss.backward().unwrap();
        for (key, var) in varmap.data().lock().unwrap().iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{head}: no gradient reaches {key}"));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm > 0.0, "{head}: zero gradient for {key}");
        }
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// The text tower encodes captions in length groups, each cut after its last end-of-text
/// (`TextTransformer::pooled`). A caption's feature, and the gradients it sends back, must not
/// depend on the captions beside it: the batch below (ends at 7, 1, 7, 1, 1, 7 of context 8)
/// is split in two groups, reordered, and put back; each caption alone is one group of one.
#[test]
fn a_caption_encodes_the_same_in_a_batch_and_alone() {
    let cfg = small_cfg("linear");
    let dev = Device::Cpu;
    let (model, varmap) = Clip::with_varmap(&cfg, &dev).unwrap();
    init::init_parameters(&varmap, &cfg, 2).unwrap();
    let ends = [7usize, 1, 7, 1, 1, 7];
    let mut ids = vec![0u32; ends.len() * 8];
    for (i, &e) in ends.iter().enumerate() {
        ids[i * 8] = 62; // start of text
        for j in 1..e {
            ids[i * 8 + j] = (5 + 3 * i + j) as u32 % 60;
        }
        ids[i * 8 + e] = 63; // end of text, the highest id
    }
    let ids = Tensor::from_vec(ids, (ends.len(), 8), &dev).unwrap();
    let weights = Tensor::randn(0f32, 1., (ends.len(), 16), &dev).unwrap();

    let batch = model.text.forward(&ids).unwrap(); // [6, E]
    let alone = Tensor::cat(
        &(0..ends.len())
            .map(|i| model.text.forward(&ids.narrow(0, i, 1).unwrap()).unwrap())
            .collect::<Vec<_>>(),
        0,
    )
    .unwrap(); // [6, E]
    let diff = max_abs_diff(&batch, &alone);
    assert!(diff < 1e-5, "features differ by {diff}");

    let grads_of = |f: &Tensor| {
        (f * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    };
    let (gb, ga) = (grads_of(&batch), grads_of(&alone));
    let mut checked = 0;
    for (key, var) in varmap.data().lock().unwrap().iter() {
        if key.starts_with("visual.") || key == "logit_scale" {
            continue; // the image tower and the logit scale take no part
        }
        checked += 1;
        let (b, a) = (
            gb.get(var.as_tensor()).unwrap(),
            ga.get(var.as_tensor()).unwrap(),
        );
        let scale: f32 = a.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        let d = max_abs_diff(b, a);
        assert!(
            d <= 1e-5 * scale.max(1.0),
            "gradient of {key} differs by {d} (scale {scale})"
        );
    }
    assert!(checked >= 10, "only {checked} text parameters compared");
}

#[test]
fn logit_scale_is_clamped_to_ln_100() {
    let cfg = small_cfg("linear");
    let (model, varmap) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
    let set = |v: f32| {
        varmap.data().lock().unwrap()["logit_scale"]
            .set(&Tensor::new(v, &Device::Cpu).unwrap())
            .unwrap()
    };
    set(7.0);
    clamp_logit_scale(&varmap).unwrap();
    let got: f32 = model.logit_scale.to_scalar().unwrap();
    assert!((got as f64 - LOGIT_SCALE_MAX).abs() < 1e-6, "{got}");
    set(-1.0);
    clamp_logit_scale(&varmap).unwrap();
    assert_eq!(model.logit_scale.to_scalar::<f32>().unwrap(), 0.0);
}

fn saved_state(cfg: &ClipConfig) -> HashMap<String, Tensor> {
    let (_, vm) = Clip::with_varmap(cfg, &Device::Cpu).unwrap();
    init::init_parameters(&vm, cfg, 0).unwrap();
    let d = vm.data().lock().unwrap();
    d.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

fn load_error(state: &HashMap<String, Tensor>, cfg: &ClipConfig, tag: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "clipforge-{tag}-{}.safetensors",
        std::process::id()
    ));
    weights::save_tensors(state, &path).unwrap();
    let (_, vm) = Clip::with_varmap(cfg, &Device::Cpu).unwrap();
    let err = weights::load_into(&vm, &path).unwrap_err().to_string();
    std::fs::remove_file(&path).ok();
    err
}

#[test]
fn weight_errors_name_the_key_and_shapes() {
    let cfg = small_cfg("linear");
    let mut state = saved_state(&cfg);
    state.remove("visual.proj");
    let err = load_error(&state, &cfg, "missing");
    assert!(
        err.contains("missing tensor visual.proj (expected shape [32, 16])"),
        "{err}"
    );

    let mut state = saved_state(&cfg);
    state.insert(
        "text_projection".into(),
        Tensor::zeros((32, 8), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = load_error(&state, &cfg, "shape");
    assert!(
        err.contains("tensor text_projection has shape [32, 8], expected [32, 16]"),
        "{err}"
    );

    let mut state = saved_state(&cfg);
    state.insert(
        "visual.extra".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = load_error(&state, &cfg, "extra");
    assert!(err.contains("unexpected tensor visual.extra"), "{err}");

    let path = std::env::temp_dir().join(format!(
        "clipforge-notst-{}.safetensors",
        std::process::id()
    ));
    std::fs::write(&path, b"this is not a safetensors file at all").unwrap();
    let (_, vm) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
    let err = weights::load_into(&vm, &path).unwrap_err().to_string();
    std::fs::remove_file(&path).ok();
    assert!(
        err.contains("not a safetensors file") && err.contains("clipforge-notst"),
        "{err}"
    );
}

#[test]
fn saved_weights_round_trip() {
    let cfg = small_cfg("mlp");
    let state = saved_state(&cfg);
    let path =
        std::env::temp_dir().join(format!("clipforge-rt-{}.safetensors", std::process::id()));
    weights::save_tensors(&state, &path).unwrap();
    let (_, vm) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
    weights::load_into(&vm, &path).unwrap();
    std::fs::remove_file(&path).ok();
    for (k, v) in vm.data().lock().unwrap().iter() {
        let a: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = state[k].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{k}");
    }
}
