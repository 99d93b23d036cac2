//! The losses against open_clip's `ClipLoss` and `SigLipLoss` (tests/fixtures/losses.*, made by
//! scripts/loss_fixture.py): values, and gradients with respect to both embeddings, the
//! log-space logit scale and SigLIP's bias, on a batch at SigLIP's init, a sharp one and a
//! batch of one; and the rows' parts a data-parallel process computes, which add up to them.

mod common;

use candle_core::{Tensor, Var};
use clip::{clip_loss, clip_loss_rows, siglip_loss, siglip_loss_rows};
use common::{assert_close, load_fixture, rel_err, to_vec};

fn var(t: &Tensor) -> Var {
    Var::from_tensor(t).unwrap()
}

fn assert_grad(what: &str, got: &Tensor, want: &Tensor) {
    let err = rel_err(&to_vec(got), &to_vec(want));
    assert!(err < 1e-4, "{what}: relative error {err}");
}

#[test]
fn clip_and_siglip_losses_match_open_clip_with_gradients() {
    let (t, meta) = load_fixture("losses");
    let cases = meta["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let c = case.as_str().unwrap();
        let img = var(&t[&format!("{c}.image")]);
        let txt = var(&t[&format!("{c}.text")]);
        let scale = var(&t[&format!("{c}.logit_scale")].squeeze(0).unwrap());
        let bias = var(&t[&format!("{c}.logit_bias")].squeeze(0).unwrap());

        let sig = siglip_loss(&img, &txt, &scale, &bias).unwrap();
        let want = &t[&format!("{c}.siglip.loss")];
        assert_close(
            &format!("{c}: siglip loss"),
            &sig.reshape(1).unwrap(),
            want,
            1e-5,
        );
        let grads = sig.backward().unwrap();
        for (name, v) in [
            ("image", &img),
            ("text", &txt),
            ("logit_scale", &scale),
            ("logit_bias", &bias),
        ] {
            let got = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap();
            let want = t[&format!("{c}.siglip.grad_{name}")].flatten_all().unwrap();
            assert_grad(&format!("{c}: siglip ∂/∂{name}"), &got, &want);
        }

        let cl = clip_loss(&img, &txt, &scale).unwrap();
        let want = &t[&format!("{c}.clip.loss")];
        assert_close(
            &format!("{c}: clip loss"),
            &cl.reshape(1).unwrap(),
            want,
            1e-5,
        );
        let grads = cl.backward().unwrap();
        for (name, v) in [("image", &img), ("text", &txt), ("logit_scale", &scale)] {
            let got = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap();
            let want = t[&format!("{c}.clip.grad_{name}")].flatten_all().unwrap();
            assert_grad(&format!("{c}: clip ∂/∂{name}"), &got, &want);
        }
    }
}

/// The rows' parts (what each process of a data-parallel world computes with `--local-loss`),
/// split as two processes would hold the batch, add up to open_clip's loss and gradients.
#[test]
fn row_parts_add_up_to_open_clips_losses_and_gradients() {
    let (t, meta) = load_fixture("losses");
    for case in meta["cases"].as_array().unwrap() {
        let c = case.as_str().unwrap();
        let img = var(&t[&format!("{c}.image")]);
        let txt = var(&t[&format!("{c}.text")]);
        let scale = var(&t[&format!("{c}.logit_scale")].squeeze(0).unwrap());
        let bias = var(&t[&format!("{c}.logit_bias")].squeeze(0).unwrap());
        let n = img.dim(0).unwrap();
        let parts = if n > 1 {
            vec![(0, n / 2), (n / 2, n - n / 2)]
        } else {
            vec![(0, 1)]
        };
        for loss in ["clip", "siglip"] {
            let mut value = 0f32;
            let mut sums: Vec<Option<Tensor>> = vec![None; 4];
            for &(start, rows) in &parts {
                let l = match loss {
                    "clip" => clip_loss_rows(&img, &txt, &scale, start, rows).unwrap(),
                    _ => siglip_loss_rows(&img, &txt, &scale, &bias, start, rows).unwrap(),
                };
                value += l.to_scalar::<f32>().unwrap();
                let g = l.backward().unwrap();
                for (k, v) in [&img, &txt, &scale, &bias].iter().enumerate() {
                    if let Some(x) = g.get(v.as_tensor()) {
                        sums[k] = Some(match sums[k].take() {
                            Some(a) => (a + x).unwrap(),
                            None => x.clone(),
                        });
                    }
                }
            }
            let want = t[&format!("{c}.{loss}.loss")].flatten_all().unwrap();
            assert_close(
                &format!("{c}: {loss} loss from {} parts", parts.len()),
                &Tensor::new(&[value], &candle_core::Device::Cpu).unwrap(),
                &want,
                1e-5,
            );
            let names = ["image", "text", "logit_scale", "logit_bias"];
            for (k, name) in names.iter().enumerate() {
                if loss == "clip" && *name == "logit_bias" {
                    continue;
                }
                let got = sums[k].as_ref().unwrap().flatten_all().unwrap();
                let want = t[&format!("{c}.{loss}.grad_{name}")].flatten_all().unwrap();
                assert_grad(&format!("{c}: {loss} parts ∂/∂{name}"), &got, &want);
            }
        }
    }
}
