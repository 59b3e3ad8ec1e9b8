//! The status socket: each daemon answers one request on a unix socket
//! in its state directory, then closes; the same binary's commands are
//! the client. A request is one line (`status`, or a command such as
//! simsd's `reset-traffic <peer>`) ended by the client closing its side;
//! the answer is one JSON document. Only local processes that may open
//! the socket (root: the state directory is root's) can ask.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// A client that does not read its report in this time is dropped: the
/// event loop must not wait on it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole request must come within this time (our clients send it
/// right after connecting): a slow client costs the loop no more.
const READ_DEADLINE: Duration = Duration::from_millis(200);
/// The longest request line (a command and a peer id).
const MAX_REQUEST: usize = 128;
/// Clients answered per wakeup: more wait for the next turn of the loop.
const MAX_CLIENTS: usize = 8;

/// Reads one request line: the text before the newline (or the end), or
/// None if it is longer than `MAX_REQUEST`, has more than one line, or
/// did not come in time.
fn read_request(c: &mut UnixStream) -> Option<String> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut buf = Vec::new();
    let mut chunk = [0u8; MAX_REQUEST + 2];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() || c.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        let n = c.read(&mut chunk).ok()?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST + 1 {
            return None;
        }
        if n == 0 || buf.contains(&b'\n') {
            break;
        }
    }
    let text = std::str::from_utf8(&buf).ok()?;
    let (line, rest) = text.split_once('\n').unwrap_or((text, ""));
    rest.is_empty().then(|| line.trim().to_string())
}

/// The daemon's end: a non-blocking listener the poll loop watches.
pub struct StatusSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl StatusSocket {
    /// Binds `path`, replacing a socket left by an earlier run.
    pub fn bind(path: &Path) -> Result<Self, String> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(StatusSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Answers each waiting client's request with `answer(request)` (the
    /// request line without its newline; `status` for an empty one). A
    /// malformed request (too long, several lines, not in time) is
    /// answered with an error and reaches no one.
    pub fn serve(&self, mut answer: impl FnMut(&str) -> String) {
        for _ in 0..MAX_CLIENTS {
            let Ok((mut c, _)) = self.listener.accept() else {
                return;
            };
            let _ = c.set_nonblocking(false);
            let _ = c.set_write_timeout(Some(WRITE_TIMEOUT));
            let reply = match read_request(&mut c) {
                Some(r) if r.is_empty() => answer("status"),
                Some(r) => answer(&r),
                None => "{\"error\":\"malformed request\"}".to_string(),
            };
            let _: io::Result<()> = c.write_all(reply.as_bytes());
        }
    }
}

impl Drop for StatusSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Asks a daemon's status socket for its JSON report.
pub fn query_status(sock: &Path, daemon: &str) -> Result<String, String> {
    query(sock, daemon, "status")
}

/// Sends `request` (one line) to a daemon's socket; its answer.
pub fn query(sock: &Path, daemon: &str, request: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(sock)
        .map_err(|e| format!("{daemon} is not running ({}: {e})", sock.display()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(format!("{request}\n").as_bytes())
        .and_then(|()| s.shutdown(std::net::Shutdown::Write))
        .map_err(|e| format!("asking {daemon}: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("reading {daemon} status: {e}"))?;
    Ok(out)
}

/// `<daemon> status [--json]`: prints the daemon's JSON report as it is,
/// or through `human` (line breaks for people); exit 1 if no daemon
/// answers on `sock`.
pub fn print_status(sock: &Path, daemon: &str, json: bool, human: fn(&str) -> String) -> ExitCode {
    match query_status(sock, daemon) {
        Ok(out) => {
            println!("{}", if json { out } else { human(&out) });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trip_and_cleanup() {
        let dir = std::env::temp_dir().join(format!("sims-daemon-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        let sock = StatusSocket::bind(&path).unwrap();
        // No client: serving returns at once.
        sock.serve(|_| unreachable!("no client is waiting"));
        let client = std::thread::spawn({
            let path = path.clone();
            move || query_status(&path, "t")
        });
        // Bounded wait for the client to connect.
        for _ in 0..200 {
            let mut served = false;
            sock.serve(|req| {
                served = true;
                format!("{{\"ok\":{req:?}}}")
            });
            if served {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(client.join().unwrap().unwrap(), "{\"ok\":\"status\"}");
        // A command reaches the daemon; a request of several lines or
        // past the longest is refused and reaches no one (a truncated
        // `reset-traffic <peer>` would otherwise reset every peer).
        let long = format!("reset-traffic{}ma-b", " ".repeat(130));
        for (req, ok) in [
            ("reset-traffic ma-b", true),
            ("reset-traffic\nma-b", false),
            (long.as_str(), false),
        ] {
            let client = std::thread::spawn({
                let (path, req) = (path.clone(), req.to_string());
                move || query(&path, "t", &req)
            });
            let mut got = Vec::new();
            while !client.is_finished() {
                sock.serve(|req| {
                    got.push(req.to_string());
                    format!("{{\"ok\":{req:?}}}")
                });
                std::thread::sleep(Duration::from_millis(10));
            }
            let reply = client.join().unwrap();
            if ok {
                assert_eq!(got, [req]);
                assert_eq!(reply.unwrap(), format!("{{\"ok\":{req:?}}}"));
            } else {
                assert!(got.is_empty(), "{req:?} reached the daemon as {got:?}");
                // The refusal, or a reset if the client's excess was unread.
                assert!(reply.map_or(true, |r| r.contains("malformed")), "{req:?}");
            }
        }
        drop(sock);
        assert!(!path.exists(), "the socket file goes with the daemon");
        let err = query_status(&path, "t").unwrap_err();
        assert!(err.starts_with("t is not running"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
