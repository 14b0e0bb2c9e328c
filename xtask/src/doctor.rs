//! `cargo xtask doctor`: which host tools the image build and the boot suite need for a target,
//! and which of them this host has. It only looks (PATH, files, `qemu-system-* --version`);
//! installing stays with `cargo xtask image` and `e2e`, which install what they miss when run
//! as root on Debian. The list comes from `image::host_tools::tools_for`, the function those
//! commands call, so the report cannot drift from what they check.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::image::host_tools::{self, HostOs, HostTool, InstallPlan, Purpose, ToolState};
use crate::image::{self, Target};

/// The states and the exit status, printed after the options by `--help`.
const AFTER_HELP: &str = "\
One line per host tool that `cargo xtask image` and `cargo xtask e2e` run for the target, with
its state and the Debian package that provides it:
  found              on PATH (or the sbin directories), or the file exists
  missing            not there
  too old            QEMU older than 10 (bookworm's 7.2 panics the trixie kernel under TCG)
  will be installed  missing or too old, but this is Debian and you are root: the command
                     that needs it installs it first (QEMU and qemu-user from
                     bookworm-backports on Debian 12)
When something is missing that nothing will install, the report ends with the apt-get commands
to run as root. doctor itself only looks: it installs and changes nothing.

Exit status:
  0  every tool is found or will be installed automatically
  1  a tool is missing or too old and will not be installed automatically (or an error, such
     as an unknown target)
  2  the command line is wrong";

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Target machine, a file image/targets/<TARGET>.toml [default: x86_64].
    #[arg(long, value_enum, conflicts_with = "all")]
    pub target: Option<Target>,
    /// Check the tools of every target (what `cargo xtask ci` needs).
    #[arg(long)]
    pub all: bool,
    /// Print the report as JSON on stdout (for CI), with the same exit status.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let targets = if args.all {
        Target::ALL.to_vec()
    } else {
        vec![args.target.unwrap_or_default()]
    };
    let host = HostOs::detect();
    let root = host_tools::is_root();
    let report = Report::build(&targets, host, root)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, Serialize)]
struct Report {
    host: HostReport,
    targets: Vec<String>,
    tools: Vec<ToolReport>,
    /// The apt-get commands that install what is missing, one a line; empty when nothing is
    /// missing or the missing tools will be installed automatically.
    install_commands: Vec<String>,
    /// Every tool is found or will be installed automatically (the exit status is 0).
    ok: bool,
}

#[derive(Debug, Serialize)]
struct HostReport {
    debian: bool,
    codename: String,
    root: bool,
    /// Root on Debian: `image` and `e2e` install missing tools themselves.
    installs_missing_tools: bool,
}

#[derive(Debug, Serialize)]
struct ToolReport {
    /// A program name (looked up on PATH and the sbin directories) or an absolute file path.
    probe: Cow<'static, str>,
    package: Cow<'static, str>,
    /// Installed from bookworm-backports (on a Debian 12 host).
    from_backports: bool,
    status: Status,
    /// Where it was found, when it was.
    path: Option<String>,
    min_major_version: Option<u32>,
    /// The major version `--version` printed, for tools with a minimum version.
    found_major_version: Option<u32>,
    /// Why it is needed: `image`, `foreign-arch`, `package`, `boot`, `e2e-network`.
    groups: Vec<&'static str>,
    /// The checked targets that need it.
    targets: Vec<String>,
    /// The command that installs it when missing (as root on Debian).
    installed_by: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Found,
    Missing,
    TooOld,
    WillBeInstalled,
}

/// One tool and everything that needs it, before it is probed.
struct Need {
    tool: HostTool,
    groups: BTreeSet<host_tools::Group>,
    targets: Vec<String>,
    for_build: bool,
}

impl Report {
    fn build(targets: &[Target], host: HostOs, root: bool) -> Result<Self> {
        let mut needs: Vec<Need> = Vec::new();
        for &id in targets {
            let name = id.to_string();
            let target = image::load_target(id)?;
            for purpose in [Purpose::Build, Purpose::Probe] {
                for group in host_tools::tools_for(&target, purpose)? {
                    for tool in group.tools.iter() {
                        let index = match needs.iter().position(|n| n.tool.probe == tool.probe) {
                            Some(index) => index,
                            None => {
                                needs.push(Need {
                                    tool: tool.clone(),
                                    groups: BTreeSet::new(),
                                    targets: Vec::new(),
                                    for_build: false,
                                });
                                needs.len() - 1
                            }
                        };
                        let need = &mut needs[index];
                        need.groups.insert(group.group);
                        if !need.targets.contains(&name) {
                            need.targets.push(name.clone());
                        }
                        need.for_build |= purpose == Purpose::Build;
                    }
                }
            }
        }
        let installs = host.is_debian && root;
        let mut tools = Vec::new();
        let mut not_installed = Vec::new();
        for need in needs {
            let tool = need.tool;
            let state = host_tools::check(&tool);
            // A too-old QEMU is replaced only where a newer one exists: bookworm-backports.
            let fixable = match &state {
                ToolState::Found { .. } => true,
                ToolState::Missing => installs,
                ToolState::TooOld { .. } => {
                    installs && tool.from_backports && host.uses_backports()
                }
            };
            let (status, path, found_major_version) = match state {
                ToolState::Found { path } => (Status::Found, Some(path), None),
                ToolState::Missing if fixable => (Status::WillBeInstalled, None, None),
                ToolState::Missing => (Status::Missing, None, None),
                ToolState::TooOld { path, major } if fixable => {
                    (Status::WillBeInstalled, Some(path), major)
                }
                ToolState::TooOld { path, major } => (Status::TooOld, Some(path), major),
            };
            if !fixable {
                not_installed.push(tool.clone());
            }
            tools.push(ToolReport {
                probe: tool.probe,
                package: tool.package,
                from_backports: tool.from_backports && host.uses_backports(),
                status,
                path: path.map(|p| p.display().to_string()),
                min_major_version: tool.min_major_version,
                found_major_version,
                groups: need.groups.iter().map(|g| g.name()).collect(),
                targets: need.targets,
                installed_by: if need.for_build {
                    "cargo xtask image"
                } else {
                    "cargo xtask e2e"
                },
            });
        }
        let install_commands = if not_installed.is_empty() {
            Vec::new()
        } else {
            InstallPlan::new(&not_installed, &host)
                .commands_text()
                .lines()
                .map(|line| line.trim().to_owned())
                .collect()
        };
        Ok(Self {
            host: HostReport {
                debian: host.is_debian,
                codename: host.codename,
                root,
                installs_missing_tools: installs,
            },
            targets: targets.iter().map(ToString::to_string).collect(),
            ok: not_installed.is_empty(),
            tools,
            install_commands,
        })
    }

    /// The report for a person: a header, one line per tool, and what to do.
    fn text(&self) -> String {
        let host = &self.host;
        let mut out = format!(
            "host: {}; {}\ntargets: {}\n\n",
            if host.debian {
                format!("Debian {}", host.codename)
            } else {
                "not Debian".to_owned()
            },
            if host.installs_missing_tools {
                "root, so `cargo xtask image` and `e2e` install missing tools themselves"
            } else if host.debian {
                "not root, so missing tools are not installed automatically"
            } else {
                "missing tools are not installed automatically"
            },
            self.targets.join(", ")
        );
        let rows: Vec<[String; 4]> = self.tools.iter().map(|t| self.row(t)).collect();
        let header = ["STATUS", "TOOL", "PACKAGE", "NEEDED FOR"].map(str::to_owned);
        let width = |column: usize| {
            rows.iter()
                .chain([&header])
                .map(|row| row[column].len())
                .max()
                .unwrap_or(0)
        };
        let widths = [width(0), width(1), width(2)];
        for row in [&header].into_iter().chain(&rows) {
            out.push_str(&format!(
                "{:w0$}  {:w1$}  {:w2$}  {}\n",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            ));
        }
        out.push('\n');
        let count = |status| self.tools.iter().filter(|t| t.status == status).count();
        let pending = count(Status::WillBeInstalled);
        if self.ok && pending == 0 {
            out.push_str(&format!(
                "All {} host tools are present.\n",
                self.tools.len()
            ));
        } else if self.ok {
            out.push_str(&format!(
                "{pending} host tools will be installed by the command that needs them; \
                 nothing to do by hand.\n"
            ));
        } else {
            let missing = count(Status::Missing) + count(Status::TooOld);
            out.push_str(&format!("{missing} host tools are missing or too old. "));
            if host.debian {
                out.push_str("Install them as root with:\n");
            } else {
                out.push_str(
                    "Install the packages above with this host's package manager; on Debian \
                     the commands (as root) are:\n",
                );
            }
            for line in &self.install_commands {
                out.push_str(&format!("    {line}\n"));
            }
        }
        out
    }

    fn row(&self, tool: &ToolReport) -> [String; 4] {
        let status = match (tool.status, tool.found_major_version) {
            (Status::Found, _) => "found".to_owned(),
            (Status::Missing, _) => "missing".to_owned(),
            (Status::TooOld, Some(major)) => format!("too old ({major})"),
            (Status::TooOld, None) => "too old".to_owned(),
            (Status::WillBeInstalled, _) => "will be installed".to_owned(),
        };
        let mut package = tool.package.to_string();
        if tool.from_backports {
            package.push_str(" from bookworm-backports");
        }
        let mut needed_for = tool.groups.join(", ");
        if self.targets.len() > 1 && tool.targets.len() < self.targets.len() {
            needed_for.push_str(&format!(" ({})", tool.targets.join(", ")));
        }
        if tool.status == Status::WillBeInstalled {
            needed_for.push_str(&format!("; by `{}`", tool.installed_by));
        }
        [status, tool.probe.to_string(), package, needed_for]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(is_debian: bool, codename: &str) -> HostOs {
        HostOs {
            is_debian,
            codename: codename.to_owned(),
        }
    }

    #[test]
    fn every_target_reports_each_tool_once_with_its_groups() {
        let targets = Target::ALL;
        let report = Report::build(&targets, host(true, "bookworm"), false).unwrap();
        let mut probes: Vec<&str> = report.tools.iter().map(|t| &*t.probe).collect();
        let count = probes.len();
        probes.sort();
        probes.dedup();
        assert_eq!(probes.len(), count, "a tool is listed twice");
        let arch_test = report
            .tools
            .iter()
            .find(|t| t.probe == "arch-test")
            .unwrap();
        assert_eq!(arch_test.groups, ["foreign-arch"]);
        assert!(
            arch_test.targets.iter().all(|t| t != "x86_64"),
            "{arch_test:?}"
        );
        assert!(
            arch_test.targets.iter().any(|t| t == "rpi"),
            "{arch_test:?}"
        );
        let qemu = report
            .tools
            .iter()
            .find(|t| t.probe == "qemu-system-x86_64")
            .unwrap();
        assert!(qemu.from_backports, "QEMU comes from backports on bookworm");
        assert_eq!(qemu.targets, ["x86_64"]);
    }

    #[test]
    fn a_missing_tool_fails_unless_root_on_debian_installs_it() {
        // Probing the real host: whatever it lacks decides `ok`, and `ok` must agree with
        // the statuses and the printed commands.
        for (debian, root) in [(true, true), (true, false), (false, false)] {
            let report = Report::build(&[Target::Aarch64], host(debian, "bookworm"), root).unwrap();
            let unresolved = report
                .tools
                .iter()
                .any(|t| matches!(t.status, Status::Missing | Status::TooOld));
            assert_eq!(report.ok, !unresolved);
            assert_eq!(report.install_commands.is_empty(), report.ok);
            if debian && root {
                assert!(report.ok, "root on Debian installs everything it lacks");
            }
            let text = report.text();
            for line in &report.install_commands {
                assert!(text.contains(line.as_str()), "{text}");
            }
        }
    }

    fn tool_report(probe: &'static str, status: Status, major: Option<u32>) -> ToolReport {
        ToolReport {
            probe: probe.into(),
            package: "qemu-system-x86".into(),
            from_backports: true,
            status,
            path: None,
            min_major_version: Some(10),
            found_major_version: major,
            groups: vec!["boot"],
            targets: vec!["x86_64".to_owned()],
            installed_by: "cargo xtask image",
        }
    }

    #[test]
    fn the_text_names_state_package_suite_and_the_commands() {
        let report = Report {
            host: HostReport {
                debian: true,
                codename: "bookworm".to_owned(),
                root: false,
                installs_missing_tools: false,
            },
            targets: vec!["x86_64".to_owned(), "rpi".to_owned()],
            tools: vec![tool_report("qemu-system-x86_64", Status::TooOld, Some(7))],
            install_commands: vec![
                "apt-get update".to_owned(),
                "apt-get install -y --no-install-recommends -t bookworm-backports \
                 qemu-system-x86 qemu-utils"
                    .to_owned(),
            ],
            ok: false,
        };
        let text = report.text();
        let line = text
            .lines()
            .find(|l| l.contains("qemu-system-x86_64"))
            .unwrap();
        assert!(line.starts_with("too old (7)"), "{line}");
        assert!(
            line.contains("qemu-system-x86 from bookworm-backports"),
            "{line}"
        );
        assert!(line.ends_with("boot (x86_64)"), "{line}");
        assert!(
            text.contains("Install them as root with:\n    apt-get update\n"),
            "{text}"
        );

        let report = Report {
            host: HostReport {
                root: true,
                installs_missing_tools: true,
                ..report.host
            },
            tools: vec![tool_report(
                "qemu-system-x86_64",
                Status::WillBeInstalled,
                Some(7),
            )],
            install_commands: Vec::new(),
            ok: true,
            ..report
        };
        let text = report.text();
        assert!(
            text.contains("will be installed") && text.contains("by `cargo xtask image`"),
            "{text}"
        );
        assert!(!text.contains("apt-get"), "{text}");
    }
}
