use std::time::Duration;

/// A boxed error from a [`CertificateSource`](crate::CertificateSource) or
/// [`CredentialsSink`](crate::CredentialsSink) implementation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a rotation attempt did not produce a published identity.
///
/// The first four variants are what a [`CertificateSource`](crate::CertificateSource) returns;
/// the loop adds the others. Every variant counts as one failed attempt (one renew error) and is
/// retried on the backoff schedule; none stops the loop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request was denied: the CSR carries a `Denied` condition (SPEC R-5).
    #[error("certificate request denied ({reason}): {message}")]
    Denied {
        /// The condition's machine-readable reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The signer gave up on the request: the CSR carries a `Failed` condition (SPEC R-5).
    #[error("certificate request failed ({reason}): {message}")]
    Failed {
        /// The condition's machine-readable reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// No certificate was issued within the wait limit (SPEC M-9 e: 15 minutes per rotation).
    #[error("no certificate issued within {} s", .0.as_secs())]
    TimedOut(Duration),
    /// The request could not be made or followed to its end: API unreachable, request refused,
    /// CSR deleted or replaced while waiting, and the like.
    #[error("certificate request: {0}")]
    Request(#[source] BoxError),
    /// Generating the new key or building the PKCS#10 request failed.
    #[error("preparing the certificate request: {0}")]
    Prepare(#[source] kubecert_csr::Error),
    /// The issued chain cannot be used: unparseable, not for our key, already expired, or not
    /// matching the template that was asked for.
    #[error("issued certificate rejected: {0}")]
    Issued(String),
    /// The credentials sink could not publish the new identity (store or reload failure).
    #[error("publishing the new identity: {0}")]
    Publish(#[source] BoxError),
}

impl Error {
    /// Wraps any error as [`Error::Request`].
    pub fn request(error: impl Into<BoxError>) -> Self {
        Self::Request(error.into())
    }

    /// A short, stable label for metrics: `denied`, `failed`, `timeout`, `request`, `prepare`,
    /// `issued` or `publish`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Denied { .. } => "denied",
            Error::Failed { .. } => "failed",
            Error::TimedOut(_) => "timeout",
            Error::Request(_) => "request",
            Error::Prepare(_) => "prepare",
            Error::Issued(_) => "issued",
            Error::Publish(_) => "publish",
        }
    }
}
