//! What the hardened image promises, read from the image definition the suite image is built
//! from (image/clawfort.toml with the suite's overlay merged over it), so the probes judge the
//! guest against the configuration and not against numbers copied into Rust.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use toml::{Table, Value};

use super::testbed::Expectations;

/// Users the probes log in as or check.
pub struct Users {
    pub admin: String,
    pub service: String,
}

/// Merges `overlays` over `base` as the image builder does: tables key by key, every other
/// value replaced.
pub fn merged_definition(base: &Path, overlays: &[&Path]) -> Result<Table> {
    let mut merged = read(base)?;
    for overlay in overlays {
        merge(&mut merged, read(overlay)?);
    }
    Ok(merged)
}

fn read(path: &Path) -> Result<Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read image definition {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid TOML in {}", path.display()))
}

fn merge(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(overlay)) => merge(existing, overlay),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

fn get<'a>(definition: &'a Table, path: &str) -> Result<&'a Value> {
    let mut value: Option<&Value> = None;
    let mut table = definition;
    for part in path.split('.') {
        let next = table
            .get(part)
            .with_context(|| format!("image definition has no `{path}`"))?;
        value = Some(next);
        if let Value::Table(inner) = next {
            table = inner;
        }
    }
    value.with_context(|| format!("image definition has no `{path}`"))
}

fn integer(definition: &Table, path: &str) -> Result<i64> {
    get(definition, path)?
        .as_integer()
        .with_context(|| format!("`{path}` in the image definition is not an integer"))
}

fn string(definition: &Table, path: &str) -> Result<String> {
    Ok(get(definition, path)?
        .as_str()
        .with_context(|| format!("`{path}` in the image definition is not a string"))?
        .to_owned())
}

pub fn expectations(definition: &Table) -> Result<Expectations> {
    let port = |path: &str| -> Result<u16> {
        u16::try_from(integer(definition, path)?)
            .with_context(|| format!("`{path}` is not a port number"))
    };
    let ports = |path: &str| -> Result<Vec<u16>> {
        get(definition, path)?
            .as_array()
            .with_context(|| format!("`{path}` is not an array"))?
            .iter()
            .map(|value| value.as_integer().and_then(|p| u16::try_from(p).ok()))
            .collect::<Option<Vec<u16>>>()
            .with_context(|| format!("`{path}` holds a non-port value"))
    };
    Ok(Expectations {
        ssh_port: port("ssh.port")?,
        gateway_port: port("gateway.port")?,
        canvas_port: port("gateway.canvas_port")?,
        extra_tcp_ports: ports("firewall.extra_tcp_ports")?,
        egress_tcp_ports: ports("gateway.egress.tcp_ports")?,
        egress_socket: string(definition, "gateway.egress.socket")?,
        sandbox_socket: format!("{}/docker.sock", string(definition, "sandbox.socket_dir")?),
        fail2ban_maxretry: u32::try_from(integer(definition, "fail2ban.maxretry")?)
            .context("`fail2ban.maxretry` is negative")?,
        fail2ban_bantime_s: duration_seconds(&string(definition, "fail2ban.bantime")?)
            .context("`fail2ban.bantime`")?,
        sysctl: sysctls(definition)?,
        gateway_exposure_budget: get(definition, "gateway.exposure_budget")?
            .as_float()
            .context(
                "`gateway.exposure_budget` in the image definition is not a number like 2.0",
            )?,
    })
}

/// `[sysctl]` as `sysctl -n` prints it: integers in decimal, strings as written.
fn sysctls(definition: &Table) -> Result<BTreeMap<String, String>> {
    get(definition, "sysctl")?
        .as_table()
        .context("`sysctl` in the image definition is not a table")?
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::Integer(number) => number.to_string(),
                Value::String(text) => text.clone(),
                other => bail!(
                    "`sysctl.\"{key}\"` is a {}, not an integer or a string",
                    other.type_str()
                ),
            };
            Ok((key.clone(), text))
        })
        .collect()
}

pub fn users(definition: &Table) -> Result<Users> {
    Ok(Users {
        admin: string(definition, "users.admin.name")?,
        service: string(definition, "users.service.name")?,
    })
}

/// fail2ban's time syntax as the image uses it: `30s`, `10m`, `1h`, `1d`, `1w`, or seconds.
pub fn duration_seconds(text: &str) -> Result<u64> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = digits
        .parse()
        .with_context(|| format!("`{text}` is not a duration like 30s, 10m or 1h"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => bail!("`{text}`: unknown unit `{unit}` (use s, m, h, d or w)"),
    };
    Ok(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_merge_tables_key_by_key() {
        let mut base: Table = toml::from_str("[a]\nx = 1\ny = [1, 2]\n[b]\nz = 'k'").unwrap();
        merge(&mut base, toml::from_str("[a]\ny = [3]\n").unwrap());
        assert_eq!(base["a"]["x"].as_integer(), Some(1));
        assert_eq!(base["a"]["y"].as_array().map(Vec::len), Some(1));
        assert_eq!(base["b"]["z"].as_str(), Some("k"));
    }

    #[test]
    fn durations_parse_like_fail2ban() {
        assert_eq!(duration_seconds("30s").unwrap(), 30);
        assert_eq!(duration_seconds("10m").unwrap(), 600);
        assert_eq!(duration_seconds("1w").unwrap(), 604_800);
        assert_eq!(duration_seconds("45").unwrap(), 45);
        assert!(duration_seconds("1y").is_err());
    }

    #[test]
    fn the_suite_definition_yields_expectations() {
        let root = crate::qemu::project_root();
        let definition = merged_definition(
            &root.join("image/clawfort.toml"),
            &[&root.join("tests/e2e/variants/suite.toml")],
        )
        .unwrap();
        let expect = expectations(&definition).unwrap();
        assert!(
            expect.fail2ban_bantime_s <= 60,
            "the suite needs a short test bantime"
        );
        assert_eq!(users(&definition).unwrap().admin, "admin");
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

    /// The self-test's weakened sysctls really differ from what the suite expects, so the
    /// sysctl and core-dump probes have something to catch.
    #[test]
    fn weakened_sysctls_differ_from_the_expectations() {
        let root = crate::qemu::project_root();
        let base = root.join("image/clawfort.toml");
        let suite = root.join("tests/e2e/variants/suite.toml");
        let weakened = root.join("tests/e2e/variants/weakened.toml");
        let expected = expectations(&merged_definition(&base, &[&suite]).unwrap()).unwrap();
        let built = expectations(&merged_definition(&base, &[&suite, &weakened]).unwrap()).unwrap();
        for key in ["kernel.core_pattern", "kernel.kptr_restrict"] {
            assert_ne!(expected.sysctl[key], built.sysctl[key], "{key}");
        }
        assert_eq!(expected.sysctl.len(), built.sysctl.len());
    }
}
