//! The overlays' templates: what a `*.tera` file under `overlays/` (or a target's own overlay
//! tree such as `overlays.rpi/`) sees, and how it is rendered. The builder writes the rendered
//! files into the image; the overlay tests render the same trees with the same context to check
//! what the image promises without building it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use walkdir::WalkDir;

use crate::LoadedConfig;

/// Computed values a template reads as `build.*`.
#[derive(Debug, Clone, Serialize)]
pub struct BuildValues {
    /// The gateway package's version.
    pub version: String,
    /// `--authorized-key` lines for the administrator (empty when none were given).
    pub authorized_keys: Vec<String>,
    /// PARTUUIDs and file system UUID fixed for this build (for fstab-like files).
    pub root_partuuid: String,
    /// The FAT boot partition's: the ESP, or the Raspberry Pi's firmware partition.
    pub boot_partuuid: String,
    pub root_fs_uuid: String,
    /// Where the gateway binary is in the image.
    pub gateway_binary: String,
    /// `[updates] repository_key`'s certificate, folded as a deb822 field's continuation
    /// lines (each indented, an empty line as ` .`) for `Signed-By:`; empty when no
    /// repository is named. From [`repository_key`].
    pub repository_key: String,
}

/// The public certificate `[updates] repository_key` names, read and checked, in deb822's
/// folded form; empty when no repository is named. `root`: what a relative path is relative
/// to (the project root).
pub fn repository_key(config: &LoadedConfig, root: &Path) -> Result<String> {
    let named = &config.image.updates.repository_key;
    if named.is_empty() {
        return Ok(String::new());
    }
    let path = root.join(named);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "key `updates.repository_key`: cannot read {}; `cargo xtask repo new-key KEY` \
             writes the certificate as KEY.asc",
            path.display()
        )
    })?;
    anyhow::ensure!(
        !text.contains("PRIVATE KEY BLOCK"),
        "key `updates.repository_key`: {} is a SECRET key; name its public certificate \
         (KEY.asc) instead, and keep the secret key off the image (consider it leaked if an \
         image was built with it)",
        path.display()
    );
    let armored = text.trim();
    anyhow::ensure!(
        armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
            && armored.ends_with("-----END PGP PUBLIC KEY BLOCK-----"),
        "key `updates.repository_key`: {} is not an ASCII-armoured OpenPGP certificate \
         (`cargo xtask repo new-key KEY` writes one as KEY.asc)",
        path.display()
    );
    Ok(armored
        .lines()
        .map(|line| match line.trim_end() {
            "" => " .".to_owned(),
            line => format!(" {line}"),
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The whole merged image document, plus `target` and `build`: exactly what a template sees.
pub fn template_context(config: &LoadedConfig, build: &BuildValues) -> Result<tera::Context> {
    let mut context = tera::Context::from_serialize(&config.document)
        .context("the image config cannot be a template context")?;
    context.insert("target", &config.target_document);
    context.insert("build", build);
    Ok(context)
}

/// Whether `relative` (a path inside an overlay tree) is a template: `name.tera` is rendered
/// and lands in the image as `name`.
pub fn is_template(relative: &Path) -> bool {
    relative.extension().is_some_and(|ext| ext == "tera")
}

/// Every `*.tera` file of one overlay tree, loaded into one tera instance (so templates may
/// `include` each other), with HTML auto-escaping off: these are configuration files, not web
/// pages.
pub struct Templates {
    tera: tera::Tera,
    /// The templates' paths inside the tree, in file-name order.
    names: Vec<String>,
    /// The tree's directory name (`overlays`, `overlays.rpi`), for messages.
    label: String,
}

impl Templates {
    pub fn load(tree: &Path) -> Result<Self> {
        let label = tree.file_name().map_or_else(
            || tree.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let mut sources = Vec::new();
        for entry in WalkDir::new(tree).sort_by_file_name() {
            let entry = entry.with_context(|| format!("cannot walk {}", tree.display()))?;
            let relative = entry.path().strip_prefix(tree).expect("under root");
            if entry.file_type().is_file() && is_template(relative) {
                let text = std::fs::read_to_string(entry.path())
                    .with_context(|| format!("cannot read {}", entry.path().display()))?;
                sources.push((template_name(relative), text));
            }
        }
        let mut tera = tera::Tera::new();
        tera.autoescape_on(Vec::<&str>::new());
        // All at once: a template may include one that sorts after it.
        tera.add_raw_templates(sources.iter().map(|(name, text)| (name, text)))
            .map_err(|err| {
                anyhow::anyhow!(
                    "{label}/ holds a template that is not valid tera: {}",
                    error_chain(&err)
                )
            })?;
        let names = sources.into_iter().map(|(name, _)| name).collect();
        Ok(Self { tera, names, label })
    }

    /// Renders the template at `relative` (its path inside the tree, `.tera` included).
    pub fn render(&self, relative: &Path, context: &tera::Context) -> Result<String> {
        let name = template_name(relative);
        self.tera.render(&name, context).map_err(|err| {
            anyhow::anyhow!("cannot render {}/{name}: {}", self.label, error_chain(&err))
        })
    }

    /// Every template of the tree rendered, by the image path it lands at
    /// (`/etc/nftables.conf`).
    pub fn render_all(&self, context: &tera::Context) -> Result<BTreeMap<String, String>> {
        let mut rendered = BTreeMap::new();
        for name in &self.names {
            let relative = Path::new(name);
            rendered.insert(image_path(relative), self.render(relative, context)?);
        }
        Ok(rendered)
    }
}

/// Every template of `trees` rendered with `context`, by image path; a later tree's file
/// replaces an earlier one's, as in the builder.
pub fn render_overlays(
    trees: &[PathBuf],
    context: &tera::Context,
) -> Result<BTreeMap<String, String>> {
    let mut rendered = BTreeMap::new();
    for tree in trees {
        rendered.extend(Templates::load(tree)?.render_all(context)?);
    }
    Ok(rendered)
}

/// Where a file of an overlay tree lands in the image: `etc/x.conf.tera` at `/etc/x.conf`.
pub fn image_path(relative: &Path) -> String {
    let relative = if is_template(relative) {
        relative.with_extension("")
    } else {
        relative.to_path_buf()
    };
    format!("/{}", relative.display())
}

fn template_name(relative: &Path) -> String {
    relative.to_string_lossy().into_owned()
}

/// tera's top-level error often says only "failed to render"; the cause is further down.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = root.join(name);
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_later_tree_replaces_an_earlier_ones_file_and_plain_files_are_not_rendered() {
        let root = tempfile::tempdir().unwrap();
        let base = tree(
            root.path(),
            "overlays",
            &[
                ("etc/a.conf.tera", "a={{ x }}"),
                ("etc/b.conf.tera", "{% include \"etc/c.inc.tera\" %}"),
                ("etc/c.inc.tera", "c={{ x }}"),
                ("etc/plain.conf", "{{ not rendered }}"),
            ],
        );
        let board = tree(
            root.path(),
            "overlays.board",
            &[("etc/a.conf.tera", "board")],
        );
        let mut context = tera::Context::new();
        context.insert("x", &7);
        let files = render_overlays(&[base, board], &context).unwrap();
        assert_eq!(files["/etc/a.conf"], "board");
        assert_eq!(files["/etc/b.conf"], "c=7");
        assert!(!files.contains_key("/etc/plain.conf"));
    }

    #[test]
    fn a_render_error_names_the_tree_the_file_and_the_cause() {
        let root = tempfile::tempdir().unwrap();
        let board = tree(
            root.path(),
            "overlays.board",
            &[("etc/default/fw.tera", "{{ build.no_such_key }}")],
        );
        let mut context = tera::Context::new();
        context.insert("build", &BTreeMap::from([("version", "1")]));
        let err = render_overlays(&[board], &context).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("overlays.board/etc/default/fw.tera"),
            "{message}"
        );
        assert!(message.contains("no_such_key"), "{message}");
    }

    #[test]
    fn a_syntax_error_names_the_tree_and_the_file() {
        let root = tempfile::tempdir().unwrap();
        let base = tree(
            root.path(),
            "overlays",
            &[
                ("etc/a.conf.tera", "ok"),
                ("etc/broken.conf.tera", "{% if %}"),
            ],
        );
        let err = Templates::load(&base).err().unwrap();
        let message = format!("{err:#}");
        assert!(message.contains("overlays/"), "{message}");
        assert!(message.contains("etc/broken.conf.tera"), "{message}");
    }
}
