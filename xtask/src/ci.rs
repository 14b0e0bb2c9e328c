//! `cargo xtask ci`: everything CI checks, in the order that fails fastest. `.ci/run` and the
//! README's test command both call this, so a developer runs exactly what CI runs.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

use crate::image::layout::ArtifactNames;
use crate::image::sbom::validator;
use crate::image::Target;

/// The Pi image's boot in CI: it reaches SSH as the admin (the suite's readiness check) and these
/// probes run on it. The Pi image is the aarch64 appliance with another disk layout and kernel,
/// and the full suite already ran on aarch64; these cover what the Pi boot can change: the
/// first-boot units, the root growing on its MBR disk, the firewall and fail2ban's bans (the
/// generic kernel's nftables modules), the gateway, and raspi-firmware's kernel hook.
const RPI_PROBES: &[&str] = &[
    "root_fs_grown_to_disk",
    "nftables_input_policy_drop",
    "fail2ban_bans_and_unbans",
    "gateway_healthz_ok",
    "gateway_listens_on_loopback_only",
    "ssh_offers_only_publickey",
    "kernel_updates_reach_boot_loader",
];

/// Probes the aarch64 run leaves to `--full`, each with why the rest of the run already covers
/// it. What the aarch64 appliance can change (its firmware and kernel, the cross-built gateway,
/// the arm64 sandbox image, Landlock, seccomp, AppArmor and audit under another syscall table)
/// is probed there every time. These check the image's data through programs that behave the
/// same on every architecture, so the x86_64 run's pass (and the Pi's arm64 ban) proves them;
/// together with the second boot they were 38% of the aarch64 run (about 280 s of 745).
const AARCH64_LEFT_TO_FULL: &[(&str, &str)] = &[
    (
        "tcp_port_scan",
        "the ruleset is the same data on every target: x86_64 scans it, and on an arm64 kernel \
         nftables_input_policy_drop reads it loaded and the Pi's fail2ban ban is enforced by it",
    ),
    ("udp_port_scan", "the same ruleset, scanned on x86_64"),
    (
        "fail2ban_bans_and_unbans",
        "run on the Pi, the same arm64 user space, on the same run",
    ),
    (
        "security_events_reach_owner",
        "the gateway's feed of fail2ban's bans, arch-independent code run on x86_64; the \
         gateway's own arm64 build is proven by agent_round_trip",
    ),
    (
        "integrity_baseline_and_check",
        "AIDE's configuration and timers are the same data; checked on x86_64",
    ),
    (
        "egress_proxy_allow_list",
        "the proxy's allow-list logic is the gateway's code, checked on x86_64; the kernel's \
         part (the service user's cgroup egress filter) is service_user_egress_confined, run here",
    ),
    (
        "first_boot_identity_unique",
        "a second emulated boot for the first-boot scripts, which are the same on every target",
    ),
];

/// Free space the image steps need on the checkout's file system, measured: the peak of a cold
/// run (target/debug, the fuzz build, every stage directory alive at once, the artifacts and
/// the e2e overlays, with the pruning below) plus a margin. Checked before the first image so a
/// small disk fails in seconds with a clear message, not 40 minutes in with ENOSPC from mkfs.
const IMAGE_STEPS_NEED_GIB: u64 = 14;

/// Below this much free space a finished target's stage directories and probe overlays are
/// removed before the next target's images: what the ARM steps still write (their stages,
/// artifacts, e2e images and overlays) is about 10 GiB. Above it they stay, so a developer's
/// next `cargo xtask image` is still warm.
const PRUNE_BELOW_GIB: f64 = 12.0;

#[derive(clap::Args)]
pub struct Args {
    /// Only the checks that need no image: formatting, lints and `cargo test`.
    #[arg(long)]
    pub no_image: bool,
    /// Every probe on aarch64 too, the second boot included (about 5 minutes more). By default
    /// the aarch64 run leaves out the probes whose subject is the same on every architecture
    /// and already proven on x86_64 in the same run; the summary names them.
    #[arg(long, conflicts_with = "no_image")]
    pub full: bool,
}

pub fn run(args: Args) -> Result<()> {
    let sh = Shell::new()?;
    let mut timings = Vec::new();
    let mut step = |name: &str, f: &dyn Fn() -> Result<()>| -> Result<()> {
        eprintln!("==> {name}");
        let start = Instant::now();
        f().with_context(|| format!("CI step `{name}` failed"))?;
        timings.push((name.to_owned(), start.elapsed(), free_gib(Path::new("."))));
        Ok(())
    };
    step("cargo fmt --check", &|| {
        Ok(cmd!(sh, "cargo fmt --all -- --check").run()?)
    })?;
    // Emulated dpkg is most of a cold ARM build and needs only the image definition, so the
    // ARM targets' cached stages are made from here on, beside every x86_64 step, at the lowest
    // CPU priority: they take the time those steps leave idle (the .deb downloads of a cold
    // cache, the tests' waits, guests waiting) and the ARM steps below then find them ready.
    // Started before the compiles, not after: a cold run measured them still 294 s short of
    // done when the x86_64 steps ended. The ARM gateway (one triple for both targets) is
    // cross-built beside them, in its own target directory, so it never holds up the x86_64
    // builds.
    let warming = if args.no_image {
        None
    } else {
        let free = free_gib(Path::new("."))?;
        eprintln!("==> {free:.1} GiB free on the checkout's file system");
        ensure!(
            free >= IMAGE_STEPS_NEED_GIB as f64,
            "only {free:.1} GiB free on the checkout's file system; the image steps need about \
             {IMAGE_STEPS_NEED_GIB} GiB (three targets' images, the self-test's weakened image and the \
             Rust builds). Free some space (an old checkout's target/ and out/ go first) or run \
             `cargo xtask ci --no-image` for the checks that need no image"
        );
        Some(Warming::start(&[
            ("cached stages of aarch64", "aarch64", Some("--cache-only")),
            ("cached stages of rpi", "rpi", Some("--cache-only")),
            (
                "gateway for aarch64 and rpi",
                "aarch64",
                Some("--gateway-only"),
            ),
        ])?)
    };
    step("cargo clippy", &|| {
        cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run()?;
        // The probe binary (`test = false`) is not among `--all-targets`.
        Ok(cmd!(sh, "cargo clippy -p clawfort --test e2e -- -D warnings").run()?)
    })?;
    step("cargo test", &|| {
        test_host(&sh)?;
        Ok(cmd!(sh, "cargo test --workspace").run()?)
    })?;
    if args.no_image {
        step("cargo xtask fuzz --seconds 30 --sanitizer none", &|| {
            Ok(cmd!(sh, "cargo xtask fuzz --seconds 30 --sanitizer none").run()?)
        })?;
    } else {
        // The image build waits on downloads and dpkg much of its time, so the fuzzers
        // (compiling, then one core per target) run beside it rather than before it.
        step("cargo xtask image | cargo xtask fuzz --seconds 30", &|| {
            beside(
                cmd!(sh, "cargo xtask image"),
                cargo(&["xtask", "fuzz", "--seconds", "30", "--sanitizer", "none"]),
                "cargo xtask fuzz --seconds 30 --sanitizer none",
                "out/ci-fuzz.log",
            )
        })?;
        step("SPDX validation of the x86_64 SBOM", &|| {
            validate_sboms(&sh, &[Target::X86_64])
        })?;
        // The default build leaves its customised root file system in its work directory.
        step("scrub inspection of the built root", &|| {
            Ok(cmd!(sh, "cargo test -p xtask a_built_root -- --ignored").run()?)
        })?;
        // The suite and the self-test each boot their own guests in their own network
        // namespace, and each spends much of its time waiting (bans, timeouts, the guest's own
        // work), so they run at the same time: measured, 966 s for both against 1918 s one
        // after the other (BENCHMARKS.md).
        step("cargo xtask e2e --self-test | cargo xtask e2e", &|| {
            beside(
                cmd!(sh, "cargo xtask e2e --self-test"),
                cargo(&["xtask", "e2e"]),
                "cargo xtask e2e",
                "out/ci-e2e-x86_64.log",
            )
        })?;
        step(
            "x86_64 work directories (pruned when space is short)",
            &|| {
                prune(&[
                    "target/image/x86_64",
                    "target/image/x86_64-e2e-weakened",
                    "out/e2e-x86_64-work",
                    "out/e2e-x86_64-self-test-work",
                ])
            },
        )?;
        let warming = warming.as_ref().expect("started with the image steps");
        step(
            "ARM cached stages and gateway (made beside the x86_64 steps)",
            &|| warming.wait(),
        )?;
        step("cargo xtask image --target aarch64", &|| {
            Ok(cmd!(sh, "cargo xtask image --target aarch64").run()?)
        })?;
        // The Pi image's own work is mostly xz on every core, which the aarch64 suite's
        // waits leave idle; at nice 19 it barely touches the guest under test.
        let pi_image = Warming::start(&[("Pi image", "rpi", None)])?;
        let left_out: &[(&str, &str)] = if args.full { &[] } else { AARCH64_LEFT_TO_FULL };
        let aarch64_step = if args.full {
            "cargo xtask e2e --target aarch64"
        } else {
            "cargo xtask e2e --target aarch64 (--skip: see below)"
        };
        step(aarch64_step, &|| {
            for (probe, why) in left_out {
                eprintln!("    skipped unless --full: {probe}: {why}");
            }
            let skips = left_out.iter().flat_map(|(probe, _)| ["--skip", probe]);
            Ok(cmd!(sh, "cargo xtask e2e --target aarch64 {skips...}").run()?)
        })?;
        step(
            "aarch64 work directories (pruned when space is short)",
            &|| prune(&["target/image/aarch64", "out/e2e-aarch64-work"]),
        )?;
        step(
            "cargo xtask image --target rpi (made beside the aarch64 suite)",
            &|| pi_image.wait(),
        )?;
        step("SPDX validation of the aarch64 and rpi SBOMs", &|| {
            validate_sboms(&sh, &[Target::Aarch64, Target::Rpi])
        })?;
        // The layout test and the checksums read the artifacts while the Pi boots from its
        // own decompressed copy; every probe run has ended, so the sums still prove no test
        // changed an artifact.
        step(
            "cargo xtask e2e --target rpi (boot to SSH) | Pi layout test, sha256sum -c",
            &|| {
                let probes = RPI_PROBES.iter().flat_map(|p| ["--probe", p]);
                // tidy: spawn (runs beside the Pi boot through `beside`, its output into a file)
                let mut checks = Command::new("sh");
                checks.args([
                    "-c",
                    "cargo test -p xtask the_built_pi_image -- --ignored && cd out && \
                     sha256sum -c SHA256SUMS",
                ]);
                beside(
                    cmd!(sh, "cargo xtask e2e --target rpi --no-peer {probes...}"),
                    checks,
                    "the Pi layout test and sha256sum -c SHA256SUMS",
                    "out/ci-pi-checks.log",
                )
            },
        )?;
    }
    eprintln!("\nCI passed (time, then the space left after the step):");
    for (name, took, free) in &timings {
        let free = free
            .as_ref()
            .map_or_else(|_| "?".to_owned(), |gib| format!("{gib:.1} GiB"));
        eprintln!("  {name:<52} {:>7.1} s {free:>10}", took.as_secs_f64());
    }
    if !args.full && !args.no_image {
        eprintln!(
            "  (on aarch64 {} probes were left to `cargo xtask ci --full`: {})",
            AARCH64_LEFT_TO_FULL.len(),
            AARCH64_LEFT_TO_FULL
                .iter()
                .map(|(probe, _)| *probe)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Free space, in GiB, for an unprivileged writer on the file system holding `path`.
fn free_gib(path: &Path) -> Result<f64> {
    Ok(crate::image::free_bytes(path)? as f64 / (1u64 << 30) as f64)
}

/// Removes directories the rest of the run no longer reads when free space is below
/// [`PRUNE_BELOW_GIB`], saying what it freed. They are caches: a later build remakes them.
fn prune(dirs: &[&str]) -> Result<()> {
    prune_below(dirs, PRUNE_BELOW_GIB)
}

fn prune_below(dirs: &[&str], below_gib: f64) -> Result<()> {
    let before = free_gib(Path::new("."))?;
    if before >= below_gib {
        eprintln!("{before:.1} GiB free: kept (pruned below {below_gib} GiB)");
        return Ok(());
    }
    for dir in dirs {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => eprintln!("removed {dir}"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {dir}")),
        }
    }
    eprintln!("freed {:.1} GiB", free_gib(Path::new("."))? - before);
    Ok(())
}

/// `cargo <args>`, for [`beside`].
fn cargo(args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // tidy: spawn (runs beside a foreground step through `beside`, its output into a file)
    let mut command = Command::new(cargo);
    command.args(args);
    command
}

/// Runs `foreground` with its output on the terminal and, at the same time, `background`
/// (described as `shown`) with its output in `log` (its last lines printed when both are done,
/// all of it kept when it fails). Fails when either fails.
fn beside(
    foreground: xshell::Cmd<'_>,
    mut background: Command,
    shown: &str,
    log: &str,
) -> Result<()> {
    std::fs::create_dir_all("out")?;
    let log_path = std::path::Path::new(log);
    let file = std::fs::File::create(log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    eprintln!("$ {shown}  (in the background, output in {log})");
    // tidy: spawn (runs beside the foreground command, its output into a file; waited for after it)
    let mut child = background
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let front = foreground.run();
    let status = child.wait()?;
    eprintln!("--- {shown} (last lines) ---\n{}", log_tail(log_path));
    front?;
    ensure!(
        status.success(),
        "{shown} failed ({status}); full output in {log}"
    );
    Ok(())
}

/// The last 30 lines of a background job's log, shown when it ends (all of it stays in the file).
fn log_tail(log: &Path) -> String {
    let output = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `cargo xtask image --target <t>` (with `--cache-only`, `--gateway-only` or neither) for
/// some targets, running at nice 19 from [`Warming::start`] until [`Warming::wait`]; dropped
/// earlier (a step failed), it stops them.
struct Warming {
    /// What it makes, log file and the process, which leads its own process group.
    children: std::cell::RefCell<Vec<(String, String, Child)>>,
}

impl Warming {
    /// Starts each `(what, target, mode)`: `cargo xtask image --target <target> [<mode>]`.
    fn start(jobs: &[(&str, &str, Option<&str>)]) -> Result<Self> {
        std::fs::create_dir_all("out")?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let warming = Self {
            children: Default::default(),
        };
        for (what, target, mode) in jobs {
            let log = format!(
                "out/ci-{}-{target}.log",
                mode.map_or("image", |mode| mode.trim_start_matches("--"))
            );
            let file =
                std::fs::File::create(&log).with_context(|| format!("cannot create {log}"))?;
            let mode: Vec<&str> = mode.iter().copied().collect();
            eprintln!(
                "$ nice -n 19 cargo xtask image --target {target} {}  (in the background, \
                 output in {log})",
                mode.join(" ")
            );
            // tidy: spawn (runs beside the other steps at nice 19; waited for, or stopped with its group)
            let child = Command::new("nice")
                .args(["-n", "19", &cargo, "xtask", "image", "--target", target])
                .args(&mode)
                .stdout(file.try_clone()?)
                .stderr(file)
                .process_group(0)
                .spawn()
                .with_context(|| format!("cannot start the {what}"))?;
            warming
                .children
                .borrow_mut()
                .push(((*what).to_owned(), log, child));
        }
        Ok(warming)
    }

    /// Waits for every job; a failure names it and shows the end of its log.
    fn wait(&self) -> Result<()> {
        let mut failed = Vec::new();
        for (what, log, mut child) in self.children.take() {
            let status = child.wait()?;
            if !status.success() {
                let tail = log_tail(Path::new(&log));
                eprintln!("--- {what} ({status}), last lines ---\n{tail}");
                failed.push(format!("the {what} (full output in {log})"));
            }
        }
        ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
        Ok(())
    }
}

impl Drop for Warming {
    fn drop(&mut self) {
        for (what, _, child) in self.children.get_mut() {
            if let Ok(None) = child.try_wait() {
                eprintln!("stopping the {what}");
                if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ =
                        rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
                }
                let _ = child.wait();
            }
        }
    }
}

/// Validates the SBOMs of `targets`' images in `out/` with the SPDX project's validator
/// (`image/sbom/validator.rs`), installing it first when it is missing.
fn validate_sboms(sh: &Shell, targets: &[Target]) -> Result<()> {
    crate::image::host_tools::ensure(crate::image::host_tools::SBOM_TOOLS)?;
    let repo = crate::project_root();
    let pyspdxtools = validator::ensure(sh, &repo)?;
    for target in targets {
        let names = ArtifactNames::new(repo.join("out"), "clawfort", *target);
        validator::validate(sh, &pyspdxtools, &names.sbom())?;
    }
    Ok(())
}

/// The test user `tests/sandbox.rs` starts its rootless Docker daemon as.
const SANDBOX_TEST_USER: &str = "clawfort-sbx-test";

/// Readies the host for the tests that need more than Rust: the Docker sandbox test (its
/// packages, and its unprivileged user, whose subordinate id ranges `useradd` adds), the
/// signing test (ssh-keygen) and the apt repository's (apt-utils, sqop). Not root: those tests
/// skip with their reason printed.
fn test_host(sh: &Shell) -> Result<()> {
    if !crate::image::host_tools::is_root() {
        return Ok(());
    }
    crate::image::host_tools::ensure(crate::image::host_tools::SANDBOX_TEST_TOOLS)?;
    // The signing test (`image/sign.rs`) runs ssh-keygen.
    crate::image::host_tools::ensure(crate::image::host_tools::SIGN_TOOLS)?;
    // The apt repository's test (`repo.rs`) builds, signs and reads back a repository.
    crate::image::host_tools::ensure(crate::image::host_tools::REPO_TOOLS)?;
    // The SBOM writer's test runs the SPDX validator on its sample, and the image steps on
    // the images' SBOMs.
    crate::image::host_tools::ensure(crate::image::host_tools::SBOM_TOOLS)?;
    validator::ensure(sh, &crate::project_root())?;
    let exists = cmd!(sh, "id -u {SANDBOX_TEST_USER}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if !exists {
        cmd!(
            sh,
            "useradd --create-home --shell /usr/sbin/nologin {SANDBOX_TEST_USER}"
        )
        .run()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_removes_only_when_space_is_short_and_skips_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage");
        std::fs::create_dir_all(stage.join("rootfs/etc")).unwrap();
        std::fs::write(stage.join("rootfs/etc/hostname"), "x").unwrap();
        let stage = stage.to_str().unwrap();
        let missing = dir.path().join("missing");
        let missing = missing.to_str().unwrap();

        prune_below(&[stage, missing], 0.0).unwrap();
        assert!(Path::new(stage).exists(), "kept when space is plentiful");

        prune_below(&[stage, missing], f64::MAX).unwrap();
        assert!(!Path::new(stage).exists(), "removed when space is short");
    }

    /// Every probe CI names is one of the suite's, so a renamed probe cannot silently run
    /// everywhere again (or nowhere on the Pi); the aarch64 run still boots a guest that the
    /// architecture-sensitive probes check.
    #[test]
    fn the_probes_ci_names_are_the_suites() {
        let registry = crate::e2e::self_test::tests::registry();
        for name in AARCH64_LEFT_TO_FULL
            .iter()
            .map(|(name, _)| name)
            .chain(RPI_PROBES)
        {
            assert!(
                registry.iter().any(|probe| probe == name),
                "{name} is not a probe"
            );
        }
        for kept in [
            "agent_round_trip",
            "rogue_host_commands_contained",
            "apparmor_confines_sandbox",
        ] {
            assert!(!AARCH64_LEFT_TO_FULL.iter().any(|(name, _)| *name == kept));
        }
    }
}
