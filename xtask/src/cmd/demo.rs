//! `cargo xtask demo` (a node moving A → B → A under a steady download)
//! and `cargo xtask testbed` (the testbed kept up for poking at by hand).

use sims_testbed::harness::{run_demo, run_shell, DemoOptions, ShellOptions};
use sims_testbed::Ma;
use sims_vm::host::is_root;

use crate::cargo::{build_bins, cargo, run, target_dir};
use crate::opts;

/// `cargo xtask demo [--dwell-s N]`.
pub fn demo(args: &[String]) -> Result<(), String> {
    // --debug: accepted and ignored, as it always was.
    let o = opts::parse(args, &["--debug"], &["--dwell-s"])?;
    let dwell_s = o.num("--dwell-s", 6)?;
    if !is_root() {
        return Err("the demo builds network namespaces: run it as root".into());
    }
    let bin_dir = build_bins(false)?;
    run_demo(&DemoOptions {
        traffic_bin: bin_dir.join("sims-traffic"),
        bin_dir,
        dwell_s,
        rate: 200_000,
    })
}

/// `cargo xtask testbed [--daemons] [--at a|b|c] [--for-s N]`.
pub fn testbed(args: &[String]) -> Result<(), String> {
    let o = opts::parse(args, &["--daemons"], &["--at", "--for-s"])?;
    let daemons = o.has("--daemons");
    let at = match o.value("--at") {
        None => None,
        Some(v) => Some(
            Ma::ALL
                .into_iter()
                .find(|m| m.letter().to_string() == v)
                .ok_or("--at needs a, b or c")?,
        ),
    };
    let for_s = o.num("--for-s", 1800)?;
    if !is_root() {
        return Err("the testbed builds network namespaces: run it as root".into());
    }
    let bin_dir = if daemons {
        build_bins(false)?
    } else {
        let mut c = cargo();
        c.args(["build", "-p", "sims-testbed", "--bins"]);
        run("build sims-traffic", c)?;
        target_dir().join("debug")
    };
    run_shell(&ShellOptions {
        traffic_bin: bin_dir.join("sims-traffic"),
        bin_dir,
        daemons,
        at,
        for_s,
    })
}
