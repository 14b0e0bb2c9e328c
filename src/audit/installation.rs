//! Which installation the audit looks at.
//!
//! `sudo clawfort security audit` must audit what the `clawfort` service runs, not
//! `/root/.openclaw`. So, run as root without `--config`, `OPENCLAW_CONFIG_PATH` or
//! `OPENCLAW_STATE_DIR`, the audit reads the service's definition (`systemctl show` when
//! systemd runs, else the unit file and its drop-ins under the systemd unit directories) for
//! its `User=`, `Environment=`, `EnvironmentFile=` and `ExecStart=` (`--config`), finds the
//! user's home in the passwd file, and derives the paths exactly as the gateway process
//! would (`Paths::from_parts`).
//!
//! The home comes from reading `/etc/passwd` rather than `getpwnam(3)`: rustix has no
//! passwd lookup, the appliance's service user is a local account, and a file reader can be
//! pointed at a test file, so this path is tested without root. A user known only to NSS
//! (LDAP, sssd) is not found; the audit then says so and audits the invoking user's
//! installation instead.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::command;
use crate::paths::{Paths, CONFIG_ENV, STATE_DIR_ENV};

/// The unit the appliance ships (overlays/usr/lib/systemd/system/clawfort.service.tera).
pub const UNIT: &str = "clawfort.service";
/// The egress proxy's unit (overlays/usr/lib/systemd/system/clawfort-egress.service.tera).
pub const EGRESS_UNIT: &str = "clawfort-egress.service";

/// Where discovery reads from; `system()` in production, temporary files in tests.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Directories searched for the unit file and its `.d/*.conf` drop-ins, in precedence
    /// order.
    pub unit_dirs: Vec<PathBuf>,
    /// The passwd database file.
    pub passwd: PathBuf,
    /// Ask `systemctl show` first (it knows drop-ins, overrides and the loaded state).
    pub systemctl: bool,
}

impl Sources {
    pub fn system() -> Self {
        Self {
            unit_dirs: [
                "/etc/systemd/system",
                "/run/systemd/system",
                "/usr/local/lib/systemd/system",
                "/usr/lib/systemd/system",
                "/lib/systemd/system",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            passwd: PathBuf::from("/etc/passwd"),
            systemctl: true,
        }
    }
}

/// The installation an audit looked at, for the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Installation {
    /// The user whose installation it is (the service's `User=`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    /// `clawfort.service`, `--config or OPENCLAW_CONFIG_PATH`, `OPENCLAW_STATE_DIR` or
    /// `invoking user`.
    pub source: String,
    /// For `clawfort.service`: where its settings were read (`systemctl show clawfort.service`
    /// or the unit file's path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Why the service's installation was not used, when it was looked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The service's installation: its user, that user's home, and the paths.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub user: String,
    /// The user's id and primary group from the passwd file (`clawfort setup` hands the
    /// files it writes to them).
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub paths: Paths,
    /// Where the settings came from (`systemctl show` or the unit file's path).
    pub from: String,
}

/// The settings of the unit that decide the paths.
#[derive(Debug, Default)]
struct UnitSettings {
    user: Option<String>,
    environment: Vec<(String, String)>,
    environment_files: Vec<PathBuf>,
    exec_start: Vec<String>,
}

/// Finds the installation `clawfort.service` runs, or says why it cannot.
pub fn discover(sources: &Sources) -> Result<Discovered, String> {
    let (unit, from) = match sources.systemctl.then(|| systemctl_show(UNIT)).flatten() {
        Some(Ok(unit)) => (unit, format!("systemctl show {UNIT}")),
        Some(Err(reason)) => return Err(reason),
        None => read_unit_files(&sources.unit_dirs, UNIT)?,
    };
    let user = unit
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into());
    let PasswdEntry { uid, gid, home } = passwd_entry(&sources.passwd, &user)?;
    // As systemd does: Environment= first, EnvironmentFile= values override.
    let mut env = unit.environment.clone();
    for file in &unit.environment_files {
        if let Ok(iter) = dotenvy::from_path_iter(file) {
            env.extend(iter.flatten());
        }
    }
    let var = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))
    };
    let config = config_arg(&unit.exec_start).or_else(|| var(CONFIG_ENV));
    let paths = Paths::from_parts(config, var(STATE_DIR_ENV), &home);
    Ok(Discovered {
        user,
        uid,
        gid,
        home,
        paths,
        from,
    })
}

/// Where the egress proxy's unit takes its allow list from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressAllow {
    /// The installation has no egress proxy unit.
    NotInstalled,
    /// `clawfort egress --allow-file PATH`: the root-owned file.
    File { path: PathBuf, from: String },
    /// No `--allow-file`: the proxy derives its list from an `openclaw.json`, which the
    /// gateway it confines can write (an older unit).
    Config { from: String },
}

/// Finds `clawfort-egress.service` as [`discover`] finds the gateway's unit, and what it
/// reads its allow list from: the `--allow-file` of its `ExecStart=`.
pub fn egress_allow(sources: &Sources) -> EgressAllow {
    let (unit, from) = match sources
        .systemctl
        .then(|| systemctl_show(EGRESS_UNIT))
        .flatten()
    {
        Some(Ok(unit)) => (unit, format!("systemctl show {EGRESS_UNIT}")),
        Some(Err(_)) => return EgressAllow::NotInstalled,
        None => match read_unit_files(&sources.unit_dirs, EGRESS_UNIT) {
            Ok(found) => found,
            Err(_) => return EgressAllow::NotInstalled,
        },
    };
    match arg_value(&unit.exec_start, "--allow-file") {
        Some(path) => EgressAllow::File { path, from },
        None => EgressAllow::Config { from },
    }
}

/// `systemctl show`: `None` when systemctl is missing or systemd is not running (then the
/// unit files are read), an error when systemd runs but has no such unit.
fn systemctl_show(name: &str) -> Option<Result<UnitSettings, String>> {
    let properties = "LoadState,User,Environment,EnvironmentFiles,ExecStart";
    let command::Outcome::Ran {
        ok: true, stdout, ..
    } = command::run("systemctl", &["show", name, "--property", properties])
    else {
        return None;
    };
    let mut unit = UnitSettings::default();
    for line in stdout.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "LoadState" if value != "loaded" => {
                return Some(Err(format!("systemd has no {name} (LoadState={value})")))
            }
            "User" => unit.user = Some(value.to_string()),
            "Environment" => unit.environment.extend(assignments(value)),
            // `/path (ignore_errors=yes)`, one per line.
            "EnvironmentFiles" => {
                if let Some(path) = value.split(" (").next().filter(|p| !p.is_empty()) {
                    unit.environment_files.push(PathBuf::from(path));
                }
            }
            // `{ path=... ; argv[]=/usr/bin/clawfort gateway ; ... }`
            "ExecStart" => {
                if let Some(argv) = value
                    .split("argv[]=")
                    .nth(1)
                    .and_then(|rest| rest.split(" ;").next())
                {
                    unit.exec_start = words(argv);
                }
            }
            _ => {}
        }
    }
    Some(Ok(unit))
}

/// The unit file from the first directory that has it, then its drop-ins in name order.
fn read_unit_files(dirs: &[PathBuf], name: &str) -> Result<(UnitSettings, String), String> {
    let Some(main) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) else {
        return Err(format!(
            "no {name} in {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let mut files = vec![main.clone()];
    let mut dropins: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d.join(format!("{name}.d"))).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    dropins.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    files.extend(dropins);
    let mut unit = UnitSettings::default();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        parse_unit(&text, &mut unit);
    }
    Ok((unit, main.display().to_string()))
}

/// Applies the `[Service]` settings of one unit file (or drop-in) to `unit`.
fn parse_unit(text: &str, unit: &mut UnitSettings) {
    let mut in_service = false;
    let mut pending = String::new();
    for raw in text.lines() {
        // A trailing backslash continues the line.
        if let Some(part) = raw.strip_suffix('\\') {
            pending.push_str(part);
            pending.push(' ');
            continue;
        }
        pending.push_str(raw);
        let line = std::mem::take(&mut pending);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !in_service {
            continue;
        }
        let value = value.trim();
        match key.trim() {
            "User" => unit.user = Some(value.to_string()),
            // An empty assignment resets the list, as in systemd.
            "Environment" if value.is_empty() => unit.environment.clear(),
            "Environment" => unit.environment.extend(assignments(value)),
            "EnvironmentFile" if value.is_empty() => unit.environment_files.clear(),
            "EnvironmentFile" => unit
                .environment_files
                .push(PathBuf::from(value.trim_start_matches('-'))),
            "ExecStart" if value.is_empty() => unit.exec_start.clear(),
            "ExecStart" => {
                let command = value.trim_start_matches(['-', '@', ':', '+', '!']);
                unit.exec_start = words(command);
            }
            _ => {}
        }
    }
}

/// `--config PATH` or `--config=PATH` in the command line.
fn config_arg(argv: &[String]) -> Option<PathBuf> {
    arg_value(argv, "--config")
}

/// `FLAG PATH` or `FLAG=PATH` in the command line.
fn arg_value(argv: &[String], flag: &str) -> Option<PathBuf> {
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        if arg == flag {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// `A=1 "B=two words" 'C=x'` -> pairs.
fn assignments(value: &str) -> Vec<(String, String)> {
    words(value)
        .into_iter()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Splits on whitespace, honouring double and single quotes and backslash escapes (systemd's
/// rules for `Environment=` and command lines, without specifier expansion).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

struct PasswdEntry {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// The ids and home directory of `user` from a passwd file
/// (`name:pw:uid:gid:gecos:home:shell`).
fn passwd_entry(passwd: &Path, user: &str) -> Result<PasswdEntry, String> {
    let text = std::fs::read_to_string(passwd)
        .map_err(|e| format!("cannot read {}: {e}", passwd.display()))?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() == 7 && fields[0] == user)
        .and_then(|fields| {
            Some(PasswdEntry {
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: PathBuf::from(fields[5]),
            })
        })
        .filter(|entry| entry.home.is_absolute())
        .ok_or_else(|| {
            format!(
                "{UNIT} runs as {user}, who has no entry with an absolute home in {}",
                passwd.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_systemd_quoting() {
        assert_eq!(
            words(r#"A=1 "B=two words" 'C=x y' D=a\ b"#),
            ["A=1", "B=two words", "C=x y", "D=a b"]
        );
        assert_eq!(
            config_arg(&words("/usr/bin/clawfort --config=/srv/c.json gateway")),
            Some(PathBuf::from("/srv/c.json"))
        );
        assert_eq!(
            config_arg(&words(
                "/usr/bin/clawfort --config '/srv/my dir/c.json' gateway"
            )),
            Some(PathBuf::from("/srv/my dir/c.json"))
        );
    }

    #[test]
    fn unit_settings_and_dropin_resets() {
        let mut unit = UnitSettings::default();
        parse_unit(
            "[Unit]\nUser=nobody\n[Service]\nUser=openclaw\nEnvironment=NO_COLOR=1 \\\n  \
             OPENCLAW_STATE_DIR=/srv/a\nEnvironmentFile=-/home/openclaw/.openclaw/.env\n\
             ExecStart=/usr/bin/clawfort gateway\n",
            &mut unit,
        );
        assert_eq!(unit.user.as_deref(), Some("openclaw"));
        assert_eq!(unit.environment.len(), 2);
        assert_eq!(
            unit.environment_files,
            [PathBuf::from("/home/openclaw/.openclaw/.env")]
        );
        parse_unit(
            "[Service]\nEnvironment=\nExecStart=\nExecStart=/x --config /c.json\n",
            &mut unit,
        );
        assert!(unit.environment.is_empty());
        assert_eq!(config_arg(&unit.exec_start), Some(PathBuf::from("/c.json")));
    }

    #[test]
    fn the_egress_units_allow_file_from_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            unit_dirs: vec![dir.path().to_path_buf()],
            passwd: dir.path().join("passwd"),
            systemctl: false,
        };
        assert_eq!(egress_allow(&sources), EgressAllow::NotInstalled);
        let unit = dir.path().join(EGRESS_UNIT);
        std::fs::write(
            &unit,
            "[Service]\nExecStart=/usr/bin/clawfort egress --config %d/openclaw.json\n",
        )
        .unwrap();
        let from = unit.display().to_string();
        assert_eq!(
            egress_allow(&sources),
            EgressAllow::Config { from: from.clone() }
        );
        // A drop-in replacing the command line wins.
        let dropins = dir.path().join(format!("{EGRESS_UNIT}.d"));
        std::fs::create_dir(&dropins).unwrap();
        std::fs::write(
            dropins.join("10-allow.conf"),
            "[Service]\nExecStart=\nExecStart=/usr/bin/clawfort egress \\\n  \
             --allow-file=/etc/clawfort/egress-allow.json\n",
        )
        .unwrap();
        assert_eq!(
            egress_allow(&sources),
            EgressAllow::File {
                path: PathBuf::from("/etc/clawfort/egress-allow.json"),
                from
            }
        );
    }
}
