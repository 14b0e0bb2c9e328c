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
    if args.no_image {
        step("cargo xtask fuzz --seconds 30", &|| {
            Ok(cmd!(sh, "cargo xtask fuzz --seconds 30").run()?)
        })?;
    } else {
        // The image build waits on downloads and dpkg much of its time, so the fuzzers
        // (compiling, then one core per target) run beside it rather than before it.
        step("cargo xtask image | cargo xtask fuzz --seconds 30", &|| {
            beside(
                &sh,
                &["xtask", "image"],
                &["xtask", "fuzz", "--seconds", "30"],
                "out/ci-fuzz.log",
            )
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
            // Under qemu-user, dpkg and the package scripts keep one core busy each, so on
            // a two-core machine the pair takes little longer than the slower one.
            beside(
                &sh,
                &["xtask", "image", "--target", "aarch64"],
                &["xtask", "image", "--target", "rpi"],
                "out/ci-image-rpi.log",
            )
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

/// Runs `cargo <foreground>` with its output on the terminal and, at the same time,
/// `cargo <background>` with its output in `log` (its last lines printed when both are done,
/// all of it kept when it fails). Fails when either fails.
fn beside(sh: &Shell, foreground: &[&str], background: &[&str], log: &str) -> Result<()> {
    std::fs::create_dir_all("out")?;
    let log_path = std::path::Path::new(log);
    let file = std::fs::File::create(log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let shown = format!("cargo {}", background.join(" "));
    eprintln!("$ {shown}  (in the background, output in {log})");
    let mut child = Command::new(cargo)
        .args(background)
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let front = cmd!(sh, "cargo {foreground...}").run();
    let status = child.wait()?;
    let output = std::fs::read_to_string(log_path).unwrap_or_default();
    let tail: Vec<&str> = output.lines().rev().take(30).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    eprintln!("--- {shown} (last lines) ---\n{}", tail.join("\n"));
    front?;
    ensure!(
        status.success(),
        "`{shown}` failed ({status}); full output in {log}"
    );
    Ok(())
}
