//! Whether the host waits for a reboot, and when it will take it: for the deep audit's
//! `host.reboot_pending` and `clawfort status`.
//!
//! Debian's kernel packages run `/etc/kernel/postinst.d/unattended-upgrades`, which touches
//! `/run/reboot-required` and appends the package to `/run/reboot-required.pkgs`; other
//! packages that need a reboot (libc, systemd) do the same through their own hooks. Both
//! files are on a tmpfs, so a reboot clears them. Whether unattended-upgrades reboots by
//! itself, and at what time, is its `Automatic-Reboot` and `Automatic-Reboot-Time` in apt's
//! configuration (the appliance renders them from `[updates]` of image/clawfort.toml).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::command::{self, Outcome};
use super::{Finding, Severity};

const FLAG: &str = "/run/reboot-required";
const PACKAGES: &str = "/run/reboot-required.pkgs";

/// What the audit and `clawfort status` report about reboots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RebootState {
    /// Set while a reboot is pending.
    pub pending: Option<Pending>,
    /// unattended-upgrades' own reboot, as apt's configuration says (`None`: apt-config is
    /// missing or failed, so it is not known).
    pub automatic: Option<Automatic>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    /// When the flag was set (RFC 3339, UTC), if its time could be read.
    pub since: Option<String>,
    /// The packages that asked for it, in the order they did.
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Automatic {
    pub enabled: bool,
    /// `HH:MM` in the host's time zone, or `now` (unattended-upgrades' default: right after
    /// the upgrade run).
    pub time: String,
}

/// The host's reboot state, read from `/run` and `apt-config`.
pub fn state() -> RebootState {
    RebootState {
        pending: pending(Path::new(FLAG), Path::new(PACKAGES)),
        automatic: automatic(),
    }
}

fn pending(flag: &Path, packages: &Path) -> Option<Pending> {
    let meta = std::fs::metadata(flag).ok()?;
    let since = meta
        .modified()
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    let packages = std::fs::read_to_string(packages)
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(Pending { since, packages })
}

fn automatic() -> Option<Automatic> {
    let outcome = command::run(
        "apt-config",
        &[
            "shell",
            "REBOOT",
            "Unattended-Upgrade::Automatic-Reboot",
            "TIME",
            "Unattended-Upgrade::Automatic-Reboot-Time",
        ],
    );
    match outcome {
        Outcome::Ran {
            ok: true, stdout, ..
        } => Some(parse_apt_shell(&stdout)),
        _ => None,
    }
}

/// Reads `apt-config shell`'s `NAME='value'` lines. An unset option prints no line:
/// unattended-upgrades then does not reboot, and reboots `now` when it does without a time.
pub fn parse_apt_shell(text: &str) -> Automatic {
    let value = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.trim().strip_prefix(name)?.strip_prefix('=')?;
            Some(rest.trim_matches('\'').to_owned())
        })
    };
    let enabled = value("REBOOT")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1"))
        .unwrap_or(false);
    let time = value("TIME")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "now".to_owned());
    Automatic { enabled, time }
}

impl RebootState {
    /// One line for people: `none pending` or what is pending and when it happens.
    pub fn describe(&self) -> String {
        let window = match &self.automatic {
            Some(Automatic {
                enabled: true,
                time,
            }) if time == "now" => "automatic reboots right after the update run".to_owned(),
            Some(Automatic {
                enabled: true,
                time,
            }) => format!("automatic reboots at {time}"),
            Some(Automatic { enabled: false, .. }) => "automatic reboots off".to_owned(),
            None => "automatic reboots unknown (apt-config did not answer)".to_owned(),
        };
        match &self.pending {
            None => format!("none pending; {window}"),
            Some(p) => {
                let mut text = "pending".to_owned();
                if let Some(since) = &p.since {
                    text.push_str(&format!(" since {since}"));
                }
                if !p.packages.is_empty() {
                    text.push_str(&format!(" for {}", p.packages.join(", ")));
                }
                format!("{text}; {window}")
            }
        }
    }
}

/// `host.reboot_pending`: info when no reboot is pending, or when one is and unattended-upgrades
/// will take it in its window; warn when one is pending and nothing will take it (automatic
/// reboots off), since until then the updated kernel or library is not the one running.
pub fn finding(state: &RebootState) -> Finding {
    const ID: &str = "host.reboot_pending";
    let detail = state.describe();
    match (&state.pending, &state.automatic) {
        (None, _) => Finding::new(ID, Severity::Info, "no reboot pending", detail, ""),
        (Some(_), Some(Automatic { enabled: true, .. })) => Finding::new(
            ID,
            Severity::Info,
            "a reboot is pending and scheduled by unattended-upgrades",
            detail,
            "",
        ),
        (Some(_), _) => Finding::new(
            ID,
            Severity::Warn,
            "a reboot is pending and nothing will take it: the updates it is for are not running",
            detail,
            "reboot now (sudo systemctl reboot), or set automatic_reboot = true in [updates] of \
             the image definition (Unattended-Upgrade::Automatic-Reboot \"true\" in /etc/apt/apt.conf.d/)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_shell_output_is_read() {
        let a = parse_apt_shell("REBOOT='true'\nTIME='04:00'\n");
        assert_eq!(
            a,
            Automatic {
                enabled: true,
                time: "04:00".into()
            }
        );
        // Unset options: no reboot, and `now` when one is enabled without a time.
        let a = parse_apt_shell("");
        assert!(!a.enabled);
        assert_eq!(a.time, "now");
        assert!(!parse_apt_shell("REBOOT='false'\n").enabled);
    }

    #[test]
    fn the_flag_and_its_packages_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("reboot-required");
        let pkgs = dir.path().join("reboot-required.pkgs");
        assert_eq!(pending(&flag, &pkgs), None);
        std::fs::write(&flag, "").unwrap();
        let p = pending(&flag, &pkgs).unwrap();
        assert!(p.packages.is_empty());
        assert!(p.since.unwrap().ends_with('Z'));
        std::fs::write(&pkgs, "linux-image-6.12.57+deb13-amd64\nlibc6\n\n").unwrap();
        assert_eq!(
            pending(&flag, &pkgs).unwrap().packages,
            ["linux-image-6.12.57+deb13-amd64", "libc6"]
        );
    }

    #[test]
    fn a_pending_reboot_without_a_window_warns() {
        let pending = Some(Pending {
            since: Some("2026-12-01T06:12:00Z".into()),
            packages: vec!["linux-image-6.12.57+deb13-amd64".into()],
        });
        let on = Some(Automatic {
            enabled: true,
            time: "04:00".into(),
        });
        let off = Some(Automatic {
            enabled: false,
            time: "04:00".into(),
        });
        let f = finding(&RebootState {
            pending: None,
            automatic: off.clone(),
        });
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(f.detail, "none pending; automatic reboots off");
        let f = finding(&RebootState {
            pending: pending.clone(),
            automatic: on,
        });
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(
            f.detail,
            "pending since 2026-12-01T06:12:00Z for linux-image-6.12.57+deb13-amd64; \
             automatic reboots at 04:00"
        );
        for automatic in [off, None] {
            let f = finding(&RebootState {
                pending: pending.clone(),
                automatic,
            });
            assert_eq!(f.severity, Severity::Warn, "{f:?}");
            assert!(f.remediation.contains("automatic_reboot = true"));
        }
    }
}
