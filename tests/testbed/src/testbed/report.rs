//! `$SIMS_TESTBED_REPORT`: what the testbed saw (backends, tunnel kinds),
//! for harnesses that check what the tests exercised (tests/vm/suite.sh).

use std::fs::OpenOptions;
use std::io::Write;

use super::Testbed;

impl Testbed {
    /// Appends a line to `$SIMS_TESTBED_REPORT` (once per distinct line
    /// and testbed), for harnesses that check what the tests exercised
    /// (the VM suite: which backends ran, which tunnel kinds existed).
    pub(super) fn report(&self, what: &str) {
        let Some(path) = std::env::var_os("SIMS_TESTBED_REPORT") else {
            return;
        };
        let line = format!("test={} {what}", self.opts.label);
        if !self.reported.borrow_mut().insert(line.clone()) {
            return;
        }
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}
