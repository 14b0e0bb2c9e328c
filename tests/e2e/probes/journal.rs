//! Journal forwarding: `systemd-journal-upload` on the appliance sends its journal to a
//! remote collector, so a machine that is compromised or dies cannot take its logs with it.
//!
//! The published image names no collector (`[journald] upload_url` is empty), so the probe
//! points the guest at one the way an owner would later (a drop-in with `URL=`), runs a real
//! `systemd-journal-remote` on the suite's network as the collector, logs a fresh line on the
//! guest and finds it in the collector's journal file. It takes the drop-in away afterwards.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::Ctx;

/// systemd-journal-remote's usual port.
const PORT: u16 = 19532;
const COLLECTOR: &str = "/usr/lib/systemd/systemd-journal-remote";
const UPLOADER: &str = "/usr/lib/systemd/systemd-journal-upload";
const DROP_IN: &str = "/etc/systemd/journal-upload.conf.d/90-e2e-collector.conf";
/// How long the line may take to arrive: the first upload sends the journal from its start.
const ARRIVAL: Duration = Duration::from_secs(120);

/// The collector process, stopped however the probe ends.
struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn journal_forwarded_to_collector(ctx: &Ctx) -> Result<String> {
    let address = *ctx.testbed.fakes.model.ip();
    let dir = ctx.testbed.work_dir.join("journal-collector");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("forwarded.journal");
    let log = std::fs::File::create(dir.join("collector.log"))?;
    let _collector = Collector(
        Command::new("ip")
            .args(["netns", "exec", &ctx.testbed.netns, COLLECTOR])
            .arg(format!("--listen-http={address}:{PORT}"))
            .arg("--split-mode=none")
            .arg(format!("--output={}", file.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("cannot start {COLLECTOR} (package systemd-journal-remote)")
            })?,
    );

    let nonce = format!("clawfort-e2e-forward-{:016x}", rand_u64());
    let started = Instant::now();
    let pointed = ctx.admin.sudo_with(&format!(
        "mkdir -p /etc/systemd/journal-upload.conf.d \
         && printf '[Upload]\\nURL=http://{address}:{PORT}\\n' | install -m 644 /dev/stdin {DROP_IN} \
         && systemctl restart systemd-journal-upload.service \
         && for i in $(seq 1 60); do \
              pid=$(systemctl show -P MainPID systemd-journal-upload.service); \
              [ \"$pid\" != 0 ] && [ \"$(readlink /proc/$pid/exe)\" = {UPLOADER} ] && break; \
              [ $i = 60 ] && exit 1; sleep 1; \
            done \
         && logger -t clawfort-e2e-forward {nonce}"
    ), Duration::from_secs(120))?;
    let outcome = (|| -> Result<String> {
        // The unit is `Type=simple`: `restart` succeeds once systemd has forked, and the
        // executor's setup (dynamic user, namespaces) takes seconds under emulation before the
        // program itself runs, or fails to. So the probe waits (bounded) until the unit's main
        // process is the uploader's program.
        ensure!(
            pointed.success,
            "systemd-journal-upload did not start with a collector named (its main process \
             never became {UPLOADER} within 60 s): {}",
            pointed.stderr.trim()
        );
        loop {
            let found = Command::new("journalctl")
                .arg(format!("--file={}", file.display()))
                .args(["-t", "clawfort-e2e-forward", "-o", "cat", "--no-pager"])
                .output();
            if let Ok(found) = found {
                if String::from_utf8_lossy(&found.stdout).contains(&nonce) {
                    break;
                }
            }
            if started.elapsed() > ARRIVAL {
                let uploader = ctx
                    .admin
                    .sudo("journalctl -u systemd-journal-upload.service -n 5 --no-pager -o cat")
                    .map(|out| out.stdout)
                    .unwrap_or_default();
                bail!(
                    "the line logged on the guest did not reach the collector within {} s \
                     ({} bytes received; the uploader said: {}; the collector: {})",
                    ARRIVAL.as_secs(),
                    std::fs::metadata(&file).map_or(0, |m| m.len()),
                    crate::exec::last_lines(&uploader, 3),
                    crate::exec::last_lines(
                        &std::fs::read_to_string(dir.join("collector.log")).unwrap_or_default(),
                        3
                    )
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        Ok(format!(
            "a line logged on the guest reached a systemd-journal-remote collector at \
             {address}:{PORT} in {:.1} s",
            started.elapsed().as_secs_f64()
        ))
    })();
    // As shipped again: no collector, the unit stopped.
    let restored = ctx.admin.sudo(&format!(
        "systemctl stop systemd-journal-upload.service; rm -f {DROP_IN}; \
         rm -rf /var/lib/systemd/journal-upload"
    ))?;
    let detail = outcome?;
    ensure!(
        restored.success,
        "could not take the collector away again: {}",
        restored.stderr.trim()
    );
    Ok(detail)
}

/// A fresh value for the logged line, so an old one cannot pass.
fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the kernel's random numbers");
    u64::from_le_bytes(bytes)
}
