//! Foreign-architecture guests (Malta mipsel, virt ARMv7, virt aarch64)
//! for the VM harness: a Debian kernel and a Debian userland of the
//! guest's own architecture, fetched through [`crate::apt`]'s private apt
//! configuration, without touching the host's dpkg architectures.
//!
//! * [`prepare`] resolves the dependency closure of the listed
//!   packages (`apt-cache depends --recurse`, first alternative of each OR
//!   group), `apt-get download`s it and unpacks every .deb into one
//!   usr-merged root (`bin`, `sbin`, `lib` are symlinks into `usr`, tar
//!   runs with `--keep-directory-symlink`). Cached as
//!   `<cache>/sysroot/<arch>-<hash of the package list>/root` with a
//!   `complete` stamp: a second call does not run apt at all.
//! * [`crate::kernel::prepare_foreign`] resolves a flavour meta package
//!   (`linux-image-4kc-malta` → `linux-image-6.1.0-50-4kc-malta`),
//!   downloads, unpacks and `depmod -b`s it into
//!   `<cache>/kernel-<arch>/<version>/`. Not `<cache>/kernel/`: kernel.rs prunes
//!   that directory to two kernels and, offline, boots the newest one in
//!   it, which must stay an amd64 one.
//! * [`crate::elf::needed_libs`] is `ldd` for foreign binaries: it reads `PT_INTERP`
//!   and `DT_NEEDED` from the ELF files (32/64 bit, either endianness) and
//!   resolves them inside the sysroot, symlinks included ([`crate::elf`]).
//!
//! Measured on the 2-core Debian 12 build machine (QEMU 7.2, TCG), with a
//! hand-built initramfs (uncompressed newc cpio: busybox-static, iproute2,
//! nft, dnsmasq, kmod from the sysroot plus [`crate::elf::needed_libs`], the closure
//! of [`crate::MODULES`] minus netem/tbf under `usr/lib/modules/<ver>/`
//! with all `modules.*` indexes, an /init that modprobes, adds an ipip
//! link, installs an nft masquerade rule, runs `dnsmasq --version`, mounts
//! the 9p share and runs a static musl `simsd --version` from it):
//!
//! | | mipsel (malta, 6.1.0-50-4kc-malta) | arm64 (virt, 6.1.0-56-arm64) |
//! | --- | --- | --- |
//! | sysroot, first time (63/62 .debs, ~66 MB) | 8.2 s | 3.5 s |
//! | kernel .deb fetch + unpack + depmod | 2.5 s | 3.8 s |
//! | second `prepare_sysroot` call | 32 µs | 33 µs |
//! | initramfs (uncompressed / gzip) | 27.6 MB / 10.1 MB | 28.2 MB / 10.4 MB |
//! | QEMU start to poweroff (wall) | 6.6–7.4 s | 4.7–5.6 s |
//! | guest uptime at the end of /init | 3.5–4.3 s | 3.8–4.8 s |
//!
//! About 21 MB of the initramfs are libraries: kmod pulls libcrypto (4.2
//! MB, module signatures), foreign libc is 2 MB; `modules.alias` and
//! `modules.symbols` (text, 1.5 MB) can be left out (kmod reads the
//! `.bin` indexes, plus `modules.softdep` and `modules.builtin*`). A
//! gzip'd initramfs boots ~0.4 s slower on malta and no faster on arm64:
//! keep it uncompressed, like the amd64 one.
//!
//! The kernel QEMU boots is `boot/vmlinuz-<ver>` for both:
//! * malta: Debian's `vmlinuz` is an ELF (self-decompressing), which is
//!   what `-M malta -kernel` wants (it loads ELF only).
//! * arm64: Debian's `vmlinuz` is an *uncompressed* `Image` (33 MB, the
//!   signed EFI-stub image), booted directly. qemu-system-aarch64 also
//!   takes a gzip'd Image as `-kernel` (tried: it decompresses on the
//!   host, same boot time), so nothing needs gunzipping either way.
//!
//! The machine settings that worked are in board-configs/ (`vm_*` keys).
//!
//! Pitfalls met:
//! * apt reads `APT_CONFIG` *before* `/etc/apt/apt.conf.d`, so host parts
//!   win on conflicts (Docker images set `Dir::Cache::pkgcache ""`, and
//!   appstream adds DEP-11 index targets: `Targets: Packages` in the
//!   rewritten sources keeps those from being fetched). Nothing the host
//!   usually sets conflicts with the keys set here.
//! * One-line sources have one suite per line; deb822 lists several.
//!   Host files not ending in `.list`/`.sources` are ignored, like apt does.
//! * `apt-cache depends` prints translated dependency types: run apt with
//!   `LC_ALL=C` before parsing.
//! * `apt-cache depends --recurse` follows *every* alternative of an OR
//!   group (`debconf | debconf-2.0` brings cdebconf and its newt/slang
//!   libs); the closure here takes the first one that exists, as apt does.
//! * `apt-get download` as root into a directory `_apt` cannot read warns
//!   "Download is performed unsandboxed"; `APT::Sandbox::User "root"`
//!   silences it.
//! * `dpkg-deb -x` into a root whose `lib` is a symlink replaces the
//!   symlink with a directory (tar's default); hence
//!   `dpkg-deb --fsys-tarfile | tar -x --keep-directory-symlink`.
//!   bookworm packages still ship `/lib/<triplet>/...` and `/bin/ip`.
//! * The kernel in bookworm's mipsel archive lags behind the other arches
//!   (6.1.0-50 vs 6.1.0-56 when this was written): resolve the version
//!   per architecture, never reuse the amd64 one.
//! * `ip link add t type ipip ...` fails: iproute2 takes `t` as an
//!   abbreviation of `txqueuelen` ("argument "type" is wrong: Invalid
//!   "txqueuelen" value"); write `ip link add name t type ipip ...`.
//! * In the guest, `modprobe` is the sysroot's kmod (`/usr/sbin/modprobe
//!   -> /bin/kmod`), reading `/lib/modules/<ver>` through the `lib ->
//!   usr/lib` symlink; `crc32c_generic` must be listed (libcrc32c's
//!   softdep) or nf_tables does not load.
//! * Host `depmod -b <root> <ver>` indexes foreign (mipsel, arm64) module
//!   trees fine; host `modprobe -d <root> -S <ver> --show-depends` gives
//!   their closure.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::apt::{check_arch, Apt};
use crate::cache::{prune_newest, ContentHash};
use crate::error::io;
use crate::host::{apt_install, is_root, on_path};
use crate::kernel::{self, Kernel};
use crate::{Foreign, VmError};

/// Bumped when the layout of a sysroot changes (part of its hash).
const FORMAT: &str = "sims-foreign-sysroot-1";

/// The guest userland: busybox, iproute2 (`ip`, `tc`), `nft`, `dnsmasq`,
/// kmod (`modprobe`).
pub const GUEST_PACKAGES: &[&str] = &[
    "busybox-static",
    "iproute2",
    "nftables",
    "dnsmasq-base",
    "kmod",
];

/// An unpacked foreign userland.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysroot {
    /// Debian architecture, e.g. `mipsel`.
    pub arch: String,
    /// usr-merged root the .debs were unpacked into.
    pub root: PathBuf,
}

/// Sorted, deduplicated package names.
fn normalize_packages(packages: &[&str]) -> Vec<String> {
    let set: BTreeSet<String> = packages
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    set.into_iter().collect()
}

fn sysroot_hash(arch: &str, packages: &[String]) -> String {
    let mut h = ContentHash::new();
    h.update(FORMAT.as_bytes());
    h.update(&[0]);
    h.update(arch.as_bytes());
    for p in packages {
        h.update(&[0]);
        h.update(p.as_bytes());
    }
    h.hex()
}

/// Unpacks a .deb's data into `root` without replacing `root`'s directory
/// symlinks (`lib -> usr/lib`).
fn extract_deb(deb: &Path, root: &Path) -> Result<(), String> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("dpkg-deb: {e}"))?;
    let tar_in = dpkg.stdout.take().ok_or("dpkg-deb stdout")?;
    let tar = Command::new("tar")
        .args([
            "-x",
            "--keep-directory-symlink",
            "--no-same-owner",
            "-f",
            "-",
        ])
        .arg("-C")
        .arg(root)
        .stdin(Stdio::from(tar_in))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    let d = dpkg
        .wait_with_output()
        .map_err(|e| format!("dpkg-deb: {e}"))?;
    if !d.status.success() {
        return Err(format!(
            "dpkg-deb --fsys-tarfile {}: {}: {}",
            deb.display(),
            d.status,
            String::from_utf8_lossy(&d.stderr).trim()
        ));
    }
    if !tar.status.success() {
        return Err(format!(
            "tar -x ({}): {}: {}",
            deb.display(),
            tar.status,
            String::from_utf8_lossy(&tar.stderr).trim()
        ));
    }
    Ok(())
}

/// The foreign userland for `packages` (and their dependency closure),
/// fetched and unpacked into `<cache>/sysroot/<arch>-<hash>/root` unless
/// already there.
pub fn prepare(cache: &Path, debian_arch: &str, packages: &[&str]) -> Result<Sysroot, String> {
    check_arch(debian_arch)?;
    let packages = normalize_packages(packages);
    if packages.is_empty() {
        return Err("no packages for the sysroot".into());
    }
    let sdir = cache.join("sysroot");
    let dir = sdir.join(format!(
        "{debian_arch}-{}",
        sysroot_hash(debian_arch, &packages)
    ));
    let root = dir.join("root");
    let stamp = dir.join("complete");
    let sysroot = Sysroot {
        arch: debian_arch.to_string(),
        root: root.clone(),
    };
    if stamp.exists() {
        return Ok(sysroot);
    }
    let t0 = Instant::now();
    println!(
        "==> vm: preparing the {debian_arch} sysroot ({}) in {}",
        packages.join(" "),
        dir.display()
    );
    let apt = Apt::new(cache, debian_arch)?;
    let all = apt.retry(|| apt.depends_closure(&packages))?;
    println!(
        "==> vm: {debian_arch}: {} packages with dependencies",
        all.len()
    );
    let _ = fs::remove_dir_all(&dir);
    let dl = dir.join("download");
    io(fs::create_dir_all(&dl), &dl)?;
    let debs = apt
        .retry(|| {
            // A retry after `apt-get update` must not mix versions.
            for e in fs::read_dir(&dl).into_iter().flatten().flatten() {
                let _ = fs::remove_file(e.path());
            }
            apt.download(&all, &dl)
        })
        .inspect_err(|_| {
            let _ = fs::remove_dir_all(&dir);
        })?;
    // usr-merged, like Debian since bookworm's installs.
    for d in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64"] {
        let p = root.join(d);
        io(fs::create_dir_all(&p), &p)?;
    }
    for (l, t) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        let p = root.join(l);
        io(std::os::unix::fs::symlink(t, &p), &p)?;
    }
    let mut names = String::new();
    for deb in &debs {
        extract_deb(deb, &root).inspect_err(|_| {
            let _ = fs::remove_dir_all(&dir);
        })?;
        if let Some(n) = deb.file_name() {
            names.push_str(&n.to_string_lossy());
            names.push('\n');
        }
    }
    let _ = fs::remove_dir_all(&dl);
    let list = dir.join("packages");
    io(fs::write(&list, names), &list)?;
    io(fs::write(&stamp, packages.join("\n") + "\n"), &stamp)?;
    let prefix = format!("{debian_arch}-");
    prune_newest(
        &sdir,
        |p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        },
        &dir,
        2,
    );
    println!(
        "==> vm: {debian_arch} sysroot ready ({} .debs) in {:.1} s",
        debs.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(sysroot)
}

/// A foreign guest's emulator, kernel and userland, fetched if missing.
pub fn prepare_guest(cache: &Path, f: &Foreign) -> crate::Result<(Kernel, Sysroot)> {
    if !on_path(&f.qemu) {
        if !is_root() {
            return Err(VmError::Setup(format!(
                "{} missing: run `apt-get install {}` as root",
                f.qemu, f.guest.qemu_package
            )));
        }
        println!("==> vm: installing {}", f.guest.qemu_package);
        apt_install(&[&f.guest.qemu_package]).map_err(VmError::Setup)?;
    }
    let arch = &f.guest.debian_arch;
    let kernel =
        kernel::prepare_foreign(cache, arch, &f.guest.kernel_package).map_err(VmError::Fetch)?;
    let sysroot = prepare(cache, arch, GUEST_PACKAGES).map_err(VmError::Setup)?;
    Ok((kernel, sysroot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysroot_hash_covers_arch_and_packages() {
        let a = normalize_packages(&["kmod", "busybox-static", "kmod", " "]);
        assert_eq!(a, ["busybox-static", "kmod"]);
        let b = normalize_packages(&["busybox-static", "kmod"]);
        assert_eq!(sysroot_hash("mipsel", &a), sysroot_hash("mipsel", &b));
        assert_ne!(sysroot_hash("mipsel", &a), sysroot_hash("arm64", &a));
        let c = normalize_packages(&["busybox-static", "kmod", "nftables"]);
        assert_ne!(sysroot_hash("mipsel", &a), sysroot_hash("mipsel", &c));
        assert!(check_arch("mipsel").is_ok());
        assert!(check_arch("../x").is_err());
        assert!(check_arch("").is_err());
    }
}
