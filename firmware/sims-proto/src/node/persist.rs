//! What a node keeps across a restart of its daemon: its identity and the
//! credentials of its addresses. With them a restarted sims-node proves
//! the old addresses it still holds, and its relayed sessions live on.
//! The file is `crate::persist`'s header, this body and a checksum,
//! version 3:
//!
//! ```text
//! seed: [u8; 32], seq: u64, n: usize, n × (Credential, key: [u8; 32])
//! ```
//!
//! Versions 0 to 2 hold credentials without keys (protocol version 2
//! proved moves with Ed25519 signatures): the identity and sequence
//! number are kept, the credentials dropped (no agent of protocol
//! version 3 would take them).

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use log::warn;

use super::{Node, NodeBinding, NodeConfig};
use crate::msg::{AgentId, Credential};
use crate::persist::{Kind, Reader, Writer};

/// Sequence numbers skipped on restore: a registration sent just before
/// the daemon died may not be in the saved state, and agents refuse a
/// sequence number they have seen.
const RESTORE_SEQ_SKIP: u64 = 64;

impl Node {
    /// The node's identity and credentials, for [`Node::restore`]. Holds
    /// the secret key: store it readable by its owner only.
    pub fn save(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::Node);
        // An array, not a slice: postcard writes it without a length.
        let seed: [u8; 32] = *self.sk.seed();
        w.put(&seed);
        w.put(&self.seq);
        w.put(&self.bindings.len());
        for b in &self.bindings {
            w.put(&(&b.cred, b.key));
        }
        w.finish()
    }

    /// A node with the identity and credentials `data` holds, its
    /// addresses pending until the current agent answers (the next
    /// registration presents them all); None if `data` does not decode.
    pub fn restore(cfg: NodeConfig, data: &[u8], mac: [u8; 6], random: [u8; 32]) -> Option<Self> {
        let (version, mut r) = match Reader::open(data, Kind::Node) {
            Ok(x) => x,
            Err(e) => {
                warn!("saved state not restored: {e:?}");
                return None;
            }
        };
        let seed = r.take::<[u8; 32]>()?;
        let seq = r.take::<u64>()?;
        let count = r.take::<usize>()?;
        let mut creds = Vec::new();
        let mut dropped = Vec::new();
        for _ in 0..count {
            // Every element must decode; only the first max_bindings are kept.
            let cred = match version {
                0 | 1 => r
                    .take::<([u8; 4], AgentId, u32)>()
                    .map(|(a, _, _)| Err(a))?,
                2 => r.take::<Credential>().map(|c| Err(c.addr))?,
                _ => Ok(r.take::<(Credential, [u8; 32])>()?),
            };
            match cred {
                Ok(c) if creds.len() < cfg.max_bindings => creds.push(c),
                Ok(_) => {}
                Err(a) if dropped.len() < cfg.max_bindings => dropped.push(Ipv4Addr::from(a)),
                Err(_) => {}
            }
        }
        if !r.is_empty() {
            return None;
        }
        // Not a key (Ed25519 refuses it, and Node::new would panic): a
        // zeroed file, e.g. a header-less one without a checksum.
        if seed == [0; 32] {
            warn!("saved state holds an all-zero key; not restored");
            return None;
        }
        let mut n = Node::new(cfg, seed, mac, random);
        n.seq = seq.saturating_add(RESTORE_SEQ_SKIP);
        n.dropped = dropped;
        for (cred, key) in creds {
            if n.bindings.iter().all(|b| b.cred.addr != cred.addr) {
                n.bindings.push(NodeBinding::restored(cred, key));
            }
        }
        Some(n)
    }
}
