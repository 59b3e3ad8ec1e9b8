//! What the scenarios share: their testbed setup and the checks they make
//! (sessions flowing and verified, bindings in place, no SIMS state left).
//! The forging kit of s6b is in the library: `sims_testbed::forge`.
// Shared by several test crates, each of which uses a part of it.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use ed25519_compact::KeyPair;
use sims_proto::msg::{Cookie, RegistrationReply};
use sims_testbed::forge;
use sims_testbed::*;

pub const TRAFFIC: &str = env!("CARGO_BIN_EXE_sims-traffic");
/// Bound on registrations and relays to be established after a move.
pub const T: Duration = Duration::from_secs(15);
pub const RATE: u64 = 200_000;

pub fn setup(opts: Options) -> Option<Testbed> {
    if let Some(r) = skip_reason(true, Some(Path::new(TRAFFIC))) {
        eprintln!("SKIPPED: {r}");
        return None;
    }
    Some(Testbed::new(opts.traffic_bin(TRAFFIC)).expect("testbed setup"))
}

pub fn a() -> Ipv4Addr {
    Ma::A.node_addr()
}
pub fn b() -> Ipv4Addr {
    Ma::B.node_addr()
}

/// Bytes the receiving side has verified so far (client for down, server
/// for up).
pub fn received(tb: &Testbed, s: &Session) -> u64 {
    match s.dir {
        Dir::Down => s.last_progress().map(|p| p.bytes).unwrap_or(0),
        Dir::Up => tb
            .server_progress(&s.id)
            .last()
            .map(|p| p.bytes)
            .unwrap_or(0),
    }
}

/// Waits until the session's receiver got `more` bytes beyond now.
pub fn wait_flowing(tb: &Testbed, s: &Session, more: u64, timeout: Duration) {
    let base = received(tb, s);
    wait_for(
        &format!(
            "session {} to carry {more} more bytes (from {base})",
            s.label
        ),
        timeout,
        Duration::from_millis(100),
        || {
            let n = received(tb, s);
            if n >= base + more {
                Ok(Some(n))
            } else {
                Err(format!("received {n} so far"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\noutput:\n{}", s.output()));
}

pub fn assert_verified(r: &StreamResult, what: &str) {
    assert!(
        r.verified && !r.reset && r.error.is_none(),
        "{what}: session not verified: {r:?}"
    );
    eprintln!(
        "{what}: {} bytes verified, longest stall {:.0} ms",
        r.bytes, r.max_gap_ms
    );
}

/// No agent holds a binding or a SIMS route for `addr`.
pub fn no_state_for(tb: &Testbed, addr: Ipv4Addr) -> Result<(), String> {
    let a = addr.to_string();
    for x in tb.opts.agents.clone() {
        let st = tb.agent_status(x)?;
        if let Some(b) = st.binding(&a) {
            return Err(format!("{} still has a binding for {a}: {b:?}", x.id()));
        }
        let k = tb.agent_kernel_state(x)?;
        let r = k.routes_for(&a);
        if !r.is_empty() {
            return Err(format!("{} still routes {a}: {r:?}", x.id()));
        }
    }
    Ok(())
}

pub fn wait_no_state_for(tb: &Testbed, addr: Ipv4Addr, timeout: Duration) {
    wait_for(
        &format!("no binding or route for {addr} on any agent"),
        timeout,
        Duration::from_millis(100),
        || no_state_for(tb, addr).map(Some),
    )
    .unwrap();
}

/// No agent holds any binding, and no binding's kernel state (nft set
/// element, /32 route) is left anywhere; each agent has exactly its
/// peers' tunnels (made at start, kept while simsd runs).
pub fn no_sims_state(tb: &Testbed) -> Result<(), String> {
    for x in tb.opts.agents.clone() {
        let st = tb.agent_status(x)?;
        if !st.bindings.is_empty() {
            return Err(format!("{} still has bindings: {:?}", x.id(), st.bindings));
        }
        let k = tb.agent_kernel_state(x)?;
        let left = k.binding_state();
        if !left.is_empty() {
            return Err(format!("{}: binding state left {left:?}: {k:?}", x.id()));
        }
        let mut tunnels: Vec<String> = st.peers.iter().map(|p| p.tunnel.clone()).collect();
        let mut have = k.tunnels.clone();
        tunnels.sort();
        have.sort();
        if tunnels != have {
            return Err(format!(
                "{}: tunnels {have:?}, its peers' are {tunnels:?}",
                x.id()
            ));
        }
    }
    Ok(())
}

/// [`no_sims_state`] within 5 s (a peer's side goes when its
/// TunnelRelease arrives).
pub fn wait_no_sims_state(tb: &Testbed, what: &str) {
    wait_for(
        &format!("no SIMS state {what}"),
        Duration::from_secs(5),
        Duration::from_millis(200),
        || no_sims_state(tb).map(Some),
    )
    .unwrap();
}

pub fn wait_binding(tb: &Testbed, x: Ma, addr: Ipv4Addr, role: &str, peer: Ma) -> AgentBinding {
    let a = addr.to_string();
    let st = tb
        .wait_agent(
            x,
            &format!("{role} binding {a} → {}", peer.id()),
            T,
            |s| {
                s.binding(&a)
                    .map(|b| b.role == role && b.peer == peer.id() && !b.pending)
                    .unwrap_or(false)
            },
        )
        .unwrap();
    st.binding(&a).unwrap().clone()
}

pub fn stream(tb: &Testbed, dir: Dir, label: &str, bind: Ipv4Addr) -> Session {
    tb.stream(
        StreamSpec::new(dir, label)
            .rate(RATE)
            .duration_ms(90_000)
            .bind(bind),
    )
    .unwrap_or_else(|e| panic!("open {label}: {e}"))
}

/// Moves the node to `to` and waits until it is there, with its DHCP
/// address, and every address of `relayed` is relayed by its agents.
pub fn move_relayed(tb: &mut Testbed, to: Ma, relayed: &[Ipv4Addr]) {
    let m = tb.move_to(to).unwrap();
    assert_eq!(m.addr, to.node_addr());
    tb.wait_node_at(to, T).unwrap();
    for addr in relayed {
        tb.wait_node_binding(*addr, "relayed", T).unwrap();
    }
}

/// [`forge::register`] within [`T`]; panics if it fails or is unanswered.
pub fn register(
    tb: &Testbed,
    x: Ma,
    addr: Ipv4Addr,
    req_id: u64,
    datagram: &[u8],
) -> RegistrationReply {
    forge::register(tb, x, addr, req_id, datagram, T).unwrap_or_else(|e| panic!("{e}"))
}

/// [`forge::cookie`]; panics if the agent gives none.
pub fn cookie(tb: &Testbed, x: Ma, addr: Ipv4Addr, node: &KeyPair) -> Cookie {
    forge::cookie(tb, x, addr, node).unwrap_or_else(|e| panic!("{e}"))
}

pub fn counter(tb: &Testbed, x: Ma, name: &str) -> u64 {
    tb.agent_status(x).unwrap().counter(name)
}

/// Neither agent holds a binding for `addr` right now (a refusal is
/// answered after the current agent has removed its side).
pub fn assert_no_binding(tb: &Testbed, addr: Ipv4Addr, what: &str) {
    for x in tb.opts.agents.clone() {
        let st = tb.agent_status(x).unwrap();
        assert!(
            st.binding(&addr.to_string()).is_none(),
            "{what}: {} holds a binding for {addr}: {}",
            x.id(),
            st.raw
        );
    }
}
