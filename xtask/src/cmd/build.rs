//! `cargo xtask build` (release binaries for router targets) and `cargo
//! xtask targets` (the boards of board-configs/).

use std::time::Instant;

use crate::{opts, targets};

/// `cargo xtask build --target <triple>... | --all`: stripped release
/// `simsd` and `sims-node` in `target/openwrt/<openwrt arch>/`, installing
/// the toolchain pieces a target needs.
pub fn build(args: &[String]) -> Result<(), String> {
    let wanted = opts::parse(args, &["--all"], &["--target"])?.targets();
    if wanted.is_empty() {
        return Err("usage: cargo xtask build --target <triple> | --all".into());
    }
    let boards = targets::chosen(&wanted)?;
    let mut t = targets::targets();
    let mut rows = Vec::new();
    for b in &boards {
        let t0 = Instant::now();
        let built = t.build(b)?;
        rows.push((b, built, t0.elapsed().as_secs_f64()));
    }
    println!("==> built (stripped bytes):");
    println!(
        "    {:32} {:26} {:>9} {:>9} {:>6}",
        "target", "openwrt arch", "simsd", "sims-node", "time"
    );
    for (b, built, s) in rows {
        let size = |n: &str| {
            built
                .sizes
                .iter()
                .find(|(b, _)| b == n)
                .map_or(0, |(_, s)| *s)
        };
        println!(
            "    {:32} {:26} {:>9} {:>9} {:>5.0}s",
            b.rust_target,
            b.openwrt_arch,
            size("simsd"),
            size("sims-node"),
            s
        );
    }
    Ok(())
}

/// `cargo xtask targets [--install]`: the boards of board-configs/, one
/// line each; `--install` first installs what every board needs (rustup
/// toolchains, std or rust-src, llvm-tools, zig, qemu-user-static).
pub fn list(args: &[String]) -> Result<(), String> {
    let install = opts::parse(args, &["--install"], &[])?.has("--install");
    let boards = targets::chosen(&["--all".to_string()])?;
    if install {
        let mut t = targets::targets();
        for b in &boards {
            t.install(b)?;
        }
    }
    println!(
        "{:17} {:16} {:26} {:32} {:12} {:7} {:20} qemu-system",
        "board", "openwrt target", "package arch", "rust target", "rust", "endian", "qemu-user"
    );
    for b in &boards {
        println!(
            "{:17} {:16} {:26} {:32} {:12} {:7} {:20} {} -M {} -cpu {}",
            b.name,
            b.openwrt_target,
            b.openwrt_arch,
            b.rust_target,
            if b.build_std {
                format!("{}+std", b.toolchain)
            } else {
                b.toolchain.clone()
            },
            if b.big_endian { "big" } else { "little" },
            b.qemu_user,
            b.qemu_system,
            b.qemu_machine,
            b.qemu_cpu
        );
    }
    Ok(())
}
