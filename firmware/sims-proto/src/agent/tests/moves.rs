//! A peer's WAN address changes (a DHCP or PPPoE WAN reconnects with a
//! new address): its peers follow it, learning the new address only from
//! a challenge answered from there; a forged source address moves
//! nothing. Each test failed before peers could move (datagrams from
//! another address than the configured endpoint were dropped).

use super::*;

const B_NEW: Ipv4Addr = Ipv4Addr::new(100, 64, 20, 2);

/// MA-B's WAN address changes: it restarts its data plane with the new
/// endpoint from its saved state (as simsd does) and says hello.
fn b_moves(w: &mut World, hello: bool) {
    b_moves_to(w, B_NEW, hello)
}

fn b_moves_to(w: &mut World, to: Ipv4Addr, hello: bool) {
    let now = w.time();
    let saved = w.agents[B].save(now);
    let mut cfg = config(B, &[A, C]);
    cfg.endpoint = to;
    let mut b = Agent::new(cfg, [0x42; 32]);
    let mut out = Vec::new();
    assert!(b.restore(now, &saved, &mut out));
    w.agents[B] = b;
    w.wan_of[B] = to;
    w.actions[B].clear();
    let mut next = Vec::new();
    w.route(B, out, &mut next);
    if hello {
        let mut out = Vec::new();
        w.agents[B].hello_peers(now, &mut out);
        w.route(B, out, &mut next);
    }
    w.deliver(next);
}

fn moved_to(w: &World, i: usize) -> Vec<Ipv4Addr> {
    w.actions[i]
        .iter()
        .filter_map(|a| match a {
            Action::PeerEndpoint { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect()
}

#[test]
fn hello_from_a_new_address_moves_the_peer_there_after_a_challenge() {
    let mut w = World::full();
    w.move_to(A);
    w.actions[A].clear();
    w.actions[C].clear();
    b_moves(&mut w, true);
    // A and C each challenged B at the new address, and followed it.
    for i in [A, C] {
        assert_eq!(moved_to(&w, i), vec![B_NEW], "agent {i}");
        assert_eq!(w.agents[i].peer_endpoint(if i == A { 0 } else { 1 }), B_NEW);
        assert_eq!(w.agents[i].counters.peer_moved, 1);
    }
    // Nothing waits: the hellos were answered.
    w.tick(5_000);
    assert_eq!(w.agents[B].counters.rx_ok, 4, "2 challenges + 2 replies");
    // A handover A -> B works at once, through the new address.
    w.move_to(B);
    assert_eq!(w.node_state(node_addr(A)), Some(BindingState::Relayed));
    assert_eq!(w.binding(A, node_addr(A)).map(|b| b.role), Some(Role::Home));
    // A restart of A keeps where B is now.
    let saved = w.agents[A].save(w.time());
    let mut a = Agent::new(config(A, &[B, C]), [0x43; 32]);
    let mut out = Vec::new();
    assert!(a.restore(w.time(), &saved, &mut out));
    assert_eq!(a.peer_endpoint(0), B_NEW);
    assert_eq!(
        out.first(),
        Some(&Action::PeerEndpoint {
            peer: 0,
            addr: B_NEW
        }),
        "the move is restored before the tunnels"
    );
    // ... but not once the operator names another endpoint for B.
    let mut cfg = config(A, &[B, C]);
    cfg.peers[0].endpoint = Ipv4Addr::new(100, 64, 30, 2);
    let mut a = Agent::new(cfg, [0x44; 32]);
    assert!(a.restore(w.time(), &saved, &mut Vec::new()));
    assert_eq!(a.peer_endpoint(0), Ipv4Addr::new(100, 64, 30, 2));
}

#[test]
fn a_request_from_a_new_address_is_challenged_there_then_served() {
    // No hello (lost, or the peer learnt nothing yet): the handover's own
    // request is challenged at B's new address and served on the answer.
    let mut w = World::full();
    w.move_to(A);
    b_moves(&mut w, false);
    assert!(moved_to(&w, A).is_empty());
    w.move_to(B);
    assert_eq!(w.node_state(node_addr(A)), Some(BindingState::Relayed));
    assert_eq!(moved_to(&w, A), vec![B_NEW]);
    assert_eq!(w.agents[A].peer_endpoint(0), B_NEW);
    assert!(w.agents[A].counters.rx_challenged >= 1);
}

#[test]
fn a_replay_from_a_forged_address_moves_nothing() {
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    assert_eq!(w.node_state(node_addr(A)), Some(BindingState::Relayed));
    w.actions[A].clear();
    // Everything B sent A so far, replayed from an address the attacker
    // chose (and receives): A challenges there, and nobody there holds
    // the key to answer.
    let forged = SocketAddrV4::new(Ipv4Addr::new(100, 64, 99, 2), 4434);
    let from_b: Vec<Vec<u8>> = (w.wire.iter())
        .filter(|(f, t, _)| *f == B && *t == A)
        .map(|(_, _, d)| d.clone())
        .collect();
    assert!(!from_b.is_empty());
    let mut challenges = Vec::new();
    for d in &from_b {
        for a in w.feed(A, forged, false, d) {
            match a {
                Action::Send { dst, data } => {
                    assert_eq!(
                        dst.ip(),
                        forged.ip(),
                        "answers only go to the forged address"
                    );
                    challenges.push(data.to_vec());
                }
                other => panic!("a replay from elsewhere changed something: {other:?}"),
            }
        }
    }
    // The attacker, holding A's challenges but not the key, re-sends B's
    // datagrams echoing nothing it can compute: still nothing moves.
    for d in &from_b {
        for a in w.feed(A, forged, false, d) {
            assert!(matches!(a, Action::Send { dst, .. } if dst.ip() == forged.ip()));
        }
    }
    assert!(!challenges.is_empty(), "the requests were challenged");
    assert_eq!(w.agents[A].peer_endpoint(0), wan(B));
    assert_eq!(w.agents[A].counters.peer_moved, 0);
    // B's answer to an old-address challenge, from B itself, still works:
    // the relayed binding refreshes through B's real address.
    w.tick(30_000);
    assert_eq!(w.node_state(node_addr(A)), Some(BindingState::Relayed));
    assert_eq!(w.agents[A].peer_endpoint(0), wan(B));
    assert!(w.binding(A, node_addr(A)).is_some());
}

/// Found by the agent fuzz target: a peer answering from where another
/// peer is (configured or moved), or from inside a LAN prefix, moved
/// there, and two tunnels had one remote end (or a node's address).
#[test]
fn a_peer_cannot_move_onto_another_peer_or_into_a_lan() {
    for to in [wan(C), node_addr(A), node_addr(C)] {
        let mut w = World::full();
        w.move_to(A);
        w.actions[A].clear();
        b_moves_to(&mut w, to, true);
        assert!(moved_to(&w, A).is_empty(), "moved to {to}");
        assert_eq!(w.agents[A].peer_endpoint(0), wan(B));
    }
}

/// B's hello to A, as sealed and tagged, not delivered (an attacker on
/// B's path keeps a copy and drops it).
fn captured_hello(w: &mut World) -> Vec<u8> {
    let mut out = Vec::new();
    let now = w.time();
    w.agents[B].hello_peers(now, &mut out);
    out.into_iter()
        .find_map(|a| match a {
            Action::Send { dst, data } if *dst.ip() == w.wan_of[A] => Some(data.to_vec()),
            _ => None,
        })
        .expect("a hello to A")
}

/// Found by review: with a plain PeerChallenge, someone on B's path could
/// replay B's request from X, take A's challenge there, hand it to B
/// (which answered it to A, from its real address) and replay that answer
/// from X: A moved B to X without the key. A move challenge names X, and
/// B answers none that does not name its own address.
#[test]
fn a_challenge_relayed_from_another_address_moves_nothing() {
    let mut w = World::full();
    w.move_to(A);
    let x = SocketAddrV4::new(Ipv4Addr::new(100, 64, 66, 2), 4434);
    let hello = captured_hello(&mut w);
    let challenges: Vec<Vec<u8>> = (w.feed(A, x, false, &hello).into_iter())
        .filter_map(|a| match a {
            Action::Send { dst, data } if dst.ip() == x.ip() => Some(data.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(challenges.len(), 1, "A challenges B at X");
    // Handed to B as if from A: B ignores it.
    let from_a = SocketAddrV4::new(wan(A), 4434);
    let answers = w.feed(B, from_a, false, &challenges[0]);
    assert!(
        answers.is_empty(),
        "B answered a challenge for X: {answers:?}"
    );
    assert_eq!(w.agents[B].counters.rx_refused_move, 1);
    // Whatever B sent A before, replayed from X, moves nothing either.
    let from_b: Vec<Vec<u8>> = (w.wire.iter())
        .filter(|(f, t, _)| *f == B && *t == A)
        .map(|(_, _, d)| d.clone())
        .collect();
    for d in from_b.iter().chain([&hello]) {
        let acts = w.feed(A, x, false, d);
        assert!(!acts
            .iter()
            .any(|a| matches!(a, Action::PeerEndpoint { .. })));
    }
    assert_eq!(w.agents[A].peer_endpoint(0), wan(B));
}

/// Found by review: one pending move per peer, replaced by every replay
/// from a forged address, let a replayer keep a moved peer from ever
/// answering in time. The nonce is now computed per address: replays
/// from elsewhere, in between, do not stop the real move.
#[test]
fn replays_from_elsewhere_do_not_stop_a_real_move() {
    let mut w = World::full();
    w.move_to(A);
    b_moves(&mut w, false);
    let hello = captured_hello(&mut w);
    let at_b = SocketAddrV4::new(B_NEW, 4434);
    let forged = |i: u8| SocketAddrV4::new(Ipv4Addr::new(100, 64, 99, i), 4434);
    w.feed(A, forged(1), false, &hello);
    let to_b: Vec<Vec<u8>> = (w.feed(A, at_b, false, &hello).into_iter())
        .filter_map(|a| match a {
            Action::Send { data, .. } => Some(data.to_vec()),
            _ => None,
        })
        .collect();
    for i in 2..12 {
        w.feed(A, forged(i), false, &hello);
    }
    // B takes A's challenge (it names B_NEW) and answers from there.
    let from_a = SocketAddrV4::new(wan(A), 4434);
    let answer: Vec<Vec<u8>> = (w.feed(B, from_a, false, &to_b[0]).into_iter())
        .filter_map(|a| match a {
            Action::Send { data, .. } => Some(data.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(answer.len(), 1, "B answers its own address's challenge");
    let acts = w.feed(A, at_b, false, &answer[0]);
    assert!(acts.contains(&Action::PeerEndpoint {
        peer: 0,
        addr: B_NEW
    }));
    // The same answer again is a replay.
    let again = w.feed(A, forged(1), false, &answer[0]);
    assert!(!again
        .iter()
        .any(|a| matches!(a, Action::PeerEndpoint { .. })));
    assert_eq!(w.agents[A].counters.peer_moved, 1);
}
