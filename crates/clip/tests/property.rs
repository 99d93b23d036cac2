//! Property tests: random and mutated inputs to the tokenizer, the config loader and the
//! safetensors loader end in a value or an error, never a panic.

use std::path::PathBuf;

use candle_core::Device;
use clip::{Clip, ClipConfig, Tokenizer};
use proptest::prelude::*;
use proptest::sample::Index;

/// OpenAI's vocabulary size and its start / end-of-text ids.
const VOCAB: u32 = 49_408;
const SOT: u32 = 49_406;
const EOT: u32 = 49_407;

/// 200 cases from a fixed seed, so CI sees the same inputs every run; `PROPTEST_CASES` and
/// `PROPTEST_RNG_SEED` explore further.
fn config() -> ProptestConfig {
    let env = |k: &str| std::env::var_os(k).is_some();
    let mut c = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if !env("PROPTEST_CASES") {
        c.cases = 200;
    }
    if !env("PROPTEST_RNG_SEED") {
        c.rng_seed = proptest::test_runner::RngSeed::Fixed(0xc11f);
    }
    c
}

/// Up to 8 byte edits, then maybe a cut: what a damaged or half-copied file looks like.
fn mutations() -> impl Strategy<Value = (Vec<(Index, u8)>, Option<Index>)> {
    (
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..8),
        any::<Option<Index>>(),
    )
}

fn mutate(mut bytes: Vec<u8>, (edits, cut): &(Vec<(Index, u8)>, Option<Index>)) -> Vec<u8> {
    for (at, b) in edits {
        let i = at.index(bytes.len());
        bytes[i] = *b;
    }
    if let Some(c) = cut {
        bytes.truncate(c.index(bytes.len()));
    }
    bytes
}

fn micro() -> ClipConfig {
    ClipConfig::from_json_str(
        r#"{"embed_dim": 16,
            "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8},
            "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}"#,
        "micro",
    )
    .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clipforge-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_tokenizes_to_the_context(text in any::<String>(), ctx in 3usize..80) {
        let ids = Tokenizer::new().tokenize_one(&text, ctx);
        prop_assert_eq!(ids.len(), ctx);
        prop_assert_eq!(ids[0], SOT);
        prop_assert!(ids.contains(&EOT), "no end-of-text in {:?}", ids);
        prop_assert!(ids.iter().all(|&i| i < VOCAB));
    }

    #[test]
    fn mutated_configs_parse_or_name_the_problem(m in mutations()) {
        let text = include_bytes!("../../../configs/models/tiny.json").to_vec();
        let bytes = mutate(text, &m);
        if let Ok(text) = String::from_utf8(bytes) {
            if let Err(e) = ClipConfig::from_json_str(&text, "mutated.json") {
                prop_assert!(e.to_string().contains("mutated.json"), "{}", e);
            }
        }
    }

    #[test]
    fn random_json_is_not_a_panic(text in "\\PC{0,200}") {
        let _ = ClipConfig::from_json_str(&text, "random.json");
    }

    #[test]
    fn mutated_safetensors_load_or_fail_cleanly(m in mutations()) {
        let (_, varmap) = Clip::with_varmap(&micro(), &Device::Cpu).unwrap();
        let whole = tmp("whole.safetensors");
        if !whole.exists() {
            clip::weights::save(&varmap, &whole).unwrap();
        }
        let path = tmp("mutated-weights.safetensors");
        std::fs::write(&path, mutate(std::fs::read(&whole).unwrap(), &m)).unwrap();
        if let Err(e) = clip::weights::load_into(&varmap, &path) {
            prop_assert!(e.to_string().contains("mutated-"), "{}", e);
        }
    }
}
