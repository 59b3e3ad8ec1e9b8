//! The rtnetlink framing and the parsers of the kernel's answers and
//! events (sims-linux's netlink/codec.rs) on arbitrary datagrams: nothing
//! panics, and what parses keeps its promises (prefix lengths of at most
//! 32, whatever is in a message's attributes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sims_linux::netlink::{parse_datagram, Reply};

fuzz_target!(|data: &[u8]| {
    let replies = parse_datagram(data);
    // Every message takes at least a 16-byte header.
    assert!(replies.len() <= data.len() / 16 + 1);
    for r in &replies {
        match r {
            // A framing error ends the list; a message's own error does not.
            Err(_) => {}
            Ok(Reply::Route(Some(r))) => assert!(r.dst_len <= 32),
            Ok(Reply::Rule(Some(r))) => assert!(r.src.is_none_or(|(_, l)| l <= 32)),
            Ok(_) => {}
        }
    }
});
