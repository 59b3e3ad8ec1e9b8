//! `board-configs/*.toml`: one file per OpenWrt target family, the only
//! place that knows anything about a router target (triple, toolchain,
//! flags, linker, package architecture, emulators). See docs/TARGETS.md.

use std::path::{Path, PathBuf};

use super::toml::{self, Value};

pub use sims_vm::Guest;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linker {
    /// `zig cc` from PyPI's `ziglang`, through a generated wrapper script.
    Zig { target: String, cpu: String },
    /// rust-lld with the crt objects and libc.a that rust-std ships.
    RustLld,
    /// The host's `cc`.
    Cc,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Board {
    pub file: PathBuf,
    pub name: String,
    pub openwrt_target: String,
    pub openwrt_arch: String,
    pub big_endian: bool,
    pub rust_target: String,
    pub toolchain: String,
    pub build_std: bool,
    /// `-Zbuild-std-features` (build-std boards only).
    pub build_std_features: Vec<String>,
    /// For every build of the target (release and tests).
    pub rustflags: Vec<String>,
    /// Added for release builds only.
    pub release_rustflags: Vec<String>,
    pub linker: Linker,
    pub qemu_user: String,
    pub qemu_cpu: String,
    pub qemu_system: String,
    pub qemu_machine: String,
    /// The Debian guest of this architecture the agent scenarios run in
    /// (`vm_*` keys); None: no system-level tests for this board.
    pub guest: Option<Guest>,
}

const KEYS: &[&str] = &[
    "name",
    "openwrt_target",
    "openwrt_arch",
    "endian",
    "rust_target",
    "toolchain",
    "build_std",
    "build_std_features",
    "rustflags",
    "release_rustflags",
    "linker",
    "zig_target",
    "zig_cpu",
    "qemu_user",
    "qemu_cpu",
    "qemu_system",
    "qemu_machine",
    "vm_debian_arch",
    "vm_kernel_package",
    "vm_qemu_package",
    "vm_cpu",
    "vm_smp",
    "vm_console",
    "vm_mem_mb",
    "vm_9p_version",
];

impl Board {
    pub fn parse(file: &Path, text: &str) -> Result<Board, String> {
        let what = file.display();
        let entries = toml::parse(text).map_err(|e| format!("{what}: {e}"))?;
        for e in &entries {
            if !e.table.is_empty() {
                return Err(format!("{what}: line {}: no tables here", e.line));
            }
            if !KEYS.contains(&e.key.as_str()) {
                return Err(format!("{what}: line {}: unknown key `{}`", e.line, e.key));
            }
        }
        let get = |k: &str| entries.iter().find(|e| e.key == k).map(|e| &e.value);
        let string = |k: &str| -> Result<String, String> {
            match get(k) {
                Some(Value::Str(s)) if !s.is_empty() => Ok(s.clone()),
                Some(_) => Err(format!("{what}: `{k}` must be a non-empty string")),
                None => Err(format!("{what}: `{k}` is missing")),
            }
        };
        let list = |k: &str| -> Result<Vec<String>, String> {
            match get(k) {
                None => Ok(Vec::new()),
                Some(Value::Array(v)) => v
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
                            .map(str::to_string)
                            .ok_or_else(|| {
                                format!("{what}: `{k}` items must be strings without spaces")
                            })
                    })
                    .collect(),
                Some(_) => Err(format!("{what}: `{k}` must be an array of strings")),
            }
        };
        let linker = match string("linker")?.as_str() {
            "zig" => Linker::Zig {
                target: string("zig_target")?,
                cpu: string("zig_cpu")?,
            },
            "rust-lld" => Linker::RustLld,
            "cc" => Linker::Cc,
            other => {
                return Err(format!(
                    "{what}: linker `{other}`: expected zig, rust-lld or cc"
                ))
            }
        };
        if linker == Linker::RustLld || linker == Linker::Cc {
            for k in ["zig_target", "zig_cpu"] {
                if get(k).is_some() {
                    return Err(format!("{what}: `{k}` without `linker = \"zig\"`"));
                }
            }
        }
        let big_endian = match string("endian")?.as_str() {
            "big" => true,
            "little" => false,
            other => return Err(format!("{what}: endian `{other}`: big or little")),
        };
        let build_std = match get("build_std") {
            Some(Value::Bool(b)) => *b,
            None => false,
            Some(_) => return Err(format!("{what}: `build_std` must be true or false")),
        };
        let toolchain = string("toolchain")?;
        if build_std && !toolchain.starts_with("nightly") {
            return Err(format!("{what}: build_std needs a nightly toolchain"));
        }
        let build_std_features = list("build_std_features")?;
        if !build_std && !build_std_features.is_empty() {
            return Err(format!("{what}: build_std_features without build_std"));
        }
        let guest = match get("vm_kernel_package") {
            None => {
                if let Some(e) = entries.iter().find(|e| e.key.starts_with("vm_")) {
                    return Err(format!(
                        "{what}: line {}: `{}` without `vm_kernel_package`",
                        e.line, e.key
                    ));
                }
                None
            }
            Some(_) => Some(Guest {
                debian_arch: string("vm_debian_arch")?,
                kernel_package: string("vm_kernel_package")?,
                qemu_package: string("vm_qemu_package")?,
                cpu: get("vm_cpu").map(|_| string("vm_cpu")).transpose()?,
                console: string("vm_console")?,
                mem_mb: match get("vm_mem_mb") {
                    Some(Value::Int(n)) if (64..=4096).contains(n) => *n as u32,
                    _ => return Err(format!("{what}: `vm_mem_mb` must be 64..4096")),
                },
                smp: match get("vm_smp") {
                    Some(Value::Int(n)) if (1..=8).contains(n) => *n as u32,
                    _ => return Err(format!("{what}: `vm_smp` must be 1..8")),
                },
                p9_version: string("vm_9p_version")?,
            }),
        };
        Ok(Board {
            file: file.to_path_buf(),
            name: string("name")?,
            openwrt_target: string("openwrt_target")?,
            openwrt_arch: string("openwrt_arch")?,
            big_endian,
            rust_target: string("rust_target")?,
            toolchain,
            build_std,
            build_std_features,
            rustflags: list("rustflags")?,
            release_rustflags: list("release_rustflags")?,
            linker,
            qemu_user: string("qemu_user")?,
            qemu_cpu: string("qemu_cpu")?,
            qemu_system: string("qemu_system")?,
            qemu_machine: string("qemu_machine")?,
            guest,
        })
    }

    /// The board's system guest for the VM harness, if it has one.
    pub fn vm_guest(&self) -> Option<sims_vm::Foreign> {
        Some(sims_vm::Foreign {
            board: self.name.clone(),
            qemu: self.qemu_system.clone(),
            machine: self.qemu_machine.clone(),
            guest: self.guest.clone()?,
        })
    }

    /// Adds `-Zbuild-std-features=...` when the board has any.
    pub fn build_std_features_arg(&self, c: &mut std::process::Command) {
        if !self.build_std_features.is_empty() {
            c.arg(format!(
                "-Zbuild-std-features={}",
                self.build_std_features.join(",")
            ));
        }
    }

    /// `CARGO_TARGET_<TRIPLE>_<what>`.
    pub fn cargo_env(&self, what: &str) -> String {
        format!(
            "CARGO_TARGET_{}_{what}",
            self.rust_target.to_uppercase().replace(['-', '.'], "_")
        )
    }

    /// The triple's architecture, as `std::env::consts::ARCH` names it.
    pub fn arch(&self) -> &str {
        self.rust_target.split('-').next().unwrap_or("")
    }

    /// Binaries of this target run on this machine without an emulator.
    pub fn runs_natively(&self) -> bool {
        self.arch() == std::env::consts::ARCH && std::env::consts::OS == "linux"
    }
}

/// All boards, sorted by file name; names, triples and package
/// architectures are unique.
pub fn load(dir: &Path) -> Result<Vec<Board>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut boards: Vec<Board> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let b = Board::parse(&f, &text)?;
        if let Some(o) = boards.iter().find(|o| {
            o.name == b.name || o.rust_target == b.rust_target || o.openwrt_arch == b.openwrt_arch
        }) {
            return Err(format!(
                "{} and {} describe the same board, triple or package architecture",
                o.file.display(),
                b.file.display()
            ));
        }
        boards.push(b);
    }
    if boards.is_empty() {
        return Err(format!("no board configs in {}", dir.display()));
    }
    Ok(boards)
}

/// Picks boards by Rust triple, board name or OpenWrt package architecture.
pub fn select<'a>(boards: &'a [Board], want: &str) -> Result<&'a Board, String> {
    boards
        .iter()
        .find(|b| b.rust_target == want || b.name == want || b.openwrt_arch == want)
        .ok_or_else(|| {
            let known: Vec<&str> = boards.iter().map(|b| b.rust_target.as_str()).collect();
            format!(
                "unknown target {want}; board-configs/ has {}",
                known.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn root() -> PathBuf {
        crate::cargo::workspace()
    }

    fn boards() -> Vec<Board> {
        load(&root().join("board-configs")).unwrap()
    }

    #[test]
    fn board_configs_parse() {
        let b = boards();
        let triples: BTreeSet<&str> = b.iter().map(|b| b.rust_target.as_str()).collect();
        // DESIGN.md §9: the five OpenWrt target families.
        let want: BTreeSet<&str> = [
            "mips-unknown-linux-musl",
            "mipsel-unknown-linux-musl",
            "armv7-unknown-linux-musleabihf",
            "aarch64-unknown-linux-musl",
            "x86_64-unknown-linux-musl",
        ]
        .into();
        assert_eq!(triples, want);
        assert!(
            b.iter().any(|b| b.big_endian),
            "big-endian MIPS is a target"
        );
        for b in &b {
            // Tests of build-std targets need unwinding: the release-only
            // flags are where immediate-abort goes.
            assert!(
                !b.rustflags.iter().any(|f| f.contains("panic")),
                "{}: panic flags belong in release_rustflags",
                b.file.display()
            );
        }
    }

    #[test]
    fn rejects_bad_configs() {
        let good = std::fs::read_to_string(root().join("board-configs/ath79.toml")).unwrap();
        let p = Path::new("x.toml");
        assert!(Board::parse(p, &good).is_ok());
        for (from, to) in [
            ("endian = \"big\"", "endian = \"middle\""),
            ("linker = \"zig\"", "linker = \"gold\""),
            ("toolchain = \"nightly\"", "toolchain = \"stable\""),
            ("qemu_machine", "qemu_machin"),
            ("zig_cpu = \"mips32r2+soft_float\"", ""),
        ] {
            assert!(good.contains(from), "{from}");
            let bad = good.replace(from, to);
            assert!(Board::parse(p, &bad).is_err(), "accepted with {to:?}");
        }
    }

    /// Cross.toml (for cross-rs users) says the same as board-configs/:
    /// the same triples, build-std on the same ones, the same rustflags and
    /// QEMU CPU, and the tests' QEMU marker.
    #[test]
    fn cross_toml_agrees_with_board_configs() {
        let text = std::fs::read_to_string(root().join("Cross.toml")).unwrap();
        let entries = toml::parse(&text).unwrap();
        let boards = boards();
        let cross_triples: BTreeSet<&str> = entries
            .iter()
            .filter_map(|e| e.table.strip_prefix("target."))
            .map(|t| t.strip_suffix(".env").unwrap_or(t))
            .collect();
        let board_triples: BTreeSet<&str> = boards.iter().map(|b| b.rust_target.as_str()).collect();
        assert_eq!(cross_triples, board_triples, "Cross.toml vs board-configs/");
        for b in &boards {
            let table = format!("target.{}", b.rust_target);
            let get = |t: &str, k: &str| {
                entries
                    .iter()
                    .find(|e| e.table == t && e.key == k)
                    .map(|e| e.value.clone())
            };
            assert_eq!(
                get(&table, "build-std"),
                Some(Value::Bool(b.build_std)),
                "{}: build-std",
                b.rust_target
            );
            let runner = if b.runs_natively() {
                "native"
            } else {
                "qemu-user"
            };
            assert_eq!(
                get(&table, "runner"),
                Some(Value::Str(runner.into())),
                "{}: runner",
                b.rust_target
            );
            let pass: Vec<String> = match get(&format!("{table}.env"), "passthrough") {
                Some(Value::Array(v)) => v
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                other => panic!("{}: env.passthrough is {other:?}", b.rust_target),
            };
            let mut want = Vec::new();
            if !b.rustflags.is_empty() {
                want.push(format!(
                    "{}={}",
                    b.cargo_env("RUSTFLAGS"),
                    b.rustflags.join(" ")
                ));
            }
            if !b.runs_natively() {
                want.push("SIMS_QEMU_USER=1".into());
                want.push(format!("QEMU_CPU={}", b.qemu_cpu));
            }
            assert_eq!(pass, want, "{}: env.passthrough", b.rust_target);
        }
    }
}
