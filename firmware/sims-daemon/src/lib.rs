//! What both SIMS daemons (simsd, sims-node) share around their poll
//! loops: the command line (`args`), the stderr logger (`logger`), the
//! status socket and its client (`status`), JSON quoting (`json`), state
//! files (`state`), and the time and randomness their state machines are
//! given.

pub mod args;
pub mod json;
pub mod logger;
pub mod state;
pub mod status;

use sims_linux::event;
use sims_proto::Now;

/// The time inputs of a state machine, read now.
pub fn now() -> Now {
    Now {
        ms: event::now_ms(),
    }
}

/// 32 bytes from the kernel's CSPRNG: the seed of a state machine's ids,
/// serials, nonces and cookie key. A daemon that cannot get them does not
/// start: predictable values would let a guest forge answers.
pub fn random_seed() -> Result<[u8; 32], String> {
    let mut b = [0u8; 32];
    sims_linux::random_bytes(&mut b).map_err(|e| format!("random: {e}"))?;
    Ok(b)
}

/// Whether `c` is never written as it is, in log lines (`logger`) nor in
/// JSON strings (`json`): controls (C0, DEL, C1), and the
/// invisible characters that reorder or hide text (bidi marks, embeddings,
/// overrides and isolates; zero-width characters; line and paragraph
/// separators; the byte-order mark; interlinear annotations).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}
