//! IPv4 prefixes (`10.1.0.0/24`), as configured for LANs and peers.

use core::fmt;
use core::net::Ipv4Addr;
use core::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Prefix {
    /// A prefix with host bits cleared; `None` if `len` > 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            return None;
        }
        let bits = u32::from(addr) & Self::mask(len);
        Some(Prefix {
            addr: Ipv4Addr::from(bits),
            len,
        })
    }

    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len.min(32)))
        }
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & Self::mask(self.len) == u32::from(self.addr)
    }
}

impl FromStr for Prefix {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, l),
            None => (s, "32"),
        };
        let addr: Ipv4Addr = a.parse().map_err(|_| "not an IPv4 address")?;
        let len: u8 = l.parse().map_err(|_| "prefix length is not a number")?;
        let p = Prefix::new(addr, len).ok_or("prefix length over 32")?;
        if p.addr != addr {
            return Err("host bits set in prefix");
        }
        Ok(p)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let p: Prefix = "10.1.0.0/24".parse().unwrap();
        assert!(p.contains(Ipv4Addr::new(10, 1, 0, 50)));
        assert!(!p.contains(Ipv4Addr::new(10, 2, 0, 50)));
        assert!("10.1.0.1/24".parse::<Prefix>().is_err());
        assert!("10.1.0.0/33".parse::<Prefix>().is_err());
        assert!("x/24".parse::<Prefix>().is_err());
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
    }
}
