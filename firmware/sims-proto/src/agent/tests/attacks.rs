//! The attacks of the security review (issue 9), each tried as a guest on
//! the LAN, a forger of agent answers, a flooder or a replayer would: over
//! real encoded datagrams, against the agents and the node of the world
//! in `tests.rs`. Each test failed on the protocol as it was before
//! (version 1); what it checks is in its name.

use super::*;
use crate::msg::{Cookie, OldBinding, RegistrationReply, Release, TunnelRelease};
use ed25519_compact::{KeyPair, Seed};

/// A guest M on A's LAN with a key of its own.
const M_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 66);
pub(super) const M_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x66];

pub(super) fn guest_key(seed: u8) -> KeyPair {
    KeyPair::from_seed(Seed::new([seed; 32]))
}

/// A registration by `node`, sealed under its session with the agent
/// whose run key is `dh` (as any host with a key of its own can).
#[allow(clippy::too_many_arguments)]
pub(super) fn registration(
    dh: [u8; 32],
    req_id: u64,
    node: &KeyPair,
    addr: Ipv4Addr,
    mac: [u8; 6],
    seq: u64,
    cookie: Cookie,
    bindings: Vec<OldBinding>,
) -> Vec<u8> {
    let m = Message::Registration(Registration {
        req_id,
        node: *node.pk,
        addr: addr.octets(),
        mac,
        seq,
        cookie,
        bindings: bindings.into_iter().collect(),
        tag: [0; 16],
    });
    let mut d = msg::encode(&m, None).unwrap();
    msg::seal_reply(&mut d, &msg::node_session(&node.sk, &node.pk, &dh).unwrap());
    d.to_vec()
}

/// A reply (unsealed) that refuses `addr` with `status`: what a forger
/// sends to make the node drop an address.
pub(super) fn refusal_of(req_id: u64, addr: Ipv4Addr, status: Status) -> RegistrationReply {
    let mut r = RegistrationReply {
        req_id,
        status: Status::Ok,
        cred: None,
        lifetime_s: 60,
        results: heapless::Vec::new(),
        cookie: None,
        cred_key: [0; 32],
        mac: [0; 16],
    };
    let _ = r.results.push(msg::BindingResult {
        addr: addr.octets(),
        status,
    });
    r
}

/// Agent `i`'s answers to a datagram from `src` (nothing delivered).
fn answers(w: &mut World, i: usize, src: Ipv4Addr, data: &[u8]) -> Vec<(Ipv4Addr, Message)> {
    w.feed(i, SocketAddrV4::new(src, 4434), true, data)
        .into_iter()
        .filter_map(|a| match a {
            Action::Send { dst, data } => msg::decode(&data).ok().map(|m| (*dst.ip(), m)),
            _ => None,
        })
        .collect()
}

fn reply_status(answers: &[(Ipv4Addr, Message)]) -> Option<(Ipv4Addr, RegistrationReply)> {
    answers.iter().find_map(|(d, m)| match m {
        Message::RegistrationReply(r) => Some((*d, r.clone())),
        _ => None,
    })
}

/// Attack 1: guest M registers victim X's address with a spoofed source
/// (X's MAC or its own). Before: M got a credential for X (with a
/// predictable serial), so that an accomplice could redirect X's traffic.
#[test]
fn guest_cannot_take_another_guests_address() {
    let mut w = World::full();
    w.move_to(A);
    let x = node_addr(A);
    let before = w.agents[A].creds.get(&u32::from(x)).cloned().unwrap();
    let m = guest_key(0x66);
    // M's own cookie, for its own address, is worth nothing for X's.
    let own = w.cookie(A, M_ADDR, &m.pk);
    for (cookie, mac) in [([0; 16], MN_MAC), (own, MN_MAC), (own, M_MAC)] {
        let d = registration(w.agents[A].dh_public(), 77, &m, x, mac, 1, cookie, vec![]);
        let got = answers(&mut w, A, x, &d);
        let (to, r) = reply_status(&got).unwrap();
        assert_eq!((r.status, r.cred.is_none()), (Status::BadCookie, true));
        assert_eq!(to, x, "a refusal goes to the real holder, never to M");
    }
    // A solicitation from a spoofed X brings a cookie only to X.
    let sol = Message::Solicitation(msg::Solicitation {
        nonce: 5,
        node: *m.pk,
    });
    let got = answers(&mut w, A, x, &msg::encode(&sol, None).unwrap());
    assert!(got.iter().all(|(to, _)| *to == x));
    // The record of X is untouched: same key, MAC, serial.
    assert_eq!(w.agents[A].creds.get(&u32::from(x)), Some(&before));
    assert!(w.agents[A].counters.rx_bad_cookie >= 3);
    // A MAC the LAN does not know for the address is refused even with a
    // valid cookie (the neighbour table says who holds it).
    w.lans[A] = Lan(Some((x, MN_MAC)));
    let k = guest_key(9); // the node's own seed: a valid cookie for it
    let c = w.cookie(A, x, &k.pk);
    let d = registration(w.agents[A].dh_public(), 78, &k, x, M_MAC, 50, c, vec![]);
    let (_, r) = reply_status(&answers(&mut w, A, x, &d)).unwrap();
    assert_eq!(r.status, Status::AddressInUse);
    assert_eq!(w.agents[A].creds.get(&u32::from(x)), Some(&before));
    // X itself carries on: it moves, and its address is relayed.
    w.move_to(B);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
}

/// Serials and request ids are unpredictable: two runs with other seeds
/// issue unrelated serials, and consecutive ids are not neighbours.
#[test]
fn serials_and_request_ids_are_unpredictable() {
    let mut serials = Vec::new();
    let mut ids = Vec::new();
    for seed in [1u8, 2] {
        let mut w = World::full();
        w.agents[A] = Agent::new(config(A, &[B, C]), [seed; 32]);
        w.node = Node::new(NodeConfig::default(), [9; 32], MN_MAC, [seed; 32]);
        w.move_to(A);
        serials.push(w.node.bindings()[0].cred.serial);
        w.move_to(B);
        ids.extend(w.wire.iter().filter_map(|(_, _, d)| match msg::decode(d) {
            Ok(Message::TunnelRequest(a)) => Some(a.msg.req_id),
            _ => None,
        }));
    }
    ids.sort_unstable();
    ids.dedup(); // a request resent after a challenge keeps its id
    assert_ne!(serials[0], serials[1]);
    assert!(
        serials.iter().all(|s| *s > u64::from(u32::MAX)),
        "{serials:?}"
    );
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            assert!(
                a.abs_diff(*b) > 1 << 32,
                "ids {a:x} and {b:x} are guessable"
            );
        }
    }
}

/// Attack 2: forged agent answers. Before: any RegistrationReply with the
/// next request id (nonce + 1) was taken, and could make the node drop a
/// relayed address; any advertisement was believed.
#[test]
fn node_ignores_forged_agent_answers() {
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    let x = node_addr(A);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    // The node refreshes; its registration is outstanding (answers lost).
    let saved = w.drop_peer_traffic;
    w.drop_peer_traffic = true;
    w.tick(21_000);
    w.drop_peer_traffic = saved;
    let mut refusal = refusal_of(0, x, Status::AddressInUse);
    let ignored = w.node.counters.rx_ignored;
    let agent = SocketAddrV4::new(lan_gw(B), 4434);
    let elsewhere = SocketAddrV4::new(Ipv4Addr::new(10, 2, 0, 99), 4434);
    for (req_id, src, dst) in [
        (1, agent, node_addr(B)),            // a guessed id
        (u64::MAX, elsewhere, node_addr(B)), // not from the agent
        (12345, agent, x),                   // through the held address
        (12345, agent, Ipv4Addr::BROADCAST), // broadcast
    ] {
        refusal.req_id = req_id;
        let d = msg::encode(&Message::RegistrationReply(refusal.clone()), None).unwrap();
        let mut acts = Vec::new();
        w.node.handle_datagram(w.time(), src, dst, &d, &mut acts);
        assert!(acts.is_empty());
    }
    assert_eq!(w.node.counters.rx_ignored, ignored + 4);
    // A unicast advertisement that answers no solicitation of ours.
    let adv = Message::Advertisement(msg::Advertisement {
        agent: AgentId::from("evil"),
        provider: msg::Provider::new(),
        endpoint: [1, 2, 3, 4],
        dh: [9; 32],
        instance: 1,
        seq: 1,
        lifetime_s: 60,
        solicited: Some(msg::Solicited {
            nonce: 0,
            cookie: [0; 16],
        }),
    });
    let d = msg::encode(&adv, None).unwrap();
    let mut acts = Vec::new();
    w.node
        .handle_datagram(w.time(), elsewhere, node_addr(B), &d, &mut acts);
    assert!(
        acts.is_empty(),
        "no registration sent to a forger: {acts:?}"
    );
    assert_eq!(w.node.agent().map(|a| a.id.as_str()), Some("ma-b"));
    w.tick(3000);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
}

/// Attack 3: lock-out. Before: ~6 registrations a second from one guest
/// filled the pending table and every other node was refused NoCapacity.
#[test]
fn one_guests_flood_does_not_lock_out_a_moving_node() {
    let mut w = World::full();
    w.move_to(A);
    let guest = Ipv4Addr::new(10, 2, 0, 66);
    let g = guest_key(0x77);
    let cookie = w.cookie(B, guest, &g.pk);
    // Each flood datagram claims an address of A's LAN with a proof for a
    // credential A never issued, in a registration sealed by the guest's
    // own key: only A can tell the proof is worth nothing, so B would ask
    // A each time.
    let mut n = 0u64;
    let mut flood = |w: &mut World, count: u64| {
        for _ in 0..count {
            n += 1;
            let cred = Credential {
                addr: [10, 1, 0, (n % 200) as u8 + 10],
                issuer: id(A),
                serial: n,
            };
            let input = ProofInput::new(ProofDomain::Redirect, &cred, "ma-b", guest.octets(), n);
            let proof = msg::prove(&[n as u8; 32], &input).unwrap();
            let d = registration(
                w.agents[B].dh_public(),
                n,
                &g,
                guest,
                M_MAC,
                n,
                cookie,
                vec![OldBinding { cred, proof }],
            );
            w.deliver(vec![(B, SocketAddrV4::new(guest, 4434), d)]);
        }
    };
    for _ in 0..20 {
        flood(&mut w, 50);
        w.tick(50);
    }
    // The node moves to B in the middle of the flood.
    w.move_to(B);
    flood(&mut w, 50);
    w.tick(500);
    assert_eq!(w.node_state(node_addr(A)), Some(BindingState::Relayed));
    assert!(w.agents[B].counters.table_full + w.agents[B].counters.rate_limited > 100);
    // Verifications stayed within the guest's budget (32 + 16/s).
    let secs = 2;
    assert!(
        w.agents[B].counters.verifications <= 32 + 16 * secs + 8,
        "{:?}",
        w.agents[B].counters
    );
}

/// Attack 4: CPU. Before: each Release for a visitor binding cost an
/// Ed25519 verification, at whatever rate an attacker sent them.
#[test]
fn releases_cost_no_verification_beyond_budget() {
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    let x = node_addr(A);
    let cred = w.node.bindings()[0].cred.clone();
    let node_key = *w.node.key();
    let before = w.agents[B].counters.verifications;
    // Spoofed from the node's address, without its cookie: no verification.
    // From the attacker's own address with its own cookie: within budget.
    let attacker = Ipv4Addr::new(10, 2, 0, 66);
    let own = w.cookie(B, attacker, &node_key);
    for i in 0..10_000u64 {
        let (from, cookie) = if i % 2 == 0 {
            (node_addr(B), [0; 16])
        } else {
            (attacker, own)
        };
        let rel = Message::Release(Release {
            req_id: i,
            node: node_key,
            cred: cred.clone(),
            node_addr: from.octets(),
            seq: 1 << 40,
            cookie,
            tag: [7; 16],
        });
        let d = msg::encode(&rel, None).unwrap();
        answers(&mut w, B, from, &d);
    }
    let spent = w.agents[B].counters.verifications - before;
    assert!(
        spent <= 32,
        "{spent} verifications for 10,000 forged releases"
    );
    assert!(w.binding(B, x).is_some(), "the binding stays");
}

/// Attack 5: replays across restarts, without clocks. Before: an agent
/// whose boot counter went back was refused by its peers, and after a
/// restart only a 120 s clock window stood against replays.
#[test]
fn peers_need_no_clock_and_refuse_replays_across_restarts() {
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    let x = node_addr(A);
    let captured: Vec<Vec<u8>> = w
        .wire
        .iter()
        .filter(|(f, t, _)| *f == B && *t == A)
        .map(|(_, _, d)| d.clone())
        .collect();
    assert!(!captured.is_empty());
    // B restarts with its state (and a new run); A forgets nothing.
    let saved = w.agents[B].save(w.time());
    let mut b2 = Agent::new(config(B, &[A, C]), [0xb2; 32]);
    assert!(b2.restore(w.time(), &saved, &mut Vec::new()));
    w.agents[B] = b2;
    // The node re-registers at B's new run (its advertisement): the
    // refresh reaches A at once, challenge included.
    w.tick(1100);
    assert_eq!(w.binding(B, x).map(|b| b.pending), Some(false));
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    // Every captured request of B's old run, replayed: challenged, and
    // nothing changes.
    let home = w.binding(A, x).cloned();
    let challenged = w.agents[A].counters.rx_challenged;
    for d in captured.clone() {
        w.deliver(vec![(A, SocketAddrV4::new(wan(B), 4434), d)]);
    }
    assert!(w.agents[A].counters.rx_challenged > challenged);
    assert_eq!(
        w.binding(A, x).map(|b| (b.peer, b.role)),
        home.map(|b| (b.peer, b.role))
    );
    // A is wiped (a reboot with an empty state directory): new handovers
    // between A and B work at once, whatever the clocks say.
    w.agents[A] = Agent::new(config(A, &[B, C]), [0xa2; 32]);
    w.move_to(A);
    w.move_to(B);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    // Replays of the old runs still change nothing.
    let refused = w.agents[A].counters.rx_challenged + w.agents[A].counters.rx_replay;
    for d in captured {
        w.deliver(vec![(A, SocketAddrV4::new(wan(B), 4434), d)]);
    }
    assert!(w.agents[A].counters.rx_challenged + w.agents[A].counters.rx_replay > refused);
    assert_eq!(w.binding(A, x).map(|b| b.peer), Some(0));
}

/// Attack 6: a restart in the middle of a handover. Before: the issuer
/// forgot the request it had answered and refused its retransmission as a
/// replay; a current agent marked a never-confirmed binding active.
#[test]
fn restart_mid_handover_ends_consistent() {
    // The issuer answers, the answer is lost, the issuer restarts.
    let mut w = World::full();
    w.move_to(A);
    w.drop_peer_traffic = true;
    w.move_to(B);
    w.drop_peer_traffic = false;
    let x = node_addr(A);
    // Deliver B's request to A by hand, drop A's answer.
    let req = w
        .wire
        .iter()
        .rev()
        .find(|(f, t, d)| *f == B && *t == A && d[5] == 0x11)
        .map(|(_, _, d)| d.clone())
        .unwrap();
    w.feed(A, SocketAddrV4::new(wan(B), 4434), false, &req);
    // (A challenged the first sight of B's run; answer it like B would.)
    let saved = w.agents[A].save(w.time());
    let mut a2 = Agent::new(config(A, &[B, C]), [0xa3; 32]);
    assert!(a2.restore(w.time(), &saved, &mut Vec::new()));
    w.agents[A] = a2;
    w.tick(2000);
    assert_eq!(w.binding(B, x).map(|b| b.pending), Some(false), "B active");
    assert_eq!(
        w.binding(A, x).map(|b| b.role),
        Some(Role::Home),
        "A redirects"
    );
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));

    // The current agent restarts before the issuer's answer.
    let mut w = World::full();
    w.move_to(A);
    w.drop_peer_traffic = true;
    w.move_to(B);
    assert_eq!(w.binding(B, x).map(|b| b.pending), Some(true));
    let saved = w.agents[B].save(w.time());
    let mut b2 = Agent::new(config(B, &[A, C]), [0xb3; 32]);
    let mut acts = Vec::new();
    assert!(b2.restore(w.time(), &saved, &mut acts));
    assert!(
        b2.bindings().all(|(a, _)| a != x),
        "a pending binding is not restored"
    );
    w.agents[B] = b2;
    w.drop_peer_traffic = false;
    // The node's retransmission asks the new run.
    w.tick(3000);
    assert_eq!(w.binding(B, x).map(|b| b.pending), Some(false));
    assert_eq!(w.binding(A, x).map(|b| b.peer), Some(0));
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));

    // The node restarts mid-handover: it registers again and completes.
    let mut w = World::full();
    w.move_to(A);
    w.drop_peer_traffic = true;
    w.move_to(B);
    let saved = w.node.save();
    w.node = Node::restore(NodeConfig::default(), &saved, MN_MAC, [0x44; 32]).unwrap();
    w.drop_peer_traffic = false;
    let mut acts = Vec::new();
    w.node.set_address(w.time(), Some(node_addr(B)), &mut acts);
    w.run_node(acts);
    w.tick(3000);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    assert_eq!(w.binding(A, x).map(|b| b.peer), Some(0));
}

/// Item 9: a restored entry is validated like a message. Before: any
/// address was restored, and a huge lifetime overflowed `now + left`.
#[test]
fn restore_validates_entries() {
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    // A's state restored by an agent whose LAN is elsewhere: nothing of it.
    let saved = w.agents[A].save(w.time());
    let mut cfg = config(A, &[B, C]);
    cfg.lan_prefixes = vec![Prefix::new(Ipv4Addr::new(192, 168, 9, 0), 24).unwrap()];
    let mut other = Agent::new(cfg, [3; 32]);
    let mut out = Vec::new();
    assert!(other.restore(w.time(), &saved, &mut out));
    assert!(out.is_empty() && other.bindings.is_empty() && other.creds.is_empty());
    // A lifetime of u64::MAX ms is cut to the configured one.
    let (k, b) = w.agents[A]
        .bindings
        .iter()
        .next()
        .map(|(k, b)| (*k, b.clone()))
        .unwrap();
    let mut wr = crate::persist::Writer::new(crate::persist::Kind::Agent);
    wr.put(&1usize);
    wr.put(&(k.to_be_bytes(), &b, u64::MAX, id(B)));
    wr.put(&0usize);
    // Peers' moves to nowhere (loopback, 0.0.0.0) are not restored.
    wr.put(&2usize);
    wr.put(&(id(B), wan(B).octets(), [127u8, 0, 0, 1]));
    wr.put(&(id(C), wan(C).octets(), [0u8; 4]));
    let data = wr.finish();
    let mut fresh = Agent::new(config(A, &[B, C]), [4; 32]);
    assert!(fresh.restore(Now::ms(u64::MAX - 5), &data, &mut Vec::new()));
    let left = fresh.bindings.values().next().map(|b| b.expires_ms);
    assert_eq!(left, Some(u64::MAX), "saturated, no overflow");
    let mut fresh = Agent::new(config(A, &[B, C]), [4; 32]);
    let mut out = Vec::new();
    assert!(fresh.restore(w.time(), &data, &mut out));
    assert!(!out.iter().any(|a| matches!(a, Action::PeerEndpoint { .. })));
    assert_eq!(
        (fresh.peer_endpoint(0), fresh.peer_endpoint(1)),
        (wan(B), wan(C))
    );
    let b = fresh.bindings.values().next().unwrap();
    assert!(b.expires_ms <= w.now + 60_000);
}

/// Item 7: an address is never both redirected and another host's. Before:
/// a refused refresh left the redirect for its whole lifetime, and a host
/// appearing with the address changed nothing.
#[test]
fn another_host_on_the_address_ends_the_redirect() {
    // The address appears on A's LAN at another MAC (a neighbour event).
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    let x = node_addr(A);
    assert!(w.binding(A, x).is_some());
    let mut out = Vec::new();
    let now = w.time();
    w.agents[A].lan_neighbour(now, x, MN_MAC, &mut out);
    assert!(out.is_empty(), "the node's own MAC changes nothing");
    w.agents[A].lan_neighbour(now, x, [0xaa; 6], &mut out);
    let mut next = Vec::new();
    w.route(A, out, &mut next);
    w.deliver(next);
    assert!(w.binding(A, x).is_none(), "redirect ended at once");
    assert!(w.binding(B, x).is_none(), "and the peer told");
    assert_eq!(w.agents[A].counters.redirects_ended, 1);
    // The node learns it at its next refresh and drops the address.
    w.lans[A] = Lan(Some((x, [0xaa; 6])));
    w.tick(21_000);
    assert_eq!(w.node_state(x), None);

    // A refresh refused by the holder check removes the redirect too.
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    w.lans[A] = Lan(Some((x, [0xaa; 6])));
    w.tick(21_000);
    assert!(w.binding(A, x).is_none(), "no redirect left behind");
    assert!(w.binding(B, x).is_none());
    assert_eq!(w.node_state(x), None, "the node was told");
    assert_eq!(w.tunnel_balance(A), 0);

    // Without the credential (a state file of an older version keeps
    // none): the redirect's own record of the node's MAC decides. Failed
    // before (review of v3): the redirect stayed.
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    w.agents[A].creds.remove(&u32::from(x));
    let mut out = Vec::new();
    let now = w.time();
    w.agents[A].lan_neighbour(now, x, MN_MAC, &mut out);
    assert!(out.is_empty(), "the node's own MAC changes nothing");
    w.agents[A].lan_neighbour(now, x, [0xaa; 6], &mut out);
    assert!(w.binding(A, x).is_none(), "redirect ended");
}

/// Fault: a kernel change that fails is never reported as success. Before:
/// the issuer answered Ok (and the current agent asked the issuer) whatever
/// the platform did with the binding.
#[test]
fn failed_kernel_change_is_not_reported_as_success() {
    let x = node_addr(A);
    // The issuer's kernel refuses the redirect.
    let mut w = World::full();
    w.move_to(A);
    w.kernel_fails[A] = true;
    w.move_to(B);
    assert!(w.binding(A, x).is_none(), "nothing half-installed at A");
    assert!(w.binding(B, x).is_none(), "B undid its side on the refusal");
    assert_eq!(
        w.node_state(x),
        Some(BindingState::Pending),
        "kept, retried"
    );
    assert_eq!(w.tunnel_balance(A), 0);
    assert!(w.agents[A].counters.kernel_failed > 0);
    // The kernel works again: the node's retry completes the handover.
    w.kernel_fails[A] = false;
    w.tick(2500);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));

    // The current agent's kernel refuses the visitor side: the issuer is
    // not even asked.
    let mut w = World::full();
    w.move_to(A);
    w.kernel_fails[B] = true;
    let asked = w.wire.len();
    w.move_to(B);
    assert!(w.wire[asked..]
        .iter()
        .all(|(f, t, _)| !(*f == B && *t == A)));
    assert!(w.binding(A, x).is_none() && w.binding(B, x).is_none());
    assert_eq!(w.node_state(x), Some(BindingState::Pending));
    assert_eq!(w.tunnel_balance(B), 0);
}

/// Attack 8: a malicious roaming partner (it holds the agreement's key)
/// cannot redirect addresses outside the prefixes configured for it, nor
/// release or take over what belongs to another peer.
#[test]
fn malicious_partner_stays_within_its_agreement() {
    let mut w = World::full();
    w.move_to(A);
    w.move_to(C); // A's address relayed to C
    let x = node_addr(A);
    assert_eq!(w.binding(A, x).map(|b| b.peer), Some(1)); // A's peers: [B, C]
    let b_instance = w.agents[B].instance();
    let mut seq = 1u64 << 40;
    let mut send_as_b = |w: &mut World, m: Message| {
        seq += 1;
        let m = match m {
            Message::TunnelRequest(mut a) => {
                (a.instance, a.seq) = (b_instance, seq);
                Message::TunnelRequest(a)
            }
            Message::TunnelRelease(mut a) => {
                (a.instance, a.seq) = (b_instance, seq);
                Message::TunnelRelease(a)
            }
            m => m,
        };
        let d = msg::encode(&m, Some(&pair_key(A, B))).unwrap().to_vec();
        w.deliver(vec![(A, SocketAddrV4::new(wan(B), 4434), d)]);
    };
    fn env<T>(msg: T) -> Authed<T> {
        Authed {
            sender: id(B),
            instance: 0,
            seq: 0,
            echo: 0,
            msg,
        }
    }
    // B releases the binding A holds with C: nothing happens.
    send_as_b(
        &mut w,
        Message::TunnelRelease(env(TunnelRelease {
            req_id: 1,
            addr: x.octets(),
        })),
    );
    assert_eq!(w.binding(A, x).map(|b| b.peer), Some(1));
    // B asks A to redirect an address outside A's prefixes, one of C's,
    // and A's own address with a credential B made up: all refused.
    let node = *w.node.key();
    for (addr, issuer) in [
        ([192, 168, 1, 9], id(A)),
        ([10, 3, 0, 50], id(C)),
        (x.octets(), id(A)),
    ] {
        let cred = Credential {
            addr,
            issuer,
            serial: 1,
        };
        send_as_b(
            &mut w,
            Message::TunnelRequest(env(TunnelRequest {
                req_id: 2,
                node,
                cred,
                node_addr: node_addr(B).octets(),
                seq: 1 << 50,
                proof: msg::Proof([0; 32]),
                lifetime_s: 60,
            })),
        );
    }
    assert_eq!(w.binding(A, x).map(|b| b.peer), Some(1), "still to C");
    assert!(w.agents[A].bindings().all(|(a, _)| a == x));
    // Visitor side: B cannot make C carry an address outside B's prefixes.
    let before = w.agents[C].bindings().count();
    let m = guest_key(0x55);
    let c = w.cookie(C, node_addr(C), &m.pk);
    let cred = Credential {
        addr: [10, 1, 0, 77], // A's prefix, claimed as issued by B
        issuer: id(B),
        serial: 5,
    };
    let input = ProofInput::new(
        ProofDomain::Redirect,
        &cred,
        "ma-c",
        node_addr(C).octets(),
        1,
    );
    let proof = msg::prove(&[0x55; 32], &input).unwrap();
    let d = registration(
        w.agents[C].dh_public(),
        9,
        &m,
        node_addr(C),
        M_MAC,
        1,
        c,
        vec![OldBinding { cred, proof }],
    );
    let got = answers(&mut w, C, node_addr(C), &d);
    let (_, r) = reply_status(&got).unwrap();
    assert_eq!(r.results[0].status, Status::BadRequest);
    assert_eq!(w.agents[C].bindings().count(), before);
}

/// Attack 2, with the request id known (a guest that sees the node's
/// registration): a reply that is not sealed under the node's session
/// with its agent is ignored, so it cannot make the node drop a relayed
/// address. Before: any reply with the right id was believed.
#[test]
fn unsealed_reply_cannot_drop_a_relayed_address() {
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    let x = node_addr(A);
    // The node's refresh (at a third of the 60 s lifetime), held back:
    // the forger saw it.
    w.tick(19_500);
    let mut reg = None;
    for _ in 0..40 {
        w.now += 50;
        let mut acts = Vec::new();
        w.node.handle_timeout(w.time(), &mut acts);
        reg = acts.iter().find_map(|a| match a {
            node::Action::Send { data, .. } => match msg::decode(data) {
                Ok(Message::Registration(r)) => Some((r, data.clone())),
                _ => None,
            },
            _ => None,
        });
        if reg.is_some() {
            break;
        }
    }
    let reg = reg.expect("a refresh");
    let refusal = refusal_of(reg.0.req_id, x, Status::UnknownCredential);
    let agent = SocketAddrV4::new(lan_gw(B), 4434);
    for key in [None, Some([0x13; 32])] {
        let mut d = msg::encode(&Message::RegistrationReply(refusal.clone()), None).unwrap();
        if let Some(k) = key {
            msg::seal_reply(&mut d, &k);
        }
        let mut acts = Vec::new();
        w.node
            .handle_datagram(w.time(), agent, node_addr(B), &d, &mut acts);
        assert!(acts.is_empty());
        assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    }
    // The real registration then gets the agent's sealed answer.
    w.deliver(vec![(
        B,
        SocketAddrV4::new(node_addr(B), 4434),
        reg.1.to_vec(),
    )]);
    w.tick(3000);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    assert!(w.node.is_registered());
}

/// Attack 6, every step: each party (the issuer, the current agent, the
/// node) is killed and restarted from its saved state just before each
/// datagram of a handover A → B in turn. Whatever the step, the three end
/// consistent: either the address is relayed end to end (the node says
/// relayed, B has an active visitor side, A redirects it to B) or it is
/// relayed nowhere (neither agent holds it, and the node no longer calls
/// it relayed).
#[test]
fn kill_each_party_at_each_step_of_a_handover() {
    let x = node_addr(A);
    // How many deliveries a clean handover takes.
    let mut w = World::full();
    w.move_to(A);
    let start = w.deliveries;
    w.move_to(B);
    let steps = w.deliveries - start;
    assert!(steps >= 6, "{steps}");
    let mut outcomes = [0usize; 2];
    let mut crashes = 0;
    for party in [A, B, NODE] {
        for k in 1..=steps + 2 {
            let mut w = World::full();
            w.move_to(A);
            w.crash = Some((party, w.deliveries + k));
            w.move_to(B);
            w.tick(3_000);
            w.crash = None;
            // Retransmissions, timeouts and refreshes settle it.
            w.tick(30_000);
            crashes += usize::from(w.crashed);
            let node = w.node_state(x);
            let home = w.binding(A, x).map(|b| (b.role, b.peer));
            let visitor = w.binding(B, x).map(|b| (b.role, b.pending));
            let relayed = node == Some(BindingState::Relayed)
                && home == Some((Role::Home, 0))
                && visitor == Some((Role::Visitor, false));
            let nowhere =
                home.is_none() && visitor.is_none() && node != Some(BindingState::Relayed);
            assert!(
                relayed || nowhere,
                "crash of {party} before delivery {k}: node {node:?}, A {home:?}, B {visitor:?}"
            );
            outcomes[usize::from(relayed)] += 1;
        }
    }
    // A restart costs at most a retry: the handover completes every time.
    assert_eq!(outcomes[0], 0, "{outcomes:?}");
    assert!(crashes >= 3 * steps, "only {crashes} crashes happened");
}

/// A guest that claims an arriving node's old address first does not make
/// the node drop it: the conflict with a claim its issuer has not
/// confirmed is answered NoCapacity (try again), and the node's retry
/// succeeds once the issuer has refused the guest. Before: AddressInUse,
/// final (found by reading the code for s13).
#[test]
fn a_squatters_unconfirmed_claim_is_not_final() {
    let mut w = World::full();
    w.move_to(A);
    let x = node_addr(A);
    let cred = w.node.bindings()[0].cred.clone();
    // The guest at B claims x with a proof under a key of its own; A's answer
    // is slow (lost, retransmitted later).
    let g = guest_key(0x44);
    let gaddr = Ipv4Addr::new(10, 2, 0, 66);
    let c = w.cookie(B, gaddr, &g.pk);
    let input = ProofInput::new(ProofDomain::Redirect, &cred, "ma-b", gaddr.octets(), 1);
    let proof = msg::prove(&[0x44; 32], &input).unwrap();
    let d = registration(
        w.agents[B].dh_public(),
        5,
        &g,
        gaddr,
        M_MAC,
        1,
        c,
        vec![OldBinding { cred, proof }],
    );
    w.drop_peer_traffic = true;
    w.deliver(vec![(B, SocketAddrV4::new(gaddr, 4434), d)]);
    assert_eq!(w.binding(B, x).map(|b| b.pending), Some(true));
    // The real node arrives meanwhile.
    w.move_to(B);
    assert_eq!(w.node_state(x), Some(BindingState::Pending), "kept");
    // A's refusal of the guest comes through; the node's retry wins.
    w.drop_peer_traffic = false;
    w.tick(15_000);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    assert_eq!(w.binding(A, x).map(|b| b.peer), Some(0));
}

/// A registration under a node key that no session can be made with (the
/// identity point): refused as a bad request, not "no capacity", which
/// would have the sender retry forever (review of v3). Failed before: the
/// agent answered NoCapacity.
#[test]
fn a_node_key_without_a_session_is_a_bad_request() {
    let mut w = World::full();
    let mut key = [0u8; 32];
    key[0] = 1;
    let cookie = w.cookie(A, M_ADDR, &key);
    let m = Message::Registration(Registration {
        req_id: 5,
        node: key,
        addr: M_ADDR.octets(),
        mac: M_MAC,
        seq: 1,
        cookie,
        bindings: heapless::Vec::new(),
        tag: [0; 16],
    });
    let d = msg::encode(&m, None).unwrap();
    let (to, r) = reply_status(&answers(&mut w, A, M_ADDR, &d)).unwrap();
    assert_eq!((to, r.status, r.cred), (M_ADDR, Status::BadRequest, None));
    assert!(!w.agents[A].creds.contains_key(&u32::from(M_ADDR)));
}

/// The node sessions an agent keeps stay within `max_credentials`, also
/// when a reload lowers it (review of v3: the table kept its size until
/// enough new nodes came). Failed before: 6 sessions after the reload.
#[test]
fn node_sessions_stay_within_the_limit_across_a_reload() {
    let mut w = World::full();
    let now = w.time();
    for seed in 0..6u8 {
        let k = guest_key(0x30 + seed);
        assert!(w.agents[A].session(now, M_ADDR, &k.pk).is_ok());
    }
    assert_eq!(w.agents[A].sessions.len(), 6);
    let mut cfg = config(A, &[B, C]);
    cfg.max_credentials = 2;
    let mut out = Vec::new();
    assert!(w.agents[A].reconfigure(now, cfg, &mut out).is_some());
    assert_eq!(w.agents[A].sessions.len(), 2);
    // And new ones replace the least recently used.
    let k = guest_key(0x40);
    assert!(w.agents[A].session(now, M_ADDR, &k.pk).is_ok());
    assert_eq!(w.agents[A].sessions.len(), 2);
}
