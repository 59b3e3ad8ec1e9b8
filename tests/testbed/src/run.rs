//! What the demo and the benchmarks share: Ctrl-C (or SIGTERM) ends them
//! cleanly (the testbed is torn down by Drop), their testbed options, and
//! how they print sizes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::sys::Result;
use crate::testbed::{Ma, Options};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes Ctrl-C end the demo/bench cleanly (testbed torn down by Drop).
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub(crate) fn check_interrupt() -> Result<()> {
    if interrupted() {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

pub(crate) fn sleep_checked(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupt()?;
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    Ok(())
}

pub(crate) fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// Testbed options of the demo and the benchmarks: agents A and B, the
/// given binaries, daemons logging at info.
pub(crate) fn run_options(bin_dir: &Path, traffic_bin: &Path, label: &str) -> Options {
    Options {
        bin_dir: Some(bin_dir.to_path_buf()),
        traffic_bin: Some(traffic_bin.to_path_buf()),
        label: label.into(),
        agents: vec![Ma::A, Ma::B],
        rust_log: "info".into(),
        ..Options::default()
    }
}
