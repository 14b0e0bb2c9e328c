//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs every fuzz target (as `cargo fuzz list`
//! names them) for N seconds each, and fails on the first crash.
//!
//! cargo-fuzz builds with nightly-only flags; `RUSTC_BOOTSTRAP=1` lets the stable toolchain
//! accept them, so no nightly is needed. cargo-fuzz itself is installed (`cargo install
//! cargo-fuzz --locked`) when missing, so a fresh CI machine needs nothing by hand. Each run
//! starts from the kept seeds in `fuzz/seeds/<target>` (in git: valid inputs of each format,
//! so even a 30 s run begins past the parsers' first checks) plus what earlier runs on this
//! machine found in `fuzz/corpus/<target>` (ignored by git, where new inputs are written); a
//! crashing input lands in `fuzz/artifacts/<target>`.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u32,
    /// The sanitizer the targets are built with. `address` (the default) also catches memory
    /// errors in unsafe code, the dependencies' included; `none` builds in about half the CPU
    /// time (BENCHMARKS.md), which CI takes: the targets' own code is safe Rust, where a bug is
    /// a panic, which libFuzzer reports either way.
    #[arg(long, value_enum, default_value_t = Sanitizer::Address)]
    pub sanitizer: Sanitizer,
    /// Targets to run (default: every target `cargo fuzz list` names).
    pub targets: Vec<String>,
}

/// cargo-fuzz's `--sanitizer` choices that `cargo xtask fuzz` offers.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Sanitizer {
    Address,
    None,
}

impl Sanitizer {
    fn flag(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::None => "none",
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let sh = Shell::new()?;
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives one level below the project root")?
        .join("fuzz");
    sh.change_dir(&fuzz_dir);
    if cmd!(sh, "cargo fuzz --version")
        .quiet()
        .ignore_stderr()
        .ignore_stdout()
        .run()
        .is_err()
    {
        eprintln!("cargo-fuzz is missing; installing it");
        cmd!(sh, "cargo install cargo-fuzz --locked").run()?;
    }
    let listed = cmd!(sh, "cargo fuzz list").read()?;
    let all: Vec<String> = listed.split_whitespace().map(str::to_owned).collect();
    ensure!(
        !all.is_empty(),
        "`cargo fuzz list` names no target in fuzz/"
    );
    let targets = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            ensure!(
                all.contains(t),
                "no fuzz target {t:?}; `cargo fuzz list` names {}",
                all.join(", ")
            );
        }
        args.targets
    };
    let _bootstrap = sh.push_env("RUSTC_BOOTSTRAP", "1");
    let max_time = format!("-max_total_time={}", args.seconds);
    let sanitizer = args.sanitizer.flag();
    for target in &targets {
        eprintln!("==> fuzzing {target} for {} s", args.seconds);
        std::fs::create_dir_all(fuzz_dir.join("corpus").join(target))?;
        let seeds = format!("seeds/{target}");
        ensure!(
            fuzz_dir.join(&seeds).is_dir(),
            "fuzz target {target} has no seeds: add valid inputs under fuzz/{seeds}/"
        );
        let corpus = format!("corpus/{target}");
        // -timeout: one input taking 20 s is a hang, reported like a crash.
        cmd!(
            sh,
            "cargo fuzz run --sanitizer {sanitizer} {target} {corpus} {seeds} -- {max_time} -timeout=20"
        )
        .run()
        .with_context(|| {
            format!("fuzz target {target} failed; the input is in fuzz/artifacts/{target}/")
        })?;
    }
    eprintln!("fuzzed {} targets, no crash", targets.len());
    Ok(())
}
