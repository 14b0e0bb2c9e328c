//! One running QEMU: its command line, built from a [`Machine`] and per-boot choices, and a
//! guard that stops it by PID when dropped (also on Ctrl-C, through [`super::cleanup`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::accel::{pflash, Accel};
use super::cleanup::{self, Registration};
use super::machine::Machine;
use super::BootMedia;

/// A network card and what it is plugged into.
pub enum Nic {
    /// QEMU's user-mode network with the guest's SSH port forwarded to `127.0.0.1:host_port`.
    UserSsh { host_port: u16 },
    /// A tap device that already exists in the network namespace QEMU runs in.
    Tap { ifname: String, mac: String },
}

/// Where the serial console goes.
pub enum Console {
    /// The terminal (serial and QEMU monitor multiplexed; Ctrl-A X quits), also logged to a file.
    Terminal { log: PathBuf },
    /// A file only: for unattended boots.
    File(PathBuf),
}

pub struct VmSpec<'a> {
    /// Shown in `ps` and in messages.
    pub name: String,
    pub machine: &'a Machine,
    pub accel: Accel,
    /// The boot disk: a per-boot overlay, never the artifact itself.
    pub disk: PathBuf,
    /// Firmware (with this boot's own variable store) or a kernel.
    pub boot: BootMedia,
    pub nics: Vec<Nic>,
    /// A raw NoCloud seed volume attached as a second disk.
    pub seed: Option<PathBuf>,
    pub console: Console,
    /// Run QEMU inside this network namespace (`ip netns exec`), so its tap devices are there.
    pub netns: Option<String>,
}

impl VmSpec<'_> {
    /// The full command (program first), as it is executed.
    pub fn command_line(&self) -> Vec<OsString> {
        let machine = self.machine;
        let accel = self.accel.settings(machine);
        let mut argv: Vec<OsString> = Vec::new();
        let mut push = |args: &[&str]| argv.extend(args.iter().map(OsString::from));
        if let Some(netns) = &self.netns {
            push(&["ip", "netns", "exec", netns]);
        }
        push(&[
            &machine.binary,
            "-name",
            &self.name,
            "-machine",
            &machine.machine,
        ]);
        push(&["-accel", &accel.accel, "-cpu", &accel.cpu]);
        push(&[
            "-m",
            &machine.memory_mib.to_string(),
            "-smp",
            &machine.smp.to_string(),
        ]);
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        match &self.boot {
            BootMedia::Firmware { code, vars } => {
                push(&["-drive", &pflash(code, true)]);
                push(&["-drive", &pflash(vars, false)]);
            }
            BootMedia::Kernel {
                kernel,
                initrd,
                append,
            } => push(&[
                "-kernel",
                &kernel.display().to_string(),
                "-initrd",
                &initrd.display().to_string(),
                "-append",
                append,
            ]),
        }
        push(&[
            "-drive",
            &format!(
                "if=none,id=disk0,format=qcow2,discard=unmap,file={}",
                qemu_path(&self.disk)
            ),
            "-device",
            &format!("{},drive=disk0,bootindex=0", machine.devices.disk),
        ]);
        if let Some(seed) = &self.seed {
            push(&[
                "-drive",
                &format!(
                    "if=none,id=seed0,format=raw,readonly=on,file={}",
                    qemu_path(seed)
                ),
                "-device",
                &format!("{},drive=seed0", machine.devices.disk),
            ]);
        }
        for (index, nic) in self.nics.iter().enumerate() {
            let netdev = match nic {
                Nic::UserSsh { host_port } => {
                    format!("user,id=net{index},hostfwd=tcp:127.0.0.1:{host_port}-:22")
                }
                Nic::Tap { ifname, .. } => {
                    format!("tap,id=net{index},ifname={ifname},script=no,downscript=no")
                }
            };
            let mut device = format!("{},netdev=net{index}", machine.devices.nic);
            if let Nic::Tap { mac, .. } = nic {
                device.push_str(&format!(",mac={mac}"));
            }
            push(&["-netdev", &netdev, "-device", &device]);
        }
        push(&["-device", &machine.devices.rng]);
        match &self.console {
            Console::Terminal { log } => push(&[
                "-chardev",
                &format!(
                    "stdio,id=console,mux=on,signal=off,logfile={}",
                    qemu_path(log)
                ),
                "-serial",
                "chardev:console",
                "-mon",
                "chardev=console,mode=readline",
            ]),
            Console::File(log) => push(&["-serial", &format!("file:{}", qemu_path(log))]),
        }
        argv
    }
}

/// A running VM. Dropping it stops QEMU (SIGTERM, then SIGKILL) and reaps it.
pub struct Vm {
    name: String,
    child: Option<Child>,
    started: Instant,
    interrupt_teardown: Option<Registration>,
}

impl Vm {
    pub fn start(spec: &VmSpec) -> Result<Vm> {
        let argv = spec.command_line();
        eprintln!("$ {}", shell_words(&argv));
        // tidy: spawn (QEMU runs beside the suite and is stopped by pid)
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        if let Console::File(_) = spec.console {
            command.stdin(Stdio::null());
        }
        let started = Instant::now();
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start QEMU `{}` for {}",
                spec.machine.binary, spec.name
            )
        })?;
        let pid = child.id();
        let interrupt_teardown =
            cleanup::on_exit(format!("VM {} (pid {pid})", spec.name), move || {
                terminate(pid)
            });
        Ok(Vm {
            name: spec.name.clone(),
            child: Some(child),
            started,
            interrupt_teardown: Some(interrupt_teardown),
        })
    }

    /// When QEMU was started: the zero of every boot timing.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Fails if QEMU has exited (a guest that powered off or a QEMU error).
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "VM {} stopped unexpectedly: QEMU exited with {status}",
                    self.name
                );
            }
        }
        Ok(())
    }

    /// Waits for QEMU to exit on its own (the person at the console powered the guest off).
    pub fn wait(mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().expect("a started VM has a child");
        let status = child.wait()?;
        if let Some(registration) = self.interrupt_teardown.take() {
            registration.disarm();
        }
        Ok(status)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                terminate(child.id());
            }
            let _ = child.wait();
        }
        if let Some(registration) = self.interrupt_teardown.take() {
            registration.disarm();
        }
    }
}

/// Asks the process to stop, then kills it if it has not stopped within five seconds.
fn terminate(pid: u32) {
    use rustix::process::{kill_process, test_kill_process, Pid, Signal};
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if kill_process(pid, Signal::TERM).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if test_kill_process(pid).is_err() || is_zombie(pid.as_raw_nonzero().get()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = kill_process(pid, Signal::KILL);
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// QEMU option values are comma-separated; a comma inside a path is written twice.
fn qemu_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The command line quoted for a person to copy.
fn shell_words(argv: &[OsString]) -> String {
    argv.iter()
        .map(|arg| {
            let arg = arg.to_string_lossy();
            if arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
            {
                arg.into_owned()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
