//! Which key paths a config may hold: OpenClaw's whole schema plus clawfort's documented
//! extensions. Anything else is a typo and is refused with a did-you-mean.
//!
//! OpenClaw's key paths are data (`openclaw-keys.txt`, derived from the openclaw npm
//! package's own schemas; see the header of that file). A path whose node has no children
//! takes any value (a free-form map, a list of strings, a plugin's own settings), so the
//! check does not descend into it.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::Value;

use super::reader::did_you_mean;
use super::ConfigError;

const OPENCLAW_KEYS: &str = include_str!("openclaw-keys.txt");

/// Keys clawfort reads that OpenClaw's schema does not have. Each is documented in README.
const CLAWFORT_EXTENSIONS: &[&str] = &[
    // The hardening guides' spellings.
    "bind",
    "gateway.authToken",
    "pairing.autoApprove",
    "security.workspace",
    "security.allowedPaths",
    "security.deniedPaths",
    // The HTTP guards (OpenClaw keeps its origins under gateway.controlUi).
    "gateway.allowedHosts",
    "gateway.allowedOrigins",
    // clawfort's first spelling of the lockout, still read; README documents the Ms keys.
    "gateway.auth.rateLimit.windowSeconds",
    "gateway.auth.rateLimit.lockoutSeconds",
    // Spend caps in US dollars.
    "budget.dailyUsd",
    "budget.monthlyUsd",
    // How long an exec approval waits (OpenClaw's pending approvals expire after 30 min).
    "tools.exec.approvalTimeoutSeconds",
    // A channel OpenClaw does not bundle is a clawfort webhook channel (`POST /api/messages`).
    "channels.*.enabled",
    "channels.*.dmPolicy",
    "channels.*.allowFrom",
    "channels.*.botToken",
    "channels.*.token",
];

/// One node of the key tree; `*` is the child for any map key or list item.
#[derive(Debug, Default, Clone)]
pub struct KeyTree {
    children: BTreeMap<String, KeyTree>,
}

impl KeyTree {
    fn insert(&mut self, path: &str) {
        let mut node = self;
        for segment in path.split('.') {
            node = node.children.entry(segment.to_string()).or_default();
        }
    }

    fn merge(&mut self, other: KeyTree) {
        for (key, child) in other.children {
            self.children.entry(key).or_default().merge(child);
        }
    }

    fn node(&self, path: &str) -> Option<&KeyTree> {
        path.split('.')
            .try_fold(self, |node, segment| node.children.get(segment))
    }

    fn parse(text: &str) -> Self {
        let mut tree = Self::default();
        let mut aliases = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.strip_prefix("alias ") {
                Some(rest) => aliases.extend(rest.split_once(' ')),
                None => tree.insert(line),
            }
        }
        for (old, new) in aliases {
            let target = tree.node(new).cloned().unwrap_or_default();
            tree.insert(old);
            let mut node = &mut tree;
            for segment in old.split('.') {
                node = node.children.get_mut(segment).expect("just inserted");
            }
            node.merge(target);
        }
        for extension in CLAWFORT_EXTENSIONS {
            tree.insert(extension);
        }
        tree
    }

    /// The child for `key`: the named one, else the wildcard.
    fn child(&self, key: &str) -> Option<&KeyTree> {
        self.children.get(key).or_else(|| self.children.get("*"))
    }

    fn names(&self) -> Vec<&str> {
        self.children
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "*")
            .collect()
    }
}

/// OpenClaw's keys and clawfort's extensions.
fn known() -> &'static KeyTree {
    static TREE: LazyLock<KeyTree> = LazyLock::new(|| KeyTree::parse(OPENCLAW_KEYS));
    &TREE
}

/// True when `path` (dot-separated, `*` allowed) is a known key.
#[cfg(test)]
fn is_known(path: &str) -> bool {
    let mut node = known();
    for segment in path.split('.') {
        match node.child(segment) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

/// Every key in `tree` that is neither OpenClaw's nor a clawfort extension.
pub fn unknown_keys(tree: &Value) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    walk(known(), tree, "", &mut errors);
    errors
}

fn walk(node: &KeyTree, value: &Value, path: &str, errors: &mut Vec<ConfigError>) {
    if node.children.is_empty() {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match node.child(key) {
                    Some(next) => walk(next, child, &at, errors),
                    None => errors.push(unknown(node, key, &at)),
                }
            }
        }
        Value::Array(items) => {
            if let Some(next) = node.children.get("*") {
                for (i, item) in items.iter().enumerate() {
                    walk(next, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn unknown(node: &KeyTree, key: &str, at: &str) -> ConfigError {
    if at == "providers" {
        return ConfigError::key(
            at,
            "clawfort's own `providers` key is gone: providers are configured under \
             OpenClaw's `models.providers.<id>` (`api`, `baseUrl`, `apiKey`, `models`); move \
             each provider there",
        );
    }
    if key == "askFallback" {
        // OpenClaw keeps it in the approvals document only.
        return ConfigError::key(
            at,
            "askFallback is not an openclaw.json key: it is read from \
             ~/.openclaw/exec-approvals.json; set `defaults.askFallback` there",
        );
    }
    let names = node.names();
    let parent = at.strip_suffix(key).unwrap_or("");
    let hint = match did_you_mean(key, &names) {
        Some(s) => format!("did you mean `{parent}{s}`?"),
        None if names.len() <= 16 => format!("known keys here: {}", names.join(", ")),
        None => "see the configuration reference for the keys allowed here".to_string(),
    };
    ConfigError::key(
        at,
        format!("unknown key (not in OpenClaw's schema nor a clawfort extension); {hint}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_file_holds_openclaws_tree() {
        for path in [
            "gateway.mode",
            "gateway.controlUi.allowedOrigins",
            "gateway.auth.rateLimit.windowMs",
            "gateway.auth.rateLimit.exemptLoopback",
            "agents.defaults.workspace",
            "agents.defaults.model.primary",
            "agents.list.*.id",
            "models.providers.*.models.*.cost.cacheWrite",
            "channels.telegram.groups.*.requireMention",
            "channels.telegram.groupAllowFrom",
            "session.reset.mode",
            "budget.dailyUsd",
            "channels.webhook.dmPolicy",
            "routing.groupChat.requireMention",
            "agents.list.*.memorySearch",
            "agents.list.*.workspace",
        ] {
            assert!(is_known(path), "{path}");
        }
        for path in ["gateway.prot", "providers", "channels.telegram.dmpolicy"] {
            assert!(!is_known(path), "{path}");
        }
    }

    #[test]
    fn every_unknown_key_is_named_once() {
        let tree: Value = serde_json::json!({
            "gateway": { "prot": 1, "controlUi": { "enabled": true } },
            "tools": { "anything": { "deep": 1 } },
            "plugins": { "entries": { "x": { "config": { "free": { "form": 1 } } } } },
            "agents": { "list": [ { "id": "a", "workspacee": "/w" } ] },
        });
        let errors: Vec<String> = unknown_keys(&tree).iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].contains("did you mean `agents.list[0].workspace`?"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("did you mean `gateway.port`?"),
            "{errors:?}"
        );
        assert!(errors[2].contains("`tools.anything`"), "{errors:?}");
    }
}
