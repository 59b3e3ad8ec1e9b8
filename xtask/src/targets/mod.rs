//! Router targets, all driven by `board-configs/*.toml` (docs/TARGETS.md):
//! the boards ([`boards`]), their toolchains, builds and tests under QEMU
//! user mode ([`toolchain`]), and their footprint ([`footprint`]). The
//! commands that use them are in `cmd/`.
//!
//! Targets are named by Rust triple, board name or OpenWrt package
//! architecture.

pub mod boards;
pub mod footprint;
pub mod handover_cpu;
pub mod toolchain;

pub use boards::Board;
pub use toolchain::Targets;

use crate::cargo::{target_dir, workspace};

/// The boards named (`--all` for every one), in board-configs order.
pub fn chosen(wanted: &[String]) -> Result<Vec<Board>, String> {
    let all = boards::load(&workspace().join("board-configs"))?;
    if wanted.iter().any(|w| w == "--all") {
        return Ok(all);
    }
    let mut out: Vec<Board> = Vec::new();
    for w in wanted {
        let b = boards::select(&all, w)?;
        if !out.iter().any(|o| o.name == b.name) {
            out.push(b.clone());
        }
    }
    Ok(out)
}

/// The toolchain layer for this workspace.
pub fn targets() -> Targets {
    Targets::new(&workspace(), &target_dir())
}
