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
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for l in text.lines() {
        if !l.contains("\"reason\":\"compiler-artifact\"") || !l.contains("\"kind\":[\"test\"]") {
            continue;
        }
        let (Some(name), Some(exe)) =
            (json_str(l, "\"name\":\""), json_str(l, "\"executable\":\""))
        else {
            continue;
        };
        if targets.contains(&name.as_str()) {
            v.push((name, PathBuf::from(exe)));
        }
    }
    for t in targets {
        if !v.iter().any(|(n, _)| n == t) {
            return Err(format!("cargo named no executable for test target {t}"));
        }
    }
    Ok(v)
}

/// The first string value after `key` (which ends with the opening quote).
fn json_str(line: &str, key: &str) -> Option<String> {
    let i = line.find(key)? + key.len();
    let rest = &line[i..];
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_come_from_cargo_json() {
        let l = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["test"],"crate_types":["bin"],"name":"scenarios","src_path":"/w/tests/tests/scenarios.rs"},"profile":{},"features":[],"filenames":["/w/target/debug/deps/scenarios-1"],"executable":"/w/target/debug/deps/scenarios-1","fresh":true}"#;
        assert_eq!(json_str(l, "\"name\":\"").as_deref(), Some("scenarios"));
        assert_eq!(
            json_str(l, "\"executable\":\"").as_deref(),
            Some("/w/target/debug/deps/scenarios-1")
        );
        assert_eq!(
            json_str(r#"{"executable":null}"#, "\"executable\":\""),
            None
        );
    }
}
