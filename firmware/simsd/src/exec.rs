//! The agent's actions carried out: datagrams onto the LAN or WAN socket,
//! kernel changes into the data plane; and the agent's one question to
//! the platform (who holds an address on the LAN) answered from the
//! neighbour table.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use log::{error, warn};
use sims_proto::agent::{Action, LanView, Sink};

use crate::config::Config;
use crate::dataplane::Dataplane;

/// Neighbour lookups for the agent's "held by another host" check.
pub struct Lan<'a, 'd>(pub &'a RefCell<&'d mut Dataplane>);
impl LanView for Lan<'_, '_> {
    fn holder(&self, addr: Ipv4Addr) -> Option<[u8; 6]> {
        self.0.borrow_mut().lan_holder(addr)
    }
}

/// Carries out the agent's actions as it emits them: a burst (restoring
/// thousands of bindings, a round of retransmissions) never waits in a
/// list, where each action would hold up to a datagram (measured: 1.2 MB
/// of peak heap for a restore of 1,000 bindings).
pub struct Exec<'a, 'd> {
    pub dp: &'a RefCell<&'d mut Dataplane>,
    pub cfg: &'a Config,
    pub lan: &'a UdpSocket,
    pub wan: &'a UdpSocket,
    /// Anything was emitted.
    pub emitted: bool,
    /// A kernel change was applied (a binding came or went).
    pub kernel: bool,
    /// A kernel change failed since the agent last asked (`Sink::failed`).
    pub failed: bool,
}

impl Sink<Action> for Exec<'_, '_> {
    fn push(&mut self, a: Action) {
        self.emitted = true;
        match a {
            Action::Send { dst, data } => {
                let lan = self
                    .cfg
                    .agent
                    .lan_prefixes
                    .iter()
                    .any(|p| p.contains(*dst.ip()));
                let sock = if lan { self.lan } else { self.wan };
                if let Err(e) = sock.send_to(&data, dst) {
                    warn!("send to {dst}: {e}");
                }
            }
            Action::BroadcastLan { data } => {
                let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, self.cfg.agent.port);
                if let Err(e) = self.lan.send_to(&data, dst) {
                    log::debug!("advertisement: {e}");
                }
            }
            other => {
                self.kernel = true;
                if let Err(e) = self.dp.borrow_mut().apply(&other) {
                    error!("kernel: {other:?}: {e}");
                    self.failed = true;
                }
            }
        }
    }

    fn failed(&mut self) -> bool {
        std::mem::take(&mut self.failed)
    }
}
