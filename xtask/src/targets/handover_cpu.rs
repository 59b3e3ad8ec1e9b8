//! `cargo xtask bench handover-cpu`: the protocol's CPU per handover
//! (`firmware/sims-proto/examples/handover.rs`, release build for the
//! target), natively on x86_64 and on mipsel in the Malta guest, in one
//! run, with the share of it that is public-key crypto. The last line is
//! `handover_cpu x86_64_us=<a> mipsel_us=<b> mipsel_ratio=<b/a>
//! public_key_ops=<k> x86_64_crypto_share=<s> mipsel_crypto_share=<t>`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sims_vm::{Share, Spec};

use super::{Board, Targets};
use crate::cargo::workspace;

/// Moves per run: natively, and in the emulated guest (~50x slower).
const MOVES_NATIVE: &str = "400";
const MOVES_GUEST: &str = "40";

/// The example's last line, as key=value pairs.
fn figures(out: &str) -> Result<Vec<(String, String)>, String> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with("handover_cpu target="))
        .ok_or_else(|| format!("no handover_cpu line in:\n{out}"))?;
    Ok(line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn value(f: &[(String, String)], key: &str) -> Result<f64, String> {
    f.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| format!("no {key} in {f:?}"))
}

/// Runs the example in the board's guest VM (system emulation).
fn in_guest(b: &Board, bin: &Path) -> Result<String, String> {
    let f = b
        .vm_guest()
        .ok_or_else(|| format!("{}: no guest VM (vm_* keys)", b.name))?;
    let mut spec = Spec::for_guest(&workspace(), PathBuf::new(), "run.sh", f);
    let share = Share::new(&spec.cache, "handover-cpu")?;
    spec.share = share.dir.clone();
    spec.echo = std::env::var_os("SIMS_VM_VERBOSE").is_some();
    spec.timeout = Duration::from_secs(900);
    share.add_bin(bin, "handover")?;
    share.write(
        "run.sh",
        &format!("exec /mnt/host/bin/handover {MOVES_GUEST}\n"),
    )?;
    let out = sims_vm::run(&spec).map_err(|e| e.to_string())?;
    Ok(out.console.join("\n"))
}

pub fn run(t: &mut Targets, native: &Board, mipsel: &Board) -> Result<(), String> {
    if !native.runs_natively() {
        return Err(format!("{} does not run natively here", native.rust_target));
    }
    let mut rows = Vec::new();
    for (b, guest) in [(native, false), (mipsel, true)] {
        let bin = t.build_example(b, "sims-proto", "handover")?;
        println!("==> protocol CPU per handover on {}", b.rust_target);
        let out = if guest {
            in_guest(b, &bin)?
        } else {
            t.run_target(b, &bin, &[MOVES_NATIVE])?
        };
        for l in out.lines().filter(|l| {
            l.starts_with("handover_cpu") || l.starts_with("public-key") || l.starts_with("alone:")
        }) {
            println!("    {}", l.trim());
        }
        rows.push(figures(&out)?);
    }
    let (x, m) = (&rows[0], &rows[1]);
    let (xu, mu) = (value(x, "cpu_us_median")?, value(m, "cpu_us_median")?);
    println!(
        "handover_cpu x86_64_us={xu:.1} mipsel_us={mu:.1} mipsel_ratio={:.1} public_key_ops={} \
         x86_64_crypto_share={:.2} mipsel_crypto_share={:.2}",
        mu / xu,
        value(x, "public_key_ops")?,
        value(x, "crypto_share")?,
        value(m, "crypto_share")?
    );
    Ok(())
}
