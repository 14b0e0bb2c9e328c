//! Keeps the host-tool tables complete. Reads the sources of everything that runs on the host
//! (`xtask/src/`, and the probe binary's host side in `tests/e2e/`) for the programs they
//! spawn, and fails, naming file, line and program, on one that no group of [`tools_on_host`]
//! lists and that is not on [`ALWAYS_THERE`]. A second check covers what a tool needs in one
//! case without our sources ever naming it ([`IMPLIED`], and the QEMU machine files).
//!
//! The scanner parses with `syn` rather than matching regexes: string literals come out with
//! their escapes and line continuations resolved (mmdebstrap hooks are `format!` strings split
//! over lines), comments and doc comments are never mistaken for code, and a command's
//! arguments are followed through the method chain and the `let` that holds it (`let mut
//! command = Command::new("ip"); command.args(["netns", "exec", ns, "dnsmasq"])`), which a
//! line-based regex cannot do.
//!
//! What counts as a spawn:
//! - `cmd!(sh, "prog ...")` (xshell), `Command::new(..)`, `sh.cmd(..)`, and `.command(..)`
//!   (the private network's "run this in the namespace");
//! - a `let argv = [..]` / `vec![..]`: by this code base's convention `argv` is a whole command
//!   line, program first (it is handed to `exec::run` or `.args` after a wrapper);
//! - an array starting `"ip", "netns", "exec"`;
//! - mmdebstrap's `--*-hook=` strings, which are shell run on the host;
//! - and, in any of those, the program a wrapper runs: `timeout [opts] N prog`,
//!   `ip netns exec NS prog`, `sh -c 'script'`. `chroot ROOT prog` runs the image's program,
//!   not the host's, so what follows `chroot` is skipped; so are the guest commands the probes
//!   send over SSH (they are strings, never spawns).
//!
//! A program chosen at run time (a variable) must be on [`DYNAMIC`], which says where it
//! comes from and what covers it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::visit::{self, Visit};
use syn::{Expr, ExprMethodCall, LitStr, Pat, Token};

use super::{tools_on_host, Group, Purpose, ToolGroup, BENCH_TOOLS};
use crate::image::config;

/// Programs a fresh Debian host always has, so no table needs to list them (a table may
/// still, for the report). Essential packages cannot be removed without force; apt is
/// `Priority: required` and is how anything gets installed at all.
const ALWAYS_THERE: &[AlwaysThere] = &[
    AlwaysThere {
        package: "coreutils (Essential: yes)",
        programs: &[
            "[",
            "chmod",
            "chroot",
            "cp",
            "dd",
            "echo",
            "env",
            "head",
            "id",
            "ls",
            "mkdir",
            "mktemp",
            "printf",
            "rm",
            "sha256sum",
            "sync",
            "timeout",
            "true",
        ],
    },
    AlwaysThere {
        package: "dash (Essential: yes): /bin/sh and its builtins",
        programs: &["sh", "exit"],
    },
    AlwaysThere {
        package: "findutils (Essential: yes)",
        programs: &["find"],
    },
    AlwaysThere {
        package: "sed (Essential: yes)",
        programs: &["sed"],
    },
    AlwaysThere {
        package: "tar (Essential: yes)",
        programs: &["tar"],
    },
    AlwaysThere {
        package: "dpkg (Essential: yes)",
        programs: &["dpkg", "dpkg-deb", "dpkg-query"],
    },
    AlwaysThere {
        package: "util-linux (Essential: yes)",
        programs: &["unshare"],
    },
    AlwaysThere {
        package: "apt (Priority: required; the host-tool installer itself runs apt-get)",
        programs: &["apt-get", "apt-cache", "apt-config", "apt-helper"],
    },
    AlwaysThere {
        package: "the Rust toolchain that runs xtask itself; rustup is optional (without it \
                  the toolchain's own targets decide, see image/gateway.rs)",
        programs: &["cargo", "rustup"],
    },
];

struct AlwaysThere {
    /// The package, and why it is always there.
    package: &'static str,
    programs: &'static [&'static str],
}

/// Program positions holding a variable: the file, the expression as written, and where the
/// program comes from.
const DYNAMIC: &[(&str, &str, &str)] = &[
    (
        "xtask/src/qemu/accel.rs",
        "&machine.binary",
        "qemu/<target>.toml `binary`: checked against the boot group below",
    ),
    (
        "xtask/src/qemu/vm.rs",
        "&argv[0]",
        "VmSpec::command_line: `ip netns exec` (scanned) or qemu/<target>.toml `binary`",
    ),
    (
        "xtask/src/qemu/netns.rs",
        "program",
        "PrivateNetwork::command(program): its callers' literals are scanned",
    ),
    (
        "xtask/src/e2e/boot.rs",
        "&argv",
        "ssh_argv(): `let argv = [\"ssh\", ..]`, scanned",
    ),
    (
        "xtask/src/e2e/boot.rs",
        "&cargo",
        "$CARGO, the toolchain running xtask",
    ),
    (
        "xtask/src/ci.rs",
        "cargo",
        "$CARGO, the toolchain running xtask",
    ),
    (
        "xtask/src/bench.rs",
        "binary",
        "the gateway binary the benchmark just built",
    ),
    (
        "tests/e2e/exec.rs",
        "argv",
        "exec::run(argv): its callers' `let argv = vec![\"ssh\", ..]` are scanned",
    ),
    (
        "xtask/src/image/host_tools.rs",
        "{program}",
        "`<tool> --version` of a table's own tool",
    ),
];

/// When an implied need applies.
#[derive(Debug, Clone, Copy)]
enum Case {
    /// Every image build.
    Build,
    /// Building an image whose architecture is not the host's.
    ForeignArchBuild,
    /// Booting a target whose qemu/<target>.toml has this NIC.
    BootWithNic(&'static str),
}

/// What a tool runs or reads in one case, which our sources never name.
struct Implied {
    by: &'static str,
    case: Case,
    /// The group, of the case's purpose, that must list each need.
    group: Group,
    needs: &'static [&'static str],
}

const IMPLIED: &[Implied] = &[
    // mmdebstrap checks for these at start-up, and in --mode=root unshares a mount namespace
    // and mounts /proc, /sys and /dev in the root.
    Implied {
        by: "mmdebstrap",
        case: Case::Build,
        group: Group::Image,
        needs: &[
            "apt-get",
            "apt-cache",
            "apt-config",
            "dpkg",
            "dpkg-deb",
            "tar",
            "rm",
            "find",
            "env",
            "mount",
            "unshare",
        ],
    },
    // --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata: its extract and customize scripts.
    Implied {
        by: "mmdebstrap's eatmydata hooks",
        case: Case::Build,
        group: Group::Image,
        needs: &[
            "dpkg-architecture",
            "apt-helper",
            "mktemp",
            "sed",
            "head",
            "sync",
        ],
    },
    // The sources file the builder hands mmdebstrap names it as Signed-By.
    Implied {
        by: "mmdebstrap (apt)",
        case: Case::Build,
        group: Group::Image,
        needs: &["/usr/share/keyrings/debian-archive-keyring.gpg"],
    },
    // mmdebstrap refuses a foreign --arch without arch-test, and the chroot's programs run
    // through qemu-user's binfmt_misc registration.
    Implied {
        by: "mmdebstrap --arch=arm64 on amd64",
        case: Case::ForeignArchBuild,
        group: Group::ForeignArch,
        needs: &["arch-test", "/usr/lib/binfmt.d/qemu-aarch64.conf"],
    },
    // The cross linker (named in .cargo/config.toml, checked below) links against the
    // target's C runtime.
    Implied {
        by: "cargo build --target aarch64-unknown-linux-gnu",
        case: Case::ForeignArchBuild,
        group: Group::ForeignArch,
        needs: &["/usr/aarch64-linux-gnu/lib/crt1.o"],
    },
    // QEMU loads the NIC's option ROM and refuses to start without it; qemu-system-arm only
    // recommends the package that has it.
    Implied {
        by: "qemu-system-* -device virtio-net-pci",
        case: Case::BootWithNic("virtio-net-pci"),
        group: Group::Boot,
        needs: &["/usr/lib/ipxe/qemu/efi-virtio.rom"],
    },
];

/// The host architecture builds run on (the only one supported: arm64 images on amd64).
const BUILD_HOST: &str = "amd64";

fn repo() -> PathBuf {
    crate::image::repo_root()
}

fn always_there(program: &str) -> bool {
    ALWAYS_THERE.iter().any(|a| a.programs.contains(&program))
}

/// Every target's name and Debian architecture, from image/targets/.
fn targets() -> Vec<(String, String)> {
    let dir = repo().join("image/targets");
    config::known_targets(&dir)
        .into_iter()
        .map(|name| {
            let target = config::load_target(&dir, &name).unwrap();
            (name, target.debian_arch)
        })
        .collect()
}

/// qemu/<target>.toml, parsed only (loading it checks that the firmware is installed).
fn machine(target: &str) -> crate::qemu::Machine {
    let path = repo().join(format!("qemu/{target}.toml"));
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn groups(target: &str, arch: &str, purpose: Purpose) -> Vec<ToolGroup> {
    tools_on_host(target, arch, BUILD_HOST, purpose).unwrap()
}

/// Every probe some command checks for some target, or `bench` checks.
fn every_listed_probe() -> BTreeSet<&'static str> {
    let mut probes: BTreeSet<&str> = BENCH_TOOLS.iter().map(|t| t.probe).collect();
    for (name, arch) in targets() {
        for purpose in [Purpose::Build, Purpose::Boot, Purpose::Probe] {
            for group in groups(&name, &arch, purpose) {
                probes.extend(group.tools.iter().map(|t| t.probe));
            }
        }
    }
    probes
}

/// The files that run on the host: the xtask and the probe binary's host side.
fn host_side_sources() -> Vec<PathBuf> {
    let repo = repo();
    let mut files: Vec<PathBuf> = ["xtask/src", "tests/e2e"]
        .iter()
        .flat_map(|dir| walkdir::WalkDir::new(repo.join(dir)))
        .map(|entry| entry.unwrap().into_path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_program_the_host_side_spawns_is_in_a_host_tool_table() {
    let listed = every_listed_probe();
    let mut problems = Vec::new();
    let mut dynamic_seen = BTreeSet::new();
    for path in host_side_sources() {
        let file = relative(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        let spawns = scan(&text).unwrap_or_else(|err| panic!("{file}: {err}"));
        for Found { line, spawn } in spawns {
            match spawn {
                Spawn::Program(program) => {
                    if !listed.contains(program.as_str()) && !always_there(&program) {
                        problems.push(format!(
                            "{file}:{line}: `{program}` runs on the host, but no host-tool \
                             table lists it: add it with its Debian package to the right \
                             group in xtask/src/image/host_tools.rs (or, for a program of an \
                             Essential package, to ALWAYS_THERE in host_tools/spawn_audit.rs)"
                        ));
                    }
                }
                Spawn::Dynamic(expr) => {
                    match DYNAMIC
                        .iter()
                        .position(|(f, e, _)| *f == file && *e == expr)
                    {
                        Some(index) => {
                            dynamic_seen.insert(index);
                        }
                        None => problems.push(format!(
                            "{file}:{line}: the program `{expr}` is chosen at run time: add it \
                             to DYNAMIC in host_tools/spawn_audit.rs, saying where it comes \
                             from and what checks that it is installed"
                        )),
                    }
                }
            }
        }
    }
    for (index, (file, expr, _)) in DYNAMIC.iter().enumerate() {
        if !dynamic_seen.contains(&index) {
            problems.push(format!(
                "DYNAMIC names `{expr}` in {file}, which spawns no such program any more: \
                 remove the entry"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn every_implied_need_is_in_the_group_of_its_case() {
    let mut problems = Vec::new();
    for (name, arch) in targets() {
        let machine = machine(&name);
        for implied in IMPLIED {
            let (applies, purpose) = match implied.case {
                Case::Build => (true, Purpose::Build),
                Case::ForeignArchBuild => (arch != BUILD_HOST, Purpose::Build),
                Case::BootWithNic(nic) => (machine.devices.nic == nic, Purpose::Boot),
            };
            if !applies {
                continue;
            }
            let groups = groups(&name, &arch, purpose);
            for need in implied.needs {
                let listed = groups
                    .iter()
                    .any(|g| g.group == implied.group && g.tools.iter().any(|t| t.probe == *need));
                if !listed && !always_there(need) {
                    problems.push(format!(
                        "target {name}: {} needs `{need}` ({:?}), which the `{}` group of \
                         {purpose:?} does not list",
                        implied.by,
                        implied.case,
                        implied.group.name()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// What qemu/<target>.toml names (emulator, firmware) and the cross linker .cargo/config.toml
/// names must be in the group that installs them.
#[test]
fn machine_files_and_the_cross_linker_name_only_listed_tools() {
    let cargo_config: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join(".cargo/config.toml")).unwrap())
            .unwrap();
    let mut problems = Vec::new();
    for (name, arch) in targets() {
        let has = |purpose, group: Group, probe: &str| {
            groups(&name, &arch, purpose)
                .iter()
                .any(|g| g.group == group && g.tools.iter().any(|t| t.probe == probe))
        };
        let machine = machine(&name);
        let mut boot_needs = vec![machine.binary.clone()];
        if let crate::qemu::machine::Boot::Uefi(firmware) = &machine.boot {
            boot_needs.push(firmware.code.display().to_string());
            boot_needs.push(firmware.vars.display().to_string());
        }
        for need in boot_needs {
            for purpose in [Purpose::Build, Purpose::Boot, Purpose::Probe] {
                if !has(purpose, Group::Boot, &need) {
                    problems.push(format!(
                        "qemu/{name}.toml names `{need}`, which the boot group of \
                         {purpose:?} does not list"
                    ));
                }
            }
        }
        if arch != BUILD_HOST {
            let triple = config::load_target(&repo().join("image/targets"), &name)
                .unwrap()
                .rust_triple;
            let linker = cargo_config["target"][&triple]["linker"].as_str().unwrap();
            if !has(Purpose::Build, Group::ForeignArch, linker) {
                problems.push(format!(
                    ".cargo/config.toml links {triple} with `{linker}`, which the \
                     foreign-arch group does not list"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// An allowlist entry nothing uses any more only hides the next mistake.
#[test]
fn every_always_there_program_is_still_used() {
    let mut used: BTreeSet<String> = IMPLIED
        .iter()
        .flat_map(|i| i.needs.iter().map(|n| n.to_string()))
        .collect();
    for path in host_side_sources() {
        for found in scan(&std::fs::read_to_string(&path).unwrap()).unwrap() {
            if let Spawn::Program(program) = found.spawn {
                used.insert(program);
            }
        }
    }
    let unused: Vec<String> = ALWAYS_THERE
        .iter()
        .flat_map(|a| a.programs.iter().map(move |p| (p, a.package)))
        .filter(|(p, _)| !used.contains(**p))
        .map(|(p, package)| format!("`{p}` ({package})"))
        .collect();
    assert!(
        unused.is_empty(),
        "ALWAYS_THERE lists programs nothing runs any more; remove them: {}",
        unused.join(", ")
    );
}

// --- The scanner ------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Spawn {
    /// A program named literally.
    Program(String),
    /// A program chosen at run time: the expression as written.
    Dynamic(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    line: usize,
    spawn: Spawn,
}

/// One word of a command line.
#[derive(Debug, Clone)]
enum Arg {
    Lit(String),
    /// One word whose value is known only at run time.
    Dynamic(String),
    /// Any number of words (`.args(&argv)`).
    Spread(String),
}

#[derive(Debug, Clone)]
struct Word {
    arg: Arg,
    line: usize,
}

/// The programs `source` spawns, in order.
fn scan(source: &str) -> syn::Result<Vec<Found>> {
    let file = syn::parse_file(source)?;
    let mut scanner = Scanner::default();
    scanner.visit_file(&file);
    let mut found = scanner.found;
    for command in &scanner.commands {
        programs(command, &mut found);
    }
    found.sort_by_key(|f| f.line);
    Ok(found)
}

#[derive(Default)]
struct Scanner {
    /// Command lines built from `Command::new` and the `.arg`/`.args` calls on it.
    commands: Vec<Vec<Word>>,
    /// `let` bindings holding a command line, by name (per file: names are reused, but a
    /// command is always configured right after its `let`).
    vars: Vec<(String, usize)>,
    /// Spawns found directly (cmd!, hooks).
    found: Vec<Found>,
}

fn line(span: Span) -> usize {
    span.start().line
}

fn text(expr: &Expr) -> String {
    expr.span()
        .source_text()
        .unwrap_or_else(|| "<macro-generated>".to_owned())
}

fn word(expr: &Expr) -> Word {
    let arg = match expr {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Arg::Lit(lit.value()),
        other => Arg::Dynamic(text(other)),
    };
    Word {
        arg,
        line: line(expr.span()),
    }
}

/// The elements of an array literal (`[..]`, `&[..]`, `vec![..]`), if `expr` is one.
fn list(expr: &Expr) -> Option<Vec<Word>> {
    match expr {
        Expr::Array(array) => Some(array.elems.iter().map(word).collect()),
        Expr::Reference(reference) => list(&reference.expr),
        Expr::Macro(mac) if mac.mac.path.is_ident("vec") => {
            let elems = mac
                .mac
                .parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated)
                .ok()?;
            Some(elems.iter().map(word).collect())
        }
        _ => None,
    }
}

/// The words `.args(expr)` adds.
fn words(expr: &Expr) -> Vec<Word> {
    list(expr).unwrap_or_else(|| {
        vec![Word {
            arg: Arg::Spread(text(expr)),
            line: line(expr.span()),
        }]
    })
}

fn is_command_new(call: &syn::ExprCall) -> bool {
    let Expr::Path(path) = &*call.func else {
        return false;
    };
    let names: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    names.ends_with(&["Command".to_owned(), "new".to_owned()]) && call.args.len() == 1
}

impl Scanner {
    fn start(&mut self, first: Word) -> usize {
        self.commands.push(vec![first]);
        self.commands.len() - 1
    }

    /// Handles `expr` if it is a command being built (`Command::new(..)` and the calls on it,
    /// `x.cmd(..)`, `x.command(..)`, or calls on a variable holding one), visiting the
    /// expressions nested in it; returns the command's index.
    fn command_chain(&mut self, expr: &Expr) -> Option<usize> {
        let mut calls: Vec<&ExprMethodCall> = Vec::new();
        let mut root = expr;
        while let Expr::MethodCall(call) = root {
            calls.push(call);
            root = &call.receiver;
        }
        calls.reverse();
        let (index, rest) = match root {
            Expr::Call(call) if is_command_new(call) => (self.start(word(&call.args[0])), 0),
            _ => {
                let spawning = calls.iter().position(|c| {
                    (c.method == "cmd" || c.method == "command") && c.args.len() == 1
                });
                match (spawning, root) {
                    (Some(at), _) => (self.start(word(&calls[at].args[0])), at + 1),
                    (None, Expr::Path(path)) => {
                        let name = path.path.get_ident()?.to_string();
                        let (_, index) = self.vars.iter().rev().find(|(n, _)| *n == name)?;
                        (*index, 0)
                    }
                    _ => return None,
                }
            }
        };
        for call in &calls[rest..] {
            match call.method.to_string().as_str() {
                "arg" if call.args.len() == 1 => self.commands[index].push(word(&call.args[0])),
                "args" if call.args.len() == 1 => {
                    let added = words(&call.args[0]);
                    self.commands[index].extend(added);
                }
                _ => {}
            }
        }
        if !matches!(root, Expr::Path(_)) {
            visit::visit_expr(self, root);
        }
        for call in calls {
            for arg in &call.args {
                // A list's words were taken above: visit its elements, not the list again.
                match arg {
                    Expr::Array(array) => array.elems.iter().for_each(|e| self.visit_expr(e)),
                    other => self.visit_expr(other),
                }
            }
        }
        Some(index)
    }

    /// An mmdebstrap hook: shell run on the host with the root as `$1`.
    fn hook(&mut self, lit: &LitStr) {
        let value = lit.value();
        let Some(script) = [
            "--setup-hook=",
            "--extract-hook=",
            "--essential-hook=",
            "--customize-hook=",
        ]
        .iter()
        .find_map(|prefix| value.strip_prefix(prefix)) else {
            return;
        };
        // mmdebstrap's own hook commands (`sync-in DIR DIR` ...) are not programs.
        let special = [
            "copy-in", "copy-out", "tar-in", "tar-out", "sync-in", "sync-out", "upload", "download",
        ];
        if special.contains(&script.split_whitespace().next().unwrap_or_default()) {
            return;
        }
        shell(script, line(lit.span()), &mut self.found);
    }
}

impl<'ast> Visit<'ast> for Scanner {
    fn visit_expr(&mut self, expr: &'ast Expr) {
        if self.command_chain(expr).is_none() {
            visit::visit_expr(self, expr);
        }
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        let name = match &local.pat {
            Pat::Ident(ident) => Some(ident.ident.to_string()),
            Pat::Type(typed) => match &*typed.pat {
                Pat::Ident(ident) => Some(ident.ident.to_string()),
                _ => None,
            },
            _ => None,
        };
        let Some(init) = &local.init else {
            return visit::visit_local(self, local);
        };
        if let (Some(name), Some(index)) = (&name, self.command_chain(&init.expr)) {
            self.vars.push((name.clone(), index));
        } else {
            if name.as_deref() == Some("argv") {
                // The convention: `argv` is a whole command line, program first.
                let mut inner = &*init.expr;
                while let Expr::MethodCall(call) = inner {
                    inner = &call.receiver;
                }
                if let Some(words) = list(inner) {
                    self.commands.push(words);
                }
            }
            self.visit_expr(&init.expr);
        }
        if let Some((_, diverge)) = &init.diverge {
            self.visit_expr(diverge);
        }
    }

    fn visit_expr_array(&mut self, array: &'ast syn::ExprArray) {
        let words: Vec<Word> = array.elems.iter().map(word).collect();
        let starts_ip_netns_exec = words
            .iter()
            .take(3)
            .map(|w| match &w.arg {
                Arg::Lit(lit) => lit.as_str(),
                _ => "",
            })
            .eq("ip netns exec".split(' '));
        if starts_ip_netns_exec {
            self.commands.push(words);
        }
        visit::visit_expr_array(self, array);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let name = mac
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default();
        if name == "cmd" {
            // xshell: `cmd!(sh, "program args {var} {list...}")`.
            let parsed = mac.parse_body_with(|input: syn::parse::ParseStream| {
                input.parse::<Expr>()?;
                input.parse::<Token![,]>()?;
                input.parse::<LitStr>()
            });
            if let Ok(lit) = parsed {
                let at = line(lit.span());
                let words = shell_words(&lit.value())
                    .into_iter()
                    .map(|(w, _)| Word {
                        arg: if w.contains('{') {
                            Arg::Dynamic(w)
                        } else {
                            Arg::Lit(w)
                        },
                        line: at,
                    })
                    .collect();
                self.commands.push(words);
            }
            return;
        }
        // Other macros (format!, vec!, bail!...): their arguments are expressions, which may
        // hold hooks or commands.
        if let Ok(args) = mac.parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated) {
            for arg in &args {
                self.visit_expr(arg);
            }
        }
    }

    fn visit_lit_str(&mut self, lit: &'ast LitStr) {
        self.hook(lit);
    }

    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {
        // Doc comments and attributes are text, never commands.
    }
}

/// The programs one command line runs: its program, and what a wrapper in it runs.
fn programs(words: &[Word], found: &mut Vec<Found>) {
    let Some(first) = words.first() else {
        return;
    };
    let program = match &first.arg {
        Arg::Lit(program) => program.as_str(),
        Arg::Dynamic(expr) | Arg::Spread(expr) => {
            found.push(Found {
                line: first.line,
                spawn: Spawn::Dynamic(expr.clone()),
            });
            return;
        }
    };
    found.push(Found {
        line: first.line,
        spawn: Spawn::Program(program.to_owned()),
    });
    let rest = &words[1..];
    let lit = |i: usize| match rest.get(i).map(|w| &w.arg) {
        Some(Arg::Lit(lit)) => Some(lit.as_str()),
        _ => None,
    };
    // Where the wrapped program starts, if this is a wrapper.
    let wrapped = match program {
        "timeout" => {
            let options = (0..rest.len())
                .take_while(|&i| lit(i).is_some_and(|w| w.starts_with('-')))
                .count();
            // A spread before the program hides where the program is: report it.
            match rest.get(options).map(|w| &w.arg) {
                Some(Arg::Spread(_)) => Some(options),
                Some(_) => Some(options + 1),
                None => None,
            }
        }
        "ip" if lit(0) == Some("netns") && lit(1) == Some("exec") => Some(3),
        "sh" | "bash" if lit(0) == Some("-c") => {
            if let Some(script) = lit(1) {
                shell(script, rest[1].line, found);
            }
            None
        }
        // `chroot ROOT program` runs the image's program, not the host's.
        _ => None,
    };
    if let Some(at) = wrapped.filter(|&at| at < rest.len()) {
        programs(&rest[at..], found);
    }
}

/// Splits like a POSIX shell does at the level that matters here: words (quotes removed,
/// `true` when a word had quotes) and the operators between commands as `None`.
fn shell_tokens(script: &str) -> Vec<Option<(String, bool)>> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut chars = script.chars().peekable();
    let finish = |word: &mut String, quoted: &mut bool, in_word: &mut bool, tokens: &mut Vec<_>| {
        if *in_word {
            tokens.push(Some((std::mem::take(word), *quoted)));
        }
        *quoted = false;
        *in_word = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                quoted = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                quoted = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            ';' | '|' | '\n' => {
                finish(&mut word, &mut quoted, &mut in_word, &mut tokens);
                tokens.push(None);
            }
            '&' if chars.peek() == Some(&'&') => {
                chars.next();
                finish(&mut word, &mut quoted, &mut in_word, &mut tokens);
                tokens.push(None);
            }
            c if c.is_whitespace() => finish(&mut word, &mut quoted, &mut in_word, &mut tokens),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    finish(&mut word, &mut quoted, &mut in_word, &mut tokens);
    tokens
}

/// The words of a one-command string (xshell's `cmd!`, which has no operators).
fn shell_words(text: &str) -> Vec<(String, bool)> {
    shell_tokens(text).into_iter().flatten().collect()
}

/// The programs a shell script runs on the host, reported at `line`.
fn shell(script: &str, line: usize, found: &mut Vec<Found>) {
    let tokens = shell_tokens(script);
    for command in tokens.split(Option::is_none) {
        let mut words: Vec<&(String, bool)> = command.iter().flatten().collect();
        // Redirections (`> FILE`, `2>&1`, `>/dev/null`) are not words of the command.
        let mut kept = Vec::new();
        let mut skip_next = false;
        for word in words.drain(..) {
            let (text, quoted) = word;
            if skip_next {
                skip_next = false;
                continue;
            }
            let redirect = !quoted
                && text
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .starts_with(['>', '<']);
            if redirect {
                skip_next = matches!(
                    text.trim_start_matches(|c: char| c.is_ascii_digit()),
                    ">" | ">>" | "<"
                );
                continue;
            }
            kept.push((text.as_str(), *quoted));
        }
        // Keywords that lead into a command, and variable assignments before it.
        let start = kept
            .iter()
            .take_while(|(w, quoted)| {
                !quoted
                    && ([
                        "if", "then", "else", "elif", "do", "while", "until", "!", "{",
                    ]
                    .contains(w)
                        || w.split_once('=').is_some_and(|(name, _)| {
                            !name.is_empty()
                                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        }))
            })
            .count();
        let kept = &kept[start..];
        if kept
            .first()
            .is_none_or(|(w, _)| ["fi", "done", "}"].contains(w))
        {
            continue;
        }
        let words: Vec<Word> = kept
            .iter()
            .map(|(w, _)| Word {
                arg: if w.contains('$') {
                    Arg::Dynamic((*w).to_owned())
                } else {
                    Arg::Lit((*w).to_owned())
                },
                line,
            })
            .collect();
        programs(&words, found);
    }
}

#[cfg(test)]
mod scanner_tests {
    use super::*;

    fn programs_in(source: &str) -> Vec<String> {
        scan(source)
            .unwrap()
            .into_iter()
            .map(|f| match f.spawn {
                Spawn::Program(p) => p,
                Spawn::Dynamic(e) => format!("dynamic:{e}"),
            })
            .collect()
    }

    #[test]
    fn finds_each_spawn_form_with_its_line() {
        let source = r#"
fn build(sh: &Shell, root: &Path, ns: &str, list: &[String]) {
    cmd!(sh, "frobnicate --now {root}").run();
    cmd!(
        sh,
        "chroot {root} useradd --create-home admin"
    ).run();
    let status = std::process::Command::new("xz").args(["-T0"]).status();
    let mut dhcp = Command::new("ip");
    dhcp.args(["netns", "exec", ns, "dnsmasq", "--port=0"]).arg("--log-dhcp");
    let mut limited = Command::new("timeout");
    limited.args(["--kill-after=5", &secs]);
    limited.args(["ip", "netns", "exec", ns]);
    limited.args(list);
    network.command("timeout").arg("180").args(&ssh);
    sh.cmd("wrk").arg("--version");
    let mut argv: Vec<&str> = vec!["ssh", "-b", &source];
    let hooks = vec![format!(
        "--customize-hook=if [ -x \"$1\"/x ]; then chroot \"$1\" python3 -m x || true; fi && \
         mkdir -p \"$1\"/y > /dev/null 2>&1; echo {n} | sha512sum"
    )];
    let copy = "--setup-hook=sync-in {cache} /var/cache/apt/archives/";
    cmd!(sh, "sh -c 'xz -dc \"$0\" | dd of=\"$1\"' {a} {b}");
    /// Doc comments are no code: cmd!(sh, "nothing-here")
    let guest = session.run("nft list ruleset");
}
"#;
        let found = scan(source).unwrap();
        assert_eq!(
            programs_in(source),
            [
                "frobnicate",
                "chroot",
                "xz",
                "ip",
                "dnsmasq",
                "timeout",
                "ip",
                "dynamic:list",
                "timeout",
                "dynamic:&ssh",
                "wrk",
                "ssh",
                "[",
                "chroot",
                "true",
                "mkdir",
                "echo",
                "sha512sum",
                "sh",
                "xz",
                "dd",
            ]
            .map(str::to_owned),
            "{found:#?}"
        );
        assert_eq!(found[0].line, 3, "{found:#?}");
        let dnsmasq = found
            .iter()
            .find(|f| f.spawn == Spawn::Program("dnsmasq".into()))
            .unwrap();
        assert_eq!(dnsmasq.line, 10);
    }

    #[test]
    fn a_spawned_program_no_table_lists_is_reported() {
        let listed = every_listed_probe();
        let found = programs_in(r#"fn f(sh: &Shell) { cmd!(sh, "frobnicate").run(); }"#);
        assert_eq!(found, ["frobnicate"]);
        assert!(!listed.contains("frobnicate") && !always_there("frobnicate"));
        assert!(listed.contains("arch-test") && listed.contains("dnsmasq"));
    }
}
