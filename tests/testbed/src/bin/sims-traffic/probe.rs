//! `sims-traffic probe`: the handover probe. Waits for the move (the old
//! address stops being the interface's DHCP address), then sends UDP
//! probes from the old one until one is echoed, noting meanwhile when the
//! new address comes: `new_addr_to_echo_ms` is negative when the old
//! address answered first (early registration).

use std::io::{self, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use sims_testbed::traffic::mono_ns;

use crate::sockets::{bind_freebind, wait_readable};
use crate::{Opts, Res};

/// IPv4 addresses (with prefix length) on `iface`.
fn iface_addrs(iface: &str) -> Vec<(Ipv4Addr, u32)> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: p walks the list returned by getifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() != iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null; family checked before the cast.
        if unsafe { (*ifa.ifa_addr).sa_family } as i32 != libc::AF_INET {
            continue;
        }
        // SAFETY: family is AF_INET, so it is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        let plen = if ifa.ifa_netmask.is_null() {
            32
        } else {
            // SAFETY: netmask of an AF_INET address is a sockaddr_in.
            let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
            u32::from_be(m.sin_addr.s_addr).count_ones()
        };
        out.push((addr, plen));
    }
    // SAFETY: ifap came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

pub(crate) fn probe(args: &[String]) -> Res<i32> {
    let o = Opts::parse(
        args,
        &[
            "to",
            "bind",
            "iface",
            "interval-us",
            "timeout-ms",
            "addr-timeout-ms",
            "link-up-file",
            "t0",
        ],
    )?;
    let to = o.addr("to")?;
    let bind = o.ip("bind")?.ok_or("--bind is required")?;
    let iface = o.req("iface")?.to_string();
    let interval = Duration::from_micros(o.num("interval-us", 200)?.max(10));
    let timeout = Duration::from_millis(o.num("timeout-ms", 5000)?);
    let addr_timeout = Duration::from_millis(o.num("addr-timeout-ms", 20_000)?);
    let t0 = o.get("t0").and_then(|v| v.parse::<u64>().ok());

    // Bound to the old address (IP_FREEBIND so this works even if the
    // address is momentarily absent).
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(format!("socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: we own fd.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    bind_freebind(fd, bind).map_err(|e| format!("bind {bind}: {e}"))?;
    println!("ready bind={bind} iface={iface}");
    let _ = io::stdout().flush();

    // 1. Wait for the move: the old address is no longer the interface's
    // DHCP address (the client's deconfig, or a new address).
    let wait_start = Instant::now();
    let new_native = |iface: &str| {
        iface_addrs(iface)
            .into_iter()
            .find(|(a, plen)| *a != bind && *plen < 32)
            .map(|(a, _)| a)
    };
    let mut new_addr = loop {
        let addrs = iface_addrs(&iface);
        if let Some((a, _)) = addrs.iter().find(|(a, plen)| *a != bind && *plen < 32) {
            break Some(*a);
        }
        if !addrs.iter().any(|(a, plen)| *a == bind && *plen < 32) {
            break None;
        }
        if wait_start.elapsed() >= addr_timeout {
            println!(
                "{{\"new_addr\":null,\"echoed\":false,\"error\":\"{bind} still the address of {iface} after {} ms\"}}",
                addr_timeout.as_millis()
            );
            return Ok(1);
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    let mut t_new = new_addr.map(|_| mono_ns());

    // 2. Probe from the old address until echoed: perhaps before the new
    // address comes (early registration), so watch for it meanwhile.
    let nonce = (mono_ns() ^ (std::process::id() as u64) << 32).to_be_bytes();
    let mut seq: u64 = 0;
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    let mut rbuf = [0u8; 64];
    let start = Instant::now();
    let mut next = start;
    let mut next_look = start;
    let mut echo_ns = None;
    while start.elapsed() < timeout {
        let now = Instant::now();
        if new_addr.is_none() && now >= next_look {
            new_addr = new_native(&iface);
            if new_addr.is_some() {
                t_new = Some(mono_ns());
            }
            next_look = now + Duration::from_millis(1);
        }
        if now >= next {
            let mut msg = [0u8; 24];
            msg[..8].copy_from_slice(b"SIMSPRB1");
            msg[8..16].copy_from_slice(&nonce);
            msg[16..].copy_from_slice(&seq.to_be_bytes());
            seq += 1;
            match sock.send_to(&msg, to) {
                Ok(_) => sent += 1,
                Err(_) => send_errors += 1,
            }
            next = now + interval;
        }
        match sock.recv_from(&mut rbuf) {
            Ok((n, _)) if n == 24 && rbuf[..8] == *b"SIMSPRB1" && rbuf[8..16] == nonce => {
                echo_ns = Some(mono_ns());
                break;
            }
            _ => {}
        }
        let left = next.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            let ms = (left.as_micros() / 1000) as i32;
            if ms > 0 {
                wait_readable(fd, ms.min(1));
            } else {
                std::thread::sleep(left.min(Duration::from_micros(50)));
            }
        }
    }
    // Answered before DHCP finished: when did the address come?
    while new_addr.is_none() && wait_start.elapsed() < addr_timeout {
        new_addr = new_native(&iface);
        if new_addr.is_some() {
            t_new = Some(mono_ns());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let (Some(new_addr), Some(t_new)) = (new_addr, t_new) else {
        println!(
            "{{\"new_addr\":null,\"echoed\":{},\"error\":\"no new address on {iface} within {} ms\"}}",
            echo_ns.is_some(),
            addr_timeout.as_millis()
        );
        return Ok(1);
    };
    let link_up = t0.or_else(|| {
        o.get("link-up-file")
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
    });
    let ms = |a: u64, b: u64| (b as f64 - a as f64) / 1e6;
    let fmt_opt = |v: Option<f64>| {
        v.map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "null".into())
    };
    println!(
        "{{\"new_addr\":\"{new_addr}\",\"new_addr_ns\":{t_new},\"echo_ns\":{},\"echoed\":{},\"new_addr_to_echo_ms\":{},\"link_up_to_echo_ms\":{},\"probes_sent\":{sent},\"send_errors\":{send_errors}}}",
        echo_ns.map(|v| v.to_string()).unwrap_or_else(|| "null".into()),
        echo_ns.is_some(),
        fmt_opt(echo_ns.map(|e| ms(t_new, e))),
        fmt_opt(echo_ns.and_then(|e| link_up.map(|l| ms(l, e)))),
    );
    let _ = io::stdout().flush();
    Ok(if echo_ns.is_some() { 0 } else { 1 })
}
