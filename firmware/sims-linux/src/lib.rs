//! SIMS Linux platform layer: everything the daemons need from the
//! kernel, over libc syscalls only (no netlink crates: the binary must
//! fit 8 MB routers). One flat module per concern.

pub mod conntrack;
pub mod event;
pub mod monitor;
pub mod netlink;
pub mod nfset;
pub mod packet;
pub mod rawipip;
pub mod sockdiag;
pub mod sysctl;
pub mod tun;
pub mod udp;

mod nlmsg;
mod sys;

#[cfg(test)]
mod roottests;

use std::io;

/// Fills `buf` from the kernel's CSPRNG (getrandom(2), blocking only
/// until the pool is first initialised).
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: rest is valid for writing rest.len() bytes.
        let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match sys::cvt_size(r) {
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_bytes_fill() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        super::random_bytes(&mut a).unwrap();
        super::random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
        super::random_bytes(&mut []).unwrap();
    }
}
