//! JSON for the status reports, written by hand: serde_json would cost
//! the router binary more than the two reports it writes.

use std::fmt::Write;

/// `s` as a JSON string, quoted and escaped: `"` and `\`, and as `\uNNNN`
/// every control character (C0, DEL, C1) and every character that hides
/// or reorders text (`crate::is_unsafe`), so a report shown on a terminal
/// shows what it holds.
pub fn q(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            // Controls, and what hides or reorders text on a terminal
            // (all in the BMP, so one \uNNNN each).
            c if crate::is_unsafe(c) => {
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
        assert_eq!(
            q("a\u{7f}\u{9b}b\u{202e}c\u{2028}"),
            "\"a\\u007f\\u009bb\\u202ec\\u2028\""
        );
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
