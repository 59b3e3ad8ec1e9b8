//! The node's second interface (`Options::dock`): `mn1`, a dock's
//! Ethernet, plugged into one agent's LAN and unplugged; and the Wi-Fi
//! lost while docked. Each as the laptop sees it: carrier, then its DHCP
//! client configures the address (metric 100, below the Wi-Fi's 600) or,
//! at carrier loss, deconfigures it (the client's deconfig: the address
//! and the interface's default routes go).

use std::net::Ipv4Addr;

use super::{Testbed, DOCK_IFACE, MN_IFACE};
use crate::sys::Result;

/// NetworkManager's metric for Ethernet (Wi-Fi's is 600).
pub const DOCK_METRIC: u32 = 100;

impl Testbed {
    fn dock_agent(&self) -> Result<super::Ma> {
        self.opts
            .dock
            .ok_or_else(|| "no dock in this testbed (Options::dock)".to_string())
    }

    /// Plugs the dock in (its LAN is `Options::dock`'s) and runs DHCP on
    /// it; returns its address.
    pub fn dock_in(&mut self) -> Result<Ipv4Addr> {
        let x = self.dock_agent()?;
        self.agent(x)
            .ip(&["link", "set", "dockport", "master", "br-lan", "up"])?;
        Ok(self.udhcpc_on(DOCK_IFACE, Some(DOCK_METRIC))?.0)
    }

    /// Unplugs the dock: carrier lost, the DHCP client deconfigures it.
    pub fn dock_out(&mut self) -> Result<()> {
        let x = self.dock_agent()?;
        self.agent(x).ip(&["link", "set", "dockport", "down"])?;
        self.deconfig(DOCK_IFACE)
    }

    /// The Wi-Fi is lost (out of range): the node's link leaves its LAN and
    /// the DHCP client deconfigures it.
    pub fn wifi_lost(&mut self) -> Result<()> {
        self.detach()?;
        self.deconfig(MN_IFACE)
    }

    /// What udhcpc.script's `deconfig` does on `iface`.
    fn deconfig(&self, iface: &str) -> Result<()> {
        let mn = self.mn();
        mn.ip(&["-4", "addr", "flush", "dev", iface])?;
        for _ in 0..16 {
            if mn
                .ip(&["-4", "route", "del", "default", "dev", iface])
                .is_err()
            {
                break;
            }
        }
        Ok(())
    }
}
