//! fail2ban: an address that keeps failing SSH logins is banned (its new connections go
//! unanswered, the harness's own address still gets in) and the ban lifts after the bantime.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::exec::{self, PortState};
use crate::ssh::client;
use crate::Ctx;

/// Login attempts beyond maxretry before the probe gives up on a ban.
const EXTRA_ATTEMPTS: u32 = 3;
/// How long fail2ban may take to read the journal and ban after the last failure.
const BAN_LATENCY: Duration = Duration::from_secs(20);

pub fn fail2ban_bans_and_unbans(ctx: &Ctx) -> Result<String> {
    let testbed = &ctx.testbed;
    let attacker = testbed.sources.attacker;
    let guest = testbed.guest.address;
    let ssh = SocketAddrV4::new(guest, testbed.expect.ssh_port);
    ensure!(
        ban_state(ctx, attacker)? == BanState::Free,
        "{attacker} is banned before the probe began"
    );
    ensure!(
        tcp(&testbed.netns, attacker, ssh, Duration::from_secs(10))? == PortState::Open,
        "SSH is not reachable from {attacker} before the attack, so a ban could not be told apart"
    );

    // "Invalid user" is what counts as a failure with key-only SSH.
    let mut attempts = 0;
    let mut banned_at = None;
    while attempts < testbed.expect.fail2ban_maxretry + EXTRA_ATTEMPTS {
        attempts += 1;
        let user = format!("e2e-no-such-user-{attempts}");
        // Fails by design; only the server's log line matters.
        let _ = client(
            testbed,
            attacker,
            &format!("{user}@{guest}"),
            &["-o", "ConnectTimeout=8"],
            Duration::from_secs(20),
        );
        if attempts >= testbed.expect.fail2ban_maxretry {
            let deadline = Instant::now() + BAN_LATENCY;
            while Instant::now() < deadline {
                if ban_state(ctx, attacker)? == BanState::Banned {
                    banned_at = Some(Instant::now());
                    break;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
            if banned_at.is_some() {
                break;
            }
        }
    }
    let Some(banned_at) = banned_at else {
        let state = ban_state(ctx, attacker)?;
        // The jail's own value, not the image definition's the probe expected: on a guest
        // whose jail differs, the message must say what was in force.
        let in_force = ctx
            .admin
            .check_root("fail2ban-client get sshd maxretry")
            .map_or_else(|e| format!("unknown: {e:#}"), |v| v.trim().to_owned());
        bail!(
            "{attempts} failed logins from {attacker} (the sshd jail's maxretry {in_force}, \
             the image definition's {}), and it is not banned: {}",
            testbed.expect.fail2ban_maxretry,
            state.describe(attacker)
        );
    };
    // fail2ban's nftables action rejects (ICMP port-unreachable: "refused") or drops
    // ("filtered"); any other error fails the probe rather than passing as "not open".
    let while_banned = tcp(&testbed.netns, attacker, ssh, Duration::from_secs(8))?;
    ensure!(
        while_banned != PortState::Open,
        "fail2ban lists {attacker} as banned, but it can still connect to SSH"
    );
    ensure!(
        tcp(
            &testbed.netns,
            testbed.sources.admin,
            ssh,
            Duration::from_secs(10)
        )? == PortState::Open,
        "while {attacker} is banned, the admin address {} cannot connect either",
        testbed.sources.admin
    );

    // Bounded: the first ban lasts bantime (times the factor for a repeat offender).
    let limit = Duration::from_secs(testbed.expect.fail2ban_bantime_s * 4 + 60);
    let unbanned_after = loop {
        let state = ban_state(ctx, attacker)?;
        if state == BanState::Free {
            break banned_at.elapsed();
        }
        // Part-way states are normal for a moment: fail2ban removes the address from the set
        // and then from its list (the other way round when banning).
        ensure!(
            banned_at.elapsed() < limit,
            "the ban of {attacker} did not lift within {} s (bantime {} s): {}",
            limit.as_secs(),
            testbed.expect.fail2ban_bantime_s,
            state.describe(attacker)
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    ensure!(
        tcp(&testbed.netns, attacker, ssh, Duration::from_secs(10))? == PortState::Open,
        "fail2ban lifted the ban of {attacker}, but SSH is still unreachable from it"
    );
    Ok(format!(
        "banned after {attempts} invalid-user logins, new connections {} while banned, admin \
         unaffected; ban lifted {:.0} s after it was first seen (bantime {} s)",
        match while_banned {
            PortState::Closed => "refused",
            _ => "dropped",
        },
        unbanned_after.as_secs_f64(),
        testbed.expect.fail2ban_bantime_s
    ))
}

/// An address as fail2ban's sshd jail and its nftables set see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BanState {
    /// Listed by the jail and held by the set.
    Banned,
    /// In neither.
    Free,
    /// In one only: a ban or an unban half done (or a firewall that fails to apply bans,
    /// which the probe reports when the state does not settle).
    Partial { listed: bool, in_set: bool },
}

impl BanState {
    fn describe(self, address: Ipv4Addr) -> String {
        match self {
            BanState::Banned => format!("{address} is banned"),
            BanState::Free => format!("fail2ban does not list {address} as banned"),
            BanState::Partial { listed, .. } if listed => format!(
                "fail2ban lists {address} as banned, but nftables' addr-set-sshd does not hold it"
            ),
            BanState::Partial { .. } => {
                format!("nftables' addr-set-sshd holds {address}, but fail2ban does not list it")
            }
        }
    }
}

fn ban_state(ctx: &Ctx, address: Ipv4Addr) -> Result<BanState> {
    let address_text = address.to_string();
    let status = ctx.admin.check_root("fail2ban-client status sshd")?;
    let listed = status
        .lines()
        .find_map(|line| line.split("Banned IP list:").nth(1))
        .is_some_and(|list| list.split_whitespace().any(|ip| ip == address_text));
    // fail2ban creates its table and set with the first ban, so before it there is none.
    let set = ctx
        .admin
        .check_root("nft list set inet f2b-table addr-set-sshd 2>/dev/null || echo 'no set yet'")?;
    let in_set = set
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .any(|word| word == address_text);
    Ok(match (listed, in_set) {
        (true, true) => BanState::Banned,
        (false, false) => BanState::Free,
        (listed, in_set) => BanState::Partial { listed, in_set },
    })
}

/// One connection attempt from `source`; an error that is neither a refusal nor a timeout
/// fails the probe, since the attempt then says nothing about the ban.
fn tcp(netns: &str, source: Ipv4Addr, target: SocketAddrV4, limit: Duration) -> Result<PortState> {
    exec::in_netns(netns, move || {
        exec::local_runtime().block_on(exec::connect((source, 0).into(), target.into(), limit))
    })?
    .with_context(|| format!("connecting from {source} to {target} failed before any answer"))
}
