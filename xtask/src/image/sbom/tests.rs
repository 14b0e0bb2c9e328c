//! The SBOM writer on a small synthetic input: a fake root with two Debian packages and a fake
//! `cargo metadata` with a normal, a dev, a build and a proc-macro dependency.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use super::*;

fn package(name: &str, license: Option<&str>, kind: &str) -> Value {
    json!({
        "id": format!("{name} 1.0.0"), "name": name, "version": "1.0.0", "license": license,
        "targets": [{"kind": [kind]}],
    })
}

fn dep(name: &str, kind: Option<&str>) -> Value {
    json!({"pkg": format!("{name} 1.0.0"), "dep_kinds": [{"kind": kind, "target": null}]})
}

fn metadata() -> String {
    json!({
        "packages": [
            package("clawfort", Some("Apache-2.0"), "bin"),
            package("serde", Some("MIT OR Apache-2.0"), "lib"),
            package("serde_derive", Some("MIT OR Apache-2.0"), "proc-macro"),
            package("syn", Some("MIT OR Apache-2.0"), "lib"),
            package("old_style", Some("MIT/Apache-2.0"), "lib"),
            package("own_license", None, "lib"),
            package("tempfile", Some("MIT OR Apache-2.0"), "lib"),
            package("cc", Some("MIT OR Apache-2.0"), "lib"),
        ],
        "workspace_members": ["clawfort 1.0.0"],
        "resolve": {"nodes": [
            {"id": "clawfort 1.0.0", "deps": [
                dep("serde", None), dep("old_style", None), dep("tempfile", Some("dev")),
                dep("cc", Some("build")),
            ]},
            {"id": "serde 1.0.0", "deps": [dep("serde_derive", None), dep("own_license", None)]},
            {"id": "serde_derive 1.0.0", "deps": [dep("syn", None)]},
            {"id": "old_style 1.0.0", "deps": [dep("serde", None)]},
            {"id": "syn 1.0.0", "deps": []},
            {"id": "own_license 1.0.0", "deps": []},
            {"id": "tempfile 1.0.0", "deps": []},
            {"id": "cc 1.0.0", "deps": []},
        ]},
    })
    .to_string()
}

fn fake_root(root: &Path) {
    let doc = root.join("usr/share/doc/libc6");
    std::fs::create_dir_all(&doc).unwrap();
    std::fs::write(
        doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
         Files: *\nCopyright: 1991 FSF\nLicense: LGPL-2.1+\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("usr/share/doc/libstdc++6")).unwrap();
}

const LISTING: &str = "libc6\t2.41-12\tamd64\tglibc\t2.41-12\n\
                       libstdc++6\t14.2.0-19\tamd64\tgcc-14\t14.2.0-19\n\
                       libc6\t2.41-12\ti386\tglibc\t2.41-12\n\
                       tzdata\t2025b-4+deb13u1\tall\ttzdata\t2025b-4+deb13u1\n";

fn sample() -> Value {
    let root = tempfile::tempdir().unwrap();
    fake_root(root.path());
    let debian = debian::parse_listing(LISTING, root.path()).unwrap();
    let crates = crates::from_metadata(&metadata(), "clawfort").unwrap();
    let artifacts = [
        Artifact {
            file_name: "clawfort-x86_64.raw".into(),
            sha256: "a".repeat(64),
            disk_image: true,
        },
        Artifact {
            file_name: "clawfort-x86_64.manifest.json".into(),
            sha256: "b".repeat(64),
            disk_image: false,
        },
    ];
    document(
        &Subject {
            name: "clawfort-x86_64",
            suite: "trixie",
            version: "0.1.0",
            created: "2026-11-30T06:24:57Z",
            artifacts: &artifacts,
        },
        &debian,
        &crates,
    )
}

fn packages(document: &Value) -> &Vec<Value> {
    document["packages"].as_array().unwrap()
}

fn named<'a>(document: &'a Value, name: &str) -> Vec<&'a Value> {
    packages(document)
        .iter()
        .filter(|p| p["name"] == name)
        .collect()
}

#[test]
fn the_document_is_well_formed() {
    let document = sample();
    let text = serde_json::to_string_pretty(&document).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), document);
    assert_eq!(document["spdxVersion"], "SPDX-2.3");

    let mut ids = BTreeSet::from(["SPDXRef-DOCUMENT".to_owned()]);
    for package in packages(&document) {
        let id = package["SPDXID"].as_str().unwrap();
        let body = id.strip_prefix("SPDXRef-").unwrap();
        assert!(
            body.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
            "{id}"
        );
        assert!(ids.insert(id.to_owned()), "{id} twice");
        for field in ["licenseConcluded", "licenseDeclared", "copyrightText"] {
            assert!(package[field].is_string(), "{id} has no {field}");
        }
    }
    for relationship in document["relationships"].as_array().unwrap() {
        for end in ["spdxElementId", "relatedSpdxElement"] {
            let id = relationship[end].as_str().unwrap();
            assert!(
                ids.contains(id),
                "{relationship} names {id}, which is nowhere"
            );
        }
    }
    for artifact in ["clawfort-x86_64.raw", "clawfort-x86_64.manifest.json"] {
        let package = named(&document, artifact)[0];
        assert_eq!(package["checksums"][0]["algorithm"], "SHA256");
        assert_eq!(
            package["checksums"][0]["checksumValue"]
                .as_str()
                .unwrap()
                .len(),
            64
        );
    }
}

#[test]
fn it_lists_the_debian_packages_and_their_licenses() {
    let document = sample();
    let libc = named(&document, "libc6");
    assert_eq!(libc.len(), 2, "one per architecture");
    assert_eq!(libc[0]["licenseDeclared"], "LGPL-2.1-or-later");
    assert_eq!(
        libc[0]["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/libc6@2.41-12?arch=amd64&distro=trixie"
    );
    assert_eq!(
        named(&document, "libstdc++6")[0]["licenseDeclared"],
        "NOASSERTION"
    );
    let tzdata = named(&document, "tzdata")[0];
    assert_eq!(
        tzdata["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/tzdata@2025b-4%2Bdeb13u1?arch=all&distro=trixie"
    );
    assert!(tzdata["sourceInfo"].as_str().unwrap().contains("tzdata"));
}

#[test]
fn it_lists_exactly_the_crates_linked_into_the_gateway() {
    let document = sample();
    let crates: BTreeSet<&str> = packages(&document)
        .iter()
        .filter(|p| p["primaryPackagePurpose"] == "LIBRARY")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        crates,
        BTreeSet::from(["old_style", "own_license", "serde"])
    );
    assert_eq!(
        named(&document, "old_style")[0]["licenseDeclared"],
        "MIT OR Apache-2.0"
    );
    assert_eq!(
        named(&document, "own_license")[0]["licenseDeclared"],
        "NOASSERTION"
    );
    let serde = named(&document, "serde")[0]["SPDXID"].clone();
    let depends: Vec<&Value> = document["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "DEPENDS_ON" && r["relatedSpdxElement"] == serde)
        .collect();
    assert_eq!(
        depends.len(),
        2,
        "the gateway and old_style depend on serde"
    );
}

/// The SPDX project's validator accepts it (skipped, saying so, where it is not installed:
/// `cargo xtask ci` installs it).
#[test]
fn the_spdx_validator_accepts_the_document() {
    let repo = crate::project_root();
    let Some(pyspdxtools) = validator::installed(&repo) else {
        eprintln!("skipped: no pyspdxtools under target/ (cargo xtask ci installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.spdx.json");
    std::fs::write(&path, serde_json::to_string_pretty(&sample()).unwrap()).unwrap();
    validator::validate(&Shell::new().unwrap(), &pyspdxtools, &path).unwrap();
}
