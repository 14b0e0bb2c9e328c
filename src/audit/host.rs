//! `--deep`: checks of the host the gateway runs on. Each check yields exactly one finding:
//! `info` when it passed (saying what was seen), `warn`/`critical` on a problem, and a
//! finding saying why when it could not run (tool missing, or not permitted: the service
//! user cannot read the firewall or sshd's keys; run the audit as root for those).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::command::{self, Outcome};
use super::{Finding, Severity};
use crate::config::Config;

/// OpenClaw's canvas host port, which must stay private too.
const CANVAS_PORT: u16 = 18793;
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const SERVICE_USER: &str = "openclaw";

pub fn check(config: &Config) -> Vec<Finding> {
    let listeners = read_listeners();
    vec![
        gateway_sockets(config, &listeners),
        nftables(),
        sshd(),
        fail2ban(),
        update_timers(),
        super::reboot::finding(&super::reboot::state()),
        docker_socket(config, &listeners),
    ]
}

/// A listening TCP socket from /proc/net/tcp{,6}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub ip: IpAddr,
    pub port: u16,
    /// The uid that created the socket.
    pub uid: u32,
}

fn read_listeners() -> Result<Vec<Listener>, String> {
    let mut all = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(file) {
            Ok(text) => all.extend(parse_proc_net_tcp(&text)),
            Err(e) if file.ends_with('6') && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {file}: {e}")),
        }
    }
    Ok(all)
}

/// Parses the kernel's socket table; keeps sockets in state 0A (LISTEN).
pub fn parse_proc_net_tcp(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&"0A") {
                return None;
            }
            let (addr, port) = fields.get(1)?.split_once(':')?;
            Some(Listener {
                ip: parse_hex_ip(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                uid: fields.get(7)?.parse().ok()?,
            })
        })
        .collect()
}

/// The kernel prints each 32-bit word of the address in host byte order.
fn parse_hex_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

fn gateway_sockets(config: &Config, listeners: &Result<Vec<Listener>, String>) -> Finding {
    const ID: &str = "host.gateway_sockets";
    let listeners = match listeners {
        Ok(l) => l,
        Err(e) => return Finding::new(ID, Severity::Warn, "cannot list listening sockets", e, ""),
    };
    let ports: BTreeSet<u16> = [config.gateway.port, CANVAS_PORT].into();
    let gateway: Vec<&Listener> = listeners
        .iter()
        .filter(|l| ports.contains(&l.port))
        .collect();
    let exposed: Vec<String> = gateway
        .iter()
        .filter(|l| !l.ip.is_loopback())
        .map(|l| format!("{}:{}", l.ip, l.port))
        .collect();
    if !exposed.is_empty() {
        return Finding::new(
            ID,
            Severity::Critical,
            "the gateway listens on a non-loopback address",
            format!("listening on {}", exposed.join(", ")),
            "set gateway.bind to \"loopback\" and restart the gateway",
        );
    }
    if gateway.iter().any(|l| l.uid == 0) {
        return Finding::new(
            ID,
            Severity::Critical,
            "the gateway runs as root",
            format!("a socket on port {:?} belongs to uid 0", ports),
            "run the gateway as an unprivileged user (User=openclaw in the systemd unit)",
        );
    }
    let others: BTreeSet<String> = listeners
        .iter()
        .filter(|l| !l.ip.is_loopback())
        .map(|l| format!("{}:{}", l.ip, l.port))
        .collect();
    let others = if others.is_empty() {
        "none".to_string()
    } else {
        others.into_iter().collect::<Vec<_>>().join(", ")
    };
    if gateway.is_empty() {
        Finding::new(
            ID,
            Severity::Info,
            format!("no gateway listening on ports {ports:?}"),
            format!("other non-loopback listeners: {others}"),
            "",
        )
    } else {
        let seen: Vec<String> = gateway
            .iter()
            .map(|l| format!("{}:{}", l.ip, l.port))
            .collect();
        Finding::new(
            ID,
            Severity::Info,
            "gateway sockets are loopback only",
            format!(
                "gateway: {}; other non-loopback listeners: {others}",
                seen.join(", ")
            ),
            "",
        )
    }
}

/// What a host tool printed, when it ran and the check can judge its output.
struct ToolOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// The tool's output, or the finding that says why the check cannot be made: the tool is
/// missing, could not run, or failed because this user is not permitted.
fn tool_output(
    id: &'static str,
    tool: &str,
    purpose: &str,
    outcome: Outcome,
) -> Result<ToolOutput, Finding> {
    match outcome {
        Outcome::Missing => Err(Finding::new(
            id,
            Severity::Warn,
            format!("{tool} is not installed: cannot check {purpose}"),
            "",
            format!("install {tool}, or check {purpose} by hand"),
        )),
        Outcome::Failed(e) => Err(Finding::new(
            id,
            Severity::Warn,
            format!("cannot check {purpose}"),
            e,
            "",
        )),
        Outcome::Ran {
            ok: false, stderr, ..
        } if !rustix::process::geteuid().is_root() => Err(Finding::new(
            id,
            Severity::Info,
            format!("cannot check {purpose} as this user"),
            format!(
                "{tool} failed as uid {}: {}",
                rustix::process::geteuid().as_raw(),
                first_line(&stderr)
            ),
            "run `sudo clawfort security audit --deep` to include this check",
        )),
        Outcome::Ran { ok, stdout, stderr } => Ok(ToolOutput { ok, stdout, stderr }),
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

fn nftables() -> Finding {
    const ID: &str = "host.nftables";
    let purpose = "the firewall";
    let outcome = command::run("nft", &["-j", "list", "ruleset"]);
    let ToolOutput { ok, stdout, stderr } = match tool_output(ID, "nft", purpose, outcome) {
        Ok(output) => output,
        Err(finding) => return finding,
    };
    if !ok {
        return Finding::new(
            ID,
            Severity::Warn,
            "cannot read the nftables ruleset",
            first_line(&stderr),
            "",
        );
    }
    match input_drop_coverage(&stdout) {
        Err(e) => Finding::new(
            ID,
            Severity::Warn,
            "cannot parse `nft -j list ruleset`",
            e,
            "",
        ),
        Ok(c) if c.ipv4 && c.ipv6 => Finding::new(
            ID,
            Severity::Info,
            "inbound traffic is denied by default",
            format!("input chains with policy drop: {}", c.chains.join(", ")),
            "",
        ),
        Ok(c) => Finding::new(
            ID,
            Severity::Critical,
            "inbound traffic is not denied by default",
            format!(
                "no input chain with policy drop for {}",
                match (c.ipv4, c.ipv6) {
                    (false, false) => "IPv4 or IPv6",
                    (false, true) => "IPv4",
                    _ => "IPv6",
                }
            ),
            "add `table inet filter { chain input { type filter hook input priority 0; \
             policy drop; ... } }` to /etc/nftables.conf",
        ),
    }
}

/// Which families have a base chain on the input hook whose policy is drop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DropCoverage {
    pub ipv4: bool,
    pub ipv6: bool,
    pub chains: Vec<String>,
}

/// Reads `nft -j list ruleset`. Several base chains may hook input (fail2ban adds one with
/// policy accept); a packet must pass all of them, so one drop chain per family suffices.
pub fn input_drop_coverage(json: &str) -> Result<DropCoverage, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let items = value
        .get("nftables")
        .and_then(|v| v.as_array())
        .ok_or("no `nftables` array")?;
    let mut coverage = DropCoverage::default();
    for chain in items.iter().filter_map(|i| i.get("chain")) {
        let field = |k: &str| chain.get(k).and_then(|v| v.as_str()).unwrap_or("");
        if field("hook") != "input" || field("policy") != "drop" {
            continue;
        }
        match field("family") {
            "inet" => {
                coverage.ipv4 = true;
                coverage.ipv6 = true;
            }
            "ip" => coverage.ipv4 = true,
            "ip6" => coverage.ipv6 = true,
            _ => continue,
        }
        coverage.chains.push(format!(
            "{} {} {}",
            field("family"),
            field("table"),
            field("name")
        ));
    }
    Ok(coverage)
}

fn sshd() -> Finding {
    const ID: &str = "host.sshd";
    let purpose = "the effective sshd configuration";
    let outcome = command::run("sshd", &["-T"]);
    if matches!(outcome, Outcome::Missing) {
        return Finding::new(ID, Severity::Info, "no OpenSSH server installed", "", "");
    }
    let ToolOutput { ok, stdout, stderr } = match tool_output(ID, "sshd", purpose, outcome) {
        Ok(output) => output,
        Err(finding) => return finding,
    };
    if !ok {
        return Finding::new(
            ID,
            Severity::Warn,
            "`sshd -T` failed",
            first_line(&stderr),
            "run `sshd -t` to see what is wrong with the configuration",
        );
    }
    judge_sshd(&stdout)
}

/// Judges `sshd -T` output (lower-case `key value` lines).
pub fn judge_sshd(dump: &str) -> Finding {
    const ID: &str = "host.sshd";
    let get = |key: &str| {
        dump.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let password = get("passwordauthentication");
    let root = get("permitrootlogin");
    let kbd = get("kbdinteractiveauthentication");
    let summary = format!(
        "passwordauthentication {password}, permitrootlogin {root}, \
         kbdinteractiveauthentication {kbd}"
    );
    if password == "yes" || root == "yes" {
        return Finding::new(
            ID,
            Severity::Critical,
            "SSH accepts passwords or root logins",
            summary,
            "set PasswordAuthentication no and PermitRootLogin no in \
             /etc/ssh/sshd_config.d/, then `systemctl reload ssh`",
        );
    }
    if root != "no" || kbd == "yes" {
        return Finding::new(
            ID,
            Severity::Warn,
            "SSH allows root logins by key or keyboard-interactive logins",
            summary,
            "set PermitRootLogin no and KbdInteractiveAuthentication no",
        );
    }
    Finding::new(
        ID,
        Severity::Info,
        "SSH is key-only without root login",
        summary,
        "",
    )
}

fn fail2ban() -> Finding {
    const ID: &str = "host.fail2ban";
    let outcome = command::run("fail2ban-client", &["status", "sshd"]);
    let purpose = "the fail2ban sshd jail";
    let ToolOutput { ok, stdout, stderr } =
        match tool_output(ID, "fail2ban-client", purpose, outcome) {
            Ok(output) => output,
            Err(finding) => return finding,
        };
    if ok && stdout.contains("Status for the jail: sshd") {
        let banned = stdout
            .lines()
            .find(|l| l.contains("Currently banned"))
            .map(|l| {
                l.trim()
                    .trim_start_matches(['|', '-', '`', ' '])
                    .to_string()
            })
            .unwrap_or_default();
        return Finding::new(
            ID,
            Severity::Info,
            "the fail2ban sshd jail is active",
            banned,
            "",
        );
    }
    Finding::new(
        ID,
        Severity::Warn,
        "the fail2ban sshd jail is not active",
        first_line(if stderr.trim().is_empty() {
            &stdout
        } else {
            &stderr
        }),
        "enable the sshd jail (backend = systemd) and `systemctl restart fail2ban`",
    )
}

fn update_timers() -> Finding {
    const ID: &str = "host.unattended_upgrades";
    const TIMERS: [&str; 2] = ["apt-daily-upgrade.timer", "apt-daily.timer"];
    let outcome = command::run("systemctl", &["is-enabled", TIMERS[0], TIMERS[1]]);
    if matches!(outcome, Outcome::Missing) {
        return Finding::new(
            ID,
            Severity::Info,
            "no systemctl: cannot check the automatic update timers",
            "",
            "",
        );
    }
    // `is-enabled` exits non-zero when a timer is disabled: judged below, whoever runs it.
    let (stdout, stderr) = match outcome {
        Outcome::Ran { stdout, stderr, .. } => (stdout, stderr),
        other => match tool_output(ID, "systemctl", "the update timers", other) {
            Ok(output) => (output.stdout, output.stderr),
            Err(finding) => return finding,
        },
    };
    let states: Vec<&str> = stdout.lines().map(str::trim).collect();
    let report: Vec<String> = TIMERS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{t} {}", states.get(i).copied().unwrap_or("unknown")))
        .collect();
    let installed = command::locate("unattended-upgrade").is_some();
    if states.len() == TIMERS.len() && states.iter().all(|s| *s == "enabled") && installed {
        return Finding::new(
            ID,
            Severity::Info,
            "automatic security updates are enabled",
            report.join(", "),
            "",
        );
    }
    let mut detail = report.join(", ");
    if !installed {
        detail.push_str("; unattended-upgrades is not installed");
    }
    if states.is_empty() {
        detail.push_str(&format!("; {}", first_line(&stderr)));
    }
    Finding::new(
        ID,
        Severity::Warn,
        "automatic security updates are not fully enabled",
        detail,
        "apt-get install unattended-upgrades && systemctl enable --now apt-daily.timer \
         apt-daily-upgrade.timer",
    )
}

fn docker_socket(config: &Config, listeners: &Result<Vec<Listener>, String>) -> Finding {
    const ID: &str = "host.docker_socket";
    let Ok(meta) = std::fs::metadata(DOCKER_SOCKET) else {
        return Finding::new(
            ID,
            Severity::Info,
            "no root Docker socket",
            DOCKER_SOCKET,
            "",
        );
    };
    let exposed = |who: &str| {
        Finding::new(
            ID,
            Severity::Critical,
            format!("{who} can use the root Docker socket"),
            format!(
                "{DOCKER_SOCKET} (owner {}, group {}, mode {:o}) gives root to whoever can \
                 connect to it",
                meta.uid(),
                meta.gid(),
                meta.permissions().mode() & 0o777
            ),
            "remove the service user from the docker group; the sandbox uses rootless Docker",
        )
    };
    let safe = |who: &str| {
        Finding::new(
            ID,
            Severity::Info,
            format!("{who} cannot reach the root Docker socket"),
            DOCKER_SOCKET,
            "",
        )
    };
    let euid = rustix::process::geteuid();
    if !euid.is_root() {
        let who = format!("uid {}", euid.as_raw());
        return match std::os::unix::net::UnixStream::connect(DOCKER_SOCKET) {
            Ok(_) => exposed(&who),
            Err(_) => safe(&who),
        };
    }
    // As root: judge the service user by the socket's permission bits.
    let gateway_uid = listeners.as_ref().ok().and_then(|l| {
        l.iter()
            .find(|l| l.port == config.gateway.port && l.uid != 0)
            .map(|l| l.uid)
    });
    let user = match gateway_uid {
        Some(uid) => users::by_uid(uid),
        None => users::by_name(SERVICE_USER),
    };
    let Some(user) = user else {
        return Finding::new(
            ID,
            Severity::Info,
            "cannot tell the service user, so the Docker socket was not judged",
            format!("no running gateway and no user {SERVICE_USER}"),
            "run the audit as the service user",
        );
    };
    let mode = meta.permissions().mode();
    let in_group = user.gid == meta.gid() || users::group_members(meta.gid()).contains(&user.name);
    let can_write = (meta.uid() == user.uid && mode & 0o200 != 0)
        || (in_group && mode & 0o020 != 0)
        || mode & 0o002 != 0;
    let who = format!("user {}", user.name);
    if can_write {
        exposed(&who)
    } else {
        safe(&who)
    }
}

/// Just enough of /etc/passwd and /etc/group to judge the Docker socket.
mod users {
    pub struct User {
        pub name: String,
        pub uid: u32,
        pub gid: u32,
    }

    fn passwd() -> Vec<User> {
        std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                Some(User {
                    name: f.first()?.to_string(),
                    uid: f.get(2)?.parse().ok()?,
                    gid: f.get(3)?.parse().ok()?,
                })
            })
            .collect()
    }

    pub fn by_uid(uid: u32) -> Option<User> {
        passwd().into_iter().find(|u| u.uid == uid)
    }

    pub fn by_name(name: &str) -> Option<User> {
        passwd().into_iter().find(|u| u.name == name)
    }

    pub fn group_members(gid: u32) -> Vec<String> {
        std::fs::read_to_string("/etc/group")
            .unwrap_or_default()
            .lines()
            .find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.get(2)?.parse::<u32>().ok()? == gid).then(|| {
                    f.get(3)
                        .map(|m| {
                            m.split(',')
                                .filter(|s| !s.is_empty())
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default()
                })
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:4965 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 1 1 0\n\
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0\n\
   2: 0100007F:4965 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   999        0 3 1 0\n";
        let l = parse_proc_net_tcp(tcp);
        assert_eq!(
            l,
            vec![
                Listener {
                    ip: "127.0.0.1".parse().unwrap(),
                    port: 18789,
                    uid: 999
                },
                Listener {
                    ip: "0.0.0.0".parse().unwrap(),
                    port: 22,
                    uid: 0
                },
            ]
        );
        let tcp6 = "header\n   0: 00000000000000000000000001000000:4965 00000000000000000000000000000000:0000 0A 0:0 0:0 0 1000 0 9\n";
        let l = parse_proc_net_tcp(tcp6);
        assert_eq!(l[0].ip, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(l[0].uid, 1000);
    }

    #[test]
    fn nftables_policy() {
        let hardened = r#"{"nftables":[{"metainfo":{}},
          {"table":{"family":"inet","name":"filter","handle":1}},
          {"chain":{"family":"inet","table":"filter","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}},
          {"chain":{"family":"inet","table":"f2b-table","name":"f2b-chain","handle":2,"type":"filter","hook":"input","prio":-1,"policy":"accept"}}]}"#;
        let c = input_drop_coverage(hardened).unwrap();
        assert!(c.ipv4 && c.ipv6);
        assert_eq!(c.chains, vec!["inet filter input"]);
        let v4_only = r#"{"nftables":[{"chain":{"family":"ip","table":"t","name":"in","hook":"input","policy":"drop"}}]}"#;
        let c = input_drop_coverage(v4_only).unwrap();
        assert!(c.ipv4 && !c.ipv6);
        let open = r#"{"nftables":[{"chain":{"family":"inet","table":"t","name":"in","hook":"input","policy":"accept"}}]}"#;
        assert_eq!(input_drop_coverage(open).unwrap(), DropCoverage::default());
    }

    #[test]
    fn sshd_judgement() {
        let good = "port 22\npasswordauthentication no\npermitrootlogin no\nkbdinteractiveauthentication no\n";
        assert_eq!(judge_sshd(good).severity, Severity::Info);
        let bad = "passwordauthentication yes\npermitrootlogin no\n";
        assert_eq!(judge_sshd(bad).severity, Severity::Critical);
        let meh = "passwordauthentication no\npermitrootlogin prohibit-password\n";
        assert_eq!(judge_sshd(meh).severity, Severity::Warn);
    }
}
