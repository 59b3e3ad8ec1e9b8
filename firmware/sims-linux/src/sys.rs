//! Thin, checked wrappers around the few raw libc calls the modules share.

use std::io;
use std::mem;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use libc::c_int;

/// Maps a libc `-1` return to the thread's errno.
pub(crate) fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Same as [`cvt`] for calls returning `ssize_t`.
pub(crate) fn cvt_size(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

pub(crate) fn socket(domain: c_int, ty: c_int, proto: c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned from here on.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: c_int,
    name: c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: val points to size_of::<T>() readable bytes.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub(crate) fn setsockopt_int(
    fd: &impl AsRawFd,
    level: c_int,
    name: c_int,
    val: c_int,
) -> io::Result<()> {
    setsockopt(fd, level, name, &val)
}

pub(crate) fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(addr.ip().octets());
    sa
}

pub(crate) fn bind_in(fd: &impl AsRawFd, addr: SocketAddrV4) -> io::Result<()> {
    let sa = sockaddr_in(addr);
    // SAFETY: sa is a valid sockaddr_in of the given length.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Copies an interface name into a NUL-terminated IFNAMSIZ buffer,
/// rejecting what the kernel would reject (too long, embedded NUL).
pub(crate) fn ifname_buf(name: &str) -> io::Result<[u8; libc::IFNAMSIZ]> {
    let b = name.as_bytes();
    if b.len() >= libc::IFNAMSIZ || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let mut out = [0u8; libc::IFNAMSIZ];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}
