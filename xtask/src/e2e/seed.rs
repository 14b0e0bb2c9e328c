//! The published artifact, keyed the way a person keys it: the suite boots the disk a user
//! downloads (`out/<name>-<target>.qcow2`, or the Pi's `.img.xz`) through a copy-on-write
//! layer that holds one change, the `user-data` file on the image's own CIDATA volume, edited
//! as `image/cidata/README.txt` tells a person to (uncomment `ssh_authorized_keys:` and put a
//! key under it). The edit also carries the suite's one documented setting, a short first
//! fail2ban ban (from `tests/e2e/variants/suite.toml`), as a cloud-init `write_files` drop-in,
//! so the ban probe can watch a ban lift within its time budget.
//!
//! The layer is checked before anything boots: every cluster it allocates lies inside the
//! CIDATA partition, and on that volume only `user-data` differs. The result goes into the
//! probe report ([`BootedDisk`]).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clawfort_imagedef::{Format, LoadedConfig};
use xshell::{cmd, Shell};

use super::testbed::BootedDisk;
use crate::image::layout::ArtifactNames;
use crate::image::Target;

/// The line of the shipped user-data a person uncomments to give the administrator keys.
const KEYS_HEADER: &str = "# ssh_authorized_keys:";
/// The example key line under it, which a person replaces with their own key.
const EXAMPLE_KEY_PREFIX: &str = "#   - ";
/// Where the suite's short ban goes on the guest: read after the image's `clawfort.local`
/// (fail2ban reads `jail.d/*.local` in name order, later values win).
pub const SHORT_BAN_DROP_IN: &str = "/etc/fail2ban/jail.d/zz-e2e-short-ban.local";

/// What the suite adds to the shipped user-data.
#[derive(Debug, Clone)]
pub struct SuiteSeed {
    /// The suite's OpenSSH public key line (`ssh-ed25519 AAAA... clawfort-e2e`).
    pub public_key: String,
    /// fail2ban's first ban (`fail2ban.bantime` of the suite definition, e.g. `30s`).
    pub bantime: String,
    /// fail2ban's `bantime.factor` (`fail2ban.bantime_factor` of the suite definition).
    pub bantime_factor: u32,
}

impl SuiteSeed {
    /// The key from `public_key_file`, the ban from the suite definition.
    pub fn new(public_key_file: &Path, suite: &LoadedConfig) -> Result<Self> {
        let key = std::fs::read_to_string(public_key_file)
            .with_context(|| format!("cannot read public key {}", public_key_file.display()))?;
        Ok(Self {
            public_key: key.trim().to_owned(),
            bantime: suite.image.fail2ban.bantime.clone(),
            bantime_factor: suite.image.fail2ban.bantime_factor,
        })
    }
}

/// The shipped `user-data` with the suite's key added exactly as README.txt tells a person
/// (the `# ` removed in front of `ssh_authorized_keys:`, the example line replaced by the key),
/// and the suite's short ban appended as a `write_files` drop-in plus a `runcmd` that restarts
/// fail2ban if it started before cloud-init wrote the file. Nothing else changes.
pub fn keyed_user_data(shipped: &str, seed: &SuiteSeed) -> Result<String> {
    ensure!(
        !seed.public_key.contains('\n')
            && ["ssh-", "ecdsa-", "sk-"]
                .iter()
                .any(|p| seed.public_key.starts_with(p)),
        "the suite's public key is not one OpenSSH public key line: {:?}",
        seed.public_key
    );
    let lines: Vec<&str> = shipped.lines().collect();
    let header = lines
        .iter()
        .position(|line| line.trim_end() == KEYS_HEADER)
        .with_context(|| {
            format!(
                "the image's user-data has no `{KEYS_HEADER}` line for a person to uncomment; \
                 image/cidata/user-data and README.txt must keep telling the same story"
            )
        })?;
    let example = header + 1;
    ensure!(
        lines
            .get(example)
            .is_some_and(|line| line.starts_with(EXAMPLE_KEY_PREFIX)),
        "the image's user-data has no example key line (`{EXAMPLE_KEY_PREFIX}ssh-ed25519 ...`) \
         under `{KEYS_HEADER}`"
    );
    let mut edited: Vec<String> = lines.iter().map(|line| (*line).to_owned()).collect();
    edited[header] = KEYS_HEADER.trim_start_matches("# ").to_owned();
    edited[example] = format!("  - {}", seed.public_key);
    edited.extend([
        String::new(),
        "# The probe suite's one addition (cargo xtask e2e, tests/e2e/variants/suite.toml): a"
            .to_owned(),
        "# short first ban, so the fail2ban probe can watch a ban lift.".to_owned(),
        "write_files:".to_owned(),
        format!("  - path: {SHORT_BAN_DROP_IN}"),
        "    permissions: \"0644\"".to_owned(),
        "    content: |".to_owned(),
        "      [DEFAULT]".to_owned(),
        format!("      bantime = {}", seed.bantime),
        format!("      bantime.factor = {}", seed.bantime_factor),
        "runcmd:".to_owned(),
        "  - [systemctl, try-restart, fail2ban.service]".to_owned(),
    ]);
    Ok(edited.join("\n") + "\n")
}

/// The artifact `cargo xtask image` publishes for a target, the one a user downloads: the
/// qcow2 for the virtual-machine targets, the `.img.xz` for the Pi.
pub fn published_artifact(
    out: &Path,
    definition: &LoadedConfig,
    target: Target,
) -> Result<PathBuf> {
    let format = [Format::Qcow2, Format::ImgXz]
        .into_iter()
        .find(|format| definition.target.formats.contains(format))
        .with_context(|| {
            format!(
                "target {} publishes neither a qcow2 nor an .img.xz; the suite boots one of those",
                definition.target.name
            )
        })?;
    Ok(ArtifactNames::new(out.to_owned(), &definition.image.image.name, target).path(format))
}

/// The disk the guests boot: a qcow2 layer over the published artifact with the keyed CIDATA.
pub struct Seeded {
    /// The layer the guests' own overlays are backed by.
    pub disk: PathBuf,
    /// A raw copy of the unchanged artifact (the Pi's boot reads its kernel from it).
    pub raw: PathBuf,
    pub record: BootedDisk,
}

/// Makes the keyed layer over `artifact` in `work` and checks that it differs from the
/// artifact only in CIDATA's `user-data`. `artifact` is never written.
pub fn seed(sh: &Shell, artifact: &Path, work: &Path, seed: &SuiteSeed) -> Result<Seeded> {
    ensure!(
        artifact.is_file(),
        "the published artifact {} does not exist: build it first with `cargo xtask image \
         --target <target>` (the suite boots what a user downloads), or pass --image PATH",
        artifact.display()
    );
    let artifact = std::fs::canonicalize(artifact)?;
    let raw = work.join("published.raw");
    let base = if artifact.to_string_lossy().ends_with(".xz") {
        eprintln!("==> decompressing {}", artifact.display());
        crate::qemu::disk::decompress_xz_sparse(sh, &artifact, &raw)?;
        // QEMU cannot read xz: the layer goes over the decompressed disk, byte for byte the same.
        raw.clone()
    } else {
        cmd!(sh, "qemu-img convert -O raw {artifact} {raw}").run()?;
        artifact.clone()
    };
    let (start, length) = cidata_partition(sh, &raw)?;

    let shipped = work.join("cidata-published.img");
    let keyed = work.join("cidata-keyed.img");
    copy_range(&raw, start, length, &shipped)?;
    std::fs::copy(&shipped, &keyed)?;
    let user_data = keyed_user_data(&mtype(sh, &shipped, "user-data")?, seed)?;
    let user_data_file = work.join("user-data");
    std::fs::write(&user_data_file, &user_data)?;
    cmd!(sh, "mcopy -o -i {keyed} {user_data_file} ::/user-data")
        .env("MTOOLS_SKIP_CHECK", "1")
        .run()?;
    let changed_files = changed_files(sh, &shipped, &keyed, work)?;
    ensure!(
        changed_files == ["user-data"],
        "editing user-data changed these files on CIDATA: {changed_files:?}"
    );

    // Only the blocks the edit changed go into the layer, each from its own file (qemu-io's
    // `write -s` fills its buffer from the start of a file).
    let disk = work.join("seeded.qcow2");
    crate::qemu::disk::overlay(sh, &base, &disk, None)?;
    let extents = differing_extents(&shipped, &keyed)?;
    let mut writes = Vec::new();
    for (index, &(offset, len)) in extents.iter().enumerate() {
        let chunk = work.join(format!("cidata-extent-{index}.bin"));
        copy_range(&keyed, offset, len, &chunk)?;
        writes.push("-c".to_owned());
        writes.push(format!(
            "write -q -s {} {} {len}",
            chunk.display(),
            start + offset
        ));
    }
    cmd!(sh, "qemu-io -f qcow2 {writes...} {disk}").run()?;
    let changed_ranges = allocated_ranges(sh, &disk)?;
    for &[from, to] in &changed_ranges {
        ensure!(
            from >= start && to <= start + length,
            "the keyed layer {} changes bytes {from}..{to}, outside the CIDATA partition \
             {start}..{}",
            disk.display(),
            start + length
        );
    }
    ensure!(
        !changed_ranges.is_empty(),
        "the keyed layer {} holds no data",
        disk.display()
    );
    Ok(Seeded {
        disk,
        raw,
        record: BootedDisk {
            artifact,
            cidata: [start, start + length],
            changed_ranges,
            changed_files,
            user_data,
        },
    })
}

/// The byte range of the partition whose FAT volume is labelled CIDATA (what cloud-init's
/// NoCloud looks for), found by label so the GPT and the Pi's MBR layouts need no knowledge here.
fn cidata_partition(sh: &Shell, raw: &Path) -> Result<(u64, u64)> {
    for (start, length) in partitions(sh, raw)? {
        let fat = format!("{}@@{start}", raw.display());
        let label = cmd!(sh, "mlabel -s -i {fat} ::")
            .env("MTOOLS_SKIP_CHECK", "1")
            .quiet()
            .ignore_stderr()
            .read();
        if label.is_ok_and(|label| label.contains("CIDATA")) {
            return Ok((start, length));
        }
    }
    bail!(
        "no partition of {} holds a FAT volume labelled CIDATA (the NoCloud seed a person edits)",
        raw.display()
    )
}

/// Every partition of the disk image `raw` as its byte range `(start, length)`, in table
/// order (`sfdisk --json`: GPT and MBR alike).
pub(super) fn partitions(sh: &Shell, raw: &Path) -> Result<Vec<(u64, u64)>> {
    let table = cmd!(sh, "sfdisk --json {raw}").quiet().read()?;
    let table: serde_json::Value = serde_json::from_str(&table)
        .with_context(|| format!("unreadable `sfdisk --json` output for {}", raw.display()))?;
    let sector = table["partitiontable"]["sectorsize"]
        .as_u64()
        .unwrap_or(512);
    let partitions = table["partitiontable"]["partitions"]
        .as_array()
        .with_context(|| format!("{} has no partition table", raw.display()))?;
    Ok(partitions
        .iter()
        .filter_map(|p| Some((p["start"].as_u64()? * sector, p["size"].as_u64()? * sector)))
        .collect())
}

/// Copies `length` bytes at `start` of `from` into a new file `to`.
fn copy_range(from: &Path, start: u64, length: u64, to: &Path) -> Result<()> {
    let mut input =
        std::fs::File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
    input.seek(SeekFrom::Start(start))?;
    let mut output =
        std::fs::File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
    let copied = std::io::copy(&mut input.take(length), &mut output)?;
    ensure!(
        copied == length,
        "{} ends {copied} bytes into the partition at {start} ({length} bytes)",
        from.display()
    );
    output.flush()?;
    Ok(())
}

/// The block size edits are compared in: the FAT's sector granularity is finer, but a
/// qcow2 layer allocates whole clusters (64 KiB) anyway.
const BLOCK: usize = 4096;

/// The `(offset, length)` extents, in whole [`BLOCK`]s, where two files of equal size differ.
fn differing_extents(a: &Path, b: &Path) -> Result<Vec<(u64, u64)>> {
    let open = |path: &Path| -> Result<std::io::BufReader<std::fs::File>> {
        Ok(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ))
    };
    let (mut a_reader, mut b_reader) = (open(a)?, open(b)?);
    let (mut a_block, mut b_block) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    let mut extents: Vec<(u64, u64)> = Vec::new();
    let mut offset = 0u64;
    loop {
        let a_len = read_block(&mut a_reader, &mut a_block)?;
        let b_len = read_block(&mut b_reader, &mut b_block)?;
        ensure!(
            a_len == b_len,
            "{} and {} differ in size",
            a.display(),
            b.display()
        );
        if a_len == 0 {
            return Ok(extents);
        }
        if a_block[..a_len] != b_block[..b_len] {
            match extents.last_mut() {
                Some((start, len)) if *start + *len == offset => *len += a_len as u64,
                _ => extents.push((offset, a_len as u64)),
            }
        }
        offset += a_len as u64;
    }
}

/// Fills `block` as far as the file allows; the byte count (short only at the end).
fn read_block(reader: &mut impl Read, block: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < block.len() {
        match reader.read(&mut block[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn mtype(sh: &Shell, fat: &Path, name: &str) -> Result<String> {
    let file = format!("::{name}");
    cmd!(sh, "mtype -i {fat} {file}")
        .env("MTOOLS_SKIP_CHECK", "1")
        .quiet()
        .read()
        .with_context(|| format!("cannot read {name} from the CIDATA volume"))
}

/// The files (relative paths) whose presence or contents differ between two FAT volumes.
fn changed_files(sh: &Shell, a: &Path, b: &Path, work: &Path) -> Result<Vec<String>> {
    let trees = [work.join("cidata-published"), work.join("cidata-keyed")];
    for (fat, tree) in [a, b].into_iter().zip(&trees) {
        let _ = std::fs::remove_dir_all(tree);
        std::fs::create_dir_all(tree)?;
        cmd!(sh, "mcopy -s -n -i {fat} ::/ {tree}")
            .env("MTOOLS_SKIP_CHECK", "1")
            .quiet()
            .run()?;
    }
    let files = |tree: &Path| -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(tree).sort_by_file_name() {
            let entry = entry?;
            if entry.file_type().is_file() {
                files.push(entry.path().strip_prefix(tree)?.to_owned());
            }
        }
        Ok(files)
    };
    let (before, after) = (files(&trees[0])?, files(&trees[1])?);
    let mut changed: Vec<String> = Vec::new();
    for name in before.iter().chain(&after) {
        let read = |tree: &Path| std::fs::read(tree.join(name)).ok();
        let name = name.display().to_string();
        if read(&trees[0]) != read(&trees[1]) && !changed.contains(&name) {
            changed.push(name);
        }
    }
    for tree in &trees {
        std::fs::remove_dir_all(tree)?;
    }
    Ok(changed)
}

/// The byte ranges a qcow2 layer holds itself (not from its backing file), merged.
fn allocated_ranges(sh: &Shell, layer: &Path) -> Result<Vec<[u64; 2]>> {
    let map = cmd!(sh, "qemu-img map --output=json {layer}")
        .quiet()
        .read()?;
    let map: Vec<serde_json::Value> = serde_json::from_str(&map)
        .with_context(|| format!("unreadable `qemu-img map` output for {}", layer.display()))?;
    let mut ranges: Vec<[u64; 2]> = Vec::new();
    for extent in &map {
        let own = extent["depth"].as_u64() == Some(0)
            && (extent["data"].as_bool() == Some(true) || extent["zero"].as_bool() == Some(true))
            && extent["present"].as_bool() != Some(false);
        let (Some(start), Some(length)) = (extent["start"].as_u64(), extent["length"].as_u64())
        else {
            bail!("`qemu-img map` gave an extent without start and length: {extent}");
        };
        if !own {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last[1] == start => last[1] = start + length,
            _ => ranges.push([start, start + length]),
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../image/cidata/user-data");

    fn seed() -> SuiteSeed {
        SuiteSeed {
            public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e clawfort-e2e".to_owned(),
            bantime: "30s".to_owned(),
            bantime_factor: 1,
        }
    }

    /// The edit is README.txt's and nothing more: the shipped lines stay as they were except
    /// the two a person changes, and what follows them is only the suite's drop-in.
    #[test]
    fn the_key_is_added_as_the_readme_says_and_nothing_else_changes() {
        let edited = keyed_user_data(SHIPPED, &seed()).unwrap();
        let shipped: Vec<&str> = SHIPPED.lines().collect();
        let edited_lines: Vec<&str> = edited.lines().collect();
        let changed: Vec<(&str, &str)> = shipped
            .iter()
            .zip(&edited_lines)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| (*a, *b))
            .collect();
        assert_eq!(
            changed,
            [
                ("# ssh_authorized_keys:", "ssh_authorized_keys:"),
                (
                    "#   - ssh-ed25519 AAAA... you@laptop",
                    "  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e clawfort-e2e"
                ),
            ]
        );
        let added = edited_lines[shipped.len()..].join("\n");
        assert!(
            added.contains(&format!("path: {SHORT_BAN_DROP_IN}"))
                && added.contains("bantime = 30s")
                && added.contains("bantime.factor = 1"),
            "{added}"
        );
        // Only comments, the drop-in and the restart: no other cloud-config key is set.
        let keys: Vec<&str> = edited_lines[shipped.len()..]
            .iter()
            .filter(|line| !line.starts_with([' ', '#']) && !line.is_empty())
            .copied()
            .collect();
        assert_eq!(keys, ["write_files:", "runcmd:"]);
    }

    #[test]
    fn a_user_data_without_the_documented_lines_is_refused() {
        let err = keyed_user_data("#cloud-config\n", &seed()).unwrap_err();
        assert!(err.to_string().contains("ssh_authorized_keys"), "{err}");
        let mut bad = seed();
        bad.public_key = "not a key".to_owned();
        assert!(keyed_user_data(SHIPPED, &bad).is_err());
    }

    /// The suite's overlay sets only what the seed carries, so the published image keyed by the
    /// seed is what the expectations (read from the suite definition) describe.
    #[test]
    fn the_suite_overlay_sets_only_what_the_seed_carries() {
        let root = crate::project_root();
        for target in Target::ALL {
            let published = crate::image::load_definition(&[], target).unwrap();
            let suite = crate::image::load_definition(
                &[root.join("tests/e2e/variants/suite.toml")],
                target,
            )
            .unwrap();
            let mut document = suite.document.clone();
            let fail2ban = document["fail2ban"].as_table_mut().unwrap();
            for key in ["bantime", "bantime_factor"] {
                fail2ban.insert(key.to_owned(), published.document["fail2ban"][key].clone());
            }
            assert_eq!(document, published.document, "{target}");
        }
    }

    /// The whole edit on a small disk laid out like the x86_64 image (ESP, CIDATA, root): the
    /// booted disk reads back as the published one except inside CIDATA, where the only file
    /// that changed is `user-data`, and the published file is left untouched.
    #[test]
    fn the_booted_disk_differs_from_the_published_one_only_in_cidata_user_data() {
        let tools = [
            "sfdisk",
            "mkfs.vfat",
            "mcopy",
            "mtype",
            "mlabel",
            "qemu-img",
            "qemu-io",
        ];
        let sh = Shell::new().unwrap();
        let on_path = |tool: &&str| {
            std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
            })
        };
        if let Some(missing) = tools.iter().find(|tool| !on_path(tool)) {
            eprintln!(
                "skipped: `{missing}` is not installed (`cargo xtask doctor` lists what the suite needs)"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let raw = dir.join("disk.raw");
        let mib = 1u64 << 20;
        std::fs::write(&raw, vec![0u8; (40 * mib) as usize]).unwrap();
        let table = "label: gpt\nstart=2048, size=16384, name=esp\nstart=18432, size=16384, name=cidata\nstart=34816, size=43008, name=root\n";
        cmd!(sh, "sfdisk -q {raw}").stdin(table).run().unwrap();
        let fat = |name: &str, label: &str, files: &[PathBuf]| {
            let image = dir.join(name);
            cmd!(sh, "mkfs.vfat -n {label} -C {image} 8192")
                .quiet()
                .ignore_stdout()
                .run()
                .unwrap();
            for file in files {
                cmd!(sh, "mcopy -i {image} {file} ::/")
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .run()
                    .unwrap();
            }
            std::fs::read(&image).unwrap()
        };
        let seed_dir = crate::project_root().join("image/cidata");
        let seed_files = ["user-data", "meta-data", "README.txt"].map(|f| seed_dir.join(f));
        let mut disk = std::fs::read(&raw).unwrap();
        let esp = fat("esp.img", "ESP", &[seed_dir.join("README.txt")]);
        let cidata = fat("cidata.img", "CIDATA", &seed_files);
        let at = |sector: usize| sector * 512;
        disk[at(2048)..at(2048) + esp.len()].copy_from_slice(&esp);
        disk[at(18432)..at(18432) + cidata.len()].copy_from_slice(&cidata);
        for (i, byte) in disk[at(34816)..at(34816) + (8 * mib) as usize]
            .iter_mut()
            .enumerate()
        {
            *byte = (i * 31 % 251) as u8;
        }
        std::fs::write(&raw, &disk).unwrap();
        let published = dir.join("clawfort-test.qcow2");
        cmd!(sh, "qemu-img convert -O qcow2 {raw} {published}")
            .run()
            .unwrap();
        let published_bytes = std::fs::read(&published).unwrap();

        let work = dir.join("work");
        std::fs::create_dir(&work).unwrap();
        let seeded = super::seed(&sh, &published, &work, &seed()).unwrap();

        assert_eq!(
            std::fs::read(&published).unwrap(),
            published_bytes,
            "the artifact was written"
        );
        let record = &seeded.record;
        let cidata_range = [at(18432) as u64, at(34816) as u64];
        assert_eq!(record.cidata, cidata_range);
        assert_eq!(record.changed_files, ["user-data"]);
        assert!(!record.changed_ranges.is_empty());
        let booted = dir.join("booted.raw");
        let layer = &seeded.disk;
        cmd!(sh, "qemu-img convert -O raw {layer} {booted}")
            .run()
            .unwrap();
        let booted = std::fs::read(&booted).unwrap();
        assert_eq!(booted.len(), disk.len());
        let (start, end) = (cidata_range[0] as usize, cidata_range[1] as usize);
        assert!(booted[..start] == disk[..start], "changed before CIDATA");
        assert!(booted[end..] == disk[end..], "changed after CIDATA");
        assert!(booted[start..end] != disk[start..end], "CIDATA unchanged");
        let edited = dir.join("edited-cidata.img");
        std::fs::write(&edited, &booted[start..end]).unwrap();
        let user_data = super::mtype(&sh, &edited, "user-data").unwrap();
        // xshell's `read` drops the final newline.
        assert_eq!(user_data, record.user_data.trim_end());
        assert!(
            user_data.contains("\nssh_authorized_keys:\n  - ssh-ed25519 "),
            "{user_data}"
        );
    }

    #[test]
    fn only_the_changed_blocks_are_extents() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let original = vec![7u8; BLOCK * 5 + 100];
        let mut edited = original.clone();
        edited[BLOCK + 1] = 0;
        edited[BLOCK * 2] = 0;
        edited[BLOCK * 5 + 99] = 0;
        std::fs::write(&a, &original).unwrap();
        std::fs::write(&b, &edited).unwrap();
        assert_eq!(
            differing_extents(&a, &b).unwrap(),
            [(BLOCK as u64, 2 * BLOCK as u64), (5 * BLOCK as u64, 100)]
        );
        assert!(differing_extents(&a, &a).unwrap().is_empty());
        std::fs::write(&b, &edited[..BLOCK]).unwrap();
        assert!(differing_extents(&a, &b).is_err());
    }

    #[test]
    fn the_published_artifact_is_the_qcow2_or_the_pi_image() {
        let out = Path::new("out");
        let artifact = |target: Target| {
            let definition = crate::image::load_definition(&[], target).unwrap();
            published_artifact(out, &definition, target).unwrap()
        };
        assert_eq!(artifact(Target::X86_64), out.join("clawfort-x86_64.qcow2"));
        assert_eq!(artifact(Target::Rpi), out.join("clawfort-rpi.img.xz"));
    }
}
