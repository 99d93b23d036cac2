//! CLIP's byte-level BPE tokenizer with OpenAI's vocabulary (49,408 ids; `<start_of_text>` 49406,
//! `<end_of_text>` 49407) and the text cleaning of OpenAI's `simple_tokenizer.py`:
//! ftfy.fix_text, HTML unescape twice, strip, collapse whitespace, lower-case.
//!
//! BPE itself is the `instant-clip-tokenizer` crate (vocabulary shipped inside it); the cleaning
//! is [`crate::text_clean`]. ftfy is
//! mirrored for the fixes that apply to well-formed text (HTML entities, curly quotes, Latin
//! ligatures, full-width characters, C1 controls, line breaks, control characters, terminal
//! escapes, NFC); ftfy's mojibake repair (`fix_encoding`) is not, so text that is already
//! mis-decoded UTF-8 may tokenize differently from OpenAI's.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::text_clean::clean_text;

pub const VOCAB_SIZE: usize = 49408;
pub const START_OF_TEXT: u32 = 49406;
pub const END_OF_TEXT: u32 = 49407;

pub struct Tokenizer {
    bpe: instant_clip_tokenizer::Tokenizer,
    words: regex::Regex,
}

/// Words remembered at most per thread; past this a thread's cache stops growing.
const CACHE_WORDS: usize = 1 << 16;

thread_local! {
    /// BPE ids of words this thread has seen (OpenAI's tokenizer keeps the same cache). One
    /// per thread, shared by every [`Tokenizer`] (they all hold the one bundled vocabulary):
    /// no lock, whose contended atomic operations would cost more than the lookup.
    static WORD_IDS: RefCell<WordIds> = RefCell::new(WordIds::default());
}

/// Word → BPE ids, hashed by foldhash (faster than std's SipHash on short words).
type WordIds = HashMap<String, Vec<u32>, foldhash::fast::RandomState>;

/// OpenAI's word pattern (`simple_tokenizer.py`), with its own special-token spellings: the
/// crate's `<start_of_text>` in user text must stay plain text, as it does for OpenAI.
const WORD_PATTERN: &str = r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

impl Default for Tokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tokenizer {
    /// Build from the vocabulary bundled with `instant-clip-tokenizer` (takes ~100 ms: share it).
    pub fn new() -> Self {
        Self {
            bpe: instant_clip_tokenizer::Tokenizer::new(),
            words: regex::Regex::new(WORD_PATTERN).expect("valid word pattern"),
        }
    }

    /// BPE ids of one text after cleaning, without start/end markers.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        // Printable ASCII without `&`: cleaning only lower-cases it and collapses its spaces,
        // and spaces separate words whether collapsed or not, so lower-casing is enough.
        let cleaned = if plain_ascii(text) {
            text.to_ascii_lowercase()
        } else {
            clean_text(text)
        };
        let mut ids = Vec::with_capacity(cleaned.len() / 2 + 1);
        let mut tokens = Vec::new();
        WORD_IDS.with(|cell| {
            let mut cache = cell.borrow_mut();
            self.each_word(&cleaned, |word| match word {
                "<|startoftext|>" => ids.push(START_OF_TEXT),
                "<|endoftext|>" => ids.push(END_OF_TEXT),
                _ => {
                    if let Some(hit) = cache.get(word) {
                        ids.extend_from_slice(hit);
                        return;
                    }
                    // One OpenAI word is one word of the crate's identical pattern too.
                    tokens.clear();
                    self.bpe.encode(word, &mut tokens);
                    let start = ids.len();
                    ids.extend(tokens.iter().map(|t| u32::from(t.to_u16())));
                    if cache.len() < CACHE_WORDS {
                        cache.insert(word.to_string(), ids[start..].to_vec());
                    }
                }
            });
        });
        ids
    }

    /// Calls `f` on each word of OpenAI's pattern in `text`, in order: by [`ascii_word`] when
    /// the text is ASCII, by the regex otherwise.
    fn each_word<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        if text.is_ascii() {
            let mut at = 0;
            while let Some((start, end)) = ascii_word(text.as_bytes(), at) {
                f(&text[start..end]);
                at = end;
            }
        } else {
            self.words.find_iter(text).for_each(|m| f(m.as_str()));
        }
    }

    /// `<start_of_text> ids <end_of_text>`, padded with 0 to `context_length`; a text too long
    /// is truncated and its last id forced to `<end_of_text>` (as OpenAI's `clip.tokenize`
    /// with `truncate=True`, and open_clip's `tokenize`).
    pub fn tokenize_one(&self, text: &str, context_length: usize) -> Vec<u32> {
        let mut ids = Vec::with_capacity(context_length);
        ids.push(START_OF_TEXT);
        ids.extend(self.encode(text));
        ids.push(END_OF_TEXT);
        if ids.len() > context_length {
            ids.truncate(context_length);
            if let Some(last) = ids.last_mut() {
                *last = END_OF_TEXT;
            }
        }
        ids.resize(context_length, 0);
        ids
    }

    /// A batch: `texts.len()` rows of `context_length` ids, in parallel.
    pub fn tokenize<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        context_length: usize,
    ) -> Vec<Vec<u32>> {
        use rayon::prelude::*;
        texts
            .par_iter()
            .with_min_len(64)
            .map(|t| self.tokenize_one(t.as_ref(), context_length))
            .collect()
    }

    /// A batch as a `[N, context_length]` u32 tensor.
    pub fn tokenize_tensor<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        context_length: usize,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let flat: Vec<u32> = self
            .tokenize(texts, context_length)
            .into_iter()
            .flatten()
            .collect();
        candle_core::Tensor::from_vec(flat, (texts.len(), context_length), device)
    }
}

/// Printable ASCII without `&`: ftfy, HTML unescaping and NFC all leave such text as it is.
pub(crate) fn plain_ascii(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'&')
}

/// The regex's `\s` on ASCII: tab, line feed, vertical tab, form feed, carriage return, space.
fn is_ascii_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// The next word of [`WORD_PATTERN`] in ASCII text at or after byte `from`, as a byte range:
/// the regex's leftmost-first match, without the regex's forward-then-reverse search (the
/// costliest part of tokenizing a caption). Whitespace starts no match; at any other byte the
/// alternatives are tried in the pattern's order: the two special tokens and the contractions
/// (case-insensitively), a run of letters, one digit, a run of anything else.
fn ascii_word(b: &[u8], from: usize) -> Option<(usize, usize)> {
    const FIXED: [&[u8]; 9] = [
        b"<|startoftext|>",
        b"<|endoftext|>",
        b"'s",
        b"'t",
        b"'re",
        b"'ve",
        b"'m",
        b"'ll",
        b"'d",
    ];
    let start = from + b.get(from..)?.iter().position(|&c| !is_ascii_space(c))?;
    let rest = &b[start..];
    if let Some(p) = FIXED
        .iter()
        .find(|p| rest.len() >= p.len() && rest[..p.len()].eq_ignore_ascii_case(p))
    {
        return Some((start, start + p.len()));
    }
    let run =
        |keep: fn(u8) -> bool| start + rest.iter().position(|&c| !keep(c)).unwrap_or(rest.len());
    let first = rest[0];
    Some(if first.is_ascii_alphabetic() {
        (start, run(|c| c.is_ascii_alphabetic()))
    } else if first.is_ascii_digit() {
        (start, start + 1)
    } else {
        (
            start,
            run(|c| !is_ascii_space(c) && !c.is_ascii_alphanumeric()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_words_are_the_regex_words() {
        // Random ASCII strings over the characters the pattern treats differently, with the
        // special tokens and contractions (any case) among the pieces.
        let pieces = [
            "a",
            "Zq",
            "7",
            "0",
            " ",
            "  ",
            "\t",
            "\n",
            "\x0b",
            "\x0c",
            "\r",
            "'",
            "''",
            "'s",
            "'S",
            "'t",
            "'re",
            "'VE",
            "'m",
            "'ll",
            "'d",
            "'x",
            "<",
            "|",
            ">",
            "<|startoftext|>",
            "<|EndOfText|>",
            "<|endoftext",
            "!",
            ".,",
            "\x01",
            "\x7f",
            "-",
            "_",
            "cat",
            "s",
        ];
        let regex = regex::Regex::new(WORD_PATTERN).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            let mut text = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for k in 0..(state % 12) {
                let r = state.rotate_left(7 * k as u32) as usize;
                text.push_str(pieces[(r >> 3) % pieces.len()]);
            }
            let want: Vec<&str> = regex.find_iter(&text).map(|m| m.as_str()).collect();
            let mut got = Vec::new();
            let mut at = 0;
            while let Some((s, e)) = ascii_word(text.as_bytes(), at) {
                got.push(&text[s..e]);
                at = e;
            }
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn known_ids_from_openai_readme() {
        let tok = Tokenizer::new();
        // open_clip: tokenize(["a diagram"]) starts [49406, 320, 22697, 49407, 0, …]
        assert_eq!(
            &tok.tokenize_one("a diagram", 8),
            &[49406, 320, 22697, 49407, 0, 0, 0, 0]
        );
    }

    #[test]
    fn truncation_keeps_end_of_text_last() {
        let tok = Tokenizer::new();
        let ids = tok.tokenize_one(&"word ".repeat(100), 10);
        assert_eq!(ids.len(), 10);
        assert_eq!(ids[0], START_OF_TEXT);
        assert_eq!(ids[9], END_OF_TEXT);
        assert!(ids[1..9].iter().all(|&i| i != 0 && i != END_OF_TEXT));
    }

    #[test]
    fn cleaning_collapses_space_and_unescapes() {
        assert_eq!(clean_text("  A&amp;B \t\n  “Quote”  "), "a&b \"quote\"");
        assert_eq!(clean_text("&amp;lt;"), "<");
    }
}
