//! `<image>-<target>.spdx.json`: an SPDX 2.3 (JSON) software bill of materials, written by the
//! package stage after the other artifacts because it carries their SHA-256.
//!
//! What it lists: one package per artifact file (with its checksum), every Debian package dpkg
//! knows in the customised root (version, architecture, source package, the license of a DEP-5
//! copyright file: [`debian`]), the gateway and every crate linked into it ([`crates`]).
//! Relationships: the document `DESCRIBES` each artifact; each disk image `CONTAINS` every
//! Debian package and the gateway; the gateway `CONTAINS` every crate, and `DEPENDS_ON` runs
//! along Cargo's resolved normal dependencies.
//!
//! Invariants: every `SPDXID` is unique and made of letters, digits, `.` and `-` ([`Ids`]);
//! every license field is a valid SPDX expression or `NOASSERTION`; the document is a function
//! of its inputs (no clock, no random UUID): `created` is the commit time of HEAD and the
//! namespace derives from the artifacts' digests, so a reproducible build gives the same file.

pub mod crates;
pub mod debian;
#[cfg(test)]
mod tests;
pub mod validator;

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use super::progress::StageProgress;
use crates::{Crate, Crates};
use debian::{DebianPackage, NOASSERTION};

/// What the SBOM describes.
pub struct Subject<'a> {
    /// `<image>-<target>`: the document's name.
    pub name: &'a str,
    /// The Debian suite (the `distro` of the packages' purls).
    pub suite: &'a str,
    /// The gateway's version, also the artifacts' version.
    pub version: &'a str,
    /// `YYYY-MM-DDThh:mm:ssZ`.
    pub created: &'a str,
    pub artifacts: &'a [Artifact],
}

/// An artifact file beside the SBOM.
pub struct Artifact {
    pub file_name: String,
    pub sha256: String,
    /// A disk image (raw, qcow2, img.xz, the cloud formats) rather than a map or manifest: it
    /// contains the packages.
    pub disk_image: bool,
}

/// The Debian packages of the root file system at `rootfs`.
pub fn debian_packages(
    stage: &mut StageProgress,
    sh: &Shell,
    rootfs: &Path,
) -> Result<Vec<DebianPackage>> {
    let admindir = format!("--admindir={}", rootfs.join("var/lib/dpkg").display());
    let format = debian::SHOW_FORMAT;
    let listing = stage.run(cmd!(sh, "dpkg-query {admindir} --show {format}"))?;
    debian::parse_listing(&listing, rootfs)
}

/// The crates compiled into the gateway for `triple`, from the repository's lock file.
pub fn gateway_crates(
    stage: &mut StageProgress,
    sh: &Shell,
    repo: &Path,
    triple: &str,
) -> Result<Crates> {
    let manifest = repo.join("Cargo.toml");
    let json = stage.run(cmd!(
        sh,
        "cargo metadata --format-version 1 --locked --filter-platform {triple} --manifest-path {manifest}"
    ))?;
    crates::from_metadata(&json, "clawfort")
}

/// The commit time of the repository's HEAD in UTC, SPDX's `created` format: the build's time
/// source while the profile has none of its own (no clock: a rebuild gives the same document).
pub fn created(stage: &mut StageProgress, sh: &Shell, repo: &Path) -> Result<String> {
    let _utc = sh.push_env("TZ", "UTC");
    let time = stage
        .run(cmd!(
            sh,
            "git -C {repo} log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ"
        ))
        .context("the SBOM's creation time is HEAD's commit time: build from a git checkout")?;
    Ok(time.trim().to_owned())
}

/// The SPDX 2.3 document.
pub fn document(subject: &Subject<'_>, debian: &[DebianPackage], crates: &Crates) -> Value {
    let mut ids = Ids::default();
    let mut packages = Vec::new();
    let mut relationships = Vec::new();
    let relate = |from: &str, kind: &str, to: &str| json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to});

    let mut disk_images = Vec::new();
    for artifact in subject.artifacts {
        let id = ids.allocate("Artifact", &artifact.file_name);
        packages.push(json!({
            "SPDXID": id,
            "name": artifact.file_name,
            "packageFileName": artifact.file_name,
            "versionInfo": subject.version,
            "primaryPackagePurpose": if artifact.disk_image { "OPERATING-SYSTEM" } else { "FILE" },
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": artifact.sha256}],
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
        }));
        relationships.push(relate(DOCUMENT, "DESCRIBES", &id));
        if artifact.disk_image {
            disk_images.push(id);
        }
    }

    for package in debian {
        let id = ids.allocate("Deb", &format!("{}-{}", package.name, package.architecture));
        let purl = format!(
            "pkg:deb/debian/{}@{}?arch={}&distro={}",
            package.name,
            percent_encoded(&package.version),
            package.architecture,
            subject.suite
        );
        packages.push(json!({
            "SPDXID": id,
            "name": package.name,
            "versionInfo": package.version,
            "supplier": "Organization: Debian",
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "sourceInfo": format!(
                "built from the Debian source package {} {}",
                package.source, package.source_version
            ),
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": package.license,
            "copyrightText": NOASSERTION,
            "externalRefs": [purl_ref(&purl)],
        }));
        for image in &disk_images {
            relationships.push(relate(image, "CONTAINS", &id));
        }
    }

    let gateway = ids.allocate("Gateway", &crates.gateway.name);
    packages.push(crate_package(&gateway, &crates.gateway, "APPLICATION"));
    for image in &disk_images {
        relationships.push(relate(image, "CONTAINS", &gateway));
    }
    let crate_ids: Vec<String> = crates
        .linked
        .iter()
        .map(|c| {
            let id = ids.allocate("Crate", &format!("{}-{}", c.name, c.version));
            packages.push(crate_package(&id, c, "LIBRARY"));
            relationships.push(relate(&gateway, "CONTAINS", &id));
            id
        })
        .collect();
    for (from, to) in &crates.depends_on {
        let from = from.map_or(&gateway, |i| &crate_ids[i]);
        relationships.push(relate(from, "DEPENDS_ON", &crate_ids[*to]));
    }

    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": DOCUMENT,
        "name": subject.name,
        "documentNamespace": namespace(subject),
        "creationInfo": {
            "created": subject.created,
            "creators": [format!("Tool: clawfort-xtask-{}", subject.version)],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

const DOCUMENT: &str = "SPDXRef-DOCUMENT";

fn crate_package(id: &str, krate: &Crate, purpose: &str) -> Value {
    let purl = format!(
        "pkg:cargo/{}@{}",
        krate.name,
        percent_encoded(&krate.version)
    );
    json!({
        "SPDXID": id,
        "name": krate.name,
        "versionInfo": krate.version,
        "primaryPackagePurpose": purpose,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": krate.license,
        "copyrightText": NOASSERTION,
        "externalRefs": [purl_ref(&purl)],
    })
}

fn purl_ref(purl: &str) -> Value {
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": purl,
    })
}

/// A unique URI per document that a rebuild of the same artifacts repeats: their digests,
/// hashed, under the prefix SPDX suggests for documents without a home of their own.
fn namespace(subject: &Subject<'_>) -> String {
    let mut digest = Sha256::new();
    for artifact in subject.artifacts {
        digest.update(format!("{}  {}\n", artifact.sha256, artifact.file_name));
    }
    format!(
        "https://spdx.org/spdxdocs/{}-{}",
        subject.name,
        hex::encode(digest.finalize())
    )
}

/// A purl version: everything but `A-Za-z0-9.-_~` percent-encoded (Debian's `+` and epoch `:`).
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Hands out `SPDXRef-<kind>-<name>` ids: characters SPDX does not allow become `.`, and a
/// name that comes out the same as an earlier one gets a `-2`, `-3`... suffix.
#[derive(Default)]
struct Ids(BTreeSet<String>);

impl Ids {
    fn allocate(&mut self, kind: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '.'
                }
            })
            .collect();
        let base = format!("SPDXRef-{kind}-{clean}");
        let mut id = base.clone();
        for n in 2.. {
            if self.0.insert(id.clone()) {
                break;
            }
            id = format!("{base}-{n}");
        }
        id
    }
}
