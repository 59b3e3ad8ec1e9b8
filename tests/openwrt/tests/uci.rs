//! simsd's UCI reader (firmware/simsd/src/uci.rs) against OpenWrt's own
//! libuci (the kit's `uci`): on a corpus of tricky files
//! (tests/openwrt/uci-corpus: quoting, comments, anonymous and merged
//! sections, list/option mixes, `enabled '0'`, CRLF, abbreviated
//! commands, errors), on every template and on what sims-federation
//! writes, simsd must read what `uci show` shows where libuci accepts the
//! file, and refuse it, with a line, where libuci refuses it. The one
//! deliberate difference (`;` outside quotes, refused by simsd) is the
//! corpus file `divergence-semicolon.conf`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sims_openwrt::*;

/// libuci and simsd agree on `file` (or differ only as it is marked to).
fn agree(kit: &Path, file: &Path, text: &str) -> Result<(), String> {
    let libuci = uci_show_text(kit, file, "sims");
    let ours = simsd_show(text, "sims");
    let divergent = file
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("divergence-"));
    match (libuci, ours) {
        (Ok(a), Ok(b)) if a == b && !divergent => Ok(()),
        (Ok(a), Ok(b)) if a != b => Err(format!("libuci shows\n{a}simsd reads\n{b}")),
        (Err(_), Err((line, _))) if line > 0 && !divergent => Ok(()),
        (Ok(_), Err((line, why))) if divergent && line > 0 => {
            eprintln!(
                "{}: refused as intended: line {line}: {why}",
                file.display()
            );
            Ok(())
        }
        (a, b) => Err(format!("libuci: {a:?}\nsimsd: {b:?}")),
    }
}

fn corpus() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("uci-corpus"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    v.sort();
    v
}

#[test]
fn simsd_reads_the_corpus_as_libuci_does() {
    let Some(kit) = kit() else {
        eprintln!("SKIPPED: no OpenWrt kit (../shared/openwrt, or SIMS_OPENWRT_KIT)");
        return;
    };
    let files = corpus();
    assert!(files.len() >= 15, "{files:?}");
    let mut refused = 0;
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        agree(&kit, f, &text).unwrap_or_else(|e| panic!("{}:\n{e}", f.display()));
        refused += simsd_show(&text, "sims").is_err() as usize;
    }
    // The corpus has both kinds, and its error files are errors.
    assert!(refused >= 10 && refused < files.len(), "{refused}");
}

#[test]
fn simsd_reads_the_templates_and_generated_files_as_libuci_does() {
    let Some(kit) = kit() else {
        eprintln!("SKIPPED: no OpenWrt kit (../shared/openwrt, or SIMS_OPENWRT_KIT)");
        return;
    };
    let mut files = vec![repo().join("uci-templates/sims.default")];
    let out = std::env::temp_dir().join(format!("sims-uci-fed-{}", std::process::id()));
    for set in ["two-operators", "campus"] {
        let dir = repo().join("uci-templates").join(set);
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n != "agents") {
                files.push(p);
            }
        }
        let gen = out.join(set);
        run(Command::new("sh")
            .arg(repo().join("openwrt-package/sims-federation"))
            .arg(dir.join("agents"))
            .arg(&gen))
        .unwrap();
        for e in fs::read_dir(&gen).unwrap() {
            files.push(e.unwrap().path().join("sims"));
        }
    }
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        agree(&kit, f, &text).unwrap_or_else(|e| panic!("{}:\n{e}", f.display()));
        // And simsd takes them (the templates once keyed).
        let keyed_text = keyed(&text, &mut BTreeMap::new());
        simsd::config::parse(&keyed_text, &f.display().to_string())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let _ = fs::remove_dir_all(&out);
}
