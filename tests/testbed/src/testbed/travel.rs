//! The node as a travel router (`Options::travel_lan`): its Wi-Fi client
//! interface (mn0, OpenWrt's `wwan`) moves between hotspots, and behind it
//! a LAN, `lan0` 192.168.8.1/24, with one client in namespace `tr-lan`
//! (eth0 192.168.8.20, default via the router). The router forwards and
//! masquerades what leaves by mn0, as OpenWrt's fw4 does for its wan
//! zone (`masquerade` in a srcnat chain).

use std::net::Ipv4Addr;

use super::{Testbed, MN_IFACE};
use crate::netns::Netns;
use crate::sys::Result;

pub const TRAVEL_LAN_GW: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 1);
pub const TRAVEL_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 20);

impl Testbed {
    /// The client behind the travel router.
    pub fn travel_client(&self) -> Netns {
        self.ns("tr-lan")
    }

    pub(super) fn travel_lan_up(&mut self) -> Result<()> {
        let client = self.travel_client();
        self.mn().ip_batch(&[
            format!(
                "link add lan0 type veth peer name eth0 netns {}",
                client.name
            ),
            format!("addr add {TRAVEL_LAN_GW}/24 dev lan0"),
            "link set lan0 up".into(),
        ])?;
        client.ip_batch(&[
            "link set lo up".into(),
            format!("addr add {TRAVEL_CLIENT}/24 dev eth0"),
            "link set eth0 up".into(),
            format!("route add default via {TRAVEL_LAN_GW}"),
        ])?;
        let fw = format!(
            "table inet fw4 {{\n\tchain srcnat {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\toifname \"{MN_IFACE}\" masquerade\n\t}}\n}}\n"
        );
        let mut c = self.mn().command(crate::sys::nft_bin());
        c.args(["-f", "-"]);
        crate::sys::run_ok(c, Some(fw.as_bytes()), std::time::Duration::from_secs(10)).map(|_| ())
    }
}
