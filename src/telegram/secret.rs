//! The bot token, kept out of every `Debug` and log line.
//!
//! A minimal stand-in until the gateway has one shared secret type: the value is reachable
//! only through [`BotToken::expose`], and `Debug` prints `[redacted]`.

/// A Telegram bot token (`123456:ABC-...`).
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken(String);

impl BotToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for building request URLs only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BotToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::BotToken;

    #[test]
    fn debug_never_shows_the_token() {
        let token = BotToken::new("123:secret-part");
        assert_eq!(format!("{token:?}"), "[redacted]");
    }
}
