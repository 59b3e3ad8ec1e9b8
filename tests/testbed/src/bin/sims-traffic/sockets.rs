//! Socket helpers of the traffic tool: error kinds, TCP connect with a
//! source address and a time limit, reads and writes with deadlines.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

pub(crate) fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

// ---------------------------------------------------------------- sockets

pub(crate) fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from(*a.ip()).to_be(),
    };
    sa
}

/// Binds `fd` to `ip` (any port) even if `ip` is not (or no longer) on an
/// interface: an old address a moved node still uses.
pub(crate) fn bind_freebind(fd: i32, ip: Ipv4Addr) -> io::Result<()> {
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
    Ok(())
}

pub(crate) fn set_int_opt(fd: i32, level: i32, opt: i32, v: i32) -> io::Result<()> {
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
pub(crate) fn tcp_connect(
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
        bind_freebind(fd, ip)?;
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
pub(crate) fn wait_readable(fd: i32, ms: i32) -> bool {
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
pub(crate) fn write_all_until(
    s: &mut TcpStream,
    mut buf: &[u8],
    deadline: Instant,
) -> io::Result<()> {
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
pub(crate) fn read_line_until(s: &mut TcpStream, deadline: Instant) -> io::Result<String> {
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
