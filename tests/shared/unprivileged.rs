//! Host execution refuses root (`confine::available`), so a test of it, run as root, runs
//! itself again as `nobody`.

/// As root, the named test runs again in a child as `nobody` (setpriv, no capabilities,
/// `HOME=/tmp`) and this returns false; as anyone else it returns true and the test goes on.
pub fn unprivileged(test: &str) -> bool {
    if !rustix::process::geteuid().is_root() {
        return true;
    }
    let status = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("HOME", "/tmp")
        .status()
        .expect("setpriv (util-linux) runs the test as nobody");
    assert!(status.success(), "{test} failed as nobody");
    false
}
