//! `clawfort events`: both feeds merged by time, as a table or JSON; and
//! `clawfort events emit`, root's writer of the host feed (fail2ban's action and the
//! integrity check run it).

use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::{feed, gateway_feed, host_feed, Event, Record, Source};
use crate::paths::Paths;

/// Which events `clawfort events` shows.
#[derive(Debug, Clone, clap::Args)]
pub struct Show {
    /// Print the events as a JSON array, oldest first.
    #[arg(long)]
    pub json: bool,
    /// Show at most the latest N events.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// Only events since this time: a duration back from now (`90s`, `15m`, `2h`) or an RFC
    /// 3339 time (`2026-01-31T08:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = crate::columns::parse_since)]
    pub since: Option<Timestamp>,
}

/// A host event for root's feed.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Emit {
    /// fail2ban banned an address (fail2ban's `clawfort-event` action runs this).
    Fail2banBan {
        /// The jail's name.
        #[arg(long, value_parser = parse_jail)]
        jail: String,
        /// The banned address.
        #[arg(long)]
        ip: IpAddr,
    },
    /// The integrity check found changes: the counts given, or those of an AIDE report
    /// (clawfort-integrity-check runs this with --aide-report; a report without changes
    /// emits nothing).
    Integrity {
        #[arg(long, default_value_t = 0, conflicts_with = "aide_report")]
        added: u64,
        #[arg(long, default_value_t = 0, conflicts_with = "aide_report")]
        removed: u64,
        #[arg(long, default_value_t = 0, conflicts_with = "aide_report")]
        changed: u64,
        /// Read the counts from this AIDE report (its summary).
        #[arg(long, value_name = "PATH")]
        aide_report: Option<PathBuf>,
    },
    /// A kernel's boot entry failed all its tries and the machine booted another
    /// (clawfort-boot-fallback.service runs this once per failed entry).
    BootFallback {
        /// The entry that failed (`clawfort-6.12.99+deb13-cloud-amd64.conf`).
        #[arg(long, value_parser = parse_boot_entry)]
        failed: String,
        /// The entry this boot came from.
        #[arg(long, value_parser = parse_boot_entry)]
        booted: String,
    },
}

/// A boot loader entry's id as systemd-boot names it: a file name of letters, digits and
/// `.+-_~`, short, so nothing else can reach the owner's chat through it.
fn parse_boot_entry(text: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._+-~".contains(c);
    if (1..=128).contains(&text.len()) && text.chars().all(ok) && !text.starts_with('.') {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a boot entry id: 1 to 128 letters, digits, `.`, `_`, `+`, `-` or `~`"
        ))
    }
}

/// A jail name: what fail2ban accepts in a section name, short.
fn parse_jail(text: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    if (1..=64).contains(&text.len()) && text.chars().all(ok) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a jail name: 1 to 64 letters, digits, `_`, `.` or `-`"
        ))
    }
}

/// `clawfort events emit`: appends one event to the host feed; root only.
pub fn emit(kind: Emit) -> anyhow::Result<()> {
    let feed = host_feed();
    if !rustix::process::geteuid().is_root() {
        anyhow::bail!(
            "`clawfort events emit` writes root's host feed {}: run it as root (sudo); \
             fail2ban's action and the integrity check do",
            feed.display()
        );
    }
    let event = match kind {
        Emit::Fail2banBan { jail, ip } => Event::Fail2banBan { jail, ip },
        Emit::BootFallback { failed, booted } => Event::BootFallback { failed, booted },
        Emit::Integrity {
            aide_report: Some(report),
            ..
        } => {
            let text = std::fs::read_to_string(&report).map_err(|e| {
                anyhow::anyhow!("cannot read the AIDE report {}: {e}", report.display())
            })?;
            let changes = super::aide::changes(&text).map_err(|e| {
                anyhow::anyhow!("the AIDE report {} does not parse: {e}", report.display())
            })?;
            let Some(c) = changes else {
                println!("no changes in {}: no event", report.display());
                return Ok(());
            };
            Event::Integrity {
                added: c.added,
                removed: c.removed,
                changed: c.changed,
            }
        }
        Emit::Integrity {
            added,
            removed,
            changed,
            aide_report: None,
        } => Event::Integrity {
            added,
            removed,
            changed,
        },
    };
    if let Some(dir) = feed.parent().filter(|d| !d.exists()) {
        // The image makes it (tmpfiles); elsewhere the first emit does, readable by the
        // gateway's user whatever root's umask (027 on the appliance).
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)));
        made.map_err(|e| anyhow::anyhow!("cannot make the directory {}: {e}", dir.display()))?;
    }
    feed::append(&feed, &[Record::now(Source::Host, event)], 0o644)
        .map_err(|e| anyhow::anyhow!("cannot append to the host feed {}: {e}", feed.display()))
}

/// `clawfort events`: prints the events `show` selects from the installation's feed and
/// the host feed.
pub fn show(paths: &Paths, show: &Show) -> anyhow::Result<()> {
    let records = select(&gateway_feed(paths), &host_feed(), show)?;
    if show.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else if records.is_empty() {
        println!("no security events");
    } else {
        print!("{}", table(&records));
    }
    Ok(())
}

fn select(gateway: &Path, host: &Path, show: &Show) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut damaged = 0;
    for (file, whose) in [(gateway, "the gateway's"), (host, "root's host")] {
        let contents = feed::read(file).map_err(|e| {
            let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (run `sudo clawfort events`, or run it as the gateway's user)"
            } else {
                ""
            };
            anyhow::anyhow!(
                "cannot read {whose} events feed {}: {e}{fix}",
                file.display()
            )
        })?;
        records.extend(contents.records);
        damaged += contents.damaged;
    }
    if damaged > 0 {
        eprintln!("note: skipped {damaged} damaged line(s), cut by a power loss or not an event");
    }
    records.sort_by_key(|r| r.ts);
    records.retain(|r| show.since.is_none_or(|since| r.ts >= since));
    let skip = records.len().saturating_sub(show.limit);
    records.drain(..skip);
    Ok(records)
}

fn table(records: &[Record]) -> String {
    let rows: Vec<[String; 4]> = records
        .iter()
        .map(|r| {
            [
                r.ts.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                match r.source {
                    Source::Gateway => "gateway".to_owned(),
                    Source::Host => "host".to_owned(),
                },
                r.event.kind().to_owned(),
                r.event.describe(),
            ]
        })
        .collect();
    crate::columns::render(["TIME (UTC)", "SOURCE", "KIND", "EVENT"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts: &str, source: Source, event: Event) -> Record {
        Record {
            ts: ts.parse().unwrap(),
            source,
            event,
        }
    }

    #[test]
    fn both_feeds_are_merged_by_time_and_the_latest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, host) = (dir.path().join("g.jsonl"), dir.path().join("h.jsonl"));
        let ban = |ts| {
            at(
                ts,
                Source::Host,
                Event::Fail2banBan {
                    jail: "sshd".into(),
                    ip: "192.0.2.1".parse().unwrap(),
                },
            )
        };
        feed::append(
            &gateway,
            &[
                at(
                    "2026-11-30T09:00:00Z",
                    Source::Gateway,
                    Event::GatewayCrashRestart,
                ),
                at(
                    "2026-11-30T09:02:00Z",
                    Source::Gateway,
                    Event::GatewayCrashRestart,
                ),
            ],
            0o600,
        )
        .unwrap();
        feed::append(&host, &[ban("2026-11-30T09:01:00Z")], 0o644).unwrap();
        let show = |limit, since: Option<&str>| Show {
            json: false,
            limit,
            since: since.map(|s| s.parse().unwrap()),
        };
        let kinds = |records: Vec<Record>| -> Vec<&'static str> {
            records.iter().map(|r| r.event.kind()).collect()
        };
        let all = select(&gateway, &host, &show(50, None)).unwrap();
        assert_eq!(
            kinds(all.clone()),
            [
                "gateway-crash-restart",
                "fail2ban-ban",
                "gateway-crash-restart"
            ]
        );
        assert_eq!(
            kinds(select(&gateway, &host, &show(1, None)).unwrap()).len(),
            1
        );
        let since = select(&gateway, &host, &show(50, Some("2026-11-30T09:01:00Z"))).unwrap();
        assert_eq!(since.len(), 2);
        let text = table(&all);
        assert!(
            text.contains("2026-11-30 09:01:00  host     fail2ban-ban           fail2ban banned 192.0.2.1 (jail sshd)"),
            "{text}"
        );
    }

    #[test]
    fn a_jail_name_is_short_and_plain() {
        assert_eq!(parse_jail("sshd").unwrap(), "sshd");
        assert!(parse_jail("clawfort-gateway_2.x").is_ok());
        assert!(parse_jail("").is_err());
        assert!(parse_jail("a b").unwrap_err().contains("not a jail name"));
        assert!(parse_jail(&"a".repeat(65)).is_err());
    }

    /// What the fallback unit passes (systemd-boot's entry ids) goes through; text that could
    /// carry anything else into the owner's chat does not.
    #[test]
    fn a_boot_entry_id_is_a_plain_file_name() {
        for id in [
            "clawfort-6.12.118+deb13-cloud-amd64.conf",
            "clawfort-9.9.10-bad.conf",
        ] {
            assert_eq!(parse_boot_entry(id).unwrap(), id);
        }
        for bad in ["", "../x.conf", ".hidden", "a b", "x\nclawfort", "<b>"] {
            assert!(
                parse_boot_entry(bad)
                    .unwrap_err()
                    .contains("not a boot entry id"),
                "{bad:?}"
            );
        }
        assert!(parse_boot_entry(&"a".repeat(129)).is_err());
        let event = Event::BootFallback {
            failed: "clawfort-9.9.10-bad.conf".to_owned(),
            booted: "clawfort-9.9.9-good.conf".to_owned(),
        };
        assert_eq!(event.kind(), "boot-fallback");
        assert!(event.notifies());
        assert!(event
            .describe()
            .contains("clawfort-9.9.10-bad.conf failed all its tries"));
    }
}
