//! `sudo clawfort setup` on the appliance: the installation `clawfort.service` runs, files
//! handed to its user, both units restarted, `/healthz` awaited. systemd is played by a
//! `systemctl` script first on PATH (it answers `show` like systemd and records every
//! call); the service user is `nobody`. Needs root (CI runs as root); skipped otherwise.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::{assert_no_secrets, mode, secret_files, text, Fakes};
use crate::support::{Gateway, BIN};

/// `nobody:x:65534:65534:...` on Debian.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A directory with a `systemctl` that describes the service as running `state` as
/// `nobody`, knows the egress unit when `egress`, and logs its arguments to `calls`.
fn fake_systemd(bin: &Path, state: &Path, calls: &Path, egress: bool) {
    let egress_state = if egress { "loaded" } else { "not-found" };
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> '{calls}'
case "$1 $2" in
  "show clawfort.service")
    printf 'LoadState=loaded\nUser=nobody\nEnvironment=NO_COLOR=1 OPENCLAW_STATE_DIR={state}\nEnvironmentFiles=\nExecStart={{ path=/usr/bin/clawfort ; argv[]=/usr/bin/clawfort --config {state}/openclaw.json gateway ; ignore_errors=no }}\n' ;;
  "show clawfort-egress.service") echo 'LoadState={egress_state}' ;;
  "restart "*) exit 0 ;;
  *) exit 1 ;;
esac
"#,
        calls = calls.display(),
        state = state.display(),
    );
    let path = bin.join("systemctl");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `sudo clawfort setup ...`: root, no --config, the fake systemctl first on PATH.
fn sudo_setup(bin: &Path, args: &[String]) -> Output {
    sudo(bin, "setup", args)
}

/// `sudo clawfort <command> ...` with the fake systemctl first on PATH, and `/root` (where
/// no installation is) as the home.
fn sudo(bin: &Path, command: &str, args: &[String]) -> Output {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(BIN)
        .arg(command)
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("HOME", "/root")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_no_secrets(&out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_root_setup_writes_the_services_installation_and_restarts_it() {
    if !is_root() {
        eprintln!("skipped: needs root (the files are handed to another user)");
        return;
    }
    let fakes = Fakes::start().await;
    // The gateway the restart waits for: its /healthz must answer on the port the
    // service's config names.
    let gw = tokio::task::block_in_place(|| Gateway::start(None));
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(
        state.join("openclaw.json"),
        format!("{{ gateway: {{ port: {} }} }}", gw.addr.port()),
    )
    .unwrap();
    let (bin, calls) = (work.path().join("bin"), work.path().join("calls"));
    std::fs::create_dir(&bin).unwrap();
    let (key, token) = secret_files(work.path());
    let args = fakes.flags(&key, &token);

    for egress in [true, false] {
        let _ = std::fs::remove_file(&calls);
        fake_systemd(&bin, &state, &calls, egress);
        let out = tokio::task::block_in_place(|| sudo_setup(&bin, &args));
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let restarted = if egress {
            "restart clawfort-egress.service clawfort.service"
        } else {
            "restart clawfort.service"
        };
        let log = std::fs::read_to_string(&calls).unwrap();
        assert_eq!(
            log.lines()
                .filter(|l| l.starts_with("restart"))
                .collect::<Vec<_>>(),
            [restarted],
            "{log}"
        );
        assert!(
            stdout.contains(&format!(
                "the gateway answers on 127.0.0.1:{}",
                gw.addr.port()
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains("sudo -H -u nobody clawfort pairing approve telegram <CODE>"),
            "{stdout}"
        );
        for name in [".env", "openclaw.json", "openclaw.json.bak"] {
            let meta = std::fs::metadata(state.join(name)).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid(), mode(&state.join(name))),
                (NOBODY, NOBODY, 0o600),
                "{name}"
            );
        }
    }

    // --no-restart leaves the services alone and says how to apply the change.
    let _ = std::fs::remove_file(&calls);
    let mut no_restart = args.clone();
    no_restart.push("--no-restart".into());
    let out = tokio::task::block_in_place(|| sudo_setup(&bin, &no_restart));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("sudo systemctl restart clawfort-egress.service clawfort.service"),
        "{}",
        text(&out.stdout)
    );
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(!log.contains("restart"), "{log}");

    // The state directory replaced by a link (the service user owns its parent): refused.
    let real = work.path().join("real");
    std::fs::rename(&state, &real).unwrap();
    std::os::unix::fs::symlink(&real, &state).unwrap();
    let out = tokio::task::block_in_place(|| sudo_setup(&bin, &no_restart));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
}

/// `sudo clawfort status`, `usage` and `stop-all` act on the service's installation, as
/// `setup` and the audit do: its config gives the port, its `.env` the token.
#[test]
fn as_root_the_other_commands_find_the_service_installation_too() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let gw = Gateway::start(None);
    let state = gw.path();
    std::fs::write(
        state.join("openclaw.json"),
        format!("{{ gateway: {{ port: {} }} }}", gw.addr.port()),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (bin, calls) = (work.path().join("bin"), work.path().join("calls"));
    std::fs::create_dir(&bin).unwrap();
    fake_systemd(&bin, state, &calls, false);

    let json = ["--json".to_owned()];
    let out = sudo(&bin, "status", &json);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["bind"], gw.addr.to_string());

    let out = sudo(&bin, "usage", &json);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let usage: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        usage["ledger"],
        state.join("usage/ledger.jsonl").display().to_string()
    );

    // The gateway runs no agent: stop-all reached it (with its token) and got its 409.
    let out = sudo(&bin, "stop-all", &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("answered 409"), "{stderr}");
}
