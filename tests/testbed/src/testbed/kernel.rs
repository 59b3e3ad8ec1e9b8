//! What SIMS leaves in an agent's kernel (rules, routes, tunnel devices
//! and their kinds, nft set elements), read with `ip` and `nft`.

use std::time::Duration;

use super::{Ma, Testbed};
use crate::netns::Netns;
use crate::product::{
    SIMS_MARK_RULE_PRIORITY, SIMS_NFT_TABLE, SIMS_PROTO, SIMS_RULE_PRIORITY, SIMS_TABLE,
    TUNNEL_PREFIX,
};
use crate::sys::{nft_bin, wait_for, Result};

/// What SIMS left in an agent's kernel: rules at simsd's priorities
/// (1000, 1001) or with its protocol (153), proto-153 routes in any table
/// and anything in the SIMS tables, `sims-*` links and elements in the
/// `inet sims` sets (the names and numbers: [`crate::product`]).
#[derive(Clone, Debug, Default)]
pub struct KernelState {
    pub rules: Vec<String>,
    pub routes: Vec<String>,
    pub tunnels: Vec<String>,
    /// (device, kind from `ip -d link`: `ipip`, `tun`, ...) of each tunnel.
    pub tunnel_kinds: Vec<(String, String)>,
    pub set_elements: Vec<String>,
    pub nft_table: bool,
}

impl KernelState {
    pub fn is_clean(&self) -> bool {
        self.rules.is_empty()
            && self.routes.is_empty()
            && self.tunnels.is_empty()
            && self.set_elements.is_empty()
    }
    /// What bindings put in: set elements and /32 routes (the tunnels,
    /// their rules and default routes are made per peer at start and stay
    /// while simsd runs).
    pub fn binding_state(&self) -> Vec<String> {
        let host_routes = self.routes.iter().filter(|r| !r.starts_with("default"));
        self.set_elements
            .iter()
            .chain(host_routes)
            .cloned()
            .collect()
    }
    pub fn routes_for(&self, addr: &str) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| r.split_whitespace().next() == Some(addr))
            .cloned()
            .collect()
    }
}

impl Testbed {
    /// SIMS's kernel state in a namespace.
    pub fn kernel_state(&self, ns: &Netns) -> Result<KernelState> {
        let rules = ns
            .ip(&["-4", "rule", "show"])?
            .lines()
            .filter(|l| {
                let prio = l.split(':').next().unwrap_or("").trim();
                [SIMS_RULE_PRIORITY, SIMS_MARK_RULE_PRIORITY]
                    .iter()
                    .any(|p| prio == p.to_string())
                    || l.contains(&format!("proto {SIMS_PROTO}"))
            })
            .map(str::to_string)
            .collect();
        let routes = ns
            .ip(&[
                "-4",
                "route",
                "show",
                "table",
                "all",
                "proto",
                &SIMS_PROTO.to_string(),
            ])?
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>();
        // Also anything in the SIMS table, whatever its protocol.
        let mut routes = routes;
        let table = format!("table {SIMS_TABLE}");
        for l in ns
            .ip(&["-4", "route", "show", "table", &SIMS_TABLE.to_string()])
            .unwrap_or_default()
            .lines()
        {
            let dest = l.split_whitespace().next().unwrap_or("");
            let known = routes
                .iter()
                .any(|r| r.split_whitespace().next() == Some(dest) && r.contains(&table));
            if !known {
                routes.push(format!("{l} {table}"));
            }
        }
        let tunnel_kinds = parse_link_kinds(&ns.ip(&["-d", "-o", "link", "show"])?)
            .into_iter()
            .filter(|(n, _)| n.starts_with(TUNNEL_PREFIX))
            .collect::<Vec<_>>();
        let tunnels = tunnel_kinds.iter().map(|(n, _)| n.clone()).collect();
        let nft = ns.run(
            nft_bin(),
            &["list", "table", "inet", SIMS_NFT_TABLE],
            Duration::from_secs(10),
        );
        let (nft_table, set_elements) = match nft {
            Ok(text) => (true, binding_set_elements(&text)),
            Err(_) => (false, Vec::new()),
        };
        Ok(KernelState {
            rules,
            routes,
            tunnels,
            tunnel_kinds,
            set_elements,
            nft_table,
        })
    }

    /// An agent's SIMS kernel state; an error if a tunnel device is not of
    /// the kind its configured backend makes (`ipip` for kernel, `tun` for
    /// userspace), so every scenario that looks also checks which data
    /// plane it is exercising.
    pub fn agent_kernel_state(&self, x: Ma) -> Result<KernelState> {
        let k = self.kernel_state(&self.agent(x))?;
        self.check_tunnel_kinds(x, &k)?;
        Ok(k)
    }

    fn check_tunnel_kinds(&self, x: Ma, k: &KernelState) -> Result<()> {
        for (name, kind) in &k.tunnel_kinds {
            self.report(&format!("agent={} tunnel={name} kind={kind}", x.id()));
            if let Some(want) = self.opts.tunnel_kind_of(x) {
                if kind != want {
                    return Err(format!(
                        "{}: tunnel {name} is a {kind:?} device; backend {:?} makes {want:?}",
                        x.id(),
                        self.opts.backend_of(x)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Waits until agent `x` has a `sims-*` tunnel device, and checks its
    /// kind against the backend (see [`Testbed::agent_kernel_state`]).
    /// Returns (device, kind) of its tunnels.
    pub fn wait_tunnel(&self, x: Ma, timeout: Duration) -> Result<Vec<(String, String)>> {
        wait_for(
            &format!("a sims-* tunnel device in {}", x.id()),
            timeout,
            Duration::from_millis(50),
            || {
                let k = self.agent_kernel_state(x)?;
                Ok((!k.tunnel_kinds.is_empty()).then_some(k.tunnel_kinds))
            },
        )
    }
}

/// (name, kind) of each device in `ip -d -o link show` output; the kind is
/// the first word of the linkinfo section (`ipip`, `tun`, `veth`, ...), or
/// "" for devices without one (lo).
pub fn parse_link_kinds(out: &str) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for l in out.lines() {
        let Some(name) = l
            .split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        // Sections are separated by a backslash: header, link/..., linkinfo.
        let kind = l
            .split('\\')
            .skip(2)
            .filter_map(|sec| sec.split_whitespace().next())
            .find(|w| !w.starts_with("link/") && !w.contains('='))
            .unwrap_or("")
            .to_string();
        v.push((name, kind));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_kinds_from_ip_d_o_link() {
        let out = "1: lo: <LOOPBACK> mtu 65536 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00 promiscuity 0  allmulti 0 minmtu 0 maxmtu 0 addrgenmode eui64 numtxqueues 1\n\
2: sims-ma-b: <POINTOPOINT,MULTICAST,NOARP> mtu 1480 qdisc noop state DOWN mode DEFAULT group default qlen 500\\    link/none  promiscuity 0  allmulti 0 minmtu 68 maxmtu 65535 \\    tun type tun pi off vnet_hdr off persist on addrgenmode eui64\n\
3: sims-ma-c@NONE: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1480 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/ipip 100.64.1.2 peer 100.64.3.2 promiscuity 0 minmtu 0 maxmtu 0 \\    ipip ipip remote 100.64.3.2 local 100.64.1.2 ttl 64 pmtudisc addrgenmode eui64\n";
        assert_eq!(
            parse_link_kinds(out),
            vec![
                ("lo".to_string(), String::new()),
                ("sims-ma-b".to_string(), "tun".to_string()),
                ("sims-ma-c".to_string(), "ipip".to_string()),
            ]
        );
    }
}

/// The element lines of the binding sets (`in_<n>`, `out_<n>`) in `nft
/// list table` output; the flood limiter's dynamic set (`lan_rate`: one
/// element per recent LAN source) is not binding state.
fn binding_set_elements(text: &str) -> Vec<String> {
    let mut set = "";
    let mut out = Vec::new();
    for l in text.lines() {
        let t = l.trim();
        if let Some(name) = t
            .strip_prefix("set ")
            .and_then(|r| r.split_whitespace().next())
        {
            set = name;
        }
        if t.contains("elements = ") && (set.starts_with("in_") || set.starts_with("out_")) {
            out.push(t.to_string());
        }
    }
    out
}

#[cfg(test)]
mod binding_sets_tests {
    use super::binding_set_elements;

    #[test]
    fn only_binding_sets_count() {
        let text = "table inet sims {\n\tset in_0 {\n\t\ttype ipv4_addr\n\t\telements = { 10.1.0.50 }\n\t}\n\tset lan_rate {\n\t\ttype ipv4_addr\n\t\telements = { 10.1.0.1 limit rate over 200/second }\n\t}\n}\n";
        assert_eq!(binding_set_elements(text), vec!["elements = { 10.1.0.50 }"]);
    }
}
