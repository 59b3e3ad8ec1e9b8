//! The feed Makefile (openwrt-package/sims/Makefile) cannot be built
//! here without OpenWrt's SDK: it is checked against what it names (the
//! files it installs, the version in Cargo.toml) and the openwrt/packages
//! review rules, and the feed's test.sh is run against simsd.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use sims_openwrt::*;

fn makefile() -> String {
    fs::read_to_string(repo().join("openwrt-package/sims/Makefile")).unwrap()
}

/// `NAME:=value` of the Makefile.
fn var(mk: &str, name: &str) -> String {
    mk.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:=")))
        .unwrap_or_else(|| panic!("{name} not set"))
        .trim()
        .to_string()
}

/// The body of `define <name>` ... `endef`.
fn define(mk: &str, name: &str) -> Vec<String> {
    let start = format!("define {name}");
    let mut lines = mk.lines().skip_while(|l| l.trim_end() != start);
    assert!(lines.next().is_some(), "no {start}");
    lines
        .take_while(|l| l.trim_end() != "endef")
        .map(str::to_string)
        .collect()
}

fn workspace_version() -> String {
    let toml = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let pkg = toml.split("[workspace.package]").nth(1).unwrap();
    pkg.lines()
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"')
        .to_string()
}

#[test]
fn makefile_follows_the_feed_rules() {
    let mk = makefile();
    assert_eq!(var(&mk, "PKG_NAME"), "sims");
    assert_eq!(
        var(&mk, "PKG_VERSION"),
        workspace_version(),
        "the version in Cargo.toml"
    );
    let release = var(&mk, "PKG_RELEASE");
    assert!(
        !release.is_empty() && release.bytes().all(|b| b.is_ascii_digit()),
        "PKG_RELEASE is a bare number, not {release:?}"
    );
    assert!(var(&mk, "PKG_BUILD_DEPENDS")
        .split_whitespace()
        .any(|d| d == "rust/host"));
    assert!(mk.contains("\ninclude ../../lang/rust/rust-package.mk\n"));
    assert!(mk.contains("\n$(eval $(call RustBinPackage,sims))\n"));
    assert!(mk.contains("\n$(eval $(call BuildPackage,sims))\n"));
    let pkg = define(&mk, "Package/sims").join("\n");
    let depends = pkg
        .lines()
        .find_map(|l| l.trim().strip_prefix("DEPENDS:="))
        .expect("DEPENDS");
    assert!(depends.contains("$(RUST_ARCH_DEPENDS)") && depends.contains("+kmod-ipip"));
    // Conffiles: unindented absolute paths, each one installed.
    let conffiles = define(&mk, "Package/sims/conffiles");
    assert!(!conffiles.is_empty());
    let install = define(&mk, "Package/sims/install");
    for c in &conffiles {
        assert!(
            c.starts_with('/') && !c.contains(char::is_whitespace),
            "{c:?}"
        );
        let dest = format!("$(1){c}");
        assert!(
            install.iter().any(|l| l.trim_end().ends_with(&dest)),
            "{c} is installed"
        );
    }
    // Every file it installs from files/ exists, and every file there is
    // installed.
    let dir = repo().join("openwrt-package/sims/files");
    let mut named: Vec<String> = install
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("./files/"))
        })
        .map(str::to_string)
        .collect();
    named.sort();
    let mut present: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    assert_eq!(named, present);
    // The config holds keys: installed 0600 by INSTALL_CONF.
    assert!(install
        .iter()
        .any(|l| l.contains("$(INSTALL_CONF) ./files/sims.config $(1)/etc/config/sims")));
}

#[test]
fn init_script_is_a_procd_script() {
    let init = fs::read_to_string(repo().join("openwrt-package/sims/files/sims.init")).unwrap();
    assert!(init.starts_with("#!/bin/sh /etc/rc.common\n"));
    assert!(init.lines().any(|l| l == "USE_PROCD=1"));
    assert!(init.contains("\nstart_service() {\n"));
    assert!(init.contains("\nservice_triggers() {\n"));
    let mk = makefile();
    assert!(mk.contains("$(INSTALL_BIN) ./files/sims.init $(1)/etc/init.d/sims"));
}

#[test]
fn feed_test_sh_checks_the_version() {
    let test_sh = repo().join("openwrt-package/sims/test.sh");
    let mode = fs::metadata(&test_sh).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "test.sh is executable");
    let Some(bin) = std::env::var_os("SIMS_BIN_DIR") else {
        eprintln!("SKIPPED: running test.sh needs SIMS_BIN_DIR (cargo xtask test sets it)");
        return;
    };
    let path = format!(
        "{}:{}",
        PathBuf::from(bin).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let version = var(&makefile(), "PKG_VERSION");
    run(Command::new("sh")
        .arg(&test_sh)
        .args(["sims", &version])
        .env("PATH", &path))
    .expect("test.sh passes with the package's version");
    assert!(
        run(Command::new("sh")
            .arg(&test_sh)
            .args(["sims", "9.9.9"])
            .env("PATH", &path))
        .is_err(),
        "test.sh fails for another version"
    );
}
