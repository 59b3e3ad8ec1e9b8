//! Scenario 23: luci-app-sims's status page, in headless Chromium with
//! LuCI's real runtime and rpcd, on a live handover. ma-a runs the
//! package's init script under procd (as on a router), with rpcd and the
//! app's `sims` plugin beside it; the node moves A → B with a session
//! going, and the page at ma-a lists the home binding and the traffic to
//! ma-b growing. The accounting behind it (counted by simsd per peer)
//! survives a restart of simsd, the plugin's reset starts it again from
//! zero, and when simsd is stopped the page says so. Host only (`cargo
//! xtask test`): the page does not depend on the tunnel backend.
//!
//! Screenshots: `target/luci-screenshots/status*.png`.

mod common;

use std::time::Duration;

use common::*;
use sims_openwrt::browser::{self, Browser};
use sims_openwrt::luci::{self, Luci};
use sims_openwrt::procd::{wait, Net, Router};
use sims_testbed::*;

fn shots() -> std::path::PathBuf {
    sims_openwrt::repo().join("target/luci-screenshots")
}

fn peer_total(st: &serde_json::Value, id: &str) -> (u64, u64) {
    let p = st["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == id))
        .cloned()
        .unwrap_or_default();
    (
        p["tx_bytes"].as_u64().unwrap_or(0),
        p["rx_bytes"].as_u64().unwrap_or(0),
    )
}

#[test]
fn s23_status_page_shows_a_live_handover() {
    let Some(kit) = sims_openwrt::kit() else {
        eprintln!("SKIPPED: no OpenWrt kit (../shared/openwrt, or SIMS_OPENWRT_KIT)");
        return;
    };
    let Some(mut tb) = setup(Options::default().label("s23").agents(&[Ma::A, Ma::B])) else {
        return;
    };
    assert!(
        browser::available(),
        "the LuCI tests need Chromium: apt-get install chromium"
    );
    tb.start_all_at(Ma::A).unwrap();
    let mut down = tb
        .stream(
            StreamSpec::new(Dir::Down, "s23-down")
                .rate(100_000)
                .duration_ms(120_000)
                .bind(a()),
        )
        .unwrap();

    // ma-a as a router: procd, the init script, accounting on "flash".
    tb.kill_agent(Ma::A, libc::SIGTERM).unwrap();
    let conf = std::fs::read_to_string(tb.agent_config_path(Ma::A)).unwrap();
    let conf = conf.replacen(
        "config agent 'agent'\n",
        "config agent 'agent'\n\toption enabled '1'\n\toption accounting_file '/etc/sims/traffic'\n",
        1,
    )
    .replace("option provider 'provider-a'", "option provider 'Alpha Hotspots'");
    let ns = tb.agent(Ma::A);
    let router = Router::start_with(
        kit,
        &tb.bin("simsd"),
        &conf,
        Net::Existing(ns.name.clone()),
        Some(&tb.agent_dir(Ma::A)),
        "s23",
        &[luci::usr_layer()],
    );
    let pid = router.start_simsd();
    wait_flowing(&tb, &down, 50_000, T);
    let web = Luci::start(&router);
    let mut b = Browser::launch(1280, 1000);

    // Before the move: the agent, its partner, no bindings.
    web.open(&mut b, "sims/status");
    b.wait_for(
        "document.querySelector('#sims-peers [data-peer=\"ma-b\"]')",
        20,
    );
    assert!(
        b.eval("!!document.querySelector('button.sims-reset[data-peer=\"ma-b\"]') && !!document.getElementById('sims-reset-all')") == true,
        "root may reset the counters"
    );
    let agent = b.eval("document.querySelector('#sims-agent').innerText");
    let agent = agent.as_str().unwrap_or_default();
    assert!(
        agent.contains("ma-a") && agent.contains("Alpha Hotspots"),
        "{agent}"
    );
    assert!(
        b.eval("document.querySelector('#sims-bindings [data-addr]') === null") == true,
        "no binding before the move"
    );

    // The move: the page (polled every 5 s) lists the home binding.
    move_relayed(&mut tb, Ma::B, &[a()]);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    wait_flowing(&tb, &down, 100_000, T);
    let row = format!("#sims-bindings [data-addr=\"{}\"]", a());
    b.wait_for(&format!("document.querySelector('{row}')"), 15);
    let text = b.eval(&format!("document.querySelector('{row}').innerText"));
    let text = text.as_str().unwrap_or_default().to_lowercase();
    assert!(
        text.contains("home") && text.contains("ma-b"),
        "binding row: {text}"
    );
    // The traffic to ma-b grows on the page as in rpcd's answer.
    let peer_row = "#sims-peers [data-peer=\"ma-b\"]";
    let first = b.eval(&format!("document.querySelector('{peer_row}').innerText"));
    let st0 = luci::sims_status(&router);
    let (tx0, _) = peer_total(&st0, "ma-b");
    assert!(tx0 > 50_000, "the relayed session's bytes to ma-b: {st0}");
    wait_flowing(&tb, &down, 100_000, T);
    b.wait_for(
        &format!(
            "document.querySelector('{peer_row}').innerText !== {}",
            first
        ),
        15,
    );
    let (tx1, _) = peer_total(&luci::sims_status(&router), "ma-b");
    assert!(tx1 > tx0, "traffic grows: {tx0} then {tx1}");
    std::thread::sleep(Duration::from_secs(1));
    b.screenshot(&shots().join("status.png"));

    // The figures are simsd's, not the tunnel device's: a restart of
    // simsd (which removes the tunnel) keeps them.
    router.router("/etc/init.d/sims restart").unwrap();
    let pid2 = wait("simsd restarted", || {
        router.simsd_pid().filter(|p| *p != pid)
    });
    assert_ne!(pid2, pid);
    wait_binding(&tb, Ma::A, a(), "home", Ma::B);
    let saved = router.router("cat /etc/sims/traffic").unwrap();
    assert!(saved.contains("peer ma-b "), "accounting file: {saved}");
    let after = wait("simsd's status after the restart", || {
        router
            .ubus(&["call", "sims", "status"])
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .filter(|v| v["peers"].is_array())
    });
    let (tx2, _) = peer_total(&after, "ma-b");
    assert!(tx2 >= tx1, "kept across the restart: {tx1} then {tx2}");

    // The operator's reset, through the app's rpcd plugin.
    let since = after["peers"][0]["traffic_since"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1100));
    router
        .ubus(&["call", "sims", "reset_traffic", r#"{"peer":"ma-b"}"#])
        .unwrap();
    let reset = luci::sims_status(&router);
    let (tx3, _) = peer_total(&reset, "ma-b");
    assert!(tx3 < tx2, "counted from zero: {tx2} then {tx3}");
    assert!(reset["peers"][0]["traffic_since"].as_u64().unwrap_or(0) > since);
    let refused = router.ubus(&["call", "sims", "reset_traffic", r#"{"peer":"$(reboot)"}"#]);
    assert!(
        refused.map_or(true, |s| s.contains("error")),
        "a bad peer id is refused"
    );

    // The session itself was relayed throughout (ma-b's side stayed).
    let r = down.finish(Duration::from_secs(30)).unwrap();
    assert_verified(&r, "s23 down");

    // simsd stopped: the page says so.
    router.router("/etc/init.d/sims stop").unwrap();
    b.wait_for("document.querySelector('#sims-empty')", 15);
    let empty = b.eval("document.querySelector('#sims-empty').innerText");
    assert!(
        empty
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("not running"),
        "{empty}"
    );
    b.screenshot(&shots().join("status-stopped.png"));
    let errors: Vec<&String> = b
        .log
        .iter()
        .filter(|l| l.starts_with("exception"))
        .collect();
    assert!(errors.is_empty(), "the page threw: {errors:?}");
}
