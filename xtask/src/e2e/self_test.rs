//! The suite's self-test: no probe may pass vacuously. A variant image with the protections
//! turned off through the image configuration (tests/e2e/variants/weakened.toml) is booted and
//! probed against the hardened image's expectations; each probe that guards a removed
//! protection must fail, for the reason that protection gives, while the guest itself works.
//!
//! Two protections cannot be removed through the image configuration because the builder
//! refuses such a definition (a non-loopback gateway bind, an open gateway port). The self-test
//! checks that refusal, and weakens the booted guest at run time instead ([`RUNTIME_WEAKENINGS`])
//! so the probes guarding them are shown to fail too.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use xshell::{cmd, Shell};

use super::testbed::Report;
use crate::image::{self, BuildOptions, Target};

/// Image-config overlays the builder must refuse, and the key its error must name.
pub const REFUSED_BY_BUILDER: &[(&str, &str)] = &[
    ("tests/e2e/variants/refused-bind.toml", "gateway.bind"),
    (
        "tests/e2e/variants/refused-gateway-port.toml",
        "firewall.extra_tcp_ports",
    ),
];

/// Root shell scripts run on the weakened guest before probing: the gateway's own config is
/// given the file tools the whole home, `/etc` and `/proc` (`security.allowedPaths`, no
/// `deniedPaths`) and switched to a LAN bind (and the gateway restarted), services listen with
/// no firewall in front of them (TCP 8080 over IPv4 and 8088 over IPv6, UDP 8125 over IPv4 and
/// 8126 over IPv6, each family on its own port so each scan path is shown failing for its own
/// listener), the config approves every new sender on the spot
/// (`pairing.autoApprove`, which `clawfort setup` keeps when the agent probe runs it), and a
/// drop-in lets the gateway call the fakes' address directly instead of through the egress
/// proxy (only that address: the gateway port must stay unreachable from the scanner, or the
/// scan would fail for more than the listener on 8080), and another makes the egress proxy
/// take its allow list from the service user's `openclaw.json` instead of root's file. Last,
/// the sandbox's containers get Docker's default `bridge` network instead of `none` (the
/// config accepts any network but the host's or another container's), which with the
/// firewall not loaded lets a sandboxed command reach the LAN. And the per-command unit of host
/// commands maps the whole of /home (`ProtectHome=no`), so with the allowed paths above Landlock
/// no longer keeps a host command from the state directory. And two things an image definition
/// cannot express: unattended-upgrades is removed with dpkg (its configuration files stay, as
/// the image's overlay ships them either way), and a drop-in takes from the gateway's unit the
/// kernel, clock, namespace and architecture protections that leave its work alone, which
/// raises `systemd-analyze security`'s rating over the unit's budget (about 3.0 instead of
/// 1.1; the running gateway keeps its settings until its next restart).
///
/// The last six each remove one protection no other probe relies on: the token file made
/// world-readable (after the gateway's restart above, which leaves its mode alone), a sudoers
/// drop-in that lets the service user run `/usr/bin/true` as root (the gateway's and the host
/// commands' units have `NoNewPrivileges=yes`, so no probe's commands could use it), the
/// system Docker's socket unmasked and listening (nothing connects to it, so the root daemon
/// it would start never runs), sshd's `Compression yes` (in its file only: `sshd -T` reads
/// the files, and the running sshd is left alone), sctp taken off the module blocklist (the
/// cloud kernel ships it, so the probe's `modprobe` then loads it), and `Restart=no` for the
/// gateway. That last one leaves the
/// gateway dead after `gateway_restarts_after_kill`; the only probe between it and
/// `agent_round_trip`, whose `clawfort setup` starts the gateway again with `systemctl
/// restart`, is `fail2ban_bans_and_unbans`, which only talks to sshd. Then auditd is stopped
/// (its rules stay loaded and locked), so the agent's commands reach no audit log. The
/// clawfort AppArmor profiles go to complain mode, and fail2ban's jails lose the action that
/// tells the owner of a ban. The sandbox image is tagged anew, as if first boot had imported
/// it. Last, a process holds 450 MiB, more than the idle budget leaves (the guest has 2 GiB, so the other
/// probes keep plenty).
pub const RUNTIME_WEAKENINGS: &[&str] = &[
    "sed -i 's|deniedPaths: \\[.*\\]|allowedPaths: [\"/home/openclaw\", \"/etc\", \"/proc\"], deniedPaths: []|' \
        /home/openclaw/.openclaw/openclaw.json \
     && grep -q 'allowedPaths: \\[\"/home/openclaw\"' /home/openclaw/.openclaw/openclaw.json",
    "sed -i 's/bind: \"loopback\"/bind: \"lan\"/' /home/openclaw/.openclaw/openclaw.json \
     && grep -q 'bind: \"lan\"' /home/openclaw/.openclaw/openclaw.json \
     && systemctl restart clawfort.service \
     && for i in $(seq 1 60); do curl -fs -o /dev/null --max-time 2 http://127.0.0.1:18789/healthz && exit 0; sleep 1; done; exit 1",
    "systemd-run --unit=clawfort-e2e-exposed-listener nc -4 -lk 8080",
    "systemd-run --unit=clawfort-e2e-exposed-listener-v6 nc -6 -lk 8088",
    "systemd-run --unit=clawfort-e2e-exposed-udp nc -4 -luk 8125",
    "systemd-run --unit=clawfort-e2e-exposed-udp-v6 nc -6 -luk 8126",
    "sed -i 's/autoApprove: false/autoApprove: true/' /home/openclaw/.openclaw/openclaw.json \
     && grep -q 'autoApprove: true' /home/openclaw/.openclaw/openclaw.json",
    "mkdir -p /etc/systemd/system/clawfort.service.d \
     && printf '[Service]\\nUnsetEnvironment=CLAWFORT_EGRESS_PROXY\\nIPAddressAllow=10.77.0.9\\n' \
        > /etc/systemd/system/clawfort.service.d/e2e-direct-egress.conf \
     && systemctl daemon-reload",
    "mkdir -p /etc/systemd/system/clawfort-egress.service.d \
     && printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/clawfort egress --config %%d/openclaw.json\\nLoadCredential=openclaw.json:/home/openclaw/.openclaw/openclaw.json\\n' \
        > /etc/systemd/system/clawfort-egress.service.d/e2e-user-allow-list.conf \
     && systemctl daemon-reload",
    "sed -i 's/docker: { image: \"\\([^\"]*\\)\" }/docker: { image: \"\\1\", network: \"bridge\" }/' \
        /home/openclaw/.openclaw/openclaw.json \
     && grep -q 'network: \"bridge\"' /home/openclaw/.openclaw/openclaw.json",
    "mkdir -p /etc/systemd/system/clawfort-exec@.service.d \
     && printf '[Service]\\nProtectHome=no\\n' \
        > /etc/systemd/system/clawfort-exec@.service.d/e2e-whole-home.conf \
     && systemctl daemon-reload",
    // dpkg waits for no lock: retried (bounded) while an apt timer's job may hold it.
    "for i in $(seq 1 30); do dpkg --remove unattended-upgrades && break; sleep 2; done; \
     ! dpkg-query -W -f '${Status}' unattended-upgrades | grep -q 'ok installed'",
    "mkdir -p /etc/systemd/system/clawfort.service.d \
     && printf '[Service]\\nProtectClock=no\\nProtectHostname=no\\nProtectKernelLogs=no\\nProtectKernelModules=no\\nProtectKernelTunables=no\\nProtectControlGroups=no\\nLockPersonality=no\\nRestrictRealtime=no\\nRestrictNamespaces=no\\nMemoryDenyWriteExecute=no\\nSystemCallArchitectures=\\n' \
        > /etc/systemd/system/clawfort.service.d/e2e-exposed.conf \
     && systemctl daemon-reload",
    "chmod 644 /home/openclaw/.openclaw/.env \
     && test \"$(stat -c %a /home/openclaw/.openclaw/.env)\" = 644",
    "printf 'openclaw ALL=(root) NOPASSWD: /usr/bin/true\\n' > /etc/sudoers.d/e2e-service-user \
     && chmod 440 /etc/sudoers.d/e2e-service-user \
     && visudo -cf /etc/sudoers.d/e2e-service-user",
    "systemctl unmask docker.service docker.socket && systemctl start docker.socket \
     && systemctl is-active docker.socket",
    "sed -i 's/^Compression no$/Compression yes/' /etc/ssh/sshd_config.d/10-clawfort.conf \
     && sshd -T | grep -qx 'compression yes'",
    "sed -i '/ sctp /d; / sctp$/d' /etc/modprobe.d/clawfort-blocked.conf \
     && ! grep -qw sctp /etc/modprobe.d/clawfort-blocked.conf",
    "mkdir -p /etc/systemd/system/clawfort.service.d \
     && printf '[Service]\\nRestart=no\\n' > /etc/systemd/system/clawfort.service.d/e2e-no-restart.conf \
     && systemctl daemon-reload \
     && test \"$(systemctl show -P Restart clawfort.service)\" = no",
    // The rules are locked (`-e 2`: `auditctl -D` is refused until a reboot), but auditd
    // itself can be stopped: the kernel's records then go nowhere the log keeps.
    "systemctl stop auditd.service && ! systemctl is-active --quiet auditd.service",
    // fail2ban's jails lose the action that writes their bans to the host's events feed (the
    // nftables ban stays), so no ban reaches the owner.
    "sed -i '/^ *clawfort-event$/d' /etc/fail2ban/jail.d/clawfort.local \
     && ! grep -qx ' *clawfort-event' /etc/fail2ban/jail.d/clawfort.local \
     && fail2ban-client reload",
    // The clawfort AppArmor profiles in complain mode (they log and allow): replacing a loaded
    // profile applies to the processes already in it, the running gateway and rootless Docker
    // included.
    "sed -i 's/flags=(attach_disconnected)/flags=(attach_disconnected, complain)/' \
        /etc/apparmor.d/clawfort-gateway /etc/apparmor.d/clawfort-exec \
     && apparmor_parser -r /etc/apparmor.d/clawfort-gateway /etc/apparmor.d/clawfort-exec \
     && grep -qx 'clawfort-gateway (complain)' /sys/kernel/security/apparmor/profiles \
     && grep -qx 'clawfort-exec (complain)' /sys/kernel/security/apparmor/profiles \
     && sed -i 's/flags=(attach_disconnected, mediate_deleted)/flags=(attach_disconnected, mediate_deleted, complain)/' \
        /etc/apparmor.d/clawfort-sandbox \
     && apparmor_parser -r /etc/apparmor.d/clawfort-sandbox \
     && grep -qx 'clawfort-sandbox (complain)' /sys/kernel/security/apparmor/profiles",
    // systemd-boot only on the firmware's fallback path, as images were before kernel-install:
    // `bootctl is-installed` says no, and Debian's kernel hooks skip every later kernel.
    "rm /boot/efi/EFI/systemd/systemd-boot*.efi && ! bootctl is-installed",
    // The journal's uploader gone, as if the package were not installed: nothing reaches a
    // collector.
    "mv /usr/lib/systemd/systemd-journal-upload /usr/lib/systemd/systemd-journal-upload.off",
    // The sandbox image tagged anew once the service user's rootless Docker answers (bounded),
    // as an import at boot would leave it: its last tag is then after this boot began.
    "cd / && for i in $(seq 1 600); do sudo -n -u openclaw env XDG_RUNTIME_DIR=/run/user/$(id -u openclaw) \
       DOCKER_HOST=unix:///run/clawfort-sandbox/docker.sock docker tag clawfort-sandbox:latest \
       clawfort-sandbox:latest 2>/dev/null && exit 0; sleep 1; done; exit 1",
    // 450 MiB held by a process (touched, so in use), waited for until it is all allocated:
    // with the guest's own 440-500 MiB, well over the idle ceiling.
    "systemd-run --unit=clawfort-e2e-memory-hog python3 -c 'import pathlib, time; \
     hog = b\"x\" * (450 << 20); pathlib.Path(\"/run/clawfort-e2e-hog\").touch(); time.sleep(86400)' \
     && for i in $(seq 1 60); do test -e /run/clawfort-e2e-hog && exit 0; sleep 1; done; exit 1",
];

/// Probes that must fail on the weakened image, and a fragment their failure must contain, so
/// that a failure for an unrelated reason (say, sshd not running) does not count. A probe
/// guarding two removed protections is listed twice: its failure must name both.
pub const MUST_FAIL: &[(&str, &str)] = &[
    ("integrity_baseline_and_check", "no integrity baseline"),
    // unattended-upgrades removed (above): the trusted repository's newer gateway never
    // arrives. The stranger's apt source names the stranger's key in the self-test
    // (`repository.rs`), so its repository is taken: the refusal was the key's.
    ("gateway_updates_from_its_repository", "clawfort stayed at"),
    (
        "gateway_updates_from_its_repository",
        "signed by another key was accepted",
    ),
    (
        "kernel_updates_reach_boot_loader",
        "bootctl is-installed says no",
    ),
    ("idle_memory_within_budget", "over the 400 MiB budget"),
    ("ssh_offers_only_publickey", "password"),
    ("ssh_refuses_root_with_valid_key", "root logged in"),
    (
        "ssh_offers_no_weak_algorithms",
        "diffie-hellman-group14-sha1",
    ),
    ("tcp_port_scan", "IPv4 8080"),
    ("tcp_port_scan", "IPv6 ULA 8088"),
    ("tcp_port_scan", "IPv6 link-local 8088"),
    ("udp_port_scan", "IPv4 8125"),
    ("udp_port_scan", "IPv6 ULA 8126"),
    ("udp_port_scan", "IPv6 link-local 8126"),
    ("gateway_listens_on_loopback_only", "beyond loopback"),
    ("nftables_input_policy_drop", "firewall is not loaded"),
    (
        "service_user_egress_confined",
        "outbound traffic is not confined",
    ),
    ("unattended_upgrades_security", "no security origin"),
    ("unattended_upgrades_security", "automatic reboots are off"),
    (
        "unattended_upgrades_security",
        "unattended-upgrades is not installed",
    ),
    ("security_audit_no_critical", "host.nftables"),
    // tidy: allow (an expected failure's text: the weakened variant changes this key)
    ("sysctls_as_defined", "kernel.kptr_restrict"),
    // tidy: allow (an expected failure's text: the weakened variant changes this key)
    ("sysctls_as_defined", "kernel.core_pattern"),
    ("core_dumps_go_nowhere", "a crash left a core dump"),
    ("kernel_modules_blocked", "`modprobe sctp` succeeded"),
    ("kernel_modules_blocked", "sctp is loaded"),
    ("login_umask", "an SSH session's umask is `0022`"),
    ("login_umask", "a login shell's umask is `0022`"),
    ("sshd_sessions_and_banner", "sshd's compression is `yes`"),
    ("sshd_sessions_and_banner", "sshd's maxsessions is `10`"),
    ("needrestart_automatic", "restart mode is `l`"),
    ("gateway_unit_exposure", "over its budget"),
    // The jail's value in force, which weakened.toml sets (the suite's expectation is 5).
    ("fail2ban_bans_and_unbans", "the sshd jail's maxretry 1000"),
    ("agent_round_trip", "reached the model before approval"),
    ("agent_round_trip", "without the egress proxy"),
    (
        "egress_proxy_allow_list",
        "the gateway's user widened the proxy's allow list",
    ),
    (
        "malicious_model_contained",
        "read its own environment was not refused",
    ),
    (
        "rogue_commands_contained",
        "connect to the fake model server worked",
    ),
    (
        "rootless_sandbox_isolated",
        "is on network bridge, not none",
    ),
    (
        "rootless_sandbox_isolated",
        "was tagged after this boot began",
    ),
    (
        "rogue_host_commands_contained",
        "read .env by its absolute path worked",
    ),
    (
        "gateway_token_file_protected",
        ".env is mode 644 owned by openclaw; want 600",
    ),
    ("service_user_has_no_sudo", "sudo grants openclaw something"),
    (
        "service_user_cannot_use_root_docker",
        "the system Docker is active",
    ),
    ("root_fs_grown_to_disk", "before the end of the disk"),
    (
        "gateway_restarts_after_kill",
        "the gateway did not come back within 60 s",
    ),
    ("agent_commands_audited", "is not in the audit log"),
    (
        "security_events_reach_owner",
        "no fail2ban-ban event of 192.0.2.55 in the host feed",
    ),
    (
        "apparmor_confines_gateway_and_commands",
        "clawfort-gateway is in complain mode",
    ),
    (
        "apparmor_confines_gateway_and_commands",
        "a command in clawfort-exec opened the state directory",
    ),
    (
        "apparmor_confines_sandbox",
        "clawfort-sandbox is not loaded in enforce mode",
    ),
    (
        "apparmor_confines_sandbox",
        "a process in clawfort-sandbox opened",
    ),
    ("apparmor_confines_sandbox", "opened /state/.env"),
    (
        "journal_forwarded_to_collector",
        "systemd-journal-upload did not start",
    ),
    // Both boots of the self-test's disk start with the token baked into it
    // ([`bake_gateway_token`]).
    (UNIQUENESS_PROBE, "both boots share: gateway token"),
];

/// The probe that compares two boots of the image; the self-test boots its disk twice for it.
pub const UNIQUENESS_PROBE: &str = "first_boot_identity_unique";

/// Weakenings that would change what every other probe sees, so the self-test makes them
/// after all the probes above have run, one at a time and in this order, each followed by the
/// probes it must make fail (with their reasons).
///
/// First, the classic way an owner opens a token-protected API: a local reverse proxy that
/// adds the credentials. The gateway moves to port 18790 (its own config) and a proxy on the
/// suite's gateway port 18789 forwards every request to it with the bearer token from `.env`.
/// The gateway still refuses requests without the token; what answers on 18789 does not.
///
/// Then the gateway is run as root (a drop-in with `User=root`; `HOME` kept at the service
/// user's, where the state directory is; and the capabilities root needs to read that
/// directory, which the unit's empty bounding set and private user namespace would otherwise
/// deny it). Its health is checked on 18790, or on 18789 when a narrowed self-test (`--probe`)
/// left the proxy step out.
///
/// Last, the gateway and the proxy (if that step ran) are stopped, so the health check has
/// nothing to answer it.
pub const AFTERWARDS: &[AfterwardsCase] = &[
    AfterwardsCase {
        script: TOKEN_PROXY,
        must_fail: &[(
            "gateway_api_requires_token",
            "/api/status without a token answered 200",
        )],
    },
    AfterwardsCase {
        script: "mkdir -p /etc/systemd/system/clawfort.service.d \
     && printf '[Service]\\nUser=root\\nGroup=root\\nEnvironment=HOME=/home/openclaw\\nPrivateUsers=no\\nCapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_CHOWN\\n' \
        > /etc/systemd/system/clawfort.service.d/e2e-as-root.conf \
     && systemctl daemon-reload && systemctl restart clawfort.service \
     && for i in $(seq 1 60); do for port in 18790 18789; do \
          curl -fs -o /dev/null --max-time 2 http://127.0.0.1:$port/healthz && exit 0; \
        done; sleep 1; done; exit 1",
        must_fail: &[("gateway_runs_as_service_user", "runs as `root`")],
    },
    AfterwardsCase {
        script: "systemctl stop clawfort.service \
     && { systemctl stop clawfort-e2e-token-proxy.service 2>/dev/null || true; } \
     && ! curl -s -o /dev/null --max-time 2 http://127.0.0.1:18789/healthz",
        must_fail: &[("gateway_healthz_ok", "/healthz answered 0")],
    },
];

/// A weakening made after the probes ([`AFTERWARDS`]).
pub struct AfterwardsCase {
    /// Run as root on the guest.
    pub script: &'static str,
    /// The probes run again after it, each with a fragment its failure must contain.
    pub must_fail: &'static [(&'static str, &'static str)],
}

/// The token-adding proxy of [`AFTERWARDS`]: the gateway moved to 18790, Python's HTTP server
/// on 18789 (the guest has python3 for cloud-init) forwarding each GET with the token.
const TOKEN_PROXY: &str = r#"sed -i -E 's/("?port"?): 18789\b/\1: 18790/' /home/openclaw/.openclaw/openclaw.json \
 && grep -Eq '"?port"?: 18790\b' /home/openclaw/.openclaw/openclaw.json \
 && systemctl restart clawfort.service \
 && cat > /run/clawfort-e2e-token-proxy.py <<'PROXY'
import http.server, urllib.error, urllib.request
lines = open("/home/openclaw/.openclaw/.env").read().splitlines()
token = next(line.split("=", 1)[1].strip('"') for line in lines if line.startswith("OPENCLAW_GATEWAY_TOKEN="))
class Proxy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        request = urllib.request.Request("http://127.0.0.1:18790" + self.path, headers={"Authorization": "Bearer " + token})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as answer:
            status, body = answer.code, answer.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", 18789), Proxy).serve_forever()
PROXY
systemd-run --unit=clawfort-e2e-token-proxy python3 /run/clawfort-e2e-token-proxy.py \
 && for i in $(seq 1 60); do test "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://127.0.0.1:18789/api/status)" = 200 && exit 0; sleep 1; done; exit 1"#;

/// Probes that must still pass: the weakened guest boots, serves and is reachable, so the
/// failures above are about the protections and not about a broken guest.
pub const MUST_PASS: &[&str] = &["gateway_healthz_ok", "gateway_runs_as_service_user"];

/// Every probe the self-test runs.
pub fn probes() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in MUST_FAIL
        .iter()
        .map(|(name, _)| *name)
        .chain(MUST_PASS.iter().copied())
    {
        if !names.iter().any(|known| known == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// The [`AFTERWARDS`] steps that concern the selected probes (`only`, all when empty): the
/// scripts to run after the probes and the probes to run again after each.
pub fn afterwards(only: &[String]) -> Vec<super::boot::Afterwards<'static>> {
    afterwards_cases(only)
        .map(|case| super::boot::Afterwards {
            script: case.script,
            probes: case
                .must_fail
                .iter()
                .map(|(name, _)| (*name).to_owned())
                .collect(),
        })
        .collect()
}

/// Whether `name` is among the probes `only` selects (all when empty).
pub fn selected(only: &[String], name: &str) -> bool {
    only.is_empty() || only.iter().any(|probe| probe == name)
}

/// The [`AFTERWARDS`] cases with a probe `only` selects, in order: the steps run and judged.
fn afterwards_cases(only: &[String]) -> impl Iterator<Item = &'static AfterwardsCase> + '_ {
    AFTERWARDS
        .iter()
        .filter(move |case| case.must_fail.iter().any(|(name, _)| selected(only, name)))
}

/// Checks the weakened image's reports (the probes' and, in order, one per step of
/// [`afterwards`]); prints one line per expectation. `only` (the probes given with `--probe`;
/// all when empty) narrows the cases judged to those probes.
pub fn judge(report: &Report, later: &[Report], only: &[String]) -> Result<()> {
    let mut wrong = Vec::new();
    let result = |name: &str| report.probes.iter().find(|probe| probe.name == name);
    let selected = |name: &str| selected(only, name);
    for (name, reason) in MUST_FAIL.iter().filter(|(name, _)| selected(name)) {
        let verdict = must_fail(result(name), reason);
        report_line(
            name,
            &format!("fails when its protection is removed (`{reason}`)"),
            verdict,
            &mut wrong,
        );
    }
    for (step, case) in afterwards_cases(only).enumerate() {
        for (name, reason) in case.must_fail {
            let verdict = match later.get(step) {
                None => Err(format!("step {} after the probes did not run", step + 1)),
                Some(report) => must_fail(
                    report.probes.iter().find(|probe| probe.name == *name),
                    reason,
                ),
            };
            report_line(
                name,
                &format!("fails after the probes when its protection is removed (`{reason}`)"),
                verdict,
                &mut wrong,
            );
        }
    }
    for name in MUST_PASS.iter().filter(|name| selected(name)) {
        let verdict = match result(name) {
            None => Err("did not run".to_owned()),
            Some(probe) if !probe.passed => {
                Err(format!("the weakened guest is broken: {}", probe.detail))
            }
            Some(_) => Ok(()),
        };
        report_line(name, "still passes (the guest works)", verdict, &mut wrong);
    }
    ensure!(
        wrong.is_empty(),
        "suite self-test failed for: {}",
        wrong.join(", ")
    );
    Ok(())
}

/// A must-fail case's verdict: the probe ran and failed for `reason`.
fn must_fail(result: Option<&super::testbed::ProbeResult>, reason: &str) -> Result<(), String> {
    match result {
        None => Err("did not run".to_owned()),
        Some(probe) if probe.passed => {
            Err(format!("passed on the weakened image: {}", probe.detail))
        }
        Some(probe) if !probe.detail.contains(reason) => Err(format!(
            "failed, but not because of the removed protection (expected `{reason}`): {}",
            probe.detail
        )),
        Some(_) => Ok(()),
    }
}

/// The token baked into the self-test's disk: not a secret, the same on every run.
const BAKED_TOKEN: &str = "e2e0baked0token0e2e0baked0token0e2e0baked0token0e2e0baked0token0";

/// A copy of the weakened raw image `raw` (in `work`) with a gateway token baked in, the
/// mistake the builder's scrub stage exists to prevent (a `.env` left in the image): the
/// service user's `~/.openclaw/.env` written into the root file system with debugfs (no
/// mount needed), owned by the user and mode 600 as first boot would make it. First boot then
/// keeps it, as it keeps any token already there, so both boots of the disk share it.
pub fn bake_gateway_token(sh: &Shell, raw: &Path, work: &Path, user: &str) -> Result<PathBuf> {
    let baked = work.join("weakened-baked-token.raw");
    cmd!(sh, "cp --sparse=always {raw} {baked}").run()?;
    let root_fs = format!("{}?offset={}", baked.display(), root_offset(sh, &baked)?);
    let passwd = cmd!(sh, "debugfs -R 'cat /etc/passwd' {root_fs}")
        .quiet()
        .ignore_stderr()
        .read()?;
    let (uid, gid) = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && fields[0] == user)
        .map(|fields| (fields[2].to_owned(), fields[3].to_owned()))
        .with_context(|| format!("the weakened image has no user {user} in /etc/passwd"))?;
    let env = work.join("baked.env");
    std::fs::write(&env, format!("OPENCLAW_GATEWAY_TOKEN={BAKED_TOKEN}\n"))?;
    let state = format!("/home/{user}/.openclaw");
    let commands = work.join("bake-token.debugfs");
    std::fs::write(
        &commands,
        format!(
            "cd {state}\nwrite {} .env\nsif .env uid {uid}\nsif .env gid {gid}\n\
             sif .env mode 0100600\n",
            env.display()
        ),
    )?;
    // debugfs reports a failed command on stderr and still exits 0: the result is read back.
    cmd!(sh, "debugfs -w -f {commands} {root_fs}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()?;
    let (cat, stat) = (format!("cat {state}/.env"), format!("stat {state}/.env"));
    let written = cmd!(sh, "debugfs -R {cat} {root_fs}")
        .quiet()
        .ignore_stderr()
        .read()?;
    let stat = cmd!(sh, "debugfs -R {stat} {root_fs}")
        .quiet()
        .ignore_stderr()
        .read()?;
    ensure!(
        written.trim() == format!("OPENCLAW_GATEWAY_TOKEN={BAKED_TOKEN}")
            && stat.contains("Mode:  0600")
            && stat.contains(&format!("User: {uid:>5}")),
        "debugfs did not bake the token into {}: {stat}",
        baked.display()
    );
    eprintln!("==> baked a gateway token into {}", baked.display());
    Ok(baked)
}

/// The byte offset of the largest partition of `raw`: the root file system on every target.
fn root_offset(sh: &Shell, raw: &Path) -> Result<u64> {
    super::seed::partitions(sh, raw)?
        .into_iter()
        .max_by_key(|&(_, length)| length)
        .map(|(start, _)| start)
        .with_context(|| format!("{} has no partitions", raw.display()))
}

fn report_line(name: &str, claim: &str, verdict: Result<(), String>, wrong: &mut Vec<String>) {
    match verdict {
        Ok(()) => println!("PASS self-test {name}: {claim}"),
        Err(why) => {
            println!("FAIL self-test {name}: {why}");
            wrong.push(name.to_owned());
        }
    }
}

/// Builds each refused variant (validation fails before any stage runs) and checks that the
/// builder refused it for the right key.
pub fn check_builder_refusals(target: Target, root: &Path, suite_overlay: &Path) -> Result<()> {
    let mut wrong = Vec::new();
    for (file, key) in REFUSED_BY_BUILDER {
        let mut options = BuildOptions::for_target(target);
        options.config_overlays = vec![suite_overlay.to_owned(), root.join(file)];
        options.out = root.join("out/e2e/refused");
        let verdict = match image::build(&options) {
            Ok(_) => Err(format!("the builder built {file}")),
            Err(err) if format!("{err:#}").contains(key) => Ok(()),
            Err(err) => Err(format!("refused, but not for `{key}`: {err:#}")),
        };
        report_line(
            file,
            &format!("refused by the builder (`{key}`)"),
            verdict,
            &mut wrong,
        );
    }
    if !wrong.is_empty() {
        bail!(
            "the builder accepted unsafe definitions: {}",
            wrong.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{AFTERWARDS, MUST_FAIL, MUST_PASS};
    use crate::image::{load_definition, Target};

    /// The suite's probes in the order they run (`tests/e2e/probes/mod.rs`, read as text: the
    /// probe binary is not a library xtask can link).
    pub(crate) fn registry() -> Vec<String> {
        std::fs::read_to_string(crate::project_root().join("tests/e2e/probes/mod.rs"))
            .unwrap()
            .lines()
            .filter_map(|line| line.trim().strip_prefix("name: \""))
            .filter_map(|rest| rest.strip_suffix("\","))
            .map(str::to_owned)
            .collect()
    }

    /// Every probe in the suite has a must-fail case, before the others or after them; every
    /// name the self-test uses is a probe of the suite.
    #[test]
    fn every_probe_has_a_must_fail_case() {
        let probes = registry();
        let probes: Vec<&str> = probes.iter().map(String::as_str).collect();
        assert!(probes.len() >= 20, "found only {probes:?} in the registry");
        let later = || AFTERWARDS.iter().flat_map(|case| case.must_fail.iter());
        for name in &probes {
            assert!(
                MUST_FAIL.iter().chain(later()).any(|(n, _)| n == name),
                "probe {name}: give it a MUST_FAIL case in xtask/src/e2e/self_test.rs (or an \
                 AFTERWARDS one, if removing its protection would change what other probes see)"
            );
        }
        for name in MUST_FAIL
            .iter()
            .chain(later())
            .map(|(name, _)| name)
            .chain(MUST_PASS)
        {
            assert!(probes.contains(name), "{name} is not a probe of the suite");
        }
    }

    /// The proxy step's script moves the gateway off the port the suite expects, which the
    /// shipped config names on a line of its own.
    #[test]
    fn token_proxy_moves_the_gateway_off_the_suite_port() {
        let root = crate::project_root();
        let template =
            std::fs::read_to_string(root.join("overlays/usr/share/clawfort/openclaw.json.tera"))
                .unwrap();
        assert!(template.contains("    port: {{ gateway.port }},"));
        let suite = load_definition(
            &[root.join("tests/e2e/variants/suite.toml")],
            Target::X86_64,
        )
        .unwrap();
        assert_eq!(suite.image.gateway.port, 18789);
        // The shipped JSON5 (`port: 18789,`) and the JSON `clawfort setup` writes
        // (`"port": 18789`) are both rewritten, by the script's own sed.
        let sed = super::TOKEN_PROXY
            .split("sed -i -E '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap();
        let sh = xshell::Shell::new().unwrap();
        for (before, after) in [
            ("    port: 18789,\n", "    port: 18790,\n"),
            ("  \"port\": 18789\n", "  \"port\": 18790\n"),
            ("  \"port\": 187890,\n", "  \"port\": 187890,\n"),
        ] {
            let rewritten = xshell::cmd!(sh, "sed -E {sed}")
                .stdin(before)
                .quiet()
                .read()
                .unwrap();
            assert_eq!(format!("{rewritten}\n"), after, "{before:?}");
        }
    }

    /// `Restart=no` leaves the gateway dead after `gateway_restarts_after_kill` until
    /// `agent_round_trip`'s `clawfort setup` restarts it; only the SSH-only fail2ban probe and
    /// the memory probe (the self-test's 450 MiB hog fails it, gateway or not) may run in
    /// between, or a probe added there would fail on the weakened guest for a dead gateway
    /// instead of its own reason.
    #[test]
    fn only_probes_without_the_gateway_run_while_it_is_left_dead() {
        assert!(super::RUNTIME_WEAKENINGS
            .iter()
            .any(|script| script.contains("Restart=no")));
        let probes = registry();
        let at = |name: &str| probes.iter().position(|p| p == name).unwrap();
        assert_eq!(
            &probes[at("gateway_restarts_after_kill") + 1..at("agent_round_trip")],
            ["fail2ban_bans_and_unbans", "idle_memory_within_budget"],
            "with the self-test's `Restart=no`, these probes would find the gateway dead"
        );
    }

    /// The sandbox probe has the gateway run a command for the stranger `agent_round_trip`
    /// pairs, so it must run after it; before, it would fail on the weakened guest for want of
    /// a paired stranger instead of for the sandbox's `bridge` network.
    #[test]
    fn sandbox_probe_runs_after_the_stranger_is_paired() {
        let probes = registry();
        let at = |name: &str| probes.iter().position(|p| p == name).unwrap();
        assert!(at("agent_round_trip") < at("rootless_sandbox_isolated"));
    }

    /// The sandbox-network weakening matches the shipped config's `docker` line, so it
    /// really changes the network (its `grep` would fail the self-test otherwise).
    #[test]
    fn sandbox_network_weakening_matches_the_shipped_config() {
        let root = crate::project_root();
        let template =
            std::fs::read_to_string(root.join("overlays/usr/share/clawfort/openclaw.json.tera"))
                .unwrap();
        let line = template
            .lines()
            .find(|l| l.contains("docker: { image: \"{{ sandbox.image }}\" }"))
            .expect("the default config names the sandbox image on one line");
        let rendered = line.replace("{{ sandbox.image }}", "clawfort-sandbox:latest");
        let script = super::RUNTIME_WEAKENINGS
            .iter()
            .find(|s| s.contains(r#"network: "bridge""#))
            .expect("a weakening gives the sandbox a network");
        let sed = script
            .split("sed -i '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openclaw.json");
        std::fs::write(&file, &rendered).unwrap();
        let sh = xshell::Shell::new().unwrap();
        xshell::cmd!(sh, "sed -i {sed} {file}")
            .quiet()
            .run()
            .unwrap();
        let weakened = std::fs::read_to_string(&file).unwrap();
        assert!(
            weakened.contains(r#"docker: { image: "clawfort-sandbox:latest", network: "bridge" }"#),
            "{weakened}"
        );
    }

    /// The exposure weakening only turns protections of the gateway's unit off (`X=no`, or an
    /// empty value), so the gateway still starts and serves the other probes.
    #[test]
    fn exposure_weakening_only_loosens_the_gateway_unit() {
        let script = super::RUNTIME_WEAKENINGS
            .iter()
            .find(|s| s.contains("clawfort.service.d/e2e-exposed.conf"))
            .expect("a weakening loosens the gateway's unit");
        let body = script
            .split("printf '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap();
        let settings: Vec<&str> = body
            .split("\\n")
            .filter(|line| !line.is_empty() && *line != "[Service]")
            .collect();
        assert!(settings.len() >= 10, "{settings:?}");
        for setting in settings {
            assert!(
                setting.ends_with("=no") || setting.ends_with('='),
                "{setting}"
            );
        }
    }

    /// The direct-egress weakening opens the gateway's IP filter to the fakes' address only.
    #[test]
    fn direct_egress_weakening_names_the_fakes_address() {
        let allow = format!("IPAddressAllow={}\\n", crate::e2e::boot::FAKES);
        let matching: Vec<&&str> = super::RUNTIME_WEAKENINGS
            .iter()
            .filter(|script| script.contains("IPAddressAllow="))
            .collect();
        assert_eq!(matching.len(), 1);
        assert!(matching[0].contains(&allow), "{}", matching[0]);
    }

    /// weakened.toml replaces `services.enable` whole; it must stay the appliance's list with
    /// only the firewall, the root's growth and the integrity baseline and check taken out, or
    /// the self-test would weaken more than it says.
    #[test]
    fn weakened_variant_only_drops_the_units_it_names_from_enabled_units() {
        let root = crate::project_root();
        let base = load_definition(&[], Target::X86_64).unwrap();
        let weakened = load_definition(
            &[root.join("tests/e2e/variants/weakened.toml")],
            Target::X86_64,
        )
        .unwrap();
        let expected: Vec<&String> = base
            .image
            .services
            .enable
            .iter()
            .filter(|unit| {
                ![
                    "nftables.service",
                    "clawfort-grow-root.service",
                    "clawfort-integrity-baseline.timer",
                    "clawfort-integrity-check.timer",
                ]
                .contains(&unit.as_str())
            })
            .collect();
        assert_eq!(
            weakened.image.services.enable.iter().collect::<Vec<_>>(),
            expected
        );
    }
}
