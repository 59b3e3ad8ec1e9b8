//! `/etc/config/sims`: OpenWrt UCI syntax, read without libuci (the daemon
//! must also run off OpenWrt). One `agent` section, one `peer` section per
//! roaming agreement. A bad file is refused whole with file, line and
//! reason; nothing is applied.

use std::fmt;
use std::net::Ipv4Addr;

use crate::owned::{defaults, KernelIds};
use crate::uci::Section;
use sims_proto::agent::{AgentConfig, PeerConfig, MAX_PEERS};
use sims_proto::{AgentId, Prefix};

/// Which tunnel implementation carries relayed packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Kernel ipip if the kernel has it, else userspace.
    Auto,
    Kernel,
    Userspace,
}

/// Everything simsd needs: the protocol's settings and the platform's.
#[derive(Clone, Debug)]
pub struct Config {
    pub agent: AgentConfig,
    pub lan_ifname: String,
    pub wan_ifname: String,
    pub backend: Backend,
    /// Table, rule priority, route protocol and mark base of our state.
    pub ids: KernelIds,
    pub tunnel_mtu: u32,
    /// No `endpoint` configured: our endpoint is the WAN device's address,
    /// followed as it changes (a DHCP or PPPoE WAN).
    pub follow_wan: bool,
    /// Where the per-peer traffic totals are kept (None: in the state
    /// directory, which on OpenWrt does not survive a reboot; the
    /// package's config names one on flash), and how often it is written.
    pub accounting_file: Option<String>,
    pub accounting_interval_ms: u64,
}

#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

/// Reads the UCI syntax as libuci does (uci.rs), with errors naming the
/// file and line.
fn parse_sections(text: &str, file: &str) -> Result<Vec<Section>, ConfigError> {
    crate::uci::parse(text).map_err(|(line, reason)| ConfigError {
        file: file.to_string(),
        line,
        reason,
    })
}

/// Every value of a section's options, in order: (key, value, line). A
/// list gives one entry per value; config.rs decides what repeats.
fn entries(s: &Section) -> impl Iterator<Item = (&String, &String, &usize)> {
    s.options
        .iter()
        .flat_map(|o| o.values.iter().map(move |(v, line)| (&o.key, v, line)))
}

/// Where the accounting file may be: a file of simsd's own directories
/// (a config edit must not make root write, or set aside, any other file).
pub const ACCOUNTING_DIRS: [&str; 2] = ["/etc/sims/", "/var/run/sims/"];

fn accounting_file(v: &str) -> Result<String, String> {
    let name = ACCOUNTING_DIRS.iter().find_map(|d| v.strip_prefix(d));
    let ok = name.is_some_and(|n| {
        !n.is_empty()
            && !n.starts_with('.')
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    if !ok {
        return Err(format!(
            "accounting_file '{v}': expected a file name (a-z, 0-9, . _ -) in {}",
            ACCOUNTING_DIRS.join(" or ")
        ));
    }
    Ok(v.to_string())
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Keys printed as examples: the one in docs/CONFIG.md §4 and the byte
/// sequence 00 01 … 1f of test vectors. Anyone can read them, so a peer
/// configured with one is open to anyone.
const EXAMPLE_KEYS: [&str; 2] = [
    "f5642a19c56e5f7a847fb2f478376cb73930683cce46c11db9b0cc288481eeaa",
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
];

/// A peer's `key`: 64 hex digits, neither all zeros nor an example key.
fn peer_key(v: &str) -> Result<[u8; 32], String> {
    let k = hex32(v).ok_or("key must be 64 hexadecimal characters (32 bytes)")?;
    let weak = if k == [0; 32] {
        "all zeros"
    } else if EXAMPLE_KEYS.iter().any(|e| hex32(e) == Some(k)) {
        "the example key from the documentation, known to anyone"
    } else {
        return Ok(k);
    };
    Err(format!(
        "key is {weak}: generate one with 'simsd keygen' and give it to the peer's operator"
    ))
}

/// `simsd keygen`'s output: a new key from the kernel's CSPRNG, as 64
/// lower-case hex digits and a newline. Never a fallback: no key if the
/// random source fails.
pub fn keygen() -> Result<String, String> {
    let mut k = [0u8; 32];
    sims_linux::random_bytes(&mut k).map_err(|e| format!("cannot read random bytes: {e}"))?;
    Ok(key_line(&k))
}

fn key_line(k: &[u8; 32]) -> String {
    format!("{}\n", sims_daemon::json::hex(k))
}

/// Agent and peer ids name tunnel devices `sims-<id>` (15 bytes at most).
fn agent_id(s: &str) -> Result<AgentId, String> {
    let ok = !s.is_empty()
        && s.len() <= 10
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(format!(
            "id '{s}' must be 1-10 characters of a-z, 0-9, '-' or '_'"
        ));
    }
    let mut id = AgentId::new();
    id.push_str(s).map_err(|_| "id too long".to_string())?;
    Ok(id)
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    let v = v.trim();
    let parsed = if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
            .ok()
            .and_then(|n| n.to_string().parse().ok())
    } else {
        v.parse().ok()
    };
    parsed.ok_or_else(|| format!("option {key}: '{v}' is not a valid number"))
}

/// Parse a config file's text. `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let sections = parse_sections(text, file)?;
    let err = |line: usize, reason: String| ConfigError {
        file: file.to_string(),
        line,
        reason,
    };
    let agents: Vec<&Section> = sections.iter().filter(|s| s.kind == "agent").collect();
    let a = match agents.as_slice() {
        [a] => *a,
        [] => return Err(err(0, "no 'config agent' section".into())),
        [_, b, ..] => return Err(err(b.line, "more than one 'config agent' section".into())),
    };
    let mut id = None;
    let mut endpoint = None;
    // Every enabled prefix with its line and owner (None: this agent,
    // Some(i): peer i), and every id with its line, for the checks
    // across sections at the end.
    let mut all_prefixes: Vec<(Prefix, usize, Option<usize>)> = Vec::new();
    let mut ids: Vec<(AgentId, usize)> = Vec::new();
    let mut cfg = Config {
        agent: AgentConfig::new(AgentId::new(), Ipv4Addr::UNSPECIFIED),
        lan_ifname: "br-lan".into(),
        wan_ifname: "wan".into(),
        backend: Backend::Auto,
        ids: KernelIds::default(),
        tunnel_mtu: defaults::TUNNEL_MTU,
        follow_wan: false,
        accounting_file: None,
        accounting_interval_ms: defaults::ACCOUNTING_INTERVAL_S * 1000,
    };
    for (k, v, line) in entries(a) {
        let r: Result<(), String> = (|| {
            let ac = &mut cfg.agent;
            match k.as_str() {
                "id" => id = Some((agent_id(v)?, *line)),
                "provider" => {
                    ac.provider.clear();
                    ac.provider
                        .push_str(v)
                        .map_err(|_| "provider name over 32 bytes".to_string())?
                }
                "endpoint" => {
                    endpoint = Some(
                        v.parse::<Ipv4Addr>()
                            .map_err(|_| format!("endpoint '{v}' is not an IPv4 address"))?,
                    )
                }
                "lan_prefix" => {
                    let p = prefix(v)?;
                    ac.lan_prefixes.push(p);
                    all_prefixes.push((p, *line, None));
                }
                "lan_ifname" => cfg.lan_ifname = ifname(v)?,
                "wan_ifname" => cfg.wan_ifname = ifname(v)?,
                "port" => ac.port = num(k, v)?,
                "backend" => {
                    cfg.backend = match v.as_str() {
                        "auto" => Backend::Auto,
                        "kernel" => Backend::Kernel,
                        "userspace" => Backend::Userspace,
                        _ => {
                            return Err(format!(
                                "backend '{v}': expected auto, kernel or userspace"
                            ))
                        }
                    }
                }
                "advert_interval" => ac.advert_interval_ms = secs_ms(k, v)?,
                "binding_lifetime" => ac.binding_lifetime_s = num(k, v)?,
                "credential_lifetime" => ac.credential_lifetime_s = num(k, v)?,
                "max_bindings" => ac.max_bindings = num(k, v)?,
                "max_per_peer" => ac.max_per_peer = num(k, v)?,
                "max_per_node" => ac.max_per_node = num(k, v)?,
                "max_credentials" => ac.max_credentials = num(k, v)?,
                // Peers need no synchronised clocks any more (§6).
                "auth_window" => log::warn!("option auth_window is obsolete; ignored"),
                "retransmit_initial_ms" => ac.retransmit_initial_ms = num(k, v)?,
                "retransmit_tries" => ac.retransmit_tries = num(k, v)?,
                "table" => cfg.ids.table = num(k, v)?,
                "rule_priority" => cfg.ids.rule_priority = num(k, v)?,
                "route_protocol" => cfg.ids.route_protocol = num(k, v)?,
                "mark_base" => cfg.ids.mark_base = num(k, v)?,
                "tunnel_mtu" => cfg.tunnel_mtu = num(k, v)?,
                "accounting_file" => cfg.accounting_file = Some(accounting_file(v)?),
                "accounting_interval" => {
                    let ms = secs_ms(k, v)?;
                    if !(10_000..=86_400_000).contains(&ms) {
                        return Err(format!(
                            "accounting_interval '{v}': expected 10 to 86400 seconds"
                        ));
                    }
                    cfg.accounting_interval_ms = ms
                }
                // For the init script: whether to start, and the UCI
                // interfaces whose changes reload simsd.
                "enabled" | "lan_network" | "wan_network" => {}
                _ => return Err(format!("unknown option '{k}' in agent section")),
            }
            Ok(())
        })();
        r.map_err(|e| err(*line, e))?;
    }
    let (own_id, id_line) = id.ok_or_else(|| err(a.line, "agent section has no 'id'".into()))?;
    cfg.agent.id = own_id.clone();
    ids.push((own_id, id_line));
    match endpoint {
        Some(e) => cfg.agent.endpoint = e,
        // Filled in from the WAN device when the daemon starts.
        None => cfg.follow_wan = true,
    }
    if cfg.agent.lan_prefixes.is_empty() {
        return Err(err(a.line, "agent section has no 'lan_prefix'".into()));
    }
    if cfg.agent.max_bindings == 0 || cfg.agent.max_bindings > 65_536 {
        return Err(err(a.line, "max_bindings must be 1..65536".into()));
    }
    if !(1..=255).contains(&cfg.ids.route_protocol) {
        return Err(err(a.line, "route_protocol must be 1..255".into()));
    }
    // Our tables are `table ..= table + MAX_PEERS` and our marks
    // `mark_base + 1 ..= mark_base + MAX_PEERS` (one per peer slot, and
    // slots outlive the config that made them): no table may be one of
    // the kernel's own (0, 253-255: a peer's default route would replace
    // the router's), and neither range may wrap.
    let span = MAX_PEERS as u32 + 1;
    if cfg.ids.table < 256 || cfg.ids.table.checked_add(span).is_none() {
        return Err(err(
            a.line,
            format!(
                "table must be 256..{}: it and the {MAX_PEERS} above it are simsd's",
                u32::MAX - span
            ),
        ));
    }
    if cfg.ids.mark_base.checked_add(span).is_none() {
        return Err(err(
            a.line,
            format!("mark_base must be at most {}", u32::MAX - span),
        ));
    }
    for s in sections.iter().filter(|s| s.kind == "peer") {
        let mut pid = None;
        let mut pend = None;
        let mut key = None;
        let mut port = cfg.agent.port;
        let mut prefixes = Vec::new();
        let mut enabled = true;
        for (k, v, line) in entries(s) {
            let r: Result<(), String> = (|| {
                match k.as_str() {
                    "id" => pid = Some((agent_id(v)?, *line)),
                    "endpoint" => {
                        pend = Some(
                            v.parse::<Ipv4Addr>()
                                .map_err(|_| format!("endpoint '{v}' is not an IPv4 address"))?,
                        )
                    }
                    "lan_prefix" => prefixes.push((prefix(v)?, *line)),
                    "key" => key = Some(peer_key(v)?),
                    "port" => port = num(k, v)?,
                    "enabled" => enabled = v != "0",
                    "provider" | "description" => {}
                    _ => return Err(format!("unknown option '{k}' in peer section")),
                }
                Ok(())
            })();
            r.map_err(|e| err(*line, e))?;
        }
        if !enabled {
            continue;
        }
        let name = s.name.as_deref().unwrap_or("peer");
        let (id, id_line) = pid.ok_or_else(|| err(s.line, format!("peer '{name}' has no 'id'")))?;
        ids.push((id.clone(), id_line));
        let endpoint =
            pend.ok_or_else(|| err(s.line, format!("peer '{name}' has no 'endpoint'")))?;
        let key = key.ok_or_else(|| err(s.line, format!("peer '{name}' has no 'key'")))?;
        if prefixes.is_empty() {
            return Err(err(s.line, format!("peer '{name}' has no 'lan_prefix'")));
        }
        let owner = Some(cfg.agent.peers.len());
        all_prefixes.extend(prefixes.iter().map(|&(p, l)| (p, l, owner)));
        cfg.agent.peers.push(PeerConfig {
            id,
            endpoint,
            port,
            prefixes: prefixes.into_iter().map(|(p, _)| p).collect(),
            key,
        });
    }
    if cfg.agent.peers.len() > MAX_PEERS {
        return Err(err(0, format!("more than {MAX_PEERS} peers")));
    }
    // Across sections: the later of two clashing options is the one named.
    if let Some((l, e)) = first_clash(&ids, |i| i.1, |a, b| a.0 == b.0) {
        let ((id, line), (_, earlier)) = (&ids[l], &ids[e]);
        return Err(err(
            *line,
            format!("peer id '{id}' is not unique (also on line {earlier})"),
        ));
    }
    if let Some((l, e)) = first_clash(&all_prefixes, |p| p.1, |a, b| overlaps(a.0, b.0)) {
        let owner = |o: Option<usize>| match o {
            None => "this agent".to_string(),
            Some(i) => format!("peer '{}'", cfg.agent.peers[i].id),
        };
        let ((p, line, o), (q, lq, oq)) = (all_prefixes[l], all_prefixes[e]);
        return Err(err(
            line,
            format!(
                "lan_prefix '{p}' of {} overlaps '{q}' of {} (line {lq}): \
                 no address may be in two prefixes",
                owner(o),
                owner(oq)
            ),
        ));
    }
    Ok(cfg)
}

fn prefix(v: &str) -> Result<Prefix, String> {
    v.parse().map_err(|e| format!("lan_prefix '{v}': {e}"))
}

/// Whether two prefixes share an address (one contains the other).
fn overlaps(a: Prefix, b: Prefix) -> bool {
    a.contains(b.addr) || b.contains(a.addr)
}

/// The first two of `items` that `clash`, in file order (`line` gives an
/// item's line, one item a line): the later one's index, then the earlier
/// one's, for the smallest later line and then the smallest earlier one.
/// Quadratic, without sorting: a few hundred items at most, and a sort
/// costs simsd kilobytes.
fn first_clash<T>(
    items: &[T],
    line: impl Fn(&T) -> usize,
    clash: impl Fn(&T, &T) -> bool,
) -> Option<(usize, usize)> {
    let key = |(l, e): (usize, usize)| (line(&items[l]), line(&items[e]));
    let mut first: Option<(usize, usize)> = None;
    for (l, later) in items.iter().enumerate() {
        for (e, earlier) in items.iter().enumerate() {
            if line(earlier) < line(later)
                && clash(earlier, later)
                && first.is_none_or(|f| key((l, e)) < key(f))
            {
                first = Some((l, e));
            }
        }
    }
    first
}

fn ifname(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 15 || v.contains('/') || v.contains(char::is_whitespace) {
        return Err(format!("'{v}' is not a valid interface name"));
    }
    Ok(v.to_string())
}

/// Seconds, possibly fractional ("0.5"), to milliseconds.
fn secs_ms(key: &str, v: &str) -> Result<u64, String> {
    // "seconds[.fraction]" by hand: float parsing would cost simsd 18 KB
    // on MIPS for one option. Digits past milliseconds are ignored.
    let bad = || format!("option {key}: '{v}' is not a number of seconds");
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let ms = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0, |acc, b| acc * 10 + u64::from(b - b'0'));
    let total = whole.saturating_mul(1000).saturating_add(ms);
    if !(50..=86_400_000).contains(&total) {
        return Err(format!("option {key}: {v} s is out of range (0.05..86400)"));
    }
    Ok(total)
}

/// Read and parse a config file.
pub fn load(path: &str) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_string(),
        line: 0,
        reason: e.to_string(),
    })?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
config agent 'agent'
\toption id 'ma-a'
\toption provider \"alpha net\"
\toption endpoint '100.64.1.2'
\tlist lan_prefix '10.1.0.0/24'
\toption backend userspace
\toption advert_interval '0.5'

# the B operator
config peer 'ma_b'
\toption id 'ma-b'
\toption endpoint '100.64.2.2'
\tlist lan_prefix '10.2.0.0/24'
\toption key '3c8e1f0a9d27b4c6e5f8a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6'
";

    #[test]
    fn parses_agent_and_peers() {
        let c = parse(GOOD, "sims").unwrap();
        assert_eq!(c.agent.id.as_str(), "ma-a");
        assert_eq!(c.agent.provider.as_str(), "alpha net");
        assert_eq!(c.agent.advert_interval_ms, 500);
        assert_eq!(c.backend, Backend::Userspace);
        assert_eq!(c.agent.peers.len(), 1);
        assert_eq!(c.agent.peers[0].key[0], 0x3c);
        assert_eq!(c.agent.peers[0].key[31], 0xf6);
        assert_eq!(c.agent.peers[0].endpoint, Ipv4Addr::new(100, 64, 2, 2));
    }

    fn error_of(text: &str) -> String {
        parse(text, "/etc/config/sims").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let bad_key = GOOD.replace("d4e5f6'", "d4e5'");
        assert_eq!(
            error_of(&bad_key),
            "/etc/config/sims:15: key must be 64 hexadecimal characters (32 bytes)"
        );
        let bad_ip = GOOD.replace("'100.64.1.2'", "'100.64.1'");
        assert!(error_of(&bad_ip).starts_with("/etc/config/sims:5: endpoint"));
        let unknown = GOOD.replace("option backend", "option bakend");
        assert!(error_of(&unknown).contains(":7: unknown option 'bakend'"));
        // As libuci, a quoted value may span lines: this one runs on to
        // the quote of the key (line 15), whose own is never closed.
        let quote = GOOD.replace("'ma-b'", "'ma-b");
        assert!(error_of(&quote).contains(":15: unterminated '"));
        let long_id = GOOD.replace("'ma-b'", "'a-very-long-id'");
        assert!(error_of(&long_id).contains(":12: id"));
        let dup = GOOD.replace("'ma-b'", "'ma-a'");
        assert_eq!(
            error_of(&dup),
            "/etc/config/sims:12: peer id 'ma-a' is not unique (also on line 3)"
        );
        assert!(error_of("option id x").contains(":1: option before the first config section"));
        assert!(error_of("").contains("no 'config agent'"));
        // A peer slot's table must never be the kernel's main or local.
        for t in ["144", "0", "4294967100"] {
            let table = GOOD.replace("option backend userspace", &format!("option table '{t}'"));
            assert!(error_of(&table).contains(":2: table must be 256.."), "{t}");
        }
        let marks = GOOD.replace("option backend userspace", "option mark_base '0xffffff80'");
        assert!(error_of(&marks).contains(":2: mark_base must be at most"));
        let prefix = GOOD.replace("10.1.0.0/24", "10.1.0.1/24");
        assert!(error_of(&prefix).contains(":6: lan_prefix '10.1.0.1/24': host bits"));
    }

    #[test]
    fn accounting_file_stays_in_simsds_directories() {
        let with = |v: &str| {
            GOOD.replacen(
                "\toption backend userspace\n",
                &format!("\toption backend userspace\n\toption accounting_file '{v}'\n"),
                1,
            )
        };
        let ok = parse(&with("/etc/sims/traffic"), "f").unwrap();
        assert_eq!(ok.accounting_file.as_deref(), Some("/etc/sims/traffic"));
        assert!(parse(&with("/var/run/sims/t.1"), "f").is_ok());
        for bad in [
            "/etc/shadow",
            "/etc/sims/../shadow",
            "/etc/sims/",
            "/etc/sims/.hidden",
            "/etc/sims/a/b",
            "etc/sims/traffic",
            "/tmp/traffic",
        ] {
            assert!(
                error_of(&with(bad)).contains(":8: accounting_file"),
                "{bad}: {}",
                error_of(&with(bad))
            );
        }
    }

    /// A second peer, `ma-c`, from line 17 (its lan_prefix on line 20).
    fn with_peer_c(text: &str, prefix: &str) -> String {
        format!(
            "{text}\nconfig peer 'ma_c'\n\toption id 'ma-c'\n\toption endpoint '100.64.3.2'\n\
             \tlist lan_prefix '{prefix}'\n\toption key '{}'\n",
            "5a".repeat(32)
        )
    }

    #[test]
    fn duplicate_ids_name_the_later_line() {
        let c = with_peer_c(GOOD, "10.3.0.0/24").replace("'ma-c'", "'ma-b'");
        assert_eq!(
            error_of(&c),
            "/etc/config/sims:18: peer id 'ma-b' is not unique (also on line 12)"
        );
        // A disabled peer's id may repeat an enabled one's.
        let off = c.replace(
            "\toption id 'ma-b'\n\toption endpoint '100.64.3.2'",
            "\toption enabled '0'\n\toption id 'ma-b'\n\toption endpoint '100.64.3.2'",
        );
        assert_eq!(parse(&off, "t").unwrap().agent.peers.len(), 1);
    }

    #[test]
    fn overlapping_prefixes_are_refused_at_the_later_line() {
        let ours = GOOD.replace(
            "list lan_prefix '10.2.0.0/24'",
            "list lan_prefix '10.1.0.128/25'",
        );
        assert_eq!(
            error_of(&ours),
            "/etc/config/sims:14: lan_prefix '10.1.0.128/25' of peer 'ma-b' overlaps \
             '10.1.0.0/24' of this agent (line 6): no address may be in two prefixes"
        );
        let wider = GOOD.replace(
            "list lan_prefix '10.2.0.0/24'",
            "list lan_prefix '10.0.0.0/8'",
        );
        assert!(error_of(&wider).starts_with("/etc/config/sims:14: lan_prefix '10.0.0.0/8' of peer 'ma-b' overlaps '10.1.0.0/24' of this agent (line 6)"));
        let peers = with_peer_c(GOOD, "10.2.0.7");
        assert!(error_of(&peers).starts_with(
            "/etc/config/sims:20: lan_prefix '10.2.0.7/32' of peer 'ma-c' overlaps '10.2.0.0/24' of peer 'ma-b' (line 14)"
        ));
        let twice = GOOD.replace(
            "\tlist lan_prefix '10.1.0.0/24'\n",
            "\tlist lan_prefix '10.1.0.0/24'\n\tlist lan_prefix '10.1.0.0/24'\n",
        );
        assert!(error_of(&twice).starts_with(
            "/etc/config/sims:7: lan_prefix '10.1.0.0/24' of this agent overlaps '10.1.0.0/24' of this agent (line 6)"
        ));
        // The agent section after the peers: its own option is the later one.
        let (agent, peer) = GOOD.split_at(GOOD.find("# the B operator").unwrap());
        let late = format!("{peer}\n{}", agent.replace("10.1.0.0/24", "10.2.0.0/16"));
        assert!(error_of(&late).starts_with(
            "/etc/config/sims:13: lan_prefix '10.2.0.0/16' of this agent overlaps '10.2.0.0/24' of peer 'ma-b' (line 5)"
        ), "{}", error_of(&late));
        // Disabled peers are not checked; adjacent prefixes do not overlap.
        let off = with_peer_c(GOOD, "10.2.0.0/24") + "\toption enabled '0'\n";
        assert_eq!(parse(&off, "t").unwrap().agent.peers.len(), 1);
        let next = with_peer_c(GOOD, "10.2.1.0/24");
        assert_eq!(parse(&next, "t").unwrap().agent.peers.len(), 2);
    }

    fn with_key(key: &str) -> String {
        let good = "3c8e1f0a9d27b4c6e5f8a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6";
        GOOD.replace(good, key)
    }

    #[test]
    fn zero_and_example_keys_are_refused() {
        assert_eq!(
            error_of(&with_key(&"0".repeat(64))),
            "/etc/config/sims:15: key is all zeros: generate one with 'simsd keygen' \
             and give it to the peer's operator"
        );
        for k in EXAMPLE_KEYS {
            for k in [k.to_string(), k.to_uppercase()] {
                assert_eq!(
                    error_of(&with_key(&k)),
                    "/etc/config/sims:15: key is the example key from the documentation, \
                     known to anyone: generate one with 'simsd keygen' and give it to the \
                     peer's operator"
                );
            }
        }
        // Refused in a disabled peer too: its options are still parsed.
        let off = with_key(&"0".repeat(64)) + "\toption enabled '0'\n";
        assert!(error_of(&off).starts_with("/etc/config/sims:15: key is all zeros"));
    }

    /// Every 64-hex-digit word in the documentation is an example key, and
    /// each is refused: a key added to the docs must be added to EXAMPLE_KEYS.
    #[test]
    fn every_key_in_the_docs_is_refused() {
        let docs = [
            include_str!("../../../README.md"),
            include_str!("../../../docs/CONFIG.md"),
            include_str!("../../../docs/ARCHITECTURE.md"),
            include_str!("../../../docs/PROTOCOL.md"),
            include_str!("../../../docs/TESTBED.md"),
            include_str!("../../../docs/TARGETS.md"),
            include_str!("../../../docs/BENCHMARKS.md"),
        ];
        let mut found = 0;
        for text in docs {
            for w in text.split(|c: char| !c.is_ascii_hexdigit()) {
                if w.len() == 64 {
                    found += 1;
                    assert!(peer_key(w).is_err(), "documented key {w} is accepted");
                }
            }
        }
        assert!(found >= 2, "docs/CONFIG.md §4 shows the example key twice");
    }

    #[test]
    fn keygen_prints_64_lower_case_hex_digits() {
        let mut k = [0u8; 32];
        k[0] = 0xab;
        k[31] = 0x01;
        let line = key_line(&k);
        assert_eq!(line.len(), 65);
        assert!(line.starts_with("ab00") && line.ends_with("0001\n"));
        let (a, b) = (keygen().unwrap(), keygen().unwrap());
        assert_ne!(a, b);
        for line in [a, b] {
            let hex = line.strip_suffix('\n').unwrap();
            assert!(hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
            assert!(peer_key(hex).is_ok(), "{hex} is refused");
        }
    }

    #[test]
    fn seconds_with_millisecond_fractions() {
        for (v, ms) in [
            ("1", 1000),
            ("0.5", 500),
            (".25", 250),
            ("2.", 2000),
            ("0.05", 50),
            ("1.0009", 1000),
            ("86400", 86_400_000),
        ] {
            assert_eq!(secs_ms("advert_interval", v), Ok(ms), "{v}");
        }
        for v in [
            "",
            ".",
            "-1",
            "1e3",
            "0.5s",
            "1.2.3",
            " 1",
            "0.04",
            "86401",
            "99999999999999999999",
        ] {
            assert!(secs_ms("advert_interval", v).is_err(), "{v:?} accepted");
        }
    }
}
