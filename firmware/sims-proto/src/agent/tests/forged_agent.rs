//! A guest G on B's LAN that poses as the agent (its own advertisement,
//! the node's solicitation answered, so the node seals for G), or that
//! forges the unsealed refusals an agent sends before it checks a seal.
//! What G may cost the node is the registration with G; never an address
//! it holds elsewhere, nor the real agent's answer. Each test failed
//! before its fix (the review of protocol v3, findings F1, F1b, F3).

use super::attacks::refusal_of;
use super::*;
use crate::msg::{Credential, RegistrationReply};

const G_IP: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 99);

/// G advertises itself (as "ma-b", with a run key of its own), answers
/// the node's solicitation and takes its sealed registration. Returns
/// G's session with the node and the registration.
fn pose_as_agent(w: &mut World, seed: u8) -> ([u8; 32], Registration) {
    let (g_sk, g_pk) = msg::agent_dh_keys([seed; 32]).unwrap();
    let me = w.node.current().unwrap();
    let gsrc = SocketAddrV4::new(G_IP, 4434);
    let adv = |solicited| {
        Message::Advertisement(msg::Advertisement {
            agent: AgentId::from("ma-b"),
            provider: msg::Provider::new(),
            endpoint: [1, 2, 3, 4],
            dh: g_pk,
            instance: 77,
            seq: 1,
            lifetime_s: 60,
            solicited,
        })
    };
    let mut acts = Vec::new();
    let d = msg::encode(&adv(None), None).unwrap();
    w.node
        .handle_datagram(w.time(), gsrc, Ipv4Addr::BROADCAST, &d, &mut acts);
    let nonce = acts
        .iter()
        .find_map(|a| match a {
            node::Action::Broadcast { data } => match msg::decode(data) {
                Ok(Message::Solicitation(s)) => Some(s.nonce),
                _ => None,
            },
            _ => None,
        })
        .expect("the node solicits G");
    let solicited = Some(msg::Solicited {
        nonce,
        cookie: [7; 16],
    });
    let d = msg::encode(&adv(solicited), None).unwrap();
    let mut acts = Vec::new();
    w.node.handle_datagram(w.time(), gsrc, me, &d, &mut acts);
    let reg = acts
        .iter()
        .find_map(|a| match a {
            node::Action::Send { data, .. } => match msg::decode(data) {
                Ok(Message::Registration(r)) => Some(r),
                _ => None,
            },
            _ => None,
        })
        .expect("the node registers with G");
    let s = msg::agent_session(&g_sk, &g_pk, w.node.key()).unwrap();
    (s, reg)
}

/// G's reply, sealed under its session with the node.
fn reply_from_g(w: &mut World, session: &[u8; 32], r: RegistrationReply) -> Vec<node::Action> {
    let mut d = msg::encode(&Message::RegistrationReply(r), None).unwrap();
    msg::seal_reply(&mut d, session);
    let mut acts = Vec::new();
    let me = w.node.current().unwrap();
    let gsrc = SocketAddrV4::new(G_IP, 4434);
    w.node.handle_datagram(w.time(), gsrc, me, &d, &mut acts);
    acts
}

/// A node at B with a live session on its address from A, relayed.
pub(super) fn relayed_at_b() -> (World, Ipv4Addr) {
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    let x = node_addr(A);
    w.census(&[(x, 1)]);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    assert!(w.binding(B, x).is_some_and(|b| !b.pending));
    (w, x)
}

/// F1: G's sealed reply carries a "credential" for the node's relayed
/// address from A. The node must not take it: a credential is only ever
/// for the address the node has here, from the agent it registered with.
/// Before the fix it replaced A's credential and key, and A refused the
/// next refresh: the node lost its relayed sessions.
#[test]
fn a_credential_for_another_address_or_issuer_is_not_taken() {
    let (mut w, x) = relayed_at_b();
    let before = w
        .node
        .bindings()
        .iter()
        .find(|b| b.addr() == x)
        .map(|b| (b.cred.clone(), *b.cred_key()))
        .unwrap();
    let forged = |req_id, addr: Ipv4Addr, issuer: AgentId| RegistrationReply {
        req_id,
        status: Status::Ok,
        cred: Some(Credential {
            addr: addr.octets(),
            issuer,
            serial: 1,
        }),
        lifetime_s: 60,
        results: heapless::Vec::new(),
        cookie: None,
        cred_key: [0; 32],
        mac: [0; 16],
    };
    // The old address in A's name; and the current one in A's name, each
    // answering a registration of its own (a reply ends the one it answers).
    for (seed, addr) in [(0x42, x), (0x45, node_addr(B))] {
        let (s, reg) = pose_as_agent(&mut w, seed);
        reply_from_g(&mut w, &s, forged(reg.req_id, addr, id(A)));
    }
    let after = w
        .node
        .bindings()
        .iter()
        .find(|b| b.addr() == x)
        .map(|b| (b.cred.clone(), *b.cred_key()));
    assert_eq!(after, Some(before), "A's credential and key kept");
    assert!(
        !w.node
            .bindings()
            .iter()
            .any(|b| b.cred.issuer == id(A) && b.addr() == node_addr(B)),
        "no credential for B's address in A's name"
    );
    // The real B advertises again: the node refreshes there, A accepts it.
    w.tick(25_000);
    w.census(&[(x, 1)]);
    assert!(
        w.binding(B, x).is_some_and(|b| !b.pending),
        "B still relays"
    );
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
}

/// F1b: two results for one address in one reply ([Ok, refusal]): the Ok
/// made G's session "the one relaying it", so the refusal dropped the
/// address at once. Only the first result per address counts, and a
/// relayed address stays with the session that relayed it.
#[test]
fn duplicate_results_do_not_drop_a_relayed_address() {
    let (mut w, x) = relayed_at_b();
    let (s, reg) = pose_as_agent(&mut w, 0x43);
    let mut r = refusal_of(reg.req_id, x, Status::Ok);
    let _ = r.results.push(msg::BindingResult {
        addr: x.octets(),
        status: Status::UnknownCredential,
    });
    reply_from_g(&mut w, &s, r);
    let mut acts = Vec::new();
    w.node.handle_timeout(w.time(), &mut acts);
    assert!(!acts.contains(&node::Action::DropAddress(x)), "{acts:?}");
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    // A refusal alone from G (not the session relaying x) is not enough
    // either: the node asks again and keeps the address meanwhile.
    let (s, reg) = pose_as_agent(&mut w, 0x44);
    reply_from_g(
        &mut w,
        &s,
        refusal_of(reg.req_id, x, Status::UnknownCredential),
    );
    let mut acts = Vec::new();
    w.node.handle_timeout(w.time(), &mut acts);
    assert!(!acts.contains(&node::Action::DropAddress(x)), "{acts:?}");
}

/// F3: an eavesdropper who saw the registration's req_id sends an
/// unsealed NoCapacity (with a cookie of its own). Before the fix the
/// node cancelled its registration, ignored the agent's real answer and
/// kept the forged cookie. Unsealed refusals change nothing now; the
/// real answer is taken.
#[test]
fn an_unsealed_refusal_does_not_cancel_the_registration() {
    let mut w = World::full();
    w.move_to(A);
    w.at = B;
    let mut acts = Vec::new();
    w.node.set_address(w.time(), None, &mut acts);
    w.node.set_address(w.time(), Some(node_addr(B)), &mut acts);
    let me = SocketAddrV4::new(node_addr(B), 4434);
    let from_b = SocketAddrV4::new(lan_gw(B), 4434);
    // B answers the solicitation; the registration is held back.
    let solicitation = acts
        .iter()
        .find_map(|a| match a {
            node::Action::Broadcast { data } => Some(data.to_vec()),
            _ => None,
        })
        .expect("a solicitation");
    let mut reg = None;
    for a in w.feed(B, me, true, &solicitation) {
        if let Action::Send { dst, data } = a {
            let mut acts = Vec::new();
            w.node
                .handle_datagram(w.time(), from_b, *dst.ip(), &data, &mut acts);
            for a in acts {
                if let node::Action::Send { data, .. } = a {
                    reg = Some(data.to_vec());
                }
            }
        }
    }
    let reg = reg.expect("a registration");
    let Ok(Message::Registration(r)) = msg::decode(&reg) else {
        panic!("not a registration")
    };
    for status in [Status::NoCapacity, Status::BadCookie] {
        let mut f = refusal_of(r.req_id, node_addr(A), Status::Ok);
        f.results.clear();
        f.status = status;
        f.cookie = Some([0xee; 16]);
        let d = msg::encode(&Message::RegistrationReply(f), None).unwrap();
        let mut acts = Vec::new();
        w.node
            .handle_datagram(w.time(), from_b, node_addr(B), &d, &mut acts);
    }
    // The registration reaches B; its sealed answer is taken.
    w.deliver(vec![(B, me, reg)]);
    assert_eq!(w.node_state(node_addr(A)), Some(BindingState::Relayed));
    assert!(w.binding(B, node_addr(A)).is_some_and(|b| !b.pending));
    assert!(w.node.is_registered());
}

/// G replays the real agent's advertisement (same id, run and key) from
/// its own address: the node keeps sending to the agent's address.
/// Before the fix it took G's address for the agent's, and its
/// registrations went to G (review of v3).
#[test]
fn a_replayed_advertisement_does_not_move_the_agent() {
    let (mut w, x) = relayed_at_b();
    let real = w.node.agent().cloned().unwrap();
    let adv = Message::Advertisement(msg::Advertisement {
        agent: real.id.clone(),
        provider: msg::Provider::new(),
        endpoint: wan(B).octets(),
        dh: real.dh,
        instance: real.instance,
        seq: 99,
        lifetime_s: 60,
        solicited: None,
    });
    let d = msg::encode(&adv, None).unwrap();
    let mut acts = Vec::new();
    let gsrc = SocketAddrV4::new(G_IP, 4434);
    w.node
        .handle_datagram(w.time(), gsrc, Ipv4Addr::BROADCAST, &d, &mut acts);
    assert_eq!(w.node.agent().map(|a| a.src), Some(real.src));
    w.tick(25_000);
    w.census(&[(x, 1)]);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
}
