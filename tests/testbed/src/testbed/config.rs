//! What the testbed writes for each agent: the UCI config simsd reads and
//! the fw4-like nftables ruleset.

use super::{Ma, Options};
use crate::product::{SIMS_PORT, TUNNEL_PREFIX};

/// The agents `x`'s config lists as peers (all others, minus omitted ones).
pub fn peers_of(x: Ma, opts: &Options) -> Vec<Ma> {
    opts.agents
        .iter()
        .copied()
        .filter(|&y| y != x && !opts.omit_peers.contains(&(x, y)))
        .collect()
}

/// 32 random bytes as hex (simsd refuses an all-zero key, so a failed
/// read is a failed test, not a weak key).
pub fn random_key_hex() -> String {
    sims_openwrt::fresh_key()
}

/// The UCI config simsd reads for agent `x` (OpenWrt `/etc/config` syntax):
/// one `peer` section per agreement, `key(x, y)` the agreement's key.
pub fn agent_config(x: Ma, opts: &Options, key: impl Fn(Ma, Ma) -> String) -> String {
    let mut s = format!(
        "config agent 'agent'\n\
         \toption id '{id}'\n\
         \toption provider '{prov}'\n\
         \toption lan_ifname 'br-lan'\n\
         \toption wan_ifname 'wan'\n\
         \toption endpoint '{ep}'\n\
         \tlist lan_prefix '{pfx}'\n\
         \toption port '{SIMS_PORT}'\n\
         \toption backend '{be}'\n\
         \toption advert_interval '{adv}'\n\
         \toption binding_lifetime '{life}'\n",
        id = x.id(),
        prov = x.provider(),
        ep = x.wan_ip(),
        pfx = x.lan_prefix(),
        be = opts.backend_of(x),
        adv = opts.advert_interval_s,
        life = opts.binding_lifetime_s,
    );
    for y in peers_of(x, opts) {
        s.push_str(&format!(
            "\nconfig peer 'ma_{l}'\n\
             \toption id '{id}'\n\
             \toption endpoint '{ep}'\n\
             \tlist lan_prefix '{pfx}'\n\
             \toption key '{key}'\n",
            l = y.letter(),
            id = y.id(),
            ep = y.wan_ip(),
            pfx = y.lan_prefix(),
            key = key(x, y),
        ));
    }
    s
}

/// The fw4-like ruleset of an agent whose configured peers are `peers`:
/// input drops all but lo, established, the LAN, the SIMS control
/// port from anywhere on the WAN, ipip from peers (configured or moved: the
/// set `sims_moved`); forward drops all but established, from the
/// LAN and to/from `sims-*`; masquerade out of the WAN.
pub fn firewall_ruleset(peers: &[Ma]) -> String {
    let peers: Vec<String> = peers.iter().map(|y| y.wan_ip().to_string()).collect();
    // As the init script opens it: the control port from anywhere, ipip
    // from the peers' endpoints and from the peers that moved.
    let mut wan_rules = format!(
        "\t\tiifname \"wan\" udp dport {SIMS_PORT} accept\n\
         \t\tiifname \"wan\" meta l4proto 4 ip saddr @sims_moved accept\n"
    );
    if !peers.is_empty() {
        let set = peers.join(", ");
        wan_rules += &format!("\t\tiifname \"wan\" meta l4proto 4 ip saddr {{ {set} }} accept\n");
    }
    format!(
        "table inet fw4\n\
         delete table inet fw4\n\
         table inet fw4 {{\n\
         \tset sims_moved {{\n\
         \t\ttype ipv4_addr\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy drop;\n\
         \t\tiif \"lo\" accept\n\
         \t\tct state established,related accept\n\
         \t\tiifname \"br-lan\" accept\n\
         {wan_rules}\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy drop;\n\
         \t\tct state established,related accept\n\
         \t\tiifname \"br-lan\" accept\n\
         \t\tiifname \"{TUNNEL_PREFIX}*\" accept\n\
         \t\toifname \"{TUNNEL_PREFIX}*\" accept\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t}}\n\
         \tchain srcnat {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"wan\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_one_peer_section_per_agreement() {
        let opts = Options::default()
            .backend("userspace")
            .no_agreement(Ma::A, Ma::B);
        let key = |x: Ma, y: Ma| {
            let (p, q) = if x < y { (x, y) } else { (y, x) };
            format!("{}{}", p.letter(), q.letter()).repeat(32)
        };
        let a = agent_config(Ma::A, &opts, key);
        assert!(a.starts_with("config agent 'agent'\n\toption id 'ma-a'\n"));
        assert!(a.contains("\toption endpoint '100.64.1.2'\n\tlist lan_prefix '10.1.0.0/24'\n"));
        assert!(a.contains("\toption backend 'userspace'\n"));
        assert!(
            a.contains("config peer 'ma_c'\n\toption id 'ma-c'\n\toption endpoint '100.64.3.2'\n")
        );
        assert!(!a.contains("ma-b"), "no agreement with B: {a}");
        assert!(a.contains(&format!("\toption key '{}'\n", "ac".repeat(32))));
        let c = agent_config(Ma::C, &opts, key);
        assert!(c.contains("config peer 'ma_a'") && c.contains("config peer 'ma_b'"));
        assert!(
            c.contains(&format!("\toption key '{}'\n", "ac".repeat(32))),
            "same key on both sides"
        );
        assert_eq!(random_key_hex().len(), 64);
    }

    #[test]
    fn mixed_backend_is_kernel_on_a_only() {
        let opts = Options::default().backend("mixed");
        let key = |_: Ma, _: Ma| "5a".repeat(32);
        assert!(agent_config(Ma::A, &opts, key).contains("\toption backend 'kernel'\n"));
        assert!(agent_config(Ma::B, &opts, key).contains("\toption backend 'userspace'\n"));
        assert!(agent_config(Ma::C, &opts, key).contains("\toption backend 'userspace'\n"));
        assert_eq!(opts.tunnel_kind_of(Ma::A), Some("ipip"));
        assert_eq!(opts.tunnel_kind_of(Ma::B), Some("tun"));
        let k = Options::default().backend("kernel");
        assert!(Ma::ALL.iter().all(|&x| k.backend_of(x) == "kernel"));
        assert_eq!(
            Options::default().backend("auto").tunnel_kind_of(Ma::A),
            None
        );
    }

    #[test]
    fn firewall_opens_ipip_to_peers_only() {
        let fw = firewall_ruleset(&[Ma::B, Ma::C]);
        assert!(fw
            .contains("iifname \"wan\" meta l4proto 4 ip saddr { 100.64.2.2, 100.64.3.2 } accept"));
        assert!(fw.contains("iifname \"wan\" meta l4proto 4 ip saddr @sims_moved accept"));
        assert!(fw.contains("iifname \"wan\" udp dport 4434 accept"));
        assert!(fw.contains("policy drop") && fw.contains("oifname \"wan\" masquerade"));
        assert!(
            fw.contains("iifname \"sims-*\" accept") && fw.contains("oifname \"sims-*\" accept"),
            "simsd's tunnels are forwarded: {fw}"
        );
        let none = firewall_ruleset(&[]);
        assert!(
            !none.contains("l4proto 4 ip saddr {"),
            "no peers, no peer opened: {none}"
        );
    }
}
