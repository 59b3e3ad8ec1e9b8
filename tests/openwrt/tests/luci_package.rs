//! luci-app-sims as a package: its .ipk and .apk (architecture all,
//! what `cargo xtask package` writes) installed beside the `sims`
//! package with OpenWrt's real opkg and apk-tools v3, its files where
//! LuCI and rpcd look for them, removed cleanly; its translation
//! template in step with the strings of its pages.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sims_openwrt::package::{self, Spec};
use sims_openwrt::*;

const ARCH: &str = "x86_64";

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Where each of the app's files must land.
const EXPECTED: [&str; 5] = [
    "www/luci-static/resources/view/sims/config.js",
    "www/luci-static/resources/view/sims/status.js",
    "usr/share/luci/menu.d/luci-app-sims.json",
    "usr/share/rpcd/acl.d/luci-app-sims.json",
    "usr/share/rpcd/ucode/sims",
];

#[test]
fn luci_app_installs_beside_sims_with_opkg_and_apk() {
    let (Some(kit), Some(bin)) = (kit(), std::env::var_os("SIMS_BIN_DIR")) else {
        eprintln!("SKIPPED: needs the OpenWrt kit and SIMS_BIN_DIR (cargo xtask test sets it)");
        return;
    };
    let dir = Dir(std::env::temp_dir().join(format!("sims-luci-pkg-{}", std::process::id())));
    let d = &dir.0;
    let _ = fs::remove_dir_all(d);
    fs::create_dir_all(d).unwrap();
    let simsd = d.join("simsd");
    fs::copy(PathBuf::from(&bin).join("simsd"), &simsd).unwrap();
    let node = d.join("sims-node");
    fs::copy(PathBuf::from(&bin).join("sims-node"), &node).unwrap();
    let sims = package::write_packages(&Spec {
        arch: ARCH,
        simsd: &simsd,
        node: &node,
        version: None,
        config: None,
        out_dir: d,
        kit: &kit,
    })
    .unwrap();
    let luci = luci_package::write_packages(d, &kit).unwrap();
    assert!(luci.ipk.ends_with(format!(
        "luci-app-sims_{}_all.ipk",
        luci_package::version().unwrap()
    )));
    let stubs: Vec<_> = ["libc", "kmod-ipip", "luci-base", "rpcd-mod-ucode"]
        .iter()
        .map(|n| package::write_stub(n, d, &kit).unwrap())
        .collect();

    // opkg (OpenWrt 24.10): the app needs sims; with it, both install.
    let root = d.join("opkg-root");
    fs::create_dir_all(root.join("var/lock")).unwrap();
    let opkg = |args: &[&Path]| run(package::opkg_offline(&kit, &root, ARCH).args(args));
    let arg = |s: &'static str| PathBuf::from(s);
    let stub_ipks: Vec<&Path> = stubs.iter().map(|w| w.ipk.as_path()).collect();
    let mut install = vec![arg("install")];
    install.extend(stub_ipks.iter().map(|p| p.to_path_buf()));
    opkg(&install.iter().map(|p| p.as_path()).collect::<Vec<_>>()).unwrap();
    let refused = opkg(&[&arg("install"), &luci.ipk]);
    assert!(refused.is_err(), "installed without sims: {refused:?}");
    opkg(&[&arg("install"), &sims.ipk, &luci.ipk]).unwrap();
    for f in EXPECTED {
        assert!(root.join(f).is_file(), "opkg: {f} missing");
    }
    let control = fs::read_to_string(root.join("usr/lib/opkg/info/luci-app-sims.control")).unwrap();
    assert!(control.contains("\nArchitecture: all\n"), "{control}");
    assert!(
        control.contains("\nDepends: luci-base, sims, rpcd-mod-ucode\n"),
        "{control}"
    );
    // The ACL and menu are JSON that rpcd and LuCI can read.
    for f in &EXPECTED[2..4] {
        let text = fs::read_to_string(root.join(f)).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    opkg(&[&arg("remove"), &arg("luci-app-sims")]).unwrap();
    for f in EXPECTED {
        assert!(!root.join(f).exists(), "opkg remove left {f}");
    }
    assert!(root.join("usr/sbin/simsd").is_file(), "sims stays");

    // apk (OpenWrt 25.12).
    let root = d.join("apk-root");
    fs::create_dir_all(&root).unwrap();
    let apk = |args: &[&Path]| run(package::apk_offline(&kit, &root).args(args));
    let mut add = vec![arg("add"), arg("--initdb")];
    add.extend(stubs.iter().map(|w| w.apk.clone()));
    apk(&add.iter().map(|p| p.as_path()).collect::<Vec<_>>()).unwrap();
    apk(&[&arg("add"), &sims.apk, &luci.apk]).unwrap();
    for f in EXPECTED {
        assert!(root.join(f).is_file(), "apk: {f} missing");
    }
    let dump = run(Command::new(kit.join("root/usr/bin/apk"))
        .arg("adbdump")
        .arg(&luci.apk))
    .unwrap();
    assert!(dump.lines().any(|l| l == "  arch: noarch"), "{dump}");
    assert!(dump.lines().any(|l| l == "    - sims"), "{dump}");
    apk(&[&arg("del"), &arg("luci-app-sims")]).unwrap();
    for f in EXPECTED {
        assert!(!root.join(f).exists(), "apk del left {f}");
    }
}

/// `po/templates/sims.pot` is what the scanner makes of the pages now.
#[test]
fn translation_template_is_up_to_date() {
    let app = luci::app();
    let out = Command::new("python3")
        .arg(app.join("po/i18n-scan.py"))
        .arg("--check")
        .current_dir(&app)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "po/templates/sims.pot is stale: run openwrt-package/luci-app-sims/po/i18n-scan.py\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pot = fs::read_to_string(app.join("po/templates/sims.pot")).unwrap();
    for s in ["msgid \"Roaming agreements\"", "msgid \"Generate key\""] {
        assert!(pot.contains(s), "{s} not in sims.pot");
    }
}
