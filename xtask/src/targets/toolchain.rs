//! A router target's toolchain: set-up, release builds and tests under
//! QEMU user mode, all driven by its board config (see boards.rs and
//! docs/TARGETS.md). It builds and runs; what a command does with the
//! results (the VM suite, the footprint) is the caller's.
//!
//! * installs what a board needs and is missing: its rustup toolchain,
//!   the target's std (`rustup target add`) or `rust-src` for build-std,
//!   `llvm-tools` (llvm-strip), `ziglang` from PyPI for zig-linked
//!   targets, `qemu-user-static` from apt for tests;
//! * generates two small scripts per board under `.cache/xtask/`: the zig
//!   linker wrapper and the QEMU test runner (which sets SIMS_QEMU_USER=1,
//!   so tests can skip what QEMU user mode cannot emulate, with a reason);
//! * one cargo target dir per triple (`target/cross/<triple>`), so the
//!   flags of one target never invalidate another's build;
//! * stripped release binaries in `target/openwrt/<openwrt_arch>/`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sims_vm::host::{apt_install, which};

use super::boards::{Board, Linker};
use crate::cargo::status;

/// The firmware crates whose unit and protocol tests run on every target.
pub const TEST_PACKAGES: &[&str] = &[
    "sims-proto",
    "sims-linux",
    "sims-daemon",
    "simsd",
    "sims-node",
];
/// The zig (PyPI `ziglang`) that links the zig boards: pinned, since zig
/// supplies the C library (musl crt, libc.a, malloc) linked into simsd.
pub const ZIG_VERSION: &str = "0.17.1";
/// The binaries a release build produces.
pub const BINARIES: &[&str] = &["simsd", "sims-node"];

pub struct Targets {
    ws: PathBuf,
    target_dir: PathBuf,
    /// Set-up steps already checked in this run.
    done: HashSet<String>,
}

pub struct Built {
    pub dir: PathBuf,
    /// (binary, stripped size in bytes)
    pub sizes: Vec<(String, u64)>,
}

fn output(c: &mut Command) -> Option<String> {
    let o = c.stderr(Stdio::null()).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Writes `text` to `path` as an executable script, unless it is already
/// there with that content.
fn write_script(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Single-quotes for sh.
/// Seconds a test binary may run under QEMU user mode before it is taken
/// for hung (the slowest takes ~75 s on 2 loaded cores).
const QEMU_USER_WATCHDOG_S: u32 = 300;

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Targets {
    pub fn new(ws: &Path, target_dir: &Path) -> Self {
        Targets {
            ws: ws.to_path_buf(),
            target_dir: target_dir.to_path_buf(),
            done: HashSet::new(),
        }
    }

    fn once(&mut self, key: String) -> bool {
        self.done.insert(key)
    }

    fn cache(&self) -> PathBuf {
        self.ws.join(".cache/xtask")
    }

    pub fn cargo_dir(&self, b: &Board) -> PathBuf {
        self.target_dir.join("cross").join(&b.rust_target)
    }

    pub fn out_dir(&self, b: &Board) -> PathBuf {
        self.target_dir.join("openwrt").join(&b.openwrt_arch)
    }

    // ---- set-up ------------------------------------------------------

    fn rustup(&self) -> Result<PathBuf, String> {
        which("rustup").ok_or_else(|| {
            "rustup not found: the router targets need rustup (https://rustup.rs)".into()
        })
    }

    /// The board's toolchain with its std (or rust-src) and llvm-tools.
    fn ensure_toolchain(&mut self, b: &Board) -> Result<(), String> {
        if !self.once(format!("toolchain {} {}", b.toolchain, b.rust_target)) {
            return Ok(());
        }
        let rustup = self.rustup()?;
        let tc = &b.toolchain;
        let installed =
            output(Command::new(&rustup).args(["toolchain", "list"])).unwrap_or_default();
        if !installed.lines().any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|n| n == tc || n.starts_with(&format!("{tc}-")))
        }) {
            status(
                &format!("rustup toolchain install {tc}"),
                Command::new(&rustup).args(["toolchain", "install", tc, "--profile", "minimal"]),
            )?;
        }
        let comps = output(Command::new(&rustup).args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            tc,
        ]))
        .unwrap_or_default();
        let mut want = vec!["llvm-tools"];
        if b.build_std {
            want.push("rust-src");
        }
        for c in want {
            if !comps
                .lines()
                .any(|l| l == c || l.starts_with(&format!("{c}-")))
            {
                status(
                    &format!("rustup component add {c} --toolchain {tc}"),
                    Command::new(&rustup).args(["component", "add", c, "--toolchain", tc]),
                )?;
            }
        }
        if !b.build_std {
            let targets = output(Command::new(&rustup).args([
                "target",
                "list",
                "--installed",
                "--toolchain",
                tc,
            ]))
            .unwrap_or_default();
            if !targets.lines().any(|l| l.trim() == b.rust_target) {
                status(
                    &format!("rustup target add {}", b.rust_target),
                    Command::new(&rustup).args([
                        "target",
                        "add",
                        "--toolchain",
                        tc,
                        &b.rust_target,
                    ]),
                )?;
            }
        }
        Ok(())
    }

    /// python3 with the `ziglang` module at [`ZIG_VERSION`] (installed from
    /// PyPI if missing or another version).
    fn ensure_zig(&mut self) -> Result<PathBuf, String> {
        // A fresh Debian machine may have python3 without pip, or neither.
        let has_pip =
            |py: &Path| output(Command::new(py).args(["-m", "pip", "--version"])).is_some();
        if !which("python3").is_some_and(|py| has_pip(&py)) && self.once("apt pip".into()) {
            println!("==> apt-get install python3-pip (zig comes from PyPI)");
            apt_install(&["python3", "python3-pip"])?;
        }
        let py = which("python3").ok_or("python3 not found: zig comes from PyPI (`ziglang`)")?;
        let version = |py: &Path| {
            output(Command::new(py).args(["-m", "ziglang", "version"]))
                .map(|v| v.trim().to_string())
        };
        if self.once("zig".into()) && version(&py).as_deref() != Some(ZIG_VERSION) {
            let spec = format!("ziglang=={ZIG_VERSION}");
            let pip = |extra: &[&str]| {
                Command::new(&py)
                    .args(["-m", "pip", "install", "--quiet"])
                    .args(extra)
                    .arg(&spec)
                    .status()
                    .is_ok_and(|s| s.success())
            };
            println!("==> python3 -m pip install {spec}");
            // A distribution's own python refuses (PEP 668) unless told.
            if !pip(&[]) && !pip(&["--break-system-packages"]) {
                return Err(format!(
                    "`python3 -m pip install {spec}` failed (is pip installed?)"
                ));
            }
            if version(&py).as_deref() != Some(ZIG_VERSION) {
                return Err(format!(
                    "{spec} installed but `python3 -m ziglang version` disagrees"
                ));
            }
        }
        Ok(py)
    }

    /// The QEMU user-mode emulator of a board (apt's qemu-user-static).
    fn ensure_qemu(&mut self, b: &Board) -> Result<PathBuf, String> {
        if let Some(p) = which(&b.qemu_user) {
            return Ok(p);
        }
        if self.once("apt qemu-user-static".into()) {
            println!("==> apt-get install qemu-user-static (for {})", b.qemu_user);
            if let Err(e) = apt_install(&["qemu-user-static"]) {
                println!("    {e}");
            }
        }
        which(&b.qemu_user)
            .ok_or_else(|| format!("{} not found (package qemu-user-static)", b.qemu_user))
    }

    /// The linker to give cargo, writing zig's wrapper script if needed.
    fn linker(&mut self, b: &Board) -> Result<Option<OsString>, String> {
        match &b.linker {
            Linker::Cc => Ok(None),
            Linker::RustLld => Ok(Some("rust-lld".into())),
            Linker::Zig { target, cpu } => {
                let py = self.ensure_zig()?;
                let path = self.cache().join(format!("zig-cc-{}", b.name));
                let script = format!(
                    "#!/bin/sh\n\
                     # Generated by `cargo xtask` from {file}: zig as the C toolchain and\n\
                     # linker for {triple} (musl crt objects, libc.a, libunwind).\n\
                     # Drops -L directories that do not exist (rustc names the empty\n\
                     # self-contained dir of a build-std target; zig would warn).\n\
                     n=$#\n\
                     while [ \"$n\" -gt 0 ]; do\n\
                     \ta=$1; shift; n=$((n - 1))\n\
                     \tif [ \"$a\" = -L ] && [ \"$n\" -gt 0 ]; then\n\
                     \t\td=$1; shift; n=$((n - 1))\n\
                     \t\tif [ -d \"$d\" ]; then set -- \"$@\" -L \"$d\"; fi\n\
                     \t\tcontinue\n\
                     \tfi\n\
                     \tcase $a in -L?*) [ -d \"${{a#-L}}\" ] || continue ;; esac\n\
                     \tset -- \"$@\" \"$a\"\n\
                     done\n\
                     exec {py} -m ziglang cc -target {target} -mcpu={cpu} \"$@\"\n",
                    file = self.rel(&b.file),
                    triple = b.rust_target,
                    py = sh_quote(&py.to_string_lossy()),
                    target = sh_quote(target),
                    cpu = sh_quote(cpu),
                );
                write_script(&path, &script)?;
                Ok(Some(path.into()))
            }
        }
    }

    /// The cargo runner for tests: QEMU user mode (a script that sets the
    /// tests' environment and bounds each test binary's run), or nothing if
    /// the target runs natively here.
    pub fn runner(&mut self, b: &Board) -> Result<Option<PathBuf>, String> {
        if b.runs_natively() {
            return Ok(None);
        }
        let qemu = self.ensure_qemu(b)?;
        let path = self.cache().join(format!("qemu-{}", b.name));
        let script = format!(
            "#!/bin/sh\n\
             # Generated by `cargo xtask` from {file}: runs a {triple} binary under\n\
             # QEMU user mode. SIMS_QEMU_USER=1 tells tests to skip, with a printed\n\
             # reason, what QEMU user mode cannot emulate (e.g. nfnetlink).\n\
             SIMS_QEMU_USER=1\n\
             QEMU_CPU={cpu}\n\
             export SIMS_QEMU_USER QEMU_CPU\n\
             # A watchdog: QEMU user mode can deadlock a multithreaded guest\n\
             # that forks (the tests spawn `ip` from their threads); CI once\n\
             # sat 50 min in one such hang. The slowest test binary takes\n\
             # ~75 s here, so {limit} s is a hang: it is killed (its whole\n\
             # process group) and run once more with one test thread. A\n\
             # binary that hangs or fails again fails the run.\n\
             timeout --kill-after=10 {limit} {qemu} \"$@\"\n\
             rc=$?\n\
             [ $rc -eq 124 ] || [ $rc -eq 137 ] || exit $rc\n\
             echo \"==> qemu-user watchdog: $1 was still running after {limit} s; \\\n\
             killed, running it once more with --test-threads=1\" >&2\n\
             case \" $* \" in *\" --test-threads\"*) ;; *) set -- \"$@\" --test-threads=1 ;; esac\n\
             exec timeout --kill-after=10 {limit} {qemu} \"$@\"\n",
            limit = QEMU_USER_WATCHDOG_S,
            file = self.rel(&b.file),
            triple = b.rust_target,
            cpu = sh_quote(&b.qemu_cpu),
            qemu = sh_quote(&qemu.to_string_lossy()),
        );
        write_script(&path, &script)?;
        Ok(Some(path))
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.ws).unwrap_or(p).display().to_string()
    }

    /// `cargo` of the board's toolchain with the board's environment.
    fn cargo(&mut self, b: &Board, release: bool) -> Result<Command, String> {
        self.ensure_toolchain(b)?;
        let mut c = crate::cargo::toolchain_cargo(&self.rustup()?, &b.toolchain, &self.ws);
        c.env("CARGO_TARGET_DIR", self.cargo_dir(b));
        let mut flags = b.rustflags.clone();
        if release {
            flags.extend(b.release_rustflags.iter().cloned());
        }
        c.env(b.cargo_env("RUSTFLAGS"), flags.join(" "));
        if let Some(l) = self.linker(b)? {
            c.env(b.cargo_env("LINKER"), l);
        }
        Ok(c)
    }

    fn llvm_strip(&mut self, b: &Board) -> Result<PathBuf, String> {
        self.ensure_toolchain(b)?;
        let sysroot = output(Command::new(self.rustup()?).args([
            "run",
            &b.toolchain,
            "rustc",
            "--print",
            "sysroot",
        ]))
        .ok_or("rustc --print sysroot failed")?;
        let lib = Path::new(sysroot.trim()).join("lib/rustlib");
        std::fs::read_dir(&lib)
            .map_err(|e| format!("{}: {e}", lib.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin/llvm-strip"))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "no llvm-strip under {} (component llvm-tools)",
                    lib.display()
                )
            })
    }

    /// Installs everything a board needs to build and test (CI set-up).
    pub fn install(&mut self, b: &Board) -> Result<(), String> {
        self.ensure_toolchain(b)?;
        self.linker(b)?;
        self.runner(b)?;
        Ok(())
    }

    // ---- build -------------------------------------------------------

    /// Release `simsd` and `sims-node` for a board, stripped, in
    /// `target/openwrt/<openwrt_arch>/`.
    pub fn build(&mut self, b: &Board) -> Result<Built, String> {
        let t0 = Instant::now();
        let mut c = self.cargo(b, true)?;
        c.args(["build", "--release", "--target", &b.rust_target]);
        for p in BINARIES {
            c.args(["-p", p]);
        }
        if b.build_std {
            c.arg("-Zbuild-std=std,panic_abort");
            b.build_std_features_arg(&mut c);
        }
        println!(
            "==> build {} ({}, {})",
            b.rust_target, b.name, b.openwrt_arch
        );
        status(&format!("build {}", b.rust_target), &mut c)?;
        let strip = self.llvm_strip(b)?;
        let from = self.cargo_dir(b).join(&b.rust_target).join("release");
        let dir = self.out_dir(b);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut sizes = Vec::new();
        for bin in BINARIES {
            let out = dir.join(bin);
            // The linker's --strip-all leaves non-allocated sections such as
            // MIPS .pdr; llvm-strip removes everything the loader does not need.
            status(
                &format!("llvm-strip {bin}"),
                Command::new(&strip)
                    .arg("--strip-all")
                    .arg("-o")
                    .arg(&out)
                    .arg(from.join(bin)),
            )?;
            let n = std::fs::metadata(&out)
                .map_err(|e| format!("{}: {e}", out.display()))?
                .len();
            sizes.push((bin.to_string(), n));
        }
        println!(
            "    {}: {} in {:.0} s",
            self.rel(&dir),
            sizes
                .iter()
                .map(|(b, n)| format!("{b} {n} B"))
                .collect::<Vec<_>>()
                .join(", "),
            t0.elapsed().as_secs_f64()
        );
        Ok(Built { dir, sizes })
    }

    /// A release example of a firmware crate for a board (same flags as
    /// the daemons); returns the unstripped binary.
    pub fn build_example(
        &mut self,
        b: &Board,
        package: &str,
        example: &str,
    ) -> Result<PathBuf, String> {
        let mut c = self.cargo(b, true)?;
        c.args([
            "build",
            "--release",
            "--target",
            &b.rust_target,
            "-p",
            package,
            "--example",
            example,
        ]);
        if b.build_std {
            c.arg("-Zbuild-std=std,panic_abort");
            b.build_std_features_arg(&mut c);
        }
        println!("==> build example {example} for {}", b.rust_target);
        status(&format!("build {example} {}", b.rust_target), &mut c)?;
        Ok(self
            .cargo_dir(b)
            .join(&b.rust_target)
            .join("release/examples")
            .join(example))
    }

    /// Runs a target binary (under QEMU user mode unless native).
    pub fn run_target(&mut self, b: &Board, bin: &Path, args: &[&str]) -> Result<String, String> {
        let runner = self.runner(b)?;
        let mut c = match &runner {
            Some(r) => {
                let mut c = Command::new(r);
                c.arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let out = c
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} {}: {}: {}",
                self.rel(bin),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    // ---- test --------------------------------------------------------

    /// `cargo test --target <triple>` with the board's test settings.
    pub fn test_cargo(&mut self, b: &Board) -> Result<Command, String> {
        let mut c = self.cargo(b, false)?;
        c.args(["test", "--target", &b.rust_target]);
        if b.build_std {
            // Tests unwind (the test harness catches panics).
            c.arg("-Zbuild-std=std,panic_unwind");
            b.build_std_features_arg(&mut c);
        }
        // Emulated, unoptimised Ed25519 makes the protocol tests take ~50 s
        // per target; opt-level 1 (debug assertions and overflow checks
        // stay on) brings that to seconds. Only this target's own cargo
        // dir sees these settings.
        for p in ["DEV", "TEST"] {
            c.env(format!("CARGO_PROFILE_{p}_OPT_LEVEL"), "1");
            c.env(format!("CARGO_PROFILE_{p}_DEBUG"), "line-tables-only");
        }
        Ok(c)
    }

    /// The firmware's unit and protocol tests for a board under QEMU user
    /// mode (natively if the target runs here).
    pub fn unit_tests(&mut self, b: &Board, passthrough: &[String]) -> Result<(), String> {
        let runner = self.runner(b)?;
        let mut c = self.test_cargo(b)?;
        for p in TEST_PACKAGES {
            c.args(["-p", p]);
        }
        if let Some(r) = &runner {
            c.env(b.cargo_env("RUNNER"), r);
        }
        // --show-output: the reasons of tests that skip under QEMU are
        // printed, not swallowed with the passing tests' output.
        c.args(["--", "--show-output"]).args(passthrough);
        println!(
            "==> unit tests {} ({})",
            b.rust_target,
            match &runner {
                Some(_) => format!("{} -cpu {}", b.qemu_user, b.qemu_cpu),
                None => "native".into(),
            }
        );
        status(&format!("unit tests {}", b.rust_target), &mut c)
    }

    /// `sims-traffic` as the board's test cargo builds it (with the
    /// testbed's test binaries, for its system guest).
    pub fn traffic_bin(&self, b: &Board) -> Result<PathBuf, String> {
        let traffic = self
            .cargo_dir(b)
            .join(&b.rust_target)
            .join("debug")
            .join("sims-traffic");
        if !traffic.is_file() {
            return Err(format!("{} was not built", self.rel(&traffic)));
        }
        Ok(traffic)
    }

    /// Runs each release binary with `--version` (as OpenWrt's packages
    /// feed CI does under qemu-user) and checks what it prints.
    pub fn smoke(&mut self, b: &Board, built: &Built) -> Result<(), String> {
        let runner = self.runner(b)?;
        let version = env!("CARGO_PKG_VERSION");
        for bin in BINARIES {
            let path = built.dir.join(bin);
            let mut c = match &runner {
                Some(r) => {
                    let mut c = Command::new(r);
                    c.arg(&path);
                    c
                }
                None => Command::new(&path),
            };
            let out = c
                .arg("--version")
                .output()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let want = format!("{bin} {version}");
            if !out.status.success() || text.trim() != want {
                return Err(format!(
                    "{} --version: {} printed {:?} (want {want:?}) {}",
                    self.rel(&path),
                    out.status,
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            println!("    {} --version: {want}", self.rel(&path));
        }
        Ok(())
    }

    /// Everything `cargo xtask test` checks for one board: unit tests under
    /// QEMU, the release build, and the release binaries starting there.
    pub fn test(&mut self, b: &Board, passthrough: &[String]) -> Result<(), String> {
        self.unit_tests(b, passthrough)?;
        let built = self.build(b)?;
        self.smoke(b, &built)
    }
}
