//! luci-app-sims's configuration page in headless Chromium, with LuCI's
//! real runtime (luci.js, form.js, uci.js, rpc.js) against the real rpcd
//! on a router (procd, the package's init script, simsd running) whose
//! /etc/config/sims is a template of uci-templates/. The page shows the
//! file's values; an edit and a new roaming agreement, saved and applied,
//! are in the file as `uci show` reports it and simsd takes them live
//! (the init script's reload trigger); an invalid prefix or a duplicate
//! id is refused in the page and the file stays as it was.
//!
//! LuCI's "Save & Apply" posts to its ucode dispatcher
//! (`admin/uci/apply_rollback`), which cannot run here: the test presses
//! Save (the page stages the changes in rpcd's uci session), then asks
//! rpcd what the dispatcher would, with the page's session: `uci apply`
//! with rollback, then `uci confirm`.
//!
//! Screenshot: `target/luci-screenshots/config.png`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use sims_openwrt::browser::{self, Browser};
use sims_openwrt::luci::{self, Luci};
use sims_openwrt::procd::{wait, Net, Router};
use sims_openwrt::*;

fn shots() -> PathBuf {
    repo().join("target/luci-screenshots")
}

/// Types into a LuCI widget's input, by id.
fn set(b: &mut Browser, id: &str, value: &str) {
    let sel = format!("[id={id:?}]");
    assert!(b.type_into(&sel, value), "no input #{id}");
}

fn value(b: &mut Browser, id: &str) -> String {
    b.eval(&format!(
        "(document.getElementById({id:?}) || {{}}).value || ''"
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn click(b: &mut Browser, selector: &str) {
    let r = b.eval(&format!(
        "(() => {{ const e = document.querySelector({selector:?}); if (!e) return false; e.click(); return true; }})()"
    ));
    assert_eq!(r, Value::Bool(true), "nothing to click at {selector}");
}

/// The page's Save, then what LuCI's apply_rollback does through rpcd.
fn save_and_apply(b: &mut Browser) -> Value {
    click(b, ".cbi-page-actions .cbi-button-save");
    // Save stages through rpc (uci set/add/delete), then reloads the form.
    std::thread::sleep(Duration::from_millis(1500));
    b.eval(
        "(async () => { const call = async (m, a) => (await (await fetch('/ubus', { method: 'POST', \
         body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'call', params: [L.env.sessionid, 'uci', m, a] }) })).json()); \
         const apply = await call('apply', { rollback: true, timeout: 30 }); \
         const confirm = await call('confirm', {}); return { apply, confirm }; })()",
    )
}

/// The router's /etc/config/sims as `uci show` prints it.
fn show(router: &Router) -> String {
    luci::uci_show(router)
}

fn simsd_peers(router: &Router) -> Vec<String> {
    let st = luci::sims_status(router);
    st["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn config_page_reads_edits_and_refuses_what_simsd_would() {
    let (Some(kit), Some(bin)) = (kit(), std::env::var_os("SIMS_BIN_DIR")) else {
        eprintln!("SKIPPED: needs the OpenWrt kit and SIMS_BIN_DIR (cargo xtask test sets it)");
        return;
    };
    if !is_root() {
        eprintln!("SKIPPED: needs root (the router's namespaces)");
        return;
    }
    assert!(
        browser::available(),
        "the LuCI tests need Chromium: apt-get install chromium"
    );
    let template =
        std::fs::read_to_string(repo().join("uci-templates/two-operators/ma-a")).unwrap();
    let conf = keyed(&template, &mut Default::default()).replacen(
        "config agent 'agent'\n",
        "config agent 'agent'\n\toption enabled '1'\n",
        1,
    );
    let router = Router::start_with(
        kit,
        &PathBuf::from(bin).join("simsd"),
        &conf,
        Net::Own,
        None,
        "luci",
        &[luci::usr_layer()],
    );
    let pid = router.start_simsd();
    let web = Luci::start(&router);
    let mut b = Browser::launch(1280, 900);

    // The page shows the file.
    web.open(&mut b, "sims/config");
    b.wait_for("document.getElementById('widget.cbid.sims.agent.id')", 20);
    assert_eq!(value(&mut b, "widget.cbid.sims.agent.id"), "ma-a");
    assert_eq!(
        value(&mut b, "widget.cbid.sims.agent.provider"),
        "Alpha Net"
    );
    assert_eq!(
        value(&mut b, "widget.cbid.sims.agent.endpoint"),
        "100.64.1.2"
    );
    let prefixes = b.eval("document.getElementById('cbid.sims.agent.lan_prefix').innerText");
    assert!(
        prefixes
            .as_str()
            .unwrap_or_default()
            .contains("10.1.0.0/24"),
        "{prefixes}"
    );
    let row = b.eval("(document.getElementById('cbi-sims-ma_b') || {}).innerText || ''");
    let row = row.as_str().unwrap_or_default();
    assert!(row.contains("ma-b") && row.contains("100.64.2.2"), "{row}");
    assert!(
        !row.contains(&conf[conf.find("option key '").unwrap() + 12..][..64]),
        "the key is shown masked: {row}"
    );

    // An edit, saved and applied: in the file, and simsd has it.
    set(&mut b, "widget.cbid.sims.agent.provider", "Alpha Hotspots");
    let r = save_and_apply(&mut b);
    assert!(r["apply"]["result"][0] == 0, "uci apply: {r}");
    let shown = show(&router);
    assert!(
        shown.contains("sims.agent.provider='Alpha Hotspots'"),
        "{shown}"
    );
    wait("simsd to take the new provider", || {
        (luci::sims_status(&router)["provider"] == "Alpha Hotspots").then_some(())
    });
    assert_eq!(router.simsd_pid(), Some(pid), "reloaded, not restarted");

    // A new roaming agreement with a generated key.
    add_agreement(&web, &mut b, "ma_c");
    set(&mut b, "widget.cbid.sims.ma_c.id", "ma-c");
    set(
        &mut b,
        "widget.cbid.sims.ma_c.description",
        "Gamma Wireless",
    );
    set(&mut b, "widget.cbid.sims.ma_c.endpoint", "100.64.3.2");
    set(&mut b, "widget.cbid.sims.ma_c.lan_prefix", "10.3.0.0/24");
    let kind = "document.getElementById('widget.cbid.sims.ma_c.key').type";
    assert_eq!(b.eval(kind), "password", "a key is masked");
    click(&mut b, "#sims-keygen");
    // A generated key is shown, to be copied for the other operator.
    assert_eq!(b.eval(kind), "text");
    let key = value(&mut b, "widget.cbid.sims.ma_c.key");
    assert!(
        key.len() == 64 && key.bytes().all(|c| c.is_ascii_hexdigit()),
        "generated key: {key:?}"
    );
    // After the fields' 0.2 s border transitions.
    std::thread::sleep(Duration::from_millis(500));
    b.screenshot(&shots().join("config-agreement.png"));
    click(&mut b, "#modal_overlay .button-row .cbi-button-positive");
    b.wait_for(
        "!document.body.classList.contains('modal-overlay-active')",
        10,
    );
    let r = save_and_apply(&mut b);
    assert!(r["apply"]["result"][0] == 0, "uci apply: {r}");
    let shown = show(&router);
    for want in [
        "sims.ma_c=peer".to_string(),
        "sims.ma_c.id='ma-c'".to_string(),
        "sims.ma_c.endpoint='100.64.3.2'".to_string(),
        "sims.ma_c.lan_prefix='10.3.0.0/24'".to_string(),
        format!("sims.ma_c.key='{key}'"),
    ] {
        assert!(shown.contains(&want), "{want} not in:\n{shown}");
    }
    let check = router.router("simsd check").unwrap();
    assert!(check.contains("ok"), "{check}");
    wait("simsd to take the new peer", || {
        (simsd_peers(&router) == ["ma-b", "ma-c"]).then_some(())
    });
    web.open(&mut b, "sims/config");
    b.wait_for("document.getElementById('cbi-sims-ma_c')", 20);
    b.screenshot(&shots().join("config.png"));

    // Refused in the page, the file unchanged: an invalid prefix...
    let before = router.router("cat /etc/config/sims").unwrap();
    web.open(&mut b, "sims/config");
    b.wait_for(
        "document.getElementById('widget.cbid.sims.agent.lan_prefix')",
        20,
    );
    set(&mut b, "widget.cbid.sims.agent.lan_prefix", "10.1.0.0/33");
    assert_invalid(&mut b, "widget.cbid.sims.agent.lan_prefix");
    save_and_apply(&mut b);
    assert_eq!(router.router("cat /etc/config/sims").unwrap(), before);

    // ...and a second agreement with an id already in use.
    add_agreement(&web, &mut b, "dup");
    set(&mut b, "widget.cbid.sims.dup.id", "ma-b");
    assert_invalid(&mut b, "widget.cbid.sims.dup.id");
    click(&mut b, "#modal_overlay .button-row .cbi-button-positive");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        b.eval("document.body.classList.contains('modal-overlay-active')") == true,
        "the modal stays open on a duplicate id"
    );
    let r = save_and_apply(&mut b);
    eprintln!("apply after the refused edits: {r}");
    assert_eq!(router.router("cat /etc/config/sims").unwrap(), before);
    assert!(simsd_peers(&router) == ["ma-b", "ma-c"], "simsd unchanged");
    // rpcd's ACLs: a watcher (luci-app-sims-status, read) sees the status
    // but neither the keys in /etc/config/sims nor the reset.
    let sid = web.login(&mut b, "watcher");
    let st = web.call(&mut b, &sid, "sims", "status", "{}");
    assert_eq!(
        st["result"][1]["id"], "ma-a",
        "the watcher reads the status: {st}"
    );
    for (object, method, args) in [
        ("uci", "get", r#"{"config":"sims"}"#),
        ("sims", "reset_traffic", "{}"),
        (
            "uci",
            "set",
            r#"{"config":"sims","section":"agent","values":{"provider":"x"}}"#,
        ),
    ] {
        // Refused by the session's ACL (-32002), or by rpcd's uci for
        // the config (status 6, permission denied); nothing returned.
        let r = web.call(&mut b, &sid, object, method, args);
        let denied = r["error"]["code"] == -32002 || r["result"] == serde_json::json!([6]);
        assert!(denied, "{object}.{method} for the watcher: {r}");
    }
    // The watcher's status page: the figures, no Reset buttons.
    web.open_as(&mut b, "sims/status", "watcher");
    b.wait_for(
        "document.querySelector('#sims-peers [data-peer=\"ma-b\"]')",
        20,
    );
    assert!(
        b.eval("document.querySelector('button.sims-reset, #sims-reset-all') === null") == true,
        "no Reset for a watcher"
    );
    let root = web.login(&mut b, "root");
    let keys = web.call(&mut b, &root, "uci", "get", r#"{"config":"sims"}"#);
    assert!(
        keys["result"][1]["values"]["ma_b"]["key"].is_string(),
        "{keys}"
    );

    // The only exceptions: LuCI's own unhandled rejection of a refused
    // Save (form.js does the same with its built-in checks).
    let errors: Vec<&String> = b
        .log
        .iter()
        .filter(|l| l.starts_with("exception") && !l.contains("simsd would refuse"))
        .collect();
    assert!(errors.is_empty(), "the page threw: {errors:#?}");
}

/// The config page afresh, and its modal for a new agreement `name`.
fn add_agreement(web: &Luci, b: &mut Browser, name: &str) {
    let create = "#cbi-sims-peer .cbi-section-create-name";
    web.open(b, "sims/config");
    b.wait_for(&format!("document.querySelector({create:?})"), 20);
    set_selector(b, create, name);
    click(b, "#cbi-sims-peer .cbi-section-create .cbi-button-add");
    b.wait_for(
        &format!("document.getElementById('widget.cbid.sims.{name}.id')"),
        10,
    );
}

fn set_selector(b: &mut Browser, selector: &str, value: &str) {
    assert!(b.type_into(selector, value), "no input at {selector}");
}

/// LuCI marks the field invalid (and says why in its tooltip).
fn assert_invalid(b: &mut Browser, id: &str) {
    let t = Instant::now();
    loop {
        let v = b.eval(&format!(
            "(() => {{ const e = document.getElementById({id:?}); return !!e && e.classList.contains('cbi-input-invalid'); }})()"
        ));
        if v == true {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "#{id} not marked invalid"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
