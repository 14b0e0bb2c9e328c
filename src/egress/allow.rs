//! The allow list: exactly the `host:port` pairs the owner's config names as destinations.
//!
//! Derived from `openclaw.json`: every `models.providers.<id>.baseUrl`, and
//! `channels.telegram.apiRoot` (Telegram's public Bot API when unset) while the Telegram
//! channel is configured and not disabled. Only those keys are read, so no secret is needed:
//! an `apiKey: "${ANTHROPIC_API_KEY}"` or the gateway token's `${...}` is never resolved, and
//! no `.env` is read. The gateway checks the rest of the file when it starts.
//!
//! On the appliance the proxy does not read `openclaw.json` itself (its owner is the very
//! gateway the proxy confines): root derives the list with this code (`clawfort setup`,
//! `clawfort egress sync`) into the file of [`super::allow_file`], which the proxy reads.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use hyper::Uri;
use serde_json::Value;

use crate::config::{env, nesting, ConfigError, EnvSource};
use crate::telegram::DEFAULT_API_ROOT;

/// One destination: a host name or IP address (lower case; IPv6 in brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    host: String,
    port: u16,
}

impl Target {
    /// The destination a request to `uri` connects to: its host, and its port or the
    /// scheme's default (443 for https, 80 for http).
    pub fn of_uri(uri: &Uri) -> Result<Self, String> {
        let port = match (uri.scheme_str(), uri.port_u16()) {
            (Some("https" | "http"), Some(port)) => port,
            (Some("https"), None) => 443,
            (Some("http"), None) => 80,
            _ => return Err("not an http:// or https:// URL".to_owned()),
        };
        match uri.host() {
            Some(host) if !host.is_empty() => Self::new(host, port),
            _ => Err("the URL has no host".to_owned()),
        }
    }

    /// The target of a CONNECT request (`host:port`, RFC 9110 authority form). A missing
    /// port, user info or anything else is refused; the error quotes only a well-formed host,
    /// never what was sent (it might be a URL with a token in it).
    pub fn of_authority(text: &str) -> Result<Self, String> {
        let authority: hyper::http::uri::Authority = text
            .parse()
            .map_err(|_| "the target is not host:port".to_owned())?;
        if authority.as_str().contains('@') {
            return Err("the target carries user info; send host:port only".to_owned());
        }
        let port = authority.port_u16().ok_or_else(|| {
            format!(
                "the target `{}` has no port; CONNECT needs host:port",
                authority.host()
            )
        })?;
        Self::new(authority.host(), port)
    }

    fn new(host: &str, port: u16) -> Result<Self, String> {
        if port == 0 {
            return Err("port 0 is not a destination".to_owned());
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The host as a resolver or `connect` wants it (IPv6 without brackets).
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The destinations the proxy opens tunnels to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    targets: BTreeSet<Target>,
}

impl FromIterator<Target> for AllowList {
    fn from_iter<I: IntoIterator<Item = Target>>(iter: I) -> Self {
        Self {
            targets: iter.into_iter().collect(),
        }
    }
}

/// What replacing one allow list by another changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<Target>,
    pub removed: Vec<Target>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// ` (added a:443; removed b:443)`, or nothing when nothing changes.
    pub fn describe(&self) -> String {
        let join = |targets: &[Target]| -> String {
            let names: Vec<String> = targets.iter().map(Target::to_string).collect();
            names.join(", ")
        };
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added {}", join(&self.added)));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", join(&self.removed)));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join("; "))
        }
    }
}

impl AllowList {
    /// Derives the list from the config file at `path`, `${VAR}` from `env`. A missing file
    /// is an empty list (the gateway too starts with the defaults then, and the defaults name
    /// no destination).
    pub fn from_config_file(path: &Path, env: &EnvSource) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_config_text(&text, env).map_err(|e| in_file(e, path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ConfigError::File {
                file: path.to_path_buf(),
                message: format!("cannot read the config file: {e}"),
            }),
        }
    }

    /// Derives the list from config text (JSON5); every problem is named with its key path.
    /// A URL written as `${VAR}` takes the variable from `env`.
    pub fn from_config_text(text: &str, env: &EnvSource) -> Result<Self, ConfigError> {
        let file_error = |message: String| ConfigError::File {
            file: PathBuf::from("config"),
            message,
        };
        if let Some(line) = nesting::too_deep(text) {
            return Err(file_error(format!(
                "nested deeper than {} levels at line {line}",
                nesting::MAX_DEPTH
            )));
        }
        let tree: Value =
            json5::from_str(text).map_err(|e| file_error(format!("not valid JSON5: {e}")))?;
        // (key path, value) of every URL that names a destination.
        let mut urls: Vec<(String, &Value)> = Vec::new();
        let mut errors = Vec::new();
        let default_root = Value::String(DEFAULT_API_ROOT.to_owned());

        match tree.pointer("/models/providers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(providers)) => {
                for (id, provider) in providers {
                    match provider.get("baseUrl") {
                        None | Some(Value::Null) => {}
                        Some(url) => urls.push((format!("models.providers.{id}.baseUrl"), url)),
                    }
                }
            }
            Some(_) => errors.push(ConfigError::key("models.providers", "must be an object")),
        }

        match tree.pointer("/channels/telegram") {
            None | Some(Value::Null) => {}
            Some(Value::Object(telegram)) => {
                if telegram.get("enabled") != Some(&Value::Bool(false)) {
                    let root = match telegram.get("apiRoot") {
                        None | Some(Value::Null) => &default_root,
                        Some(root) => root,
                    };
                    urls.push(("channels.telegram.apiRoot".to_owned(), root));
                }
            }
            Some(_) => errors.push(ConfigError::key("channels.telegram", "must be an object")),
        }

        let mut list = Self::default();
        for (key_path, url) in urls {
            match url_target(&key_path, url, env) {
                Ok(target) => {
                    list.targets.insert(target);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(ConfigError::many(errors))
        }
    }

    pub fn allows(&self, target: &Target) -> bool {
        self.targets.contains(target)
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter()
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// What changes when `self` is replaced by `new`.
    pub fn diff(&self, new: &AllowList) -> Diff {
        Diff {
            added: new.targets.difference(&self.targets).cloned().collect(),
            removed: self.targets.difference(&new.targets).cloned().collect(),
        }
    }

    /// `a:443, b:443`, or `nothing`.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "nothing".to_owned();
        }
        let list: Vec<String> = self.iter().map(Target::to_string).collect();
        list.join(", ")
    }
}

/// `e` with the placeholder file name of [`AllowList::from_config_text`] replaced by `path`.
pub fn in_file(e: ConfigError, path: &Path) -> ConfigError {
    match e {
        ConfigError::File { message, .. } => ConfigError::File {
            file: path.to_path_buf(),
            message,
        },
        other => other,
    }
}

/// The destination of a URL-valued key. `${VAR}` is taken from `env` only: the secrets'
/// `.env` is never read for a destination.
fn url_target(key_path: &str, raw: &Value, vars: &EnvSource) -> Result<Target, ConfigError> {
    let Value::String(raw) = raw else {
        return Err(ConfigError::key(key_path, "expected a URL string"));
    };
    let url = env::substitute(raw, key_path, vars).map_err(|_| {
        ConfigError::key(
            key_path,
            format!(
                "`{raw}` refers to an environment variable, which the egress allow list does \
                 not resolve (it reads no .env, so that it never holds a secret); write the \
                 URL itself into the config"
            ),
        )
    })?;
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|_| ConfigError::key(key_path, format!("`{url}` is not a URL")))?;
    Target::of_uri(&uri).map_err(|why| ConfigError::key(key_path, format!("`{url}`: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(text: &str) -> Vec<String> {
        AllowList::from_config_text(text, &EnvSource::fixed([]))
            .unwrap()
            .iter()
            .map(Target::to_string)
            .collect()
    }

    #[test]
    fn provider_urls_and_the_telegram_root_with_default_ports() {
        let text = r#"{
            // secrets stay references: nothing here is resolved
            gateway: { auth: { token: "${OPENCLAW_GATEWAY_TOKEN_NOT_SET}" } },
            models: { providers: {
                anthropic: { api: "anthropic-messages", baseUrl: "https://API.anthropic.com",
                             apiKey: "${ANTHROPIC_KEY_NOT_SET}" },
                local: { baseUrl: "http://127.0.0.1:8000/v1" },
                v6: { baseUrl: "http://[::1]:11434/v1/" },
                nourl: { api: "openai-completions" },
            } },
            channels: { telegram: { botToken: "${TELEGRAM_NOT_SET}" } },
        }"#;
        assert_eq!(
            targets(text),
            [
                "127.0.0.1:8000",
                "[::1]:11434",
                "api.anthropic.com:443",
                "api.telegram.org:443"
            ]
        );
    }

    #[test]
    fn telegram_only_when_configured_and_enabled() {
        assert!(targets("{}").is_empty());
        assert!(targets("{channels: {telegram: {enabled: false}}}").is_empty());
        assert_eq!(
            targets("{channels: {telegram: {apiRoot: 'http://10.0.0.9:8082/'}}}"),
            ["10.0.0.9:8082"]
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (
                "{models: {providers: {x: {baseUrl: 'ftp://h/'}}}}",
                "models.providers.x.baseUrl",
            ),
            (
                "{models: {providers: {x: {baseUrl: 42}}}}",
                "models.providers.x.baseUrl",
            ),
            (
                "{channels: {telegram: {apiRoot: '${EGRESS_TEST_UNSET_VAR}'}}}",
                "channels.telegram.apiRoot",
            ),
            ("{models: {providers: []}}", "models.providers"),
        ] {
            let err = AllowList::from_config_text(text, &EnvSource::fixed([]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = AllowList::from_config_text(&"[".repeat(100), &EnvSource::fixed([])).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn a_url_variable_comes_from_the_given_source_only() {
        let text = "{models: {providers: {x: {baseUrl: '${EGRESS_TEST_URL}'}}}}";
        let env = EnvSource::fixed([(
            "EGRESS_TEST_URL".to_owned(),
            "https://llm.example:8443/v1".to_owned(),
        )]);
        let list = AllowList::from_config_text(text, &env).unwrap();
        assert_eq!(list.describe(), "llm.example:8443");
        assert!(AllowList::from_config_text(text, &EnvSource::fixed([])).is_err());
    }

    #[test]
    fn the_diff_names_what_is_added_and_removed() {
        let list = |names: &[&str]| -> AllowList {
            names
                .iter()
                .map(|n| Target::of_authority(n).unwrap())
                .collect()
        };
        let old = list(&["a.example:443", "b.example:443"]);
        let new = list(&["b.example:443", "c.example:8080"]);
        let diff = old.diff(&new);
        assert_eq!(
            diff.added,
            [Target::of_authority("c.example:8080").unwrap()]
        );
        assert_eq!(
            diff.removed,
            [Target::of_authority("a.example:443").unwrap()]
        );
        assert_eq!(
            diff.describe(),
            " (added c.example:8080; removed a.example:443)"
        );
        assert!(new.diff(&new).is_empty());
        assert_eq!(new.diff(&new).describe(), "");
        assert_eq!(AllowList::default().describe(), "nothing");
        assert_eq!(new.describe(), "b.example:443, c.example:8080");
    }

    #[test]
    fn connect_targets_need_host_and_port() {
        let t = Target::of_authority("Api.Example.com:443").unwrap();
        assert_eq!(t.to_string(), "api.example.com:443");
        assert_eq!(Target::of_authority("[::1]:80").unwrap().bare_host(), "::1");
        for bad in [
            "api.example.com",
            "user@api.example.com:443",
            "api.example.com:0",
            "api.example.com:99999",
            "/path",
            "",
        ] {
            assert!(Target::of_authority(bad).is_err(), "{bad}");
        }
    }
}
