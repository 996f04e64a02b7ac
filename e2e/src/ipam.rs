//! Loopback address pools: one address per Pod (from `--pod-cidr`) and per Service (from
//! `--service-cidr`). Linux routes all of 127.0.0.0/8 to `lo`, so any address in these
//! ranges can be bound without network setup.
//!
//! Owns the allocation bookkeeping only (pure, unit-tested); callers decide who owns what
//! (a Pod uid, a Service `namespace/name`) and persist nothing here: after a restart the
//! runner re-claims the addresses recorded in Pod status and Service annotations.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("invalid CIDR {0:?}: expected a.b.c.d/n")]
    InvalidCidr(String),
    #[error("CIDR {0} is not inside 127.0.0.0/8: only loopback addresses can be bound without network setup")]
    NotLoopback(Cidr),
    #[error("CIDR {0} is too small: it needs at least 2 host addresses")]
    TooSmall(Cidr),
    #[error("address {ip} is outside {cidr}")]
    OutOfRange { ip: Ipv4Addr, cidr: Cidr },
    #[error("address {ip} is already held by {owner}")]
    Taken { ip: Ipv4Addr, owner: String },
    #[error("no free address left in {0}")]
    Exhausted(Cidr),
}

/// An IPv4 range such as `127.10.0.0/16`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: u32,
    prefix: u8,
}

impl Cidr {
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether the two ranges share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = if shorter == 0 { 0 } else { u32::MAX << (32 - u32::from(shorter)) };
        self.network & mask == other.network & mask
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let offset = u64::from(u32::from(ip).wrapping_sub(self.network));
        u32::from(ip) >= self.network && offset < self.size()
    }

    /// The first and last usable host offsets (the network and broadcast addresses are skipped).
    fn host_offsets(&self) -> (u64, u64) {
        (1, self.size() - 2)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || IpamError::InvalidCidr(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if prefix > 32 {
            return Err(invalid());
        }
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
        let cidr = Cidr { network: u32::from(addr) & mask, prefix };
        if prefix < 8 || addr.octets()[0] != 127 {
            return Err(IpamError::NotLoopback(cidr));
        }
        if prefix > 30 {
            return Err(IpamError::TooSmall(cidr));
        }
        Ok(cidr)
    }
}

/// Addresses of one CIDR, each held by one owner.
#[derive(Debug)]
pub struct AddressPool {
    cidr: Cidr,
    by_owner: HashMap<String, Ipv4Addr>,
    by_ip: HashMap<Ipv4Addr, String>,
    /// Where the next search starts (an index from the first host address): after the last
    /// allocation, so a freed address is not handed out again at once (a late connection to
    /// an old Pod must not reach a new one).
    next: u64,
}

impl AddressPool {
    pub fn new(cidr: Cidr) -> Self {
        Self { cidr, by_owner: HashMap::new(), by_ip: HashMap::new(), next: 0 }
    }

    pub fn get(&self, owner: &str) -> Option<Ipv4Addr> {
        self.by_owner.get(owner).copied()
    }

    /// Takes `ip` for `owner` (re-claiming an address recorded before a restart). Idempotent.
    pub fn claim(&mut self, owner: &str, ip: Ipv4Addr) -> Result<(), IpamError> {
        if !self.cidr.contains(ip) {
            return Err(IpamError::OutOfRange { ip, cidr: self.cidr });
        }
        let offset = u64::from(u32::from(ip) - self.cidr.network);
        let (first, last) = self.cidr.host_offsets();
        if offset < first || offset > last {
            return Err(IpamError::OutOfRange { ip, cidr: self.cidr });
        }
        match self.by_ip.get(&ip) {
            Some(holder) if holder == owner => return Ok(()),
            Some(holder) => return Err(IpamError::Taken { ip, owner: holder.clone() }),
            None => {}
        }
        self.release(owner);
        self.by_ip.insert(ip, owner.to_string());
        self.by_owner.insert(owner.to_string(), ip);
        Ok(())
    }

    /// The owner's address, allocating the next free one if it has none.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.get(owner) {
            return Ok(ip);
        }
        let (first, last) = self.cidr.host_offsets();
        let span = last - first + 1;
        for step in 0..span {
            let index = (self.next + step) % span;
            // The offset is below 2^32 because span ≤ 2^24 (prefix ≥ 8).
            let ip = Ipv4Addr::from(self.cidr.network + (first + index) as u32);
            if !self.by_ip.contains_key(&ip) {
                self.next = index + 1;
                self.by_ip.insert(ip, owner.to_string());
                self.by_owner.insert(owner.to_string(), ip);
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted(self.cidr))
    }

    pub fn release(&mut self, owner: &str) -> Option<Ipv4Addr> {
        let ip = self.by_owner.remove(owner)?;
        self.by_ip.remove(&ip);
        Some(ip)
    }

    /// Owners currently holding an address.
    pub fn owners(&self) -> impl Iterator<Item = &str> {
        self.by_owner.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> AddressPool {
        AddressPool::new(cidr.parse().expect("valid cidr"))
    }

    #[test]
    fn parses_and_validates_cidrs() {
        assert_eq!("127.10.0.0/16".parse::<Cidr>().map(|c| c.to_string()), Ok("127.10.0.0/16".to_string()));
        assert_eq!("127.10.3.7/16".parse::<Cidr>().map(|c| c.to_string()), Ok("127.10.0.0/16".to_string()));
        assert!(matches!("10.0.0.0/16".parse::<Cidr>(), Err(IpamError::NotLoopback(_))));
        assert!(matches!("127.0.0.0/31".parse::<Cidr>(), Err(IpamError::TooSmall(_))));
        assert!(matches!("127.0.0.0".parse::<Cidr>(), Err(IpamError::InvalidCidr(_))));
        assert!(matches!("127.0.0.0/33".parse::<Cidr>(), Err(IpamError::InvalidCidr(_))));
    }

    #[test]
    fn overlap_is_detected() {
        let a: Cidr = "127.10.0.0/16".parse().expect("valid");
        let b: Cidr = "127.20.0.0/16".parse().expect("valid");
        let c: Cidr = "127.0.0.0/8".parse().expect("valid");
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c) && c.overlaps(&b));
    }

    #[test]
    fn allocates_distinct_stable_addresses() {
        let mut pool = pool("127.10.0.0/16");
        let a = pool.allocate("a").expect("free address");
        let b = pool.allocate("b").expect("free address");
        assert_eq!(a, Ipv4Addr::new(127, 10, 0, 1));
        assert_eq!(b, Ipv4Addr::new(127, 10, 0, 2));
        assert_eq!(pool.allocate("a"), Ok(a), "an owner keeps its address");
    }

    #[test]
    fn freed_addresses_are_not_reused_at_once() {
        let mut pool = pool("127.10.0.0/16");
        let a = pool.allocate("a").expect("free address");
        assert_eq!(pool.release("a"), Some(a));
        let c = pool.allocate("c").expect("free address");
        assert_ne!(a, c);
    }

    #[test]
    fn claims_recorded_addresses_and_refuses_conflicts() {
        let mut pool = pool("127.10.0.0/16");
        let ip = Ipv4Addr::new(127, 10, 4, 2);
        assert_eq!(pool.claim("a", ip), Ok(()));
        assert_eq!(pool.claim("a", ip), Ok(()));
        assert!(matches!(pool.claim("b", ip), Err(IpamError::Taken { .. })));
        assert!(matches!(pool.claim("b", Ipv4Addr::new(127, 11, 0, 1)), Err(IpamError::OutOfRange { .. })));
        assert!(matches!(pool.claim("b", Ipv4Addr::new(127, 10, 0, 0)), Err(IpamError::OutOfRange { .. })));
        assert_eq!(pool.get("a"), Some(ip));
    }

    #[test]
    fn a_full_pool_says_so_and_wraps_around() {
        let mut pool = pool("127.0.0.0/30");
        assert_eq!(pool.allocate("a"), Ok(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(pool.allocate("b"), Ok(Ipv4Addr::new(127, 0, 0, 2)));
        assert!(matches!(pool.allocate("c"), Err(IpamError::Exhausted(_))));
        pool.release("a");
        assert_eq!(pool.allocate("c"), Ok(Ipv4Addr::new(127, 0, 0, 1)));
    }
}
