//! Early registrations (issue 12, item 3): a node whose DHCP is still
//! running registers its old addresses from 0.0.0.0 with the agent it
//! hears, and the agent answers by broadcast; the sessions on the old
//! addresses flow before the node has an address. What a guest can do
//! with that path: nothing it could not do before.

use super::*;

const UNADDRESSED: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4434);

/// The datagram of the first `Send` or `Broadcast` among node actions.
fn sent(acts: &[node::Action]) -> Vec<u8> {
    acts.iter()
        .find_map(|a| match a {
            node::Action::Send { data, .. } | node::Action::Broadcast { data } => {
                Some(data.to_vec())
            }
            _ => None,
        })
        .expect("the node sent nothing")
}

fn broadcasts(out: &[Action]) -> Vec<Message> {
    out.iter()
        .filter_map(|a| match a {
            Action::BroadcastLan { data } => msg::decode(data).ok(),
            _ => None,
        })
        .collect()
}

/// The node leaves A (its address there is X) for B's LAN, where its DHCP
/// client has flushed the address and not yet got one: it solicits from
/// 0.0.0.0, hears B's broadcast advertisement and registers early. Returns
/// the early registration, not yet delivered.
fn early_registration(w: &mut World) -> Vec<u8> {
    w.move_to(A);
    w.tick(100);
    w.at = B;
    let now = w.time();
    let mut acts = Vec::new();
    w.node.set_address(now, None, &mut acts);
    assert!(acts.contains(&node::Action::HoldAddress(node_addr(A))));
    let sol = sent(&acts);
    let out = w.feed(B, UNADDRESSED, true, &sol);
    let adv = out
        .iter()
        .find_map(|a| match a {
            Action::BroadcastLan { data } => Some(data.to_vec()),
            _ => None,
        })
        .expect("B answers a solicitation from 0.0.0.0 by broadcast");
    let mut acts = Vec::new();
    let gw = SocketAddrV4::new(lan_gw(B), 4434);
    (w.node).handle_datagram(now, gw, Ipv4Addr::BROADCAST, &adv, &mut acts);
    let reg = sent(&acts);
    match msg::decode(&reg) {
        Ok(Message::Registration(r)) => {
            assert_eq!(r.addr, [0; 4], "no address yet");
            assert_eq!(r.bindings.len(), 1);
            assert_eq!(r.bindings[0].cred.addr(), node_addr(A));
        }
        other => panic!("not a registration: {other:?}"),
    }
    reg
}

#[test]
fn old_address_is_relayed_before_dhcp_and_stays_when_the_address_comes() {
    let mut w = World::full();
    let creds_b = w.agents[B].credential_count();
    let reg = early_registration(&mut w);
    w.deliver(vec![(B, UNADDRESSED, reg)]);
    let x = node_addr(A);
    assert_eq!(w.node.current(), None);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed), "before DHCP");
    assert!(w.node.is_registered());
    let b = w.binding(B, x).expect("B relays X");
    assert!(b.role == Role::Visitor && !b.pending);
    assert_eq!(b.mac, MN_MAC);
    assert_eq!(w.binding(A, x).map(|b| b.role), Some(Role::Home));
    assert_eq!(w.agents[B].counters.early_registrations, 1);
    assert_eq!(
        w.agents[B].credential_count(),
        creds_b,
        "no credential for 0.0.0.0"
    );
    // DHCP gives the node its address on B: it registers again from it
    // (a refresh of X, and a credential for the new address), and X's
    // relay is never taken down on the way.
    w.actions[B].clear();
    let mut acts = Vec::new();
    w.node.set_address(w.time(), Some(node_addr(B)), &mut acts);
    w.run_node(acts);
    w.tick(200);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    assert_eq!(w.node_state(node_addr(B)), Some(BindingState::Native));
    assert_eq!(w.agents[B].credential_count(), creds_b + 1);
    assert!(
        !w.actions[B]
            .iter()
            .any(|a| matches!(a, Action::VisitorDel { .. })),
        "X's relay stayed up: {:?}",
        w.actions[B]
    );
    // The session ends: released from the new address as usual.
    w.census(&[]);
    w.tick(3_000);
    w.census(&[]);
    w.tick(500);
    assert!(w.binding(B, x).is_none());
    assert!(w.binding(A, x).is_none());
}

#[test]
fn no_old_addresses_no_early_chatter() {
    let mut w = World::full();
    let mut acts = Vec::new();
    w.node.set_address(w.time(), None, &mut acts);
    w.node.link_up(w.time(), &mut acts);
    assert!(acts.is_empty(), "{acts:?}");
    w.tick(5_000);
    assert_eq!(w.agents[A].counters.rx_ok, 0);
}

#[test]
fn the_link_coming_up_without_an_address_solicits_at_once() {
    let mut w = World::full();
    w.move_to(A);
    w.tick(100);
    w.at = B;
    let mut acts = Vec::new();
    w.node.set_address(w.time(), None, &mut acts);
    // The solicitation went nowhere (the link was down); the link comes
    // up a moment later.
    w.now += 30;
    let mut acts = Vec::new();
    w.node.link_up(w.time(), &mut acts);
    w.run_node(acts);
    assert_eq!(w.node_state(node_addr(A)), Some(BindingState::Relayed));
}

/// What an early registration cannot be made to do by a guest who saw
/// it on the LAN (it is broadcast) or who sends its own.
#[test]
fn early_registrations_are_sealed_checked_and_not_replayable() {
    let mut w = World::full();
    let reg = early_registration(&mut w);
    w.deliver(vec![(B, UNADDRESSED, reg.clone())]);
    let x = node_addr(A);
    let before = w.binding(B, x).cloned();
    // Replayed (by anyone: it is broadcast): answered as before, nothing
    // asked of A, nothing changed.
    let wire_before = w.wire.len();
    let out = w.feed(B, UNADDRESSED, true, &reg);
    assert!(broadcasts(&out)
        .iter()
        .all(|m| matches!(m, Message::RegistrationReply(r) if r.status == Status::Ok)));
    assert!(out.iter().all(|a| matches!(a, Action::BroadcastLan { .. })));
    assert_eq!(w.wire.len(), wire_before);
    assert_eq!(
        w.binding(B, x).map(|b| b.last_seq),
        before.map(|b| b.last_seq)
    );
    // The same registration altered (another MAC, to send X's packets to
    // another host): its seal no longer holds.
    let Ok(Message::Registration(mut r)) = msg::decode(&reg) else {
        panic!()
    };
    r.mac = [2, 0, 0, 0, 0, 0x66];
    r.seq += 1;
    r.req_id += 1;
    let mut forged = msg::encode(&Message::Registration(r.clone()), None).unwrap();
    forged[reg.len() - 16..].copy_from_slice(&reg[reg.len() - 16..]);
    let out = w.feed(B, UNADDRESSED, true, &forged);
    assert!(out.iter().all(|a| matches!(a, Action::BroadcastLan { .. })));
    assert_eq!(w.agents[B].counters.rx_unauthenticated, 1);
    assert_eq!(w.binding(B, x).map(|b| b.mac), Some(MN_MAC));
    // A guest's own early registration of the node's address, sealed
    // under its own key: the proof is the node's to make; A refuses it.
    let guest = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([0x66; 32]));
    r.node = *guest.pk;
    let d = sealed(&Message::Registration(r.clone()), &guest, &w.agents[B]);
    w.deliver(vec![(B, UNADDRESSED, d)]);
    assert_eq!(w.binding(B, x).map(|b| b.node), Some(*w.node.key()));
    assert_eq!(w.binding(A, x).map(|b| b.role), Some(Role::Home));
    // 0.0.0.0 is only for registrations naming no address, and the other
    // way round: both refused before any key work.
    let agreements = w.agents[B].counters.key_agreements;
    let mut named = r.clone();
    named.addr = node_addr(B).octets();
    named.req_id += 1;
    let d = sealed(&Message::Registration(named), &guest, &w.agents[B]);
    let out = w.feed(B, UNADDRESSED, true, &d);
    let refused = |out: &[Action]| {
        out.iter().any(|a| match a {
            Action::Send { data, .. } | Action::BroadcastLan { data } => matches!(
                msg::decode(data),
                Ok(Message::RegistrationReply(r)) if r.status == Status::BadRequest
            ),
            _ => false,
        })
    };
    assert!(refused(&out), "{out:?}");
    r.req_id += 2;
    let d = sealed(&Message::Registration(r), &guest, &w.agents[B]);
    let out = w.feed(B, SocketAddrV4::new(node_addr(B), 4434), true, &d);
    assert!(refused(&out), "{out:?}");
    assert_eq!(w.agents[B].counters.key_agreements, agreements);
}

/// Every early registration shares the budget of the one source 0.0.0.0:
/// a guest flooding them with fresh keys makes no more than that budget
/// of key agreements, and the node's registration from its address
/// (after DHCP) is not held up by it.
#[test]
fn a_flood_of_early_registrations_is_bounded_and_the_address_path_still_works() {
    let mut w = World::full();
    let reg = early_registration(&mut w);
    let Ok(Message::Registration(r)) = msg::decode(&reg) else {
        panic!()
    };
    let before = w.agents[B].counters.verifications;
    for i in 0..2_000u32 {
        let mut seed = [0x55; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        let guest = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        let mut g = r.clone();
        g.node = *guest.pk;
        g.req_id = u64::from(i);
        let d = sealed(&Message::Registration(g), &guest, &w.agents[B]);
        w.deliver(vec![(B, UNADDRESSED, d)]);
    }
    let spent = w.agents[B].counters.verifications - before;
    assert!(
        spent <= 32,
        "{spent} key agreements for 2,000 early registrations"
    );
    // The node gets its address and registers from it.
    let mut acts = Vec::new();
    w.node.set_address(w.time(), Some(node_addr(B)), &mut acts);
    w.run_node(acts);
    w.tick(200);
    assert_eq!(w.node_state(node_addr(A)), Some(BindingState::Relayed));
}

/// Found by the testbed's s15 (the issuer down while the node moves):
/// the early registration and the one from the new address each asked
/// the issuer; the first request's timeout removed the pending binding,
/// which answered the second registration BadRequest, and the node
/// dropped its address. Failed before: the second registration now waits
/// for the first request instead of asking again.
#[test]
fn issuer_down_during_an_early_registration_keeps_the_address_pending() {
    let mut w = World::full();
    let reg = early_registration(&mut w);
    w.drop_peer_traffic = true;
    w.deliver(vec![(B, UNADDRESSED, reg)]);
    let mut acts = Vec::new();
    w.node.set_address(w.time(), Some(node_addr(B)), &mut acts);
    w.run_node(acts);
    let x = node_addr(A);
    w.tick(14_000);
    assert_eq!(w.node_state(x), Some(BindingState::Pending));
    // The issuer is back: the next retry completes the handover.
    w.drop_peer_traffic = false;
    w.tick(5_000);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
}

/// The old address's sessions end while the node's registration from its
/// new address is still unanswered (NetworkManager's s25: the agent's
/// answer to the first solicitation was lost): the address is pending
/// again, and B holds it from the early registration. The node must not
/// just forget it (B would keep it until its lifetime ends): it waits,
/// and releases it through B once registered. Failed before: the binding
/// was forgotten at the grace time.
#[test]
fn an_idle_old_address_pending_after_dhcp_is_released_through_the_agent() {
    let mut w = World::full();
    let reg = early_registration(&mut w);
    w.deliver(vec![(B, UNADDRESSED, reg)]);
    let x = node_addr(A);
    assert!(w.binding(B, x).is_some());
    // DHCP gives the address; what the node sends from it is lost.
    let mut lost = Vec::new();
    w.node.set_address(w.time(), Some(node_addr(B)), &mut lost);
    assert_eq!(w.node_state(x), Some(BindingState::Pending));
    let grace = NodeConfig::default().grace_ms;
    let mut acts = Vec::new();
    w.node.socket_census(w.time(), &[], &mut acts);
    w.now += grace + 100;
    w.node.socket_census(w.time(), &[], &mut acts);
    assert_eq!(
        w.node_state(x),
        Some(BindingState::Pending),
        "kept while B may hold it"
    );
    // The node solicits again and registers; the next census releases X
    // through B.
    w.tick(3_000);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    w.census(&[]);
    w.tick(500);
    assert!(w.binding(B, x).is_none(), "B released X");
    assert!(w.binding(A, x).is_none(), "and so did its issuer");
    assert_eq!(w.node_state(x), None);
}

/// NetworkManager adds its routes after the address: the answer to the
/// solicitation the address drew may have fallen to the reverse-path
/// filter. A route change makes a node that knows no agent ask again, and
/// only then.
#[test]
fn a_route_change_without_an_agent_solicits_again() {
    let mut w = World::full();
    w.at = A;
    let mut acts = Vec::new();
    w.node.set_address(w.time(), Some(node_addr(A)), &mut acts);
    let solicits = |acts: &[node::Action]| {
        acts.iter()
            .filter(|a| matches!(a, node::Action::Broadcast { .. }))
            .count()
    };
    assert_eq!(solicits(&acts), 1, "the address draws a solicitation");
    // Its answer is lost; the DHCP client adds the routes.
    let mut acts = Vec::new();
    w.node.routes_changed(w.time(), &mut acts);
    assert_eq!(solicits(&acts), 1, "asked again at once");
    w.run_node(acts);
    w.tick(100);
    assert!(w.node.is_registered());
    // Known agent and cookie: a route change asks nothing.
    let mut acts = Vec::new();
    w.node.routes_changed(w.time(), &mut acts);
    assert!(acts.is_empty(), "{acts:?}");
}

/// Found in the ARMv7 guest (s24, move 5): the node released an idle old
/// address X and moved on before the agent answered; back on X's own
/// network X was native again, but the release stayed under way, so at
/// the next move X (a session on it had started meanwhile) was left out of
/// the registration and not relayed. Coming home cancels the release.
/// Failed before: X was pending, not relayed, after the last move.
#[test]
fn coming_home_cancels_a_release_under_way() {
    let mut w = World::full();
    w.move_to(A);
    w.move_to(B);
    let x = node_addr(A);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    // X idles past the grace time: the node sends its release, which is
    // lost, and moves home at once.
    let grace = NodeConfig::default().grace_ms;
    let mut lost = Vec::new();
    w.node.socket_census(w.time(), &[], &mut lost);
    w.now += grace + 100;
    w.node.socket_census(w.time(), &[], &mut lost);
    assert!(
        lost.iter().any(|a| matches!(a, node::Action::Send { .. })),
        "a release was sent: {lost:?}"
    );
    w.move_to(A);
    assert_eq!(w.node_state(x), Some(BindingState::Native));
    // A session on X starts; the node moves to B again: X is relayed.
    w.census(&[(x, 1)]);
    w.move_to(B);
    w.tick(200);
    assert_eq!(w.node_state(x), Some(BindingState::Relayed));
    assert!(w.binding(B, x).is_some_and(|b| b.role == Role::Visitor));
}
