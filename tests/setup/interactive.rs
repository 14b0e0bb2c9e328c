//! `clawfort setup` as a person runs it: the real binary on a pseudo-terminal (rexpect),
//! answering its questions, against the fakes. The terminal echoes what is typed (as a
//! real one does), so a secret that is not hidden shows up in what the test reads back.
//!
//! Every wait is bounded: each expectation by [`TIMEOUT_MS`], each poll of the terminal's
//! settings by [`POLL`]; a session still running at the end is killed (SIGTERM, then
//! SIGKILL after the same timeout).

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rexpect::process::{Signal, WaitStatus};
use rexpect::session::{spawn_with_options, PtySession};
use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
use serde_json::json;

use crate::harness::{all_files, config, mode, names, Fakes, BOT_TOKEN, OWNER};
use crate::support::{command, state_dir};
use clawfort_fakes::model::{Fake, Reply, KEY};
use clawfort_fakes::telegram::BOT_NAME;

/// The longest wait for one expected piece of output.
const TIMEOUT_MS: u64 = 30_000;
/// The longest wait for the terminal's echo to change.
const POLL: Duration = Duration::from_secs(5);
/// A well-formed key the fake model server refuses.
const WRONG_KEY: &str = "sk-wrong-0123456789abcdef";

/// `clawfort setup` on a new terminal, with the terminal's echo on.
struct Person {
    pty: PtySession,
    /// Everything the terminal showed so far.
    seen: String,
}

impl Person {
    fn start(dir: &Path, fakes: &Fakes) -> Self {
        let mut cmd = command(dir);
        cmd.args([
            "setup",
            "--telegram-api-root",
            &fakes.telegram.api_root(),
            "--no-restart",
        ]);
        // rexpect turns the terminal's echo off before it starts the program; a person's
        // terminal echoes, so it is turned on again just before setup starts.
        // SAFETY: runs in the forked child before exec; two ioctls on fd 0, no allocation.
        unsafe {
            cmd.pre_exec(|| {
                let stdin = BorrowedFd::borrow_raw(0);
                let mut termios = tcgetattr(stdin)?;
                termios.local_modes.insert(LocalModes::ECHO);
                tcsetattr(stdin, OptionalActions::Now, &termios)?;
                Ok(())
            });
        }
        let options = rexpect::reader::Options::new()
            .timeout_ms(Some(TIMEOUT_MS))
            .strip_ansi_escape_codes(false);
        let mut person = Self {
            pty: spawn_with_options(cmd, options).expect("start setup on a pty"),
            seen: String::new(),
        };
        person.expect("Which model provider?");
        person
    }

    /// Waits for `text`; returns what came before it.
    fn expect(&mut self, text: &str) -> String {
        match self.pty.exp_string(text) {
            Ok(before) => {
                self.seen.push_str(&before);
                self.seen.push_str(text);
                before
            }
            Err(e) => panic!(
                "waiting for {text:?}: {e}\nthe terminal showed:\n{}",
                self.seen
            ),
        }
    }

    /// Answers the question `question` with a visible line (the terminal echoes it).
    fn answer(&mut self, question: &str, answer: &str) {
        self.expect(question);
        self.wait_echo(true);
        self.pty.send_line(answer).unwrap();
    }

    /// Answers a hidden question, once the program has turned the echo off.
    fn answer_hidden(&mut self, question: &str, secret: &str) {
        self.expect(question);
        self.wait_echo(false);
        self.pty.send_line(secret).unwrap();
    }

    /// Sends a control character (`'c'` for Ctrl-C, `'d'` for Ctrl-D).
    fn control(&mut self, key: char) {
        self.pty.send_control(key).unwrap();
    }

    fn echo(&self) -> bool {
        let master = self.pty.process().get_file_handle().unwrap();
        // On Linux the master's settings are the terminal's (the slave side's).
        let termios = tcgetattr(master.as_fd()).unwrap();
        termios.local_modes.contains(LocalModes::ECHO)
    }

    fn wait_echo(&self, on: bool) {
        let deadline = Instant::now() + POLL;
        while self.echo() != on {
            assert!(
                Instant::now() < deadline,
                "the terminal's echo did not turn {}\nthe terminal showed:\n{}",
                if on { "on" } else { "off" },
                self.seen
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the program to end; returns its exit code (`None` when a signal killed
    /// it) and the whole transcript.
    fn finish(mut self) -> (Option<i32>, String) {
        match self.pty.exp_eof() {
            Ok(rest) => self.seen.push_str(&rest),
            Err(e) => panic!(
                "waiting for the end: {e}\nthe terminal showed:\n{}",
                self.seen
            ),
        }
        let code = match self.pty.process().wait().unwrap() {
            WaitStatus::Exited(_, code) => Some(code),
            _ => None,
        };
        (code, self.seen)
    }
}

/// The answers up to (not including) the API key, for an OpenAI-compatible server.
fn answer_provider(person: &mut Person, model: &Fake) {
    person.answer("Choose [1]: ", "5"); // another OpenAI-compatible server
    person.answer("A short name for this provider [custom]: ", "fake");
    person.answer("Base URL: ", &model.url("/v1"));
    person.answer("Model: ", "fake-model");
}

/// The answers after the API key: the bot token, the owner, the budget.
fn answer_the_rest(person: &mut Person) {
    person.answer_hidden(
        "Telegram bot token from @BotFather (input hidden): ",
        BOT_TOKEN,
    );
    person.answer("@userinfobot tells it): ", &OWNER.to_string());
    person.answer("Daily spend cap in US dollars (optional): ", "");
    person.answer("Monthly spend cap in US dollars (optional): ", "5");
}

const KEY_QUESTION: &str = "API key (input hidden; Enter if the server needs none): ";

/// Neither secret (nor the refused key) is on the terminal.
fn assert_not_shown(transcript: &str) {
    for secret in [KEY, "TESTKEY", BOT_TOKEN, "AAHtestTOKEN", WRONG_KEY] {
        assert!(
            !transcript.contains(secret),
            "the terminal showed a secret:\n{transcript}"
        );
    }
}

/// `.env` holds the key; no other file in `dir` does.
fn assert_key_only_in_env(dir: &Path) {
    for (path, bytes) in all_files(dir) {
        let text = String::from_utf8_lossy(&bytes);
        let holds = text.contains(KEY) || text.contains(BOT_TOKEN);
        assert_eq!(
            holds,
            path.file_name().unwrap() == ".env",
            "{}:\n{text}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_answers_and_the_bot_is_named() {
    let fakes = Fakes::start().await;
    let dir = state_dir(None);
    let (code, transcript) = tokio::task::block_in_place(|| {
        let mut person = Person::start(dir.path(), &fakes);
        answer_provider(&mut person, &fakes.model);
        person.answer_hidden(KEY_QUESTION, KEY);
        answer_the_rest(&mut person);
        person.expect("the bot is @");
        person.finish()
    });
    assert_eq!(code, Some(0), "{transcript}");
    // The terminal echoed the visible answers (so it would have shown the secrets).
    assert!(transcript.contains("Model: fake-model"), "{transcript}");
    assert_not_shown(&transcript);
    assert!(
        transcript.contains(&format!("@{BOT_NAME} is ready: send it a message now.")),
        "{transcript}"
    );
    assert!(
        transcript.contains("pairing approve telegram <CODE>"),
        "{transcript}"
    );

    let env = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    assert!(
        env.ends_with(&format!(
            "\nFAKE_API_KEY={KEY}\nTELEGRAM_BOT_TOKEN={BOT_TOKEN}\n"
        )),
        "{env}"
    );
    assert_eq!(mode(&dir.path().join(".env")), 0o600);
    assert_eq!(mode(&dir.path().join("openclaw.json")), 0o600);
    let config = config(dir.path());
    assert_eq!(
        config["models"]["providers"]["fake"],
        json!({
            "api": "openai-completions", "baseUrl": fakes.model.url("/v1"),
            "apiKey": "${FAKE_API_KEY}", "models": [{"id": "fake-model"}],
        })
    );
    assert_eq!(
        config["agents"]["defaults"]["model"]["primary"],
        "fake/fake-model"
    );
    assert_eq!(
        config["channels"]["telegram"]["allowFrom"],
        json!([OWNER.to_string()])
    );
    assert_eq!(config["budget"], json!({"monthlyUsd": 5.0}));
    assert_key_only_in_env(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_named_and_asked_again() {
    let fakes = Fakes::start().await;
    let dir = state_dir(None);
    let (code, transcript) = tokio::task::block_in_place(|| {
        let mut person = Person::start(dir.path(), &fakes);
        answer_provider(&mut person, &fakes.model);
        person.answer_hidden(KEY_QUESTION, WRONG_KEY);
        answer_the_rest(&mut person);
        person.expect("the API key was refused by provider `fake`");
        person.answer_hidden("The API key again (input hidden): ", KEY);
        person.expect("the key works");
        person.finish()
    });
    assert_eq!(code, Some(0), "{transcript}");
    assert_not_shown(&transcript);
    // The bot token, which passed, was not checked again.
    assert_eq!(fakes.telegram.calls("getMe").len(), 1);
    // The wrong key went to the server once, the right one then; only the right one stays.
    let keys: Vec<_> = fakes
        .model
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        keys,
        [format!("Bearer {WRONG_KEY}"), format!("Bearer {KEY}")]
    );
    assert_key_only_in_env(dir.path());
    for (path, bytes) in all_files(dir.path()) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(WRONG_KEY),
            "{}",
            path.display()
        );
    }
}

/// The state directory's files and their contents, to compare before and after.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    all_files(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_d_at_a_question_ends_setup_and_writes_nothing() {
    let fakes = Fakes::start().await;
    let dir = state_dir(Some("{ gateway: { port: 18790 } } // mine\n"));
    let before = snapshot(dir.path());
    // At a visible question, and at a hidden one (which reads the terminal raw).
    for hidden in [false, true] {
        let (code, transcript) = tokio::task::block_in_place(|| {
            let mut person = Person::start(dir.path(), &fakes);
            if hidden {
                answer_provider(&mut person, &fakes.model);
                person.expect(KEY_QUESTION);
                person.wait_echo(false);
            } else {
                person.expect("Choose [1]: ");
            }
            person.control('d');
            person.finish()
        });
        assert_eq!(code, Some(1), "hidden {hidden}: {transcript}");
        assert!(
            transcript
                .contains("error: the input ended before setup was complete; nothing was written"),
            "hidden {hidden}: {transcript}"
        );
        assert_eq!(snapshot(dir.path()), before, "hidden {hidden}");
    }
    assert!(fakes.telegram.calls("getMe").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_at_the_hidden_prompt_gives_the_terminal_back() {
    let fakes = Fakes::start().await;
    let dir = state_dir(None);
    let before = snapshot(dir.path());
    let (code, transcript, echo) = tokio::task::block_in_place(|| {
        let mut person = Person::start(dir.path(), &fakes);
        answer_provider(&mut person, &fakes.model);
        person.expect(KEY_QUESTION);
        person.wait_echo(false);
        person.pty.send("sk-half-typed").unwrap();
        person.control('c');
        person.expect("interrupted: nothing was written");
        // The terminal outlives the program: the person's shell gets it back.
        let master = person.pty.process().get_file_handle().unwrap();
        let (code, transcript) = person.finish();
        let termios = tcgetattr(master.as_fd()).unwrap();
        (
            code,
            transcript,
            termios.local_modes.contains(LocalModes::ECHO),
        )
    });
    assert_eq!(code, Some(130), "{transcript}");
    assert!(echo, "the terminal was left without echo");
    assert!(!transcript.contains("sk-half-typed"), "{transcript}");
    assert_eq!(snapshot(dir.path()), before);
}

/// A dropped SSH connection (SIGHUP) or a `kill` (SIGTERM) at the hidden prompt ends setup
/// as Ctrl-C does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_or_sigterm_at_the_hidden_prompt_ends_setup_cleanly() {
    let fakes = Fakes::start().await;
    let dir = state_dir(None);
    let before = snapshot(dir.path());
    for signal in [Signal::SIGHUP, Signal::SIGTERM] {
        let (code, transcript, echo) = tokio::task::block_in_place(|| {
            let mut person = Person::start(dir.path(), &fakes);
            answer_provider(&mut person, &fakes.model);
            person.expect(KEY_QUESTION);
            person.wait_echo(false);
            person.pty.process_mut().signal(signal).unwrap();
            let master = person.pty.process().get_file_handle().unwrap();
            let (code, transcript) = person.finish();
            let termios = tcgetattr(master.as_fd()).unwrap();
            (
                code,
                transcript,
                termios.local_modes.contains(LocalModes::ECHO),
            )
        });
        assert_eq!(code, Some(130), "{signal}: {transcript}");
        assert!(echo, "{signal}: the terminal was left without echo");
        assert!(
            transcript.contains("interrupted: nothing was written"),
            "{signal}: {transcript}"
        );
        assert_eq!(snapshot(dir.path()), before, "{signal}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_the_checks_writes_nothing() {
    // The model list never answers: setup waits in the key check when Ctrl-C comes.
    let hanging = Fake::start(|_, _| Reply::Hang).await;
    let fakes = Fakes::with_model(hanging).await;
    let dir = state_dir(None);
    let before = snapshot(dir.path());
    let (code, transcript) = tokio::task::block_in_place(|| {
        let mut person = Person::start(dir.path(), &fakes);
        answer_provider(&mut person, &fakes.model);
        person.answer_hidden(KEY_QUESTION, KEY);
        answer_the_rest(&mut person);
        person.expect("Checking the API key with");
        let deadline = Instant::now() + POLL;
        while fakes.model.open_connections() == 0 {
            assert!(Instant::now() < deadline, "no model list request");
            std::thread::sleep(Duration::from_millis(10));
        }
        person.control('c');
        person.finish()
    });
    assert_eq!(code, Some(130), "{transcript}");
    assert!(
        transcript.contains("interrupted: nothing was written"),
        "{transcript}"
    );
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(names(dir.path()), [".env"]);
}

/// Ctrl-C at moments spread over the checks, the writes and the end (on this machine the
/// checks end some 60 ms after the last answer): every run ends with the installation as it
/// was or with all of its files written, never in between and never with a temporary file
/// left, and says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_around_the_writes_leaves_all_or_nothing() {
    let fakes = Fakes::start().await;
    let old_config = "{ gateway: { port: 18790 } } // mine\n";
    for delay_ms in [0, 20, 40, 50, 55, 60, 65, 70, 75, 80, 100, 250] {
        let dir = state_dir(Some(old_config));
        let before = snapshot(dir.path());
        let (code, transcript) = tokio::task::block_in_place(|| {
            let mut person = Person::start(dir.path(), &fakes);
            answer_provider(&mut person, &fakes.model);
            person.answer_hidden(KEY_QUESTION, KEY);
            answer_the_rest(&mut person);
            std::thread::sleep(Duration::from_millis(delay_ms));
            // Setup may be done already; then the key reaches nobody.
            let _ = person.pty.send_control('c');
            person.finish()
        });
        let run = format!("Ctrl-C after {delay_ms} ms: exit {code:?}\n{transcript}");
        let written = names(dir.path()) == [".env", "openclaw.json", "openclaw.json.bak"];
        if written {
            let env = std::fs::read_to_string(dir.path().join(".env")).unwrap();
            assert!(env.contains(KEY) && env.contains(BOT_TOKEN), "{run}\n{env}");
            assert_eq!(
                config(dir.path())["models"]["providers"]["fake"]["baseUrl"],
                fakes.model.url("/v1"),
                "{run}"
            );
            let backup = std::fs::read_to_string(dir.path().join("openclaw.json.bak")).unwrap();
            assert_eq!(backup, old_config, "{run}");
        } else {
            assert_eq!(snapshot(dir.path()), before, "{run}");
        }
        match code {
            Some(0) => assert!(written, "{run}"),
            Some(130) if written => assert!(
                transcript.contains("interrupted: the new settings were written first"),
                "{run}"
            ),
            Some(130) => assert!(
                transcript.contains("interrupted: nothing was written"),
                "{run}"
            ),
            _ => panic!("{run}"),
        }
    }
}
