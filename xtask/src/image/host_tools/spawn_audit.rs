//! Keeps the host-tool tables complete. Reads the sources of everything that runs on the host
//! (`xtask/src/`, and the probe binary's host side in `tests/e2e/`) for the programs they
//! spawn, and fails, naming file, line and program, on one that no group of [`tools_on_host`]
//! lists and that is not on [`ALWAYS_THERE`]. A second check covers what a tool needs in one
//! case without our sources ever naming it ([`IMPLIED`], and the QEMU machine files).
//!
//! The scanner (`scanner.rs`) says what counts as a spawn.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clawfort_imagedef as imagedef;

use super::{
    tools_on_host, Group, Purpose, ToolGroup, BENCH_TOOLS, CHECK_IMAGE_TOOLS, REPO_TOOLS,
    SANDBOX_TEST_TOOLS, SBOM_TOOLS,
};

mod scanner;

use scanner::{scan, Found, Spawn};

/// Programs a fresh Debian host always has, so no table needs to list them (a table may
/// still, for the report). Essential packages cannot be removed without force; apt is
/// `Priority: required` and is how anything gets installed at all.
#[rustfmt::skip]
const ALWAYS_THERE: &[AlwaysThere] = &[
    AlwaysThere {
        package: "coreutils (Essential: yes)",
        programs: &[
            "[", "cat", "chmod", "chroot", "cp", "dd", "echo", "env", "head", "id", "ls", "mkdir",
            "mktemp", "nice", "printf", "rm", "sha256sum", "sleep", "sync", "tail", "timeout",
            "touch", "true",
        ],
    },
    AlwaysThere {
        package: "dash (Essential: yes): /bin/sh and its builtins",
        programs: &["sh", "exit", "cd", "set", "export", "kill", "wait"],
    },
    AlwaysThere { package: "findutils (Essential: yes)", programs: &["find"] },
    AlwaysThere { package: "gzip (Essential: yes)", programs: &["gzip"] },
    AlwaysThere { package: "sed (Essential: yes)", programs: &["sed"] },
    AlwaysThere { package: "tar (Essential: yes)", programs: &["tar"] },
    AlwaysThere { package: "dpkg (Essential: yes)", programs: &["dpkg", "dpkg-deb", "dpkg-query"] },
    AlwaysThere { package: "util-linux (Essential: yes)", programs: &["setpriv", "unshare"] },
    AlwaysThere {
        package: "apt (Priority: required; the host-tool installer itself runs apt-get)",
        programs: &["apt-get", "apt-cache", "apt-config", "apt-helper"],
    },
    AlwaysThere {
        package: "the Rust toolchain that runs xtask itself; rustup is optional (without it \
                  the toolchain's own targets decide, see image/gateway.rs)",
        programs: &["cargo", "rustc", "rustup"],
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
        "xtask/src/e2e/fakes.rs",
        "&program",
        "clawfort-fakes, built by fakes::build() just before (which checks the file exists)",
    ),
    (
        "xtask/src/ci.rs",
        "cargo",
        "$CARGO, the toolchain running xtask",
    ),
    (
        "tests/e2e/probes/journal.rs",
        "COLLECTOR",
        "systemd-journal-remote, in the e2e network group of host_tools.rs",
    ),
    (
        "xtask/src/bench.rs",
        "binary",
        "the gateway binary the benchmark just built",
    ),
    (
        "xtask/src/bench/example.rs",
        "{program}",
        "examples/exec_latency or sandbox_latency, built by the bench just before",
    ),
    (
        "tests/e2e/exec.rs",
        "argv",
        "exec::run(argv): its callers' `let argv = vec![\"ssh\", ..]` are scanned",
    ),
    (
        "xtask/src/image/sbom/validator.rs",
        "{pip}",
        "the virtual environment's pip, which `python3 -m venv` made just before",
    ),
    (
        "xtask/src/image/sbom/validator.rs",
        "{pyspdxtools}",
        "the SPDX tools' validator, which validator::installed() found in the environment",
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

#[rustfmt::skip]
const IMPLIED: &[Implied] = &[
    // mmdebstrap checks for these at start-up, and in --mode=root unshares a mount namespace
    // and mounts /proc, /sys and /dev in the root.
    Implied {
        by: "mmdebstrap",
        case: Case::Build,
        group: Group::Image,
        needs: &[
            "apt-get", "apt-cache", "apt-config", "dpkg", "dpkg-deb", "tar", "rm", "find", "env",
            "mount", "unshare",
        ],
    },
    // --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata: its extract and customize scripts.
    Implied {
        by: "mmdebstrap's eatmydata hooks",
        case: Case::Build,
        group: Group::Image,
        needs: &["dpkg-architecture", "apt-helper", "mktemp", "sed", "head", "sync"],
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
    crate::project_root()
}

fn always_there(program: &str) -> bool {
    ALWAYS_THERE.iter().any(|a| a.programs.contains(&program))
}

/// Every target's name and Debian architecture, from image/targets/.
fn targets() -> Vec<(String, String)> {
    let dir = repo().join("image/targets");
    imagedef::known_targets(&dir)
        .into_iter()
        .map(|name| {
            let target = imagedef::load_target(&dir, &name).unwrap();
            (name, target.debian_arch)
        })
        .collect()
}

/// qemu/<target>.toml, read only (loading it checks that the firmware is installed).
fn machine(target: &str) -> crate::qemu::Machine {
    crate::qemu::Machine::read(&repo(), target).unwrap()
}

fn groups(target: &str, arch: &str, purpose: Purpose) -> Vec<ToolGroup> {
    tools_on_host(target, arch, BUILD_HOST, purpose).unwrap()
}

/// Every probe some command checks for some target, or `bench`, `check-image` or `ci` checks.
fn every_listed_probe() -> BTreeSet<String> {
    let mut probes: BTreeSet<String> = BENCH_TOOLS
        .iter()
        .chain(CHECK_IMAGE_TOOLS)
        .chain(SANDBOX_TEST_TOOLS)
        .chain(SBOM_TOOLS)
        .chain(REPO_TOOLS)
        .map(|t| t.probe.to_string())
        .collect();
    for (name, arch) in targets() {
        for purpose in [Purpose::Build, Purpose::Boot, Purpose::Probe] {
            for group in groups(&name, &arch, purpose) {
                probes.extend(group.tools.iter().map(|t| t.probe.to_string()));
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
                             group in xtask/src/image/host_tools.rs, or to `[[host_tools]]` of \
                             qemu/<target>.toml or image/foreign-arch/<arch>.toml if only some \
                             targets need it (or, for a program of an Essential package, to \
                             ALWAYS_THERE in host_tools/spawn_audit.rs)"
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
            let triple = imagedef::load_target(&repo().join("image/targets"), &name)
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

#[test]
fn a_spawned_program_no_table_lists_is_reported() {
    let listed = every_listed_probe();
    let found = scan(r#"fn f(sh: &Shell) { cmd!(sh, "frobnicate").run(); }"#).unwrap();
    assert_eq!(found[0].spawn, Spawn::Program("frobnicate".into()));
    assert!(!listed.contains("frobnicate") && !always_there("frobnicate"));
    assert!(listed.contains("arch-test") && listed.contains("dnsmasq"));
}
