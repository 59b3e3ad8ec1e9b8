use super::*;
use crate::nlmsg::messages;

fn payload(mut m: Msg) -> Vec<u8> {
    let b = m.finish(1).to_vec();
    b[16..].to_vec()
}

/// Deterministic pseudo-random bytes (no dev-dependency for fuzzing).
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sample_route() -> Route {
    Route {
        table: 1000,
        dst: Ipv4Addr::new(10, 5, 0, 0),
        dst_len: 16,
        oif: Some(7),
        gateway: Some(Ipv4Addr::new(10, 0, 0, 2)),
        prefsrc: Some(Ipv4Addr::new(10, 0, 0, 1)),
        protocol: 153,
        kind: RouteType::Unicast,
        scope: RT_SCOPE_LINK,
        onlink: false,
        rto_min_ms: None,
        metric: None,
    }
}

#[test]
fn route_roundtrip() {
    let r = sample_route();
    let p = payload(route_msg(RTM_NEWROUTE, ACK, &r).unwrap());
    assert_eq!(p[4], RT_TABLE_UNSPEC as u8, "big table ids go in RTA_TABLE");
    assert_eq!(parse_route(&p).unwrap(), Some(r));
    let u = Route {
        table: 144,
        oif: None,
        gateway: None,
        prefsrc: None,
        kind: RouteType::Unreachable,
        ..r
    };
    let p = payload(route_msg(RTM_NEWROUTE, ACK, &u).unwrap());
    assert_eq!(p[4], 144);
    assert_eq!(parse_route(&p).unwrap(), Some(u));
    // A DHCP client's default route keeps its metric (part of its key).
    let m = Route {
        metric: Some(1002),
        ..r
    };
    let p = payload(route_msg(RTM_NEWROUTE, ACK, &m).unwrap());
    assert_eq!(parse_route(&p).unwrap(), Some(m));
    // Deletes match any scope and leave prefsrc out.
    let p = payload(route_msg(RTM_DELROUTE, ACK, &r).unwrap());
    let d = parse_route(&p).unwrap().unwrap();
    assert_eq!((d.scope, d.prefsrc), (RT_SCOPE_NOWHERE, None));
    assert!(route_msg(RTM_NEWROUTE, ACK, &Route { dst_len: 33, ..r }).is_err());
    // Non-IPv4 is skipped, not an error.
    let mut v6 = p.clone();
    v6[0] = libc::AF_INET6 as u8;
    assert_eq!(parse_route(&v6).unwrap(), None);
}

#[test]
fn rule_roundtrip() {
    let r = Rule {
        priority: 1001,
        table: 145,
        fwmark: Some((0x11, 0xff)),
        src: Some((Ipv4Addr::new(10, 0, 0, 0), 24)),
        protocol: 153,
    };
    let p = payload(rule_msg(RTM_NEWRULE, ACK, &r).unwrap());
    assert_eq!(parse_rule(&p).unwrap(), Some(r));
    let bare = Rule {
        fwmark: None,
        src: None,
        protocol: 0,
        ..r
    };
    let p = payload(rule_msg(RTM_NEWRULE, ACK, &bare).unwrap());
    assert_eq!(parse_rule(&p).unwrap(), Some(bare));
}

#[test]
fn link_addr_neigh_parse() {
    let mut m = Msg::new(RTM_NEWLINK, 0);
    m.push(&ifinfo(3, IFF_UP | IFF_LOWER_UP, 0))
        .attr_str(IFLA_IFNAME, "va")
        .attr_u32(IFLA_MTU, 1500)
        .attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]);
    let n = m.nest(IFLA_LINKINFO);
    m.attr_str(IFLA_INFO_KIND, "veth");
    m.end_nest(n);
    let l = parse_link(&payload(m)).unwrap();
    assert_eq!(
        l,
        LinkInfo {
            index: 3,
            name: "va".into(),
            kind: Some("veth".into()),
            up: true,
            carrier: true,
            mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: 1500
        }
    );
    // No name: malformed.
    let mut m = Msg::new(RTM_NEWLINK, 0);
    m.push(&ifinfo(3, 0, 0));
    assert!(parse_link(&payload(m)).is_err());

    let m = addr_msg(
        RTM_NEWADDR,
        0,
        4,
        Ipv4Addr::new(10, 0, 0, 1),
        24,
        IFA_F_NOPREFIXROUTE,
    )
    .unwrap();
    let a = parse_addr(&payload(m)).unwrap().unwrap();
    assert_eq!(
        a,
        AddrInfo {
            index: 4,
            addr: Ipv4Addr::new(10, 0, 0, 1),
            prefix_len: 24
        }
    );

    let mut h = [0u8; NDMSG_LEN];
    h[0] = AF_INET;
    h[4..8].copy_from_slice(&5u32.to_ne_bytes());
    h[8..10].copy_from_slice(&NUD_REACHABLE.to_ne_bytes());
    let mut m = Msg::new(RTM_NEWNEIGH, 0);
    m.push(&h)
        .attr_ipv4(NDA_DST, Ipv4Addr::new(10, 0, 0, 9))
        .attr(NDA_LLADDR, &[2, 0, 0, 0, 0, 9]);
    let whole = m.finish(1).to_vec();
    let msg = messages(&whole).next().unwrap().unwrap();
    // The monitor reports it as a neighbour event (simsd ends redirects).
    assert!(matches!(
        crate::monitor::decode(&msg).unwrap(),
        Some(crate::monitor::Event::NeighNew(5, a, _)) if a == Ipv4Addr::new(10, 0, 0, 9)
    ));
    let (i, d, n) = parse_neigh(&whole[16..]).unwrap().unwrap();
    assert_eq!((i, d), (5, Ipv4Addr::new(10, 0, 0, 9)));
    assert_eq!(
        n,
        Neigh {
            mac: Some([2, 0, 0, 0, 0, 9]),
            state: NUD_REACHABLE
        }
    );
}

#[test]
fn truncated_and_garbage_never_panic() {
    let mut samples = vec![
        payload(route_msg(RTM_NEWROUTE, ACK, &sample_route()).unwrap()),
        payload(
            rule_msg(
                RTM_NEWRULE,
                ACK,
                &Rule {
                    priority: 1,
                    table: 2,
                    fwmark: Some((1, 1)),
                    src: None,
                    protocol: 1,
                },
            )
            .unwrap(),
        ),
        payload(addr_msg(RTM_NEWADDR, 0, 1, Ipv4Addr::LOCALHOST, 8, 0).unwrap()),
    ];
    for seed in 1..200u64 {
        let mut g = garbage(seed, (seed as usize * 7) % 90);
        if let Some(f) = g.first_mut() {
            *f = AF_INET; // get past the family check into the attributes
        }
        samples.push(g);
    }
    for s in &samples {
        for cut in 0..=s.len() {
            let p = &s[..cut];
            let _ = parse_link(p);
            let _ = parse_addr(p);
            let _ = parse_route(p);
            let _ = parse_rule(p);
            let _ = parse_neigh(p);
            // messages() ends after its first error, so flatten() terminates.
            for m in messages(p).flatten() {
                let _ = crate::monitor::decode(&m);
            }
        }
    }
    // A truncated fixed header is an InvalidData error.
    let e = parse_route(&[AF_INET, 16, 0]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn datagrams_parse_message_by_message() {
    let r = sample_route();
    let mut data = route_msg(RTM_NEWROUTE, ACK, &r).unwrap().finish(1).to_vec();
    // An ack (NLMSG_ERROR with errno 0, then the request's header).
    let mut ack = Msg::new(crate::nlmsg::NLMSG_ERROR, 0);
    ack.push(&[0u8; 20]);
    data.extend_from_slice(ack.finish(2));
    let mut done = Msg::new(crate::nlmsg::NLMSG_DONE, 0);
    done.push(&[0u8; 4]);
    data.extend_from_slice(done.finish(3));
    let got: Vec<Reply> = parse_datagram(&data)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [Reply::Route(Some(r)), Reply::Error(0), Reply::Done]);
    // A framing error ends the list with it.
    data.extend_from_slice(&[0xff; 7]);
    let got = parse_datagram(&data);
    assert_eq!(got.len(), 4);
    assert!(got[3].is_err());
}
