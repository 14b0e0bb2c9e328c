//! The sandbox image, loaded at build time into the service user's rootless Docker store
//! (`~/.local/share/docker`), so the sandbox is usable as soon as the daemon first answers
//! rather than minutes into a first boot spent importing it (under emulation, or from a Pi's SD
//! card), and the image carries no compressed copy of it besides.
//!
//! The image's own dockerd does the import, in a chroot of the image, in private mount and
//! network namespaces: nothing it mounts or starts outlives the build, it never sees the build
//! host's network, and without a sysfs it finds no AppArmor to load its profile into the build
//! host's kernel. It runs with `--userns-remap` on the service user, whose subordinate id files
//! get a one-id entry for the user itself while it runs. dockerd then writes each file of the
//! layer with exactly the ids the rootless daemon sees in its user namespace: container root is
//! the service user, container id N is `subid_start + N - 1`, as rootlesskit maps them. Its
//! metadata it writes as host root; those files become the service user's. Only the image store
//! (`image/`, `overlay2/`) is kept: no engine id, network or containerd state, nothing
//! machine-specific, goes into the image.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use clawfort_imagedef::LoadedConfig;
use xshell::{cmd, Shell};

use super::users::Accounts;
use crate::image::cache::remove_tree;
use crate::image::progress::StageProgress;

/// The rootless daemon's data root under the service user's home (`$XDG_DATA_HOME/docker`).
const DATA_ROOT: &str = ".local/share/docker";

/// Where the build-time daemon keeps its data, inside the image's root; removed afterwards.
const LOAD_DATA: &str = "var/lib/clawfort-sandbox-load";

/// The store directories the rootless daemon reads the image from.
const KEPT: [&str; 2] = ["image", "overlay2"];

/// Run by `unshare --mount --net --propagation private sh -c`, so every mount ends with it:
/// `$1` the image's root, `$2` the sandbox tar, `$3` the image reference, `$4` the service user,
/// `$5`/`$6` its uid and gid, `$7` the Docker platform. `/` must be a mount point in the chroot
/// (dockerd unpacks layers in a child that makes it private). The subordinate id files are put
/// back whatever happens; dockerd's log is printed when the import fails. Bounded: 300 s for
/// the daemon to answer.
const LOAD_SCRIPT: &str = r#"set -eu
root=$1 tar=$2 image=$3 user=$4 uid=$5 gid=$6 platform=$7
load=/run/clawfort-sandbox-load
data=/var/lib/clawfort-sandbox-load
socket=unix:///run/clawfort-sandbox-load/docker.sock
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 run "$root/run"
mount -t tmpfs -o mode=0755 sys "$root/sys"
mkdir -p "$root/sys/fs/cgroup" "$root$load" "$root$data"
mount -t cgroup2 -o ro cgroup2 "$root/sys/fs/cgroup"
touch "$root$load/rootfs.tar"
mount --bind -o ro "$tar" "$root$load/rootfs.tar"
cp -p "$root/etc/subuid" "$root/etc/subgid" "$root$load/"
printf '%s:%s:1\n' "$user" "$uid" | cat - "$root$load/subuid" > "$root/etc/subuid"
printf '%s:%s:1\n' "$user" "$gid" | cat - "$root$load/subgid" > "$root/etc/subgid"
chroot "$root" dockerd --data-root "$data" --exec-root "$load/exec" --pidfile "$load/dockerd.pid" --host "$socket" --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 --userns-remap="$user" > "$root$load/dockerd.log" 2>&1 &
daemon=$!
i=0
until chroot "$root" docker --host "$socket" version > /dev/null 2>&1 || [ "$i" -ge 300 ] || ! kill -0 "$daemon" 2> /dev/null; do i=$((i+1)); sleep 1; done
status=0
chroot "$root" docker --host "$socket" import --platform "$platform" --change 'CMD ["/bin/bash"]' --change 'WORKDIR /' --message "clawfort sandbox, loaded when the appliance image was built" "$load/rootfs.tar" "$image" || status=$?
kill "$daemon" 2> /dev/null || true
wait "$daemon" || true
cp -p "$root$load/subuid" "$root$load/subgid" "$root/etc/"
if [ "$status" -ne 0 ]; then tail -n 30 "$root$load/dockerd.log" >&2; exit 1; fi
"#;

/// Loads `tar` as `[sandbox].image` into the service user's rootless Docker store in `rootfs`.
pub fn load(
    stage: &mut StageProgress,
    sh: &Shell,
    rootfs: &Path,
    tar: &Path,
    config: &LoadedConfig,
    accounts: &Accounts,
) -> Result<()> {
    let service = &config.image.users.service;
    let account = accounts
        .get(&service.name)
        .with_context(|| format!("the service user `{}` is not in /etc/passwd", service.name))?;
    let home = rootfs.join(account.home.trim_start_matches('/'));
    let store = home.join(DATA_ROOT);
    ensure!(
        !store.exists(),
        "{} exists before the sandbox image is loaded: an overlay must not ship a Docker store",
        store.display()
    );
    let platform = platform(&config.target.debian_arch)?;
    let image = &config.image.sandbox.image;
    let (user, uid, gid) = (&service.name, account.uid, account.gid);
    stage.step(format!(
        "the sandbox image into {user}'s rootless Docker ({platform}, the image's own dockerd)"
    ));
    let (uid_text, gid_text) = (uid.to_string(), gid.to_string());
    stage.run(cmd!(
        sh,
        "unshare --mount --net --propagation private sh -c {LOAD_SCRIPT} sh {rootfs} {tar} {image} {user} {uid_text} {gid_text} {platform}"
    ))?;

    // `--userns-remap` keeps its data under `<uid>.<gid>`, owned by the remapped root.
    let data = rootfs.join(LOAD_DATA);
    let remapped = data.join(format!("{uid}.{gid}"));
    for dir in [
        home.join(".local"),
        home.join(".local/share"),
        store.clone(),
    ] {
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o700))?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    }
    for kept in KEPT {
        let from = remapped.join(kept);
        std::fs::rename(&from, store.join(kept)).with_context(|| {
            format!(
                "dockerd left no {} (its --userns-remap data directory)",
                from.display()
            )
        })?;
    }
    remove_tree(&data)?;
    hand_over(&store, uid, gid)
}

/// The files the build-time daemon wrote as host root (its metadata: the layer's files already
/// carry the remapped ids) become the service user's, whose rootless daemon is root only in its
/// own user namespace. No layer file may be host root's: the remapping would have been wrong.
fn hand_over(store: &Path, uid: u32, gid: u32) -> Result<()> {
    let layers = store.join("overlay2");
    let (mut files, mut metadata) = (0u64, 0u64);
    for entry in walkdir::WalkDir::new(store) {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        files += 1;
        let in_layer = entry.path().strip_prefix(&layers).is_ok_and(|rest| {
            rest.components()
                .nth(1)
                .is_some_and(|c| c.as_os_str() == "diff")
        }) && entry.depth() > 3;
        if meta.uid() != 0 && meta.gid() != 0 {
            continue;
        }
        if in_layer {
            bail!(
                "{} is owned by {}:{} on the build host: dockerd did not remap the layer's ids",
                entry.path().display(),
                meta.uid(),
                meta.gid()
            );
        }
        let owner = (meta.uid() == 0).then_some(uid);
        let group = (meta.gid() == 0).then_some(gid);
        std::os::unix::fs::lchown(entry.path(), owner, group)
            .with_context(|| format!("cannot chown {}", entry.path().display()))?;
        metadata += 1;
    }
    ensure!(
        metadata > 0 && files > metadata,
        "the sandbox store in {} looks empty ({files} files)",
        store.display()
    );
    Ok(())
}

/// Docker's platform for a Debian architecture.
fn platform(debian_arch: &str) -> Result<&'static str> {
    Ok(match debian_arch {
        "amd64" => "linux/amd64",
        "arm64" => "linux/arm64",
        "armhf" => "linux/arm/v7",
        other => bail!("no Docker platform known for the Debian architecture `{other}`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, lchown, symlink};

    /// A store as `--userns-remap` leaves it: metadata host root's, the layer's files remapped.
    fn store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("image/overlay2/imagedb")).unwrap();
        std::fs::write(root.join("image/overlay2/repositories.json"), "{}").unwrap();
        std::fs::create_dir_all(root.join("overlay2/l")).unwrap();
        std::fs::create_dir_all(root.join("overlay2/abc/diff/var/cache")).unwrap();
        std::fs::write(root.join("overlay2/abc/link"), "L").unwrap();
        symlink("../abc/diff", root.join("overlay2/l/L")).unwrap();
        for dir in ["overlay2/abc/diff", "overlay2/abc/diff/var"] {
            chown(root.join(dir), Some(1001), Some(1001)).unwrap();
        }
        // A file of container uid 42 (`_apt`): host 100041.
        chown(
            root.join("overlay2/abc/diff/var/cache"),
            Some(100041),
            Some(1001),
        )
        .unwrap();
        dir
    }

    fn owner(path: &Path) -> (u32, u32) {
        let meta = path.symlink_metadata().unwrap();
        (meta.uid(), meta.gid())
    }

    #[test]
    fn host_root_metadata_becomes_the_service_users_and_the_layer_keeps_its_ids() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: chown needs root (CI runs as root)");
            return;
        }
        let dir = store();
        let root = dir.path();
        hand_over(root, 1001, 1001).unwrap();
        for path in [
            "",
            "image/overlay2/repositories.json",
            "overlay2/abc/link",
            "overlay2/l/L",
            "overlay2/abc/diff",
        ] {
            assert_eq!(owner(&root.join(path)), (1001, 1001), "{path}");
        }
        assert_eq!(
            owner(&root.join("overlay2/abc/diff/var/cache")),
            (100041, 1001)
        );
    }

    #[test]
    fn a_layer_file_of_host_root_is_refused() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: chown needs root (CI runs as root)");
            return;
        }
        let dir = store();
        let root = dir.path();
        lchown(root.join("overlay2/abc/diff/var"), Some(0), Some(0)).unwrap();
        let err = hand_over(root, 1001, 1001).unwrap_err();
        assert!(
            format!("{err:#}").contains("did not remap the layer's ids"),
            "{err:#}"
        );
    }
}
