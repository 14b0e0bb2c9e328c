//! The egress proxy's allow list, where the audited installation is the one
//! `clawfort.service` runs and `clawfort-egress.service` is installed.
//!
//! The list must be root's alone: whoever can change it decides where the agent may send
//! data. And it must name every destination `openclaw.json` names, or the agent cannot reach
//! its model or Telegram. Both are fixed by `sudo clawfort egress sync`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::installation::{EgressAllow, EGRESS_UNIT};
use super::{Finding, Severity};
use crate::config::EnvSource;
use crate::egress::allow_file::{self, DEFAULT_PATH};
use crate::egress::sync::read_config;
use crate::egress::{AllowList, Target};

const SYNC: &str = "sudo clawfort egress sync";

/// The findings for the proxy `egress` describes, against the config at `config`.
pub fn check(egress: &EgressAllow, config: &Path, findings: &mut Vec<Finding>) {
    let path = match egress {
        EgressAllow::NotInstalled => return,
        EgressAllow::Config { from } => {
            findings.push(Finding::new(
                "egress.allow_list.gateway_writable",
                Severity::Critical,
                "the egress proxy takes its allow list from a file the gateway can write",
                format!(
                    "{EGRESS_UNIT} ({from}) has no --allow-file, so it allows what openclaw.json \
                     names; a compromised gateway can add any host there and reach it after \
                     the proxy's next start"
                ),
                format!(
                    "make its ExecStart= `/usr/bin/clawfort egress --allow-file {DEFAULT_PATH}` \
                     (as the clawfort image ships it), then run `{SYNC}`"
                ),
            ));
            return;
        }
        EgressAllow::File { path, .. } => path,
    };
    let unsafe_file = writable_by_others(path);
    if let Some(why) = &unsafe_file {
        findings.push(Finding::new(
            "egress.allow_file.writable",
            Severity::Critical,
            "the egress allow list can be changed by others than root",
            format!("{why}: whoever can change it decides where the agent may connect"),
            format!(
                "`sudo chown root:root` and `sudo chmod 644` the file (755 its directory), \
                 check it, or remove it and run `{SYNC}`"
            ),
        ));
    }
    let allowed = match allow_file::read(path) {
        Ok(list) => list,
        Err(e) => {
            if unsafe_file.is_none() {
                findings.push(Finding::new(
                    "egress.allow_file.invalid",
                    Severity::Warn,
                    "the egress proxy cannot read its allow list",
                    format!("{e}; the proxy does not start, so the agent reaches nothing"),
                    format!("run `{SYNC}`"),
                ));
            }
            return;
        }
    };
    let named = match read_config(config).map(|text| {
        AllowList::from_config_text(text.as_deref().unwrap_or("{}"), &EnvSource::fixed([]))
    }) {
        Ok(Ok(named)) => named,
        Ok(Err(e)) => {
            findings.push(Finding::new(
                "egress.allow_file.underivable",
                Severity::Warn,
                "openclaw.json names a destination the egress allow list cannot take",
                format!("{}: {e}", config.display()),
                format!("write the URL itself into openclaw.json, then run `{SYNC}`"),
            ));
            return;
        }
        Err(e) => {
            findings.push(Finding::new(
                "egress.allow_file.unchecked",
                Severity::Info,
                "the egress allow list was not compared with openclaw.json",
                format!("{e:#}"),
                "",
            ));
            return;
        }
    };
    let current = allowed.clone().unwrap_or_default();
    let diff = current.diff(&named);
    if !diff.added.is_empty() {
        let state = match &allowed {
            Some(_) => format!("{} does not allow them", path.display()),
            None => format!(
                "there is no {}, so the proxy allows nothing",
                path.display()
            ),
        };
        findings.push(Finding::new(
            "egress.allow_file.missing_destinations",
            Severity::Warn,
            "the agent cannot reach destinations openclaw.json names",
            format!("openclaw.json names {}; {state}", list(&diff.added)),
            format!("run `{SYNC}`"),
        ));
    }
    if !diff.removed.is_empty() {
        findings.push(Finding::new(
            "egress.allow_file.extra_destinations",
            Severity::Info,
            "the egress allow list names destinations openclaw.json no longer does",
            format!("{} allows {}", path.display(), list(&diff.removed)),
            format!("run `{SYNC}` to allow only what openclaw.json names"),
        ));
    }
}

/// Why the allow file (or its directory) is not root's alone; `None` when it is, or when
/// it does not exist.
fn writable_by_others(path: &Path) -> Option<String> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    for (what, at) in [("its directory", dir), ("the file", path)] {
        let Ok(meta) = std::fs::symlink_metadata(at) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            return Some(format!("{} ({what}) is a symbolic link", at.display()));
        }
        let mode = meta.mode() & 0o7777;
        if meta.uid() != 0 || mode & 0o022 != 0 {
            return Some(format!(
                "{} ({what}) belongs to uid {} with mode {mode:o}",
                at.display(),
                meta.uid()
            ));
        }
    }
    None
}

fn list(targets: &[Target]) -> String {
    let names: Vec<String> = targets.iter().map(Target::to_string).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn ids(egress: &EgressAllow, config: &Path) -> Vec<(&'static str, Severity, String)> {
        let mut findings = Vec::new();
        check(egress, config, &mut findings);
        findings
            .into_iter()
            .map(|f| (f.check_id, f.severity, f.detail))
            .collect()
    }

    fn file(path: &Path) -> EgressAllow {
        EgressAllow::File {
            path: path.to_path_buf(),
            from: "test".into(),
        }
    }

    /// A config naming a provider and Telegram, and an allow file in a 755 directory.
    fn installation() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("openclaw.json");
        std::fs::write(
            &config,
            "{models: {providers: {a: {baseUrl: 'https://api.anthropic.com'}}},
              channels: {telegram: {botToken: '${T}'}}}",
        )
        .unwrap();
        let dir = tmp.path().join("etc-clawfort");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        (tmp, config, dir.join("egress-allow.json"))
    }

    fn write_allow(path: &Path, allow: &[&str]) {
        let list: AllowList = allow
            .iter()
            .map(|a| Target::of_authority(a).unwrap())
            .collect();
        std::fs::write(path, allow_file::render(&list, "test")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    #[test]
    fn no_egress_unit_no_finding_and_an_older_unit_is_critical() {
        let (_tmp, config, _) = installation();
        assert!(ids(&EgressAllow::NotInstalled, &config).is_empty());
        let found = ids(&EgressAllow::Config { from: "x".into() }, &config);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].0, found[0].1),
            ("egress.allow_list.gateway_writable", Severity::Critical)
        );
    }

    #[test]
    fn destinations_the_file_lacks_are_a_warning_and_extra_ones_information() {
        let (_tmp, config, path) = installation();
        let found = ids(&file(&path), &config);
        let missing: Vec<_> = found
            .iter()
            .filter(|f| f.0 == "egress.allow_file.missing_destinations")
            .collect();
        assert_eq!(missing.len(), 1, "{found:?}");
        assert_eq!(missing[0].1, Severity::Warn);
        assert!(
            missing[0]
                .2
                .contains("api.anthropic.com:443, api.telegram.org:443")
                && missing[0].2.contains("there is no"),
            "{found:?}"
        );

        write_allow(&path, &["api.telegram.org:443", "old.example:443"]);
        let found = ids(&file(&path), &config);
        let by_id = |id: &str| found.iter().find(|f| f.0 == id).cloned();
        let missing = by_id("egress.allow_file.missing_destinations").unwrap();
        assert!(
            missing.2.contains("names api.anthropic.com:443;"),
            "{missing:?}"
        );
        let extra = by_id("egress.allow_file.extra_destinations").unwrap();
        assert_eq!(extra.1, Severity::Info);
        assert!(extra.2.contains("old.example:443"), "{extra:?}");

        write_allow(&path, &["api.anthropic.com:443", "api.telegram.org:443"]);
        let found = ids(&file(&path), &config);
        // Owned by the test's user: only root running the tests has no finding at all.
        if rustix::process::geteuid().is_root() {
            assert!(found.is_empty(), "{found:?}");
        } else {
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].0, "egress.allow_file.writable");
        }
    }

    #[test]
    fn a_file_or_directory_others_may_write_is_critical() {
        let (_tmp, config, path) = installation();
        write_allow(&path, &["api.anthropic.com:443", "api.telegram.org:443"]);
        let writable = |found: &[(&str, Severity, String)]| {
            found
                .iter()
                .find(|f| f.0 == "egress.allow_file.writable")
                .map(|f| (f.1, f.2.clone()))
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let found = ids(&file(&path), &config);
        let (severity, detail) = writable(&found).expect("a writable file is a finding");
        assert_eq!(severity, Severity::Critical);
        assert!(
            detail.contains("(the file)") && detail.contains("mode 666"),
            "{detail}"
        );
        // The proxy would not start with it, but that is the same problem: one finding.
        assert!(!found.iter().any(|f| f.0 == "egress.allow_file.invalid"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let dir = path.parent().unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (_, detail) = writable(&ids(&file(&path), &config)).unwrap();
        assert!(detail.contains("(its directory)"), "{detail}");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();

        if rustix::process::geteuid().is_root() {
            // Root's mode, another owner.
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
            let (_, detail) = writable(&ids(&file(&path), &config)).unwrap();
            assert!(detail.contains("uid 65534"), "{detail}");
        }

        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let (_, detail) = writable(&ids(&file(&link), &config)).unwrap();
        assert!(detail.contains("is a symbolic link"), "{detail}");
    }

    #[test]
    fn an_unreadable_file_is_a_warning_naming_it() {
        let (_tmp, config, path) = installation();
        std::fs::write(&path, "{\"version\": 1}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let found = ids(&file(&path), &config);
        let invalid = found
            .iter()
            .find(|f| f.0 == "egress.allow_file.invalid")
            .expect("a finding");
        assert_eq!(invalid.1, Severity::Warn);
        assert!(
            invalid.2.contains(&path.display().to_string())
                && invalid.2.contains("missing field `allow`"),
            "{invalid:?}"
        );
    }
}
