//! The Rust side of the SBOM: the crates compiled into the gateway, from `cargo metadata
//! --filter-platform <triple>` (JSON, format version 1).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::debian::NOASSERTION;

/// A crate, the gateway's own package included.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// An SPDX expression, or `NOASSERTION` (only a `license-file`, or nothing).
    pub license: String,
}

/// The gateway, what it is compiled from, and which of those each depends on.
#[derive(Debug, Clone)]
pub struct Crates {
    pub gateway: Crate,
    /// Every crate linked into the gateway, in a stable order.
    pub linked: Vec<Crate>,
    /// (dependent, dependency) as indexes: `None` is the gateway, `Some(i)` is `linked[i]`.
    pub depends_on: Vec<(Option<usize>, usize)>,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
    resolve: Option<Resolve>,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    version: String,
    license: Option<String>,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    kind: Vec<String>,
}

#[derive(Deserialize)]
struct Resolve {
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    id: String,
    deps: Vec<NodeDep>,
}

#[derive(Deserialize)]
struct NodeDep {
    pkg: String,
    dep_kinds: Vec<DepKind>,
}

#[derive(Deserialize)]
struct DepKind {
    /// `null` for a normal dependency, else `"dev"` or `"build"`.
    kind: Option<String>,
}

/// The crates of the workspace member `gateway` and everything it reaches through normal
/// dependencies. Dev and build dependencies are not in the binary, and neither are proc-macro
/// crates (they run in the compiler on the build host), so the walk neither lists them nor goes
/// through them.
pub fn from_metadata(json: &str, gateway: &str) -> Result<Crates> {
    let metadata: Metadata =
        serde_json::from_str(json).context("cargo metadata printed JSON of an unknown shape")?;
    let packages: BTreeMap<&str, &Package> = metadata
        .packages
        .iter()
        .map(|p| (p.id.as_str(), p))
        .collect();
    let resolve = metadata
        .resolve
        .as_ref()
        .context("cargo metadata has no `resolve` (was it run with --no-deps?)")?;
    let nodes: BTreeMap<&str, &Node> = resolve.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let Some(root) = metadata
        .workspace_members
        .iter()
        .find(|id| packages.get(id.as_str()).is_some_and(|p| p.name == gateway))
    else {
        bail!("cargo metadata lists no workspace member named `{gateway}`");
    };

    let normal_deps = |id: &str| -> Result<Vec<&str>> {
        let node = nodes
            .get(id)
            .with_context(|| format!("cargo metadata's resolve has no node {id}"))?;
        Ok(node
            .deps
            .iter()
            .filter(|d| d.dep_kinds.iter().any(|k| k.kind.is_none()))
            .map(|d| d.pkg.as_str())
            .filter(|pkg| packages.get(pkg).is_some_and(|p| !is_proc_macro(p)))
            .collect())
    };
    let mut reached = BTreeSet::new();
    let mut edges = Vec::new();
    let mut queue = vec![root.as_str()];
    while let Some(id) = queue.pop() {
        for dep in normal_deps(id)? {
            edges.push((id, dep));
            if reached.insert(dep) {
                queue.push(dep);
            }
        }
    }
    let crate_of = |id: &str| {
        let package = packages[id];
        Crate {
            name: package.name.clone(),
            version: package.version.clone(),
            license: package
                .license
                .as_deref()
                .map_or_else(|| NOASSERTION.to_owned(), spdx_expression),
        }
    };
    let mut linked: Vec<(Crate, &str)> = reached.iter().map(|id| (crate_of(id), *id)).collect();
    linked.sort();
    let index: BTreeMap<&str, usize> = linked
        .iter()
        .enumerate()
        .map(|(i, (_, id))| (*id, i))
        .collect();
    let mut depends_on: Vec<(Option<usize>, usize)> = edges
        .iter()
        .map(|(from, to)| ((*from != root.as_str()).then(|| index[from]), index[to]))
        .collect();
    depends_on.sort();
    depends_on.dedup();
    Ok(Crates {
        gateway: crate_of(root),
        linked: linked.into_iter().map(|(c, _)| c).collect(),
        depends_on,
    })
}

fn is_proc_macro(package: &Package) -> bool {
    package
        .targets
        .iter()
        .any(|t| t.kind.iter().any(|k| k == "proc-macro"))
}

/// A crate's `license` as SPDX: Cargo still accepts the old `MIT/Apache-2.0`, which it defines
/// as `OR`.
fn spdx_expression(license: &str) -> String {
    license
        .split('/')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" OR ")
}
