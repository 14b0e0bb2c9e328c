//! What the hardened image promises, read from the image definition the suite image is built
//! from (image/clawfort.toml with the suite's overlay merged over it, loaded and validated by
//! the builder's own loader), so the probes judge the guest against the configuration and not
//! against numbers copied into Rust.

use anyhow::Result;
use clawfort_imagedef::{parse_duration, ImageConfig};

use super::testbed::Expectations;

pub fn expectations(image: &ImageConfig) -> Result<Expectations> {
    Ok(Expectations {
        ssh_port: image.ssh.port,
        gateway_port: image.gateway.port,
        canvas_port: image.gateway.canvas_port,
        extra_tcp_ports: image.firewall.extra_tcp_ports.clone(),
        egress_tcp_ports: image.gateway.egress.tcp_ports.clone(),
        egress_socket: image.gateway.egress.socket.clone(),
        sandbox_socket: format!("{}/docker.sock", image.sandbox.socket_dir),
        fail2ban_maxretry: image.fail2ban.maxretry,
        fail2ban_bantime_s: parse_duration("fail2ban.bantime", &image.fail2ban.bantime)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suite_definition_yields_expectations() {
        let root = crate::qemu::project_root();
        for target in crate::image::known_targets() {
            let definition = crate::image::load_definition(
                &[root.join("tests/e2e/variants/suite.toml")],
                &target,
            )
            .unwrap();
            let expect = expectations(&definition.image).unwrap();
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
        }
    }
}
