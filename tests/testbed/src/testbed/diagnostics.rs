//! What a testbed tells about itself: the diagnostics printed on failure
//! (log tails, sessions, each agent's status and SIMS kernel state) and
//! the `$SIMS_TESTBED_REPORT` lines harnesses check.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use super::Testbed;
use crate::product::{SIMS_NFT_TABLE, SIMS_PROTO};
use crate::sys::{nft_bin, tail};

impl Testbed {
    /// Marks the testbed failed: Drop prints logs and keeps the run dir.
    pub fn mark_failed(&mut self) {
        self.failed = true;
    }

    /// Tails of all logs (daemons in full detail) and the agents' SIMS
    /// kernel state, as text.
    pub fn diagnostics(&mut self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "\n======== testbed {} {} diagnostics (run dir {}) ========",
            self.prefix,
            self.opts.label,
            self.dir.display()
        );
        for i in 0..self.procs.len() {
            let st = self.proc_exited(i);
            let p = &self.procs[i];
            let lines = if p.label.starts_with("sims") { 60 } else { 15 };
            let _ = writeln!(
                o,
                "---- {} (pid {}, {}) log {} — last {lines} lines:\n{}",
                p.label,
                p.child.id(),
                match st {
                    Some(s) => format!("exited: {s}"),
                    None => "running".into(),
                },
                p.log.display(),
                tail(&p.log, lines)
            );
        }
        let _ = writeln!(
            o,
            "---- udhcpc.log:\n{}",
            tail(&self.dir.join("udhcpc.log"), 10)
        );
        let _ = writeln!(
            o,
            "---- dhcp-events:\n{}",
            tail(&self.dir.join("dhcp-events"), 10)
        );
        if let Ok(rd) = fs::read_dir(self.dir.join("sessions")) {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            v.sort();
            for p in v
                .iter()
                .filter(|p| p.extension().map(|e| e == "out").unwrap_or(false))
            {
                let _ = writeln!(o, "---- session {}:\n{}", p.display(), tail(p, 5));
            }
        }
        for x in self.opts.agents.clone() {
            let ns = self.agent(x);
            let _ = writeln!(o, "---- kernel state of {}:", x.id());
            let _ = writeln!(
                o,
                "$ simsd status --json\n{}",
                self.agent_status(x)
                    .map(|st| st.raw.to_string())
                    .unwrap_or_else(|e| e)
            );
            let proto = SIMS_PROTO.to_string();
            for args in [
                vec!["-4", "rule", "show"],
                vec!["-4", "route", "show", "table", "all", "proto", &proto],
                vec!["-br", "link", "show"],
                vec!["-4", "-br", "addr", "show"],
                vec!["-s", "-d", "link", "show", "type", "ipip"],
                vec!["-s", "-d", "link", "show", "type", "tun"],
            ] {
                let _ = writeln!(
                    o,
                    "$ ip {}\n{}",
                    args.join(" "),
                    ns.ip(&args).unwrap_or_else(|e| e)
                );
            }
            let _ = writeln!(
                o,
                "$ nft list table inet {SIMS_NFT_TABLE}\n{}",
                ns.run(
                    nft_bin(),
                    &["list", "table", "inet", SIMS_NFT_TABLE],
                    Duration::from_secs(5)
                )
                .unwrap_or_else(|e| e)
            );
            // IP and ICMP counters of the namespace (drops, errors sent).
            let snmp = ns
                .in_ns(|| fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default())
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "$ grep -E '^(Ip|Icmp):' /proc/net/snmp\n{}",
                snmp.lines()
                    .filter(|l| l.starts_with("Ip:") || l.starts_with("Icmp:"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let mn = self.mn();
        for args in [
            vec!["-4", "addr", "show"],
            vec!["-4", "route", "show", "table", "all"],
        ] {
            let _ = writeln!(
                o,
                "---- mn: ip {}\n{}",
                args.join(" "),
                mn.ip(&args).unwrap_or_else(|e| e)
            );
        }
        let _ = writeln!(o, "======== end of diagnostics ========");
        o
    }

    /// Prints [`Testbed::diagnostics`] to stderr.
    pub fn print_diagnostics(&mut self) {
        eprintln!("{}", self.diagnostics());
    }
}
