//! LuCI's real runtime serving luci-app-sims: rpcd (with its ucode
//! plugin host, the app's ACL and `sims` plugin) inside a [`Router`]'s
//! namespaces, next to procd and simsd; uhttpd on the host's loopback
//! with its `/ubus` endpoint on the router's ubus socket, serving the
//! kit's LuCI `www` and the app's views; and headless Chromium loading
//! them. LuCI's ucode dispatcher and menu do not run here: each view is
//! served in the kit's page shell (`examples/luci-view.html`), which sets
//! up `L` as LuCI's `header.ut` does, with a session from a real
//! `session.login` over `/ubus`.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::browser::Browser;
use crate::procd::Router;
use crate::repo;

/// rpcd's logins for the tests (password test123, `openssl passwd -1`):
/// root, and `watcher`, a LuCI user (luci-base) who may only read the
/// status page.
const RPCD_CONFIG: &str = "config login\n\toption username 'root'\n\toption password '$1$simstest$BRRHKbNUsEyImcNaftTGI1'\n\tlist read '*'\n\tlist write '*'\n\n\
config login\n\toption username 'watcher'\n\toption password '$1$simstest$BRRHKbNUsEyImcNaftTGI1'\n\tlist read 'unauthenticated'\n\tlist read 'luci-base'\n\tlist read 'luci-app-sims-status'\n";
pub const PASSWORD: &str = "test123";

/// The app's sources.
pub fn app() -> PathBuf {
    repo().join("openwrt-package/luci-app-sims")
}

/// The app's `/usr` files (rpcd's ACL and plugin, LuCI's menu), as a
/// layer for [`Router::start_with`].
pub fn usr_layer() -> PathBuf {
    app().join("root/usr")
}

pub struct Luci {
    uhttpd: Child,
    pub docroot: PathBuf,
    pub port: u16,
}

impl Drop for Luci {
    fn drop(&mut self) {
        let _ = self.uhttpd.kill();
        let _ = self.uhttpd.wait();
        let _ = fs::remove_dir_all(&self.docroot);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Luci {
    /// Starts rpcd on `router` (started with [`usr_layer`]: the app's
    /// ACL, menu and plugin) and uhttpd here.
    pub fn start(router: &Router) -> Luci {
        let app = app();
        for cmd in [
            format!("cat > /etc/config/rpcd <<'EOF'\n{RPCD_CONFIG}EOF\n"),
            "(rpcd -s /var/run/ubus/ubus.sock </dev/null >/tmp/rpcd.log 2>&1 &)".to_string(),
        ] {
            router
                .router(&cmd)
                .unwrap_or_else(|e| panic!("on the router: {cmd}: {e}"));
        }
        let t = Instant::now();
        while router.ubus(&["list", "sims"]).is_err() {
            if t.elapsed() > Duration::from_secs(15) {
                let diag = router
                    .router("cat /tmp/rpcd.log; ls -l /usr/share/rpcd/ucode /usr/share/rpcd/acl.d /usr/share/luci/menu.d; cat /etc/config/rpcd; ps w | grep rpc[d]; ubus list")
                    .unwrap_or_else(|e| e);
                panic!("rpcd has no sims object after 15 s:\n{diag}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let docroot =
            std::env::temp_dir().join(format!("sims-luci-www-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&docroot);
        let st = Command::new("cp")
            .arg("-rs")
            .arg(router.kit.join("root/www"))
            .arg(&docroot)
            .status()
            .expect("cp");
        assert!(st.success(), "cp -rs of the kit's www");
        copy_tree(&app.join("htdocs"), &docroot);
        let port = free_port();
        let uhttpd = Command::new(router.kit.join("root/usr/sbin/uhttpd"))
            .args(["-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(&docroot)
            .args(["-u", "/ubus", "-U"])
            .arg(router.dir.join("run/ubus/ubus.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("uhttpd");
        let l = Luci {
            uhttpd,
            docroot,
            port,
        };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "uhttpd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        l
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A session of `user` from rpcd's `session login` over `/ubus`.
    pub fn login(&self, b: &mut Browser, user: &str) -> String {
        b.goto(&format!("{}/luci-static/resources/luci.js", self.origin()));
        let sid = b.eval(&format!(
            "fetch('/ubus', {{ method: 'POST', body: JSON.stringify({{ jsonrpc: '2.0', id: 1, method: 'call', \
             params: ['00000000000000000000000000000000', 'session', 'login', {{ username: '{user}', password: '{PASSWORD}' }}] }}) }})\
             .then(r => r.json()).then(j => j.result[1].ubus_rpc_session)"
        ));
        sid.as_str()
            .expect("a session from session.login")
            .to_string()
    }

    /// A ubus call over `/ubus` with session `sid`, as rpc.js makes it:
    /// the JSON-RPC answer.
    pub fn call(
        &self,
        b: &mut Browser,
        sid: &str,
        object: &str,
        method: &str,
        args: &str,
    ) -> Value {
        b.eval(&format!(
            "fetch('/ubus', {{ method: 'POST', body: JSON.stringify({{ jsonrpc: '2.0', id: 1, method: 'call', \
             params: [{sid:?}, {object:?}, {method:?}, {args}] }}) }}).then(r => r.json())"
        ))
    }

    /// Logs in over `/ubus` from the page (as LuCI's login form leads
    /// to) and opens `view` (e.g. `sims/config`) in the page shell.
    pub fn open(&self, b: &mut Browser, view: &str) {
        self.open_as(b, view, "root")
    }

    /// [`Luci::open`] as rpcd's login `user`. The shell stands in for
    /// LuCI's dispatcher, which marks a page read-only for a user without
    /// write access to its ACL groups: here every user but root.
    pub fn open_as(&self, b: &mut Browser, view: &str, user: &str) {
        let sid = self.login(b, user);
        let readonly = user != "root";
        let shell = fs::read_to_string(repo().join("../shared/openwrt/examples/luci-view.html"))
            .or_else(|_| fs::read_to_string(kit_shell()))
            .expect("the kit's page shell");
        let page = shell
            .replace("@VIEW@", view)
            .replace("@SESSIONID@", &sid)
            .replace("@TOKEN@", "sims-test")
            .replace(
                "readonly: false",
                if readonly {
                    "readonly: true"
                } else {
                    "readonly: false"
                },
            );
        let name = format!("{}.html", view.replace('/', "-"));
        fs::write(self.docroot.join(&name), page).unwrap();
        b.goto(&format!("{}/{name}", self.origin()));
        // The view is up once LuCI replaced the shell's spinner.
        b.wait_for(
            "document.querySelector('#view') && !document.querySelector('#view > .spinning')",
            20,
        );
    }
}

fn kit_shell() -> PathBuf {
    crate::kit()
        .unwrap_or_default()
        .join("examples/luci-view.html")
}

/// Copies the files of `from` into `to` (replacing the kit's symlinks).
fn copy_tree(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else {
            let _ = fs::remove_file(&dst);
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// `uci show sims` on the router, as its operator would read it.
pub fn uci_show(router: &Router) -> String {
    router.router("uci show sims").unwrap_or_default()
}

/// rpcd's `sims.status` as the page gets it.
pub fn sims_status(router: &Router) -> Value {
    let out = router
        .ubus(&["call", "sims", "status"])
        .unwrap_or_else(|e| panic!("ubus call sims status: {e}"));
    serde_json::from_str(&out).unwrap_or(Value::Null)
}
