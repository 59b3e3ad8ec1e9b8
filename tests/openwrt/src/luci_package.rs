//! The `luci-app-sims` package as the LuCI feed's `luci.mk` would make
//! it, without the SDK: `htdocs/` under `/www`, `root/` at `/`,
//! architecture `all`, with luci.mk's post-install (LuCI's caches
//! dropped and rpcd told to reread its ACLs and plugins on a live
//! router), as an `.ipk` (opkg) and an `.apk` (apk-tools v3's `apk
//! mkpkg`, from the kit).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::package::{pack_ipk, source_date_epoch, write, Written};
use crate::run;

pub const NAME: &str = "luci-app-sims";
/// LUCI_DEPENDS of the feed Makefile, and LuCI itself.
pub const DEPENDS: [&str; 3] = ["luci-base", "sims", "rpcd-mod-ucode"];

/// `NAME:=value` of the app's Makefile.
fn makefile_var(name: &str) -> Result<String, String> {
    crate::package::makefile_var_of("openwrt-package/luci-app-sims/Makefile", name)
}

/// The files the package installs: (path in the root, source).
pub fn files() -> Result<Vec<(String, PathBuf)>, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
            if e.path().is_dir() {
                walk(&e.path(), &name, out)?;
            } else {
                out.push((name.trim_start_matches('/').to_string(), e.path()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&crate::luci::app().join("htdocs"), "/www", &mut out)?;
    walk(&crate::luci::app().join("root"), "", &mut out)?;
    Ok(out)
}

/// luci.mk's post-install: on a live router (no IPKG_INSTROOT), LuCI's
/// caches go and rpcd reloads its ACLs and ucode plugins.
const POSTINST: &str = "#!/bin/sh\n[ -n \"${IPKG_INSTROOT}\" ] || {\n\trm -f /tmp/luci-indexcache.*\n\trm -rf /tmp/luci-modulecache/\n\tkillall -HUP rpcd 2>/dev/null\n\texit 0\n}\n";

fn stage(root: &Path) -> Result<u64, String> {
    let mut size = 0;
    for (dest, src) in files()? {
        let to = root.join(&dest);
        fs::create_dir_all(to.parent().unwrap()).map_err(|e| e.to_string())?;
        fs::copy(&src, &to).map_err(|e| format!("{}: {e}", src.display()))?;
        let mode = if dest.starts_with("usr/share/rpcd/ucode/") || dest.ends_with(".sh") {
            0o755
        } else {
            0o644
        };
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
        size += fs::metadata(&to).map_err(|e| e.to_string())?.len();
    }
    Ok(size)
}

/// `<PKG_VERSION>-r<PKG_RELEASE>` of the app's Makefile.
pub fn version() -> Result<String, String> {
    Ok(format!(
        "{}-r{}",
        makefile_var("PKG_VERSION")?,
        makefile_var("PKG_RELEASE")?
    ))
}

/// Writes `luci-app-sims_<version>_all.ipk` and `luci-app-sims-<version>.apk`.
pub fn write_packages(out_dir: &Path, kit: &Path) -> Result<Written, String> {
    let version = version()?;
    let title = makefile_var("LUCI_TITLE")?;
    let license = makefile_var("PKG_LICENSE")?;
    let maintainer = makefile_var("PKG_MAINTAINER")?;
    fs::create_dir_all(out_dir).map_err(|e| e.to_string())?;
    let work = out_dir.join(format!(".luci-pkg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let r = (|| {
        // .ipk
        let w = work.join("ipk");
        let size = stage(&w.join("data"))?;
        write(
            &w.join("control/control"),
            &format!(
                "Package: {NAME}\nVersion: {version}\nDepends: {}\nSource: feeds/luci/applications/{NAME}\nSourceName: {NAME}\nLicense: {license}\nSection: luci\nSourceDateEpoch: {}\nMaintainer: {maintainer}\nArchitecture: all\nInstalled-Size: {size}\nDescription:  {title}\n",
                DEPENDS.join(", "),
                source_date_epoch(),
            ),
            0o644,
        )?;
        write(&w.join("control/postinst"), POSTINST, 0o755)?;
        let ipk = out_dir.join(format!("{NAME}_{version}_all.ipk"));
        pack_ipk(&w, &ipk)?;
        // .apk
        let a = work.join("apk");
        stage(&a.join("files"))?;
        let mut list: Vec<String> = files()?.iter().map(|(d, _)| format!("/{d}")).collect();
        list.push(format!("/lib/apk/packages/{NAME}.list"));
        list.sort();
        write(
            &a.join(format!("files/lib/apk/packages/{NAME}.list")),
            &(list.join("\n") + "\n"),
            0o644,
        )?;
        write(&a.join("post-install"), POSTINST, 0o755)?;
        let apk = out_dir.join(format!("{NAME}-{version}.apk"));
        let _ = fs::remove_file(&apk);
        let info = |k: &str, v: &str| format!("{k}:{v}");
        run(Command::new(kit.join("root/usr/bin/apk"))
            .arg("mkpkg")
            .args(["--info", &info("name", NAME)])
            .args(["--info", &info("version", &version)])
            .args(["--info", &info("description", &title)])
            .args(["--info", "arch:noarch"])
            .args(["--info", &info("license", &license)])
            .args(["--info", &info("origin", NAME)])
            .args(["--info", &info("maintainer", &maintainer)])
            .args(["--info", &info("depends", &DEPENDS.join(" "))])
            .arg("--script")
            .arg(format!("post-install:{}", a.join("post-install").display()))
            .arg("--files")
            .arg(a.join("files"))
            .arg("--output")
            .arg(&apk))?;
        Ok(Written { ipk, apk })
    })();
    let _ = fs::remove_dir_all(&work);
    r
}
