//! Parsed `simsd status --json` and `sims-node status --json`.
//! Parsing is lenient: missing fields take defaults, extra fields are kept
//! in `raw`.

use serde_json::Value;

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// One binding as an agent sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentBinding {
    pub addr: String,
    /// "home": this agent issued `addr` and redirects it to `peer`;
    /// "visitor": the node is here now, `addr` was issued by `peer`.
    pub role: String,
    pub peer: String,
    pub node: String,
    pub age_s: u64,
    /// Still waiting for the other agent's answer.
    pub pending: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PeerStats {
    pub id: String,
    pub endpoint: String,
    pub tunnel: String,
    /// Whether the peer's tunnel device is made (it is from start).
    pub tunnel_up: bool,
    pub bindings: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct AgentStatus {
    pub id: String,
    /// The agent's run (random per start), in hex.
    pub instance: String,
    pub backend: String,
    pub bindings: Vec<AgentBinding>,
    pub peers: Vec<PeerStats>,
    pub raw: Value,
}

impl AgentStatus {
    pub fn parse(text: &str) -> Result<AgentStatus, String> {
        let v: Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("simsd status is not JSON ({e}): {text:?}"))?;
        let bindings = v
            .get("bindings")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|b| AgentBinding {
                        addr: s(b, "addr"),
                        role: s(b, "role"),
                        peer: s(b, "peer"),
                        node: s(b, "node"),
                        age_s: n(b, "age_s"),
                        pending: b.get("pending").and_then(Value::as_bool).unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let peers = v
            .get("peers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|p| PeerStats {
                        id: s(p, "id"),
                        endpoint: s(p, "endpoint"),
                        tunnel: s(p, "tunnel"),
                        tunnel_up: p.get("tunnel_up").and_then(Value::as_bool).unwrap_or(false),
                        bindings: n(p, "bindings"),
                        tx_packets: n(p, "tx_packets"),
                        tx_bytes: n(p, "tx_bytes"),
                        rx_packets: n(p, "rx_packets"),
                        rx_bytes: n(p, "rx_bytes"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(AgentStatus {
            id: s(&v, "id"),
            instance: s(&v, "instance"),
            backend: s(&v, "backend"),
            bindings,
            peers,
            raw: v,
        })
    }

    /// The agent's binding for `addr`, if any.
    pub fn binding(&self, addr: &str) -> Option<&AgentBinding> {
        self.bindings.iter().find(|b| b.addr == addr)
    }

    pub fn peer(&self, id: &str) -> Option<&PeerStats> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// A counter from `counters` (0 if absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.raw
            .get("counters")
            .and_then(|c| c.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// (tx_packets, rx_packets) summed over all peers' tunnels.
    pub fn tunnel_packets(&self) -> (u64, u64) {
        self.peers
            .iter()
            .fold((0, 0), |(t, r), p| (t + p.tx_packets, r + p.rx_packets))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeBinding {
    pub addr: String,
    pub issuer: String,
    /// "native", "pending" or "relayed".
    pub state: String,
    pub sockets: u64,
}

#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub iface: String,
    /// (address, agent id) of the current network, if attached.
    pub current: Option<(String, String)>,
    /// `current.registered` if the node reports it.
    pub registered: Option<bool>,
    pub bindings: Vec<NodeBinding>,
    /// Netlink changes sims-node made and address/route events it saw on
    /// its interface (`kernel.changes`, `kernel.events`).
    pub kernel_changes: u64,
    pub kernel_events: u64,
    pub raw: Value,
}

impl NodeStatus {
    pub fn parse(text: &str) -> Result<NodeStatus, String> {
        let v: Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("sims-node status is not JSON ({e}): {text:?}"))?;
        let current = v
            .get("current")
            .filter(|c| c.is_object())
            .map(|c| (s(c, "addr"), s(c, "agent")));
        let registered = v
            .get("current")
            .and_then(|c| c.get("registered"))
            .and_then(Value::as_bool);
        let bindings = v
            .get("bindings")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|b| NodeBinding {
                        addr: s(b, "addr"),
                        issuer: s(b, "issuer"),
                        state: s(b, "state"),
                        sockets: n(b, "sockets"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let kernel = v.get("kernel").cloned().unwrap_or(Value::Null);
        Ok(NodeStatus {
            iface: s(&v, "iface"),
            current,
            registered,
            bindings,
            kernel_changes: n(&kernel, "changes"),
            kernel_events: n(&kernel, "events"),
            raw: v,
        })
    }

    pub fn binding(&self, addr: &str) -> Option<&NodeBinding> {
        self.bindings.iter().find(|b| b.addr == addr)
    }

    /// Is the node currently attached (and registered, if it reports
    /// that) at `agent` with address `addr`?
    pub fn is_at(&self, addr: &str, agent: &str) -> bool {
        self.registered != Some(false)
            && self
                .current
                .as_ref()
                .map(|(a, g)| a == addr && g == agent)
                .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_schemas() {
        let a = AgentStatus::parse(r#"{"id":"ma-a","instance":"00000000000000ab","backend":"userspace","bindings":[{"addr":"10.1.0.50","role":"home","peer":"ma-b","node":"ab","age_s":3}],"peers":[{"id":"ma-b","endpoint":"100.64.2.2","tunnel":"sims-ma-b","bindings":1,"tx_packets":4,"tx_bytes":0,"rx_packets":5,"rx_bytes":0}],"counters":{"rx_malformed":7,"rx_unauthenticated":0,"rx_replay":0,"rx_refused":0}}"#).unwrap();
        assert_eq!(a.binding("10.1.0.50").unwrap().peer, "ma-b");
        assert_eq!(a.counter("rx_malformed"), 7);
        assert_eq!(a.tunnel_packets(), (4, 5));
        let n = NodeStatus::parse(r#"{"iface":"mn0","current":{"addr":"10.2.0.50","agent":"ma-b"},"bindings":[{"addr":"10.1.0.50","issuer":"ma-a","state":"relayed","sockets":1}]}"#).unwrap();
        assert!(n.is_at("10.2.0.50", "ma-b"));
        assert_eq!(n.binding("10.1.0.50").unwrap().state, "relayed");
        let n = NodeStatus::parse(r#"{"iface":"mn0","current":{"addr":"10.2.0.50","agent":"ma-b","registered":false},"bindings":[]}"#).unwrap();
        assert!(!n.is_at("10.2.0.50", "ma-b"));
        let n = NodeStatus::parse(r#"{"iface":"mn0","current":null,"bindings":[]}"#).unwrap();
        assert!(n.current.is_none());
    }
}
