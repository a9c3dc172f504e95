//! Certificate and key files of a node, laid out the way the kubelet lays them out, written so
//! that a crash at any moment leaves a usable pair.
//!
//! This crate owns the node's files:
//!
//! - the certificate store ([`CertificateStore`]): `<prefix>-YYYY-MM-DD-HH-MM-SS.pem` pair files
//!   and the `<prefix>-current.pem` link switched through `<prefix>-updated.pem` (SPEC FS-1…FS-4),
//!   recovery of an interrupted switch when opening, the lookup order current → configured files →
//!   `<prefix>.crt`/`<prefix>.key`. Beyond upstream: temporary file + fsync + rename + directory
//!   fsync, no overwriting within one second, bounded retention of old pairs (upstream keeps all,
//!   FS-5), a mismatched key refused before anything is written, and a [`Warning`] for key files
//!   readable by group or others;
//! - the pending bootstrap key `kubelet-client.key.tmp` ([`PendingKey`], SPEC B-10), replaced
//!   instead of failing forever when it is corrupt;
//! - kubeconfig files ([`kubeconfig`]): reading a bootstrap kubeconfig, writing the one that
//!   points at `-current.pem` (SPEC B-14), and the "still valid" check (SPEC B-12).
//!
//! It does not talk to the network, decide when to rotate (`kubecert-rotation`), choose key types
//! beyond the pending key's ECDSA P-256, or build CSRs (`kubecert-csr`). It does not log either:
//! problems that do not fail an operation come back as [`Warning`] values for the caller to log.
//! Functions that depend on the time take `now` as an argument.
//!
//! A directory written by a kubelet loads here and a kubelet loads ours: same names, same PEM
//! types (`CERTIFICATE` blocks, then the key as written, e.g. SEC1 `EC PRIVATE KEY`), absolute
//! link targets.

mod error;
mod fsio;
pub mod kubeconfig;
mod names;
mod pair;
mod pending_key;
mod store;
mod warning;

pub use error::{Error, Result};
pub use fsio::write_private_file;
pub use pair::{PairSource, StoredPair};
pub use pending_key::{PENDING_KEY_FILE_NAME, PendingKey, PendingKeyOrigin};
pub use store::{CLIENT_PREFIX, CertificateStore, DEFAULT_RETAIN, SERVER_PREFIX, StoreConfig};
pub use warning::Warning;

#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod test_support;
