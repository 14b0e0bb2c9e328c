//! `tools.profile`, `tools.allow`, `tools.alsoAllow`, `tools.deny` and `tools.fs.workspaceOnly`:
//! which tools the model is offered, with OpenClaw's semantics.
//!
//! A tool is offered when the profile (or `alsoAllow`) selects it, `allow` (when not empty)
//! names it, and `deny` does not: deny always wins. Entries are tool names, `group:<name>`
//! shorthands or `*` wildcards, case-insensitive. OpenClaw accepts any tool name (plugins
//! bring their own), so a name clawfort does not have is not an error; the gateway logs it
//! once at start ([`ToolPolicy::unknown_names`]).

use regex::RegexBuilder;

use super::reader::Section;
use super::ConfigError;

/// `tools.profile`: the base set before allow/deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolProfile {
    Minimal,
    Coding,
    Messaging,
    Full,
}

/// OpenClaw's tool groups, as far as they name tools clawfort has or will have.
const GROUPS: &[(&str, &[&str])] = &[
    ("group:fs", &["read", "write", "edit", "apply_patch"]),
    (
        "group:runtime",
        &["exec", "bash", "process", "code_execution"],
    ),
    ("group:web", &["web_search", "x_search", "web_fetch"]),
];

/// The tools clawfort implements or plans to (issue 12); other names are accepted and
/// logged as unknown.
const KNOWN: &[&str] = &["read", "write", "edit", "exec", "bash", "web_fetch"];

/// The tool policy of `tools.*`.
#[derive(Debug, Clone, Default)]
pub struct ToolPolicy {
    /// `None`: unset, which in OpenClaw leaves the core tools unfiltered.
    pub profile: Option<ToolProfile>,
    pub allow: Vec<String>,
    pub also_allow: Vec<String>,
    pub deny: Vec<String>,
    /// `tools.fs.workspaceOnly`: the file tools ignore `security.allowedPaths`.
    pub fs_workspace_only: bool,
}

impl ToolPolicy {
    /// Whether `tool` is offered to the model.
    pub fn offers(&self, tool: &str) -> bool {
        let by_profile = match self.profile {
            None | Some(ToolProfile::Full) => true,
            Some(ToolProfile::Coding) => ["group:fs", "group:runtime", "group:web"]
                .iter()
                .any(|g| matches(g, tool)),
            Some(ToolProfile::Minimal | ToolProfile::Messaging) => false,
        };
        let selected = by_profile || self.also_allow.iter().any(|p| matches(p, tool));
        let allowed = self.allow.is_empty() || self.allow.iter().any(|p| matches(p, tool));
        let denied = self.deny.iter().any(|p| matches(p, tool));
        selected && allowed && !denied
    }

    /// Entries of allow/alsoAllow/deny that name no tool or group clawfort knows (plugin
    /// tools of OpenClaw, typos), as `key: name`.
    pub fn unknown_names(&self) -> Vec<String> {
        let lists = [
            ("tools.allow", &self.allow),
            ("tools.alsoAllow", &self.also_allow),
            ("tools.deny", &self.deny),
        ];
        let mut unknown = Vec::new();
        for (key, list) in lists {
            for entry in list {
                let lower = entry.to_ascii_lowercase();
                let known = lower.contains('*')
                    || lower.starts_with("group:")
                    || KNOWN.contains(&lower.as_str());
                if !known {
                    unknown.push(format!("{key}: {entry}"));
                }
            }
        }
        unknown
    }
}

/// Whether the policy entry `pattern` (name, `group:<name>` or `*` wildcard) covers `tool`.
fn matches(pattern: &str, tool: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    if let Some((_, members)) = GROUPS.iter().find(|(g, _)| *g == pattern) {
        return members.contains(&tool);
    }
    // `bash` is OpenClaw's alias for `exec`.
    let alias = |name: &str| if name == "bash" { "exec" } else { name }.to_owned();
    if !pattern.contains('*') {
        return alias(&pattern) == alias(tool);
    }
    let regex = format!(
        "^{}$",
        pattern
            .split('*')
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*")
    );
    RegexBuilder::new(&regex)
        .case_insensitive(true)
        .build()
        .is_ok_and(|r| r.is_match(tool))
}

/// Reads the `tools` section; the keys not read here are reported as not implemented by
/// the caller's `finish`.
pub fn read_tool_policy(tools: &mut Section) -> ToolPolicy {
    let profile = tools.choice(
        "profile",
        &[
            ("minimal", ToolProfile::Minimal),
            ("coding", ToolProfile::Coding),
            ("messaging", ToolProfile::Messaging),
            ("full", ToolProfile::Full),
        ],
    );
    let allow = tools.strings("allow").unwrap_or_default();
    let also_allow = tools.strings("alsoAllow").unwrap_or_default();
    if !allow.is_empty() && !also_allow.is_empty() {
        tools.ctx().error(ConfigError::key(
            &tools.key_path("alsoAllow"),
            "cannot be set together with `tools.allow`: merge its entries into `allow`, or \
             drop `allow` and use `profile` with `alsoAllow`",
        ));
    }
    let deny = tools.strings("deny").unwrap_or_default();
    let mut fs_workspace_only = false;
    if let Some(mut fs) = tools.section("fs") {
        fs_workspace_only = fs.bool("workspaceOnly").unwrap_or(false);
        fs.finish();
    }
    ToolPolicy {
        profile,
        allow,
        also_allow,
        deny,
        fs_workspace_only,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, EnvSource};
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &EnvSource::fixed([]))
    }

    #[test]
    fn the_tools_section_is_read_with_its_errors_named() {
        let c = parse(
            r#"{ tools: { profile: "coding", alsoAllow: ["x"], deny: ["edit"],
                 fs: { workspaceOnly: true }, exec: { security: "deny" } } }"#,
        )
        .unwrap();
        assert_eq!(c.tools.profile, Some(ToolProfile::Coding));
        assert!(c.tools.fs_workspace_only);
        assert!(c.tools.offers("read") && !c.tools.offers("edit"));
        assert!(c.unimplemented.is_empty(), "{:?}", c.unimplemented);
        assert!(
            parse("{}").unwrap().tools.offers("write"),
            "OpenClaw's unset profile"
        );

        let err =
            parse(r#"{ tools: { profile: "codng", allow: ["read"], alsoAllow: ["write"] } }"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("did you mean \"coding\"?"), "{err}");
        assert!(
            err.contains("tools.alsoAllow")
                && err.contains("cannot be set together with `tools.allow`"),
            "{err}"
        );
    }

    fn policy(profile: Option<ToolProfile>, allow: &[&str], deny: &[&str]) -> ToolPolicy {
        ToolPolicy {
            profile,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            ..ToolPolicy::default()
        }
    }

    #[test]
    fn profiles_select_the_file_tools_as_openclaw_does() {
        for (profile, offered) in [
            (None, true),
            (Some(ToolProfile::Full), true),
            (Some(ToolProfile::Coding), true),
            (Some(ToolProfile::Minimal), false),
            (Some(ToolProfile::Messaging), false),
        ] {
            for tool in ["read", "write", "edit"] {
                assert_eq!(
                    policy(profile, &[], &[]).offers(tool),
                    offered,
                    "{profile:?}"
                );
            }
        }
        let mut minimal = policy(Some(ToolProfile::Minimal), &[], &[]);
        minimal.also_allow = vec!["READ".into()];
        assert!(minimal.offers("read") && !minimal.offers("write"));
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let p = policy(None, &["group:fs"], &["write", "ed*"]);
        assert!(p.offers("read"));
        assert!(!p.offers("write") && !p.offers("edit"));
        assert!(!p.offers("exec"), "allow is an allow-list");
        assert!(!policy(None, &[], &["*"]).offers("read"));
        assert!(!policy(None, &[], &["bash"]).offers("exec"), "bash = exec");
        assert!(policy(None, &["r*d"], &[]).offers("read"));
    }

    #[test]
    fn unknown_names_are_listed_not_refused() {
        let mut p = policy(None, &["read", "browser", "group:fs", "web_*"], &["canvas"]);
        p.also_allow = vec![];
        assert_eq!(
            p.unknown_names(),
            ["tools.allow: browser", "tools.deny: canvas"]
        );
    }
}
