//! Nonblocking rtnetlink multicast listener: link, IPv4 address, IPv4
//! route and IPv4 rule changes, and (if asked) neighbour changes. On overrun (ENOBUFS) or a malformed
//! event the caller is told to resync from dumps instead of trusting a
//! partial event stream.

use std::io;
use std::os::fd::RawFd;

use std::net::Ipv4Addr;

use crate::netlink::{
    parse_addr, parse_link, parse_neigh, parse_route, parse_rule, AddrInfo, LinkInfo, Neigh, Route,
    Rule, RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_DELRULE, RTM_NEWADDR, RTM_NEWLINK,
    RTM_NEWNEIGH, RTM_NEWROUTE, RTM_NEWRULE,
};
use crate::nlmsg::{messages, NlMsg, NlSocket, SockProtocol};

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
/// Group numbers above the legacy bitmask need NETLINK_ADD_MEMBERSHIP.
const RTNLGRP_IPV4_RULE: u32 = 8;

/// Room for a burst of ~10k route events between two polls.
const RCVBUF: i32 = 4 << 20;
/// Bounds one `recv` call under a continuous event storm.
const MAX_DATAGRAMS: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    LinkNew(LinkInfo),
    LinkDel(LinkInfo),
    AddrNew(AddrInfo),
    AddrDel(AddrInfo),
    RouteNew(Route),
    RouteDel(Route),
    RuleNew(Rule),
    RuleDel(Rule),
    /// A neighbour entry appeared or changed (interface index, address).
    NeighNew(u32, Ipv4Addr, Neigh),
}

pub struct Monitor {
    sock: NlSocket,
    overrun: bool,
}

/// Decodes one rtnetlink message; Ok(None) for messages we don't follow.
pub(crate) fn decode(m: &NlMsg) -> io::Result<Option<Event>> {
    let p = m.payload;
    Ok(match m.ty {
        RTM_NEWLINK => Some(Event::LinkNew(parse_link(p)?)),
        RTM_DELLINK => Some(Event::LinkDel(parse_link(p)?)),
        RTM_NEWADDR => parse_addr(p)?.map(Event::AddrNew),
        RTM_DELADDR => parse_addr(p)?.map(Event::AddrDel),
        RTM_NEWROUTE => parse_route(p)?.map(Event::RouteNew),
        RTM_DELROUTE => parse_route(p)?.map(Event::RouteDel),
        RTM_NEWRULE => parse_rule(p)?.map(Event::RuleNew),
        RTM_DELRULE => parse_rule(p)?.map(Event::RuleDel),
        RTM_NEWNEIGH => parse_neigh(p)?.map(|(i, a, n)| Event::NeighNew(i, a, n)),
        _ => None,
    })
}

impl Monitor {
    pub fn open() -> io::Result<Self> {
        Self::open_groups(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE)
    }

    /// Also neighbour changes: who appears on a LAN (simsd's agent stops
    /// redirecting an address another host takes).
    pub fn with_neighbours() -> io::Result<Self> {
        Self::open_groups(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_NEIGH)
    }

    fn open_groups(groups: u32) -> io::Result<Self> {
        let sock = NlSocket::open(SockProtocol::NetlinkRoute, groups, true)?;
        sock.add_membership(RTNLGRP_IPV4_RULE)?;
        sock.set_rcvbuf(RCVBUF);
        Ok(Monitor {
            sock,
            overrun: false,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.fd()
    }

    /// Drains everything available without blocking. After an overrun
    /// (or an undecodable event) returns no events and sets the flag read
    /// by [`Monitor::take_overrun`]: the caller must resync from dumps.
    pub fn recv(&mut self) -> io::Result<Vec<Event>> {
        let mut events = Vec::new();
        let mut lost = false;
        for _ in 0..MAX_DATAGRAMS {
            let data = match self.sock.recv() {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    log::warn!("rtnetlink monitor overrun; resync needed");
                    lost = true;
                    continue;
                }
                // A datagram larger than our buffer: dropped, so resync.
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    lost = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if lost {
                continue; // everything is stale until the resync
            }
            for m in messages(data) {
                match m.and_then(|m| decode(&m)) {
                    Ok(Some(ev)) => events.push(ev),
                    Ok(None) => {}
                    Err(e) => {
                        log::warn!("rtnetlink monitor: bad event ({e}); resync needed");
                        lost = true;
                        break;
                    }
                }
            }
        }
        if lost {
            self.overrun = true;
            events.clear();
        }
        Ok(events)
    }

    /// Lets a test provoke an overrun.
    #[cfg(test)]
    pub(crate) fn shrink_rcvbuf(&self) {
        self.sock.set_rcvbuf(1);
    }

    /// True once after an overrun: the caller should dump and reconcile.
    pub fn take_overrun(&mut self) -> bool {
        std::mem::take(&mut self.overrun)
    }
}
