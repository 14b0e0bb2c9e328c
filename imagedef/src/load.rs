//! Loading the image definition: `image/clawfort.toml` (plus `--set-config` overlay files
//! merged over it) and `image/targets/<target>.toml`, read, merged, typed and validated. The one
//! loader of the definition: the builder, the overlay tests and the boot-and-probe suite's
//! expectations all read it through [`LoadedConfig::load`].

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::de::DeserializeOwned;

use crate::definition::{ImageConfig, TargetConfig, TargetFile};
use crate::validate::{validate_image, validate_target};

/// The image definition after merging and validation.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The merged image document exactly as written: the template context's top level.
    pub document: toml::Table,
    /// The target file's `[target]` table as written: the template context's `target`.
    pub target_document: toml::Table,
    pub image: ImageConfig,
    pub target: TargetConfig,
    /// Every file the definition was read from, in merge order (for messages and hashing).
    pub sources: Vec<PathBuf>,
}

impl LoadedConfig {
    /// Loads `base`, merges each overlay over it (tables merge key by key, everything else is
    /// replaced), loads `targets_dir/<target>.toml`, and validates the result.
    pub fn load(
        base: &Path,
        overlays: &[PathBuf],
        targets_dir: &Path,
        target: &str,
    ) -> Result<Self> {
        let mut document = read_toml(base)?;
        let mut sources = vec![base.to_path_buf()];
        for overlay in overlays {
            merge_tables(&mut document, read_toml(overlay)?);
            sources.push(overlay.clone());
        }
        let image: ImageConfig = typed(&document).with_context(|| {
            format!(
                "image definition {} is not valid",
                display_sources(&sources)
            )
        })?;
        validate_image(&image).with_context(|| {
            format!(
                "image definition {} is not valid",
                display_sources(&sources)
            )
        })?;

        let (target, target_document, target_path) = load_target_file(targets_dir, target)?;
        for module in &target.kept_modules {
            ensure!(
                image.kernel_modules.blocked.contains(module),
                "key `target.kept_modules` of {}: `{module}` is not in `kernel_modules.blocked`, \
                 so there is nothing to keep (spell it as the blocked list does)",
                target_path.display()
            );
        }
        sources.push(target_path);
        Ok(Self {
            document,
            target_document,
            image: image_with_target_packages(image, &target),
            target,
            sources,
        })
    }

    /// The modules that never load on this target: `kernel_modules.blocked` less the target's
    /// `kept_modules` (what /etc/modprobe.d/clawfort-blocked.conf lists).
    pub fn blocked_modules(&self) -> Vec<String> {
        self.image
            .kernel_modules
            .blocked
            .iter()
            .filter(|module| !self.target.kept_modules.contains(module))
            .cloned()
            .collect()
    }

    /// The overlay trees, in the order they are applied: `base` (the repository's `overlays/`
    /// unless the builder was given another), then the target's own (`target.overlays`,
    /// relative to `repo`).
    pub fn overlay_trees(&self, repo: &Path, base: PathBuf) -> Vec<PathBuf> {
        std::iter::once(base)
            .chain(self.target.overlays.iter().map(|dir| repo.join(dir)))
            .collect()
    }
}

/// `targets_dir/<target>.toml` alone, validated: what a command needs to know about a target
/// without the image definition (which host tools it needs, for instance).
pub fn load_target(targets_dir: &Path, target: &str) -> Result<TargetConfig> {
    Ok(load_target_file(targets_dir, target)?.0)
}

/// The typed target, its `[target]` table as written, and the file's path.
fn load_target_file(
    targets_dir: &Path,
    target: &str,
) -> Result<(TargetConfig, toml::Table, PathBuf)> {
    let target_path = targets_dir.join(format!("{target}.toml"));
    ensure!(
        target_path.is_file(),
        "unknown target `{target}`: {} does not exist (known targets: {})",
        target_path.display(),
        known_targets(targets_dir).join(", ")
    );
    let target_whole = read_toml(&target_path)?;
    let target_file: TargetFile = typed(&target_whole)
        .with_context(|| format!("target file {} is not valid", target_path.display()))?;
    validate_target(&target_file.target, target)
        .with_context(|| format!("target file {} is not valid", target_path.display()))?;
    let target_document = match target_whole.get("target") {
        Some(toml::Value::Table(table)) => table.clone(),
        _ => unreachable!("TargetFile deserialised, so [target] is a table"),
    };
    Ok((target_file.target, target_document, target_path))
}

/// The target's packages (kernel, boot loader) belong to the bootstrap like the common ones;
/// the typed view carries them together so the bootstrap stage reads one list.
fn image_with_target_packages(mut image: ImageConfig, target: &TargetConfig) -> ImageConfig {
    for package in &target.packages {
        if !image.debian.packages.contains(package) {
            image.debian.packages.push(package.clone());
        }
    }
    image
}

fn display_sources(sources: &[PathBuf]) -> String {
    sources
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The names of the target files in `targets_dir`, sorted.
pub fn known_targets(targets_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(targets_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn read_toml(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read image definition {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))
}

/// Deserialises with the failing key's dotted path in the error (`ssh.max_auth_tries: invalid
/// type ...`), which plain serde loses once the document has been merged.
fn typed<T: DeserializeOwned>(document: &toml::Table) -> Result<T> {
    let value = toml::Value::Table(document.clone());
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        anyhow::anyhow!("key `{path}`: {}", err.into_inner())
    })
}

/// Tables merge key by key (recursively); any other value in `overlay` replaces the base's, so
/// an overlay sets `ssh.password_authentication = true` without restating `[ssh]`.
fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge_tables(base_table, overlay_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DiskLayout;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    fn load_with(overlay: &str) -> Result<LoadedConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlay.toml");
        std::fs::write(&path, overlay).unwrap();
        LoadedConfig::load(
            &repo().join("image/clawfort.toml"),
            &[path],
            &repo().join("image/targets"),
            "x86_64",
        )
    }

    #[test]
    fn the_shipped_definition_loads_for_x86_64() {
        let config = load_with("").unwrap();
        assert_eq!(config.target.debian_arch, "amd64");
        assert_eq!(config.image.users.admin.name, "admin");
        assert!(config
            .image
            .debian
            .packages
            .contains(&"linux-image-cloud-amd64".to_owned()));
        assert_eq!(
            config.document["ssh"]["max_auth_tries"].as_integer(),
            Some(3)
        );
    }

    #[test]
    fn every_shipped_target_loads_with_its_layout() {
        for (target, arch, is_pi) in [
            ("x86_64", "amd64", false),
            ("aarch64", "arm64", false),
            ("rpi", "arm64", true),
        ] {
            let config = LoadedConfig::load(
                &repo().join("image/clawfort.toml"),
                &[],
                &repo().join("image/targets"),
                target,
            )
            .unwrap_or_else(|err| panic!("{target}: {err:#}"));
            assert_eq!(config.target.debian_arch, arch);
            assert_eq!(
                matches!(config.target.disk, DiskLayout::RpiMbr(_)),
                is_pi,
                "{target}"
            );
            for dir in &config.target.overlays {
                assert!(repo().join(dir).is_dir(), "{target}: {}", dir.display());
            }
        }
    }

    #[test]
    fn a_target_with_a_misspelt_disk_key_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(repo().join("image/targets/rpi.toml"))
            .unwrap()
            .replace("boot_size", "boot_sise");
        std::fs::write(dir.path().join("rpi.toml"), text).unwrap();
        let err = LoadedConfig::load(&repo().join("image/clawfort.toml"), &[], dir.path(), "rpi")
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("boot_sise"), "{message}");
        assert!(message.contains("target.disk"), "{message}");
    }

    #[test]
    fn overlays_merge_tables_key_by_key_and_replace_everything_else() {
        let mut base: toml::Table = toml::from_str("[a]\nx = 1\ny = [1, 2]\n[b]\nz = 'k'").unwrap();
        merge_tables(&mut base, toml::from_str("[a]\ny = [3]\n").unwrap());
        assert_eq!(base["a"]["x"].as_integer(), Some(1));
        assert_eq!(base["a"]["y"].as_array().map(Vec::len), Some(1));
        assert_eq!(base["b"]["z"].as_str(), Some("k"));
    }

    #[test]
    fn an_overlay_changes_one_key_and_keeps_its_neighbours() {
        let config =
            load_with("[ssh]\npassword_authentication = true\n[fail2ban]\nbantime = \"30s\"\n")
                .unwrap();
        assert!(config.image.ssh.password_authentication);
        assert_eq!(config.image.ssh.max_auth_tries, 3);
        assert_eq!(config.image.fail2ban.bantime, "30s");
        assert_eq!(config.document["fail2ban"]["bantime"].as_str(), Some("30s"));
    }

    #[test]
    fn a_sandbox_socket_dir_outside_its_own_run_directory_names_the_key() {
        for dir in [
            "/run/user",
            "/run/user/1000",
            "/tmp/sandbox",
            "/run/",
            "/run/a b",
            "/run/%t",
        ] {
            let err = load_with(&format!("[sandbox]\nsocket_dir = \"{dir}\"\n")).unwrap_err();
            assert!(
                format!("{err:#}").contains("sandbox.socket_dir"),
                "{dir}: {err:#}"
            );
        }
        load_with("[sandbox]\nsocket_dir = \"/run/my-sandbox\"\n").unwrap();
    }

    #[test]
    fn an_egress_port_0_names_the_key() {
        let err = load_with("[gateway.egress]\ntcp_ports = [443, 0]\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("gateway.egress.tcp_ports[1]"),
            "{err:#}"
        );
    }

    #[test]
    fn an_egress_socket_that_systemd_would_misread_names_the_key() {
        for bad in ["run/egress.sock", "/run/egress %i.sock", "/run/a b.sock"] {
            let err = load_with(&format!("[gateway.egress]\nsocket = \"{bad}\"\n")).unwrap_err();
            assert!(
                format!("{err:#}").contains("gateway.egress.socket"),
                "{bad}: {err:#}"
            );
        }
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = load_with("[ssh]\nmax_auth_tries = \"three\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("ssh.max_auth_tries"), "{err:#}");
    }

    #[test]
    fn a_misspelt_key_is_refused_with_its_name() {
        let err = load_with("[ssh]\nmax_auth_trys = 3\n").unwrap_err();
        assert!(format!("{err:#}").contains("max_auth_trys"), "{err:#}");
    }

    #[test]
    fn opening_a_gateway_port_is_refused() {
        let err = load_with("[firewall]\nextra_tcp_ports = [443, 18789]\n").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("firewall.extra_tcp_ports[1]"), "{message}");
    }

    #[test]
    fn an_unknown_initramfs_compressor_or_package_is_refused_by_key() {
        let err = load_with("[debian.initramfs]\ncompress = \"zip\"\n").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("debian.initramfs.compress"), "{message}");
        assert!(message.contains("`zip`"), "{message}");
        let err = load_with("[debian.initramfs]\npackage = \"Zstd!\"\n").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("debian.initramfs.package"), "{message}");
        let lz4 = load_with("[debian.initramfs]\ncompress = \"lz4\"\npackage = \"lz4\"\n").unwrap();
        assert_eq!(lz4.image.debian.initramfs.package, "lz4");
    }

    #[test]
    fn a_locale_without_its_sources_is_refused() {
        let err = load_with("[image]\nlocale = \"de_DE.UTF-8\"\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("debian.path_exclude"),
            "{err:#}"
        );
    }

    #[test]
    fn a_public_gateway_bind_is_refused() {
        let err = load_with("[gateway]\nbind = \"0.0.0.0\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("gateway.bind"), "{err:#}");
    }

    #[test]
    fn an_unknown_target_lists_the_known_ones() {
        let err = LoadedConfig::load(
            &repo().join("image/clawfort.toml"),
            &[],
            &repo().join("image/targets"),
            "sparc",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("x86_64"), "{err:#}");
    }
}
