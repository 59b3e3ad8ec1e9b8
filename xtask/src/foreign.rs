//! Foreign-architecture guests (mipsel Malta, arm64 virt) for the VM
//! harness: a Debian kernel and a Debian userland of the guest's own
//! architecture, fetched without touching the host's dpkg architectures.
//!
//! * A private apt configuration per architecture lives in
//!   `<cache>/apt/<arch>/`: its own `Dir::State` (empty dpkg status, so the
//!   host's installed packages play no part), `Dir::Cache`, a
//!   `Dir::Etc::sourcelist` rewritten from the host's sources (one-line
//!   `.list` and deb822 `.sources` both read; written as deb822 with
//!   `Architectures: <arch>` and `Targets: Packages`), and
//!   `APT::Architecture(s)` set to the foreign arch. Every apt command gets
//!   it through `APT_CONFIG`, with `LC_ALL=C` (apt-cache translates
//!   "Depends:").
//! * [`prepare_sysroot`] resolves the dependency closure of the listed
//!   packages (`apt-cache depends --recurse`, first alternative of each OR
//!   group), `apt-get download`s it and unpacks every .deb into one
//!   usr-merged root (`bin`, `sbin`, `lib` are symlinks into `usr`, tar
//!   runs with `--keep-directory-symlink`). Cached as
//!   `<cache>/sysroot/<arch>-<hash of the package list>/root` with a
//!   `complete` stamp: a second call does not run apt at all.
//! * [`prepare_foreign_kernel`] resolves a flavour meta package
//!   (`linux-image-4kc-malta` → `linux-image-6.1.0-50-4kc-malta`),
//!   downloads, unpacks and `depmod -b`s it into
//!   `<cache>/kernel-<arch>/<version>/`. Not `<cache>/kernel/`: vm.rs prunes
//!   that directory to two kernels and, offline, boots the newest one in
//!   it, which must stay an amd64 one.
//! * [`needed_libs`] is `ldd` for foreign binaries: it reads `PT_INTERP`
//!   and `DT_NEEDED` from the ELF files (32/64 bit, either endianness) and
//!   resolves them inside the sysroot, symlinks included.
//!
//! Measured on the 2-core Debian 12 build machine (QEMU 7.2, TCG), with a
//! hand-built initramfs (uncompressed newc cpio: busybox-static, iproute2,
//! nft, dnsmasq, kmod from the sysroot plus [`needed_libs`], the closure
//! of vm.rs's module list minus netem/tbf under `usr/lib/modules/<ver>/`
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
//! keep it uncompressed, like vm.rs.
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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::vm::{depmod_bin, newest_cached, output, prune_newest};

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

// ------------------------------------------------------------ helpers

fn io<T>(r: std::io::Result<T>, what: &Path) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what.display()))
}

fn check_arch(arch: &str) -> Result<(), String> {
    if arch.is_empty()
        || !arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("bad Debian architecture {arch:?}"));
    }
    Ok(())
}

/// Writes `text` unless the file already holds it (keeps mtimes stable).
fn write_if_changed(path: &Path, text: &str) -> Result<(), String> {
    if fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    io(fs::write(path, text), path)
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
    let mut h = Fnv::new();
    h.update(FORMAT.as_bytes());
    h.update(&[0]);
    h.update(arch.as_bytes());
    for p in packages {
        h.update(&[0]);
        h.update(p.as_bytes());
    }
    format!("{:016x}", h.0)
}

// ------------------------------------------------------------ apt sources

/// One apt source (a one-line entry or a deb822 paragraph), binary only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Source {
    uris: Vec<String>,
    suites: Vec<String>,
    components: Vec<String>,
    /// The architectures the host restricted it to (empty: any).
    archs: Vec<String>,
    /// Other options as deb822 fields (`Signed-By` ...), in order; a
    /// multi-line value keeps its continuation lines.
    fields: Vec<(String, String)>,
}

/// One-line format (`sources.list`, `*.list`): `deb [opts] uri suite
/// [component...]`, one suite per line; `deb-src` and comments skipped.
fn parse_one_line(text: &str) -> Vec<Source> {
    let mut v = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb") else {
            continue;
        };
        if !rest.starts_with([' ', '\t']) {
            continue; // deb-src
        }
        let mut rest = rest.trim_start();
        let mut s = Source::default();
        if let Some(r) = rest.strip_prefix('[') {
            let Some((opts, after)) = r.split_once(']') else {
                continue;
            };
            for o in opts.split_whitespace() {
                let (k, val) = match o.split_once('=') {
                    Some(kv) => kv,
                    None => continue,
                };
                match k {
                    "arch" => s.archs = val.split(',').map(str::to_string).collect(),
                    // arch+= / arch-=: dropped, the arch is ours to set.
                    k if k.starts_with("arch") => {}
                    "lang" => s.fields.push(("Languages".into(), val.replace(',', " "))),
                    "target" => s.fields.push(("Targets".into(), val.replace(',', " "))),
                    k => s.fields.push((k.to_string(), val.to_string())),
                }
            }
            rest = after.trim_start();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        s.uris.push(uri.to_string());
        s.suites.push(suite.to_string());
        s.components = words.map(str::to_string).collect();
        v.push(s);
    }
    v
}

/// deb822 format (`*.sources`): paragraphs of `Field: value`,
/// continuation lines start with white space, `#` lines are comments.
fn parse_deb822(text: &str) -> Vec<Source> {
    let mut paragraphs: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if paragraphs.last().is_some_and(|p| !p.is_empty()) {
                paragraphs.push(Vec::new());
            }
            continue;
        }
        let cur = paragraphs.last_mut().expect("never empty");
        if line.starts_with([' ', '\t']) {
            if let Some((_, val)) = cur.last_mut() {
                val.push('\n');
                val.push_str(line);
            }
            continue;
        }
        if let Some((k, val)) = line.split_once(':') {
            cur.push((k.trim().to_string(), val.trim().to_string()));
        }
    }
    let mut v = Vec::new();
    for p in paragraphs.into_iter().filter(|p| !p.is_empty()) {
        let get = |name: &str| {
            p.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, val)| val.as_str())
        };
        let words = |name: &str| -> Vec<String> {
            get(name)
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        if !words("Types").iter().any(|t| t == "deb") {
            continue;
        }
        if get("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let mut s = Source {
            uris: words("URIs"),
            suites: words("Suites"),
            components: words("Components"),
            archs: words("Architectures"),
            fields: Vec::new(),
        };
        for (k, val) in &p {
            let known = [
                "Types",
                "URIs",
                "Suites",
                "Components",
                "Enabled",
                "Architectures",
                "Architectures-Add",
                "Architectures-Remove",
            ];
            if !known.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                s.fields.push((k.clone(), val.clone()));
            }
        }
        if !s.uris.is_empty() && !s.suites.is_empty() {
            v.push(s);
        }
    }
    v
}

/// The sources for `arch`, as one deb822 file: sources restricted to
/// other architectures and cdroms are left out, every other one gets
/// `Architectures: <arch>` and fetches only the `Packages` indexes.
fn render_sources(sources: &[Source], arch: &str) -> String {
    let mut out = String::new();
    for s in sources {
        if !s.archs.is_empty() && !s.archs.iter().any(|a| a == arch) {
            continue;
        }
        if s.uris.iter().all(|u| u.starts_with("cdrom:")) {
            continue;
        }
        let uris: Vec<&str> = s
            .uris
            .iter()
            .map(String::as_str)
            .filter(|u| !u.starts_with("cdrom:"))
            .collect();
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("Types: deb\n");
        out.push_str(&format!("URIs: {}\n", uris.join(" ")));
        out.push_str(&format!("Suites: {}\n", s.suites.join(" ")));
        if !s.components.is_empty() {
            out.push_str(&format!("Components: {}\n", s.components.join(" ")));
        }
        out.push_str(&format!("Architectures: {arch}\n"));
        let mut targets = false;
        for (k, val) in &s.fields {
            targets |= k.eq_ignore_ascii_case("Targets");
            // A multi-line value (an inline key) starts on the next line.
            let sep = if val.starts_with('\n') { ":" } else { ": " };
            out.push_str(&format!("{k}{sep}{val}\n"));
        }
        if !targets {
            out.push_str("Targets: Packages\n");
        }
    }
    out
}

/// The host's binary sources: `/etc/apt/sources.list` and
/// `/etc/apt/sources.list.d/*.{list,sources}` (apt ignores other names).
/// `SIMS_FOREIGN_SOURCES=<file>` (either format, by extension) replaces
/// them.
fn host_sources() -> Result<Vec<Source>, String> {
    let parse = |p: &Path| -> Result<Vec<Source>, String> {
        let text = io(fs::read_to_string(p), p)?;
        Ok(if p.extension().is_some_and(|x| x == "sources") {
            parse_deb822(&text)
        } else {
            parse_one_line(&text)
        })
    };
    if let Some(f) = std::env::var_os("SIMS_FOREIGN_SOURCES").filter(|f| !f.is_empty()) {
        return parse(Path::new(&f));
    }
    let mut v = Vec::new();
    let main = Path::new("/etc/apt/sources.list");
    if main.is_file() {
        v.extend(parse(main)?);
    }
    let dir = Path::new("/etc/apt/sources.list.d");
    if let Ok(rd) = fs::read_dir(dir) {
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        files.sort();
        for f in files {
            v.extend(parse(&f)?);
        }
    }
    Ok(v)
}

// ------------------------------------------------------------ private apt

/// apt with its own state, cache and sources for one foreign arch.
struct Apt {
    arch: String,
    dir: PathBuf,
    conf: PathBuf,
}

impl Apt {
    fn new(cache: &Path, arch: &str) -> Result<Apt, String> {
        check_arch(arch)?;
        let dir = cache.join("apt").join(arch);
        for d in [
            "state/lists/partial",
            "cache/archives/partial",
            "etc/sources.list.d",
            "etc/preferences.d",
        ] {
            let p = dir.join(d);
            io(fs::create_dir_all(&p), &p)?;
        }
        let status = dir.join("state/status");
        if !status.exists() {
            io(fs::write(&status, ""), &status)?;
        }
        let sources = render_sources(&host_sources()?, arch);
        if sources.is_empty() {
            return Err(format!(
                "no apt source of the host can serve {arch} (see /etc/apt/sources.list*; \
                 SIMS_FOREIGN_SOURCES=<file> names another sources file)"
            ));
        }
        let list = dir.join("etc/foreign.sources");
        write_if_changed(&list, &sources)?;
        let d = dir.display();
        let conf_text = format!(
            "// Private apt configuration for {arch} guests (sims xtask).\n\
             Dir::State \"{d}/state/\";\n\
             Dir::State::status \"{d}/state/status\";\n\
             Dir::Cache \"{d}/cache/\";\n\
             Dir::Etc::sourcelist \"{d}/etc/foreign.sources\";\n\
             Dir::Etc::sourceparts \"{d}/etc/sources.list.d\";\n\
             Dir::Etc::preferences \"{d}/etc/preferences\";\n\
             Dir::Etc::preferencesparts \"{d}/etc/preferences.d\";\n\
             APT::Architecture \"{arch}\";\n\
             APT::Architectures {{ \"{arch}\"; }};\n\
             APT::Sandbox::User \"root\";\n\
             Acquire::Languages \"none\";\n"
        );
        let conf = dir.join("apt.conf");
        write_if_changed(&conf, &conf_text)?;
        Ok(Apt {
            arch: arch.to_string(),
            dir,
            conf,
        })
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("APT_CONFIG", &self.conf)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    fn has_lists(&self) -> bool {
        fs::read_dir(self.dir.join("state/lists"))
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
            .unwrap_or(false)
    }

    fn update(&self) -> Result<(), String> {
        println!("==> vm: apt-get update ({} package lists)", self.arch);
        let mut c = self.cmd("apt-get");
        c.args(["update", "-q"]);
        match output(c) {
            Ok(_) => Ok(()),
            // Some source failing (a third-party one without this arch)
            // is fine as long as Debian's lists came.
            Err(e) if self.has_lists() => {
                println!("==> vm: warning: apt-get update ({}): {e}", self.arch);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn ensure_lists(&self) -> Result<(), String> {
        if self.has_lists() {
            Ok(())
        } else {
            self.update()
        }
    }

    /// Runs `f`; on failure refreshes the lists (stale or missing) and
    /// runs it once more.
    fn retry<T>(&self, f: impl Fn() -> Result<T, String>) -> Result<T, String> {
        self.ensure_lists()?;
        match f() {
            Ok(v) => Ok(v),
            Err(first) => {
                self.update()
                    .map_err(|e| format!("{first}\napt-get update: {e}"))?;
                f().map_err(|e| format!("{first}\nafter apt-get update: {e}"))
            }
        }
    }

    fn depends_closure(&self, packages: &[String]) -> Result<Vec<String>, String> {
        let mut c = self.cmd("apt-cache");
        c.args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ])
        .args(packages);
        let out = output(c)?;
        let graph = parse_depends(&out);
        for p in packages {
            if !graph.contains_key(p) {
                return Err(format!("{p}: not known to apt for {}", self.arch));
            }
        }
        Ok(closure(&graph, packages))
    }

    /// `apt-get download`s the packages into `dir`; the .deb files.
    fn download(&self, packages: &[String], dir: &Path) -> Result<Vec<PathBuf>, String> {
        let mut c = self.cmd("apt-get");
        c.args(["download", "-q"]).args(packages).current_dir(dir);
        output(c)?;
        let mut debs: Vec<PathBuf> = io(fs::read_dir(dir), dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        debs.sort();
        Ok(debs)
    }
}

// ------------------------------------------------------------ dependencies

/// One alternative of a dependency: a package, or a virtual one
/// (`<name>` in apt-cache's output) with the packages providing it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Alt {
    name: String,
    virtual_: bool,
    providers: Vec<String>,
}

/// Package → its `Depends`/`PreDepends`, each an OR group of alternatives.
type Graph = BTreeMap<String, Vec<Vec<Alt>>>;

fn strip_arch(name: &str) -> String {
    name.split(':').next().unwrap_or(name).to_string()
}

/// Parses `apt-cache depends [--recurse]` output (LC_ALL=C):
///
/// ```text
/// iproute2
///  |Depends: debconf        ('|': OR'd with the next line)
///   Depends: <debconf-2.0>  (virtual; its providers follow, indented)
///     cdebconf
///   PreDepends: libc6
/// ```
fn parse_depends(text: &str) -> Graph {
    let mut g = Graph::new();
    let mut cur: Option<String> = None;
    // Whether the previous dependency line ended an OR group.
    let mut group_open = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            let name = line.trim();
            if name.starts_with('<') {
                cur = None; // a virtual package's own block: no deps
            } else {
                let name = strip_arch(name);
                g.entry(name.clone()).or_default();
                cur = Some(name);
            }
            group_open = false;
            continue;
        }
        let Some(pkg) = cur.as_ref() else { continue };
        let deps = g.get_mut(pkg).expect("inserted above");
        let body = line.trim_start();
        let (or_next, body) = match body.strip_prefix('|') {
            Some(b) => (true, b),
            None => (false, body),
        };
        if let Some((kind, target)) = body.split_once(": ") {
            if kind.contains(' ') {
                continue;
            }
            if kind != "Depends" && kind != "PreDepends" {
                group_open = false;
                continue;
            }
            let target = target.trim();
            let (virtual_, name) = match target.strip_prefix('<') {
                Some(t) => (true, t.trim_end_matches('>')),
                None => (false, target),
            };
            let alt = Alt {
                name: strip_arch(name),
                virtual_,
                providers: Vec::new(),
            };
            if group_open {
                if let Some(last) = deps.last_mut() {
                    last.push(alt);
                }
            } else {
                deps.push(vec![alt]);
            }
            group_open = or_next;
        } else if line.starts_with("    ") {
            // A provider of the virtual package just named.
            if let Some(alt) = deps.last_mut().and_then(|g| g.last_mut()) {
                alt.providers.push(strip_arch(body.trim()));
            }
        }
    }
    g
}

/// The packages to install for `roots`: each OR group is satisfied by an
/// alternative already chosen, else by its first alternative that exists
/// (a virtual one through its first provider), as apt would; the other
/// alternatives stay out.
fn closure(g: &Graph, roots: &[String]) -> Vec<String> {
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = roots.iter().cloned().collect();
    for r in roots {
        chosen.insert(r.clone());
    }
    while let Some(p) = queue.pop_front() {
        let Some(groups) = g.get(&p) else { continue };
        for group in groups {
            let candidates = |a: &Alt| -> Vec<String> {
                if a.virtual_ {
                    a.providers.clone()
                } else {
                    vec![a.name.clone()]
                }
            };
            if group
                .iter()
                .flat_map(candidates)
                .any(|c| chosen.contains(&c))
            {
                continue;
            }
            // In order, like apt: the first alternative that exists (a
            // virtual one through its first provider).
            let pick = group
                .iter()
                .flat_map(candidates)
                .find(|c| g.contains_key(c));
            if let Some(pick) = pick {
                if chosen.insert(pick.clone()) {
                    queue.push_back(pick);
                }
            }
        }
    }
    chosen.into_iter().collect()
}

// ------------------------------------------------------------ sysroot

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
pub fn prepare_sysroot(
    cache: &Path,
    debian_arch: &str,
    packages: &[&str],
) -> Result<Sysroot, String> {
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

// ------------------------------------------------------------ kernel

/// `linux-image-<version>` named in `apt-cache depends <meta>` output,
/// e.g. `6.1.0-50-4kc-malta` for `linux-image-4kc-malta`.
fn kernel_version_from_depends(text: &str, meta: &str) -> Option<String> {
    let flavour = meta.strip_prefix("linux-image-")?;
    let suffix = format!("-{flavour}");
    text.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches('|');
            l.strip_prefix("Depends: ")
                .or_else(|| l.strip_prefix("PreDepends: "))
        })
        .filter_map(|d| d.trim().strip_prefix("linux-image-"))
        .find(|v| {
            v.ends_with(&suffix)
                && !v.contains([' ', '<', '>'])
                && v.starts_with(|c: char| c.is_ascii_digit())
        })
        .map(str::to_string)
}

/// A foreign kernel: `(version, root, image)` where `root` holds `boot/`
/// and `lib/modules/<version>/` (depmod'ed) and `image` is what QEMU's
/// `-kernel` takes (see the module docs). Cached in
/// `<cache>/kernel-<arch>/<version>/`; offline, the newest cached kernel
/// of the flavour is used.
pub fn prepare_foreign_kernel(
    cache: &Path,
    debian_arch: &str,
    flavour_meta_pkg: &str,
) -> Result<(String, PathBuf, PathBuf), String> {
    check_arch(debian_arch)?;
    let flavour = flavour_meta_pkg
        .strip_prefix("linux-image-")
        .filter(|f| !f.is_empty() && !f.contains(['/', ' ']))
        .ok_or_else(|| format!("{flavour_meta_pkg:?} is no linux-image-<flavour> package"))?;
    let kdir = cache.join(format!("kernel-{debian_arch}"));
    let apt = Apt::new(cache, debian_arch)?;
    let resolve = || -> Result<String, String> {
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
        io(fs::create_dir_all(&dl), &dl)?;
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
        io(fs::create_dir_all(&root), &root)?;
        let mut c = Command::new("dpkg-deb");
        c.arg("-x").arg(&debs[0]).arg(&root);
        output(c)?;
        let mut c = Command::new(depmod_bin());
        c.arg("-b").arg(&root).arg(&version);
        output(c).map_err(|e| format!("depmod: {e}"))?;
        let _ = fs::remove_dir_all(&dl);
        io(
            fs::write(dir.join("complete"), format!("{pkg}\n")),
            &dir.join("complete"),
        )?;
        prune_newest(&kdir, |_| true, &dir, 2);
        println!(
            "==> vm: {debian_arch} kernel {version} ready in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    // malta: an ELF (what `-M malta -kernel` loads); arm64: a raw Image
    // (QEMU would also take a gzip'd one). See the module docs.
    let image = root.join("boot").join(format!("vmlinuz-{version}"));
    if !image.is_file() {
        return Err(format!("{} missing", image.display()));
    }
    Ok((version, root, image))
}

// ------------------------------------------------------------ ELF

/// What the dynamic loader needs to run an ELF file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ElfDeps {
    interp: Option<String>,
    needed: Vec<String>,
}

/// Reads `PT_INTERP` and `DT_NEEDED` from an ELF image of any class and
/// byte order (no section headers needed).
fn elf_deps(data: &[u8]) -> Result<ElfDeps, String> {
    if data.len() < 52 || &data[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    let is64 = match data[4] {
        1 => false,
        2 => true,
        c => return Err(format!("bad ELF class {c}")),
    };
    let be = match data[5] {
        1 => false,
        2 => true,
        d => return Err(format!("bad ELF data encoding {d}")),
    };
    let rd = |off: usize, n: usize| -> Result<u64, String> {
        let b = data
            .get(off..off + n)
            .ok_or_else(|| format!("ELF truncated at {off}"))?;
        let mut v = 0u64;
        for i in 0..n {
            let byte = if be { b[i] } else { b[n - 1 - i] };
            v = (v << 8) | byte as u64;
        }
        Ok(v)
    };
    let word = if is64 { 8 } else { 4 };
    let (phoff, phentsize, phnum) = if is64 {
        (rd(32, 8)?, rd(54, 2)?, rd(56, 2)?)
    } else {
        (rd(28, 4)?, rd(42, 2)?, rd(44, 2)?)
    };
    // (type, offset, vaddr, filesz)
    let mut phdrs = Vec::new();
    for i in 0..phnum {
        let p = (phoff + i * phentsize) as usize;
        let ph = if is64 {
            (rd(p, 4)?, rd(p + 8, 8)?, rd(p + 16, 8)?, rd(p + 32, 8)?)
        } else {
            (rd(p, 4)?, rd(p + 4, 4)?, rd(p + 8, 4)?, rd(p + 16, 4)?)
        };
        phdrs.push(ph);
    }
    let cstr = |off: usize| -> Result<String, String> {
        let s = data.get(off..).ok_or("ELF string out of range")?;
        let end = s
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated string")?;
        Ok(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    let mut deps = ElfDeps::default();
    const PT_LOAD: u64 = 1;
    const PT_DYNAMIC: u64 = 2;
    const PT_INTERP: u64 = 3;
    if let Some(&(_, off, _, _)) = phdrs.iter().find(|p| p.0 == PT_INTERP) {
        deps.interp = Some(cstr(off as usize)?);
    }
    let Some(&(_, dyn_off, _, dyn_size)) = phdrs.iter().find(|p| p.0 == PT_DYNAMIC) else {
        return Ok(deps);
    };
    let mut needed_offs = Vec::new();
    let mut strtab_vaddr = None;
    let mut e = dyn_off as usize;
    while e + 2 * word <= (dyn_off + dyn_size) as usize {
        let tag = rd(e, word)?;
        let val = rd(e + word, word)?;
        match tag {
            0 => break,
            1 => needed_offs.push(val),
            5 => strtab_vaddr = Some(val),
            _ => {}
        }
        e += 2 * word;
    }
    if needed_offs.is_empty() {
        return Ok(deps);
    }
    let strtab_vaddr = strtab_vaddr.ok_or("DT_NEEDED without DT_STRTAB")?;
    let strtab = phdrs
        .iter()
        .filter(|p| p.0 == PT_LOAD)
        .find(|p| strtab_vaddr >= p.2 && strtab_vaddr < p.2 + p.3)
        .map(|p| strtab_vaddr - p.2 + p.1)
        .ok_or("DT_STRTAB outside every PT_LOAD")?;
    for n in needed_offs {
        deps.needed.push(cstr((strtab + n) as usize)?);
    }
    Ok(deps)
}

fn normalize_rel(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// Resolves `rel` (relative to `root`, as the guest would see it) through
/// the symlinks inside `root`; every symlink crossed goes into `seen`.
/// Returns the final path (a file or directory).
fn resolve_in(
    root: &Path,
    rel: &str,
    seen: &mut BTreeSet<String>,
    depth: u32,
) -> Result<String, String> {
    if depth > 32 {
        return Err(format!("{rel}: too many symlinks"));
    }
    let comps: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    let mut cur = String::new();
    for (i, c) in comps.iter().enumerate() {
        if !cur.is_empty() {
            cur.push('/');
        }
        cur.push_str(c);
        let p = root.join(&cur);
        let md = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if md.file_type().is_symlink() {
            seen.insert(cur.clone());
            let t = io(fs::read_link(&p), &p)?;
            let base = if t.is_absolute() {
                PathBuf::from("/")
            } else {
                Path::new("/")
                    .join(&cur)
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            };
            let mut next = base.join(t);
            for rest in &comps[i + 1..] {
                next.push(rest);
            }
            return resolve_in(root, &normalize_rel(&next), seen, depth + 1);
        }
    }
    Ok(cur)
}

/// Everything (relative paths in `sysroot.root`: the binaries, their
/// dynamic loader and shared libraries, transitively, and every symlink
/// on the way, e.g. `lib`) needed to run `bins` (relative paths) in a
/// guest built from the sysroot, without `ld.so.cache` (glibc's built-in
/// search path covers `/usr/lib/<triplet>`).
pub fn needed_libs(sysroot: &Sysroot, bins: &[&str]) -> Result<Vec<String>, String> {
    let root = &sysroot.root;
    let mut dirs: Vec<String> = Vec::new();
    for base in ["usr/lib", "lib"] {
        if let Ok(rd) = fs::read_dir(root.join(base)) {
            let mut t: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("-linux-gnu"))
                .map(|n| format!("{base}/{n}"))
                .collect();
            t.sort();
            dirs.extend(t);
        }
    }
    dirs.push("usr/lib".into());
    dirs.push("lib".into());
    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = bins
        .iter()
        .map(|b| b.trim_matches('/').to_string())
        .collect();
    while let Some(rel) = queue.pop_front() {
        let file = resolve_in(root, &rel, &mut out, 0)?;
        out.insert(file.clone());
        if !done.insert(file.clone()) {
            continue;
        }
        let p = root.join(&file);
        let data = io(fs::read(&p), &p)?;
        let deps = elf_deps(&data).map_err(|e| format!("{}: {e}", p.display()))?;
        if let Some(i) = deps.interp {
            queue.push_back(i.trim_start_matches('/').to_string());
        }
        for n in deps.needed {
            let found = dirs.iter().find_map(|d| {
                let cand = format!("{d}/{n}");
                let mut tmp = BTreeSet::new();
                resolve_in(root, &cand, &mut tmp, 0).ok().map(|_| cand)
            });
            match found {
                Some(c) => queue.push_back(c),
                None => return Err(format!("{file}: {n} not found in the sysroot")),
            }
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_DEB822: &str = "Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Architectures: amd64

Types: deb
Enabled: no
URIs: http://example.org/debian
Suites: bookworm
Components: main

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
";

    #[test]
    fn deb822_sources_are_parsed() {
        let v = parse_deb822(HOST_DEB822);
        assert_eq!(v.len(), 3, "{v:#?}");
        assert_eq!(v[0].uris, ["http://deb.debian.org/debian"]);
        assert_eq!(v[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(v[0].components, ["main"]);
        assert!(v[0].archs.is_empty());
        assert_eq!(
            v[0].fields,
            [(
                "Signed-By".to_string(),
                "/usr/share/keyrings/debian-archive-keyring.gpg".to_string()
            )]
        );
        assert_eq!(v[1].components, ["main", "contrib"]);
        assert!(v[1].fields[0].1.contains("\n mQINBGPL\n"));
        assert_eq!(v[2].archs, ["amd64"]);
    }

    #[test]
    fn one_line_sources_are_parsed() {
        let text = "# comment\n\
            deb http://deb.debian.org/debian bookworm main contrib # trailing\n\
            deb-src http://deb.debian.org/debian bookworm main\n\
            deb [ arch=amd64,i386 signed-by=/k.gpg ] http://x.org/d stable main\n\
            deb [signed-by=/k.gpg lang=de,en] http://deb.debian.org/debian-security bookworm-security main\n\
            debx http://nope stable main\n\
            deb http://flat.example/ ./\n";
        let v = parse_one_line(text);
        assert_eq!(v.len(), 4, "{v:#?}");
        assert_eq!(v[0].uris, ["http://deb.debian.org/debian"]);
        assert_eq!(v[0].suites, ["bookworm"]);
        assert_eq!(v[0].components, ["main", "contrib"]);
        assert_eq!(v[1].archs, ["amd64", "i386"]);
        assert_eq!(v[1].fields, [("signed-by".into(), "/k.gpg".into())]);
        assert_eq!(
            v[2].fields,
            [
                ("signed-by".to_string(), "/k.gpg".to_string()),
                ("Languages".to_string(), "de en".to_string())
            ]
        );
        assert_eq!(v[3].suites, ["./"]);
        assert!(v[3].components.is_empty());
    }

    #[test]
    fn sources_are_rewritten_for_the_foreign_arch() {
        let mut v = parse_deb822(HOST_DEB822);
        v.extend(parse_one_line(
            "deb [arch=amd64,mipsel] http://m.example/d bookworm main\n\
             deb cdrom:[Debian]/ bookworm main\n",
        ));
        let out = render_sources(&v, "mipsel");
        // nodesource (amd64 only) and the cdrom are gone.
        assert!(!out.contains("nodesource"), "{out}");
        assert!(!out.contains("cdrom"), "{out}");
        let paras: Vec<&str> = out.split("\n\n").collect();
        assert_eq!(paras.len(), 3, "{out}");
        assert_eq!(
            paras[0],
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
             Components: main\nArchitectures: mipsel\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\nTargets: Packages"
        );
        assert!(paras[1].contains("Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n"));
        assert!(paras[2].contains("URIs: http://m.example/d\n"));
        assert!(paras[2].contains("Architectures: mipsel\n"));
        // The output reads back as the same sources (deb822 round trip).
        let back = parse_deb822(&out);
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(back[1].fields[0], v[1].fields[0]);
    }

    const DEPENDS: &str = "busybox-static
iproute2
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
    debconf
  Depends: libbpf1
  PreDepends: libc6
  Depends: <libnothere>
nftables
  Depends: libnftables1
  Depends: libc6:mipsel
dnsmasq-base
 |Depends: <virt-only>
    provider-b
  Depends: plain-alt
debconf
  PreDepends: perl-base
cdebconf
  Depends: libc6
<debconf-2.0>
libbpf1
  Depends: libc6
libc6
  Depends: libgcc-s1
libgcc-s1
  Depends: gcc-12-base
  Depends: libc6
gcc-12-base
libnftables1
  Depends: libc6
perl-base
provider-b
plain-alt
";

    #[test]
    fn depends_output_is_parsed() {
        let g = parse_depends(DEPENDS);
        assert!(!g.contains_key("<debconf-2.0>") && !g.contains_key("debconf-2.0"));
        assert_eq!(g["busybox-static"], Vec::<Vec<Alt>>::new());
        let ip = &g["iproute2"];
        assert_eq!(ip.len(), 4, "{ip:#?}");
        assert_eq!(ip[0].len(), 2);
        assert_eq!(ip[0][0].name, "debconf");
        assert!(!ip[0][0].virtual_);
        assert_eq!(ip[0][1].name, "debconf-2.0");
        assert!(ip[0][1].virtual_);
        assert_eq!(ip[0][1].providers, ["cdebconf", "debconf"]);
        assert_eq!(ip[2][0].name, "libc6");
        assert_eq!(ip[3][0].name, "libnothere");
        assert_eq!(g["nftables"][1][0].name, "libc6");
    }

    #[test]
    fn closure_takes_first_alternatives_only() {
        let g = parse_depends(DEPENDS);
        let roots: Vec<String> = ["busybox-static", "iproute2", "nftables", "dnsmasq-base"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = closure(&g, &roots);
        assert_eq!(
            c,
            [
                "busybox-static",
                "debconf",
                "dnsmasq-base",
                "gcc-12-base",
                "iproute2",
                "libbpf1",
                "libc6",
                "libgcc-s1",
                "libnftables1",
                "nftables",
                "perl-base",
                "provider-b",
            ]
        );
        // cdebconf (second alternative) and the missing package are out.
        assert!(!c.contains(&"cdebconf".to_string()));
    }

    #[test]
    fn kernel_version_is_found_in_depends() {
        let out = "linux-image-4kc-malta\n  Depends: linux-image-6.1.0-50-4kc-malta\n";
        assert_eq!(
            kernel_version_from_depends(out, "linux-image-4kc-malta").as_deref(),
            Some("6.1.0-50-4kc-malta")
        );
        let out = "linux-image-arm64\n  Depends: <linux-image-6.1.0-9-arm64>\n  Depends: linux-image-6.1.0-56-arm64\n";
        assert_eq!(
            kernel_version_from_depends(out, "linux-image-arm64").as_deref(),
            Some("6.1.0-56-arm64")
        );
        assert_eq!(kernel_version_from_depends(out, "linux-image-amd64"), None);
        assert_eq!(kernel_version_from_depends(out, "arm64"), None);
    }

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

    /// A minimal ELF: one PT_LOAD covering the file, PT_INTERP, PT_DYNAMIC
    /// with two DT_NEEDED, in the given class and byte order.
    fn synth_elf(is64: bool, be: bool) -> Vec<u8> {
        let w = if is64 { 8 } else { 4 };
        let put = |buf: &mut Vec<u8>, off: usize, v: u64, n: usize| {
            if buf.len() < off + n {
                buf.resize(off + n, 0);
            }
            for i in 0..n {
                let shift = 8 * if be { n - 1 - i } else { i };
                buf[off + i] = (v >> shift) as u8;
            }
        };
        let ehsize = if is64 { 64 } else { 52 };
        let phentsize = if is64 { 56 } else { 32 };
        let phoff = ehsize;
        let interp_off = phoff + 3 * phentsize;
        let interp = b"/lib/ld.so.1\0";
        let strtab_off = interp_off + interp.len();
        let strtab = b"\0libc.so.6\0libm.so.6\0";
        let dyn_off = (strtab_off + strtab.len()).next_multiple_of(8);
        let vaddr_base = 0x400000u64;
        let mut b = vec![0u8; dyn_off + 4 * 2 * w];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = if is64 { 2 } else { 1 };
        b[5] = if be { 2 } else { 1 };
        if is64 {
            put(&mut b, 32, phoff as u64, 8);
            put(&mut b, 54, phentsize as u64, 2);
            put(&mut b, 56, 3, 2);
        } else {
            put(&mut b, 28, phoff as u64, 4);
            put(&mut b, 42, phentsize as u64, 2);
            put(&mut b, 44, 3, 2);
        }
        let total = b.len() as u64;
        let ph = |b: &mut Vec<u8>, i: usize, t: u64, off: u64, vaddr: u64, size: u64| {
            let p = phoff + i * phentsize;
            put(b, p, t, 4);
            if is64 {
                put(b, p + 8, off, 8);
                put(b, p + 16, vaddr, 8);
                put(b, p + 32, size, 8);
            } else {
                put(b, p + 4, off, 4);
                put(b, p + 8, vaddr, 4);
                put(b, p + 16, size, 4);
            }
        };
        ph(&mut b, 0, 1, 0, vaddr_base, total);
        ph(&mut b, 1, 3, interp_off as u64, 0, interp.len() as u64);
        ph(&mut b, 2, 2, dyn_off as u64, 0, (4 * 2 * w) as u64);
        b[interp_off..interp_off + interp.len()].copy_from_slice(interp);
        b[strtab_off..strtab_off + strtab.len()].copy_from_slice(strtab);
        let dyns = [
            (1u64, 1u64),
            (5, vaddr_base + strtab_off as u64),
            (1, 11),
            (0, 0),
        ];
        for (i, (t, v)) in dyns.iter().enumerate() {
            put(&mut b, dyn_off + i * 2 * w, *t, w);
            put(&mut b, dyn_off + i * 2 * w + w, *v, w);
        }
        b
    }

    #[test]
    fn elf_deps_in_every_class_and_byte_order() {
        for is64 in [false, true] {
            for be in [false, true] {
                let d = elf_deps(&synth_elf(is64, be)).unwrap();
                assert_eq!(d.interp.as_deref(), Some("/lib/ld.so.1"), "{is64} {be}");
                assert_eq!(d.needed, ["libc.so.6", "libm.so.6"], "{is64} {be}");
            }
        }
        assert!(elf_deps(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn needed_libs_follow_symlinks_inside_the_sysroot() {
        let tmp = std::env::temp_dir().join(format!("sims-foreign-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let root = tmp.join("root");
        let t = "usr/lib/mipsel-linux-gnu";
        fs::create_dir_all(root.join(t)).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        // The binary needs libc.so.6 and libm.so.6, via /lib/ld.so.1,
        // which points (absolutely) at the real loader.
        fs::write(root.join("usr/bin/tool"), synth_elf(false, false)).unwrap();
        std::os::unix::fs::symlink(
            "/lib/mipsel-linux-gnu/ld-2.36.so",
            root.join("usr/lib/ld.so.1"),
        )
        .unwrap();
        fs::write(root.join(t).join("ld-2.36.so"), b"\x7fELF\x01\x01").unwrap();
        fs::write(root.join(t).join("libc.so.6"), b"not elf").unwrap();
        let err = needed_libs(
            &Sysroot {
                arch: "mipsel".into(),
                root: root.clone(),
            },
            &["usr/bin/tool"],
        )
        .unwrap_err();
        assert!(
            err.contains("not an ELF") || err.contains("libm.so.6"),
            "{err}"
        );
        // Real (minimal) libraries: ELF without program headers.
        let mut lib = vec![0u8; 52];
        lib[..6].copy_from_slice(b"\x7fELF\x01\x01");
        fs::write(root.join(t).join("libc.so.6"), &lib).unwrap();
        fs::write(root.join(t).join("libm.so.6"), &lib).unwrap();
        fs::write(root.join(t).join("ld-2.36.so"), &lib).unwrap();
        let got = needed_libs(
            &Sysroot {
                arch: "mipsel".into(),
                root,
            },
            &["/usr/bin/tool"],
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "lib",
                "usr/bin/tool",
                "usr/lib/ld.so.1",
                "usr/lib/mipsel-linux-gnu/ld-2.36.so",
                "usr/lib/mipsel-linux-gnu/libc.so.6",
                "usr/lib/mipsel-linux-gnu/libm.so.6",
            ]
        );
        let _ = fs::remove_dir_all(&tmp);
    }
}
