//! The identifiers of a disk and its partitions, derived from a key (the customise stage's
//! inputs before any id exists, `customise::key`): the same inputs give the same disk, and
//! fstab and the boot loader can name the partitions before the disk is made. Its own module
//! because both the customise stage (which writes the ids into the root) and the assemble
//! stage (which gives them to the partitions) read it, and neither should depend on the other.

use clawfort_imagedef::DiskLayout;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct DiskIds {
    /// GPT disk GUID, or for MBR the 32-bit disk signature as 8 hex digits.
    pub disk_id: String,
    /// The FAT boot partition: ESP or Pi firmware partition.
    pub boot_partuuid: String,
    pub cidata_partuuid: String,
    pub root_partuuid: String,
    pub root_fs_uuid: String,
    pub boot_volume_id: String,
    pub cidata_volume_id: String,
}

impl DiskIds {
    /// Each id is the SHA-256 of `seed` and the id's label, cut to size: a version 4 UUID
    /// (its random bits taken from the digest), a FAT volume id, or an MBR signature. MBR
    /// partitions have no UUIDs of their own: Linux names them `<disk signature>-<number>`.
    pub fn derive(seed: &str, layout: &DiskLayout) -> Self {
        let digest = |label: &str| -> [u8; 32] {
            let mut hasher = Sha256::new();
            hasher.update(seed.as_bytes());
            hasher.update(label.as_bytes());
            hasher.finalize().into()
        };
        let uuid = |label: &str| {
            let digest = digest(label);
            let bytes: [u8; 16] = digest[..16].try_into().expect("16 of 32 bytes");
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .hyphenated()
                .to_string()
        };
        let volume_id = |label: &str| hex::encode(&digest(label)[..4]);
        match layout {
            DiskLayout::GptEfi(_) => Self {
                disk_id: uuid("disk"),
                boot_partuuid: uuid("esp"),
                cidata_partuuid: uuid("cidata"),
                root_partuuid: uuid("root"),
                root_fs_uuid: uuid("root-fs"),
                boot_volume_id: volume_id("esp-volume"),
                cidata_volume_id: volume_id("cidata-volume"),
            },
            DiskLayout::RpiMbr(_) => {
                let mut signature = digest("mbr-signature");
                // A zero signature means "none" to some tools.
                signature[0] |= 0x80;
                let signature = hex::encode(&signature[..4]);
                // The NoCloud seed files live on the boot partition itself.
                Self {
                    boot_partuuid: format!("{signature}-01"),
                    cidata_partuuid: format!("{signature}-01"),
                    root_partuuid: format!("{signature}-02"),
                    disk_id: signature,
                    root_fs_uuid: uuid("root-fs"),
                    boot_volume_id: volume_id("boot-volume"),
                    cidata_volume_id: volume_id("boot-volume"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawfort_imagedef::{GptEfiDisk, RpiMbrDisk};

    fn gpt() -> DiskLayout {
        DiskLayout::GptEfi(GptEfiDisk {
            efi_binary: "BOOTX64.EFI".into(),
            systemd_boot_efi: "/x".into(),
            esp_size: "256M".into(),
            cidata_size: "16M".into(),
            root_partition_type: "t".into(),
        })
    }

    /// The ids of a given key never change between builder versions: a changed derivation
    /// would change every disk built from the same inputs. Pinned from the derivation before
    /// the `uuid` and `hex` crates replaced its hand-written formatting.
    #[test]
    fn ids_of_a_key_are_pinned() {
        let ids = DiskIds::derive("seed-a", &gpt());
        assert_eq!(
            (
                ids.disk_id.as_str(),
                ids.root_partuuid.as_str(),
                ids.boot_volume_id.as_str()
            ),
            PINNED_GPT
        );
        let mbr = DiskIds::derive(
            "seed-a",
            &DiskLayout::RpiMbr(RpiMbrDisk {
                boot_size: "512M".into(),
            }),
        );
        assert_eq!(
            (mbr.disk_id.as_str(), mbr.root_fs_uuid.as_str()),
            PINNED_MBR
        );
    }

    #[test]
    fn ids_are_stable_per_seed_and_differ_between_seeds() {
        let gpt = gpt();
        let a = DiskIds::derive("seed-a", &gpt);
        assert_eq!(
            a.root_partuuid,
            DiskIds::derive("seed-a", &gpt).root_partuuid
        );
        assert_ne!(
            a.root_partuuid,
            DiskIds::derive("seed-b", &gpt).root_partuuid
        );
        assert_ne!(a.root_partuuid, a.boot_partuuid);
        assert_eq!(a.root_partuuid.len(), 36);
        assert_eq!(&a.root_partuuid[14..15], "4");
        assert_eq!(a.boot_volume_id.len(), 8);
    }

    #[test]
    fn mbr_partuuids_are_the_disk_signature_and_the_partition_number() {
        let mbr = DiskLayout::RpiMbr(RpiMbrDisk {
            boot_size: "512M".into(),
        });
        let ids = DiskIds::derive("seed", &mbr);
        assert_eq!(ids.disk_id.len(), 8);
        assert_ne!(ids.disk_id, "00000000");
        assert_eq!(ids.boot_partuuid, format!("{}-01", ids.disk_id));
        assert_eq!(ids.root_partuuid, format!("{}-02", ids.disk_id));
    }

    /// `DiskIds::derive("seed-a", gpt)`: disk GUID, root PARTUUID, ESP volume id.
    const PINNED_GPT: (&str, &str, &str) = (
        "c6757aea-c45b-402b-8fa7-17e285c3dca9",
        "6ac35451-ff8e-4170-a4b0-7bc0ba38658a",
        "2ba9a6a2",
    );
    /// `DiskIds::derive("seed-a", rpi-mbr)`: disk signature, root file system UUID.
    const PINNED_MBR: (&str, &str) = ("b0569466", "5a4be388-0e46-4a85-8c88-51b2072a80a3");
}
