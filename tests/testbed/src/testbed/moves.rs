//! The node's moves: its one link leaves one agent's LAN and joins
//! another's (as wlan0 re-associating), then DHCP runs.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::{Ma, Testbed};
use crate::sys::Result;
use crate::traffic::mono_ns;

/// What a move did and when (CLOCK_MONOTONIC ns).
#[derive(Clone, Debug)]
pub struct MoveInfo {
    pub from: Option<Ma>,
    pub to: Ma,
    pub link_down_ns: u64,
    pub link_up_ns: u64,
    /// When the udhcpc script configured the address (if it could tell).
    pub bound_ns: Option<u64>,
    /// When the one-shot udhcpc exited.
    pub dhcp_done_ns: u64,
    /// The address DHCP gave.
    pub addr: Ipv4Addr,
}

impl MoveInfo {
    pub fn dhcp_ms(&self) -> f64 {
        (self.dhcp_done_ns.saturating_sub(self.link_up_ns)) as f64 / 1e6
    }
}

impl Testbed {
    /// Takes the node's link down (like leaving the Wi-Fi), without joining
    /// another network.
    pub fn detach(&mut self) -> Result<()> {
        self.agent(self.location)
            .ip(&["link", "set", "mnport", "down"])?;
        self.agent(self.location)
            .ip(&["link", "set", "mnport", "nomaster"])?;
        self.attached = false;
        Ok(())
    }

    /// Moves the node's link to `to`'s LAN (down, move the peer end,
    /// enslave, up — like wlan0 re-associating) and runs a one-shot DHCP
    /// client in the node, as a network manager would. Returns when the
    /// new address is configured.
    pub fn move_to(&mut self, to: Ma) -> Result<MoveInfo> {
        if !self.has(to) {
            return Err(format!("no agent {}", to.id()));
        }
        let from = self.attached.then_some(self.location);
        let cur = self.agent(self.location);
        cur.ip(&["link", "set", "mnport", "down"])?;
        let link_down_ns = mono_ns();
        if self.location != to {
            cur.ip(&["link", "set", "mnport", "netns", &self.agent(to).name])?;
            self.location = to;
        }
        self.attached = false;
        self.agent(to)
            .ip(&["link", "set", "mnport", "master", "br-lan", "up"])?;
        let link_up_ns = mono_ns();
        self.attached = true;
        let _ = fs::write(self.dir.join("link_up_ns"), link_up_ns.to_string());
        let (addr, bound_ns) = self.dhcp()?;
        let dhcp_done_ns = mono_ns();
        Ok(MoveInfo {
            from,
            to,
            link_down_ns,
            link_up_ns,
            bound_ns,
            dhcp_done_ns,
            addr,
        })
    }

    /// Path of the file holding the last link-up time (for `probe`).
    pub fn link_up_file(&self) -> PathBuf {
        self.dir.join("link_up_ns")
    }
}
