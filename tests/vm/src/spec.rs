//! What to boot: the kernel, modules, binaries, share and limits of one run.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Modules the guest needs: ipip and its tunnel core, the testbed's links
/// (veth, bridge, tun), nftables with NAT and conntrack (plus
/// crc32c_generic: libcrc32c's softdep, without it nf_tables does not
/// load), netem, TCP socket diagnostics (sims-node), and the 9p share.
pub const MODULES: &[&str] = &[
    "crc32c_generic",
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "tunnel4",
    "ip_tunnel",
    "ipip",
    "veth",
    "bridge",
    "tun",
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_chain_nat",
    "nft_masq",
    "nft_nat",
    "nft_ct",
    "sch_netem",
    "sch_tbf",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
];

/// Tools whose binaries (and shared libraries) go into the guest, from
/// the host or, for a foreign guest, from its sysroot (with busybox).
pub const TOOLS: &[&str] = &[
    "usr/sbin/ip",
    "usr/sbin/tc",
    "usr/sbin/nft",
    "usr/sbin/dnsmasq",
    "usr/bin/kmod",
];

/// What to boot and run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// `<workspace>/.cache/vm`.
    pub cache: PathBuf,
    /// `tests/vm/init`.
    pub init_script: PathBuf,
    /// Kernel flavour version such as `6.1.0-56-amd64`; None: what Debian's
    /// `linux-image-amd64` depends on (or `SIMS_VM_KERNEL`).
    pub kernel: Option<String>,
    pub modules: Vec<String>,
    /// Binaries that will run in the guest (their libraries go in).
    pub guest_bins: Vec<PathBuf>,
    /// Directory shared read-only as `/mnt/host`.
    pub share: PathBuf,
    /// Script in the share the init runs (`sh /mnt/host/<run>`).
    pub run: String,
    /// Extra kernel command line words.
    pub append: Vec<String>,
    /// Until the init script says it started.
    pub boot_timeout: Duration,
    /// For the whole run.
    pub timeout: Duration,
    pub mem_mb: u32,
    pub smp: u32,
    /// Copy the guest console to stdout.
    pub echo: bool,
    /// A guest of another architecture; None: x86_64 with the host's tools.
    pub foreign: Option<Foreign>,
}

/// A guest of a router target's architecture (its board config's `vm_*`
/// keys): kernel and userland come from Debian's archive for that
/// architecture ([`crate::sysroot`]), the test binaries are cross-built.
#[derive(Clone, Debug)]
pub struct Foreign {
    /// The board's name, for messages.
    pub board: String,
    /// `qemu-system-<arch>` and its `-M` machine.
    pub qemu: String,
    pub machine: String,
    pub guest: Guest,
}

/// A Debian system guest under `qemu-system-<arch> -M <machine>` (a board
/// config's `vm_*` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    /// Debian's name of the architecture (`mipsel`, `arm64`).
    pub debian_arch: String,
    /// The kernel meta-package, e.g. `linux-image-4kc-malta`.
    pub kernel_package: String,
    /// The host package that brings `qemu-system-<arch>`.
    pub qemu_package: String,
    /// `-cpu` for the system emulator, if not the machine's default.
    pub cpu: Option<String>,
    /// The serial console's device name (`ttyS0`, `ttyAMA0`).
    pub console: String,
    pub mem_mb: u32,
    pub smp: u32,
    /// The 9p protocol the guest mounts the share with.
    pub p9_version: String,
}

impl Spec {
    pub fn new(workspace: &Path, share: PathBuf, run: &str) -> Spec {
        Spec {
            cache: workspace.join(".cache").join("vm"),
            init_script: crate::script("init"),
            kernel: std::env::var("SIMS_VM_KERNEL")
                .ok()
                .filter(|s| !s.is_empty()),
            modules: MODULES.iter().map(|s| s.to_string()).collect(),
            guest_bins: Vec::new(),
            share,
            run: run.to_string(),
            append: Vec::new(),
            boot_timeout: Duration::from_secs(90),
            timeout: Duration::from_secs(30 * 60),
            mem_mb: 1024,
            smp: 2,
            echo: true,
            foreign: None,
        }
    }

    /// The same for a foreign guest, with its memory and CPUs.
    pub fn for_guest(workspace: &Path, share: PathBuf, run: &str, f: Foreign) -> Spec {
        let mut s = Spec::new(workspace, share, run);
        s.mem_mb = f.guest.mem_mb;
        s.smp = f.guest.smp;
        s.foreign = Some(f);
        s
    }
}
