//! The agent's CPU under a flood of each message type (issue 9, attack
//! 4): 10,000 datagrams a second of one kind, fed to the protocol core as
//! simsd would, against the same second idle (timers only). Prints one
//! line per kind:
//!
//! ```text
//! flood <kind> cpu_ms_per_s=<x> idle_ratio=<y> verifications=<n> sent=<m>
//! ```
//!
//! and last `flood worst=<kind> cpu_ms_per_s=<x> idle_cpu_ms_per_s=<y>`.
//! Only the protocol core is measured (decoding, checks, crypto, tables):
//! the kernel's cost of receiving the datagrams is the same for any
//! daemon. Run with `cargo xtask bench flood` (release build).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use sims_proto::agent::{Action, Agent, AgentConfig, EmptyLan, Now, PeerConfig};
use sims_proto::msg::{
    self, AgentId, Authed, Credential, Message, OldBinding, Proof, ProofDomain, ProofInput,
    Registration, Release, Solicitation, TunnelRelease, TunnelRequest,
};
use sims_proto::Prefix;

const RATE: u64 = 10_000;
const PEER: Ipv4Addr = Ipv4Addr::new(100, 64, 2, 2);
const PEER_KEY: [u8; 32] = [0x42; 32];
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 66);

fn agent() -> Agent {
    let mut cfg = AgentConfig::new(AgentId::from("ma-a"), Ipv4Addr::new(100, 64, 1, 2));
    cfg.lan_prefixes = vec![Prefix::new(Ipv4Addr::new(10, 1, 0, 0), 24).unwrap()];
    cfg.peers.push(PeerConfig {
        id: AgentId::from("ma-b"),
        endpoint: PEER,
        port: sims_proto::DEFAULT_PORT,
        prefixes: vec![Prefix::new(Ipv4Addr::new(10, 2, 0, 0), 24).unwrap()],
        key: PEER_KEY,
    });
    Agent::new(cfg, [7; 32])
}

fn now(ms: u64) -> Now {
    Now { ms }
}

/// The cookie the guest gets for its own address (it solicits).
fn cookie(a: &mut Agent, node: &[u8; 32]) -> msg::Cookie {
    let sol = Message::Solicitation(Solicitation {
        nonce: 1,
        node: *node,
    });
    let d = msg::encode(&sol, None).unwrap();
    let mut out = Vec::new();
    let src = SocketAddrV4::new(GUEST, 4434);
    a.handle_datagram(now(1), src, true, &d, &EmptyLan, &mut out);
    out.iter()
        .find_map(|x| match x {
            Action::Send { data, .. } => match msg::decode(data) {
                Ok(Message::Advertisement(adv)) => adv.solicited.map(|s| s.cookie),
                _ => None,
            },
            _ => None,
        })
        .expect("a cookie")
}

/// Datagram `i` of a flood of `kind`: (source, via LAN, bytes).
fn datagram(
    kind: &str,
    i: u64,
    key: &ed25519_compact::KeyPair,
    c: msg::Cookie,
    session: [u8; 32],
) -> (Ipv4Addr, bool, Vec<u8>) {
    let cred = Credential {
        addr: [10, 2, 0, (i % 200) as u8 + 10],
        issuer: AgentId::from("ma-b"),
        serial: i,
    };
    let lan = |m: &Message| (GUEST, true, msg::encode(m, None).unwrap().to_vec());
    match kind {
        "solicitation" => lan(&Message::Solicitation(Solicitation {
            nonce: i,
            node: *key.pk,
        })),
        "registration_no_cookie" => lan(&Message::Registration(Registration {
            req_id: i,
            node: *key.pk,
            addr: GUEST.octets(),
            mac: [2; 6],
            seq: i,
            cookie: [0; 16],
            bindings: heapless::Vec::new(),
            tag: [0; 16],
        })),
        "registration_sealed" => {
            // The costliest a guest can send: its own cookie, sealed under
            // its own session, a claim of a credential (forwarded to the
            // issuer within its budget: only the issuer can check it).
            let input = ProofInput::new(ProofDomain::Redirect, &cred, "ma-a", GUEST.octets(), i);
            let proof = msg::prove(&[9; 32], &input).unwrap();
            let mut bindings = heapless::Vec::new();
            let _ = bindings.push(OldBinding { cred, proof });
            let m = Message::Registration(Registration {
                req_id: i,
                node: *key.pk,
                addr: GUEST.octets(),
                mac: [2; 6],
                seq: i,
                cookie: c,
                bindings,
                tag: [0; 16],
            });
            let mut d = msg::encode(&m, None).unwrap();
            msg::seal_reply(&mut d, &session);
            (GUEST, true, d.to_vec())
        }
        "release" => lan(&Message::Release(Release {
            req_id: i,
            node: *key.pk,
            cred,
            node_addr: GUEST.octets(),
            seq: i,
            cookie: c,
            tag: [i as u8; 16],
        })),
        "tunnel_request_bad_tag" | "tunnel_request_old_run" => {
            let m = Message::TunnelRequest(Authed {
                sender: AgentId::from("ma-b"),
                instance: 99,
                seq: i,
                echo: 0,
                msg: TunnelRequest {
                    req_id: i,
                    node: *key.pk,
                    cred,
                    node_addr: [10, 2, 0, 5],
                    seq: i,
                    proof: Proof([0; 32]),
                    lifetime_s: 60,
                },
            });
            let k = if kind == "tunnel_request_bad_tag" {
                [0x11; 32]
            } else {
                PEER_KEY
            };
            (PEER, false, msg::encode(&m, Some(&k)).unwrap().to_vec())
        }
        "tunnel_release_old_run" => {
            let m = Message::TunnelRelease(Authed {
                sender: AgentId::from("ma-b"),
                instance: 99,
                seq: i,
                echo: 0,
                msg: TunnelRelease {
                    req_id: i,
                    addr: [10, 1, 0, 50],
                },
            });
            (
                PEER,
                false,
                msg::encode(&m, Some(&PEER_KEY)).unwrap().to_vec(),
            )
        }
        _ => {
            // Garbage with a valid header start.
            let mut d = vec![0u8; 40 + (i % 60) as usize];
            d[..4].copy_from_slice(b"SIMS");
            d[4] = 2;
            d[5] = 3;
            (GUEST, true, d)
        }
    }
}

/// CPU ms the core spends in one simulated second of `kind` (None: idle).
fn second(kind: Option<&str>) -> (f64, u64, u64) {
    let mut a = agent();
    let key = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3; 32]));
    let c = cookie(&mut a, &key.pk);
    let flood: Vec<_> = match kind {
        Some(k) => {
            let session = msg::node_session(&key.sk, &key.pk, &a.dh_public()).unwrap();
            (0..RATE)
                .map(|i| datagram(k, i + 1, &key, c, session))
                .collect()
        }
        None => Vec::new(),
    };
    let mut out: Vec<Action> = Vec::with_capacity(16);
    let t0 = Instant::now();
    let mut sent = 0;
    let step_us = 1_000_000 / RATE;
    for tick in 0..RATE {
        let ms = 1_000 + tick * step_us / 1000;
        if let Some((src, via_lan, d)) = flood.get(tick as usize) {
            let src = SocketAddrV4::new(*src, 4434);
            a.handle_datagram(now(ms), src, *via_lan, d, &EmptyLan, &mut out);
        }
        if a.poll_timeout().is_some_and(|t| t <= ms) {
            a.handle_timeout(now(ms), &mut out);
        }
        sent += out.len() as u64;
        out.clear();
    }
    let cpu = t0.elapsed().as_secs_f64() * 1e3;
    (cpu, a.counters.verifications, sent)
}

fn main() {
    let kinds = [
        "solicitation",
        "registration_no_cookie",
        "registration_sealed",
        "release",
        "tunnel_request_bad_tag",
        "tunnel_request_old_run",
        "tunnel_release_old_run",
        "garbage",
    ];
    // Several idle seconds: the baseline is tiny and noisy.
    let idle = (0..5)
        .map(|_| second(None).0)
        .fold(f64::MAX, f64::min)
        .max(1e-3);
    println!("flood idle cpu_ms_per_s={idle:.3}");
    let mut worst = ("", 0.0);
    for k in kinds {
        let (cpu, verifications, sent) = second(Some(k));
        println!(
            "flood {k} cpu_ms_per_s={cpu:.1} idle_ratio={:.0} verifications={verifications} sent={sent}",
            cpu / idle
        );
        if cpu > worst.1 {
            worst = (k, cpu);
        }
    }
    println!(
        "flood worst={} cpu_ms_per_s={:.1} idle_cpu_ms_per_s={idle:.3} rate={RATE}",
        worst.0, worst.1
    );
}
