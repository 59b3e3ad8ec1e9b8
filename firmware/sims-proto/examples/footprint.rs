//! Memory footprint of the agent core, for `cargo xtask bench footprint`
//! (docs/BENCHMARKS.md, "Footprint"). Built for each router target with
//! the release profile and run there (QEMU user mode, or natively).
//!
//! `footprint <n>` drives one `sims_proto::agent::Agent` (the state
//! machine inside simsd) through the protocol, without sockets: `n` nodes
//! with distinct keys register on its LAN, each presenting a credential
//! issued by its roaming peer, so the agent asks the peer to redirect the
//! address; the peer's tagged TunnelReply is crafted here and handed back.
//! Each of the `n` registrations leaves a visitor binding and a credential
//! the agent issued for the node's current address, as in simsd. Time is
//! simulated (200 ms per registration, timers run), so the agent's tables
//! of answered registrations expire as they would.
//!
//! `--save <file>` also writes the agent's saved state there, in simsd's
//! state-file format: simsd started with it (and the config of
//! `cargo xtask bench footprint`) restores the bindings and installs them
//! in the kernel, which is how simsd's own RSS with `n` bindings is
//! measured.
//!
//! It prints, idle (agent created, first advertisement sent) and with the
//! bindings in place, one `key=value` line:
//! - `heap_live` / `heap_peak`: bytes allocated by Rust (a counting global
//!   allocator), live at the end / at most at any time;
//! - `vmhwm_kib` / `vmrss_kib`: the process's peak and current RSS from
//!   /proc/self/status. Natively that is this program; under QEMU user
//!   mode it is the emulator's process, so it is not the guest's figure;
//! - `resident_kib`: pages resident in this program's own mappings
//!   (/proc/self/maps, which QEMU emulates for the guest, and mincore(2)),
//!   the largest value seen while bindings were added. Under QEMU this is
//!   the guest's RSS; natively it is close to VmRSS (file-backed pages
//!   count when they are in the page cache, so it errs high).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use sims_proto::agent::{Action, Agent, AgentConfig, EmptyLan, Now, PeerConfig};
use sims_proto::msg::{
    self, AgentId, Authed, Credential, Message, OldBinding, ProofDomain, ProofInput, Registration,
    Solicitation, Status, TunnelReply,
};
use sims_proto::Prefix;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            grew(new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

extern "C" {
    fn mincore(addr: *mut core::ffi::c_void, len: usize, vec: *mut u8) -> i32;
    fn getpagesize() -> i32;
}

/// KiB resident in this program's mappings (see the module comment).
fn resident_kib() -> u64 {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    // SAFETY: no preconditions.
    let page = unsafe { getpagesize() }.max(1) as usize;
    let mut pages = 0u64;
    let mut vec = Vec::new();
    for line in maps.lines() {
        if line.contains("[vvar") || line.contains("[vsyscall]") {
            continue;
        }
        let Some((range, _)) = line.split_once(' ') else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        if b <= a {
            continue;
        }
        let n = (b - a).div_ceil(page);
        vec.clear();
        vec.resize(n, 0u8);
        // SAFETY: [a, b) is a mapping of this process; vec has one byte per page.
        if unsafe { mincore(a as *mut _, b - a, vec.as_mut_ptr()) } == 0 {
            pages += vec.iter().filter(|v| **v & 1 != 0).count() as u64;
        }
    }
    pages * page as u64 / 1024
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn report(what: &str, bindings: usize, resident: u64) {
    println!(
        "footprint-core {what} bindings={bindings} heap_live={} heap_peak={} \
         vmhwm_kib={} vmrss_kib={} resident_kib={resident}",
        LIVE.load(Ordering::Relaxed),
        PEAK.load(Ordering::Relaxed),
        status_kib("VmHWM:"),
        status_kib("VmRSS:"),
    );
}

const PEER_KEY: [u8; 32] = [0x42; 32];
const AGENT: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(100, 64, 2, 2);

/// The n-th node's addresses: (on our LAN now, issued by the peer before).
fn addrs(i: usize) -> (Ipv4Addr, Ipv4Addr) {
    let (hi, lo) = ((i / 250) as u8, (i % 250) as u8 + 2);
    (Ipv4Addr::new(10, 1, hi, lo), Ipv4Addr::new(10, 2, hi, lo))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, save) = match args.as_slice() {
        [n] => (n.parse::<usize>(), None),
        [n, opt, path] if opt == "--save" => (n.parse(), Some(path.clone())),
        _ => (Ok(usize::MAX), None),
    };
    let n = match n {
        Ok(n) if n <= 60_000 => n,
        _ => {
            eprintln!("usage: footprint <bindings (0..60000)> [--save <state file>]");
            return ExitCode::from(2);
        }
    };
    let mut cfg = AgentConfig::new(AgentId::from("ma-a"), AGENT);
    cfg.lan_prefixes = vec![Prefix::new(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap()];
    cfg.peers.push(PeerConfig {
        id: AgentId::from("ma-b"),
        endpoint: PEER,
        port: sims_proto::DEFAULT_PORT,
        prefixes: vec![Prefix::new(Ipv4Addr::new(10, 2, 0, 0), 16).unwrap()],
        key: PEER_KEY,
    });
    // Room for n: an operator expecting this many sets these in UCI.
    cfg.max_bindings = cfg.max_bindings.max(n);
    cfg.max_per_peer = cfg.max_per_peer.max(n);
    cfg.max_credentials = cfg.max_credentials.max(n);

    let mut now = Now::ms(1_000);
    let mut agent = Agent::new(cfg, [7; 32]);
    let mut out: Vec<Action> = Vec::with_capacity(16);
    agent.handle_timeout(now, &mut out);
    out.clear();
    let mut resident = resident_kib();
    report("idle", 0, resident);

    let lan = EmptyLan;
    let peer_src = SocketAddrV4::new(PEER, sims_proto::DEFAULT_PORT);
    for i in 0..n {
        now.ms += 200;
        if agent.poll_timeout().is_some_and(|t| now.ms >= t) {
            agent.handle_timeout(now, &mut out);
            out.clear();
        }
        let (cur, old) = addrs(i);
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        let cred = Credential {
            addr: old.octets(),
            issuer: AgentId::from("ma-b"),
            serial: i as u64 + 1,
        };
        let input = ProofInput::new(ProofDomain::Redirect, &cred, "ma-a", cur.octets(), 1);
        // The peer's answer is crafted below: any proof does.
        let Some(proof) = msg::prove(&seed, &input) else {
            eprintln!("cannot make proof {i}");
            return ExitCode::FAILURE;
        };
        let mut bindings = heapless::Vec::new();
        let _ = bindings.push(OldBinding {
            cred: cred.clone(),
            proof,
        });
        // The node solicits first: the answer brings its cookie.
        let src = SocketAddrV4::new(cur, sims_proto::DEFAULT_PORT);
        let sol = Message::Solicitation(Solicitation {
            nonce: i as u64 + 1,
            node: *kp.pk,
        });
        let data = msg::encode(&sol, None).expect("solicitation encodes");
        agent.handle_datagram(now, src, true, &data, &lan, &mut out);
        let cookie = out.iter().find_map(|a| match a {
            Action::Send { data, .. } => match msg::decode(data) {
                Ok(Message::Advertisement(a)) => a.solicited.map(|s| s.cookie),
                _ => None,
            },
            _ => None,
        });
        out.clear();
        let Some(cookie) = cookie else {
            eprintln!("solicitation {i}: no cookie");
            return ExitCode::FAILURE;
        };
        let reg = Message::Registration(Registration {
            req_id: i as u64 + 1,
            node: *kp.pk,
            addr: cur.octets(),
            mac: [2, 0, 0, 0, (i >> 8) as u8, i as u8],
            seq: 1,
            cookie,
            bindings,
            tag: [0; 16],
        });
        let mut data = msg::encode(&reg, None).expect("registration encodes");
        let Some(session) = msg::node_session(&kp.sk, &kp.pk, &agent.dh_public()) else {
            eprintln!("no session for node {i}");
            return ExitCode::FAILURE;
        };
        msg::seal_reply(&mut data, &session);
        agent.handle_datagram(now, src, true, &data, &lan, &mut out);
        // The agent's TunnelRequest to the peer, answered as the peer would.
        let req_id = out.iter().find_map(|a| match a {
            Action::Send { dst, data } if *dst.ip() == PEER => match msg::decode(data) {
                Ok(Message::TunnelRequest(r)) => Some(r.msg.req_id),
                _ => None,
            },
            _ => None,
        });
        out.clear();
        let Some(req_id) = req_id else {
            eprintln!("registration {i}: no TunnelRequest to the peer");
            return ExitCode::FAILURE;
        };
        let reply = Message::TunnelReply(Authed {
            sender: AgentId::from("ma-b"),
            instance: 2_000,
            seq: i as u64 + 1,
            echo: 0,
            msg: TunnelReply {
                req_id,
                addr: old.octets(),
                status: Status::Ok,
                lifetime_s: 300,
            },
        });
        let data = msg::encode(&reply, Some(&PEER_KEY)).expect("reply encodes");
        agent.handle_datagram(now, peer_src, false, &data, &lan, &mut out);
        out.clear();
        if i % 100 == 99 {
            resident = resident.max(resident_kib());
        }
    }
    let count = agent.binding_count(0);
    if count != n {
        eprintln!("expected {n} bindings, the agent holds {count}");
        return ExitCode::FAILURE;
    }
    resident = resident.max(resident_kib());
    report("loaded", count, resident);
    if let Some(path) = save {
        // simsd's state file: simsd restores these bindings at start.
        if let Err(e) = std::fs::write(&path, agent.save(now)) {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
