//! What the agent asks of its platform: the [`Action`]s it emits (send a
//! datagram, change kernel state), and the [`LanView`] query it makes.

use core::net::{Ipv4Addr, SocketAddrV4};

use super::PeerIdx;
use crate::msg::Datagram;

/// What the LAN looks like now: the one question the agent asks its
/// platform *during* a call (`handle_datagram`), synchronously, instead of
/// emitting an action and waiting for the answer as an event.
///
/// Asked when a peer requests a redirect of one of our addresses: if a
/// live neighbour other than the credential's holder has the address on
/// our LAN now, the redirect would steal it from that host. The answer
/// must be the LAN's state at that moment (a later event could be stale
/// by a move), and it is one neighbour-table lookup (a netlink
/// request/answer of ~10 µs in simsd), so the core stays free of I/O while
/// the platform answers in place. Implementations must not call back into
/// the agent.
pub trait LanView {
    /// The link-layer address of a live neighbour holding `addr`, if any.
    fn holder(&self, addr: Ipv4Addr) -> Option<[u8; 6]>;
}

/// A LAN with nobody on it (tests, or platforms without a neighbour table).
pub struct EmptyLan;
impl LanView for EmptyLan {
    fn holder(&self, _: Ipv4Addr) -> Option<[u8; 6]> {
        None
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a datagram (unicast, to a node on the LAN or to a peer).
    Send {
        dst: SocketAddrV4,
        data: Datagram,
    },
    /// Broadcast a datagram on the LAN (advertisements).
    BroadcastLan {
        data: Datagram,
    },
    /// The first binding with this peer appears: create its tunnel.
    TunnelUp {
        peer: PeerIdx,
    },
    /// The last binding with this peer is gone: remove its tunnel.
    TunnelDown {
        peer: PeerIdx,
    },
    /// Route our native `addr` into the tunnel to `peer`.
    HomeAdd {
        addr: Ipv4Addr,
        peer: PeerIdx,
    },
    HomeDel {
        addr: Ipv4Addr,
        peer: PeerIdx,
    },
    /// Carry the visiting `addr` (issued by `peer`) through the tunnel;
    /// the node is on our LAN at link-layer address `mac` (so the platform
    /// can skip ARP, whose retry timer could stall the first packets).
    VisitorAdd {
        addr: Ipv4Addr,
        peer: PeerIdx,
        mac: [u8; 6],
    },
    VisitorDel {
        addr: Ipv4Addr,
        peer: PeerIdx,
    },
    /// The peer's WAN address changed to `addr` (it answered a challenge
    /// sent there): re-point its tunnel and its firewall opening.
    PeerEndpoint {
        peer: PeerIdx,
        addr: Ipv4Addr,
    },
}
