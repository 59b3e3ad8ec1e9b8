//! Traffic through the testbed: the CN's `sims-traffic serve`, checked
//! streams, `whoami` and the handover probe from the node (or any
//! namespace).

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;
use std::time::Duration;

use super::{Testbed, CN_PORT, MN_IFACE};
use crate::netns::Netns;
use crate::session::{Dir, Session, StreamSpec, Whoami};
use crate::sys::{die_with_parent, tail, wait_for, Result};
use crate::traffic::Progress;

impl Testbed {
    pub(super) fn start_cn_server(&mut self) -> Result<()> {
        let log = self.dir.join("cn-server.log");
        let argv = vec![
            self.traffic_bin.to_string_lossy().into_owned(),
            "serve".into(),
            "--listen".into(),
            format!("0.0.0.0:{CN_PORT}"),
        ];
        let ns = self.cn();
        let i = self.spawn("sims-traffic serve@cn", &ns, &argv, &[], &log)?;
        self.cn_proc = Some(i);
        wait_for(
            "the CN server to listen",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || {
                if let Some(st) = self.proc_exited(i) {
                    return Err(format!("server exited: {st}"));
                }
                Ok(fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("listening")
                    .then_some(()))
            },
        )
        .map_err(|e| format!("{e}\n{}", tail(&log, 20)))
    }

    /// The CN server's log (connections, upstream progress and verdicts).
    pub fn cn_log(&self) -> String {
        fs::read_to_string(self.dir.join("cn-server.log")).unwrap_or_default()
    }

    /// The server's progress lines for an upstream session id.
    pub fn server_progress(&self, id: &str) -> Vec<Progress> {
        self.cn_log()
            .lines()
            .filter_map(Progress::parse)
            .filter(|p| p.id.as_deref() == Some(id))
            .collect()
    }

    /// Starts a checked stream from the node to the CN and waits until it
    /// is connected.
    pub fn stream(&self, spec: StreamSpec) -> Result<Session> {
        self.stream_from(&self.mn(), spec)
    }

    /// Same, from any namespace of the testbed.
    pub fn stream_from(&self, ns: &Netns, spec: StreamSpec) -> Result<Session> {
        let seq = self.next_seq();
        let id = format!("{}-{seq}", spec.label);
        let base = self.dir.join("sessions").join(&id);
        let out = base.with_extension("out");
        let err = base.with_extension("err");
        let until = base.with_extension("stop");
        let mut c = ns.command(&self.traffic_bin);
        c.args(["stream", "--connect", &self.cn_addr().to_string()])
            .args(["--dir", spec.dir.as_str()])
            .args(["--rate", &spec.rate.to_string()])
            .args(["--duration-ms", &spec.duration_ms.to_string()])
            .args(["--id", &id])
            .arg("--until-file")
            .arg(&until);
        if let Some(b) = spec.bind {
            c.args(["--bind", &b.to_string()]);
        }
        c.stdin(Stdio::null())
            .stdout(File::create(&out).map_err(|e| e.to_string())?)
            .stderr(File::create(&err).map_err(|e| e.to_string())?);
        die_with_parent(&mut c);
        let child = c.spawn().map_err(|e| format!("spawn stream: {e}"))?;
        self.record_pid(child.id());
        let mut s = Session {
            label: spec.label.clone(),
            id,
            dir: spec.dir,
            child,
            out,
            err,
            until,
            result: None,
        };
        wait_for(
            &format!("stream {} to connect", s.label),
            Duration::from_secs(15),
            Duration::from_millis(10),
            || {
                let text = fs::read_to_string(&s.out).unwrap_or_default();
                if text.contains("connected") {
                    return Ok(Some(()));
                }
                if !s.is_running() {
                    return Err(format!("stream exited: {}", s.output()));
                }
                Ok(None)
            },
        )?;
        Ok(s)
    }

    /// `sims-traffic whoami` from the node.
    pub fn whoami(&self, bind: Option<Ipv4Addr>) -> Result<Whoami> {
        self.whoami_from(&self.mn(), bind)
    }

    pub fn whoami_from(&self, ns: &Netns, bind: Option<Ipv4Addr>) -> Result<Whoami> {
        let to = self.cn_addr().to_string();
        let mut args = vec!["whoami", "--connect", &to];
        let b = bind.map(|b| b.to_string());
        if let Some(b) = &b {
            args.extend(["--bind", b]);
        }
        let out = ns.run(&self.traffic_bin, &args, Duration::from_secs(20))?;
        let v: serde_json::Value =
            serde_json::from_str(out.trim()).map_err(|e| format!("whoami output {out:?}: {e}"))?;
        let p = |k: &str| -> Result<SocketAddrV4> {
            v[k].as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("whoami output {out:?}: no {k}"))
        };
        Ok(Whoami {
            local: p("local")?,
            seen: p("seen")?,
        })
    }

    /// Starts `sims-traffic probe` in the node (see the tool's docs); the
    /// caller waits for its "ready" line before moving.
    pub fn spawn_probe(&self, bind: Ipv4Addr, timeout_ms: u64) -> Result<Session> {
        let seq = self.next_seq();
        let id = format!("probe-{seq}");
        let base = self.dir.join("sessions").join(&id);
        let out = base.with_extension("out");
        let err = base.with_extension("err");
        let _ = fs::remove_file(self.link_up_file());
        let mut c = self.mn().command(&self.traffic_bin);
        c.args(["probe", "--to", &self.cn_addr().to_string()])
            .args(["--bind", &bind.to_string(), "--iface", MN_IFACE])
            .args([
                "--interval-us",
                "200",
                "--timeout-ms",
                &timeout_ms.to_string(),
            ])
            .arg("--link-up-file")
            .arg(self.link_up_file());
        c.stdin(Stdio::null())
            .stdout(File::create(&out).map_err(|e| e.to_string())?)
            .stderr(File::create(&err).map_err(|e| e.to_string())?);
        die_with_parent(&mut c);
        let child = c.spawn().map_err(|e| format!("spawn probe: {e}"))?;
        self.record_pid(child.id());
        let mut s = Session {
            label: id.clone(),
            id,
            dir: Dir::Up,
            child,
            out,
            err,
            until: base.with_extension("stop"),
            result: None,
        };
        wait_for(
            "probe ready",
            Duration::from_secs(10),
            Duration::from_millis(5),
            || {
                if fs::read_to_string(&s.out)
                    .unwrap_or_default()
                    .contains("ready")
                {
                    return Ok(Some(()));
                }
                if !s.is_running() {
                    return Err(format!("probe exited: {}", s.output()));
                }
                Ok(None)
            },
        )?;
        Ok(s)
    }
}
