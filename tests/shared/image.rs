//! The appliance's overlays rendered for a test exactly as the image builder renders them:
//! through its own loader and template context (`clawfort-imagedef`), for any target, with a
//! `--set-config`-like overlay merged over the definition.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clawfort_imagedef::render::{render_overlays, repository_key, template_context, BuildValues};
use clawfort_imagedef::LoadedConfig;

/// The root partition's PARTUUID the templates are rendered with (`build.root_partuuid`).
pub const ROOT_PARTUUID: &str = "c1a5f047-02";

/// Rendered templates by the image path they land at (`/etc/nftables.conf`).
pub type Files = BTreeMap<String, String>;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The image definition for `target` with `config_overlay` (TOML, like a `--set-config` file)
/// merged over `image/clawfort.toml`, loaded and validated as the builder loads it.
pub fn definition(target: &str, config_overlay: &str) -> anyhow::Result<LoadedConfig> {
    let dir = tempfile::tempdir()?;
    let overlay = dir.path().join("set-config.toml");
    std::fs::write(&overlay, config_overlay)?;
    LoadedConfig::load(
        &repo().join("image/clawfort.toml"),
        &[overlay],
        &repo().join("image/targets"),
        target,
    )
}

/// Stand-ins for what the builder computes per build (`build.*` in a template).
fn build_values(config: &LoadedConfig) -> anyhow::Result<BuildValues> {
    Ok(BuildValues {
        version: "0.0.0-test".to_owned(),
        authorized_keys: Vec::new(),
        root_partuuid: ROOT_PARTUUID.to_owned(),
        boot_partuuid: "c1a5f047-01".to_owned(),
        root_fs_uuid: "0f3d2b6e-5a41-4c8e-9d27-1b6a3e5c7f90".to_owned(),
        gateway_binary: "/usr/bin/clawfort".to_owned(),
        repository_key: repository_key(config, &repo())?,
    })
}

/// Every template of `target`'s overlay trees (`overlays/`, then the target's own), rendered,
/// or the error that stops the build, with its causes.
pub fn render_target(target: &str, config_overlay: &str) -> Result<Files, String> {
    render(&definition(target, config_overlay).map_err(|e| format!("{e:#}"))?)
}

/// Every template of `config`'s overlay trees rendered with its template context.
pub fn render(config: &LoadedConfig) -> Result<Files, String> {
    let build = build_values(config).map_err(|e| format!("{e:#}"))?;
    let context = template_context(config, &build).map_err(|e| format!("{e:#}"))?;
    let trees = config.overlay_trees(&repo(), repo().join("overlays"));
    render_overlays(&trees, &context).map_err(|e| format!("{e:#}"))
}
