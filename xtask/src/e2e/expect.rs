//! What the hardened image promises, read from the image definition (image/clawfort.toml with
//! the suite's overlay merged over it, whose short ban the CIDATA seed gives the published
//! artifact; loaded and validated by the builder's own loader), so the probes judge the guest
//! against the configuration and not against numbers copied into Rust.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clawfort_imagedef::{parse_duration, DiskLayout, LoadedConfig};

use super::testbed::{BootCounting, Expectations, KernelAndLogin};

pub fn expectations(definition: &LoadedConfig) -> Result<Expectations> {
    let image = &definition.image;
    Ok(Expectations {
        ssh_port: image.ssh.port,
        gateway_port: image.gateway.port,
        canvas_port: image.gateway.canvas_port,
        extra_tcp_ports: image.firewall.extra_tcp_ports.clone(),
        extra_udp_ports: image.firewall.extra_udp_ports.clone(),
        egress_tcp_ports: image.gateway.egress.tcp_ports.clone(),
        egress_socket: image.gateway.egress.socket.clone(),
        sandbox_socket: format!("{}/docker.sock", image.sandbox.socket_dir),
        fail2ban_maxretry: image.fail2ban.maxretry,
        fail2ban_bantime_s: parse_duration("fail2ban.bantime", &image.fail2ban.bantime)?,
        sysctl: sysctls(&image.sysctl)?,
        gateway_exposure_budget: image.gateway.exposure_budget,
        kernel_and_login: KernelAndLogin {
            blocked_modules: definition.blocked_modules(),
            // `umask` prints four digits.
            umask: format!("{:0>4}", image.login.umask),
            service_umask: format!("{:0>4}", image.users.service.session_umask),
            ssh_max_sessions: image.ssh.max_sessions,
            needrestart_mode: image.updates.needrestart_mode.clone(),
            automatic_reboot: image.updates.automatic_reboot,
            automatic_reboot_time: image.updates.automatic_reboot_time.clone(),
        },
        boot_counting: match definition.target.disk {
            DiskLayout::GptEfi(_) => Some(BootCounting {
                entry_token: image.image.name.clone(),
                tries: image.boot.tries,
            }),
            DiskLayout::RpiMbr(_) => None,
        },
    })
}

/// `[sysctl]` as `sysctl -n` prints it: integers in decimal, strings as written.
fn sysctls(sysctl: &BTreeMap<String, toml::Value>) -> Result<BTreeMap<String, String>> {
    sysctl
        .iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::String(text) => text.clone(),
                other => bail!(
                    "`sysctl.\"{key}\"` is a {}, not an integer or a string",
                    other.type_str()
                ),
            };
            Ok((key.clone(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suite_definition_yields_expectations() {
        let root = crate::project_root();
        for target in crate::image::Target::ALL {
            let definition = crate::image::load_definition(
                &[root.join("tests/e2e/variants/suite.toml")],
                target,
            )
            .unwrap();
            let expect = expectations(&definition).unwrap();
            assert!(
                expect.fail2ban_bantime_s <= 60,
                "the suite needs a short test bantime"
            );
            assert_eq!(definition.image.users.admin.name, "admin");
            assert!(
                expect.egress_socket.starts_with("/run/"),
                "{}",
                expect.egress_socket
            );
            assert_eq!(expect.sandbox_socket, "/run/clawfort-sandbox/docker.sock");
            assert_eq!(
                expect.sysctl.get("kernel.core_pattern").map(String::as_str),
                Some("|/bin/false")
            );
            assert_eq!(
                expect
                    .sysctl
                    .get("kernel.kptr_restrict")
                    .map(String::as_str),
                Some("2")
            );
            assert_eq!(expect.gateway_exposure_budget, 2.0);
        }
    }

    /// What the suite expects (the suite variant) and what the self-test's weakened image is
    /// (suite and weakened variants), for the default target.
    fn suite_and_weakened() -> (Expectations, Expectations) {
        let root = crate::project_root();
        let suite = root.join("tests/e2e/variants/suite.toml");
        let weakened = root.join("tests/e2e/variants/weakened.toml");
        let target = crate::image::Target::default();
        let expected = crate::image::load_definition(std::slice::from_ref(&suite), target).unwrap();
        let built = crate::image::load_definition(&[suite, weakened], target).unwrap();
        (
            expectations(&expected).unwrap(),
            expectations(&built).unwrap(),
        )
    }

    /// The self-test's weakened sysctls really differ from what the suite expects, so the
    /// sysctl and core-dump probes have something to catch.
    #[test]
    fn weakened_sysctls_differ_from_the_expectations() {
        let (expected, built) = suite_and_weakened();
        for key in ["kernel.core_pattern", "kernel.kptr_restrict"] {
            assert_ne!(expected.sysctl[key], built.sysctl[key], "{key}");
        }
        assert_eq!(expected.sysctl.len(), built.sysctl.len());
    }

    /// The self-test's weakened umask, session limit, needrestart mode and automatic reboot
    /// really differ from
    /// what the suite expects, and the blocked modules are expected on the weakened image too
    /// (its sctp is dropped at run time).
    #[test]
    fn weakened_login_and_ssh_differ_from_the_expectations() {
        let (expected, built) = suite_and_weakened();
        let (expected, built) = (expected.kernel_and_login, built.kernel_and_login);
        assert_eq!(expected.umask, "0027");
        assert_ne!(expected.umask, built.umask);
        assert_ne!(expected.ssh_max_sessions, built.ssh_max_sessions);
        assert_ne!(expected.needrestart_mode, built.needrestart_mode);
        assert!(expected.automatic_reboot && !built.automatic_reboot);
        assert!(expected.blocked_modules.iter().any(|m| m == "sctp"));
        assert_eq!(expected.blocked_modules, built.blocked_modules);
    }
}
