//! The appliance's configuration files (`overlays/`, and a target's own trees such as
//! `overlays.rpi/`), rendered for every target through the image builder's own loader and
//! template context (`clawfort-imagedef`: the definition merged, validated, and the context with
//! `target` and `build`), and checked for what the image promises. They need no boot and no
//! Debian tools, so they run with every `cargo test`; the boot-and-probe suite checks the same
//! properties on a running image.

use std::os::unix::fs::PermissionsExt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use clawfort::audit::installation::{EgressAllow, Sources};
use clawfort::config::{Bind, Config, EnvSource, SandboxMode};
use clawfort_imagedef::{known_targets, LoadedConfig};

#[path = "shared/image.rs"]
mod image;

use image::{definition, render_target, Files, ROOT_PARTUUID};

const GATEWAY_PORTS: [&str; 2] = ["18789", "18793"];
/// `systemd-analyze security` (systemd 257) of the gateway's unit before the egress proxy; it
/// may not get worse.
const GATEWAY_EXPOSURE: f64 = 1.1;
/// The same for the egress proxy's unit, as measured when it was written.
const EGRESS_EXPOSURE: f64 = 1.0;
/// The same for the per-command unit of host commands, as measured when it was written.
const EXEC_EXPOSURE: f64 = 0.5;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `image/clawfort.toml` as shipped (its typed view is the same for every target).
fn shipped_definition() -> LoadedConfig {
    definition("x86_64", "").expect("the shipped image definition loads")
}

/// x86_64's overlays rendered with `config_overlay` merged over the definition.
fn render(config_overlay: &str) -> Result<Files, String> {
    render_target("x86_64", config_overlay)
}

/// Runs `check` on the shipped overlays of every target in `image/targets/`; a failing check
/// names the target.
fn each_target(check: impl Fn(&Files)) {
    let targets = known_targets(&repo().join("image/targets"));
    assert!(
        ["x86_64", "aarch64", "rpi"]
            .iter()
            .all(|t| targets.iter().any(|known| known == t)),
        "{targets:?}"
    );
    for target in targets {
        let files = render_target(&target, "")
            .unwrap_or_else(|e| panic!("target {target}: the shipped definition: {e}"));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&files))) {
            eprintln!("the check above failed for target `{target}`");
            resume_unwind(panic);
        }
    }
}

/// Lines that are not blank and not comments.
fn directives(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with("//"))
        .collect()
}

/// sshd semantics: the first value of a keyword wins.
fn sshd_value<'a>(config: &'a str, keyword: &str) -> Option<&'a str> {
    directives(config).into_iter().find_map(|line| {
        let (key, value) = line.split_once(char::is_whitespace)?;
        key.eq_ignore_ascii_case(keyword).then(|| value.trim())
    })
}

#[test]
fn firewall_drops_by_default_and_never_opens_the_gateway() {
    each_target(|files| {
        let nft = &files["/etc/nftables.conf"];
        let rules = directives(nft);
        // A reload must not wipe fail2ban's table: only our own table is replaced.
        assert!(!rules.iter().any(|r| r.contains("flush ruleset")));
        assert!(rules.contains(&"delete table inet filter"));
        assert!(rules.contains(&"type filter hook input priority filter; policy drop;"));
        assert!(rules.contains(&"type filter hook forward priority filter; policy drop;"));
        assert!(rules.contains(&"tcp dport 22 ct state new accept"));
        assert!(
            rules.iter().any(
                |r| r.contains("update @ssh_new_v4") && r.contains("limit rate over 10/minute")
            ),
            "no per-source rate limit on new SSH connections"
        );
        for rule in rules {
            for port in GATEWAY_PORTS {
                assert!(
                    !rule.contains(port),
                    "a rule mentions gateway port {port}: {rule}"
                );
            }
        }
    });
}

#[test]
fn the_service_user_reaches_only_loopback_by_default() {
    each_target(|files| {
        let rules = directives(&files["/etc/nftables.conf"]);
        for rule in [
            "meta skuid \"openclaw\" jump service_user_egress",
            "oif \"lo\" accept",
            "reject with icmpx admin-prohibited",
        ] {
            assert!(rules.contains(&rule), "nftables.conf lacks `{rule}`");
        }
        // The reject is the last word of the user's chain, and by default nothing but loopback
        // and replies is accepted before it: the service user's traffic goes through the proxy.
        let chain = &rules[rules
            .iter()
            .position(|r| r.starts_with("chain service_user_egress"))
            .expect("the service user's egress chain")..];
        let end = chain.iter().position(|r| *r == "}").unwrap();
        assert_eq!(chain[end - 1], "reject with icmpx admin-prohibited");
        assert_eq!(
            chain[1..end - 2],
            ["oif \"lo\" accept", "ct state established,related accept"],
            "{chain:?}"
        );

        let files = render("[gateway.egress]\ntcp_ports = [443, 11434]\n").unwrap();
        let rules = directives(&files["/etc/nftables.conf"]);
        assert!(rules.contains(&"meta l4proto tcp tcp dport { 443, 11434 } accept"));
    });
}

#[test]
fn extra_ports_are_opened_but_a_gateway_port_stops_the_build() {
    let files = render("[firewall]\nextra_tcp_ports = [443]\nextra_udp_ports = [51820]").unwrap();
    let rules = directives(&files["/etc/nftables.conf"]);
    assert!(rules.contains(&"tcp dport { 443 } ct state new accept"));
    assert!(rules.contains(&"udp dport { 51820 } accept"));

    for port in GATEWAY_PORTS {
        let err = render(&format!("[firewall]\nextra_tcp_ports = [443, {port}]")).unwrap_err();
        assert!(
            err.contains("firewall.extra_tcp_ports") && err.contains(port),
            "unexpected error: {err}"
        );
    }
}

#[test]
fn sshd_is_key_only_without_root_or_forwarding_beyond_local() {
    each_target(|files| {
        let sshd = &files["/etc/ssh/sshd_config.d/10-clawfort.conf"];
        for (keyword, want) in [
            ("PasswordAuthentication", "no"),
            ("KbdInteractiveAuthentication", "no"),
            ("AuthenticationMethods", "publickey"),
            ("PermitRootLogin", "no"),
            ("MaxAuthTries", "3"),
            ("X11Forwarding", "no"),
            ("AllowAgentForwarding", "no"),
            ("AllowTcpForwarding", "local"),
            ("AllowGroups", "sudo"),
            ("HostKey", "/etc/ssh/ssh_host_ed25519_key"),
            ("Compression", "no"),
            ("MaxSessions", "2"),
            ("Banner", "/etc/issue.net"),
            (
                "Ciphers",
                "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com",
            ),
        ] {
            assert_eq!(sshd_value(sshd, keyword), Some(want), "sshd {keyword}");
        }
        let host_keys = directives(sshd)
            .into_iter()
            .filter(|line| line.starts_with("HostKey "))
            .count();
        assert_eq!(host_keys, 1, "only the ed25519 host key is configured");
        assert!(sshd_value(sshd, "KexAlgorithms")
            .unwrap()
            .starts_with("mlkem768x25519-sha256,"));
    });
}

/// The templates keep guards of their own for what validation refuses (a gateway port in the
/// firewall, an unknown host key type, no group allowed to log in over SSH), in case a
/// definition ever gets past it: rendered here from a validated definition changed afterwards.
#[test]
fn the_templates_refuse_what_validation_refuses() {
    for (section, setting, words) in [
        (
            "firewall",
            "extra_tcp_ports = [443, 18789]",
            "firewall.extra_tcp_ports lists 18789",
        ),
        (
            "firewall",
            "extra_udp_ports = [18793]",
            "firewall.extra_udp_ports lists 18793",
        ),
        ("ssh", "host_key_types = []", "ssh.host_key_types is empty"),
        (
            "ssh",
            "host_key_types = [\"ed25519\", \"dsa\"]",
            "ssh.host_key_types lists `dsa`",
        ),
        ("ssh", "allow_groups = []", "ssh.allow_groups is empty"),
    ] {
        let mut config = shipped_definition();
        let changed: toml::Table = toml::from_str(setting).unwrap();
        let table = config.document.get_mut(section).unwrap();
        table.as_table_mut().unwrap().extend(changed);
        let err = image::render(&config)
            .err()
            .unwrap_or_else(|| panic!("{setting}: the templates rendered it"));
        assert!(err.contains(words), "{setting}: {err}");
    }
}

#[test]
fn password_logins_follow_the_image_config() {
    let files = render("[ssh]\npassword_authentication = true").unwrap();
    let sshd = &files["/etc/ssh/sshd_config.d/10-clawfort.conf"];
    assert_eq!(sshd_value(sshd, "PasswordAuthentication"), Some("yes"));
    // Otherwise AuthenticationMethods would silently keep passwords off.
    assert_eq!(sshd_value(sshd, "AuthenticationMethods"), None);
}

#[test]
fn an_unknown_host_key_type_stops_the_build() {
    let err = render("[ssh]\nhost_key_types = [\"ed25519\", \"dsa\"]").unwrap_err();
    assert!(
        err.contains("ssh.host_key_types") && err.contains("dsa"),
        "{err}"
    );
}

#[test]
fn the_gateway_unit_is_sandboxed() {
    each_target(|files| {
        let unit = directives(&files["/usr/lib/systemd/system/clawfort.service"]);
        for line in [
            "User=openclaw",
            "ExecStart=/usr/bin/clawfort gateway",
            "EnvironmentFile=-/home/openclaw/.openclaw/.env",
            "Restart=always",
            "ProtectSystem=strict",
            "ProtectHome=tmpfs",
            "BindPaths=/home/openclaw/.openclaw",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=",
            "AmbientCapabilities=",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "SystemCallFilter=@system-service",
            "SystemCallFilter=~@privileged @resources",
            "SystemCallArchitectures=native",
            "MemoryDenyWriteExecute=yes",
            "RestrictNamespaces=yes",
            "IPAddressDeny=any",
            "IPAddressAllow=localhost",
            "UMask=0077",
            // Outgoing calls only through the egress proxy's socket.
            "Environment=CLAWFORT_EGRESS_PROXY=unix:/run/clawfort-egress/egress.sock",
            "Wants=clawfort-gateway-token.service clawfort-egress.socket clawfort-exec.socket",
        ] {
            assert!(unit.contains(&line), "clawfort.service lacks `{line}`");
        }
        assert!(
            !unit
                .iter()
                .any(|l| l.starts_with("IPAddressAllow=") && *l != "IPAddressAllow=localhost"),
            "the gateway unit may reach loopback only: {unit:?}"
        );
        // Re-allowing a call of a denied group (setrlimit of @resources, say) costs the unit its
        // `systemd-analyze security` item: 0.9 became 1.1 on the appliance's systemd 257.
        let allows: Vec<&&str> = unit
            .iter()
            .filter(|l| l.starts_with("SystemCallFilter=") && !l.contains('@'))
            .collect();
        assert!(allows.is_empty(), "the gateway unit re-allows {allows:?}");
    });
}

/// The gateway looks for the rootless daemon where the daemon listens, in a directory
/// tmpfiles makes for the service user alone at boot: outside /run/user, which the gateway's
/// unit hides (ProtectHome=), so the gateway sees the daemon's current socket whenever either
/// of them starts.
#[test]
fn the_gateway_reaches_the_rootless_daemon_socket() {
    each_target(|files| {
        let socket = "/run/clawfort-sandbox/docker.sock";
        let gateway = directives(&files["/usr/lib/systemd/system/clawfort.service"]);
        assert!(
            gateway.contains(&format!("Environment=DOCKER_HOST=unix://{socket}").as_str()),
            "{gateway:?}"
        );
        // Nothing else of the unit is loosened for it: no path of /run/user is mapped back in.
        assert!(
            !gateway
                .iter()
                .any(|l| l.contains("/run/user") || l.starts_with("BindReadOnlyPaths=")),
            "{gateway:?}"
        );
        let daemon = directives(&files["/etc/systemd/user/docker.service"]);
        assert!(
            daemon.contains(
                &format!(
                "ExecStart=/usr/share/docker.io/contrib/dockerd-rootless.sh --host=unix://{socket}"
            )
                .as_str()
            ),
            "{daemon:?}"
        );
        let import = directives(&files["/etc/systemd/user/clawfort-sandbox-import.service"]);
        assert!(
            import
                .iter()
                .any(|l| l.starts_with("ExecStart=") && l.ends_with(&format!(" unix://{socket}"))),
            "{import:?}"
        );
        let tmpfiles = directives(&files["/usr/lib/tmpfiles.d/clawfort-sandbox.conf"]);
        assert_eq!(
            tmpfiles,
            ["d /run/clawfort-sandbox 0700 openclaw openclaw -"],
            "the socket's directory is private to the service user"
        );
    });
}

/// Host commands run in a unit of their own per command (clawfort-exec.socket, Accept=yes):
/// one the gateway's socket variable names, only the service user can connect to, that never
/// sees the state directory or the gateway's secrets and has no network and limits of its own.
#[test]
fn host_commands_run_in_a_unit_of_their_own() {
    each_target(|files| {
        let socket = directives(&files["/usr/lib/systemd/system/clawfort-exec.socket"]);
        for line in [
            "ListenStream=/run/clawfort-exec/exec.sock",
            "SocketUser=openclaw",
            "SocketMode=0600",
            "Accept=yes",
        ] {
            assert!(
                socket.contains(&line),
                "clawfort-exec.socket lacks `{line}`"
            );
        }
        let gateway = directives(&files["/usr/lib/systemd/system/clawfort.service"]);
        assert!(
            gateway.contains(&"Environment=CLAWFORT_EXEC_RUNNER=unix:/run/clawfort-exec/exec.sock"),
            "{gateway:?}"
        );
        let runner = directives(&files["/usr/lib/systemd/system/clawfort-exec@.service"]);
        for line in [
            "User=openclaw",
            "ExecStart=/usr/bin/clawfort exec-runner",
            "StandardInput=socket",
            "StandardOutput=socket",
            "ProtectSystem=strict",
            "ProtectHome=tmpfs",
            "BindPaths=-/home/openclaw/workspace",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=",
            "PrivateUsers=yes",
            "RestrictNamespaces=yes",
            "PrivateNetwork=yes",
            "IPAddressDeny=any",
            "TasksMax=128",
            "MemoryMax=512M",
        ] {
            assert!(
                runner.contains(&line),
                "clawfort-exec@.service lacks `{line}`"
            );
        }
        // Nothing of the state directory, and none of the gateway's environment.
        assert!(
            !runner
                .iter()
                .any(|l| l.contains(".openclaw") || l.starts_with("EnvironmentFile=")),
            "{runner:?}"
        );
        assert!(shipped_definition()
            .image
            .services
            .enable
            .iter()
            .any(|u| u == "clawfort-exec.socket"));
    });
}

#[test]
fn the_egress_proxy_is_a_sandboxed_unit_of_its_own() {
    each_target(|files| {
        let socket = directives(&files["/usr/lib/systemd/system/clawfort-egress.socket"]);
        for line in [
            "ListenStream=/run/clawfort-egress/egress.sock",
            "SocketUser=root",
            "SocketGroup=openclaw",
            "SocketMode=0660",
            "Accept=no",
            "WantedBy=sockets.target",
        ] {
            assert!(
                socket.contains(&line),
                "clawfort-egress.socket lacks `{line}`"
            );
        }
        let service = directives(&files["/usr/lib/systemd/system/clawfort-egress.service"]);
        for line in [
            "Requires=clawfort-egress.socket",
            // Root's allow list, never the service user's openclaw.json.
            "ExecStart=/usr/bin/clawfort egress --allow-file /etc/clawfort/egress-allow.json",
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateDevices=yes",
            "PrivateUsers=yes",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=",
            "AmbientCapabilities=",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "SystemCallFilter=@system-service",
            "SystemCallArchitectures=native",
            "MemoryDenyWriteExecute=yes",
            "RestrictNamespaces=yes",
            "SocketBindDeny=any",
        ] {
            assert!(
                service.contains(&line),
                "clawfort-egress.service lacks `{line}`"
            );
        }
        // Not the service user (whose traffic nftables confines), never the secrets, and nothing
        // the service user can write: its allow list is root's alone.
        for forbidden in [
            "User=",
            "Group=",
            "EnvironmentFile=",
            "BindPaths=",
            "ReadWritePaths=",
            "LoadCredential=",
            "SetCredential=",
            "ImportCredential=",
        ] {
            assert!(
                !service.iter().any(|l| l.starts_with(forbidden)),
                "clawfort-egress.service sets {forbidden}"
            );
        }
        for private in [".env", "openclaw.json", "/home/"] {
            assert!(
                !service.iter().any(|l| l.contains(private)),
                "clawfort-egress.service names {private}: {service:?}"
            );
        }
        // Any unicast destination, but never link-local (the cloud metadata service) or multicast.
        assert!(service.contains(&"IPAddressDeny=any"));
        let allowed: Vec<(std::net::IpAddr, u32)> = service
            .iter()
            .filter_map(|l| l.strip_prefix("IPAddressAllow="))
            .flat_map(str::split_whitespace)
            .map(|cidr| {
                let (ip, bits) = cidr.split_once('/').expect("a CIDR block");
                (ip.parse().unwrap(), bits.parse().unwrap())
            })
            .collect();
        let reachable = |ip: &str| {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            allowed.iter().any(|&(net, bits)| match (net, ip) {
                (std::net::IpAddr::V4(net), std::net::IpAddr::V4(ip)) => {
                    bits == 0 || (u32::from(net) ^ u32::from(ip)) >> (32 - bits) == 0
                }
                (std::net::IpAddr::V6(net), std::net::IpAddr::V6(ip)) => {
                    bits == 0 || (u128::from(net) ^ u128::from(ip)) >> (128 - bits) == 0
                }
                _ => false,
            })
        };
        for ip in [
            "1.1.1.1",
            "10.77.0.9",
            "127.0.0.53",
            "160.79.104.10",
            "169.253.255.255",
            "169.255.0.1",
            "172.16.0.1",
            "192.168.1.10",
            "223.255.255.255",
            "::1",
            "2001:db8::1",
            "fd00::1",
            "fec0::1",
        ] {
            assert!(reachable(ip), "the proxy cannot reach {ip}");
        }
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "224.0.0.251",
            "239.255.255.250",
            "255.255.255.255",
            "fe80::1",
            "febf::1",
            "ff02::1",
        ] {
            assert!(!reachable(ip), "the proxy may reach {ip}");
        }
        // The image ships no allow list: before `clawfort setup` the proxy reaches nothing.
        for tree in ["overlays", "overlays.rpi"] {
            let dir = repo().join(tree).join("etc/clawfort");
            assert!(!dir.exists(), "{} ships an allow list", dir.display());
        }
        // What setup, `egress sync` and the audit find as the file this unit reads.
        let units = tempfile::tempdir().unwrap();
        std::fs::write(
            units.path().join("clawfort-egress.service"),
            &files["/usr/lib/systemd/system/clawfort-egress.service"],
        )
        .unwrap();
        let found = clawfort::audit::installation::egress_allow(&Sources {
            unit_dirs: vec![units.path().to_path_buf()],
            passwd: units.path().join("passwd"),
            systemctl: false,
        });
        assert!(
            matches!(&found, EgressAllow::File { path, .. }
            if path.as_path() == Path::new(clawfort::egress::allow_file::DEFAULT_PATH)),
            "{found:?}"
        );
        // Enabled in the image: the socket starts the proxy on the gateway's first call.
        assert!(shipped_definition()
            .image
            .services
            .enable
            .iter()
            .any(|u| u == "clawfort-egress.socket"));
    });
}

/// Runs `systemd-analyze security --offline=yes` on the rendered units. It needs the
/// image's systemd (257: ratings differ between versions): `CLAWFORT_SYSTEMD_ANALYZE` names
/// a `systemd-analyze` command, or the one on PATH is used if it is 257 or newer; otherwise
/// the test says so and passes (the boot-and-probe suite measures the booted image).
#[test]
fn both_units_keep_their_systemd_analyze_exposure() {
    let command = std::env::var("CLAWFORT_SYSTEMD_ANALYZE").unwrap_or("systemd-analyze".into());
    let version = std::process::Command::new(&command)
        .arg("--version")
        .output();
    let major = version.as_ref().ok().and_then(|out| {
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().nth(1)?.parse::<u32>().ok()
    });
    if major.is_none_or(|major| major < 257) {
        eprintln!("skipped: no systemd-analyze 257 or newer ({command}: {major:?})");
        return;
    }
    each_target(|files| {
        let dir = tempfile::tempdir().unwrap();
        for (unit, ceiling) in [
            ("clawfort.service", GATEWAY_EXPOSURE),
            ("clawfort-egress.service", EGRESS_EXPOSURE),
            ("clawfort-exec@.service", EXEC_EXPOSURE),
        ] {
            // A template is rated as one of its instances.
            let path = dir.path().join(unit.replace("@.", "@1."));
            std::fs::write(&path, &files[&format!("/usr/lib/systemd/system/{unit}")]).unwrap();
            let out = std::process::Command::new(&command)
                .args(["security", "--offline=yes", "--no-pager"])
                .arg(&path)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let exposure: f64 = text
                .lines()
                .find_map(|l| l.split("Overall exposure level for ").nth(1))
                .and_then(|rest| {
                    rest.split(": ")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or_else(|| {
                    panic!(
                        "no rating for {unit}: {text}{}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            assert!(
                exposure <= ceiling,
                "{unit} rates {exposure}, worse than {ceiling}:\n{text}"
            );
        }
    });
}

#[test]
fn the_default_gateway_config_is_accepted_by_the_gateway() {
    each_target(|files| {
        let text = &files["/usr/share/clawfort/openclaw.json"];
        let env = EnvSource::fixed([("OPENCLAW_GATEWAY_TOKEN".to_owned(), "ab".repeat(32))]);
        let config = Config::parse(text, &env).unwrap_or_else(|e| panic!("{e}\n{text}"));
        config
            .check_startable()
            .expect("the gateway starts with it");
        assert_eq!(config.gateway.bind, Bind::Loopback);
        assert_eq!(config.gateway.port, 18789);
        assert_eq!(
            config.gateway.token.as_ref().map(|t| t.value.len()),
            Some(64)
        );
        assert!(
            config.literal_secrets.is_empty(),
            "the token must come from .env"
        );
        assert_eq!(config.sandbox_mode, SandboxMode::All);
        // The image the first boot loads into the service user's rootless Docker.
        assert_eq!(
            config.sandbox.image,
            shipped_definition().image.sandbox.image
        );
        assert!(!config.auto_approve);
        // The agent's workspace is the directory the image makes and the unit maps in, outside
        // the state directory (OpenClaw's default ~/.openclaw/workspace would be inside it).
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
        assert_eq!(config.agent_workspace, Some(home.join("workspace")));
        assert!(
            files["/usr/lib/systemd/system/clawfort.service"]
                .lines()
                .any(|l| l == "BindPaths=-/home/openclaw/workspace"),
            "the gateway unit does not map the agent's workspace"
        );
        for denied in ["/etc", "/root"] {
            assert!(
                config
                    .security
                    .denied_paths
                    .iter()
                    .any(|p| p == Path::new(denied)),
                "{denied} not denied"
            );
        }
    });
}

#[test]
fn fail2ban_bans_through_nftables_with_growing_ban_times() {
    each_target(|files| {
        let jails = &files["/etc/fail2ban/jail.d/clawfort.local"];
        let rules = directives(jails);
        for line in [
            "banaction = nftables",
            "backend = systemd",
            "bantime = 1h",
            "bantime.increment = true",
            "bantime.factor = 2",
            "bantime.maxtime = 1w",
            "maxretry = 5",
            "[sshd]",
        ] {
            assert!(
                rules.contains(&line),
                "jail.d/clawfort.local lacks `{line}`"
            );
        }
    });
}

/// No fail2ban jail or filter for the gateway: every client of its loopback-only socket is
/// 127.0.0.1 or ::1, which fail2ban's `ignoreself` never bans, so such a jail could never ban
/// anybody (the reason is written in jail.d/clawfort.local). The only section is sshd's, and
/// nothing keeps `ignoreself` from protecting the owner's tunnel.
#[test]
fn fail2ban_has_no_gateway_jail_it_could_never_use() {
    each_target(|files| {
        let jails = &files["/etc/fail2ban/jail.d/clawfort.local"];
        let sections: Vec<&str> = directives(jails)
            .into_iter()
            .filter(|line| line.starts_with('['))
            .collect();
        assert_eq!(sections, ["[DEFAULT]", "[sshd]"]);
        assert!(
            !jails.contains("ignoreself = false"),
            "a jail that bans loopback would lock out the owner's SSH tunnel"
        );
        let filters: Vec<&String> = files
            .keys()
            .filter(|path| path.starts_with("/etc/fail2ban/filter.d/"))
            .collect();
        assert!(filters.is_empty(), "{filters:?}");
    });
}

#[test]
fn every_sysctl_of_the_image_config_is_set() {
    each_target(|files| {
        let sysctl = directives(&files["/etc/sysctl.d/99-clawfort.conf"]);
        let wanted = shipped_definition().image.sysctl;
        assert_eq!(sysctl.len(), wanted.len());
        for (key, value) in wanted {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            assert!(
                sysctl.contains(&format!("{key} = {value}").as_str()),
                "{key}"
            );
        }
        let mut sorted = sysctl.clone();
        sorted.sort();
        assert_eq!(
            sysctl, sorted,
            "sorted, so the same config renders the same file"
        );
    });
}

#[test]
fn unattended_upgrades_use_exactly_the_configured_origins() {
    each_target(|files| {
        let text = &files["/etc/apt/apt.conf.d/52clawfort-unattended-upgrades"];
        // `#clear` is an apt directive, not a comment: it drops the package's own origin list.
        assert!(text.contains("\n#clear Unattended-Upgrade::Origins-Pattern;\n"));
        let origins: Vec<String> = shipped_definition()
            .image
            .updates
            .origins
            .iter()
            .map(|origin| format!("\"{origin}\";"))
            .collect();
        let listed: Vec<String> = directives(text)
            .into_iter()
            .filter(|line| line.starts_with("\"origin="))
            .map(str::to_owned)
            .collect();
        assert_eq!(listed, origins);
    });
}

/// The aarch64 and Pi builds both write `clawfort_<version>_arm64.deb` into one output
/// directory (and one repository can hold only one file of that name): every file of the
/// package renders the same for both targets, so both make the same package.
#[test]
fn the_gateway_package_is_the_same_for_every_target_of_an_architecture() {
    let package = shipped_definition().image.package;
    let aarch64 = render_target("aarch64", "").unwrap();
    let rpi = render_target("rpi", "").unwrap();
    let mut compared = 0;
    for path in &package.files {
        assert_eq!(aarch64.get(path), rpi.get(path), "{path}");
        compared += usize::from(aarch64.contains_key(path));
    }
    // The units and the helper come from the overlays (the binary from cargo).
    assert!(compared >= package.files.len() - 2, "{compared}");
}

/// No repository named: the gateway's apt source is there, disabled, and no origin of it is
/// trusted. One named: apt reads it with its certificate as the only signer it accepts, and
/// unattended-upgrades takes the `clawfort` origin (`cargo xtask repo`'s) from it.
#[test]
fn the_gateway_repository_is_off_until_named_and_then_pinned_to_its_key() {
    each_target(|files| {
        let sources = directives(&files["/etc/apt/sources.list.d/clawfort.sources"]);
        assert!(sources.contains(&"Enabled: no"), "{sources:?}");
        assert!(
            !sources.iter().any(|l| l.starts_with("Signed-By")),
            "{sources:?}"
        );
        let upgrades = &files["/etc/apt/apt.conf.d/52clawfort-unattended-upgrades"];
        assert!(!upgrades.contains("origin=clawfort"), "{upgrades}");
    });

    let named = r#"
        [updates]
        repository_url = "https://apt.example.org/clawfort"
        repository_suite = "edge"
        repository_key = "tests/fixtures/apt/repository.asc"
    "#;
    let files = render(named).unwrap();
    let sources = &files["/etc/apt/sources.list.d/clawfort.sources"];
    let stanza = directives(sources);
    for line in [
        "URIs: https://apt.example.org/clawfort",
        "Suites: edge",
        "Components: main",
        "Signed-By:",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        ".",
        "-----END PGP PUBLIC KEY BLOCK-----",
    ] {
        assert!(stanza.contains(&line), "{line} in {sources}");
    }
    assert!(!stanza.contains(&"Enabled: no"), "{sources}");
    // deb822: the certificate's lines continue the field (indented), none starts a new one.
    let after_signed_by = sources.split("Signed-By:\n").nth(1).unwrap();
    assert!(
        after_signed_by.lines().all(|l| l.starts_with(' ')),
        "{after_signed_by}"
    );
    let upgrades = &files["/etc/apt/apt.conf.d/52clawfort-unattended-upgrades"];
    assert!(
        upgrades.contains("\"origin=clawfort,codename=edge\";"),
        "{upgrades}"
    );

    // Half a repository, or its secret key, stops the build with the key named.
    let no_key = render("[updates]\nrepository_url = \"https://apt.example.org/c\"\n").unwrap_err();
    assert!(no_key.contains("updates.repository_key"), "{no_key}");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("repo.key");
    std::fs::write(
        &secret,
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n",
    )
    .unwrap();
    let leaked = render(&format!(
        "[updates]\nrepository_url = \"https://apt.example.org/c\"\nrepository_key = \"{}\"\n",
        secret.display()
    ))
    .unwrap_err();
    assert!(leaked.contains("SECRET key"), "{leaked}");
}

/// The Raspberry Pi's own tree (`overlays.rpi/`): raspi-firmware rewrites cmdline.txt from
/// these settings on every kernel update, so they must give the line the builder wrote first:
/// the root by this build's PARTUUID, the target's consoles and its extra words.
#[test]
fn the_raspberry_pi_firmware_settings_match_the_target() {
    let files = render_target("rpi", "").unwrap();
    let settings = directives(&files["/etc/default/raspi-firmware"]);
    let root = format!("ROOTPART=\"PARTUUID={ROOT_PARTUUID}\"");
    assert!(settings.contains(&root.as_str()), "{settings:?}");
    let cmdline = definition("rpi", "").unwrap().target.kernel_cmdline;
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let consoles: Vec<&str> = words
        .iter()
        .filter_map(|word| word.strip_prefix("console="))
        .collect();
    let consoles = format!("CONSOLES=\"{}\"", consoles.join(" "));
    assert!(settings.contains(&consoles.as_str()), "{settings:?}");
    let extra = repo().join("overlays.rpi/etc/default/raspi-extra-cmdline");
    for word in std::fs::read_to_string(extra).unwrap().split_whitespace() {
        assert!(words.contains(&word), "`{word}` is not in {cmdline}");
    }
    // Only the Pi gets them.
    assert!(!render("")
        .unwrap()
        .contains_key("/etc/default/raspi-firmware"));
}

/// The audit rules follow the service user and its subordinate ids wherever the definition
/// puts them, on both ABIs; every watched directory that appears only at run time is made by
/// tmpfiles before the rules load (a watch auditctl refuses would drop the rules after it);
/// and the lock comes last.
#[test]
fn audit_rules_follow_the_service_user_and_load_whole() {
    let files =
        render("[users.service]\nname = \"agent\"\nsubid_start = 200000\nsubid_count = 70000\n")
            .unwrap();
    let rules = directives(&files["/etc/audit/rules.d/clawfort.rules"]);
    for arch in ["b64", "b32"] {
        for who in ["-F uid=agent ", "-F uid>=200000 -F uid<=269999 "] {
            let rule =
                format!("-a always,exit -F arch={arch} -S execve,execveat {who}-k clawfort-exec");
            assert!(rules.contains(&rule.as_str()), "{rule} in {rules:#?}");
        }
    }
    assert_eq!(rules.last(), Some(&"-e 2"));
    let tmpfiles = directives(&files["/usr/lib/tmpfiles.d/clawfort-audit.conf"]);
    for made_at_run_time in ["/home/agent/.openclaw/credentials", "/etc/clawfort"] {
        assert!(
            rules
                .iter()
                .any(|r| r.starts_with(&format!("-w {made_at_run_time} "))),
            "{made_at_run_time} is watched"
        );
        assert!(
            tmpfiles
                .iter()
                .any(|l| l.starts_with(&format!("d {made_at_run_time} "))),
            "tmpfiles makes {made_at_run_time}"
        );
    }
}

/// Each target's blocklist is `kernel_modules.blocked` less its `kept_modules`, every module
/// both `install ... /bin/false` and blacklisted; the Pi keeps the USB storage it may boot
/// from, the UEFI targets block it.
#[test]
fn kernel_modules_are_blocked_except_what_a_target_boots_from() {
    let blocked = shipped_definition().image.kernel_modules.blocked;
    for module in [
        "dccp",
        "sctp",
        "rds",
        "tipc",
        "cramfs",
        "udf",
        "usb-storage",
        "uas",
    ] {
        assert!(blocked.iter().any(|m| m == module), "{module}");
    }
    for module in ["vfat", "squashfs", "overlay", "fuse"] {
        assert!(
            !blocked.iter().any(|m| m == module),
            "{module}: the boot partitions and Docker need it"
        );
    }
    for target in known_targets(&repo().join("image/targets")) {
        let files = render_target(&target, "").unwrap();
        let lines = directives(&files["/etc/modprobe.d/clawfort-blocked.conf"]);
        let expected = definition(&target, "").unwrap().blocked_modules();
        let wanted: Vec<String> = expected
            .iter()
            .flat_map(|m| [format!("install {m} /bin/false"), format!("blacklist {m}")])
            .collect();
        assert_eq!(lines, wanted, "target {target}");
        let usb_kept = target == "rpi";
        for module in ["usb-storage", "uas"] {
            assert_eq!(
                !expected.iter().any(|m| m == module),
                usb_kept,
                "target {target}: {module}"
            );
        }
    }
}

/// A target may only keep what the definition blocks: a misspelt name would silently keep
/// nothing, so the loader refuses it and names the key.
#[test]
fn a_kept_module_must_be_a_blocked_one() {
    let err = definition("rpi", "[kernel_modules]\nblocked = [\"sctp\"]\n").unwrap_err();
    assert!(
        format!("{err:#}").contains("target.kept_modules"),
        "{err:#}"
    );
}

/// umask, password hashing and the banner come from `[login]`: login.defs (console logins,
/// useradd), ssh.service (every SSH session) and profile.d (login shells) agree, and the
/// banner names no OS.
#[test]
fn login_defaults_follow_the_image_config() {
    each_target(|files| {
        let defs = directives(&files["/etc/login.defs"]);
        for line in [
            "UMASK\t\t027",
            "ENCRYPT_METHOD\t\tYESCRYPT",
            "YESCRYPT_COST_FACTOR\t5",
        ] {
            assert!(defs.contains(&line), "{line:?} in {defs:?}");
        }
        assert_eq!(
            directives(&files["/etc/systemd/system/ssh.service.d/10-clawfort-umask.conf"]),
            ["[Service]", "UMask=027"]
        );
        assert_eq!(
            directives(&files["/etc/profile.d/clawfort-umask.sh"]),
            ["umask 027"]
        );
        // Debian's pam_umask gives a user whose group bears its name the owner's bits for the
        // group (027 becomes 007); the profile runs it again without that rule.
        for banner in ["/etc/issue", "/etc/issue.net"] {
            let text = &files[banner];
            assert!(text.starts_with("Authorised access only."), "{text}");
            assert!(!text.contains("Debian") && !text.contains('\\'), "{text}");
        }
    });
    // Debian's pam_umask gives a user whose group bears its name the owner's bits for the group
    // (027 becomes 007); the profile, which pam-auth-update puts after Debian's line, runs it
    // again without that rule.
    let profile =
        std::fs::read_to_string(repo().join("overlays/usr/share/pam-configs/clawfort-umask"))
            .unwrap();
    assert!(
        profile.contains("Session-Type: Additional\n")
            && profile.contains("\toptional\tpam_umask.so nousergroups\n"),
        "{profile}"
    );
    let files = render("[login]\numask = \"077\"\n").unwrap();
    assert!(files["/etc/profile.d/clawfort-umask.sh"].contains("umask 077"));
    let err = render("[login]\numask = \"22x\"\n").unwrap_err();
    assert!(err.contains("login.umask"), "{err}");
    let err = render("[users.service]\nsession_umask = \"0o22\"\n").unwrap_err();
    assert!(err.contains("users.service.session_umask"), "{err}");
}

/// needrestart restarts what an update left on old libraries, without asking.
#[test]
fn needrestart_restarts_automatically() {
    each_target(|files| {
        assert_eq!(
            directives(&files["/etc/needrestart/conf.d/50-clawfort.conf"]),
            ["$nrconf{restart} = 'a';"]
        );
    });
    assert!(shipped_definition()
        .image
        .debian
        .packages
        .iter()
        .any(|p| p == "needrestart"));
    let err = render("[ssh]\nmax_sessions = 0\n").unwrap_err();
    assert!(err.contains("ssh.max_sessions"), "{err}");
    let err = render("[updates]\nneedrestart_mode = \"x\"\n").unwrap_err();
    assert!(err.contains("updates.needrestart_mode"), "{err}");
}

/// The maintenance window: unattended-upgrades reboots by itself at the definition's time, and
/// a time `shutdown -r` would read otherwise (or not at all) is refused with the key named.
#[test]
fn automatic_reboots_happen_in_the_maintenance_window() {
    const FILE: &str = "/etc/apt/apt.conf.d/52clawfort-unattended-upgrades";
    each_target(|files| {
        let text = &files[FILE];
        assert!(
            text.contains("Unattended-Upgrade::Automatic-Reboot \"true\";"),
            "{text}"
        );
        assert!(
            text.contains("Unattended-Upgrade::Automatic-Reboot-Time \"04:00\";"),
            "{text}"
        );
    });
    let files =
        render("[updates]\nautomatic_reboot = false\nautomatic_reboot_time = \"23:30\"\n").unwrap();
    assert!(files[FILE].contains("Unattended-Upgrade::Automatic-Reboot \"false\";"));
    assert!(files[FILE].contains("Unattended-Upgrade::Automatic-Reboot-Time \"23:30\";"));
    for bad in [
        "4:00", "24:00", "04:60", "now", "04:00:00", " 04:00", "0a:00",
    ] {
        let err = render(&format!("[updates]\nautomatic_reboot_time = \"{bad}\"\n")).unwrap_err();
        assert!(
            err.contains("updates.automatic_reboot_time") && err.contains("HH:MM"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn the_journal_goes_to_a_collector_only_when_one_is_named() {
    const FILE: &str = "/etc/systemd/journal-upload.conf.d/10-clawfort.conf";
    each_target(|files| {
        assert_eq!(directives(&files[FILE]), ["[Upload]"], "no URL by default");
    });
    let files = render("[journald]\nupload_url = \"https://logs.example.net:19532\"\n").unwrap();
    assert_eq!(
        directives(&files[FILE]),
        ["[Upload]", "URL=https://logs.example.net:19532"]
    );
    assert!(shipped_definition()
        .image
        .debian
        .packages
        .iter()
        .any(|p| p == "systemd-journal-remote"));
    for bad in ["logs.example.net:19532", "ftp://logs", "https://a b"] {
        let err = render(&format!("[journald]\nupload_url = \"{bad}\"\n")).unwrap_err();
        assert!(err.contains("journald.upload_url"), "{bad}: {err}");
    }
}

/// A file of `overlays/` that is no template (rendered trees hold only the templates).
fn overlay_file(path: &str) -> String {
    std::fs::read_to_string(repo().join("overlays").join(path)).unwrap()
}

/// The value of an INI `key = value` whose value may go on over indented lines (fail2ban).
fn ini_values(text: &str, key: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        values.push(v.trim().to_owned());
        while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t']) && !l.trim().is_empty())
        {
            values.push(next.trim().to_owned());
        }
    }
    values
}

/// Runs a command line of the image's data (`/usr/bin/clawfort ...`) with this build's binary
/// and `feed` as the host feed. As root it must write the event; otherwise the arguments must
/// have parsed (the refusal is the root check's, not clap's exit 2).
fn run_emit(line: &str, feed: &Path) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words[..3],
        ["/usr/bin/clawfort", "events", "emit"],
        "{line}"
    );
    // fail2ban and the integrity check's unit run it with a service's environment: no HOME.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawfort"))
        .args(&words[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env(clawfort::events::HOST_FEED_ENV, feed)
        .output()
        .unwrap();
    if rustix::process::geteuid().is_root() {
        assert!(out.status.success(), "{line}: {out:?}");
        true
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("run it as root"), "{line}: {err}");
        false
    }
}

#[test]
fn fail2ban_bans_and_integrity_changes_reach_the_host_events_feed() {
    each_target(|files| {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("events.jsonl");
        // Every jail: the nftables ban and the event.
        let jails = &files["/etc/fail2ban/jail.d/clawfort.local"];
        assert_eq!(
            ini_values(jails, "action"),
            ["%(action_)s", "clawfort-event"]
        );
        let action = &overlay_file("etc/fail2ban/action.d/clawfort-event.conf");
        let ban = ini_values(action, "actionban");
        assert_eq!(ban.len(), 1, "{ban:?}");
        let ban = ban[0]
            .replace("<name>", "sshd")
            .replace("<ip>", "192.0.2.1");
        if run_emit(&ban, &feed) {
            let text = std::fs::read_to_string(&feed).unwrap();
            assert!(text.contains(r#""kind":"fail2ban-ban","jail":"sshd","ip":"192.0.2.1""#));
        }

        // The integrity check emits the counts of the report AIDE wrote for it.
        let check = &overlay_file("etc/systemd/system/clawfort-integrity-check.service");
        let starts = ini_values(check, "ExecStart");
        let report = starts[0]
            .split_once("report_url=file:")
            .map(|(_, path)| path.split_whitespace().next().unwrap().to_owned())
            .expect("AIDE writes its report to a file");
        let emit = starts.last().unwrap();
        assert!(
            emit.ends_with(&format!("events emit integrity --aide-report {report}")),
            "{emit}"
        );
        let runtime = Path::new(&report)
            .parent()
            .unwrap()
            .strip_prefix("/run")
            .unwrap();
        assert!(
            directives(check).contains(&format!("RuntimeDirectory={}", runtime.display()).as_str())
        );
        let fixture = repo().join("tests/fixtures/aide/changes.txt");
        if run_emit(&emit.replace(&report, fixture.to_str().unwrap()), &feed) {
            let text = std::fs::read_to_string(&feed).unwrap();
            assert!(text.contains(r#""kind":"integrity","added":3,"removed":1,"changed":2"#));
        }

        // The feed's directory: root's, readable by all, writable by the check's unit.
        let feed_dir = Path::new(clawfort::events::HOST_FEED).parent().unwrap();
        let tmpfiles = &overlay_file("usr/lib/tmpfiles.d/clawfort-events.conf");
        assert_eq!(
            directives(tmpfiles),
            [format!("d {} 0755 root root -", feed_dir.display())]
        );
        assert!(
            directives(check).contains(&format!("ReadWritePaths={}", feed_dir.display()).as_str())
        );
    });
}

/// On the UEFI targets kernel-install gives a later kernel a counted entry (`[boot] tries`)
/// under the image's own entry token and command line, a kernel panic reboots (so a kernel that
/// does not boot uses up its tries), and a trial boot counts as good only once the gateway
/// answers; the Pi, which boots raspi-firmware's path, gets none of it. The boot-and-probe
/// suite installs a kernel through Debian's hook on the running image.
#[test]
fn later_kernels_get_counted_boot_entries_on_the_uefi_targets() {
    let uefi = repo().join("overlays.uefi");
    for target in ["x86_64", "aarch64"] {
        let files = render_target(target, "").unwrap();
        let config = definition(target, "").unwrap();
        assert!(config
            .target
            .kernel_cmdline
            .split_whitespace()
            .any(|word| word == "panic=10"));
        assert_eq!(
            files["/etc/kernel/cmdline"].trim(),
            format!(
                "root=PARTUUID={ROOT_PARTUUID} {}",
                config.target.kernel_cmdline
            )
        );
        assert_eq!(
            files["/etc/kernel/tries"].trim(),
            config.image.boot.tries.to_string()
        );
        assert_eq!(
            files["/etc/kernel/entry-token"].trim(),
            config.image.image.name
        );
        let unit = &files["/etc/systemd/system/clawfort-boot-check.service"];
        let lines = directives(unit);
        let gateway = &config.image.gateway;
        let within = config.image.boot.gateway_within_s;
        let exec = format!(
            "ExecStart=/usr/libexec/clawfort/boot-check {} {within}",
            gateway.port
        );
        for expected in [
            exec.as_str(),
            "FailureAction=reboot",
            "Before=boot-complete.target",
            "ConditionPathExists=/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f",
        ] {
            assert!(lines.contains(&expected), "{expected} not in {lines:?}");
        }
    }
    let install = std::fs::read_to_string(uefi.join("etc/kernel/install.conf")).unwrap();
    assert!(directives(&install).contains(&"layout=bls"));
    let link =
        uefi.join("etc/systemd/system/boot-complete.target.requires/clawfort-boot-check.service");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../clawfort-boot-check.service")
    );
    assert!(
        std::fs::metadata(uefi.join("usr/libexec/clawfort/boot-check"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111
            != 0
    );

    let pi = render_target("rpi", "").unwrap();
    assert!(!pi.contains_key("/etc/kernel/tries"));
    assert!(!pi.contains_key("/etc/systemd/system/clawfort-boot-check.service"));

    for (bad, key) in [
        ("[boot]\ntries = 0\n", "boot.tries"),
        ("[boot]\ngateway_within_s = 30\n", "boot.gateway_within_s"),
    ] {
        let err = render_target("x86_64", bad).unwrap_err();
        assert!(err.contains(key), "{err}");
    }
}

/// At every boot the fallback notice names each entry that used up its tries, in the journal
/// at warning priority, and sends each one once to the owner through the host feed; the id
/// it reports is the entry's without its counter, even when the kernel version has a `+`.
#[test]
fn a_kernel_that_failed_its_tries_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let entries = dir.path().join("entries");
    std::fs::create_dir(&entries).unwrap();
    for name in [
        "clawfort-6.12.118+deb13-cloud-amd64.conf",
        "clawfort-9.9.9-good.conf",
        "clawfort-9.9.10-bad+0-3.conf",
        "clawfort-6.12.120+deb13-cloud-amd64+0-3.conf",
        "clawfort-9.9.11-trying+2-1.conf",
    ] {
        std::fs::write(entries.join(name), "title x\n").unwrap();
    }
    // The firmware's variable as efivarfs gives it: 4 bytes of attributes, the id in UTF-16LE,
    // and a file that cannot seek (a FIFO here), which `tail -c +5 FILE` fails on.
    let selected = dir.path().join("LoaderEntrySelected");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_clawfort"), bin.join("clawfort")).unwrap();
    let (reported, feed) = (dir.path().join("reported"), dir.path().join("events.jsonl"));
    let script = repo().join("overlays.uefi/usr/libexec/clawfort/boot-fallback");
    let run_booted = |booted: &str, reported: &Path, feed: &Path| {
        let _ = std::fs::remove_file(&selected);
        let made = std::process::Command::new("mkfifo")
            .arg(&selected)
            .status()
            .unwrap();
        assert!(made.success());
        let mut var = vec![6, 0, 0, 0];
        for unit in booted.encode_utf16().chain([0]) {
            var.extend(unit.to_le_bytes());
        }
        let fifo = selected.clone();
        let writer = std::thread::spawn(move || std::fs::write(fifo, var).unwrap());
        let output = std::process::Command::new(&script)
            .args([&entries, &reported.to_path_buf(), &selected])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env(clawfort::events::HOST_FEED_ENV, feed)
            .output()
            .unwrap();
        writer.join().unwrap();
        output
    };
    let run = || run_booted("clawfort-9.9.9-good.conf", &reported, &feed);
    let first = run();
    let stdout = String::from_utf8_lossy(&first.stdout);
    for id in [
        "clawfort-9.9.10-bad.conf",
        "clawfort-6.12.120+deb13-cloud-amd64.conf",
    ] {
        assert!(
            stdout.contains(&format!(
                "<4>boot entry {id} failed all its tries without a good boot"
            )),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("this boot is clawfort-9.9.9-good.conf"),
        "{stdout}"
    );
    assert!(!stdout.contains("trying"), "{stdout}");
    if !rustix::process::geteuid().is_root() {
        let err = String::from_utf8_lossy(&first.stderr);
        assert!(err.contains("run it as root"), "{err}");
        return;
    }
    assert!(first.status.success(), "{first:?}");
    let second = run();
    assert!(second.status.success(), "{second:?}");
    assert_eq!(
        first.stdout, second.stdout,
        "the journal hears of it every boot"
    );
    let text = std::fs::read_to_string(&feed).unwrap();
    assert_eq!(
        text.lines().count(),
        2,
        "the owner hears of each entry once: {text}"
    );
    assert!(text.contains(
        r#""kind":"boot-fallback","failed":"clawfort-9.9.10-bad.conf","booted":"clawfort-9.9.9-good.conf""#
    ));
    assert!(text.contains(r#""failed":"clawfort-6.12.120+deb13-cloud-amd64.conf""#));

    // The last try of an entry runs with its file already at +0 (systemd-boot counts down as
    // it starts it): it has not failed yet, and is not reported until a boot after it.
    let (reported, feed) = (
        dir.path().join("reported-2"),
        dir.path().join("events-2.jsonl"),
    );
    let last_try = run_booted("clawfort-9.9.10-bad.conf", &reported, &feed);
    assert!(last_try.status.success(), "{last_try:?}");
    let stdout = String::from_utf8_lossy(&last_try.stdout);
    assert!(
        !stdout.contains("entry clawfort-9.9.10-bad.conf failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("clawfort-6.12.120+deb13-cloud-amd64.conf failed"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&feed).unwrap();
    assert!(
        !text.contains(r#""failed":"clawfort-9.9.10-bad.conf""#),
        "{text}"
    );
}
