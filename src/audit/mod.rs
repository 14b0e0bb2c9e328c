//! `clawfort security audit [--deep] [--fix] [--json]`.
//!
//! Findings `{checkId, severity, title, detail, remediation}`; exit 0 without a critical
//! finding, 1 with one, 2 when the audit itself cannot run (the CLI maps errors to 2).
//! `local` checks the installation (permissions, config); `--deep` adds `host` (sockets,
//! firewall, sshd, fail2ban, updates, a pending reboot, Docker socket) and `sandbox` (the rootless daemon and
//! image sandboxed `exec` needs). A check that cannot run (tool missing,
//! not permitted as this user) says so as a finding instead of passing silently. `egress`
//! checks the egress proxy's allow list where the installation has that proxy.

pub(crate) mod command;
mod egress;
mod files;
mod host;
pub mod installation;
mod local;
pub mod reboot;
mod sandbox;

use serde::Serialize;

use crate::config::Config;
use crate::paths::Paths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warn,
    Info,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub check_id: &'static str,
    pub severity: Severity,
    pub title: String,
    pub detail: String,
    pub remediation: String,
}

impl Finding {
    pub fn new(
        check_id: &'static str,
        severity: Severity,
        title: impl Into<String>,
        detail: impl Into<String>,
        remediation: impl Into<String>,
    ) -> Self {
        Self {
            check_id,
            severity,
            title: title.into(),
            detail: detail.into(),
            remediation: remediation.into(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// Which installation was audited (the CLI fills it in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installation: Option<installation::Installation>,
    pub findings: Vec<Finding>,
    /// What `--fix` changed, one line per action.
    pub fixes: Vec<String>,
    /// What `--fix` left alone, and why (a link, a path outside the state directory...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unfixed: Vec<String>,
    pub summary: Summary,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub critical: usize,
    pub warn: usize,
    pub info: usize,
}

impl Report {
    pub fn has_critical(&self) -> bool {
        self.summary.critical > 0
    }
}

/// Runs the audit. `--fix` acts first, so the findings describe the state after it.
/// `egress` is the installation's egress proxy (`NotInstalled` unless the audited
/// installation is the one `clawfort.service` runs).
pub fn run(
    paths: &Paths,
    config: &Config,
    egress: &installation::EgressAllow,
    deep: bool,
    fix: bool,
) -> Report {
    let fixed = if fix {
        local::fix(paths)
    } else {
        files::FixOutcome::default()
    };
    let mut findings = local::check(paths, config);
    egress::check(egress, &paths.config, &mut findings);
    if deep {
        findings.extend(host::check(config));
        findings.extend(sandbox::check(config, paths));
    }
    findings.sort_by_key(|f| f.severity);
    let mut summary = Summary::default();
    for f in &findings {
        match f.severity {
            Severity::Critical => summary.critical += 1,
            Severity::Warn => summary.warn += 1,
            Severity::Info => summary.info += 1,
        }
    }
    Report {
        installation: None,
        findings,
        fixes: fixed.changed,
        unfixed: fixed.unfixed,
        summary,
    }
}

/// The human-readable form of a report.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    if let Some(i) = &report.installation {
        let user = i
            .user
            .as_deref()
            .map(|u| format!(" of user {u}"))
            .unwrap_or_default();
        let unit = i
            .unit
            .as_deref()
            .map(|u| format!(" ({u})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "installation: {}{user} (config {}), from {}{unit}\n",
            i.state_dir.display(),
            i.config.display(),
            i.source
        ));
        if let Some(note) = &i.note {
            out.push_str(&format!("              {note}\n"));
        }
    }
    for fix in &report.fixes {
        out.push_str(&format!("fixed: {fix}\n"));
    }
    for left in &report.unfixed {
        out.push_str(&format!("not fixed: {left}\n"));
    }
    for f in &report.findings {
        let label = match f.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warn => "WARN",
            Severity::Info => "INFO",
        };
        out.push_str(&format!("{label:8} {}: {}\n", f.check_id, f.title));
        if !f.detail.is_empty() {
            out.push_str(&format!("         {}\n", f.detail));
        }
        if !f.remediation.is_empty() {
            out.push_str(&format!("         fix: {}\n", f.remediation));
        }
    }
    out.push_str(&format!(
        "{} critical, {} warn, {} info\n",
        report.summary.critical, report.summary.warn, report.summary.info
    ));
    out
}
