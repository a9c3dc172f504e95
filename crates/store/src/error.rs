//! The crate's one error type.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Everything that can go wrong in `kubecert-store`.
///
/// Each message names the file (or the input) and what was wrong with it. "No certificate/key pair
/// found" is **not** an error: [`crate::CertificateStore::current`] returns `Ok(None)` for it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system call failed; `action` says which one (e.g. "create directory", "rename").
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we were doing, as a verb phrase.
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A path the store manages as a symbolic link (`<prefix>-current.pem` or
    /// `<prefix>-updated.pem`) is something else, so the store refuses to touch it (SPEC FS-1, FS-4).
    #[error("{} exists but is not a symbolic link; remove or rename it by hand", path.display())]
    NotASymlink {
        /// The offending path.
        path: PathBuf,
    },

    /// The configured file-name prefix cannot be used in a file name.
    #[error("invalid pair file prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix as configured.
        prefix: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Certificates in `origin` do not parse (or there are none).
    #[error("certificates in {origin}: {source}")]
    Certificate {
        /// Where the PEM came from: a path or a description of the input.
        origin: String,
        /// The parser's error.
        #[source]
        source: kubecert_csr::Error,
    },

    /// `origin` holds no `CERTIFICATE` PEM block.
    #[error("{origin} contains no certificate")]
    NoCertificate {
        /// Where the PEM came from: a path or a description of the input.
        origin: String,
    },

    /// `origin` holds no PEM block whose type is `PRIVATE KEY` or ends with ` PRIVATE KEY`.
    #[error("{origin} contains no private key PEM block")]
    NoPrivateKey {
        /// Where the PEM came from: a path or a description of the input.
        origin: String,
    },

    /// The private key in `origin` does not parse.
    #[error("private key in {origin}: {source}")]
    PrivateKey {
        /// Where the PEM came from: a path or a description of the input.
        origin: String,
        /// The parser's error.
        #[source]
        source: kubecert_csr::Error,
    },

    /// Generating a fresh key failed.
    #[error("cannot generate a private key for {}: {source}", path.display())]
    KeyGeneration {
        /// The file the key was meant for.
        path: PathBuf,
        /// The generator's error.
        #[source]
        source: kubecert_csr::Error,
    },

    /// The private key does not belong to the first (leaf) certificate.
    #[error("private key in {key_origin} does not match the certificate in {cert_origin}")]
    KeyMismatch {
        /// Where the certificate came from.
        cert_origin: String,
        /// Where the key came from.
        key_origin: String,
    },

    /// PEM framing in `origin` is broken (a block that does not decode).
    #[error("malformed PEM in {origin}: {source}")]
    Pem {
        /// Where the PEM came from: a path or a description of the input.
        origin: String,
        /// The PEM decoder's error.
        #[source]
        source: pem::PemError,
    },

    /// `now` cannot be expressed as a calendar time (far outside year 1..9999).
    #[error("time {now:?} cannot be turned into a file name timestamp: {source}")]
    Timestamp {
        /// The time given by the caller.
        now: SystemTime,
        /// The calendar library's error.
        #[source]
        source: jiff::Error,
    },

    /// Every candidate name for a new pair file in this second is already taken.
    #[error("no free pair file name for {} (tried {tried} names)", base.display())]
    NoFreePairName {
        /// The unsuffixed name, `<prefix>-YYYY-MM-DD-HH-MM-SS.pem`.
        base: PathBuf,
        /// How many names were tried.
        tried: usize,
    },

    /// The kubeconfig file is not valid YAML for the kubeconfig schema.
    #[error("cannot parse kubeconfig {}: {source}", path.display())]
    KubeconfigParse {
        /// The kubeconfig file.
        path: PathBuf,
        /// The YAML library's error.
        #[source]
        source: Box<serde_saphyr::Error>,
    },

    /// Serialising a kubeconfig failed.
    #[error("cannot serialise kubeconfig for {}: {source}", path.display())]
    KubeconfigSerialize {
        /// The kubeconfig file that was to be written.
        path: PathBuf,
        /// The YAML library's error.
        #[source]
        source: serde_saphyr::SerializeError,
    },

    /// The kubeconfig parses but lacks something we need, e.g. the current context's cluster.
    #[error("kubeconfig {}: {what}", path.display())]
    KubeconfigIncomplete {
        /// The kubeconfig file.
        path: PathBuf,
        /// What is missing or inconsistent.
        what: String,
    },

    /// An inline `*-data` field of a kubeconfig is not valid base64.
    #[error("kubeconfig {}: field {field} is not valid base64: {source}", path.display())]
    KubeconfigData {
        /// The kubeconfig file.
        path: PathBuf,
        /// The field name, e.g. `client-certificate-data`.
        field: &'static str,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },

    /// A certificate in `origin` expired before the time the check was made for.
    #[error("certificate in {origin} expired at {not_after:?} (checked at {now:?})")]
    CertificateExpired {
        /// Where the certificate came from.
        origin: String,
        /// The certificate's NotAfter.
        not_after: SystemTime,
        /// The time of the check.
        now: SystemTime,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds a closure turning an `io::Error` into [`Error::Io`] for `path`.
pub(crate) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { action, path, source }
}
