//! Telegram channel tests: the real channel (`clawfort::telegram::run`) against a fake Bot
//! API on loopback (`clawfort_fakes::telegram`), with a scripted agent.

#[path = "telegram/events.rs"]
mod events;
#[path = "telegram/flows.rs"]
mod flows;
#[path = "telegram/polling.rs"]
mod polling;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawfort::channel::{Agent, CancellationToken, CommandContext, OwnerCommand, Reply, Turn};
use clawfort::config::{Config, EnvSource};
use clawfort::pairing::Store;
use clawfort::paths::Paths;
use clawfort::secret::Secret;
use clawfort::sessions::Transcripts;
use clawfort::telegram::{self, Policy, TelegramError, TelegramSettings};
use tokio::task::JoinHandle;

use clawfort_fakes::telegram::Fake;

pub const TOKEN: &str = "4242:AAFakeSecretTokenThatMustNeverBeLogged";
/// A user approved through `allowFrom`.
pub const FRIEND: i64 = 222;
/// The owner (also approved).
pub const OWNER: i64 = 333;

/// The agent side for tests: records turns and commands; answers `echo: <text>`, the
/// scripted `reply` if set; `block` waits until cancelled.
#[derive(Default)]
pub struct TestAgent {
    pub turns: Mutex<Vec<Turn>>,
    pub commands: Mutex<Vec<(OwnerCommand, CommandContext)>>,
    pub reply: Mutex<Option<String>>,
    pub delay: Mutex<Duration>,
    /// Turns running now, and the most ever running at once.
    pub in_flight: Mutex<(usize, usize)>,
}

impl TestAgent {
    pub fn texts(&self) -> Vec<String> {
        self.turns
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.text.clone())
            .collect()
    }
}

impl Agent for TestAgent {
    async fn handle_turn(&self, turn: Turn, cancel: CancellationToken) -> anyhow::Result<Reply> {
        let text = turn.text.clone();
        self.turns.lock().unwrap().push(turn);
        if text == "block" {
            cancel.cancelled().await;
            anyhow::bail!("cancelled");
        }
        let delay = *self.delay.lock().unwrap();
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            in_flight.0 += 1;
            in_flight.1 = in_flight.1.max(in_flight.0);
        }
        tokio::time::sleep(delay).await;
        self.in_flight.lock().unwrap().0 -= 1;
        let scripted = self.reply.lock().unwrap().clone();
        Ok(Reply::text(scripted.unwrap_or(format!("echo: {text}"))))
    }

    async fn handle_command(
        &self,
        command: OwnerCommand,
        context: CommandContext,
    ) -> anyhow::Result<Reply> {
        self.commands.lock().unwrap().push((command, context));
        Ok(Reply::text(format!("{command:?} done")))
    }
}

/// One installation (state dir, config) talking to one fake Bot API.
pub struct Harness {
    pub fake: Fake,
    pub dir: tempfile::TempDir,
    pub settings: TelegramSettings,
    pub policy: Policy,
    pub agent: Arc<TestAgent>,
}

impl Harness {
    /// `config` is the `channels.telegram` object of openclaw.json (JSON5).
    pub async fn new(telegram_config: &str) -> Self {
        let fake = Fake::start(TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            &format!("{{ channels: {{ telegram: {telegram_config} }} }}"),
            &EnvSource::fixed(Vec::new()),
        )
        .unwrap();
        let paths = Paths::in_dir(dir.path());
        let policy = Policy {
            config: Arc::new(config),
            store: Store::new(paths.credentials_dir()),
            transcripts: Transcripts::new(paths.sessions_dir()),
        };
        let mut settings = TelegramSettings::new(Secret::new(TOKEN));
        settings.api_root = fake.api_root();
        settings.poll_timeout_secs = 1;
        settings.typing_interval = Duration::from_millis(50);
        settings.owner_ids = vec![OWNER.to_string()];
        Self {
            fake,
            dir,
            settings,
            policy,
            agent: Arc::new(TestAgent::default()),
        }
    }

    /// Runs the channel as a task (abort it to simulate a crash).
    pub fn start(&self) -> JoinHandle<Result<(), TelegramError>> {
        let (settings, policy, agent) = (
            self.settings.clone(),
            self.policy.clone(),
            self.agent.clone(),
        );
        let dir = self.dir.path().to_path_buf();
        tokio::spawn(async move {
            telegram::run(settings, policy, &dir, agent, CancellationToken::new()).await
        })
    }

    /// Waits until `user`'s chat has received `count` messages.
    pub async fn replies(&self, chat: i64, count: usize) -> Vec<String> {
        self.fake
            .wait_until(&format!("{count} message(s) to chat {chat}"), |f| {
                f.sent_to(chat).len() >= count
            })
            .await;
        self.fake.sent_to(chat)
    }
}

/// Runs the channel to its end (it must end by itself within 10 s).
pub async fn run_to_end(harness: &Harness) -> Result<(), TelegramError> {
    tokio::time::timeout(Duration::from_secs(10), harness.start())
        .await
        .expect("the channel did not stop")
        .unwrap()
}
