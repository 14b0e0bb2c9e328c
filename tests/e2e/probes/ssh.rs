//! The SSH server as an attacker on the network meets it: which authentication it offers,
//! whether root gets in with a valid key, and whether any weak algorithm is negotiable.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::ssh::client;
use crate::Ctx;

const CLIENT_LIMIT: Duration = Duration::from_secs(30);

/// The server must offer `publickey` and nothing else (no password, no keyboard-interactive).
pub fn ssh_offers_only_publickey(ctx: &Ctx) -> Result<String> {
    let testbed = &ctx.testbed;
    let destination = format!("{}@{}", testbed.admin_user, testbed.guest.address);
    let output = client(
        testbed,
        testbed.sources.ssh_prober,
        &destination,
        &["-v", "-o", "PreferredAuthentications=none"],
        CLIENT_LIMIT,
    )?;
    let offered = output
        .stderr
        .lines()
        .find_map(|line| line.split("Authentications that can continue: ").nth(1))
        .context("the server never listed its authentication methods (is sshd reachable?)")?;
    let methods: Vec<&str> = offered.trim().split(',').collect();
    ensure!(
        methods == ["publickey"],
        "the server offers {methods:?}; only publickey is allowed"
    );
    Ok(format!("offered methods: {}", methods.join(",")))
}

/// Root may not log in even with a key the server accepts for admin: the probe authorises the
/// admin key for root too, tries it from outside, and removes it again.
pub fn ssh_refuses_root_with_valid_key(ctx: &Ctx) -> Result<String> {
    let testbed = &ctx.testbed;
    let public_key = std::fs::read_to_string(testbed.ssh_key.with_extension("pub"))
        .context("reading the test key's .pub file")?;
    ctx.admin.check_root(&format!(
        "install -d -m 700 /root/.ssh && cp -a /root/.ssh/authorized_keys /root/.ssh/authorized_keys.e2e-saved 2>/dev/null; \
         printf '%s\\n' {} >> /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
        crate::exec::shell_quote(public_key.trim())
    ))?;
    let attempt = client(
        testbed,
        testbed.sources.ssh_prober,
        &format!("root@{}", testbed.guest.address),
        &[],
        CLIENT_LIMIT,
    );
    let restored = ctx.admin.check_root(
        "if [ -e /root/.ssh/authorized_keys.e2e-saved ]; then mv /root/.ssh/authorized_keys.e2e-saved /root/.ssh/authorized_keys; \
         else rm -f /root/.ssh/authorized_keys; fi",
    );
    let attempt = attempt?;
    restored.context("restoring root's authorized_keys")?;
    if attempt.success {
        bail!("root logged in over SSH with a valid key");
    }
    ensure!(
        attempt.stderr.contains("Permission denied"),
        "root's login failed, but not by the server refusing it: {}",
        crate::exec::last_lines(&attempt.stderr, 2)
    );
    Ok("root with the admin's (valid) key: Permission denied".to_owned())
}

/// Algorithms that must not be offered: SHA-1 and MD5 anything, CBC and legacy ciphers, short
/// or encrypt-and-MAC MACs, NIST-curve and DSA/SHA-1-RSA host keys, small DH groups.
fn is_weak(category: &str, algorithm: &str) -> bool {
    let name = algorithm.to_ascii_lowercase();
    let always_weak = [
        "sha1", "md5", "3des", "arcfour", "blowfish", "cast128", "rijndael", "-cbc", "ssh-dss",
        "nistp", "group1-", "umac-64", "ripemd",
    ];
    if always_weak.iter().any(|weak| name.contains(weak)) {
        return true;
    }
    match category {
        "host key algorithms" => name == "ssh-rsa" || name == "ssh-rsa-cert-v01@openssh.com",
        // Encrypt-then-MAC only.
        "MACs" => !name.ends_with("-etm@openssh.com"),
        _ => false,
    }
}

/// The server's algorithm lists (from its KEXINIT, as `ssh -vv` prints it) contain nothing
/// weak, and a client that offers only weak algorithms cannot negotiate at all.
pub fn ssh_offers_no_weak_algorithms(ctx: &Ctx) -> Result<String> {
    let testbed = &ctx.testbed;
    let destination = format!("{}@{}", testbed.admin_user, testbed.guest.address);
    let output = client(
        testbed,
        testbed.sources.ssh_prober,
        &destination,
        &["-vv", "-o", "PreferredAuthentications=none"],
        CLIENT_LIMIT,
    )?;
    // After "peer server KEXINIT proposal" come the server's lists, one per line.
    let server_part = output
        .stderr
        .split("peer server KEXINIT proposal")
        .nth(1)
        .context("`ssh -vv` printed no server KEXINIT proposal (is sshd reachable?)")?;
    let mut weak = Vec::new();
    let mut counts = Vec::new();
    for (category, prefix) in [
        ("KEX algorithms", "debug2: KEX algorithms: "),
        ("host key algorithms", "debug2: host key algorithms: "),
        ("ciphers", "debug2: ciphers ctos: "),
        ("ciphers", "debug2: ciphers stoc: "),
        ("MACs", "debug2: MACs ctos: "),
        ("MACs", "debug2: MACs stoc: "),
    ] {
        let list = server_part
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .with_context(|| format!("no `{prefix}` line in the server's KEXINIT"))?;
        let algorithms: Vec<&str> = list.trim().split(',').filter(|a| !a.is_empty()).collect();
        counts.push(format!("{category}: {}", algorithms.len()));
        weak.extend(
            algorithms
                .iter()
                .filter(|algorithm| {
                    // The strict-KEX and ext-info markers are not algorithms.
                    !algorithm.starts_with("kex-strict-") && !algorithm.starts_with("ext-info-")
                })
                .filter(|algorithm| is_weak(category, algorithm))
                .map(|algorithm| format!("{category}: {algorithm}")),
        );
    }
    weak.dedup();
    ensure!(
        weak.is_empty(),
        "the server offers weak algorithms: {}",
        weak.join(", ")
    );

    // A client willing to use only weak algorithms must find no common one. MACs only matter
    // with a non-AEAD cipher, so that attempt also limits the client to CTR ciphers; being
    // refused either is proof enough.
    let mut refused = Vec::new();
    for (option, extra, refusals) in [
        (
            "KexAlgorithms=diffie-hellman-group14-sha1,diffie-hellman-group-exchange-sha1,diffie-hellman-group1-sha1",
            None,
            &["no matching key exchange method"][..],
        ),
        ("Ciphers=aes128-cbc,aes256-cbc,3des-cbc", None, &["no matching cipher"][..]),
        (
            "MACs=hmac-sha1,hmac-md5,umac-64@openssh.com,hmac-sha2-256",
            Some("Ciphers=aes128-ctr,aes192-ctr,aes256-ctr"),
            &["no matching MAC", "no matching cipher"][..],
        ),
    ] {
        let mut extra_args = vec!["-o", option, "-o", "PreferredAuthentications=none"];
        if let Some(extra) = extra {
            extra_args.extend(["-o", extra]);
        }
        let attempt = client(
            testbed,
            testbed.sources.ssh_prober,
            &destination,
            &extra_args,
            CLIENT_LIMIT,
        )?;
        ensure!(
            refusals.iter().any(|refusal| attempt.stderr.contains(refusal)),
            "a client offering only {option} was not refused ({}): {}",
            refusals.join(" / "),
            crate::exec::last_lines(&attempt.stderr, 2)
        );
        refused.push(option.split('=').next().unwrap_or(option));
    }
    Ok(format!(
        "offered lists clean ({}); weak-only {} refused",
        counts.join(", "),
        refused.join("/")
    ))
}
