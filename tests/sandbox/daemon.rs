//! A rootless Docker daemon of a test user, started for the test and stopped on drop.
//!
//! Needs root (to start the daemon as the test user), Debian's `docker.io`, `rootlesskit`
//! and `uidmap`, `busybox-static` for the test image, and an unprivileged user with
//! subordinate id ranges (`useradd -m clawfort-sbx-test` adds them; `cargo xtask ci` as root
//! installs the packages and adds that user), named by
//! `CLAWFORT_SANDBOX_TEST_USER` or that default. Without one of these the caller skips with
//! [`Daemon::start`]'s reason printed.
//!
//! rootlesskit runs with the host network (`--net=host`) and dockerd without a bridge: the
//! sandbox containers use `--network none`, and slirp4netns would need `/dev/net/tun`,
//! which build hosts often close to users.

use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image the tests import: busybox and its applets.
pub const IMAGE: &str = "clawfort-sbx-test:latest";
const DEFAULT_USER: &str = "clawfort-sbx-test";
const CONTRIB: &str = "/usr/share/docker.io/contrib";

pub struct Daemon {
    child: Child,
    /// Owned by the test user: the runtime dir, data root, state and workspaces.
    pub base: tempfile::TempDir,
    pub socket: PathBuf,
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let out = Command::new("id").arg("-u").arg(name).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").arg("-g").arg(name).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

impl Daemon {
    /// Starts the daemon and imports [`IMAGE`]; `Err` is the reason to skip.
    pub fn start() -> Result<Self, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("starting a rootless Docker daemon for a test user needs root".into());
        }
        for (path, package) in [
            ("/usr/sbin/dockerd", "docker.io"),
            ("/usr/bin/docker", "docker.io"),
            ("/usr/bin/rootlesskit", "rootlesskit"),
            ("/usr/bin/newuidmap", "uidmap"),
            ("/bin/busybox", "busybox-static"),
        ] {
            if !Path::new(path).exists() {
                return Err(format!("{path} is missing: apt-get install {package}"));
            }
        }
        let user =
            std::env::var("CLAWFORT_SANDBOX_TEST_USER").unwrap_or_else(|_| DEFAULT_USER.into());
        let (uid, gid) = user_ids(&user).ok_or_else(|| {
            format!("no user {user}: create it with `useradd -m {user}` (or name another in CLAWFORT_SANDBOX_TEST_USER)")
        })?;
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        if !subuid.lines().any(|l| l.starts_with(&format!("{user}:"))) {
            return Err(format!("{user} has no range in /etc/subuid"));
        }
        let base = tempfile::Builder::new()
            .prefix("clawfort-sbx-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        for dir in ["", "run", "data", "state", "state/sandboxes", "agent"] {
            let path = base.path().join(dir);
            std::fs::create_dir_all(&path).unwrap();
            chown(&path, Some(uid), Some(gid)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let run = base.path().join("run");
        let socket = run.join("docker.sock");
        let log = std::fs::File::create(base.path().join("dockerd.log")).unwrap();
        let child = Command::new("runuser")
            .args(["-u", &user, "--", "env", "-i"])
            .arg(format!("PATH={CONTRIB}:/usr/sbin:/usr/bin:/sbin:/bin"))
            .arg(format!("HOME={}", base.path().display()))
            .arg(format!("XDG_RUNTIME_DIR={}", run.display()))
            .args([
                "DOCKERD_ROOTLESS_ROOTLESSKIT_NET=host",
                "DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER=none",
                "DOCKERD_ROOTLESS_ROOTLESSKIT_MTU=1500",
                "dockerd-rootless.sh",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .arg(format!(
                "--data-root={}",
                base.path().join("data").display()
            ))
            .arg(format!("--exec-root={}", run.join("exec").display()))
            .arg(format!("--pidfile={}", run.join("docker.pid").display()))
            .arg(format!("--host=unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run runuser: {e}"))?;
        let mut daemon = Self {
            child,
            base,
            socket,
        };
        daemon.wait_ready()?;
        daemon.import_image()?;
        Ok(daemon)
    }

    /// `docker` of the test user against this daemon.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("HOME", self.base.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.base.path().join("dockerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "rootless dockerd exited ({status}):\n{}",
                    self.log()
                ));
            }
            if self.socket.exists() && self.docker(&["version"]).status.success() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "rootless dockerd did not answer within 60 s:\n{}",
            self.log()
        ))
    }

    /// Imports a root file system of busybox (static) and its applets as [`IMAGE`].
    fn import_image(&self) -> Result<(), String> {
        let root = self.base.path().join("rootfs");
        for dir in ["bin", "tmp", "workspace", "agent", "run", "var/tmp"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
        }
        let tar = self.base.path().join("rootfs.tar");
        let made = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(made.success());
        let imported = self.docker(&["import", tar.to_str().unwrap(), IMAGE]);
        if !imported.status.success() {
            return Err(format!(
                "docker import failed: {}",
                String::from_utf8_lossy(&imported.stderr)
            ));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    /// SIGTERM to the daemon's process group (dockerd stops its containers and
    /// containerd), SIGKILL after 20 s.
    fn drop(&mut self) {
        let group = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = self.child.wait();
        // The data root holds files of subordinate ids; root removes them with the dir.
    }
}
