//! `cargo xtask e2e`: boot the published artifact (`out/<name>-<target>.qcow2`, the Pi's
//! `.img.xz`) with the suite's SSH key added to the `user-data` on its own CIDATA volume the
//! way a person adds theirs (`e2e/seed.rs`), twice through the real firmware on a private
//! network, and run the probe suite (`tests/e2e`) against it. Exit status 0 only when every
//! probe passes.
//!
//! `--self-test` instead builds a variant with the protections turned off and checks that the
//! probes guarding them fail (see `e2e/self_test.rs`).

mod boot;
mod expect;
mod fakes;
mod repository;
mod seed;
pub(crate) mod self_test;
#[path = "../../tests/e2e/testbed.rs"]
mod testbed;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

use crate::image::host_tools::{self, Purpose};
use crate::image::{self, BuildOptions, Format, Target};
use crate::qemu::Machine;

#[derive(clap::Args)]
pub struct Args {
    /// Target machine: selects image/targets/<TARGET>.toml and qemu/<TARGET>.toml.
    #[arg(long, value_enum, default_value_t)]
    pub target: Target,
    /// Directory for images, reports and serial logs.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Boot this artifact instead of building (or reusing) the published
    /// <out>/<name>-<target>.qcow2 (or .img.xz); it is keyed the same way, through its CIDATA
    /// user-data. With --self-test: boot this image
    /// instead of building the weakened variant (it must authorise <out>/e2e/id_ed25519.pub).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Check the suite itself: build a variant with the protections off (through the image
    /// configuration) and require the probes guarding them to fail.
    #[arg(long)]
    pub self_test: bool,
    /// Run only this probe (repeatable; `cargo test --test e2e -- --list` lists them). With
    /// --self-test, only these of the self-test's cases are run and judged.
    #[arg(long = "probe")]
    pub probes: Vec<String>,
    /// Skip the second boot (the uniqueness probe then fails): quicker while developing.
    #[arg(long)]
    pub no_peer: bool,
    /// Do not run this probe (repeatable); the report and the summary name it as skipped. Not
    /// with --self-test, whose cases are chosen with --probe. Skipping
    /// first_boot_identity_unique also skips the second boot.
    #[arg(long = "skip", conflicts_with = "self_test")]
    pub skip: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let sh = Shell::new()?;
    let root = crate::project_root();
    sh.change_dir(&root);
    // An image build checks the build tools itself (`image::build`).
    host_tools::ensure_for(&image::load_target(args.target)?, Purpose::Probe)?;
    let machine = Machine::load(&root, args.target)?;
    let key = test_key(&sh, &args.out)?;

    // The suite's settings: the published definition plus tests/e2e/variants/suite.toml (the
    // short ban, which the seed carries to the published artifact). The expectations come
    // from it.
    let suite_overlay = root.join("tests/e2e/variants/suite.toml");
    let definition = image::load_definition(std::slice::from_ref(&suite_overlay), args.target)?;
    let users = &definition.image.users;
    if args.self_test {
        self_test::check_builder_refusals(args.target, &root, &suite_overlay)?;
    }
    check_probe_names(&sh, args.probes.iter().chain(&args.skip))?;
    let fakes_binary = fakes::build(&sh)?;
    let label = if args.self_test {
        format!("{}-self-test", args.target)
    } else {
        args.target.to_string()
    };
    let work = args.out.join(format!("e2e-{label}-work"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let work = std::fs::canonicalize(&work)?;

    let only = if args.self_test && args.probes.is_empty() {
        self_test::probes()
    } else {
        args.probes.clone()
    };
    let selected =
        |name: &str| self_test::selected(&only, name) && !args.skip.iter().any(|s| s == name);
    let weakened = root.join("tests/e2e/variants/weakened.toml");
    let config_overlays = if args.self_test {
        vec![suite_overlay, weakened]
    } else {
        vec![suite_overlay]
    };
    let disk = if args.self_test {
        let image = match &args.image {
            Some(image) => image.clone(),
            None => build_weakened(&args, config_overlays.clone(), &key)?,
        };
        let image = if selected(self_test::UNIQUENESS_PROBE) {
            self_test::bake_gateway_token(&sh, &image, &work, &users.service.name)?
        } else {
            image
        };
        boot::Disk {
            shown: image.clone(),
            boot: image.clone(),
            raw: image,
            booted: None,
        }
    } else {
        let artifact = match &args.image {
            Some(image) => image.clone(),
            None => build_published(&args, &definition)?,
        };
        let seed = seed::SuiteSeed::new(&key.with_extension("pub"), &definition)?;
        eprintln!(
            "==> keying {} through its CIDATA user-data",
            artifact.display()
        );
        let seeded = seed::seed(&sh, &artifact, &work, &seed)?;
        boot::Disk {
            shown: artifact,
            boot: seeded.disk,
            raw: seeded.raw,
            booted: Some(seeded.record),
        }
    };

    // The gateway package the build wrote beside the image, for the update probe.
    let repository = if selected(repository::PROBE) {
        let dir = if args.self_test {
            weakened_out(&args)
        } else {
            args.out.clone()
        };
        match repository::gateway_package(&dir, &definition) {
            Some(deb) => {
                eprintln!("==> the gateway's apt repositories, from {}", deb.display());
                let files = SocketAddrV4::new(boot::FAKES, fakes::FILES_PORT);
                Some(repository::prepare(
                    &sh,
                    &work,
                    &deb,
                    args.target,
                    &config_overlays,
                    files,
                    args.self_test,
                )?)
            }
            None => {
                eprintln!(
                    "note: no gateway package in {}: {} will fail",
                    dir.display(),
                    repository::PROBE
                );
                None
            }
        }
    } else {
        None
    };

    let plan = boot::Plan {
        target: args.target.name(),
        machine: &machine,
        disk: &disk,
        work,
        serial_log: args.out.join(format!("e2e-{label}-serial.log")),
        report: args.out.join(format!("e2e-{label}.json")),
        ssh_key: &key,
        admin_user: users.admin.name.clone(),
        service_user: users.service.name.clone(),
        expect: expect::expectations(&definition)?,
        boot_peer: !args.no_peer && selected(self_test::UNIQUENESS_PROBE),
        fakes_binary: &fakes_binary,
        prepare: if args.self_test {
            self_test::RUNTIME_WEAKENINGS
        } else {
            &[]
        },
        afterwards: if args.self_test {
            self_test::afterwards(&args.probes)
        } else {
            Vec::new()
        },
        only,
        skip: args.skip.clone(),
        repository,
    };
    let outcome = boot::boot_and_probe(&sh, &plan)?;
    let report = &outcome.report;
    let skipped = if report.skipped.is_empty() {
        String::new()
    } else {
        format!(
            ", {} skipped ({})",
            report.skipped.len(),
            report.skipped.join(", ")
        )
    };
    eprintln!(
        "\n{}: power-on to SSH login {:.1} s, to gateway /healthz {}; {} probes passed, {} failed{skipped} ({:.0} s of probing); whole run {:.0} s",
        disk.shown.display(),
        outcome.guest.ssh_ready_s,
        outcome.guest.gateway_ready_s.map_or("never".to_owned(), |s| format!("{s:.1} s")),
        report.passed,
        report.failed,
        report.duration_s,
        started.elapsed().as_secs_f64()
    );
    if args.self_test {
        return self_test::judge(report, &outcome.afterwards, &args.probes);
    }
    let failed: Vec<&str> = report
        .probes
        .iter()
        .filter(|p| !p.passed)
        .map(|p| p.name.as_str())
        .collect();
    ensure!(
        failed.is_empty(),
        "probes failed: {} (serial console: {})",
        failed.join(", "),
        plan.serial_log.display()
    );
    Ok(())
}

/// Fails before any build or boot when `--probe` or `--skip` names no probe of the suite (as
/// the probe binary's `--list` prints them), so a typo costs seconds, not a boot.
fn check_probe_names<'a>(sh: &Shell, names: impl Iterator<Item = &'a String>) -> Result<()> {
    let names: Vec<&String> = names.collect();
    if names.is_empty() {
        return Ok(());
    }
    let listed = cmd!(
        sh,
        "cargo test --quiet --package clawfort --test e2e -- --list"
    )
    .read()?;
    let unknown: Vec<&str> = names
        .iter()
        .filter(|name| !listed.lines().any(|probe| probe == name.as_str()))
        .map(|name| name.as_str())
        .collect();
    ensure!(
        unknown.is_empty(),
        "no probe named {}; the suite's probes are: {}",
        unknown.join(", "),
        listed.lines().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// The suite's SSH key pair, made once per output directory; never committed (out/ is ignored).
/// Under a lock: CI starts the suite and the self-test at the same moment, and on a fresh
/// checkout both would make the key (ssh-keygen then asks whether to overwrite, and fails).
fn test_key(sh: &Shell, out: &Path) -> Result<PathBuf> {
    let dir = out.join("e2e");
    let key = dir.join("id_ed25519");
    let _lock = image::cache::DirLock::acquire_named(&dir, ".id_ed25519.lock")?;
    if !key.exists() {
        cmd!(
            sh,
            "ssh-keygen -q -t ed25519 -N '' -C clawfort-e2e -f {key}"
        )
        .run()?;
    }
    Ok(key)
}

/// Builds (or reuses, when nothing changed: under two seconds) the published artifact exactly
/// as `cargo xtask image --target <target> --out <out>` does, so the suite never probes an
/// artifact older than the checkout, and returns the one a user downloads.
fn build_published(args: &Args, definition: &clawfort_imagedef::LoadedConfig) -> Result<PathBuf> {
    let mut options = BuildOptions::for_target(args.target);
    options.out = args.out.clone();
    eprintln!("==> building (or reusing) the published image");
    image::build(&options).context("building the published image")?;
    seed::published_artifact(&args.out, definition, args.target)
}

/// Where the weakened image's build writes its artifacts.
fn weakened_out(args: &Args) -> PathBuf {
    args.out.join("e2e").join("weakened")
}

/// Builds (or reuses, when nothing changed) the self-test's weakened raw image, authorising
/// the suite's key for admin at build time. It keeps its own stage directory so it stays warm.
fn build_weakened(args: &Args, overlays: Vec<PathBuf>, key: &Path) -> Result<PathBuf> {
    let mut options = BuildOptions::for_target(args.target);
    options.config_overlays = overlays;
    options.authorized_keys = vec![key.with_extension("pub")];
    options.out = weakened_out(args);
    options.work_dir =
        Some(crate::project_root().join(format!("target/image/{}-e2e-weakened", args.target)));
    // Raw boots fastest (no decompression under TCG).
    options.formats = vec![Format::Raw];
    eprintln!("==> building the weakened image");
    let artifacts = image::build(&options).context("building the e2e weakened image")?;
    artifacts
        .raw
        .context("the image build produced no raw disk")
}
