//! The node's own sealed registrations seen again: replayed by an
//! eavesdropper after the node let an address go (F2), or retransmitted
//! by the node after the agent forgot that it answered (F4: a busy
//! hotspot's registrations pushed it out of the table). Each test failed
//! before its fix (the review of protocol v3).

use super::attacks::{guest_key, registration, M_MAC};
use super::forged_agent::relayed_at_b;
use super::*;

/// The node at B with a live session on its address from A; returns the
/// world, that address, and the node's next refresh (sent, not
/// delivered: the node waits for its answer).
fn refresh_in_flight() -> (World, Ipv4Addr, Vec<u8>) {
    let (mut w, x) = relayed_at_b();
    w.tick(19_500);
    for _ in 0..40 {
        w.now += 50;
        let mut acts = Vec::new();
        w.node.handle_timeout(w.time(), &mut acts);
        for a in acts {
            if let node::Action::Send { data, .. } = &a {
                if let Ok(Message::Registration(_)) = msg::decode(data) {
                    return (w, x, data.to_vec());
                }
            }
        }
    }
    panic!("no refresh within 21.5 s")
}

/// F2: after the node released its address from A, an eavesdropper
/// replays the node's last registration at B (same cookie, same seal,
/// same proof). Before the fix B asked A again and A accepted "the very
/// proof accepted last": the released redirect was back, and A's LAN
/// address was sent to B for nobody. A proof that redirected an address
/// whose redirect has ended is spent.
#[test]
fn a_replayed_registration_does_not_revive_a_released_redirect() {
    let (mut w, x, reg) = refresh_in_flight();
    let me = SocketAddrV4::new(node_addr(B), 4434);
    w.deliver(vec![(B, me, reg.clone())]);
    assert!(w.binding(A, x).is_some());
    // The node's last session on x ends; it releases x.
    for _ in 0..3 {
        w.census(&[(x, 0)]);
        w.tick(1_000);
    }
    assert!(w.binding(A, x).is_none() && w.binding(B, x).is_none());
    assert!(w.node_state(x).is_none());
    w.tick(10_500);
    w.deliver(vec![(B, me, reg)]);
    assert!(w.binding(A, x).is_none(), "A redirects x again");
    assert!(
        w.binding(B, x).is_none_or(|b| b.pending),
        "B relays x again"
    );
    w.tick(1_000);
    assert!(w.binding(B, x).is_none(), "B keeps a binding A refused");
}

/// F4: B answered the node's refresh, the answer was lost, and 70 of a
/// guest's registrations then pushed the answered entry out of B's table.
/// The node's retransmission (the same bytes) was taken for a replay of
/// an older registration, and the node dropped its relayed address.
/// Now it is recognised and answered as before; the node keeps x.
#[test]
fn a_retransmission_the_agent_forgot_is_answered_again() {
    let (mut w, x, reg) = refresh_in_flight();
    let me = SocketAddrV4::new(node_addr(B), 4434);
    // B handles the refresh (and asks A); its answer to the node is lost.
    w.at = C;
    w.deliver(vec![(B, me, reg.clone())]);
    w.at = B;
    let guest = Ipv4Addr::new(10, 2, 0, 66);
    let g = guest_key(0x77);
    let cookie = w.cookie(B, guest, &g.pk);
    let dh = w.agents[B].dh_public();
    for n in 0..70u64 {
        let d = registration(dh, 1000 + n, &g, guest, M_MAC, n + 1, cookie, vec![]);
        let _ = w.feed(B, SocketAddrV4::new(guest, 4434), true, &d);
    }
    w.deliver(vec![(B, me, reg)]);
    w.tick(200);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    assert!(w.binding(B, x).is_some_and(|b| !b.pending));
    assert!(w.binding(A, x).is_some());
}
