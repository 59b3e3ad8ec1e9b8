//! `cargo xtask package --target <triple>... | --all`: the `sims`
//! package for each board, `sims_<version>_<arch>.ipk` (OpenWrt 24.10,
//! opkg) and `sims-<version>.apk` (OpenWrt 25.12, apk-tools v3), from
//! `cargo xtask build`'s simsd, in `target/openwrt/<package arch>/`.
//! `sims_openwrt::package` (tests/openwrt) makes them, with the kit's
//! `apk mkpkg` (../shared/openwrt).
//!
//! Each board's pair is then checked as an operator would meet it: the
//! .ipk installed with the kit's opkg into an offline root of that
//! architecture (beside stand-ins for libc and kmod-ipip), the .apk's
//! metadata read with `apk adbdump`, and the feed's test.sh run against
//! the installed simsd under QEMU user mode.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use sims_openwrt::package::{self, Spec, Written};
use sims_openwrt::run;

use crate::opts;
use crate::targets::{self, Board, Targets};

/// `cargo xtask package ...`
pub fn package(args: &[String]) -> Result<(), String> {
    let o = opts::parse(args, &["--all", "--deb"], &["--target"])?;
    let wanted = o.targets();
    if wanted.is_empty() && !o.has("--deb") {
        return Err("usage: cargo xtask package --target <triple> | --all | --deb".into());
    }
    if o.has("--deb") {
        package_deb()?;
    }
    if wanted.is_empty() {
        return Ok(());
    }
    package_boards(&wanted)
}

/// sims-node's Debian package for laptops, `sims-node_<version>_amd64.deb`
/// in `target/debian/`: the x86-64 board's static (musl) sims-node, so
/// that one package installs on any Debian or Ubuntu release.
pub fn package_deb() -> Result<(), String> {
    let boards = targets::chosen(&["x86_64-unknown-linux-musl".to_string()])?;
    let mut t = targets::targets();
    let built = t.build(&boards[0])?;
    let out_dir = crate::cargo::target_dir().join("debian");
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let deb = sims_debian::write_deb(&sims_debian::Spec {
        binary: &built.dir.join("sims-node"),
        arch: "amd64",
        version: env!("CARGO_PKG_VERSION"),
        out_dir: &out_dir,
    })?;
    let size = fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
    println!("==> {} ({size} B)", deb.display());
    Ok(())
}

/// Builds, packs and checks the packages of the boards `wanted`.
pub fn package_boards(wanted: &[String]) -> Result<(), String> {
    let kit = sims_openwrt::kit().ok_or(
        "the OpenWrt kit is needed (../shared/openwrt beside the sources, or SIMS_OPENWRT_KIT)",
    )?;
    let boards = targets::chosen(wanted)?;
    let mut t = targets::targets();
    let mut rows = Vec::new();
    for b in &boards {
        let built = t.build(b)?;
        let w = package::write_packages(&Spec {
            arch: &b.openwrt_arch,
            simsd: &built.dir.join("simsd"),
            node: &built.dir.join("sims-node"),
            version: None,
            config: None,
            out_dir: &built.dir,
            kit: &kit,
        })?;
        check(&mut t, b, &w, &kit, &built.dir)?;
        rows.push((b.rust_target.clone(), b.openwrt_arch.clone(), w));
    }
    // luci-app-sims: architecture all, once for every board.
    let all = crate::cargo::target_dir().join("openwrt/all");
    let luci = sims_openwrt::luci_package::write_packages(&all, &kit)?;
    println!("==> packages (installed with opkg, apk metadata read, test.sh run):");
    for (triple, arch, w) in rows {
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        println!(
            "    {triple:32} {arch:26} {} ({} B), {} ({} B)",
            name(&w.ipk),
            size(&w.ipk),
            name(&w.apk),
            size(&w.apk)
        );
    }
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "    {:32} {:26} {} ({} B), {} ({} B)",
        "luci-app-sims",
        "all",
        name(&luci.ipk),
        size(&luci.ipk),
        name(&luci.apk),
        size(&luci.apk)
    );
    Ok(())
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One board's packages, as an operator of that board would install them.
fn check(t: &mut Targets, b: &Board, w: &Written, kit: &Path, dir: &Path) -> Result<(), String> {
    let work = dir.join(".check");
    let _ = fs::remove_dir_all(&work);
    let root = work.join("root");
    fs::create_dir_all(root.join("var/lock")).map_err(|e| e.to_string())?;
    let r = (|| {
        let libc = package::write_stub("libc", &work, kit)?;
        let kmod = package::write_stub("kmod-ipip", &work, kit)?;
        run(package::opkg_offline(kit, &root, &b.openwrt_arch)
            .arg("install")
            .args([&libc.ipk, &kmod.ipk, &w.ipk]))?;
        let control = fs::read_to_string(root.join("usr/lib/opkg/info/sims.control"))
            .map_err(|e| e.to_string())?;
        for want in [
            format!("Architecture: {}", b.openwrt_arch),
            "Depends: libc, kmod-ipip".to_string(),
        ] {
            if !control.lines().any(|l| l == want) {
                return Err(format!(
                    "{}: no '{want}' in its control:\n{control}",
                    name(&w.ipk)
                ));
            }
        }
        let dump = run(Command::new(kit.join("root/usr/bin/apk"))
            .arg("adbdump")
            .arg(&w.apk))?;
        for want in [
            format!("  arch: {}", b.openwrt_arch),
            "    - kmod-ipip".into(),
        ] {
            if !dump.lines().any(|l| l == want) {
                return Err(format!("{}: no '{want}' in its metadata", name(&w.apk)));
            }
        }
        // The feed's test: `simsd --version` of the installed binary,
        // under QEMU user mode where the board is not this machine.
        let bin = work.join("bin");
        fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
        let simsd = root.join("usr/sbin/simsd");
        let wrapper = match t.runner(b)? {
            Some(r) => format!(
                "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
                r.display(),
                simsd.display()
            ),
            None => format!("#!/bin/sh\nexec '{}' \"$@\"\n", simsd.display()),
        };
        let w_path = bin.join("simsd");
        fs::write(&w_path, wrapper).map_err(|e| e.to_string())?;
        fs::set_permissions(&w_path, fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let test_sh = sims_openwrt::repo().join("openwrt-package/sims/test.sh");
        let version = package::makefile_var("PKG_VERSION")?;
        run(Command::new("sh")
            .arg(&test_sh)
            .args(["sims", &version])
            .env("PATH", path))
        .map_err(|e| format!("test.sh for {}: {e}", b.name))?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&work);
    r
}
