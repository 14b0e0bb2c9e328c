//! The Debian side of the SBOM: every package dpkg lists in the customised root, and the license
//! its `copyright` file declares when that file is machine-readable (DEP-5).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

/// One installed Debian package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub source: String,
    pub source_version: String,
    /// An SPDX license expression, or `NOASSERTION` (see [`declared_license`]).
    pub license: String,
}

/// dpkg-query's `--showformat` for [`parse_listing`].
pub const SHOW_FORMAT: &str =
    "--showformat=${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n";

/// The packages of a [`SHOW_FORMAT`] listing, each with the license of
/// `<rootfs>/usr/share/doc/<package>/copyright`.
pub fn parse_listing(listing: &str, rootfs: &Path) -> Result<Vec<DebianPackage>> {
    let root = rootfs
        .canonicalize()
        .with_context(|| format!("cannot resolve the root file system {}", rootfs.display()))?;
    let mut packages = Vec::new();
    for line in listing.lines().filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, version, architecture, source, source_version] = fields[..] else {
            anyhow::bail!(
                "dpkg-query printed an unexpected line (want 5 tab-separated fields): {line:?}"
            );
        };
        packages.push(DebianPackage {
            name: name.to_owned(),
            version: version.to_owned(),
            architecture: architecture.to_owned(),
            source: source.to_owned(),
            source_version: source_version.to_owned(),
            license: copyright_file(&root, name)
                .map_or_else(|| NOASSERTION.to_owned(), |text| declared_license(&text)),
        });
    }
    Ok(packages)
}

pub const NOASSERTION: &str = "NOASSERTION";

/// The package's copyright file, if it exists and resolves inside the root (the doc directory
/// may be a symbolic link to another package's; one leading out of the root is not followed).
fn copyright_file(root: &Path, package: &str) -> Option<String> {
    let path = root
        .join("usr/share/doc")
        .join(package)
        .join("copyright")
        .canonicalize()
        .ok()?;
    path.starts_with(root)
        .then(|| std::fs::read_to_string(path).ok())
        .flatten()
}

/// The DEP-5 `Format:` URI of machine-readable copyright files (either scheme: older files
/// say `http`).
fn is_dep5(format: &str) -> bool {
    let format = format.trim().trim_end_matches('/');
    ["https", "http"].iter().any(|scheme| {
        format == format!("{scheme}://www.debian.org/doc/packaging-manuals/copyright-format/1.0")
    })
}

/// The license a copyright file declares for the package: the `License:` short names of its
/// `Files:` stanzas translated to SPDX ids and joined with `AND` (the package holds files under
/// each). `NOASSERTION` when the file is not DEP-5, or when any stanza's license has no exact
/// SPDX equivalent ([`spdx_id`]) or uses syntax not translated here (`with ... exception`,
/// commas, `and` mixed with `or`). NOASSERTION rather than `LicenseRef-...`: a LicenseRef must
/// come with the license text in the document (`hasExtractedLicensingInfos`), and a partial
/// expression would claim less than the package's real terms.
pub fn declared_license(copyright: &str) -> String {
    let stanzas = stanzas(copyright);
    let Some(header) = stanzas.first() else {
        return NOASSERTION.to_owned();
    };
    if !field(header, "format").is_some_and(is_dep5) {
        return NOASSERTION.to_owned();
    }
    let mut expressions = BTreeSet::new();
    for stanza in stanzas.iter().filter(|s| field(s, "files").is_some()) {
        let Some(license) = field(stanza, "license") else {
            return NOASSERTION.to_owned();
        };
        match expression(license) {
            Some(expression) => expressions.insert(expression),
            None => return NOASSERTION.to_owned(),
        };
    }
    match expressions.len() {
        0 => NOASSERTION.to_owned(),
        1 => expressions.pop_first().expect("one"),
        _ => expressions
            .iter()
            .map(|e| {
                if e.contains(' ') {
                    format!("({e})")
                } else {
                    e.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" AND "),
    }
}

/// The paragraphs of a deb822 file, each as its lines.
fn stanzas(text: &str) -> Vec<Vec<&str>> {
    let mut stanzas = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if !stanzas.last().expect("one").is_empty() {
                stanzas.push(Vec::new());
            }
        } else {
            stanzas.last_mut().expect("one").push(line);
        }
    }
    stanzas.retain(|s| !s.is_empty());
    stanzas
}

/// The first line of field `name` (case-insensitive) in a stanza.
fn field<'a>(stanza: &[&'a str], name: &str) -> Option<&'a str> {
    stanza.iter().find_map(|line| {
        if line.starts_with([' ', '\t']) {
            return None;
        }
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// A DEP-5 license line (`GPL-2+ or Artistic`) as an SPDX expression, if every name has an SPDX
/// id and only one of `and`/`or` joins them.
fn expression(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut names = Vec::new();
    let mut operator = None;
    for (index, word) in words.iter().enumerate() {
        if index % 2 == 0 {
            names.push(spdx_id(word)?);
        } else {
            let this = match word.to_ascii_lowercase().as_str() {
                "or" => " OR ",
                "and" => " AND ",
                _ => return None,
            };
            if operator.is_some_and(|o| o != this) {
                return None;
            }
            operator = Some(this);
        }
    }
    (!names.is_empty() && words.len() % 2 == 1).then(|| names.join(operator.unwrap_or("")))
}

/// The SPDX id of a DEP-5 short name, for the names whose meaning is the same license: the GNU
/// family's `-N` (that version only) and `-N+` (or any later), `Expat` (SPDX `MIT`), and names
/// that are SPDX ids already. Others (`public-domain`, `Artistic`, `GFDL-*` with its invariant
/// sections) have none; their stanza makes the package `NOASSERTION`.
fn spdx_id(short: &str) -> Option<&'static str> {
    const IDS: &[(&str, &str)] = &[
        ("GPL-1", "GPL-1.0-only"),
        ("GPL-1+", "GPL-1.0-or-later"),
        ("GPL-2", "GPL-2.0-only"),
        ("GPL-2+", "GPL-2.0-or-later"),
        ("GPL-3", "GPL-3.0-only"),
        ("GPL-3+", "GPL-3.0-or-later"),
        ("LGPL-2", "LGPL-2.0-only"),
        ("LGPL-2+", "LGPL-2.0-or-later"),
        ("LGPL-2.1", "LGPL-2.1-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("LGPL-3", "LGPL-3.0-only"),
        ("LGPL-3+", "LGPL-3.0-or-later"),
        ("AGPL-3", "AGPL-3.0-only"),
        ("AGPL-3+", "AGPL-3.0-or-later"),
        ("Expat", "MIT"),
        ("MIT", "MIT"),
        ("Apache-2.0", "Apache-2.0"),
        ("BSD-2-clause", "BSD-2-Clause"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("BSD-4-clause", "BSD-4-Clause"),
        ("0BSD", "0BSD"),
        ("ISC", "ISC"),
        ("Zlib", "Zlib"),
        ("CC0-1.0", "CC0-1.0"),
        ("MPL-1.1", "MPL-1.1"),
        ("MPL-2.0", "MPL-2.0"),
        ("Artistic-2.0", "Artistic-2.0"),
        ("BSL-1.0", "BSL-1.0"),
        ("Unlicense", "Unlicense"),
        ("X11", "X11"),
        ("OpenSSL", "OpenSSL"),
    ];
    IDS.iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(short))
        .map(|(_, id)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP5: &str =
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
                        Upstream-Name: x\n\n";

    #[test]
    fn dep5_licenses_become_an_spdx_expression() {
        let text = format!(
            "{DEP5}Files: *\nCopyright: 2020 A\nLicense: GPL-2+\n\n\
             Files: lib/*\nCopyright: 2021 B\nLicense: Expat or Apache-2.0\n Permission is...\n\n\
             License: GPL-2+\n On Debian systems...\n"
        );
        assert_eq!(
            declared_license(&text),
            "GPL-2.0-or-later AND (MIT OR Apache-2.0)"
        );
    }

    #[test]
    fn anything_not_translated_exactly_is_noassertion() {
        for license in [
            "public-domain",
            "GPL-2+ with OpenSSL exception",
            "MIT or BSD-3-clause and ISC",
            "GPL-2+ or Artistic, and BSD-3-clause",
        ] {
            let text = format!("{DEP5}Files: *\nCopyright: A\nLicense: {license}\n");
            assert_eq!(declared_license(&text), NOASSERTION, "{license}");
        }
        assert_eq!(
            declared_license("This package was debianized by someone.\nLicense: MIT\n"),
            NOASSERTION
        );
    }
}
