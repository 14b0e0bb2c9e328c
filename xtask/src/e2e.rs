//! Placeholder: replaced by the module's owner.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask e2e` is not implemented yet")
}
