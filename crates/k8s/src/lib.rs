//! The kube-rs glue of kubecert: every call kubecert makes to a Kubernetes API lives here.
//!
//! - [`request`]: the node side of SPEC §3.6. Create a `certificates.k8s.io/v1` CSR,
//!   reuse our own pending CSR when a fixed name is taken, and wait until it is issued,
//!   denied, failed or deleted.
//! - [`source`]: those two steps as a `kubecert-rotation` certificate source ([`CsrSource`]),
//!   falling back to bootstrap credentials while no valid certificate is held.
//! - [`controllers`]: the signer's side of SPEC §5. Approver, signer and cleaner applying
//!   `kubecert-authority`'s decisions, with metrics and Lease-based leader election.
//! - [`fleet`]: the status a node agent publishes on its own Lease (certificate expiry, issuing
//!   and trusted CA key ids, overdue) and reading all of them back for `signer fleet`.
//! - [`trust_bundle`]: ClusterTrustBundles in the version the API serves (`v1`, else `v1beta1`),
//!   written by the signer during a CA roll and read by node agents.
//!
//! The decisions (is an existing CSR ours? what does this CSR's state mean for the waiter?) are
//! pure functions over the API objects, tested without a server; the async functions around
//! them only move objects. This crate does not decide when to rotate (`kubecert-rotation`), does
//! not store files (`kubecert-store`) and does not build TLS stacks (`kubecert-reload`): it takes a
//! ready `kube::Client`.
//!
//! See `examples/src/bin/mtls-client.rs` in the repository for another agent reusing these crates.

pub mod controllers;
pub mod fleet;
pub mod request;
pub mod source;
pub mod trust_bundle;

pub use source::CsrSource;
