//! Wire-format golden test: fixed messages of every type, their HMAC tags
//! and seals, a proof's input bytes and the proof, against the bytes in
//! `golden/messages.hex`. The same test runs on x86_64 and, under QEMU
//! user mode, on every router target (`cargo xtask test --target ...`),
//! big-endian MIPS included: passing on both means a datagram encoded on
//! one decodes on the other, in both directions.
//!
//! After a deliberate wire change, regenerate the file with
//! `SIMS_BLESS_GOLDEN=1 cargo test -p sims-proto --test golden` and review
//! the diff: every changed line is an incompatible change on the wire.

use sims_proto::msg::{
    agent_dh_keys, agent_session, box_cred_key, decode, encode, node_session, proof_bytes, prove,
    reply_authentic, seal_reply, verify_tag, Advertisement, AgentId, Authed, BindingResult,
    Credential, Message, NodeProof, OldBinding, PeerChallenge, PeerHello, PeerHelloReply,
    PeerMoveChallenge, Proof, ProofDomain, ProofInput, Provider, Registration, RegistrationReply,
    Release, ReleaseReply, Solicitation, Solicited, Status, TunnelRelease, TunnelReleaseReply,
    TunnelReply, TunnelRequest, PROOF_CONTEXT,
};

const GOLDEN: &str = include_str!("golden/messages.hex");
const GOLDEN_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/messages.hex");

/// The roaming agreement's key for the peer messages.
const PEER_KEY: [u8; 32] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
];

fn id(s: &str) -> AgentId {
    AgentId::from(s)
}

fn node_key() -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([0x5a; 32]))
}

fn cred() -> Credential {
    Credential {
        addr: [10, 1, 0, 50],
        issuer: id("ma-a"),
        serial: 0x8123_4567_89ab_cdef,
    }
}

/// Multi-byte fields get values whose bytes differ, so a byte-order slip
/// anywhere changes the encoding.
fn proof_input(c: &Credential) -> ProofInput<'_> {
    ProofInput {
        context: PROOF_CONTEXT,
        domain: ProofDomain::Redirect,
        cred: c,
        agent: "ma-b",
        node_addr: [10, 2, 0, 77],
        seq: 0x0102_0304_0506_0708,
    }
}

/// The key of [`cred`] (the issuer drew it; the node has it from the
/// issuer's reply).
const CRED_KEY: [u8; 32] = [0xc7; 32];

fn proof() -> Proof {
    let c = cred();
    prove(&CRED_KEY, &proof_input(&c)).expect("proof fits")
}

fn reply_cred() -> Credential {
    Credential {
        addr: [10, 2, 0, 77],
        issuer: id("ma-b"),
        serial: 0x0a0b_0c0d_0e0f_1011,
    }
}

/// The key of the credential in the golden reply, before boxing.
const REPLY_CRED_KEY: [u8; 32] = [0x3e; 32];

fn envelope<T>(msg: T) -> Authed<T> {
    Authed {
        sender: id("ma-b"),
        instance: 0x6543_2101_0f1e_2d3c,
        seq: 0x0000_0102_0304_0506,
        echo: 0x1122_3344_5566_7788,
        msg,
    }
}

fn messages() -> Vec<(&'static str, Message)> {
    let node = *node_key().pk;
    vec![
        (
            "advertisement",
            Message::Advertisement(Advertisement {
                agent: id("ma-a"),
                provider: Provider::from("Alpha Net"),
                endpoint: [100, 64, 1, 2],
                dh: agent_dh().1,
                instance: 0x6543_2100_0f1e_2d3c,
                seq: 0x0001_0203,
                lifetime_s: 0x0f0e,
                solicited: Some(Solicited {
                    nonce: 0xdead_beef_0bad_f00d,
                    cookie: *b"cookie-of-16-byt",
                }),
            }),
        ),
        (
            "solicitation",
            Message::Solicitation(Solicitation {
                nonce: 0xdead_beef_0bad_f00d,
                node,
            }),
        ),
        (
            "registration",
            Message::Registration(Registration {
                req_id: 0x1234_5678_9abc_def0,
                node,
                addr: [10, 2, 0, 77],
                mac: [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30],
                seq: 0x0102_0304_0506_0708,
                cookie: *b"cookie-of-16-byt",
                bindings: heapless::Vec::from_slice(&[OldBinding {
                    cred: cred(),
                    proof: proof(),
                }])
                .unwrap(),
                tag: [0; 16],
            }),
        ),
        (
            "registration_reply",
            Message::RegistrationReply(RegistrationReply {
                req_id: 0x1234_5678_9abc_def0,
                status: Status::Ok,
                cred: Some(reply_cred()),
                lifetime_s: 300,
                results: heapless::Vec::from_slice(&[
                    BindingResult {
                        addr: [10, 1, 0, 50],
                        status: Status::Ok,
                    },
                    BindingResult {
                        addr: [10, 3, 0, 9],
                        status: Status::AddressInUse,
                    },
                ])
                .unwrap(),
                cookie: Some(*b"next-cookie-16-b"),
                cred_key: box_cred_key(&session(), &reply_cred(), &REPLY_CRED_KEY),
                mac: [0; 16],
            }),
        ),
        (
            "release",
            Message::Release(Release {
                req_id: 0x7fff_fffe_0000_0001,
                node,
                cred: cred(),
                node_addr: [10, 2, 0, 77],
                seq: 0x0102_0304_0506_0709,
                cookie: *b"next-cookie-16-b",
                tag: [0; 16],
            }),
        ),
        (
            "release_reply",
            Message::ReleaseReply(ReleaseReply {
                req_id: 0x7fff_fffe_0000_0001,
                addr: [10, 1, 0, 50],
                status: Status::Replay,
                mac: [0; 16],
            }),
        ),
        (
            "tunnel_request",
            Message::TunnelRequest(envelope(TunnelRequest {
                req_id: 0x0102_0304_0506_0708,
                node,
                cred: cred(),
                node_addr: [10, 2, 0, 77],
                seq: 0x0102_0304_0506_0708,
                proof: proof(),
                lifetime_s: 0x0102,
            })),
        ),
        (
            "tunnel_reply",
            Message::TunnelReply(envelope(TunnelReply {
                req_id: 0x0102_0304_0506_0708,
                addr: [10, 1, 0, 50],
                status: Status::NoCapacity,
                lifetime_s: 0xfffe,
            })),
        ),
        (
            "tunnel_release",
            Message::TunnelRelease(envelope(TunnelRelease {
                req_id: 0xfedc_ba98_7654_3210,
                addr: [10, 1, 0, 50],
            })),
        ),
        (
            "tunnel_release_reply",
            Message::TunnelReleaseReply(envelope(TunnelReleaseReply {
                req_id: 0xfedc_ba98_7654_3210,
                addr: [10, 1, 0, 50],
                status: Status::UnknownCredential,
            })),
        ),
        (
            "peer_challenge",
            Message::PeerChallenge(envelope(PeerChallenge {
                req_id: 0x0102_0304_0506_0708,
                nonce: 0x0f0e_0d0c_0b0a_0908,
            })),
        ),
        (
            "peer_hello",
            Message::PeerHello(envelope(PeerHello {
                req_id: 0x1112_1314_1516_1718,
            })),
        ),
        (
            "peer_move_challenge",
            Message::PeerMoveChallenge(envelope(PeerMoveChallenge {
                req_id: 0x1112_1314_1516_1718,
                nonce: 0x0f0e_0d0c_0b0a_0908,
                addr: [100, 64, 2, 3],
            })),
        ),
        (
            "peer_hello_reply",
            Message::PeerHelloReply(envelope(PeerHelloReply {
                req_id: 0x1112_1314_1516_1718,
            })),
        ),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Everything this implementation produces now, as (name, bytes).
/// The agent's X25519 key pair of the golden run (secret, public).
fn agent_dh() -> ([u8; 32], [u8; 32]) {
    agent_dh_keys([0x6b; 32]).expect("a key pair")
}

/// The node's session with the golden agent run (X25519 of the agent's
/// run key and the node's converted key).
fn session() -> [u8; 32] {
    let (sk, pk) = agent_dh();
    agent_session(&sk, &pk, &node_key().pk).expect("a session")
}

/// The messages sealed under the session: both ways between node and agent.
fn is_sealed(m: &Message) -> bool {
    matches!(
        m,
        Message::Registration(_)
            | Message::RegistrationReply(_)
            | Message::Release(_)
            | Message::ReleaseReply(_)
    )
}

fn produced() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let session = session();
    let pk = agent_dh().1;
    let node_side = node_session(&node_key().sk, &node_key().pk, &pk).expect("a session");
    assert_eq!(session, node_side, "both sides derive the same key");
    for (name, m) in messages() {
        let mut d = encode(&m, Some(&PEER_KEY)).expect("encodes");
        if is_sealed(&m) {
            seal_reply(&mut d, &session);
            assert!(reply_authentic(&d, &session));
        }
        out.push((name.to_string(), d.to_vec()));
    }
    out.push(("session_key".into(), session.to_vec()));
    let c = cred();
    let input = proof_input(&c);
    out.push((
        "proof_bytes".into(),
        proof_bytes(&input).expect("fits").to_vec(),
    ));
    out.push(("proof".into(), proof().0.to_vec()));
    out.push(("node_key".into(), node_key().pk.to_vec()));
    out
}

fn golden() -> Vec<(String, Vec<u8>)> {
    GOLDEN
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, h) = l.split_once(' ').expect("`name hex` lines");
            (name.to_string(), unhex(h.trim()))
        })
        .collect()
}

#[test]
fn encodings_match_golden_bytes() {
    let now = produced();
    if std::env::var_os("SIMS_BLESS_GOLDEN").is_some() {
        let mut text = String::from(
            "# SIMS wire format, version 3: golden encodings (tests/golden.rs).\n\
             # One `name hex` per line. Regenerate only for a deliberate wire change:\n\
             # SIMS_BLESS_GOLDEN=1 cargo test -p sims-proto --test golden\n",
        );
        for (name, b) in &now {
            text.push_str(&format!("{name} {}\n", hex(b)));
        }
        std::fs::write(GOLDEN_PATH, text).expect("write golden file");
        eprintln!("wrote {GOLDEN_PATH}");
        return;
    }
    let want = golden();
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&now), names(&want), "golden file lists other cases");
    for ((name, got), (_, want)) in now.iter().zip(&want) {
        assert_eq!(
            hex(got),
            hex(want),
            "{name}: this build encodes differently from the golden bytes"
        );
    }
}

#[test]
fn golden_bytes_decode() {
    let want = golden();
    let bytes = |n: &str| {
        want.iter()
            .find(|(name, _)| name == n)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("{n} missing from the golden file"))
    };
    let session = session();
    assert_eq!(bytes("session_key"), session.to_vec(), "golden session key");
    for (name, m) in messages() {
        let b = bytes(name);
        // Replies carry their seal; the message otherwise is the same.
        let mut got = decode(&b).expect("decodes");
        if is_sealed(&got) {
            assert!(reply_authentic(&b, &session), "{name}: golden seal");
            assert!(
                !reply_authentic(&b, &[0; 32]),
                "{name}: seal under another key"
            );
        }
        match &mut got {
            Message::Registration(r) => r.tag = [0; 16],
            Message::RegistrationReply(r) => {
                r.mac = [0; 16];
                let c = r.cred.clone().expect("a credential");
                assert_eq!(
                    box_cred_key(&session, &c, &r.cred_key),
                    REPLY_CRED_KEY,
                    "the credential key unboxes"
                );
            }
            Message::Release(r) => r.tag = [0; 16],
            Message::ReleaseReply(r) => r.mac = [0; 16],
            _ => {}
        }
        assert_eq!(got, m, "{name}: decoding golden bytes");
        if m.msg_type().is_peer() {
            assert!(verify_tag(&b, &PEER_KEY), "{name}: golden tag");
            assert!(!verify_tag(&b, &[0; 32]), "{name}: tag under another key");
        }
        // And back: re-encoding what was decoded gives the same bytes.
        let again = encode(&decode(&b).unwrap(), Some(&PEER_KEY)).unwrap();
        assert_eq!(&again[..], &b[..], "{name}: re-encoding");
    }
    let node: [u8; 32] = bytes("node_key").try_into().unwrap();
    let p = Proof(bytes("proof").try_into().unwrap());
    let c = cred();
    let check = |input: ProofInput, key: &[u8; 32]| {
        NodeProof {
            node: &node,
            input,
            proof: &p,
        }
        .verify(key)
    };
    assert!(check(proof_input(&c), &CRED_KEY), "golden proof");
    assert!(!check(proof_input(&c), &[0; 32]), "under another key");
    let other = ProofInput {
        seq: 0x0102_0304_0506_0709,
        ..proof_input(&c)
    };
    assert!(!check(other, &CRED_KEY), "proof for another seq");
}
