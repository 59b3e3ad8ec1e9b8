//! A travel router's LAN (`--router`): its clients' sessions are NATed to
//! the router's address, and must survive the router's moves like its own.
//!
//! Two things make that work. The kernel drops every conntrack entry
//! that *masquerade* made for an address when the address is removed
//! (nf_nat_masquerade's inet notifier) — which the WAN's DHCP client does
//! at each move — so the clients' flows would be NATed afresh to the new
//! address and reset by the server. sims-node therefore NATs them itself,
//! just before the firewall's masquerade (fw4's `srcnat`), with `snat` to
//! the current address, whose entries the kernel keeps: an old flow keeps
//! its old address, held as a /32 and relayed like the node's own
//! sessions. And the census counts those flows (conntrack entries whose
//! reply goes to an old address from another host) as the sessions that
//! keep an old address alive.
//!
//! The table `ip sims_node` is sims-node's alone: replaced whole on each
//! change of address, deleted at exit. Flows that masquerade translated
//! before sims-node started are not protected. The router's own packets
//! are given a translation to their own source, for the firewall's
//! masquerade would otherwise rewrite them too (see `ruleset`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use log::{info, warn};

/// sims-node's nftables table (simsd's is `inet sims`).
pub const TABLE: &str = "sims_node";

/// The ruleset for traffic leaving by `dev`: the router's own keeps its
/// source, the LAN's is translated to `cur`.
pub fn ruleset(dev: &str, cur: Option<Ipv4Addr>) -> String {
    let mut s = format!(
        "table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\
         \tchain srcnat {{\n\
         \t\ttype nat hook postrouting priority srcnat - 1; policy accept;\n"
    );
    // The router's own packets keep their source: the firewall's
    // masquerade would give them one address of the interface (for a
    // broadcast, its first: perhaps a held /32), and the old addresses'
    // own sessions would be translated to the new one. A translation to
    // the same address is a binding all the same, so masquerade leaves
    // them alone.
    s += &format!("\t\toifname \"{dev}\" fib saddr type local snat ip to ip saddr\n");
    if let Some(cur) = cur {
        s += &format!("\t\toifname \"{dev}\" snat ip to {cur}\n");
    }
    s += "\t}\n}\n";
    s
}

fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The LAN's NAT as installed.
#[derive(Default)]
pub struct NatLan {
    installed: Option<(String, Option<Ipv4Addr>)>,
    /// nft runs made (the node's kernel changes).
    pub changes: u64,
}

impl NatLan {
    /// Makes the table translate LAN traffic leaving by `dev` to `cur`.
    pub fn sync(&mut self, dev: &str, cur: Option<Ipv4Addr>) {
        let want = (dev.to_string(), cur);
        if self.installed.as_ref() == Some(&want) {
            return;
        }
        self.changes += 1;
        match nft(&ruleset(dev, cur)) {
            Ok(()) => {
                match cur {
                    Some(c) => info!("LAN clients' new sessions leave {dev} as {c} (snat)"),
                    None => info!("no address on {dev}: no NAT for the LAN's new sessions"),
                }
                self.installed = Some(want);
            }
            Err(e) => warn!("nft table {TABLE}: {e}"),
        }
    }

    /// Removes the table (at exit).
    pub fn remove(&mut self) {
        let _ = nft(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"));
        self.installed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_translates_forwarded_traffic_only() {
        let r = ruleset("wwan0", Some(Ipv4Addr::new(10, 2, 0, 50)));
        assert!(r.contains("priority srcnat - 1;"), "{r}");
        let own = "oifname \"wwan0\" fib saddr type local snat ip to ip saddr\n";
        let lan = "oifname \"wwan0\" snat ip to 10.2.0.50\n";
        assert!(r.contains(own) && r.contains(lan), "{r}");
        assert!(r.find(own) < r.find(lan), "the router's own first: {r}");
        assert!(r.starts_with("table ip sims_node {}\ndelete table ip sims_node\n"));
        let none = ruleset("wwan0", None);
        assert!(none.contains(own) && !none.contains("to 10."), "{none}");
    }
}
