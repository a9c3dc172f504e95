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

/// Calls `on_change` with [`host_addresses`] whenever the kernel announces a change of links or
/// addresses (a netlink route socket: no polling), until `on_change` returns false. Reading the
/// socket blocks, so it gets a thread of its own, which sleeps in the kernel between changes.
#[cfg(target_os = "linux")]
pub fn follow_host_addresses(
    mut on_change: impl FnMut(Vec<IpAddr>) -> bool + Send + 'static,
) -> io::Result<()> {
    use netlink_sys::protocols::NETLINK_ROUTE;
    use netlink_sys::{Socket, SocketAddr};
    /// RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR (linux/rtnetlink.h).
    const GROUPS: u32 = 0x1 | 0x10 | 0x100;

    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, GROUPS))?;
    // A burst of changes that overflows the socket must not end the watch: what matters is
    // that something changed, and the addresses are read again anyway.
    socket.set_no_enobufs(true)?;
    std::thread::Builder::new().name("host-addresses".into()).spawn(move || {
        loop {
            match socket.recv_from_full().and_then(|_| host_addresses()) {
                Ok(addresses) => {
                    if !on_change(addresses) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "following the host's addresses failed; serving names stay as they are");
                    return;
                }
            }
        }
    })?;
    Ok(())
}

/// Address changes are followed on Linux only.
#[cfg(not(target_os = "linux"))]
pub fn follow_host_addresses(_on_change: impl FnMut(Vec<IpAddr>) -> bool + Send + 'static) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "following address changes needs Linux netlink"))
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
