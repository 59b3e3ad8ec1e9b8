//! The `sims` package as OpenWrt's build system would make it, without
//! the SDK: the files of `openwrt-package/sims/` and a simsd binary,
//! packed as an `.ipk` (OpenWrt 24.10's opkg: the format `ipkg-build`
//! writes) and an `.apk` (OpenWrt 25.12's apk-tools v3, made by the kit's
//! real `apk mkpkg`), with the metadata and the maintainer scripts
//! OpenWrt's `package-pack.mk` gives every package. `cargo xtask package`
//! writes them for each board; the tests install them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{repo, run};

/// What one package is built from.
pub struct Spec<'a> {
    /// OpenWrt's package architecture (`mips_24kc`, `x86_64`, ...).
    pub arch: &'a str,
    /// The simsd binary to ship (stripped, for that architecture).
    pub simsd: &'a Path,
    /// The sims-node binary (a travel router's mobile node).
    pub node: &'a Path,
    /// `<version>-r<release>` unless given: the feed Makefile's.
    pub version: Option<String>,
    /// The default /etc/config/sims, unless given: files/sims.config.
    pub config: Option<&'a str>,
    pub out_dir: &'a Path,
    /// OpenWrt's kit (for `apk mkpkg`).
    pub kit: &'a Path,
}

/// The packages written.
pub struct Written {
    pub ipk: PathBuf,
    pub apk: PathBuf,
}

pub const NAME: &str = "sims";
/// What the package needs at run time (besides the C library every
/// OpenWrt package depends on): the ipip tunnels.
pub const DEPENDS: [&str; 2] = ["libc", "kmod-ipip"];
pub const CONFFILES: [&str; 2] = ["/etc/config/sims", "/etc/config/sims-node"];

/// `NAME:=value` of the feed Makefile.
pub fn makefile_var(name: &str) -> Result<String, String> {
    makefile_var_of("openwrt-package/sims/Makefile", name)
}

/// `NAME:=value` of the Makefile at `path` (from the top of the sources).
pub fn makefile_var_of(path: &str, name: &str) -> Result<String, String> {
    let mk = fs::read_to_string(repo().join(path)).map_err(|e| format!("{path}: {e}"))?;
    mk.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:=")))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("{path}: no {name}"))
}

/// `<PKG_VERSION>-r<PKG_RELEASE>`, as OpenWrt names a package's version.
pub fn version() -> Result<String, String> {
    Ok(format!(
        "{}-r{}",
        makefile_var("PKG_VERSION")?,
        makefile_var("PKG_RELEASE")?
    ))
}

/// The kit's opkg on the offline root `root` (OpenWrt 24.10), taking
/// packages of architecture `arch` and `all`.
pub fn opkg_offline(kit: &Path, root: &Path, arch: &str) -> Command {
    let mut c = Command::new(kit.join("root/usr/bin/opkg"));
    c.arg("--offline-root").arg(root).args([
        "--add-arch",
        "all:1",
        "--add-arch",
        &format!("{arch}:10"),
    ]);
    c
}

/// The kit's apk on the root `root` (OpenWrt 25.12): local, unsigned
/// packages, no scripts (they would run chrooted there), no log.
pub fn apk_offline(kit: &Path, root: &Path) -> Command {
    let mut c = Command::new(kit.join("root/usr/bin/apk"));
    c.arg("--root").arg(root).args([
        "--allow-untrusted",
        "--no-network",
        "--no-scripts",
        "--no-logfile",
        "--repositories-file",
        "/dev/null",
    ]);
    c
}

/// The package's description, one line (the Makefile's, unwrapped).
fn description() -> Result<String, String> {
    let mk = fs::read_to_string(repo().join("openwrt-package/sims/Makefile"))
        .map_err(|e| e.to_string())?;
    let body: Vec<&str> = mk
        .lines()
        .skip_while(|l| l.trim_end() != "define Package/sims/description")
        .skip(1)
        .take_while(|l| l.trim_end() != "endef")
        .map(str::trim)
        .collect();
    Ok(body.join(" "))
}

/// The files the package installs (the Makefile's Package/sims/install):
/// (path in the root, source, mode).
fn files(spec: &Spec) -> Vec<(&'static str, PathBuf, u32)> {
    let f = |n: &str| repo().join("openwrt-package/sims/files").join(n);
    vec![
        ("usr/sbin/simsd", spec.simsd.to_path_buf(), 0o755),
        ("etc/init.d/sims", f("sims.init"), 0o755),
        ("etc/config/sims", f("sims.config"), 0o600),
        ("etc/uci-defaults/90-sims", f("sims.uci-defaults"), 0o644),
        // sysupgrade keeps the accounting file.
        ("lib/upgrade/keep.d/sims", f("sims.keep"), 0o644),
        ("usr/sbin/sims-node", spec.node.to_path_buf(), 0o755),
        ("etc/init.d/sims-node", f("sims-node.init"), 0o755),
        ("etc/config/sims-node", f("sims-node.config"), 0o600),
    ]
}

/// OpenWrt's maintainer scripts for every package (package-pack.mk):
/// `default_postinst` / `default_prerm` of /lib/functions.sh, which
/// enable the init script and run the uci-defaults on a live router.
fn ipk_postinst() -> &'static str {
    "#!/bin/sh\n[ \"${IPKG_NO_SCRIPT}\" = \"1\" ] && exit 0\n[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n. ${IPKG_INSTROOT}/lib/functions.sh\ndefault_postinst $0 $@\n"
}
fn ipk_prerm() -> &'static str {
    "#!/bin/sh\n[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n. ${IPKG_INSTROOT}/lib/functions.sh\ndefault_prerm $0 $@\n"
}
fn apk_post_install() -> String {
    format!(
        "#!/bin/sh\n[ \"${{IPKG_NO_SCRIPT}}\" = \"1\" ] && exit 0\n[ -s ${{IPKG_INSTROOT}}/lib/functions.sh ] || exit 0\n. ${{IPKG_INSTROOT}}/lib/functions.sh\nexport root=\"${{IPKG_INSTROOT}}\"\nexport pkgname=\"{NAME}\"\nadd_group_and_user\ndefault_postinst\n"
    )
}
fn apk_pre_deinstall() -> String {
    format!(
        "#!/bin/sh\n[ -s ${{IPKG_INSTROOT}}/lib/functions.sh ] || exit 0\n. ${{IPKG_INSTROOT}}/lib/functions.sh\nexport root=\"${{IPKG_INSTROOT}}\"\nexport pkgname=\"{NAME}\"\ndefault_prerm\n"
    )
}

pub(crate) fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

/// The package's root: its files with their modes.
fn stage(spec: &Spec, root: &Path) -> Result<u64, String> {
    let mut size = 0;
    for (dest, src, mode) in files(spec) {
        let to = root.join(dest);
        fs::create_dir_all(to.parent().unwrap()).map_err(|e| e.to_string())?;
        match (dest, spec.config) {
            ("etc/config/sims", Some(text)) => fs::write(&to, text),
            _ => fs::copy(&src, &to).map(|_| ()),
        }
        .map_err(|e| format!("{}: {e}", src.display()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
        size += fs::metadata(&to).map_err(|e| e.to_string())?.len();
    }
    Ok(size)
}

/// The time the package's files and metadata carry: `SOURCE_DATE_EPOCH`,
/// or the sources' last commit (reproducible either way).
pub fn source_date_epoch() -> u64 {
    if let Some(t) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return t;
    }
    run(Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["log", "-1", "--format=%ct"]))
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

/// A reproducible gzip'd tar of `names` in `dir`, owned by root (GNU
/// tar's format, as ipkg-build writes it).
pub(crate) fn tar_gz(dir: &Path, names: &[&str], out: &Path) -> Result<(), String> {
    run(Command::new("bash").arg("-c").arg(format!(
        "set -o pipefail; tar --owner=0 --group=0 --numeric-owner --sort=name \
         --mtime=@{} --format=gnu -C '{}' -cf - {} | gzip -n -9 > '{}'",
        source_date_epoch(),
        dir.display(),
        names.join(" "),
        out.display()
    )))
    .map(|_| ())
}

/// Packs `work/control/` and `work/data/` as the .ipk `out`, as
/// ipkg-build does: debian-binary, data.tar.gz, control.tar.gz.
pub(crate) fn pack_ipk(work: &Path, out: &Path) -> Result<(), String> {
    write(&work.join("debian-binary"), "2.0\n", 0o644)?;
    tar_gz(&work.join("control"), &["."], &work.join("control.tar.gz"))?;
    tar_gz(&work.join("data"), &["."], &work.join("data.tar.gz"))?;
    tar_gz(
        work,
        &["./debian-binary", "./data.tar.gz", "./control.tar.gz"],
        out,
    )
}

/// Writes `sims_<version>_<arch>.ipk` and `sims-<version>.apk` into
/// `spec.out_dir`.
pub fn write_packages(spec: &Spec) -> Result<Written, String> {
    let version = match &spec.version {
        Some(v) => v.clone(),
        None => version()?,
    };
    fs::create_dir_all(spec.out_dir).map_err(|e| e.to_string())?;
    let work = spec.out_dir.join(format!(".pkg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let r = (|| {
        let ipk = write_ipk(spec, &version, &work.join("ipk"))?;
        let apk = write_apk(spec, &version, &work.join("apk"))?;
        Ok(Written { ipk, apk })
    })();
    let _ = fs::remove_dir_all(&work);
    r
}

fn write_ipk(spec: &Spec, version: &str, work: &Path) -> Result<PathBuf, String> {
    let data = work.join("data");
    let control = work.join("control");
    let size = stage(spec, &data)?;
    let license = makefile_var("PKG_LICENSE")?;
    let maintainer = makefile_var("PKG_MAINTAINER")?;
    write(
        &control.join("control"),
        &format!(
            "Package: {NAME}\nVersion: {version}\nDepends: {}\nSource: feeds/packages/net/{NAME}\nSourceName: {NAME}\nLicense: {license}\nSection: net\nSourceDateEpoch: {}\nMaintainer: {maintainer}\nArchitecture: {}\nInstalled-Size: {size}\nDescription:  {}\n",
            DEPENDS.join(", "),
            source_date_epoch(),
            spec.arch,
            description()?
        ),
        0o644,
    )?;
    write(
        &control.join("conffiles"),
        &(CONFFILES.join("\n") + "\n"),
        0o644,
    )?;
    write(&control.join("postinst"), ipk_postinst(), 0o755)?;
    write(&control.join("prerm"), ipk_prerm(), 0o755)?;
    let out = spec
        .out_dir
        .join(format!("{NAME}_{version}_{}.ipk", spec.arch));
    pack_ipk(work, &out)?;
    Ok(out)
}

fn write_apk(spec: &Spec, version: &str, work: &Path) -> Result<PathBuf, String> {
    let files = work.join("files");
    stage(spec, &files)?;
    // What OpenWrt 25.12 records with every package: its file list, its
    // conffiles, and their checksums as installed (to tell an edited
    // conffile on upgrade).
    let meta = files.join("lib/apk/packages");
    let mut list: Vec<String> = self::files(spec)
        .iter()
        .map(|(d, _, _)| format!("/{d}"))
        .collect();
    list.push(format!("/lib/apk/packages/{NAME}.conffiles"));
    list.push(format!("/lib/apk/packages/{NAME}.conffiles_static"));
    list.push(format!("/lib/apk/packages/{NAME}.list"));
    list.sort();
    write(
        &meta.join(format!("{NAME}.list")),
        &(list.join("\n") + "\n"),
        0o644,
    )?;
    write(
        &meta.join(format!("{NAME}.conffiles")),
        &(CONFFILES.join("\n") + "\n"),
        0o644,
    )?;
    let mut sums = String::new();
    for c in CONFFILES {
        let out = run(Command::new("sha256sum").arg(files.join(&c[1..])))?;
        let sum = out.split_whitespace().next().unwrap_or_default();
        sums.push_str(&format!("{c} {sum}\n"));
    }
    write(&meta.join(format!("{NAME}.conffiles_static")), &sums, 0o644)?;
    let scripts = work.join("scripts");
    write(&scripts.join("post-install"), &apk_post_install(), 0o755)?;
    write(
        &scripts.join("post-upgrade"),
        &format!(
            "#!/bin/sh\nexport PKG_UPGRADE=1\n{}",
            apk_post_install().trim_start_matches("#!/bin/sh\n")
        ),
        0o755,
    )?;
    write(&scripts.join("pre-deinstall"), &apk_pre_deinstall(), 0o755)?;
    let out = spec.out_dir.join(format!("{NAME}-{version}.apk"));
    let _ = fs::remove_file(&out);
    let info = |k: &str, v: &str| format!("{k}:{v}");
    run(Command::new(spec.kit.join("root/usr/bin/apk"))
        .arg("mkpkg")
        .args(["--info", &info("name", NAME)])
        .args(["--info", &info("version", version)])
        .args(["--info", &info("description", &description()?)])
        .args(["--info", &info("arch", spec.arch)])
        .args(["--info", &info("license", &makefile_var("PKG_LICENSE")?)])
        .args(["--info", &info("origin", NAME)])
        .args([
            "--info",
            &info("maintainer", &makefile_var("PKG_MAINTAINER")?),
        ])
        .args(["--info", &info("depends", &DEPENDS.join(" "))])
        .arg("--script")
        .arg(format!(
            "post-install:{}",
            scripts.join("post-install").display()
        ))
        .arg("--script")
        .arg(format!(
            "post-upgrade:{}",
            scripts.join("post-upgrade").display()
        ))
        .arg("--script")
        .arg(format!(
            "pre-deinstall:{}",
            scripts.join("pre-deinstall").display()
        ))
        .arg("--files")
        .arg(&files)
        .arg("--output")
        .arg(&out))?;
    Ok(out)
}

/// An empty package `name` (for the dependencies an OpenWrt root has:
/// libc, kmod-ipip), architecture `all`, in both formats.
pub fn write_stub(name: &str, out_dir: &Path, kit: &Path) -> Result<Written, String> {
    let work = out_dir.join(format!(".stub-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let r = (|| {
        let data = work.join("data");
        fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let control = work.join("control");
        write(
            &control.join("control"),
            &format!("Package: {name}\nVersion: 1-r1\nArchitecture: all\nMaintainer: test\nSection: libs\nDescription: stand-in for OpenWrt's {name}\n"),
            0o644,
        )?;
        let ipk = out_dir.join(format!("{name}_1-r1_all.ipk"));
        pack_ipk(&work, &ipk)?;
        let apk = out_dir.join(format!("{name}-1-r1.apk"));
        let _ = fs::remove_file(&apk);
        run(Command::new(kit.join("root/usr/bin/apk"))
            .arg("mkpkg")
            .args(["--info", &format!("name:{name}"), "--info", "version:1-r1"])
            .args([
                "--info",
                "arch:noarch",
                "--info",
                "license:none",
                "--info",
                "origin:test",
            ])
            .args([
                "--info",
                &format!("description:stand-in for OpenWrt's {name}"),
            ])
            .arg("--files")
            .arg(&data)
            .arg("--output")
            .arg(&apk))?;
        Ok(Written { ipk, apk })
    })();
    let _ = fs::remove_dir_all(&work);
    r
}
