//! The VM harness: a Debian kernel under QEMU (TCG) with a minimal
//! initramfs, for what the host kernel cannot do (kernel ipip, netem).
//!
//! * The kernel package is fetched with `apt-get download`, unpacked with
//!   `dpkg-deb -x`, indexed with `depmod -b`, and kept in
//!   `<workspace>/.cache/vm/kernel/<version>/`. The bzImage's xz payload is
//!   extracted to an uncompressed `vmlinux`, which QEMU boots through PVH
//!   (no decompression under emulation); the bzImage is the fallback.
//! * The initramfs (uncompressed newc cpio, written here) holds busybox,
//!   the closure of the listed modules (kmod `--show-depends`, softdeps
//!   included), kmod, iproute2 (`ip`, `tc`), `nft`, `dnsmasq`, the shared
//!   libraries of all of these and of the test binaries (ldd), and
//!   `tests/vm/init`. It is cached as `initramfs/<version>-<hash>.cpio`,
//!   the hash covering every byte that goes in: rebuilt only when an input
//!   changes.
//! * The test binaries are shared read-only over 9p (`mount_tag=host`); the
//!   init script runs `sh /mnt/host/<run>` and prints the verdict as
//!   `SIMS-VM-RESULT <nonce>: pass|fail ...`, which becomes our result.
//!
//! * A router target's guest ([`Foreign`], from its board config's `vm_*`
//!   keys) boots the same way with that architecture's Debian kernel and a
//!   Debian userland of its own (xtask/src/foreign.rs) instead of the
//!   host's tools; the test binaries are static, cross-built.
//!
//! Every failure is an error that says what went wrong ([`VmError`]): the
//! kernel package cannot be fetched, the guest does not boot (no
//! `SIMS-VM-BOOTED` marker in time, or QEMU ends first), a module does not
//! load, the guest times out, or the guest's run fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::foreign;

/// Bumped when the layout of what we build changes (part of every hash).
const FORMAT: &str = "sims-vm-initramfs-1";

/// Modules the guest needs: ipip and its tunnel core, the testbed's links
/// (veth, bridge, tun), nftables with NAT and conntrack (plus
/// crc32c_generic: libcrc32c's softdep, without it nf_tables does not
/// load), netem, TCP socket diagnostics (sims-node), and the 9p share.
pub const MODULES: &[&str] = &[
    "crc32c_generic",
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "tunnel4",
    "ip_tunnel",
    "ipip",
    "veth",
    "bridge",
    "tun",
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_chain_nat",
    "nft_masq",
    "nft_nat",
    "nft_ct",
    "sch_netem",
    "sch_tbf",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
];

/// Tools whose binaries (and shared libraries) go into the guest, from
/// the host or, for a foreign guest, from its sysroot (with busybox).
pub const TOOLS: &[&str] = &[
    "usr/sbin/ip",
    "usr/sbin/tc",
    "usr/sbin/nft",
    "usr/sbin/dnsmasq",
    "usr/bin/kmod",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmError {
    /// The host lacks something and it could not be installed.
    Setup(String),
    /// The kernel package could not be fetched or unpacked.
    Fetch(String),
    /// The guest did not reach its init script.
    Boot(String),
    /// Modules that did not load in the guest.
    Modules(Vec<String>),
    /// The whole run took longer than allowed.
    Timeout(String),
    /// The guest booted and ran, and its run failed (or gave no verdict).
    Guest(String),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::Setup(s) => write!(f, "VM setup failed: {s}"),
            VmError::Fetch(s) => write!(f, "VM kernel could not be fetched: {s}"),
            VmError::Boot(s) => write!(f, "VM did not boot: {s}"),
            VmError::Modules(m) => write!(
                f,
                "VM kernel modules did not load in the guest: {}",
                m.join(", ")
            ),
            VmError::Timeout(s) => write!(f, "VM timed out: {s}"),
            VmError::Guest(s) => write!(f, "VM run failed: {s}"),
        }
    }
}

type Result<T> = std::result::Result<T, VmError>;

/// What to boot and run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// `<workspace>/.cache/vm`.
    pub cache: PathBuf,
    /// `tests/vm/init`.
    pub init_script: PathBuf,
    /// Kernel flavour version such as `6.1.0-56-amd64`; None: what Debian's
    /// `linux-image-amd64` depends on (or `SIMS_VM_KERNEL`).
    pub kernel: Option<String>,
    pub modules: Vec<String>,
    /// Binaries that will run in the guest (their libraries go in).
    pub guest_bins: Vec<PathBuf>,
    /// Directory shared read-only as `/mnt/host`.
    pub share: PathBuf,
    /// Script in the share the init runs (`sh /mnt/host/<run>`).
    pub run: String,
    /// Extra kernel command line words.
    pub append: Vec<String>,
    /// Until the init script says it started.
    pub boot_timeout: Duration,
    /// For the whole run.
    pub timeout: Duration,
    pub mem_mb: u32,
    pub smp: u32,
    /// Copy the guest console to stdout.
    pub echo: bool,
    /// A guest of another architecture; None: x86_64 with the host's tools.
    pub foreign: Option<Foreign>,
}

/// A guest of a router target's architecture (its board config's `vm_*`
/// keys): kernel and userland come from Debian's archive for that
/// architecture (xtask/src/foreign.rs), the test binaries are cross-built.
#[derive(Clone, Debug)]
pub struct Foreign {
    /// The board's name, for messages.
    pub board: String,
    /// `qemu-system-<arch>` and its `-M` machine.
    pub qemu: String,
    pub machine: String,
    pub guest: crate::boards::Guest,
}

impl Foreign {
    pub fn of(b: &crate::boards::Board) -> Option<Foreign> {
        Some(Foreign {
            board: b.name.clone(),
            qemu: b.qemu_system.clone(),
            machine: b.qemu_machine.clone(),
            guest: b.guest.clone()?,
        })
    }
}

impl Spec {
    pub fn new(workspace: &Path, share: PathBuf, run: &str) -> Spec {
        Spec {
            cache: workspace.join(".cache").join("vm"),
            init_script: workspace.join("tests").join("vm").join("init"),
            kernel: std::env::var("SIMS_VM_KERNEL")
                .ok()
                .filter(|s| !s.is_empty()),
            modules: MODULES.iter().map(|s| s.to_string()).collect(),
            guest_bins: Vec::new(),
            share,
            run: run.to_string(),
            append: Vec::new(),
            boot_timeout: Duration::from_secs(90),
            timeout: Duration::from_secs(30 * 60),
            mem_mb: 1024,
            smp: 2,
            echo: true,
            foreign: None,
        }
    }

    /// The same for a foreign guest, with its memory and CPUs.
    pub fn for_guest(workspace: &Path, share: PathBuf, run: &str, f: Foreign) -> Spec {
        let mut s = Spec::new(workspace, share, run);
        s.mem_mb = f.guest.mem_mb;
        s.smp = f.guest.smp;
        s.foreign = Some(f);
        s
    }
}

/// What a boot produced (for callers that want the console, e.g. benches).
#[derive(Debug, Default)]
pub struct Outcome {
    pub console: Vec<String>,
    pub elapsed: Duration,
}

/// Fetches/builds what is missing, boots, runs, and turns the guest's
/// verdict into a result.
pub fn run(spec: &Spec) -> Result<Outcome> {
    ensure_host_tools()?;
    let (kernel, sysroot) = match &spec.foreign {
        None => (prepare_kernel(&spec.cache, spec.kernel.as_deref())?, None),
        Some(f) => prepare_foreign(&spec.cache, f)?,
    };
    let initramfs = build_initramfs(spec, &kernel, sysroot.as_ref())?;
    boot(spec, &kernel, &initramfs)
}

/// A foreign guest's emulator, kernel and userland, fetched if missing.
fn prepare_foreign(cache: &Path, f: &Foreign) -> Result<(Kernel, Option<foreign::Sysroot>)> {
    if !on_path(&f.qemu) {
        if !is_root() {
            return Err(VmError::Setup(format!(
                "{} missing: run `apt-get install {}` as root",
                f.qemu, f.guest.qemu_package
            )));
        }
        println!("==> vm: installing {}", f.guest.qemu_package);
        crate::deps::apt_install(&[&f.guest.qemu_package]).map_err(VmError::Setup)?;
    }
    let arch = &f.guest.debian_arch;
    let (version, root, image) =
        foreign::prepare_foreign_kernel(cache, arch, &f.guest.kernel_package)
            .map_err(VmError::Fetch)?;
    let sysroot =
        foreign::prepare_sysroot(cache, arch, foreign::GUEST_PACKAGES).map_err(VmError::Setup)?;
    Ok((
        Kernel {
            version,
            root,
            image,
        },
        Some(sysroot),
    ))
}

// ------------------------------------------------------------ host tools

fn have(p: &str) -> bool {
    Path::new(p).exists()
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs (as root, with apt-get) what the harness needs and is missing.
pub fn ensure_host_tools() -> Result<()> {
    let checks: &[(&str, bool)] = &[
        ("qemu-system-x86", on_path("qemu-system-x86_64")),
        ("kmod", have("/usr/sbin/depmod") || have("/sbin/depmod")),
        (
            "busybox-static",
            have("/usr/bin/busybox") || have("/bin/busybox"),
        ),
        ("iproute2", have("/usr/sbin/ip") && have("/usr/sbin/tc")),
        ("nftables", have("/usr/sbin/nft")),
        ("dnsmasq-base", have("/usr/sbin/dnsmasq")),
        ("xz-utils", on_path("xz")),
    ];
    let missing: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(VmError::Setup(format!(
            "missing packages {}: run `apt-get install {}` as root",
            missing.join(" "),
            missing.join(" ")
        )));
    }
    println!("==> vm: installing {}", missing.join(" "));
    crate::deps::apt_install(&missing).map_err(VmError::Setup)
}

// ------------------------------------------------------------ kernel

/// An unpacked kernel package.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub version: String,
    /// The package's files (`boot/`, `lib/modules/<version>/`).
    pub root: PathBuf,
    /// What QEMU boots: `vmlinux` (PVH) if extracted, else the bzImage.
    pub image: PathBuf,
}

pub(crate) fn output(mut c: Command) -> std::result::Result<String, String> {
    let desc = format!("{c:?}");
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{desc}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{desc}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `linux-image-amd64`'s dependency, e.g. `6.1.0-56-amd64`.
fn resolve_kernel_version() -> std::result::Result<String, String> {
    let ask = || -> std::result::Result<String, String> {
        let mut c = Command::new("apt-cache");
        c.args(["depends", "linux-image-amd64"]);
        let out = output(c)?;
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
            .map(str::trim)
            .find(|v| v.ends_with("-amd64") && !v.contains(' '))
            .map(str::to_string)
            .ok_or_else(|| format!("apt-cache depends linux-image-amd64 named no kernel:\n{out}"))
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

/// The kernel, fetched and unpacked into the cache if not there yet.
pub fn prepare_kernel(cache: &Path, version: Option<&str>) -> Result<Kernel> {
    let kdir = cache.join("kernel");
    let version = match version {
        Some(v) => v.to_string(),
        None => match resolve_kernel_version() {
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
    let stamp = dir.join("complete");
    if !stamp.exists() {
        fetch_kernel(&dir, &version)?;
        prune_newest(&kdir, |_| true, &dir, 2);
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

/// Keeps the `keep` newest entries of `dir` that `pick` selects (always
/// `current`), removing the others, files or directories.
pub(crate) fn prune_newest(dir: &Path, pick: impl Fn(&Path) -> bool, current: &Path, keep: usize) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut v: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != current && pick(p))
        .filter_map(|p| Some((fs::symlink_metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    v.sort();
    v.reverse();
    for (_, p) in v.into_iter().skip(keep.saturating_sub(1)) {
        let _ = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
    }
}

/// The most recently fetched complete kernel in `kdir` whose version ends
/// in `suffix`.
pub(crate) fn newest_cached(kdir: &Path, suffix: &str) -> Option<String> {
    let mut v: Vec<(std::time::SystemTime, String)> = fs::read_dir(kdir)
        .ok()?
        .flatten()
        .filter(|e| e.path().join("complete").exists())
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .filter_map(|e| {
            let t = e.metadata().ok()?.modified().ok()?;
            Some((t, e.file_name().to_string_lossy().into_owned()))
        })
        .collect();
    v.sort();
    v.pop().map(|(_, n)| n)
}

fn fetch_kernel(dir: &Path, version: &str) -> Result<()> {
    let pkg = format!("linux-image-{version}");
    println!(
        "==> vm: fetching {pkg} (apt-get download) into {}",
        dir.display()
    );
    let t0 = Instant::now();
    let _ = fs::remove_dir_all(dir);
    let dl = dir.join("download");
    fs::create_dir_all(&dl).map_err(|e| VmError::Fetch(format!("{}: {e}", dl.display())))?;
    let mut c = Command::new("apt-get");
    c.args(["download", &pkg]).current_dir(&dl);
    if let Err(e) = output(c) {
        let _ = fs::remove_dir_all(dir);
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
    let root = dir.join("root");
    let mut c = Command::new("dpkg-deb");
    c.arg("-x").arg(&deb).arg(&root);
    output(c).map_err(VmError::Fetch)?;
    let mut c = Command::new(depmod_bin());
    c.arg("-b").arg(&root).arg(version);
    output(c).map_err(|e| VmError::Fetch(format!("depmod: {e}")))?;
    let _ = fs::remove_dir_all(&dl);
    let bz = root.join("boot").join(format!("vmlinuz-{version}"));
    match extract_vmlinux(&bz, &dir.join("vmlinux")) {
        Ok(()) => {}
        Err(e) => println!("==> vm: no uncompressed kernel ({e}); booting the bzImage"),
    }
    fs::write(dir.join("complete"), format!("{pkg}\n"))
        .map_err(|e| VmError::Fetch(e.to_string()))?;
    println!(
        "==> vm: kernel {version} ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn depmod_bin() -> &'static str {
    if have("/usr/sbin/depmod") {
        "/usr/sbin/depmod"
    } else {
        "/sbin/depmod"
    }
}

fn modprobe_bin() -> &'static str {
    if have("/usr/sbin/modprobe") {
        "/usr/sbin/modprobe"
    } else {
        "/sbin/modprobe"
    }
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

// ------------------------------------------------------------ initramfs

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
    /// (a symlink stays a symlink; `foreign::needed_libs` lists each link
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
        let mut h = Fnv::new();
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
        Ok(format!("{:016x}", h.0))
    }

    /// Writes the tree as a newc cpio archive.
    fn write_cpio(&self, out: &mut impl Write) -> std::io::Result<()> {
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
            cpio_entry(out, ino, mode, path, &data, rdev)?;
        }
        cpio_entry(out, 0, 0, "TRAILER!!!", &[], (0, 0))
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

fn cpio_entry(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    name: &str,
    data: &[u8],
    rdev: (u32, u32),
) -> std::io::Result<()> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let hdr = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}{maj:08x}{min:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        size = data.len(),
        maj = 0,
        min = 0,
        rmaj = rdev.0,
        rmin = rdev.1,
        namesize = name.len() + 1,
        check = 0,
    );
    out.write_all(hdr.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    let pad = |n: usize| (4 - n % 4) % 4;
    out.write_all(&[0u8; 4][..pad(110 + name.len() + 1)])?;
    out.write_all(data)?;
    out.write_all(&[0u8; 4][..pad(data.len())])?;
    Ok(())
}

struct Fnv(u64);
impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf29ce484222325)
    }
    fn update(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
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
    let mut v = Vec::new();
    for l in out.lines() {
        if let Some(p) = l.trim().strip_prefix("insmod ") {
            let p = p.split_whitespace().next().unwrap_or("");
            let p = Path::new(p);
            let r = p
                .strip_prefix(&base)
                .map_err(|_| format!("{m}: module outside the tree: {}", p.display()))?;
            v.push(r.to_string_lossy().into_owned());
        }
    }
    Ok(v)
}

/// Builds (or finds in the cache) the initramfs for `spec` and `k`.
pub fn build_initramfs(
    spec: &Spec,
    k: &Kernel,
    sysroot: Option<&foreign::Sysroot>,
) -> Result<PathBuf> {
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
        for f in foreign::needed_libs(s, &bins).map_err(setup)? {
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
        let mut w = std::io::BufWriter::new(f);
        t.write_cpio(&mut w)
            .and_then(|_| w.flush())
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

// ------------------------------------------------------------ boot

/// A console line the harness acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker {
    Booted(String),
    ModuleFailed(String),
    Pass,
    Fail(String),
}

/// Recognizes this boot's marker lines (`nonce` must match).
pub fn parse_marker(line: &str, nonce: &str) -> Option<Marker> {
    let find = |tag: &str| -> Option<&str> {
        let i = line.find(tag)?;
        let rest = &line[i + tag.len()..];
        let rest = rest.strip_prefix(' ')?;
        let rest = rest.strip_prefix(nonce)?;
        Some(rest)
    };
    if let Some(rest) = find("SIMS-VM-RESULT") {
        let rest = rest.strip_prefix(": ")?;
        let rest = rest.trim_end();
        if rest == "pass" {
            return Some(Marker::Pass);
        }
        return Some(Marker::Fail(
            rest.strip_prefix("fail").unwrap_or(rest).trim().to_string(),
        ));
    }
    if let Some(rest) = find("SIMS-VM-MODULE-FAILED") {
        let rest = rest.strip_prefix(' ')?;
        let name = rest.split(':').next().unwrap_or(rest).trim();
        return Some(Marker::ModuleFailed(name.to_string()));
    }
    if let Some(rest) = find("SIMS-VM-BOOTED") {
        return Some(Marker::Booted(rest.trim().to_string()));
    }
    None
}

fn nonce() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{:016x}", u64::from_le_bytes(b) ^ t)
}

/// Boots QEMU and waits for the verdict (bounded by the spec's timeouts).
pub fn boot(spec: &Spec, k: &Kernel, initramfs: &Path) -> Result<Outcome> {
    let n = nonce();
    let (qemu, console, p9) = match &spec.foreign {
        None => ("qemu-system-x86_64", "ttyS0", "9p2000.L"),
        Some(f) => (
            f.qemu.as_str(),
            f.guest.console.as_str(),
            f.guest.p9_version.as_str(),
        ),
    };
    let mut append = vec![
        format!("console={console}"),
        format!("sims.9p={p9}"),
        "panic=-1".into(),
        "quiet".into(),
        "loglevel=4".into(),
        "random.trust_cpu=on".into(),
        format!("sims.nonce={n}"),
        format!("sims.run={}", spec.run),
    ];
    append.extend(spec.append.iter().cloned());
    let share = spec
        .share
        .canonicalize()
        .map_err(|e| VmError::Setup(format!("share {}: {e}", spec.share.display())))?;
    let mut c = Command::new(qemu);
    c.args(["-accel", "tcg"]);
    match &spec.foreign {
        None => c.args(["-cpu", "max", "-machine", "pc"]),
        Some(f) => {
            c.args(["-machine", &f.machine]);
            c.args(f.guest.cpu.iter().flat_map(|cpu| ["-cpu", cpu.as_str()]))
        }
    };
    c.args(["-m", &spec.mem_mb.to_string()])
        .args(["-smp", &spec.smp.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&k.image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append.join(" ")])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=host,security_model=none,readonly=on",
            share.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // QEMU dies with us (killed harness, Ctrl-C): no orphaned guest.
    // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
    println!(
        "==> vm: booting {} ({}{} MB, {} vCPUs, TCG); running {} from {}",
        k.image.display(),
        spec.foreign
            .as_ref()
            .map(|f| format!("{} -M {}, ", f.board, f.machine))
            .unwrap_or_default(),
        spec.mem_mb,
        spec.smp,
        spec.run,
        share.display()
    );
    let t0 = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| VmError::Setup(format!("cannot start {qemu}: {e}")))?;
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let mut readers = Vec::new();
    if let Some(o) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || read_lines(o, false, tx)));
    }
    if let Some(e) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || read_lines(e, true, tx)));
    }
    drop(tx);

    let mut out = Outcome::default();
    let mut booted = false;
    let mut modules_failed = Vec::new();
    let mut verdict: Option<std::result::Result<(), String>> = None;
    let mut verdict_at: Option<Instant> = None;
    let mut exited = None;
    let mut exited_at: Option<Instant> = None;
    let mut stderr_lines = Vec::new();
    let mut disconnected = false;
    let err = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((is_err, line)) => {
                if is_err {
                    if spec.echo {
                        eprintln!("qemu: {line}");
                    }
                    stderr_lines.push(line);
                    continue;
                }
                if spec.echo {
                    println!("{line}");
                }
                match parse_marker(&line, &n) {
                    Some(Marker::Booted(_)) => booted = true,
                    Some(Marker::ModuleFailed(m)) => modules_failed.push(m),
                    Some(Marker::Pass) if verdict.is_none() => {
                        verdict = Some(Ok(()));
                        verdict_at = Some(Instant::now());
                    }
                    Some(Marker::Fail(why)) if verdict.is_none() => {
                        verdict = Some(Err(why));
                        verdict_at = Some(Instant::now());
                    }
                    _ => {}
                }
                out.console.push(line);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => disconnected = true,
        }
        if exited.is_none() {
            if let Ok(Some(st)) = child.try_wait() {
                exited = Some(st);
                exited_at = Some(Instant::now());
            }
        }
        if exited.is_some() && disconnected {
            break None;
        }
        if let Some(at) = exited_at {
            // Let the readers drain, briefly.
            if at.elapsed() > Duration::from_secs(5) {
                break None;
            }
            continue;
        }
        // The guest gave its verdict and powers off; kill QEMU if it lingers.
        if let Some(at) = verdict_at {
            if at.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            continue;
        }
        if t0.elapsed() >= spec.timeout {
            break Some(VmError::Timeout(format!(
                "no verdict after {:.0} s (limit {} s); QEMU killed{}",
                t0.elapsed().as_secs_f64(),
                spec.timeout.as_secs(),
                last_lines(&out.console, 15)
            )));
        }
        if !booted && t0.elapsed() >= spec.boot_timeout {
            break Some(VmError::Boot(format!(
                "the init script did not start within {} s (no SIMS-VM-BOOTED marker); QEMU killed{}",
                spec.boot_timeout.as_secs(),
                last_lines(&out.console, 30)
            )));
        }
    };
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    for r in readers {
        let _ = r.join();
    }
    out.elapsed = t0.elapsed();
    println!("==> vm: guest ran {:.1} s", out.elapsed.as_secs_f64());
    if let Some(e) = err {
        return Err(e);
    }
    if !booted {
        return Err(VmError::Boot(format!(
            "QEMU ended ({}) before the init script started{}{}",
            exited
                .map(|s| s.to_string())
                .unwrap_or_else(|| "killed".into()),
            last_lines(&out.console, 30),
            if stderr_lines.is_empty() {
                String::new()
            } else {
                format!("\nqemu stderr:\n{}", stderr_lines.join("\n"))
            }
        )));
    }
    if !modules_failed.is_empty() {
        return Err(VmError::Modules(modules_failed));
    }
    match verdict {
        Some(Ok(())) => Ok(out),
        Some(Err(why)) => Err(VmError::Guest(why)),
        None => Err(VmError::Guest(format!(
            "the guest ended without a verdict (QEMU {}){}",
            exited
                .map(|s| s.to_string())
                .unwrap_or_else(|| "killed".into()),
            last_lines(&out.console, 30)
        ))),
    }
}

fn last_lines(v: &[String], n: usize) -> String {
    if v.is_empty() {
        return "; the console stayed empty".into();
    }
    let from = v.len().saturating_sub(n);
    format!("; last console lines:\n{}", v[from..].join("\n"))
}

fn read_lines(r: impl Read, is_err: bool, tx: mpsc::Sender<(bool, String)>) {
    let mut rd = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match rd.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let s = String::from_utf8_lossy(&buf);
                let s = s.trim_end_matches(['\n', '\r']).replace('\r', "");
                if tx.send((is_err, s)).is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_need_this_boots_nonce() {
        let n = "00ff";
        assert_eq!(
            parse_marker("SIMS-VM-BOOTED 00ff 6.1.0-56-amd64 2 cpus", n),
            Some(Marker::Booted("6.1.0-56-amd64 2 cpus".into()))
        );
        assert_eq!(
            parse_marker("SIMS-VM-RESULT 00ff: pass", n),
            Some(Marker::Pass)
        );
        assert_eq!(
            parse_marker(
                "[   3.1] x SIMS-VM-RESULT 00ff: fail modules did not load: foo",
                n
            ),
            Some(Marker::Fail("modules did not load: foo".into()))
        );
        assert_eq!(
            parse_marker(
                "SIMS-VM-MODULE-FAILED 00ff nosuch: modprobe: FATAL: Module nosuch not found",
                n
            ),
            Some(Marker::ModuleFailed("nosuch".into()))
        );
        // Another boot's verdict, or the script's own text, is no verdict.
        assert_eq!(parse_marker("SIMS-VM-RESULT 1234: pass", n), None);
        assert_eq!(parse_marker("echo \"SIMS-VM-RESULT $nonce: $*\"", n), None);
        assert_eq!(
            parse_marker("SIMS-VM-RESULT 00ff: passed?", n),
            Some(Marker::Fail("passed?".into()))
        );
    }

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
        let mut out = Vec::new();
        t.write_cpio(&mut out).unwrap();
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
}
