//! A pretrained text tower's own tokenizer, read from its `tokenizer.json` (WordPiece for BERT)
//! by the `tokenizers` crate: texts → ids and attention mask, padded to the longest text and
//! cut to the context (the closing `[SEP]` kept).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::{PaddingParams, PaddingStrategy, TruncationParams};

use crate::error::{ClipError, Result};

pub struct BertTokenizer {
    inner: tokenizers::Tokenizer,
    /// The same without the file's own padding and truncation, for [`Self::ids_fixed`].
    bare: tokenizers::Tokenizer,
    path: PathBuf,
}

impl BertTokenizer {
    /// Read `tokenizer.json`; an error names the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            ClipError::Tokenizer(format!(
                "{}: not a tokenizer.json the tokenizers crate reads: {e}",
                path.display()
            ))
        })?;
        let mut bare = inner.clone();
        bare.with_padding(None);
        bare.with_truncation(None)
            .map_err(|e| ClipError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self {
            inner,
            bare,
            path: path.to_path_buf(),
        })
    }

    /// `texts.len()` rows of exactly `context` ids, row-major, padded with 0 (`[PAD]`); a text
    /// too long keeps its first `context − 1` ids and its closing `[SEP]`, as the tokenizer's
    /// own truncation does. The attention mask is `id != 0`.
    pub fn ids_fixed<S: AsRef<str>>(&self, texts: &[S], context: usize) -> Result<Vec<u32>> {
        let enc = self
            .bare
            .encode_batch(texts.iter().map(|t| t.as_ref()).collect::<Vec<_>>(), true)
            .map_err(|e| ClipError::Tokenizer(format!("{}: {e}", self.path.display())))?;
        let mut out = Vec::with_capacity(texts.len() * context);
        for e in &enc {
            let ids = e.get_ids();
            if ids.len() > context {
                out.extend_from_slice(&ids[..context - 1]);
                out.push(*ids.last().expect("longer than the context"));
            } else {
                out.extend_from_slice(ids);
                out.resize(out.len() + context - ids.len(), 0);
            }
        }
        Ok(out)
    }

    /// Ids `[B, T]` (u32) and mask `[B, T]` (u32: 1 token, 0 padding), T the longest text's
    /// length, at most `context`.
    pub fn tokenize(
        &self,
        texts: &[String],
        context: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let err =
            |e: tokenizers::Error| ClipError::Tokenizer(format!("{}: {e}", self.path.display()));
        let mut tok = self.inner.clone();
        tok.with_truncation(Some(TruncationParams {
            max_length: context,
            ..Default::default()
        }))
        .map_err(err)?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let enc = tok
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(err)?;
        let t = enc.first().map_or(0, |e| e.get_ids().len());
        let ids: Vec<u32> = enc.iter().flat_map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<u32> = enc
            .iter()
            .flat_map(|e| e.get_attention_mask().to_vec())
            .collect();
        let b = texts.len();
        Ok((
            Tensor::from_vec(ids, (b, t), device)?,
            Tensor::from_vec(mask, (b, t), device)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer.json of five words, written where the test reads it.
    fn tiny_tokenizer(path: &Path) {
        use tokenizers::models::wordlevel::WordLevel;
        use tokenizers::pre_tokenizers::whitespace::Whitespace;
        let vocab = [
            ("[PAD]", 0),
            ("[UNK]", 1),
            ("a", 2),
            ("red", 3),
            ("circle", 4),
        ];
        let vocab = vocab.map(|(w, i)| (w.to_string(), i)).into_iter().collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        let mut tok = tokenizers::Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(Whitespace {}));
        tok.save(path, false).unwrap();
    }

    #[test]
    fn texts_pad_to_the_longest_and_cut_at_the_context() {
        let path = std::env::temp_dir().join(format!("tiny-tokenizer-{}.json", std::process::id()));
        tiny_tokenizer(&path);
        let tok = BertTokenizer::from_file(&path).unwrap();
        let texts = ["a red circle", "red", "a blue circle a red circle"].map(String::from);
        let (ids, mask) = tok.tokenize(&texts[..2], 8, &Device::Cpu).unwrap();
        assert_eq!(
            ids.to_vec2::<u32>().unwrap(),
            vec![vec![2, 3, 4], vec![3, 0, 0]]
        );
        assert_eq!(
            mask.to_vec2::<u32>().unwrap(),
            vec![vec![1, 1, 1], vec![1, 0, 0]]
        );
        let (ids, mask) = tok.tokenize(&texts, 4, &Device::Cpu).unwrap();
        assert_eq!(
            ids.to_vec2::<u32>().unwrap()[2],
            vec![2, 1, 4, 2],
            "cut at 4, unknown word 1"
        );
        assert_eq!(mask.dims(), &[3, 4]);
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn a_file_that_is_not_a_tokenizer_is_named() {
        let path =
            std::env::temp_dir().join(format!("not-a-tokenizer-{}.json", std::process::id()));
        std::fs::write(&path, "{\"model\": 3}").unwrap();
        let err = BertTokenizer::from_file(&path)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("not-a-tokenizer") && err.contains("tokenizer.json"),
            "{err}"
        );
        std::fs::remove_file(path).ok();
    }
}
