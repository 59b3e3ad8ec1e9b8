//! The datagram header views and the message decoder: no input panics;
//! a checked packet's views agree with its length; whatever decodes
//! re-encodes, and the re-encoding decodes to the same message (with a
//! valid tag for peer messages).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sims_proto::msg;
use sims_proto::wire::{Packet, HEADER_LEN, MAX_DATAGRAM, TAG_LEN};

const KEY: [u8; 32] = [0x5a; 32];

fuzz_target!(|data: &[u8]| {
    let p = Packet::new_unchecked(data);
    let (body, auth, tag) = (p.body(), p.authenticated_part(), p.tag());
    assert!(body.len() <= data.len() && auth.len() <= data.len());
    assert!(tag.is_empty() || tag.len() == TAG_LEN);
    let _ = (p.version(), p.msg_type(), p.body_len());
    let checked = Packet::new_checked(data);
    if let Ok(p) = &checked {
        let ty = p.msg_type().expect("a checked packet has a known type");
        let tag_len = if ty.is_peer() { TAG_LEN } else { 0 };
        assert!(data.len() <= MAX_DATAGRAM);
        assert_eq!(data.len(), HEADER_LEN + p.body_len() + tag_len);
        assert_eq!(p.body(), &data[HEADER_LEN..HEADER_LEN + p.body_len()]);
        assert_eq!(p.authenticated_part(), &data[..HEADER_LEN + p.body_len()]);
        assert_eq!(p.tag().len(), tag_len);
    }
    let tagged = msg::verify_tag(data, &KEY);
    if let Ok(m) = msg::decode(data) {
        assert!(checked.is_ok(), "decoded an unchecked packet");
        assert_eq!(Some(m.msg_type()), p.msg_type());
        let again = msg::encode(&m, Some(&KEY)).expect("a decoded message re-encodes");
        assert_eq!(
            msg::decode(&again).as_ref(),
            Ok(&m),
            "re-encoding changed it"
        );
        if m.msg_type().is_peer() {
            assert!(msg::verify_tag(&again, &KEY));
            assert!(m.peer_sender().is_some());
            // Re-encoded byte for byte (canonical input), the tag is
            // the same: the tag covers exactly what was decoded.
            if again[..] == data[..] {
                assert!(tagged);
            }
        } else {
            assert!(m.peer_sender().is_none());
            assert!(msg::encode(&m, None).is_some());
        }
    }
});
