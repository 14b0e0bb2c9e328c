//! `cargo xtask repo`: an apt repository an owner can host on any static web server, holding
//! the gateway packages `cargo xtask image` writes (`out/clawfort_<version>_<arch>.deb`), so
//! that the appliances' unattended-upgrades take clawfort updates from it beside Debian's
//! security updates (`[updates] repository` in the image definition).
//!
//! `new-key` makes the signing key once: an OpenPGP secret key (0600, it never leaves the
//! owner's build machine and never enters an image) and its public certificate, which the
//! image definition names. `build` is run for every release, and again before the signature
//! runs out: apt refuses a Release file past its `Valid-Until`, so a repository that is no
//! longer maintained (or one frozen by someone replaying old files at the appliance) stops
//! being believed, and it says so.
//!
//! The layout is Debian's: `pool/main/*.deb`, `dists/<suite>/main/binary-<arch>/Packages(.gz)`,
//! `dists/<suite>/{Release,InRelease,Release.gpg}`. apt-ftparchive writes the indices and the
//! Release file; sqop (the Stateless OpenPGP command line, Sequoia's) signs with the key file
//! alone, with no keyring or agent on the build host.

use std::collections::BTreeSet;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use xshell::{cmd, Shell};

use crate::image::host_tools;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Make the repository's signing key: FILE (the secret key, mode 0600: keep it off the
    /// appliances and out of git) and FILE.asc (the public certificate: name it in the image
    /// definition's `[updates] repository_key`).
    NewKey {
        /// Where to write the secret key; refused if it exists.
        file: PathBuf,
        /// The key's user id, shown by apt when a signature does not verify.
        #[arg(long, default_value = "clawfort apt repository")]
        user_id: String,
    },
    /// Make (or remake) a signed apt repository in OUT from the .deb files in DEBS, e.g.
    /// `cargo xtask repo build out --key repo.key --out /srv/www/apt`. Serve OUT as is.
    Build {
        /// A directory of .deb files (`out/` of `cargo xtask image`).
        debs: PathBuf,
        /// The secret key from `cargo xtask repo new-key`.
        #[arg(long)]
        key: PathBuf,
        /// The repository's directory; replaced as a whole when the new one is complete.
        #[arg(long)]
        out: PathBuf,
        /// The suite (distribution) name the image definition's `repository_suite` names.
        #[arg(long, default_value = "stable")]
        suite: String,
        /// Days until apt refuses this signature as stale: run `build` again before then.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
        valid_days: u32,
    },
}

/// The Release file's `Origin` and `Label`: what unattended-upgrades' `Origins-Pattern` for
/// the repository matches (`origin=clawfort`).
pub const ORIGIN: &str = "clawfort";

/// The one component.
const COMPONENT: &str = "main";

pub fn run(args: Args) -> Result<()> {
    host_tools::ensure(host_tools::REPO_TOOLS)?;
    let sh = Shell::new()?;
    match args.command {
        Command::NewKey { file, user_id } => {
            let public = new_key(&sh, &file, &user_id)?;
            println!(
                "secret key: {} (keep it off the appliances)\npublic certificate: {} (name it \
                 in [updates] repository_key)",
                file.display(),
                public.display()
            );
        }
        Command::Build {
            debs,
            key,
            out,
            suite,
            valid_days,
        } => {
            let valid = Duration::from_secs(u64::from(valid_days) * 86_400);
            let built = build(&sh, &debs, &key, &out, &suite, valid)?;
            println!(
                "{}: {} package(s) for {} in suite {suite}, signed, valid for {valid_days} days; \
                 serve the directory as is, and run this again before then",
                out.display(),
                built.packages.len(),
                built
                    .architectures
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
    }
    Ok(())
}

/// Writes the secret key and `<file>.asc`; returns the latter.
pub fn new_key(sh: &Shell, file: &Path, user_id: &str) -> Result<PathBuf> {
    ensure!(
        !file.exists(),
        "{} exists; a new key would orphan every appliance that trusts the old one. Remove it \
         first if that is what you want",
        file.display()
    );
    let secret = sqop(sh, &["generate-key", user_id], b"")?;
    let public = sqop(sh, &["extract-cert"], &secret)?;
    write_new(file, &secret, 0o600)?;
    let public_path = asc_path(file);
    write_new(&public_path, &public, 0o644)?;
    Ok(public_path)
}

fn asc_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".asc");
    PathBuf::from(name)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// What a build put in the repository.
#[derive(Debug)]
pub struct Built {
    /// `name version arch`, sorted.
    pub packages: Vec<String>,
    pub architectures: BTreeSet<String>,
}

/// Makes the repository in a sibling directory and swaps it in when complete.
pub fn build(
    sh: &Shell,
    debs: &Path,
    key: &Path,
    out: &Path,
    suite: &str,
    valid: Duration,
) -> Result<Built> {
    ensure!(
        !suite.is_empty()
            && suite
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')),
        "--suite `{suite}`: letters, digits, `-`, `.` and `_` only"
    );
    check_secret_key(key)?;
    let files = deb_files(debs)?;
    check_out(debs, out)?;
    let name = out
        .file_name()
        .with_context(|| format!("--out {}: name a directory", out.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = out.parent().unwrap_or(Path::new("."));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(".{name}.partial"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let pool = staging.join("pool").join(COMPONENT);
    std::fs::create_dir_all(&pool)?;

    let mut packages = Vec::new();
    let mut architectures = BTreeSet::new();
    for file in &files {
        let fields = cmd!(sh, "dpkg-deb --field {file} Package Version Architecture")
            .quiet()
            .read()
            .with_context(|| format!("{} is not a Debian package", file.display()))?;
        let field = |name: &str| {
            fields
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .map(str::to_owned)
                .with_context(|| format!("{} has no {name} field", file.display()))
        };
        let (package, version, arch) =
            (field("Package")?, field("Version")?, field("Architecture")?);
        packages.push(format!("{package} {version} {arch}"));
        if arch != "all" {
            architectures.insert(arch);
        }
        std::fs::copy(file, pool.join(file.file_name().expect("a file")))?;
    }
    packages.sort();
    ensure!(
        !architectures.is_empty(),
        "{}: only architecture-independent packages; apt needs an index per architecture",
        debs.display()
    );

    let dist = staging.join("dists").join(suite);
    for arch in &architectures {
        let index = dist.join(COMPONENT).join(format!("binary-{arch}"));
        std::fs::create_dir_all(&index)?;
        let _dir = sh.push_dir(&staging);
        let listing = cmd!(sh, "apt-ftparchive --arch {arch} packages pool")
            .quiet()
            .read()
            .context("apt-ftparchive packages")?;
        std::fs::write(index.join("Packages"), listing + "\n")?;
        let packages_file = index.join("Packages");
        cmd!(sh, "gzip -9 -n -k {packages_file}").quiet().run()?;
    }

    let release = {
        let _dir = sh.push_dir(&dist);
        let arch_list = architectures.iter().cloned().collect::<Vec<_>>().join(" ");
        let valid_seconds = valid.as_secs().to_string();
        let option = |field: &str, value: &str| {
            [
                "-o".to_owned(),
                format!("APT::FTPArchive::Release::{field}={value}"),
            ]
        };
        let options: Vec<String> = [
            option("Origin", ORIGIN),
            option("Label", ORIGIN),
            option("Suite", suite),
            option("Codename", suite),
            option("Architectures", &arch_list),
            option("Components", COMPONENT),
            option("ValidTime", &valid_seconds),
        ]
        .concat();
        cmd!(sh, "apt-ftparchive {options...} release .")
            .quiet()
            .read()
            .context("apt-ftparchive release")?
            + "\n"
    };
    std::fs::write(dist.join("Release"), &release)?;
    let key = key.to_string_lossy();
    let inline = sqop(
        sh,
        &["inline-sign", "--as=clearsigned", &key],
        release.as_bytes(),
    )
    .context("is the key a secret key from `cargo xtask repo new-key`?")?;
    std::fs::write(dist.join("InRelease"), inline)?;
    let detached = sqop(sh, &["sign", "--as=text", &key], release.as_bytes())?;
    std::fs::write(dist.join("Release.gpg"), detached)?;

    // Complete: the old repository goes only now, so a server never shows half of one.
    if out.exists() {
        let old = parent.join(format!(".{name}.old"));
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(out, &old)?;
        std::fs::rename(&staging, out)?;
        std::fs::remove_dir_all(&old)?;
    } else {
        std::fs::rename(&staging, out)?;
    }
    Ok(Built {
        packages,
        architectures,
    })
}

/// One sqop command (the Stateless OpenPGP interface: everything on its command line and
/// stdin) with `input`; its output, or an error naming the subcommand.
fn sqop(sh: &Shell, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    Ok(cmd!(sh, "sqop {args...}")
        .stdin(input)
        .quiet()
        .output()
        .with_context(|| format!("sqop {}", args[0]))?
        .stdout)
}

/// `out` is replaced as a whole: it must be a repository this command made (or not exist),
/// and neither hold nor lie inside the packages' directory.
fn check_out(debs: &Path, out: &Path) -> Result<()> {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (debs_abs, out_abs) = (absolute(debs), absolute(out));
    ensure!(
        !debs_abs.starts_with(&out_abs) && !out_abs.starts_with(&debs_abs),
        "--out {} and the packages' directory {} overlap; the repository replaces --out as a \
         whole, so give it a directory of its own",
        out.display(),
        debs.display()
    );
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("--out {}: cannot list it", out.display()))?
            .next()
            .is_none();
        ensure!(
            empty || out.join("dists").is_dir(),
            "--out {} holds files but no dists/: it is not a repository this command made, and \
             it would be replaced as a whole; name a new or empty directory",
            out.display()
        );
    }
    Ok(())
}

/// The secret key must be a file only its owner reads, as ssh asks of a private key.
fn check_secret_key(key: &Path) -> Result<()> {
    let meta = std::fs::metadata(key).with_context(|| {
        format!(
            "--key {}: cannot read it; make one with `cargo xtask repo new-key FILE`",
            key.display()
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    ensure!(
        mode & 0o077 == 0,
        "--key {}: mode {mode:04o} lets others read the repository's secret key; `chmod 600` it \
         (and consider it leaked if others could read it)",
        key.display()
    );
    Ok(())
}

/// The `.deb` files directly in `dir`, sorted.
fn deb_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {} for .deb files", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "{} holds no .deb file; `cargo xtask image` writes out/clawfort_<version>_<arch>.deb",
            dir.display()
        );
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package of `version` with one file, as dpkg-deb builds the gateway's.
    fn deb(sh: &Shell, dir: &Path, version: &str) -> PathBuf {
        let tree = dir.join(format!("tree-{version}"));
        std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(tree.join("usr/share/clawfort-repo-test")).unwrap();
        std::fs::write(
            tree.join("DEBIAN/control"),
            format!(
                "Package: clawfort-repo-test\nVersion: {version}\nArchitecture: amd64\n\
                 Maintainer: test <test@localhost>\nDescription: repository test\n"
            ),
        )
        .unwrap();
        std::fs::write(tree.join("usr/share/clawfort-repo-test/v"), version).unwrap();
        let debs = dir.join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        let file = debs.join(format!("clawfort-repo-test_{version}_amd64.deb"));
        cmd!(sh, "dpkg-deb --root-owner-group --build {tree} {file}")
            .quiet()
            .ignore_stdout()
            .run()
            .unwrap();
        file
    }

    /// apt on the build host, with its own sources, lists and cache in `dir`, trusting
    /// `cert` for the repository at `repo`: `apt-get update`'s output and the candidate.
    fn apt_sees(sh: &Shell, dir: &Path, repo: &Path, cert: &Path) -> (String, String) {
        let state = dir.join("apt-state");
        let _ = std::fs::remove_dir_all(&state);
        for sub in ["lists/partial", "cache/archives/partial", "sources"] {
            std::fs::create_dir_all(state.join(sub)).unwrap();
        }
        std::fs::write(state.join("status"), "").unwrap();
        std::fs::write(
            state.join("sources/clawfort.sources"),
            format!(
                "Types: deb\nURIs: file:{}\nSuites: stable\nComponents: main\nSigned-By: {}\n",
                repo.display(),
                cert.display()
            ),
        )
        .unwrap();
        let options: Vec<String> = [
            "Dir::Etc::SourceList=/dev/null".to_owned(),
            format!("Dir::Etc::SourceParts={}", state.join("sources").display()),
            format!("Dir::State={}", state.display()),
            format!("Dir::State::status={}", state.join("status").display()),
            format!("Dir::Cache={}", state.join("cache").display()),
            "APT::Architecture=amd64".to_owned(),
            "APT::Sandbox::User=root".to_owned(),
            // apt's defaults, as on the appliance; a build host may have turned them off (for
            // snapshot mirrors: this one had).
            "Acquire::Check-Valid-Until=true".to_owned(),
            "Acquire::Check-Date=true".to_owned(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect();
        let first = options.clone();
        let update = cmd!(sh, "apt-get {first...} update")
            .quiet()
            .ignore_status()
            .output()
            .unwrap();
        let output = String::from_utf8_lossy(&update.stdout).into_owned()
            + &String::from_utf8_lossy(&update.stderr);
        let policy = cmd!(sh, "apt-cache {options...} policy clawfort-repo-test")
            .quiet()
            .read()
            .unwrap();
        let candidate = policy
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate: "))
            .unwrap_or("(none)")
            .to_owned();
        (output, candidate)
    }

    /// The whole path an owner takes, read back by the real apt: a key, a repository, a newer
    /// version, a stranger's key, a stale signature, a readable secret key.
    #[test]
    fn apt_takes_updates_only_from_the_key_and_only_while_fresh() {
        if let Err(err) = host_tools::ensure(host_tools::REPO_TOOLS) {
            eprintln!("skipped: {err:#} (CI installs them as root)");
            return;
        }
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let key = dir.join("repo.key");
        let cert = new_key(&sh, &key, "test").unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(std::fs::read_to_string(&cert)
            .unwrap()
            .contains("BEGIN PGP PUBLIC KEY BLOCK"));
        let again = new_key(&sh, &key, "test").unwrap_err();
        assert!(format!("{again:#}").contains("exists"), "{again:#}");

        let month = Duration::from_secs(30 * 86_400);
        deb(&sh, dir, "1.0");
        let repo = dir.join("www/apt");
        let built = build(&sh, &dir.join("debs"), &key, &repo, "stable", month).unwrap();
        assert_eq!(built.packages, ["clawfort-repo-test 1.0 amd64"]);
        for file in ["InRelease", "Release", "Release.gpg"] {
            assert!(repo.join("dists/stable").join(file).is_file(), "{file}");
        }
        let release = std::fs::read_to_string(repo.join("dists/stable/Release")).unwrap();
        assert!(release.contains("Origin: clawfort\n"), "{release}");
        assert!(release.contains("Valid-Until: "), "{release}");
        let (output, candidate) = apt_sees(&sh, dir, &repo, &cert);
        assert_eq!(candidate, "1.0", "{output}");

        // A newer version, the repository made again in place: apt sees it.
        deb(&sh, dir, "1.1");
        build(&sh, &dir.join("debs"), &key, &repo, "stable", month).unwrap();
        let (output, candidate) = apt_sees(&sh, dir, &repo, &cert);
        assert_eq!(candidate, "1.1", "{output}");
        assert!(!dir.join("www/.apt.partial").exists() && !dir.join("www/.apt.old").exists());

        // Signed by a key the appliance does not trust: nothing is taken.
        let stranger = dir.join("stranger.key");
        new_key(&sh, &stranger, "stranger").unwrap();
        build(&sh, &dir.join("debs"), &stranger, &repo, "stable", month).unwrap();
        let (output, candidate) = apt_sees(&sh, dir, &repo, &cert);
        assert_eq!(candidate, "(none)", "{output}");
        assert!(output.contains("NO_PUBKEY"), "{output}");

        // Past its Valid-Until: refused as expired.
        build(
            &sh,
            &dir.join("debs"),
            &key,
            &repo,
            "stable",
            Duration::from_secs(1),
        )
        .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let (output, candidate) = apt_sees(&sh, dir, &repo, &cert);
        assert_eq!(candidate, "(none)", "{output}");
        assert!(output.contains("expired"), "{output}");

        // A directory that is not a repository, or the packages' own, is never replaced.
        let site = dir.join("site");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(site.join("index.html"), "mine").unwrap();
        let err = build(&sh, &dir.join("debs"), &key, &site, "stable", month).unwrap_err();
        assert!(format!("{err:#}").contains("no dists/"), "{err:#}");
        assert!(site.join("index.html").is_file());
        let err = build(&sh, &dir.join("debs"), &key, dir, "stable", month).unwrap_err();
        assert!(format!("{err:#}").contains("overlap"), "{err:#}");
        assert!(dir.join("debs").is_dir());

        // A secret key others can read is refused before anything is written.
        std::fs::set_permissions(&key, PermissionsExt::from_mode(0o644)).unwrap();
        let err = build(&sh, &dir.join("debs"), &key, &repo, "stable", month).unwrap_err();
        assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
    }
}
