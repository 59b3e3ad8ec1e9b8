//! State files: written whole or not at all (a temporary file renamed over
//! the old one), with the mode given explicitly, since what they hold
//! differs (a node's secret key, an agent's credentials).

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Readable by the daemon's user only: saved protocol state.
pub const PRIVATE: u32 = 0o600;
/// Readable by all: facts such as the boot counter.
pub const PUBLIC: u32 = 0o644;

/// [`write_atomic`], and on the storage before it returns: the data, then
/// the directory's entry (for files on flash that a power cut must not
/// leave empty: the rename alone may reach the flash first).
pub fn write_durable(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_file(path, data, mode, true)
}

/// Replaces `path` with `data`, atomically, with permissions `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_file(path, data, mode, false)
}

fn write_file(path: &Path, data: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)?;
    // `mode` applies only when the file is created (and through the umask).
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(tmp, path)?;
    if durable {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_with_mode() {
        let dir = std::env::temp_dir().join(format!("sims-daemon-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.state");
        write_atomic(&p, b"one", PUBLIC).unwrap();
        write_atomic(&p, b"two", PRIVATE).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, PRIVATE);
        assert!(!dir.join("x.state.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
