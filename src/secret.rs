//! A secret value (provider API key, Telegram bot token, gateway token) that cannot be
//! printed by accident: the one secret type of the gateway.
//!
//! `Debug` and `Display` both print `[redacted]`, so a `Secret` inside a config struct, an
//! error or a `tracing` field never leaks. The value is reachable only through
//! [`Secret::expose`], which the code that puts it on the wire (an HTTP header, the Bot API
//! URL) and the [`crate::redact::Redactor`] call, and nothing else should.

use std::fmt;

/// What a [`Secret`] prints as, everywhere.
pub const REDACTED: &str = "[redacted]";

/// A string that must never reach a log, an error message or a transcript.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the code that sends it and the redactor that scrubs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("sk-ant-api03-very-secret");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.expose(), "sk-ant-api03-very-secret");
    }
}
