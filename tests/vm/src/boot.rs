//! One QEMU run: the command line (x86_64 PVH or a board's machine), the
//! console read line by line, and the guest's markers turned into the
//! verdict: `SIMS-VM-BOOTED <nonce>` (the init script started),
//! `SIMS-VM-MODULE-FAILED <nonce> <module>`, `SIMS-VM-RESULT <nonce>:
//! pass|fail ...`. The nonce is new per boot, so an earlier boot's output
//! or the script's own text is never taken for a verdict.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::kernel::Kernel;
use crate::{Result, Spec, VmError};

/// What a boot produced (for callers that want the console, e.g. benches).
#[derive(Debug, Default)]
pub struct Outcome {
    pub console: Vec<String>,
    pub elapsed: Duration,
}

/// A console line the harness acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker {
    Booted(String),
    ModuleFailed(String),
    Pass,
    Fail(String),
}

/// Recognizes this boot's marker lines (`nonce` must match).
pub fn parse_marker(line: &str, nonce: &str) -> Option<Marker> {
    let find = |tag: &str| -> Option<&str> {
        let i = line.find(tag)?;
        let rest = &line[i + tag.len()..];
        let rest = rest.strip_prefix(' ')?;
        let rest = rest.strip_prefix(nonce)?;
        Some(rest)
    };
    if let Some(rest) = find("SIMS-VM-RESULT") {
        let rest = rest.strip_prefix(": ")?;
        let rest = rest.trim_end();
        if rest == "pass" {
            return Some(Marker::Pass);
        }
        return Some(Marker::Fail(
            rest.strip_prefix("fail").unwrap_or(rest).trim().to_string(),
        ));
    }
    if let Some(rest) = find("SIMS-VM-MODULE-FAILED") {
        let rest = rest.strip_prefix(' ')?;
        let name = rest.split(':').next().unwrap_or(rest).trim();
        return Some(Marker::ModuleFailed(name.to_string()));
    }
    if let Some(rest) = find("SIMS-VM-BOOTED") {
        return Some(Marker::Booted(rest.trim().to_string()));
    }
    None
}

fn nonce() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{:016x}", u64::from_le_bytes(b) ^ t)
}

/// Boots QEMU and waits for the verdict (bounded by the spec's timeouts).
pub fn boot(spec: &Spec, k: &Kernel, initramfs: &Path) -> Result<Outcome> {
    let n = nonce();
    let (qemu, console, p9) = match &spec.foreign {
        None => ("qemu-system-x86_64", "ttyS0", "9p2000.L"),
        Some(f) => (
            f.qemu.as_str(),
            f.guest.console.as_str(),
            f.guest.p9_version.as_str(),
        ),
    };
    let mut append = vec![
        format!("console={console}"),
        format!("sims.9p={p9}"),
        "panic=-1".into(),
        "quiet".into(),
        "loglevel=4".into(),
        "random.trust_cpu=on".into(),
        format!("sims.nonce={n}"),
        format!("sims.run={}", spec.run),
    ];
    append.extend(spec.append.iter().cloned());
    let share = spec
        .share
        .canonicalize()
        .map_err(|e| VmError::Setup(format!("share {}: {e}", spec.share.display())))?;
    let mut c = Command::new(qemu);
    c.args(["-accel", "tcg"]);
    match &spec.foreign {
        None => c.args(["-cpu", "max", "-machine", "pc"]),
        Some(f) => {
            c.args(["-machine", &f.machine]);
            c.args(f.guest.cpu.iter().flat_map(|cpu| ["-cpu", cpu.as_str()]))
        }
    };
    c.args(["-m", &spec.mem_mb.to_string()])
        .args(["-smp", &spec.smp.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&k.image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append.join(" ")])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=host,security_model=none,readonly=on",
            share.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // QEMU dies with us (killed harness, Ctrl-C): no orphaned guest.
    // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
    println!(
        "==> vm: booting {} ({}{} MB, {} vCPUs, TCG); running {} from {}",
        k.image.display(),
        spec.foreign
            .as_ref()
            .map(|f| format!("{} -M {}, ", f.board, f.machine))
            .unwrap_or_default(),
        spec.mem_mb,
        spec.smp,
        spec.run,
        share.display()
    );
    let t0 = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| VmError::Setup(format!("cannot start {qemu}: {e}")))?;
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let mut readers = Vec::new();
    if let Some(o) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || read_lines(o, false, tx)));
    }
    if let Some(e) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || read_lines(e, true, tx)));
    }
    drop(tx);

    let mut out = Outcome::default();
    let mut booted = false;
    let mut modules_failed = Vec::new();
    let mut verdict: Option<std::result::Result<(), String>> = None;
    let mut verdict_at: Option<Instant> = None;
    let mut exited = None;
    let mut exited_at: Option<Instant> = None;
    let mut stderr_lines = Vec::new();
    let mut disconnected = false;
    let err = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((is_err, line)) => {
                if is_err {
                    if spec.echo {
                        eprintln!("qemu: {line}");
                    }
                    stderr_lines.push(line);
                    continue;
                }
                if spec.echo {
                    println!("{line}");
                }
                match parse_marker(&line, &n) {
                    Some(Marker::Booted(_)) => booted = true,
                    Some(Marker::ModuleFailed(m)) => modules_failed.push(m),
                    Some(Marker::Pass) if verdict.is_none() => {
                        verdict = Some(Ok(()));
                        verdict_at = Some(Instant::now());
                    }
                    Some(Marker::Fail(why)) if verdict.is_none() => {
                        verdict = Some(Err(why));
                        verdict_at = Some(Instant::now());
                    }
                    _ => {}
                }
                out.console.push(line);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => disconnected = true,
        }
        if exited.is_none() {
            if let Ok(Some(st)) = child.try_wait() {
                exited = Some(st);
                exited_at = Some(Instant::now());
            }
        }
        if exited.is_some() && disconnected {
            break None;
        }
        if let Some(at) = exited_at {
            // Let the readers drain, briefly.
            if at.elapsed() > Duration::from_secs(5) {
                break None;
            }
            continue;
        }
        // The guest gave its verdict and powers off; kill QEMU if it lingers.
        if let Some(at) = verdict_at {
            if at.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            continue;
        }
        if t0.elapsed() >= spec.timeout {
            break Some(VmError::Timeout(format!(
                "no verdict after {:.0} s (limit {} s); QEMU killed{}",
                t0.elapsed().as_secs_f64(),
                spec.timeout.as_secs(),
                last_lines(&out.console, 15)
            )));
        }
        if !booted && t0.elapsed() >= spec.boot_timeout {
            break Some(VmError::Boot(format!(
                "the init script did not start within {} s (no SIMS-VM-BOOTED marker); QEMU killed{}",
                spec.boot_timeout.as_secs(),
                last_lines(&out.console, 30)
            )));
        }
    };
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    for r in readers {
        let _ = r.join();
    }
    out.elapsed = t0.elapsed();
    println!("==> vm: guest ran {:.1} s", out.elapsed.as_secs_f64());
    if let Some(e) = err {
        return Err(e);
    }
    if !booted {
        return Err(VmError::Boot(format!(
            "QEMU ended ({}) before the init script started{}{}",
            exited
                .map(|s| s.to_string())
                .unwrap_or_else(|| "killed".into()),
            last_lines(&out.console, 30),
            if stderr_lines.is_empty() {
                String::new()
            } else {
                format!("\nqemu stderr:\n{}", stderr_lines.join("\n"))
            }
        )));
    }
    if !modules_failed.is_empty() {
        return Err(VmError::Modules(modules_failed));
    }
    match verdict {
        Some(Ok(())) => Ok(out),
        Some(Err(why)) => Err(VmError::Guest(why)),
        None => Err(VmError::Guest(format!(
            "the guest ended without a verdict (QEMU {}){}",
            exited
                .map(|s| s.to_string())
                .unwrap_or_else(|| "killed".into()),
            last_lines(&out.console, 30)
        ))),
    }
}

fn last_lines(v: &[String], n: usize) -> String {
    if v.is_empty() {
        return "; the console stayed empty".into();
    }
    let from = v.len().saturating_sub(n);
    format!("; last console lines:\n{}", v[from..].join("\n"))
}

fn read_lines(r: impl Read, is_err: bool, tx: mpsc::Sender<(bool, String)>) {
    let mut rd = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match rd.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let s = String::from_utf8_lossy(&buf);
                let s = s.trim_end_matches(['\n', '\r']).replace('\r', "");
                if tx.send((is_err, s)).is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_need_this_boots_nonce() {
        let n = "00ff";
        assert_eq!(
            parse_marker("SIMS-VM-BOOTED 00ff 6.1.0-56-amd64 2 cpus", n),
            Some(Marker::Booted("6.1.0-56-amd64 2 cpus".into()))
        );
        assert_eq!(
            parse_marker("SIMS-VM-RESULT 00ff: pass", n),
            Some(Marker::Pass)
        );
        assert_eq!(
            parse_marker(
                "[   3.1] x SIMS-VM-RESULT 00ff: fail modules did not load: foo",
                n
            ),
            Some(Marker::Fail("modules did not load: foo".into()))
        );
        assert_eq!(
            parse_marker(
                "SIMS-VM-MODULE-FAILED 00ff nosuch: modprobe: FATAL: Module nosuch not found",
                n
            ),
            Some(Marker::ModuleFailed("nosuch".into()))
        );
        // Another boot's verdict, or the script's own text, is no verdict.
        assert_eq!(parse_marker("SIMS-VM-RESULT 1234: pass", n), None);
        assert_eq!(parse_marker("echo \"SIMS-VM-RESULT $nonce: $*\"", n), None);
        assert_eq!(
            parse_marker("SIMS-VM-RESULT 00ff: passed?", n),
            Some(Marker::Fail("passed?".into()))
        );
    }
}
