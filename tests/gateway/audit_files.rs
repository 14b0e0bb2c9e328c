//! `security audit` and `--fix` never follow a symbolic link (issue 10 finding 1): links are
//! findings of their own, nothing outside the state directory is changed, special bits stay,
//! and a second audit agrees with what `--fix` said.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::support::{cli, state_dir};

fn audit(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["security", "audit", "--json"];
    all.extend_from_slice(args);
    let out = cli(dir, &all);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn finding<'a>(report: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["checkId"] == id)
}

/// A state directory (700) with a private `.env` (600).
fn private_state_dir() -> tempfile::TempDir {
    let dir = state_dir(None);
    chmod(dir.path(), 0o700);
    chmod(&dir.path().join(".env"), 0o600);
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree outside the installation that a link may point at: a 755 directory holding a 644
/// file and a setuid 4755 file.
fn outside_tree() -> tempfile::TempDir {
    let other = tempfile::tempdir().unwrap();
    chmod(other.path(), 0o755);
    std::fs::write(other.path().join("tg-allowFrom.json"), "[]").unwrap();
    chmod(&other.path().join("tg-allowFrom.json"), 0o644);
    std::fs::write(other.path().join("tool"), "#!/bin/sh\n").unwrap();
    chmod(&other.path().join("tool"), 0o4755);
    other
}

fn assert_untouched(other: &Path) {
    assert_eq!(mode(other), 0o755);
    assert_eq!(mode(&other.join("tg-allowFrom.json")), 0o644);
    assert_eq!(mode(&other.join("tool")), 0o4755);
}

#[test]
fn fix_does_not_follow_a_linked_credentials_directory() {
    let dir = private_state_dir();
    let other = outside_tree();
    symlink(other.path(), dir.path().join("credentials")).unwrap();

    let report = audit(dir.path(), &["--fix"]);
    assert_untouched(other.path());
    let f = finding(&report, "fs.credentials.symlink").expect("link finding");
    assert_eq!(f["severity"], "critical");
    assert!(
        f["detail"]
            .as_str()
            .unwrap()
            .contains("outside the state directory"),
        "{f}"
    );
    let fixes = report["fixes"].to_string();
    assert!(
        !fixes.contains(other.path().to_str().unwrap()),
        "{report:#}"
    );
    assert!(
        report["unfixed"].to_string().contains("symbolic link"),
        "{report:#}"
    );
    // The second audit sees the same thing.
    assert!(finding(&audit(dir.path(), &[]), "fs.credentials.symlink").is_some());
}

#[test]
fn fix_does_not_follow_a_linked_credentials_file() {
    let dir = private_state_dir();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    chmod(&creds, 0o700);
    let other = outside_tree();
    symlink(
        other.path().join("tg-allowFrom.json"),
        creds.join("tg-allowFrom.json"),
    )
    .unwrap();
    symlink(other.path().join("tool"), creds.join("wa-allowFrom.json")).unwrap();

    let report = audit(dir.path(), &["--fix"]);
    assert_untouched(other.path());
    let links: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["checkId"] == "fs.credentials.symlink")
        .collect();
    assert_eq!(links.len(), 2, "{report:#}");
    assert!(links.iter().all(|f| f["severity"] == "critical"));
    assert!(report["fixes"].as_array().unwrap().is_empty(), "{report:#}");
}

#[test]
fn fix_keeps_setuid_setgid_and_sticky_bits() {
    let dir = private_state_dir();
    chmod(dir.path(), 0o1777);
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    chmod(&creds, 0o2775);
    std::fs::write(creds.join("odd"), "x").unwrap();
    chmod(&creds.join("odd"), 0o4766);

    let report = audit(dir.path(), &["--fix"]);
    assert_eq!(mode(dir.path()), 0o1700, "{report:#}");
    assert_eq!(mode(&creds), 0o2700);
    assert_eq!(mode(&creds.join("odd")), 0o4700);
    assert_eq!(report["fixes"].as_array().unwrap().len(), 3, "{report:#}");
    // What --fix claimed is what the next audit sees.
    let again = audit(dir.path(), &[]);
    for id in ["fs.state_dir.perms", "fs.credentials.perms"] {
        assert!(finding(&again, id).is_none(), "{again:#}");
    }
}

#[test]
fn a_linked_state_directory_is_reported_as_a_link_not_as_mode_777() {
    let real = state_dir(None);
    chmod(real.path(), 0o700);
    chmod(&real.path().join(".env"), 0o600);
    let holder = tempfile::tempdir().unwrap();
    let link = holder.path().join(".openclaw");
    symlink(real.path(), &link).unwrap();

    let report = audit(&link, &["--fix"]);
    let f = finding(&report, "fs.state_dir.symlink").expect("link finding");
    assert_eq!(f["severity"], "warn");
    assert!(
        finding(&report, "fs.state_dir.perms").is_none(),
        "{report:#}"
    );
    assert!(report["fixes"].as_array().unwrap().is_empty(), "{report:#}");
    // The target is audited (read only): a loose .env behind the link is found, and --fix
    // says it leaves it alone; the next audit agrees with that.
    chmod(&real.path().join(".env"), 0o644);
    let report = audit(&link, &["--fix"]);
    assert_eq!(mode(&real.path().join(".env")), 0o644);
    assert!(report["fixes"].as_array().unwrap().is_empty(), "{report:#}");
    assert!(
        report["unfixed"].to_string().contains("symbolic link"),
        "{report:#}"
    );
    let env = finding(&report, "fs.env.perms").expect("the target's .env is audited");
    assert!(!env["remediation"]
        .as_str()
        .unwrap()
        .contains("or run with --fix"));
    assert!(finding(&audit(&link, &[]), "fs.env.perms").is_some());
}
