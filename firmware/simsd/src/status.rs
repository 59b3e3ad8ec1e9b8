//! `simsd status`: the report the daemon gives on its status socket
//! (sims_daemon::status), JSON written by hand (no serde_json on the
//! router): identity, bindings, peers with their tunnels' traffic, and
//! counters of what was refused or dropped.

use std::fmt::Write;

use sims_daemon::json::{hex, q};
use sims_proto::agent::{Agent, Reachability, Role};

use crate::dataplane::Dataplane;

/// `follow_wan`: our endpoint is the WAN device's address (none
/// configured); `started_ms`: when the daemon started.
pub fn json(
    agent: &Agent,
    dp: &mut Dataplane,
    follow_wan: bool,
    started_ms: u64,
    now_ms: u64,
) -> String {
    let cfg = agent.config();
    let mut s = String::new();
    let _ = write!(
        s,
        "{{\"id\":{},\"provider\":{},\"version\":{},\"instance\":\"{:016x}\",\"backend\":{},\"endpoint\":\"{}\",\"endpoint_from\":{},\"uptime_s\":{},\"bindings\":[",
        q(&cfg.id),
        q(&cfg.provider),
        q(env!("CARGO_PKG_VERSION")),
        agent.instance(),
        q(dp.kind.as_str()),
        cfg.endpoint,
        q(if follow_wan { "wan" } else { "config" }),
        now_ms.saturating_sub(started_ms) / 1000
    );
    for (i, (addr, b)) in agent.bindings().enumerate() {
        let _ = write!(
            s,
            "{}{{\"addr\":\"{addr}\",\"role\":{},\"peer\":{},\"node\":\"{}\",\"age_s\":{},\"expires_s\":{},\"pending\":{}}}",
            if i > 0 { "," } else { "" },
            q(match b.role {
                Role::Home => "home",
                Role::Visitor => "visitor",
            }),
            q(&cfg.peers[b.peer].id),
            hex(&b.node[..8]),
            now_ms.saturating_sub(b.created_ms) / 1000,
            b.expires_ms.saturating_sub(now_ms) / 1000,
            b.pending
        );
    }
    s.push_str("],\"peers\":[");
    let mut since = u64::MAX;
    for (p, peer) in cfg.peers.iter().enumerate() {
        let a = dp.account(&peer.id);
        since = since.min(a.since);
        let t = a.traffic;
        let (reach, heard) = agent.peer_reachability(p);
        let heard = heard.map_or("null".to_string(), |h| {
            (now_ms.saturating_sub(h) / 1000).to_string()
        });
        let _ = write!(
            s,
            "{}{{\"id\":{},\"endpoint\":\"{}\",\"moved\":{},\"tunnel\":{},\"tunnel_up\":{},\"bindings\":{},\"reachable\":{},\"last_heard_s\":{heard},\"traffic_since\":{},\"tx_packets\":{},\"tx_bytes\":{},\"rx_packets\":{},\"rx_bytes\":{},\"rx_dropped\":{}}}",
            if p > 0 { "," } else { "" },
            q(&peer.id),
            agent.peer_endpoint(p),
            agent.peer_endpoint(p) != peer.endpoint,
            q(&dp.tunnel_name(p)),
            dp.tunnel_is_up(p),
            agent.binding_count(p),
            q(match reach {
                Reachability::Yes => "yes",
                Reachability::No => "no",
                Reachability::Unknown => "unknown",
            }),
            a.since,
            t.tx_packets,
            t.tx_bytes,
            t.rx_packets,
            t.rx_bytes,
            t.rx_dropped
        );
    }
    if since == u64::MAX {
        since = 0;
    }
    let _ = write!(s, "],\"traffic_since\":{since}");
    let k = dp.cost();
    let _ = write!(
        s,
        ",\"kernel\":{{\"actions\":{},\"exchanges\":{},\"us\":{}}}",
        k.actions, k.exchanges, k.micros
    );
    let c = agent.counters;
    let drops = dp.rx_drops();
    let _ = write!(
        s,
        ",\"credentials\":{},\"counters\":{{\"rx_ok\":{},\"rx_malformed\":{},\"rx_unauthenticated\":{},\"rx_replay\":{},\"rx_refused\":{},\"rx_unexpected\":{},\"rx_old_version\":{},\"rx_bad_cookie\":{},\"rx_challenged\":{},\"verifications\":{},\"key_agreements\":{},\"rate_limited\":{},\"redirects_ended\":{},\"kernel_failed\":{},\"tx\":{},\"table_full\":{},\"peer_moved\":{},\"rx_refused_move\":{},\"early_registrations\":{},\"ipip_unknown_endpoint\":{},\"ipip_malformed\":{},\"ipip_rx_errors\":{}}}}}",
        agent.credential_count(),
        c.rx_ok,
        c.rx_malformed,
        c.rx_unauthenticated,
        c.rx_replay,
        c.rx_refused,
        c.rx_unexpected,
        c.rx_old_version,
        c.rx_bad_cookie,
        c.rx_challenged,
        c.verifications,
        c.key_agreements,
        c.rate_limited,
        c.redirects_ended,
        c.kernel_failed,
        c.tx,
        c.table_full,
        c.peer_moved,
        c.rx_refused_move,
        c.early_registrations,
        drops.unknown_endpoint,
        drops.malformed,
        drops.errors
    );
    s
}
