//! The new contents of `openclaw.json` and `.env`: the existing files with setup's settings
//! merged in. Pure functions on text and JSON values, so every rule is unit-tested.
//!
//! `openclaw.json` is read as JSON5 and written as plain JSON (which is JSON5): its comments
//! and key order are not kept; the previous file stays beside it as `openclaw.json.bak`.
//! `.env` is edited line by line: the lines of the variables setup owns are replaced (or
//! added), every other line is kept byte for byte, and the result is parsed again to prove
//! that nothing else changed.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::plan::{bad, BadInput, Plan, DEFAULT_API_ROOT};

/// The variable holding the bot token (`channels.telegram.botToken: "${TELEGRAM_BOT_TOKEN}"`).
pub const BOT_TOKEN_VAR: &str = "TELEGRAM_BOT_TOKEN";

/// `existing` (the parsed old file, or `None`) with the plan's provider, model, Telegram
/// channel, owner and budget set. Everything else is kept. Returns the new config and notes
/// about what was replaced beyond the obvious.
pub fn config(existing: Option<Value>, plan: &Plan) -> Result<(Value, Vec<String>), BadInput> {
    let mut root = existing.unwrap_or_else(|| json!({}));
    let mut notes = Vec::new();
    let Some(top) = root.as_object_mut() else {
        return Err(bad(
            "openclaw.json is not a JSON object at the top: fix or remove it, then run setup again",
        ));
    };

    let provider = object_at(top, &["models", "providers", &plan.provider_id])?;
    provider.insert("api".into(), plan.api.as_str().into());
    provider.insert("baseUrl".into(), plan.base_url.clone().into());
    match &plan.api_key {
        Some(_) => {
            provider.insert("apiKey".into(), format!("${{{}}}", plan.key_var()).into());
        }
        None => {
            provider.remove("apiKey");
        }
    }
    let models = provider
        .entry("models")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(models) = models.as_array_mut() else {
        return Err(not_a(
            &format!("models.providers.{}.models", plan.provider_id),
            "a list",
        ));
    };
    if !models
        .iter()
        .any(|m| m.get("id").and_then(Value::as_str) == Some(plan.model.as_str()))
    {
        models.push(json!({ "id": plan.model }));
    }

    let defaults = object_at(top, &["agents", "defaults"])?;
    match defaults.get_mut("model").and_then(Value::as_object_mut) {
        Some(model) => {
            model.insert("primary".into(), plan.model_ref().into());
        }
        None => {
            defaults.insert("model".into(), json!({ "primary": plan.model_ref() }));
        }
    }

    let telegram = object_at(top, &["channels", "telegram"])?;
    telegram.insert("enabled".into(), true.into());
    telegram.insert("botToken".into(), format!("${{{BOT_TOKEN_VAR}}}").into());
    if telegram.remove("tokenFile").is_some() {
        notes.push(format!(
            "removed channels.telegram.tokenFile: the bot token is now {BOT_TOKEN_VAR} in .env"
        ));
    }
    if plan.api_root == DEFAULT_API_ROOT {
        telegram.remove("apiRoot");
    } else {
        telegram.insert("apiRoot".into(), plan.api_root.clone().into());
    }
    telegram
        .entry("dmPolicy")
        .or_insert_with(|| "pairing".into());
    if !plan.owners.is_empty() {
        append_unique(
            telegram,
            "allowFrom",
            "channels.telegram.allowFrom",
            |id| id.to_owned(),
            &plan.owners,
        )?;
        let commands = object_at(top, &["commands"])?;
        append_unique(
            commands,
            "ownerAllowFrom",
            "commands.ownerAllowFrom",
            |id| format!("telegram:{id}"),
            &plan.owners,
        )?;
    }

    if plan.daily_usd.is_some() || plan.monthly_usd.is_some() {
        let budget = object_at(top, &["budget"])?;
        if let Some(usd) = plan.daily_usd {
            budget.insert("dailyUsd".into(), usd.into());
        }
        if let Some(usd) = plan.monthly_usd {
            budget.insert("monthlyUsd".into(), usd.into());
        }
    }
    Ok((root, notes))
}

/// The object at `path` under `map`, creating missing levels; an existing non-object is an
/// error naming its key path.
fn object_at<'a>(
    map: &'a mut Map<String, Value>,
    path: &[&str],
) -> Result<&'a mut Map<String, Value>, BadInput> {
    let mut current = map;
    for (depth, key) in path.iter().enumerate() {
        let value = current
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        current = match value {
            Value::Object(inner) => inner,
            _ => return Err(not_a(&path[..=depth].join("."), "an object")),
        };
    }
    Ok(current)
}

fn not_a(key: &str, kind: &str) -> BadInput {
    bad(format!(
        "openclaw.json: `{key}` is not {kind}, so setup cannot merge into it; fix it by hand \
         (or remove it), then run setup again"
    ))
}

/// Appends `shape(id)` for each id missing from the list `map[key]` (entries compare as
/// text, so an older numeric `123` counts as `"123"`).
fn append_unique(
    map: &mut Map<String, Value>,
    key: &str,
    key_path: &str,
    shape: impl Fn(&str) -> String,
    ids: &[String],
) -> Result<(), BadInput> {
    let list = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = list.as_array_mut() else {
        return Err(not_a(key_path, "a list"));
    };
    for id in ids {
        let entry = shape(id);
        let present = list.iter().any(|v| match v {
            Value::String(s) => *s == entry,
            Value::Number(n) => n.to_string() == entry,
            _ => false,
        });
        if !present {
            list.push(entry.into());
        }
    }
    Ok(())
}

/// `existing` `.env` text with `set` (name, value) replacing those variables' lines (the
/// first one; later duplicates are dropped) or appended. Values must need no quoting (the
/// plan's checks ensure it). The result is parsed again: every other variable must be
/// exactly as before, and the set ones must read back as given.
pub fn env(existing: &str, set: &[(&str, &str)]) -> Result<String, BadInput> {
    let mut out = String::with_capacity(existing.len() + 256);
    let mut written: Vec<&str> = Vec::new();
    for line in existing.split_inclusive('\n') {
        match set.iter().find(|(name, _)| line_sets(line, name)) {
            Some((name, value)) => {
                if !written.contains(name) {
                    out.push_str(&format!("{name}={value}\n"));
                    written.push(name);
                }
            }
            None => out.push_str(line),
        }
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for (name, value) in set {
        if !written.contains(name) {
            out.push_str(&format!("{name}={value}\n"));
        }
    }

    let before = parse_env(existing).map_err(|e| {
        bad(format!(
            "the existing .env does not parse ({e}); fix it by hand, then run setup again"
        ))
    })?;
    let after = parse_env(&out).map_err(|_| unsafe_edit())?;
    let mut expected = before;
    for (name, value) in set {
        expected.insert((*name).to_owned(), (*value).to_owned());
    }
    if after != expected {
        return Err(unsafe_edit());
    }
    Ok(out)
}

/// The variables of `.env` text, as the gateway reads them.
pub fn parse_env(text: &str) -> Result<BTreeMap<String, String>, String> {
    dotenvy::from_read_iter(text.as_bytes())
        .map(|item| item.map_err(|e| e.to_string()))
        .collect()
}

fn unsafe_edit() -> BadInput {
    bad(
        "cannot edit .env safely: a line setup replaces seems to be part of a multi-line \
         value; remove the old TELEGRAM_BOT_TOKEN / *_API_KEY lines by hand, then run setup \
         again",
    )
}

/// Whether `line` assigns `name` (`NAME=...` or `export NAME=...`).
fn line_sets(line: &str, name: &str) -> bool {
    let line = line.trim_start();
    let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
    line.strip_prefix(name)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Api;
    use crate::secret::Secret;

    fn plan() -> Plan {
        Plan {
            api: Api::OpenAiCompletions,
            provider_id: "openai".into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            model: "fake-model".into(),
            api_key: Some(Secret::new("sk-test-0123456789")),
            bot_token: Secret::new("1:x"),
            api_root: DEFAULT_API_ROOT.into(),
            owners: vec!["123".into()],
            daily_usd: Some(2.0),
            monthly_usd: None,
        }
    }

    #[test]
    fn a_new_config_has_provider_model_channel_owner_and_budget() {
        let (config, notes) = config(None, &plan()).unwrap();
        assert!(notes.is_empty());
        assert_eq!(
            config,
            json!({
                "models": {"providers": {"openai": {
                    "api": "openai-completions", "baseUrl": "http://127.0.0.1:9/v1",
                    "apiKey": "${OPENAI_API_KEY}", "models": [{"id": "fake-model"}],
                }}},
                "agents": {"defaults": {"model": {"primary": "openai/fake-model"}}},
                "channels": {"telegram": {
                    "enabled": true, "botToken": "${TELEGRAM_BOT_TOKEN}",
                    "dmPolicy": "pairing", "allowFrom": ["123"],
                }},
                "commands": {"ownerAllowFrom": ["telegram:123"]},
                "budget": {"dailyUsd": 2.0},
            })
        );
    }

    #[test]
    fn an_existing_config_keeps_its_other_settings() {
        let existing = json!({
            "gateway": {"port": 18790, "auth": {"token": "${OPENCLAW_GATEWAY_TOKEN}"}},
            "models": {"providers": {
                "openai": {"api": "openai-completions", "baseUrl": "http://old/v1",
                           "models": [{"id": "fake-model", "cost": {"input": 1}}, {"id": "other"}]},
                "anthropic": {"api": "anthropic-messages", "baseUrl": "https://api.anthropic.com"},
            }},
            "agents": {"defaults": {"model": {"primary": "anthropic/x", "fallbacks": ["openai/other"]},
                                    "workspace": "~/w"}},
            "channels": {"telegram": {"tokenFile": "~/t", "dmPolicy": "allowlist",
                                      "allowFrom": [123, "456"], "apiRoot": "http://old"}},
            "budget": {"monthlyUsd": 30},
        });
        let (config, notes) = config(Some(existing), &plan()).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(config["gateway"]["port"], 18790);
        assert_eq!(
            config["models"]["providers"]["anthropic"]["api"],
            "anthropic-messages"
        );
        let openai = &config["models"]["providers"]["openai"];
        assert_eq!(openai["baseUrl"], "http://127.0.0.1:9/v1");
        assert_eq!(
            openai["models"],
            json!([{"id": "fake-model", "cost": {"input": 1}}, {"id": "other"}])
        );
        let model = &config["agents"]["defaults"]["model"];
        assert_eq!(
            *model,
            json!({"primary": "openai/fake-model", "fallbacks": ["openai/other"]})
        );
        assert_eq!(config["agents"]["defaults"]["workspace"], "~/w");
        let telegram = &config["channels"]["telegram"];
        assert!(telegram.get("tokenFile").is_none() && telegram.get("apiRoot").is_none());
        assert_eq!(telegram["dmPolicy"], "allowlist", "a stricter policy stays");
        assert_eq!(
            telegram["allowFrom"],
            json!([123, "456"]),
            "123 is there already"
        );
        assert_eq!(config["budget"], json!({"monthlyUsd": 30, "dailyUsd": 2.0}));
    }

    #[test]
    fn a_setting_of_the_wrong_kind_is_named() {
        let e = config(Some(json!({"channels": {"telegram": "on"}})), &plan())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`channels.telegram` is not an object"), "{e}");
        let e = config(Some(json!([])), &plan()).unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }

    #[test]
    fn env_lines_are_replaced_or_added_and_others_kept() {
        let old = "# the gateway token\nOPENCLAW_GATEWAY_TOKEN=abc\nexport OPENAI_API_KEY=old\n\
                   OTHER='x y'\nOPENAI_API_KEY=dup";
        let new = env(
            old,
            &[("OPENAI_API_KEY", "sk-new"), ("TELEGRAM_BOT_TOKEN", "1:t")],
        )
        .unwrap();
        assert_eq!(
            new,
            "# the gateway token\nOPENCLAW_GATEWAY_TOKEN=abc\nOPENAI_API_KEY=sk-new\n\
             OTHER='x y'\nTELEGRAM_BOT_TOKEN=1:t\n"
        );
        assert_eq!(env("", &[("A", "1")]).unwrap(), "A=1\n");
    }

    #[test]
    fn an_env_edit_that_would_change_other_values_is_refused() {
        let old = "NOTE=\"first line\nOPENAI_API_KEY=inside the value\"\n";
        let e = env(old, &[("OPENAI_API_KEY", "sk-new")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("multi-line"), "{e}");
    }
}
