//! Tokenizer parity with OpenAI's `clip.tokenize` (ids committed by scripts/make_fixtures.py):
//! every one of the 620 strings must give exactly the same 77 ids.

mod common;

use clip::Tokenizer;

#[test]
fn matches_openai_tokenizer_exactly() {
    let text = std::fs::read_to_string(common::fixture_dir().join("tokenizer.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ctx = fixture["context_length"].as_u64().unwrap() as usize;
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 500);
    let tok = Tokenizer::new();
    let mut mismatches = Vec::new();
    for case in cases {
        let s = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.tokenize_one(s, ctx);
        if got != want {
            let n = want.iter().position(|&x| x == 0).unwrap_or(ctx);
            mismatches.push(format!(
                "{s:?}\n   got  {:?}\n   want {:?}",
                &got[..n.min(20)],
                &want[..n.min(20)]
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} strings differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}
