//! `cargo xtask <command>`: the project's build machinery, in plain Rust (matklad's xtask
//! convention). One module per task; `main` only parses the command line and dispatches.

mod bench;
mod ci;
mod doctor;
mod e2e;
mod fuzz;
mod image;
mod qemu;
mod repo;
mod run;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, boot and probe the clawfort appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the appliance disk image from image/*.toml and overlays/.
    Image(image::Args),
    /// Boot a built image under QEMU with SSH forwarded to a loopback port.
    Run(run::Args),
    /// Boot the published image, keyed through its CIDATA drive, and run the security probe
    /// suite against it.
    E2e(e2e::Args),
    /// Run every check CI runs: fmt, clippy, cargo test, then build, boot and probe the image.
    Ci(ci::Args),
    /// Run a benchmark and print its figures.
    Bench(bench::Args),
    /// Check a built image's root file system as a cloud marketplace would: no history, keys,
    /// logs or passwords; cloud-init, the firewall and automatic updates on.
    CheckImage(image::check::Args),
    /// List the host tools a target's build and boot suite need, and which this host lacks.
    Doctor(doctor::Args),
    /// Run every fuzz target for a bounded time.
    Fuzz(fuzz::Args),
    /// Make a signed apt repository of the gateway's .deb packages, for the appliances'
    /// unattended upgrades; or its signing key.
    Repo(repo::Args),
}

fn main() -> anyhow::Result<ExitCode> {
    let done = |()| ExitCode::SUCCESS;
    match Cli::parse().command {
        Command::Image(args) => image::run(args).map(done),
        Command::Run(args) => run::run(args).map(done),
        Command::E2e(args) => e2e::run(args).map(done),
        Command::Ci(args) => ci::run(args).map(done),
        Command::Bench(args) => bench::run(args),
        Command::CheckImage(args) => image::check::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Fuzz(args) => fuzz::run(args).map(done),
        Command::Repo(args) => repo::run(args).map(done),
    }
}

/// The repository root, which holds `image/`, `overlays/`, `qemu/`, `tests/` and `out/`:
/// xtask lives one level below it.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_owned()
}
