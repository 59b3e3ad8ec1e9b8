//! Fault scenarios of the security and fault-tolerance work (issue 9), on
//! the namespace testbed with the real daemons: a LAN bridge recreated
//! under the bindings, the issuer down mid-handover, a redirected address
//! taken by another host, an agent whose clock is days off or whose state
//! was wiped, reloads that add, remove and reorder peers, the current
//! agent killed in the middle of a handover. They run on the host only (`cargo xtask test`), not in every
//! VM guest: what they exercise does not depend on the tunnel backend, and
//! the guests' time is better spent on the main scenarios.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use sims_testbed::*;

/// Scenario 14: netifd recreates the visited agent's LAN bridge (a new
/// device, a new ifindex) while it carries a relayed session: ma-b moves
/// its routes and neighbour entries to the new bridge and rebinds its LAN
/// socket, the session carries on, and the node can still register there.
#[test]
fn s14_lan_bridge_recreated_keeps_relayed_session() {
    let Some(mut tb) = setup(Options::default().label("s14").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut down = stream(&tb, Dir::Down, "s14-down", a());
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::B, a(), "visitor", Ma::A);
    wait_flowing(&tb, &down, 100_000, T);
    let b = tb.agent(Ma::B);
    let before = b.ip(&["-o", "link", "show", "br-lan"]).unwrap();
    for cmd in [
        "link del br-lan",
        "link add br-lan type bridge",
        "link set br-lan address 02:00:00:00:02:01",
        "addr add 10.2.0.1/24 dev br-lan",
        "link set br-lan up",
        "link set mnport master br-lan up",
    ] {
        b.ip(&cmd.split(' ').collect::<Vec<_>>()).unwrap();
    }
    let after = b.ip(&["-o", "link", "show", "br-lan"]).unwrap();
    assert_ne!(
        before.split(':').next(),
        after.split(':').next(),
        "a new ifindex"
    );
    // The visitor route is back on the new bridge, and traffic flows.
    wait_flowing(&tb, &down, 300_000, Duration::from_secs(20));
    let routes = b.ip(&["-4", "route", "show", "table", "all"]).unwrap();
    assert!(
        routes.contains(&format!("{} dev br-lan", a())),
        "visitor route on the new bridge: {routes}"
    );
    // ma-b still hears its LAN: a new registration after a move back and
    // forth goes through the rebound socket.
    move_relayed(&mut tb, Ma::A, &[]);
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_flowing(&tb, &down, 300_000, T);
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s14 session across the bridge's recreation");
}

/// Scenario 15: the issuer is down while the node moves. The current
/// agent's request times out, the node is told (its old address stays
/// pending, never relayed), and when the issuer comes back (restarted,
/// a new run) the handover completes without restarting anything else;
/// the session's bytes arrive intact.
#[test]
fn s15_issuer_down_mid_handover_then_back() {
    let Some(mut tb) = setup(Options::default().label("s15").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut down = stream(&tb, Dir::Down, "s15-down", a());
    wait_flowing(&tb, &down, 100_000, T);
    tb.kill_agent(Ma::A, libc::SIGKILL).unwrap();
    let m = tb.move_to(Ma::B).unwrap();
    assert_eq!(m.addr, b());
    tb.wait_node_at(Ma::B, T).unwrap();
    // Past ma-b's retransmission budget (12.6 s): told, not relayed.
    std::thread::sleep(Duration::from_secs(14));
    let st = tb.node_status().unwrap();
    let old = st.binding(&a().to_string()).map(|b| b.state.clone());
    assert_eq!(old.as_deref(), Some("pending"), "{}", st.raw);
    assert!(
        counter(&tb, Ma::B, "tx") > 0 && tb.agent_running(Ma::B),
        "ma-b keeps serving"
    );
    // The issuer returns: the node's next retry completes the handover.
    tb.start_agent(Ma::A).unwrap();
    tb.wait_node_binding(a(), "relayed", Duration::from_secs(30))
        .unwrap();
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 300_000, Duration::from_secs(60));
    let r = down.finish(Duration::from_secs(60)).unwrap();
    assert_verified(&r, "s15 session across the issuer's absence");
}

/// Scenario 16: an address is never both redirected and another host's.
/// While the node is away with 10.1.0.50, the router's own ping to it
/// (what dnsmasq sends before leasing an address) is answered by the node
/// through the tunnel, so dnsmasq would not lease it; when another host
/// takes it anyway, ma-a ends the redirect at once, that host's traffic
/// is never tunnelled, and the node is told its binding ended.
#[test]
fn s16_redirected_address_taken_by_another_host() {
    let Some(mut tb) = setup(
        Options::default()
            .label("s16")
            .agents(&[Ma::A, Ma::B])
            .lanhost(),
    ) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let s = stream(&tb, Dir::Down, "s16-old", a());
    wait_flowing(&tb, &s, 100_000, Duration::from_secs(10));
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    // The router pings the redirected address: the node answers it.
    tb.agent(Ma::A)
        .run(
            busybox,
            &["ping", "-c", "2", "-W", "2", "10.1.0.50"],
            Duration::from_secs(10),
        )
        .expect("the router's ping to a redirected address is answered");
    // Another host takes 10.1.0.50 on LAN A and speaks.
    let ended = counter(&tb, Ma::A, "redirects_ended");
    let lh = tb.lanhost();
    lh.ip(&["addr", "add", "10.1.0.50/24", "dev", "eth0"])
        .unwrap();
    lh.ip(&["route", "add", "default", "via", "10.1.0.1"])
        .unwrap();
    lh.run(
        busybox,
        &["ping", "-c", "3", "-W", "1", "10.1.0.1"],
        Duration::from_secs(10),
    )
    .expect("the other host reaches its gateway, not a tunnel");
    tb.wait_agent(Ma::A, "the redirect to end", T, |st| {
        st.counter("redirects_ended") > ended && st.binding(&a().to_string()).is_none()
    })
    .unwrap();
    tb.wait_agent(Ma::B, "the visitor side to go", T, |st| {
        st.binding(&a().to_string()).is_none()
    })
    .unwrap();
    // Its Internet traffic leaves by A's WAN as its own.
    let w = tb.whoami_from(&lh, None).unwrap();
    assert_eq!(*w.local.ip(), a());
    assert_eq!(*w.seen.ip(), Ma::A.wan_ip());
    // The node learns it at its next refresh (a third of the 60 s
    // lifetime) and stops claiming the address.
    let t = Duration::from_secs(30);
    tb.wait_node(&format!("{} to be dropped", a()), t, |st| {
        st.binding(&a().to_string()).is_none()
    })
    .unwrap();
    drop(s);
}

/// Scenario 17: no clocks. ma-b's wall clock is three days behind
/// (libfaketime), as on a router without NTP: the handover A → B works
/// as usual. Then ma-a reboots with its state directory wiped: a new
/// handover works at once (peers meet again with one challenge).
#[test]
fn s17_agent_clock_days_off_and_wiped_state() {
    const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if !Path::new(FAKETIME).exists() {
        eprintln!("SKIPPED: no libfaketime ({FAKETIME}; Debian's libfaketime)");
        return;
    }
    let mut opts = Options::default().label("s17").agents(&[Ma::A, Ma::B]);
    for (k, v) in [
        ("LD_PRELOAD", FAKETIME),
        ("FAKETIME", "-3d"),
        // Only the wall clock: timers run on the monotonic one.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ] {
        opts.agent_env.push((Ma::B, k.into(), v.into()));
    }
    let Some(mut tb) = setup(opts) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    // ma-b's log lines carry its wall clock: three days behind ours.
    let log = std::fs::read_to_string(tb.agent_dir(Ma::B).join("simsd.log")).unwrap();
    let stamp: Option<u64> = log
        .lines()
        .find_map(|l| l.strip_prefix('[')?.split('.').next()?.parse().ok());
    let ours = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let behind = ours.saturating_sub(stamp.expect("a log line with a time"));
    assert!(
        behind > 2 * 86_400,
        "ma-b's clock is only {behind} s behind"
    );

    let mut down = stream(&tb, Dir::Down, "s17-down", a());
    wait_flowing(&tb, &down, 100_000, T);
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 300_000, T);
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s17 session with ma-b's clock 3 days off");

    // ma-a reboots with an empty state directory (its credentials gone).
    tb.kill_agent(Ma::A, libc::SIGKILL).unwrap();
    let _ = std::fs::remove_file(tb.agent_dir(Ma::A).join("simsd.state"));
    tb.start_agent(Ma::A).unwrap();
    move_relayed(&mut tb, Ma::A, &[]);
    let mut again = stream(&tb, Dir::Down, "s17-again", a());
    wait_flowing(&tb, &again, 100_000, T);
    let t = Instant::now();
    move_relayed(&mut tb, Ma::B, &[a()]);
    eprintln!(
        "s17: relayed {:.2} s after moving, ma-a freshly wiped",
        t.elapsed().as_secs_f64()
    );
    wait_flowing(&tb, &again, 300_000, T);
    let r = again.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s17 session after ma-a's wiped reboot");
}

/// The path of busybox (for its ping).
fn busybox() -> &'static str {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox")
}

/// `conf` (a UCI file of the testbed's agents) with its peer sections in
/// the order of `ids`, the others left out.
fn with_peers(conf: &str, ids: &[&str]) -> String {
    let mut parts = conf.split("\nconfig peer ");
    let mut out = parts.next().unwrap_or_default().to_string();
    let peers: Vec<&str> = parts.collect();
    for id in ids {
        let sec = peers
            .iter()
            .find(|p| p.contains(&format!("option id '{id}'")))
            .unwrap_or_else(|| panic!("no peer {id} in {conf}"));
        out.push_str("\nconfig peer ");
        out.push_str(sec);
    }
    out
}

/// A slow stream (20 kB/s) from the node's address at A: the pings
/// across a reload measure the reload, not a full queue.
fn slow_stream(tb: &Testbed, dir: Dir, label: &str) -> Session {
    tb.stream(
        StreamSpec::new(dir, label)
            .rate(20_000)
            .duration_ms(90_000)
            .bind(a()),
    )
    .unwrap()
}

/// ma-a pings the node's address at A 150 times at 20 ms (through the
/// tunnel while it is relayed), in a thread: its summary line.
fn pings_from_a(tb: &Testbed) -> std::thread::JoinHandle<sims_testbed::sys::Result<String>> {
    let ns = tb.agent(Ma::A);
    let target = a().to_string();
    std::thread::spawn(move || {
        ns.run(
            busybox(),
            &["ping", "-c", "150", "-i", "0.02", "-W", "1", &target],
            Duration::from_secs(30),
        )
    })
}

/// ma-a rereads its config after SIGHUP, in place.
fn reload_in_place(tb: &mut Testbed, conf: &Path, text: &str) {
    let before = tb.agent_log(Ma::A).matches("reloaded in place").count();
    std::fs::write(conf, text).unwrap();
    tb.signal_agent(Ma::A, libc::SIGHUP).unwrap();
    wait_for(
        "ma-a to reload in place",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            let n = tb.agent_log(Ma::A).matches("reloaded in place").count();
            Ok((n > before).then_some(()))
        },
    )
    .unwrap();
}

/// Scenario 18: SIGHUP reloads in place, and bindings follow their peer
/// by id. ma-a's peers are reordered (C before B, so B's index changes):
/// the relayed path loses not one packet (the router pings the node's old
/// address through the tunnel every 20 ms across the reload: all
/// answered), B's tunnel is the same device, the session goes on. Then
/// B's agreement is removed: ma-a ends the redirect and tells ma-b (its
/// visitor side goes at once), and the node is told at its next refresh
/// (ma-a answers ma-b's request NotPeer) and stops claiming the address.
#[test]
fn s18_reload_in_place_follows_peers_by_id() {
    let Some(mut tb) = setup(
        Options::default()
            .label("s18")
            .agents(&[Ma::A, Ma::B, Ma::C]),
    ) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    // Slow streams: the pings measure the reload, not a full queue.
    let slow = |dir, label| slow_stream(&tb, dir, label);
    let mut down = slow(Dir::Down, "s18-down");
    // Keeps the address in use after `down` is checked and done.
    let hold = slow(Dir::Up, "s18-hold");
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 10_000, T);
    let ma_a = tb.agent(Ma::A);
    let link = || {
        ma_a.ip(&["-o", "link", "show", "sims-ma-b"])
            .map(|l| l.split(':').next().unwrap_or_default().to_string())
    };
    let index = link().unwrap();
    let conf = tb.agent_dir(Ma::A).join("sims.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.find("'ma-b'") < text.find("'ma-c'"), "{text}");

    let pinger = pings_from_a(&tb);
    std::thread::sleep(Duration::from_secs(1));
    reload_in_place(&mut tb, &conf, &with_peers(&text, &["ma-c", "ma-b"]));
    let pings = pinger.join().unwrap().unwrap();
    assert!(
        pings.contains("150 packets transmitted, 150 packets received"),
        "a packet lost across the reload: {pings}"
    );
    assert_eq!(link().unwrap(), index, "the same tunnel device");
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 20_000, T);
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s18 session across the reload");
    // A new handover through B after the reorder uses B's slot (0, its
    // place at start), not its new index: home and back, then B again.
    move_relayed(&mut tb, Ma::A, &[]);
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    let set = |name: &str| {
        ma_a.run(
            "/usr/sbin/nft",
            &["list", "set", "inet", "sims", name],
            Duration::from_secs(5),
        )
        .unwrap_or_default()
    };
    assert!(set("in_0").contains(&a().to_string()), "{}", set("in_0"));
    assert!(!set("in_1").contains(&a().to_string()), "{}", set("in_1"));

    // B's agreement ends.
    reload_in_place(&mut tb, &conf, &with_peers(&text, &["ma-c"]));
    tb.wait_agent(Ma::A, "the redirect to end", T, |st| {
        st.binding(&a().to_string()).is_none()
    })
    .unwrap();
    tb.wait_agent(Ma::B, "ma-b told, its visitor side gone", T, |st| {
        st.binding(&a().to_string()).is_none()
    })
    .unwrap();
    assert!(link().is_err(), "ma-a's tunnel to ma-b is gone");
    // The next refresh comes within a third of the 60 s lifetime.
    tb.wait_node(
        &format!("{} to be dropped", a()),
        Duration::from_secs(30),
        |st| st.binding(&a().to_string()).is_none(),
    )
    .unwrap();
    assert!(counter(&tb, Ma::A, "rx_refused") > 0);
    assert!(
        !tb.agent_log(Ma::A).contains("removed with bindings left"),
        "the agent removed B's bindings itself, in B's slot"
    );
    drop(hold);
}

/// Scenario 19: the current agent is killed (kill -9) in the middle of a
/// handover: ma-a is stopped (SIGSTOP) so that ma-b's request waits for
/// it, ma-b dies with the visitor side pending and restarts; when ma-a
/// continues, the node's retry completes the handover and the session's
/// bytes arrive intact, with one binding on each side.
#[test]
fn s19_current_agent_killed_mid_handover() {
    let Some(mut tb) = setup(Options::default().label("s19").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut down = stream(&tb, Dir::Down, "s19-down", a());
    wait_flowing(&tb, &down, 100_000, T);
    tb.signal_agent(Ma::A, libc::SIGSTOP).unwrap();
    let m = tb.move_to(Ma::B).unwrap();
    assert_eq!(m.addr, b());
    tb.wait_agent(Ma::B, "the visitor side pending", T, |st| {
        st.binding(&a().to_string()).is_some_and(|b| b.pending)
    })
    .unwrap();
    tb.kill_agent(Ma::B, libc::SIGKILL).unwrap();
    tb.start_agent(Ma::B).unwrap();
    tb.signal_agent(Ma::A, libc::SIGCONT).unwrap();
    tb.wait_node_binding(a(), "relayed", Duration::from_secs(30))
        .unwrap();
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_binding(&tb, Ma::B, a(), "visitor", Ma::A);
    wait_flowing(&tb, &down, 300_000, Duration::from_secs(30));
    let r = down.finish(Duration::from_secs(60)).unwrap();
    assert_verified(&r, "s19 session across ma-b's death mid-handover");
}

/// Scenario 20: the agents' firewall is what OpenWrt's real fw4 compiles
/// for a router with the package (the default /etc/config/firewall, the
/// package's sims zone, the openings the init script registers for the
/// peers; `sims_openwrt::fw4`), and `fw4 reload` (the ruleset loaded
/// again, as fw4 does: its own table only) during a relayed session
/// leaves simsd's `inet sims` table, its kernel state and the session
/// intact. Skipped where the OpenWrt kit is not (the VM guests).
#[test]
fn s20_fw4_reload_keeps_relayed_session() {
    if sims_openwrt::kit().is_none() {
        eprintln!("SKIPPED: no OpenWrt kit (../shared/openwrt, or SIMS_OPENWRT_KIT)");
        return;
    }
    let Some(mut tb) = setup(Options::default().label("s20").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let mut down = stream(&tb, Dir::Down, "s20-down", a());
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 100_000, T);
    for x in [Ma::A, Ma::B] {
        let ns = tb.agent(x);
        let fw4 = ns
            .run(
                "/usr/sbin/nft",
                &["list", "table", "inet", "fw4"],
                Duration::from_secs(10),
            )
            .unwrap();
        for want in [
            "!fw4: Handle sims IPv4/IPv6 forward traffic",
            "!fw4: Accept lan to sims forwarding",
            "!fw4: ubus:sims[simsd] rule 1",
        ] {
            assert!(
                fw4.contains(want),
                "{}: not fw4's ruleset ({want}):\n{fw4}",
                x.id()
            );
        }
        let before = tb.agent_kernel_state(x).unwrap();
        let file = tb.agent_dir(x).join("fw4.nft");
        ns.run(
            "/usr/sbin/nft",
            &["-f", &file.to_string_lossy()],
            Duration::from_secs(15),
        )
        .unwrap();
        let after = tb.agent_kernel_state(x).unwrap();
        assert!(after.nft_table, "{}: inet sims is still there", x.id());
        assert_eq!(
            (&after.rules, &after.routes, &after.set_elements),
            (&before.rules, &before.routes, &before.set_elements),
            "{}: simsd's state untouched by fw4 reload",
            x.id()
        );
    }
    wait_flowing(&tb, &down, 300_000, T);
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s20 session across fw4 reloads");
}

/// Scenario 21: MA-B's WAN is a DHCP or PPPoE WAN and reconnects with a
/// new address (no `endpoint` configured: simsd follows the WAN device).
/// ma-b restarts its data plane on the new address and says hello; ma-a
/// challenges it there, re-points its tunnel and opens ipip from it (the
/// element in fw4's `sims_moved` set), within one exchange; then the node
/// moves A → B and its session from A, relayed through B's new address,
/// arrives intact. A new session at B is not tunnelled.
#[test]
fn s21_peer_wan_address_change_is_followed() {
    let Some(mut tb) = setup(Options::default().label("s21").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    // ma-b follows its WAN: no endpoint in its config.
    tb.kill_agent(Ma::B, libc::SIGTERM).unwrap();
    let conf = tb.agent_config_path(Ma::B);
    let text = std::fs::read_to_string(&conf).unwrap();
    let own = format!("\toption endpoint '{}'\n", Ma::B.wan_ip());
    assert_eq!(text.matches(&own).count(), 1, "{text}");
    std::fs::write(&conf, text.replace(&own, "")).unwrap();
    tb.start_agent(Ma::B).unwrap();
    let st = tb.agent_status(Ma::B).unwrap();
    assert_eq!(
        (
            st.raw["endpoint"].as_str(),
            st.raw["endpoint_from"].as_str()
        ),
        (Some("100.64.2.2"), Some("wan"))
    );
    let mut down = stream(&tb, Dir::Down, "s21-down", a());
    wait_flowing(&tb, &down, 50_000, T);

    // The WAN reconnects with another address (udhcpc's deconfig, then
    // bound): the old one goes, the new one and the default route come.
    let ns = tb.agent(Ma::B);
    let t0 = Instant::now();
    for cmd in [
        "addr del 100.64.2.2/24 dev wan",
        "addr add 100.64.2.3/24 dev wan",
        "route replace default via 100.64.2.1",
    ] {
        ns.ip(&cmd.split(' ').collect::<Vec<_>>()).unwrap();
    }
    // ma-b restarts its data plane on the new address (its own time: ~2.5 s
    // in an emulated guest with kernel ipip), then ma-a follows it in one
    // exchange: hello, move challenge, answer.
    tb.wait_agent(Ma::B, "ma-b on its new address", T, |s| {
        s.raw["endpoint"] == "100.64.2.3"
    })
    .unwrap();
    let restarted = t0.elapsed();
    let t1 = Instant::now();
    let moved = |s: &AgentStatus| {
        s.raw["peers"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["id"] == "ma-b" && p["endpoint"] == "100.64.2.3" && p["moved"] == true)
        })
    };
    tb.wait_agent(Ma::A, "ma-a to follow ma-b to 100.64.2.3", T, moved)
        .unwrap();
    let took = t1.elapsed();
    eprintln!("[s21] ma-b on its new address after {restarted:?}; ma-a followed it {took:?} later");
    // Well under the first retransmission (200 ms) plus a poll of the
    // status (50 ms) and its answer.
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let st = tb.agent_status(Ma::B).unwrap();
    assert_eq!(st.raw["endpoint"], "100.64.2.3");
    let log = tb.agent_log(Ma::B);
    assert!(
        log.contains("changed from 100.64.2.2 to 100.64.2.3"),
        "{log}"
    );
    let set = tb
        .agent(Ma::A)
        .run(
            "/usr/sbin/nft",
            &["list", "set", "inet", "fw4", "sims_moved"],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(
        set.contains("100.64.2.3"),
        "ma-a's fw4 opens ipip from it:\n{set}"
    );
    let file = std::fs::read_to_string(tb.agent_dir(Ma::A).join("fw4-moved")).unwrap();
    assert_eq!(file, "100.64.2.3\n", "and fw4 reloads keep it");

    // The node moves A -> B: the old session is relayed through B's new
    // address, a new one at B goes out natively.
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_binding(&tb, Ma::B, a(), "visitor", Ma::A);
    wait_flowing(&tb, &down, 150_000, T);
    let mut fresh = stream(&tb, Dir::Down, "s21-new", b());
    wait_flowing(&tb, &fresh, 50_000, T);
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s21 session across B's new address");
    let st = tb.agent_status(Ma::A).unwrap();
    assert!(
        st.binding(&b().to_string()).is_none(),
        "the new session's address is not bound at A"
    );
    let r = fresh.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s21 new session at B");

    // A PPPoE reconnect recreates the WAN device (a new ifindex), here
    // with the same address: ma-b binds its WAN socket to the new device
    // (SO_BINDTODEVICE held the old one's index), and the next handovers,
    // home to A and to B again, need it.
    let old = ns.ip(&["-o", "link", "show", "wan"]).unwrap();
    ns.ip(&["link", "del", "wan"]).unwrap();
    tb.inet()
        .ip_batch(&[
            format!("link add to-b type veth peer name wan netns {}", ns.name),
            format!("addr add {}/24 dev to-b", Ma::B.inet_ip()),
            "link set to-b up".into(),
        ])
        .unwrap();
    ns.ip_batch(&[
        "addr add 100.64.2.3/24 dev wan".into(),
        "link set wan up".into(),
        "route replace default via 100.64.2.1".into(),
    ])
    .unwrap();
    let new = ns.ip(&["-o", "link", "show", "wan"]).unwrap();
    assert_ne!(old.split(':').next(), new.split(':').next(), "a new device");
    wait_for(
        "ma-b to rebind its WAN socket",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            Ok(tb
                .agent_log(Ma::B)
                .contains("WAN socket bound to the new wan")
                .then_some(()))
        },
    )
    .unwrap();
    move_relayed(&mut tb, Ma::A, &[]);
    tb.wait_agent(Ma::B, "ma-b told the node is home", T, |st| {
        st.binding(&a().to_string()).is_none()
    })
    .unwrap();
    let mut again = stream(&tb, Dir::Down, "s21-again", a());
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &again, 100_000, T);
    let r = again.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s21 session after the WAN device was recreated");

    // B's address changes again while it relays a session: ma-a re-points
    // the tunnel that carries it (kernel ipip: in place), the session
    // goes on.
    let mut last = stream(&tb, Dir::Down, "s21-last", a());
    wait_flowing(&tb, &last, 50_000, T);
    for cmd in [
        "addr del 100.64.2.3/24 dev wan",
        "addr add 100.64.2.4/24 dev wan",
        "route replace default via 100.64.2.1",
    ] {
        ns.ip(&cmd.split(' ').collect::<Vec<_>>()).unwrap();
    }
    tb.wait_agent(Ma::A, "ma-a to follow ma-b to 100.64.2.4", T, |s| {
        s.raw["peers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["endpoint"] == "100.64.2.4"))
    })
    .unwrap();
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &last, 150_000, T);
    let r = last.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s21 relayed session across B's second address change");
}

/// Scenario 22 (live apply through the package's init script): ma-a's
/// simsd runs under OpenWrt's real procd, started by `/etc/init.d/sims`
/// in ma-a's namespace (the same state directory: it takes over ma-a's
/// bindings). With the node relayed through B and a checked stream from
/// its old address, `/etc/config/sims` is edited as an operator would —
/// peer C removed, a peer D added before B, a limit changed — and
/// `/etc/init.d/sims reload` applies it: procd sends the same simsd
/// SIGHUP (no restart), B's tunnel is the same device, 150 router pings
/// through it at 20 ms across the reload are all answered, the stream
/// arrives intact, and the firewall data procd holds opens D, not C.
#[test]
fn s22_init_script_reload_applies_a_changed_config_live() {
    use sims_openwrt::procd::{wait, Net, Router};
    let Some(kit) = sims_openwrt::kit() else {
        eprintln!("SKIPPED: no OpenWrt kit (../shared/openwrt, or SIMS_OPENWRT_KIT)");
        return;
    };
    let Some(mut tb) = setup(
        Options::default()
            .label("s22")
            .agents(&[Ma::A, Ma::B, Ma::C]),
    ) else {
        return;
    };
    tb.start_all_at(Ma::A).unwrap();
    let slow = |dir, label| slow_stream(&tb, dir, label);
    let mut down = slow(Dir::Down, "s22-down");
    let hold = slow(Dir::Up, "s22-hold");
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 10_000, T);

    // ma-a from now on: the package's init script under procd.
    tb.kill_agent(Ma::A, libc::SIGTERM).unwrap();
    let conf = std::fs::read_to_string(tb.agent_config_path(Ma::A)).unwrap();
    let conf = conf.replacen(
        "config agent 'agent'\n",
        "config agent 'agent'\n\toption enabled '1'\n",
        1,
    );
    let ns = tb.agent(Ma::A);
    let router = Router::start(
        kit,
        &tb.bin("simsd"),
        &conf,
        Net::Existing(ns.name.clone()),
        Some(&tb.agent_dir(Ma::A)),
        "s22",
    );
    let pid = router.start_simsd();
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 20_000, T);
    let link = || {
        ns.ip(&["-o", "link", "show", "sims-ma-b"])
            .map(|l| l.split(':').next().unwrap_or_default().to_string())
    };
    let index = wait("ma-a's tunnel to ma-b", || link().ok());

    let pinger = pings_from_a(&tb);
    std::thread::sleep(Duration::from_secs(1));
    // The operator's edit: C out, D in (before B), a limit changed.
    let file = router.dir.join("etc/config/sims");
    let text = std::fs::read_to_string(&file).unwrap();
    let key = sims_openwrt::fresh_key();
    let d = format!(
        "config peer 'ma_d'\n\toption id 'ma-d'\n\toption endpoint '100.64.4.2'\n\
         \tlist lan_prefix '10.4.0.0/24'\n\toption key '{key}'\n\n"
    );
    let edited = with_peers(&text, &["ma-b"])
        .replacen("\nconfig peer ", &format!("\n{d}config peer "), 1)
        .replacen(
            "\toption enabled '1'\n",
            "\toption enabled '1'\n\toption max_per_node '6'\n",
            1,
        );
    assert!(
        edited.contains("ma-d") && !edited.contains("ma-c"),
        "{edited}"
    );
    std::fs::write(&file, edited).unwrap();
    router.router("/etc/init.d/sims reload").unwrap();
    tb.wait_agent(Ma::A, "ma-a to take the new peers", T, |st| {
        st.peers.iter().map(|p| p.id.as_str()).collect::<Vec<_>>() == ["ma-d", "ma-b"]
    })
    .unwrap();
    assert_eq!(router.simsd_pid(), Some(pid), "reloaded, not restarted");
    let pings = pinger.join().unwrap().unwrap();
    assert!(
        pings.contains("150 packets transmitted, 150 packets received"),
        "a packet lost across the reload: {pings}"
    );
    assert_eq!(link().unwrap(), index, "the same tunnel device");
    assert_eq!(
        router.firewall_rules(),
        [
            "sims-ipip-ma-d wan 100.64.4.2 4 -",
            "sims-ipip-ma-b wan 100.64.2.2 4 -"
        ]
    );
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 20_000, T);
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s22 session across the init script's reload");
    drop(hold);
    drop(router);
}
