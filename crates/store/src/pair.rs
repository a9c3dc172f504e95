//! A certificate chain with its private key, parsed from PEM and checked to belong together.

use std::fmt;
use std::path::{Path, PathBuf};

use kubecert_csr::{Certificate, PrivateKey, parse_certificates_pem};
use pem::{EncodeConfig, LineEnding, Pem};

use crate::error::{Error, Result};
use crate::warning::Warning;

/// A loaded certificate/key pair.
///
/// `Debug` shows the certificates and where the pair came from, never the key.
#[derive(Clone)]
pub struct StoredPair {
    /// The certificate chain, leaf first; never empty.
    pub chain: Vec<Certificate>,
    /// The private key; it matches the leaf certificate.
    pub key: PrivateKey,
    /// The chain as `CERTIFICATE` PEM blocks, leaf first.
    pub cert_pem: String,
    /// The key's PEM block as it was stored (its type kept, e.g. `EC PRIVATE KEY`).
    pub key_pem: String,
    /// Which file(s) the pair was read from.
    pub source: PairSource,
    /// Things to log: e.g. a key file readable by group or others.
    pub warnings: Vec<Warning>,
}

impl StoredPair {
    /// The leaf certificate (the first of the chain).
    pub fn leaf(&self) -> &Certificate {
        // `parse_pair` refuses an empty chain, so index 0 exists.
        &self.chain[0]
    }
}

impl fmt::Debug for StoredPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredPair")
            .field("chain", &self.chain)
            .field("key", &"<redacted>")
            .field("source", &self.source)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Where a [`StoredPair`] was read from, in the order of SPEC FS-2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairSource {
    /// `<cert_dir>/<prefix>-current.pem`, a combined file (normally a symlink to a timestamped
    /// pair file).
    Current {
        /// The `-current.pem` path.
        link: PathBuf,
        /// The file it resolved to (the link's target, or `link` itself if it is a regular file).
        file: PathBuf,
    },
    /// The configured certificate and key files ([`crate::StoreConfig::cert_file`], `key_file`).
    ConfiguredFiles {
        /// The certificate file.
        cert_file: PathBuf,
        /// The key file.
        key_file: PathBuf,
    },
    /// `<cert_dir>/<prefix>.crt` and `<key_dir>/<prefix>.key`.
    DefaultFiles {
        /// The certificate file.
        cert_file: PathBuf,
        /// The key file.
        key_file: PathBuf,
    },
}

impl PairSource {
    /// The file holding the private key.
    pub fn key_file(&self) -> &Path {
        match self {
            Self::Current { file, .. } => file,
            Self::ConfiguredFiles { key_file, .. } | Self::DefaultFiles { key_file, .. } => key_file,
        }
    }
}

/// PEM types that hold a private key, as Go's `tls.X509KeyPair` accepts them.
fn is_private_key_block(tag: &str) -> bool {
    tag == "PRIVATE KEY" || tag.ends_with(" PRIVATE KEY")
}

/// Encodes one PEM block with `\n` line endings (what the kubelet writes).
pub(crate) fn encode_pem(block: &Pem) -> String {
    pem::encode_config(block, EncodeConfig::new().set_line_ending(LineEnding::LF))
}

/// The chain and key of a pair before we know where it is stored.
pub(crate) struct ParsedPair {
    pub(crate) chain: Vec<Certificate>,
    pub(crate) key: PrivateKey,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl ParsedPair {
    /// The combined file content: every certificate, then the key (SPEC FS-3).
    pub(crate) fn combined_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    /// Attaches the source and warnings.
    pub(crate) fn stored(self, source: PairSource, warnings: Vec<Warning>) -> StoredPair {
        StoredPair {
            chain: self.chain,
            key: self.key,
            cert_pem: self.cert_pem,
            key_pem: self.key_pem,
            source,
            warnings,
        }
    }
}

/// Parses a certificate chain from `cert_pem` and the first private-key block of `key_pem`
/// (they may be the same bytes) and checks that the key belongs to the leaf certificate.
pub(crate) fn parse_pair(
    cert_pem: &[u8],
    cert_origin: &str,
    key_pem: &[u8],
    key_origin: &str,
) -> Result<ParsedPair> {
    let chain = parse_certificates_pem(cert_pem)
        .map_err(|source| Error::Certificate { origin: cert_origin.to_owned(), source })?;
    let key_block = pem::parse_many(key_pem)
        .map_err(|source| Error::Pem { origin: key_origin.to_owned(), source })?
        .into_iter()
        .find(|b| is_private_key_block(b.tag()))
        .ok_or_else(|| Error::NoPrivateKey { origin: key_origin.to_owned() })?;
    let key_pem = encode_pem(&key_block);
    let key = PrivateKey::from_pem(key_pem.as_bytes())
        .map_err(|source| Error::PrivateKey { origin: key_origin.to_owned(), source })?;
    let leaf = chain.first().ok_or_else(|| Error::NoCertificate { origin: cert_origin.to_owned() })?;
    if !leaf.matches_key(&key) {
        return Err(Error::KeyMismatch {
            cert_origin: cert_origin.to_owned(),
            key_origin: key_origin.to_owned(),
        });
    }
    let cert_pem = chain.iter().map(|c| encode_pem(&Pem::new("CERTIFICATE", c.der.clone()))).collect();
    Ok(ParsedPair { chain, key, cert_pem, key_pem })
}
