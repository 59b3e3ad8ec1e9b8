//! The `inet sims` nftables table: owned whole by simsd, loaded with one
//! `nft -f -` at start (like fw4 loads its ruleset). A reload replaces its
//! rules in one transaction and leaves the sets of the peers that stay,
//! and their elements, as they are. Per binding changes are set elements,
//! made in-process (dataplane.rs). Peers are named by their slot
//! (dataplane/slots.rs), not by their position in the config.
//!
//! - `out_<n>`: visiting nodes' foreign addresses that go into slot n's
//!   tunnel; their LAN packets get peer n's fwmark (one rule per peer
//!   routes the mark into the peer's table).
//! - `in_<n>`: our own addresses redirected to peer n: traffic to them gets
//!   peer n's mark (so, by the peer's rule, its tunnel), and they are the
//!   only sources accepted out of that tunnel (besides return traffic to
//!   `out_<n>`).
//! - `output`: the router's own packets to `in_<n>` addresses take the
//!   tunnel too: dnsmasq's "is this address in use?" ping reaches the node
//!   that holds it (and is answered), so a redirected address is never
//!   leased to another host.
//! - `input`: at most 200 control datagrams a second (burst 200) from
//!   each LAN source address reach simsd's socket: one guest flooding at
//!   line rate fills neither the socket's buffer nor the daemon's time,
//!   and the other nodes' datagrams still get through.
//! - leak guard: nothing from the LAN leaves by the WAN with a source
//!   outside our LAN prefixes. A visiting node's old address would be
//!   masqueraded there and the server would reset the session.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use crate::config::Config;

pub use simsd::owned::{set_in, set_out};
use simsd::owned::{tunnel_name, NFT_TABLE};

/// The dynamic set of LAN sources the control-port limit tracks.
const LAN_RATE_SET: &str = "lan_rate";
/// Control datagrams a second (and burst) allowed per LAN source.
const LAN_RATE: u32 = 200;

/// (slot, peer id) of the peers in the table.
pub type Slots = [(usize, String)];

/// The chains, in the order they are written.
const CHAINS: [&str; 5] = ["input", "prerouting", "home", "output", "forward"];

/// The table's contents for `cfg` with its peers in `slots`: their sets,
/// then the chains, with or without the flood limiter (which needs the
/// kernel's `nft_limit` and dynamic sets).
fn body(cfg: &Config, slots: &Slots, limiter: bool) -> String {
    let lan = &cfg.lan_ifname;
    let wan = &cfg.wan_ifname;
    let prefixes: Vec<String> = cfg
        .agent
        .lan_prefixes
        .iter()
        .map(|p| p.to_string())
        .collect();
    let mut s = String::new();
    for (i, _) in slots {
        s.push_str(&format!(
            "\tset {} {{ type ipv4_addr; }}\n\tset {} {{ type ipv4_addr; }}\n",
            set_in(*i),
            set_out(*i)
        ));
    }
    // Per-source flood limit on the control port, before the socket.
    let limit = format!(
        "\tset {LAN_RATE_SET} {{ type ipv4_addr; size 4096; flags dynamic,timeout; timeout 60s; }}\n\
         \tchain input {{\n\t\ttype filter hook input priority filter - 5; policy accept;\n\
         \t\tiifname \"{lan}\" udp dport {port} update @{LAN_RATE_SET} {{ ip saddr limit rate over {LAN_RATE}/second burst {LAN_RATE} packets }} counter drop\n\t}}\n",
        port = cfg.agent.port,
    );
    if limiter {
        s.push_str(&limit);
    }
    s.push_str(
        "\tchain prerouting {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n",
    );
    for (i, _) in slots {
        s.push_str(&format!(
            "\t\tiifname \"{lan}\" ip saddr @{} meta mark set {:#x}\n",
            set_out(*i),
            cfg.ids.peer_mark(*i)
        ));
    }
    // After the NAT's reverse mapping (dstnat is -100), so replies to a
    // masqueraded session of a redirected address match by their real
    // destination.
    s.push_str(
        "\t}\n\tchain home {\n\t\ttype filter hook prerouting priority dstnat + 10; policy accept;\n",
    );
    for (i, _) in slots {
        s.push_str(&format!(
            "\t\tip daddr @{} meta mark set {:#x}\n",
            set_in(*i),
            cfg.ids.peer_mark(*i)
        ));
    }
    // A route chain: a changed mark re-routes the packet.
    s.push_str(
        "\t}\n\tchain output {\n\t\ttype route hook output priority mangle; policy accept;\n",
    );
    for (i, _) in slots {
        s.push_str(&format!(
            "\t\tip daddr @{} meta mark set {:#x}\n",
            set_in(*i),
            cfg.ids.peer_mark(*i)
        ));
    }
    s.push_str("\t}\n\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n");
    for (i, id) in slots {
        s.push_str(&format!(
            "\t\tiifname \"{}\" ip saddr != @{} ip daddr != @{} counter drop\n",
            tunnel_name(id),
            set_in(*i),
            set_out(*i)
        ));
    }
    s.push_str(&format!(
        "\t\tiifname \"{lan}\" oifname \"{wan}\" ip saddr != {{ {} }} counter drop\n\t}}\n",
        prefixes.join(", ")
    ));
    s
}

/// The whole table, replacing any earlier one.
fn ruleset(cfg: &Config, slots: &Slots, limiter: bool) -> String {
    // Declare-then-delete makes the load atomic and idempotent.
    let t = NFT_TABLE;
    format!(
        "table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n{}}}\n",
        body(cfg, slots, limiter)
    )
}

/// The reload of a loaded table: every chain flushed and written anew,
/// new sets added; existing sets (and their elements) are left alone.
/// One transaction: a packet sees the old rules or the new ones.
fn reload_script(cfg: &Config, slots: &Slots, limiter: bool) -> String {
    let t = NFT_TABLE;
    let mut s = String::new();
    for c in CHAINS.iter().filter(|c| limiter || **c != "input") {
        s.push_str(&format!("flush chain inet {t} {c}\n"));
    }
    s.push_str(&format!(
        "table inet {t} {{\n{}}}\n",
        body(cfg, slots, limiter)
    ));
    s
}

fn nft(input: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Loads the table; true if with the flood limiter. A kernel without
/// `nft_limit` (or dynamic sets) gets it without the limiter, and a
/// warning: the rest of SIMS works.
pub fn load(cfg: &Config, slots: &Slots) -> io::Result<bool> {
    match nft(&ruleset(cfg, slots, true)) {
        Ok(()) => Ok(true),
        Err(e) => {
            log::warn!("nft: no flood limiter on this kernel ({e}); loading the table without it");
            nft(&ruleset(cfg, slots, false)).map(|()| false)
        }
    }
}

/// Rewrites the loaded table's rules for `cfg` and `slots`, in place.
pub fn reload(cfg: &Config, slots: &Slots, limiter: bool) -> io::Result<()> {
    nft(&reload_script(cfg, slots, limiter))
}

pub fn unload() -> io::Result<()> {
    let t = NFT_TABLE;
    nft(&format!("table inet {t}\ndelete table inet {t}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_has_one_rule_per_peer_and_the_leak_guard() {
        let text = "config agent\n option id ma-a\n option endpoint 100.64.1.2\n list lan_prefix 10.1.0.0/24\n option lan_ifname br-lan\n option wan_ifname wan\nconfig peer\n option id ma-b\n option endpoint 100.64.2.2\n list lan_prefix 10.2.0.0/24\n option key 6b1d9e3f0a5c7b2e4d8f1a3c5e7b9d0f2a4c6e8b0d1f3a5c7e9b2d4f6a8c0e1f\n";
        let cfg = crate::config::parse(text, "t").unwrap();
        let slots = [(0, "ma-b".to_string())];
        let r = ruleset(&cfg, &slots, true);
        assert!(r.contains("iifname \"br-lan\" ip saddr @out_0 meta mark set 0x51530001"));
        assert!(r.contains("iifname \"sims-ma-b\" ip saddr != @in_0 ip daddr != @out_0"));
        assert!(r.contains("priority dstnat + 10;"));
        assert!(r.contains("ip daddr @in_0 meta mark set 0x51530001"));
        assert!(r.contains("udp dport 4434 update @lan_rate { ip saddr limit rate over 200/second"));
        let without = ruleset(&cfg, &slots, false);
        assert!(!without.contains("lan_rate") && without.contains("@in_0"));
        // The router's own packets to a redirected address take the tunnel.
        assert!(r.contains("type route hook output priority mangle;"));
        assert_eq!(
            r.matches("ip daddr @in_0 meta mark set 0x51530001").count(),
            2
        );
        assert!(r.contains("oifname \"wan\" ip saddr != { 10.1.0.0/24 } counter drop"));
        // A peer in slot 3 is named by its slot everywhere.
        let r = reload_script(&cfg, &[(3, "ma-b".to_string())], true);
        assert!(r.contains("iifname \"sims-ma-b\" ip saddr != @in_3 ip daddr != @out_3"));
        assert!(r.contains("ip daddr @in_3 meta mark set 0x51530004") && !r.contains("in_0"));
        // A reload flushes the chains, never the table or its sets.
        assert!(r.starts_with("flush chain inet sims input\nflush chain inet sims prerouting\n"));
        assert!(!r.contains("delete") && !r.contains("flush set"));
        let r = reload_script(&cfg, &[], false);
        assert!(!r.contains("chain inet sims input") && !r.contains("lan_rate"));
    }
}
