//! `cargo xtask <command>`:
//!
//! * `test [--no-lint] [--no-unit] [--no-fuzz] [-- <libtest args>]` — `cargo fmt --check`,
//!   `cargo clippy --workspace --all-targets -- -D warnings`, the workspace's
//!   unit tests, then builds the binaries and runs the testbed self-test and
//!   the scenario tests one at a time (root needed; they skip otherwise).
//! * `demo [--dwell-s N]` — testbed, a steady download at the node, moves
//!   A → B → A with progress printed each second, teardown.
//! * `testbed [--daemons] [--at a|b|c] [--for-s N]` — builds the testbed
//!   and keeps it up (Ctrl-C, at most N s, default 1800) for poking at by
//!   hand with `ip netns exec`.
//! * `test --target <triple>... | --all`, `build --target <triple>... | --all`,
//!   `bench footprint [--target <triple>]...` — the router targets of
//!   `board-configs/` (xtask/src/targets/, docs/TARGETS.md). `cargo xtask
//!   test` runs every target's tests before the VM suite (skip with
//!   `--no-targets`).
//! * `test vm [--no-selftest] [--selftest-only] [--backends kernel,mixed]
//!   [--timeout-s N] [-- <libtest args>]` — the VM suite (the sims-vm crate,
//!   tests/vm/): the harness's self-check, then one boot of a Debian kernel
//!   under QEMU running the testbed self-test and the scenario suite with
//!   kernel ipip on every agent, then mixed (ma-a kernel, others userspace).
//!   `cargo xtask test` runs it after the router targets (skip with `--no-vm`).
//! * `package --target <triple>... | --all` — the `sims` OpenWrt package
//!   (.ipk and .apk) of each board in `target/openwrt/<package arch>/`,
//!   then installed with the kit's opkg, its apk metadata read, and the
//!   feed's test.sh run under QEMU user mode (cmd/package.rs). `cargo
//!   xtask test` runs it for every board after the router targets.
//!   `--deb`: sims-node's Debian package (static, amd64) in
//!   `target/debian/`, for laptops (docs/NODE.md).
//! * `fuzz [--secs N] [--runs N] [--cargo-fuzz] [target...]` — builds the
//!   fuzz crate (fuzz/, outside the workspace) with nightly and the flags
//!   of cargo-fuzz, runs each libFuzzer target for N s or N executions
//!   (default 20 s), prints the executions per target (cmd/fuzz.rs).
//!   `cargo xtask test` ends with 20 s of each (skip with `--no-fuzz`).
//! * `bench handover [--moves N]` — release build, N alternating moves
//!   measured with `sims-traffic probe`; the last line is
//!   `handover median_ms=<x> p99_ms=<y> moves=<n>`. `--debug` uses debug
//!   binaries (a quick check of the harness, not figures to quote).
//!   `--delay-ms N`: netem delay on each agent's WAN (needs sch_netem: the
//!   VM has it, see `vm-delay`).
//! * `bench vm-delay [--moves N] [--delays 0,10,40]` — in the VM (kernel
//!   ipip, netem): the handover benchmark per one-way WAN delay, then the
//!   table of handover time against delay and the fitted slope.
//! * `bench dataplane [--pairs N]` — in the VM: relayed vs direct TCP
//!   throughput, and new sessions' forwarding with 0 vs 10,000 bindings;
//!   last line `dataplane relayed_vs_direct=<r> new_10k_vs_0=<r>`.
//! * `bench handover-cpu` — the protocol's CPU per handover (the real
//!   cores, no I/O) on x86_64 natively and on mipsel in the Malta guest,
//!   public-key operations per handover and their share of the time
//!   (targets/handover_cpu.rs).
//!
//! | file | what |
//! | --- | --- |
//! | `main.rs` | this dispatch |
//! | `opts.rs` | the one option parser |
//! | `cargo.rs` | the workspace, its cargo, host builds |
//! | `deps.rs` | host packages and rust components on first use |
//! | `cmd/{test,demo,build,bench,fuzz,package}.rs` | the commands |
//! | `targets/{boards,toolchain,footprint}.rs` | the router targets |
//!
//! The VM harness is the `sims-vm` crate (tests/vm/), the namespace
//! testbed `sims-testbed`.

mod cargo;
mod cmd;
mod deps;
mod opts;
mod targets;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask test [--no-lint] [--no-unit] [--no-targets] [--no-vm] [--no-fuzz] [-- <test args>]
       cargo xtask test vm [--no-selftest] [--selftest-only] [--backends kernel,mixed] [--timeout-s N] [-- <test args>]
       cargo xtask demo [--dwell-s N]
       cargo xtask testbed [--daemons] [--at a|b|c] [--for-s N]
       cargo xtask bench handover [--moves N] [--delay-ms N] [--no-early]
                                  [--rto-min-ms N] [--dhcp-delay-s N] [--debug]
       cargo xtask bench vm-delay [--moves N] [--delays 0,10,40] [--debug]
       cargo xtask bench dataplane [--pairs N] [--debug]
       cargo xtask test --target <triple>... | --all [-- <test args>]
       cargo xtask test vm --target <triple>... | --all [-- <test args>]
       cargo xtask build --target <triple>... | --all
       cargo xtask package --target <triple>... | --all | --deb
       cargo xtask targets [--install]
       cargo xtask bench footprint [--target <triple>]...
       cargo xtask bench flood
       cargo xtask bench handover-cpu
       cargo xtask fuzz [--secs N] [--runs N] [--cargo-fuzz] [target...]";

const BENCH_USAGE: &str =
    "usage: cargo xtask bench handover [--moves N] [--delay-ms N] [--no-early]
                                  [--rto-min-ms N] [--dhcp-delay-s N] [--debug]
       cargo xtask bench footprint [--target <triple>]...
       cargo xtask bench vm-delay [--moves N] [--delays 0,10,40] [--debug]
       cargo xtask bench dataplane [--pairs N] [--debug]
       cargo xtask bench flood
       cargo xtask bench handover-cpu
       cargo xtask bench scale [--cities N] [--agents-per-city N] [--nodes-per-city N]
                               [--hours H] [--seed S] [--threads T] [--plots DIR]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (first, rest) = match args.split_first() {
        Some((f, r)) => (f.as_str(), r),
        None => ("", &[][..]),
    };
    // The README's commands must work on a fresh machine.
    if matches!(first, "test" | "demo" | "testbed" | "bench") {
        let ensure = if first == "test" {
            deps::ensure_test_packages
        } else {
            deps::ensure_testbed_packages
        };
        if let Err(e) = ensure() {
            eprintln!("xtask: {e}");
            return ExitCode::FAILURE;
        }
    }
    let sub = rest.first().map(String::as_str);
    let r = match (first, sub) {
        ("test", Some("vm")) => cmd::test::test_vm(&rest[1..]),
        ("test", _) => cmd::test::test(rest),
        ("build", _) => cmd::build::build(rest),
        ("package", _) => cmd::package::package(rest),
        ("fuzz", _) => cmd::fuzz::fuzz(rest),
        ("targets", _) => cmd::build::list(rest),
        ("demo", _) => cmd::demo::demo(rest),
        ("testbed", _) => cmd::demo::testbed(rest),
        ("bench", Some("handover")) => cmd::bench::handover(&rest[1..]),
        ("bench", Some("footprint")) => cmd::bench::footprint(&rest[1..]),
        ("bench", Some("vm-delay")) => cmd::bench::vm_delay(&rest[1..]),
        ("bench", Some("dataplane")) => cmd::bench::dataplane(&rest[1..]),
        ("bench", Some("flood")) => cmd::bench::flood(&rest[1..]),
        ("bench", Some("handover-cpu")) => cmd::bench::handover_cpu(&rest[1..]),
        ("bench", Some("scale")) => cmd::bench::scale(&rest[1..]),
        ("bench", _) => Err(BENCH_USAGE.into()),
        // Run by tests/vm/bench.sh inside the VM (no cargo there).
        ("guest", _) => cmd::bench::guest(rest),
        _ => Err(USAGE.into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
