//! KVM or TCG, decided by running the firmware, not by the presence of `/dev/kvm`.
//!
//! Nested virtualisation often exposes a `/dev/kvm` that cannot run a guest ("failed to set
//! MSR 0x10a", "KVM internal error"). The probe boots the target's own firmware under KVM with
//! no disk for a few seconds: KVM counts as working only if the firmware's banner reaches the
//! serial console. The verdict is cached per boot of the host (keyed by the kernel's boot id),
//! because it cannot change before the host reboots.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::machine::{AccelSettings, Boot, Firmware, Machine};

/// How long the firmware may take to print its banner under KVM (it takes well under a second
/// where KVM works; TCG needs about two).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn settings(self, machine: &Machine) -> &AccelSettings {
        match (self, &machine.accel.kvm) {
            (Accel::Kvm, Some(kvm)) => kvm,
            _ => &machine.accel.tcg,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Picks the accelerator for `machine`, probing KVM once per host boot.
pub fn choose(machine: &Machine) -> Result<Accel> {
    let (Some(kvm), Boot::Uefi(firmware)) = (&machine.accel.kvm, &machine.boot) else {
        eprintln!(
            "accelerator: tcg ({} has no KVM settings: it emulates another architecture)",
            machine.binary
        );
        return Ok(Accel::Tcg);
    };
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("accelerator: tcg (no /dev/kvm)");
        return Ok(Accel::Tcg);
    }
    let cache = cache_file(machine);
    if let Some(cached) = cache
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
    {
        let accel = if cached.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        eprintln!(
            "accelerator: {} (probed earlier in this host boot)",
            accel.name()
        );
        return Ok(accel);
    }
    let (accel, reason) = probe_kvm(machine, kvm, firmware)?;
    eprintln!("accelerator: {} ({reason})", accel.name());
    if let Some(path) = cache {
        // A lost cache only costs another probe.
        let _ = std::fs::write(path, accel.name());
    }
    Ok(accel)
}

fn cache_file(machine: &Machine) -> Option<PathBuf> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(std::env::temp_dir().join(format!(
        "clawfort-accel-{}-{}-{}",
        machine.binary,
        machine.machine,
        boot_id.trim()
    )))
}

/// Boots the firmware under KVM with no disk and watches the serial console.
fn probe_kvm(
    machine: &Machine,
    kvm: &AccelSettings,
    firmware: &Firmware,
) -> Result<(Accel, String)> {
    let dir = std::env::temp_dir().join(format!("clawfort-kvm-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _remove_dir = super::cleanup::on_exit("the KVM probe's directory", {
        let dir = dir.clone();
        move || {
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
    let vars = dir.join("vars.fd");
    std::fs::copy(&firmware.vars, &vars).with_context(|| {
        format!(
            "cannot copy the firmware variables {}",
            firmware.vars.display()
        )
    })?;
    let serial = dir.join("serial.log");
    // tidy: spawn (the KVM probe is polled and killed at its deadline)
    let mut command = Command::new(&machine.binary);
    command
        .args(["-machine", &machine.machine])
        .args(["-accel", &kvm.accel, "-cpu", &kvm.cpu])
        .args(["-m", "256", "-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-drive")
        .arg(pflash(&firmware.code, true))
        .arg("-drive")
        .arg(pflash(&vars, false))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{}` for the KVM probe", machine.binary))?;
    let started = Instant::now();
    let verdict = loop {
        if let Some(status) = child.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            let first_line = stderr.lines().next().unwrap_or("no message").to_owned();
            break (
                Accel::Tcg,
                format!("KVM probe exited with {status}: {first_line}"),
            );
        }
        let printed = std::fs::read(&serial).unwrap_or_default();
        if contains(&printed, firmware.ready_marker.as_bytes()) {
            break (
                Accel::Kvm,
                format!(
                    "KVM ran the firmware to `{}` in {:.1} s",
                    firmware.ready_marker,
                    started.elapsed().as_secs_f64()
                ),
            );
        }
        if started.elapsed() > PROBE_TIMEOUT {
            break (
                Accel::Tcg,
                format!(
                    "KVM did not bring the firmware to `{}` within {} s",
                    firmware.ready_marker,
                    PROBE_TIMEOUT.as_secs()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(verdict)
}

pub(super) fn pflash(file: &std::path::Path, read_only: bool) -> String {
    format!(
        "if=pflash,format=raw,unit={},readonly={},file={}",
        if read_only { 0 } else { 1 },
        if read_only { "on" } else { "off" },
        file.display()
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
