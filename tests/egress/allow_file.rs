//! The proxy as the appliance runs it, `--allow-file`: root's list decides, an
//! `openclaw.json` next to it (which the gateway could have changed) does not, no file or
//! an empty list refuses everything, and a bad file stops the proxy with exit 2 naming it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::support::{allow_file, command, provider_config, read_head, status, Proxy, ALLOW_FILE};

/// A TCP listener on 127.0.0.1 that counts connections and answers `pong` to each.
struct Listener {
    port: u16,
    accepted: Arc<AtomicU64>,
}

impl Listener {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(b"pong");
            }
        });
        Self { port, accepted }
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn connect(proxy: &Proxy, target: &str) -> String {
    let mut stream = proxy.connect();
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .unwrap();
    let head = read_head(&mut stream);
    if status(&head) == 200 {
        let mut pong = [0u8; 4];
        stream.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"pong");
        return head;
    }
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    head + &rest
}

#[test]
fn the_allow_file_decides_and_openclaw_json_is_ignored() {
    let provider = Listener::start();
    let attacker = Listener::start();
    // The gateway's user edited openclaw.json after root wrote the allow file: a provider
    // pointing at the attacker's host. The proxy starts after that edit (a crash, a reboot).
    let tampered = provider_config(&format!("http://{}/v1", attacker.target()));
    let proxy = Proxy::start_with_allow_file(&[
        (ALLOW_FILE, &allow_file(&[&provider.target()])),
        ("openclaw.json", &tampered),
    ]);
    let allow_path = proxy.dir().join(ALLOW_FILE);
    assert_eq!(
        proxy
            .log_lines(&format!(
                "allowing {} (from {})",
                provider.target(),
                allow_path.display()
            ))
            .len(),
        1,
        "{}",
        proxy.log()
    );

    assert_eq!(status(&connect(&proxy, &provider.target())), 200);
    let answer = connect(&proxy, &attacker.target());
    assert_eq!(status(&answer), 403, "{answer}");
    assert!(
        answer.contains(&format!("{} is not in the allow list", attacker.target()))
            && answer.contains("sudo clawfort egress sync")
            && answer.contains(&allow_path.display().to_string()),
        "{answer}"
    );
    assert_eq!(provider.accepted(), 1);
    assert_eq!(attacker.accepted(), 0, "the attacker's host was reached");
    assert_eq!(proxy.wait_log("refused (403)", 1).len(), 1);
}

#[test]
fn no_allow_file_refuses_everything_and_says_how_to_fill_it() {
    let provider = Listener::start();
    // openclaw.json names the provider, but there is no allow file yet (a fresh appliance).
    let config = provider_config(&format!("http://{}/v1", provider.target()));
    let proxy = Proxy::start_with_allow_file(&[("openclaw.json", &config)]);
    let answer = connect(&proxy, &provider.target());
    assert_eq!(status(&answer), 403, "{answer}");
    assert_eq!(provider.accepted(), 0);
    let log = proxy.log();
    assert!(
        log.contains(&format!(
            "there is no allow file {}: every CONNECT will be refused",
            proxy.dir().join(ALLOW_FILE).display()
        )) && log.contains("run `sudo clawfort egress sync`"),
        "{log}"
    );
}

#[test]
fn an_empty_allow_list_refuses_everything() {
    let provider = Listener::start();
    let proxy = Proxy::start_with_allow_file(&[(ALLOW_FILE, &allow_file(&[]))]);
    assert_eq!(status(&connect(&proxy, &provider.target())), 403);
    assert_eq!(provider.accepted(), 0);
    let log = proxy.log();
    assert!(
        log.contains("allows no destination: every CONNECT will be refused")
            && log.contains("sudo clawfort egress sync"),
        "{log}"
    );
}

#[test]
fn a_bad_allow_file_stops_the_proxy_with_exit_2_naming_it() {
    let cases: [(&str, u32, &str); 6] = [
        ("{", 0o644, "not an allow file"),
        (
            r#"{"version": 2, "allow": []}"#,
            0o644,
            "version 2 is not one",
        ),
        (
            r#"{"version": 1, "allow": ["api.example.com"]}"#,
            0o644,
            "allow[0] `api.example.com`: the target `api.example.com` has no port",
        ),
        (
            r#"{"version": 1, "allow": [], "extra": ["evil.example:443"]}"#,
            0o644,
            "unknown field `extra`",
        ),
        // Valid content, but anyone may rewrite it.
        (&allow_file(&["api.example.com:443"]), 0o666, "(mode 666)"),
        (&allow_file(&["api.example.com:443"]), 0o664, "(mode 664)"),
    ];
    for (content, mode, wanted) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ALLOW_FILE);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = command(dir.path())
            .args(["egress", "--allow-file"])
            .arg(&path)
            .arg("--listen")
            .arg(dir.path().join("never-bound.sock"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{content}: {stderr}");
        assert!(
            stderr.contains(&format!("{}: ", path.display())) && stderr.contains(wanted),
            "{content}: {stderr}"
        );
        assert!(!dir.path().join("never-bound.sock").exists());
    }

    // A link in place of the file: refused, whatever it points to.
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.json");
    std::fs::write(&real, allow_file(&["api.example.com:443"])).unwrap();
    let link = dir.path().join(ALLOW_FILE);
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = command(dir.path())
        .args(["egress", "--allow-file"])
        .arg(&link)
        .args(["--listen", "/nonexistent/never-bound.sock"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
}
