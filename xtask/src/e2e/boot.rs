//! One suite run against one disk: a private network with the agent's fake provider and
//! Telegram on its namespace side, the guest booted through its firmware on a disk larger than
//! the image, boot timings, optionally a second boot of the same image (for the uniqueness
//! probe), then the probe binary; everything torn down afterwards, also on failure or
//! interrupt.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use xshell::Shell;

use super::fakes::FakeServices;
use super::testbed::{BootedDisk, Expectations, Guest, Ipv6Lan, Report, Sources, Testbed};
use crate::qemu::netns::{self, GuestLink, PrivateNetwork};
use crate::qemu::{self, accel, cleanup, disk, Console, Machine, Nic, Vm, VmSpec};

/// How much bigger than the image the guest's disk is: first boot must grow the root into it.
const DISK_GROWTH: u64 = 2 << 30;
/// Upper bound for power-on to SSH login (TCG first boot takes well under a minute).
const SSH_READY_LIMIT: Duration = Duration::from_secs(600);
/// Upper bound for SSH login to the gateway answering `/healthz`.
const GATEWAY_READY_LIMIT: Duration = Duration::from_secs(300);
/// Upper bound for the whole probe binary (each probe bounds itself well below this).
const PROBES_LIMIT: Duration = Duration::from_secs(2400);

/// The private network's addresses: the namespace side (one per kind of client) and the guests.
const ADMIN: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const SCANNER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const SSH_PROBER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 4);
/// Where the fake model provider and Telegram Bot API serve the guest's agent.
pub(super) const FAKES: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);
/// Readiness polling opens a new SSH connection every two seconds; rotating over ten source
/// addresses keeps each far below the firewall's per-source limit on new connections.
const POLL_POOL: std::ops::RangeInclusive<u8> = 100..=109;

/// What the guests boot.
pub struct Disk {
    /// The file named in messages: the published artifact, or the self-test's image.
    pub shown: PathBuf,
    /// The disk each guest's own overlay is backed by (never written).
    pub boot: PathBuf,
    /// The same disk as raw (the Pi's kernel and command line are read out of it).
    pub raw: PathBuf,
    /// How `boot` came from the published artifact; when set, first boot applies the suite's
    /// seed, which the harness waits for and checks before probing.
    pub booted: Option<BootedDisk>,
}

pub struct Plan<'a> {
    pub target: &'a str,
    pub machine: &'a Machine,
    pub disk: &'a Disk,
    /// Scratch directory of this run (overlays, firmware variables, sockets), existing and
    /// empty but for the seed's files.
    pub work: PathBuf,
    /// Serial console log of the guest under test; the second boot's gets a `-peer` suffix.
    pub serial_log: PathBuf,
    pub report: PathBuf,
    pub ssh_key: &'a Path,
    pub admin_user: String,
    pub service_user: String,
    pub expect: Expectations,
    pub boot_peer: bool,
    pub only: Vec<String>,
    pub skip: Vec<String>,
    /// The gateway's apt repositories, served by the fakes (`repository.rs`).
    pub repository: Option<super::testbed::Repository>,
    /// The `clawfort-fakes` binary, run in the namespace for the whole suite.
    pub fakes_binary: &'a Path,
    /// Root shell scripts run on the guest once it is ready, before probing (the self-test's
    /// run-time weakenings); empty for the real suite.
    pub prepare: &'a [&'a str],
    /// After the probes, in order: a root script, then the probes it names, run again (the
    /// self-test's weakenings that would change what every other probe sees); empty for the
    /// real suite.
    pub afterwards: Vec<Afterwards<'a>>,
}

/// A root script run on the guest after all probes, and the probes run once more after it.
pub struct Afterwards<'a> {
    pub script: &'a str,
    pub probes: Vec<String>,
}

pub struct Outcome {
    pub guest: Guest,
    pub report: Report,
    /// One report per [`Plan::afterwards`] step, in order.
    pub afterwards: Vec<Report>,
}

pub fn boot_and_probe(sh: &Shell, plan: &Plan) -> Result<Outcome> {
    let work = std::fs::canonicalize(&plan.work)
        .with_context(|| format!("no work directory {}", plan.work.display()))?;
    let accel = accel::choose(plan.machine)?;

    let links = [guest_link("a", 10), guest_link("b", 11)];
    let links = if plan.boot_peer {
        &links[..]
    } else {
        &links[..1]
    };
    let mut host_addresses = vec![ADMIN, SCANNER, SSH_PROBER, ATTACKER, FAKES];
    host_addresses.extend(POLL_POOL.map(|host| Ipv4Addr::new(10, 77, 0, host)));
    let netns_name = format!("clawfort-e2e-{}", std::process::id());
    let network = PrivateNetwork::create(sh, &netns_name, &host_addresses, links, &work)?;
    // Dropped (stopped) after the probes, before the namespace goes.
    let fakes = FakeServices::start(&network, plan.fakes_binary, FAKES, &work)?;

    let disk_bytes = disk::virtual_size(sh, &plan.disk.boot)? + DISK_GROWTH;
    let start = |link: &GuestLink, serial: &Path| -> Result<Vm> {
        let name = format!("{}-{}", netns_name, link.tap);
        let overlay = work.join(format!("{}.qcow2", link.tap));
        disk::overlay(sh, &plan.disk.boot, &overlay, Some(disk_bytes))?;
        let boot = qemu::prepare_boot(sh, plan.machine, &plan.disk.raw, &work, &link.tap)?;
        Vm::start(&VmSpec {
            name,
            machine: plan.machine,
            accel,
            disk: overlay,
            boot,
            nics: vec![Nic::Tap {
                ifname: link.tap.clone(),
                mac: link.mac.clone(),
            }],
            seed: None,
            console: Console::File(serial.to_owned()),
            netns: Some(netns_name.clone()),
        })
    };

    let mut vm = start(&links[0], &plan.serial_log)?;
    eprintln!(
        "==> booting {} (serial console: {})",
        plan.disk.shown.display(),
        plan.serial_log.display()
    );
    let ssh_ready = wait_for_ssh(&network, plan, &mut vm, links[0].address)?;
    eprintln!("==> SSH ready {ssh_ready:.1} s after power-on");
    if plan.disk.booted.is_some() {
        wait_for_seed(&network, plan, links[0].address)?;
    }
    let gateway_ready = wait_for_gateway(&network, plan, links[0].address, vm.started());
    match gateway_ready {
        Ok(seconds) => eprintln!("==> gateway ready {seconds:.1} s after power-on"),
        Err(ref err) => eprintln!("==> gateway not ready: {err:#}"),
    }
    for script in plan.prepare {
        run_as_root(&network, plan, links[0].address, script)?;
    }
    let guest = Guest {
        name: "a".to_owned(),
        address: links[0].address,
        disk_bytes,
        ssh_ready_s: ssh_ready,
        gateway_ready_s: gateway_ready.ok(),
        serial_log: absolute(&plan.serial_log)?,
    };

    // The second boot comes up while the first one is being probed.
    let peer_serial = with_suffix(&plan.serial_log, "-peer");
    let (_peer_vm, peer) = match links.get(1) {
        Some(link) => {
            let peer_vm = start(link, &peer_serial)?;
            let peer = Guest {
                name: "b".to_owned(),
                address: link.address,
                disk_bytes,
                ssh_ready_s: 0.0,
                gateway_ready_s: None,
                serial_log: absolute(&peer_serial)?,
            };
            (Some(peer_vm), Some(peer))
        }
        None => (None, None),
    };

    let testbed = Testbed {
        target: plan.target.to_owned(),
        netns: netns_name.clone(),
        ssh_key: std::fs::canonicalize(plan.ssh_key)?,
        admin_user: plan.admin_user.clone(),
        service_user: plan.service_user.clone(),
        sources: Sources {
            admin: ADMIN,
            scanner: SCANNER,
            scanner_v6: netns::ula_twin(SCANNER),
            ssh_prober: SSH_PROBER,
            attacker: ATTACKER,
        },
        ipv6: Ipv6Lan {
            prefix: netns::ULA_PREFIX,
            prefix_len: netns::ULA_PREFIX_LEN,
            bridge_index: network.bridge_index(sh)?,
        },
        guest: guest.clone(),
        peer,
        booted: plan.disk.booted.clone(),
        expect: plan.expect.clone(),
        fakes: fakes.testbed.clone(),
        repository: plan.repository.clone(),
        report: absolute(&plan.report)?,
        work_dir: work.clone(),
        only: plan.only.clone(),
        skip: plan.skip.clone(),
    };
    let report = probe(&testbed, &work.join("testbed.json"), &mut vm)?;
    let mut afterwards = Vec::new();
    for (step, then) in plan.afterwards.iter().enumerate() {
        run_as_root(&network, plan, links[0].address, then.script)?;
        let testbed = Testbed {
            only: then.probes.clone(),
            report: with_suffix(&testbed.report, &format!("-afterwards-{}", step + 1)),
            ..testbed.clone()
        };
        let file = work.join(format!("testbed-afterwards-{}.json", step + 1));
        afterwards.push(probe(&testbed, &file, &mut vm)?);
    }
    drop(fakes);
    Ok(Outcome {
        guest,
        report,
        afterwards,
    })
}

/// Writes `testbed` to `file`, runs the probe binary against it and reads its report back.
fn probe(testbed: &Testbed, file: &Path, vm: &mut Vm) -> Result<Report> {
    std::fs::write(file, serde_json::to_string_pretty(testbed)?)?;
    let _ = std::fs::remove_file(&testbed.report);
    run_probes(file, vm)?;
    let report = std::fs::read_to_string(&testbed.report).with_context(|| {
        format!(
            "the probe binary wrote no report {}",
            testbed.report.display()
        )
    })?;
    serde_json::from_str(&report)
        .with_context(|| format!("unreadable report {}", testbed.report.display()))
}

fn guest_link(name: &str, host: u8) -> GuestLink {
    GuestLink {
        tap: format!("tap-{name}"),
        mac: format!("52:54:00:77:00:{host:02x}"),
        address: Ipv4Addr::new(10, 77, 0, host),
    }
}

fn ssh_argv(plan: &Plan, source: Ipv4Addr, address: Ipv4Addr, timeout_s: u64) -> Vec<String> {
    let mut argv: Vec<String> = [
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    argv.extend([
        "-o".to_owned(),
        format!("ConnectTimeout={timeout_s}"),
        "-i".to_owned(),
        plan.ssh_key.display().to_string(),
        "-b".to_owned(),
        source.to_string(),
        format!("{}@{address}", plan.admin_user),
    ]);
    argv
}

/// Polls an SSH login as admin (a real login, not just an open port) until it works.
fn wait_for_ssh(
    network: &PrivateNetwork,
    plan: &Plan,
    vm: &mut Vm,
    address: Ipv4Addr,
) -> Result<f64> {
    let pool: Vec<Ipv4Addr> = POLL_POOL
        .map(|host| Ipv4Addr::new(10, 77, 0, host))
        .collect();
    let deadline = vm.started() + SSH_READY_LIMIT;
    let mut attempt = 0;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        vm.ensure_running()?;
        let source = pool[attempt % pool.len()];
        attempt += 1;
        let mut argv = ssh_argv(plan, source, address, 5);
        argv.extend(["--".to_owned(), "true".to_owned()]);
        let output = network
            .command("timeout")
            .args(["15"])
            .args(&argv)
            .stdin(std::process::Stdio::null())
            .output()
            .context("cannot run ssh for the readiness poll")?;
        if output.status.success() {
            return Ok(vm.started().elapsed().as_secs_f64());
        }
        last_error = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        std::thread::sleep(Duration::from_secs(2));
    }
    bail!(
        "no SSH login as {} to {address} within {} s of power-on (last error: {last_error}); see the serial log {}",
        plan.admin_user,
        SSH_READY_LIMIT.as_secs(),
        plan.serial_log.display()
    )
}

/// Waits, inside the guest, until the gateway answers `/healthz`; seconds since power-on.
fn wait_for_gateway(
    network: &PrivateNetwork,
    plan: &Plan,
    address: Ipv4Addr,
    started: Instant,
) -> Result<f64> {
    let limit = GATEWAY_READY_LIMIT.as_secs();
    let port = plan.expect.gateway_port;
    let script = format!(
        "for i in $(seq 1 {limit}); do curl -fs -o /dev/null --max-time 2 http://127.0.0.1:{port}/healthz && exit 0; sleep 1; done; exit 1"
    );
    let mut argv = ssh_argv(plan, ADMIN, address, 10);
    argv.extend(["--".to_owned(), script]);
    let status = network
        .command("timeout")
        .arg((limit + 60).to_string())
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .status()
        .context("cannot run ssh for the gateway readiness poll")?;
    if status.success() {
        Ok(started.elapsed().as_secs_f64())
    } else {
        bail!(
            "the gateway did not answer /healthz on 127.0.0.1:{port} within {limit} s of SSH login"
        )
    }
}

/// Waits until cloud-init has finished applying the seed (its `runcmd` restarts fail2ban when
/// it started before the drop-in was written), then checks that the suite's ban is in effect:
/// a probe must not run into a fail2ban restart, and must not meet the published hour-long ban.
fn wait_for_seed(network: &PrivateNetwork, plan: &Plan, address: Ipv4Addr) -> Result<()> {
    let bantime = plan.expect.fail2ban_bantime_s;
    let script = format!(
        "if ! timeout 300 cloud-init status --wait >/dev/null; then \
           echo 'cloud-init did not finish applying the seed cleanly:'; cloud-init status --long; exit 1; \
         fi; \
         ban=$(fail2ban-client get sshd bantime) || exit 1; \
         [ \"$ban\" = {bantime} ] || {{ \
           echo \"fail2ban's sshd bantime is $ban s, not the seed's {bantime} s: the drop-in \
{drop_in} is not in effect\"; exit 1; }}",
        drop_in = super::seed::SHORT_BAN_DROP_IN
    );
    run_as_root(network, plan, address, &script)
        .context("the guest did not apply the suite's CIDATA seed")?;
    eprintln!("==> cloud-init applied the seed; fail2ban's sshd bantime is {bantime} s");
    Ok(())
}

/// Runs `script` as root on the guest over a one-shot admin SSH connection.
fn run_as_root(
    network: &PrivateNetwork,
    plan: &Plan,
    address: Ipv4Addr,
    script: &str,
) -> Result<()> {
    let quoted = format!("'{}'", script.replace('\'', r"'\''"));
    let mut argv = ssh_argv(plan, ADMIN, address, 10);
    argv.extend(["--".to_owned(), format!("sudo -n sh -c {quoted}")]);
    eprintln!("==> on the guest, as root: {script}");
    let status = network
        .command("timeout")
        .arg("180")
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .status()
        .context("cannot run ssh to prepare the guest")?;
    ensure!(
        status.success(),
        "preparing the guest failed ({status}): {script}"
    );
    Ok(())
}

/// Runs the probe binary (a root-package test target) against the testbed.
fn run_probes(testbed_file: &Path, vm: &mut Vm) -> Result<()> {
    vm.ensure_running()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // tidy: spawn (the probe binary is waited for and killed by pid on Ctrl-C)
    let mut command = Command::new("timeout");
    command
        .args([
            "--kill-after=10",
            &PROBES_LIMIT.as_secs().to_string(),
            &cargo,
        ])
        .args([
            "test",
            "--quiet",
            "--package",
            "clawfort",
            "--test",
            "e2e",
            "--",
        ])
        .arg("--testbed")
        .arg(testbed_file)
        .current_dir(crate::project_root());
    eprintln!(
        "==> probing: cargo test --package clawfort --test e2e -- --testbed {}",
        testbed_file.display()
    );
    let mut child = command
        .spawn()
        .context("cannot run the probe binary with cargo")?;
    let pid = child.id();
    let registration = cleanup::on_exit(format!("the probe binary (pid {pid})"), move || {
        if let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    });
    let status = child.wait()?;
    registration.disarm();
    // Exit 1 means "some probe failed" (the report says which); anything else is a harness error.
    match status.code() {
        Some(0 | 1) => Ok(()),
        _ => bail!("the probe binary failed ({status}) before finishing its report"),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let extension = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}{extension}"))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    })
}
