//! Inter-provider accounting: each roaming partner's traffic through its
//! tunnel, counted per peer id since the operator last reset it, across
//! tunnel teardowns (a tunnel lives only while it has bindings), daemon
//! restarts and reboots. A tunnel's counters are folded into its peer's
//! total when it goes down; the totals with the live tunnels' counters
//! are written to the accounting file every `accounting_interval` (a
//! router's flash must not be rewritten at traffic's pace) and at
//! shutdown. What a power cut loses is at most one interval.
//!
//! The file is text, one line per peer:
//! `peer <id> <since> <tx_packets> <tx_bytes> <rx_packets> <rx_bytes> <rx_dropped>`
//! (`since`: Unix seconds of the last reset).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log::warn;
use sims_daemon::state;
use sims_proto::agent::MAX_PEERS;

use super::{Dataplane, Kind, Traffic};

/// Totals kept: every configured peer's, and removed peers' (their last
/// bill) while there is room.
const MAX_ACCOUNTS: usize = 4 * MAX_PEERS;

const HEADER: &str =
    "# simsd: traffic per roaming partner (tx: sent to it, rx: received from it)\n";

impl Traffic {
    fn plus(self, o: Traffic) -> Traffic {
        Traffic {
            tx_packets: self.tx_packets.saturating_add(o.tx_packets),
            tx_bytes: self.tx_bytes.saturating_add(o.tx_bytes),
            rx_packets: self.rx_packets.saturating_add(o.rx_packets),
            rx_bytes: self.rx_bytes.saturating_add(o.rx_bytes),
            rx_dropped: self.rx_dropped.saturating_add(o.rx_dropped),
        }
    }

    fn minus(self, o: Traffic) -> Traffic {
        Traffic {
            tx_packets: self.tx_packets.saturating_sub(o.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(o.tx_bytes),
            rx_packets: self.rx_packets.saturating_sub(o.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(o.rx_bytes),
            rx_dropped: self.rx_dropped.saturating_sub(o.rx_dropped),
        }
    }
}

/// One peer's account: its traffic since `since` (Unix seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub since: u64,
    pub traffic: Traffic,
}

impl Account {
    /// Nothing counted yet, counting from now.
    fn from_now() -> Account {
        Account {
            since: unix_now(),
            traffic: Traffic::default(),
        }
    }
}

/// The accounts, kept in memory across a restart of the data plane (the
/// file is only where they survive simsd's own restarts and reboots).
#[derive(Clone)]
pub struct Accounts {
    file: Option<PathBuf>,
    interval_ms: u64,
    last_save_ms: u64,
    /// What the file holds now (a periodic save with nothing new writes
    /// nothing).
    written: String,
    /// The traffic of each peer's past tunnels (live ones are read when
    /// asked), by peer id.
    folded: BTreeMap<String, Account>,
}

/// The longest accounting file read (MAX_ACCOUNTS lines fit many times).
const MAX_FILE: u64 = 64 * 1024;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses the accounting file: the accounts, or the line and reason of
/// the first error.
pub fn parse(text: &str) -> Result<BTreeMap<String, Account>, (usize, String)> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let [kw, id, nums @ ..] = w.as_slice() else {
            return Err((n + 1, "expected 'peer <id> <since> <5 counters>'".into()));
        };
        if *kw != "peer" || nums.len() != 6 {
            return Err((n + 1, "expected 'peer <id> <since> <5 counters>'".into()));
        }
        let valid_id = id.len() <= 10
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_id {
            return Err((n + 1, format!("'{id}' is not a peer id")));
        }
        let mut v = [0u64; 6];
        for (x, s) in v.iter_mut().zip(nums) {
            *x = s
                .parse()
                .map_err(|_| (n + 1, format!("'{s}' is not a number")))?;
        }
        if out.len() >= MAX_ACCOUNTS {
            return Err((n + 1, format!("more than {MAX_ACCOUNTS} accounts")));
        }
        let t = Traffic {
            tx_packets: v[1],
            tx_bytes: v[2],
            rx_packets: v[3],
            rx_bytes: v[4],
            rx_dropped: v[5],
        };
        out.insert(
            id.to_string(),
            Account {
                since: v[0],
                traffic: t,
            },
        );
    }
    Ok(out)
}

pub fn format(accounts: &BTreeMap<String, Account>) -> String {
    let mut s = String::from(HEADER);
    for (id, a) in accounts {
        let t = a.traffic;
        let _ = writeln!(
            s,
            "peer {id} {} {} {} {} {} {}",
            a.since, t.tx_packets, t.tx_bytes, t.rx_packets, t.rx_bytes, t.rx_dropped
        );
    }
    s
}

impl Accounts {
    pub(super) fn none() -> Self {
        Accounts {
            file: None,
            interval_ms: u64::MAX,
            last_save_ms: 0,
            written: String::new(),
            folded: BTreeMap::new(),
        }
    }

    /// The accounts in `file`; a file that is not one (unparsable, not
    /// UTF-8, too long) is set aside as `<file>.bad` and counting starts
    /// from zero; one that cannot be read is left alone (and not written
    /// over until it can be).
    fn load(file: &Path, interval_ms: u64, now_ms: u64) -> Self {
        let mut a = Accounts {
            file: Some(file.to_path_buf()),
            interval_ms,
            last_save_ms: now_ms,
            written: String::new(),
            folded: BTreeMap::new(),
        };
        let set_aside = |why: String| {
            let bad = file.with_extension("bad");
            warn!(
                "{}: {why}; kept as {} and counting from zero",
                file.display(),
                bad.display()
            );
            let _ = std::fs::rename(file, &bad);
        };
        match read_limited(file) {
            Ok(None) => {}
            Ok(Some(bytes)) => match String::from_utf8(bytes) {
                Ok(text) => match parse(&text) {
                    Ok(m) => {
                        a.folded = m;
                        a.written = text;
                    }
                    Err((line, reason)) => set_aside(format!("line {line}: {reason}")),
                },
                Err(_) => set_aside("not text".into()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => set_aside(e.to_string()),
            Err(e) => {
                warn!(
                    "{}: {e}; counting from zero, the file left as it is",
                    file.display()
                );
                a.file = None;
            }
        }
        a
    }
}

/// The file's bytes (None: there is none), refusing what is not a
/// regular file of at most MAX_FILE bytes.
fn read_limited(file: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let meta = match std::fs::symlink_metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("over {MAX_FILE} bytes"),
        ));
    }
    Ok(Some(bytes))
}

impl Dataplane {
    /// Keeps the accounts in `file`, saved every `interval_ms`: `carried`
    /// (those of the data plane this one replaces), or those the file
    /// holds. A new file (a reload that changed it) is written at once.
    pub fn keep_accounts(
        &mut self,
        carried: Option<Accounts>,
        file: &Path,
        interval_ms: u64,
        now_ms: u64,
    ) {
        match carried {
            None => self.accounts = Accounts::load(file, interval_ms, now_ms),
            Some(a) => {
                let moved = a.file.as_deref() != Some(file);
                self.accounts = a;
                self.accounts.interval_ms = interval_ms;
                if moved {
                    self.accounts.file = Some(file.to_path_buf());
                    self.accounts.written.clear();
                    self.save_accounts(true, now_ms);
                }
            }
        }
        self.open_accounts();
    }

    /// The accounts go with this data plane (it is shut down: every
    /// tunnel's traffic is folded in).
    pub fn take_accounts(&mut self) -> Accounts {
        std::mem::replace(&mut self.accounts, Accounts::none())
    }

    /// Every configured peer has an account, counted from now if new.
    pub(super) fn open_accounts(&mut self) {
        for (_, id) in self.slot_ids() {
            self.accounts
                .folded
                .entry(id)
                .or_insert_with(Account::from_now);
        }
    }

    /// The live counters of slot `s`'s tunnel since it was counted from.
    fn live_traffic(&self, s: usize) -> Traffic {
        let Some(slot) = self.peer_slot(s) else {
            return Traffic::default();
        };
        let Some(t) = slot.tunnel.as_ref() else {
            return slot.traffic;
        };
        let now = match self.kind {
            Kind::Userspace => slot.traffic,
            // A device gone under us (resync) keeps its last reading.
            Kind::Kernel => match device_counters(&self.slot_tunnel_name(s)) {
                Some(c) => {
                    t.last_read.set(c);
                    c
                }
                None => t.last_read.get(),
            },
        };
        now.minus(t.counted_from)
    }

    /// Slot `s`'s tunnel is going: its traffic joins the peer's total.
    pub(super) fn fold_traffic(&mut self, s: usize) {
        let live = self.live_traffic(s);
        let Some(slot) = self.peer_slot_mut(s) else {
            return;
        };
        slot.traffic = Traffic::default();
        let id = slot.id.clone();
        let a = self
            .accounts
            .folded
            .entry(id)
            .or_insert_with(Account::from_now);
        a.traffic = a.traffic.plus(live);
    }

    /// Peer `id`'s account now (its past tunnels and the live one).
    pub fn account(&self, id: &str) -> Account {
        let mut a = self.accounts.folded.get(id).copied().unwrap_or_default();
        if let Some((s, _)) = self.slot_ids().into_iter().find(|(_, x)| x == id) {
            a.traffic = a.traffic.plus(self.live_traffic(s));
        }
        a
    }

    /// Every account (configured peers and removed ones still kept).
    fn all_accounts(&self) -> BTreeMap<String, Account> {
        let mut all = self.accounts.folded.clone();
        for (s, id) in self.slot_ids() {
            let live = self.live_traffic(s);
            let a = all.entry(id).or_default();
            a.traffic = a.traffic.plus(live);
        }
        all
    }

    /// The operator's reset of peer `id`'s account (all if None): counted
    /// from zero, from now. Saved at once.
    pub fn reset_traffic(&mut self, id: Option<&str>) -> Result<(), String> {
        let ids: Vec<String> = match id {
            Some(id) => {
                let known = self.accounts.folded.contains_key(id)
                    || self.slot_ids().iter().any(|(_, x)| x == id);
                if !known {
                    return Err(format!("no peer '{id}'"));
                }
                vec![id.to_string()]
            }
            None => {
                // Removed peers' accounts go with a full reset.
                let configured: Vec<String> = self.slot_ids().into_iter().map(|(_, x)| x).collect();
                self.accounts.folded.retain(|k, _| configured.contains(k));
                configured
            }
        };
        for id in &ids {
            if let Some((s, _)) = self.slot_ids().into_iter().find(|(_, x)| x == id) {
                let live = self.live_traffic(s);
                if let Some(t) = self.peer_slot_mut(s).and_then(|x| x.tunnel.as_mut()) {
                    t.counted_from = t.counted_from.plus(live);
                } else if let Some(x) = self.peer_slot_mut(s) {
                    x.traffic = Traffic::default();
                }
            }
            self.accounts.folded.insert(id.clone(), Account::from_now());
        }
        self.save_accounts(true, sims_linux::event::now_ms());
        Ok(())
    }

    /// Writes the accounting file when the interval is up (or `force`).
    pub fn save_accounts(&mut self, force: bool, now_ms: u64) {
        let Some(file) = self.accounts.file.clone() else {
            return;
        };
        let due = now_ms
            >= self
                .accounts
                .last_save_ms
                .saturating_add(self.accounts.interval_ms);
        if !force && !due {
            return;
        }
        self.accounts.last_save_ms = now_ms;
        // Removed peers' accounts give way to configured ones.
        let mut all = self.all_accounts();
        let configured: Vec<String> = self.slot_ids().into_iter().map(|(_, x)| x).collect();
        while all.len() > MAX_ACCOUNTS {
            let Some(k) = all.keys().find(|k| !configured.contains(k)).cloned() else {
                break;
            };
            all.remove(&k);
            self.accounts.folded.remove(&k);
        }
        let text = format(&all);
        if text == self.accounts.written {
            return;
        }
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match state::write_durable(&file, text.as_bytes(), state::PUBLIC) {
            Ok(()) => self.accounts.written = text,
            Err(e) => warn!("{}: {e}", file.display()),
        }
    }
}

/// A kernel tunnel device's counters (None if it is gone).
fn device_counters(name: &str) -> Option<Traffic> {
    let read = |k: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/{k}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    Some(Traffic {
        tx_packets: read("tx_packets")?,
        tx_bytes: read("tx_bytes")?,
        rx_packets: read("rx_packets")?,
        rx_bytes: read("rx_bytes")?,
        rx_dropped: read("rx_dropped")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip() {
        let mut m = BTreeMap::new();
        m.insert(
            "ma-b".to_string(),
            Account {
                since: 1_764_700_000,
                traffic: Traffic {
                    tx_packets: 1,
                    tx_bytes: 2,
                    rx_packets: 3,
                    rx_bytes: u64::MAX,
                    rx_dropped: 5,
                },
            },
        );
        m.insert("c_2".to_string(), Account::default());
        assert_eq!(parse(&format(&m)).unwrap(), m);
    }

    #[test]
    fn bad_files_name_the_line() {
        for (text, line, what) in [
            ("peer ma-b 1 2 3\n", 1, "expected"),
            ("# x\n\npeer MA 1 2 3 4 5 6\n", 3, "not a peer id"),
            ("peer ma-b 1 2 3 4 5 x\n", 1, "not a number"),
            ("peer ma-b 1 2 3 4 5 -1\n", 1, "not a number"),
            ("host ma-b 1 2 3 4 5 6\n", 1, "expected"),
            ("peer toolongpeerid 1 2 3 4 5 6\n", 1, "not a peer id"),
        ] {
            let (l, reason) = parse(text).unwrap_err();
            assert_eq!(l, line, "{text}");
            assert!(reason.contains(what), "{text}: {reason}");
        }
        let many: String = (0..=MAX_ACCOUNTS)
            .map(|i| format!("peer p{i} 0 0 0 0 0 0\n"))
            .collect();
        assert!(parse(&many).unwrap_err().1.contains("more than"));
    }
}
