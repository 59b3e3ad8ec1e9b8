//! DHCP as OpenWrt and a laptop do it: dnsmasq on each agent's LAN, a
//! one-shot busybox udhcpc in the node with the shipped event script, and
//! the addresses the node ends up holding.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::options::DhcpClient;
use super::{Ma, Testbed, DOCK_MAC, MN_IFACE, MN_MAC};
use crate::sys::{busybox_bin, dnsmasq_bin, run_cmd, tail, wait_for, Result};
use crate::traffic::mono_ns;

/// The udhcpc event script shipped in `tests/testbed/udhcpc.script`.
pub const UDHCPC_SCRIPT: &str = include_str!("../../udhcpc.script");

impl Testbed {
    pub(super) fn start_dnsmasq(&mut self, x: Ma) -> Result<()> {
        let d = self.agent_dir(x);
        let n = x.n();
        let pidfile = d.join("dnsmasq.pid");
        let argv: Vec<String> = vec![
            dnsmasq_bin().to_string_lossy().into_owned(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            "--bind-interfaces".into(),
            "--interface=br-lan".into(),
            "--except-interface=lo".into(),
            format!("--dhcp-range=10.{n}.0.100,10.{n}.0.200,255.255.255.0,1h"),
            format!("--dhcp-option=option:router,10.{n}.0.1"),
            format!("--dhcp-host={MN_MAC},10.{n}.0.50"),
            format!("--dhcp-host={DOCK_MAC},10.{n}.0.51"),
            format!("--dhcp-leasefile={}", d.join("dnsmasq.leases").display()),
            format!("--pid-file={}", pidfile.display()),
            "--dhcp-authoritative".into(),
            "--log-facility=-".into(),
            "--log-dhcp".into(),
            "--user=root".into(),
        ];
        let mut argv = argv;
        if self.opts.dhcp_reply_delay_s > 0 {
            argv.push(format!(
                "--dhcp-reply-delay={}",
                self.opts.dhcp_reply_delay_s
            ));
        }
        let ns = self.agent(x);
        let i = self.spawn(
            &format!("dnsmasq@{}", x.id()),
            &ns,
            &argv,
            &[],
            &d.join("dnsmasq.log"),
        )?;
        wait_for(
            &format!("dnsmasq in {} to start", x.id()),
            Duration::from_secs(10),
            Duration::from_millis(10),
            || {
                if let Some(st) = self.proc_exited(i) {
                    return Err(format!("dnsmasq exited: {st}"));
                }
                Ok(pidfile.exists().then_some(()))
            },
        )
        .map_err(|e| format!("{e}\n{}", tail(&d.join("dnsmasq.log"), 20)))
    }

    /// The move's DHCP: the node's client configures an address. Returns
    /// it and when the client's script logged it (CLOCK_MONOTONIC ns).
    pub(super) fn dhcp(&mut self) -> Result<(Ipv4Addr, Option<u64>)> {
        match self.opts.dhcp_client {
            DhcpClient::Udhcpc => self.udhcpc_once(),
            _ => self.dhcp_with_client(),
        }
    }

    /// One-shot busybox udhcpc with the shipped script on the node's Wi-Fi
    /// (metric 600 where there is a dock, as NetworkManager gives Wi-Fi).
    fn udhcpc_once(&mut self) -> Result<(Ipv4Addr, Option<u64>)> {
        let metric = self.opts.dock.map(|_| 600);
        self.udhcpc_on(MN_IFACE, metric)
    }

    /// One-shot busybox udhcpc on `iface`, its default route with `metric`.
    pub(super) fn udhcpc_on(
        &mut self,
        iface: &str,
        metric: Option<u32>,
    ) -> Result<(Ipv4Addr, Option<u64>)> {
        let events = self.dir.join("dhcp-events");
        let before = self.dhcp_events_seen();
        let script = self.dir.join("udhcpc.script");
        let mut c = self.mn().command(busybox_bin());
        c.args([
            "udhcpc", "-f", "-n", "-q", "-t", "10", "-T", "1", "-i", iface, "-s",
        ])
        .arg(&script)
        .env("SIMS_DHCP_EVENTS", &events)
        .env("SIMS_TRAFFIC", &self.traffic_bin);
        if let Some(m) = metric {
            c.env("SIMS_ROUTE_METRIC", m.to_string());
        }
        let out = run_cmd(c, None, Duration::from_secs(20))?;
        let log = format!("{}{}", out.stdout, out.stderr);
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("udhcpc.log"))
        {
            let _ = writeln!(f, "=== udhcpc at t_ns={}\n{log}", mono_ns());
        }
        if !out.ok() {
            return Err(format!(
                "DHCP in {} failed ({:?}, timed out: {}):\n{log}\n--- dnsmasq:\n{}",
                self.location.id(),
                out.status,
                out.timed_out,
                tail(&self.agent_dir(self.location).join("dnsmasq.log"), 10)
            ));
        }
        bound_after(&events, before)?
            .ok_or_else(|| format!("udhcpc succeeded but the script logged no bound event:\n{log}"))
    }

    /// IPv4 addresses (address, prefix length) on the node's interface.
    pub fn node_addrs(&self) -> Result<Vec<(Ipv4Addr, u8)>> {
        let out = self
            .mn()
            .ip(&["-4", "-o", "addr", "show", "dev", MN_IFACE])?;
        Ok(parse_addrs(&out))
    }

    /// Does the node hold `addr` (any prefix length)?
    pub fn node_has_addr(&self, addr: Ipv4Addr) -> Result<bool> {
        Ok(self.node_addrs()?.iter().any(|(a, _)| *a == addr))
    }
}

/// The last "bound" event after the first `before` lines of the events
/// file (`<stamp> bound <iface> <ip> <mask> <router>`): its address and
/// stamp; Ok(None) if there is none yet.
pub(super) fn bound_after(
    events: &std::path::Path,
    before: usize,
) -> Result<Option<(Ipv4Addr, Option<u64>)>> {
    let text = fs::read_to_string(events).unwrap_or_default();
    let Some(bound) = text
        .lines()
        .skip(before)
        .filter(|l| l.split_whitespace().nth(1) == Some("bound"))
        .last()
    else {
        return Ok(None);
    };
    let w: Vec<&str> = bound.split_whitespace().collect();
    let addr = w
        .get(3)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("bad event line {bound:?}"))?;
    Ok(Some((addr, w[0].parse::<u64>().ok())))
}

/// Parses `ip -o -4 addr` output into (address, prefix length).
pub fn parse_addrs(out: &str) -> Vec<(Ipv4Addr, u8)> {
    let mut v = Vec::new();
    for l in out.lines() {
        let mut w = l.split_whitespace();
        while let Some(t) = w.next() {
            if t == "inet" {
                if let Some(a) = w.next() {
                    let (ip, plen) = a.split_once('/').unwrap_or((a, "32"));
                    if let (Ok(ip), Ok(plen)) = (ip.parse(), plen.parse()) {
                        v.push((ip, plen));
                    }
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addrs_parse() {
        let out = "2: mn0    inet 10.2.0.50/24 brd 10.2.0.255 scope global mn0\\       valid_lft forever\n2: mn0    inet 10.1.0.50/32 scope global mn0\n";
        assert_eq!(
            parse_addrs(out),
            vec![
                (Ipv4Addr::new(10, 2, 0, 50), 24),
                (Ipv4Addr::new(10, 1, 0, 50), 32)
            ]
        );
    }
}
