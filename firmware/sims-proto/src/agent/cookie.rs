//! Return-routability cookies: the proof that a registration comes from
//! the host that really holds the address on our LAN now.
//!
//! The agent sends a cookie only to the address it is for (the unicast
//! answer to a solicitation, a registration reply), so only the host that
//! receives that address's packets on the LAN learns it; a guest spoofing
//! another's source address never sees it. The cookie is an HMAC, keyed
//! by a secret of this run, of the address, the node's key and the time
//! epoch: checking it is one HMAC and needs no table, so a flood of
//! forged registrations costs the agent almost nothing and fills nothing.

use core::net::Ipv4Addr;

use super::{Agent, Now};
use crate::msg::{Cookie, NodeKey};
use crate::prf;

/// The shortest cookie epoch; a cookie is valid in its epoch and the next.
const MIN_EPOCH_MS: u64 = 30_000;

impl Agent {
    /// Cookies live at least one epoch: longer than the node's refresh
    /// interval (a third of the binding lifetime), so a refresh carries the
    /// cookie of the previous reply.
    fn cookie_epoch_ms(&self) -> u64 {
        (u64::from(self.cfg.binding_lifetime_s) * 1000 / 2).max(MIN_EPOCH_MS)
    }

    fn cookie_at(&self, epoch: u64, addr: Ipv4Addr, node: &NodeKey) -> Cookie {
        let h = prf::hmac(
            &self.cookie_key,
            &[b"cookie", &epoch.to_le_bytes(), &addr.octets(), node],
        );
        let mut c = [0u8; 16];
        c.copy_from_slice(&h[..16]);
        c
    }

    pub(super) fn cookie_for(&self, now: Now, addr: Ipv4Addr, node: &NodeKey) -> Cookie {
        self.cookie_at(now.ms / self.cookie_epoch_ms(), addr, node)
    }

    /// Whether `c` is a cookie this run gave to `addr` for `node`, in this
    /// epoch or the previous one (constant time).
    pub(super) fn cookie_ok(&self, now: Now, addr: Ipv4Addr, node: &NodeKey, c: &Cookie) -> bool {
        let epoch = now.ms / self.cookie_epoch_ms();
        let same = |want: Cookie| prf::ct_eq(&want, c);
        let now_ok = same(self.cookie_at(epoch, addr, node));
        let prev_ok = epoch > 0 && same(self.cookie_at(epoch - 1, addr, node));
        now_ok | prev_ok
    }
}
