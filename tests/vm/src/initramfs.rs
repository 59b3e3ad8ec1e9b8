//! The guest's root: an uncompressed newc cpio (the cpio crate) holding
//! busybox, the tools and their libraries (the host's, through `ldd`, or a
//! foreign sysroot's, through [`crate::elf`]), the closure of the listed
//! modules with kmod's indexes, and tests/vm/init. Cached as
//! `<cache>/initramfs/<version>-<hash>.cpio`, the hash covering every
//! path, kind and byte that goes in.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::cache::{prune_newest, ContentHash};
use crate::elf::needed_libs;
use crate::host::{have, modprobe_bin, output};
use crate::kernel::Kernel;
use crate::sysroot::Sysroot;
use crate::{Result, Spec, VmError, TOOLS};

/// Bumped when the layout of what we build changes (part of every hash).
const FORMAT: &str = "sims-vm-initramfs-1";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File { src: PathBuf, exec: bool },
    Data { bytes: Vec<u8>, exec: bool },
    Symlink(String),
    CharDev(u32, u32),
}

/// The initramfs's tree: path (no leading '/') → entry. BTreeMap order puts
/// every directory before what it contains.
#[derive(Default)]
struct Tree {
    entries: BTreeMap<String, Entry>,
}

fn rel(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_string()
}

impl Tree {
    fn dir(&mut self, path: &str) {
        let mut cur = String::new();
        for part in path.split('/').filter(|s| !s.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            self.entries.entry(cur.clone()).or_insert(Entry::Dir);
        }
    }

    fn parent_dirs(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn add(&mut self, path: &str, e: Entry) {
        self.parent_dirs(path);
        self.entries.insert(path.to_string(), e);
    }

    fn data(&mut self, path: &str, bytes: impl Into<Vec<u8>>, exec: bool) {
        self.add(
            path,
            Entry::Data {
                bytes: bytes.into(),
                exec,
            },
        );
    }

    /// Resolves `path` inside the tree (following the tree's symlinks),
    /// for "does this already exist" checks.
    fn lookup(&self, path: &str) -> Option<&Entry> {
        let mut cur = String::new();
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            let next = if cur.is_empty() {
                part.to_string()
            } else {
                format!("{cur}/{part}")
            };
            match self.entries.get(&next) {
                Some(Entry::Symlink(t)) if i + 1 < parts.len() => {
                    cur = if let Some(abs) = t.strip_prefix('/') {
                        abs.to_string()
                    } else {
                        match next.rsplit_once('/') {
                            Some((p, _)) => format!("{p}/{t}"),
                            None => t.clone(),
                        }
                    };
                }
                Some(_) if i + 1 < parts.len() => cur = next,
                Some(e) => return Some(e),
                None => return None,
            }
        }
        None
    }

    /// Copies a host path into the tree at the same place, replicating
    /// every symlink on the way (so `/lib64/ld-linux-x86-64.so.2` and
    /// `/usr/sbin/ip -> /bin/ip` stay what they are).
    fn install_host_path(&mut self, p: &Path, depth: u32) -> std::result::Result<(), String> {
        if depth > 16 {
            return Err(format!("{}: too many symlinks", p.display()));
        }
        let mut cur = PathBuf::from("/");
        let comps: Vec<Component> = p.components().collect();
        for (i, c) in comps.iter().enumerate() {
            match c {
                Component::RootDir => continue,
                Component::Normal(n) => cur.push(n),
                _ => return Err(format!("{}: not a plain absolute path", p.display())),
            }
            let md = fs::symlink_metadata(&cur).map_err(|e| format!("{}: {e}", cur.display()))?;
            if md.file_type().is_symlink() {
                let target = fs::read_link(&cur).map_err(|e| e.to_string())?;
                let key = rel(&cur);
                if !matches!(self.entries.get(&key), Some(Entry::Symlink(_))) {
                    self.add(&key, Entry::Symlink(target.to_string_lossy().into_owned()));
                }
                let resolved = if target.is_absolute() {
                    target
                } else {
                    cur.parent().unwrap_or(Path::new("/")).join(target)
                };
                let mut rest = resolved;
                for c in &comps[i + 1..] {
                    rest.push(c);
                }
                return self.install_host_path(&normalize(&rest), depth + 1);
            }
            if i + 1 < comps.len() {
                if !md.is_dir() {
                    return Err(format!("{}: not a directory", cur.display()));
                }
                self.dir(&rel(&cur));
            } else if md.is_dir() {
                self.dir(&rel(&cur));
            } else {
                use std::os::unix::fs::PermissionsExt;
                let exec = md.permissions().mode() & 0o111 != 0;
                self.add(
                    &rel(&cur),
                    Entry::File {
                        src: cur.clone(),
                        exec,
                    },
                );
            }
        }
        Ok(())
    }

    /// Copies `rel` of a foreign sysroot into the tree at the same place
    /// (a symlink stays a symlink; `needed_libs` lists each link
    /// on the way, so its target comes too).
    fn install_sysroot_path(&mut self, root: &Path, rel: &str) -> std::result::Result<(), String> {
        let p = root.join(rel);
        let md = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if md.file_type().is_symlink() {
            let target = fs::read_link(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if !matches!(self.entries.get(rel), Some(Entry::Symlink(_))) {
                self.add(rel, Entry::Symlink(target.to_string_lossy().into_owned()));
            }
        } else if md.is_dir() {
            self.dir(rel);
        } else {
            use std::os::unix::fs::PermissionsExt;
            let exec = md.permissions().mode() & 0o111 != 0;
            self.add(rel, Entry::File { src: p, exec });
        }
        Ok(())
    }

    /// FNV-1a over every path, kind and byte.
    fn hash(&self, extra: &str) -> std::result::Result<String, String> {
        let mut h = ContentHash::new();
        h.update(FORMAT.as_bytes());
        h.update(extra.as_bytes());
        for (path, e) in &self.entries {
            h.update(path.as_bytes());
            h.update(&[0]);
            match e {
                Entry::Dir => h.update(b"d"),
                Entry::File { src, exec } => {
                    h.update(if *exec { b"x" } else { b"f" });
                    let b = fs::read(src).map_err(|e| format!("{}: {e}", src.display()))?;
                    h.update(&(b.len() as u64).to_le_bytes());
                    h.update(&b);
                }
                Entry::Data { bytes, exec } => {
                    h.update(if *exec { b"X" } else { b"F" });
                    h.update(&(bytes.len() as u64).to_le_bytes());
                    h.update(bytes);
                }
                Entry::Symlink(t) => {
                    h.update(b"l");
                    h.update(t.as_bytes());
                }
                Entry::CharDev(a, b) => {
                    h.update(b"c");
                    h.update(&a.to_le_bytes());
                    h.update(&b.to_le_bytes());
                }
            }
            h.update(&[0xff]);
        }
        Ok(h.hex())
    }

    /// Writes the tree as a newc cpio archive (inode numbers from 2 in
    /// path order, owner root, mtime 0: the same tree gives the same
    /// bytes).
    fn write_cpio<W: Write>(&self, mut out: W) -> std::io::Result<W> {
        let mut ino = 1u32;
        for (path, e) in &self.entries {
            ino += 1;
            let (mode, data, rdev): (u32, Vec<u8>, (u32, u32)) = match e {
                Entry::Dir => (0o040755, Vec::new(), (0, 0)),
                Entry::File { src, exec } => (
                    if *exec { 0o100755 } else { 0o100644 },
                    fs::read(src)?,
                    (0, 0),
                ),
                Entry::Data { bytes, exec } => (
                    if *exec { 0o100755 } else { 0o100644 },
                    bytes.clone(),
                    (0, 0),
                ),
                Entry::Symlink(t) => (0o120777, t.as_bytes().to_vec(), (0, 0)),
                Entry::CharDev(a, b) => (0o020600, Vec::new(), (*a, *b)),
            };
            let size = u32::try_from(data.len()).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{path}: too big"))
            })?;
            let mut w = cpio::newc::Builder::new(path)
                .ino(ino)
                .mode(mode)
                .nlink(if mode & 0o170000 == 0o040000 { 2 } else { 1 })
                .rdev_major(rdev.0)
                .rdev_minor(rdev.1)
                .write(out, size);
            w.write_all(&data)?;
            out = w.finish()?;
        }
        cpio::newc::trailer(out)
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Shared libraries (and the dynamic loader) `ldd` lists for a binary.
pub fn ldd(bin: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(bin)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Static binaries: "not a dynamic executable".
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&text))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        let path = match l.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => l.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            v.push(PathBuf::from(p));
        }
    }
    v
}

/// Module files (`kernel/...ko`, relative to the modules dir) needed to
/// load `m`, in load order, softdeps included; Err if kmod does not know
/// the module.
fn module_closure(k: &Kernel, m: &str) -> std::result::Result<Vec<String>, String> {
    let mut c = Command::new(modprobe_bin());
    c.arg("-d")
        .arg(&k.root)
        .args(["-S", &k.version, "--show-depends", m]);
    let out = output(c)?;
    let base = k.root.join("lib").join("modules").join(&k.version);
    parse_show_depends(&out, &base).map_err(|e| format!("{m}: {e}"))
}

/// The `insmod <path> [options]` lines of `modprobe --show-depends`, as
/// paths relative to `base` (the kernel's modules dir); `builtin ...`
/// lines name nothing to load.
fn parse_show_depends(out: &str, base: &Path) -> std::result::Result<Vec<String>, String> {
    let mut v = Vec::new();
    for l in out.lines() {
        if let Some(p) = l.trim().strip_prefix("insmod ") {
            let p = Path::new(p.split_whitespace().next().unwrap_or(""));
            let r = p
                .strip_prefix(base)
                .map_err(|_| format!("module outside the tree: {}", p.display()))?;
            v.push(r.to_string_lossy().into_owned());
        }
    }
    Ok(v)
}

/// Builds (or finds in the cache) the initramfs for `spec` and `k`.
pub fn build(spec: &Spec, k: &Kernel, sysroot: Option<&Sysroot>) -> Result<PathBuf> {
    let t0 = Instant::now();
    let setup = VmError::Setup;
    let mut t = Tree::default();
    for d in [
        "dev", "proc", "sys", "run", "tmp", "mnt/host", "root", "etc",
    ] {
        t.dir(d);
    }
    t.add("dev/console", Entry::CharDev(5, 1));
    t.add("dev/null", Entry::CharDev(1, 3));
    // Debian is usr-merged: the host's /lib, /bin ... are symlinks, and are
    // replicated as such by install_host_path. Make sure they exist even
    // if no installed path crosses them.
    for (l, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        let host = Path::new("/").join(l);
        let is_link = fs::symlink_metadata(&host)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link {
            let real = fs::read_link(&host)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| target.to_string());
            t.dir(real.trim_start_matches('/'));
            t.add(l, Entry::Symlink(real));
        } else {
            t.dir(l);
        }
    }
    t.dir("usr/bin");
    t.dir("usr/sbin");
    t.add("var/run", Entry::Symlink("../run".into()));
    t.add("var/tmp", Entry::Symlink("../tmp".into()));
    t.data(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        false,
    );
    t.data("etc/group", "root:x:0:\nnogroup:x:65534:\n", false);
    t.data("etc/hosts", "127.0.0.1 localhost\n", false);
    t.data(
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files\n",
        false,
    );
    let init = fs::read(&spec.init_script)
        .map_err(|e| setup(format!("{}: {e}", spec.init_script.display())))?;
    t.data("init", init, true);

    // Tools and every binary that runs in the guest, with their libraries.
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| have(p))
        .ok_or_else(|| setup("busybox missing (apt-get install busybox-static)".into()))?;
    if let Some(s) = sysroot {
        // The guest's own tools; the test binaries are static (musl).
        let mut bins = vec!["usr/bin/busybox"];
        bins.extend(TOOLS);
        for f in needed_libs(&s.root, &bins).map_err(setup)? {
            t.install_sysroot_path(&s.root, &f).map_err(setup)?;
        }
    } else {
        let mut bins: Vec<PathBuf> = vec![PathBuf::from(busybox)];
        bins.extend(TOOLS.iter().map(|t| Path::new("/").join(t)));
        let mut libs = BTreeSet::new();
        let mut lib_sources: Vec<PathBuf> = bins.clone();
        lib_sources.extend(spec.guest_bins.iter().cloned());
        for b in &lib_sources {
            if !b.is_file() {
                return Err(setup(format!("{} missing", b.display())));
            }
            for l in ldd(b).map_err(setup)? {
                libs.insert(l);
            }
        }
        for p in bins.iter().chain(libs.iter()) {
            t.install_host_path(p, 0).map_err(setup)?;
        }
    }
    for l in ["modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo"] {
        t.add(
            &format!("usr/sbin/{l}"),
            Entry::Symlink("/usr/bin/kmod".into()),
        );
    }
    // busybox applets, where no real tool of that name is installed (a
    // foreign guest's busybox-static is the same Debian package: the
    // host's list is its list).
    let list = {
        let mut c = Command::new(busybox);
        c.arg("--list-full");
        output(c).map_err(setup)?
    };
    for a in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let path = match a.split_once('/') {
            Some(("bin", n)) => format!("usr/bin/{n}"),
            Some(("sbin", n)) => format!("usr/sbin/{n}"),
            _ => a.to_string(),
        };
        let name = path.rsplit('/').next().unwrap_or("");
        let taken = t.lookup(&path).is_some()
            || t.lookup(&format!("usr/bin/{name}")).is_some()
            || t.lookup(&format!("usr/sbin/{name}")).is_some();
        if !taken && t.lookup(&path).is_none() {
            t.add(
                &path,
                Entry::Symlink(format!("/{}", rel(Path::new(busybox)))),
            );
        }
    }
    if t.lookup("bin/sh").is_none() {
        t.add("usr/bin/sh", Entry::Symlink("busybox".into()));
    }

    // Modules: the closure of each, plus kmod's indexes of the whole tree
    // (so the guest's modprobe resolves names, aliases and softdeps).
    let mdir = k.root.join("lib").join("modules").join(&k.version);
    let guest_mdir = format!("usr/lib/modules/{}", k.version);
    let mut unknown = Vec::new();
    for m in &spec.modules {
        match module_closure(k, m) {
            Ok(files) => {
                for f in files {
                    t.add(
                        &format!("{guest_mdir}/{f}"),
                        Entry::File {
                            src: mdir.join(&f),
                            exec: false,
                        },
                    );
                }
            }
            Err(e) => {
                // The guest's check reports it (and fails the run); say it
                // here too.
                println!(
                    "==> vm: warning: module {m} not found in kernel {}: {e}",
                    k.version
                );
                unknown.push(m.clone());
            }
        }
    }
    for e in fs::read_dir(&mdir).map_err(|e| setup(format!("{}: {e}", mdir.display())))? {
        let e = e.map_err(|e| setup(e.to_string()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("modules.") && e.path().is_file() {
            t.add(
                &format!("{guest_mdir}/{name}"),
                Entry::File {
                    src: e.path(),
                    exec: false,
                },
            );
        }
    }
    t.data("etc/sims-vm/modules", spec.modules.join("\n") + "\n", false);

    let hash = t.hash(&k.version).map_err(setup)?;
    let dir = spec.cache.join("initramfs");
    fs::create_dir_all(&dir).map_err(|e| setup(format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("{}-{hash}.cpio", k.version));
    if path.is_file() {
        println!("==> vm: initramfs {} (cached)", path.display());
        return Ok(path);
    }
    let tmp = path.with_extension("tmp");
    {
        let f = fs::File::create(&tmp).map_err(|e| setup(format!("{}: {e}", tmp.display())))?;
        t.write_cpio(std::io::BufWriter::new(f))
            .and_then(|mut w| w.flush())
            .map_err(|e| setup(format!("writing {}: {e}", tmp.display())))?;
    }
    fs::rename(&tmp, &path).map_err(|e| setup(e.to_string()))?;
    prune_newest(
        &dir,
        |p| p.extension().is_some_and(|x| x == "cpio"),
        &path,
        6,
    );
    println!(
        "==> vm: built initramfs {} ({:.1} MB, {} entries) in {:.1} s",
        path.display(),
        fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
        t.entries.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn cpio_is_newc_with_parents_first_and_a_trailer() {
        let mut t = Tree::default();
        t.data("etc/sims-vm/modules", "ipip\n", false);
        t.add("bin", Entry::Symlink("usr/bin".into()));
        t.add("dev/console", Entry::CharDev(5, 1));
        let keys: Vec<&String> = t.entries.keys().collect();
        assert_eq!(
            keys,
            [
                "bin",
                "dev",
                "dev/console",
                "etc",
                "etc/sims-vm",
                "etc/sims-vm/modules"
            ]
        );
        let out = t.write_cpio(Vec::new()).unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("TRAILER!!!"));
        assert!(s.contains("ipip\n"));
        // The hash covers content: a changed byte is a new initramfs.
        let h1 = t.hash("v").unwrap();
        t.data("etc/sims-vm/modules", "ipip\nveth\n", false);
        assert_ne!(h1, t.hash("v").unwrap());
        assert_ne!(t.hash("v").unwrap(), t.hash("w").unwrap());
    }

    #[test]
    fn lookup_follows_symlinks_in_the_tree() {
        let mut t = Tree::default();
        t.add("sbin", Entry::Symlink("usr/sbin".into()));
        t.data("usr/sbin/ip", "x", true);
        assert!(t.lookup("sbin/ip").is_some());
        assert!(t.lookup("usr/sbin/ip").is_some());
        assert!(t.lookup("sbin/tc").is_none());
    }

    #[test]
    fn cpio_bytes_are_the_newc_layout() {
        let mut t = Tree::default();
        t.data("a", "x", false);
        let out = t.write_cpio(Vec::new()).unwrap();
        let hex = |v: &[u32]| v.iter().map(|x| format!("{x:08x}")).collect::<String>();
        // ino, mode, uid, gid, nlink, mtime, size, dev, rdev, namesize, check
        let mut want = format!(
            "070701{}a\0x\0\0\0",
            hex(&[2, 0o100644, 0, 0, 1, 0, 1, 0, 0, 0, 0, 2, 0])
        );
        want.push_str(&format!(
            "070701{}TRAILER!!!\0\0\0\0",
            hex(&[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0])
        ));
        assert_eq!(String::from_utf8_lossy(&out), want);
    }

    #[test]
    fn show_depends_gives_module_files_in_load_order() {
        let base = Path::new("/c/kernel/6.1/root/lib/modules/6.1");
        let out = "builtin crc32c\n\
            insmod /c/kernel/6.1/root/lib/modules/6.1/kernel/net/ipv4/tunnel4.ko \n\
            insmod /c/kernel/6.1/root/lib/modules/6.1/kernel/net/ipv4/ipip.ko log_ecn_error=0\n";
        assert_eq!(
            parse_show_depends(out, base).unwrap(),
            ["kernel/net/ipv4/tunnel4.ko", "kernel/net/ipv4/ipip.ko"]
        );
        assert!(parse_show_depends("insmod /elsewhere/x.ko\n", base).is_err());
        assert_eq!(parse_show_depends("", base).unwrap(), Vec::<String>::new());
    }
}
