//! What `clawfort setup` is asked to do, checked for shape before anything is called or
//! written: the provider (api, id, base URL, model, key), the bot (token, Bot API root), the
//! owner and the budget.
//!
//! Values come from the flags, then from the existing `openclaw.json` (so running setup
//! again to change one thing keeps the rest), then from the provider's preset. Every error
//! names the flag to fix; none ever quotes a secret.

use std::fmt;

use serde_json::Value;

use crate::provider::Api;
use crate::secret::Secret;

/// Telegram's public Bot API (the default `channels.telegram.apiRoot`).
pub use crate::telegram::DEFAULT_API_ROOT;

/// A bad flag or value: exit code 2, nothing called, nothing written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

pub fn bad(message: impl Into<String>) -> BadInput {
    BadInput(message.into())
}

/// A provider the interactive setup offers, with the defaults it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// What a person calls it.
    pub name: &'static str,
    pub api: Api,
    pub provider_id: &'static str,
    pub base_url: &'static str,
    /// A model id to offer as the default answer (the person may type another).
    pub model: &'static str,
}

/// The presets, in the order the interactive setup lists them. The first of each api is
/// that api's default for `--provider-id` and `--base-url`.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "Anthropic",
        api: Api::AnthropicMessages,
        provider_id: "anthropic",
        base_url: "https://api.anthropic.com",
        model: "claude-sonnet-4-5",
    },
    Preset {
        name: "OpenAI",
        api: Api::OpenAiCompletions,
        provider_id: "openai",
        base_url: "https://api.openai.com/v1",
        model: "gpt-4.1-mini",
    },
    Preset {
        name: "OpenRouter",
        api: Api::OpenAiCompletions,
        provider_id: "openrouter",
        base_url: "https://openrouter.ai/api/v1",
        model: "anthropic/claude-sonnet-4.5",
    },
    Preset {
        name: "Ollama on this machine",
        api: Api::OpenAiCompletions,
        provider_id: "ollama",
        base_url: "http://127.0.0.1:11434/v1",
        model: "llama3.2",
    },
];

/// The default preset of `api` (`--provider-id` and `--base-url` when not given).
pub fn default_preset(api: Api) -> &'static Preset {
    PRESETS
        .iter()
        .find(|p| p.api == api)
        .expect("every api has a preset")
}

/// The preset whose base URL is `base_url`, if any (its id is then the default id).
pub fn preset_for_url(api: Api, base_url: &str) -> Option<&'static Preset> {
    PRESETS
        .iter()
        .find(|p| p.api == api && p.base_url == base_url)
}

/// Everything setup will check and write.
pub struct Plan {
    pub api: Api,
    /// `models.providers.<id>`.
    pub provider_id: String,
    /// Without a trailing `/`.
    pub base_url: String,
    pub model: String,
    /// `None` only for a local server on plain `http://` that needs none.
    pub api_key: Option<Secret>,
    pub bot_token: Secret,
    /// Without a trailing `/`; [`DEFAULT_API_ROOT`] when not set.
    pub api_root: String,
    /// Telegram user ids of the owner.
    pub owners: Vec<String>,
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("api", &self.api)
            .field("provider_id", &self.provider_id)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_root", &self.api_root)
            .field("owners", &self.owners)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// The `.env` variable holding the API key: `ANTHROPIC_API_KEY`, `OPENAI_API_KEY`,
    /// `OPENROUTER_API_KEY`, `MY_PROXY_API_KEY` for the id `my-proxy`.
    pub fn key_var(&self) -> String {
        key_var(&self.provider_id)
    }

    /// `"<provider>/<model>"` for `agents.defaults.model.primary`.
    pub fn model_ref(&self) -> String {
        format!("{}/{}", self.provider_id, self.model)
    }

    /// How the person knows the provider: the preset's name, else the id and host.
    pub fn provider_label(&self) -> String {
        match preset_for_url(self.api, &self.base_url) {
            Some(p) => p.name.trim_end_matches(" on this machine").to_owned(),
            None => format!(
                "provider `{}` ({})",
                self.provider_id,
                host_port(&self.base_url).unwrap_or_default()
            ),
        }
    }
}

/// See [`Plan::key_var`].
pub fn key_var(provider_id: &str) -> String {
    let stem: String = provider_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{stem}_API_KEY")
}

/// Checks an `http(s)://host[:port][/path]` URL (no query, fragment or credentials) and
/// returns it without a trailing `/`. `what` names the flag in the error.
pub fn url(what: &str, value: &str) -> Result<String, BadInput> {
    let value = value.trim();
    // Trailing slashes go, but not the ones of the scheme (`https://` alone has no host).
    let value = match value.find("://") {
        Some(end) => &value[..end + 3 + value[end + 3..].trim_end_matches('/').len()],
        None => value,
    };
    let problem = |why: &str| {
        bad(format!(
            "{what} {value:?}: {why} (e.g. https://api.example.com/v1, or http://127.0.0.1:8080 \
             for a server on this machine)"
        ))
    };
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| problem("must start with https:// (or http:// for a local server)"))?;
    if rest.split('/').next().unwrap_or_default().contains('@') {
        return Err(problem(
            "must not hold a user name or password; keys go in the key file",
        ));
    }
    if value.contains(['?', '#']) {
        return Err(problem("must not have a query (?) or fragment (#)"));
    }
    let uri: hyper::Uri = value.parse().map_err(|_| problem("is not a valid URL"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(problem("has no host"));
    }
    Ok(value.to_owned())
}

/// `host:port` of a checked URL (the port defaulted from the scheme), for messages.
pub fn host_port(url: &str) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Some(format!("{}:{port}", uri.host()?))
}

/// A provider id usable as a config key and in an environment variable name.
pub fn provider_id(value: &str) -> Result<String, BadInput> {
    let ok = value.len() <= 64
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(bad(format!(
            "--provider-id {value:?}: use 1 to 64 letters, digits, - or _, starting with a \
             letter or digit (e.g. anthropic, openai, my-proxy)"
        )))
    }
}

/// A model id: what the provider calls the model (it may contain `/`, as OpenRouter's do).
pub fn model(value: &str) -> Result<String, BadInput> {
    let value = value.trim();
    if value.is_empty()
        || value.len() > 200
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(format!(
            "--model {value:?}: the provider's model id, without spaces (e.g. \
             claude-sonnet-4-5, gpt-4.1-mini)"
        )));
    }
    Ok(value.to_owned())
}

/// A Telegram bot token: `<bot id>:<secret>`, as @BotFather gives it. The error never
/// quotes it.
pub fn bot_token(value: &str) -> Result<Secret, BadInput> {
    let value = value.trim();
    let shaped = value.split_once(':').is_some_and(|(id, secret)| {
        (1..=20).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_digit())
            && secret.len() >= 30
            && secret.len() <= 200
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if shaped {
        Ok(Secret::new(value))
    } else {
        Err(bad(
            "the bot token does not look like a Telegram bot token (digits, a colon, then at \
             least 30 letters, digits, - or _, e.g. 123456789:AAH...): copy it again from \
             @BotFather (/token)",
        ))
    }
}

/// An API key: visible ASCII that `.env` and an HTTP header carry unquoted. The error never
/// quotes it.
pub fn api_key(value: &str) -> Result<Secret, BadInput> {
    let value = value.trim();
    if value.len() < 8 {
        return Err(bad(
            "the API key is empty or too short: copy it again from the provider's console",
        ));
    }
    if value.len() > 1024 {
        return Err(bad(
            "the API key is longer than 1024 characters: is it the right file?",
        ));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._~+/=:-".contains(&b);
    if let Some(pos) = value.bytes().position(|b| !allowed(b)) {
        return Err(bad(format!(
            "the API key has a character that keys do not have at position {} (a space, quote \
             or other text pasted with it?): copy it again",
            pos + 1
        )));
    }
    Ok(Secret::new(value))
}

/// `--owner`: a numeric Telegram user id.
pub fn owner(value: &str) -> Result<String, BadInput> {
    let value = value.trim();
    let ok = (1..=20).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_digit())
        && value.parse::<i64>().is_ok_and(|v| v > 0);
    if ok {
        Ok(value.to_owned())
    } else {
        Err(bad(format!(
            "--owner {value:?}: a numeric Telegram user id (e.g. 123456789; Telegram's \
             @userinfobot tells you yours)"
        )))
    }
}

/// `--daily-usd` / `--monthly-usd`: a positive amount.
pub fn usd(flag: &str, value: f64) -> Result<f64, BadInput> {
    if value.is_finite() && value > 0.0 && value <= 1e6 {
        Ok(value)
    } else {
        Err(bad(format!(
            "{flag} {value}: a positive number of US dollars (e.g. 2 or 0.5)"
        )))
    }
}

/// Reads settings already in the config file (so setup run again keeps them).
pub struct Existing<'a>(pub &'a Value);

impl Existing<'_> {
    fn str_at(&self, pointer: &str) -> Option<String> {
        self.0
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// `models.providers.<id>.baseUrl`, when that provider uses `api`.
    pub fn base_url(&self, provider_id: &str, api: Api) -> Option<String> {
        let p = format!("/models/providers/{}", pointer_escape(provider_id));
        let same_api = self.str_at(&format!("{p}/api")).as_deref() == Some(api.as_str());
        same_api
            .then(|| self.str_at(&format!("{p}/baseUrl")))
            .flatten()
    }

    /// `channels.telegram.apiRoot`.
    pub fn api_root(&self) -> Option<String> {
        self.str_at("/channels/telegram/apiRoot")
    }
}

/// Escapes a key for a JSON pointer (`~` and `/`).
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_trimmed() {
        assert_eq!(
            url("--base-url", "https://api.openai.com/v1/").unwrap(),
            "https://api.openai.com/v1"
        );
        assert_eq!(
            url("--base-url", "http://10.77.0.9:8081/v1").unwrap(),
            "http://10.77.0.9:8081/v1"
        );
        for (bad_url, words) in [
            ("ftp://x", "must start with https://"),
            ("api.openai.com", "must start with https://"),
            ("https://", "not a valid URL"),
            ("https://user:pw@host/v1", "user name or password"),
            ("https://host/v1?key=1", "query"),
            ("https://ho st/v1", "not a valid URL"),
        ] {
            let e = url("--base-url", bad_url).unwrap_err().to_string();
            assert!(
                e.contains(words) && e.contains("--base-url"),
                "{bad_url}: {e}"
            );
        }
        assert_eq!(
            host_port("https://api.anthropic.com").as_deref(),
            Some("api.anthropic.com:443")
        );
        assert_eq!(
            host_port("http://127.0.0.1:8081/v1").as_deref(),
            Some("127.0.0.1:8081")
        );
    }

    #[test]
    fn secrets_are_shaped_and_never_quoted_in_errors() {
        assert!(bot_token("123456789:AAHtestTOKENtestTOKENtestTOKENtest12").is_ok());
        for bad_token in [
            "123456789AAHtestTOKENtestTOKENtestTOKENtest12",
            "abc:AAHtestTOKENtestTOKENtestTOKENtest12",
            "123:short",
            "123:AAHtestTOKENtestTOKEN testTOKENtest12xx",
        ] {
            let e = bot_token(bad_token).unwrap_err().to_string();
            assert!(!e.contains(bad_token), "{e}");
            assert!(e.contains("@BotFather"), "{e}");
        }
        assert!(api_key("sk-ant-api03-abcDEF_123-xyz").is_ok());
        let e = api_key("sk-ant-api03 secret").unwrap_err().to_string();
        assert!(e.contains("position 13") && !e.contains("secret"), "{e}");
        assert!(api_key("short").is_err());
    }

    #[test]
    fn ids_owners_and_amounts() {
        assert_eq!(key_var("my-proxy"), "MY_PROXY_API_KEY");
        assert_eq!(key_var("openai"), "OPENAI_API_KEY");
        assert!(provider_id("my-proxy_2").is_ok());
        for id in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(provider_id(id).is_err(), "{id}");
        }
        assert_eq!(model(" gpt-4.1 ").unwrap(), "gpt-4.1");
        assert!(model("anthropic/claude-sonnet-4.5").is_ok());
        assert!(model("two words").is_err());
        assert_eq!(owner("123456789").unwrap(), "123456789");
        for o in ["@me", "-5", "0", "12a", "telegram:1"] {
            assert!(owner(o).is_err(), "{o}");
        }
        assert!(usd("--daily-usd", 2.5).is_ok());
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(usd("--daily-usd", v).is_err(), "{v}");
        }
    }

    #[test]
    fn existing_settings_are_found_for_the_same_api_only() {
        let config = serde_json::json!({
            "models": {"providers": {"openai": {"api": "openai-completions", "baseUrl": "http://x:1/v1"}}},
            "channels": {"telegram": {"apiRoot": "http://tg:2"}},
        });
        let existing = Existing(&config);
        assert_eq!(
            existing
                .base_url("openai", Api::OpenAiCompletions)
                .as_deref(),
            Some("http://x:1/v1")
        );
        assert_eq!(existing.base_url("openai", Api::AnthropicMessages), None);
        assert_eq!(existing.api_root().as_deref(), Some("http://tg:2"));
    }
}
