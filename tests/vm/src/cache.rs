//! Entries of the cache (`<workspace>/.cache/vm/`): the content hash that
//! names them, and pruning old ones.

use std::fs;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

/// A 64-bit FNV-1a content hash, as 16 hex digits: the names of cached
/// initramfs images and sysroots (a new input is a new name).
#[derive(Default)]
pub struct ContentHash(fnv::FnvHasher);

impl ContentHash {
    pub fn new() -> ContentHash {
        ContentHash::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0.finish())
    }
}

/// Writes `text` unless the file already holds it (keeps mtimes stable).
pub fn write_if_changed(path: &Path, text: &str) -> Result<(), String> {
    if fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Keeps the `keep` newest entries of `dir` that `pick` selects (always
/// `current`), removing the others, files or directories.
pub fn prune_newest(dir: &Path, pick: impl Fn(&Path) -> bool, current: &Path, keep: usize) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut v: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != current && pick(p))
        .filter_map(|p| Some((fs::symlink_metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    v.sort();
    v.reverse();
    for (_, p) in v.into_iter().skip(keep.saturating_sub(1)) {
        let _ = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
    }
}

/// The most recently fetched complete kernel in `kdir` whose version ends
/// in `suffix`.
pub fn newest_cached(kdir: &Path, suffix: &str) -> Option<String> {
    let mut v: Vec<(std::time::SystemTime, String)> = fs::read_dir(kdir)
        .ok()?
        .flatten()
        .filter(|e| e.path().join("complete").exists())
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .filter_map(|e| {
            let t = e.metadata().ok()?.modified().ok()?;
            Some((t, e.file_name().to_string_lossy().into_owned()))
        })
        .collect();
    v.sort();
    v.pop().map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_is_fnv1a_64() {
        // The published FNV-1a 64 test vectors: the cache names of earlier
        // runs (a hand-written FNV-1a) stay valid.
        let h = |b: &[u8]| {
            let mut c = ContentHash::new();
            c.update(b);
            c.hex()
        };
        assert_eq!(h(b""), "cbf29ce484222325");
        assert_eq!(h(b"a"), "af63dc4c8601ec8c");
        assert_eq!(h(b"foobar"), "85944171f73967e8");
        let mut c = ContentHash::new();
        c.update(b"foo");
        c.update(b"bar");
        assert_eq!(c.hex(), h(b"foobar"));
    }
}
