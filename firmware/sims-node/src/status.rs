//! `sims-node status`: the node's report on its status socket, JSON
//! written by hand (interface, current address and agent, bindings).

use std::fmt::Write as _;

use sims_daemon::json::{hex, q};

use crate::client::Client;

impl Client {
    /// The report on the status socket (quoted: interface and agent
    /// names come from outside).
    pub fn status_json(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"iface\":{},\"node\":\"{}\",\"current\":",
            q(&self.iface.name),
            hex(&self.node.key()[..8])
        );
        match self.node.current() {
            Some(c) => {
                let agent = self.node.agent().map(|a| a.id.as_str()).unwrap_or("");
                let _ = write!(
                    s,
                    "{{\"addr\":\"{c}\",\"agent\":{},\"registered\":{}}}",
                    q(agent),
                    self.node.is_registered()
                );
            }
            None => s.push_str("null"),
        }
        s.push_str(",\"bindings\":[");
        for (i, b) in self.node.bindings().iter().enumerate() {
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
}
