//! The embedded Kubernetes-compatible API server of `signer serve`.
//!
//! Owns: CertificateSigningRequests (`certificates.k8s.io/v1`, with `/approval` and
//! `/status`), ClusterTrustBundles (`certificates.k8s.io/v1` and `v1beta1`, with upstream's
//! validation and `attest` admission), bootstrap-token Secrets in `kube-system`, Leases (`coordination.k8s.io/v1`),
//! SubjectAccessReviews answered by a built-in authorizer equal to upstream's default RBAC
//! for these resources, SelfSubjectReviews (`kubectl auth whoami`), discovery, OpenAPI v2
//! (JSON and protobuf) and v3 documents, Table output, watches with resourceVersion resume,
//! and upstream-shaped `Status` errors — over HTTPS (rustls, aws-lc-rs) with client-certificate
//! and bootstrap-token authentication, or in memory as a tower service with a fixed identity.
//! State lives in one redb file.
//!
//! Does not own: approving or signing (the signer's controllers do that through this API),
//! keys and CSR parsing (`kubecert-csr`), protobuf responses of objects (protobuf request
//! bodies of CSRs, Secrets and Leases are decoded), the full server-side-apply model (apply merges and
//! tracks field ownership per manager with conflicts, lists are atomic; updates do not take
//! ownership), Events, finalizers and graceful deletion.
//!
//! Start with [`start`] (HTTPS) or [`Api::open`] + [`Api::service_as`] (in memory).
//!
//! # How it works
//!
//! - **Storage** (`store`): objects are JSON in redb keyed `<resource.group>/<ns>/<name>`;
//!   every write bumps a global resourceVersion kept in the same file and appends one event,
//!   and is answered once committed (durable). Writes are serialized and group-committed: the
//!   writes that arrive during a commit go into the next transaction together, one fsync for
//!   all of them. Events are contiguous in resourceVersion and published in order.
//! - **Watch** (`watch`): the last N events (default 4096) are kept in memory and in the file,
//!   so a watch resumes from any resourceVersion still covered, across restarts; older ones get
//!   an `ERROR` event with `410 Expired`, as upstream. A watch is a stream polled by hyper and
//!   woken by a `tokio::sync::watch` channel: no task or thread per watch. A watch pinned to
//!   one name (`fieldSelector=metadata.name=…`, what a waiting node sends) is woken only by
//!   writes to that name.
//! - **Requests** (`handlers`): authenticate (TLS peer certificate → bootstrap token →
//!   anonymous), resolve the target (`request`), authorize (`authz`), then the verb; CSR
//!   writes go through the registry strategy (`strategy`), validation (`validation`) and
//!   admission (`admission`) in that order, as in kube-apiserver; ClusterTrustBundle writes
//!   through `trust_bundle` validation, then admission.
//! - **Clients**: JSON everywhere but the OpenAPI v2 protobuf (`gnostic`), Table output when
//!   asked (`table`), protobuf request bodies decoded (`protobuf`), `fieldValidation`,
//!   `dryRun`, merge/JSON/strategic/apply patches.

mod admission;
mod apply;
mod auth;
mod authz;
mod canary;
mod discovery;
mod gnostic;
mod handlers;
mod objects;
mod openapi;
mod protobuf;
mod registry;
mod request;
mod resources;
mod selector;
mod server;
mod status;
mod store;
mod strategy;
mod table;
mod trust_bundle;
mod validation;
mod watch;

pub use auth::{AUTHENTICATED_GROUP, UserInfo};
pub use authz::{
    Attributes, CERTIFICATE_CONTROLLER_USER, Decision, MASTERS_GROUP, ResourceAttributes,
    SERVING_BUNDLE_PUBLISHER_USER, SIGNER_USER, authorize,
};
pub use server::{Api, ClientCertificate, Config, READ_BUFFER, RunningServer, TlsConfig, start};
pub use table::human_duration;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors of starting and running the server. Request-level failures are `Status` responses,
/// not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("database: {0}")]
    Storage(#[from] redb::Error),
    /// An object could not be encoded for storage.
    #[error("encoding an object for storage: {0}")]
    Encode(serde_json::Error),
    /// Stored data does not decode.
    #[error("corrupt stored {what}: {source}")]
    Corrupt {
        /// What was being read.
        what: String,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// PEM input (certificate, key, CA) is unusable.
    #[error("{what}: {detail}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// rustls refused the TLS material.
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// The listening socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server task panicked or was cancelled.
    #[error("server task: {0}")]
    Task(String),
}
