//! apt for a foreign architecture, without touching the host's dpkg
//! architectures: a private configuration per architecture in
//! `<cache>/apt/<arch>/` ([`Apt`]), the host's sources rewritten for it,
//! and the parsers of what apt prints (`apt-cache depends`).
//!
//! * [`Apt`] has its own `Dir::State` (empty dpkg status, so the host's
//!   installed packages play no part), `Dir::Cache`, a
//!   `Dir::Etc::sourcelist` rewritten from the host's sources (one-line
//!   `.list` read here, deb822 `.sources` with deb822-lossless; written
//!   as deb822 with `Architectures: <arch>` and `Targets: Packages`), and
//!   `APT::Architecture(s)` set to the foreign arch. Every apt command gets
//!   it through `APT_CONFIG`, with `LC_ALL=C` (apt-cache translates
//!   "Depends:").
//! * [`closure`] of [`parse_depends`] is the dependency closure of a
//!   package list, taking the first alternative of each OR group (as apt
//!   does; `apt-cache depends --recurse` follows every alternative).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::write_if_changed;
use crate::error::io;
use crate::host::output;

/// A Debian architecture name (`mipsel`, `arm64`): it names directories.
pub fn check_arch(arch: &str) -> Result<(), String> {
    if arch.is_empty()
        || !arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("bad Debian architecture {arch:?}"));
    }
    Ok(())
}

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

/// deb822 format (`*.sources`), read with deb822-lossless; a malformed
/// file is an error (apt refuses it too). A multi-line value (an inline
/// `Signed-By` key) is kept as continuation lines, `"\n line1\n line2"`,
/// which [`render_sources`] writes back after `Field:`.
fn parse_deb822(text: &str) -> Result<Vec<Source>, String> {
    let doc: deb822_lossless::Deb822 = text.parse().map_err(|e| format!("{e}"))?;
    let paragraphs: Vec<Vec<(String, String)>> = doc
        .paragraphs()
        .map(|p| {
            p.items()
                .map(|(k, val)| {
                    let val = if val.contains('\n') {
                        val.split('\n').map(|l| format!("\n {l}")).collect()
                    } else {
                        val.trim().to_string()
                    };
                    (k.trim().to_string(), val)
                })
                .collect()
        })
        .collect();
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
    Ok(v)
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
        if p.extension().is_some_and(|x| x == "sources") {
            parse_deb822(&text).map_err(|e| format!("{}: {e}", p.display()))
        } else {
            Ok(parse_one_line(&text))
        }
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

/// apt with its own state, cache and sources for one foreign arch.
pub struct Apt {
    arch: String,
    dir: PathBuf,
    conf: PathBuf,
}

impl Apt {
    pub fn new(cache: &Path, arch: &str) -> Result<Apt, String> {
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

    pub fn cmd(&self, prog: &str) -> Command {
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
    pub fn retry<T>(&self, f: impl Fn() -> Result<T, String>) -> Result<T, String> {
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

    pub fn depends_closure(&self, packages: &[String]) -> Result<Vec<String>, String> {
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
    pub fn download(&self, packages: &[String], dir: &Path) -> Result<Vec<PathBuf>, String> {
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

/// `linux-image-<version>` named in `apt-cache depends <meta>` output,
/// e.g. `6.1.0-50-4kc-malta` for `linux-image-4kc-malta`, `6.1.0-56-amd64`
/// for `linux-image-amd64`.
pub fn kernel_version_from_depends(text: &str, meta: &str) -> Option<String> {
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
        let v = parse_deb822(HOST_DEB822).unwrap();
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
        let mut v = parse_deb822(HOST_DEB822).unwrap();
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
        let back = parse_deb822(&out).unwrap();
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
    fn amd64_kernel_version_is_found_in_depends() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            kernel_version_from_depends(out, "linux-image-amd64").as_deref(),
            Some("6.1.0-56-amd64")
        );
    }

    #[test]
    fn malformed_deb822_is_an_error() {
        assert!(parse_deb822("Types: deb\nURIs: http://a\nnonsense line\n").is_err());
        // Comments inside a paragraph, tabs and lower-case names are fine.
        let v = parse_deb822("types: deb\n# x: y\nuris:\thttp://a/b\nsuites: s1\n  s2\n").unwrap();
        assert_eq!(v[0].uris, ["http://a/b"]);
        assert_eq!(v[0].suites, ["s1", "s2"]);
    }
}
