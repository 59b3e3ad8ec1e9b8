//! `sims-traffic serve`: the CN's server (checked upstreams verified,
//! downstreams sent at a rate, `WHOAMI`), plus a UDP echo on the same port.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sims_testbed::traffic::{mono_ns, CounterCheck, CounterGen};

use std::os::fd::AsRawFd;

use crate::sockets::{is_timeout, read_line_until, wait_readable, write_all_until};
use crate::{json_str_opt, Opts, Res};

const MAX_CONN_LIFETIME: Duration = Duration::from_secs(1800);

pub(crate) fn serve(args: &[String]) -> Res<i32> {
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
        if target >= sent + crate::write_quantum(rate) {
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
