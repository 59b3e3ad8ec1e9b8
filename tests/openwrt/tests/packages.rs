//! The .ipk and .apk of the `sims` package (`sims_openwrt::package`, what
//! `cargo xtask package` writes), installed, upgraded and removed with
//! OpenWrt's real opkg (24.10) and apk-tools v3 (25.12) into offline
//! roots: the files and their modes (the config 0600: it holds keys), the
//! metadata (architecture, the kmod-ipip dependency, the conffile), the
//! maintainer scripts OpenWrt gives every package, an upgrade that keeps
//! an edited /etc/config/sims, a removal that leaves it.
//!
//! Built from the simsd of `SIMS_BIN_DIR` (`cargo xtask test` sets it;
//! SKIPPED without it or without the kit).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sims_openwrt::package::{self, Spec, Written};
use sims_openwrt::*;

const ARCH: &str = "x86_64";

struct Fixture {
    kit: PathBuf,
    dir: PathBuf,
    v1: Written,
    v2: Written,
    libc: Written,
    kmod: Written,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Release 1 as the package ships; release 2 with another default config
/// (so that an upgrade has a new conffile to offer).
fn fixture(name: &str) -> Option<Fixture> {
    let (Some(kit), Some(bin)) = (kit(), std::env::var_os("SIMS_BIN_DIR")) else {
        eprintln!("SKIPPED: needs the OpenWrt kit and SIMS_BIN_DIR (cargo xtask test sets it)");
        return None;
    };
    let dir = std::env::temp_dir().join(format!("sims-pkg-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    // Stripped, as a package ships it (and quicker to pack).
    fs::create_dir_all(&dir).unwrap();
    let simsd = dir.join("simsd");
    fs::copy(PathBuf::from(&bin).join("simsd"), &simsd).unwrap();
    run(Command::new("strip").arg(&simsd)).unwrap();
    let node = dir.join("sims-node");
    fs::copy(PathBuf::from(&bin).join("sims-node"), &node).unwrap();
    run(Command::new("strip").arg(&node)).unwrap();
    let spec = |version: Option<String>, config| Spec {
        arch: ARCH,
        simsd: &simsd,
        node: &node,
        version,
        config,
        out_dir: &dir,
        kit: &kit,
    };
    let v1 = package::write_packages(&spec(None, None)).unwrap();
    let r2 = format!("{}-r2", package::makefile_var("PKG_VERSION").unwrap());
    let v2 =
        package::write_packages(&spec(Some(r2), Some("# the default of release 2\n"))).unwrap();
    let libc = package::write_stub("libc", &dir, &kit).unwrap();
    let kmod = package::write_stub("kmod-ipip", &dir, &kit).unwrap();
    Some(Fixture {
        kit,
        dir,
        v1,
        v2,
        libc,
        kmod,
    })
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The installed files and their modes, whichever the package manager.
fn assert_installed(root: &Path) {
    assert_eq!(mode(&root.join("usr/sbin/simsd")), 0o755);
    assert_eq!(mode(&root.join("etc/init.d/sims")), 0o755);
    // The travel router's node, off until configured.
    assert_eq!(mode(&root.join("usr/sbin/sims-node")), 0o755);
    assert_eq!(mode(&root.join("etc/init.d/sims-node")), 0o755);
    let node_conf = fs::read_to_string(root.join("etc/config/sims-node")).unwrap();
    assert!(node_conf.contains("config node 'node'") && node_conf.contains("option enabled '0'"));
    assert_eq!(
        mode(&root.join("etc/config/sims")),
        0o600,
        "it holds the keys"
    );
    assert!(root.join("etc/uci-defaults/90-sims").is_file());
    let keep = fs::read_to_string(root.join("lib/upgrade/keep.d/sims")).unwrap();
    assert!(keep.lines().any(|l| l == "/etc/sims/"), "{keep}");
    let shipped =
        fs::read_to_string(repo().join("openwrt-package/sims/files/sims.config")).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("etc/config/sims")).unwrap(),
        shipped
    );
    let out = run(Command::new(root.join("usr/sbin/simsd")).arg("--version")).unwrap();
    assert_eq!(
        out.trim(),
        format!("simsd {}", package::makefile_var("PKG_VERSION").unwrap())
    );
}

const EDIT: &str = "\n# the operator's own line\n";

fn edit_config(root: &Path) {
    let p = root.join("etc/config/sims");
    let mut text = fs::read_to_string(&p).unwrap();
    text.push_str(EDIT);
    fs::write(&p, text).unwrap();
}

fn assert_edit_kept(root: &Path) {
    let text = fs::read_to_string(root.join("etc/config/sims")).unwrap();
    assert!(text.ends_with(EDIT), "the edited config is kept: {text}");
}

#[test]
fn opkg_installs_upgrades_and_removes_the_ipk() {
    let Some(f) = fixture("opkg") else { return };
    let root = f.dir.join("root");
    fs::create_dir_all(root.join("var/lock")).unwrap();
    let opkg = |args: &[&Path]| run(package::opkg_offline(&f.kit, &root, ARCH).args(args));
    let arg = |s: &'static str| PathBuf::from(s);
    opkg(&[&arg("install"), &f.libc.ipk, &f.kmod.ipk]).unwrap();
    opkg(&[&arg("install"), &f.v1.ipk]).unwrap();
    assert_installed(&root);
    let info = root.join("usr/lib/opkg/info");
    let control = fs::read_to_string(info.join("sims.control")).unwrap();
    assert!(
        control.contains(&format!("\nArchitecture: {ARCH}\n")),
        "{control}"
    );
    assert!(
        control.contains("\nDepends: libc, kmod-ipip\n"),
        "{control}"
    );
    assert!(control.contains(&format!("\nVersion: {}\n", package::version().unwrap())));
    assert_eq!(
        fs::read_to_string(info.join("sims.conffiles")).unwrap(),
        "/etc/config/sims\n/etc/config/sims-node\n"
    );
    // OpenWrt's default maintainer scripts.
    let postinst = fs::read_to_string(info.join("sims.postinst")).unwrap();
    assert!(postinst.ends_with(". ${IPKG_INSTROOT}/lib/functions.sh\ndefault_postinst $0 $@\n"));
    let prerm = fs::read_to_string(info.join("sims.prerm")).unwrap();
    assert!(prerm.ends_with("default_prerm $0 $@\n"));
    // Without kmod-ipip it does not install.
    let bare = f.dir.join("bare");
    fs::create_dir_all(bare.join("var/lock")).unwrap();
    let refused = run(Command::new(f.kit.join("root/usr/bin/opkg"))
        .arg("--offline-root")
        .arg(&bare)
        .args([
            "--add-arch",
            "all:1",
            "--add-arch",
            &format!("{ARCH}:10"),
            "install",
        ])
        .arg(&f.v1.ipk));
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("kmod-ipip")),
        "{refused:?}"
    );

    edit_config(&root);
    let out = opkg(&[&arg("install"), &f.v2.ipk]).unwrap();
    assert!(out.contains("Upgrading sims"), "{out}");
    assert_edit_kept(&root);
    assert!(
        root.join("etc/config/sims-opkg").exists(),
        "the new default beside it"
    );
    let listed = opkg(&[&arg("list-installed")]).unwrap();
    assert!(
        listed.contains("sims - 0.1.0-r2") || listed.contains("-r2"),
        "{listed}"
    );

    opkg(&[&arg("remove"), &arg("sims")]).unwrap();
    assert!(!root.join("usr/sbin/simsd").exists());
    assert!(!root.join("etc/init.d/sims").exists());
    assert_edit_kept(&root);
}

#[test]
fn apk_installs_upgrades_and_removes_the_apk() {
    let Some(f) = fixture("apk") else { return };
    let root = f.dir.join("root");
    fs::create_dir_all(&root).unwrap();
    let apk = |args: &[&Path]| run(package::apk_offline(&f.kit, &root).args(args));
    let arg = |s: &'static str| PathBuf::from(s);
    apk(&[&arg("add"), &arg("--initdb"), &f.libc.apk, &f.kmod.apk]).unwrap();
    apk(&[&arg("add"), &f.v1.apk]).unwrap();
    assert_installed(&root);
    // What OpenWrt 25.12 records with a package.
    let meta = root.join("lib/apk/packages");
    assert_eq!(
        fs::read_to_string(meta.join("sims.conffiles")).unwrap(),
        "/etc/config/sims\n/etc/config/sims-node\n"
    );
    let list = fs::read_to_string(meta.join("sims.list")).unwrap();
    for p in [
        "/usr/sbin/simsd",
        "/etc/init.d/sims",
        "/etc/config/sims",
        "/etc/uci-defaults/90-sims",
        "/usr/sbin/sims-node",
        "/etc/init.d/sims-node",
        "/etc/config/sims-node",
    ] {
        assert!(list.lines().any(|l| l == p), "{p} in {list}");
    }
    let sums = fs::read_to_string(meta.join("sims.conffiles_static")).unwrap();
    let sums: Vec<&str> = sums.lines().collect();
    assert_eq!(sums.len(), 2, "{sums:?}");
    for (line, file) in sums
        .iter()
        .zip(["/etc/config/sims ", "/etc/config/sims-node "])
    {
        assert!(
            line.starts_with(file) && line.len() == file.len() + 64,
            "{line}"
        );
    }
    let dump = run(Command::new(f.kit.join("root/usr/bin/apk"))
        .arg("adbdump")
        .arg(&f.v1.apk))
    .unwrap();
    assert!(dump.contains(&format!("\n  arch: {ARCH}\n")), "{dump}");
    assert!(dump.contains("\n    - kmod-ipip\n"), "{dump}");
    assert!(dump.contains("\n    default_postinst\n") && dump.contains("\n    default_prerm\n"));
    // Without kmod-ipip it does not install.
    let bare = f.dir.join("bare");
    fs::create_dir_all(&bare).unwrap();
    let refused = run(Command::new(f.kit.join("root/usr/bin/apk"))
        .arg("--root")
        .arg(&bare)
        .args([
            "--allow-untrusted",
            "--no-network",
            "--no-scripts",
            "--no-logfile",
        ])
        .args(["--repositories-file", "/dev/null", "add", "--initdb"])
        .arg(&f.v1.apk));
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("kmod-ipip")),
        "{refused:?}"
    );

    edit_config(&root);
    let out = apk(&[&arg("add"), &f.v2.apk]).unwrap();
    assert!(out.contains("Upgrading sims"), "{out}");
    assert_edit_kept(&root);
    assert!(
        root.join("etc/config/sims.apk-new").exists(),
        "the new default beside it"
    );

    apk(&[&arg("del"), &arg("sims")]).unwrap();
    assert!(!root.join("usr/sbin/simsd").exists());
    assert!(!root.join("etc/init.d/sims").exists());
    assert_edit_kept(&root);
}
