//! `sims-node status`: the node's report on its status socket, as JSON
//! written by hand (`status`, for scripts) or in plain words (`report`,
//! for people): the current network and whether it offers SIMS, each old
//! address with the connections that keep it and where it is relayed.

use std::fmt::Write as _;

use sims_daemon::json::{hex, q};
use sims_linux::sockdiag::TcpSock;
use sims_proto::node::{BindingState, Node};

use crate::client::Client;

/// Whether the network the node is on offers SIMS, as far as it can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sims {
    /// An agent is heard.
    Offered,
    /// Not yet known (no address yet, or the first solicitations).
    Looking,
    /// The node has an address and no agent answered its solicitations.
    NotOffered,
}

impl Sims {
    pub fn as_str(self) -> &'static str {
        match self {
            Sims::Offered => "offered",
            Sims::Looking => "looking",
            Sims::NotOffered => "not offered",
        }
    }
}

/// What the report is made of.
pub struct Report<'a> {
    pub iface: &'a str,
    pub node: &'a Node,
    pub sims: Sims,
    /// The node's clock (its bindings' times are on it).
    pub now_ms: u64,
    /// TCP sessions on the old addresses.
    pub connections: &'a [TcpSock],
    /// (netlink changes made, address/route events seen)
    pub kernel: (u64, u64),
}

/// Connections listed per address (the count is always whole).
const LISTED: usize = 16;

impl Client {
    pub fn report(&self, connections: &[TcpSock]) -> String {
        self.report_of(connections, false)
    }

    pub fn status_json(&self, connections: &[TcpSock]) -> String {
        self.report_of(connections, true)
    }

    fn report_of(&self, connections: &[TcpSock], json: bool) -> String {
        let r = Report {
            iface: &self.iface.name,
            node: &self.node,
            sims: self.sims_here(),
            now_ms: sims_daemon::now().ms,
            connections,
            kernel: (
                self.iface.changes + self.routes.changes + self.nat_changes(),
                self.kernel_events,
            ),
        };
        match json {
            true => r.json(),
            false => r.text(),
        }
    }
}

/// A string from the network or the command line, for a terminal: control
/// characters and bidirectional overrides become `?`.
fn plain(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            c if c.is_control() => '?',
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '?',
            c => c,
        })
        .collect()
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}

impl Report<'_> {
    fn conns(&self, addr: std::net::Ipv4Addr) -> impl Iterator<Item = &TcpSock> {
        self.connections
            .iter()
            .filter(move |c| *c.local.ip() == addr)
    }

    fn old(&self) -> impl Iterator<Item = &sims_proto::node::NodeBinding> {
        let cur = self.node.current();
        (self.node.bindings().iter()).filter(move |b| Some(b.addr()) != cur)
    }

    /// The report as JSON. Every string is quoted with `q`: the agent's id
    /// and the bindings' issuers come from the network, the interface's
    /// name from the command line.
    pub fn json(&self) -> String {
        let node = self.node;
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"iface\":{},\"node\":\"{}\",\"current\":",
            q(self.iface),
            hex(&node.key()[..8])
        );
        match node.current() {
            Some(c) => {
                let agent = node.agent().map(|a| a.id.as_str()).unwrap_or("");
                let _ = write!(
                    s,
                    "{{\"addr\":\"{c}\",\"agent\":{},\"registered\":{}}}",
                    q(agent),
                    node.is_registered()
                );
            }
            None => s.push_str("null"),
        }
        let _ = write!(s, ",\"sims\":\"{}\",\"bindings\":[", self.sims.as_str());
        for (i, b) in node.bindings().iter().enumerate() {
            let relayed_s = match (b.state, b.relayed_since_ms) {
                (BindingState::Relayed, Some(t)) => {
                    (self.now_ms.saturating_sub(t) / 1000).to_string()
                }
                _ => "null".into(),
            };
            let _ = write!(
                s,
                "{}{{\"addr\":\"{}\",\"issuer\":{},\"state\":\"{}\",\"sockets\":{},\"relayed_s\":{relayed_s},\"connections\":[",
                if i > 0 { "," } else { "" },
                b.addr(),
                q(&b.cred.issuer),
                b.state.as_str(),
                b.sockets
            );
            for (j, c) in self.conns(b.addr()).take(LISTED).enumerate() {
                let _ = write!(
                    s,
                    "{}\"{} {}\"",
                    if j > 0 { "," } else { "" },
                    c.local,
                    c.remote
                );
            }
            s.push_str("]}");
        }
        let _ = write!(
            s,
            "],\"kernel\":{{\"changes\":{},\"events\":{}}}}}",
            self.kernel.0, self.kernel.1
        );
        s
    }

    /// The report in plain words.
    pub fn text(&self) -> String {
        let node = self.node;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "sims-node on {} (node {})",
            plain(self.iface),
            hex(&node.key()[..8])
        );
        let agent = node.agent().map(|a| plain(a.id.as_str()));
        let network = match (node.current(), &agent, self.sims) {
            (Some(c), Some(a), _) if node.is_registered() => {
                format!("{c}, SIMS agent {a} (registered)")
            }
            (Some(c), Some(a), _) => format!("{c}, SIMS agent {a} (registering)"),
            (Some(c), None, Sims::NotOffered) => {
                format!("{c}: this network does not offer SIMS (no agent answered)")
            }
            (Some(c), None, _) => format!("{c}, looking for a SIMS agent"),
            (None, Some(a), _) => format!("no address yet (DHCP); SIMS agent {a} heard"),
            (None, None, _) => "no address yet (DHCP)".into(),
        };
        let _ = writeln!(s, "Network: {network}");
        let old: Vec<_> = self.old().collect();
        if old.is_empty() {
            s.push_str("No old addresses: nothing is relayed.\n");
            return s;
        }
        let _ = writeln!(s, "Old addresses kept ({}):", old.len());
        for b in &old {
            let issuer = plain(&b.cred.issuer);
            // Counted now (the census's count may be a quarter second old).
            let n = self.conns(b.addr()).count();
            let conns = match n {
                1 => "1 connection".to_string(),
                n => format!("{n} connections"),
            };
            let how = match (b.state, &agent) {
                (BindingState::Relayed, Some(a)) => {
                    let since = (b.relayed_since_ms)
                        .map(|t| format!(" for {}", duration(self.now_ms.saturating_sub(t))))
                        .unwrap_or_default();
                    format!("relayed from {issuer} through {a}{since}")
                }
                (BindingState::Relayed, None) => format!("relayed from {issuer}"),
                _ => format!("from {issuer}, waiting for this network's agent"),
            };
            let _ = writeln!(s, "  {}: {how}, {conns}", b.addr());
            for c in self.conns(b.addr()).take(LISTED) {
                let _ = writeln!(s, "    {} -> {}", c.local, c.remote);
            }
        }
        let with_sessions: Vec<String> = (old.iter())
            .filter(|b| self.conns(b.addr()).next().is_some())
            .map(|b| b.addr().to_string())
            .collect();
        if self.sims == Sims::NotOffered && !with_sessions.is_empty() {
            let _ = writeln!(
                s,
                "This network does not offer SIMS: old sessions on {} will end.",
                with_sessions.join(", ")
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use sims_proto::msg::{
        self, Advertisement, Credential, Message, Registration, RegistrationReply,
    };
    use sims_proto::node::{Action, NodeConfig};
    use sims_proto::{AgentId, Now, Status};

    use super::*;

    /// A hostile agent's id: quote, backslash, newline, ESC, C1 CSI, bidi
    /// override (16 bytes, the most an id holds).
    const EVIL: &str = "a\"\\\n\u{1b}\u{9b}\u{202e}z";

    fn now() -> Now {
        Now::ms(0)
    }

    #[test]
    fn strings_from_the_network_are_escaped() {
        let mut node = Node::new(NodeConfig::default(), [1; 32], [2; 6], [0; 32]);
        let mut out = Vec::new();
        let addr = Ipv4Addr::new(10, 1, 0, 50);
        node.set_address(now(), Some(addr), &mut out);
        let agent = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 1), 4434);
        // The answer to the node's solicitation, with its nonce.
        let nonce = out
            .iter()
            .find_map(|a| match a {
                Action::Broadcast { data } => match msg::decode(data) {
                    Ok(Message::Solicitation(s)) => Some(s.nonce),
                    _ => None,
                },
                _ => None,
            })
            .unwrap();
        let (agent_sk, agent_dh) = msg::agent_dh_keys([5; 32]).unwrap();
        let advert = Message::Advertisement(Advertisement {
            agent: AgentId::from(EVIL),
            provider: msg::Provider::from("p\n"),
            endpoint: [100, 64, 1, 2],
            dh: agent_dh,
            instance: 1,
            seq: 1,
            lifetime_s: 15,
            solicited: Some(msg::Solicited {
                nonce,
                cookie: [1; 16],
            }),
        });
        out.clear();
        let d = msg::encode(&advert, None).unwrap();
        node.handle_datagram(now(), agent, addr, &d, &mut out);
        // The node registers; the agent answers with a credential it issued.
        let req_id = out
            .iter()
            .find_map(|a| match a {
                Action::Send { data, .. } => match msg::decode(data) {
                    Ok(Message::Registration(Registration { req_id, .. })) => Some(req_id),
                    _ => None,
                },
                _ => None,
            })
            .unwrap();
        let reply = Message::RegistrationReply(RegistrationReply {
            req_id,
            status: Status::Ok,
            cred: Some(Credential {
                addr: addr.octets(),
                issuer: AgentId::from(EVIL),
                serial: 1,
            }),
            lifetime_s: 300,
            results: Default::default(),
            cookie: None,
            cred_key: [0; 32],
            mac: [0; 16],
        });
        // Sealed as the agent would: under the node's session with it.
        let key = msg::agent_session(&agent_sk, &agent_dh, node.key()).unwrap();
        let mut d = msg::encode(&reply, None).unwrap();
        msg::seal_reply(&mut d, &key);
        node.handle_datagram(now(), agent, addr, &d, &mut out);
        assert_eq!(node.bindings().len(), 1);

        let r = Report {
            iface: "wl\"an0",
            node: &node,
            sims: Sims::Offered,
            now_ms: 0,
            connections: &[],
            kernel: (0, 0),
        };
        let json = r.json();
        let escaped = "\"a\\\"\\\\\\u000a\\u001b\\u009b\\u202ez\"";
        assert!(json.starts_with("{\"iface\":\"wl\\\"an0\""), "{json}");
        assert!(
            json.contains(&format!("\"agent\":{escaped},\"registered\":true")),
            "{json}"
        );
        assert!(json.contains(&format!("\"issuer\":{escaped},")), "{json}");
        assert!(
            !json.contains(|c: char| c.is_control() || c == '\u{202e}'),
            "{json}"
        );
        // In plain words: the same strings, made harmless for a terminal.
        let text = r.text();
        assert!(
            text.contains("SIMS agent a\"\\????z (registered)"),
            "{text}"
        );
        assert!(
            !text.contains(|c: char| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{text}"
        );
        assert!(text.contains("No old addresses"), "{text}");
        // Without an agent, after the solicitations went unanswered.
        let r = Report {
            sims: Sims::NotOffered,
            ..r
        };
        assert!(r.json().contains("\"sims\":\"not offered\""));
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(5_400), "5 s");
        assert_eq!(duration(125_000), "2 min 5 s");
        assert_eq!(duration(7_380_000), "2 h 3 min");
    }
}
