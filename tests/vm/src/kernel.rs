//! Debian kernel packages: resolved from a flavour meta package
//! (`linux-image-amd64` → `linux-image-6.1.0-56-amd64`), fetched with
//! `apt-get download`, unpacked with `dpkg-deb -x` and indexed with
//! `depmod -b`. The host's amd64 kernel lives in `<cache>/kernel/`, a
//! foreign one in `<cache>/kernel-<arch>/` (offline, [`prepare`] boots the
//! newest one in `kernel/`, which must stay an amd64 one).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::apt::{kernel_version_from_depends, Apt};
use crate::cache::{newest_cached, prune_newest};
use crate::host::{depmod_bin, is_root, output};
use crate::{Result, VmError};

/// The host's kernel flavour.
const AMD64_META: &str = "linux-image-amd64";

/// An unpacked kernel package.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub version: String,
    /// The package's files (`boot/`, `lib/modules/<version>/`).
    pub root: PathBuf,
    /// What QEMU boots: `vmlinux` (PVH) if extracted, else the bzImage;
    /// a foreign kernel's `boot/vmlinuz-<version>`.
    pub image: PathBuf,
}

/// `linux-image-amd64`'s dependency, e.g. `6.1.0-56-amd64`.
fn resolve_amd64_version() -> std::result::Result<String, String> {
    let ask = || -> std::result::Result<String, String> {
        let mut c = Command::new("apt-cache");
        c.args(["depends", AMD64_META]);
        let out = output(c)?;
        kernel_version_from_depends(&out, AMD64_META)
            .ok_or_else(|| format!("apt-cache depends {AMD64_META} named no kernel:\n{out}"))
    };
    match ask() {
        Ok(v) => Ok(v),
        Err(first) if is_root() => {
            // A fresh machine may have no package lists yet.
            let _ = Command::new("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
            ask().map_err(|e| format!("{first}\nafter apt-get update: {e}"))
        }
        Err(e) => Err(e),
    }
}

/// The host architecture's kernel (`version`, or what
/// `linux-image-amd64` depends on), fetched and unpacked into the cache
/// if not there yet.
pub fn prepare(cache: &Path, version: Option<&str>) -> Result<Kernel> {
    let kdir = cache.join("kernel");
    let version = match version {
        Some(v) => v.to_string(),
        None => match resolve_amd64_version() {
            Ok(v) => v,
            Err(e) => {
                // Offline but cached: use the newest cached kernel.
                let cached = newest_cached(&kdir, "");
                match cached {
                    Some(v) => {
                        println!(
                            "==> vm: cannot resolve the kernel version ({e}); using cached {v}"
                        );
                        v
                    }
                    None => return Err(VmError::Fetch(e)),
                }
            }
        },
    };
    if version.is_empty() || version.contains('/') || version.starts_with('.') {
        return Err(VmError::Fetch(format!("bad kernel version {version:?}")));
    }
    let dir = kdir.join(&version);
    let root = dir.join("root");
    if !dir.join("complete").exists() {
        let pkg = format!("linux-image-{version}");
        println!(
            "==> vm: fetching {pkg} (apt-get download) into {}",
            dir.display()
        );
        let t0 = Instant::now();
        let _ = fs::remove_dir_all(&dir);
        let dl = dir.join("download");
        fs::create_dir_all(&dl).map_err(|e| VmError::Fetch(format!("{}: {e}", dl.display())))?;
        let mut c = Command::new("apt-get");
        c.args(["download", &pkg]).current_dir(&dl);
        if let Err(e) = output(c) {
            let _ = fs::remove_dir_all(&dir);
            return Err(VmError::Fetch(format!(
                "{pkg}: {e}\n(is the version right? `apt-cache search linux-image` lists them; \
                 `apt-get update` refreshes the lists)"
            )));
        }
        let deb = fs::read_dir(&dl)
            .ok()
            .and_then(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|x| x == "deb"))
            })
            .ok_or_else(|| VmError::Fetch(format!("apt-get download {pkg} left no .deb")))?;
        unpack(&deb, &dir, &version).map_err(VmError::Fetch)?;
        let bz = root.join("boot").join(format!("vmlinuz-{version}"));
        match extract_vmlinux(&bz, &dir.join("vmlinux")) {
            Ok(()) => {}
            Err(e) => println!("==> vm: no uncompressed kernel ({e}); booting the bzImage"),
        }
        finish(&dir, &pkg).map_err(VmError::Fetch)?;
        prune_newest(&kdir, |_| true, &dir, 2);
        println!(
            "==> vm: kernel {version} ready in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let vmlinux = dir.join("vmlinux");
    let bz = root.join("boot").join(format!("vmlinuz-{version}"));
    let image = if vmlinux.is_file() { vmlinux } else { bz };
    if !image.is_file() {
        return Err(VmError::Fetch(format!("{} missing", image.display())));
    }
    Ok(Kernel {
        version,
        root,
        image,
    })
}

/// A foreign kernel: `root` holds `boot/` and `lib/modules/<version>/`
/// (depmod'ed) and `image` is what QEMU's `-kernel` takes (see
/// [`crate::sysroot`]'s docs). Cached in `<cache>/kernel-<arch>/<version>/`;
/// offline, the newest cached kernel of the flavour is used.
pub fn prepare_foreign(
    cache: &Path,
    debian_arch: &str,
    flavour_meta_pkg: &str,
) -> std::result::Result<Kernel, String> {
    let flavour = flavour_meta_pkg
        .strip_prefix("linux-image-")
        .filter(|f| !f.is_empty() && !f.contains(['/', ' ']))
        .ok_or_else(|| format!("{flavour_meta_pkg:?} is no linux-image-<flavour> package"))?;
    let kdir = cache.join(format!("kernel-{debian_arch}"));
    let apt = Apt::new(cache, debian_arch)?;
    let resolve = || -> std::result::Result<String, String> {
        let mut c = apt.cmd("apt-cache");
        c.args(["depends", flavour_meta_pkg]);
        let out = output(c)?;
        kernel_version_from_depends(&out, flavour_meta_pkg)
            .ok_or_else(|| format!("apt-cache depends {flavour_meta_pkg} named no kernel:\n{out}"))
    };
    let version = match apt.retry(resolve) {
        Ok(v) => v,
        Err(e) => match newest_cached(&kdir, &format!("-{flavour}")) {
            Some(v) => {
                println!("==> vm: cannot resolve {flavour_meta_pkg} ({e}); using cached {v}");
                v
            }
            None => return Err(e),
        },
    };
    let dir = kdir.join(&version);
    let root = dir.join("root");
    if !dir.join("complete").exists() {
        let pkg = format!("linux-image-{version}");
        println!(
            "==> vm: fetching {pkg} ({debian_arch}, apt-get download) into {}",
            dir.display()
        );
        let t0 = Instant::now();
        let _ = fs::remove_dir_all(&dir);
        let dl = dir.join("download");
        fs::create_dir_all(&dl).map_err(|e| format!("{}: {e}", dl.display()))?;
        let fetched = apt.retry(|| apt.download(std::slice::from_ref(&pkg), &dl));
        let debs = match fetched {
            Ok(d) if !d.is_empty() => d,
            Ok(_) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(format!("apt-get download {pkg} left no .deb"));
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(format!("{pkg}: {e}"));
            }
        };
        unpack(&debs[0], &dir, &version)?;
        finish(&dir, &pkg)?;
        prune_newest(&kdir, |_| true, &dir, 2);
        println!(
            "==> vm: {debian_arch} kernel {version} ready in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    // malta: an ELF (what `-M malta -kernel` loads); arm64: a raw Image
    // (QEMU would also take a gzip'd one). See crate::sysroot's docs.
    let image = root.join("boot").join(format!("vmlinuz-{version}"));
    if !image.is_file() {
        return Err(format!("{} missing", image.display()));
    }
    Ok(Kernel {
        version,
        root,
        image,
    })
}

/// Unpacks a kernel .deb into `<dir>/root` and indexes its modules; the
/// download directory goes.
fn unpack(deb: &Path, dir: &Path, version: &str) -> std::result::Result<(), String> {
    let root = dir.join("root");
    fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut c = Command::new("dpkg-deb");
    c.arg("-x").arg(deb).arg(&root);
    output(c)?;
    let mut c = Command::new(depmod_bin());
    c.arg("-b").arg(&root).arg(version);
    output(c).map_err(|e| format!("depmod: {e}"))?;
    let _ = fs::remove_dir_all(dir.join("download"));
    Ok(())
}

/// The `complete` stamp: the kernel in `dir` is ready.
fn finish(dir: &Path, pkg: &str) -> std::result::Result<(), String> {
    let stamp = dir.join("complete");
    fs::write(&stamp, format!("{pkg}\n")).map_err(|e| format!("{}: {e}", stamp.display()))
}

/// The ELF vmlinux inside a bzImage whose payload is xz (Debian's), like
/// the kernel's scripts/extract-vmlinux. QEMU boots it via PVH.
fn extract_vmlinux(bz: &Path, out: &Path) -> std::result::Result<(), String> {
    let data = fs::read(bz).map_err(|e| format!("{}: {e}", bz.display()))?;
    let magic = [0xfd, b'7', b'z', b'X', b'Z', 0];
    let pos = data
        .windows(magic.len())
        .position(|w| w == magic)
        .ok_or("no xz payload")?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("xz: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("xz stdin")?;
    let payload = data[pos..].to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&payload);
    });
    let mut elf = Vec::new();
    child
        .stdout
        .take()
        .ok_or("xz stdout")?
        .read_to_end(&mut elf)
        .map_err(|e| e.to_string())?;
    let _ = feeder.join();
    let _ = child.wait();
    if elf.len() < 1 << 20 || !elf.starts_with(b"\x7fELF") {
        return Err("payload is not an ELF kernel".into());
    }
    let tmp = out.with_extension("tmp");
    fs::write(&tmp, &elf).map_err(|e| e.to_string())?;
    fs::rename(&tmp, out).map_err(|e| e.to_string())
}
