//! Synchronous rtnetlink (NETLINK_ROUTE): links, IPv4 addresses, routes,
//! rules and neighbours, plus kernel ipip creation. Every change asks for
//! an ack and returns the kernel's errno; dumps run to NLMSG_DONE.
//! The messages are built and parsed in `codec.rs` (the parsers are
//! shared with `monitor`); the tests feed them garbage (`tests.rs`).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use crate::nlmsg::{
    Msg, NlMsg, NlSocket, SockProtocol, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};

mod codec;
#[cfg(test)]
mod tests;

pub(crate) use codec::*;

pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
pub(crate) const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
pub(crate) const RTM_NEWRULE: u16 = 32;
pub(crate) const RTM_DELRULE: u16 = 33;
const RTM_GETRULE: u16 = 34;

const AF_INET: u8 = libc::AF_INET as u8;

// Fixed header sizes: ifinfomsg, ifaddrmsg, rtmsg, fib_rule_hdr, ndmsg.
const IFINFO_LEN: usize = 16;
const IFADDR_LEN: usize = 8;
const RTMSG_LEN: usize = 12;
const RULE_LEN: usize = 12;
const NDMSG_LEN: usize = 12;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_IPTUN_LOCAL: u16 = 2;
const IFLA_IPTUN_REMOTE: u16 = 3;
const IFLA_IPTUN_TTL: u16 = 4;
const IFLA_IPTUN_PMTUDISC: u16 = 10;

const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x1_0000;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
/// Don't create the prefix route for the address's subnet.
pub const IFA_F_NOPREFIXROUTE: u32 = 0x200;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RTA_PRIORITY: u16 = 6;
const RTA_METRICS: u16 = 8;
const RTAX_LOCK: u16 = 1;
const RTAX_RTO_MIN: u16 = 13;
const RTNH_F_ONLINK: u32 = 4;
const RTA_TABLE: u16 = 15;

const FRA_SRC: u16 = 2;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FRA_PROTOCOL: u16 = 21;
const FR_ACT_TO_TBL: u8 = 1;

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

pub const RT_TABLE_UNSPEC: u32 = 0;
pub const RT_TABLE_MAIN: u32 = 254;
pub const RT_TABLE_LOCAL: u32 = 255;

pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;
pub const RT_SCOPE_NOWHERE: u8 = 255;

pub const RTPROT_KERNEL: u8 = 2;
pub const RTPROT_BOOT: u8 = 3;
pub const RTPROT_STATIC: u8 = 4;

const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RTN_BLACKHOLE: u8 = 6;
const RTN_UNREACHABLE: u8 = 7;

pub const NUD_INCOMPLETE: u16 = 0x01;
pub const NUD_REACHABLE: u16 = 0x02;
pub const NUD_STALE: u16 = 0x04;
pub const NUD_DELAY: u16 = 0x08;
pub const NUD_PROBE: u16 = 0x10;
pub const NUD_FAILED: u16 = 0x20;
pub const NUD_NOARP: u16 = 0x40;
pub const NUD_PERMANENT: u16 = 0x80;
pub const NUD_NONE: u16 = 0x00;
/// Neighbour states that mean a host is there (answering, or not yet
/// found gone).
pub const NUD_LIVE: u16 = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND ("veth", "tun", "ipip", ...); None for plain devices.
    pub kind: Option<String>,
    /// IFF_UP
    pub up: bool,
    /// IFF_LOWER_UP
    pub carrier: bool,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    pub index: u32,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteType {
    Unicast,
    Unreachable,
    Blackhole,
    Local,
    Other(u8),
}

impl RouteType {
    fn to_u8(self) -> u8 {
        match self {
            RouteType::Unicast => RTN_UNICAST,
            RouteType::Unreachable => RTN_UNREACHABLE,
            RouteType::Blackhole => RTN_BLACKHOLE,
            RouteType::Local => RTN_LOCAL,
            RouteType::Other(t) => t,
        }
    }

    fn from_u8(t: u8) -> Self {
        match t {
            RTN_UNICAST => RouteType::Unicast,
            RTN_UNREACHABLE => RouteType::Unreachable,
            RTN_BLACKHOLE => RouteType::Blackhole,
            RTN_LOCAL => RouteType::Local,
            t => RouteType::Other(t),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub table: u32,
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
    pub prefsrc: Option<Ipv4Addr>,
    pub protocol: u8,
    pub kind: RouteType,
    /// RT_SCOPE_*: universe 0, link 253, host 254.
    pub scope: u8,
    /// RTNH_F_ONLINK: the gateway is on the link even without a route
    /// to it (the mobile node's route to an agent before DHCP).
    pub onlink: bool,
    /// The RTAX_RTO_MIN metric: the least retransmission timeout of TCP
    /// connections using the route (the kernel's default is 200 ms).
    pub rto_min_ms: Option<u32>,
    /// RTA_PRIORITY, the route's metric (None: 0). Part of a route's key:
    /// a DHCP client's default route with metric 100 is replaced only by
    /// one with metric 100.
    pub metric: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    pub table: u32,
    /// (value, mask)
    pub fwmark: Option<(u32, u32)>,
    pub src: Option<(Ipv4Addr, u8)>,
    /// FRA_PROTOCOL
    pub protocol: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neigh {
    pub mac: Option<[u8; 6]>,
    /// NUD_*
    pub state: u16,
}

/// One message of a kernel datagram, parsed as [`Netlink`] and
/// [`crate::monitor::Monitor`] parse it (None: not IPv4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Link(LinkInfo),
    Addr(Option<AddrInfo>),
    Route(Option<Route>),
    Rule(Option<Rule>),
    Neigh(Option<(u32, Ipv4Addr, Neigh)>),
    /// NLMSG_ERROR: the errno, 0 for an ack.
    Error(i32),
    Done,
    /// A type no parser here reads.
    Other(u16),
}

/// Every message of one datagram from the kernel, each through the parser
/// of its type, up to the first framing error (which ends the list). The
/// entry point of the fuzz target `netlink` (fuzz/): the framing and the
/// parsers the daemons use, without a socket.
pub fn parse_datagram(data: &[u8]) -> Vec<io::Result<Reply>> {
    let mut out = Vec::new();
    for m in crate::nlmsg::messages(data) {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                out.push(Err(e));
                break;
            }
        };
        let p = m.payload;
        out.push(match m.ty {
            RTM_NEWLINK | RTM_DELLINK => parse_link(p).map(Reply::Link),
            RTM_NEWADDR | RTM_DELADDR => parse_addr(p).map(Reply::Addr),
            RTM_NEWROUTE | RTM_DELROUTE => parse_route(p).map(Reply::Route),
            RTM_NEWRULE | RTM_DELRULE => parse_rule(p).map(Reply::Rule),
            RTM_NEWNEIGH => parse_neigh(p).map(Reply::Neigh),
            crate::nlmsg::NLMSG_ERROR => crate::nlmsg::error_code(&m).map(Reply::Error),
            crate::nlmsg::NLMSG_DONE => Ok(Reply::Done),
            ty => Ok(Reply::Other(ty)),
        });
    }
    out
}

/// A NETLINK_ROUTE socket for synchronous requests.
pub struct Netlink {
    sock: NlSocket,
}

const ACK: u16 = NLM_F_REQUEST | NLM_F_ACK;
const DUMP: u16 = NLM_F_REQUEST | NLM_F_DUMP;

impl Netlink {
    pub fn open() -> io::Result<Self> {
        Ok(Netlink {
            sock: NlSocket::open(SockProtocol::NetlinkRoute, 0, false)?,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.fd()
    }

    /// Requests made so far (each one round trip with the kernel).
    pub fn exchanges(&self) -> u64 {
        self.sock.exchanges
    }

    pub fn links(&mut self) -> io::Result<Vec<LinkInfo>> {
        self.sock.dump(
            || {
                let mut m = Msg::new(RTM_GETLINK, DUMP);
                m.push(&ifinfo(0, 0, 0));
                m
            },
            only(RTM_NEWLINK, |p| parse_link(p).map(Some)),
        )
    }

    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<LinkInfo>> {
        crate::sys::ifname_buf(name)?;
        let mut m = Msg::new(RTM_GETLINK, ACK);
        m.push(&ifinfo(0, 0, 0)).attr_str(IFLA_IFNAME, name);
        let mut found = None;
        let r = self.sock.transact(std::slice::from_mut(&mut m), 0, |m| {
            if m.ty == RTM_NEWLINK {
                found = Some(parse_link(m.payload)?);
            }
            Ok(())
        });
        match r {
            Ok(_) => Ok(found),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn link_set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, ACK);
        m.push(&ifinfo(index, if up { IFF_UP } else { 0 }, IFF_UP));
        self.sock.request(m)
    }

    pub fn link_set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, ACK);
        m.push(&ifinfo(index, 0, 0)).attr_u32(IFLA_MTU, mtu);
        self.sock.request(m)
    }

    pub fn link_delete(&mut self, index: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_DELLINK, ACK);
        m.push(&ifinfo(index, 0, 0));
        self.sock.request(m)
    }

    /// Creates a kernel ipip tunnel with path-MTU discovery on; returns its index.
    /// Without the ipip module the kernel answers EOPNOTSUPP ("Unknown device
    /// type"; observed on the 6.x development hosts): use the userspace backend.
    pub fn ipip_create(
        &mut self,
        name: &str,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        ttl: u8,
    ) -> io::Result<u32> {
        crate::sys::ifname_buf(name)?;
        let mut m = Msg::new(RTM_NEWLINK, ACK | NLM_F_CREATE | NLM_F_EXCL);
        m.push(&ifinfo(0, 0, 0)).attr_str(IFLA_IFNAME, name);
        ipip_linkinfo(&mut m, local, remote, ttl);
        self.sock.request(m)?;
        self.link_by_name(name)?
            .map(|l| l.index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "new ipip link vanished"))
    }

    /// Re-points ipip device `index` (its local and remote ends), in
    /// place: the same device, its addresses, routes and rules stay. The
    /// kernel takes the tunnel's parameters whole, so all of ipip_create's
    /// are given again.
    pub fn ipip_change(
        &mut self,
        index: u32,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        ttl: u8,
    ) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, ACK);
        m.push(&ifinfo(index, 0, 0));
        ipip_linkinfo(&mut m, local, remote, ttl);
        self.sock.request(m)
    }

    /// IPv4 addresses, of one interface or all.
    pub fn addrs(&mut self, index: Option<u32>) -> io::Result<Vec<AddrInfo>> {
        self.sock.dump(
            || {
                let mut m = Msg::new(RTM_GETADDR, DUMP);
                m.push(&[AF_INET, 0, 0, 0, 0, 0, 0, 0]);
                m
            },
            only(RTM_NEWADDR, |p| {
                Ok(parse_addr(p)?.filter(|a| index.is_none_or(|i| i == a.index)))
            }),
        )
    }

    /// EEXIST if the address is already there (the caller may ignore it).
    pub fn addr_add(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
        noprefixroute: bool,
    ) -> io::Result<()> {
        let flags = if noprefixroute {
            IFA_F_NOPREFIXROUTE
        } else {
            0
        };
        let m = addr_msg(
            RTM_NEWADDR,
            ACK | NLM_F_CREATE | NLM_F_EXCL,
            index,
            addr,
            prefix_len,
            flags,
        )?;
        self.sock.request(m)
    }

    pub fn addr_del(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let m = addr_msg(RTM_DELADDR, ACK, index, addr, prefix_len, 0)?;
        self.sock.request(m)
    }

    pub fn route_add(&mut self, r: &Route) -> io::Result<()> {
        let m = route_msg(RTM_NEWROUTE, ACK | NLM_F_CREATE | NLM_F_EXCL, r)?;
        self.sock.request(m)
    }

    pub fn route_replace(&mut self, r: &Route) -> io::Result<()> {
        let m = route_msg(RTM_NEWROUTE, ACK | NLM_F_CREATE | NLM_F_REPLACE, r)?;
        self.sock.request(m)
    }

    /// Matches on table, destination, type, protocol, oif and gateway (any
    /// scope, any prefsrc). ESRCH if there is no such route.
    pub fn route_del(&mut self, r: &Route) -> io::Result<()> {
        let m = route_msg(RTM_DELROUTE, ACK, r)?;
        self.sock.request(m)
    }

    /// IPv4 routes of one table.
    pub fn routes(&mut self, table: u32) -> io::Result<Vec<Route>> {
        self.routes_where(|r| r.table == table)
    }

    /// IPv4 routes of every table.
    pub fn all_routes(&mut self) -> io::Result<Vec<Route>> {
        self.routes_where(|_| true)
    }

    fn routes_where(&mut self, keep: impl Fn(&Route) -> bool) -> io::Result<Vec<Route>> {
        self.sock.dump(
            || {
                let mut m = Msg::new(RTM_GETROUTE, DUMP);
                m.push(&[AF_INET, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                m
            },
            only(RTM_NEWROUTE, |p| Ok(parse_route(p)?.filter(|r| keep(r)))),
        )
    }

    /// EEXIST if an identical rule exists.
    pub fn rule_add(&mut self, r: &Rule) -> io::Result<()> {
        let m = rule_msg(RTM_NEWRULE, ACK | NLM_F_CREATE | NLM_F_EXCL, r)?;
        self.sock.request(m)
    }

    /// ENOENT if there is no such rule.
    pub fn rule_del(&mut self, r: &Rule) -> io::Result<()> {
        let m = rule_msg(RTM_DELRULE, ACK, r)?;
        self.sock.request(m)
    }

    /// IPv4 rules, in kernel (priority) order.
    pub fn rules(&mut self) -> io::Result<Vec<Rule>> {
        self.sock.dump(
            || {
                let mut m = Msg::new(RTM_GETRULE, DUMP);
                m.push(&[AF_INET, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                m
            },
            only(RTM_NEWRULE, parse_rule),
        )
    }

    /// The neighbour entry for `addr` on interface `index`, if any.
    /// Create or replace the neighbour entry of `addr` on `index` with
    /// link-layer address `mac` in NUD state `state` (e.g. NUD_STALE: used
    /// at once, confirmed by the kernel on first use).
    pub fn neigh_replace(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        mac: [u8; 6],
        state: u16,
    ) -> io::Result<()> {
        self.neigh_new(index, addr, mac, state, NLM_F_REPLACE)
    }

    /// Create the neighbour entry of `addr` on `index` only if there is
    /// none (EEXIST otherwise): what the kernel learned stands.
    pub fn neigh_add(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        mac: [u8; 6],
        state: u16,
    ) -> io::Result<()> {
        self.neigh_new(index, addr, mac, state, NLM_F_EXCL)
    }

    fn neigh_new(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        mac: [u8; 6],
        state: u16,
        how: u16,
    ) -> io::Result<()> {
        let mut h = [0u8; 12];
        h[0] = AF_INET;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        h[8..10].copy_from_slice(&state.to_ne_bytes());
        let mut m = Msg::new(RTM_NEWNEIGH, ACK | NLM_F_CREATE | how);
        m.push(&h).attr_ipv4(NDA_DST, addr).attr(NDA_LLADDR, &mac);
        self.sock.request(m)
    }

    /// Removes the neighbour entry of `addr` on `index` (ENOENT if there
    /// is none). The kernel drops what waits in its ARP queue at once.
    pub fn neigh_del(&mut self, index: u32, addr: Ipv4Addr) -> io::Result<()> {
        let mut h = [0u8; 12];
        h[0] = AF_INET;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut m = Msg::new(RTM_DELNEIGH, ACK);
        m.push(&h).attr_ipv4(NDA_DST, addr);
        self.sock.request(m)
    }

    pub fn neigh_get(&mut self, index: u32, addr: Ipv4Addr) -> io::Result<Option<Neigh>> {
        let found = self.sock.dump(
            || {
                let mut m = Msg::new(RTM_GETNEIGH, DUMP);
                m.push(&[AF_INET, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                m
            },
            only(RTM_NEWNEIGH, |p| {
                Ok(parse_neigh(p)?
                    .filter(|(i, a, _)| *i == index && *a == addr)
                    .map(|(_, _, n)| n))
            }),
        )?;
        Ok(found.into_iter().next())
    }
}

/// An ipip device's link info: its ends, TTL, path-MTU discovery on (for
/// creating one, and for changing one, which takes them all again).
fn ipip_linkinfo(m: &mut Msg, local: Ipv4Addr, remote: Ipv4Addr, ttl: u8) {
    let info = m.nest(IFLA_LINKINFO);
    m.attr(IFLA_INFO_KIND, b"ipip");
    let data = m.nest(IFLA_INFO_DATA);
    m.attr_ipv4(IFLA_IPTUN_LOCAL, local)
        .attr_ipv4(IFLA_IPTUN_REMOTE, remote)
        .attr_u8(IFLA_IPTUN_TTL, ttl)
        .attr_u8(IFLA_IPTUN_PMTUDISC, 1);
    m.end_nest(data);
    m.end_nest(info);
}
