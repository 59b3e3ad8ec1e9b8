//! The configurations SIMS gives operators (uci-templates/, the package's
//! default /etc/config/sims) and the tool that writes them for a real
//! federation (openwrt-package/sims-federation), read as simsd reads
//! them (tests/uci.rs holds simsd's reading to OpenWrt's libuci).
//!
//! The templates hold no keys (a key published in a repository
//! authenticates nothing, and simsd refuses the published ones): each
//! agreement's key is a placeholder `<key a:b>` on both sides, and a
//! template is checked with a fresh key in place of each placeholder.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sims_openwrt::*;
use simsd::config::{self, Config};

/// The template sets: directories of uci-templates/ with an `agents` list.
fn template_sets() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(repo().join("uci-templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("agents").exists())
        .collect();
    v.sort();
    assert!(v.len() >= 2, "two-operators and campus at least: {v:?}");
    v
}

/// The agent files of a set, by agent id.
fn agent_files(set: &Path) -> BTreeMap<String, PathBuf> {
    fs::read_dir(set)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "agents"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect()
}

fn parse(text: &str, file: &Path) -> Config {
    config::parse(text, &file.display().to_string())
        .unwrap_or_else(|e| panic!("simsd refuses {}: {e}", file.display()))
}

/// Every agreement is configured on both sides alike: each side's peer
/// section names the other's id, endpoint and prefixes, with one key.
fn assert_mirrored(set: &BTreeMap<String, Config>) {
    for (x, cx) in set {
        assert_eq!(&cx.agent.id.to_string(), x, "file named after its agent");
        for p in &cx.agent.peers {
            let cy = &set[p.id.as_str()];
            assert_eq!(p.endpoint, cy.agent.endpoint, "{x}'s peer {}", p.id);
            assert_eq!(p.prefixes, cy.agent.lan_prefixes, "{x}'s peer {}", p.id);
            let back = cy.agent.peers.iter().find(|q| q.id == cx.agent.id);
            let back = back.unwrap_or_else(|| panic!("{} has no agreement with {x}", p.id));
            assert_eq!(back.key, p.key, "one key for {x} and {}", p.id);
        }
    }
}

#[test]
fn templates_pass_simsd_check_with_fresh_keys_and_agree_on_both_sides() {
    for set in template_sets() {
        let mut keys = BTreeMap::new();
        let mut parsed = BTreeMap::new();
        for (id, file) in agent_files(&set) {
            let text = fs::read_to_string(&file).unwrap();
            assert!(
                !placeholders(&text).is_empty(),
                "{}: no agreement",
                file.display()
            );
            // As it is, it must be refused for its key, on the key's line.
            let err = config::parse(&text, "t").unwrap_err().to_string();
            let line = text.lines().position(|l| l.contains("'<key ")).unwrap() + 1;
            assert!(
                err.starts_with(&format!("t:{line}: key must be 64 hexadecimal")),
                "{}: {err}",
                file.display()
            );
            parsed.insert(id, parse(&keyed(&text, &mut keys), &file));
        }
        assert_mirrored(&parsed);
        // Each pair has its own key.
        let distinct: std::collections::BTreeSet<_> = keys.values().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}

#[test]
fn the_package_installs_the_default_template_disabled() {
    let default = repo().join("uci-templates/sims.default");
    let shipped = repo().join("openwrt-package/sims/files/sims.config");
    let text = fs::read_to_string(&default).unwrap();
    assert_eq!(
        text,
        fs::read_to_string(&shipped).unwrap(),
        "uci-templates/sims.default is what the package installs"
    );
    let c = parse(&text, &default);
    assert!(c.agent.peers.is_empty());
    // The init script starts nothing until the operator enables it.
    assert!(text.contains("\toption enabled '0'\n"));
}

/// Runs sims-federation on `list` into a new directory.
fn federation(list: &Path, out: &Path) -> Result<String, String> {
    let _ = fs::remove_dir_all(out);
    run(Command::new("sh")
        .arg(repo().join("openwrt-package/sims-federation"))
        .arg(list)
        .arg(out))
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sims-fed-{name}-{}", std::process::id()))
}

#[test]
fn federation_writes_the_templates_with_fresh_keys() {
    for set in template_sets() {
        let name = set.file_name().unwrap().to_string_lossy().into_owned();
        let out = scratch(&name);
        let listed = federation(&set.join("agents"), &out).unwrap();
        let templates = agent_files(&set);
        let mut parsed = BTreeMap::new();
        let mut all_keys = Vec::new();
        for (id, template) in &templates {
            let file = out.join(id).join("sims");
            assert!(listed.contains(&file.display().to_string()), "{listed}");
            let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}: it holds the keys", file.display());
            let text = fs::read_to_string(&file).unwrap();
            let c = parse(&text, &file);
            all_keys.extend(c.agent.peers.iter().map(|p| p.key));
            // The template is this file with its keys taken out.
            let t = fs::read_to_string(template).unwrap();
            let strip = |s: &str| -> Vec<String> {
                s.lines()
                    .filter(|l| !l.starts_with('#') && !l.contains("option key"))
                    .map(str::to_string)
                    .collect()
            };
            assert_eq!(
                strip(&text),
                strip(&t),
                "{} drifted from sims-federation",
                template.display()
            );
            parsed.insert(id.clone(), c);
        }
        assert_mirrored(&parsed);
        // Two sides per key, and a new key for every pair.
        let mut counts: BTreeMap<[u8; 32], usize> = BTreeMap::new();
        for k in all_keys {
            *counts.entry(k).or_default() += 1;
        }
        assert!(counts.values().all(|&n| n == 2), "{counts:?}");
        // Run again: new keys.
        let again = scratch(&format!("{name}-again"));
        federation(&set.join("agents"), &again).unwrap();
        let (id, _) = templates.iter().next().unwrap();
        let k1 = parse(
            &fs::read_to_string(out.join(id).join("sims")).unwrap(),
            &out,
        )
        .agent
        .peers[0]
            .key;
        let k2 = parse(
            &fs::read_to_string(again.join(id).join("sims")).unwrap(),
            &again,
        )
        .agent
        .peers[0]
            .key;
        assert_ne!(k1, k2);
        let _ = fs::remove_dir_all(&out);
        let _ = fs::remove_dir_all(&again);
    }
}

#[test]
fn federation_refuses_bad_lists_with_their_line() {
    let cases = [
        (
            "agent a 100.64.1.2 10.1.0.0/24\nagent b 1.2.3 10.2.0.0/24\n",
            ":2: endpoint '1.2.3' is not an IPv4 address",
        ),
        (
            "agent a 100.64.1.2 10.1.0.0/24\nagent Bad 100.64.2.2 10.2.0.0/24\n",
            ":2: id 'Bad' must be 1-10 characters",
        ),
        (
            "agent a 100.64.1.2 10.1.0.0/24\nagent a 100.64.2.2 10.2.0.0/24\n",
            ":2: agent a listed twice",
        ),
        (
            "agent a 100.64.1.2 10.1.0.0/33\n",
            ":1: lan prefix '10.1.0.0/33' is not a.b.c.d/len",
        ),
        (
            "agent a 100.64.1.2 10.1.0.0/24\nhello\n",
            ":2: unknown line",
        ),
        ("agent a 100.64.1.2 10.1.0.0/24\n", "fewer than two agents"),
        (
            "agent a 100.64.1.2 10.1.0.0/24\nagent b 100.64.2.2 10.2.0.0/24\nagreement a c\n",
            "agreement a c names an agent not listed",
        ),
    ];
    for (i, (list, want)) in cases.iter().enumerate() {
        let file = scratch(&format!("bad{i}.txt"));
        fs::write(&file, list).unwrap();
        let out = scratch(&format!("bad{i}"));
        let err = federation(&file, &out).unwrap_err();
        assert!(err.contains(want), "{list:?}: {err}");
        assert!(!out.exists(), "nothing written for a bad list");
        let _ = fs::remove_file(&file);
    }
}

#[test]
fn federation_agreements_restrict_the_pairs() {
    let file = scratch("pairs.txt");
    fs::write(
        &file,
        "agent a 100.64.1.2 10.1.0.0/24 A\nagent b 100.64.2.2 10.2.0.0/24 B\nagent c 100.64.3.2 10.3.0.0/24 C\nagreement a b\nagreement b c\n",
    )
    .unwrap();
    let out = scratch("pairs");
    federation(&file, &out).unwrap();
    let peers = |id: &str| -> Vec<String> {
        let f = out.join(id).join("sims");
        let c = parse(&fs::read_to_string(&f).unwrap(), &f);
        c.agent.peers.iter().map(|p| p.id.to_string()).collect()
    };
    assert_eq!(peers("a"), ["b"]);
    assert_eq!(peers("b"), ["a", "c"]);
    assert_eq!(peers("c"), ["b"]);
    let _ = fs::remove_dir_all(&out);
    let _ = fs::remove_file(&file);
}
