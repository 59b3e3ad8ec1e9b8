//! The VM harness: a Debian kernel under QEMU (TCG) with a minimal
//! initramfs, for what the host kernel cannot do (kernel ipip, netem), and
//! the router targets' own architectures (Malta mipsel, virt ARMv7, virt
//! aarch64: a board config's `vm_*` keys).
//!
//! | module | what |
//! | --- | --- |
//! | [`spec`] | what to boot ([`Spec`], [`Foreign`], [`Guest`]) |
//! | [`host`] | host tools: which ones, installing them, running them |
//! | [`cache`] | `.cache/vm/` entries: content hashes, pruning |
//! | [`kernel`] | a Debian kernel package, fetched, unpacked, depmod'ed |
//! | [`apt`] | a private apt configuration per foreign architecture |
//! | [`sysroot`] | a foreign Debian userland |
//! | [`elf`] | `ldd` for foreign binaries (PT_INTERP, DT_NEEDED) |
//! | [`initramfs`] | the guest's root: a newc cpio |
//! | [`boot`] | QEMU, the console and the guest's verdict |
//! | [`share`] | the directory shared with the guest over 9p |
//! | [`suite`] | runs of tests/vm/suite.sh and bench.sh, the harness self-check |
//!
//! * The kernel package is fetched with `apt-get download`, unpacked with
//!   `dpkg-deb -x`, indexed with `depmod -b`, and kept in
//!   `<workspace>/.cache/vm/kernel/<version>/`. The bzImage's xz payload is
//!   extracted to an uncompressed `vmlinux`, which QEMU boots through PVH
//!   (no decompression under emulation); the bzImage is the fallback.
//! * The initramfs (uncompressed newc cpio) holds busybox, the closure of
//!   the listed modules (kmod `--show-depends`, softdeps included), kmod,
//!   iproute2 (`ip`, `tc`), `nft`, `dnsmasq`, the shared libraries of all
//!   of these and of the test binaries (ldd), and `tests/vm/init`. It is
//!   cached as `initramfs/<version>-<hash>.cpio`, the hash covering every
//!   byte that goes in: rebuilt only when an input changes.
//! * The test binaries are shared read-only over 9p (`mount_tag=host`); the
//!   init script runs `sh /mnt/host/<run>` and prints the verdict as
//!   `SIMS-VM-RESULT <nonce>: pass|fail ...`, which becomes our result.
//! * A router target's guest ([`Foreign`]) boots the same way with that
//!   architecture's Debian kernel and a Debian userland of its own
//!   ([`sysroot`]) instead of the host's tools; the test binaries are
//!   static, cross-built.
//!
//! Every failure is an error that says what went wrong ([`VmError`]): the
//! kernel package cannot be fetched, the guest does not boot (no
//! `SIMS-VM-BOOTED` marker in time, or QEMU ends first), a module does not
//! load, the guest times out, or the guest's run fails.
//!
//! Modules depend downwards only: `host`, `cache`, `error` ← `apt`,
//! `kernel`, `elf` ← `sysroot` ← `initramfs` ← `boot` ← `suite`.

pub mod apt;
pub mod boot;
pub mod cache;
pub mod elf;
mod error;
pub mod host;
pub mod initramfs;
pub mod kernel;
pub mod share;
pub mod spec;
pub mod suite;
pub mod sysroot;

use std::path::{Path, PathBuf};

pub use boot::Outcome;
pub use error::{Result, VmError};
pub use share::Share;
pub use spec::{Foreign, Guest, Spec, MODULES, TOOLS};

/// The guest scripts (init, suite.sh, bench.sh, footprint.sh) live beside
/// this crate's manifest.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Fetches/builds what is missing, boots, runs, and turns the guest's
/// verdict into a result.
pub fn run(spec: &Spec) -> Result<Outcome> {
    host::ensure_host_tools()?;
    let (kernel, sysroot) = match &spec.foreign {
        None => (kernel::prepare(&spec.cache, spec.kernel.as_deref())?, None),
        Some(f) => {
            let (k, s) = sysroot::prepare_guest(&spec.cache, f)?;
            (k, Some(s))
        }
    };
    let initramfs = initramfs::build(spec, &kernel, sysroot.as_ref())?;
    boot::boot(spec, &kernel, &initramfs)
}
