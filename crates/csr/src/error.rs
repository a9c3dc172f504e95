use std::fmt;

/// Everything that can go wrong in this crate. Messages say which input was at fault and how.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input held no PEM block of the expected kind, or the PEM framing itself was broken.
    #[error("{what}: {detail}")]
    Pem {
        /// What was being read, e.g. "private key" or "certificate request".
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A private key could not be decoded, or is of a kind this crate does not handle.
    #[error("private key: {0}")]
    Key(String),
    /// A certificate signing request could not be decoded.
    #[error("certificate request: {0}")]
    Csr(String),
    /// A certificate could not be decoded.
    #[error("certificate #{index}: {detail}")]
    Certificate {
        /// Position of the certificate in its PEM bundle (0 = first).
        index: usize,
        /// What was wrong with it.
        detail: String,
    },
    /// A signature did not verify.
    #[error("{what}: signature does not verify: {detail}")]
    Signature {
        /// Whose signature.
        what: &'static str,
        /// The verifier's explanation.
        detail: String,
    },
    /// The request is valid but asks for something this crate cannot do.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    pub(crate) fn key(detail: impl fmt::Display) -> Self {
        Self::Key(detail.to_string())
    }

    pub(crate) fn csr(detail: impl fmt::Display) -> Self {
        Self::Csr(detail.to_string())
    }
}
