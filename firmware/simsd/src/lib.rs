//! What simsd exports besides its binary: the names and numbers of the
//! kernel state it owns, so that the tests and tools that inspect that
//! state import them instead of copying them; and the parts of the daemon
//! that need nothing of the system, so that the fuzz targets (fuzz/) reach
//! them: the config parser and the userspace data path's offload code.

pub mod config;
/// Kept beside the rest of the data path it belongs to.
#[path = "dataplane/offload.rs"]
pub mod offload;
pub mod owned;
pub mod uci;
