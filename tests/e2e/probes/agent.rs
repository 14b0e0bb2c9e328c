//! The agent end to end on the appliance: the admin runs `clawfort setup` over SSH, pointing
//! the gateway at the fake provider and Telegram the harness runs on the namespace side of the
//! private network; a stranger's Telegram DM then gets a pairing code and nothing else, the
//! admin approves it over SSH with the command setup printed, and the next DM makes a model
//! round trip. Setup must have written the egress proxy's allow list (root's file, naming
//! both fakes), and the gateway's traffic to both must have gone through the proxy (its
//! journal lists the tunnels). Last, no copy of the API key or the bot token is left in the
//! units' journal, in what the fakes received outside the auth header, or in the state
//! directory outside `.env`.
//!
//! Setup rewrites the gateway's config and restarts it, so this probe runs after every other
//! probe that talks to the gateway (bar the uniqueness probe, which only reads first-boot
//! identities), and it checks at the end that the gateway still serves with the same token.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clawfort_fakes::telegram::{private_text, BOT_NAME};
use serde_json::Value;

use crate::exec::{last_lines, shell_quote};
use crate::fakes::{Control, Script};
use crate::probes::gateway::{gateway_token, http_status};
use crate::Ctx;

/// A Telegram user the appliance has never seen.
pub(crate) const STRANGER: i64 = 731_555_001;
/// Bound of every wait for the gateway to act on a DM.
const WAIT: Duration = Duration::from_secs(60);
/// How long the probe keeps watching after the pairing reply for a second reply or a model
/// call (either would be a leak of the pairing gate).
const WATCH: Duration = Duration::from_secs(5);
/// `clawfort setup` checks both secrets against the fakes, writes, restarts two units and
/// waits for the gateway (a slow TCG guest needs the margin).
const SETUP_LIMIT: Duration = Duration::from_secs(180);
/// Polling interval of the waits.
const POLL: Duration = Duration::from_millis(500);
/// The proxy every outgoing request of the gateway goes through; it logs each tunnel.
const EGRESS_UNIT: &str = "clawfort-egress.service";
/// The proxy's allow list, which setup writes as root.
const ALLOW_DIR: &str = "/etc/clawfort";
const ALLOW_FILE: &str = "/etc/clawfort/egress-allow.json";

pub fn agent_round_trip(ctx: &Ctx) -> Result<String> {
    let script = Script::read(&ctx.testbed.fakes)?;
    let secrets = Secrets {
        key: &script.model.api_key,
        token: &script.telegram.token,
    };
    // The report is public: whatever this probe says, passing or failing, is redacted.
    match RoundTrip::new(ctx, &script, &secrets).run() {
        Ok(detail) => Ok(secrets.redact(&detail)),
        Err(err) => Err(anyhow!(secrets.redact(&format!("{err:#}")))),
    }
}

/// The two secrets the fakes expect.
pub(crate) struct Secrets<'a> {
    pub(crate) key: &'a str,
    pub(crate) token: &'a str,
}

impl Secrets<'_> {
    pub(crate) fn redact(&self, text: &str) -> String {
        text.replace(self.key, "[api key]")
            .replace(self.token, "[bot token]")
    }

    /// Which secret (or a telling part of it) `text` holds, if any.
    pub(crate) fn found_in(&self, text: &str) -> Option<&'static str> {
        let token_secret = self.token.split_once(':').map_or(self.token, |(_, s)| s);
        let key_random = self.key.trim_start_matches("sk-e2e-");
        if text.contains(self.key) || text.contains(key_random) {
            Some("the API key")
        } else if text.contains(token_secret) {
            Some("the bot token")
        } else {
            None
        }
    }
}

/// The probe's view of the conversation (also used by the rogue-model probe, which talks
/// to the same paired stranger after this probe).
pub(crate) struct RoundTrip<'a> {
    ctx: &'a Ctx,
    script: &'a Script,
    secrets: &'a Secrets<'a>,
    pub(crate) control: Control<'a>,
}

impl<'a> RoundTrip<'a> {
    pub(crate) fn new(ctx: &'a Ctx, script: &'a Script, secrets: &'a Secrets<'a>) -> Self {
        RoundTrip {
            ctx,
            script,
            secrets,
            control: Control::new(&ctx.testbed),
        }
    }

    fn run(&self) -> Result<String> {
        let gateway_token_before = gateway_token(&self.ctx.testbed, &self.ctx.admin)?;
        let started = Instant::now();
        let approve_command = self.setup()?;
        let setup_s = started.elapsed().as_secs_f64();

        let (code, pairing_s) = self.pairing()?;
        let approve = approve_command.replace("<CODE>", &code);
        self.ctx.admin.run(&approve)?.ok(&format!("`{approve}`"))?;
        let answer_s = self.conversation()?;
        // After the conversation, so that on the self-test's weakened guest (whose proxy
        // reads no allow file, so setup writes none) the probe still fails for the
        // protections it removed there: pairing and the gateway's own egress.
        let allow = self.allow_file_written()?;

        let leaks = self.no_copies_left()?;
        ensure!(
            gateway_token(&self.ctx.testbed, &self.ctx.admin)? == gateway_token_before,
            "setup replaced the gateway's first-boot token"
        );
        let healthz = http_status(self.ctx, "/healthz", None)?;
        ensure!(
            healthz == 200,
            "after setup the gateway answers /healthz with {healthz}"
        );
        Ok(format!(
            "setup {setup_s:.1} s (@{BOT_NAME}; {allow}); pairing reply {pairing_s:.1} s after the DM, \
             no model call; `{approve}` worked; answer {answer_s:.1} s after the next DM (the \
             model got the DM and the key); {leaks}; gateway token kept, /healthz 200"
        ))
    }

    /// Runs `clawfort setup` as the admin would, secrets on stdin and in a 600 file (never on
    /// a command line); returns the approval command it printed, `<CODE>` still in it.
    fn setup(&self) -> Result<String> {
        let admin = &self.ctx.admin;
        let dir = admin
            .run_with(
                "umask 077 && d=$(mktemp -d) && cat > \"$d/bot-token\" && echo \"$d\"",
                Some(format!("{}\n", self.secrets.token).as_bytes()),
                crate::ssh::COMMAND_LIMIT,
            )?
            .ok("writing the bot token file")?;
        let dir = dir.trim().to_owned();
        ensure!(
            dir.starts_with("/tmp/"),
            "mktemp gave an unexpected directory `{dir}`"
        );
        let fakes = &self.ctx.testbed.fakes;
        let command = format!(
            "sudo -n clawfort setup --non-interactive --api openai-completions \
             --base-url http://{}/v1 --model {} --api-key-file - \
             --bot-token-file {dir}/bot-token --telegram-api-root http://{}",
            fakes.model, self.script.model.model, fakes.telegram
        );
        let output = admin.run_with(
            &command,
            Some(format!("{}\n", self.secrets.key).as_bytes()),
            SETUP_LIMIT,
        );
        let removed = admin.run(&format!("rm -rf -- {}", shell_quote(&dir)));
        let output = output?;
        removed?.ok("removing the bot token file")?;
        let printed = format!("{}\n{}", output.stdout, output.stderr);
        if let Some(secret) = self.secrets.found_in(&printed) {
            bail!("`clawfort setup` printed {secret}");
        }
        ensure!(
            output.success,
            "`clawfort setup` failed (exit {:?}): {}",
            output.code,
            last_lines(&printed, 6)
        );
        ensure!(
            output.stdout.contains(&format!("@{BOT_NAME}"))
                && output.stdout.contains("send it a message now"),
            "`clawfort setup` did not name the bot @{BOT_NAME} or say to message it: {}",
            last_lines(&output.stdout, 6)
        );
        approval_command(&output.stdout)
    }

    /// Setup wrote the proxy's allow list as root's own file (755 directory, 644 file)
    /// naming exactly the fakes' model server and Bot API, and `egress sync` agrees with it.
    fn allow_file_written(&self) -> Result<String> {
        let admin = &self.ctx.admin;
        let modes = admin.check(&format!("stat -c '%U %G %a' {ALLOW_DIR} {ALLOW_FILE}"))?;
        let modes: Vec<&str> = modes.lines().collect();
        ensure!(
            modes == ["root root 755", "root root 644"],
            "after setup {ALLOW_DIR} and {ALLOW_FILE} are {modes:?}, not root's 755 and 644"
        );
        // World-readable: the admin reads it without sudo.
        let text = admin.check(&format!("cat {ALLOW_FILE}"))?;
        let document: Value = serde_json::from_str(&text)
            .with_context(|| format!("{ALLOW_FILE} is not JSON: {}", last_lines(&text, 3)))?;
        let mut allowed: Vec<&str> = document["allow"]
            .as_array()
            .map(|list| list.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        allowed.sort_unstable();
        let fakes = &self.ctx.testbed.fakes;
        let mut wanted = [fakes.model.to_string(), fakes.telegram.to_string()];
        wanted.sort_unstable();
        ensure!(
            document["version"] == 1 && allowed == wanted,
            "{ALLOW_FILE} after setup allows {allowed:?} (version {}), not exactly {wanted:?}",
            document["version"]
        );
        let sync = admin.run("sudo -n clawfort egress sync --dry-run")?;
        ensure!(
            sync.success && sync.stdout.contains("Up to date"),
            "`clawfort egress sync --dry-run` after setup (exit {:?}): {}",
            sync.code,
            last_lines(&format!("{}\n{}", sync.stdout, sync.stderr), 6)
        );
        Ok(format!(
            "{ALLOW_FILE} root 644 allows {}",
            wanted.join(", ")
        ))
    }

    /// A stranger's DM: exactly one reply, with a pairing code and the command to approve it,
    /// and no model call. Returns the code and the seconds until the reply.
    fn pairing(&self) -> Result<(String, f64)> {
        self.control
            .push_update(&private_text(STRANGER, "Hello, who are you?"))?;
        let sent = Instant::now();
        let reply = self.wait_for("reply to the stranger's first DM", || {
            Ok(self.sent_to_stranger()?.into_iter().next())
        })?;
        let reply_s = sent.elapsed().as_secs_f64();
        std::thread::sleep(WATCH);
        // Both gates are judged before failing, so that a guest missing both says so.
        let mut broken = Vec::new();
        let completions = self.completions()?;
        if !completions.is_empty() {
            broken.push(format!(
                "the stranger's first DM reached the model before approval ({} chat completion \
                 request(s)); the reply was: {reply:?}",
                completions.len()
            ));
        }
        let telegram = self.ctx.testbed.fakes.telegram;
        if !self.tunnelled_to(&telegram.to_string())? {
            broken.push(format!(
                "the gateway reached Telegram ({telegram}) without the egress proxy: no tunnel \
                 to it in the journal of {EGRESS_UNIT}"
            ));
        }
        ensure!(broken.is_empty(), "{}", broken.join("; "));
        let replies = self.sent_to_stranger()?;
        ensure!(
            replies.len() == 1,
            "the stranger got {} replies instead of one pairing reply: {replies:?}",
            replies.len()
        );
        let code = reply
            .lines()
            .find_map(|line| line.trim().strip_prefix("Pairing code:"))
            .map(str::trim)
            .filter(|code| {
                (4..=16).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .with_context(|| format!("no pairing code in the reply: {reply:?}"))?
            .to_owned();
        let command = format!("clawfort pairing approve telegram {code}");
        ensure!(
            reply.contains(&command),
            "the pairing reply does not show `{command}`: {reply:?}"
        );
        Ok((code, reply_s))
    }

    /// The approved stranger's next DM goes to the model (with the key setup was given) and
    /// the model's answer comes back. Returns the seconds from DM to answer.
    fn conversation(&self) -> Result<f64> {
        let nonce = format!("e2e{}", std::process::id());
        let text = format!("What is the round trip token {nonce}?");
        self.control.push_update(&private_text(STRANGER, &text))?;
        let sent = Instant::now();
        let request = self.wait_for("model request carrying the approved DM", || {
            Ok(self
                .completions()?
                .into_iter()
                .find(|call| call["body"].to_string().contains(&nonce)))
        })?;
        let bearer = format!("Bearer {}", self.secrets.key);
        ensure!(
            request["headers"]["authorization"].as_str() == Some(bearer.as_str()),
            "the model request does not authenticate with the key given to setup"
        );
        ensure!(
            request["body"]["model"].as_str() == Some(self.script.model.model.as_str()),
            "the model request names model {}, not {}",
            request["body"]["model"],
            self.script.model.model
        );
        let model = self.ctx.testbed.fakes.model;
        ensure!(
            self.tunnelled_to(&model.to_string())?,
            "the gateway reached the model ({model}) without the egress proxy: no tunnel to it \
             in the journal of {EGRESS_UNIT}"
        );
        let answer = &self.script.model.text;
        self.wait_for("answer of the model in the stranger's chat", || {
            Ok(self
                .sent_to_stranger()?
                .into_iter()
                .find(|text| text.contains(answer.as_str())))
        })?;
        Ok(sent.elapsed().as_secs_f64())
    }

    /// The key and the bot token are in no journal line of the two units and in no file of
    /// the state directory but `.env` (where they must be: the search is shown to work).
    fn no_copies_left(&self) -> Result<String> {
        let admin = &self.ctx.admin;
        let journal = admin
            .check_root("journalctl -b -u clawfort -u clawfort-egress --no-pager -o verbose")?;
        let entries = journal
            .lines()
            .filter(|line| line.trim_start().starts_with("MESSAGE="))
            .count();
        ensure!(
            entries > 0,
            "the journal has no entry of clawfort or clawfort-egress, so the search proves nothing"
        );
        if let Some(secret) = self.secrets.found_in(&journal) {
            bail!("{secret} is in the journal of clawfort/clawfort-egress");
        }

        // What the gateway sent out: the key belongs in the model request's header only.
        let bodies: Vec<String> = self
            .control
            .model_calls()?
            .into_iter()
            .chain(self.control.telegram_calls()?)
            .map(|call| call["body"].to_string())
            .collect();
        if let Some(secret) = bodies.iter().find_map(|body| self.secrets.found_in(body)) {
            bail!("{secret} is in a request body the gateway sent to the fakes");
        }

        let state = format!("/home/{}/.openclaw", self.ctx.testbed.service_user);
        let search = format!(
            "IFS= read -r k && IFS= read -r t && cd {state} && \
             echo \"env $(printf '%s\\n' \"$k\" | grep -cF -f - .env) \
             $(printf '%s\\n' \"$t\" | grep -cF -f - .env) \
             $(find . -type f ! -name .env | wc -l)\" && \
             printf '%s\\n%s\\n' \"$k\" \"$t\" | grep -rlF --exclude=.env -f - .; \
             s=$?; [ $s -le 1 ] || exit $s"
        );
        let output = admin.run_with(
            &format!("sudo -n sh -c {}", shell_quote(&search)),
            Some(format!("{}\n{}\n", self.secrets.key, self.secrets.token).as_bytes()),
            crate::ssh::COMMAND_LIMIT,
        )?;
        let stdout = output.ok(&format!("searching {state} for the secrets"))?;
        let mut lines = stdout.lines();
        let counts: Vec<u64> = lines
            .next()
            .and_then(|line| line.strip_prefix("env "))
            .map(|counts| {
                counts
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [key_lines, token_lines, files] = counts[..] else {
            bail!("unexpected output of the state directory search: {stdout:?}");
        };
        ensure!(
            key_lines > 0 && token_lines > 0,
            "{state}/.env holds the key on {key_lines} line(s) and the bot token on \
             {token_lines}: setup did not write them there, so the search proves nothing"
        );
        let holders: Vec<&str> = lines.collect();
        ensure!(
            holders.is_empty(),
            "files in {state} besides .env hold the API key or the bot token: {holders:?}"
        );
        Ok(format!(
            "key and bot token in {entries} journal entries, {} request bodies and {files} \
             state files besides .env: none",
            bodies.len()
        ))
    }

    /// Whether the egress proxy logged a tunnel to `target` (`host:port`) during this boot.
    fn tunnelled_to(&self, target: &str) -> Result<bool> {
        let journal = self.ctx.admin.sudo(&format!(
            "journalctl -b -u {EGRESS_UNIT} --no-pager -o cat --grep 'tunnel'"
        ))?;
        // `--grep` exits 1 when nothing matched: that is an answer, not an error.
        if !journal.success && journal.code != Some(1) {
            bail!(
                "reading the journal of {EGRESS_UNIT} failed: {}",
                last_lines(&journal.stderr, 3)
            );
        }
        Ok(journal
            .stdout
            .lines()
            .any(|line| line.contains(&format!(" to {target} ")) && line.contains("opened")))
    }

    /// Texts the bot delivered to the stranger, in order.
    pub(crate) fn sent_to_stranger(&self) -> Result<Vec<String>> {
        Ok(self
            .control
            .telegram_calls()?
            .into_iter()
            .filter(|call| {
                call["method"] == "sendMessage"
                    && call["status"] == 200
                    && call["body"]["chat_id"] == STRANGER
            })
            .map(|call| call["body"]["text"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    /// What of `secrets` or the gateway token reached the model in any request so far: the
    /// number of requests, and one line per leak.
    pub(crate) fn leaks(
        &self,
        secrets: &Secrets,
        gateway_token: &str,
    ) -> Result<(usize, Vec<String>)> {
        let bodies: Vec<String> = self
            .completions()?
            .into_iter()
            .map(|request| request["body"].to_string())
            .collect();
        let mut leaks = Vec::new();
        if let Some(secret) = bodies.iter().find_map(|body| secrets.found_in(body)) {
            leaks.push(format!("{secret} is in a request the model received"));
        }
        if bodies.iter().any(|body| body.contains(gateway_token)) {
            leaks.push("the gateway token is in a request the model received".to_owned());
        }
        Ok((bodies.len(), leaks))
    }

    /// Chat completion requests the model fake received.
    pub(crate) fn completions(&self) -> Result<Vec<Value>> {
        Ok(self
            .control
            .model_calls()?
            .into_iter()
            .filter(|call| {
                call["method"] == "POST"
                    && call["path"]
                        .as_str()
                        .is_some_and(|path| path.ends_with("/chat/completions"))
            })
            .collect())
    }

    /// Polls `found` until it yields something, for at most [`WAIT`]; on timeout the error
    /// says what the fakes and the gateway's journal saw.
    pub(crate) fn wait_for<T>(
        &self,
        what: &str,
        found: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        self.wait_within(what, WAIT, found)
    }

    /// [`Self::wait_for`] with a bound of its own (a turn of slow tool calls).
    pub(crate) fn wait_within<T>(
        &self,
        what: &str,
        limit: Duration,
        mut found: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = found()? {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!(
                    "no {what} within {} s; {}",
                    limit.as_secs(),
                    self.what_was_seen()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// A summary of the fakes' traffic and the gateway's last journal lines, for a failure.
    fn what_was_seen(&self) -> String {
        let tally = |calls: Result<Vec<Value>>, name: fn(&Value) -> String| match calls {
            Ok(calls) => {
                let mut counts = std::collections::BTreeMap::new();
                for call in &calls {
                    *counts.entry(name(call)).or_insert(0) += 1;
                }
                format!("{counts:?}")
            }
            Err(err) => format!("unreadable ({err:#})"),
        };
        let telegram = tally(self.control.telegram_calls(), |call| {
            format!(
                "{} {}",
                call["method"].as_str().unwrap_or("?"),
                call["status"]
            )
        });
        let model = tally(self.control.model_calls(), |call| {
            format!(
                "{} {}",
                call["method"].as_str().unwrap_or("?"),
                call["path"].as_str().unwrap_or("?")
            )
        });
        let journal = self
            .ctx
            .admin
            .sudo("journalctl -u clawfort -u clawfort-egress -n 8 --no-pager -o cat")
            .map_or_else(
                |err| format!("unreadable ({err:#})"),
                |output| last_lines(&output.stdout, 8),
            );
        format!("Telegram fake saw {telegram}; model fake saw {model}; journal: {journal}")
    }
}

/// The approval command from setup's summary (`... pairing approve telegram <CODE>`), made
/// non-interactive for sudo. Only a plain command is accepted: it is run as printed.
fn approval_command(stdout: &str) -> Result<String> {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|line| line.ends_with("clawfort pairing approve telegram <CODE>"))
        .with_context(|| {
            format!(
                "`clawfort setup` printed no `... clawfort pairing approve telegram <CODE>` line: {}",
                last_lines(stdout, 6)
            )
        })?;
    ensure!(
        line.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" -_./<>".contains(&b)),
        "setup's approval command is not a plain command: {line:?}"
    );
    Ok(match line.strip_prefix("sudo ") {
        Some(rest) => format!("sudo -n {rest}"),
        None => line.to_owned(),
    })
}
