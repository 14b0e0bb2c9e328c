//! `clawfort backup create` / `restore`: the real binary on temporary state directories.
//! Every failure case checks that the installation restored into is byte for byte and mode
//! for mode what it was, and that no half-restored directory is left beside it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;

use age::secrecy::ExposeSecret;

const BIN: &str = env!("CARGO_BIN_EXE_clawfort");
const PASSPHRASE: &str = "correct horse battery staple";

/// `clawfort --config <state_dir>/openclaw.json backup <args>`, isolated from the caller's
/// environment.
fn backup(state_dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(state_dir.join("openclaw.json"))
        .arg("backup")
        .args(args)
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env("HOME", state_dir.parent().unwrap())
        .output()
        .unwrap();
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(PASSPHRASE),
            "{stream} shows the passphrase:\n{text}"
        );
        assert!(
            !text.contains("sk-secret"),
            "{stream} shows a secret:\n{text}"
        );
    }
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An installation in `root/.openclaw` the way a gateway leaves it: private config, `.env`
/// and credentials, a transcript large enough to span several cipher chunks, a sandbox
/// workspace open to the container's user, a link and a crash marker the backup leaves out.
fn installation(root: &Path) -> PathBuf {
    let dir = root.join(".openclaw");
    let sessions = dir.join("agents/main/sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    std::fs::create_dir_all(dir.join("credentials")).unwrap();
    std::fs::create_dir_all(dir.join("sandboxes/agent-main")).unwrap();
    std::fs::write(
        dir.join("openclaw.json"),
        "{\"gateway\": {\"port\": 18789}}\n",
    )
    .unwrap();
    std::fs::write(dir.join(".env"), "OPENAI_API_KEY=sk-secret\n").unwrap();
    std::fs::write(
        dir.join("credentials/telegram-allowFrom.json"),
        "[\"333\"]\n",
    )
    .unwrap();
    let transcript: String = (0..5_000)
        .map(|n| format!("{{\"role\":\"user\",\"content\":\"message {n}\"}}\n"))
        .collect();
    std::fs::write(sessions.join("main.jsonl"), transcript).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("hostname")).unwrap();
    // A crash's leftover: names a process that has ended.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(dir.join("gateway.running"), format!("{dead}\n")).unwrap();
    chmod(&dir, 0o700);
    chmod(&dir.join(".env"), 0o600);
    chmod(&dir.join("openclaw.json"), 0o600);
    chmod(&dir.join("credentials"), 0o700);
    chmod(&dir.join("credentials/telegram-allowFrom.json"), 0o600);
    chmod(&dir.join("sandboxes"), 0o700);
    chmod(&dir.join("sandboxes/agent-main"), 0o777);
    dir
}

/// Every entry under `dir`: its mode and, for a file, its bytes (a link: its target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.path().symlink_metadata().unwrap();
            let content = if meta.is_file() {
                std::fs::read(entry.path()).unwrap()
            } else if meta.is_symlink() {
                std::fs::read_link(entry.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            let rel = entry.path().strip_prefix(dir).unwrap().to_path_buf();
            (rel, (meta.permissions().mode() & 0o7777, content))
        })
        .collect()
}

/// `snapshot` without what a backup leaves out.
fn backed_up(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut snapshot = snapshot(dir);
    snapshot.remove(Path::new("hostname"));
    snapshot.remove(Path::new("gateway.running"));
    snapshot
}

/// Names in `dir` other than `keep`: what a restore left beside the state directory.
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !keep.contains(&name.as_str()))
        .collect()
}

fn passphrase_file(dir: &Path, passphrase: &str) -> String {
    let path = dir.join(format!("passphrase-{}", passphrase.len()));
    std::fs::write(&path, format!("{passphrase}\n")).unwrap();
    path.display().to_string()
}

/// A new x25519 identity, written to `dir/identity.txt`: its path and its public key.
fn identity(dir: &Path) -> (String, String) {
    let identity = age::x25519::Identity::generate();
    let path = dir.join("identity.txt");
    std::fs::write(&path, format!("{}\n", identity.to_string().expose_secret())).unwrap();
    (path.display().to_string(), identity.to_public().to_string())
}

/// A backup of a fresh installation encrypted to a new identity: the tempdir (holding
/// `.openclaw`, `identity.txt` and `backup.age`), the backup's path and the identity's.
fn keyed_backup() -> (tempfile::TempDir, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let state = installation(tmp.path());
    let (identity, public) = identity(tmp.path());
    let file = tmp.path().join("backup.age");
    let out = backup(
        &state,
        &[
            "create",
            "--to",
            file.to_str().unwrap(),
            "--recipient",
            &public,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    (tmp, file, identity)
}

/// Restores `file` over the installation in a new tempdir and asserts it failed with an
/// error naming `file` and `wanted`, with the installation untouched and nothing left
/// beside it.
fn assert_refused(file: &Path, key: &[&str], wanted: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let state = installation(tmp.path());
    let before = snapshot(&state);
    let mut args = vec!["restore", "--from", file.to_str().unwrap(), "--force"];
    args.extend_from_slice(key);
    let out = backup(&state, &args);
    let err = stderr(&out);
    assert!(!out.status.success(), "restored: {err}");
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains(wanted), "says {wanted:?}: {err}");
    assert!(err.contains("nothing was restored"), "{err}");
    assert_eq!(snapshot(&state), before, "the installation changed");
    assert_eq!(others(tmp.path(), &[".openclaw"]), Vec::<String>::new());
}

#[test]
fn a_passphrase_backup_restores_on_a_new_machine_with_contents_and_modes() {
    let old = tempfile::tempdir().unwrap();
    let state = installation(old.path());
    let file = old.path().join("backup.age");
    let pass = passphrase_file(old.path(), PASSPHRASE);
    let out = backup(
        &state,
        &[
            "create",
            "--to",
            file.to_str().unwrap(),
            "--passphrase-file",
            &pass,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files"], 4, "{summary}");
    assert_eq!(
        summary["skipped"],
        serde_json::json!(["hostname: a symbolic link"])
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup file's mode");
    assert!(!old.path().join("backup.age.partial").exists());
    let again = backup(
        &state,
        &[
            "create",
            "--to",
            file.to_str().unwrap(),
            "--passphrase-file",
            &pass,
        ],
    );
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));

    // The reflashed machine: no state directory yet.
    let new = tempfile::tempdir().unwrap();
    let restored = new.path().join(".openclaw");
    let out = backup(
        &restored,
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--passphrase-file",
            &pass,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(&restored), backed_up(&state));
    assert_eq!(others(new.path(), &[".openclaw"]), Vec::<String>::new());
}

#[test]
fn a_key_backup_restores_over_an_installation_kept_aside() {
    let (tmp, file, identity) = keyed_backup();
    let state = tmp.path().join(".openclaw");
    let wanted = backed_up(&state);
    std::fs::write(state.join(".env"), "OPENAI_API_KEY=changed\n").unwrap();
    let changed = snapshot(&state);

    let from = file.to_str().unwrap();
    let out = backup(
        &state,
        &["restore", "--from", from, "--identity", &identity],
    );
    assert!(
        stderr(&out).contains("--force"),
        "refused without --force: {}",
        stderr(&out)
    );
    assert_eq!(snapshot(&state), changed);

    let out = backup(
        &state,
        &[
            "restore",
            "--from",
            from,
            "--identity",
            &identity,
            "--force",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(&state), wanted);
    let aside: Vec<_> = others(tmp.path(), &[".openclaw", "identity.txt", "backup.age"]);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        aside[0].starts_with(".openclaw.before-restore-"),
        "{aside:?}"
    );
    assert_eq!(snapshot(&tmp.path().join(&aside[0])), changed);
}

#[test]
fn a_wrong_passphrase_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let state = installation(tmp.path());
    let file = tmp.path().join("backup.age");
    let pass = passphrase_file(tmp.path(), PASSPHRASE);
    let out = backup(
        &state,
        &[
            "create",
            "--to",
            file.to_str().unwrap(),
            "--passphrase-file",
            &pass,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let wrong = passphrase_file(tmp.path(), "not the passphrase");
    assert_refused(&file, &["--passphrase-file", &wrong], "cannot decrypt");
}

#[test]
fn a_byte_flipped_in_the_middle_changes_nothing() {
    let (_tmp, file, identity) = keyed_backup();
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.len() > 3 * 64 * 1024,
        "spans several cipher chunks: {}",
        bytes.len()
    );
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    assert_refused(&file, &["--identity", &identity], "damaged or was altered");
}

#[test]
fn a_truncated_backup_changes_nothing() {
    let (_tmp, file, identity) = keyed_backup();
    let bytes = std::fs::read(&file).unwrap();
    // Past the tar's end-of-archive blocks, within the last cipher chunk.
    std::fs::write(&file, &bytes[..bytes.len() - 16]).unwrap();
    assert_refused(&file, &["--identity", &identity], "damaged or was altered");
}

/// A tar holding one member with this raw `name` (and `link` target, for a symbolic
/// link), encrypted to `public`, as an attacker with the public key could make one.
fn crafted(dir: &Path, public: &str, kind: tar::EntryType, name: &[u8], link: &str) -> PathBuf {
    let mut builder = tar::Builder::new(Vec::new());
    let mut good = tar::Header::new_gnu();
    good.set_entry_type(tar::EntryType::Regular);
    good.set_mode(0o600);
    good.set_size(3);
    builder
        .append_data(&mut good, "openclaw.json", &b"{}\n"[..])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_entry_type(kind);
    header.set_mode(0o600);
    if !link.is_empty() {
        header.set_link_name(link).unwrap();
    }
    header.set_size(if kind == tar::EntryType::Regular {
        5
    } else {
        0
    });
    header.set_cksum();
    let data: &[u8] = if kind == tar::EntryType::Regular {
        b"owned"
    } else {
        b""
    };
    builder.append(&header, data).unwrap();
    let tar = builder.into_inner().unwrap();
    encrypt(
        &dir.join(format!("crafted-{}.age", name.len())),
        public,
        &tar,
    )
}

/// Writes `plain` encrypted to `public` to `path`.
fn encrypt(path: &Path, public: &str, plain: &[u8]) -> PathBuf {
    let recipient = age::x25519::Recipient::from_str(public).unwrap();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .unwrap();
    let mut writer = encryptor
        .wrap_output(std::fs::File::create(path).unwrap())
        .unwrap();
    writer.write_all(plain).unwrap();
    writer.finish().unwrap();
    path.to_path_buf()
}

#[test]
fn a_byte_flipped_after_the_archives_end_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (identity, public) = identity(tmp.path());
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o600);
    header.set_size(3);
    builder
        .append_data(&mut header, "openclaw.json", &b"{}\n"[..])
        .unwrap();
    let mut plain = builder.into_inner().unwrap();
    // Zero blocks past the end-of-archive marker, into cipher chunks a tar reader that
    // stops at the marker never reads.
    plain.resize(plain.len() + 256 * 1024, 0);
    let file = encrypt(&tmp.path().join("padded.age"), &public, &plain);
    let mut bytes = std::fs::read(&file).unwrap();
    let near_end = bytes.len() - 100;
    bytes[near_end] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    assert_refused(&file, &["--identity", &identity], "damaged or was altered");
}

#[test]
fn a_member_escaping_the_state_directory_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (identity, public) = identity(tmp.path());
    let key = ["--identity", identity.as_str()];
    let regular = tar::EntryType::Regular;
    let escape = crafted(tmp.path(), &public, regular, b"../escape", "");
    assert_refused(&escape, &key, "not a plain relative path");
    let absolute = crafted(
        tmp.path(),
        &public,
        regular,
        b"/tmp/clawfort-backup-absolute",
        "",
    );
    assert_refused(&absolute, &key, "not a plain relative path");
    assert!(!Path::new("/tmp/clawfort-backup-absolute").exists());
    let link = crafted(
        tmp.path(),
        &public,
        tar::EntryType::Symlink,
        b"credentials",
        "/etc",
    );
    assert_refused(&link, &key, "only regular files and directories");
}

#[test]
fn both_refuse_while_the_gateway_runs() {
    let (tmp, file, identity) = keyed_backup();
    let state = tmp.path().join(".openclaw");
    // This test's own process stands in for the gateway.
    std::fs::write(
        state.join("gateway.running"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let before = snapshot(&state);
    let second = tmp.path().join("second.age");
    let public = age::x25519::Identity::generate().to_public().to_string();
    let create = backup(
        &state,
        &[
            "create",
            "--to",
            second.to_str().unwrap(),
            "--recipient",
            &public,
        ],
    );
    let from = file.to_str().unwrap();
    let restore = backup(
        &state,
        &[
            "restore",
            "--from",
            from,
            "--identity",
            &identity,
            "--force",
        ],
    );
    for out in [create, restore] {
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("stop it first"), "{err}");
        assert!(err.contains("gateway.running"), "names the marker: {err}");
    }
    assert!(!second.exists() && !tmp.path().join("second.age.partial").exists());
    assert_eq!(snapshot(&state), before);
}

#[test]
fn a_backup_made_with_sudo_belongs_to_the_invoking_user() {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (the sudo case)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = installation(tmp.path());
    let file = tmp.path().join("backup.age");
    let public = age::x25519::Identity::generate().to_public().to_string();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(state.join("openclaw.json"))
        .args([
            "backup",
            "create",
            "--to",
            file.to_str().unwrap(),
            "--recipient",
            &public,
        ])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65533")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 65533, 0o600)
    );
}

/// `clawfort backup <args>` on a pseudo-terminal, answering each of `prompts` with its line;
/// its exit code and everything the terminal showed.
fn on_a_terminal(state_dir: &Path, args: &[&str], prompts: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(state_dir.join("openclaw.json"))
        .arg("backup")
        .args(args)
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("OPENCLAW_CONFIG_PATH");
    let options = rexpect::reader::Options::new().timeout_ms(Some(60_000));
    let mut pty = rexpect::session::spawn_with_options(cmd, options).unwrap();
    let mut seen = String::new();
    for (prompt, line) in prompts {
        seen += &pty.exp_string(prompt).unwrap();
        seen += prompt;
        pty.send_line(line).unwrap();
    }
    seen += &pty.exp_eof().unwrap();
    let code = match pty.process().wait().unwrap() {
        rexpect::process::WaitStatus::Exited(_, code) => code,
        other => panic!("{other:?}\n{seen}"),
    };
    assert!(
        !seen.contains(PASSPHRASE),
        "the terminal shows the passphrase:\n{seen}"
    );
    (code, seen)
}

#[test]
fn a_person_types_the_passphrase_twice_and_once_to_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let state = installation(tmp.path());
    let file = tmp.path().join("backup.age");
    let to = file.to_str().unwrap();
    let first = "Passphrase for the backup: ";
    let again = "The same passphrase again: ";
    let (code, seen) = on_a_terminal(
        &state,
        &["create", "--to", to],
        &[(first, PASSPHRASE), (again, "a typo")],
    );
    assert_eq!(code, 1, "{seen}");
    assert!(seen.contains("the two passphrases differ"), "{seen}");
    assert!(!file.exists() && !tmp.path().join("backup.age.partial").exists());

    let (code, seen) = on_a_terminal(
        &state,
        &["create", "--to", to],
        &[(first, PASSPHRASE), (again, PASSPHRASE)],
    );
    assert_eq!(code, 0, "{seen}");
    let new = tempfile::tempdir().unwrap();
    let restored = new.path().join(".openclaw");
    let prompt = format!("Passphrase of {to}: ");
    let (code, seen) = on_a_terminal(
        &restored,
        &["restore", "--from", to],
        &[(&prompt, PASSPHRASE)],
    );
    assert_eq!(code, 0, "{seen}");
    assert_eq!(snapshot(&restored), backed_up(&state));
}

#[test]
fn root_restores_a_tree_owned_by_the_state_directorys_owner() {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (the chown)");
        return;
    }
    let (tmp, file, identity) = keyed_backup();
    let state = tmp.path().join(".openclaw");
    // The service user's installation, as a new image's first boot leaves it.
    std::os::unix::fs::lchown(&state, Some(65534), Some(65533)).unwrap();
    let from = file.to_str().unwrap();
    let out = backup(
        &state,
        &[
            "restore",
            "--from",
            from,
            "--identity",
            &identity,
            "--force",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for entry in walkdir::WalkDir::new(&state) {
        let entry = entry.unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (65534, 65533),
            "{}",
            entry.path().display()
        );
    }
}
