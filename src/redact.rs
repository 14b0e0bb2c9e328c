//! Scrubbing secrets out of text before it is written to a transcript or a log.
//!
//! Two nets: the exact secret values the gateway was configured with (API keys, bot token,
//! gateway token; matched with one Aho-Corasick automaton), and the well-known shapes of keys
//! it was *not* told about (a user pasting an OpenAI key into a chat): Anthropic/OpenAI/
//! OpenRouter `sk-...`, GitHub `ghp_...`/`github_pat_...`, Telegram bot tokens
//! `<bot id>:<35 characters>`. Shapes need a long random-looking tail, so ordinary words and
//! prose (`sk-learn`, `task-list`, a time `12:30`) are left alone.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;

use crate::secret::{Secret, REDACTED};

/// Configured values shorter than this are not matched exactly: replacing every occurrence of
/// a 4-letter "secret" would shred ordinary text, and such a value is no secret anyway (the
/// security audit is the place to complain about it).
pub const MIN_EXACT_LEN: usize = 8;

/// Well-known key shapes; each alternative requires a long tail of key characters.
const SHAPES: &str = concat!(
    r"\bsk-[A-Za-z0-9_-]{20,}", // Anthropic sk-ant-, OpenAI sk-/sk-proj-, OpenRouter sk-or-
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}", // GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{22,}", // GitHub fine-grained tokens
    r"|\b[0-9]{8,10}:[A-Za-z0-9_-]{35}(?:\b|$)", // Telegram bot token
);

/// Replaces secrets in text with `[redacted]`.
#[derive(Debug, Clone)]
pub struct Redactor {
    exact: Option<AhoCorasick>,
    shapes: Regex,
}

impl Redactor {
    /// A redactor for the configured secrets plus the well-known key shapes.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let values: Vec<&str> = secrets
            .into_iter()
            .map(Secret::expose)
            .filter(|v| v.len() >= MIN_EXACT_LEN)
            .collect();
        let exact = (!values.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&values)
                .expect("literal patterns of bounded count always build")
        });
        let shapes = Regex::new(SHAPES).expect("the built-in key shapes are a valid regex");
        Self { exact, shapes }
    }

    /// `text` with every secret replaced; borrowed when there was nothing to replace.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let text: Cow<'t, str> = match &self.exact {
            Some(ac) if ac.is_match(text) => {
                let mut out = String::with_capacity(text.len());
                ac.replace_all_with(text, &mut out, |_, _, out| {
                    out.push_str(REDACTED);
                    true
                });
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(text),
        };
        if !self.shapes.is_match(&text) {
            return text;
        }
        Cow::Owned(self.shapes.replace_all(&text, REDACTED).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(values: &[&str]) -> Redactor {
        let secrets: Vec<Secret> = values.iter().map(|v| Secret::new(*v)).collect();
        Redactor::new(&secrets)
    }

    #[test]
    fn configured_values_are_replaced_everywhere() {
        let r = redactor(&["hunter2-but-longer", "other-secret-value"]);
        assert_eq!(
            r.redact("a hunter2-but-longer b other-secret-value c hunter2-but-longer"),
            "a [redacted] b [redacted] c [redacted]"
        );
    }

    #[test]
    fn key_shapes_are_replaced_without_configuration() {
        let r = redactor(&[]);
        let cases = [
            (
                "key sk-ant-api03-AbCdEf0123456789_xyz-QRS end",
                "key [redacted] end",
            ),
            ("sk-proj-abcdefghijklmnopqrstuvwxyz012345", "[redacted]"),
            (
                "export OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx",
                "export OPENAI_API_KEY=[redacted]",
            ),
            (
                "tok 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq.",
                "tok [redacted].",
            ),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789 x", "[redacted] x"),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact(input), want, "input: {input}");
        }
    }

    #[test]
    fn ordinary_text_is_untouched_and_borrowed() {
        let r = redactor(&["a-configured-secret"]);
        for text in [
            "I use sk-learn and scikit-learn for task-list ranking.",
            "Meeting at 12:30, call 555-1234, ticket 20240101:done",
            "the ghp_ prefix is GitHub's; sk- is OpenAI's",
            "a-configured-secre (one letter short)",
            "",
        ] {
            assert!(
                matches!(r.redact(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    #[test]
    fn short_configured_values_are_not_matched() {
        let r = redactor(&["abc"]);
        assert_eq!(r.redact("abc abcdef"), "abc abcdef");
    }

    #[test]
    fn longest_configured_value_wins_when_one_contains_another() {
        let r = redactor(&["secret-value-1", "secret-value-1-extended"]);
        assert_eq!(r.redact("x secret-value-1-extended y"), "x [redacted] y");
    }
}
