//! Add, delete and flush IPv4 elements of an existing nftables set over
//! NETLINK_NETFILTER, in-process (spawning `nft` costs milliseconds).
//! Each change is one batch: BATCH_BEGIN, NEWSETELEM/DELSETELEM, BATCH_END.
//! Only plain (non-interval) `ipv4_addr` sets of family `inet` are handled.

use std::io;
use std::net::Ipv4Addr;

use crate::nlmsg::{
    Msg, NlSocket, SockProtocol, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST,
};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFNETLINK_V0: u8 = 0;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;

/// Kernel limit on table and set names (NFT_NAME_MAXLEN, with the NUL).
const NAME_MAX: usize = 256;

/// nfgenmsg: family, version, res_id (big endian).
fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, NFNETLINK_V0, r[0], r[1]]
}

fn check_name(s: &str) -> io::Result<()> {
    if s.is_empty() || s.len() >= NAME_MAX || s.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad nftables name",
        ));
    }
    Ok(())
}

/// The three messages of a one-change batch; the ack comes for index 1.
pub(crate) fn batch(
    ty: u16,
    table: &str,
    set: &str,
    addr: Option<Ipv4Addr>,
) -> io::Result<[Msg; 3]> {
    check_name(table)?;
    check_name(set)?;
    let mut begin = Msg::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST);
    begin.push(&nfgen(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES));

    // NLM_F_CREATE without EXCL: re-adding an existing element succeeds.
    let flags = NLM_F_REQUEST
        | NLM_F_ACK
        | if ty == NFT_MSG_NEWSETELEM {
            NLM_F_CREATE
        } else {
            0
        };
    let mut m = Msg::new((NFNL_SUBSYS_NFTABLES << 8) | ty, flags);
    m.push(&nfgen(NFPROTO_INET, 0))
        .attr_str(NFTA_SET_ELEM_LIST_TABLE, table)
        .attr_str(NFTA_SET_ELEM_LIST_SET, set);
    // No element list on a delete means "flush the set".
    if let Some(addr) = addr {
        let list = m.nest(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
        let elem = m.nest(NFTA_LIST_ELEM | NLA_F_NESTED);
        let key = m.nest(NFTA_SET_ELEM_KEY | NLA_F_NESTED);
        // Set keys are in network byte order, which octets() already is.
        m.attr(NFTA_DATA_VALUE, &addr.octets());
        m.end_nest(key);
        m.end_nest(elem);
        m.end_nest(list);
    }

    let mut end = Msg::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST);
    end.push(&nfgen(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES));
    Ok([begin, m, end])
}

/// A NETLINK_NETFILTER socket for set element changes.
pub struct NfSet {
    sock: NlSocket,
}

impl NfSet {
    pub fn open() -> io::Result<Self> {
        Ok(NfSet {
            sock: NlSocket::open(SockProtocol::NetlinkNetFilter, 0, false)?,
        })
    }

    /// Batches sent so far (each one round trip with the kernel).
    pub fn exchanges(&self) -> u64 {
        self.sock.exchanges
    }

    fn run(&mut self, ty: u16, table: &str, set: &str, addr: Option<Ipv4Addr>) -> io::Result<()> {
        let mut msgs = batch(ty, table, set, addr)?;
        self.sock.transact(&mut msgs, 1, |_| Ok(())).map(drop)
    }

    /// Adds `addr` to `inet <table> <set>`; already present is success.
    /// ENOENT if the table or set does not exist.
    pub fn add(&mut self, table: &str, set: &str, addr: Ipv4Addr) -> io::Result<()> {
        self.run(NFT_MSG_NEWSETELEM, table, set, Some(addr))
    }

    /// Removes `addr`; ENOENT if it (or the set) is missing, which the caller may ignore.
    pub fn del(&mut self, table: &str, set: &str, addr: Ipv4Addr) -> io::Result<()> {
        self.run(NFT_MSG_DELSETELEM, table, set, Some(addr))
    }

    /// Deletes every element of the set.
    pub fn flush(&mut self, table: &str, set: &str) -> io::Result<()> {
        self.run(NFT_MSG_DELSETELEM, table, set, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nlmsg::{after, attrs, messages};

    #[test]
    fn batch_layout() {
        let mut msgs = batch(
            NFT_MSG_NEWSETELEM,
            "sims",
            "out_b",
            Some(Ipv4Addr::new(10, 1, 2, 3)),
        )
        .unwrap();
        let mut wire = Vec::new();
        for (i, m) in msgs.iter_mut().enumerate() {
            wire.extend_from_slice(m.finish(100 + i as u32));
        }
        let ms: Vec<_> = messages(&wire).collect::<io::Result<_>>().unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0].ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(ms[0].payload, &[0, 0, 0, 10]);
        assert_eq!(ms[1].ty, 0x0a0c);
        assert_eq!(ms[1].flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(ms[2].ty, NFNL_MSG_BATCH_END);
        let a: Vec<_> = attrs(after(ms[1].payload, 4).unwrap())
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(a[0], (1, &b"sims\0"[..]));
        assert_eq!(a[1], (2, &b"out_b\0"[..]));
        // elements > elem > key > value
        let mut v = a[2].1;
        for _ in 0..3 {
            let (ty, inner) = attrs(v).next().unwrap().unwrap();
            assert_eq!(ty, 1);
            v = inner;
        }
        assert_eq!(v, &[10, 1, 2, 3]);

        let flush = batch(NFT_MSG_DELSETELEM, "t", "s", None).unwrap();
        let mut f = flush;
        let b = f[1].finish(1).to_vec();
        let m = messages(&b).next().unwrap().unwrap();
        assert_eq!(attrs(after(m.payload, 4).unwrap()).count(), 2);
        assert!(batch(NFT_MSG_NEWSETELEM, "", "s", None).is_err());
    }
}
