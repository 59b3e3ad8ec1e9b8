//! `sims-traffic`: real traffic for the SIMS testbed (std + libc only).
//!
//! * `serve --listen 0.0.0.0:5001` — TCP server (checked streams, whoami) plus
//!   a UDP echo on the same port.
//! * `stream --connect ADDR [--bind IP] --dir up|down --rate B/s --duration-ms N
//!   [--until-file P] [--id S] [--timeout-ms N] [--progress-ms N]` — one
//!   checked stream; ends with one JSON line, exit status 1 if not verified.
//! * `whoami --connect ADDR [--bind IP]` — prints `{"local":..,"seen":..}`.
//! * `probe --to ADDR --bind IP --iface IF [--interval-us N] [--timeout-ms N]
//!   [--addr-timeout-ms N] [--link-up-file P] [--t0 NS]` — handover probe.
//! * `now` — prints CLOCK_MONOTONIC in nanoseconds.
//!
//! The stream is consecutive 8-byte big-endian counters, so the receiver can
//! verify every byte. Every loop is bounded in time.

//! One file per subcommand: serve.rs (the CN side), stream.rs (`stream`
//! and `whoami`, the node side), probe.rs; sockets.rs has the socket
//! helpers they share.

mod probe;
mod serve;
mod sockets;
mod stream;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use sims_testbed::traffic::{json_escape, mono_ns};

use probe::probe;
use serve::serve;
use stream::{stream, whoami};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("stream") => stream(&args[1..]),
        Some("whoami") => whoami(&args[1..]),
        Some("probe") => probe(&args[1..]),
        Some("now") => {
            println!("{}", mono_ns());
            Ok(0)
        }
        _ => {
            eprintln!(
                "usage: sims-traffic serve|stream|whoami|probe|now [options]\n\
                 see the source header (tests/testbed/src/bin/sims-traffic/main.rs) for options"
            );
            Ok(2)
        }
    };
    match res {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("sims-traffic: {e}");
            std::process::exit(2)
        }
    }
}

pub(crate) type Res<T> = Result<T, String>;

/// The least a paced stream writes at once: 1 KiB, or 10 ms of its rate
/// if that is less. Writing whatever the clock allows made a hot loop of
/// 1-byte writes (TCP_NODELAY: a segment each, ~150,000 a second at
/// 200 KB/s), a flood no real application sends, which swamped busybox
/// udhcpc's unfiltered packet socket once the relay worked during DHCP.
pub(crate) fn write_quantum(rate: u64) -> u64 {
    (rate / 100).clamp(1, 1024)
}

pub(crate) struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String], known: &[&str]) -> Res<Opts> {
        let mut m = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let key = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {a:?}"))?;
            if !known.contains(&key) {
                return Err(format!("unknown option --{key}"));
            }
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            m.insert(key.to_string(), v.clone());
        }
        Ok(Opts(m))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn req(&self, k: &str) -> Res<&str> {
        self.get(k).ok_or_else(|| format!("--{k} is required"))
    }
    fn num(&self, k: &str, default: u64) -> Res<u64> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{k}: bad number {v:?}")),
        }
    }
    fn addr(&self, k: &str) -> Res<SocketAddrV4> {
        let v = self.req(k)?;
        v.parse().map_err(|_| format!("--{k}: bad address {v:?}"))
    }
    fn ip(&self, k: &str) -> Res<Option<Ipv4Addr>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{k}: bad IPv4 address {v:?}")),
        }
    }
}

/// `null` or the JSON string.
pub(crate) fn json_str_opt(v: &Option<String>) -> String {
    match v {
        None => "null".into(),
        Some(s) => format!("\"{}\"", json_escape(s)),
    }
}
