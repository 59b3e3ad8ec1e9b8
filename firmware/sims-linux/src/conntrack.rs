//! Forwarded TCP sessions by their translated address (ctnetlink dump,
//! NETLINK_NETFILTER): on a travel router the sessions that keep an old
//! address alive are not its own sockets but its LAN clients', NATed to
//! that address. An entry counts for address `a` when its reply goes to
//! `a` and its original source is another host (a translated flow, not a
//! local socket, which sock_diag counts), and TCP is not closing.

use std::io;
use std::net::Ipv4Addr;

use crate::nlmsg::{
    after, attr_ipv4, attrs, get_u8, Msg, NlSocket, SockProtocol, NLM_F_DUMP, NLM_F_REQUEST,
};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
/// struct nfgenmsg: family, version, res_id (be16).
const NFGENMSG_LEN: usize = 4;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_PROTOINFO: u16 = 4;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

/// enum tcp_conntrack: these no longer carry a session.
const TCP_CONNTRACK_FIN_WAIT: u8 = 4;
const TCP_CONNTRACK_TIME_WAIT: u8 = 7;
const TCP_CONNTRACK_CLOSE: u8 = 8;

/// One TCP entry: (original source, reply destination, TCP state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatFlow {
    pub orig_src: Ipv4Addr,
    pub reply_dst: Ipv4Addr,
    pub tcp_state: Option<u8>,
}

impl NatFlow {
    /// A LAN client's live session translated to `reply_dst`.
    pub fn is_live_nat(&self) -> bool {
        self.orig_src != self.reply_dst
            && !matches!(
                self.tcp_state,
                Some(TCP_CONNTRACK_FIN_WAIT | TCP_CONNTRACK_TIME_WAIT | TCP_CONNTRACK_CLOSE)
            )
    }
}

fn request() -> Msg {
    let ty = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    let mut m = Msg::new(ty, NLM_F_REQUEST | NLM_F_DUMP);
    m.push(&[libc::AF_INET as u8, 0, 0, 0]);
    m
}

/// (source, destination, protocol) of a CTA_TUPLE_* nest.
fn tuple(v: &[u8]) -> io::Result<(Option<Ipv4Addr>, Option<Ipv4Addr>, Option<u8>)> {
    let (mut src, mut dst, mut proto) = (None, None, None);
    for a in attrs(v) {
        let (ty, v) = a?;
        match ty {
            CTA_TUPLE_IP => {
                for a in attrs(v) {
                    let (ty, v) = a?;
                    match ty {
                        CTA_IP_V4_SRC => src = Some(attr_ipv4(v)?),
                        CTA_IP_V4_DST => dst = Some(attr_ipv4(v)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for a in attrs(v) {
                    let (ty, v) = a?;
                    if ty == CTA_PROTO_NUM {
                        proto = Some(get_u8(v, 0)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok((src, dst, proto))
}

/// Parses one ctnetlink message payload (after the netlink header): the
/// TCP flow it describes, None for anything else (other protocols, IPv6).
pub(crate) fn parse(ty: u16, p: &[u8]) -> io::Result<Option<NatFlow>> {
    if ty != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
        return Ok(None);
    }
    if get_u8(p, 0)? != libc::AF_INET as u8 {
        return Ok(None);
    }
    let (mut orig, mut reply, mut state) = (None, None, None);
    for a in attrs(after(p, NFGENMSG_LEN)?) {
        let (ty, v) = a?;
        match ty {
            CTA_TUPLE_ORIG => orig = Some(tuple(v)?),
            CTA_TUPLE_REPLY => reply = Some(tuple(v)?),
            CTA_PROTOINFO => {
                for a in attrs(v) {
                    let (ty, v) = a?;
                    if ty == CTA_PROTOINFO_TCP {
                        for a in attrs(v) {
                            let (ty, v) = a?;
                            if ty == CTA_PROTOINFO_TCP_STATE {
                                state = Some(get_u8(v, 0)?);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let tcp = libc::IPPROTO_TCP as u8;
    match (orig, reply) {
        (Some((Some(orig_src), _, Some(p))), Some((_, Some(reply_dst), _))) if p == tcp => {
            Ok(Some(NatFlow {
                orig_src,
                reply_dst,
                tcp_state: state,
            }))
        }
        _ => Ok(None),
    }
}

/// Every IPv4 TCP conntrack entry.
pub fn tcp_flows() -> io::Result<Vec<NatFlow>> {
    let mut sock = NlSocket::open(SockProtocol::NetlinkNetFilter, 0, false)?;
    sock.dump(request, |m| parse(m.ty, m.payload))
}

/// For each address in `addrs` (same order), the live LAN sessions NATed
/// to it. A kernel without conntrack has none (not an error).
pub fn nat_session_counts(addrs: &[Ipv4Addr]) -> io::Result<Vec<(Ipv4Addr, usize)>> {
    let flows = match tcp_flows() {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EOPNOTSUPP)) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(addrs
        .iter()
        .map(|a| {
            let n = (flows.iter())
                .filter(|f| f.reply_dst == *a && f.is_live_nat())
                .count();
            (*a, n)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(v);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn nest(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(ty | 0x8000, &parts.concat())
    }

    fn tuple(src: [u8; 4], dst: [u8; 4], proto: u8) -> Vec<u8> {
        [
            nest(
                CTA_TUPLE_IP,
                &[attr(CTA_IP_V4_SRC, &src), attr(CTA_IP_V4_DST, &dst)],
            ),
            nest(CTA_TUPLE_PROTO, &[attr(CTA_PROTO_NUM, &[proto])]),
        ]
        .concat()
    }

    fn entry(orig: Vec<u8>, reply: Vec<u8>, state: u8) -> Vec<u8> {
        [
            vec![libc::AF_INET as u8, 0, 0, 0],
            nest(CTA_TUPLE_ORIG, &[orig]),
            nest(CTA_TUPLE_REPLY, &[reply]),
            nest(
                CTA_PROTOINFO,
                &[nest(
                    CTA_PROTOINFO_TCP,
                    &[attr(CTA_PROTOINFO_TCP_STATE, &[state])],
                )],
            ),
        ]
        .concat()
    }

    const NEW: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;

    #[test]
    fn a_lan_clients_session_through_the_old_address() {
        // 192.168.8.20 -> 203.0.113.10, masqueraded to 10.1.0.50.
        let p = entry(
            tuple([192, 168, 8, 20], [203, 0, 113, 10], 6),
            tuple([203, 0, 113, 10], [10, 1, 0, 50], 6),
            3, // ESTABLISHED
        );
        let f = parse(NEW, &p).unwrap().unwrap();
        assert_eq!(f.reply_dst, Ipv4Addr::new(10, 1, 0, 50));
        assert!(f.is_live_nat());
        // The router's own socket: not NATed (sock_diag counts it).
        let own = entry(
            tuple([10, 1, 0, 50], [203, 0, 113, 10], 6),
            tuple([203, 0, 113, 10], [10, 1, 0, 50], 6),
            3,
        );
        assert!(!parse(NEW, &own).unwrap().unwrap().is_live_nat());
        // Closing: no longer a session.
        let closing = entry(
            tuple([192, 168, 8, 20], [203, 0, 113, 10], 6),
            tuple([203, 0, 113, 10], [10, 1, 0, 50], 6),
            TCP_CONNTRACK_TIME_WAIT,
        );
        assert!(!parse(NEW, &closing).unwrap().unwrap().is_live_nat());
        // UDP and other message types are not TCP sessions.
        let udp = entry(
            tuple([192, 168, 8, 20], [203, 0, 113, 10], 17),
            tuple([203, 0, 113, 10], [10, 1, 0, 50], 17),
            0,
        );
        assert_eq!(parse(NEW, &udp).unwrap(), None);
        assert_eq!(parse(0x0103, &p).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_or_nothing_never_a_panic() {
        let p = entry(
            tuple([192, 168, 8, 20], [203, 0, 113, 10], 6),
            tuple([203, 0, 113, 10], [10, 1, 0, 50], 6),
            3,
        );
        for n in 0..p.len() {
            let _ = parse(NEW, &p[..n]);
        }
        let mut x = p.clone();
        for i in 0..x.len() {
            x[i] ^= 0xa5;
            let _ = parse(NEW, &x);
            x[i] ^= 0xa5;
        }
    }
}
