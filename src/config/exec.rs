//! `tools.exec`: whether the model is offered the `exec` tool, which commands run without
//! asking, and how long a command may run.
//!
//! OpenClaw's `tools.exec.security` (or its newer `tools.exec.mode`) and `tools.exec.ask`
//! decide. clawfort implements `deny` (its default: no `exec` tool), `allowlist` (only
//! commands the allowlist in `exec-approvals.json` matches run; see `approvals`), `full`
//! (every command runs) and every `ask` (`off`, `on-miss`, `always`). A command that needs
//! approval pauses the turn until an approver answers or `tools.exec.approvalTimeoutSeconds`
//! (a clawfort extension) passes, which is a denial unless the approvals file's `askFallback`
//! says otherwise (OpenClaw has that key only there). `mode: "auto"` (a reviewer model) is
//! refused at start. Where an allowed command runs follows `agents.defaults.sandbox.mode`: in
//! the Docker sandbox for the sessions it covers ([`crate::sandbox`]), on the host, confined
//! by Landlock ([`crate::confine`]), for the others.

use super::reader::Section;
use super::ConfigError;

/// OpenClaw's default command timeout (`tools.exec.timeoutSeconds`).
pub const DEFAULT_TIMEOUT_SECS: u64 = 1800;

/// How long a command waits for an approver by default: within the turn's two minutes, so
/// the model still hears of the denial.
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: u64 = 60;

/// `tools.exec.security`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ExecSecurity {
    /// No `exec` tool. The default.
    Deny,
    /// The `exec` tool runs only what the allowlist matches (or an approver allows).
    Allowlist,
    /// The `exec` tool runs every command (unless `ask` wants a human), confined on the host.
    Full,
}

/// `tools.exec.ask`: when a human is asked before a command runs. Ordered from the least to
/// the most asking, so the stricter of two is their `max`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ExecAsk {
    /// Never: what the security mode refuses is denied.
    Off,
    /// When the allowlist does not match.
    OnMiss,
    /// Before every command.
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecConfig {
    pub security: ExecSecurity,
    pub ask: ExecAsk,
    /// `tools.exec.timeoutSeconds`; `None` (written `0`): no timeout of its own, the turn's
    /// deadline still applies.
    pub timeout_secs: Option<u64>,
    /// `tools.exec.approvalTimeoutSeconds` (clawfort): how long a command waits for an
    /// approver; then `askFallback` decides (a denial by default).
    pub approval_timeout_secs: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            security: ExecSecurity::Deny,
            ask: ExecAsk::Off,
            timeout_secs: Some(DEFAULT_TIMEOUT_SECS),
            approval_timeout_secs: DEFAULT_APPROVAL_TIMEOUT_SECS,
        }
    }
}

/// What `security` or `mode` may say: a security level and the `ask` it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Security(ExecSecurity, Option<ExecAsk>),
    /// `mode: "auto"`: a reviewer model decides, which clawfort does not have.
    Auto,
}

const SECURITY: [(&str, Policy); 3] = [
    ("deny", Policy::Security(ExecSecurity::Deny, None)),
    ("allowlist", Policy::Security(ExecSecurity::Allowlist, None)),
    ("full", Policy::Security(ExecSecurity::Full, None)),
];

const MODE: [(&str, Policy); 5] = [
    ("deny", Policy::Security(ExecSecurity::Deny, None)),
    ("allowlist", Policy::Security(ExecSecurity::Allowlist, None)),
    (
        "ask",
        Policy::Security(ExecSecurity::Allowlist, Some(ExecAsk::OnMiss)),
    ),
    ("auto", Policy::Auto),
    ("full", Policy::Security(ExecSecurity::Full, None)),
];

/// Reads `tools.exec` of the `tools` section; unsafe or unsupported choices go to
/// `refusals`.
pub fn read_exec(tools: &mut Section, refusals: &mut Vec<ConfigError>) -> ExecConfig {
    let mut config = ExecConfig::default();
    let Some(mut exec) = tools.section("exec") else {
        return config;
    };
    let security = exec.choice("security", &SECURITY);
    let mode = exec.choice("mode", &MODE);
    let policy = match (security, mode) {
        (Some(Policy::Security(s, _)), Some(Policy::Security(m, _))) if s != m => {
            exec.error(
                "mode",
                "disagrees with tools.exec.security; set one of them (mode is OpenClaw's \
                 newer key)",
            );
            None
        }
        (s, m) => m.or(s),
    };
    let ask = exec.choice(
        "ask",
        &[
            ("off", ExecAsk::Off),
            ("on-miss", ExecAsk::OnMiss),
            ("always", ExecAsk::Always),
        ],
    );
    if let Some(secs) = exec.integer("timeoutSeconds", 0, 86_400) {
        config.timeout_secs = (secs > 0).then_some(secs);
    }
    if let Some(secs) = exec.integer("approvalTimeoutSeconds", 1, 86_400) {
        config.approval_timeout_secs = secs;
    }
    match policy {
        Some(Policy::Auto) => refusals.push(ConfigError::key(
            "tools.exec.mode",
            "\"auto\" needs a reviewer model, which clawfort does not implement; use \
             \"ask\" (an approver answers each allowlist miss), \"allowlist\", \"deny\" or \
             \"full\"",
        )),
        Some(Policy::Security(level, implied)) => {
            config.security = level;
            config.ask = match (implied, ask) {
                (Some(ExecAsk::OnMiss), Some(ExecAsk::Off)) => {
                    exec.error(
                        "ask",
                        "\"off\" disagrees with tools.exec.mode \"ask\"; remove one of them",
                    );
                    ExecAsk::OnMiss
                }
                (implied, ask) => ask.or(implied).unwrap_or(ExecAsk::Off),
            };
        }
        None => {}
    }
    exec.finish();
    config
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, EnvSource, ExecAsk, ExecSecurity};

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
    fn approval_modes_are_read() {
        let off = r#"agents: { defaults: { sandbox: { mode: "off" } } }"#;
        let c = parse(&format!(
            r#"{{ tools: {{ exec: {{ security: "allowlist", ask: "on-miss",
                  approvalTimeoutSeconds: 5 }} }}, {off} }}"#
        ))
        .unwrap();
        assert_eq!(
            (c.exec.security, c.exec.ask, c.exec.approval_timeout_secs),
            (ExecSecurity::Allowlist, ExecAsk::OnMiss, 5)
        );
        assert!(c.refusals.is_empty(), "{:?}", c.refusals);
        let c = parse(&format!(
            r#"{{ tools: {{ exec: {{ mode: "ask" }} }}, {off} }}"#
        ))
        .unwrap();
        assert_eq!(
            (c.exec.security, c.exec.ask, c.exec.approval_timeout_secs),
            (ExecSecurity::Allowlist, ExecAsk::OnMiss, 60)
        );
        let c = parse(&format!(
            r#"{{ tools: {{ exec: {{ mode: "ask", ask: "always" }} }}, {off} }}"#
        ))
        .unwrap();
        assert_eq!(c.exec.ask, ExecAsk::Always);
        let c = parse(&format!(
            r#"{{ tools: {{ exec: {{ security: "full", ask: "always" }} }}, {off} }}"#
        ))
        .unwrap();
        assert_eq!(
            (c.exec.security, c.exec.ask),
            (ExecSecurity::Full, ExecAsk::Always)
        );
        let e = parse(r#"{ tools: { exec: { mode: "ask", ask: "off" } } }"#).unwrap_err();
        assert!(e.contains("tools.exec.ask"), "{e}");
    }

    #[test]
    fn ask_fallback_is_pointed_to_the_approvals_file() {
        let e = parse(r#"{ tools: { exec: { security: "allowlist", askFallback: "full" } } }"#)
            .unwrap_err();
        assert!(
            e.contains("tools.exec.askFallback")
                && e.contains("defaults.askFallback")
                && !e.contains("did you mean"),
            "{e}"
        );
    }

    #[test]
    fn telegram_exec_approvals_are_read() {
        let c = parse(
            r#"{ channels: { telegram: { execApprovals: { enabled: "auto", approvers: [42, "43"] } } } }"#,
        )
        .unwrap();
        let a = &c.telegram.unwrap().exec_approvals;
        assert!(a.enabled);
        assert_eq!(a.approvers, ["42", "43"]);
        let c =
            parse(r#"{ channels: { telegram: { execApprovals: { enabled: false } } } }"#).unwrap();
        assert!(!c.telegram.unwrap().exec_approvals.enabled);
        let e = parse(r#"{ channels: { telegram: { execApprovals: { target: "channel" } } } }"#)
            .unwrap_err();
        assert!(
            e.contains("channels.telegram.execApprovals.target") && e.contains("\"dm\""),
            "{e}"
        );
        let e = parse(r#"{ channels: { telegram: { execApprovals: { enabled: "yes" } } } }"#)
            .unwrap_err();
        assert!(e.contains("execApprovals.enabled"), "{e}");
    }

    #[test]
    fn auto_is_refused_with_what_to_use() {
        let r = refusals(r#"{ tools: { exec: { mode: "auto" } } }"#);
        assert!(
            r.len() == 1 && r[0].contains("`tools.exec.mode`") && r[0].contains("reviewer"),
            "{r:?}"
        );
    }

    #[test]
    fn exec_with_the_sandbox_on_is_accepted() {
        for (security, mode) in [("full", "all"), ("allowlist", "non-main")] {
            let text = format!(
                r#"{{ tools: {{ exec: {{ security: "{security}" }} }},
                     agents: {{ defaults: {{ sandbox: {{ mode: "{mode}" }} }} }} }}"#
            );
            let config = parse(&text).unwrap();
            assert_ne!(config.exec.security, ExecSecurity::Deny);
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
        let e = parse(r#"{ tools: { exec: { approvalTimeoutSeconds: 0 } } }"#).unwrap_err();
        assert!(e.contains("tools.exec.approvalTimeoutSeconds"), "{e}");
    }
}
