//! `tools.exec`: whether the model is offered the `exec` tool, and how long a command may run.
//!
//! OpenClaw's `tools.exec.security` (or its newer `tools.exec.mode`) decides. clawfort
//! implements `deny` (its default: no `exec` tool) and `full` (every command runs, on the
//! host, confined by Landlock; see `confine`). The modes that need exec approvals
//! (`allowlist`, and `ask`/`auto` of `mode`) and `ask: "always"` are refused at start until
//! approvals exist, so a setting that promises a human check never runs commands unchecked.
//! Where a `full` command runs follows `agents.defaults.sandbox.mode`: in the Docker sandbox
//! for the sessions it covers ([`crate::sandbox`]), on the host for the others.

use super::reader::Section;
use super::ConfigError;

/// OpenClaw's default command timeout (`tools.exec.timeoutSeconds`).
pub const DEFAULT_TIMEOUT_SECS: u64 = 1800;

/// `tools.exec.security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecSecurity {
    /// No `exec` tool. The default.
    Deny,
    /// The `exec` tool runs every command, in the sandbox or confined on the host.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecConfig {
    pub security: ExecSecurity,
    /// `tools.exec.timeoutSeconds`; `None` (written `0`): no timeout of its own, the turn's
    /// deadline still applies.
    pub timeout_secs: Option<u64>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            security: ExecSecurity::Deny,
            timeout_secs: Some(DEFAULT_TIMEOUT_SECS),
        }
    }
}

/// What `security` or `mode` may say; the approval modes are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Deny,
    Full,
    NeedsApprovals(&'static str),
}

const SECURITY: [(&str, Policy); 3] = [
    ("deny", Policy::Deny),
    ("allowlist", Policy::NeedsApprovals("allowlist")),
    ("full", Policy::Full),
];

const MODE: [(&str, Policy); 5] = [
    ("deny", Policy::Deny),
    ("allowlist", Policy::NeedsApprovals("allowlist")),
    ("ask", Policy::NeedsApprovals("ask")),
    ("auto", Policy::NeedsApprovals("auto")),
    ("full", Policy::Full),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Off,
    OnMiss,
    Always,
}

/// Reads `tools.exec` of the `tools` section; unsafe or unsupported choices go to
/// `refusals`.
pub fn read_exec(tools: &mut Section, refusals: &mut Vec<ConfigError>) -> ExecConfig {
    let mut config = ExecConfig::default();
    if let Some(mut exec) = tools.section("exec") {
        let security = exec.choice("security", &SECURITY);
        let mode = exec.choice("mode", &MODE);
        let policy = match (security, mode) {
            (Some(s), Some(m)) if s != m => {
                exec.error(
                    "mode",
                    "disagrees with tools.exec.security; set one of them (mode is OpenClaw's \
                     newer key)",
                );
                None
            }
            (s, m) => s.or(m),
        };
        let ask = exec.choice(
            "ask",
            &[
                ("off", Ask::Off),
                ("on-miss", Ask::OnMiss),
                ("always", Ask::Always),
            ],
        );
        if let Some(secs) = exec.integer("timeoutSeconds", 0, 86_400) {
            config.timeout_secs = (secs > 0).then_some(secs);
        }
        match policy {
            Some(Policy::NeedsApprovals(name)) => refusals.push(ConfigError::key(
                if security.is_some() {
                    "tools.exec.security"
                } else {
                    "tools.exec.mode"
                },
                format!(
                    "\"{name}\" needs exec approvals, which clawfort does not implement yet; \
                     use \"deny\" (no exec tool) or \"full\" (every command runs, confined by \
                     Landlock to the workspace)"
                ),
            )),
            Some(Policy::Full) => {
                config.security = ExecSecurity::Full;
                if ask == Some(Ask::Always) {
                    refusals.push(ConfigError::key(
                        "tools.exec.ask",
                        "\"always\" needs exec approvals, which clawfort does not implement \
                         yet; set it to \"off\", or tools.exec.security to \"deny\"",
                    ));
                }
            }
            Some(Policy::Deny) | None => {}
        }
        exec.finish();
    }
    config
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, EnvSource, ExecSecurity};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, &EnvSource::default()).map_err(|e| e.to_string())
    }

    fn refusals(text: &str) -> Vec<String> {
        parse(text)
            .unwrap()
            .refusals
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn exec_is_denied_by_default() {
        let config = parse("{}").unwrap();
        assert_eq!(config.exec.security, ExecSecurity::Deny);
        assert_eq!(config.exec.timeout_secs, Some(1800));
    }

    #[test]
    fn full_with_the_sandbox_off_is_accepted() {
        let text = r#"{ tools: { exec: { security: "full", ask: "on-miss", timeoutSeconds: 30 } },
                        agents: { defaults: { sandbox: { mode: "off" } } } }"#;
        let config = parse(text).unwrap();
        assert_eq!(config.exec.security, ExecSecurity::Full);
        assert_eq!(config.exec.timeout_secs, Some(30));
        assert!(config.refusals.is_empty(), "{:?}", config.refusals);
        let text = r#"{ tools: { exec: { mode: "full", timeoutSeconds: 0 } },
                        agents: { defaults: { sandbox: { mode: "off" } } } }"#;
        let config = parse(text).unwrap();
        assert_eq!(config.exec.security, ExecSecurity::Full);
        assert_eq!(config.exec.timeout_secs, None);
    }

    #[test]
    fn approval_modes_are_refused_with_what_to_use() {
        let r = refusals(r#"{ tools: { exec: { security: "allowlist" } } }"#);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].contains("`tools.exec.security`") && r[0].contains("approvals"));
        assert!(
            r[0].contains("\"deny\"") && r[0].contains("\"full\""),
            "{r:?}"
        );
        let r = refusals(r#"{ tools: { exec: { mode: "ask" } } }"#);
        assert!(r[0].contains("`tools.exec.mode`"), "{r:?}");
        let r = refusals(
            r#"{ tools: { exec: { security: "full", ask: "always" } },
                 agents: { defaults: { sandbox: { mode: "off" } } } }"#,
        );
        assert!(r.len() == 1 && r[0].contains("`tools.exec.ask`"), "{r:?}");
    }

    #[test]
    fn full_with_the_sandbox_on_is_accepted() {
        for mode in ["all", "non-main"] {
            let text = format!(
                r#"{{ tools: {{ exec: {{ security: "full" }} }},
                     agents: {{ defaults: {{ sandbox: {{ mode: "{mode}" }} }} }} }}"#
            );
            let config = parse(&text).unwrap();
            assert_eq!(config.exec.security, ExecSecurity::Full);
            assert!(config.refusals.is_empty(), "{:?}", config.refusals);
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse(r#"{ tools: { exec: { security: "ful" } } }"#).unwrap_err();
        assert!(
            e.contains("tools.exec.security") && e.contains("did you mean"),
            "{e}"
        );
        let e = parse(r#"{ tools: { exec: { security: "full", mode: "deny" } } }"#).unwrap_err();
        assert!(e.contains("tools.exec.mode"), "{e}");
        let e = parse(r#"{ tools: { exec: { timeoutSeconds: -1 } } }"#).unwrap_err();
        assert!(e.contains("tools.exec.timeoutSeconds"), "{e}");
    }
}
