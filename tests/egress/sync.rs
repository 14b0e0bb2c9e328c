//! Who writes the allow file, and the audit of it, as on the appliance: `sudo clawfort egress
//! sync`, `sudo clawfort setup` and `sudo clawfort security audit` run as root against a
//! temporary root. systemd is played by a `systemctl` script first on PATH: it describes
//! `clawfort.service` (user `nobody`, the installation in the temporary directory) and
//! `clawfort-egress.service` (whose `--allow-file` is the temporary root's
//! `etc/clawfort/egress-allow.json`), and records every call. Needs root (CI runs as root);
//! skipped otherwise, except the refusal of anyone else.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::gateway_support::{Gateway, BIN};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A temporary root with the service's installation, an empty `etc/`, and the fake systemd.
struct Host {
    root: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let host = Self { root };
        std::fs::create_dir_all(host.state()).unwrap();
        std::fs::set_permissions(host.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir_all(host.path().join("bin")).unwrap();
        std::fs::create_dir_all(host.path().join("etc")).unwrap();
        let script = format!(
            r#"#!/bin/sh
echo "$*" >> '{calls}'
case "$1 $2" in
  "show clawfort.service")
    printf 'LoadState=loaded\nUser=nobody\nEnvironment=OPENCLAW_STATE_DIR={state}\nEnvironmentFiles=\nExecStart={{ path=/usr/bin/clawfort ; argv[]=/usr/bin/clawfort --config {state}/openclaw.json gateway ; ignore_errors=no }}\n' ;;
  "show clawfort-egress.service")
    # Only the properties asked for ($4), as systemd answers.
    echo 'LoadState=loaded'
    case "$4" in *ExecStart*)
      printf 'ExecStart={{ path=/usr/bin/clawfort ; argv[]=/usr/bin/clawfort egress --allow-file {allow} ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }}\n' ;;
    esac ;;
  "restart "*)
    # What the proxy would read when it starts again.
    echo "allow file at restart: $(tr -d ' \n' < '{allow}' 2>/dev/null)" >> '{calls}' ;;
  *) exit 1 ;;
esac
"#,
            calls = host.calls_path().display(),
            state = host.state().display(),
            allow = host.allow().display(),
        );
        let systemctl = host.path().join("bin/systemctl");
        std::fs::write(&systemctl, script).unwrap();
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        host
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    fn state(&self) -> PathBuf {
        self.path().join("home/openclaw/.openclaw")
    }

    fn config(&self) -> PathBuf {
        self.state().join("openclaw.json")
    }

    fn allow(&self) -> PathBuf {
        self.path().join("etc/clawfort/egress-allow.json")
    }

    fn calls_path(&self) -> PathBuf {
        self.path().join("calls")
    }

    /// The fake systemctl's calls since the last `take_calls`.
    fn take_calls(&self) -> Vec<String> {
        let calls = std::fs::read_to_string(self.calls_path()).unwrap_or_default();
        let _ = std::fs::remove_file(self.calls_path());
        calls.lines().map(str::to_owned).collect()
    }

    /// `sudo clawfort ARGS`: root, no --config, the fake systemctl first on PATH, and a
    /// umask that would make a created directory or file private (as `sudo` may have it).
    fn sudo(&self, args: &[&str]) -> Output {
        let path = format!(
            "{}:{}",
            self.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", "/root")
            .stdin(Stdio::null());
        // SAFETY: umask(2) is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
                Ok(())
            });
        }
        command.output().unwrap()
    }

    /// The allow file's `allow` list.
    fn allowed(&self) -> Vec<String> {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(self.allow()).unwrap()).unwrap();
        assert_eq!(doc["version"], 1, "{doc}");
        doc["allow"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }
}

/// (uid, gid, mode) of `path`.
fn owner_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

#[test]
fn sync_writes_roots_file_prints_the_change_and_restarts_the_proxy() {
    if !is_root() {
        eprintln!("skipped: needs root (the allow file is root's)");
        return;
    }
    let host = Host::new();
    std::fs::write(
        host.config(),
        "{ models: { providers: { anthropic: { baseUrl: 'https://api.anthropic.com' } } },
           channels: { telegram: { botToken: '${TELEGRAM_BOT_TOKEN}' } } }",
    )
    .unwrap();

    let out = host.sudo(&["egress", "sync"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for line in [
        format!(
            "From {} into {}:",
            host.config().display(),
            host.allow().display()
        ),
        "  + api.anthropic.com:443".to_owned(),
        "  + api.telegram.org:443".to_owned(),
        format!("Wrote {}.", host.allow().display()),
        "Restarted clawfort-egress.service: it reads the new list.".to_owned(),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no `{line}` in:\n{stdout}"
        );
    }
    assert_eq!(
        host.allowed(),
        ["api.anthropic.com:443", "api.telegram.org:443"]
    );
    // Root's, readable by the proxy's transient user, whatever the umask.
    assert_eq!(owner_mode(&host.allow()), (0, 0, 0o644));
    assert_eq!(owner_mode(host.allow().parent().unwrap()), (0, 0, 0o755));
    let calls = host.take_calls();
    let restart = calls
        .iter()
        .position(|c| c == "restart clawfort-egress.service");
    assert!(
        restart.is_some_and(|i| calls[i + 1].contains("api.anthropic.com:443")),
        "{calls:?}"
    );
    let names: Vec<_> = std::fs::read_dir(host.allow().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["egress-allow.json"], "a temporary file was left");

    // Nothing changed: nothing written, nothing restarted.
    let out = host.sudo(&["egress", "sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Up to date: nothing written, nothing restarted."),
        "{}",
        text(&out.stdout)
    );
    assert!(!host.take_calls().iter().any(|c| c.starts_with("restart")));

    // The service user adds a provider by hand: --dry-run shows it and changes nothing.
    std::fs::write(
        host.config(),
        "{ models: { providers: { anthropic: { baseUrl: 'https://api.anthropic.com' },
                                  local: { baseUrl: 'http://192.168.1.20:11434/v1' } } } }",
    )
    .unwrap();
    let before = std::fs::read(host.allow()).unwrap();
    let out = host.sudo(&["egress", "sync", "--dry-run"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for line in [
        "  + 192.168.1.20:11434",
        "  - api.telegram.org:443",
        "  = api.anthropic.com:443",
        "Dry run: nothing written, nothing restarted.",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no `{line}` in:\n{stdout}"
        );
    }
    assert_eq!(std::fs::read(host.allow()).unwrap(), before);
    assert!(!host.take_calls().iter().any(|c| c.starts_with("restart")));

    // Without --dry-run the root's file follows.
    let out = host.sudo(&["egress", "sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        host.allowed(),
        ["192.168.1.20:11434", "api.anthropic.com:443"]
    );
    assert!(host
        .take_calls()
        .contains(&"restart clawfort-egress.service".to_owned()));
}

#[test]
fn sync_refuses_what_root_must_not_act_on() {
    if !is_root() {
        eprintln!("skipped: needs root (the allow file is root's)");
        return;
    }
    let host = Host::new();
    let outside = host.path().join("outside.json");
    std::fs::write(
        &outside,
        "{ models: { providers: { x: { baseUrl: 'https://elsewhere.example' } } } }",
    )
    .unwrap();

    // openclaw.json replaced by a link the service user planted: not followed.
    std::os::unix::fs::symlink(&outside, host.config()).unwrap();
    let out = host.sudo(&["egress", "sync"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(!host.allow().exists());
    std::fs::remove_file(host.config()).unwrap();

    // A URL taken from the environment: the list must not depend on one.
    std::fs::write(
        host.config(),
        "{ models: { providers: { x: { baseUrl: '${PROVIDER_URL}' } } } }",
    )
    .unwrap();
    let out = host.sudo(&["egress", "sync"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("models.providers.x.baseUrl") && stderr.contains("write the URL itself"),
        "{stderr}"
    );
    assert!(!host.allow().exists());

    // A directory others may write: whoever can write it can swap the file.
    std::fs::write(
        host.config(),
        "{ models: { providers: { x: { baseUrl: 'https://api.example.com' } } } }",
    )
    .unwrap();
    let dir = host.allow().parent().unwrap().to_path_buf();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = host.sudo(&["egress", "sync"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("mode 777") && stderr.contains("sudo chmod 755"),
        "{stderr}"
    );
    assert!(!host.allow().exists());
    assert!(!host.take_calls().iter().any(|c| c.starts_with("restart")));
}

#[test]
fn sync_refuses_to_run_as_anyone_but_root() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["egress", "sync"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir.path())
        .current_dir(dir.path());
    if is_root() {
        // nobody: can run the binary, cannot write anything of root's.
        command.uid(65534).gid(65534);
    }
    let out = command.output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("only root may change") && stderr.contains("sudo clawfort egress sync"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_as_root_writes_the_allow_file_before_restarting() {
    if !is_root() {
        eprintln!("skipped: needs root (the allow file is root's)");
        return;
    }
    use clawfort_fakes::model::{ok, Fake, KEY};
    use clawfort_fakes::telegram::Fake as Telegram;
    const BOT_TOKEN: &str = "123456789:AAHtestTOKENtestTOKENtestTOKENtest12";

    let model = Fake::start(|_, _| ok(serde_json::json!({"data": [{"id": "fake-model"}]}))).await;
    let telegram = Telegram::start(BOT_TOKEN).await;
    // The gateway whose /healthz the restart waits for, on the port the config names.
    let gw = tokio::task::block_in_place(|| Gateway::start(None));
    let host = Host::new();
    std::fs::write(
        host.config(),
        format!("{{ gateway: {{ port: {} }} }}", gw.addr.port()),
    )
    .unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let (key, token) = (secrets.path().join("key"), secrets.path().join("token"));
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    std::fs::write(&token, format!("{BOT_TOKEN}\n")).unwrap();
    let (base_url, api_root) = (model.url("/v1"), telegram.api_root());
    let out = tokio::task::block_in_place(|| {
        host.sudo(&[
            "setup",
            "--non-interactive",
            "--api",
            "openai-completions",
            "--base-url",
            &base_url,
            "--model",
            "fake-model",
            "--api-key-file",
            &key.display().to_string(),
            "--bot-token-file",
            &token.display().to_string(),
            "--telegram-api-root",
            &api_root,
        ])
    });
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let model_target = format!("127.0.0.1:{}", model.addr.port());
    let telegram_target = api_root.trim_start_matches("http://").to_owned();
    let mut wanted = vec![model_target.clone(), telegram_target.clone()];
    wanted.sort();
    assert_eq!(host.allowed(), wanted);
    assert_eq!(owner_mode(&host.allow()), (0, 0, 0o644));
    assert_eq!(owner_mode(host.allow().parent().unwrap()), (0, 0, 0o755));
    // Everything is new to the proxy: each host is named as added, for the person to see.
    assert!(
        stdout.contains(&format!(
            "Wrote {}: the egress proxy allows {} (added {}).",
            host.allow().display(),
            wanted.join(", "),
            wanted.join(", ")
        )),
        "{stdout}"
    );
    // The file was in place when the units were restarted.
    let calls = host.take_calls();
    let restart = calls
        .iter()
        .position(|c| c == "restart clawfort-egress.service clawfort.service")
        .unwrap_or_else(|| panic!("no restart in {calls:?}"));
    assert!(
        calls[restart + 1].contains(&model_target) && calls[restart + 1].contains(&telegram_target),
        "{calls:?}"
    );
    drop(gw);
}

#[test]
fn the_audit_as_root_checks_the_proxys_allow_file() {
    if !is_root() {
        eprintln!("skipped: needs root (the audit of the service's installation)");
        return;
    }
    let host = Host::new();
    std::fs::write(
        host.config(),
        "{ models: { providers: { a: { baseUrl: 'https://api.anthropic.com' } } } }",
    )
    .unwrap();
    let egress_findings = |host: &Host| -> (Vec<(String, String)>, Option<i32>) {
        let out = host.sudo(&["security", "audit", "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
        let findings = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["checkId"].as_str().unwrap().starts_with("egress."))
            .map(|f| {
                (
                    f["checkId"].as_str().unwrap().to_owned(),
                    f["severity"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (findings, out.status.code())
    };

    // No allow file yet: the provider cannot be reached.
    let (found, _) = egress_findings(&host);
    assert_eq!(
        found,
        [(
            "egress.allow_file.missing_destinations".to_owned(),
            "warn".to_owned()
        )]
    );

    let out = host.sudo(&["egress", "sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (found, code) = egress_findings(&host);
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(code, Some(0));

    // Anyone may write it now: critical, and the audit exits 1.
    std::fs::set_permissions(host.allow(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let (found, code) = egress_findings(&host);
    assert_eq!(
        found,
        [(
            "egress.allow_file.writable".to_owned(),
            "critical".to_owned()
        )]
    );
    assert_eq!(code, Some(1));
}
