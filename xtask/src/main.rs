//! `cargo xtask <command>`: the project's build machinery, in plain Rust (matklad's xtask
//! convention). One module per task; `main` only parses the command line and dispatches.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot and probe the clawfort appliance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
