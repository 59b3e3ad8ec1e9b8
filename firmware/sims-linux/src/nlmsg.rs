//! Netlink framing shared by `netlink`, `monitor`, `nfset` and `sockdiag`:
//! a message builder, bounds-checked iterators over messages and
//! attributes, and a socket doing request/ack and dump exchanges.
//! Netlink headers and integer attributes are host byte order.

use std::io::{self, IoSliceMut};
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use libc::c_int;

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockType};
use nix::sys::time::TimeVal;
use nix::{setsockopt_impl, sockopt_impl};

pub(crate) use nix::sys::socket::SockProtocol;

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(crate) const NLM_F_REPLACE: u16 = 0x100;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
// Only meaningful on NLMSG_ERROR replies.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

pub(crate) const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const SOL_NETLINK: c_int = 270;
const NETLINK_ADD_MEMBERSHIP: c_int = 1;
const NETLINK_CAP_ACK: c_int = 10;
const NETLINK_EXT_ACK: c_int = 11;

// Netlink's own options, which nix does not define.
sockopt_impl!(NetlinkExtAck, SetOnly, SOL_NETLINK, NETLINK_EXT_ACK, bool);
sockopt_impl!(NetlinkCapAck, SetOnly, SOL_NETLINK, NETLINK_CAP_ACK, bool);
sockopt_impl!(
    NetlinkAddMembership,
    SetOnly,
    SOL_NETLINK,
    NETLINK_ADD_MEMBERSHIP,
    u32
);

/// Receive buffer: the kernel caps dump skbs at 32 KiB, so this never truncates.
const RECV_BUF: usize = 64 * 1024;

pub(crate) fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

// ---------------------------------------------------------------- building

/// One outgoing message; length and sequence are filled in on send.
pub(crate) struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    pub(crate) fn new(ty: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Msg { buf }
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// Appends a fixed family header (ifinfomsg, rtmsg, ...).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    pub(crate) fn attr(&mut self, ty: u16, val: &[u8]) -> &mut Self {
        // Our attributes are tiny; a u16 length always fits.
        let len = (4 + val.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(val);
        self.pad();
        self
    }

    pub(crate) fn attr_u8(&mut self, ty: u16, v: u8) -> &mut Self {
        self.attr(ty, &[v])
    }

    pub(crate) fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    pub(crate) fn attr_ipv4(&mut self, ty: u16, a: Ipv4Addr) -> &mut Self {
        self.attr(ty, &a.octets())
    }

    /// A NUL-terminated string, as the kernel's NLA_STRING/NLA_NUL_STRING want.
    pub(crate) fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v)
    }

    /// Opens a nested attribute; close it with [`Msg::end_nest`].
    pub(crate) fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.attr(ty, &[]);
        start
    }

    pub(crate) fn end_nest(&mut self, start: usize) -> &mut Self {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// Sets length and sequence; returns the wire bytes.
    pub(crate) fn finish(&mut self, seq: u32) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

// ----------------------------------------------------------------- parsing

fn arr<const N: usize>(b: &[u8], off: usize) -> io::Result<[u8; N]> {
    off.checked_add(N)
        .and_then(|end| b.get(off..end))
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| invalid("netlink message too short"))
}

pub(crate) fn get_u8(b: &[u8], off: usize) -> io::Result<u8> {
    b.get(off)
        .copied()
        .ok_or_else(|| invalid("netlink message too short"))
}

pub(crate) fn get_u16(b: &[u8], off: usize) -> io::Result<u16> {
    arr(b, off).map(u16::from_ne_bytes)
}

pub(crate) fn get_u32(b: &[u8], off: usize) -> io::Result<u32> {
    arr(b, off).map(u32::from_ne_bytes)
}

/// Checks a fixed family header is present and returns what follows it.
pub(crate) fn after(b: &[u8], hdr_len: usize) -> io::Result<&[u8]> {
    b.get(align4(hdr_len)..)
        .or_else(|| {
            if b.len() >= hdr_len {
                Some(&[][..])
            } else {
                None
            }
        })
        .ok_or_else(|| invalid("netlink family header truncated"))
}

pub(crate) fn attr_u8(v: &[u8]) -> io::Result<u8> {
    match v {
        [x] => Ok(*x),
        _ => Err(invalid("bad u8 attribute")),
    }
}

pub(crate) fn attr_u32(v: &[u8]) -> io::Result<u32> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_ne_bytes)
        .map_err(|_| invalid("bad u32 attribute"))
}

pub(crate) fn attr_ipv4(v: &[u8]) -> io::Result<Ipv4Addr> {
    <[u8; 4]>::try_from(v)
        .map(Ipv4Addr::from)
        .map_err(|_| invalid("bad IPv4 attribute"))
}

/// A string attribute up to its first NUL; never fails (names may be any bytes).
pub(crate) fn attr_str(v: &[u8]) -> String {
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// One received message.
#[derive(Debug)]
pub(crate) struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Iterates the messages of one datagram; stops after the first framing error.
pub(crate) struct Messages<'a> {
    buf: &'a [u8],
}

pub(crate) fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf }
}

impl<'a> Iterator for Messages<'a> {
    type Item = io::Result<NlMsg<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let buf = mem::take(&mut self.buf);
        let r = (|| {
            let len = get_u32(buf, 0)? as usize;
            if len < NLMSG_HDRLEN || len > buf.len() {
                return Err(invalid("bad netlink message length"));
            }
            let msg = NlMsg {
                ty: get_u16(buf, 4)?,
                flags: get_u16(buf, 6)?,
                seq: get_u32(buf, 8)?,
                payload: &buf[NLMSG_HDRLEN..len],
            };
            Ok((msg, buf.get(align4(len)..).unwrap_or(&[])))
        })();
        Some(r.map(|(msg, rest)| {
            self.buf = rest;
            msg
        }))
    }
}

/// Iterates (type, value) attributes; the type has the nested/byteorder flags masked off.
pub(crate) struct Attrs<'a> {
    buf: &'a [u8],
}

pub(crate) fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = io::Result<(u16, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let buf = mem::take(&mut self.buf);
        let r = (|| {
            let len = get_u16(buf, 0)? as usize;
            let ty = get_u16(buf, 2)? & NLA_TYPE_MASK;
            if len < 4 || len > buf.len() {
                return Err(invalid("bad netlink attribute length"));
            }
            Ok((ty, &buf[4..len], buf.get(align4(len)..).unwrap_or(&[])))
        })();
        Some(r.map(|(ty, val, rest)| {
            self.buf = rest;
            (ty, val)
        }))
    }
}

/// The errno of an NLMSG_ERROR message (0 for an ack); logs any extended-ack text.
pub(crate) fn error_code(m: &NlMsg) -> io::Result<i32> {
    let err = get_u32(m.payload, 0)? as i32;
    if err != 0 && m.flags & NLM_F_ACK_TLVS != 0 {
        if let Some(text) = extack_msg(m) {
            log::debug!("netlink error {}: {}", -err, text);
        }
    }
    Ok(if err < 0 { err.wrapping_neg() } else { err })
}

fn extack_msg(m: &NlMsg) -> Option<String> {
    // The TLVs follow the echoed request: its header only when capped.
    let orig = if m.flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        get_u32(m.payload, 4).ok()? as usize
    };
    // `orig` comes off the wire: on 32-bit targets (MIPS, ARMv7) a length
    // near u32::MAX overflows align4, so round up with checked arithmetic.
    let start = orig.checked_add(3)? & !3;
    let tlvs = m.payload.get(4usize.checked_add(start)?..)?;
    attrs(tlvs)
        .filter_map(Result::ok)
        .find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
        .map(|(_, v)| attr_str(v))
}

// ------------------------------------------------------------------ socket

/// A bound netlink socket plus its receive buffer and sequence counter.
pub(crate) struct NlSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    /// Requests sent and answered (round trips with the kernel), for the
    /// kernel-state cost of a handover.
    pub(crate) exchanges: u64,
}

impl NlSocket {
    pub(crate) fn open(proto: SockProtocol, groups: u32, nonblocking: bool) -> io::Result<Self> {
        let mut flags = SockFlag::SOCK_CLOEXEC;
        if nonblocking {
            flags |= SockFlag::SOCK_NONBLOCK;
        }
        let fd = socket::socket(AddressFamily::Netlink, SockType::Raw, flags, proto)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        // Nice to have (error text, small acks); old kernels lack them.
        let _ = socket::setsockopt(&fd, NetlinkExtAck, &true);
        let _ = socket::setsockopt(&fd, NetlinkCapAck, &true);
        if !nonblocking {
            // The kernel always answers; the timeout only guards against a wedged daemon.
            socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(5, 0))?;
        }
        Ok(NlSocket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
            exchanges: 0,
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn add_membership(&self, group: u32) -> io::Result<()> {
        Ok(socket::setsockopt(&self.fd, NetlinkAddMembership, &group)?)
    }

    /// Grows the receive buffer (forced when privileged) so event bursts fit.
    pub(crate) fn set_rcvbuf(&self, bytes: c_int) {
        let bytes = bytes as usize;
        if socket::setsockopt(&self.fd, sockopt::RcvBufForce, &bytes).is_err() {
            let _ = socket::setsockopt(&self.fd, sockopt::RcvBuf, &bytes);
        }
    }

    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub(crate) fn send(&self, data: &[u8]) -> io::Result<()> {
        // nl_pid 0 addresses the kernel.
        let sa = NetlinkAddr::new(0, 0);
        loop {
            let r = socket::sendto(self.fd.as_raw_fd(), data, &sa, MsgFlags::empty());
            match r {
                Ok(n) if n == data.len() => return Ok(()),
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short netlink send",
                    ))
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one datagram from the kernel; returns the filled part of the buffer.
    pub(crate) fn recv(&mut self) -> io::Result<&[u8]> {
        loop {
            // MSG_TRUNC makes the return value the real length, so truncation is detectable.
            let r = socket::recvmsg::<NetlinkAddr>(
                self.fd.as_raw_fd(),
                &mut [IoSliceMut::new(&mut self.buf)],
                None,
                MsgFlags::MSG_TRUNC,
            )
            .map(|m| (m.bytes, m.address.map_or(u32::MAX, |a| a.pid())));
            let (n, pid) = match r {
                Ok(r) => r,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if n > self.buf.len() {
                return Err(invalid("netlink datagram truncated"));
            }
            // Only the kernel (port 0) may talk to us.
            if pid != 0 {
                continue;
            }
            return Ok(&self.buf[..n]);
        }
    }

    /// Sends `msgs` (consecutive sequence numbers) and feeds each reply
    /// carrying one of those numbers to `f`, until the ack of the message
    /// at `ack_idx` or the NLMSG_DONE of a dump. A kernel error on any of
    /// them becomes an io::Error with that errno. Returns whether the
    /// kernel flagged the dump as interrupted (inconsistent).
    pub(crate) fn transact(
        &mut self,
        msgs: &mut [Msg],
        ack_idx: usize,
        mut f: impl FnMut(&NlMsg) -> io::Result<()>,
    ) -> io::Result<bool> {
        let first = self.seq.wrapping_add(1);
        let mut out = Vec::new();
        for m in msgs.iter_mut() {
            let seq = self.next_seq();
            out.extend_from_slice(m.finish(seq));
        }
        let span = msgs.len() as u32;
        let ack_seq = first.wrapping_add(ack_idx as u32);
        self.send(&out)?;
        self.exchanges += 1;

        let mut interrupted = false;
        let mut first_err: Option<io::Error> = None;
        loop {
            let mut done = false;
            for m in messages(self.recv()?) {
                let m = m?;
                // Stale replies (an earlier request that failed midway) are skipped.
                if m.seq.wrapping_sub(first) >= span {
                    continue;
                }
                match m.ty {
                    NLMSG_ERROR => {
                        let e = error_code(&m)?;
                        if e != 0 {
                            return Err(io::Error::from_raw_os_error(e));
                        }
                        done |= m.seq == ack_seq;
                    }
                    NLMSG_DONE => {
                        // A dump may end with an errno in place of the usual 0.
                        if let Ok(e) = get_u32(m.payload, 0) {
                            let e = e as i32;
                            if e < 0 {
                                return Err(io::Error::from_raw_os_error(e.wrapping_neg()));
                            }
                        }
                        done = true;
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    _ => {
                        interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                        // Keep reading to the end so the socket stays in step.
                        if first_err.is_none() {
                            if let Err(e) = f(&m) {
                                first_err = Some(e);
                            }
                        }
                    }
                }
            }
            if done {
                break;
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(interrupted),
        }
    }

    /// One request with NLM_F_ACK set by the caller; waits for its ack.
    pub(crate) fn request(&mut self, mut msg: Msg) -> io::Result<()> {
        self.transact(std::slice::from_mut(&mut msg), 0, |_| Ok(()))
            .map(drop)
    }

    /// A dump: `build` makes the request (retried while the kernel reports
    /// the dump was interrupted by concurrent changes), `f` parses one reply.
    pub(crate) fn dump<T>(
        &mut self,
        build: impl Fn() -> Msg,
        mut f: impl FnMut(&NlMsg) -> io::Result<Option<T>>,
    ) -> io::Result<Vec<T>> {
        for _ in 0..5 {
            let mut out = Vec::new();
            let mut msg = build();
            let interrupted = self.transact(std::slice::from_mut(&mut msg), 0, |m| {
                if let Some(v) = f(m)? {
                    out.push(v);
                }
                Ok(())
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "netlink dump kept changing",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_layout() {
        let mut m = Msg::new(24, NLM_F_REQUEST | NLM_F_ACK);
        m.push(&[2, 32, 0]);
        m.attr_u32(15, 144);
        let n = m.nest(18);
        m.attr_str(1, "ab");
        m.end_nest(n);
        let b = m.finish(7).to_vec();
        assert_eq!(b.len(), 16 + 4 + 8 + 4 + 8);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        let ms: Vec<_> = messages(&b).collect::<io::Result<_>>().unwrap();
        assert_eq!(ms.len(), 1);
        let body = after(ms[0].payload, 3).unwrap();
        let a: Vec<_> = attrs(body).collect::<io::Result<_>>().unwrap();
        assert_eq!(a[0], (15, &144u32.to_ne_bytes()[..]));
        assert_eq!(a[1].0, 18);
        let inner: Vec<_> = attrs(a[1].1).collect::<io::Result<_>>().unwrap();
        assert_eq!(attr_str(inner[0].1), "ab");
    }

    #[test]
    fn truncated_and_garbage_never_panic() {
        let mut m = Msg::new(16, 0);
        m.push(&[0; 16]);
        m.attr_str(3, "eth0");
        m.attr_u32(4, 1500);
        let b = m.finish(1).to_vec();
        for cut in 0..b.len() {
            let _ = messages(&b[..cut]).count();
            for a in attrs(&b[..cut]) {
                let _ = a;
            }
        }
        // A length field pointing past the end is an error, not a panic.
        let mut bad = b.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(messages(&bad).next().unwrap().is_err());
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(messages(&bad).next().unwrap().is_err());
        assert!(attrs(&[2, 0, 1, 0]).next().unwrap().is_err());
        assert!(attrs(&[200, 0, 1, 0]).next().unwrap().is_err());
        assert!(attr_u32(&[1, 2, 3]).is_err());
        assert!(attr_ipv4(&[1; 16]).is_err());
        assert_eq!(attr_str(&[b'x', 0, b'y']), "x");
    }

    #[test]
    fn error_codes() {
        let mut m = Msg::new(NLMSG_ERROR, 0);
        m.push(&(-17i32).to_ne_bytes());
        let b = m.finish(3).to_vec();
        let msg = messages(&b).next().unwrap().unwrap();
        assert_eq!(error_code(&msg).unwrap(), 17);
        // Claims extended-ack TLVs but the echoed header is garbage.
        let mut m = Msg::new(NLMSG_ERROR, NLM_F_ACK_TLVS);
        m.push(&(-22i32).to_ne_bytes());
        m.push(&u32::MAX.to_ne_bytes());
        let b = m.finish(3).to_vec();
        let msg = messages(&b).next().unwrap().unwrap();
        assert_eq!(error_code(&msg).unwrap(), 22);
        let empty = NlMsg {
            ty: NLMSG_ERROR,
            flags: 0,
            seq: 0,
            payload: &[1],
        };
        assert!(error_code(&empty).is_err());
    }
}
