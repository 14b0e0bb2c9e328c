//! `cargo xtask ci`: everything CI checks, in the order that fails fastest. `.ci/run` and the
//! README's test command both call this, so a developer runs exactly what CI runs.

use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

/// The Pi image's boot in CI: it reaches SSH as the admin (the suite's readiness check) and these
/// probes run on it. The Pi image is the aarch64 appliance with another disk layout and kernel,
/// and the full suite already ran on aarch64; these cover what the Pi boot can change: the
/// first-boot units, the root growing on its MBR disk, the firewall and fail2ban's bans (the
/// generic kernel's nftables modules), and the gateway.
const RPI_PROBES: &[&str] = &[
    "root_fs_grown_to_disk",
    "nftables_input_policy_drop",
    "fail2ban_bans_and_unbans",
    "gateway_healthz_ok",
    "gateway_listens_on_loopback_only",
    "ssh_offers_only_publickey",
];

#[derive(clap::Args)]
pub struct Args {
    /// Only the checks that need no image: formatting, lints and `cargo test`.
    #[arg(long)]
    pub no_image: bool,
}

pub fn run(args: Args) -> Result<()> {
    let sh = Shell::new()?;
    let mut timings = Vec::new();
    let mut step = |name: &str, f: &dyn Fn() -> Result<()>| -> Result<()> {
        eprintln!("==> {name}");
        let start = Instant::now();
        f().with_context(|| format!("CI step `{name}` failed"))?;
        timings.push((name.to_owned(), start.elapsed()));
        Ok(())
    };
    step("cargo fmt --check", &|| {
        Ok(cmd!(sh, "cargo fmt --all -- --check").run()?)
    })?;
    step("cargo clippy", &|| {
        Ok(cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run()?)
    })?;
    step("cargo test", &|| {
        Ok(cmd!(sh, "cargo test --workspace").run()?)
    })?;
    step("cargo xtask fuzz --seconds 30", &|| {
        Ok(cmd!(sh, "cargo xtask fuzz --seconds 30").run()?)
    })?;
    if !args.no_image {
        step("cargo xtask image", &|| {
            Ok(cmd!(sh, "cargo xtask image").run()?)
        })?;
        // The default build leaves its customised root file system in its work directory.
        step("scrub inspection of the built root", &|| {
            Ok(cmd!(sh, "cargo test -p xtask a_built_root -- --ignored").run()?)
        })?;
        step(
            "cargo xtask e2e",
            &|| Ok(cmd!(sh, "cargo xtask e2e").run()?),
        )?;
        step("cargo xtask e2e --self-test", &|| {
            Ok(cmd!(sh, "cargo xtask e2e --self-test").run()?)
        })?;
        step("cargo xtask image --target aarch64 | --target rpi", &|| {
            arm_images_in_parallel(&sh)
        })?;
        step("cargo xtask e2e --target aarch64", &|| {
            Ok(cmd!(sh, "cargo xtask e2e --target aarch64").run()?)
        })?;
        step("Pi image layout test", &|| {
            Ok(cmd!(sh, "cargo test -p xtask the_built_pi_image -- --ignored").run()?)
        })?;
        step("cargo xtask e2e --target rpi (boot to SSH)", &|| {
            let probes = RPI_PROBES.iter().flat_map(|p| ["--probe", p]);
            Ok(cmd!(sh, "cargo xtask e2e --target rpi --no-peer {probes...}").run()?)
        })?;
        step("sha256sum -c SHA256SUMS", &|| {
            let _out = sh.push_dir("out");
            Ok(cmd!(sh, "sha256sum -c SHA256SUMS").run()?)
        })?;
    }
    eprintln!("\nCI passed:");
    for (name, took) in &timings {
        eprintln!("  {name:<24} {:>7.1} s", took.as_secs_f64());
    }
    Ok(())
}

/// Builds the aarch64 and the Pi image at the same time. Their root file systems are installed
/// under qemu-user, where dpkg and the package scripts keep one core busy each, so on a
/// two-core machine the pair takes little longer than the slower one. The Pi build's output
/// goes to a log file, printed when it fails.
fn arm_images_in_parallel(sh: &Shell) -> Result<()> {
    std::fs::create_dir_all("out")?;
    let log_path = std::path::Path::new("out/ci-image-rpi.log");
    let log = std::fs::File::create(log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!(
        "$ cargo xtask image --target rpi  (in the background, output in {})",
        log_path.display()
    );
    let mut rpi = Command::new(cargo)
        .args(["xtask", "image", "--target", "rpi"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start `cargo xtask image --target rpi`")?;
    let aarch64 = cmd!(sh, "cargo xtask image --target aarch64").run();
    let rpi_status = rpi.wait()?;
    let rpi_output = std::fs::read_to_string(log_path).unwrap_or_default();
    let tail: Vec<&str> = rpi_output.lines().rev().take(30).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    eprintln!(
        "--- cargo xtask image --target rpi (last lines) ---\n{}",
        tail.join("\n")
    );
    aarch64?;
    ensure!(
        rpi_status.success(),
        "`cargo xtask image --target rpi` failed ({rpi_status}); full output in {}",
        log_path.display()
    );
    Ok(())
}
