//! `clawfort-fakes`: serves the fake model and Telegram Bot API servers on given addresses
//! until SIGINT or SIGTERM, for a system under test that runs elsewhere (the appliance in
//! the boot-and-probe suite, a peer binary in a benchmark).
//!
//! ```text
//! clawfort-fakes --model 10.77.0.9:8081 --telegram 10.77.0.9:8082 \
//!     --script script.json --record calls.jsonl --files 10.77.0.9:8083 --files-root apt/
//! ```
//!
//! The script (JSON) says what the model answers and what Telegram delivers at start:
//!
//! ```json
//! {
//!   "model": {"text": "Hello from the fake model.", "model": "fake-model",
//!             "apiKey": "sk-test-...", "inputTokens": 10, "outputTokens": 5, "latencyMs": 0},
//!   "telegram": {"token": "123456:AA...", "updates": [ {"message": {...}} ]}
//! }
//! ```
//!
//! Every key but `telegram.token` (needed with `--telegram`) is optional. At run time a
//! controller pushes updates with `POST http://TELEGRAM/_fake/updates` and reads the calls
//! with `GET .../_fake/calls` (see the library's `control` module), and makes the model
//! call tools with `POST http://MODEL/_fake/tool-calls` (see the `model` module); `--record` also
//! appends every call to a JSON-lines file as it happens. Each server prints
//! `listening: <kind> http://<addr>` on stdout once it accepts connections.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use clawfort_fakes::model::{self, Canned};
use clawfort_fakes::record::Recorder;
use clawfort_fakes::{files, telegram};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    version,
    about = "Fake model (Anthropic Messages, OpenAI chat completions) and \
                            Telegram Bot API servers, for tests of clawfort"
)]
struct Args {
    /// Serve the fake model API here (both wire formats: it answers by path). Repeatable.
    #[arg(long = "model", visible_aliases = ["openai", "anthropic"], value_name = "ADDR")]
    model: Vec<SocketAddr>,
    /// Serve the fake Telegram Bot API here.
    #[arg(long, value_name = "ADDR")]
    telegram: Option<SocketAddr>,
    /// What the model answers and which updates Telegram delivers first (JSON).
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// Append every request the fakes receive to this JSON-lines file.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Serve the files under --files-root here (GET and HEAD), as a static web server does.
    #[arg(long, value_name = "ADDR", requires = "files_root")]
    files: Option<SocketAddr>,
    /// The directory --files serves.
    #[arg(long, value_name = "DIR", requires = "files")]
    files_root: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Script {
    model: ModelScript,
    telegram: TelegramScript,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ModelScript {
    text: String,
    model: String,
    api_key: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    latency_ms: u64,
}

impl Default for ModelScript {
    fn default() -> Self {
        let canned = Canned::new("Hello from the fake model.");
        Self {
            text: canned.text,
            model: canned.model,
            api_key: None,
            input_tokens: canned.input_tokens,
            output_tokens: canned.output_tokens,
            latency_ms: 0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct TelegramScript {
    token: Option<String>,
    updates: Vec<Value>,
}

fn read_script(path: &Path) -> Result<Script> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the script {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "the script {} is not valid (keys: model {{text, model, apiKey, inputTokens, \
             outputTokens, latencyMs}}, telegram {{token, updates}})",
            path.display()
        )
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.model.is_empty() && args.telegram.is_none() && args.files.is_none() {
        bail!("nothing to serve: give --model ADDR, --telegram ADDR and/or --files ADDR");
    }
    let script = match &args.script {
        Some(path) => read_script(path)?,
        None => Script::default(),
    };
    let recorder = match &args.record {
        Some(path) => Some(
            Recorder::create(path)
                .with_context(|| format!("cannot create the record {}", path.display()))?,
        ),
        None => None,
    };

    let canned = Canned {
        text: script.model.text,
        model: script.model.model,
        api_key: script.model.api_key,
        input_tokens: script.model.input_tokens,
        output_tokens: script.model.output_tokens,
        latency: Duration::from_millis(script.model.latency_ms),
    };
    let mut models = Vec::new();
    for addr in &args.model {
        let listener = bind(*addr).await?;
        let fake = model::Fake::serve(listener, model::canned(canned.clone()), recorder.clone());
        announce("model", fake.addr);
        models.push(fake);
    }
    if let Some(addr) = args.telegram {
        let token = script.telegram.token.as_deref().context(
            "--telegram needs the bot token the gateway uses: set telegram.token in --script",
        )?;
        let fake = telegram::Fake::serve(bind(addr).await?, token, recorder.clone());
        for update in script.telegram.updates {
            fake.push(update);
        }
        announce("telegram", fake.addr);
    }
    let mut file_servers = Vec::new();
    if let (Some(addr), Some(root)) = (args.files, args.files_root) {
        let fake = files::Fake::serve(bind(addr).await?, root);
        announce("files", fake.addr);
        file_servers.push(fake);
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(models);
    drop(file_servers);
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

fn announce(kind: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening: {kind} http://{addr}");
    let _ = out.flush();
}
