//! The DHCP clients laptops run, each driven the way it is on a laptop:
//!
//! - dhcpcd: one daemon for the whole run, which follows the carrier (a
//!   move is the link going down and up; dhcpcd drops its lease, asks the
//!   new network, probes the address by ARP and configures it);
//! - dhclient: as ifupdown runs it on re-association: `dhclient -r`
//!   (release: Debian's dhclient-script flushes every address labelled
//!   with the interface's name, the held /32s too), then a new `dhclient`;
//! - NetworkManager with its internal DHCP client, on a private D-Bus, as
//!   it is on Wi-Fi: a new association is a new activation of the
//!   connection (`nmcli connection up`: deactivate, which removes the
//!   addresses it did not configure as well, then DHCP).
//!
//! Each runs in a mount (and UTS) namespace of its own where its state
//! and run directories are the testbed's, so nothing of the host's is
//! read or written (resolv.conf, leases, the hostname), and it manages
//! only the node's interface. Each logs its events to the testbed's
//! events file through `dhcp-hook.script` (NetworkManager has no hook:
//! the testbed writes its line when the address appears).

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::options::DhcpClient;
use super::{Testbed, MN_IFACE};
use crate::sys::{find_tool, run_cmd, set_mode, tail, wait_for, Result};
use crate::traffic::mono_ns;

/// The event hook shipped in `tests/testbed/dhcp-hook.script`.
const DHCP_HOOK: &str = include_str!("../../dhcp-hook.script");
/// Debian's dhclient event script: what configures dhclient's addresses.
const DHCLIENT_SCRIPT: &str = "/sbin/dhclient-script";
/// Longest wait for an address after a move (dhcpcd's ARP probe is ~5 s).
const BOUND_TIMEOUT: Duration = Duration::from_secs(30);

impl DhcpClient {
    /// The program, or why this host cannot run the client.
    pub fn program(self) -> std::result::Result<PathBuf, String> {
        let (name, paths, pkg): (&str, &[&str], &str) = match self {
            DhcpClient::Udhcpc => return Ok(crate::sys::busybox_bin()),
            DhcpClient::Dhcpcd => (
                "dhcpcd",
                &["/usr/sbin/dhcpcd", "/sbin/dhcpcd"],
                "dhcpcd-base",
            ),
            DhcpClient::Dhclient => (
                "dhclient",
                &["/usr/sbin/dhclient", "/sbin/dhclient"],
                "isc-dhcp-client",
            ),
            DhcpClient::NetworkManager => (
                "NetworkManager",
                &["/usr/sbin/NetworkManager"],
                "network-manager",
            ),
        };
        let p = find_tool(name, paths).ok_or_else(|| format!("{name} missing ({pkg})"))?;
        if self == DhcpClient::NetworkManager {
            for (tool, pkg) in [("dbus-daemon", "dbus-daemon"), ("nmcli", "network-manager")] {
                find_tool(tool, &[&format!("/usr/bin/{tool}")])
                    .ok_or_else(|| format!("{tool} missing ({pkg})"))?;
            }
        }
        if self == DhcpClient::Dhclient && !Path::new(DHCLIENT_SCRIPT).is_file() {
            return Err(format!("{DHCLIENT_SCRIPT} missing (isc-dhcp-client)"));
        }
        Ok(p)
    }
}

/// `unshare -m -u sh -c '<mounts>; exec "$@"' sh <argv...>`: `argv` in a
/// mount and UTS namespace of its own with `binds` (testbed directory or
/// file, the path it hides) mounted; with `ro_sys`, /sys read-only (see
/// [`Testbed::start_network_manager`]).
fn private_mounts(
    binds: &[(&Path, &str)],
    tmpfs: &[&str],
    ro_sys: bool,
    argv: &[String],
) -> Vec<String> {
    let mut script = String::from("set -e");
    for (from, to) in binds {
        script += &format!("; mount --bind '{}' '{to}'", from.display());
    }
    for t in tmpfs {
        script += &format!("; mount -t tmpfs -o mode=0755 none '{t}'");
    }
    if ro_sys {
        script += "; mount -o remount,bind,ro /sys";
    }
    script += "; exec \"$@\"";
    let mut v: Vec<String> = ["unshare", "-m", "-u", "sh", "-c", &script, "sh"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(argv.iter().cloned());
    v
}

impl Testbed {
    fn client_dir(&self) -> PathBuf {
        self.node_dir().join(self.opts.dhcp_client.name())
    }

    /// The hook script with this testbed's paths; `real`: the script it
    /// runs first.
    fn write_hook(&self, real: &str) -> Result<PathBuf> {
        let p = self.client_dir().join("hook.script");
        let text = DHCP_HOOK
            .replace("@EVENTS@", &self.dir.join("dhcp-events").to_string_lossy())
            .replace("@TRAFFIC@", &self.traffic_bin.to_string_lossy())
            .replace("@REAL@", real);
        fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        set_mode(&p, 0o755)?;
        Ok(p)
    }

    /// Lines of the events file so far (a move's are those after).
    pub(super) fn dhcp_events_seen(&self) -> usize {
        fs::read_to_string(self.dir.join("dhcp-events"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Waits for a "bound" event after the first `before` lines.
    fn wait_bound_event(
        &mut self,
        before: usize,
        proc: Option<usize>,
    ) -> Result<(Ipv4Addr, Option<u64>)> {
        let events = self.dir.join("dhcp-events");
        let name = self.opts.dhcp_client.name();
        let log = self.client_dir().join("client.log");
        wait_for(
            &format!("{name} to configure an address"),
            BOUND_TIMEOUT,
            Duration::from_millis(20),
            || {
                if let Some(st) = proc.and_then(|i| self.proc_exited(i)) {
                    return Err(format!("{name} exited: {st}"));
                }
                super::dhcp::bound_after(&events, before)
            },
        )
        .map_err(|e| format!("{e}\n--- {name}:\n{}", tail(&log, 30)))
    }

    /// The move's DHCP with a client other than udhcpc (see the module).
    pub(super) fn dhcp_with_client(&mut self) -> Result<(Ipv4Addr, Option<u64>)> {
        let client = self.opts.dhcp_client;
        client.program()?;
        fs::create_dir_all(self.client_dir()).map_err(|e| e.to_string())?;
        let before = self.dhcp_events_seen();
        match client {
            DhcpClient::Udhcpc => unreachable!("udhcpc runs once per move (dhcp.rs)"),
            DhcpClient::Dhcpcd => {
                if self.dhcp_daemon.is_none() {
                    self.start_dhcpcd()?;
                }
                let p = self.dhcp_daemon;
                self.wait_bound_event(before, p)
            }
            DhcpClient::Dhclient => {
                self.dhclient_release()?;
                let i = self.start_dhclient()?;
                self.wait_bound_event(before, Some(i))
            }
            DhcpClient::NetworkManager => {
                if self.dhcp_daemon.is_none() {
                    self.start_network_manager()?;
                } else {
                    self.nmcli(&["--wait", "30", "connection", "up", MN_IFACE])?;
                }
                self.wait_nm_address()
            }
        }
    }

    fn spawn_client(
        &mut self,
        label: &str,
        argv: Vec<String>,
        env: &[(&str, &str)],
    ) -> Result<usize> {
        let log = self.client_dir().join("client.log");
        let mn = self.mn();
        self.spawn(label, &mn, &argv, env, &log)
    }

    fn start_dhcpcd(&mut self) -> Result<()> {
        let d = self.client_dir();
        let hook = self.write_hook("")?;
        let conf = d.join("dhcpcd.conf");
        // A laptop's defaults but IPv4 only: no IPv6, no IPv4LL (169.254/16).
        fs::write(&conf, "ipv4only\nnoipv4ll\n").map_err(|e| e.to_string())?;
        let (run, lib) = (d.join("run"), d.join("lib"));
        for p in [&run, &lib] {
            fs::create_dir_all(p).map_err(|e| e.to_string())?;
        }
        let prog = self.opts.dhcp_client.program()?;
        let argv = private_mounts(
            &[(&run, "/run/dhcpcd"), (&lib, "/var/lib/dhcpcd")],
            &[],
            false,
            &[
                prog.to_string_lossy().into_owned(),
                "-B".into(),
                "-f".into(),
                conf.to_string_lossy().into_owned(),
                "-c".into(),
                hook.to_string_lossy().into_owned(),
                MN_IFACE.into(),
            ],
        );
        ensure_dirs(&["/run/dhcpcd", "/var/lib/dhcpcd"])?;
        self.dhcp_daemon = Some(self.spawn_client("dhcpcd@mn", argv, &[])?);
        Ok(())
    }

    /// dhclient's command line as ifupdown writes it, plus `extra`.
    fn dhclient_argv(&self, extra: &[&str]) -> Result<Vec<String>> {
        let d = self.client_dir();
        let resolv = d.join("resolv.conf");
        if !resolv.exists() {
            fs::write(&resolv, "").map_err(|e| e.to_string())?;
        }
        let hook = self.write_hook(DHCLIENT_SCRIPT)?;
        let prog = self.opts.dhcp_client.program()?;
        let mut argv: Vec<String> = vec![prog.to_string_lossy().into_owned()];
        argv.extend(extra.iter().map(|s| s.to_string()));
        for (flag, v) in [
            ("-pf", d.join("dhclient.pid")),
            ("-lf", d.join("dhclient.leases")),
            ("-sf", hook),
        ] {
            argv.push(flag.into());
            argv.push(v.to_string_lossy().into_owned());
        }
        argv.push(MN_IFACE.into());
        Ok(private_mounts(
            &[(&resolv, "/etc/resolv.conf")],
            &[],
            false,
            &argv,
        ))
    }

    /// `dhclient -r` (ifdown): stops the running dhclient and releases.
    fn dhclient_release(&mut self) -> Result<()> {
        let Some(i) = self.dhcp_daemon.take() else {
            return Ok(());
        };
        let argv = self.dhclient_argv(&["-4", "-v", "-r"])?;
        let mut c = self.mn().command(&argv[0]);
        c.args(&argv[1..]);
        let out = run_cmd(c, None, Duration::from_secs(15))?;
        let log = self.client_dir().join("client.log");
        let _ = fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(f, "=== dhclient -r: {}{}", out.stdout, out.stderr)
            });
        // dhclient -r ends the running one (its pid file); wait for it.
        wait_for(
            "the released dhclient to exit",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok(self.proc_exited(i).map(|_| ())),
        )
    }

    fn start_dhclient(&mut self) -> Result<usize> {
        let argv = self.dhclient_argv(&["-d", "-4", "-v"])?;
        let i = self.spawn_client("dhclient@mn", argv, &[])?;
        self.dhcp_daemon = Some(i);
        Ok(i)
    }

    fn nm_bus(&self) -> PathBuf {
        self.client_dir().join("bus")
    }

    fn nmcli(&self, args: &[&str]) -> Result<String> {
        let mut c = self.mn().command("nmcli");
        c.args(args).env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!("unix:path={}", self.nm_bus().display()),
        );
        let out = run_cmd(c, None, Duration::from_secs(40))?;
        if !out.ok() {
            return Err(format!(
                "nmcli {}: {:?}\n{}{}",
                args.join(" "),
                out.status,
                out.stdout,
                out.stderr
            ));
        }
        Ok(out.stdout)
    }

    /// `nmcli device reapply <iface>`: NetworkManager makes the interface
    /// what its profile says again (it removes addresses it did not add).
    pub fn nm_reapply(&self) -> Result<()> {
        self.nmcli(&["device", "reapply", MN_IFACE]).map(|_| ())
    }

    /// A private system bus, then NetworkManager managing only the node's
    /// interface with a DHCP profile. Without udev (none runs here) it
    /// would wait for udev to announce the interface forever; with /sys
    /// read-only it runs as in a container and takes interfaces as the
    /// kernel reports them.
    fn start_network_manager(&mut self) -> Result<()> {
        let d = self.client_dir();
        let (etc, lib) = (d.join("etc"), d.join("lib"));
        let conns = etc.join("system-connections");
        for p in [&conns, &lib] {
            fs::create_dir_all(p).map_err(|e| e.to_string())?;
        }
        let bus = self.nm_bus();
        let bus_conf = d.join("bus.conf");
        fs::write(
            &bus_conf,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>system</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>\n\
                 <policy context=\"default\"><allow user=\"root\"/><allow own=\"*\"/><allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n",
                bus.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        fs::write(
            etc.join("NetworkManager.conf"),
            format!(
                "[main]\nplugins=keyfile\nno-auto-default=*\ndhcp=internal\n\
                 [keyfile]\nunmanaged-devices=except:interface-name:{MN_IFACE}\n\
                 [logging]\nlevel=INFO\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let profile = conns.join(format!("{MN_IFACE}.nmconnection"));
        fs::write(
            &profile,
            format!(
                "[connection]\nid={MN_IFACE}\ntype=ethernet\ninterface-name={MN_IFACE}\nautoconnect=true\n\
                 [ipv4]\nmethod=auto\n[ipv6]\nmethod=disabled\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        set_mode(&profile, 0o600)?;
        let dbus = find_tool("dbus-daemon", &["/usr/bin/dbus-daemon"]).unwrap_or_default();
        self.spawn_client(
            "dbus-daemon@mn",
            vec![
                dbus.to_string_lossy().into_owned(),
                "--nofork".into(),
                "--nopidfile".into(),
                format!("--config-file={}", bus_conf.display()),
            ],
            &[],
        )?;
        wait_for(
            "the private D-Bus",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok(bus.exists().then_some(())),
        )?;
        ensure_dirs(&[
            "/etc/NetworkManager",
            "/var/lib/NetworkManager",
            "/run/NetworkManager",
        ])?;
        let prog = self.opts.dhcp_client.program()?;
        let argv = private_mounts(
            &[
                (&etc, "/etc/NetworkManager"),
                (&lib, "/var/lib/NetworkManager"),
            ],
            &["/run/NetworkManager"],
            true,
            &[prog.to_string_lossy().into_owned(), "--no-daemon".into()],
        );
        let addr = format!("unix:path={}", bus.display());
        let i = self.spawn_client(
            "NetworkManager@mn",
            argv,
            &[("DBUS_SYSTEM_BUS_ADDRESS", &addr)],
        )?;
        self.dhcp_daemon = Some(i);
        Ok(())
    }

    /// NetworkManager has no event hook: the move's address is the
    /// interface's address with a prefix (not a held /32) once nmcli
    /// reports the device connected; its line goes to the events file.
    fn wait_nm_address(&mut self) -> Result<(Ipv4Addr, Option<u64>)> {
        let proc = self.dhcp_daemon;
        let log = self.client_dir().join("client.log");
        let addr = wait_for(
            "NetworkManager to configure an address",
            BOUND_TIMEOUT,
            Duration::from_millis(20),
            || {
                if let Some(st) = proc.and_then(|i| self.proc_exited(i)) {
                    return Err(format!("NetworkManager exited: {st}"));
                }
                let state = self
                    .nmcli(&["-g", "GENERAL.STATE", "device", "show", MN_IFACE])
                    .unwrap_or_default();
                if !state.starts_with("100") {
                    return Ok(None);
                }
                Ok(self
                    .node_addrs()?
                    .into_iter()
                    .find(|(_, plen)| *plen < 32)
                    .map(|(a, _)| a))
            },
        )
        .map_err(|e| format!("{e}\n--- NetworkManager:\n{}", tail(&log, 30)))?;
        let stamp = mono_ns();
        let line = format!("{stamp} bound {MN_IFACE} {addr} - -\n");
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dhcp-events"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
            .map_err(|e| e.to_string())?;
        Ok((addr, Some(stamp)))
    }
}

/// The clients' own directories, which the private mounts hide: created
/// (empty) if the package did not.
fn ensure_dirs(dirs: &[&str]) -> Result<()> {
    for d in dirs {
        fs::create_dir_all(d).map_err(|e| format!("{d}: {e}"))?;
    }
    Ok(())
}
