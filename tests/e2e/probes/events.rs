//! Security events reach the owner: with an owner configured (`commands.ownerAllowFrom`, the
//! config restored afterwards), a fail2ban ban becomes exactly one message in the owner's
//! Telegram chat (the fake Bot API records it) and one `fail2ban-ban` line of root's host feed,
//! which `clawfort events --json` lists. The ban is made with `fail2ban-client set sshd banip`
//! on an address of the documentation range (TEST-NET-1), so it goes through the jail's
//! actions exactly as a ban from failed logins does without locking out anything real, and
//! is lifted afterwards.
//!
//! Runs after the agent probes: it needs the Telegram channel `clawfort setup` configured.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::fakes::{Control, Script};
use crate::probes::agent::Secrets;
use crate::probes::commands::{edit_config, with_config_restored};
use crate::Ctx;

/// The owner's Telegram user id (also their private chat's id).
const OWNER: i64 = 731_555_100;
/// The address banned: TEST-NET-1, never a real client.
const BANNED: &str = "192.0.2.55";
/// Bound of the wait for the owner's message once the ban is in the feed: the gateway polls
/// the host feed every 5 s and gathers a message for 30 s (34 s measured under TCG); a loaded
/// guest gets the rest.
const WAIT: Duration = Duration::from_secs(90);
/// Bound of the wait for the ban in the host feed: fail2ban runs the jail's actions at once.
const FEED_WAIT: Duration = Duration::from_secs(20);
/// How long the probe keeps watching after the message for a second one about the same ban.
const WATCH: Duration = Duration::from_secs(10);
const FEED_DIR: &str = "/var/lib/clawfort";
const FEED: &str = "/var/lib/clawfort/events.jsonl";

pub fn security_events_reach_owner(ctx: &Ctx) -> Result<String> {
    with_config_restored(ctx, run)
}

fn run(ctx: &Ctx, _script: &Script, _secrets: &Secrets) -> Result<String> {
    configure_owner(ctx)?;
    let control = Control::new(&ctx.testbed);
    let about_ban = |control: &Control| -> Result<Vec<String>> {
        Ok(owner_messages(control)?
            .into_iter()
            .filter(|text| text.contains(&format!("fail2ban banned {BANNED}")))
            .collect())
    };
    ensure!(
        about_ban(&control)?.is_empty(),
        "the owner already had a message about {BANNED} before the ban"
    );

    let banned = ctx
        .admin
        .sudo(&format!("fail2ban-client set sshd banip {BANNED}"))?;
    // fail2ban runs the jail's actions at once: without the event in the host feed, no
    // message can follow, and the probe says so without waiting out the message's bound.
    let outcome = wait_for_feed(ctx).and_then(|()| wait_for_message(ctx, &control, &about_ban));
    let unbanned = ctx
        .admin
        .sudo(&format!("fail2ban-client set sshd unbanip {BANNED}"));
    ensure!(
        banned.success,
        "`fail2ban-client set sshd banip {BANNED}` failed: {}",
        banned.stderr.trim()
    );
    let (message, after_s) = outcome?;
    unbanned?.ok("lifting the probe's ban")?;

    let modes = ctx
        .admin
        .check(&format!("stat -c '%U %G %a' {FEED_DIR} {FEED}"))?;
    let modes: Vec<&str> = modes.lines().collect();
    ensure!(
        modes == ["root root 755", "root root 644"],
        "the host feed {FEED_DIR} and {FEED} are {modes:?}, not root's 755 and 644"
    );
    Ok(format!(
        "a ban of {BANNED} reached the owner {after_s:.0} s later as one message (`{}`); \
         `clawfort events` lists it (host feed root 644 in a root 755 directory); ban lifted",
        message
            .lines()
            .find(|l| l.contains(BANNED))
            .unwrap_or(&message)
            .trim()
    ))
}

/// Waits (bounded by [`FEED_WAIT`]) until `clawfort events --json` lists the ban as a host
/// `fail2ban-ban` in jail sshd.
fn wait_for_feed(ctx: &Ctx) -> Result<()> {
    let started = Instant::now();
    loop {
        let feed = ctx.admin.check_root("clawfort events --json")?;
        let feed: Value =
            serde_json::from_str(&feed).context("`clawfort events --json` is not JSON")?;
        let in_feed = feed.as_array().into_iter().flatten().any(|record| {
            record["kind"] == "fail2ban-ban"
                && record["source"] == "host"
                && record["jail"] == "sshd"
                && record["ip"] == BANNED
        });
        if in_feed {
            return Ok(());
        }
        if started.elapsed() > FEED_WAIT {
            let errors = ctx
                .admin
                .sudo("journalctl -u fail2ban -n 3 --no-pager -o cat | grep -i error")
                .map(|o| o.stdout.trim().replace('\n', "; "))
                .unwrap_or_default();
            bail!(
                "no fail2ban-ban event of {BANNED} in the host feed within {} s, so no owner \
                 message about the ban can follow (fail2ban's errors: {errors})",
                FEED_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The owner's messages so far: every `sendMessage` the gateway made to their chat.
fn owner_messages(control: &Control) -> Result<Vec<String>> {
    Ok(control
        .telegram_calls()?
        .into_iter()
        .filter(|call| {
            call["method"] == "sendMessage"
                && call["status"] == 200
                && call["body"]["chat_id"] == OWNER
        })
        .map(|call| call["body"]["text"].as_str().unwrap_or_default().to_owned())
        .collect())
}

/// Waits for the first owner message about the ban, then watches for a second one.
fn wait_for_message(
    ctx: &Ctx,
    control: &Control,
    about_ban: &dyn Fn(&Control) -> Result<Vec<String>>,
) -> Result<(String, f64)> {
    let started = Instant::now();
    let first = loop {
        let messages = about_ban(control)?;
        if let Some(first) = messages.into_iter().next() {
            break first;
        }
        if started.elapsed() > WAIT {
            let journal = ctx
                .admin
                .sudo("journalctl -u clawfort -n 5 --no-pager -o cat")
                .map(|o| o.stdout.trim().replace('\n', "; "))
                .unwrap_or_default();
            bail!(
                "no owner message about the ban of {BANNED} within {} s (gateway journal: \
                 {journal})",
                WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let after_s = started.elapsed().as_secs_f64();
    std::thread::sleep(WATCH);
    let count = about_ban(control)?.len();
    ensure!(
        count == 1,
        "the owner got {count} messages about the one ban of {BANNED}"
    );
    Ok((first, after_s))
}

/// Makes [`OWNER`] the owner in the service user's `openclaw.json` (saved first to the
/// backup the config is restored from) and restarts the gateway.
fn configure_owner(ctx: &Ctx) -> Result<()> {
    edit_config(
        ctx,
        "config.setdefault('commands', {})['ownerAllowFrom'] = ['telegram:' + sys.argv[2]]\n",
        &[OWNER.to_string()],
    )
}
