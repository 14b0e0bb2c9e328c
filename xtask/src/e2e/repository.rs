//! The gateway's apt repositories the suite serves the guest (issue 16, item 3): made by the
//! same code as `cargo xtask repo`, from the gateway package the image build wrote beside the
//! image, and served by the fakes' static file server on the namespace side.
//!
//! - `trusted/`: the package again at a higher version (`<version>+e2e1`: the same files, so
//!   the guest's gateway keeps working), signed by the key the guest's apt source names.
//! - `stranger/`: at a higher version still (`+e2e2`), signed by a key nobody trusts.
//!
//! The guest's apt source and unattended-upgrades settings for it are rendered from the image
//! definition with `[updates] repository_*` set (through the builder's own loader and
//! templates), as an image built with those settings carries them: the probe installs them and
//! lets the appliance's own apt and unattended-upgrades do the rest. For the self-test the
//! stranger's source names the stranger's key, so that the refusal is shown to be the key's.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clawfort_imagedef::render::{self, BuildValues, Templates};
use clawfort_imagedef::LoadedConfig;
use xshell::{cmd, Shell};

use super::testbed::Repository;
use crate::image::{self, Target};
use crate::repo;

/// The probe that installs from them.
pub const PROBE: &str = "gateway_updates_from_its_repository";

/// The suite served under the fakes' file server: `/<name>/dists/<SUITE>/...`.
const SUITE: &str = "stable";

/// The two rendered files the probe installs, by their template in `overlays/`.
const SOURCES_TEMPLATE: &str = "etc/apt/sources.list.d/clawfort.sources.tera";
const UPGRADES_TEMPLATE: &str = "etc/apt/apt.conf.d/52clawfort-unattended-upgrades.tera";

/// Where the package is: `dir/<name>_<version>_<arch>.deb` of the image definition, the
/// newest if several versions are there.
pub fn gateway_package(dir: &Path, definition: &LoadedConfig) -> Option<PathBuf> {
    let prefix = format!("{}_", definition.image.package.name);
    let suffix = format!("_{}.deb", definition.target.debian_arch);
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(&suffix)
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort();
    found.pop().map(|(_, path)| path)
}

/// Makes both repositories under `work/apt` and the files the probe installs; returns what
/// the testbed says of them.
pub fn prepare(
    sh: &Shell,
    work: &Path,
    deb: &Path,
    target: Target,
    config_overlays: &[PathBuf],
    files: SocketAddrV4,
    self_test: bool,
) -> Result<Repository> {
    let installed = cmd!(sh, "dpkg-deb --field {deb} Version")
        .quiet()
        .read()
        .with_context(|| format!("{} is not a Debian package", deb.display()))?;
    let dir = work.join("apt-build");
    std::fs::create_dir_all(&dir)?;
    let served = work.join("apt");
    std::fs::create_dir_all(&served)?;
    let day = Duration::from_secs(86_400);

    let mut versions = Vec::new();
    let mut certificates = Vec::new();
    for (name, suffix) in [("trusted", "+e2e1"), ("stranger", "+e2e2")] {
        let version = format!("{installed}{suffix}");
        let debs = dir.join(format!("{name}-debs"));
        std::fs::create_dir_all(&debs)?;
        repack(sh, deb, &version, &dir.join(format!("{name}-tree")), &debs)?;
        let key = dir.join(format!("{name}.key"));
        let certificate = key.with_extension("key.asc");
        if !key.exists() {
            repo::new_key(sh, &key, &format!("clawfort e2e {name}"))?;
        }
        repo::build(sh, &debs, &key, &served.join(name), SUITE, day)?;
        versions.push(version);
        certificates.push(certificate);
    }
    let trusted_certificate = &certificates[0];
    let stranger_signer = if self_test {
        &certificates[1]
    } else {
        trusted_certificate
    };
    let render_for = |name: &str, certificate: &Path| -> Result<(PathBuf, PathBuf)> {
        let overlay = dir.join(format!("{name}.toml"));
        std::fs::write(
            &overlay,
            format!(
                "[updates]\nrepository_url = \"http://{files}/{name}\"\nrepository_suite = \
                 \"{SUITE}\"\nrepository_key = \"{}\"\n",
                certificate.display()
            ),
        )?;
        let overlays: Vec<PathBuf> = config_overlays
            .iter()
            .cloned()
            .chain(std::iter::once(overlay))
            .collect();
        let definition = image::load_definition(&overlays, target)?;
        let root = crate::project_root();
        let build = BuildValues {
            version: installed.clone(),
            authorized_keys: Vec::new(),
            root_partuuid: String::new(),
            boot_partuuid: String::new(),
            root_fs_uuid: String::new(),
            gateway_binary: String::new(),
            repository_key: render::repository_key(&definition, &root)?,
        };
        let context = render::template_context(&definition, &build)?;
        let templates = Templates::load(&root.join("overlays"))?;
        let sources = dir.join(format!("{name}.sources"));
        std::fs::write(
            &sources,
            templates.render(Path::new(SOURCES_TEMPLATE), &context)?,
        )?;
        let upgrades = dir.join(format!("{name}-unattended-upgrades.conf"));
        std::fs::write(
            &upgrades,
            templates.render(Path::new(UPGRADES_TEMPLATE), &context)?,
        )?;
        Ok((sources, upgrades))
    };
    let (trusted_sources, unattended_upgrades) = render_for("trusted", trusted_certificate)?;
    let (stranger_sources, _) = render_for("stranger", stranger_signer)?;
    Ok(Repository {
        installed_version: installed,
        trusted_version: versions[0].clone(),
        stranger_version: versions[1].clone(),
        trusted_sources,
        stranger_sources,
        unattended_upgrades,
    })
}

/// `deb` again at `version` into `out/`: unpacked with its control files, the version
/// replaced, packed as the builder packs it.
fn repack(sh: &Shell, deb: &Path, version: &str, tree: &Path, out: &Path) -> Result<()> {
    if tree.exists() {
        std::fs::remove_dir_all(tree)?;
    }
    cmd!(sh, "dpkg-deb --raw-extract {deb} {tree}")
        .quiet()
        .run()?;
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control)?;
    let text: String = text
        .lines()
        .map(|line| match line.strip_prefix("Version: ") {
            Some(_) => format!("Version: {version}\n"),
            None => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&control, text)?;
    // Given a directory, dpkg-deb names the file from the control fields.
    cmd!(
        sh,
        "dpkg-deb --root-owner-group -Zxz -z1 --build {tree} {out}"
    )
    .quiet()
    .ignore_stdout()
    .run()?;
    std::fs::remove_dir_all(tree)?;
    Ok(())
}
