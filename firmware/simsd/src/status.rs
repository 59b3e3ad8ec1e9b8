//! `simsd status`: the report the daemon gives on its status socket
//! (sims_daemon::status), JSON written by hand (no serde_json on the
//! router): identity, bindings, peers with their tunnels' traffic, and
//! counters of what was refused or dropped.

use std::fmt::Write;

use sims_daemon::json::{hex, q};
use sims_proto::agent::{Agent, Role};

use crate::dataplane::Dataplane;

/// `follow_wan`: our endpoint is the WAN device's address (none configured).
pub fn json(agent: &Agent, dp: &mut Dataplane, follow_wan: bool, now_ms: u64) -> String {
    let cfg = agent.config();
    let mut s = String::new();
    let _ = write!(
        s,
        "{{\"id\":{},\"provider\":{},\"version\":{},\"instance\":\"{:016x}\",\"backend\":{},\"endpoint\":\"{}\",\"endpoint_from\":{},\"bindings\":[",
        q(&cfg.id),
        q(&cfg.provider),
        q(env!("CARGO_PKG_VERSION")),
        agent.instance(),
        q(dp.kind.as_str()),
        cfg.endpoint,
        q(if follow_wan { "wan" } else { "config" })
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
    for (p, peer) in cfg.peers.iter().enumerate() {
        let t = dp.peer_traffic(p);
        let _ = write!(
            s,
            "{}{{\"id\":{},\"endpoint\":\"{}\",\"moved\":{},\"tunnel\":{},\"bindings\":{},\"tx_packets\":{},\"tx_bytes\":{},\"rx_packets\":{},\"rx_bytes\":{},\"rx_dropped\":{}}}",
            if p > 0 { "," } else { "" },
            q(&peer.id),
            agent.peer_endpoint(p),
            agent.peer_endpoint(p) != peer.endpoint,
            q(&dp.tunnel_name(p)),
            agent.binding_count(p),
            t.tx_packets,
            t.tx_bytes,
            t.rx_packets,
            t.rx_bytes,
            t.rx_dropped
        );
    }
    let c = agent.counters;
    let drops = dp.rx_drops();
    let _ = write!(
        s,
        "],\"credentials\":{},\"counters\":{{\"rx_ok\":{},\"rx_malformed\":{},\"rx_unauthenticated\":{},\"rx_replay\":{},\"rx_refused\":{},\"rx_unexpected\":{},\"rx_old_version\":{},\"rx_bad_cookie\":{},\"rx_challenged\":{},\"verifications\":{},\"rate_limited\":{},\"redirects_ended\":{},\"kernel_failed\":{},\"tx\":{},\"table_full\":{},\"peer_moved\":{},\"rx_refused_move\":{},\"ipip_unknown_endpoint\":{},\"ipip_malformed\":{},\"ipip_rx_errors\":{}}}}}",
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
        c.rate_limited,
        c.redirects_ended,
        c.kernel_failed,
        c.tx,
        c.table_full,
        c.peer_moved,
        c.rx_refused_move,
        drops.unknown_endpoint,
        drops.malformed,
        drops.errors
    );
    s
}
