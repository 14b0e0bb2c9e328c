//! `cargo xtask run`: boot a built image under QEMU for a person to log in to.
//!
//! The artifact boots through the real firmware exactly as the suite boots it, on a fresh
//! copy-on-write overlay (every run is a first boot and the artifact is never modified), with
//! the guest's SSH forwarded to a loopback port and the serial console on the terminal.

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use xshell::Shell;

use crate::image::layout::ArtifactNames;
use crate::image::{self, host_tools, host_tools::Purpose, Format, Target};
use crate::qemu::{self, disk, Console, Machine, Nic, Vm, VmSpec};

#[derive(clap::Args)]
pub struct Args {
    /// Target machine: selects qemu/<TARGET>.toml and the default image name.
    #[arg(long, value_enum, default_value_t)]
    pub target: Target,
    /// Disk image to boot (raw or qcow2). Default: <out>/clawfort-<target>.qcow2, else .raw,
    /// else .img. The Pi image boots from its raw form: `xz -dk out/clawfort-rpi.img.xz`.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Directory for build artifacts and this run's state (overlay disk, firmware variables,
    /// serial log under <out>/run-<target>/).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Loopback port forwarded to the guest's SSH port.
    #[arg(long, default_value_t = 2222)]
    pub ssh_port: u16,
    /// NoCloud seed directory (with `user-data` and `meta-data`) handed to cloud-init.
    #[arg(long, conflicts_with = "authorized_key")]
    pub seed: Option<PathBuf>,
    /// SSH public key to authorise for `admin` at first boot, through a generated NoCloud seed.
    #[arg(long)]
    pub authorized_key: Option<PathBuf>,
    /// Make the VM's disk this big (e.g. `8G`); first boot grows the root file system to it.
    #[arg(long, value_parser = parse_size)]
    pub disk_size: Option<u64>,
}

pub fn run(args: Args) -> Result<()> {
    let sh = Shell::new()?;
    let root = crate::project_root();
    sh.change_dir(&root);
    // Before the machine file, whose loading checks that the firmware is installed.
    host_tools::ensure_for(&image::load_target(args.target)?, Purpose::Boot)?;
    let machine = Machine::load(&root, args.target)?;
    let image = match &args.image {
        Some(image) => image.clone(),
        None => {
            let name = image::load_definition(&[], args.target)?.image.image.name;
            built_image(&ArtifactNames::new(args.out.clone(), &name, args.target))?
        }
    };
    ensure_port_free(args.ssh_port)?;

    let state = args.out.join(format!("run-{}", args.target));
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create run directory {}", state.display()))?;
    let overlay = state.join("disk.qcow2");
    disk::overlay(&sh, &image, &overlay, args.disk_size)?;
    let boot = qemu::prepare_boot(&sh, &machine, &image, &state, "firmware")?;
    let seed = match (&args.seed, &args.authorized_key) {
        (Some(dir), _) => Some(disk::nocloud_seed(&sh, dir, &state.join("seed.img"))?),
        (None, Some(key)) => {
            let dir = state.join("seed");
            disk::seed_dir_for_key("admin", key, &dir)?;
            Some(disk::nocloud_seed(&sh, &dir, &state.join("seed.img"))?)
        }
        (None, None) => None,
    };
    let serial_log = state.join("serial.log");
    let spec = VmSpec {
        name: format!("clawfort-run-{}", args.target),
        machine: &machine,
        accel: qemu::accel::choose(&machine)?,
        disk: overlay,
        boot,
        nics: vec![Nic::UserSsh {
            host_port: args.ssh_port,
        }],
        seed,
        console: Console::Terminal {
            log: serial_log.clone(),
        },
        netns: None,
    };
    let port = args.ssh_port;
    eprintln!(
        "\nBooting {} (first boot takes about a minute under TCG).\n\
         Log in:          ssh -p {port} -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no admin@127.0.0.1\n\
         Gateway tunnel:  add `-L 18789:127.0.0.1:18789`, then open http://127.0.0.1:18789/\n\
         Quit QEMU:       Ctrl-A X (the serial console is also logged to {})\n",
        image.display(),
        serial_log.display()
    );
    let status = Vm::start(&spec)?.wait()?;
    ensure!(status.success(), "QEMU exited with {status}");
    Ok(())
}

/// The target's image in `out`: the qcow2, else the raw disk, else the Pi's decompressed `.img`.
fn built_image(names: &ArtifactNames) -> Result<PathBuf> {
    let candidates = [
        names.path(Format::Qcow2),
        names.path(Format::Raw),
        names.decompressed_img(),
    ];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .with_context(|| {
            let shown: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            format!(
                "no image to boot ({}): build one with `cargo xtask image --target {}`, or pass \
                 --image",
                shown.join(", "),
                names.target()
            )
        })
}

fn ensure_port_free(port: u16) -> Result<()> {
    TcpListener::bind(("127.0.0.1", port)).with_context(|| {
        format!("loopback port {port} is in use: pick another with --ssh-port N")
    })?;
    Ok(())
}

/// `--disk-size`: the image definition's size syntax (`8G`, `4096M`, `512K`, a byte count).
fn parse_size(text: &str) -> Result<u64, String> {
    clawfort_imagedef::parse_size(text).map_err(|err| format!("{err:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("4096M"), Ok(4096 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("G").is_err());
    }

    #[test]
    fn a_missing_image_names_the_command_that_builds_it() {
        let out = tempfile::tempdir().unwrap();
        let names = ArtifactNames::new(out.path().to_owned(), "clawfort", Target::Rpi);
        let err = built_image(&names).unwrap_err().to_string();
        assert!(
            err.contains("build one with `cargo xtask image --target rpi`, or pass --image"),
            "{err}"
        );
        std::fs::write(out.path().join("clawfort-rpi.img"), "").unwrap();
        assert_eq!(
            built_image(&names).unwrap(),
            out.path().join("clawfort-rpi.img")
        );
    }
}
