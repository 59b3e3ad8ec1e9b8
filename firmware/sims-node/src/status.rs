//! `sims-node status`: the node's report on its status socket, JSON
//! written by hand (interface, current address and agent, bindings).

use std::fmt::Write as _;

use sims_daemon::json::{hex, q};
use sims_proto::node::Node;

use crate::client::Client;

impl Client {
    /// The report on the status socket.
    pub fn status_json(&self) -> String {
        let mut s = status_json(&self.iface.name, &self.node);
        s.pop();
        let _ = write!(
            s,
            ",\"kernel\":{{\"changes\":{},\"events\":{}}}}}",
            self.iface.changes + self.routes.changes,
            self.kernel_events
        );
        s
    }
}

/// The report of `node` on interface `iface`. Every string is quoted with
/// `q`: the agent's id and the bindings' issuers come from the network,
/// the interface's name from the command line.
fn status_json(iface: &str, node: &Node) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{{\"iface\":{},\"node\":\"{}\",\"current\":",
        q(iface),
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
    s.push_str(",\"bindings\":[");
    for (i, b) in node.bindings().iter().enumerate() {
        let _ = write!(
            s,
            "{}{{\"addr\":\"{}\",\"issuer\":{},\"state\":\"{}\",\"sockets\":{}}}",
            if i > 0 { "," } else { "" },
            b.addr(),
            q(&b.cred.issuer),
            b.state.as_str(),
            b.sockets
        );
    }
    s.push_str("]}");
    s
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

        let json = status_json("wl\"an0", &node);
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
    }
}
