//! Run as root without `--config`, the audit audits the installation `clawfort.service`
//! runs (issue 10 finding 6). Discovery reads the unit the appliance really ships (rendered
//! from `overlays/` as the image builder does) and a passwd file, both injected here, so the
//! test needs no root and no systemd.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clawfort::audit::installation::{discover, Sources};
use clawfort::config::Config;

use crate::support::TOKEN;

#[path = "../shared/image.rs"]
mod image;

/// The gateway's unit as the appliance ships it, rendered from `overlays/` by the image
/// builder's own loader.
fn shipped_unit() -> String {
    let mut files = image::render_target("x86_64", "").expect("the shipped overlays render");
    files
        .remove("/usr/lib/systemd/system/clawfort.service")
        .expect("overlays/ renders the gateway's unit")
}

struct Host {
    root: tempfile::TempDir,
}

impl Host {
    /// A fake host: the shipped unit where its package puts it, and a passwd file whose `openclaw` lives in the
    /// temporary directory, with an installation there holding the token in `.env`.
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let units = root.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(units.join("clawfort.service"), shipped_unit()).unwrap();
        let home = root.path().join("home/openclaw");
        std::fs::write(
            root.path().join("passwd"),
            format!(
                "root:x:0:0:root:/root:/bin/bash\n# a comment\n\
                 openclaw:x:999:999:clawfort:{}:/usr/sbin/nologin\n",
                home.display()
            ),
        )
        .unwrap();
        let state = home.join(".openclaw");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(
            state.join(".env"),
            format!("OPENCLAW_GATEWAY_TOKEN={TOKEN}\n"),
        )
        .unwrap();
        std::fs::set_permissions(state.join(".env"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        Self { root }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    fn sources(&self) -> Sources {
        Sources {
            unit_dirs: vec![
                self.path().join("etc/systemd/system"),
                self.path().join("usr/lib/systemd/system"),
            ],
            passwd: self.path().join("passwd"),
            systemctl: false,
        }
    }
}

#[test]
fn root_audit_finds_the_service_installation() {
    let host = Host::new();
    let found = discover(&host.sources()).unwrap();
    let state = host.path().join("home/openclaw/.openclaw");
    assert_eq!(found.user, "openclaw");
    assert_eq!(found.home, host.path().join("home/openclaw"));
    assert_eq!(found.paths.state_dir, state);
    assert_eq!(found.paths.config, state.join("openclaw.json"));
    assert!(found
        .from
        .ends_with("usr/lib/systemd/system/clawfort.service"));

    // Audited there, the service's token is found: no "no gateway token" as for /root.
    let config = Config::load(&found.paths).unwrap();
    let no_egress = clawfort::audit::installation::EgressAllow::NotInstalled;
    let report = clawfort::audit::run(&found.paths, &config, &no_egress, false, false);
    let ids: Vec<_> = report.findings.iter().map(|f| f.check_id).collect();
    assert!(!ids.contains(&"gateway.token.missing"), "{ids:?}");
    assert!(!ids.contains(&"fs.state_dir.missing"), "{ids:?}");
}

#[test]
fn dropins_and_the_command_line_move_the_installation() {
    let host = Host::new();
    let dropins = host.path().join("etc/systemd/system/clawfort.service.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("10-state.conf"),
        "[Service]\nEnvironment=\"OPENCLAW_STATE_DIR=/srv/claw state\"\n",
    )
    .unwrap();
    let found = discover(&host.sources()).unwrap();
    assert_eq!(found.paths.state_dir, PathBuf::from("/srv/claw state"));

    std::fs::write(
        dropins.join("20-config.conf"),
        "[Service]\nEnvironment=\nExecStart=\nExecStart=/usr/bin/clawfort --config /srv/c/openclaw.json gateway\n",
    )
    .unwrap();
    let found = discover(&host.sources()).unwrap();
    assert_eq!(found.paths.config, PathBuf::from("/srv/c/openclaw.json"));
    assert_eq!(found.paths.state_dir, PathBuf::from("/srv/c"));
}

#[test]
fn no_service_or_no_user_is_explained() {
    let host = Host::new();
    std::fs::write(
        host.path().join("passwd"),
        "root:x:0:0:root:/root:/bin/bash\n",
    )
    .unwrap();
    let e = discover(&host.sources()).unwrap_err();
    assert!(
        e.contains("runs as openclaw") && e.contains("passwd"),
        "{e}"
    );

    std::fs::remove_file(host.path().join("usr/lib/systemd/system/clawfort.service")).unwrap();
    let e = discover(&host.sources()).unwrap_err();
    assert!(e.contains("no clawfort.service"), "{e}");
}

/// Through the CLI: root without `--config` says which installation it audited. This host
/// has no `clawfort.service`, so that is the invoking user's, with the reason.
#[test]
fn the_report_names_the_audited_installation() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["security", "audit", "--json"])
        .env("HOME", home.path())
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env_remove("OPENCLAW_STATE_DIR")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let installation = &report["installation"];
    assert_eq!(
        installation["stateDir"],
        home.path().join(".openclaw").to_str().unwrap()
    );
    let root = rustix::process::geteuid().is_root();
    let service_here = Path::new("/etc/systemd/system/clawfort.service").exists()
        || Path::new("/usr/lib/systemd/system/clawfort.service").exists();
    if root && !service_here {
        assert_eq!(installation["source"], "invoking user");
        assert!(installation["note"].as_str().unwrap().contains("not found"));
    }
    // With --config the named installation is audited, whoever runs it.
    let out = crate::support::cli(home.path(), &["security", "audit", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["installation"]["source"],
        "--config or OPENCLAW_CONFIG_PATH"
    );
}
