//! The host's name and addresses: defaults of `--node-name`, `--node-dns` and `--node-ip`.
//!
//! Read through `hostname` (gethostname) and `if-addrs` (getifaddrs), which keep the libc calls
//! out of this crate's `forbid(unsafe_code)`.

use std::io;
use std::net::IpAddr;

/// The host name.
pub fn hostname() -> io::Result<String> {
    let name = hostname::get()?;
    name.into_string()
        .map_err(|raw| io::Error::new(io::ErrorKind::InvalidData, format!("host name {raw:?} is not UTF-8")))
}

/// The host's addresses that may name the node: not loopback, not link-local, deduplicated
/// and sorted (as the serving template sorts them).
pub fn host_addresses() -> io::Result<Vec<IpAddr>> {
    let interfaces = if_addrs::get_if_addrs()?;
    Ok(node_addresses(interfaces.iter().map(|i| i.ip())))
}

/// The addresses of `candidates` that may name the node.
fn node_addresses(candidates: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = candidates
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !is_link_local(ip))
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local_addresses_do_not_name_the_node() {
        let ips =
            ["127.0.0.1", "::1", "169.254.1.1", "fe80::1", "10.0.0.2", "fd00::2", "10.0.0.2", "0.0.0.0"]
                .map(|s| s.parse::<IpAddr>().unwrap());
        assert_eq!(node_addresses(ips), ["10.0.0.2", "fd00::2"].map(|s| s.parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn the_host_has_a_name_and_its_addresses_are_listed() {
        assert!(!hostname().unwrap().is_empty());
        // The list may be empty in a network namespace with loopback only; it must not fail.
        let addresses = host_addresses().unwrap();
        assert!(addresses.iter().all(|ip| !ip.is_loopback()));
    }
}
