//! A seccomp filter for what Landlock leaves open to a command: sockets other than TCP.
//!
//! Landlock (up to ABI 8) confines TCP ports but neither UDP nor connecting to a pathname
//! unix socket, so without this a command could send datagrams anywhere and talk to every
//! socket its user may open: on the appliance the egress proxy's (an unauthenticated way out
//! to the providers' and Telegram's hosts), the journal's, a rootless Docker daemon's.
//! `socket(2)` is therefore allowed for `AF_INET`/`AF_INET6` streams only (which Landlock's
//! TCP rules then confine) and fails with `EACCES` for everything else; `io_uring_setup`,
//! whose requests can open sockets past this filter, fails the same way. `socketpair` stays
//! (unnamed, it reaches nobody). The program is compiled in the gateway; the child installs
//! it with one system call.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The compiled filter for this machine's architecture, built once.
pub fn filter() -> Result<&'static BpfProgram, String> {
    static FILTER: OnceLock<Result<BpfProgram, String>> = OnceLock::new();
    FILTER.get_or_init(compile).as_ref().map_err(Clone::clone)
}

fn compile() -> Result<BpfProgram, String> {
    let fail = |e: seccompiler::BackendError| format!("cannot build the socket filter: {e}");
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no socket filter for this architecture: {e}"))?;
    let arg = |index, op, value| {
        SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value).map_err(fail)
    };
    // Deny: a family other than the two IP ones ...
    let mut socket = vec![SeccompRule::new(vec![
        arg(0, SeccompCmpOp::Ne, libc::AF_INET as u64)?,
        arg(0, SeccompCmpOp::Ne, libc::AF_INET6 as u64)?,
    ])
    .map_err(fail)?];
    // ... or any type but a stream (the low bits; SOCK_CLOEXEC and SOCK_NONBLOCK above them).
    for kind in [
        libc::SOCK_DGRAM,
        libc::SOCK_RAW,
        libc::SOCK_RDM,
        libc::SOCK_SEQPACKET,
        libc::SOCK_DCCP,
    ] {
        socket.push(
            SeccompRule::new(vec![arg(1, SeccompCmpOp::MaskedEq(0xf), kind as u64)?])
                .map_err(fail)?,
        );
    }
    let rules = BTreeMap::from([
        (libc::SYS_socket, socket),
        (libc::SYS_io_uring_setup, Vec::new()),
    ]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        arch,
    )
    .map_err(fail)?;
    BpfProgram::try_from(filter).map_err(fail)
}
