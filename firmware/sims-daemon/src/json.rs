//! JSON for the status reports, written by hand: serde_json would cost
//! the router binary more than the two reports it writes.

use std::fmt::Write;

/// `s` as a JSON string, quoted and escaped.
pub fn q(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Lower-case hex of `b` (key prefixes in the reports).
pub fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(q("ma-a"), "\"ma-a\"");
        assert_eq!(q("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\u000ad\\u0001\"");
        assert_eq!(q("café"), "\"café\"");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
