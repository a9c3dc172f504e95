use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages name the input at fault and what was wrong
/// with it; none of them contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The certificate chain of an identity could not be read (no `CERTIFICATE` block, broken PEM,
    /// or a certificate that does not parse).
    #[error("certificate chain: {0}")]
    Certificate(#[source] kubecert_csr::Error),
    /// The private key of an identity could not be read.
    #[error("private key: {0}")]
    Key(#[source] kubecert_csr::Error),
    /// The private key is not the one certified by the leaf certificate. Publishing such a pair
    /// would make every handshake fail, so it is refused.
    #[error("private key does not match the leaf certificate (subject {subject:?}, serial {serial})")]
    KeyMismatch {
        /// Subject common name of the leaf certificate.
        subject: String,
        /// Serial number of the leaf certificate, lowercase hex.
        serial: String,
    },
    /// A pair found on disk holds an expired certificate while the identity in use is still
    /// valid: every handshake with it would fail, so it is not published.
    #[error(
        "the certificate (subject {subject:?}, serial {serial}) has expired; keeping the valid one in use"
    )]
    Expired {
        /// Subject common name of the expired leaf certificate.
        subject: String,
        /// Serial number of the expired leaf certificate, lowercase hex.
        serial: String,
    },
    /// rustls refused the key or the chain (for example a key type the crypto provider cannot
    /// sign with).
    #[error("TLS library rejected the identity: {0}")]
    Tls(#[source] rustls::Error),
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path that was being read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The directory watch could not be set up.
    #[error("watching {}: {source}", path.display())]
    Watch {
        /// The directory that was to be watched.
        path: PathBuf,
        /// notify's error.
        #[source]
        source: notify::Error,
    },
    /// The `tls-server-name` of the kubeconfig is not a valid DNS name or IP address.
    #[error("tls-server-name {name:?} is not a valid server name: {source}")]
    InvalidServerName {
        /// The configured name.
        name: String,
        /// Why it was rejected.
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
    /// kube could not build part of the client stack from the configuration (CA bundle, auth
    /// settings, extra headers).
    #[error("kube client configuration: {0}")]
    Kube(#[source] kube::Error),
    /// The configuration asks for something this crate does not do.
    #[error("unsupported: {0}")]
    Unsupported(String),
}
