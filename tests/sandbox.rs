//! The Docker sandbox against a real rootless daemon (started by `sandbox/daemon.rs` as a
//! test user): isolation, limits, timeouts, reuse, pruning, and the figures the bench
//! reports. Skipped, with the reason printed, where the host cannot run the daemon.

#[path = "sandbox/daemon.rs"]
mod daemon;

use std::path::Path;
use std::time::Duration;

use clawfort::approvals::Approvals;
use clawfort::config::{
    DmScope, ExecAsk, ExecSecurity, SandboxConfig, SandboxMode, SandboxScope, WorkspaceAccess,
};
use clawfort::confine::{Ending, Outcome, Policy, OUTPUT_CAP};
use clawfort::redact::Redactor;
use clawfort::sandbox::{image_present, Sandbox, SETTLE};
use clawfort::sessions::{direct_key, SessionKey};
use clawfort::tools::{Call, ExecTool, Tool};
use daemon::{Daemon, IMAGE};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn session(peer: &str) -> SessionKey {
    direct_key(DmScope::PerChannelPeer, "telegram", "default", peer)
}

fn sandbox(d: &Daemon, config: SandboxConfig) -> Sandbox {
    Sandbox::new(
        config,
        d.socket.clone(),
        &d.base.path().join("agent"),
        &d.base.path().join("state"),
    )
}

fn config() -> SandboxConfig {
    SandboxConfig {
        image: IMAGE.to_owned(),
        pids_limit: 64,
        ..SandboxConfig::default()
    }
}

async fn run(s: &Sandbox, key: &SessionKey, command: &str, secs: u64) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(secs);
    s.run(key, command, None, deadline, &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"))
}

fn text(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.output).into_owned()
}

fn containers(d: &Daemon) -> Vec<String> {
    let out = d.docker(&["ps", "-aq", "--filter", "label=clawfort.sandbox"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One daemon for every case (starting one takes seconds); each case is its own function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_against_a_rootless_daemon() {
    let d = match tokio::task::block_in_place(Daemon::start) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED: the Docker sandbox tests need a rootless daemon: {why}");
            return;
        }
    };
    let s = sandbox(&d, config());
    a_command_runs_isolated(&d, &s).await;
    the_exec_tool_picks_the_sandbox_by_session(&d).await;
    limits_hold(&s).await;
    a_starved_container_is_replaced(&d, &s).await;
    output_is_capped_and_timeouts_remove_the_container(&d, &s).await;
    workspace_access_rw_shares_the_agent_workspace(&d).await;
    failures_are_clear_and_never_fall_back(&d).await;
    stale_and_idle_containers_are_removed(&d).await;
    s.remove_all().await;
    assert!(containers(&d).is_empty(), "{:?}", containers(&d));
}

async fn a_command_runs_isolated(d: &Daemon, s: &Sandbox) {
    let marker = d.base.path().join("host-secret");
    std::fs::write(&marker, "host-only").unwrap();
    std::fs::set_permissions(&marker, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let probe = format!(
        "echo uid=$(id -u); pwd; echo hi > /workspace/made; cat /workspace/made; \
         cat {m} 2>&1; ls {state} 2>&1; \
         touch /rootfs-write 2>&1; \
         grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
         ls /sys/class/net; \
         wget -q -T 2 -O- http://127.0.0.1:1/ 2>&1; echo wget=$?; \
         ls /var/run/docker.sock {sock} 2>&1; env",
        m = marker.display(),
        state = d.base.path().join("state").display(),
        sock = d.socket.display(),
    );
    let o = run(s, &session("1"), &probe, 60).await;
    let out = text(&o);
    assert_eq!(o.ending, Ending::Exited(0), "{out}");
    assert!(
        out.contains("uid=1000\n"),
        "the command runs as uid 1000: {out}"
    );
    assert!(out.contains("/workspace\nhi\n"), "{out}");
    assert!(
        !out.contains("host-only") && out.contains("No such file or directory"),
        "a host file outside the binds is not visible: {out}"
    );
    assert!(out.contains("Read-only file system"), "root FS: {out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(
        out.contains("Seccomp:\t2"),
        "default seccomp profile: {out}"
    );
    assert!(
        out.lines().any(|l| l == "lo") && !out.contains("eth0"),
        "only loopback with network none: {out}"
    );
    assert!(!out.contains("wget=0"), "no connection leaves: {out}");
    assert!(
        !out.contains("HOME=/root") && !out.contains("DOCKER_HOST"),
        "{out}"
    );
    // The private sandbox workspace is on the host, under the state directory.
    let made: Vec<_> = std::fs::read_dir(d.base.path().join("state/sandboxes"))
        .unwrap()
        .map(|e| e.unwrap().path().join("made"))
        .collect();
    assert!(made.iter().any(|p| p.exists()), "{made:?}");
}

/// `mode: "non-main"`: a peer's `exec` runs in the container, the main session's on the
/// host (where, as root, confinement refuses it: proof it never reached the container).
async fn the_exec_tool_picks_the_sandbox_by_session(d: &Daemon) {
    let workspace = d.base.path().join("agent");
    let policy = Policy::new(&workspace, &[], &[]).unwrap();
    let approvals = Approvals::new(
        &d.base.path().join("state"),
        ExecSecurity::Full,
        ExecAsk::Off,
        Duration::from_secs(5),
        Redactor::new([]),
    );
    let tool = ExecTool::new(
        policy,
        clawfort::confine::Host::Here,
        Some(Duration::from_secs(30)),
        approvals,
    )
    .with_sandbox(sandbox(d, config()), SandboxMode::NonMain);
    let call = |key: SessionKey| Call {
        session_key: key,
        deadline: Instant::now() + Duration::from_secs(60),
        cancel: CancellationToken::new(),
        tainted: false,
    };
    let input = json!({"command": "echo uid=$(id -u) in $(pwd)"});
    let peer = tool.run(input.clone(), call(session("1"))).await;
    assert_eq!(
        (peer.content.as_str(), peer.is_error),
        ("uid=1000 in /workspace\n[exit code 0]", false)
    );
    let main = direct_key(DmScope::Main, "telegram", "default", "1");
    let host = tool.run(input, call(main)).await;
    assert!(
        host.is_error && !host.content.contains("uid=1000"),
        "{}",
        host.content
    );
    let e = tool
        .run(
            json!({"command": "true", "workdir": "../.."}),
            call(session("1")),
        )
        .await;
    assert!(
        e.is_error && e.content.contains("is outside the workspace"),
        "{}",
        e.content
    );
}

async fn limits_hold(s: &Sandbox) {
    // 200 sleepers against pidsLimit 64: a fork fails (and ash exits) before the 64th.
    // Counting and waiting use only shell builtins: no fork is left to spare.
    // The container's own idle `sleep` is counted first, as the baseline.
    let bomb = "count() { n=0; for p in /proc/[0-9]*; do c=; read c < $p/comm 2>/dev/null; \
                [ \"$c\" = sleep ] && n=$((n+1)); done; }; count; base=$n; \
                (for i in $(seq 200); do sleep 2 & done) 2>/dev/null; echo sub=$?; \
                count; echo sleepers=$((n-base)); while count; [ $n -gt $base ]; do :; done";
    let o = run(s, &session("1"), bomb, 60).await;
    let out = text(&o);
    let sleepers: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("sleepers="))
        .unwrap_or_else(|| panic!("{o:?}"))
        .parse()
        .unwrap();
    assert!(
        (1..64).contains(&sleepers) && !out.contains("sub=0"),
        "pidsLimit 64 capped the forks at {sleepers}: {out}"
    );
    assert_eq!(o.ending, Ending::Exited(0), "{out}");
    // The same container serves the session's next command: reuse.
    let o = run(s, &session("1"), "cat /workspace/made", 30).await;
    assert_eq!(text(&o), "hi\n");
}

/// What a fork bomb sent to the background leaves: the container's `pidsLimit` taken by
/// processes that outlive their command (here 200 sleepers against 64). Before, every later
/// command of the scope failed to fork until the idle prune; now the idle container is
/// counted and replaced, and the scope's next command runs (and forks) in a new one, its
/// workspace kept, and tells the model why. A background process that leaves room stays.
async fn a_starved_container_is_replaced(d: &Daemon, s: &Sandbox) {
    let key = session("1");
    let old = containers(d);
    assert_eq!(old.len(), 1, "{old:?}");
    let settled = || tokio::time::sleep(SETTLE + Duration::from_millis(1500));
    // Room left: the container, and its background sleeper, are kept.
    let o = run(s, &key, "sleep 1000 >/dev/null 2>&1 & echo started", 30).await;
    assert_eq!(text(&o), "started\n");
    settled().await;
    assert_eq!(containers(d), old, "a container with room is kept");
    let o = run(s, &key, "ps -o comm | grep -cx sleep", 30).await;
    assert_eq!(text(&o).trim(), "2", "its own sleep and the background one");

    for flood in [
        // The flood is done when its command ends...
        "(for i in $(seq 200); do sleep 1000 & done) >/dev/null 2>&1; echo flooded",
        // ...or still growing, in the background, when it ends.
        "(for i in $(seq 200); do sleep 1000 & done) >/dev/null 2>&1 & echo flooded",
    ] {
        let o = run(s, &key, flood, 60).await;
        assert_eq!(
            (o.ending, text(&o).as_str()),
            (Ending::Exited(0), "flooded\n")
        );
        let until = Instant::now() + Duration::from_secs(20);
        while !containers(d).is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            containers(d).is_empty(),
            "the starved container and its sleepers are gone: {:?}",
            containers(d)
        );
        let o = run(s, &key, "echo $(echo forked) $(echo twice); cat made", 30).await;
        let out = text(&o);
        assert_eq!(o.ending, Ending::Exited(0), "{out}");
        assert!(
            out.starts_with(
                "forked twice\nhi\n[sandbox container reset after the previous command: it \
                 held "
            ) && out.contains("its pidsLimit is 64")
                && out.contains("(/workspace is kept)]"),
            "{out}"
        );
        // Told once.
        let o = run(s, &key, "echo again", 30).await;
        assert_eq!(text(&o), "again\n");
    }
}

async fn output_is_capped_and_timeouts_remove_the_container(d: &Daemon, s: &Sandbox) {
    let o = run(s, &session("1"), "yes x | head -c 200000", 60).await;
    assert_eq!((o.output.len(), o.total_bytes), (OUTPUT_CAP, 200_000));
    let before = containers(d);
    assert_eq!(before.len(), 1, "scope agent: one container: {before:?}");
    let started = Instant::now();
    let o = run(s, &session("2"), "sleep 1000 & sleep 1000", 2).await;
    assert_eq!(o.ending, Ending::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        containers(d).is_empty(),
        "the timed-out command's container, and its background sleeper, are gone"
    );
    // The next command gets a fresh container; the workspace survived.
    let o = run(s, &session("1"), "cat /workspace/made", 30).await;
    assert_eq!(text(&o), "hi\n");
    // Cancellation (/stop) ends a command the same way.
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.cancel();
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let o = s
        .run(&session("1"), "sleep 1000", None, deadline, &cancel)
        .await
        .unwrap();
    assert_eq!(o.ending, Ending::Cancelled);
}

async fn workspace_access_rw_shares_the_agent_workspace(d: &Daemon) {
    let agent = d.base.path().join("agent");
    std::fs::write(agent.join("notes.txt"), "from the host\n").unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(
        agent.join("notes.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let ro = sandbox(
        d,
        SandboxConfig {
            workspace_access: WorkspaceAccess::Ro,
            scope: SandboxScope::Session,
            ..config()
        },
    );
    let o = run(
        &ro,
        &session("3"),
        "cat /agent/notes.txt; echo x > /agent/new 2>&1; echo w=$?",
        60,
    )
    .await;
    assert!(
        text(&o).contains("from the host") && text(&o).contains("w=1"),
        "{}",
        text(&o)
    );
    ro.remove_all().await;
    let rw = sandbox(
        d,
        SandboxConfig {
            workspace_access: WorkspaceAccess::Rw,
            ..config()
        },
    );
    let o = run(
        &rw,
        &session("3"),
        "cat notes.txt; echo out > result.txt",
        60,
    )
    .await;
    assert_eq!(text(&o), "from the host\n");
    assert_eq!(
        std::fs::read_to_string(agent.join("result.txt")).unwrap(),
        "out\n"
    );
    rw.remove_all().await;
}

async fn failures_are_clear_and_never_fall_back(d: &Daemon) {
    // What `security audit --deep` sees of the daemon and the image.
    let socket = d.socket.clone();
    let (present, absent, down) = tokio::task::spawn_blocking(move || {
        (
            image_present(&socket, IMAGE),
            image_present(&socket, "clawfort-no-such-image:1"),
            image_present(Path::new("/nonexistent/docker.sock"), IMAGE),
        )
    })
    .await
    .unwrap();
    let id = present.unwrap().expect("the test image is there");
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(absent.unwrap(), None);
    let e = down.unwrap_err();
    assert!(e.contains("cannot reach the Docker daemon"), "{e}");

    let missing = sandbox(
        d,
        SandboxConfig {
            image: "clawfort-no-such-image:1".into(),
            ..config()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = |s: Sandbox| async move {
        s.run(
            &session("4"),
            "true",
            None,
            deadline,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err()
    };
    let e = refused(missing).await;
    assert!(
        e.contains("clawfort-no-such-image:1") && e.contains("never pulls"),
        "{e}"
    );
    let down = Sandbox::new(
        config(),
        d.base.path().join("no-daemon.sock"),
        Path::new("/nonexistent"),
        &d.base.path().join("state"),
    );
    let e = refused(down).await;
    assert!(
        e.contains("cannot reach the Docker daemon") && e.contains("no-daemon.sock"),
        "{e}"
    );
}

async fn stale_and_idle_containers_are_removed(d: &Daemon) {
    // A container a previous run left (same installation label) goes at the first command.
    let first = sandbox(d, config());
    run(&first, &session("5"), "true", 60).await;
    drop(first);
    assert_eq!(containers(d).len(), 1);
    let second = sandbox(
        d,
        SandboxConfig {
            idle_secs: 2,
            scope: SandboxScope::Session,
            ..config()
        },
    );
    run(&second, &session("6"), "true", 60).await;
    let left = containers(d);
    assert_eq!(
        left.len(),
        1,
        "the earlier run's container was removed: {left:?}"
    );
    // Idle past prune.idleHours (2 s here): removed by the pruner.
    let until = Instant::now() + Duration::from_secs(30);
    while !containers(d).is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(containers(d).is_empty(), "the idle container was pruned");
}
