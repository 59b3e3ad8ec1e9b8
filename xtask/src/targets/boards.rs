//! `board-configs/*.toml` (read with the toml crate into [`Board`]): one
//! file per OpenWrt target family, the only place that knows anything
//! about a router target (triple, toolchain, flags, linker, package
//! architecture, emulators). See docs/TARGETS.md.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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

/// A board file as written: every key, typed; unknown keys are errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    openwrt_target: String,
    openwrt_arch: String,
    endian: String,
    rust_target: String,
    toolchain: String,
    #[serde(default)]
    build_std: bool,
    build_std_features: Option<Vec<String>>,
    rustflags: Option<Vec<String>>,
    release_rustflags: Option<Vec<String>>,
    linker: String,
    zig_target: Option<String>,
    zig_cpu: Option<String>,
    qemu_user: String,
    qemu_cpu: String,
    qemu_system: String,
    qemu_machine: String,
    vm_debian_arch: Option<String>,
    vm_kernel_package: Option<String>,
    vm_qemu_package: Option<String>,
    vm_cpu: Option<String>,
    vm_smp: Option<i64>,
    vm_console: Option<String>,
    vm_mem_mb: Option<i64>,
    #[serde(rename = "vm_9p_version")]
    vm_p9_version: Option<String>,
}

impl Board {
    pub fn parse(file: &Path, text: &str) -> Result<Board, String> {
        let what = file.display();
        let r: Raw = toml::from_str(text).map_err(|e| format!("{what}: {e}"))?;
        let string = |k: &str, v: &str| -> Result<String, String> {
            if v.is_empty() {
                Err(format!("{what}: `{k}` must be a non-empty string"))
            } else {
                Ok(v.to_string())
            }
        };
        let required = |k: &str, v: &Option<String>| -> Result<String, String> {
            match v {
                Some(v) => string(k, v),
                None => Err(format!("{what}: `{k}` is missing")),
            }
        };
        let list = |k: &str, v: &Option<Vec<String>>| -> Result<Vec<String>, String> {
            let v = v.clone().unwrap_or_default();
            if v.iter()
                .any(|s| s.is_empty() || s.contains(char::is_whitespace))
            {
                return Err(format!(
                    "{what}: `{k}` items must be strings without spaces"
                ));
            }
            Ok(v)
        };
        let linker = match r.linker.as_str() {
            "zig" => Linker::Zig {
                target: required("zig_target", &r.zig_target)?,
                cpu: required("zig_cpu", &r.zig_cpu)?,
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
            for (k, v) in [("zig_target", &r.zig_target), ("zig_cpu", &r.zig_cpu)] {
                if v.is_some() {
                    return Err(format!("{what}: `{k}` without `linker = \"zig\"`"));
                }
            }
        }
        let big_endian = match r.endian.as_str() {
            "big" => true,
            "little" => false,
            other => return Err(format!("{what}: endian `{other}`: big or little")),
        };
        let toolchain = string("toolchain", &r.toolchain)?;
        if r.build_std && !toolchain.starts_with("nightly") {
            return Err(format!("{what}: build_std needs a nightly toolchain"));
        }
        let build_std_features = list("build_std_features", &r.build_std_features)?;
        if !r.build_std && !build_std_features.is_empty() {
            return Err(format!("{what}: build_std_features without build_std"));
        }
        let guest = match &r.vm_kernel_package {
            None => {
                let any_vm = [
                    ("vm_debian_arch", r.vm_debian_arch.is_some()),
                    ("vm_qemu_package", r.vm_qemu_package.is_some()),
                    ("vm_cpu", r.vm_cpu.is_some()),
                    ("vm_smp", r.vm_smp.is_some()),
                    ("vm_console", r.vm_console.is_some()),
                    ("vm_mem_mb", r.vm_mem_mb.is_some()),
                    ("vm_9p_version", r.vm_p9_version.is_some()),
                ];
                if let Some((k, _)) = any_vm.iter().find(|(_, set)| *set) {
                    return Err(format!("{what}: `{k}` without `vm_kernel_package`"));
                }
                None
            }
            Some(kernel_package) => Some(Guest {
                debian_arch: required("vm_debian_arch", &r.vm_debian_arch)?,
                kernel_package: string("vm_kernel_package", kernel_package)?,
                qemu_package: required("vm_qemu_package", &r.vm_qemu_package)?,
                cpu: r
                    .vm_cpu
                    .as_deref()
                    .map(|c| string("vm_cpu", c))
                    .transpose()?,
                console: required("vm_console", &r.vm_console)?,
                mem_mb: match r.vm_mem_mb {
                    Some(n) if (64..=4096).contains(&n) => n as u32,
                    _ => return Err(format!("{what}: `vm_mem_mb` must be 64..4096")),
                },
                smp: match r.vm_smp {
                    Some(n) if (1..=8).contains(&n) => n as u32,
                    _ => return Err(format!("{what}: `vm_smp` must be 1..8")),
                },
                p9_version: required("vm_9p_version", &r.vm_p9_version)?,
            }),
        };
        Ok(Board {
            file: file.to_path_buf(),
            name: string("name", &r.name)?,
            openwrt_target: string("openwrt_target", &r.openwrt_target)?,
            openwrt_arch: string("openwrt_arch", &r.openwrt_arch)?,
            big_endian,
            rust_target: string("rust_target", &r.rust_target)?,
            toolchain,
            build_std: r.build_std,
            build_std_features,
            rustflags: list("rustflags", &r.rustflags)?,
            release_rustflags: list("release_rustflags", &r.release_rustflags)?,
            linker,
            qemu_user: string("qemu_user", &r.qemu_user)?,
            qemu_cpu: string("qemu_cpu", &r.qemu_cpu)?,
            qemu_system: string("qemu_system", &r.qemu_system)?,
            qemu_machine: string("qemu_machine", &r.qemu_machine)?,
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
        let cross: toml::Table = toml::from_str(&text).unwrap();
        let targets = cross["target"].as_table().expect("[target.*] tables");
        let boards = boards();
        let cross_triples: BTreeSet<&str> = targets.keys().map(String::as_str).collect();
        let board_triples: BTreeSet<&str> = boards.iter().map(|b| b.rust_target.as_str()).collect();
        assert_eq!(cross_triples, board_triples, "Cross.toml vs board-configs/");
        for b in &boards {
            let t = &targets[&b.rust_target];
            assert_eq!(
                t.get("build-std").and_then(toml::Value::as_bool),
                Some(b.build_std),
                "{}: build-std",
                b.rust_target
            );
            let runner = if b.runs_natively() {
                "native"
            } else {
                "qemu-user"
            };
            assert_eq!(
                t.get("runner").and_then(toml::Value::as_str),
                Some(runner),
                "{}: runner",
                b.rust_target
            );
            let pass: Vec<String> = match t.get("env").and_then(|e| e.get("passthrough")) {
                Some(toml::Value::Array(v)) => v
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
