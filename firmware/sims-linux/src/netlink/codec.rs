//! rtnetlink messages: the requests `Netlink` sends, built from the
//! types in `mod.rs`, and the parsers of the kernel's answers and events
//! (also used by `monitor`). Parsers never panic on what the kernel (or a
//! test) hands them: every length is checked.

use std::io;
use std::net::Ipv4Addr;

use super::*;
use crate::nlmsg::{
    after, attr_ipv4, attr_str, attr_u32, attr_u8, attrs, get_u16, get_u32, get_u8, invalid, Msg,
};

pub(super) fn bad_input(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

// ------------------------------------------------------------- messages

pub(super) fn ifinfo(index: u32, flags: u32, change: u32) -> [u8; IFINFO_LEN] {
    let mut h = [0u8; IFINFO_LEN];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

pub(super) fn addr_msg(
    ty: u16,
    flags: u16,
    index: u32,
    addr: Ipv4Addr,
    prefix_len: u8,
    ifa_flags: u32,
) -> io::Result<Msg> {
    if prefix_len > 32 {
        return Err(bad_input("prefix length > 32"));
    }
    let mut h = [AF_INET, prefix_len, 0, 0, 0, 0, 0, 0];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    let mut m = Msg::new(ty, flags);
    m.push(&h)
        .attr_ipv4(IFA_LOCAL, addr)
        .attr_ipv4(IFA_ADDRESS, addr);
    if ifa_flags != 0 {
        m.attr_u32(IFA_FLAGS, ifa_flags);
    }
    Ok(m)
}

/// The 8-bit table field can't hold big table ids; RTA_TABLE/FRA_TABLE always carry the real one.
pub(super) fn table8(table: u32) -> u8 {
    if table < 256 {
        table as u8
    } else {
        RT_TABLE_UNSPEC as u8
    }
}

pub(crate) fn route_msg(ty: u16, flags: u16, r: &Route) -> io::Result<Msg> {
    if r.dst_len > 32 {
        return Err(bad_input("prefix length > 32"));
    }
    let del = ty == RTM_DELROUTE;
    // A delete with scope NOWHERE matches any scope (as `ip route del` does).
    let scope = if del { RT_SCOPE_NOWHERE } else { r.scope };
    let mut h = [0u8; RTMSG_LEN];
    h[..8].copy_from_slice(&[
        AF_INET,
        r.dst_len,
        0,
        0,
        table8(r.table),
        r.protocol,
        scope,
        r.kind.to_u8(),
    ]);
    if r.onlink {
        h[8..12].copy_from_slice(&RTNH_F_ONLINK.to_ne_bytes());
    }
    let mut m = Msg::new(ty, flags);
    m.push(&h).attr_u32(RTA_TABLE, r.table);
    if r.dst_len > 0 {
        m.attr_ipv4(RTA_DST, r.dst);
    }
    if let Some(oif) = r.oif {
        m.attr_u32(RTA_OIF, oif);
    }
    if let Some(gw) = r.gateway {
        m.attr_ipv4(RTA_GATEWAY, gw);
    }
    if let Some(metric) = r.metric {
        m.attr_u32(RTA_PRIORITY, metric);
    }
    // prefsrc is left out of deletes so a stale source doesn't block removal.
    if let (Some(src), false) = (r.prefsrc, del) {
        m.attr_ipv4(RTA_PREFSRC, src);
    }
    if let (Some(ms), false) = (r.rto_min_ms, del) {
        // Locked: TCP takes a route's rto_min only if it is (tcp_rto_min()).
        let metrics = m.nest(RTA_METRICS);
        m.attr_u32(RTAX_LOCK, 1 << RTAX_RTO_MIN);
        m.attr_u32(RTAX_RTO_MIN, ms);
        m.end_nest(metrics);
    }
    Ok(m)
}

pub(crate) fn rule_msg(ty: u16, flags: u16, r: &Rule) -> io::Result<Msg> {
    let src_len = match r.src {
        Some((_, l)) if l > 32 => return Err(bad_input("prefix length > 32")),
        Some((_, l)) => l,
        None => 0,
    };
    let mut h = [0u8; RULE_LEN];
    h[..8].copy_from_slice(&[AF_INET, 0, src_len, 0, table8(r.table), 0, 0, FR_ACT_TO_TBL]);
    let mut m = Msg::new(ty, flags);
    m.push(&h)
        .attr_u32(FRA_PRIORITY, r.priority)
        .attr_u32(FRA_TABLE, r.table);
    if let Some((mark, mask)) = r.fwmark {
        m.attr_u32(FRA_FWMARK, mark).attr_u32(FRA_FWMASK, mask);
    }
    if let Some((src, _)) = r.src {
        m.attr_ipv4(FRA_SRC, src);
    }
    if r.protocol != 0 {
        m.attr_u8(FRA_PROTOCOL, r.protocol);
    }
    Ok(m)
}

// -------------------------------------------------------------- parsing

pub(crate) fn parse_link(p: &[u8]) -> io::Result<LinkInfo> {
    let index = get_u32(p, 4)?;
    let flags = get_u32(p, 8)?;
    let mut l = LinkInfo {
        index,
        name: String::new(),
        kind: None,
        up: flags & IFF_UP != 0,
        carrier: flags & IFF_LOWER_UP != 0,
        mac: None,
        mtu: 0,
    };
    let mut named = false;
    for a in attrs(after(p, IFINFO_LEN)?) {
        let (ty, v) = a?;
        match ty {
            IFLA_IFNAME => {
                l.name = attr_str(v);
                named = true;
            }
            IFLA_MTU => l.mtu = attr_u32(v)?,
            IFLA_ADDRESS => l.mac = <[u8; 6]>::try_from(v).ok(),
            IFLA_LINKINFO => {
                for a in attrs(v) {
                    let (ty, v) = a?;
                    if ty == IFLA_INFO_KIND {
                        l.kind = Some(attr_str(v));
                    }
                }
            }
            _ => {}
        }
    }
    if !named {
        return Err(invalid("link without IFLA_IFNAME"));
    }
    Ok(l)
}

/// None for non-IPv4 addresses.
pub(crate) fn parse_addr(p: &[u8]) -> io::Result<Option<AddrInfo>> {
    if get_u8(p, 0)? != AF_INET {
        return Ok(None);
    }
    let prefix_len = get_u8(p, 1)?;
    let index = get_u32(p, 4)?;
    let (mut local, mut address) = (None, None);
    for a in attrs(after(p, IFADDR_LEN)?) {
        let (ty, v) = a?;
        match ty {
            IFA_LOCAL => local = Some(attr_ipv4(v)?),
            IFA_ADDRESS => address = Some(attr_ipv4(v)?),
            _ => {}
        }
    }
    // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    let addr = local
        .or(address)
        .ok_or_else(|| invalid("address without IFA_LOCAL"))?;
    Ok(Some(AddrInfo {
        index,
        addr,
        prefix_len,
    }))
}

/// None for non-IPv4 routes.
pub(crate) fn parse_route(p: &[u8]) -> io::Result<Option<Route>> {
    if get_u8(p, 0)? != AF_INET {
        return Ok(None);
    }
    let dst_len = get_u8(p, 1)?;
    if dst_len > 32 {
        return Err(invalid("route prefix length > 32"));
    }
    let mut r = Route {
        table: u32::from(get_u8(p, 4)?),
        dst: Ipv4Addr::UNSPECIFIED,
        dst_len,
        oif: None,
        gateway: None,
        prefsrc: None,
        protocol: get_u8(p, 5)?,
        kind: RouteType::from_u8(get_u8(p, 7)?),
        scope: get_u8(p, 6)?,
        onlink: get_u32(p, 8)? & RTNH_F_ONLINK != 0,
        rto_min_ms: None,
        metric: None,
    };
    for a in attrs(after(p, RTMSG_LEN)?) {
        let (ty, v) = a?;
        match ty {
            RTA_METRICS => {
                for m in attrs(v) {
                    let (ty, v) = m?;
                    if ty == RTAX_RTO_MIN {
                        r.rto_min_ms = Some(attr_u32(v)?);
                    }
                }
            }
            RTA_TABLE => r.table = attr_u32(v)?,
            RTA_DST => r.dst = attr_ipv4(v)?,
            RTA_OIF => r.oif = Some(attr_u32(v)?),
            RTA_GATEWAY => r.gateway = Some(attr_ipv4(v)?),
            RTA_PREFSRC => r.prefsrc = Some(attr_ipv4(v)?),
            RTA_PRIORITY => r.metric = Some(attr_u32(v)?),
            _ => {}
        }
    }
    Ok(Some(r))
}

/// None for non-IPv4 rules.
pub(crate) fn parse_rule(p: &[u8]) -> io::Result<Option<Rule>> {
    if get_u8(p, 0)? != AF_INET {
        return Ok(None);
    }
    let src_len = get_u8(p, 2)?;
    if src_len > 32 {
        return Err(invalid("rule prefix length > 32"));
    }
    let mut r = Rule {
        priority: 0,
        table: u32::from(get_u8(p, 4)?),
        fwmark: None,
        src: None,
        protocol: 0,
    };
    let (mut mark, mut mask) = (None, None);
    for a in attrs(after(p, RULE_LEN)?) {
        let (ty, v) = a?;
        match ty {
            FRA_PRIORITY => r.priority = attr_u32(v)?,
            FRA_TABLE => r.table = attr_u32(v)?,
            FRA_FWMARK => mark = Some(attr_u32(v)?),
            FRA_FWMASK => mask = Some(attr_u32(v)?),
            FRA_SRC => r.src = Some((attr_ipv4(v)?, src_len)),
            FRA_PROTOCOL => r.protocol = attr_u8(v)?,
            _ => {}
        }
    }
    // The kernel's default mask for a bare fwmark is all ones.
    r.fwmark = mark.map(|m| (m, mask.unwrap_or(u32::MAX)));
    Ok(Some(r))
}

/// (ifindex, address, entry); None for non-IPv4 entries.
pub(crate) fn parse_neigh(p: &[u8]) -> io::Result<Option<(u32, Ipv4Addr, Neigh)>> {
    if get_u8(p, 0)? != AF_INET {
        return Ok(None);
    }
    let index = get_u32(p, 4)?;
    let state = get_u16(p, 8)?;
    let (mut dst, mut mac) = (None, None);
    for a in attrs(after(p, NDMSG_LEN)?) {
        let (ty, v) = a?;
        match ty {
            NDA_DST => dst = Some(attr_ipv4(v)?),
            NDA_LLADDR => mac = <[u8; 6]>::try_from(v).ok(),
            _ => {}
        }
    }
    Ok(dst.map(|d| (index, d, Neigh { mac, state })))
}

/// Runs `parse` on replies of type `ty` only.
pub(super) fn only<T>(
    ty: u16,
    parse: impl Fn(&[u8]) -> io::Result<Option<T>>,
) -> impl FnMut(&NlMsg) -> io::Result<Option<T>> {
    move |m| {
        if m.ty == ty {
            parse(m.payload)
        } else {
            Ok(None)
        }
    }
}

// --------------------------------------------------------------- socket
