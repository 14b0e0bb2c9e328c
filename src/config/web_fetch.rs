//! `tools.web.fetch`: the `web_fetch` tool's switch and bounds, with OpenClaw's names and
//! defaults.
//!
//! Out-of-range numbers are clamped as OpenClaw clamps them, so a file OpenClaw accepts
//! starts here too. `provider`, `readability`, `cacheTtlMinutes`, `userAgent`, `headers`,
//! `useTrustedEnvProxy` and `ssrfPolicy` are not implemented (reported as such at start):
//! in particular nothing can widen the tool's address check, whose only exceptions are
//! given in code by tests.

use std::time::Duration;

use super::reader::Section;

/// The bounds of `web_fetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebFetchConfig {
    /// `enabled` (default true): whether the tool exists; the tool policy may still hide it.
    pub enabled: bool,
    /// `maxChars`: characters returned when the call does not ask for a number.
    pub max_chars: usize,
    /// `maxCharsCap`: the most characters a call may ask for.
    pub max_chars_cap: usize,
    /// `maxResponseBytes`: bytes read off the wire; the rest of a larger body is dropped.
    pub max_response_bytes: usize,
    /// `timeoutSeconds`: the whole fetch, redirects included (the turn's deadline still
    /// applies).
    pub timeout: Duration,
    /// `maxRedirects`: redirects followed, each one checked like the first URL.
    pub max_redirects: u32,
}

impl Default for WebFetchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_chars: 20_000,
            max_chars_cap: 20_000,
            max_response_bytes: 750_000,
            timeout: Duration::from_secs(30),
            max_redirects: 3,
        }
    }
}

/// OpenClaw's clamp of `maxResponseBytes`.
const RESPONSE_BYTES: (u64, u64) = (32_000, 10_000_000);
/// Least `maxChars` / `maxCharsCap` (OpenClaw's minimum).
const MIN_CHARS: u64 = 100;

/// Reads `tools.web` of the `tools` section (only `fetch` is implemented).
pub fn read_web_fetch(tools: &mut Section) -> WebFetchConfig {
    let mut config = WebFetchConfig::default();
    let Some(mut web) = tools.section("web") else {
        return config;
    };
    if let Some(mut fetch) = web.section("fetch") {
        let mut number = |key, min, max| fetch.integer(key, min, max);
        let cap = number("maxCharsCap", MIN_CHARS, u64::from(u32::MAX));
        let chars = number("maxChars", MIN_CHARS, u64::from(u32::MAX));
        let bytes = number("maxResponseBytes", 1, u64::from(u32::MAX));
        let timeout = number("timeoutSeconds", 1, 3_600);
        let redirects = number("maxRedirects", 0, 20);
        if let Some(cap) = cap {
            config.max_chars_cap = cap as usize;
        }
        config.max_chars = chars
            .map_or(config.max_chars, |c| c as usize)
            .min(config.max_chars_cap);
        if let Some(bytes) = bytes {
            config.max_response_bytes = bytes.clamp(RESPONSE_BYTES.0, RESPONSE_BYTES.1) as usize;
        }
        if let Some(secs) = timeout {
            config.timeout = Duration::from_secs(secs);
        }
        if let Some(redirects) = redirects {
            config.max_redirects = redirects as u32;
        }
        config.enabled = fetch.bool("enabled").unwrap_or(true);
        fetch.finish();
    }
    web.finish();
    config
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Config, EnvSource};

    use super::WebFetchConfig;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, &EnvSource::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_openclaws() {
        assert_eq!(parse("{}").unwrap().web_fetch, WebFetchConfig::default());
        let d = WebFetchConfig::default();
        assert!(d.enabled && d.max_chars == 20_000 && d.max_response_bytes == 750_000);
        assert_eq!((d.timeout, d.max_redirects), (Duration::from_secs(30), 3));
    }

    #[test]
    fn keys_are_read_and_clamped() {
        let c = parse(
            r#"{ tools: { web: { fetch: { enabled: false, maxChars: 50000, maxCharsCap: 8000,
                 maxResponseBytes: 1000, timeoutSeconds: 5, maxRedirects: 0,
                 ssrfPolicy: { dangerouslyAllowPrivateNetwork: true } } } } }"#,
        )
        .unwrap();
        let f = c.web_fetch;
        assert!(!f.enabled);
        assert_eq!(
            (f.max_chars, f.max_chars_cap),
            (8000, 8000),
            "maxChars <= cap"
        );
        assert_eq!(f.max_response_bytes, 32_000, "OpenClaw's lower clamp");
        assert_eq!((f.timeout, f.max_redirects), (Duration::from_secs(5), 0));
        assert_eq!(
            c.unimplemented,
            ["tools.web.fetch.ssrfPolicy"],
            "the private-network switch is reported, not honoured"
        );
        let e = parse(r#"{ tools: { web: { fetch: { maxRedirects: 99 } } } }"#).unwrap_err();
        assert!(e.contains("tools.web.fetch.maxRedirects"), "{e}");
    }
}
