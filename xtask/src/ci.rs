//! `cargo xtask ci`: everything CI checks, in the order that fails fastest. `.ci/run` and the
//! README's test command both call this, so a developer runs exactly what CI runs.

use std::time::Instant;

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

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
    if !args.no_image {
        step("cargo xtask image", &|| {
            Ok(cmd!(sh, "cargo xtask image").run()?)
        })?;
        step("sha256sum -c SHA256SUMS", &|| {
            let _out = sh.push_dir("out");
            Ok(cmd!(sh, "sha256sum -c SHA256SUMS").run()?)
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
    }
    eprintln!("\nCI passed:");
    for (name, took) in &timings {
        eprintln!("  {name:<24} {:>7.1} s", took.as_secs_f64());
    }
    Ok(())
}
