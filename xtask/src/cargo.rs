//! The workspace and its cargo: paths, running a step, building the host
//! binaries and the testbed's test binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, relative to the
/// workspace, or `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace().join(p)
            }
        })
        .unwrap_or_else(|| workspace().join("target"))
}

/// The cargo that runs xtask, in the workspace.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace());
    c
}

/// `cargo` of rustup's `toolchain`, in `dir`, without the environment of
/// the cargo running xtask (its toolchain, compiler and flags would leak
/// into the other toolchain's build).
pub fn toolchain_cargo(rustup: &Path, toolchain: &str, dir: &Path) -> Command {
    let mut c = Command::new(rustup);
    c.args(["run", toolchain, "cargo"]).current_dir(dir);
    for v in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
    ] {
        c.env_remove(v);
    }
    c
}

/// Runs `c`; Err names `step` if it cannot start or fails.
pub fn status(step: &str, c: &mut Command) -> Result<(), String> {
    let st = c
        .status()
        .map_err(|e| format!("{step}: cannot run {c:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({st})"))
    }
}

/// Prints `==> step` and runs `c`.
pub fn run(step: &str, mut c: Command) -> Result<(), String> {
    println!("==> {step}");
    status(step, &mut c)
}

/// Builds the daemons and the traffic tool; returns the binary directory.
/// Two cargo runs, so the test crate's dependencies (serde_json pulls serde
/// with std) do not unify features into the firmware's build.
pub fn build_bins(release: bool) -> Result<PathBuf, String> {
    for (what, pkgs) in [
        ("daemons", &["-p", "simsd", "-p", "sims-node"][..]),
        ("sims-traffic", &["-p", "sims-testbed", "--bins"][..]),
    ] {
        let mut c = cargo();
        c.arg("build").args(pkgs);
        if release {
            c.arg("--release");
        }
        run(
            &format!("build {what}{}", if release { " (release)" } else { "" }),
            c,
        )?;
    }
    Ok(target_dir().join(if release { "release" } else { "debug" }))
}

/// Builds the integration-test binaries of sims-testbed and returns
/// (test target name, executable) from cargo's JSON messages.
/// `cargo` ends in `test` plus any target options.
pub fn build_test_bins(
    mut cargo: Command,
    targets: &[&str],
    release: bool,
) -> Result<Vec<(String, PathBuf)>, String> {
    cargo.args(["-p", "sims-testbed", "--no-run", "--message-format=json"]);
    if release {
        cargo.arg("--release");
    }
    for t in targets {
        cargo.args(["--test", t]);
    }
    println!("==> build test binaries {}", targets.join(", "));
    let out = cargo
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the test binaries failed ({})",
            out.status
        ));
    }
    let v: Vec<(String, PathBuf)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(test_executable)
        .filter(|(name, _)| targets.contains(&name.as_str()))
        .collect();
    for t in targets {
        if !v.iter().any(|(n, _)| n == t) {
            return Err(format!("cargo named no executable for test target {t}"));
        }
    }
    Ok(v)
}

/// A `compiler-artifact` message of a test target with an executable:
/// (target name, executable).
fn test_executable(line: &str) -> Option<(String, PathBuf)> {
    let m: serde_json::Value = serde_json::from_str(line).ok()?;
    if m["reason"] != "compiler-artifact" {
        return None;
    }
    let target = &m["target"];
    if !target["kind"]
        .as_array()?
        .iter()
        .any(|k| k.as_str() == Some("test"))
    {
        return None;
    }
    Some((
        target["name"].as_str()?.to_string(),
        PathBuf::from(m["executable"].as_str()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_come_from_cargo_json() {
        let l = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["test"],"crate_types":["bin"],"name":"scenarios","src_path":"/w/tests/tests/scenarios.rs"},"profile":{},"features":[],"filenames":["/w/target/debug/deps/scenarios-1"],"executable":"/w/target/debug/deps/scenarios-1","fresh":true}"#;
        assert_eq!(
            test_executable(l),
            Some((
                "scenarios".to_string(),
                PathBuf::from("/w/target/debug/deps/scenarios-1")
            ))
        );
        let lib = l.replace(r#""kind":["test"]"#, r#""kind":["lib"]"#);
        assert_eq!(test_executable(&lib), None);
        let no_exe = l.replace(
            r#""executable":"/w/target/debug/deps/scenarios-1""#,
            r#""executable":null"#,
        );
        assert_eq!(test_executable(&no_exe), None);
        assert_eq!(
            test_executable(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(test_executable("not json"), None);
    }
}
