//! A static file server: a directory over HTTP/1.1 `GET` and `HEAD`, as any web server an
//! owner hosts an apt repository on (`cargo xtask repo`). The boot-and-probe suite serves its
//! repositories with it, so the appliance's apt fetches them over the private network exactly
//! as it would from the owner's server.
//!
//! Paths are percent-decoded (apt asks for `clawfort_1.0%2be2e1_amd64.deb`), then must be
//! plain relative names below the root (letters, digits, `.`, `_`, `+`, `~`, `-`, `/`; no
//! `..`, no empty segment): anything else is a 404, never a file outside the root.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::control::{self, Body};

/// The running server; dropping it stops it.
pub struct Fake {
    pub addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    pub fn serve(listener: TcpListener, root: PathBuf) -> Fake {
        let addr = listener.local_addr().expect("a bound listener");
        let root = Arc::new(root);
        let task = control::spawn_server(listener, Arc::new(AtomicUsize::new(0)), move |req| {
            let root = Arc::clone(&root);
            async move { answer(&root, &req).await }
        });
        Fake { addr, task }
    }
}

async fn answer(root: &Path, req: &Request<Incoming>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return status(405);
    }
    let Some(path) = resolve(root, req.uri().path()) else {
        return status(404);
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => Response::builder()
            .status(200)
            .header("content-length", bytes.len())
            .body(control::full(if head { Vec::new() } else { bytes }))
            .expect("a valid response"),
        Err(_) => status(404),
    }
}

/// The file `uri_path` names under `root`, if it is a plain relative name.
fn resolve(root: &Path, uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(uri_path)
        .decode_utf8()
        .ok()?;
    let relative = decoded.strip_prefix('/')?;
    let plain = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~' | '-'))
    };
    if !relative.split('/').all(plain) {
        return None;
    }
    let path = root.join(relative);
    path.is_file().then_some(path)
}

fn status(code: u16) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(control::full(Vec::new()))
        .expect("a valid status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_below_the_root_are_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dists/stable")).unwrap();
        std::fs::write(dir.path().join("dists/stable/InRelease"), "x").unwrap();
        let root = dir.path();
        assert!(resolve(root, "/dists/stable/InRelease").is_some());
        std::fs::write(dir.path().join("c_1.0+e2e1_amd64.deb"), "x").unwrap();
        assert!(resolve(root, "/c_1.0%2be2e1_amd64.deb").is_some());
        assert!(resolve(root, "/c_1.0+e2e1_amd64.deb").is_some());
        for bad in [
            "/dists/../dists/stable/InRelease",
            "/dists//stable/InRelease",
            "/dists/stable/",
            "/dists/stable",
            "dists/stable/InRelease",
            "/dists/%2e%2e/dists/stable/InRelease",
            "/dists%2fstable/../InRelease",
            "/dists/stable/In%ffRelease",
            "/../etc/passwd",
        ] {
            assert!(resolve(root, bad).is_none(), "{bad}");
        }
    }
}
