//! The userspace ipip backend's data path (where the kernel has no ipip):
//! packets the kernel routes into a peer's TUN device are sent to the
//! peer over a raw IPPROTO_IPIP socket, and ipip packets from peers are
//! checked and written into the peer's TUN. Packets from a kernel ipip
//! peer are finished first (offload.rs).

use std::io;

use log::debug;
use sims_linux::rawipip::RawIpip;

use super::{offload, Dataplane};

/// What the forwarder dropped on receive, by reason.
#[derive(Clone, Copy, Debug, Default)]
pub struct RxDrops {
    /// ipip packets from an address that is none of our peers' endpoints.
    pub unknown_endpoint: u64,
    /// Outer or inner header not a valid IPv4 packet (or truncated).
    pub malformed: u64,
    /// The receive itself failed (other than "nothing waiting").
    pub errors: u64,
}

/// The raw socket and what it counted.
pub struct Forwarder {
    raw: RawIpip,
    pub drops: RxDrops,
}

impl Forwarder {
    pub fn open(endpoint: std::net::Ipv4Addr) -> io::Result<Self> {
        Ok(Forwarder {
            raw: RawIpip::open(Some(endpoint))?,
            drops: RxDrops::default(),
        })
    }
}

/// Most packets moved per wakeup, so a flood cannot starve the rest.
const BURST: usize = 256;

impl Dataplane {
    /// File descriptors the event loop polls for the userspace backend.
    pub fn raw_fd(&self) -> Option<i32> {
        self.forward.as_ref().map(|f| f.raw.fd())
    }

    /// (slot, TUN fd) of each userspace tunnel that is up.
    pub fn tun_fds(&self) -> Vec<(usize, i32)> {
        (0..self.slots.len())
            .filter_map(|s| Some((s, self.tunnel(s)?.tun.as_ref()?.fd())))
            .collect()
    }

    /// Receive drops of the userspace forwarder (zero for kernel ipip).
    pub fn rx_drops(&self) -> RxDrops {
        self.forward.as_ref().map(|f| f.drops).unwrap_or_default()
    }

    /// Packets the kernel routed into a peer's TUN: encapsulate and send.
    pub fn pump_tun(&mut self, s: usize, buf: &mut [u8]) {
        let Some(remote) = self.peer_slot(s).map(|x| x.remote) else {
            return;
        };
        for _ in 0..BURST {
            let Some(tun) = self.tunnel(s).and_then(|t| t.tun.as_ref()) else {
                return;
            };
            let n = match tun.read(buf) {
                Ok(n) => n,
                Err(_) => return,
            };
            let pkt = &buf[..n];
            if n < 20 || pkt[0] >> 4 != 4 {
                continue;
            }
            if let Some(f) = self.forward.as_ref() {
                match f.raw.send(pkt, remote) {
                    Ok(()) => {
                        if let Some(x) = self.slots[s].as_mut() {
                            x.traffic.tx_packets += 1;
                            x.traffic.tx_bytes += n as u64;
                        }
                    }
                    Err(e) => debug!("ipip send to {remote}: {e}"),
                }
            }
        }
    }

    /// Protocol-4 packets from the WAN: accept only from peer endpoints,
    /// decapsulate into that peer's TUN (the nft guard then checks sources).
    pub fn pump_raw(&mut self, buf: &mut [u8]) {
        for _ in 0..BURST {
            let Some(f) = self.forward.as_mut() else {
                return;
            };
            let (src, inner) = match f.raw.recv(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    f.drops.malformed += 1;
                    continue;
                }
                Err(e) => {
                    f.drops.errors += 1;
                    debug!("ipip receive: {e}");
                    continue;
                }
            };
            let Some(slot) = self.slots.iter_mut().flatten().find(|x| x.remote == src) else {
                f.drops.unknown_endpoint += 1;
                continue;
            };
            let inner = &mut buf[inner];
            let t = &mut slot.traffic;
            let Some(tun) = slot.tunnel.as_ref().and_then(|t| t.tun.as_ref()) else {
                t.rx_dropped += 1;
                continue;
            };
            if inner.len() < 20 || inner[0] >> 4 != 4 {
                t.rx_dropped += 1;
                continue;
            }
            // A kernel ipip peer's packets may still need what its device
            // offloads would have done (see offload.rs).
            let mtu = self.cfg.tunnel_mtu as usize;
            let segments = if inner.len() > mtu {
                offload::segment_tcp(inner, mtu)
            } else {
                None
            };
            let mut write = |pkt: &[u8]| match tun.write(pkt) {
                Ok(_) => {
                    t.rx_packets += 1;
                    t.rx_bytes += pkt.len() as u64;
                }
                Err(_) => t.rx_dropped += 1,
            };
            match segments {
                Some(segs) => segs.iter().for_each(|s| write(s)),
                None => {
                    offload::complete_partial_checksum(inner);
                    write(inner);
                }
            }
        }
    }
}
