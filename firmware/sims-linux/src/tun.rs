//! TUN device (IFF_TUN | IFF_NO_PI, nonblocking): the userspace ipip
//! backend's tunnel interface. Not persistent: the device disappears
//! when the fd is closed, so a crashed daemon leaves nothing behind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::sys;

/// struct ifreq with the flags member of the union; padded to the
/// largest ifreq (40 bytes on 64-bit) so the kernel never reads past it.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

pub struct Tun {
    fd: OwnedFd,
    name: String,
}

impl Tun {
    /// Creates (or attaches to) the TUN device `name`; "" lets the kernel pick tunN.
    pub fn open(name: &str) -> io::Result<Self> {
        let mut ifr = IfReq {
            name: sys::ifname_buf(name)?,
            flags: 0,
            _pad: [0; 22],
        };
        ifr.flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: plain open of a NUL-terminated path.
        let fd = sys::cvt(unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: fresh descriptor owned from here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifr is a valid, writable ifreq.
        sys::cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut IfReq) })?;
        // The kernel writes back the final name (matters for "" or "tun%d").
        let end = ifr
            .name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(ifr.name.len());
        let name = String::from_utf8_lossy(&ifr.name[..end]).into_owned();
        Ok(Tun { fd, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// One packet per call; WouldBlock when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writing buf.len() bytes.
        sys::cvt_size(unsafe {
            libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
        })
    }

    /// Injects one IP packet as if received on the device.
    pub fn write(&self, pkt: &[u8]) -> io::Result<usize> {
        // SAFETY: pkt is valid for reading pkt.len() bytes.
        sys::cvt_size(unsafe { libc::write(self.fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) })
    }
}
