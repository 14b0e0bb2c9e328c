//! Scrubbing secrets out of text before it is written to a transcript or a log, or sent to a
//! model.
//!
//! Two nets: the exact secret values the gateway was configured with (API keys, bot token,
//! gateway token; matched with one Aho-Corasick automaton, also in their JSON- and
//! `Debug`-escaped spellings), and the well-known shapes of keys it was *not* told about (a
//! user pasting an OpenAI key into a chat): Anthropic/OpenAI/OpenRouter `sk-...`, GitHub
//! `ghp_...`/`github_pat_...`, Telegram bot tokens `<bot id>:<35 characters>`. Shapes need a
//! long random-looking tail, so ordinary words and prose (`sk-learn`, `task-list`, a time
//! `12:30`) are left alone.
//!
//! `clawfort gateway` builds one redactor at start from every secret the config names
//! (`agent::service::configured_secrets`) and applies it everywhere text leaves the process
//! or lands on disk: every log line (`logging`), every transcript line
//! (`sessions::Transcripts`), every model request and answer (`agent`).

use std::borrow::Cow;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;
use serde_json::Value;

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

/// Replaces secrets in text with `[redacted]`. Cheap to clone (the automata are shared).
#[derive(Clone)]
pub struct Redactor {
    exact: Option<AhoCorasick>,
    /// Behind an `Arc` because cloning a `Regex` gives the clone an empty pool of search
    /// caches: a redactor cloned per turn rebuilt its lazy DFA from scratch every turn
    /// (a third of the redaction's CPU time in a profile of `bench agent`).
    shapes: Arc<Regex>,
}

/// Counts the values, never shows them (the automaton's own `Debug` would).
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field(
                "exact_spellings",
                &self.exact.as_ref().map_or(0, |a| a.patterns_len()),
            )
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor for the configured secrets plus the well-known key shapes.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut values: Vec<String> = Vec::new();
        for value in secrets.into_iter().map(Secret::expose) {
            if value.len() < MIN_EXACT_LEN {
                continue;
            }
            // A value with a quote, backslash or control character is spelled differently
            // inside a JSON string or a `{:?}` field of a log line.
            let json = serde_json::to_string(value).expect("a str always serializes");
            let debug = format!("{value:?}");
            for spelling in [value, unquote(&json), unquote(&debug)] {
                if !values.iter().any(|v| v == spelling) {
                    values.push(spelling.to_owned());
                }
            }
        }
        let exact = (!values.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&values)
                .expect("literal patterns of bounded count always build")
        });
        let shapes =
            Arc::new(Regex::new(SHAPES).expect("the built-in key shapes are a valid regex"));
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

    /// Redacts every string inside `value`, object keys included, leaving its structure
    /// intact (redacting serialized JSON text could cut through a quote).
    pub fn redact_json(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(clean) = self.redact(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let dirty: Vec<String> = map
                    .keys()
                    .filter(|k| matches!(self.redact(k), Cow::Owned(_)))
                    .cloned()
                    .collect();
                for key in dirty {
                    if let Some(v) = map.remove(&key) {
                        map.insert(self.redact(&key).into_owned(), v);
                    }
                }
                map.values_mut().for_each(|v| self.redact_json(v));
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

impl Default for Redactor {
    /// The well-known key shapes only (before the configured secrets are known).
    fn default() -> Self {
        Self::new([])
    }
}

/// `"text"` without its quotes.
fn unquote(quoted: &str) -> &str {
    &quoted[1..quoted.len() - 1]
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
    fn debug_never_shows_a_value() {
        let r = redactor(&["a-configured-secret"]);
        let debug = format!("{r:?}");
        assert!(!debug.contains("configured"), "{debug}");
        assert!(debug.contains("exact_spellings: 1"), "{debug}");
    }

    #[test]
    fn short_configured_values_are_not_matched() {
        let r = redactor(&["abc"]);
        assert_eq!(r.redact("abc abcdef"), "abc abcdef");
    }

    #[test]
    fn escaped_spellings_of_a_configured_value_are_replaced() {
        let r = redactor(&["pa\"ss\\word-12345"]);
        let json = serde_json::json!({ "text": "pa\"ss\\word-12345" }).to_string();
        assert_eq!(r.redact(&json), r#"{"text":"[redacted]"}"#);
        let debug = format!("{:?}", "x pa\"ss\\word-12345");
        assert_eq!(r.redact(&debug), "\"x [redacted]\"");
    }

    #[test]
    fn json_values_are_redacted_string_by_string() {
        let r = redactor(&["a-configured-secret"]);
        let mut v = serde_json::json!({
            "text": "key a-configured-secret and sk-abcdefghijklmnopqrstuvwx",
            "n": 3,
            "list": ["a-configured-secret", true],
            "a-configured-secret": "as a key",
        });
        r.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "text": "key [redacted] and [redacted]",
                "n": 3,
                "list": ["[redacted]", true],
                "[redacted]": "as a key",
            })
        );
    }

    #[test]
    fn longest_configured_value_wins_when_one_contains_another() {
        let r = redactor(&["secret-value-1", "secret-value-1-extended"]);
        assert_eq!(r.redact("x secret-value-1-extended y"), "x [redacted] y");
    }
}
