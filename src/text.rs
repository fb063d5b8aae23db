//! Text hygiene for what other people will read: `clean_text` strips what can hide or
//! reorder text (danmaku, a hook receiver's reason). A leaf: it imports nothing of the
//! crate, so every front can use it.
//!
//! Which characters are invisible comes from the Unicode properties, not a hand list:
//! `Default_Ignorable_Code_Point` (zero-width and format characters, U+00AD soft hyphen,
//! U+2060 word joiner, U+180E, Hangul fillers, variation selectors, tag characters
//! U+E0000–E007F, …) and `Bidi_Control` (U+061C, U+200E/F, U+202A–E, U+2066–9), from
//! `icu_properties` with its compiled data (maintained by the Unicode ICU4X project, and
//! already built for `url`/`idna`, so it adds no new crate). Controls (`Cc`) and the
//! line/paragraph separators U+2028/2029 (not ignorable, but they break an overlay's
//! line) go too.
//!
//! Emoji: U+200D (zero-width joiner) and U+FE0E/FE0F (presentation selectors) are
//! ignorable but build emoji sequences (👨‍👩‍👧, ❤️, 1️⃣). A presentation selector is
//! kept right after an emoji (or a keycap base `0-9#*`), a joiner only between an emoji
//! (or its modifier or selector) and a pictograph; anywhere else they go. Tag characters
//! always go, even in the three subdivision flags (🏴 + tags): they can carry a hidden
//! ASCII message, and the flag still shows as 🏴.

use icu_properties::props::{
    BidiControl, DefaultIgnorableCodePoint, Emoji, EmojiModifier, ExtendedPictographic,
};
use icu_properties::{CodePointSetData, CodePointSetDataBorrowed};

const IGNORABLE: CodePointSetDataBorrowed<'static> =
    CodePointSetData::new::<DefaultIgnorableCodePoint>();
const BIDI_CONTROL: CodePointSetDataBorrowed<'static> = CodePointSetData::new::<BidiControl>();
const PICTOGRAPHIC: CodePointSetDataBorrowed<'static> =
    CodePointSetData::new::<ExtendedPictographic>();
const EMOJI: CodePointSetDataBorrowed<'static> = CodePointSetData::new::<Emoji>();
const EMOJI_MODIFIER: CodePointSetDataBorrowed<'static> = CodePointSetData::new::<EmojiModifier>();

const ZWJ: char = '\u{200D}';

/// Removes control characters, line/paragraph separators and invisible (default
/// ignorable, bidi control) characters, which can reorder or hide text in other viewers'
/// overlays or slip a word past the filter, keeping the joiners and selectors of emoji
/// sequences (see the module doc); then trims whitespace.
pub fn clean_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    // The last character kept: whether a joiner or selector belongs to an emoji.
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        let keep = if c.is_ascii() {
            !c.is_ascii_control()
        } else if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            false
        } else if IGNORABLE.contains(c) || BIDI_CONTROL.contains(c) {
            joins_emoji(c, prev, chars.peek().copied())
        } else {
            true
        };
        if keep {
            out.push(c);
            prev = Some(c);
        }
    }
    let trimmed = out.trim();
    if trimmed.len() == out.len() {
        out
    } else {
        trimmed.to_string()
    }
}

fn is_emoji(c: char) -> bool {
    !c.is_ascii() && (PICTOGRAPHIC.contains(c) || EMOJI.contains(c))
}

/// Whether an ignorable `c` between `prev` (the last character kept) and `next` is part
/// of an emoji sequence.
fn joins_emoji(c: char, prev: Option<char>, next: Option<char>) -> bool {
    let Some(p) = prev else { return false };
    match c {
        '\u{FE0E}' | '\u{FE0F}' => is_emoji(p) || matches!(p, '0'..='9' | '#' | '*'),
        ZWJ => {
            (is_emoji(p) || EMOJI_MODIFIER.contains(p) || p == '\u{FE0F}')
                && next.is_some_and(is_emoji)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_invisible_characters_are_removed() {
        assert_eq!(clean_text("  a\u{0}b\u{7}c\n\u{202E}d\u{200B}e  "), "abcde");
        assert_eq!(clean_text("弹幕 ok"), "弹幕 ok");
        assert_eq!(clean_text("\u{85}a\u{9F}"), "a");
    }

    /// Each character the outside review found surviving the old hand-written list.

    #[test]
    fn invisible_characters_that_survived_the_old_list_are_removed() {
        for (c, what) in [
            ('\u{061C}', "arabic letter mark"),
            ('\u{2060}', "word joiner"),
            ('\u{180E}', "mongolian vowel separator"),
            ('\u{2028}', "line separator"),
            ('\u{2029}', "paragraph separator"),
            ('\u{00AD}', "soft hyphen"),
            ('\u{E0000}', "tag (reserved)"),
            ('\u{E0001}', "language tag"),
            ('\u{E0041}', "tag latin capital a"),
            ('\u{E007F}', "cancel tag"),
            ('\u{2061}', "function application"),
            ('\u{3164}', "hangul filler"),
            ('\u{FFA0}', "halfwidth hangul filler"),
            ('\u{034F}', "combining grapheme joiner"),
            ('\u{FE00}', "variation selector 1"),
        ] {
            assert_eq!(
                clean_text(&format!("a{c}b")),
                "ab",
                "{what} U+{:04X}",
                c as u32
            );
        }
        // A hidden ASCII message in tag characters is gone, not just shortened.
        let hidden: String = "ignore"
            .chars()
            .map(|c| char::from_u32(0xE0000 + c as u32).unwrap())
            .collect();
        assert_eq!(clean_text(&format!("hi{hidden}")), "hi");
        // Soft hyphens cannot split a filtered word any more.
        assert_eq!(clean_text("b\u{AD}a\u{2060}d"), "bad");
    }

    #[test]
    fn emoji_sequences_keep_their_joiners_and_selectors() {
        for e in [
            "👨\u{200D}👩\u{200D}👧", // family
            "❤\u{FE0F}",              // red heart, emoji presentation
            "❤\u{FE0F}\u{200D}🔥",    // heart on fire
            "🏳\u{FE0F}\u{200D}🌈",    // rainbow flag
            "👩🏽\u{200D}💻",           // woman technologist, skin tone
            "1\u{FE0F}\u{20E3}",      // keycap one
            "☺\u{FE0E}",              // text presentation
        ] {
            assert_eq!(clean_text(e), e, "{e:?}");
            assert_eq!(clean_text(&format!("hi {e}!")), format!("hi {e}!"));
        }
        // Outside an emoji sequence they are invisible and go.
        assert_eq!(clean_text("a\u{200D}b"), "ab");
        assert_eq!(clean_text("a\u{FE0F}b"), "ab");
        assert_eq!(clean_text("👨\u{200D}b"), "👨b");
        assert_eq!(clean_text("\u{200D}👨"), "👨");
        // Runs of them collapse to what the sequence needs.
        assert_eq!(clean_text("👨\u{200D}\u{200D}👩"), "👨\u{200D}👩");
        assert_eq!(clean_text("❤\u{FE0F}\u{FE0F}\u{FE0F}"), "❤\u{FE0F}");
        // A subdivision flag loses its tags (see the module doc).
        let england = "🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}";
        assert_eq!(clean_text(england), "🏴");
    }
}
