//! simsd's UCI config parser on arbitrary text: it never panics, an error
//! names a line of the file, and what it accepts keeps the promises the
//! daemon relies on (one own id, unique ids, a LAN prefix, no address in
//! two prefixes, limits in range).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sims_proto::Prefix;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match simsd::config::parse(&text, "fuzz") {
        Err(e) => {
            assert!(
                e.line <= text.lines().count(),
                "error on line {} of {}",
                e.line,
                text.lines().count()
            );
            let _ = e.to_string();
        }
        Ok(c) => {
            let a = &c.agent;
            assert!(!a.id.is_empty());
            assert!(!a.lan_prefixes.is_empty());
            assert!((1..=65_536).contains(&a.max_bindings));
            assert!(a.peers.len() <= 250);
            let mut ids = vec![a.id.clone()];
            let mut prefixes: Vec<Prefix> = a.lan_prefixes.clone();
            for p in &a.peers {
                assert!(!p.prefixes.is_empty());
                assert!(!ids.contains(&p.id), "id {} twice", p.id);
                ids.push(p.id.clone());
                prefixes.extend(p.prefixes.iter().copied());
            }
            for (i, p) in prefixes.iter().enumerate() {
                for q in &prefixes[..i] {
                    assert!(
                        !p.contains(q.addr) && !q.contains(p.addr),
                        "{p} overlaps {q}"
                    );
                }
            }
        }
    }
});
