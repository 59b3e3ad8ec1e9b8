//! One city: its agents and nodes, the real `sims_proto` state machines,
//! driven by a discrete-event loop over simulated time. Datagrams are
//! encoded by the cores, carried with per-link delay and loss, and decoded
//! by the cores; kernel actions are counted, not applied. Cities are
//! independent (roaming agreements are among neighbours), so each runs on
//! its own and their statistics add up.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Instant;

use sims_proto::agent::{self, Agent, AgentConfig, LanView, Now, PeerConfig, Role};
use sims_proto::node::{self, BindingState, Node, NodeConfig};
use sims_proto::{Prefix, DEFAULT_PORT};

use crate::rng::Rng;
use crate::stats::{AgentStats, Stats};
use crate::workload::Workload;

/// Host addresses per hotspot LAN (a /22 each).
const LAN_BITS: u32 = 10;
pub const MAX_NODES_PER_CITY: usize = (1 << LAN_BITS) - 3;
/// After link-up, an old session that is not relayed by then is lost: TCP
/// has been retransmitting for this long (and its RTO is past 5 s).
const SURVIVE_MS: u64 = 15_000;
const SAMPLE_MS: u64 = 60_000;
/// From resume to link-up: WiFi scan, authentication, association.
const RESUME_MS: u64 = 3_000;
/// Simulated time after the day, for bindings to expire and be checked.
pub const TAIL_MS: u64 = 20 * 60_000;

#[derive(Clone, Debug)]
pub struct Net {
    pub lan_delay_ms: f64,
    pub lan_loss: f64,
    pub wan_delay_min_ms: u64,
    pub wan_delay_max_ms: u64,
    pub wan_loss: f64,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            lan_delay_ms: 2.0,
            lan_loss: 0.01,
            wan_delay_min_ms: 5,
            wan_delay_max_ms: 30,
            wan_loss: 0.005,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CityConfig {
    pub city: usize,
    /// Global index of the city's first agent (addresses are global).
    pub first_agent: usize,
    pub agents: usize,
    pub nodes: usize,
    pub day_ms: u64,
    pub seed: u64,
    pub workload: Workload,
    pub net: Net,
    /// Agreements between hotspots of different providers exist with this
    /// probability (within a provider, always).
    pub p_agreement: f64,
    pub providers: usize,
    pub max_bindings: usize,
    pub max_per_peer: usize,
    pub stale_bound_ms: Option<u64>,
}

pub fn wan(g: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + g as u32)
}
fn lan_base(g: usize) -> u32 {
    u32::from(Ipv4Addr::new(10, 0, 0, 0)) + ((g as u32) << LAN_BITS)
}
pub fn gateway(g: usize) -> Ipv4Addr {
    Ipv4Addr::from(lan_base(g) + 1)
}
/// The address hotspot `g`'s DHCP gives node `k` (each node keeps its
/// lease there, so an address identifies node and issuer).
pub fn node_addr(g: usize, k: usize) -> Ipv4Addr {
    Ipv4Addr::from(lan_base(g) + 2 + k as u32)
}
/// (global agent, node) of a LAN address.
pub fn decode_addr(a: Ipv4Addr) -> Option<(usize, usize)> {
    let off = u32::from(a).checked_sub(lan_base(0))?;
    let (g, host) = ((off >> LAN_BITS) as usize, off & ((1 << LAN_BITS) - 1));
    (host >= 2).then_some((g, host as usize - 2))
}
fn decode_wan(a: Ipv4Addr) -> Option<usize> {
    (u32::from(a).checked_sub(u32::from(wan(0)))).map(|g| g as usize)
}

enum Ev {
    ToAgent {
        a: usize,
        src: SocketAddrV4,
        via_lan: bool,
        data: Box<[u8]>,
        cause: Cause,
    },
    /// Unicast to node `k` on LAN `a`.
    ToNode {
        k: usize,
        a: usize,
        src: SocketAddrV4,
        dst: Ipv4Addr,
        data: Box<[u8]>,
        cause: Cause,
    },
    /// A broadcast on LAN `a`, to every node there when it arrives.
    ToLan {
        a: usize,
        data: Rc<[u8]>,
        cause: Cause,
    },
    AgentTimer(usize),
    NodeTimer(usize),
    Online(usize),
    Arrive(usize, usize),
    Dhcp(usize, u32),
    Leave(usize, u32),
    Offline(usize),
    Check(usize, u32),
    FlowEnd(usize, u32),
    Census(usize),
    Sample,
}

/// Why a datagram was sent: what started the exchange it belongs to (an
/// answer inherits its request's cause).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A node's arrival after a move within its online period (and what
    /// its timers do in the first seconds after).
    Move,
    /// The first arrival of an online period.
    Arrival,
    /// Sessions ended: releases.
    Release,
    /// Timers: advertisements, refreshes, retransmissions, peer hellos.
    Periodic,
}

struct Entry {
    t: u64,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}

struct AgentSim {
    agent: Agent,
    /// PeerIdx → local agent index.
    peers: Vec<usize>,
    timer_at: u64,
    tunnels: usize,
}

struct Flow {
    id: u32,
    /// Local index of the agent whose address the flow uses.
    issuer: usize,
    /// Bytes per ms.
    rate: f64,
    seg_start: u64,
    /// Bytes carried since the last arrival elsewhere, not yet known to
    /// have survived it.
    pending_bytes: f64,
    pending: bool,
    crossed: bool,
}

struct NodeSim {
    node: Option<Node>,
    home: usize,
    favourites: Vec<usize>,
    periods: Vec<(u64, u64)>,
    period: usize,
    at: Option<usize>,
    /// Arrivals so far (tags the events of one stay).
    stay: u32,
    stay_end: u64,
    moved_in_period: bool,
    flows: Vec<Flow>,
    next_flow: u32,
    /// (local issuer, when the node last used an address there: a flow on
    /// it ended or the node left it).
    last_use: Vec<(usize, u64)>,
    timer_at: u64,
    census_at: u64,
    arrived_ms: u64,
    arrival_cause: Cause,
    online_since_ms: u64,
    bytes: f64,
    relayed: f64,
    mac: [u8; 6],
    seed: [u8; 32],
    saved: Option<Vec<u8>>,
}

pub struct City {
    cfg: CityConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    q: BinaryHeap<Entry>,
    agents: Vec<AgentSim>,
    nodes: Vec<NodeSim>,
    wan_delay: Vec<u64>,
    /// The nodes on each agent's LAN now.
    lan: Vec<Vec<usize>>,
    pub stats: Stats,
    actions: Vec<agent::Action>,
    node_actions: Vec<node::Action>,
    counts: Vec<(Ipv4Addr, usize)>,
    cause: Cause,
    /// SIMS_SCALE_TRACE=<city>:<node>: that node's events on stderr.
    traced: Option<usize>,
}

/// The LAN as agent `a` sees it: which node holds an address now.
struct Lan<'a> {
    nodes: &'a [NodeSim],
    a: usize,
    g: usize,
}
impl LanView for Lan<'_> {
    fn holder(&self, addr: Ipv4Addr) -> Option<[u8; 6]> {
        let (g, k) = decode_addr(addr)?;
        let n = self.nodes.get(k)?;
        let on = n.at == Some(self.a) && n.node.as_ref()?.current() == Some(addr);
        (g == self.g && on).then_some(n.mac)
    }
}

impl City {
    pub fn new(cfg: CityConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let n = cfg.agents;
        // Roaming agreements: symmetric, each with its own key.
        let mut agree: Vec<Vec<Option<[u8; 32]>>> = vec![vec![None; n]; n];
        let pairs = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j)));
        for (i, j) in pairs {
            let same = i % cfg.providers == j % cfg.providers;
            if same || rng.chance(cfg.p_agreement) {
                let key = rng.bytes32();
                agree[i][j] = Some(key);
                agree[j][i] = Some(key);
            }
        }
        let g = |a: usize| cfg.first_agent + a;
        let prefix = |a: usize| Prefix::new(Ipv4Addr::from(lan_base(g(a))), 32 - LAN_BITS as u8);
        let mut agents = Vec::new();
        for (a, agreements) in agree.iter().enumerate() {
            let mut c =
                AgentConfig::new(format!("c{}-a{}", cfg.city, a).as_str().into(), wan(g(a)));
            c.lan_prefixes = prefix(a).into_iter().collect();
            c.max_bindings = cfg.max_bindings;
            c.max_per_peer = cfg.max_per_peer;
            let mut peers = Vec::new();
            for (b, key) in agreements.iter().enumerate() {
                let Some(key) = key else { continue };
                c.peers.push(PeerConfig {
                    id: format!("c{}-a{}", cfg.city, b).as_str().into(),
                    endpoint: wan(g(b)),
                    port: DEFAULT_PORT,
                    prefixes: prefix(b).into_iter().collect(),
                    key: *key,
                });
                peers.push(b);
            }
            agents.push(AgentSim {
                agent: Agent::new(c, rng.bytes32()),
                peers,
                timer_at: 0,
                tunnels: 0,
            });
        }
        let mut wan_delay = vec![0; n * n];
        for i in 0..n {
            for j in i..n {
                let span = cfg.net.wan_delay_max_ms - cfg.net.wan_delay_min_ms + 1;
                let d = cfg.net.wan_delay_min_ms + rng.u64() % span;
                wan_delay[i * n + j] = d;
                wan_delay[j * n + i] = d;
            }
        }
        let pop = cfg.workload.popularity(n);
        let day = cfg.day_ms as f64;
        let nodes = (0..cfg.nodes)
            .map(|k| {
                let home = rng.weighted(&pop);
                let mut favourites = Vec::new();
                while favourites.len() < cfg.workload.favourites.min(n - 1) {
                    let f = rng.weighted(&pop);
                    if f != home && !favourites.contains(&f) {
                        favourites.push(f);
                    }
                }
                let c = cfg.city as u16;
                let kk = k as u16;
                NodeSim {
                    node: None,
                    home,
                    favourites,
                    periods: cfg.workload.periods(&mut rng, day),
                    period: 0,
                    at: None,
                    stay: 0,
                    stay_end: 0,
                    moved_in_period: false,
                    flows: Vec::new(),
                    next_flow: 0,
                    last_use: Vec::new(),
                    timer_at: u64::MAX,
                    census_at: u64::MAX,
                    arrived_ms: 0,
                    arrival_cause: Cause::Arrival,
                    online_since_ms: 0,
                    bytes: 0.0,
                    relayed: 0.0,
                    mac: [2, (c >> 8) as u8, c as u8, (kk >> 8) as u8, kk as u8, 1],
                    seed: rng.bytes32(),
                    saved: None,
                }
            })
            .collect();
        let mut stats = Stats::new(cfg.day_ms);
        stats.nodes = cfg.nodes;
        stats.agents = (0..n)
            .map(|_| AgentStats {
                arrivals_per_hour: vec![0; crate::stats::HOURS],
                ..AgentStats::default()
            })
            .collect();
        City {
            rng,
            now: 0,
            seq: 0,
            q: BinaryHeap::new(),
            agents,
            nodes,
            wan_delay,
            lan: vec![Vec::new(); n],
            stats,
            actions: Vec::new(),
            node_actions: Vec::new(),
            counts: Vec::new(),
            cause: Cause::Periodic,
            traced: std::env::var("SIMS_SCALE_TRACE").ok().and_then(|v| {
                let (c, k) = v.split_once(':')?;
                (c.parse() == Ok(cfg.city)).then(|| k.parse().ok())?
            }),
            cfg,
        }
    }

    fn push(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.q.push(Entry {
            t,
            seq: self.seq,
            ev,
        });
    }

    pub fn run(mut self) -> Stats {
        for a in 0..self.agents.len() {
            self.push(0, Ev::AgentTimer(a));
        }
        for k in 0..self.nodes.len() {
            if let Some(&(s, _)) = self.nodes[k].periods.first() {
                self.push(s, Ev::Online(k));
            }
        }
        self.push(SAMPLE_MS, Ev::Sample);
        let end = self.cfg.day_ms + TAIL_MS;
        while let Some(e) = self.q.pop() {
            if e.t > end {
                break;
            }
            self.now = e.t;
            self.handle(e.ev);
        }
        self.finish();
        self.stats
    }

    fn trace(&self, k: usize, what: &str) {
        if self.traced == Some(k) {
            let n = &self.nodes[k];
            eprintln!(
                "[{}] node {k} at {:?}: {what}; cur {:?} bindings {:?} flows {:?}",
                self.now,
                n.at,
                n.node.as_ref().and_then(|x| x.current()),
                n.node.as_ref().map(|x| x
                    .bindings()
                    .iter()
                    .map(|b| (b.addr(), b.state, b.sockets))
                    .collect::<Vec<_>>()),
                n.flows
                    .iter()
                    .map(|f| (f.issuer, f.pending))
                    .collect::<Vec<_>>()
            );
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::ToAgent {
                a,
                src,
                via_lan,
                data,
                cause,
            } => {
                self.cause = cause;
                self.agent_datagram(a, src, via_lan, &data)
            }
            Ev::ToNode {
                k,
                a,
                src,
                dst,
                data,
                cause,
            } => {
                self.cause = cause;
                if self.nodes[k].at == Some(a) {
                    self.node_datagram(k, src, dst, &data);
                }
            }
            Ev::ToLan { a, data, cause } => {
                self.cause = cause;
                let src = SocketAddrV4::new(gateway(self.cfg.first_agent + a), DEFAULT_PORT);
                let here = std::mem::take(&mut self.lan[a]);
                for &k in &here {
                    if !self.rng.chance(self.cfg.net.lan_loss) {
                        self.node_datagram(k, src, Ipv4Addr::BROADCAST, &data);
                    }
                }
                // Nobody joins or leaves a LAN while a datagram is handled.
                self.lan[a] = here;
            }
            Ev::AgentTimer(a) => {
                self.cause = Cause::Periodic;
                if self.agents[a].timer_at <= self.now {
                    self.agents[a].timer_at = u64::MAX;
                    let mut out = std::mem::take(&mut self.actions);
                    let t = Instant::now();
                    self.agents[a]
                        .agent
                        .handle_timeout(Now { ms: self.now }, &mut out);
                    self.stats.agents[a].cpu_ns += t.elapsed().as_nanos() as u64;
                    self.agent_actions(a, &mut out);
                    self.actions = out;
                    if (self.agents[a].agent.poll_timeout()).is_some_and(|t| t <= self.now) {
                        self.stats.violations.note_spin(format!(
                            "t={}ms agent a{a}: timer still due after handle_timeout",
                            self.now
                        ));
                        self.agents[a].timer_at = self.now + 1;
                        self.push(self.now + 1, Ev::AgentTimer(a));
                    }
                }
                self.arm_agent(a);
            }
            Ev::NodeTimer(k) => {
                let n = &self.nodes[k];
                self.cause = if self.now < n.arrived_ms + SURVIVE_MS {
                    n.arrival_cause
                } else {
                    Cause::Periodic
                };
                if self.nodes[k].timer_at <= self.now {
                    self.nodes[k].timer_at = u64::MAX;
                    let now = Now { ms: self.now };
                    let mut out = std::mem::take(&mut self.node_actions);
                    if let Some(n) = self.nodes[k].node.as_mut() {
                        n.handle_timeout(now, &mut out);
                        if n.poll_timeout().is_some_and(|t| t <= self.now) {
                            // The platform's poll loop would spin.
                            self.stats.violations.note_spin(format!(
                                "t={}ms node {k}: timer still due after handle_timeout",
                                self.now
                            ));
                            self.nodes[k].timer_at = self.now + 1;
                            self.push(self.now + 1, Ev::NodeTimer(k));
                        }
                    }
                    self.node_send(k, &mut out);
                    self.node_actions = out;
                }
                self.arm_node(k);
            }
            Ev::Online(k) => self.online(k),
            Ev::Arrive(k, a) => self.arrive(k, a),
            Ev::Dhcp(k, stay) => {
                self.cause = self.nodes[k].arrival_cause;
                if self.nodes[k].stay == stay && self.nodes[k].at.is_some() {
                    self.dhcp(k)
                }
            }
            Ev::Leave(k, stay) => {
                self.cause = Cause::Move;
                if self.nodes[k].stay == stay {
                    self.leave(k)
                }
            }
            Ev::Offline(k) => {
                self.cause = Cause::Release;
                self.offline(k)
            }
            Ev::Check(k, stay) => {
                self.cause = Cause::Release;
                if self.nodes[k].stay == stay {
                    self.check(k)
                }
            }
            Ev::FlowEnd(k, id) => {
                self.cause = Cause::Release;
                self.flow_end(k, id)
            }
            Ev::Census(k) => {
                self.cause = Cause::Release;
                self.nodes[k].census_at = u64::MAX;
                self.census(k);
            }
            Ev::Sample => {
                self.sample();
                if self.now + SAMPLE_MS <= self.cfg.day_ms + TAIL_MS {
                    self.push(self.now + SAMPLE_MS, Ev::Sample);
                }
            }
        }
    }

    // ---- datagrams -------------------------------------------------

    fn count_tx(&mut self, data: &[u8]) {
        let t = data.get(5).copied().unwrap_or(0) as usize;
        self.stats.msg[self.cause as usize][t] += 1;
    }

    fn lan_delay(&mut self) -> u64 {
        1 + self.rng.exp(self.cfg.net.lan_delay_ms) as u64
    }

    fn agent_datagram(&mut self, a: usize, src: SocketAddrV4, via_lan: bool, data: &[u8]) {
        let mut out = std::mem::take(&mut self.actions);
        let g = self.cfg.first_agent + a;
        let lan = Lan {
            nodes: &self.nodes,
            a,
            g,
        };
        let t = Instant::now();
        self.agents[a].agent.handle_datagram(
            Now { ms: self.now },
            src,
            via_lan,
            data,
            &lan,
            &mut out,
        );
        self.stats.agents[a].cpu_ns += t.elapsed().as_nanos() as u64;
        self.agent_actions(a, &mut out);
        self.actions = out;
        self.arm_agent(a);
    }

    fn agent_actions(&mut self, a: usize, out: &mut Vec<agent::Action>) {
        let g = self.cfg.first_agent + a;
        for act in out.drain(..) {
            match act {
                agent::Action::Send { dst, data } => {
                    self.count_tx(&data);
                    if let Some(b) = decode_wan(*dst.ip())
                        .and_then(|gb| gb.checked_sub(self.cfg.first_agent))
                        .filter(|&b| b < self.agents.len())
                    {
                        if self.rng.chance(self.cfg.net.wan_loss) {
                            continue;
                        }
                        let n = self.agents.len();
                        let d = self.wan_delay[a * n + b];
                        let src = SocketAddrV4::new(wan(g), DEFAULT_PORT);
                        self.push(
                            self.now + d,
                            Ev::ToAgent {
                                a: b,
                                src,
                                via_lan: false,
                                data: data.to_vec().into(),
                                cause: self.cause,
                            },
                        );
                    } else if let Some((_, k)) = decode_addr(*dst.ip()) {
                        if k >= self.nodes.len() || self.rng.chance(self.cfg.net.lan_loss) {
                            continue;
                        }
                        let d = self.lan_delay();
                        let src = SocketAddrV4::new(gateway(g), DEFAULT_PORT);
                        self.push(
                            self.now + d,
                            Ev::ToNode {
                                k,
                                a,
                                src,
                                dst: *dst.ip(),
                                data: data.to_vec().into(),
                                cause: self.cause,
                            },
                        );
                    }
                }
                agent::Action::BroadcastLan { data } => {
                    self.count_tx(&data);
                    let d = self.lan_delay();
                    self.push(
                        self.now + d,
                        Ev::ToLan {
                            a,
                            data: data.to_vec().into(),
                            cause: self.cause,
                        },
                    );
                }
                agent::Action::TunnelUp { .. } => {
                    let s = &mut self.agents[a];
                    s.tunnels += 1;
                    let st = &mut self.stats.agents[a];
                    st.kernel_actions += 1;
                    st.peak_tunnels = st.peak_tunnels.max(s.tunnels);
                }
                agent::Action::TunnelDown { .. } => {
                    let s = &mut self.agents[a];
                    s.tunnels = s.tunnels.saturating_sub(1);
                    self.stats.agents[a].kernel_actions += 1;
                }
                _ => self.stats.agents[a].kernel_actions += 1,
            }
        }
    }

    fn node_datagram(&mut self, k: usize, src: SocketAddrV4, dst: Ipv4Addr, data: &[u8]) {
        if self.traced == Some(k) && data.get(5) != Some(&1) {
            let m = sims_proto::msg::decode(data);
            let what = match &m {
                Ok(sims_proto::msg::Message::RegistrationReply(r)) => {
                    format!(
                        "reg reply req {:x} {:?} {:?}",
                        r.req_id, r.status, r.results
                    )
                }
                _ => format!("rx type {:?}", data.get(5)),
            };
            self.trace(k, &format!("{what} to {dst}"));
        }
        let mut out = std::mem::take(&mut self.node_actions);
        let Some(n) = self.nodes[k].node.as_mut() else {
            return;
        };
        n.handle_datagram(Now { ms: self.now }, src, dst, data, &mut out);
        self.node_send(k, &mut out);
        self.node_actions = out;
        self.arm_node(k);
    }

    /// The node's datagrams go to the agent of the LAN it is on (nothing
    /// else on the LAN listens to them); without a link they are lost.
    fn node_send(&mut self, k: usize, out: &mut Vec<node::Action>) {
        let at = self.nodes[k].at;
        let cur = self.nodes[k].node.as_ref().and_then(|n| n.current());
        for act in out.drain(..) {
            let (dst, data) = match act {
                node::Action::Send { dst, data } => (Some(*dst.ip()), data),
                node::Action::Broadcast { data } => (None, data),
                _ => continue,
            };
            // Without a link nothing leaves the machine.
            let Some(a) = at else { continue };
            self.count_tx(&data);
            let g = self.cfg.first_agent + a;
            // Without an address everything goes out as a broadcast.
            let unicast_elsewhere = cur.is_some() && dst.is_some_and(|d| d != gateway(g));
            if unicast_elsewhere || self.rng.chance(self.cfg.net.lan_loss) {
                continue;
            }
            let src = SocketAddrV4::new(cur.unwrap_or(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT);
            let d = self.lan_delay();
            self.push(
                self.now + d,
                Ev::ToAgent {
                    a,
                    src,
                    via_lan: true,
                    data: data.to_vec().into(),
                    cause: self.cause,
                },
            );
        }
    }

    fn arm_agent(&mut self, a: usize) {
        if let Some(t) = self.agents[a].agent.poll_timeout() {
            let t = t.max(self.now);
            if t < self.agents[a].timer_at {
                self.agents[a].timer_at = t;
                self.push(t, Ev::AgentTimer(a));
            }
        }
    }

    fn arm_node(&mut self, k: usize) {
        let Some(t) = self.nodes[k].node.as_ref().and_then(|n| n.poll_timeout()) else {
            return;
        };
        let t = t.max(self.now);
        if t < self.nodes[k].timer_at {
            self.nodes[k].timer_at = t;
            self.push(t, Ev::NodeTimer(k));
        }
    }

    // ---- the nodes' days -------------------------------------------

    fn online(&mut self, k: usize) {
        let n = &mut self.nodes[k];
        let random = self.rng.bytes32();
        // As sims-node: its state file (key, sequence number, credentials)
        // outlives a suspend; the first period starts without one.
        let restored =
            (n.saved.as_ref()).and_then(|d| Node::restore(NodeConfig::default(), d, n.mac, random));
        n.node = Some(
            restored.unwrap_or_else(|| Node::new(NodeConfig::default(), n.seed, n.mac, random)),
        );
        n.moved_in_period = false;
        n.timer_at = u64::MAX;
        n.online_since_ms = self.now;
        let first = if self.rng.chance(self.cfg.workload.p_home) {
            n.home
        } else {
            n.favourites[self.rng.below(n.favourites.len())]
        };
        // Resumed, the client counts its sockets (none survived the sleep)
        // while WiFi associates; by link-up the old addresses are gone.
        self.census(k);
        self.push(self.now + RESUME_MS, Ev::Arrive(k, first));
    }

    fn period_end(&self, k: usize) -> u64 {
        let n = &self.nodes[k];
        n.periods.get(n.period).map_or(0, |p| p.1)
    }

    fn next_hotspot(&mut self, k: usize, from: usize) -> usize {
        let n = &self.nodes[k];
        if from != n.home && self.rng.chance(self.cfg.workload.p_home) {
            return n.home;
        }
        let others: Vec<usize> = n
            .favourites
            .iter()
            .copied()
            .filter(|&f| f != from)
            .collect();
        if others.is_empty() {
            return n.home;
        }
        others[self.rng.below(others.len())]
    }

    fn arrive(&mut self, k: usize, a: usize) {
        let now = self.now;
        let end = self.period_end(k);
        let dwell = self.cfg.workload.dwell(&mut self.rng);
        let dhcp = self.cfg.workload.dhcp(&mut self.rng);
        let hour = (now / 3_600_000) as usize;
        let st = &mut self.stats.agents[a];
        if let Some(h) = st.arrivals_per_hour.get_mut(hour) {
            *h += 1;
        }
        self.lan[a].push(k);
        self.trace(k, &format!("arrive at {a}"));
        let n = &mut self.nodes[k];
        n.at = Some(a);
        n.stay += 1;
        n.stay_end = (now + dwell).min(end);
        n.arrived_ms = now;
        n.arrival_cause = if n.moved_in_period {
            self.stats.moves += 1;
            Cause::Move
        } else {
            Cause::Arrival
        };
        self.cause = n.arrival_cause;
        self.stats.arrivals += 1;
        n.moved_in_period = true;
        let mut pending = false;
        for f in n.flows.iter_mut() {
            f.seg_start = f.seg_start.max(now);
            if f.issuer != a {
                f.pending = true;
                f.crossed = true;
                pending = true;
            }
        }
        let stay = n.stay;
        let mut out = std::mem::take(&mut self.node_actions);
        if let Some(node) = n.node.as_mut() {
            node.link_up(Now { ms: now }, &mut out);
        }
        self.node_send(k, &mut out);
        self.node_actions = out;
        self.arm_node(k);
        if pending {
            self.push(now + SURVIVE_MS, Ev::Check(k, stay));
        }
        self.push(now + dhcp, Ev::Dhcp(k, stay));
        let stay_end = self.nodes[k].stay_end;
        if stay_end >= end {
            self.push(end, Ev::Offline(k));
        } else {
            self.push(stay_end, Ev::Leave(k, stay));
        }
    }

    fn dhcp(&mut self, k: usize) {
        let Some(a) = self.nodes[k].at else { return };
        let g = self.cfg.first_agent + a;
        let addr = node_addr(g, k);
        let mut out = std::mem::take(&mut self.node_actions);
        if let Some(node) = self.nodes[k].node.as_mut() {
            node.set_address(Now { ms: self.now }, Some(addr), &mut out);
        }
        self.node_send(k, &mut out);
        self.node_actions = out;
        self.arm_node(k);
        self.new_flows(k, a);
        self.census(k);
        self.trace(k, "dhcp");
    }

    /// The flows the node opens during this stay, on its current address.
    /// Those that end before it leaves are accounted at once (they never
    /// see a move); the others are followed.
    fn new_flows(&mut self, k: usize, a: usize) {
        let w = self.cfg.workload.clone();
        let (from, to) = (self.now, self.nodes[k].stay_end);
        if to <= from {
            return;
        }
        let end = self.period_end(k);
        let count = self.rng.poisson((to - from) as f64 / w.flow_gap_ms);
        let home = self.nodes[k].home;
        for _ in 0..count {
            let s = from + (self.rng.unit() * (to - from) as f64) as u64;
            let e = (s + w.flow_duration(&mut self.rng)).min(end);
            let rate = w.flow_rate(&mut self.rng);
            self.stats.flows += 1;
            if e <= to {
                let b = rate * (e - s) as f64;
                self.stats.bytes_direct += b;
                self.nodes[k].bytes += b;
                if a != home {
                    self.stats.mip_ha_bytes += b;
                    self.stats.agents[home].mip_ha_bytes += b;
                    self.stats.hourly_mip[hour_of(s)] += b;
                }
                continue;
            }
            let n = &mut self.nodes[k];
            let id = n.next_flow;
            n.next_flow = n.next_flow.wrapping_add(1);
            n.flows.push(Flow {
                id,
                issuer: a,

                rate,
                seg_start: s,
                pending_bytes: 0.0,
                pending: false,
                crossed: false,
            });
            self.push(e, Ev::FlowEnd(k, id));
        }
    }

    /// Bytes of flow `i` since its last account, by where the node is.
    fn settle(&mut self, k: usize, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[k];
        let at = n.at;
        let f = &mut n.flows[i];
        let b = f.rate * now.saturating_sub(f.seg_start) as f64;
        f.seg_start = f.seg_start.max(now);
        let Some(at) = at else { return };
        let issuer = f.issuer;
        if at == issuer {
            self.stats.bytes_direct += b;
            n.bytes += b;
        } else if f.pending {
            f.pending_bytes += b;
            return;
        } else {
            self.relayed(k, issuer, at, b);
        }
        self.mip(k, at, b);
    }

    fn relayed(&mut self, k: usize, issuer: usize, at: usize, b: f64) {
        self.stats.bytes_relayed += b;
        self.stats.agents[issuer].relayed_bytes += b;
        self.stats.agents[at].relayed_bytes += b;
        self.stats.hourly_relayed[hour_of(self.now)] += b;
        let n = &mut self.nodes[k];
        n.bytes += b;
        n.relayed += b;
    }

    fn mip(&mut self, k: usize, at: usize, b: f64) {
        let home = self.nodes[k].home;
        if at != home {
            self.stats.mip_ha_bytes += b;
            self.stats.agents[home].mip_ha_bytes += b;
            self.stats.hourly_mip[hour_of(self.now)] += b;
        }
    }

    fn off_lan(&mut self, k: usize, a: usize) {
        self.lan[a].retain(|&x| x != k);
    }

    fn settle_all(&mut self, k: usize) {
        for i in 0..self.nodes[k].flows.len() {
            self.settle(k, i);
        }
    }

    fn note_use(&mut self, k: usize, issuer: usize) {
        let now = self.now;
        let n = &mut self.nodes[k];
        match n.last_use.iter_mut().find(|(a, _)| *a == issuer) {
            Some(u) => u.1 = now,
            None => n.last_use.push((issuer, now)),
        }
    }

    /// The old sessions of the stay: relayed by now, or lost.
    fn check(&mut self, k: usize) {
        let mut i = 0;
        while i < self.nodes[k].flows.len() {
            if !self.nodes[k].flows[i].pending || self.decide(k, i) {
                i += 1;
            }
        }
        self.census(k);
    }

    /// Whether pending flow `i` survived its move (relayed now); if not,
    /// it is gone.
    fn decide(&mut self, k: usize, i: usize) -> bool {
        self.settle(k, i);
        let f = &self.nodes[k].flows[i];
        let addr = node_addr(self.cfg.first_agent + f.issuer, k);
        let state = self.nodes[k].node.as_ref().and_then(|n| {
            n.bindings()
                .iter()
                .find(|b| b.addr() == addr)
                .map(|b| b.state)
        });
        match (self.nodes[k].at, state) {
            (Some(at), Some(BindingState::Relayed)) => {
                let (issuer, b) = (f.issuer, f.pending_bytes);
                let f = &mut self.nodes[k].flows[i];
                f.pending = false;
                f.pending_bytes = 0.0;
                self.relayed(k, issuer, at, b);
                self.mip(k, at, b);
                true
            }
            (at, _) => {
                let f = self.nodes[k].flows.swap_remove(i);
                self.stats.sims_lost += 1;
                let agreed = at.is_some_and(|a| self.agents[a].peers.contains(&f.issuer));
                if !agreed {
                    self.stats.sims_lost_no_agreement += 1;
                }
                self.note_use(k, f.issuer);
                false
            }
        }
    }

    fn leave(&mut self, k: usize) {
        self.trace(k, "leave");
        self.check(k);
        self.settle_all(k);
        let Some(a) = self.nodes[k].at.take() else {
            return;
        };
        self.off_lan(k, a);
        self.note_use(k, a);
        let mut out = std::mem::take(&mut self.node_actions);
        if let Some(node) = self.nodes[k].node.as_mut() {
            node.set_address(Now { ms: self.now }, None, &mut out);
        }
        self.node_send(k, &mut out);
        self.node_actions = out;
        // The address just left is old now: idle ones go during the gap.
        self.census(k);
        let gap = self.cfg.workload.gap(&mut self.rng);
        let end = self.period_end(k);
        if self.now + gap < end {
            let next = self.next_hotspot(k, a);
            self.push(self.now + gap, Ev::Arrive(k, next));
        } else {
            self.push(end, Ev::Offline(k));
        }
    }

    /// The laptop is closed: its sessions end with it (not lost to a
    /// move), and the node says nothing more; what agents hold for it
    /// expires.
    fn offline(&mut self, k: usize) {
        if self.nodes[k].node.is_none() {
            return;
        }
        self.check(k);
        self.settle_all(k);
        let flows = std::mem::take(&mut self.nodes[k].flows);
        for f in &flows {
            if f.crossed {
                self.stats.sims_survived += 1;
            }
            self.note_use(k, f.issuer);
        }
        if let Some(a) = self.nodes[k].at.take() {
            self.off_lan(k, a);
            self.note_use(k, a);
        }
        let n = &mut self.nodes[k];
        self.stats.online_ms += self.now - n.online_since_ms;
        n.saved = n.node.take().map(|x| x.save());
        n.stay += 1;
        n.period += 1;
        if let Some(&(s, _)) = n.periods.get(n.period) {
            let s = s.max(self.now + 1);
            self.push(s, Ev::Online(k));
        }
    }

    fn flow_end(&mut self, k: usize, id: u32) {
        let Some(i) = self.nodes[k].flows.iter().position(|f| f.id == id) else {
            return;
        };
        // A flow that ends before its move was decided is decided now.
        if !self.nodes[k].flows[i].pending || self.decide(k, i) {
            self.end_flow(k, i);
        }
        self.census(k);
    }

    fn end_flow(&mut self, k: usize, i: usize) {
        self.settle(k, i);
        let f = self.nodes[k].flows.swap_remove(i);
        if f.crossed {
            self.stats.sims_survived += 1;
        }
        self.note_use(k, f.issuer);
    }

    /// What sims-node's sock_diag census reports: live sockets per old
    /// address.
    fn census(&mut self, k: usize) {
        let Some(node) = self.nodes[k].node.as_ref() else {
            return;
        };
        let g0 = self.cfg.first_agent;
        let mut counts = std::mem::take(&mut self.counts);
        counts.clear();
        for a in node.old_addresses() {
            let n = (self.nodes[k].flows.iter())
                .filter(|f| node_addr(g0 + f.issuer, k) == a)
                .count();
            counts.push((a, n));
        }
        let idle = counts.iter().any(|c| c.1 == 0);
        let mut out = std::mem::take(&mut self.node_actions);
        if let Some(node) = self.nodes[k].node.as_mut() {
            node.socket_census(Now { ms: self.now }, &counts, &mut out);
        }
        self.counts = counts;
        self.node_send(k, &mut out);
        self.node_actions = out;
        self.arm_node(k);
        self.trace(k, &format!("census {:?}", self.counts));
        if idle {
            // A real node counts every second; here, when it matters.
            let t = self.now + NodeConfig::default().grace_ms + 1;
            if t < self.nodes[k].census_at || self.nodes[k].census_at <= self.now {
                self.nodes[k].census_at = t;
                self.push(t, Ev::Census(k));
            }
        }
    }

    // ---- observation -----------------------------------------------

    fn sample(&mut self) {
        let now = self.now;
        let g0 = self.cfg.first_agent;
        let lifetime = self.agents[0].agent.config().binding_lifetime_s as u64 * 1000;
        let bound = (self.cfg.stale_bound_ms)
            .unwrap_or(NodeConfig::default().grace_ms + 2 * lifetime + 60_000);
        let mut counts = Vec::with_capacity(self.agents.len());
        for a in 0..self.agents.len() {
            let s = &self.agents[a];
            let cfg = s.agent.config();
            let total = s.agent.bindings().count();
            counts.push(total as u16);
            let st = &mut self.stats.agents[a];
            st.peak_bindings = st.peak_bindings.max(total);
            st.peak_credentials = st.peak_credentials.max(s.agent.credential_count());
            st.table_full = s.agent.counters.table_full;
            if total > cfg.max_bindings
                || (0..cfg.peers.len()).any(|p| s.agent.binding_count(p) > cfg.max_per_peer)
                || s.agent.credential_count() > cfg.max_credentials
            {
                self.stats.violations.limits += 1;
            }
            let mut per_node: Vec<([u8; 32], usize)> = Vec::new();
            for (addr, b) in s.agent.bindings() {
                match per_node.iter_mut().find(|(n, _)| *n == b.node) {
                    Some(e) => e.1 += 1,
                    None => per_node.push((b.node, 1)),
                }
                // No binding outlives the node's last session on its
                // address by more than the grace time and the lifetimes.
                let Some((gi, k)) = decode_addr(addr) else {
                    self.stats
                        .violations
                        .note_stale(format!("{addr}: not a LAN address"));
                    continue;
                };
                let Some(n) = self.nodes.get(k) else { continue };
                let issuer = gi.wrapping_sub(g0);
                if n.flows.iter().any(|f| f.issuer == issuer) {
                    continue;
                }
                let last = n.last_use.iter().find(|(i, _)| *i == issuer).map(|u| u.1);
                match last {
                    Some(t) if now.saturating_sub(t) <= bound => {}
                    _ => self.stats.violations.note_stale(format!(
                        "t={}s agent c{}-a{a}: {addr} ({:?}, created {}s, expires {}s, pending {}) held {}s after its last use; node online {} at {:?}, its bindings {:?}",
                        now / 1000,
                        self.cfg.city,
                        b.role,
                        b.created_ms / 1000,
                        b.expires_ms / 1000,
                        b.pending,
                        last.map_or(-1, |t| ((now - t) / 1000) as i64),
                        n.node.is_some(),
                        n.at,
                        n.node.as_ref().map(|x| x.bindings().iter().map(|b| (b.addr(), b.state, b.sockets)).collect::<Vec<_>>())
                    )),
                }
            }
            if per_node.iter().any(|(_, c)| *c > cfg.max_per_node) {
                self.stats.violations.limits += 1;
            }
        }
        // Every relayed session's path is one tunnel: the issuer's home
        // binding points at the agent the node is on, whose visitor
        // binding points back at the issuer.
        for k in 0..self.nodes.len() {
            let n = &self.nodes[k];
            let (Some(node), Some(at)) = (n.node.as_ref(), n.at) else {
                continue;
            };
            for b in node.bindings() {
                // (A release tears the path down from both ends.)
                if b.state != BindingState::Relayed || b.is_releasing() {
                    continue;
                }
                let addr = b.addr();
                let Some((gi, _)) = decode_addr(addr) else {
                    continue;
                };
                let h = gi.wrapping_sub(g0);
                // Registered early back home (before DHCP): the issuer
                // says Ok and ends the redirect, so no tunnel at all.
                let home = h == at && !self.holds(h, addr, Role::Home);
                let ok = h < self.agents.len()
                    && (home
                        || (h != at
                            && self.points(h, addr, Role::Home, at)
                            && self.points(at, addr, Role::Visitor, h)));
                self.stats.relayed_checked += 1;
                if !ok {
                    let held = |a: usize| -> Vec<String> {
                        (self.agents[a].agent.bindings())
                            .filter(|(x, _)| *x == addr)
                            .map(|(_, b)| {
                                format!(
                                    "{:?}->a{:?} exp {}s",
                                    b.role,
                                    self.agents[a].peers.get(b.peer),
                                    b.expires_ms / 1000
                                )
                            })
                            .collect()
                    };
                    let all: Vec<(usize, Vec<String>)> = (0..self.agents.len())
                        .map(|a| (a, held(a)))
                        .filter(|(_, v)| !v.is_empty())
                        .collect();
                    self.stats.violations.note_chain(format!(
                        "t={}s node {k} at a{at}: {addr} relayed, but the path is not issuer a{h} → a{at}: {all:?}",
                        now / 1000
                    ));
                }
            }
        }
        if now <= self.cfg.day_ms {
            self.stats.samples.push(counts);
        }
    }

    fn holds(&self, a: usize, addr: Ipv4Addr, role: Role) -> bool {
        (self.agents[a].agent.bindings()).any(|(x, b)| x == addr && b.role == role)
    }

    fn points(&self, a: usize, addr: Ipv4Addr, role: Role, to: usize) -> bool {
        let s = &self.agents[a];
        s.agent
            .bindings()
            .any(|(x, b)| x == addr && b.role == role && s.peers.get(b.peer) == Some(&to))
    }

    fn finish(&mut self) {
        for n in &self.nodes {
            if n.bytes > 0.0 {
                self.stats.node_relayed_fraction.push(n.relayed / n.bytes);
            }
        }
        for (a, s) in self.agents.iter().enumerate() {
            let c = &s.agent.counters;
            let st = &mut self.stats.agents[a];
            st.verifications = c.verifications;
            st.key_agreements = c.key_agreements;
            st.table_full = c.table_full;
        }
    }
}

fn hour_of(t: u64) -> usize {
    ((t / 3_600_000) as usize).min(crate::stats::HOURS - 1)
}
