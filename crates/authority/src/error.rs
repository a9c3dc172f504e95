//! The crate's one error type.

/// Everything that can go wrong in this crate. Each message names the input at fault and what
/// was wrong with it.
///
/// A request that a signer refuses on its merits is not an `Error`: approval answers with a
/// [`crate::Decision`] and signing with [`crate::SignOutcome::Rejected`]. Errors are for broken
/// configuration, unusable CA material and signing attempts that may succeed later (SPEC SG-6:
/// for example an expired CA, which an operator can replace).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy configuration is inconsistent (unknown signer name, bad CIDR, a setting given
    /// for a signer it does not apply to, …).
    #[error("approval policy: {0}")]
    Config(String),

    /// The CA certificate or key could not be read, or they do not belong together.
    #[error("CA material{}: {detail}", signer_suffix(.signer))]
    CaMaterial {
        /// The signer name the material was meant for, if per-signer files are used.
        signer: Option<String>,
        /// What was wrong.
        detail: String,
    },

    /// Both one CA for every signer and per-signer CAs were configured (SPEC SG-1 forbids
    /// mixing the two).
    #[error(
        "CA material: one CA for all signers and per-signer CAs are mutually exclusive (per-signer CAs given for {0})"
    )]
    MixedCaConfiguration(String),

    /// The CA cannot issue at this time: `now` or the computed NotBefore is not before the CA's
    /// NotAfter (SPEC SG-5). Replacing the CA files fixes it; the signer retries.
    #[error(
        "the CA certificate expired at {ca_not_after} (unix seconds); cannot issue at {now} (unix seconds)"
    )]
    CaExpired {
        /// The CA's NotAfter, in Unix seconds.
        ca_not_after: i64,
        /// The issuance time, in Unix seconds.
        now: i64,
    },

    /// The random-number source failed, or produced only zero serial numbers.
    #[error("random number source: {0}")]
    Randomness(String),

    /// Encoding or signing the certificate failed (for example a CA key type kubecert cannot sign
    /// with).
    #[error("signing the certificate: {0}")]
    Signing(String),

    /// A time value is outside what an X.509 certificate can carry (before 1970 or after 9999).
    #[error("time out of range for a certificate: {0}")]
    TimeOutOfRange(String),
}

fn signer_suffix(signer: &Option<String>) -> String {
    signer.as_ref().map(|s| format!(" for signer {s:?}")).unwrap_or_default()
}

impl Error {
    pub(crate) fn ca(detail: impl std::fmt::Display) -> Self {
        Error::CaMaterial { signer: None, detail: detail.to_string() }
    }
}
