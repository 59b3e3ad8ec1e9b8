//! SIMS scenarios on the namespace testbed with the real daemons (simsd on
//! every agent, sims-node on the mobile node), real DHCP, real NAT and real
//! TCP sessions. Each test is independent and builds its own testbed.
//!
//! Needs root, iproute2, nftables, dnsmasq, busybox and the daemons' binaries
//! (`SIMS_BIN_DIR`, else `target/debug`); skips with the reason printed
//! otherwise. Run them with `cargo xtask test` (one at a time).

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use sims_proto::msg::{OldBinding, Status, TunnelRequest};
use sims_testbed::forge::{
    key_in_status, keypair, redirect_proof, register_unsealed, registration, result_for,
    tunnel_request,
};
use sims_testbed::product::{tunnel_name, SIMS_MARK_RULE_PRIORITY, SIMS_RULE_PRIORITY};
use sims_testbed::*;

/// Scenario 1: A → B mid-stream: both directions verified, no reset, stall reported.
#[test]
fn s1_move_a_to_b_keeps_sessions_in_both_directions() {
    let Some(mut tb) = setup(Options::default().label("s1").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut down = stream(&tb, Dir::Down, "s1-down", a());
    let mut up = stream(&tb, Dir::Up, "s1-up", a());
    wait_flowing(&tb, &down, 200_000, Duration::from_secs(10));
    wait_flowing(&tb, &up, 200_000, Duration::from_secs(10));

    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_binding(&tb, Ma::B, a(), "visitor", Ma::A);
    // The data plane in use: each agent's tunnel device is of the kind its
    // backend makes (ipip for kernel, tun for userspace; SIMS_TESTBED_BACKEND).
    for x in [Ma::A, Ma::B] {
        let kinds = tb.wait_tunnel(x, T).unwrap();
        eprintln!(
            "s1: {} ({}) tunnels {kinds:?}",
            x.id(),
            tb.opts.backend_of(x)
        );
    }
    // The old sessions carry data again, through the relay.
    wait_flowing(&tb, &down, 400_000, T);
    wait_flowing(&tb, &up, 400_000, T);

    let rd = down.finish(Duration::from_secs(30)).unwrap();
    let ru = up.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&rd, "s1 down");
    assert_verified(&ru, "s1 up");
    assert!(rd.max_gap_ms > 0.0 && ru.max_gap_ms > 0.0, "stall reported");
    eprintln!(
        "s1: stall across the move: down {:.0} ms, up {:.0} ms",
        rd.max_gap_ms, ru.max_gap_ms
    );
}

/// Scenario 2: After the move a new session uses the new address natively: the CN
/// sees MA-B's WAN address and no tunnel counter moves.
#[test]
fn s2_new_session_after_move_is_native_and_untunnelled() {
    let Some(mut tb) = setup(Options::default().label("s2").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    // An idle old session keeps the old address bound (and relayed).
    let mut idle = tb
        .stream(
            StreamSpec::new(Dir::Down, "s2-idle")
                .rate(0)
                .duration_ms(90_000)
                .bind(a()),
        )
        .unwrap();
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);

    let w = tb.whoami(None).unwrap();
    assert_eq!(*w.local.ip(), b(), "a new session uses the new address");
    assert_eq!(
        *w.seen.ip(),
        Ma::B.wan_ip(),
        "and leaves through MA-B's NAT"
    );

    let before = (
        tb.agent_status(Ma::A).unwrap().tunnel_packets(),
        tb.agent_status(Ma::B).unwrap().tunnel_packets(),
    );
    let mut bulk_down = tb
        .stream(
            StreamSpec::new(Dir::Down, "s2-bulk-down")
                .rate(2_000_000)
                .duration_ms(2000),
        )
        .unwrap();
    let rd = bulk_down.wait(Duration::from_secs(30)).unwrap();
    let mut bulk_up = tb
        .stream(
            StreamSpec::new(Dir::Up, "s2-bulk-up")
                .rate(2_000_000)
                .duration_ms(2000),
        )
        .unwrap();
    let ru = bulk_up.wait(Duration::from_secs(30)).unwrap();
    assert_verified(&rd, "s2 bulk down");
    assert_verified(&ru, "s2 bulk up");
    assert!(
        bulk_down.output().contains(&format!("local={}:", b())),
        "bulk session from the new address: {}",
        bulk_down.output()
    );
    let after = (
        tb.agent_status(Ma::A).unwrap().tunnel_packets(),
        tb.agent_status(Ma::B).unwrap().tunnel_packets(),
    );
    assert_eq!(
        before, after,
        "tunnel packet counters (ma-a, ma-b) moved during a native session"
    );

    // The counters do count relayed traffic: a connection from the old
    // address goes through the tunnel and leaves through MA-A's NAT.
    let w = tb.whoami(Some(a())).unwrap();
    assert_eq!(*w.seen.ip(), Ma::A.wan_ip(), "old address relayed via A");
    let relayed = tb.agent_status(Ma::B).unwrap().tunnel_packets();
    assert!(
        relayed.0 > after.1 .0 && relayed.1 > after.1 .1,
        "ma-b tunnel counters count relayed packets: {:?} → {relayed:?}",
        after.1
    );
    let r = idle.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s2 idle old session");
}

/// Scenario 3: Back to A: A's session continues natively, nobody holds a binding for
/// A's address, and a session opened in B is now carried from B.
#[test]
fn s3_back_to_a_goes_native_and_carries_sessions_from_b() {
    let Some(mut tb) = setup(Options::default().label("s3").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut sa = stream(&tb, Dir::Down, "s3-from-a", a());
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_flowing(&tb, &sa, 200_000, T);
    let mut sb = stream(&tb, Dir::Up, "s3-from-b", b());
    wait_flowing(&tb, &sb, 200_000, Duration::from_secs(10));

    move_relayed(&mut tb, Ma::A, &[b()]);
    wait_binding(&tb, Ma::B, b(), "home", Ma::A);
    wait_binding(&tb, Ma::A, b(), "visitor", Ma::B);
    wait_for(
        "no agent binding for 10.1.0.50 once home",
        T,
        Duration::from_millis(100),
        || {
            let ka = tb.agent_status(Ma::A)?;
            let kb = tb.agent_status(Ma::B)?;
            let x = a().to_string();
            if ka.binding(&x).is_none() && kb.binding(&x).is_none() {
                Ok(Some(()))
            } else {
                Err(format!("ma-a {} / ma-b {}", ka.raw, kb.raw))
            }
        },
    )
    .unwrap();
    for x in [Ma::A, Ma::B] {
        let k = tb.agent_kernel_state(x).unwrap();
        assert!(
            k.routes_for(&a().to_string()).is_empty(),
            "{}: {k:?}",
            x.id()
        );
    }
    wait_flowing(&tb, &sa, 200_000, T);
    wait_flowing(&tb, &sb, 200_000, T);
    let ra = sa.finish(Duration::from_secs(30)).unwrap();
    let rb = sb.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&ra, "s3 session from A (A → B → A)");
    assert_verified(&rb, "s3 session from B (carried from B)");
}

/// Scenario 4: A → B → C: the newest agent asks every earlier agent directly.
#[test]
fn s4_a_b_c_no_chains_of_tunnels() {
    let Some(mut tb) = setup(Options::default().label("s4")) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut sa = stream(&tb, Dir::Down, "s4-from-a", a());
    move_relayed(&mut tb, Ma::B, &[a()]);
    let mut sb = stream(&tb, Dir::Up, "s4-from-b", b());
    wait_flowing(&tb, &sb, 100_000, Duration::from_secs(10));

    move_relayed(&mut tb, Ma::C, &[a(), b()]);
    wait_binding(&tb, Ma::C, a(), "visitor", Ma::A);
    wait_binding(&tb, Ma::C, b(), "visitor", Ma::B);
    wait_binding(&tb, Ma::A, a(), "home", Ma::C);
    wait_binding(&tb, Ma::B, b(), "home", Ma::C);
    tb.wait_agent(Ma::B, "no visitor binding for 10.1.0.50 left", T, |s| {
        s.binding(&a().to_string()).is_none()
    })
    .unwrap();
    wait_flowing(&tb, &sa, 200_000, T);
    wait_flowing(&tb, &sb, 200_000, T);
    let ra = sa.finish(Duration::from_secs(30)).unwrap();
    let rb = sb.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&ra, "s4 session from A");
    assert_verified(&rb, "s4 session from B");
}

/// Scenario 5: When the last session on the old address closes, everything is
/// released within grace + a few seconds, and no SIMS state remains.
#[test]
fn s5_release_after_last_session_closes() {
    let grace_ms = 1000;
    let Some(mut tb) = setup(
        Options::default()
            .label("s5")
            .agents(&[Ma::A, Ma::B])
            .grace_ms(grace_ms),
    ) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut s = stream(&tb, Dir::Down, "s5-old", a());
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &s, 100_000, T);
    let r = s.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s5 old session");
    let closed = Instant::now();

    let limit = Duration::from_millis(grace_ms) + Duration::from_secs(5);
    wait_for(
        "the node to drop 10.1.0.50",
        limit,
        Duration::from_millis(100),
        || Ok((!tb.node_has_addr(a())?).then_some(())),
    )
    .unwrap();
    wait_no_state_for(
        &tb,
        a(),
        limit.saturating_sub(closed.elapsed()) + Duration::from_secs(1),
    );
    eprintln!(
        "s5: released {:.1} s after close",
        closed.elapsed().as_secs_f64()
    );
    // No bindings left → no set elements or /32 routes; only the peers'
    // tunnels, made at start.
    wait_no_sims_state(&tb, "without bindings");
    let st = tb.node_status().unwrap();
    assert!(st.binding(&a().to_string()).is_none(), "{}", st.raw);
    // Nor on the node: the released address's rule is gone, and its
    // current address has none (the main table routes it, with or
    // without an agent).
    let rules = tb.mn().ip(&["-4", "rule", "show"]).unwrap();
    for addr in [a(), b()] {
        assert!(
            !rules.contains(&format!("from {addr} lookup 1140")),
            "{rules}"
        );
    }
    // The partners' accounting outlives the tunnel: ma-a counted what it
    // relayed to ma-b (at least the 100 kB after the move) and the
    // node's acknowledgements that came back.
    let st = tb.agent_status(Ma::A).unwrap();
    let p = st.peers.iter().find(|p| p.id == "ma-b").expect("peer ma-b");
    assert!(
        p.tx_bytes >= 100_000 && p.rx_packets > 0,
        "ma-a's account of ma-b after its bindings went: {}",
        st.raw
    );
    // A stopped simsd leaves nothing of its own: no rule, route, tunnel,
    // set element or nft table.
    for x in [Ma::A, Ma::B] {
        tb.kill_agent(x, libc::SIGTERM).unwrap();
        let k = tb.agent_kernel_state(x).unwrap();
        assert!(k.is_clean() && !k.nft_table, "{} after stop: {k:?}", x.id());
    }
}

/// Scenario 6a: Agents without a roaming agreement: nothing is redirected, nothing
/// is installed, the old session is not relayed.
#[test]
fn s6a_no_agreement_no_relay_no_state() {
    let Some(mut tb) = setup(
        Options::default()
            .label("s6a")
            .agents(&[Ma::A, Ma::B])
            .no_agreement(Ma::A, Ma::B),
    ) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let s = stream(&tb, Dir::Down, "s6a-old", a());
    wait_flowing(&tb, &s, 100_000, Duration::from_secs(10));
    tb.move_to(Ma::B).unwrap();
    tb.wait_node_at(Ma::B, T).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let n1 = received(&tb, &s);
    std::thread::sleep(Duration::from_secs(3));
    let n2 = received(&tb, &s);
    assert_eq!(
        n1, n2,
        "the old session must not be relayed without an agreement"
    );
    no_state_for(&tb, a()).unwrap();
    let st = tb.node_status().unwrap();
    if let Some(bd) = st.binding(&a().to_string()) {
        assert_ne!(bd.state, "relayed", "{}", st.raw);
    }
    for x in [Ma::A, Ma::B] {
        let k = tb.agent_kernel_state(x).unwrap();
        assert!(
            k.routes_for(&a().to_string()).is_empty(),
            "{}: {k:?}",
            x.id()
        );
    }
    drop(s);
}

// ---------------------------------------------------------------- s6b: crafted datagrams
//
// In s6b the test itself plays the node (sims-node is started only at the
// end): it registers with node keys of its own (sealing what it sends
// under its sessions with the agents, proving moves with the credential
// keys the agents gave it) and crafts registrations, proofs and
// agent-to-agent requests with the forging kit (sims_testbed::forge).

/// Scenario 6b: Forged and replayed proofs are refused and leave no state;
/// the daemons keep serving.
#[test]
fn s6b_forged_or_replayed_proof_is_refused() {
    let Some(mut tb) = setup(Options::default().label("s6b").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_agents().unwrap();
    // K1 is the node; K2 is someone else on LAN B.
    let (k1, k2) = (keypair(1), keypair(2));

    // K1 attaches at A (seq 1) and gets its credential for 10.1.0.50.
    assert_eq!(tb.move_to(Ma::A).unwrap().addr, a());
    let c1a = cookie(&tb, Ma::A, a(), &k1);
    let r = register(
        &tb,
        Ma::A,
        a(),
        1,
        &registration(1, &k1, a(), 1, c1a, vec![]),
    );
    assert_eq!(r.status, Status::Ok, "{r:?}");
    let cred_a = r.cred.expect("a credential for 10.1.0.50");
    assert_eq!((cred_a.addr(), cred_a.issuer.as_str()), (a(), "ma-a"));
    assert_eq!(tb.move_to(Ma::B).unwrap().addr, b());
    let (c1b, c2b) = (cookie(&tb, Ma::B, b(), &k1), cookie(&tb, Ma::B, b(), &k2));

    // 1a. Forged: K1's credential, K1 named as the node, a proof made
    // without the credential's key (K2 never had it). Only the issuer
    // knows the key: ma-b forwards, ma-a refuses.
    let refused_a = counter(&tb, Ma::A, "rx_refused");
    let forged = OldBinding {
        cred: cred_a.clone(),
        proof: redirect_proof(&k2, &cred_a, "ma-b", b(), 2),
    };
    let r = register(
        &tb,
        Ma::B,
        b(),
        2,
        &registration(2, &k1, b(), 2, c1b, vec![forged.clone()]),
    );
    assert_eq!(result_for(&r, a()), Some(Status::BadProof), "forged: {r:?}");
    assert_eq!(r.results.len(), 1, "{r:?}");
    assert!(counter(&tb, Ma::A, "rx_refused") > refused_a);
    assert_no_binding(&tb, a(), "after a forged proof");
    wait_no_sims_state(&tb, "after a forged proof");

    // 1c. K2 registers in K1's name: it cannot seal the registration under
    // K1's session, so ma-b refuses it before anything else (BadCookie:
    // solicit again) and asks nobody.
    let unauth_b = counter(&tb, Ma::B, "rx_unauthenticated");
    let rx_a = counter(&tb, Ma::A, "rx_ok");
    let mut d = registration(6, &k1, b(), 6, c1b, vec![forged]);
    // What the kit would seal in K1's name, with K2's session instead.
    let n = d.len();
    d[n - 16..].copy_from_slice(&[0x5a; 16]);
    let r = register_unsealed(&tb, Ma::B, b(), 6, &d).unwrap();
    assert_eq!(r.status, Status::BadCookie, "{r:?}");
    assert!(r.results.is_empty() && r.cred.is_none(), "{r:?}");
    assert!(counter(&tb, Ma::B, "rx_unauthenticated") > unauth_b);
    // ma-a heard nothing of it: no TunnelRequest in K1's name.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter(&tb, Ma::A, "rx_ok"), rx_a);
    assert_no_binding(&tb, a(), "after a registration in another's name");

    // 1b. K2 presents K1's credential with a valid signature of its own:
    // only the issuer knows the credential is K1's.
    let refused_a = counter(&tb, Ma::A, "rx_refused");
    let stolen = OldBinding {
        cred: cred_a.clone(),
        proof: redirect_proof(&k2, &cred_a, "ma-b", b(), 1),
    };
    let r = register(
        &tb,
        Ma::B,
        b(),
        3,
        &registration(3, &k2, b(), 1, c2b, vec![stolen]),
    );
    assert_eq!(
        result_for(&r, a()),
        Some(Status::UnknownCredential),
        "stolen credential: {r:?}"
    );
    assert!(counter(&tb, Ma::A, "rx_refused") > refused_a);
    assert_no_binding(&tb, a(), "after a stolen credential");
    wait_no_sims_state(&tb, "after a stolen credential");

    // 2a. A valid redirect to ma-b (seq 3): relayed at both agents.
    let proof3 = redirect_proof(&k1, &cred_a, "ma-b", b(), 3);
    let redirect = registration(
        4,
        &k1,
        b(),
        3,
        c1b,
        vec![OldBinding {
            cred: cred_a.clone(),
            proof: proof3,
        }],
    );
    let r = register(&tb, Ma::B, b(), 4, &redirect);
    let answered = Instant::now();
    assert_eq!(
        result_for(&r, a()),
        Some(Status::Ok),
        "valid redirect: {r:?}"
    );
    let home = wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    let visitor = wait_binding(&tb, Ma::B, a(), "visitor", Ma::A);
    assert_eq!(home.node, key_in_status(&k1));
    assert_eq!(visitor.node, key_in_status(&k1));
    for (x, peer) in [(Ma::A, Ma::B), (Ma::B, Ma::A)] {
        let tunnel = tunnel_name(&peer.id());
        let k = tb.agent_kernel_state(x).unwrap();
        assert!(
            k.tunnels.contains(&tunnel)
                && k.set_elements.iter().any(|e| e.contains(&a().to_string())),
            "{} carries 10.1.0.50 through {tunnel}: {k:?}",
            x.id()
        );
    }

    // The node goes home and registers at ma-a (seq 4): the redirect goes.
    assert_eq!(tb.move_to(Ma::A).unwrap().addr, a());
    let back = OldBinding {
        cred: cred_a.clone(),
        proof: redirect_proof(&k1, &cred_a, "ma-a", a(), 4),
    };
    let r = register(
        &tb,
        Ma::A,
        a(),
        5,
        &registration(5, &k1, a(), 4, cookie(&tb, Ma::A, a(), &k1), vec![back]),
    );
    assert_eq!(result_for(&r, a()), Some(Status::Ok), "back home: {r:?}");
    wait_no_sims_state(&tb, "once home");

    // The exact bytes of the seq-3 redirect again, from 10.2.0.50. An
    // answered registration is kept 10 s to answer its retransmissions
    // (§8); replay after that, so that ma-b does process it again.
    assert_eq!(tb.move_to(Ma::B).unwrap().addr, b());
    let keep = Duration::from_secs(11);
    std::thread::sleep(keep.saturating_sub(answered.elapsed()));
    let refused_a = counter(&tb, Ma::A, "rx_refused");
    let r = register(&tb, Ma::B, b(), 4, &redirect);
    assert_eq!(result_for(&r, a()), Some(Status::Replay), "replay: {r:?}");
    assert!(counter(&tb, Ma::A, "rx_refused") > refused_a);
    assert_no_binding(&tb, a(), "after a replayed registration");
    wait_no_sims_state(&tb, "after a replayed registration");

    // 2b. Agent-to-agent: a TunnelRequest from ma-b's address with a node
    // proof that is valid and unspent (seq 5), but the envelope of another
    // run of ma-b (a replay from before its restart: challenged, not acted
    // on), an envelope sequence ma-a has already accepted in ma-b's
    // current run, or a wrong key.
    let key = tb.key_bytes(Ma::A, Ma::B);
    let run_b = u64::from_str_radix(&tb.agent_status(Ma::B).unwrap().instance, 16).unwrap();
    let req = TunnelRequest {
        req_id: 0x0006_b000,
        node: *k1.pk,
        cred: cred_a.clone(),
        node_addr: b().octets(),
        seq: 5,
        proof: redirect_proof(&k1, &cred_a, "ma-b", b(), 5),
        lifetime_s: 60,
    };
    let far = 1 << 40;
    let cases = [
        ("another run of ma-b", key, run_b ^ 1, far, "rx_challenged"),
        ("an envelope seq already used", key, run_b, 1, "rx_replay"),
        ("a wrong key", [0x5a; 32], run_b, far, "rx_unauthenticated"),
    ];
    let names = [
        "rx_ok",
        "rx_refused",
        "rx_replay",
        "rx_unauthenticated",
        "rx_challenged",
    ];
    for (what, key, run, seq, grows) in cases {
        let before = tb.agent_status(Ma::A).unwrap();
        let d = tunnel_request(&key, "ma-b", run, seq, 0, req.clone());
        let from = SocketAddrV4::new(Ma::B.wan_ip(), 0);
        let to = SocketAddrV4::new(Ma::A.wan_ip(), SIMS_PORT);
        tb.agent(Ma::B)
            .send_udp(Some(from), to, &[d], 0, Duration::ZERO)
            .unwrap();
        let after = tb
            .wait_agent(
                Ma::A,
                &format!("{grows} to count a tunnel request with {what}"),
                Duration::from_secs(5),
                |s| s.counter(grows) > before.counter(grows),
            )
            .unwrap();
        for n in names {
            let want = before.counter(n) + u64::from(n == grows);
            assert_eq!(after.counter(n), want, "{n} after a request with {what}");
        }
        assert!(
            after.binding(&a().to_string()).is_none(),
            "{what}: {}",
            after.raw
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    no_sims_state(&tb).unwrap();

    // 3. The daemons keep serving: the real node moves A → B as usual.
    assert!(tb.agent_running(Ma::A) && tb.agent_running(Ma::B));
    tb.move_to(Ma::A).unwrap();
    tb.start_node().unwrap();
    tb.wait_node_at(Ma::A, T).unwrap();
    let mut s = stream(&tb, Dir::Down, "s6b-after", a());
    wait_flowing(&tb, &s, 100_000, Duration::from_secs(10));
    move_relayed(&mut tb, Ma::B, &[a()]);
    let home = wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    assert_ne!(home.node, key_in_status(&k1), "the real node's own key");
    wait_binding(&tb, Ma::B, a(), "visitor", Ma::A);
    wait_flowing(&tb, &s, 200_000, T);
    let r = s.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s6b session after the refusals");
}

/// Scenario 6c: An address another host holds now is never redirected.
#[test]
fn s6c_address_held_by_another_host_is_not_redirected() {
    let Some(mut tb) = setup(
        Options::default()
            .label("s6c")
            .agents(&[Ma::A, Ma::B])
            .lanhost(),
    ) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let s = stream(&tb, Dir::Down, "s6c-old", a());
    wait_flowing(&tb, &s, 100_000, Duration::from_secs(10));
    tb.detach().unwrap();
    // Another host takes 10.1.0.50 and uses it.
    let lh = tb.lanhost();
    lh.ip(&["addr", "add", "10.1.0.50/24", "dev", "eth0"])
        .unwrap();
    lh.ip(&["route", "add", "default", "via", "10.1.0.1"])
        .unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    lh.run(
        busybox,
        &["ping", "-c", "3", "-W", "1", "10.1.0.1"],
        Duration::from_secs(10),
    )
    .expect("lanhost-a pings its gateway with 10.1.0.50");

    tb.move_to(Ma::B).unwrap();
    tb.wait_node_at(Ma::B, T).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    no_state_for(&tb, a()).unwrap();
    let st = tb.node_status().unwrap();
    if let Some(bd) = st.binding(&a().to_string()) {
        assert_ne!(bd.state, "relayed", "{}", st.raw);
    }
    // The other host keeps its address and its Internet access.
    let w = tb.whoami_from(&lh, None).unwrap();
    assert_eq!(*w.local.ip(), a());
    assert_eq!(*w.seen.ip(), Ma::A.wan_ip());
    drop(s);
}

/// Scenario 7: simsd on the old agent crashes and restarts: the relayed session
/// survives (a stall is allowed) and ends without reset.
#[test]
fn s7_agent_restart_keeps_relayed_session() {
    let Some(mut tb) = setup(Options::default().label("s7").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut down = stream(&tb, Dir::Down, "s7-down", a());
    let mut up = stream(&tb, Dir::Up, "s7-up", a());
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 200_000, T);
    let run_before = tb.agent_status(Ma::A).unwrap().instance;

    tb.kill_agent(Ma::A, libc::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    tb.start_agent(Ma::A).unwrap();
    let t_restart = Instant::now();
    let st = tb.agent_status(Ma::A).unwrap();
    eprintln!("s7: instance {run_before} → {}", st.instance);
    assert_ne!(run_before, st.instance, "a new run");
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 200_000, Duration::from_secs(30));
    wait_flowing(&tb, &up, 200_000, Duration::from_secs(30));
    eprintln!(
        "s7: relay back {:.1} s after restart",
        t_restart.elapsed().as_secs_f64()
    );
    let rd = down.finish(Duration::from_secs(30)).unwrap();
    let ru = up.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&rd, "s7 down across the restart");
    assert_verified(&ru, "s7 up across the restart");
    assert!(tb.agent_running(Ma::A) && tb.agent_running(Ma::B));
}

/// Scenario 8: 10,000 random and truncated datagrams on the LAN and WAN ports are
/// counted as malformed; the daemon survives and a normal move works.
#[test]
fn s8_garbage_is_counted_and_survived() {
    let Some(mut tb) = setup(
        Options::default()
            .label("s8")
            .agents(&[Ma::A, Ma::B])
            .lanhost(),
    ) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let lh = tb.lanhost();
    lh.ip(&["addr", "add", "10.1.0.20/24", "dev", "eth0"])
        .unwrap();
    // Real datagrams to truncate and flip bits in: an advertisement.
    let mut samples = Vec::new();
    if let Some((d, from)) = lh
        .recv_udp(
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SIMS_PORT),
            Duration::from_secs(4),
        )
        .unwrap()
    {
        eprintln!("s8: captured a {}-byte datagram from {from}", d.len());
        samples.push(d);
    }
    let garbage = garbage_datagrams(0x5153_4d53, 10_000, &samples);
    let lan = lh
        .send_udp(
            None,
            SocketAddrV4::new(Ma::A.lan_gw(), SIMS_PORT),
            &garbage[..5000],
            100,
            Duration::from_millis(2),
        )
        .unwrap();
    // From a configured peer's address (the firewall opens the WAN port
    // only to peers).
    let wan = tb
        .agent(Ma::B)
        .send_udp(
            None,
            SocketAddrV4::new(Ma::A.wan_ip(), SIMS_PORT),
            &garbage[5000..],
            100,
            Duration::from_millis(2),
        )
        .unwrap();
    eprintln!("s8: sent {lan} datagrams on LAN A, {wan} on ma-a's WAN");
    std::thread::sleep(Duration::from_millis(500));
    assert!(tb.agent_running(Ma::A), "simsd on ma-a died");
    assert!(tb.agent_running(Ma::B), "simsd on ma-b died");
    let st = tb
        .wait_agent(Ma::A, "rx_malformed > 0", Duration::from_secs(5), |s| {
            s.counter("rx_malformed") > 0
        })
        .unwrap();
    eprintln!("s8: ma-a counters {}", st.raw["counters"]);

    let mut s = stream(&tb, Dir::Down, "s8-after-garbage", a());
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_flowing(&tb, &s, 200_000, T);
    let r = s.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s8 session after garbage");
    assert!(tb.agent_running(Ma::A));
}

/// The rule flushes of OpenWrt's routing daemons, under a relayed
/// session: mwan3 deletes its whole range (1000-3999) when it stops, which
/// must not touch simsd's rules (their priorities are below it); netifd
/// deletes every rule but the kernel's defaults when it (re)starts, and
/// simsd must put its own back within 1 s. The session's bytes arrive
/// intact across both. First, someone else's device with the name of
/// ma-b's tunnel to ma-a: ma-b starts all the same, leaves the device
/// alone, and makes its tunnel once the device is gone.
#[test]
fn s9_rule_flush_is_repaired_and_session_survives() {
    let Some(mut tb) = setup(Options::default().label("s9").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    let in_the_way = tunnel_name(&Ma::A.id());
    tb.agent(Ma::B)
        .ip(&["link", "add", &in_the_way, "type", "bridge"])
        .unwrap();
    tb.start_all_at(Ma::A).unwrap();
    let st = tb.agent_status(Ma::B).unwrap();
    assert!(
        st.peers.iter().any(|p| p.id == Ma::A.id() && !p.tunnel_up),
        "{st:?}"
    );
    let kind = tb
        .agent(Ma::B)
        .ip(&["-d", "link", "show", &in_the_way])
        .unwrap();
    assert!(kind.contains("bridge"), "the device was replaced: {kind}");
    assert!(tb.agent_log(Ma::B).contains("is in the way (not ours)"));
    tb.agent(Ma::B).ip(&["link", "del", &in_the_way]).unwrap();
    wait_for(
        "ma-b to make its tunnel to ma-a",
        T,
        Duration::from_millis(20),
        || {
            let st = tb.agent_status(Ma::B).map_err(|e| e.to_string())?;
            Ok(st
                .peers
                .iter()
                .any(|p| p.id == Ma::A.id() && p.tunnel_up)
                .then_some(()))
        },
    )
    .unwrap();
    let mut down = stream(&tb, Dir::Down, "s9-down", a());
    tb.move_to(Ma::B).unwrap();
    tb.wait_node_binding(a(), "relayed", T).unwrap();
    wait_flowing(&tb, &down, 100_000, T);
    // Every rule's priority in the agent's namespace.
    let prefs = |x: Ma| -> Vec<u32> {
        let out = tb.agent(x).ip(&["-4", "rule", "show"]).unwrap();
        out.lines()
            .filter_map(|l| l.split(':').next()?.trim().parse().ok())
            .collect()
    };
    let del_pref = |x: Ma, p: u32| {
        let _ = tb.agent(x).run(
            "/usr/sbin/ip",
            &["-4", "rule", "del", "pref", &p.to_string()],
            Duration::from_secs(5),
        );
    };
    for x in [Ma::A, Ma::B] {
        let before = tb.agent_kernel_state(x).unwrap().rules;
        assert!(!before.is_empty(), "{}: no SIMS rules to flush", x.id());
        for p in [SIMS_RULE_PRIORITY, SIMS_MARK_RULE_PRIORITY] {
            assert!(!(1000..=3999).contains(&p), "{p} is mwan3's");
        }
        // What mwan3 does when it stops: its range goes, ours stays.
        for p in prefs(x).into_iter().filter(|p| (1000..=3999).contains(p)) {
            del_pref(x, p);
        }
        assert_eq!(
            tb.agent_kernel_state(x).unwrap().rules,
            before,
            "{}",
            x.id()
        );
        // What netifd does when it starts: everything but the defaults.
        for p in prefs(x)
            .into_iter()
            .filter(|p| ![0, 32766, 32767].contains(p))
        {
            del_pref(x, p);
            del_pref(x, p);
        }
        // simsd repairs on the deletion's event, in milliseconds; the
        // bound is for the observation: reading the kernel state runs
        // several `ip` and `nft`, which take over a second in a loaded
        // TCG guest (a 1 s bound failed there with no observation made;
        // with the host's two cores also busy, 4–5 s passed).
        let t = std::time::Instant::now();
        wait_for(
            &format!("{} to reinstall its rules", x.id()),
            Duration::from_secs(15),
            Duration::from_millis(10),
            || {
                let now = tb.agent_kernel_state(x).map_err(|e| e.to_string())?;
                Ok((now.rules == before).then_some(()))
            },
        )
        .unwrap();
        eprintln!(
            "s9: {} had its rules back {:.0} ms after the last deletion",
            x.id(),
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    wait_flowing(&tb, &down, 200_000, T);
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s9 across the rule flushes");
}

/// SIGHUP with a broken config changes nothing and says where the error
/// is; with a valid one it reloads and keeps the bindings.
#[test]
fn s10_reload_refuses_bad_config_and_keeps_bindings() {
    let Some(mut tb) = setup(Options::default().label("s10").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut down = stream(&tb, Dir::Down, "s10-down", a());
    tb.move_to(Ma::B).unwrap();
    tb.wait_node_binding(a(), "relayed", T).unwrap();
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    let conf = tb.agent_dir(Ma::A).join("sims.conf");
    let good = std::fs::read_to_string(&conf).unwrap();
    let bad = good.replace(&format!("option port '{SIMS_PORT}'"), "option port 'forty'");
    assert_ne!(good, bad);
    std::fs::write(&conf, &bad).unwrap();
    tb.signal_agent(Ma::A, libc::SIGHUP).unwrap();
    wait_for(
        "ma-a to refuse the bad config",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || Ok(tb.agent_log(Ma::A).contains("reload refused").then_some(())),
    )
    .unwrap();
    let log = tb.agent_log(Ma::A);
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        line.contains("sims.conf:") && line.contains("'forty' is not a valid number"),
        "{line}"
    );
    assert!(tb.agent_running(Ma::A));
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 100_000, T);

    std::fs::write(&conf, &good).unwrap();
    tb.signal_agent(Ma::A, libc::SIGHUP).unwrap();
    wait_for(
        "ma-a to reload",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            Ok(tb
                .agent_log(Ma::A)
                .contains("configuration reloaded")
                .then_some(()))
        },
    )
    .unwrap();
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 200_000, Duration::from_secs(20));
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s10 across two reloads");
}

/// Scenario 11: sims-node restarts while a session is relayed (an upgrade,
/// a crash): it comes back with the same identity and credentials, the
/// address it still holds stays relayed, and the node can still prove it
/// owns that address when it goes home.
#[test]
fn s11_node_restart_keeps_identity_and_relayed_session() {
    let Some(mut tb) = setup(Options::default().label("s11").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut down = stream(&tb, Dir::Down, "s11-down", a());
    wait_flowing(&tb, &down, 200_000, Duration::from_secs(10));
    move_relayed(&mut tb, Ma::B, &[a()]);
    let home = wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    let key = |tb: &Testbed| {
        tb.node_status().unwrap().raw["node"]
            .as_str()
            .map(String::from)
    };
    let before = key(&tb).expect("sims-node reports its key");
    assert!(home.node.starts_with(&before), "{} vs {before}", home.node);

    tb.stop_node();
    tb.start_node().unwrap();
    assert_eq!(key(&tb).as_deref(), Some(before.as_str()), "same identity");
    // The restored address is registered again with the current agent.
    tb.wait_node_binding(a(), "relayed", T).unwrap();
    let st = tb.node_status().unwrap();
    assert_eq!(st.bindings.len(), 2, "{:?}", st.raw);
    wait_flowing(&tb, &down, 200_000, T);

    // Home again: ma-a takes the address back from the same node and
    // releases its redirect; the session continues natively.
    move_relayed(&mut tb, Ma::A, &[]);
    wait_no_state_for(&tb, a(), T);
    wait_flowing(&tb, &down, 200_000, T);
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s11 session across the node's restart");
}

/// Scenario 24 (issue 12, item 3): the old sessions do not wait for DHCP.
/// With a DHCP server a second slow, each of six moves has the old
/// address answering end to end before the new address comes (the node
/// registered early, from 0.0.0.0), and a checked stream keeps its bytes.
/// (The race this also guards against — the DHCP client's flush taking
/// the interface's last address for a moment after sims-node installed
/// its route, which the kernel then removed — showed in a quarter of the
/// release build's benchmark moves, not in this debug-build scenario.)
#[test]
fn s24_old_sessions_answer_before_a_slow_dhcp() {
    let Some(mut tb) = setup(
        Options::default()
            .label("s24")
            .agents(&[Ma::A, Ma::B])
            .dhcp_reply_delay_s(1),
    ) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut down = stream(&tb, Dir::Down, "s24-down", a());
    wait_flowing(&tb, &down, 100_000, T);
    for n in 0..6 {
        let from = tb.location();
        let to = if from == Ma::A { Ma::B } else { Ma::A };
        let mut probe = tb.spawn_probe(from.node_addr(), 5000).unwrap();
        let m = tb.move_to(to).unwrap();
        assert!(m.dhcp_ms() > 900.0, "DHCP took {:.0} ms", m.dhcp_ms());
        probe.wait_exit(Duration::from_secs(20)).unwrap();
        let (v, out) = probe.last_json();
        let v = v.unwrap_or_else(|| panic!("probe printed no JSON: {out}"));
        let before_dhcp = v["new_addr_to_echo_ms"].as_f64().unwrap_or(f64::NAN);
        let from_link_up = v["link_up_to_echo_ms"].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "s24 move {n} {}->{}: link up -> {} answers {from_link_up:.1} ms, {:.1} ms before the new address",
            from.id(),
            to.id(),
            from.node_addr(),
            -before_dhcp
        );
        // Within a second of link-up: in the emulated guests of the VM
        // suites the testbed's own steps (the move, udhcpc's start and its
        // deconfig) take hundreds of ms, and one x86-64 run took 687 ms
        // while answering 2.1 s before DHCP; on the host it is ~12 ms
        // (docs/BENCHMARKS.md). The missing neighbour entry that f8330b6
        // fixed took 1.37 s and still fails here.
        assert!(
            before_dhcp < -500.0 && from_link_up < 1000.0,
            "move {n}: the old address answered only with DHCP: {out}"
        );
        tb.wait_node_at(to, T).unwrap();
    }
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s24 session across six moves with a slow DHCP");
}
