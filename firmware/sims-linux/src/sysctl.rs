//! Reading and writing /proc/sys. Paths are relative to /proc/sys and
//! must stay inside it (no "..", no absolute paths). /proc/sys/net shows
//! the network namespace of the calling thread.

use std::fs;
use std::io;

fn path(rel: &str) -> io::Result<String> {
    if rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad sysctl path",
        ));
    }
    Ok(format!("/proc/sys/{rel}"))
}

/// Writes `value` to /proc/sys/`path_under_proc_sys` (e.g. "net/ipv4/ip_forward").
pub fn set(path_under_proc_sys: &str, value: &str) -> io::Result<()> {
    fs::write(path(path_under_proc_sys)?, value)
}

/// Reads /proc/sys/`path_under_proc_sys`, trailing newline removed.
pub fn get(path_under_proc_sys: &str) -> io::Result<String> {
    let s = fs::read_to_string(path(path_under_proc_sys)?)?;
    Ok(s.trim_end().to_string())
}

/// Sets net.ipv4.conf.<ifname>.<key>; ifname may also be "all" or "default".
pub fn set_ipv4_conf(ifname: &str, key: &str, value: &str) -> io::Result<()> {
    // A '/' in either would escape the per-interface directory.
    if ifname.contains('/') || key.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad sysctl name",
        ));
    }
    set(&format!("net/ipv4/conf/{ifname}/{key}"), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escapes() {
        assert!(path("../etc/passwd").is_err());
        assert!(path("/etc").is_err());
        assert!(path("net//x").is_err());
        assert!(set_ipv4_conf("a/../../x", "rp_filter", "1").is_err());
        assert_eq!(
            path("net/ipv4/ip_forward").unwrap(),
            "/proc/sys/net/ipv4/ip_forward"
        );
        // Readable without privileges.
        assert!(get("kernel/ostype").unwrap().starts_with("Linux"));
    }
}
