//! The protocol's CPU per handover (issue 12, item 2): the real agent and
//! node state machines of simsd and sims-node, two agents with a roaming
//! agreement and one node moving A → B → A ... with a session kept on
//! each old address, every datagram encoded, carried in memory and
//! decoded for real. Measured per move: the CPU time spent inside the
//! three state machines (nothing else runs in them: no sockets, no
//! kernel), the public-key operations they made (from their counters),
//! and the share of the time those operations take (each kind timed
//! alone in the same run). Prints one line per figure and last:
//!
//! ```text
//! handover_cpu target=<arch> moves=<n> cpu_us_median=<x> public_key_ops=<k> crypto_share=<y>
//! ```
//!
//! Run with `cargo xtask bench handover-cpu` (natively, and for mipsel in
//! the Malta guest), or `cargo run --release -p sims-proto --example
//! handover [moves]`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use sims_proto::agent::{Action, Agent, AgentConfig, EmptyLan, Now, PeerConfig};
use sims_proto::msg::{self, AgentId};
use sims_proto::node::{self, BindingState, Node, NodeConfig};
use sims_proto::Prefix;

const A: usize = 0;
const B: usize = 1;
const PAIR_KEY: [u8; 32] = [0x42; 32];
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x50];

fn wan(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, i as u8 + 1, 2)
}
fn prefix(i: usize) -> Prefix {
    Prefix::new(Ipv4Addr::new(10, i as u8 + 1, 0, 0), 24).expect("prefix")
}
fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, i as u8 + 1, 0, 50)
}
fn gateway(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, i as u8 + 1, 0, 1)
}
fn id(i: usize) -> AgentId {
    AgentId::from(["ma-a", "ma-b"][i])
}

fn agent(i: usize) -> Agent {
    let j = 1 - i;
    let mut c = AgentConfig::new(id(i), wan(i));
    c.lan_prefixes = vec![prefix(i)];
    c.peers.push(PeerConfig {
        id: id(j),
        endpoint: wan(j),
        port: sims_proto::DEFAULT_PORT,
        prefixes: vec![prefix(j)],
        key: PAIR_KEY,
    });
    Agent::new(c, [i as u8 + 1; 32])
}

/// A datagram in flight: to agent `to` (or the node, `None`), from `src`,
/// to destination address `dst`.
struct Datagram {
    to: Option<usize>,
    src: SocketAddrV4,
    dst: Ipv4Addr,
    data: Vec<u8>,
}

struct World {
    agents: [Agent; 2],
    node: Node,
    at: usize,
    now: u64,
    /// Time spent inside the state machines.
    cpu: Duration,
}

impl World {
    fn node_src(&self) -> SocketAddrV4 {
        let a = self.node.current().unwrap_or(Ipv4Addr::UNSPECIFIED);
        SocketAddrV4::new(a, sims_proto::DEFAULT_PORT)
    }

    fn node_sent(&self, acts: Vec<node::Action>, q: &mut Vec<Datagram>) {
        for a in acts {
            match a {
                node::Action::Send { dst, data } => q.push(Datagram {
                    to: Some(self.at),
                    src: self.node_src(),
                    dst: *dst.ip(),
                    data: data.to_vec(),
                }),
                node::Action::Broadcast { data } => q.push(Datagram {
                    to: Some(self.at),
                    src: self.node_src(),
                    dst: Ipv4Addr::BROADCAST,
                    data: data.to_vec(),
                }),
                node::Action::HoldAddress(_) | node::Action::DropAddress(_) => {}
            }
        }
    }

    fn agent_sent(&self, i: usize, out: Vec<Action>, q: &mut Vec<Datagram>) {
        for a in out {
            let (dst, data) = match a {
                Action::Send { dst, data } => (*dst.ip(), data),
                Action::BroadcastLan { data } => (Ipv4Addr::BROADCAST, data),
                _ => continue,
            };
            let to = (0..2).find(|&j| wan(j) == dst);
            let src_ip = if to.is_some() { wan(i) } else { gateway(i) };
            // LAN datagrams reach the node only on its LAN.
            if to.is_none() && i != self.at {
                continue;
            }
            q.push(Datagram {
                to,
                src: SocketAddrV4::new(src_ip, sims_proto::DEFAULT_PORT),
                dst,
                data: data.to_vec(),
            });
        }
    }

    /// Delivers until nothing is in flight.
    fn run(&mut self, mut q: Vec<Datagram>) {
        for _ in 0..100 {
            if q.is_empty() {
                return;
            }
            let mut next = Vec::new();
            for d in q.drain(..) {
                let now = Now { ms: self.now };
                match d.to {
                    Some(i) => {
                        let via_lan =
                            prefix(i).contains(*d.src.ip()) || d.src.ip().is_unspecified();
                        let mut out = Vec::new();
                        let t = Instant::now();
                        self.agents[i]
                            .handle_datagram(now, d.src, via_lan, &d.data, &EmptyLan, &mut out);
                        self.cpu += t.elapsed();
                        self.agent_sent(i, out, &mut next);
                    }
                    None => {
                        let mut acts = Vec::new();
                        let t = Instant::now();
                        self.node
                            .handle_datagram(now, d.src, d.dst, &d.data, &mut acts);
                        self.cpu += t.elapsed();
                        self.node_sent(acts, &mut next);
                    }
                }
            }
            q = next;
        }
        panic!("message storm");
    }

    /// The node's link goes to LAN `to`, where DHCP gives it its address.
    fn move_to(&mut self, to: usize) {
        self.at = to;
        self.now += 1000;
        let now = Now { ms: self.now };
        let mut acts = Vec::new();
        let t = Instant::now();
        self.node.set_address(now, None, &mut acts);
        self.node.set_address(now, Some(node_addr(to)), &mut acts);
        // Every old address keeps a socket.
        let counts = [(node_addr(A), 1), (node_addr(B), 1)];
        self.node.socket_census(now, &counts, &mut acts);
        self.cpu += t.elapsed();
        let mut q = Vec::new();
        self.node_sent(acts, &mut q);
        self.run(q);
    }

    fn public_key_ops(&self) -> u64 {
        let c = &self.node.counters;
        c.key_agreements
            + self
                .agents
                .iter()
                .map(|a| a.counters.verifications)
                .sum::<u64>()
    }

    fn state(&self, addr: Ipv4Addr) -> Option<BindingState> {
        self.node
            .bindings()
            .iter()
            .find(|b| b.addr() == addr)
            .map(|b| b.state)
    }
}

/// Mean time of `f` over `n` runs.
fn time_each(n: u32, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p / 100.0).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn main() {
    let moves: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let mut w = World {
        agents: [agent(A), agent(B)],
        node: Node::new(NodeConfig::default(), [9; 32], MAC, [5; 32]),
        at: A,
        now: 1,
        cpu: Duration::ZERO,
    };
    w.move_to(A);
    let (mut cpu_us, mut ops, mut kinds) = (Vec::new(), Vec::new(), [0u64; 2]);
    for n in 0..moves {
        let (from, to) = if w.at == A { (A, B) } else { (B, A) };
        let (cpu0, ops0) = (w.cpu, w.public_key_ops());
        let k0 = kinds_of(&w);
        w.move_to(to);
        if w.state(node_addr(from)) != Some(BindingState::Relayed) {
            eprintln!("move {n}: {} not relayed", node_addr(from));
            std::process::exit(1);
        }
        cpu_us.push((w.cpu - cpu0).as_secs_f64() * 1e6);
        ops.push(w.public_key_ops() - ops0);
        let k1 = kinds_of(&w);
        for i in 0..2 {
            kinds[i] += k1[i] - k0[i];
        }
    }
    // Each public-key operation alone, in the same run: the X25519 of a
    // session (either side), and for comparison the Ed25519 signature and
    // check that proofs were before protocol version 3.
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3; 32]));
    let bytes = [0x5a; 64];
    let sig = kp.sk.sign(bytes, None);
    let reps = 50;
    let sign = time_each(reps, || {
        std::hint::black_box(kp.sk.sign(bytes, None));
    });
    let verify = time_each(reps, || {
        std::hint::black_box(kp.pk.verify(bytes, &sig).is_ok());
    });
    let agree = time_each(reps, || {
        std::hint::black_box(msg::agent_session(&[1; 32], &[2; 32], &kp.pk));
    });
    let m = moves as f64;
    let per = |k: u64| k as f64 / m;
    let crypto_us = (per(kinds[0]) + per(kinds[1])) * agree.as_secs_f64() * 1e6;
    let med = percentile(&cpu_us, 50.0);
    let ops_med = percentile(&ops.iter().map(|&x| x as f64).collect::<Vec<_>>(), 50.0);
    println!(
        "handover_cpu per move (node + both agents), {moves} moves: median {med:.1} us, p99 {:.1} us",
        percentile(&cpu_us, 99.0)
    );
    println!(
        "public-key operations per move: {ops_med:.0} (node: {:.2} X25519; agents: {:.2} X25519)",
        per(kinds[0]),
        per(kinds[1])
    );
    println!(
        "alone: Ed25519 sign {:.1} us, verify {:.1} us, X25519 session {:.1} us",
        sign.as_secs_f64() * 1e6,
        verify.as_secs_f64() * 1e6,
        agree.as_secs_f64() * 1e6
    );
    let mean = cpu_us.iter().sum::<f64>() / m;
    println!(
        "handover_cpu target={} moves={moves} cpu_us_median={med:.1} cpu_us_mean={mean:.1} public_key_ops={ops_med:.0} crypto_us={crypto_us:.1} crypto_share={:.2}",
        std::env::consts::ARCH,
        crypto_us / mean
    );
}

/// The public-key operations so far by kind: (the node's X25519, the
/// agents' X25519).
fn kinds_of(w: &World) -> [u64; 2] {
    let agents = w.agents.iter().map(|x| x.counters.verifications).sum();
    [w.node.counters.key_agreements, agents]
}
