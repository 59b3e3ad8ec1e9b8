//! `ldd` for foreign binaries: [`needed_libs`] reads `PT_INTERP` and
//! `DT_NEEDED` from the ELF files (32/64 bit, either endianness; goblin)
//! and resolves them inside a sysroot, symlinks included.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::io;

/// What the dynamic loader needs to run an ELF file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ElfDeps {
    interp: Option<String>,
    needed: Vec<String>,
}

/// Reads `PT_INTERP` and `DT_NEEDED` from an ELF image of any class and
/// byte order (goblin; no section headers needed: the dynamic string
/// table is found through the program headers).
fn elf_deps(data: &[u8]) -> Result<ElfDeps, String> {
    if !data.starts_with(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    let elf = goblin::elf::Elf::parse(data).map_err(|e| format!("bad ELF: {e}"))?;
    Ok(ElfDeps {
        // goblin's interpreter is PT_INTERP's p_filesz bytes less one NUL;
        // mipsel's libc.so.6 pads the segment with more: the C string ends
        // at the first NUL.
        interp: elf
            .interpreter
            .map(|s| s.split('\0').next().unwrap_or(s).to_string()),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
    })
}

fn normalize_rel(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// Resolves `rel` (relative to `root`, as the guest would see it) through
/// the symlinks inside `root`; every symlink crossed goes into `seen`.
/// Returns the final path (a file or directory).
fn resolve_in(
    root: &Path,
    rel: &str,
    seen: &mut BTreeSet<String>,
    depth: u32,
) -> Result<String, String> {
    if depth > 32 {
        return Err(format!("{rel}: too many symlinks"));
    }
    let comps: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    let mut cur = String::new();
    for (i, c) in comps.iter().enumerate() {
        if !cur.is_empty() {
            cur.push('/');
        }
        cur.push_str(c);
        let p = root.join(&cur);
        let md = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if md.file_type().is_symlink() {
            seen.insert(cur.clone());
            let t = io(fs::read_link(&p), &p)?;
            let base = if t.is_absolute() {
                PathBuf::from("/")
            } else {
                Path::new("/")
                    .join(&cur)
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            };
            let mut next = base.join(t);
            for rest in &comps[i + 1..] {
                next.push(rest);
            }
            return resolve_in(root, &normalize_rel(&next), seen, depth + 1);
        }
    }
    Ok(cur)
}

/// Everything (relative paths in `root`, a sysroot: the binaries, their
/// dynamic loader and shared libraries, transitively, and every symlink
/// on the way, e.g. `lib`) needed to run `bins` (relative paths) in a
/// guest built from the sysroot, without `ld.so.cache` (glibc's built-in
/// search path covers `/usr/lib/<triplet>`).
pub fn needed_libs(root: &Path, bins: &[&str]) -> Result<Vec<String>, String> {
    let mut dirs: Vec<String> = Vec::new();
    for base in ["usr/lib", "lib"] {
        if let Ok(rd) = fs::read_dir(root.join(base)) {
            let mut t: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("-linux-gnu"))
                .map(|n| format!("{base}/{n}"))
                .collect();
            t.sort();
            dirs.extend(t);
        }
    }
    dirs.push("usr/lib".into());
    dirs.push("lib".into());
    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = bins
        .iter()
        .map(|b| b.trim_matches('/').to_string())
        .collect();
    while let Some(rel) = queue.pop_front() {
        let file = resolve_in(root, &rel, &mut out, 0)?;
        out.insert(file.clone());
        if !done.insert(file.clone()) {
            continue;
        }
        let p = root.join(&file);
        let data = io(fs::read(&p), &p)?;
        let deps = elf_deps(&data).map_err(|e| format!("{}: {e}", p.display()))?;
        if let Some(i) = deps.interp {
            queue.push_back(i.trim_start_matches('/').to_string());
        }
        for n in deps.needed {
            let found = dirs.iter().find_map(|d| {
                let cand = format!("{d}/{n}");
                let mut tmp = BTreeSet::new();
                resolve_in(root, &cand, &mut tmp, 0).ok().map(|_| cand)
            });
            match found {
                Some(c) => queue.push_back(c),
                None => return Err(format!("{file}: {n} not found in the sysroot")),
            }
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF: one PT_LOAD covering the file, PT_INTERP, PT_DYNAMIC
    /// with two DT_NEEDED (and DT_STRTAB, DT_STRSZ, as every linker
    /// writes), in the given class and byte order.
    fn synth_elf(is64: bool, be: bool) -> Vec<u8> {
        let w = if is64 { 8 } else { 4 };
        let put = |buf: &mut Vec<u8>, off: usize, v: u64, n: usize| {
            if buf.len() < off + n {
                buf.resize(off + n, 0);
            }
            for i in 0..n {
                let shift = 8 * if be { n - 1 - i } else { i };
                buf[off + i] = (v >> shift) as u8;
            }
        };
        let ehsize = if is64 { 64 } else { 52 };
        let phentsize = if is64 { 56 } else { 32 };
        let phoff = ehsize;
        let interp_off = phoff + 3 * phentsize;
        // Padded with NULs past the string, as in Debian mipsel's libc.so.6.
        let interp = b"/lib/ld.so.1\0\0\0\0";
        let strtab_off = interp_off + interp.len();
        let strtab = b"\0libc.so.6\0libm.so.6\0";
        let dyn_off = (strtab_off + strtab.len()).next_multiple_of(8);
        let vaddr_base = 0x400000u64;
        let mut b = vec![0u8; dyn_off + 5 * 2 * w];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = if is64 { 2 } else { 1 };
        b[5] = if be { 2 } else { 1 };
        if is64 {
            put(&mut b, 32, phoff as u64, 8);
            put(&mut b, 54, phentsize as u64, 2);
            put(&mut b, 56, 3, 2);
        } else {
            put(&mut b, 28, phoff as u64, 4);
            put(&mut b, 42, phentsize as u64, 2);
            put(&mut b, 44, 3, 2);
        }
        let total = b.len() as u64;
        let ph = |b: &mut Vec<u8>, i: usize, t: u64, off: u64, vaddr: u64, size: u64| {
            let p = phoff + i * phentsize;
            put(b, p, t, 4);
            // p_filesz and p_memsz alike.
            if is64 {
                put(b, p + 8, off, 8);
                put(b, p + 16, vaddr, 8);
                put(b, p + 32, size, 8);
                put(b, p + 40, size, 8);
            } else {
                put(b, p + 4, off, 4);
                put(b, p + 8, vaddr, 4);
                put(b, p + 16, size, 4);
                put(b, p + 20, size, 4);
            }
        };
        ph(&mut b, 0, 1, 0, vaddr_base, total);
        ph(&mut b, 1, 3, interp_off as u64, 0, interp.len() as u64);
        ph(&mut b, 2, 2, dyn_off as u64, 0, (5 * 2 * w) as u64);
        b[interp_off..interp_off + interp.len()].copy_from_slice(interp);
        b[strtab_off..strtab_off + strtab.len()].copy_from_slice(strtab);
        let dyns = [
            (1u64, 1u64),
            (5, vaddr_base + strtab_off as u64),
            (10, strtab.len() as u64),
            (1, 11),
            (0, 0),
        ];
        for (i, (t, v)) in dyns.iter().enumerate() {
            put(&mut b, dyn_off + i * 2 * w, *t, w);
            put(&mut b, dyn_off + i * 2 * w + w, *v, w);
        }
        b
    }

    #[test]
    fn elf_deps_in_every_class_and_byte_order() {
        for is64 in [false, true] {
            for be in [false, true] {
                let d = elf_deps(&synth_elf(is64, be)).unwrap();
                assert_eq!(d.interp.as_deref(), Some("/lib/ld.so.1"), "{is64} {be}");
                assert_eq!(d.needed, ["libc.so.6", "libm.so.6"], "{is64} {be}");
            }
        }
        assert!(elf_deps(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn needed_libs_follow_symlinks_inside_the_sysroot() {
        let tmp = std::env::temp_dir().join(format!("sims-foreign-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let root = tmp.join("root");
        let t = "usr/lib/mipsel-linux-gnu";
        fs::create_dir_all(root.join(t)).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        // The binary needs libc.so.6 and libm.so.6, via /lib/ld.so.1,
        // which points (absolutely) at the real loader.
        fs::write(root.join("usr/bin/tool"), synth_elf(false, false)).unwrap();
        std::os::unix::fs::symlink(
            "/lib/mipsel-linux-gnu/ld-2.36.so",
            root.join("usr/lib/ld.so.1"),
        )
        .unwrap();
        fs::write(root.join(t).join("ld-2.36.so"), b"\x7fELF\x01\x01").unwrap();
        fs::write(root.join(t).join("libc.so.6"), b"not elf").unwrap();
        let err = needed_libs(&root, &["usr/bin/tool"]).unwrap_err();
        assert!(
            err.contains("not an ELF") || err.contains("libm.so.6"),
            "{err}"
        );
        // Real (minimal) libraries, with the same needs (already met).
        let lib = synth_elf(false, false);
        fs::write(root.join(t).join("libc.so.6"), &lib).unwrap();
        fs::write(root.join(t).join("libm.so.6"), &lib).unwrap();
        fs::write(root.join(t).join("ld-2.36.so"), &lib).unwrap();
        let got = needed_libs(&root, &["/usr/bin/tool"]).unwrap();
        assert_eq!(
            got,
            [
                "lib",
                "usr/bin/tool",
                "usr/lib/ld.so.1",
                "usr/lib/mipsel-linux-gnu/ld-2.36.so",
                "usr/lib/mipsel-linux-gnu/libc.so.6",
                "usr/lib/mipsel-linux-gnu/libm.so.6",
            ]
        );
        let _ = fs::remove_dir_all(&tmp);
    }
}
