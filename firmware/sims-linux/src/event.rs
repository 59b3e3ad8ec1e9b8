//! What a poll-based event loop needs: a monotonic clock, the wall clock,
//! signals as a file descriptor, and `poll(2)`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::time::{clock_gettime, ClockId};

/// Milliseconds on CLOCK_MONOTONIC (survives daemon restarts, not reboots).
pub fn now_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000
    })
}

/// SIGTERM, SIGINT and SIGHUP delivered through a signalfd.
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    pub fn open() -> io::Result<Self> {
        let set: SigSet = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]
            .into_iter()
            .collect();
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next pending signal number, if any.
    pub fn next(&self) -> Option<i32> {
        match self.fd.read_signal() {
            Ok(Some(info)) => Some(info.ssi_signo as i32),
            _ => None,
        }
    }
}

/// Wait until one of `fds` is readable or `timeout_ms` passes; returns the
/// readable ones' positions.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<usize>> {
    let mut p: Vec<PollFd> = fds
        .iter()
        // SAFETY: the caller's descriptors are open for this call (a
        // closed one would come back POLLNVAL, never memory unsafety).
        .map(|&fd| PollFd::new(unsafe { BorrowedFd::borrow_raw(fd) }, PollFlags::POLLIN))
        .collect();
    let timeout = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::NONE);
    match poll(&mut p, timeout) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    }
    Ok(p.iter()
        .enumerate()
        .filter(|(_, x)| x.revents().is_some_and(|r| !r.is_empty()))
        .map(|(i, _)| i)
        .collect())
}
