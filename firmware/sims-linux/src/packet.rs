//! Link-layer UDP for a node with no usable address yet (right after the
//! link comes up, before DHCP): like udhcpc's raw mode, it broadcasts from
//! 0.0.0.0 and reads the agent's answers on an AF_PACKET socket, past the
//! IP stack. A normal UDP socket would pick one of the interface's old /32
//! addresses as source, and the reverse-path filter would drop answers
//! from an address the node has no route to yet.
//!
//! The socket is cooked (SOCK_DGRAM: the kernel adds and strips the
//! Ethernet header), IPv4 only, bound to one interface, and carries a
//! classic BPF filter so that only unfragmented UDP to our port, addressed
//! to this host, wakes the daemon on a busy link.

use std::cell::Cell;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket;
use nix::{setsockopt_impl, sockopt_impl};
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, UdpPacket};

use crate::sys;

const TTL: u8 = 64;
const IP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
/// The Ethernet MTU: the largest packet [`PacketSocket::send_broadcast`] builds.
pub const MAX_PACKET: usize = 1500;
/// The largest payload of one broadcast (1500 - 20 - 8).
pub const MAX_PAYLOAD: usize = MAX_PACKET - IP_HEADER - UDP_HEADER;
/// Packets one [`PacketSocket::recv`] call skips at most before returning
/// Ok(None): a flood of junk must not hold the poll loop.
const MAX_SKIPS: usize = 32;

// nix has neither of these options.
sockopt_impl!(
    AttachFilter,
    SetOnly,
    libc::SOL_SOCKET,
    libc::SO_ATTACH_FILTER,
    libc::sock_fprog
);
sockopt_impl!(
    PacketAuxdata,
    SetOnly,
    libc::SOL_PACKET,
    libc::PACKET_AUXDATA,
    libc::c_int
);

/// One UDP datagram read from the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The Ethernet source (zeros if the link has no 6-byte addresses).
    pub src_mac: [u8; 6],
    /// IPv4 source address and UDP source port.
    pub src: SocketAddrV4,
    /// IPv4 destination (255.255.255.255, or an address we may not hold yet).
    pub dst: Ipv4Addr,
    /// Where the UDP payload is in the buffer given to `recv`.
    pub payload: Range<usize>,
}

/// Builds one IPv4/UDP packet 0.0.0.0:`port` -> 255.255.255.255:`port`
/// (TTL 64, DF: it is never fragmented), both checksums filled.
/// InvalidInput if it would exceed [`MAX_PACKET`] bytes.
pub fn build_broadcast(port: u16, payload: &[u8]) -> io::Result<Vec<u8>> {
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "broadcast payload exceeds the 1500-byte MTU",
        ));
    }
    let total = IP_HEADER + UDP_HEADER + payload.len();
    let mut pkt = vec![0u8; total];
    let (src, dst) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST);
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    ip.set_version(4);
    ip.set_header_len(IP_HEADER as u8);
    // total <= MAX_PACKET, checked above.
    ip.set_total_len(total as u16);
    ip.set_ident(0);
    ip.clear_flags();
    // DF with ident 0: an atomic datagram (RFC 6864).
    ip.set_dont_frag(true);
    ip.set_hop_limit(TTL);
    ip.set_next_header(IpProtocol::Udp);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    let mut udp = UdpPacket::new_unchecked(&mut pkt[IP_HEADER..]);
    udp.set_src_port(port);
    udp.set_dst_port(port);
    udp.set_len((UDP_HEADER + payload.len()) as u16);
    udp.payload_mut().copy_from_slice(payload);
    udp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
    Ok(pkt)
}

/// Validates an IPv4/UDP packet to `port` as read from a cooked packet
/// socket (IP header first; link padding after the IP total length is
/// ignored): IPv4, IHL >= 5, lengths, header checksum, not a fragment,
/// UDP, UDP length within the IP payload (a shorter one wins, as in the
/// kernel), and the UDP checksum unless it is 0 (none) or `udp_sum_ready`
/// is false. The latter is for packets from a local stack with checksum
/// offload (veth, tap, bridges to local VMs): their checksum field holds
/// only the pseudo-header sum until a NIC would finish it.
/// Returns the source, the destination address and where the UDP payload
/// is in `pkt`.
pub fn parse_udp(
    pkt: &[u8],
    port: u16,
    udp_sum_ready: bool,
) -> Result<(SocketAddrV4, Ipv4Addr, Range<usize>), &'static str> {
    // new_checked: 20 bytes, header length <= total length <= bytes.
    let ip = Ipv4Packet::new_checked(pkt).map_err(|_| "truncated IPv4 header or total length")?;
    if ip.version() != 4 {
        return Err("not IPv4");
    }
    let header_len = usize::from(ip.header_len());
    if header_len < IP_HEADER {
        return Err("IPv4 header length below 20");
    }
    if !ip.verify_checksum() {
        return Err("bad IPv4 header checksum");
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err("IPv4 fragment");
    }
    if ip.next_header() != IpProtocol::Udp {
        return Err("not UDP");
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let total_len = usize::from(ip.total_len());
    // new_checked: 8 bytes, 8 <= UDP length <= IP payload.
    let udp = UdpPacket::new_checked(&pkt[header_len..total_len]).map_err(|_| "bad UDP length")?;
    if udp.dst_port() != port {
        return Err("wrong UDP port");
    }
    if udp_sum_ready && !udp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)) {
        return Err("bad UDP checksum");
    }
    let udp_len = usize::from(udp.len());
    Ok((
        SocketAddrV4::new(src, udp.src_port()),
        dst,
        header_len + UDP_HEADER..header_len + udp_len,
    ))
}

const fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        // Every code is below 0x100.
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The classic BPF program: accept (whole) an IPv4 UDP datagram to `port`
/// that is not a fragment and was received for this host (host,
/// broadcast, multicast: not our own or another station's traffic); drop
/// the rest. Offsets are from the IP header (cooked socket). Jumps are
/// relative to the next instruction; DROP is the last one.
fn filter(port: u16) -> [libc::sock_filter; 14] {
    use libc::{
        BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JGT, BPF_JMP, BPF_JSET,
        BPF_K, BPF_LD, BPF_LDX, BPF_MSH, BPF_RET, BPF_W,
    };
    // skb->pkt_type, an ancillary load (negative offset).
    let pkttype = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
    const MULTICAST: u32 = libc::PACKET_MULTICAST as u32;
    [
        // 0: A = skb->pkt_type.
        bpf(BPF_LD | BPF_W | BPF_ABS, 0, 0, pkttype),
        // 1: HOST 0, BROADCAST 1, MULTICAST 2 pass; OTHERHOST 3,
        // OUTGOING 4 and the rest go.
        bpf(BPF_JMP | BPF_JGT | BPF_K, 11, 0, MULTICAST),
        // 2-4: version 4.
        bpf(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0),
        bpf(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0xf0),
        bpf(BPF_JMP | BPF_JEQ | BPF_K, 0, 8, 0x40),
        // 5-6: protocol UDP.
        bpf(BPF_LD | BPF_B | BPF_ABS, 0, 0, 9),
        bpf(BPF_JMP | BPF_JEQ | BPF_K, 0, 6, 17),
        // 7-8: not a fragment (MF, or a non-zero offset).
        bpf(BPF_LD | BPF_H | BPF_ABS, 0, 0, 6),
        bpf(BPF_JMP | BPF_JSET | BPF_K, 4, 0, 0x3fff),
        // 9-11: X = 4 * IHL; the UDP destination port at X + 2.
        bpf(BPF_LDX | BPF_B | BPF_MSH, 0, 0, 0),
        bpf(BPF_LD | BPF_H | BPF_IND, 0, 0, 2),
        bpf(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, u32::from(port)),
        // 12: accept the whole packet.
        bpf(BPF_RET | BPF_K, 0, 0, u32::MAX),
        // 13: DROP.
        bpf(BPF_RET | BPF_K, 0, 0, 0),
    ]
}

pub(crate) fn link_addr(ifindex: i32, dst_mac: Option<[u8; 6]>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all zeros is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    sa.sll_ifindex = ifindex;
    if let Some(mac) = dst_mac {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&mac);
    }
    sa
}

pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    port: u16,
    malformed: Cell<u64>,
}

impl PacketSocket {
    /// Opens a nonblocking cooked IPv4 packet socket on interface
    /// `ifindex` that receives only unfragmented UDP to `port`, sent to
    /// this host (host, broadcast or multicast frames).
    pub fn open(ifindex: u32, port: u16) -> io::Result<Self> {
        // sll_ifindex 0 would mean every interface.
        let ifindex = i32::try_from(ifindex)
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad interface index"))?;
        // Protocol 0: the socket receives nothing until bind names
        // ETH_P_IP, so no packet is queued before the filter is on.
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = sys::cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut prog = filter(port);
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_mut_ptr(),
        };
        // The kernel copies the program; `prog` outlives the call.
        socket::setsockopt(&fd, AttachFilter, &fprog)?;
        // Tells packets whose UDP checksum is not filled in yet.
        socket::setsockopt(&fd, PacketAuxdata, &1)?;
        let sa = link_addr(ifindex, None);
        // SAFETY: sa is a valid sockaddr_ll of the length given.
        sys::cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(PacketSocket {
            fd,
            ifindex,
            port,
            malformed: Cell::new(0),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Packets that passed the filter but not [`parse_udp`] (or did not
    /// fit the buffer), dropped by [`recv`](Self::recv).
    pub fn malformed(&self) -> u64 {
        self.malformed.get()
    }

    /// Broadcasts `payload` from 0.0.0.0:`port` to 255.255.255.255:`port`
    /// and ff:ff:ff:ff:ff:ff. InvalidInput above [`MAX_PAYLOAD`] bytes;
    /// WouldBlock if the socket buffer is full.
    pub fn send_broadcast(&self, port: u16, payload: &[u8]) -> io::Result<()> {
        let pkt = build_broadcast(port, payload)?;
        let sa = link_addr(self.ifindex, Some([0xff; 6]));
        // SAFETY: pkt and sa are valid for the lengths given.
        let n = sys::cvt_size(unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        if n != pkt.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short packet send",
            ));
        }
        Ok(())
    }

    /// Receives the next valid datagram to our port into `buf` (give it
    /// 1500 bytes or more: larger packets are dropped). Ok(None) when
    /// nothing is queued, or after skipping a run of packets (malformed:
    /// counted; our own and others' outgoing ones): call again while the
    /// fd is readable.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Frame>> {
        for _ in 0..MAX_SKIPS {
            let (n, sll, udp_sum_ready) = match self.recv_one(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // A socket bound to ETH_P_IP gets no copies of outgoing
            // frames (only ETH_P_ALL taps do) and the filter drops other
            // stations' ones: this is a backstop.
            if sll.sll_pkttype > libc::PACKET_MULTICAST {
                continue;
            }
            if n > buf.len() {
                self.malformed.set(self.malformed.get() + 1);
                continue;
            }
            match parse_udp(&buf[..n], self.port, udp_sum_ready) {
                Ok((src, dst, payload)) => {
                    let mut src_mac = [0u8; 6];
                    if sll.sll_halen == 6 {
                        src_mac.copy_from_slice(&sll.sll_addr[..6]);
                    }
                    return Ok(Some(Frame {
                        src_mac,
                        src,
                        dst,
                        payload,
                    }));
                }
                Err(why) => {
                    log::debug!("packet socket {}: dropped: {why}", self.ifindex);
                    self.malformed.set(self.malformed.get() + 1);
                }
            }
        }
        Ok(None)
    }

    /// One recvmsg: the packet's real length (MSG_TRUNC: it may exceed
    /// `buf`), its link-layer address, and whether its UDP checksum is
    /// complete (PACKET_AUXDATA's TP_STATUS_CSUMNOTREADY).
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<(usize, libc::sockaddr_ll, bool)> {
        // SAFETY: plain data; all zeros is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // u64s: cmsg buffers must be aligned like cmsghdr.
        let mut control = [0u64; 8];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control) as _;
        // SAFETY: every pointer in msg is valid for the length given.
        let n = sys::cvt_size(unsafe {
            libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC)
        })?;
        let mut udp_sum_ready = true;
        let want = mem::size_of::<libc::tpacket_auxdata>();
        // SAFETY: msg was filled by the kernel; CMSG_* stay inside
        // msg_control/msg_controllen, and the data is read unaligned
        // only when the header says it is long enough.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET
                    && (*c).cmsg_type == libc::PACKET_AUXDATA
                    && (*c).cmsg_len as usize >= libc::CMSG_LEN(want as u32) as usize
                {
                    let aux = std::ptr::read_unaligned(
                        libc::CMSG_DATA(c).cast::<libc::tpacket_auxdata>(),
                    );
                    udp_sum_ready = aux.tp_status & libc::TP_STATUS_CSUMNOTREADY == 0;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok((n, sll, udp_sum_ready))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: u16 = 4790;

    /// A packet from 10.9.0.1:PORT to 255.255.255.255:PORT with a real
    /// UDP checksum (the builder's, with the source put back in).
    fn answer(payload: &[u8]) -> Vec<u8> {
        let mut p = build_broadcast(PORT, payload).unwrap();
        let src = Ipv4Addr::new(10, 9, 0, 1);
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.set_src_addr(src);
        ip.fill_checksum();
        UdpPacket::new_unchecked(&mut p[20..])
            .fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(Ipv4Addr::BROADCAST));
        p
    }

    /// Re-fills the IPv4 header checksum after a header edit.
    fn refill(p: &mut [u8]) {
        Ipv4Packet::new_unchecked(p).fill_checksum();
    }

    #[test]
    fn parses_good_packet() {
        let p = answer(b"hello agent");
        let (src, dst, range) = parse_udp(&p, PORT, true).unwrap();
        assert_eq!(src, "10.9.0.1:4790".parse().unwrap());
        assert_eq!(dst, Ipv4Addr::BROADCAST);
        assert_eq!(&p[range], b"hello agent");
        // Ethernet padding after the total length is ignored.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 18]);
        assert_eq!(
            &padded[parse_udp(&padded, PORT, true).unwrap().2],
            b"hello agent"
        );
        // IP options: IHL 6.
        let mut opt = p.clone();
        opt[0] = 0x46;
        opt.splice(20..20, [1, 1, 1, 0]);
        let total = opt.len() as u16;
        opt[2..4].copy_from_slice(&total.to_be_bytes());
        refill(&mut opt);
        assert_eq!(&opt[parse_udp(&opt, PORT, true).unwrap().2], b"hello agent");
        // Empty payload.
        let e = answer(b"");
        assert_eq!(parse_udp(&e, PORT, true).unwrap().2, 28..28);
    }

    #[test]
    fn rejects_truncated_at_every_length() {
        let p = answer(b"0123456789");
        for cut in 0..p.len() {
            assert!(parse_udp(&p[..cut], PORT, true).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let p = answer(b"payload");
        let bad = |f: &dyn Fn(&mut Vec<u8>), refill_sum: bool| {
            let mut b = p.clone();
            f(&mut b);
            if refill_sum {
                refill(&mut b);
            }
            parse_udp(&b, PORT, true).unwrap_err()
        };
        assert_eq!(bad(&|b| b[12] ^= 1, false), "bad IPv4 header checksum");
        assert_eq!(bad(&|b| b[0] = 0x65, true), "not IPv4");
        assert_eq!(bad(&|b| b[0] = 0x44, true), "IPv4 header length below 20");
        assert_eq!(bad(&|b| b[9] = 6, true), "not UDP");
        // More fragments; a non-zero offset (the last fragment).
        assert_eq!(bad(&|b| b[6] |= 0x20, true), "IPv4 fragment");
        assert_eq!(bad(&|b| b[7] = 1, true), "IPv4 fragment");
        // UDP length beyond the IP payload, or below 8.
        assert_eq!(bad(&|b| b[25] += 1, false), "bad UDP length");
        assert_eq!(bad(&|b| b[25] = 7, false), "bad UDP length");
        // IP total length beyond the bytes read.
        assert_eq!(
            bad(&|b| b[3] += 1, true),
            "truncated IPv4 header or total length"
        );
        assert_eq!(bad(&|b| b[30] ^= 0x55, false), "bad UDP checksum");
        assert_eq!(parse_udp(&p, PORT + 1, true).unwrap_err(), "wrong UDP port");
    }

    #[test]
    fn udp_checksum_zero_or_not_ready() {
        let mut p = answer(b"no checksum");
        p[26..28].copy_from_slice(&[0, 0]);
        p[30] ^= 0x55;
        assert!(parse_udp(&p, PORT, true).is_ok());
        // Checksum offload: the field is partial, so it is not checked.
        let mut q = answer(b"offloaded");
        q[26..28].copy_from_slice(&[0x12, 0x34]);
        assert!(parse_udp(&q, PORT, true).is_err());
        assert!(parse_udp(&q, PORT, false).is_ok());
    }

    #[test]
    fn builder_round_trips() {
        for len in [0, 1, 2, 3, 100, MAX_PAYLOAD] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let p = build_broadcast(PORT, &payload).unwrap();
            assert_eq!(p.len(), 28 + len);
            let (src, dst, range) = parse_udp(&p, PORT, true).unwrap();
            assert_eq!(src, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT));
            assert_eq!(dst, Ipv4Addr::BROADCAST);
            assert_eq!(&p[range], &payload[..]);
            let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
            assert_eq!((ip.hop_limit(), ip.dont_frag()), (64, true));
            // The UDP checksum is really there (0 would mean "none").
            assert_ne!(UdpPacket::new_checked(&p[20..]).unwrap().checksum(), 0);
        }
        let err = build_broadcast(PORT, &[0; MAX_PAYLOAD + 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(build_broadcast(PORT, &vec![0; 70000]).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x9e37_79b9u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        };
        let base = answer(b"fuzz");
        for round in 0..5000 {
            // Random bytes, and the good packet with random bytes flipped.
            let bytes: Vec<u8> = if round % 2 == 0 {
                (0..round % 80).map(|_| next()).collect()
            } else {
                let mut b = base.clone();
                let i = usize::from(next()) % b.len();
                b[i] = next();
                b
            };
            for ready in [true, false] {
                if let Ok((_, _, r)) = parse_udp(&bytes, PORT, ready) {
                    let _ = &bytes[r];
                }
            }
        }
    }

    /// Just enough of a classic BPF interpreter for [`filter`]'s
    /// instructions, to check its jumps and offsets without root.
    fn run_filter(prog: &[libc::sock_filter], pkt: &[u8], pkttype: u32) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |o: usize| pkt.get(o).map(|&b| u32::from(b));
        let half = |o: usize| Some(byte(o)? << 8 | byte(o + 1)?);
        loop {
            let i = prog[pc];
            pc += 1;
            let k = i.k;
            let code = u32::from(i.code);
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    assert_eq!(k, (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32);
                    a = pkttype;
                }
                c if c == libc::BPF_LD | libc::BPF_B | libc::BPF_ABS => match byte(k as usize) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == libc::BPF_LD | libc::BPF_H | libc::BPF_ABS => match half(k as usize) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == libc::BPF_LD | libc::BPF_H | libc::BPF_IND => {
                    match half((x + k) as usize) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                c if c == libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH => match byte(k as usize) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= k,
                c if c & 0x07 == libc::BPF_JMP => {
                    let taken = match c & 0xf0 {
                        libc::BPF_JEQ => a == k,
                        libc::BPF_JGT => a > k,
                        libc::BPF_JSET => a & k != 0,
                        _ => panic!("unknown jump {c:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                c if c == libc::BPF_RET | libc::BPF_K => return k,
                c => panic!("unknown instruction {c:#x}"),
            }
        }
    }

    #[test]
    fn filter_accepts_only_our_datagrams() {
        let prog = filter(PORT);
        let p = answer(b"x");
        let accept = |b: &[u8], t: u8| run_filter(&prog, b, u32::from(t)) != 0;
        for t in [
            libc::PACKET_HOST,
            libc::PACKET_BROADCAST,
            libc::PACKET_MULTICAST,
        ] {
            assert!(accept(&p, t));
        }
        assert!(!accept(&p, libc::PACKET_OTHERHOST));
        assert!(!accept(&p, libc::PACKET_OUTGOING));
        assert_eq!(run_filter(&filter(PORT + 1), &p, 0), 0);
        let mut b = p.clone();
        b[6] |= 0x20;
        assert!(!accept(&b, 0), "more fragments");
        b = p.clone();
        b[7] = 1;
        assert!(!accept(&b, 0), "fragment offset");
        b = p.clone();
        b[6] = 0x40;
        assert!(accept(&b, 0), "DF alone is fine");
        b = p.clone();
        b[9] = 6;
        assert!(!accept(&b, 0), "TCP");
        b = p.clone();
        b[0] = 0x65;
        assert!(!accept(&b, 0), "version 6");
        // IHL 6: the port is read after the options.
        let mut opt = p.clone();
        opt[0] = 0x46;
        opt.splice(20..20, [1, 1, 1, 0]);
        assert!(accept(&opt, 0));
        assert!(!accept(&p[..21], 0), "truncated before the port");
    }
}
