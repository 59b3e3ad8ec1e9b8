//! The PNG plots of docs/SCALE.md.

use std::path::Path;

use crate::stats::Stats;

pub fn all(_st: &Stats, _dir: &Path) -> Result<Vec<String>, String> {
    Ok(Vec::new())
}
