//! The inference image transform against open_clip's `image_transform(24, is_train=False)`
//! (PIL bicubic). Resampling kernels differ in rounding (PIL works in fixed point), so the
//! check is on the normalised values: mean absolute error and worst pixel.

mod common;

use clip::transform;

#[test]
fn matches_open_clip_inference_transform() {
    let (fx, _) = {
        let dir = common::fixture_dir();
        let t = candle_core::safetensors::load(
            dir.join("transform.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        (t, ())
    };
    for name in ["wide", "tall"] {
        let path = common::fixture_dir().join(format!("transform_{name}.png"));
        let img = transform::open_image(&path).unwrap();
        let got = transform::preprocess(&img, 24);
        let want = common::to_vec(&fx[&format!("expect.{name}")]);
        assert_eq!(got.len(), want.len());
        let errs: Vec<f32> = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).collect();
        let mean = errs.iter().sum::<f32>() / errs.len() as f32;
        let max = errs.iter().cloned().fold(0f32, f32::max);
        eprintln!("{name}: mean abs error {mean:.5}, max {max:.5}");
        // One 8-bit level is 1/255/0.27 ≈ 0.0146 after normalisation.
        assert!(mean < 0.01, "{name}: mean abs error {mean}");
        assert!(max < 0.08, "{name}: max abs error {max}");
    }
}
