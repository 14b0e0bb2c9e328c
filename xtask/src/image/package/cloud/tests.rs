//! Each format is built from a small synthetic disk and read back two ways: by `qemu-img info`
//! and by the format's own rule (the VHD footer, the tar member, the OVA's order and manifest).

use std::io::{Read, Seek, SeekFrom, Write};

use super::*;
use crate::image::host_tools::locate;
use crate::image::Format;

/// Whether the host has the tools; prints why the test is skipped when it does not.
fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| locate(t).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: {} missing (`cargo xtask doctor` names the packages)",
            missing.join(", ")
        );
    }
    missing.is_empty()
}

/// A sparse disk of `size` bytes with known bytes at its start, middle and last sector.
fn synthetic_disk(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("disk.img");
    let mut file = std::fs::File::create(&path).unwrap();
    file.set_len(size).unwrap();
    for at in [0, size / 2, size - 512] {
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&[0xa5; 512]).unwrap();
        file.write_all(format!("sector at {at}").as_bytes())
            .unwrap();
    }
    file.set_len(size).unwrap();
    path
}

fn stage(dir: &Path) -> StageProgress {
    StageProgress::start("cloud-test", &dir.join("logs")).unwrap()
}

/// `qemu-img info --output=json` of `path` opened as `format`: the format and the virtual size,
/// and the whole document. (qemu-img cannot tell a fixed VHD from a raw disk by probing: its
/// only header is the footer at the end.)
fn qemu_img_info(path: &Path, format: &str) -> (String, u64, serde_json::Value) {
    let sh = Shell::new().unwrap();
    let json = cmd!(sh, "qemu-img info -f {format} --output=json {path}")
        .quiet()
        .read()
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&json).unwrap();
    let format = info["format"].as_str().unwrap().to_owned();
    (format, info["virtual-size"].as_u64().unwrap(), info)
}

/// The image, read as `format`, holds the disk's bytes (qemu-img compare skips the holes).
fn assert_same_disk(image: &Path, format: &str, disk: &Path) {
    let sh = Shell::new().unwrap();
    let same = cmd!(sh, "qemu-img compare -f {format} -F raw {image} {disk}")
        .quiet()
        .ignore_status()
        .output()
        .unwrap();
    assert!(
        same.status.success(),
        "{} does not hold the disk's bytes: {}",
        image.display(),
        String::from_utf8_lossy(&same.stdout)
    );
}

#[test]
fn vhd_is_a_fixed_disk_of_the_disks_size() {
    if !have(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = synthetic_disk(dir.path(), 3 * MIB);
    let to = dir.path().join("out.vhd");
    let sh = Shell::new().unwrap();
    vhd(&mut stage(dir.path()), &sh, &disk, &to).unwrap();

    let (format, virtual_size, _) = qemu_img_info(&to, "vpc");
    assert_eq!((format.as_str(), virtual_size), ("vpc", 3 * MIB));
    // A fixed VHD is the disk's bytes and then the footer.
    assert_eq!(std::fs::metadata(&to).unwrap().len(), 3 * MIB + 512);
    let footer = VhdFooter::read(&to).unwrap();
    assert_eq!(
        footer,
        VhdFooter {
            current_size: 3 * MIB,
            disk_type: VhdFooter::FIXED
        }
    );
    assert_same_disk(&to, "vpc", &disk);
}

#[test]
fn vhd_refuses_a_disk_that_is_not_a_whole_mib() {
    let dir = tempfile::tempdir().unwrap();
    let disk = synthetic_disk(dir.path(), 3 * MIB + 512);
    let sh = Shell::new().unwrap();
    let err = vhd(
        &mut stage(dir.path()),
        &sh,
        &disk,
        &dir.path().join("x.vhd"),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("whole MiB"), "{err:#}");
}

#[test]
fn the_vhd_footer_is_refused_with_a_wrong_cookie_or_checksum() {
    let mut footer = [0u8; 512];
    footer[0..8].copy_from_slice(b"conectix");
    footer[48..56].copy_from_slice(&(3 * MIB).to_be_bytes());
    footer[60..64].copy_from_slice(&2u32.to_be_bytes());
    let sum = footer.iter().fold(0u32, |s, b| s + u32::from(*b));
    footer[64..68].copy_from_slice(&(!sum).to_be_bytes());
    assert_eq!(VhdFooter::parse(&footer).unwrap().current_size, 3 * MIB);

    let mut bad_sum = footer;
    bad_sum[48] = 1;
    let err = VhdFooter::parse(&bad_sum).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    let mut bad_cookie = footer;
    bad_cookie[0] = b'k';
    let err = VhdFooter::parse(&bad_cookie).unwrap_err().to_string();
    assert!(err.contains("conectix"), "{err}");
}

#[test]
fn gce_tar_holds_one_sparse_member_named_disk_raw() {
    if !have(&["pigz", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // GCE's smallest size; sparse, so the test writes and reads a few KiB.
    let disk = synthetic_disk(dir.path(), GIB);
    let to = dir.path().join("out.gce.tar.gz");
    let sh = Shell::new().unwrap();
    gce_tar(&mut stage(dir.path()), &sh, &disk, &to).unwrap();
    assert!(
        std::fs::metadata(&to).unwrap().len() < MIB,
        "the member is not sparse"
    );

    // -k keeps the archive; gzip names the output after it, without `.gz`.
    cmd!(sh, "gzip -dk {to}").quiet().run().unwrap();
    let tar_file = dir.path().join("out.gce.tar");
    let mut archive = tar::Archive::new(std::fs::File::open(&tar_file).unwrap());
    let mut members = archive.entries().unwrap();
    let mut member = members.next().unwrap().unwrap();
    assert_eq!(member.path().unwrap(), Path::new("disk.raw"));
    let header = member.header();
    assert!(
        header.as_gnu().is_some(),
        "not an oldgnu header: {header:?}"
    );
    assert_eq!(header.entry_type(), tar::EntryType::GNUSparse);
    assert_eq!(member.size(), GIB);
    let extracted = dir.path().join("disk.raw");
    member.unpack(&extracted).unwrap();
    assert!(members.next().is_none(), "more than one member");
    let (format, virtual_size, _) = qemu_img_info(&extracted, "raw");
    assert_eq!((format.as_str(), virtual_size), ("raw", GIB));
    assert_same_disk(&extracted, "raw", &disk);
}

#[test]
fn gce_tar_refuses_a_disk_that_is_not_a_whole_gib() {
    let dir = tempfile::tempdir().unwrap();
    let disk = synthetic_disk(dir.path(), 3 * MIB);
    let sh = Shell::new().unwrap();
    let to = dir.path().join("x.tar.gz");
    let err = gce_tar(&mut stage(dir.path()), &sh, &disk, &to).unwrap_err();
    assert!(
        format!("{err:#}").contains("whole number of GiB"),
        "{err:#}"
    );
}

#[test]
fn vmdk_is_stream_optimised() {
    if !have(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = synthetic_disk(dir.path(), 3 * MIB);
    let to = dir.path().join("out.vmdk");
    let sh = Shell::new().unwrap();
    vmdk(&mut stage(dir.path()), &sh, &disk, &to).unwrap();
    let (format, virtual_size, info) = qemu_img_info(&to, "vmdk");
    assert_eq!((format.as_str(), virtual_size), ("vmdk", 3 * MIB));
    assert_eq!(
        info["format-specific"]["data"]["create-type"], "streamOptimized",
        "{info}"
    );
    assert_same_disk(&to, "vmdk", &disk);
}

/// The OVA's rules: ustar members in the order descriptor, disk, manifest; the manifest holds
/// the SHA-256 of the other two. Returns the members' names and contents.
fn check_ova(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut archive = tar::Archive::new(std::fs::File::open(path)?);
    let mut members = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        ensure!(entry.header().as_ustar().is_some(), "not a ustar header");
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        members.push((name, bytes));
    }
    let suffixes: Vec<&str> = members
        .iter()
        .map(|(name, _)| name.rsplit('.').next().unwrap_or_default())
        .collect();
    ensure!(
        suffixes == ["ovf", "vmdk", "mf"],
        "members {suffixes:?}, want ovf, vmdk, mf"
    );
    let manifest = String::from_utf8(members[2].1.clone())?;
    let expected: String = members[..2]
        .iter()
        .map(|(name, bytes)| {
            use sha2::Digest;
            format!(
                "SHA256({name})= {}\n",
                hex::encode(sha2::Sha256::digest(bytes))
            )
        })
        .collect();
    ensure!(
        manifest == expected,
        "manifest:\n{manifest}want:\n{expected}"
    );
    Ok(members)
}

#[test]
fn ova_holds_descriptor_disk_and_a_manifest_of_their_digests() {
    if !have(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = synthetic_disk(dir.path(), 3 * MIB);
    let to = dir.path().join("out.ova");
    let sh = Shell::new().unwrap();
    let template = crate::project_root().join("image/ova/appliance.ovf.tera");
    let appliance = Appliance {
        stem: "clawfort-x86_64",
        template: &template,
        suite: "trixie",
    };
    ova(&mut stage(dir.path()), &sh, &disk, &to, &appliance).unwrap();

    let members = check_ova(&to).unwrap();
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "clawfort-x86_64.ovf",
            "clawfort-x86_64-disk1.vmdk",
            "clawfort-x86_64.mf"
        ]
    );
    let ovf = String::from_utf8(members[0].1.clone()).unwrap();
    let vmdk_len = members[1].1.len();
    for wanted in [
        "ovf:href=\"clawfort-x86_64-disk1.vmdk\"".to_owned(),
        format!("ovf:size=\"{vmdk_len}\""),
        format!("ovf:capacity=\"{}\"", 3 * MIB),
        "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"".to_owned(),
        "vmw:value=\"efi\"".to_owned(),
    ] {
        assert!(ovf.contains(&wanted), "{wanted} not in\n{ovf}");
    }
    let vmdk_path = dir.path().join("member.vmdk");
    std::fs::write(&vmdk_path, &members[1].1).unwrap();
    let (format, virtual_size, info) = qemu_img_info(&vmdk_path, "vmdk");
    assert_eq!((format.as_str(), virtual_size), ("vmdk", 3 * MIB));
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );

    // The check fails on a manifest that does not match, and on members out of order.
    let members_dir = dir.path().join("members");
    std::fs::create_dir(&members_dir).unwrap();
    for (name, bytes) in &members {
        std::fs::write(members_dir.join(name), bytes).unwrap();
    }
    let mf = members_dir.join("clawfort-x86_64.mf");
    let tampered = std::fs::read_to_string(&mf).unwrap().replacen('a', "b", 1);
    std::fs::write(&mf, tampered).unwrap();
    let repack = |order: [&str; 3]| {
        let out = dir.path().join("repacked.ova");
        let mut builder = tar::Builder::new(std::fs::File::create(&out).unwrap());
        for name in order {
            let bytes = std::fs::read(members_dir.join(name)).unwrap();
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, &bytes[..]).unwrap();
        }
        builder.finish().unwrap();
        out
    };
    let err = check_ova(&repack(names.clone().try_into().unwrap())).unwrap_err();
    assert!(err.to_string().contains("manifest"), "{err}");
    let err = check_ova(&repack([names[1], names[0], names[2]])).unwrap_err();
    assert!(err.to_string().contains("want ovf, vmdk, mf"), "{err}");
}

#[test]
fn raw_zst_decompresses_to_the_disk() {
    if !have(&["zstd", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = synthetic_disk(dir.path(), 3 * MIB);
    let to = dir.path().join("out.raw.zst");
    let sh = Shell::new().unwrap();
    raw_zst(&mut stage(dir.path()), &sh, &disk, &to).unwrap();
    let back = dir.path().join("back.raw");
    cmd!(sh, "zstd -q -d {to} -o {back}").quiet().run().unwrap();
    let (format, virtual_size, _) = qemu_img_info(&back, "raw");
    assert_eq!((format.as_str(), virtual_size), ("raw", 3 * MIB));
    assert_same_disk(&back, "raw", &disk);
}

/// CI builds every target's default `formats`; each cloud format would add a minute or more.
#[test]
fn no_target_writes_a_cloud_format_by_default() {
    let cloud = [
        Format::Vhd,
        Format::GceTar,
        Format::Vmdk,
        Format::Ova,
        Format::RawZst,
    ];
    for target in crate::image::Target::ALL {
        let formats = crate::image::load_target(target).unwrap().formats;
        assert!(
            !formats.iter().any(|f| cloud.contains(f)),
            "image/targets/{target}.toml: the cloud formats are opt-in (`--format`), not \
             defaults: {formats:?}"
        );
    }
}

#[test]
fn a_killed_builds_scratch_directory_is_removed_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join(".clawfort-x86_64.ova.partial");
    let scratch = Scratch::beside(&artifact).unwrap();
    let left = scratch.0.keep();
    let other = dir.path().join(".clawfort-aarch64.ova.partial.members-abc");
    std::fs::create_dir(&other).unwrap();
    remove_leftovers(&artifact);
    assert!(!left.exists(), "{} is still there", left.display());
    assert!(
        other.exists(),
        "another target's scratch directory was removed"
    );
}
