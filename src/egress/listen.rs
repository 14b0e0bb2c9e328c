//! The listening socket: handed over by systemd (`clawfort-egress.socket`, socket
//! activation through `LISTEN_FDS`), or bound at `--listen PATH` for a test or a manual run.

use std::os::unix::net::UnixListener;
use std::path::Path;

use anyhow::{bail, Context};

pub fn listener(path: Option<&Path>) -> anyhow::Result<UnixListener> {
    let listener = match path {
        Some(path) => UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?,
        None => {
            let mut fds = listenfd::ListenFd::from_env();
            if fds.len() != 1 {
                bail!(
                    "expected one socket from systemd, got {} (LISTEN_FDS); start \
                     clawfort-egress.socket, or pass --listen PATH",
                    fds.len()
                );
            }
            fds.take_unix_listener(0)
                .context("the socket systemd passed is not a listening Unix stream socket")?
                .context("the socket systemd passed was already taken")?
        }
    };
    // tokio takes over a socket only in non-blocking mode.
    listener.set_nonblocking(true)?;
    Ok(listener)
}
