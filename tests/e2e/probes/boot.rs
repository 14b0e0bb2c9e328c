//! Kernel updates reach the boot loader (issue 16, item 1). On the UEFI targets the ESP is
//! mounted at /boot/efi with systemd-boot installed where `bootctl` finds it, so Debian's
//! kernel hooks (`/etc/kernel/postinst.d/zz-systemd-boot`, run by every kernel package's
//! postinst) give each later kernel its own entry through kernel-install, on probation
//! (`[boot] tries`), while the build's own kernel boots without counting. The probe installs a
//! kernel the way a package does, without a reboot: the running kernel's files under a newer
//! version, through the same hook, then removes it through the postrm hook.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::exec::last_lines;
use crate::Ctx;

/// The version the probe's kernel is installed under: newer than any Debian 13 kernel, so it
/// sorts first, as a real update does.
const LATER_KERNEL: &str = "9.9.9-clawfort-e2e";

/// Separates the install script's five reports.
const MARK: &str = "--- clawfort-e2e ---";

pub fn kernel_updates_reach_boot_loader(ctx: &Ctx) -> Result<String> {
    let Some(boot) = &ctx.testbed.expect.boot_counting else {
        let pi = ctx.admin.run(
            "test -x /etc/kernel/postinst.d/z50-raspi-firmware && findmnt -n -o FSTYPE /boot/firmware",
        )?;
        ensure!(
            pi.success && pi.stdout.trim() == "vfat",
            "raspi-firmware's kernel hook is missing or /boot/firmware is not the mounted FAT \
             partition, so a later kernel would not reach the Pi's boot partition: {}",
            last_lines(&pi.stderr, 2)
        );
        return Ok(
            "raspi-firmware's kernel hook is installed and /boot/firmware is mounted: a \
                   later kernel is copied to the Pi's boot partition"
                .to_owned(),
        );
    };

    let installed = ctx
        .admin
        .sudo("findmnt -n -o FSTYPE /boot/efi && bootctl is-installed")?;
    ensure!(
        installed.success && installed.stdout.lines().next() == Some("vfat"),
        "bootctl is-installed says no, or /boot/efi is not the mounted ESP, so Debian's kernel \
         hooks skip every later kernel: {} {}",
        installed.stdout.trim(),
        last_lines(&installed.stderr, 2)
    );

    let running = ctx.admin.check("uname -r")?.trim().to_owned();
    let own = format!("{}-{running}.conf", boot.entry_token);
    let before = entries(&ctx.admin.check_root("bootctl list --json=short")?)?;
    let booted = find(&before, &own).with_context(|| {
        format!(
            "the booted kernel has no entry {own} on the ESP (entries: {})",
            ids(&before)
        )
    })?;
    ensure!(
        flag(booted, "isSelected") && flag(booted, "isDefault"),
        "{own} is not both the booted and the default entry: {booted}"
    );
    ensure!(
        booted.get("triesLeft").is_none(),
        "the build's kernel boots on probation ({booted}): a failed check on its first boot \
         would reboot a box with no kernel to fall back to"
    );

    let token = &boot.entry_token;
    let script = format!(
        "set -eu\n\
         v={LATER_KERNEL}; r=$(uname -r)\n\
         cleanup() {{ /etc/kernel/postrm.d/zz-systemd-boot \"$v\" >/dev/null 2>&1 || true; \
         rm -f \"/boot/vmlinuz-$v\" \"/boot/initrd.img-$v\"; }}\n\
         trap cleanup EXIT\n\
         cp \"/boot/vmlinuz-$r\" \"/boot/vmlinuz-$v\"\n\
         cp \"/boot/initrd.img-$r\" \"/boot/initrd.img-$v\"\n\
         /etc/kernel/postinst.d/zz-systemd-boot \"$v\" \"/boot/vmlinuz-$v\" >&2\n\
         bootctl list --json=short\n\
         echo '{MARK}'\n\
         cat /etc/kernel/cmdline\n\
         echo '{MARK}'\n\
         ls -A /boot/efi/loader/entries/\n\
         echo '{MARK}'\n\
         /etc/kernel/postrm.d/zz-systemd-boot \"$v\" >&2\n\
         bootctl list --json=short\n\
         echo '{MARK}'\n\
         ls -A /boot/efi/{token}/\n"
    );
    let out = ctx
        .admin
        .check_root(&script)
        .context("installing a kernel through Debian's hook")?;
    let [added, cmdline, files, removed, left] =
        out.split(&format!("{MARK}\n")).collect::<Vec<_>>()[..]
    else {
        bail!("the install script printed no five reports: {out}");
    };

    // bootctl names an entry without its counter; the file name carries it.
    let later = format!("{token}-{LATER_KERNEL}.conf");
    let counted = format!("{token}-{LATER_KERNEL}+{}.conf", boot.tries);
    ensure!(
        files.lines().any(|name| name == counted),
        "a kernel installed through Debian's hook got no counted entry {counted} on the ESP \
         (loader/entries: {})",
        files.split_whitespace().collect::<Vec<_>>().join(", ")
    );
    let added = entries(added)?;
    let Some(entry) = find(&added, &later) else {
        bail!(
            "bootctl lists no {later} after the install (entries: {})",
            ids(&added)
        );
    };
    ensure!(
        flag(entry, "isDefault"),
        "{later} is not the default entry, so the next boot would not try the new kernel: \
         {entry}"
    );
    ensure!(
        entry.get("triesLeft").and_then(Value::as_u64) == Some(u64::from(boot.tries)),
        "{later} does not count {} tries: {entry}",
        boot.tries
    );
    let options = entry.get("options").and_then(Value::as_str).unwrap_or("");
    ensure!(
        options.trim() == cmdline.trim(),
        "{later} boots with `{options}`, not /etc/kernel/cmdline's `{}`",
        cmdline.trim()
    );

    let removed = entries(removed)?;
    ensure!(
        removed.iter().all(|e| !id(e).contains(LATER_KERNEL)),
        "removing the kernel through Debian's hook left its entry (entries: {})",
        ids(&removed)
    );
    ensure!(
        find(&removed, &own).is_some_and(|e| flag(e, "isDefault")),
        "after the removal {own} is not the default again (entries: {})",
        ids(&removed)
    );
    ensure!(
        !left.lines().any(|name| name == LATER_KERNEL),
        "removing the kernel left /boot/efi/{token}/{LATER_KERNEL}"
    );

    let requires = ctx
        .admin
        .check("systemctl show -P Requires boot-complete.target")?;
    ensure!(
        requires
            .split_whitespace()
            .any(|unit| unit == "clawfort-boot-check.service"),
        "boot-complete.target does not require clawfort-boot-check.service, so a trial boot \
         counts as good without the gateway (requires: {})",
        requires.trim()
    );

    let notice = ctx.admin.check(
        "for p in UnitFileState ActiveState Result; do \
         systemctl show -P \"$p\" clawfort-boot-fallback.service; done",
    )?;
    ensure!(
        notice.split_whitespace().collect::<Vec<_>>() == ["enabled", "inactive", "success"],
        "clawfort-boot-fallback.service, which tells of a kernel that failed its tries, did not \
         run cleanly at boot (state, activity, result: {})",
        notice.split_whitespace().collect::<Vec<_>>().join(", ")
    );

    Ok(format!(
        "ESP mounted at /boot/efi, systemd-boot installed; booted {own} (the default, not \
         counting); a kernel installed through Debian's hook got {counted}, the default with {} \
         tries left and /etc/kernel/cmdline, and its removal took the entry and its files; a trial \
         boot counts as good only with the gateway up (boot-complete.target requires \
         clawfort-boot-check.service); the fallback notice ran at boot",
        boot.tries
    ))
}

/// `bootctl list --json=short`: one object per entry.
fn entries(json: &str) -> Result<Vec<Value>> {
    let value: Value = serde_json::from_str(json.trim())
        .with_context(|| format!("`bootctl list --json=short` printed no JSON: {json}"))?;
    value
        .as_array()
        .cloned()
        .context("`bootctl list --json=short` printed no array")
}

fn id(entry: &Value) -> &str {
    entry.get("id").and_then(Value::as_str).unwrap_or("")
}

fn ids(entries: &[Value]) -> String {
    entries.iter().map(id).collect::<Vec<_>>().join(", ")
}

fn find<'a>(entries: &'a [Value], wanted: &str) -> Option<&'a Value> {
    entries.iter().find(|entry| id(entry) == wanted)
}

fn flag(entry: &Value, key: &str) -> bool {
    entry.get(key).and_then(Value::as_bool) == Some(true)
}
