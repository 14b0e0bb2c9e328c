//! The testbed: everything the probe suite needs to know about the booted guests, written by
//! `cargo xtask e2e` (which owns the VMs and the network namespace) and read by the probe
//! binary; and the report the probe binary writes back. This file is compiled into both, so
//! the two sides cannot drift apart.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Testbed {
    pub target: String,
    /// The network namespace the guests' NICs are in (`ip netns exec <netns> ...`).
    pub netns: String,
    /// Private key authorised for the admin user: through the CIDATA seed on the published
    /// artifact, at build time on the self-test's variant.
    pub ssh_key: PathBuf,
    pub admin_user: String,
    pub service_user: String,
    /// One source address per kind of client: the firewall limits and fail2ban bans per
    /// source, so no probe can lock out another or the harness itself.
    pub sources: Sources,
    /// The network's IPv6 side, which the guests configure from router adverts.
    pub ipv6: Ipv6Lan,
    /// The guest under test.
    pub guest: Guest,
    /// A second boot of the same image, for the uniqueness probe (None: the probe is skipped).
    pub peer: Option<Guest>,
    /// How the booted disk came from the published artifact (None: a variant image built for
    /// the run, as the self-test's).
    pub booted: Option<BootedDisk>,
    /// What the image configuration promises, so probes know what to expect.
    pub expect: Expectations,
    /// The fake model provider and Telegram Bot API serving on the namespace side.
    pub fakes: Fakes,
    /// The gateway's apt repositories served to the guest (None: no gateway package was
    /// found beside the image, and the update probe fails saying so).
    #[serde(default)]
    pub repository: Option<Repository>,
    /// Where the JSON report goes.
    pub report: PathBuf,
    /// Scratch directory for the probes (SSH control sockets, known_hosts files).
    pub work_dir: PathBuf,
    /// Run only these probes (all when empty).
    pub only: Vec<String>,
    /// Never run these (`cargo xtask e2e --skip`); the report lists them as skipped.
    #[serde(default)]
    pub skip: Vec<String>,
}

/// The private network's IPv6 side: a unique local prefix the namespace advertises, and the
/// bridge the guests' link-local addresses are reached through.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ipv6Lan {
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    /// Interface index of the namespace's bridge: the scope id of a guest's link-local
    /// address seen from the namespace.
    pub bridge_index: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sources {
    /// The harness's own SSH session for checks from inside.
    pub admin: Ipv4Addr,
    /// The port scanner.
    pub scanner: Ipv4Addr,
    /// The port scanner's IPv6 address in the network's unique local prefix (its link-local
    /// source is the bridge's own).
    pub scanner_v6: Ipv6Addr,
    /// SSH protocol and authentication probes.
    pub ssh_prober: Ipv4Addr,
    /// The address that fails logins until fail2ban bans it.
    pub attacker: Ipv4Addr,
}

/// The `clawfort-fakes` process the harness runs in the namespace for the whole suite: the
/// agent's provider and Telegram, reached by the guest over the private network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fakes {
    /// The fake model server (OpenAI chat completions under `/v1`, Anthropic Messages).
    pub model: SocketAddrV4,
    /// The fake Telegram Bot API (the gateway's `channels.telegram.apiRoot`).
    pub telegram: SocketAddrV4,
    /// The static file server (the apt repositories), serving the run's `apt/` directory.
    pub files: SocketAddrV4,
    /// The script the fakes run (`clawfort-fakes --script`, mode 600): the API key the model
    /// fake requires, the bot token the Telegram fake serves, the model's answer. The probe
    /// reads its secrets from here; they never go into this file, a report or a log.
    pub script: PathBuf,
}

/// The gateway's apt repositories on the fakes' file server (`xtask/src/e2e/repository.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Repository {
    /// The gateway package's version in the image.
    pub installed_version: String,
    /// The same package at a higher version, signed by the key the trusted source names.
    pub trusted_version: String,
    /// A higher version still, signed by a key the guest does not trust.
    pub stranger_version: String,
    /// The apt source (`/etc/apt/sources.list.d/clawfort.sources`) of each, and
    /// unattended-upgrades' settings, rendered from the image definition with
    /// `[updates] repository_*` naming them.
    pub trusted_sources: PathBuf,
    pub stranger_sources: PathBuf,
    pub unattended_upgrades: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Guest {
    pub name: String,
    pub address: Ipv4Addr,
    /// Size of the VM's disk, larger than the image: first boot must grow the root to it.
    pub disk_bytes: u64,
    /// Seconds from QEMU start until an SSH login as admin worked.
    pub ssh_ready_s: f64,
    /// Seconds from QEMU start until the gateway answered `/healthz` (None: not reached).
    pub gateway_ready_s: Option<f64>,
    /// Its serial console, which a probe quotes when the guest never answers.
    pub serial_log: PathBuf,
}

/// The published artifact as the suite booted it: a copy-on-write layer whose only change is
/// the `user-data` on the CIDATA volume, keyed as the volume's README.txt tells a person.
/// `cargo xtask e2e` checks both claims below before booting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootedDisk {
    /// The file a user downloads (`cargo xtask image` output), never written by the suite.
    pub artifact: PathBuf,
    /// The CIDATA partition's byte range on the disk, `[start, end)`.
    pub cidata: [u64; 2],
    /// Every byte range the booted layer holds over the artifact (all inside `cidata`).
    pub changed_ranges: Vec<[u64; 2]>,
    /// The files on CIDATA that differ from the artifact's (only `user-data`).
    pub changed_files: Vec<String>,
    /// The `user-data` the guests booted with.
    pub user_data: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Expectations {
    pub ssh_port: u16,
    pub gateway_port: u16,
    pub canvas_port: u16,
    /// TCP ports the firewall opens besides SSH (`firewall.extra_tcp_ports`).
    pub extra_tcp_ports: Vec<u16>,
    /// UDP ports the firewall opens (`firewall.extra_udp_ports`).
    pub extra_udp_ports: Vec<u16>,
    /// TCP ports the service user may connect out to (`gateway.egress.tcp_ports`).
    pub egress_tcp_ports: Vec<u16>,
    /// The egress proxy's Unix socket (`gateway.egress.socket`).
    pub egress_socket: String,
    /// The service user's rootless Docker socket (`<sandbox.socket_dir>/docker.sock`).
    pub sandbox_socket: String,
    pub fail2ban_maxretry: u32,
    pub fail2ban_bantime_s: u64,
    /// Every `[sysctl]` key of the image definition and the value `sysctl -n` must print.
    pub sysctl: BTreeMap<String, String>,
    /// The worst `systemd-analyze security` exposure `clawfort.service` may have
    /// (`gateway.exposure_budget`).
    pub gateway_exposure_budget: f64,
    pub kernel_and_login: KernelAndLogin,
    /// How later kernels reach the boot loader: systemd-boot entries with boot counting on the
    /// UEFI targets (None: the Pi, whose raspi-firmware copies them to its FAT partition).
    #[serde(default)]
    pub boot_counting: Option<BootCounting>,
}

/// `[boot]` and the entry token of a UEFI target (issue 16, item 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootCounting {
    /// kernel-install's entry token (`image.name`): entries are `<token>-<version>.conf`.
    pub entry_token: String,
    /// Boots a later kernel's entry gets (`boot.tries`).
    pub tries: u8,
}

/// The kernel, login and update defaults of the image definition (issue 15, item 4).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelAndLogin {
    /// Modules that never load on this target (`kernel_modules.blocked` less the target's
    /// `kept_modules`).
    pub blocked_modules: Vec<String>,
    /// The umask of the admin's shells, in octal as `umask` prints it (`0027`).
    pub umask: String,
    /// The umask of the service user's systemd instance (`users.service.session_umask`), as
    /// /proc shows it (`0022`).
    pub service_umask: String,
    /// sshd `MaxSessions` (`ssh.max_sessions`).
    pub ssh_max_sessions: u32,
    /// needrestart's `$nrconf{restart}` (`updates.needrestart_mode`).
    pub needrestart_mode: String,
    /// unattended-upgrades reboots by itself for an update that needs it
    /// (`updates.automatic_reboot`)...
    pub automatic_reboot: bool,
    /// ...at this time (`updates.automatic_reboot_time`, `HH:MM`).
    pub automatic_reboot_time: String,
}

/// The probe binary's JSON report (at [`Testbed::report`]), which `cargo xtask e2e` reads back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub target: String,
    pub guest: Guest,
    pub peer: Option<Guest>,
    pub booted: Option<BootedDisk>,
    pub passed: usize,
    pub failed: usize,
    /// Probes the run was told to skip (`--skip`), in the suite's order.
    #[serde(default)]
    pub skipped: Vec<String>,
    pub duration_s: f64,
    pub probes: Vec<ProbeResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResult {
    pub name: String,
    pub passed: bool,
    /// What the probe found, or why it failed.
    pub detail: String,
    pub seconds: f64,
}
