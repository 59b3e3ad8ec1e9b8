//! The SIMS daemons: simsd on each agent (its UCI config, start, signals,
//! crash) and sims-node on the mobile node, their status, and waiting for
//! a status to hold.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::{Ma, MoveInfo, Testbed, MN_IFACE};
use crate::status::{AgentStatus, NodeStatus};
use crate::sys::{kill_pid, stop_child, tail, wait_for, Result};

impl Testbed {
    /// The UCI config simsd reads (`<dir>/ma-X/sims.conf`).
    pub fn agent_config(&self, x: Ma) -> String {
        super::config::agent_config(x, &self.opts, |x, y| self.key(x, y).to_string())
    }

    pub fn agent_config_path(&self, x: Ma) -> PathBuf {
        self.agent_dir(x).join("sims.conf")
    }

    /// (Re)writes an agent's config from the options.
    pub fn write_agent_config(&self, x: Ma) -> Result<()> {
        fs::write(self.agent_config_path(x), self.agent_config(x))
            .map_err(|e| format!("write config of {}: {e}", x.id()))
    }

    /// Starts simsd in an agent's namespace (same config and state dir on
    /// every start) and waits until its status answers.
    pub fn start_agent(&mut self, x: Ma) -> Result<()> {
        if let Some(&i) = self.agent_proc.get(&x) {
            if self.proc_exited(i).is_none() {
                return Err(format!("simsd in {} is already running", x.id()));
            }
        }
        let d = self.agent_dir(x);
        let argv = vec![
            self.bin("simsd").to_string_lossy().into_owned(),
            "-c".into(),
            self.agent_config_path(x).to_string_lossy().into_owned(),
            "--state-dir".into(),
            d.to_string_lossy().into_owned(),
        ];
        let ns = self.agent(x);
        let log = d.join("simsd.log");
        let rust_log = self.opts.rust_log.clone();
        let extra = self.opts.agent_env.clone();
        let mut env = vec![("RUST_LOG", rust_log.as_str()), ("RUST_BACKTRACE", "1")];
        env.extend(
            extra
                .iter()
                .filter(|(y, _, _)| *y == x)
                .map(|(_, k, v)| (k.as_str(), v.as_str())),
        );
        let i = self.spawn(&format!("simsd@{}", x.id()), &ns, &argv, &env, &log)?;
        self.agent_proc.insert(x, i);
        let r = wait_for(
            &format!("simsd in {} to answer status", x.id()),
            Duration::from_secs(15),
            Duration::from_millis(50),
            || {
                if let Some(st) = self.proc_exited(i) {
                    return Err(format!("simsd exited: {st}"));
                }
                self.agent_status(x).map(Some)
            },
        );
        let st = r.map_err(|e| format!("{e}\n--- simsd.log of {}:\n{}", x.id(), tail(&log, 30)))?;
        self.report(&format!("agent={} backend={}", x.id(), st.backend));
        let want = self.opts.backend_of(x);
        if want != "auto" && st.backend != want {
            return Err(format!(
                "simsd in {} runs the {:?} backend; the testbed configured {want:?}\n--- simsd.log:\n{}",
                x.id(),
                st.backend,
                tail(&log, 30)
            ));
        }
        Ok(())
    }

    /// Starts simsd on every agent.
    pub fn start_agents(&mut self) -> Result<()> {
        for x in self.opts.agents.clone() {
            self.start_agent(x)?;
        }
        Ok(())
    }

    /// PID of an agent's running simsd.
    pub fn agent_pid(&mut self, x: Ma) -> Option<u32> {
        let i = *self.agent_proc.get(&x)?;
        if self.proc_exited(i).is_some() {
            return None;
        }
        Some(self.procs[i].child.id())
    }

    pub fn agent_running(&mut self, x: Ma) -> bool {
        self.agent_pid(x).is_some()
    }

    /// Sends `sig` to an agent's simsd (by PID) and waits (bounded) for it
    /// to exit. SIGKILL simulates a crash.
    /// Sends `sig` to simsd in `x` without waiting (e.g. SIGHUP: reload).
    pub fn signal_agent(&mut self, x: Ma, sig: i32) -> Result<()> {
        let i = *self
            .agent_proc
            .get(&x)
            .ok_or_else(|| format!("simsd in {} was never started", x.id()))?;
        if self.proc_exited(i).is_some() {
            return Err(format!("simsd in {} is not running", x.id()));
        }
        kill_pid(self.procs[i].child.id(), sig);
        Ok(())
    }

    /// The daemon's log so far.
    pub fn agent_log(&self, x: Ma) -> String {
        fs::read_to_string(self.agent_dir(x).join("simsd.log")).unwrap_or_default()
    }

    pub fn kill_agent(&mut self, x: Ma, sig: i32) -> Result<Option<ExitStatus>> {
        let i = *self
            .agent_proc
            .get(&x)
            .ok_or_else(|| format!("simsd in {} was never started", x.id()))?;
        if let Some(st) = self.proc_exited(i) {
            return Ok(Some(st));
        }
        kill_pid(self.procs[i].child.id(), sig);
        let r = wait_for(
            &format!("simsd in {} to exit after signal {sig}", x.id()),
            Duration::from_secs(10),
            Duration::from_millis(10),
            || Ok(self.proc_exited(i).map(Some)),
        );
        match r {
            Ok(st) => Ok(st),
            Err(e) => {
                stop_child(&mut self.procs[i].child, Duration::from_millis(100));
                Err(e)
            }
        }
    }

    /// Starts sims-node in the node's namespace.
    pub fn start_node(&mut self) -> Result<()> {
        if let Some(i) = self.node_proc {
            if self.proc_exited(i).is_none() {
                return Err("sims-node is already running".into());
            }
        }
        let d = self.node_dir();
        let argv = if self.opts.node_unit {
            self.node_unit_argv()?
        } else {
            let argv = vec![
                self.bin("sims-node").to_string_lossy().into_owned(),
                "-i".into(),
                MN_IFACE.into(),
                "--state-dir".into(),
                d.to_string_lossy().into_owned(),
                "--grace-ms".into(),
                self.opts.grace_ms.to_string(),
            ];
            [argv, self.opts.node_args.clone()].concat()
        };
        let ns = self.mn();
        let log = d.join("sims-node.log");
        let rust_log = self.opts.rust_log.clone();
        let i = self.spawn(
            "sims-node@mn",
            &ns,
            &argv,
            &[("RUST_LOG", &rust_log), ("RUST_BACKTRACE", "1")],
            &log,
        )?;
        self.node_proc = Some(i);
        wait_for(
            "sims-node to answer status",
            Duration::from_secs(15),
            Duration::from_millis(50),
            || {
                if let Some(st) = self.proc_exited(i) {
                    return Err(format!("sims-node exited: {st}"));
                }
                self.node_status().map(Some)
            },
        )
        .map(|_| ())
        .map_err(|e| format!("{e}\n--- sims-node.log:\n{}", tail(&log, 30)))
    }

    pub fn node_running(&mut self) -> bool {
        match self.node_proc {
            Some(i) => self.proc_exited(i).is_none(),
            None => false,
        }
    }

    /// Stops sims-node (SIGTERM, then SIGKILL).
    pub fn stop_node(&mut self) {
        if let Some(i) = self.node_proc {
            let st = stop_child(&mut self.procs[i].child, Duration::from_secs(3));
            self.procs[i].exited = st;
        }
    }

    /// Starts all agents, the node, and attaches the node to `first`
    /// (DHCP), waiting until it is registered there.
    pub fn start_all_at(&mut self, first: Ma) -> Result<MoveInfo> {
        self.start_agents()?;
        self.start_node()?;
        let m = self.move_to(first)?;
        self.wait_node_at(first, Duration::from_secs(15))?;
        Ok(m)
    }

    /// `simsd --state-dir <dir> status --json` of an agent.
    pub fn agent_status(&self, x: Ma) -> Result<AgentStatus> {
        let d = self.agent_dir(x).to_string_lossy().into_owned();
        let out = self.agent(x).run(
            self.bin("simsd"),
            &["--state-dir", &d, "status", "--json"],
            Duration::from_secs(5),
        )?;
        AgentStatus::parse(&out)
    }

    /// Where sims-node's status socket is (`--run-dir`).
    pub fn node_run_dir(&self) -> std::path::PathBuf {
        match self.opts.node_unit {
            true => self.node_dir().join("run"),
            false => self.node_dir(),
        }
    }

    /// Where sims-node keeps its identity and credentials.
    pub fn node_state_dir(&self) -> std::path::PathBuf {
        match self.opts.node_unit {
            true => self.node_dir().join("state"),
            false => self.node_dir(),
        }
    }

    /// sims-node as systemd would run `sims-node@mn0.service` (the unit
    /// shipped in the .deb, firmware/sims-node/debian/): the unit's
    /// ExecStart with the testbed's build for /usr/bin/sims-node and the
    /// testbed's options for $SIMS_NODE_ARGS, in a mount namespace where
    /// every file system is read-only (ProtectSystem=strict) but /dev,
    /// /proc and /sys, /tmp is private (PrivateTmp), the StateDirectory
    /// and RuntimeDirectory are the testbed's node dirs mounted where the
    /// unit puts them, and only the unit's capabilities are left
    /// (CapabilityBoundingSet, NoNewPrivileges; UMask). What systemd
    /// would do and this does not: the system call filter and the
    /// address families, which the kernel would enforce on calls that
    /// sims-node makes here anyway.
    fn node_unit_argv(&self) -> Result<Vec<String>> {
        let u = sims_debian::Unit::parse(sims_debian::UNIT, MN_IFACE)?;
        let (state, run) = (self.node_state_dir(), self.node_run_dir());
        for d in [&state, &run] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let state_at = format!("/var/lib/{}", u.state_directory.as_deref().unwrap_or(""));
        let run_at = format!("/run/{}", u.runtime_directory.as_deref().unwrap_or(""));
        let mut script = String::from("set -e\n");
        // The unit's own directories first: a bind made after the
        // read-only remount below would be read-only too.
        script += &format!(
            "mount -t tmpfs -o mode=0755 none /var/lib\nmkdir -p '{state_at}'\nmount --bind '{}' '{state_at}'\n\
             mount -t tmpfs -o mode=0755 none /run\nmkdir -p '{run_at}'\nmount --bind '{}' '{run_at}'\n",
            state.display(),
            run.display()
        );
        if u.private_tmp {
            script += "mount -t tmpfs -o mode=1777 none /tmp\n";
        }
        if u.protect_system.as_deref() == Some("strict") {
            script += &format!(
                "for m in $(awk '{{print $2}}' /proc/self/mounts | sort -u); do\n\
                 case $m in /dev|/dev/*|/proc|/proc/*|/sys|/sys/*|/tmp|'{state_at}'|'{run_at}') ;;\n\
                 *) mount -o remount,bind,ro \"$m\" 2>/dev/null || true ;; esac\ndone\n"
            );
        }
        if let Some(m) = &u.umask {
            script += &format!("umask {m}\n");
        }
        let caps: Vec<String> = (u.capabilities.iter())
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect();
        script += &format!(
            "exec setpriv {}--bounding-set -all,{} --inh-caps -all \"$@\"\n",
            if u.no_new_privileges {
                "--no-new-privs "
            } else {
                ""
            },
            caps.join(",")
        );
        let mut argv: Vec<String> = ["unshare", "-m", "sh", "-c", &script, "sh"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (i, w) in u.exec.iter().enumerate() {
            match (i, w.as_str()) {
                (0, _) => argv.push(self.bin("sims-node").to_string_lossy().into_owned()),
                (_, "$SIMS_NODE_ARGS") => {
                    argv.push("--grace-ms".into());
                    argv.push(self.opts.grace_ms.to_string());
                    argv.extend(self.opts.node_args.iter().cloned());
                }
                _ => argv.push(w.clone()),
            }
        }
        Ok(argv)
    }

    /// `sims-node --run-dir <dir> status`: the report in plain words.
    pub fn node_report(&self) -> Result<String> {
        let d = self.node_run_dir().to_string_lossy().into_owned();
        self.mn().run(
            self.bin("sims-node"),
            &["--run-dir", &d, "status"],
            Duration::from_secs(5),
        )
    }

    /// `sims-node --run-dir <dir> status --json`.
    pub fn node_status(&self) -> Result<NodeStatus> {
        let d = self.node_run_dir().to_string_lossy().into_owned();
        let out = self.mn().run(
            self.bin("sims-node"),
            &["--run-dir", &d, "status", "--json"],
            Duration::from_secs(5),
        )?;
        NodeStatus::parse(&out)
    }

    /// Polls an agent's status until `pred` holds.
    pub fn wait_agent(
        &self,
        x: Ma,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&AgentStatus) -> bool,
    ) -> Result<AgentStatus> {
        wait_for(
            &format!("{}: {what}", x.id()),
            timeout,
            Duration::from_millis(50),
            || {
                let s = self.agent_status(x)?;
                if pred(&s) {
                    Ok(Some(s))
                } else {
                    Err(format!("status {}", s.raw))
                }
            },
        )
    }

    /// Polls the node's status until `pred` holds.
    pub fn wait_node(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&NodeStatus) -> bool,
    ) -> Result<NodeStatus> {
        wait_for(
            &format!("node: {what}"),
            timeout,
            Duration::from_millis(50),
            || {
                let s = self.node_status()?;
                if pred(&s) {
                    Ok(Some(s))
                } else {
                    Err(format!("status {}", s.raw))
                }
            },
        )
    }

    /// Waits until the node reports being attached at `x` with its address.
    pub fn wait_node_at(&self, x: Ma, timeout: Duration) -> Result<NodeStatus> {
        let addr = x.node_addr().to_string();
        let id = x.id();
        self.wait_node(&format!("current = {addr} at {id}"), timeout, |s| {
            s.is_at(&addr, &id)
        })
    }

    /// Waits until the node's binding for `addr` is in `state`.
    pub fn wait_node_binding(
        &self,
        addr: Ipv4Addr,
        state: &str,
        timeout: Duration,
    ) -> Result<NodeStatus> {
        let a = addr.to_string();
        self.wait_node(&format!("binding {a} {state}"), timeout, |s| {
            s.binding(&a).map(|b| b.state == state).unwrap_or(false)
        })
    }
}
