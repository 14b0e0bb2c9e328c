//! `~/.openclaw/exec-approvals.json`: OpenClaw's approvals document (its legacy file form),
//! with OpenClaw's field names. clawfort reads the `defaults` and `agents.main` policy
//! (`security`, `ask`, which can only tighten `tools.exec`, and `askFallback`, which has no
//! key in `openclaw.json`) and `agents.main.allowlist`; it appends an entry when an approver
//! answers "always". Fields it does not use are kept as they are when it rewrites the file.
//!
//! The file is read at every decision, so an edit (by hand, or by `/approve ... always` in
//! another session) applies to the next command without a restart. A file that cannot be
//! parsed denies every command that would need it, with the parse error, until it is fixed.
//! Writes run under `flock` on `exec-approvals.lock` and replace the file atomically.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{ExecAsk, ExecSecurity};
use crate::pairing::atomic;

/// The agent clawfort runs (OpenClaw's default agent id).
pub const AGENT: &str = "main";

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Document {
    #[serde(default = "version")]
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Policy>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub agents: Map<String, Value>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

fn version() -> u64 {
    1
}

/// `defaults` or `agents.<id>`: the policy fields clawfort reads.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<ExecSecurity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask: Option<ExecAsk>,
    /// What a question nobody answered comes to (OpenClaw: `deny` when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask_fallback: Option<ExecSecurity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<Entry>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One allowlist entry.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// What the file says for clawfort's agent.
#[derive(Debug, Default, Clone)]
pub struct Effective {
    pub security: Option<ExecSecurity>,
    pub ask: Option<ExecAsk>,
    pub ask_fallback: Option<ExecSecurity>,
    pub allowlist: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid exec approvals document: {message}; fix or remove it")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The document at `path`; an empty one when the file does not exist.
pub fn load(path: &Path) -> Result<Document, FileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Document::default()),
        Err(source) => {
            return Err(FileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let invalid = |message: String| FileError::Invalid {
        path: path.to_owned(),
        message,
    };
    let doc: Document =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
            .map_err(|e| invalid(located(&e)))?;
    // Check the agent's section now, so a bad entry is reported, not skipped.
    agent_policy(&doc).map_err(|e| invalid(format!("agents.{AGENT}.{}", located(&e))))?;
    Ok(doc)
}

/// A parse error with the field it is about: `defaults.askFallback: unknown variant ...`
/// (serde names the values a field allows).
fn located(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    match e.path().to_string().as_str() {
        "." | "" => e.inner().to_string(),
        path => format!("{path}: {}", e.inner()),
    }
}

fn agent_policy(doc: &Document) -> Result<Policy, serde_path_to_error::Error<serde_json::Error>> {
    match doc.agents.get(AGENT) {
        None => Ok(Policy::default()),
        Some(v) => serde_path_to_error::deserialize(v),
    }
}

impl Document {
    /// The policy and allowlist for clawfort's agent: `agents.main` over `defaults`.
    pub fn effective(&self) -> Effective {
        let agent = agent_policy(self).unwrap_or_default();
        let defaults = self.defaults.clone().unwrap_or_default();
        Effective {
            security: agent.security.or(defaults.security),
            ask: agent.ask.or(defaults.ask),
            ask_fallback: agent.ask_fallback.or(defaults.ask_fallback),
            allowlist: agent.allowlist,
        }
    }
}

/// Appends `entry` to `agents.main.allowlist` (unless an equal pattern and argPattern is
/// there), under the lock, atomically.
pub fn add_entry(path: &Path, entry: Entry) -> Result<(), FileError> {
    update_agent(path, |agent| {
        let known = agent
            .allowlist
            .iter()
            .any(|e| e.pattern == entry.pattern && e.arg_pattern == entry.arg_pattern);
        if !known {
            agent.allowlist.push(entry);
        }
        !known
    })
}

/// Reads the document under the lock, lets `change` edit `agents.main`, and replaces the
/// file when it says it changed something. Everything else is written back as read.
fn update_agent(path: &Path, change: impl FnOnce(&mut Policy) -> bool) -> Result<(), FileError> {
    let write_error = |source| FileError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    atomic::ensure_private_dir(dir).map_err(write_error)?;
    let _lock = atomic::lock(&dir.join("exec-approvals.lock")).map_err(write_error)?;
    let mut doc = load(path)?;
    let mut agent = agent_policy(&doc).unwrap_or_default();
    if !change(&mut agent) {
        return Ok(());
    }
    let value = serde_json::to_value(agent).expect("a policy serialises");
    doc.agents.insert(AGENT.to_owned(), value);
    let mut text = serde_json::to_string_pretty(&doc).expect("a document serialises");
    text.push('\n');
    atomic::write_atomic(path, text.as_bytes()).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openclaw_fields_and_keeps_the_rest_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        std::fs::write(
            &path,
            r#"{"version": 1, "socket": {"path": "/x.sock"},
                "defaults": {"security": "allowlist", "ask": "on-miss", "askFallback": "deny"},
                "agents": {"main": {"ask": "always", "autoAllowSkills": false,
                    "allowlist": [{"pattern": "rg", "lastUsedAt": 1737150000000}]},
                  "other": {"allowlist": [{"pattern": "*"}]}}}"#,
        )
        .unwrap();
        let e = load(&path).unwrap().effective();
        assert_eq!(e.security, Some(ExecSecurity::Allowlist));
        assert_eq!(e.ask, Some(ExecAsk::Always));
        assert_eq!(e.allowlist.len(), 1);
        assert_eq!(e.allowlist[0].pattern, "rg");

        let entry = Entry {
            id: Some("x".into()),
            pattern: "/usr/bin/ls".into(),
            arg_pattern: Some("^-l$".into()),
            source: Some("allow-always".into()),
            ..Entry::default()
        };
        add_entry(&path, entry.clone()).unwrap();
        add_entry(&path, entry).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["socket"]["path"], "/x.sock");
        assert_eq!(v["defaults"]["askFallback"], "deny");
        assert_eq!(v["agents"]["main"]["autoAllowSkills"], false);
        assert_eq!(
            v["agents"]["main"]["allowlist"][0]["lastUsedAt"],
            1737150000000u64
        );
        assert_eq!(v["agents"]["main"]["allowlist"][1]["argPattern"], "^-l$");
        assert_eq!(
            v["agents"]["main"]["allowlist"].as_array().unwrap().len(),
            2
        );
        assert_eq!(v["agents"]["other"]["allowlist"][0]["pattern"], "*");
    }

    #[test]
    fn a_missing_file_is_empty_and_a_bad_one_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        assert!(load(&path).unwrap().effective().allowlist.is_empty());
        std::fs::write(&path, r#"{"agents": {"main": {"allowlist": [{"id": 3}]}}}"#).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains("exec-approvals.json") && e.contains("agents.main"),
            "{e}"
        );
        std::fs::write(&path, r#"{"defaults": {"security": "yolo"}}"#).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("yolo"), "{e}");
    }

    #[test]
    fn a_bad_value_names_its_field_and_what_it_allows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-approvals.json");
        for (text, field, allowed) in [
            (
                r#"{"defaults": {"askFallback": "yes"}}"#,
                "defaults.askFallback",
                "`deny`, `allowlist`, `full`",
            ),
            (
                r#"{"agents": {"main": {"askFallback": true}}}"#,
                "agents.main.askFallback",
                "invalid type: boolean `true`",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("{field}: ")), "{e}");
            assert!(e.contains(allowed), "{e}");
            assert!(e.contains("exec-approvals.json"), "{e}");
        }
        // Other agents are not judged.
        std::fs::write(
            &path,
            r#"{"defaults": {"askFallback": "full"}, "agents": {"main": {"allowlist": [
                {"pattern": "ls", "lastUsedAt": null, "lastUsedCommand": null}]},
                "other": {"askFallback": "whatever"}}}"#,
        )
        .unwrap();
        let e = load(&path).unwrap().effective();
        assert_eq!(e.ask_fallback, Some(ExecSecurity::Full));
    }
}
