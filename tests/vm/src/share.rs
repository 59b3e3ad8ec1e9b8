//! The directory a run shares with its guest (read-only, 9p
//! `mount_tag=host`, seen as `/mnt/host`).

use std::fs;
use std::path::{Path, PathBuf};

/// A directory shared with the guest: `<cache>/share-<pid>-<what>/`,
/// removed on drop.
pub struct Share {
    pub dir: PathBuf,
}

impl Share {
    pub fn new(cache: &Path, what: &str) -> Result<Share, String> {
        remove_stale_shares(cache);
        let dir = cache.join(format!("share-{}-{what}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Share { dir })
    }

    pub fn write(&self, name: &str, text: &str) -> Result<(), String> {
        fs::write(self.dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    }

    /// Copies a binary into bin/ (a copy: a concurrent cargo build must not
    /// change what the guest runs).
    pub fn add_bin(&self, src: &Path, name: &str) -> Result<PathBuf, String> {
        let dst = self.dir.join("bin").join(name);
        fs::copy(src, &dst).map_err(|e| format!("copy {} to the share: {e}", src.display()))?;
        Ok(dst)
    }
}

/// Shares left by runs that were killed (their pid is gone).
fn remove_stale_shares(cache: &Path) {
    let Ok(rd) = fs::read_dir(cache) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("share-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
