//! Live TLS identity for kubecert: what the kubelet's certificate transport does, without its hard
//! close-all.
//!
//! This crate owns everything that touches rustls and hyper connectors:
//!
//! * [`Identity`]: a certificate chain and its key, refused when the key does not match the leaf;
//! * [`LiveIdentity`]: the identity in use, swapped atomically, read by rustls on every handshake
//!   (client and server resolvers), with subscribers told of each swap; configs built from it have
//!   TLS session resumption off;
//! * [`RotatingClient`] and [`kube_client`]: an HTTP client and a `kube::Client` whose connections
//!   follow the identity: after a swap new requests use new connections, idle ones close at once,
//!   busy ones right after their request, and long watches after a bounded grace period, so no
//!   request fails;
//! * [`KeyExchange`]: the one crypto provider (aws-lc-rs) with the key exchanges a policy allows
//!   (hybrid post-quantum X25519MLKEM768 by default), for every config built here and, installed
//!   as the process default, for kube's; [`negotiated_group`] names what a handshake chose;
//! * [`PairFileWatcher`]: reloads the identity when a kubelet-style `<prefix>-current.pem` is
//!   switched by anyone, never publishing a half-written or mismatched pair, nor an expired one
//!   over one that is still valid.
//!
//! It does not decide when to rotate, write certificate files, or build CSRs: that is
//! `kubecert-rotation`, `kubecert-store` and `kubecert-csr`, wired together by the node agent.
//!
//! See `examples/src/bin/mtls-client.rs` in the repository for another agent reusing these crates.

mod client;
mod connector;
mod error;
mod identity;
mod kube_client;
mod live;
mod provider;
mod watch;

pub use client::{BoxFuture, ConnectionCounts, Connector, DEFAULT_DRAIN_GRACE, RotatingClient};
pub use connector::ResponseBody;
pub use error::Error;
pub use identity::Identity;
pub use kube_client::kube_client;
pub use live::{LiveIdentity, Snapshot};
pub use provider::{HandshakeObserver, KeyExchange, negotiated_group};
pub use watch::{DEFAULT_RECHECK_INTERVAL, PairFileWatcher, WatchOptions, WatchStatus};
