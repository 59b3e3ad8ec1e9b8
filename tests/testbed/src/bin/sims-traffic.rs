//! `sims-traffic`: real traffic for the SIMS testbed (std + libc only).
//!
//! * `serve --listen 0.0.0.0:5001` — TCP server (checked streams, whoami) plus
//!   a UDP echo on the same port.
//! * `stream --connect ADDR [--bind IP] --dir up|down --rate B/s --duration-ms N
//!   [--until-file P] [--id S] [--timeout-ms N] [--progress-ms N]` — one
//!   checked stream; ends with one JSON line, exit status 1 if not verified.
//! * `whoami --connect ADDR [--bind IP]` — prints `{"local":..,"seen":..}`.
//! * `probe --to ADDR --bind IP --iface IF [--interval-us N] [--timeout-ms N]
//!   [--addr-timeout-ms N] [--link-up-file P] [--t0 NS]` — handover probe.
//! * `now` — prints CLOCK_MONOTONIC in nanoseconds.
//!
//! The stream is consecutive 8-byte big-endian counters, so the receiver can
//! verify every byte. Every loop is bounded in time.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sims_testbed::traffic::{json_escape, mono_ns, CounterCheck, CounterGen};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("stream") => stream(&args[1..]),
        Some("whoami") => whoami(&args[1..]),
        Some("probe") => probe(&args[1..]),
        Some("now") => {
            println!("{}", mono_ns());
            Ok(0)
        }
        _ => {
            eprintln!(
                "usage: sims-traffic serve|stream|whoami|probe|now [options]\n\
                 see the source header (tests/testbed/src/bin/sims-traffic.rs) for options"
            );
            Ok(2)
        }
    };
    match res {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("sims-traffic: {e}");
            std::process::exit(2)
        }
    }
}

type Res<T> = Result<T, String>;

struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String], known: &[&str]) -> Res<Opts> {
        let mut m = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let key = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {a:?}"))?;
            if !known.contains(&key) {
                return Err(format!("unknown option --{key}"));
            }
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            m.insert(key.to_string(), v.clone());
        }
        Ok(Opts(m))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn req(&self, k: &str) -> Res<&str> {
        self.get(k).ok_or_else(|| format!("--{k} is required"))
    }
    fn num(&self, k: &str, default: u64) -> Res<u64> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{k}: bad number {v:?}")),
        }
    }
    fn addr(&self, k: &str) -> Res<SocketAddrV4> {
        let v = self.req(k)?;
        v.parse().map_err(|_| format!("--{k}: bad address {v:?}"))
    }
    fn ip(&self, k: &str) -> Res<Option<Ipv4Addr>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{k}: bad IPv4 address {v:?}")),
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

// ---------------------------------------------------------------- sockets

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from(*a.ip()).to_be(),
    };
    sa
}

fn set_int_opt(fd: i32, level: i32, opt: i32, v: i32) -> io::Result<()> {
    // SAFETY: valid fd, pointer to a live i32 of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// TCP connect with an optional source address and a bounded connect time.
fn tcp_connect(
    to: SocketAddrV4,
    bind: Option<Ipv4Addr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own fd; TcpStream closes it on drop (also on error paths).
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    if let Some(ip) = bind {
        set_int_opt(fd, libc::SOL_IP, libc::IP_FREEBIND, 1)?;
        let sa = sockaddr_in(SocketAddrV4::new(ip, 0));
        // SAFETY: sa is a valid sockaddr_in.
        let r = unsafe {
            libc::bind(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let sa = sockaddr_in(to);
    // SAFETY: sa is a valid sockaddr_in.
    let r = unsafe {
        libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if n <= 0 {
            return Err(io::Error::new(ErrorKind::TimedOut, "connect timed out"));
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Waits until `fd` is readable or `ms` elapsed. Returns true if readable.
fn wait_readable(fd: i32, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0
}

/// Writes all of `buf`, giving up at `deadline`. Socket must have a send timeout.
fn write_all_until(s: &mut TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        if Instant::now() >= deadline {
            return Err(io::Error::new(ErrorKind::TimedOut, "write deadline"));
        }
        match s.write(buf) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "write returned 0")),
            Ok(n) => buf = &buf[n..],
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one line (up to 512 bytes) byte by byte, bounded by `deadline`.
fn read_line_until(s: &mut TcpStream, deadline: Instant) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if Instant::now() >= deadline {
            return Err(io::Error::new(ErrorKind::TimedOut, "line read deadline"));
        }
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                if b[0] == b'\n' {
                    break;
                }
                line.push(b[0]);
                if line.len() > 512 {
                    return Err(io::Error::new(ErrorKind::InvalidData, "line too long"));
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&line).trim().to_string())
}

// ---------------------------------------------------------------- serve

const MAX_CONN_LIFETIME: Duration = Duration::from_secs(1800);

fn serve(args: &[String]) -> Res<i32> {
    let o = Opts::parse(args, &["listen", "max-conns", "lifetime-s"])?;
    let listen: SocketAddr = o
        .req("listen")?
        .parse()
        .map_err(|_| "--listen: bad address".to_string())?;
    let max_conns = o.num("max-conns", 256)? as usize;
    let lifetime = Duration::from_secs(o.num("lifetime-s", 4 * 3600)?);
    let started = Instant::now();

    let udp = UdpSocket::bind(listen).map_err(|e| format!("udp bind {listen}: {e}"))?;
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while started.elapsed() < lifetime {
            match udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = udp.send_to(&buf[..n], from);
                }
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("udp echo: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    });

    let listener = TcpListener::bind(listen).map_err(|e| format!("tcp bind {listen}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    println!("listening {listen}");
    let _ = io::stdout().flush();
    let active = Arc::new(AtomicUsize::new(0));
    while started.elapsed() < lifetime {
        match listener.accept() {
            Ok((s, peer)) => {
                if active.load(Ordering::SeqCst) >= max_conns {
                    eprintln!("refusing {peer}: {max_conns} connections active");
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let active = active.clone();
                std::thread::spawn(move || {
                    if let Err(e) = handle_conn(s, peer) {
                        println!("conn {peer}: error {e}");
                        let _ = io::stdout().flush();
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                wait_readable(listener.as_raw_fd(), 200);
            }
            Err(e) => {
                eprintln!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(0)
}

fn handle_conn(mut s: TcpStream, peer: SocketAddr) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    s.set_write_timeout(Some(Duration::from_millis(200)))?;
    let hard = Instant::now() + MAX_CONN_LIFETIME;
    let line = read_line_until(&mut s, Instant::now() + Duration::from_secs(10))?;
    let mut words = line.split_whitespace();
    match words.next() {
        Some("WHOAMI") => {
            write_all_until(&mut s, format!("{peer}\n").as_bytes(), hard)?;
            let _ = s.shutdown(Shutdown::Write);
            Ok(())
        }
        Some("UP") => {
            let id = words.next().unwrap_or("-").to_string();
            serve_up(s, peer, &id, hard)
        }
        Some("DOWN") => {
            let rate: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let dur: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            serve_down(s, peer, rate, Duration::from_millis(dur), hard)
        }
        _ => Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("bad request line {line:?}"),
        )),
    }
}

fn serve_up(mut s: TcpStream, peer: SocketAddr, id: &str, hard: Instant) -> io::Result<()> {
    println!("conn {peer}: UP id={id}");
    let mut check = CounterCheck::new();
    let mut buf = vec![0u8; 65536];
    let mut last_progress = Instant::now();
    let mut error: Option<String> = None;
    loop {
        if Instant::now() >= hard {
            error = Some("server connection lifetime exceeded".into());
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => check.feed(&buf[..n], Instant::now()),
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                println!("conn {peer}: UP id={id} read error {e}");
                return Err(e);
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            println!(
                "progress id={id} dir=up t_ns={} bytes={} max_gap_ms={:.1} recent_gap_ms={:.1}",
                mono_ns(),
                check.bytes(),
                check.max_gap_ms(),
                check.take_recent_gap_ms()
            );
            let _ = io::stdout().flush();
        }
    }
    if error.is_none() {
        error = check.error();
    }
    let verified = error.is_none();
    let res = format!(
        "{{\"bytes\":{},\"verified\":{},\"max_gap_ms\":{:.1},\"error\":{}}}\n",
        check.bytes(),
        verified,
        check.max_gap_ms(),
        json_str_opt(&error)
    );
    println!("conn {peer}: UP id={id} done {}", res.trim());
    let _ = io::stdout().flush();
    write_all_until(
        &mut s,
        res.as_bytes(),
        Instant::now() + Duration::from_secs(10),
    )?;
    let _ = s.shutdown(Shutdown::Write);
    Ok(())
}

fn serve_down(
    mut s: TcpStream,
    peer: SocketAddr,
    rate: u64,
    dur: Duration,
    hard: Instant,
) -> io::Result<()> {
    println!(
        "conn {peer}: DOWN rate={rate} duration_ms={}",
        dur.as_millis()
    );
    let _ = io::stdout().flush();
    let start = Instant::now();
    let end = (start + dur).min(hard);
    let mut gen = CounterGen::new();
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; 65536];
    let mut rbuf = [0u8; 512];
    let mut client_done = false;
    while Instant::now() < end {
        // Client half-close (EOF) means "stop now".
        // SAFETY: valid fd and buffer.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                rbuf.as_mut_ptr() as *mut libc::c_void,
                rbuf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            client_done = true;
            break;
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if !is_timeout(&e) && e.kind() != ErrorKind::Interrupted {
                println!("conn {peer}: DOWN error {e} after {sent} bytes");
                return Err(e);
            }
        }
        let target = (rate as f64 * start.elapsed().as_secs_f64()) as u64;
        if target > sent {
            let n = ((target - sent) as usize).min(buf.len());
            gen.fill(&mut buf[..n]);
            if let Err(e) = write_all_until(&mut s, &buf[..n], hard) {
                println!("conn {peer}: DOWN write error {e} after {sent} bytes");
                return Err(e);
            }
            sent += n as u64;
        } else {
            wait_readable(s.as_raw_fd(), 5);
        }
    }
    println!("conn {peer}: DOWN done sent={sent} client_stopped={client_done}");
    let _ = io::stdout().flush();
    let _ = s.shutdown(Shutdown::Write);
    // Wait (bounded) for the client's EOF so the close is clean.
    let drain_end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < drain_end && !client_done {
        match s.read(&mut rbuf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn json_str_opt(v: &Option<String>) -> String {
    match v {
        None => "null".into(),
        Some(s) => format!("\"{}\"", json_escape(s)),
    }
}

// ---------------------------------------------------------------- stream

struct StreamOut {
    bytes: u64,
    verified: bool,
    max_gap_ms: f64,
    reset: bool,
    error: Option<String>,
}

fn stream(args: &[String]) -> Res<i32> {
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
        if target > sent {
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

// ---------------------------------------------------------------- whoami

fn whoami(args: &[String]) -> Res<i32> {
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

// ---------------------------------------------------------------- probe

/// IPv4 addresses (with prefix length) on `iface`.
fn iface_addrs(iface: &str) -> Vec<(Ipv4Addr, u32)> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: p walks the list returned by getifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() != iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null; family checked before the cast.
        if unsafe { (*ifa.ifa_addr).sa_family } as i32 != libc::AF_INET {
            continue;
        }
        // SAFETY: family is AF_INET, so it is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        let plen = if ifa.ifa_netmask.is_null() {
            32
        } else {
            // SAFETY: netmask of an AF_INET address is a sockaddr_in.
            let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
            u32::from_be(m.sin_addr.s_addr).count_ones()
        };
        out.push((addr, plen));
    }
    // SAFETY: ifap came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

fn probe(args: &[String]) -> Res<i32> {
    let o = Opts::parse(
        args,
        &[
            "to",
            "bind",
            "iface",
            "interval-us",
            "timeout-ms",
            "addr-timeout-ms",
            "link-up-file",
            "t0",
        ],
    )?;
    let to = o.addr("to")?;
    let bind = o.ip("bind")?.ok_or("--bind is required")?;
    let iface = o.req("iface")?.to_string();
    let interval = Duration::from_micros(o.num("interval-us", 200)?.max(10));
    let timeout = Duration::from_millis(o.num("timeout-ms", 5000)?);
    let addr_timeout = Duration::from_millis(o.num("addr-timeout-ms", 20_000)?);
    let t0 = o.get("t0").and_then(|v| v.parse::<u64>().ok());

    // Bound to the old address (IP_FREEBIND so this works even if the
    // address is momentarily absent).
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(format!("socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: we own fd.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    set_int_opt(fd, libc::SOL_IP, libc::IP_FREEBIND, 1).map_err(|e| e.to_string())?;
    let sa = sockaddr_in(SocketAddrV4::new(bind, 0));
    // SAFETY: valid sockaddr_in.
    let r = unsafe {
        libc::bind(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(format!("bind {bind}: {}", io::Error::last_os_error()));
    }
    println!("ready bind={bind} iface={iface}");
    let _ = io::stdout().flush();

    // 1. Wait for the new native address.
    let wait_start = Instant::now();
    let new_addr = loop {
        if let Some((a, _)) = iface_addrs(&iface)
            .into_iter()
            .find(|(a, plen)| *a != bind && *plen < 32)
        {
            break a;
        }
        if wait_start.elapsed() >= addr_timeout {
            println!(
                "{{\"new_addr\":null,\"echoed\":false,\"error\":\"no new address on {iface} within {} ms\"}}",
                addr_timeout.as_millis()
            );
            return Ok(1);
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    let t_new = mono_ns();

    // 2. Probe from the old address until echoed.
    let nonce = (t_new ^ (std::process::id() as u64) << 32).to_be_bytes();
    let mut seq: u64 = 0;
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    let mut rbuf = [0u8; 64];
    let start = Instant::now();
    let mut next = start;
    let mut echo_ns = None;
    while start.elapsed() < timeout {
        let now = Instant::now();
        if now >= next {
            let mut msg = [0u8; 24];
            msg[..8].copy_from_slice(b"SIMSPRB1");
            msg[8..16].copy_from_slice(&nonce);
            msg[16..].copy_from_slice(&seq.to_be_bytes());
            seq += 1;
            match sock.send_to(&msg, to) {
                Ok(_) => sent += 1,
                Err(_) => send_errors += 1,
            }
            next = now + interval;
        }
        match sock.recv_from(&mut rbuf) {
            Ok((n, _)) if n == 24 && rbuf[..8] == *b"SIMSPRB1" && rbuf[8..16] == nonce => {
                echo_ns = Some(mono_ns());
                break;
            }
            _ => {}
        }
        let left = next.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            let ms = (left.as_micros() / 1000) as i32;
            if ms > 0 {
                wait_readable(fd, ms);
            } else {
                std::thread::sleep(left.min(Duration::from_micros(50)));
            }
        }
    }
    let link_up = t0.or_else(|| {
        o.get("link-up-file")
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
    });
    let ms = |a: u64, b: u64| (b as f64 - a as f64) / 1e6;
    let fmt_opt = |v: Option<f64>| {
        v.map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "null".into())
    };
    println!(
        "{{\"new_addr\":\"{new_addr}\",\"new_addr_ns\":{t_new},\"echo_ns\":{},\"echoed\":{},\"new_addr_to_echo_ms\":{},\"link_up_to_echo_ms\":{},\"probes_sent\":{sent},\"send_errors\":{send_errors}}}",
        echo_ns.map(|v| v.to_string()).unwrap_or_else(|| "null".into()),
        echo_ns.is_some(),
        fmt_opt(echo_ns.map(|e| ms(t_new, e))),
        fmt_opt(echo_ns.and_then(|e| link_up.map(|l| ms(l, e)))),
    );
    let _ = io::stdout().flush();
    Ok(if echo_ns.is_some() { 0 } else { 1 })
}
