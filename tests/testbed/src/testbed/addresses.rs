//! The address plan: the agents ([`Ma`]) and everything numbered after
//! them, the CN, and the node's interface.

use std::net::Ipv4Addr;

/// The correspondent node (runs `sims-traffic serve`).
pub const CN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const CN_PORT: u16 = 5001;
pub const MN_MAC: &str = "02:00:00:00:00:50";
pub const MN_IFACE: &str = "mn0";
/// The node's second interface (a dock's Ethernet; `Options::dock`).
pub const DOCK_IFACE: &str = "mn1";
pub const DOCK_MAC: &str = "02:00:00:00:00:51";
/// A guest's one interface (in its namespace `guest-<x>`).
pub const GUEST_IFACE: &str = "eth0";

/// One of the three mobility agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ma {
    A,
    B,
    C,
}

impl Ma {
    pub const ALL: [Ma; 3] = [Ma::A, Ma::B, Ma::C];

    /// 1, 2, 3: the X in all its addresses.
    pub fn n(self) -> u8 {
        match self {
            Ma::A => 1,
            Ma::B => 2,
            Ma::C => 3,
        }
    }
    pub fn letter(self) -> char {
        (b'a' + self.n() - 1) as char
    }
    /// Agent id and namespace role: `ma-a`.
    pub fn id(self) -> String {
        format!("ma-{}", self.letter())
    }
    pub fn from_id(id: &str) -> Option<Ma> {
        Ma::ALL.into_iter().find(|m| m.id() == id)
    }
    pub fn wan_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, self.n(), 2)
    }
    pub fn inet_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, self.n(), 1)
    }
    pub fn lan_gw(self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n(), 0, 1)
    }
    pub fn lan_prefix(self) -> String {
        format!("10.{}.0.0/24", self.n())
    }
    /// The address dnsmasq gives the mobile node on this agent's LAN.
    pub fn node_addr(self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n(), 0, 50)
    }
    /// A guest's static address on this agent's LAN (outside dnsmasq's
    /// range and apart from the node's): `10.X.0.66`.
    pub fn guest_addr(self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n(), 0, 66)
    }
    /// A guest's MAC on this agent's LAN: `02:00:00:00:0X:66`.
    pub fn guest_mac(self) -> String {
        format!("02:00:00:00:0{}:66", self.n())
    }
    /// A guest's namespace role: `guest-a`.
    pub fn guest_role(self) -> String {
        format!("guest-{}", self.letter())
    }
    pub fn provider(self) -> String {
        format!("provider-{}", self.letter())
    }
}

impl std::fmt::Display for Ma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter().to_ascii_uppercase())
    }
}
