//! TUN device (IFF_TUN | IFF_NO_PI, nonblocking): the userspace ipip
//! backend's tunnel interface. Not persistent: the device disappears
//! when the fd is closed, so a crashed daemon leaves nothing behind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

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
        })
        .map_err(|e| {
            // Say what is missing: on OpenWrt, the kmod-tun package.
            io::Error::new(e.kind(), format!("/dev/net/tun (kmod-tun): {e}"))
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

    /// Closes the device without waiting: closing a TUN removes the link,
    /// which waits for an RCU grace period (tens of ms), so it happens on a
    /// detached thread. A raw pthread, not std::thread: std's thread
    /// machinery (and the C library's printf it pulls in to name threads)
    /// costs simsd 13 KB on MIPS for this one use. If no thread can be
    /// created, the device is closed here.
    pub fn close_detached(self) {
        extern "C" fn close_fd(arg: *mut libc::c_void) -> *mut libc::c_void {
            // SAFETY: the argument is the fd whose ownership was passed to
            // this thread; nothing else closes it.
            unsafe { libc::close(arg as usize as RawFd) };
            std::ptr::null_mut()
        }
        let fd = self.fd.into_raw_fd();
        // SAFETY: plain pthread calls on a local attribute object; the
        // thread only closes the fd it was given.
        let started = unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            let mut tid: libc::pthread_t = std::mem::zeroed();
            libc::pthread_attr_init(&mut attr) == 0
                && libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED) == 0
                && libc::pthread_attr_setstacksize(&mut attr, 64 * 1024) == 0
                && {
                    let r = libc::pthread_create(
                        &mut tid,
                        &attr,
                        close_fd,
                        fd as usize as *mut libc::c_void,
                    );
                    libc::pthread_attr_destroy(&mut attr);
                    r == 0
                }
        };
        if !started {
            // SAFETY: the thread did not start, so the fd is still ours.
            unsafe { libc::close(fd) };
        }
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
