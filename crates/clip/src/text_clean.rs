//! OpenAI's text cleaning before BPE: `basic_clean` (ftfy's fixes: HTML entities, terminal
//! escapes, C1 controls, ligatures, full-width forms, curly quotes, line breaks) then
//! `whitespace_clean`, and lower-casing.

use unicode_normalization::UnicodeNormalization;

use crate::tokenizer::plain_ascii;

/// OpenAI's `whitespace_clean(basic_clean(text)).lower()`.
pub fn clean_text(text: &str) -> String {
    if plain_ascii(text) {
        return collapse_whitespace(text).to_ascii_lowercase();
    }
    let fixed = fix_text(text);
    let once = html_escape::decode_html_entities(&fixed);
    let twice = html_escape::decode_html_entities(&once);
    let collapsed = collapse_whitespace(&twice);
    collapsed.to_lowercase()
}

/// Python's `str.isspace()`: Unicode White_Space plus the ASCII separators 0x1C–0x1F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `re.sub(r"\s+", " ", text).strip()`.
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if is_py_space(c) {
            pending_space = true;
        } else {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
    }
    out
}

/// ftfy 6's `fix_text` with default settings, for well-formed text (see the module note):
/// line by line, each line fixed repeatedly until it stops changing. As in ftfy, once a line
/// contains `<` HTML entities are no longer unescaped in it or any later line.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        if segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

/// ftfy `fix_and_explain`'s loop, in its order of fixes.
fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    loop {
        let mut t = if unescape {
            unescape_html_strict(&text)
        } else {
            text.clone()
        };
        t = fix_c1_controls(&t);
        t = t.chars().flat_map(fix_latin_ligature).collect();
        t = fix_character_width(&t);
        t = t.chars().map(uncurl_quote).collect();
        t = fix_line_breaks(&t);
        t = remove_terminal_escapes(&t);
        t = t.chars().filter(|c| !is_removed_control(*c)).collect();
        let next: String = t.nfc().collect();
        if next == text {
            return text;
        }
        text = next;
    }
}

/// ftfy's `unescape_html`: only entities of the form `&name;` / `&#123;` (1–24 characters).
fn unescape_html_strict(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let body_start = if tail[1..].starts_with('#') { 2 } else { 1 };
        let body_len = tail[body_start..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        let end = body_start + body_len;
        if (1..=24).contains(&body_len) && tail[end..].starts_with(';') {
            let entity = &tail[..=end];
            let decoded = html_escape::decode_html_entities(entity);
            if decoded != entity {
                out.push_str(&decoded);
            } else if body_start == 1 && entity == entity.to_uppercase() {
                // ftfy also decodes all-caps names of lower-case entities: `&EACUTE;` → É.
                let lower = entity.to_lowercase();
                let decoded = html_escape::decode_html_entities(&lower);
                if decoded != lower {
                    out.push_str(&decoded.to_uppercase());
                } else {
                    out.push_str(entity);
                }
            } else {
                out.push_str(entity);
            }
            rest = &tail[end + 1..];
        } else {
            out.push('&');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Strip ANSI terminal escapes `ESC [ … letter`.
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            let mut lookahead = chars.clone();
            lookahead.next();
            let mut consumed = 1;
            let mut ok = false;
            for d in lookahead {
                consumed += 1;
                if d.is_ascii_digit() || d == ';' {
                    continue;
                }
                ok = d.is_ascii_alphabetic();
                break;
            }
            if ok {
                for _ in 0..consumed {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// C1 controls U+0080–U+009F are decoded as Windows-1252 bytes (ftfy `fix_c1_controls`).
fn fix_c1_controls(text: &str) -> String {
    const CP1252: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    text.chars()
        .map(|c| {
            if ('\u{80}'..='\u{9f}').contains(&c) {
                CP1252[c as usize - 0x80]
            } else {
                c
            }
        })
        .collect()
}

/// ftfy `fix_latin_ligatures`.
fn fix_latin_ligature(c: char) -> Vec<char> {
    let s = match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return vec![c],
    };
    s.chars().collect()
}

/// ftfy `fix_character_width`: full-width ASCII and the ideographic space to their plain
/// forms, half-width katakana to full-width (NFKC on exactly those characters).
fn fix_character_width(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let code = c as u32;
            let wide = code == 0x3000 || (0xFF01..0xFFF0).contains(&code);
            if wide {
                std::iter::once(c).nfkc().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// ftfy `uncurl_quotes`.
fn uncurl_quote(c: char) -> char {
    match c {
        '\u{2bc}' | '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' => '\'',
        '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{201f}' => '"',
        _ => c,
    }
}

/// ftfy `fix_line_breaks`: CRLF, CR, U+2028, U+2029, U+0085 → LF.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// ftfy `remove_control_chars`: C0 controls other than tab/LF/FF/CR, DEL, deprecated format
/// characters, BOM, and interlinear annotation characters.
fn is_removed_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}
