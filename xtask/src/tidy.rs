//! ARCHITECTURE.md's invariants as tests, in the spirit of rust-analyzer's tidy: they read the
//! workspace's Rust sources (xtask and imagedef) and fail with the file and line of each
//! violation.
//!
//! - Every external command goes through xshell (and, in a builder stage, the stage log of
//!   `image::progress::StageProgress`): a `std::process::Command` may only be built on a line
//!   right after a marker comment `// tidy: spawn (why)` or `// tidy: runner (why)`, for the
//!   few processes that must be spawned and stopped by hand (QEMU, dnsmasq, a measured
//!   gateway) or need what xshell lacks.
//! - The appliance is data: no Debian package name, no TCP port and no policy name of the
//!   appliance (a sysctl key, a unit the definition enables, disables or masks, a path it gives
//!   a mode) appears as a literal in non-test Rust outside imagedef's definition types. The
//!   forbidden lists are read from the image definition itself, so the test follows the data.
//!   A literal that only looks like one (`"systemd"` as a directory name) carries
//!   `// tidy: allow (why)` on the line before.
//!
//! The sources are parsed with syn (no regex over code), so strings, comments and doc comments
//! never count as code. The data check skips `#[test]` and `#[cfg(test)]` items, where a literal
//! is an expectation; the command check covers test code too. Macro arguments (`cmd!`,
//! `format!`) are searched as token streams.

use std::collections::BTreeSet;

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Where the marker comment goes: on the line right before the `Command` construction.
const MARKERS: [&str; 2] = ["// tidy: spawn (", "// tidy: runner ("];

/// The directories whose Rust files the checks read, relative to the repository.
const SOURCE_DIRS: [&str; 2] = ["xtask/src", "imagedef/src"];

/// The marker that lets the next line hold a literal the data check would refuse.
const ALLOW_MARKER: &str = "// tidy: allow (";

/// imagedef's definition types: the one place allowed to name the appliance's settings.
const DEFINITION_TYPES: &str = "imagedef/src/definition.rs";

/// The build host's side: these name the packages and programs the builder needs on the
/// machine it runs on (`cargo xtask doctor`, the spawn audit), not the appliance's.
const HOST_SIDE: [&str; 2] = [
    "xtask/src/image/host_tools.rs",
    "xtask/src/image/host_tools/",
];

/// One finding: `file:line: what`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.what)
    }
}

/// Every `.rs` file under the source directories, as (path relative to the repository, text).
fn sources() -> Vec<(String, String)> {
    let root = crate::project_root();
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        for entry in walkdir::WalkDir::new(root.join(dir)).sort_by_file_name() {
            let entry = entry.expect("the source tree is readable");
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).expect("under the root");
                let text = std::fs::read_to_string(path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                files.push((relative.display().to_string(), text));
            }
        }
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    files
}

fn parse(file: &str, text: &str) -> syn::File {
    syn::parse_file(text).unwrap_or_else(|e| panic!("{file}: cannot parse: {e}"))
}

/// Whether `attrs` make an item test code: `#[test]` or `#[cfg(test)]`.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("test")
            || (attr.path().is_ident("cfg")
                && matches!(&attr.meta, syn::Meta::List(list) if list.tokens.to_string() == "test"))
    })
}

// ---------------------------------------------------------------------------------------------
// Invariant 1: every external command through xshell.

/// Lines (1-based) where a `Command` is built: a path ending in `Command::new` or
/// `Command::from`, in code or in a macro's arguments.
#[derive(Default)]
struct CommandSites {
    lines: Vec<usize>,
}

impl CommandSites {
    fn tokens(&mut self, tokens: TokenStream) {
        let flat: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, token) in flat.iter().enumerate() {
            match token {
                TokenTree::Group(group) => self.tokens(group.stream()),
                TokenTree::Ident(ident) if ident == "Command" => {
                    let rest: String = flat[i + 1..]
                        .iter()
                        .take(3)
                        .map(ToString::to_string)
                        .collect();
                    if rest == "::new" || rest == "::from" {
                        self.lines.push(ident.span().start().line);
                    }
                }
                _ => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for CommandSites {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<_> = path.segments.iter().collect();
        if let [.., ty, func] = segments.as_slice() {
            if ty.ident == "Command" && (func.ident == "new" || func.ident == "from") {
                self.lines.push(ty.ident.span().start().line);
            }
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
    }
}

/// Whether the line before `line` (1-based) of `text` is one of `markers` with a reason.
fn marked(text: &str, line: usize, markers: &[&str]) -> bool {
    let before = line
        .checked_sub(2)
        .and_then(|i| text.lines().nth(i))
        .map_or("", str::trim);
    markers
        .iter()
        .any(|m| before.starts_with(m) && before.ends_with(')') && before.len() > m.len() + 1)
}

fn command_violations(file: &str, text: &str) -> Vec<Violation> {
    let mut sites = CommandSites::default();
    sites.visit_file(&parse(file, text));
    sites
        .lines
        .into_iter()
        .filter(|&line| !marked(text, line, &MARKERS))
        .map(|line| Violation {
            file: file.to_owned(),
            line,
            what: "a std::process::Command is built here: run the command through xshell (a \
                   builder stage: `StageProgress::run`), or say on the line before why it \
                   cannot be, as `// tidy: spawn (reason)`"
                .to_owned(),
        })
        .collect()
}

#[test]
fn every_external_command_goes_through_xshell() {
    let mut found = Vec::new();
    for (file, text) in sources() {
        found.extend(command_violations(&file, &text));
    }
    let report: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "\n{}", report.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Invariant 2: the appliance is data.

/// What the image definition decides and Rust must not repeat.
struct Forbidden {
    packages: BTreeSet<String>,
    ports: BTreeSet<u16>,
    /// Sysctl keys, unit names, paths given a mode.
    policy: BTreeSet<String>,
}

/// The packages of the base definition and every target, the appliance's TCP ports, and the
/// names its policy sections set.
fn forbidden() -> Forbidden {
    let mut packages = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mut policy = BTreeSet::new();
    for target in crate::image::Target::ALL {
        let loaded = crate::image::load_definition(&[], target)
            .unwrap_or_else(|e| panic!("the image definition for {target} loads: {e:#}"));
        let image = &loaded.image;
        packages.extend(image.debian.packages.iter().cloned());
        packages.insert(image.debian.initramfs.package.clone());
        packages.extend(image.sandbox.packages.iter().cloned());
        packages.extend(loaded.target.packages.iter().cloned());
        ports.extend([
            image.ssh.port,
            image.gateway.port,
            image.gateway.canvas_port,
        ]);
        ports.extend(image.gateway.egress.tcp_ports.iter().copied());
        ports.extend(image.firewall.extra_tcp_ports.iter().copied());
        policy.extend(image.sysctl.keys().cloned());
        let services = &image.services;
        policy.extend(services.enable.iter().chain(&services.disable).cloned());
        policy.extend(services.mask.iter().cloned());
        policy.extend(image.file_modes.keys().cloned());
    }
    Forbidden {
        packages,
        ports,
        policy,
    }
}

/// Literals in non-test code (and in macro arguments) with their lines.
#[derive(Default)]
struct Literals {
    strings: Vec<(usize, String)>,
    integers: Vec<(usize, String)>,
}

impl Literals {
    fn literal(&mut self, lit: &syn::Lit) {
        match lit {
            syn::Lit::Str(s) => self.strings.push((s.span().start().line, s.value())),
            syn::Lit::Int(i) => self
                .integers
                .push((i.span().start().line, i.base10_digits().to_owned())),
            _ => {}
        }
    }

    fn tokens(&mut self, tokens: TokenStream) {
        for token in tokens {
            match token {
                TokenTree::Group(group) => self.tokens(group.stream()),
                TokenTree::Literal(literal) => self.literal(&syn::Lit::new(literal)),
                _ => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for Literals {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_test_only(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    /// Doc comments and other attributes are prose, not code.
    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {}

    fn visit_lit(&mut self, lit: &'ast syn::Lit) {
        self.literal(lit);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
    }
}

fn data_violations(file: &str, text: &str, forbidden: &Forbidden) -> Vec<Violation> {
    let mut literals = Literals::default();
    literals.visit_file(&parse(file, text));
    let mut found = Vec::new();
    let mut report = |line: usize, what: String| {
        if !marked(text, line, &[ALLOW_MARKER]) {
            found.push(Violation {
                file: file.to_owned(),
                line,
                what,
            });
        }
    };
    for (line, value) in &literals.strings {
        if forbidden.packages.contains(value) {
            report(
                *line,
                format!(
                    "names the Debian package `{value}` of the image definition: read it from \
                     the definition (or add a key to image/*.toml) instead"
                ),
            );
        }
        if forbidden.policy.contains(value) {
            report(
                *line,
                format!(
                    "names `{value}`, which the image definition sets: read it from the \
                     definition instead"
                ),
            );
        }
    }
    for (line, digits) in &literals.integers {
        if let Ok(port) = digits.parse::<u16>() {
            if forbidden.ports.contains(&port) {
                report(
                    *line,
                    format!(
                        "the literal {port} is a TCP port of the image definition: read it \
                         from the definition instead"
                    ),
                );
            }
        }
    }
    found.sort();
    found
}

#[test]
fn no_package_or_port_of_the_appliance_is_written_in_rust() {
    let forbidden = forbidden();
    assert!(
        forbidden.packages.contains("openssh-server"),
        "packages: {:?}",
        forbidden.packages
    );
    assert!(forbidden.ports.len() >= 3, "ports: {:?}", forbidden.ports);
    let mut found = Vec::new();
    for (file, text) in sources() {
        let host_side = HOST_SIDE.iter().any(|h| file.starts_with(h));
        if file != DEFINITION_TYPES && !host_side {
            found.extend(data_violations(&file, &text, &forbidden));
        }
    }
    found.sort();
    let report: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "\n{}", report.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The checks themselves: each must find a planted violation.

#[test]
fn an_unmarked_command_is_found_with_its_line_and_a_marked_one_is_not() {
    let source = r#"fn f() {
    let a = std::process::Command::new("xz");
    // tidy: spawn (killed by pid)
    let b = Command::new("qemu");
    let c = format!("{:?}", Command::from(cmd));
    let d = "Command::new in a string";
    // Command::new in a comment
}
"#;
    let found = command_violations("planted.rs", source);
    let lines: Vec<usize> = found.iter().map(|v| v.line).collect();
    assert_eq!(lines, [2, 5], "{found:?}");
    assert!(
        found[0].to_string().starts_with("planted.rs:2: "),
        "{}",
        found[0]
    );
    let empty_reason = "fn f() {\n    // tidy: spawn ()\n    Command::new(\"x\");\n}\n";
    assert_eq!(command_violations("planted.rs", empty_reason).len(), 1);
}

#[test]
fn a_planted_package_or_port_is_found_outside_tests_only() {
    let forbidden = Forbidden {
        packages: ["zstd", "openssh-server"].map(str::to_owned).into(),
        ports: [22, 18789].into(),
        policy: ["kernel.kptr_restrict".to_owned()].into(),
    };
    let source = r#"const P: [&str; 1] = ["zstd"];
fn f() {
    let packages = vec!["openssh-server"];
    let port = 18789;
    let other = 220;
    let name = "zstd-ish";
}
/// Docs may name openssh-server and 22.
fn g() {}
fn h() {
    // tidy: allow (a directory, not the package)
    let dir = "zstd";
    let key = "kernel.kptr_restrict";
}
#[cfg(test)]
mod tests {
    const EXPECTED: u16 = 22;
}
#[test]
fn expectation() { assert_eq!(port(), 22) }
"#;
    let found = data_violations("planted.rs", source, &forbidden);
    let lines: Vec<usize> = found.iter().map(|v| v.line).collect();
    assert_eq!(lines, [1, 3, 4, 13], "{found:?}");
}
