//! `sims-traffic stream` (one checked stream, either direction) and
//! `sims-traffic whoami`: the node's side.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use sims_testbed::traffic::{json_escape, mono_ns, CounterCheck, CounterGen};

use std::os::fd::AsRawFd;

use crate::sockets::{
    is_reset, is_timeout, read_line_until, tcp_connect, wait_readable, write_all_until,
};
use crate::{json_str_opt, Opts, Res};

struct StreamOut {
    bytes: u64,
    verified: bool,
    max_gap_ms: f64,
    reset: bool,
    error: Option<String>,
}

pub(crate) fn stream(args: &[String]) -> Res<i32> {
    let o = Opts::parse(
        args,
        &[
            "connect",
            "bind",
            "dir",
            "rate",
            "duration-ms",
            "until-file",
            "id",
            "timeout-ms",
            "progress-ms",
        ],
    )?;
    let to = o.addr("connect")?;
    let bind = o.ip("bind")?;
    let dir = o.req("dir")?.to_string();
    let rate = o.num("rate", 200_000)?;
    let dur = Duration::from_millis(o.num("duration-ms", 10_000)?);
    let until = o.get("until-file").map(|s| s.to_string());
    let id = o
        .get("id")
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("{}", std::process::id()));
    let grace = Duration::from_millis(o.num("timeout-ms", 30_000)?);
    let progress = Duration::from_millis(o.num("progress-ms", 1000)?);
    if dir != "up" && dir != "down" {
        return Err("--dir must be up or down".into());
    }
    let t_start = mono_ns();
    let out = match tcp_connect(to, bind, Duration::from_secs(10)) {
        Err(e) => StreamOut {
            bytes: 0,
            verified: false,
            max_gap_ms: 0.0,
            reset: is_reset(&e) || e.kind() == ErrorKind::ConnectionRefused,
            error: Some(format!("connect: {e}")),
        },
        Ok(s) => {
            let local = s
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into());
            println!("connected local={local} dir={dir} id={id}");
            let _ = io::stdout().flush();
            let hard = Instant::now() + dur + grace;
            let args = StreamArgs {
                rate,
                dur,
                until: until.as_deref(),
                hard,
                progress,
            };
            if dir == "down" {
                stream_down(s, &args)
            } else {
                stream_up(s, &id, &args)
            }
        }
    };
    println!(
        "{{\"dir\":\"{dir}\",\"bytes\":{},\"verified\":{},\"max_gap_ms\":{:.1},\"reset\":{},\"error\":{},\"start_ns\":{},\"end_ns\":{}}}",
        out.bytes,
        out.verified,
        out.max_gap_ms,
        out.reset,
        json_str_opt(&out.error),
        t_start,
        mono_ns()
    );
    let _ = io::stdout().flush();
    Ok(if out.verified { 0 } else { 1 })
}

struct StreamArgs<'a> {
    rate: u64,
    dur: Duration,
    until: Option<&'a str>,
    hard: Instant,
    progress: Duration,
}

fn until_reached(p: Option<&str>) -> bool {
    p.map(|p| Path::new(p).exists()).unwrap_or(false)
}

fn stream_down(mut s: TcpStream, a: &StreamArgs) -> StreamOut {
    let start = Instant::now();
    let mut check = CounterCheck::new();
    let mut error = None;
    let mut reset = false;
    let mut eof = false;
    let mut stopping = false;
    let mut buf = vec![0u8; 65536];
    let mut last_progress = Instant::now();
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    let hdr = format!("DOWN {} {}\n", a.rate, a.dur.as_millis());
    if let Err(e) = write_all_until(&mut s, hdr.as_bytes(), a.hard) {
        return StreamOut {
            bytes: 0,
            verified: false,
            max_gap_ms: 0.0,
            reset: is_reset(&e),
            error: Some(format!("write header: {e}")),
        };
    }
    loop {
        let now = Instant::now();
        if now >= a.hard {
            error = Some(format!(
                "timeout: no end of stream {:.1}s after start",
                start.elapsed().as_secs_f64()
            ));
            break;
        }
        if !stopping && until_reached(a.until) {
            stopping = true;
            println!("stop requested (until-file)");
            let _ = s.shutdown(Shutdown::Write);
        }
        match s.read(&mut buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => check.feed(&buf[..n], Instant::now()),
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                reset = is_reset(&e);
                error = Some(format!("read: {e}"));
                break;
            }
        }
        if last_progress.elapsed() >= a.progress {
            last_progress = Instant::now();
            println!(
                "progress dir=down t_ns={} bytes={} max_gap_ms={:.1} recent_gap_ms={:.1} ok={}",
                mono_ns(),
                check.bytes(),
                check.max_gap_ms(),
                check.take_recent_gap_ms(),
                check.error().is_none()
            );
            let _ = io::stdout().flush();
        }
    }
    if error.is_none() {
        error = check.error();
    }
    StreamOut {
        bytes: check.bytes(),
        verified: error.is_none() && eof && !reset,
        max_gap_ms: check.max_gap_ms(),
        reset,
        error,
    }
}

fn stream_up(mut s: TcpStream, id: &str, a: &StreamArgs) -> StreamOut {
    let start = Instant::now();
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let mut gen = CounterGen::new();
    let mut buf = vec![0u8; 65536];
    let mut sent: u64 = 0;
    let mut last_progress = Instant::now();
    let fail = |e: io::Error, what: &str, sent: u64| StreamOut {
        bytes: sent,
        verified: false,
        max_gap_ms: 0.0,
        reset: is_reset(&e),
        error: Some(format!("{what}: {e}")),
    };
    if let Err(e) = write_all_until(&mut s, format!("UP {id}\n").as_bytes(), a.hard) {
        return fail(e, "write header", 0);
    }
    let end = start + a.dur;
    while Instant::now() < end {
        if until_reached(a.until) {
            println!("stop requested (until-file)");
            break;
        }
        let target = (a.rate as f64 * start.elapsed().as_secs_f64()) as u64;
        if target >= sent + crate::write_quantum(a.rate) {
            let n = ((target - sent) as usize).min(buf.len());
            gen.fill(&mut buf[..n]);
            if let Err(e) = write_all_until(&mut s, &buf[..n], a.hard) {
                return fail(e, "write", sent);
            }
            sent += n as u64;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A reset from the server shows up as readable + error.
        if wait_readable(s.as_raw_fd(), 0) {
            let mut b = [0u8; 1];
            // SAFETY: valid fd and buffer.
            let n = unsafe {
                libc::recv(
                    s.as_raw_fd(),
                    b.as_mut_ptr() as *mut libc::c_void,
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_PEEK,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if !is_timeout(&e) {
                    return fail(e, "read", sent);
                }
            }
        }
        if last_progress.elapsed() >= a.progress {
            last_progress = Instant::now();
            println!("progress dir=up t_ns={} sent={sent}", mono_ns());
            let _ = io::stdout().flush();
        }
    }
    if let Err(e) = s.shutdown(Shutdown::Write) {
        return fail(e, "shutdown", sent);
    }
    let line = match read_line_until(&mut s, a.hard) {
        Ok(l) => l,
        Err(e) => return fail(e, "reading server verdict", sent),
    };
    let v: serde_json::Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(_) => {
            return StreamOut {
                bytes: sent,
                verified: false,
                max_gap_ms: 0.0,
                reset: false,
                error: Some(format!("bad server verdict {line:?}")),
            }
        }
    };
    let sbytes = v["bytes"].as_u64().unwrap_or(0);
    let sver = v["verified"].as_bool().unwrap_or(false);
    let gap = v["max_gap_ms"].as_f64().unwrap_or(0.0);
    let mut error = v["error"].as_str().map(|s| format!("server: {s}"));
    if error.is_none() && sbytes != sent {
        error = Some(format!(
            "server received {sbytes} bytes, client sent {sent}"
        ));
    }
    StreamOut {
        bytes: sbytes,
        verified: sver && error.is_none(),
        max_gap_ms: gap,
        reset: false,
        error,
    }
}

pub(crate) fn whoami(args: &[String]) -> Res<i32> {
    let o = Opts::parse(args, &["connect", "bind"])?;
    let to = o.addr("connect")?;
    let bind = o.ip("bind")?;
    let mut s =
        tcp_connect(to, bind, Duration::from_secs(10)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    write_all_until(&mut s, b"WHOAMI\n", deadline).map_err(|e| format!("write: {e}"))?;
    let seen = read_line_until(&mut s, deadline).map_err(|e| format!("read: {e}"))?;
    let local = s.local_addr().map_err(|e| e.to_string())?;
    println!(
        "{{\"local\":\"{}\",\"seen\":\"{}\"}}",
        local,
        json_escape(&seen)
    );
    Ok(0)
}
