//! Self-test of the testbed, no SIMS daemon needed: DHCP, NAT, moves,
//! checked streams, the probe, teardown and stale cleanup.
//! Needs root; skips (with the reason printed) otherwise.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use sims_testbed::*;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_sims-traffic");

fn testbed(opts: Options) -> Option<Testbed> {
    if let Some(r) = skip_reason(false, Some(Path::new(TRAFFIC))) {
        eprintln!("SKIPPED: {r}");
        return None;
    }
    Some(Testbed::new(opts.traffic_bin(TRAFFIC)).expect("testbed setup"))
}

#[test]
fn dhcp_nat_and_moves_without_sims() {
    let Some(mut tb) = testbed(Options::default().label("selftest").lanhost()) else {
        return;
    };
    // A: DHCP gives the static address; the CN sees MA-A's WAN address.
    let m = tb.move_to(Ma::A).expect("move to A");
    assert_eq!(m.addr, Ma::A.node_addr());
    eprintln!("DHCP in A took {:.0} ms", m.dhcp_ms());
    assert!(m.bound_ns.is_some(), "the udhcpc script stamps events");
    let w = tb.whoami(None).expect("whoami in A");
    assert_eq!(*w.local.ip(), Ma::A.node_addr());
    assert_eq!(*w.seen.ip(), Ma::A.wan_ip(), "masqueraded by ma-a");

    // Checked streams both ways.
    let mut down = tb
        .stream(
            StreamSpec::new(Dir::Down, "st-down")
                .rate(500_000)
                .duration_ms(1500),
        )
        .expect("down stream");
    let mut up = tb
        .stream(
            StreamSpec::new(Dir::Up, "st-up")
                .rate(500_000)
                .duration_ms(1500),
        )
        .expect("up stream");
    for s in [&mut down, &mut up] {
        let r = s.wait(Duration::from_secs(20)).expect("stream result");
        assert!(r.verified && !r.reset, "{r:?}");
        assert!(r.bytes > 500_000, "{r:?}");
    }
    // A stream stopped early by its until-file ends cleanly, both ways.
    for dir in [Dir::Down, Dir::Up] {
        let mut s = tb
            .stream(
                StreamSpec::new(dir, "st-stop")
                    .rate(100_000)
                    .duration_ms(60_000),
            )
            .expect("stream");
        std::thread::sleep(Duration::from_millis(300));
        let r = s.finish(Duration::from_secs(10)).expect("stopped stream");
        assert!(r.verified && !r.reset && r.bytes > 0, "{dir:?} {r:?}");
    }

    // B: a new address, the old one is flushed (as the stock script does),
    // the CN sees MA-B's WAN address.
    let m = tb.move_to(Ma::B).expect("move to B");
    assert_eq!(m.addr, Ma::B.node_addr());
    assert!(!tb.node_has_addr(Ma::A.node_addr()).unwrap());
    let w = tb.whoami(None).expect("whoami in B");
    assert_eq!(*w.local.ip(), Ma::B.node_addr());
    assert_eq!(*w.seen.ip(), Ma::B.wan_ip());

    // C and back to A.
    assert_eq!(tb.move_to(Ma::C).unwrap().addr, Ma::C.node_addr());
    assert_eq!(*tb.whoami(None).unwrap().seen.ip(), Ma::C.wan_ip());
    assert_eq!(tb.move_to(Ma::A).unwrap().addr, Ma::A.node_addr());
    assert_eq!(*tb.whoami(None).unwrap().seen.ip(), Ma::A.wan_ip());

    // The ordinary LAN host reaches the CN through ma-a's NAT too.
    let lh = tb.lanhost();
    lh.ip(&["addr", "add", "10.1.0.20/24", "dev", "eth0"])
        .unwrap();
    lh.ip(&["route", "add", "default", "via", "10.1.0.1"])
        .unwrap();
    let w = tb.whoami_from(&lh, None).expect("whoami from lanhost");
    assert_eq!(*w.seen.ip(), Ma::A.wan_ip());

    // Strict reverse-path filtering everywhere.
    assert_eq!(
        tb.mn().sysctl_get("net.ipv4.conf.mn0.rp_filter").unwrap(),
        "1"
    );
    assert_eq!(
        tb.mn().sysctl_get("net.ipv4.conf.mn0.arp_ignore").unwrap(),
        "0"
    );
    assert_eq!(
        tb.agent(Ma::B)
            .sysctl_get("net.ipv4.conf.wan.rp_filter")
            .unwrap(),
        "1"
    );
    assert_eq!(
        tb.agent(Ma::B)
            .sysctl_get("net.ipv4.conf.all.rp_filter")
            .unwrap(),
        "1"
    );
    assert_eq!(
        tb.agent(Ma::C).sysctl_get("net.ipv4.ip_forward").unwrap(),
        "1"
    );

    // The Internet has no route to the private LANs.
    assert!(tb
        .inet()
        .ip(&["route", "get", "10.1.0.50"])
        .map(|r| !r.contains("to-a"))
        .unwrap_or(true));
}

#[test]
fn probe_sees_the_new_address_and_no_echo_without_sims() {
    let Some(mut tb) = testbed(
        Options::default()
            .label("selftest-probe")
            .agents(&[Ma::A, Ma::B]),
    ) else {
        return;
    };
    tb.move_to(Ma::A).expect("move to A");
    let mut probe = tb.spawn_probe(Ma::A.node_addr(), 500).expect("probe");
    tb.move_to(Ma::B).expect("move to B");
    probe
        .wait_exit(Duration::from_secs(30))
        .expect("probe exit");
    let (v, out) = probe.last_json();
    let v = v.unwrap_or_else(|| panic!("probe JSON: {out}"));
    assert_eq!(v["new_addr"], "10.2.0.50", "{out}");
    // Without SIMS nothing carries the old address: no echo.
    assert_eq!(v["echoed"], false, "{out}");
    assert!(v["probes_sent"].as_u64().unwrap() + v["send_errors"].as_u64().unwrap() > 0);
}

#[test]
fn teardown_kills_processes_and_deletes_namespaces() {
    let Some(mut tb) = testbed(
        Options::default()
            .label("selftest-teardown")
            .agents(&[Ma::A]),
    ) else {
        return;
    };
    let names = tb.namespace_names();
    let pids = tb.running_pids();
    assert!(pids.len() >= 2, "dnsmasq and the CN server run: {pids:?}");
    let dir = tb.dir.clone();
    drop(tb);
    for n in &names {
        assert!(!Path::new("/run/netns").join(n).exists(), "{n} left behind");
    }
    for p in pids {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "pid {p} still running"
        );
    }
    assert!(!dir.exists(), "run dir removed after success");
}

#[test]
fn stale_namespaces_of_dead_runs_are_removed_and_others_kept() {
    if let Some(r) = skip_reason(false, Some(Path::new(TRAFFIC))) {
        eprintln!("SKIPPED: {r}");
        return;
    }
    // A pid that is not running.
    let dead = (4_000_000u32..4_100_000)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let stale = format!("s{dead}-0-cn");
    let foreign = format!("simsx{dead}-foreign");
    for n in [&stale, &foreign] {
        let st = std::process::Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let removed = cleanup_stale();
    let foreign_left = Path::new("/run/netns").join(&foreign).exists();
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &foreign])
        .status();
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!Path::new("/run/netns").join(&stale).exists());
    assert!(
        foreign_left,
        "a name outside the pattern must not be touched"
    );
    let _ = Ipv4Addr::LOCALHOST;
}
