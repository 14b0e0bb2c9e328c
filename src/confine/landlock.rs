//! The Landlock side of host confinement: what the kernel offers, and the ruleset built
//! from a [`Policy`](super::Policy) in the parent, before the fork.
//!
//! Building (creating the ruleset descriptor, opening each path with `O_PATH`, adding the
//! rules) allocates and may fail with a message, so it happens in the gateway; the child
//! only calls `prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self` (see `child`).
//!
//! Every access right the running kernel knows (clamped to what the crate knows) is handled,
//! as a hard requirement: a kernel that cannot enforce one of them fails the build instead of
//! silently enforcing less. Below ABI 3 (Linux 6.2) nothing runs at all: without the
//! truncate right a command could empty any file it may only read.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope, ABI,
};

/// The oldest Landlock ABI host execution accepts: 3 adds `truncate`.
pub const MIN_ABI: u8 = 3;

/// What the kernel enforces, probed once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    abi: ABI,
}

impl Support {
    /// The Landlock ABI version in use (the kernel's, capped at the newest the crate knows).
    pub fn abi(self) -> u8 {
        self.abi as u8
    }

    /// Whether TCP `connect`/`bind` are confined (ABI 4, Linux 6.7).
    pub fn tcp(self) -> bool {
        !AccessNet::from_all(self.abi).is_empty()
    }

    /// Whether abstract unix sockets and signals are scoped to the sandbox (ABI 6, Linux 6.12).
    pub fn scopes(self) -> bool {
        !Scope::from_all(self.abi).is_empty()
    }

    /// One line for logs, `/api/status` and the audit.
    pub fn describe(self) -> String {
        let mut parts = vec![format!("Landlock ABI {}: files", self.abi())];
        if self.tcp() {
            parts.push("TCP ports".into());
        }
        if self.scopes() {
            parts.push("abstract sockets and signals".into());
        }
        parts.join(", ")
    }
}

/// The ABIs the crate knows, newest first.
const ABIS: [ABI; 10] = [
    ABI::V10,
    ABI::V9,
    ABI::V8,
    ABI::V7,
    ABI::V6,
    ABI::V5,
    ABI::V4,
    ABI::V3,
    ABI::V2,
    ABI::V1,
];

/// The newest ABI whose every right the kernel enforces; `Err` says why host execution must
/// be refused (no Landlock at all, or one older than [`MIN_ABI`]).
pub fn support() -> Result<Support, String> {
    static PROBED: OnceLock<Result<Support, String>> = OnceLock::new();
    PROBED.get_or_init(probe).clone()
}

fn probe() -> Result<Support, String> {
    let enforceable = |abi: ABI| handled(Ruleset::default(), abi).is_ok_and(|r| r.create().is_ok());
    match ABIS.into_iter().find(|&abi| enforceable(abi)) {
        Some(abi) if abi as u8 >= MIN_ABI => Ok(Support { abi }),
        Some(abi) => Err(format!(
            "the kernel offers Landlock ABI {} only; host execution needs ABI {MIN_ABI} \
             (Linux 6.2 or later), whose truncate right keeps a command from emptying files \
             it may only read",
            abi as u8
        )),
        None => Err(
            "the kernel has no Landlock (it needs Linux 5.13 or later with `landlock` \
             in the `lsm=` boot parameter or CONFIG_LSM); without it a command would reach \
             every file of the service user, ~/.openclaw/.env included"
                .into(),
        ),
    }
}

/// A ruleset handling every right of `abi`, each a hard requirement.
fn handled(ruleset: Ruleset, abi: ABI) -> Result<Ruleset, landlock::RulesetError> {
    let mut ruleset = ruleset
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))?;
    if !AccessNet::from_all(abi).is_empty() {
        ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
    }
    if !Scope::from_all(abi).is_empty() {
        ruleset = ruleset.scope(Scope::from_all(abi))?;
    }
    Ok(ruleset)
}

/// What one grant gives beneath its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Everything: read, write, create, remove, execute.
    ReadWrite,
    /// Read files, list directories, execute.
    ReadExecute,
    /// A device such as `/dev/null`: read, write and truncate (`> /dev/null` truncates).
    Device,
    /// A device such as `/dev/urandom`: read only.
    ReadDevice,
}

impl Grant {
    fn access(self, abi: ABI) -> BitFlags<AccessFs> {
        match self {
            Grant::ReadWrite => AccessFs::from_all(abi),
            Grant::ReadExecute => AccessFs::from_read(abi),
            Grant::Device => AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate,
            Grant::ReadDevice => AccessFs::ReadFile.into(),
        }
    }
}

/// One path of the ruleset and what it may do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub path: PathBuf,
    pub grant: Grant,
}

/// The ruleset for `rules` and TCP `connect` to `connect_ports`, ready for
/// `restrict_self` in the child. A path that does not exist is left out (`/lib32` on most
/// machines); any other failure is an error naming the path.
pub fn build(
    support: Support,
    rules: &[Rule],
    connect_ports: &[u16],
) -> Result<RulesetCreated, String> {
    let abi = support.abi;
    let mut created = handled(Ruleset::default(), abi)
        .and_then(Ruleset::create)
        .map_err(|e| format!("cannot create the Landlock ruleset: {e}"))?;
    for rule in rules {
        let fd = match PathFd::new(&rule.path) {
            Ok(fd) => fd,
            Err(landlock::PathFdError::OpenCall { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(e) => return Err(format!("cannot open {}: {e}", rule.path.display())),
        };
        let mut access = rule.grant.access(abi);
        if !is_dir(&rule.path) {
            // Directory rights on a file are refused by the kernel.
            access &= AccessFs::from_file(abi);
        }
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| {
                format!(
                    "cannot add the Landlock rule for {}: {e}",
                    rule.path.display()
                )
            })?;
    }
    if support.tcp() {
        for &port in connect_ports {
            created = created
                .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
                .map_err(|e| format!("cannot allow TCP port {port}: {e}"))?;
        }
    }
    Ok(created)
}

fn is_dir(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}
