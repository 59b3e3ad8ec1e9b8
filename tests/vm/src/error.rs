//! The harness's errors: one kind per way a run can fail.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmError {
    /// The host lacks something and it could not be installed.
    Setup(String),
    /// The kernel package could not be fetched or unpacked.
    Fetch(String),
    /// The guest did not reach its init script.
    Boot(String),
    /// Modules that did not load in the guest.
    Modules(Vec<String>),
    /// The whole run took longer than allowed.
    Timeout(String),
    /// The guest booted and ran, and its run failed (or gave no verdict).
    Guest(String),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::Setup(s) => write!(f, "VM setup failed: {s}"),
            VmError::Fetch(s) => write!(f, "VM kernel could not be fetched: {s}"),
            VmError::Boot(s) => write!(f, "VM did not boot: {s}"),
            VmError::Modules(m) => write!(
                f,
                "VM kernel modules did not load in the guest: {}",
                m.join(", ")
            ),
            VmError::Timeout(s) => write!(f, "VM timed out: {s}"),
            VmError::Guest(s) => write!(f, "VM run failed: {s}"),
        }
    }
}

pub type Result<T> = std::result::Result<T, VmError>;

/// An I/O result whose error names the path.
pub(crate) fn io<T>(
    r: std::io::Result<T>,
    what: &std::path::Path,
) -> std::result::Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what.display()))
}
