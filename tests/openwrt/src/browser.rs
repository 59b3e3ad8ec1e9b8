//! Headless Chromium (Debian's `chromium`) driven over its DevTools
//! protocol on a pipe (`--remote-debugging-pipe`: commands on fd 3,
//! answers and events on fd 4, each JSON message ended by a NUL), so no
//! debugging port is opened and no driver library is needed. Enough of
//! the protocol for LuCI's pages: open a page, evaluate JavaScript
//! (awaiting promises), wait for a condition, take a PNG screenshot, and
//! keep what the page logged or threw for the test's failure message.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Is Debian's Chromium installed (`apt-get install chromium`)?
pub fn available() -> bool {
    Path::new(CHROMIUM).exists()
}

pub struct Browser {
    child: Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next_id: u64,
    session: String,
    profile: PathBuf,
    width: u32,
    height: u32,
    /// Console messages and exceptions of the page, in order.
    pub log: Vec<String>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors, which we then own.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptors from pipe2, owned here only.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts Chromium with one blank page of `width` × `height` CSS px.
    pub fn launch(width: u32, height: u32) -> Browser {
        use std::os::fd::AsRawFd;
        // One profile per browser (several may run in one test process).
        static LAUNCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("sims-chromium-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        // Ours: write commands to `cmd_w`, read events from `ev_r`.
        let (cmd_r, cmd_w) = pipe();
        let (ev_r, ev_w) = pipe();
        let (cr, ew) = (cmd_r.as_raw_fd(), ev_w.as_raw_fd());
        let mut cmd = Command::new(CHROMIUM);
        // The flags a root test runner needs on a closed network: no
        // sandbox (root), no GPU, nothing reaching out to Google.
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            &format!("--window-size={width},{height}"),
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork
        // and exec. Copies above 10 first, so that neither end is already
        // fd 3 or 4 (dup2 onto itself would keep its close-on-exec flag).
        unsafe {
            cmd.pre_exec(move || {
                let (a, b) = (
                    libc::fcntl(cr, libc::F_DUPFD, 10),
                    libc::fcntl(ew, libc::F_DUPFD, 10),
                );
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{CHROMIUM}: {e}"));
        drop(cmd_r);
        drop(ev_w);
        let (tx, rx) = mpsc::channel();
        let reader = std::fs::File::from(ev_r);
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to: std::fs::File::from(cmd_w),
            from: rx,
            next_id: 1,
            session: String::new(),
            profile,
            width,
            height,
            log: Vec::new(),
        };
        let t = b.call_browser("Target.createTarget", json!({ "url": "about:blank" }));
        let target = t["targetId"].as_str().expect("targetId").to_string();
        let s = b.call_browser(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        b.session = s["sessionId"].as_str().expect("sessionId").to_string();
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        b
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut m = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            m["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&m).unwrap();
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium: {e}"));
        let t = Instant::now();
        loop {
            let left = Duration::from_secs(60).saturating_sub(t.elapsed());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("chromium: {method}: {e}");
                }
                return v["result"].clone();
            }
            self.note(&v);
        }
    }

    /// Keeps what the page said (console, exceptions) for diagnostics.
    fn note(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = v["params"]["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                x["value"]
                                    .as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| x["description"].to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.log.push(format!(
                    "console.{}: {}",
                    v["params"]["type"].as_str().unwrap_or("log"),
                    args.join(" ")
                ));
            }
            Some("Runtime.exceptionThrown") => {
                let d = &v["params"]["exceptionDetails"];
                self.log.push(format!(
                    "exception: {} {}",
                    d["text"].as_str().unwrap_or(""),
                    d["exception"]["description"].as_str().unwrap_or("")
                ));
            }
            _ => {}
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params)
    }

    /// A command to the page's session.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.send(Some(&s), method, params)
    }

    /// Opens `url` and waits for its load event.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for("document.readyState === 'complete'", 20);
    }

    /// Evaluates `js` in the page (awaiting a promise); its value as JSON.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": js, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!(
                "page threw on {js:?}: {}\npage log:\n{}",
                e["exception"]["description"].as_str().unwrap_or(""),
                self.log.join("\n")
            );
        }
        r["result"]["value"].clone()
    }

    /// Waits up to `secs` for `js` to be truthy; panics with the page's
    /// log otherwise.
    pub fn wait_for(&mut self, js: &str, secs: u64) {
        let t = Instant::now();
        let probe =
            format!("(() => {{ try {{ return !!({js}); }} catch (e) {{ return false; }} }})()");
        loop {
            if self.eval(&probe) == json!(true) {
                return;
            }
            if t.elapsed() > Duration::from_secs(secs) {
                let body = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''");
                panic!(
                    "timed out waiting for {js}\npage text: {body}\npage log:\n{}",
                    self.log.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `text` into the element at `selector` as a user would: it
    /// takes the focus, its old text is selected and replaced by key
    /// input (the page sees input and key events), then it loses the
    /// focus (where LuCI validates). False if there is no such element.
    pub fn type_into(&mut self, selector: &str, text: &str) -> bool {
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); if (!e) return false; \
             e.scrollIntoView({{ block: 'center' }}); e.focus(); e.select && e.select(); return true; }})()"
        ));
        if found != json!(true) {
            return false;
        }
        // The old text goes with the first key (it is selected).
        self.call(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyDown", "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8 }),
        );
        self.call(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8 }),
        );
        self.call("Input.insertText", json!({ "text": text }));
        self.call(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": "End", "code": "End", "windowsVirtualKeyCode": 35 }),
        );
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); e.dispatchEvent(new Event('change', {{ bubbles: true }})); e.blur(); return true; }})()"
        ));
        true
    }

    /// A PNG of the page: the window, grown to the page's height (a
    /// capture beyond the window would draw LuCI's fixed header twice).
    pub fn screenshot(&mut self, path: &Path) {
        let h = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 4000);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": self.width, "height": h, "deviceScaleFactor": 1, "mobile": false }),
        );
        self.eval("window.scrollTo(0, 0)");
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": false }),
        );
        let data = base64_decode(r["data"].as_str().expect("screenshot data"));
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(path, data).unwrap();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        assert_eq!(super::base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(super::base64_decode("AAEC/w=="), [0, 1, 2, 255]);
    }
}
