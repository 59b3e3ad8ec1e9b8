//! Agent::restore and Node::restore on arbitrary bytes. The first byte
//! picks the kind and whether the harness appends the right checksum (so
//! that mutations of a real save, as the seeds in the corpus are, get past
//! it and into the body). Nothing panics; a restored agent is within its
//! limits and its actions describe its bindings; what was restored saves
//! and restores again to the same thing.
//!
//! `SIMS_FUZZ_WRITE_SEEDS=<dir>`: writes the seeds (real saves, made by
//! restoring hand-built state files and saving them again) into <dir>.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use sims_fuzz::*;
use sims_proto::agent::{Action, Agent, Binding, CredEntry, Role};
use sims_proto::msg::Credential;
use sims_proto::node::Node;
use sims_proto::persist::{Kind, Writer, CHECKSUM_LEN};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x50];

fn restore_agent(data: &[u8]) {
    let t = now(1_000);
    let mut a = Agent::new(agent_config(), [3; 32]);
    let mut out = Vec::new();
    if !a.restore(t, data, &mut out) {
        assert!(out.is_empty(), "a refused file changed something");
        assert_eq!(a.bindings().count(), 0);
        return;
    }
    let c = a.config();
    assert!(a.bindings().count() <= c.max_bindings);
    assert!(a.credential_count() <= c.max_credentials);
    let mut tunnels = BTreeSet::new();
    let mut installed = BTreeMap::new();
    for act in out {
        match act {
            Action::TunnelUp { peer } => assert!(tunnels.insert(peer)),
            Action::HomeAdd { addr, peer } => {
                assert!(tunnels.contains(&peer));
                assert!(installed.insert(addr, (Role::Home, peer)).is_none());
            }
            Action::VisitorAdd { addr, peer, .. } => {
                assert!(tunnels.contains(&peer));
                assert!(installed.insert(addr, (Role::Visitor, peer)).is_none());
            }
            other => panic!("restore did {other:?}"),
        }
    }
    let held: BTreeMap<_, _> = a.bindings().map(|(x, b)| (x, (b.role, b.peer))).collect();
    assert_eq!(held, installed);
    // Saved and restored again: the same bindings and credentials.
    let again = a.save(t);
    let mut b = Agent::new(agent_config(), [4; 32]);
    assert!(b.restore(t, &again, &mut Vec::new()));
    let held_b: BTreeMap<_, _> = b.bindings().map(|(x, b)| (x, (b.role, b.peer))).collect();
    assert_eq!(held, held_b);
    assert_eq!(a.credential_count(), b.credential_count());
}

fn restore_node(data: &[u8]) {
    let Some(n) = Node::restore(node_config(), data, MAC, [1; 32]) else {
        return;
    };
    let b = n.bindings();
    assert!(b.len() <= node_config().max_bindings);
    let creds: Vec<(Credential, [u8; 32])> =
        b.iter().map(|b| (b.cred.clone(), *b.cred_key())).collect();
    let m = Node::restore(node_config(), &n.save(), MAC, [2; 32]).expect("own save");
    assert_eq!(m.key(), n.key());
    let back: Vec<(Credential, [u8; 32])> = m
        .bindings()
        .iter()
        .map(|b| (b.cred.clone(), *b.cred_key()))
        .collect();
    assert_eq!(back, creds);
}

/// Real saves: state files built by hand (as a daemon of this version
/// would have written them), restored, and saved again by the machines.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let t = now(1_000);
    let cred = |i: usize, h: u8, issuer: &str| Credential {
        addr: host(i, h).octets(),
        issuer: id(issuer),
        serial: 0x1234_5678_9abc_def0 + u64::from(h),
    };
    let binding = |role, peer, node: u8, c: Credential| Binding {
        role,
        peer,
        node: [node; 32],
        cred: c,
        created_ms: 0,
        expires_ms: 50_000,
        pending: false,
        last_seq: 3,
        mac: MAC,
    };
    let mut w = Writer::new(Kind::Agent);
    let bindings = [
        (
            host(0, 50),
            binding(Role::Home, 0, 1, cred(0, 50, AGENT_ID)),
            PEER_IDS[0],
        ),
        (
            host(0, 51),
            binding(Role::Home, 1, 2, cred(0, 51, AGENT_ID)),
            PEER_IDS[1],
        ),
        (
            host(1, 60),
            binding(Role::Visitor, 0, 3, cred(1, 60, PEER_IDS[0])),
            PEER_IDS[0],
        ),
    ];
    w.put(&bindings.len());
    for (a, b, peer) in &bindings {
        w.put(&(a.octets(), b, 40_000u64, id(peer)));
    }
    w.put(&2usize);
    for (h, node) in [(50u8, 1u8), (52, 2)] {
        let c = CredEntry {
            node: [node; 32],
            mac: MAC,
            serial: 0x1234_5678_9abc_def0 + u64::from(h),
            last_seq: 3,
            last_use: Some((id(PEER_IDS[0]), host(1, 50).octets())),
            expires_ms: 100_000,
            key: [h; 32],
        };
        w.put(&(host(0, h).octets(), &c, 90_000u64));
    }
    // No peer moved (version 3 on).
    w.put(&0usize);
    let mut a = Agent::new(agent_config(), [3; 32]);
    assert!(a.restore(t, &w.finish(), &mut Vec::new()));
    assert_eq!(a.bindings().count(), 3);
    assert_eq!(a.credential_count(), 2, "the credentials with their keys");
    let agent = a.save(t);

    let mut w = Writer::new(Kind::Node);
    w.put(&[9u8; 32]);
    w.put(&41u64);
    w.put(&2usize);
    w.put(&(cred(0, 50, AGENT_ID), [0x41u8; 32]));
    w.put(&(cred(1, 50, PEER_IDS[0]), [0x42u8; 32]));
    let n = Node::restore(node_config(), &w.finish(), MAC, [1; 32]).expect("node state");
    assert_eq!(n.bindings().len(), 2, "the credentials with their keys");
    let node = n.save();
    let strip = |v: &[u8]| v[..v.len() - CHECKSUM_LEN].to_vec();
    vec![
        ("agent-save", [&[0u8][..], &agent].concat()),
        ("node-save", [&[1u8][..], &node].concat()),
        ("agent-body", [&[2u8][..], &strip(&agent)].concat()),
        ("node-body", [&[3u8][..], &strip(&node)].concat()),
    ]
}

fuzz_target!(|data: &[u8]| {
    static SEEDS: Once = Once::new();
    SEEDS.call_once(|| {
        if let Some(dir) = std::env::var_os("SIMS_FUZZ_WRITE_SEEDS") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("seed dir");
            for (name, bytes) in seeds() {
                std::fs::write(dir.join(name), bytes).expect("seed");
            }
        }
    });
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => restore_agent(rest),
        1 => restore_node(rest),
        2 => restore_agent(&with_checksum(rest)),
        _ => restore_node(&with_checksum(rest)),
    }
});
