//! `spec.usages` strings: parsing them, and turning them into the KeyUsage and ExtKeyUsage
//! extensions of an issued certificate (SPEC SG-5).

use std::collections::BTreeSet;

use kubecert_csr::KeyUsage;

/// Parses `spec.usages` in order, keeping duplicates.
///
/// Unknown strings are collected and reported together, as upstream's signer does:
/// the message is `unrecognized usage values: ["a" "b"]` (Go's `%q` of a string slice).
pub(crate) fn parse_usages(usages: &[String]) -> Result<Vec<KeyUsage>, String> {
    let mut parsed = Vec::with_capacity(usages.len());
    let mut unknown = Vec::new();
    for usage in usages {
        match usage.parse::<KeyUsage>() {
            Ok(u) => parsed.push(u),
            Err(_) => unknown.push(go_quote(usage)),
        }
    }
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(format!("unrecognized usage values: [{}]", unknown.join(" ")))
    }
}

/// The first string that appears twice in `usages`, if any.
pub(crate) fn first_duplicate(usages: &[String]) -> Option<&str> {
    let mut seen = BTreeSet::new();
    usages.iter().map(String::as_str).find(|u| !seen.insert(*u))
}

/// Quotes like Go's `%q` for the printable ASCII that usage strings normally hold; anything
/// else is escaped Rust-style, which is unambiguous.
pub(crate) fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

/// A bit of the X.509 KeyUsage extension (RFC 5280 §4.2.1.3), by bit number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum KeyUsageBit {
    DigitalSignature = 0,
    ContentCommitment = 1,
    KeyEncipherment = 2,
    DataEncipherment = 3,
    KeyAgreement = 4,
    CertSign = 5,
    CrlSign = 6,
    EncipherOnly = 7,
    DecipherOnly = 8,
}

/// An X.509 extended key usage, declared in the order of Go's `x509.ExtKeyUsage` enum, which
/// is the order upstream's signer writes them in (SPEC SG-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ExtendedKeyUsage {
    Any,
    ServerAuth,
    ClientAuth,
    CodeSigning,
    EmailProtection,
    IpsecEndSystem,
    IpsecTunnel,
    IpsecUser,
    TimeStamping,
    OcspSigning,
    MicrosoftServerGatedCrypto,
    NetscapeServerGatedCrypto,
}

impl ExtendedKeyUsage {
    /// The OID arcs.
    pub(crate) fn oid(self) -> &'static [u64] {
        match self {
            ExtendedKeyUsage::Any => &[2, 5, 29, 37, 0],
            ExtendedKeyUsage::ServerAuth => &[1, 3, 6, 1, 5, 5, 7, 3, 1],
            ExtendedKeyUsage::ClientAuth => &[1, 3, 6, 1, 5, 5, 7, 3, 2],
            ExtendedKeyUsage::CodeSigning => &[1, 3, 6, 1, 5, 5, 7, 3, 3],
            ExtendedKeyUsage::EmailProtection => &[1, 3, 6, 1, 5, 5, 7, 3, 4],
            ExtendedKeyUsage::IpsecEndSystem => &[1, 3, 6, 1, 5, 5, 7, 3, 5],
            ExtendedKeyUsage::IpsecTunnel => &[1, 3, 6, 1, 5, 5, 7, 3, 6],
            ExtendedKeyUsage::IpsecUser => &[1, 3, 6, 1, 5, 5, 7, 3, 7],
            ExtendedKeyUsage::TimeStamping => &[1, 3, 6, 1, 5, 5, 7, 3, 8],
            ExtendedKeyUsage::OcspSigning => &[1, 3, 6, 1, 5, 5, 7, 3, 9],
            ExtendedKeyUsage::MicrosoftServerGatedCrypto => &[1, 3, 6, 1, 4, 1, 311, 10, 3, 3],
            ExtendedKeyUsage::NetscapeServerGatedCrypto => &[2, 16, 840, 1, 113730, 4, 1],
        }
    }
}

/// Where one Kubernetes usage lands in a certificate.
enum Placement {
    KeyUsage(KeyUsageBit),
    Extended(ExtendedKeyUsage),
}

fn placement(usage: KeyUsage) -> Placement {
    use ExtendedKeyUsage as E;
    use KeyUsageBit as B;
    use Placement::{Extended, KeyUsage as Ku};
    match usage {
        KeyUsage::Signing | KeyUsage::DigitalSignature => Ku(B::DigitalSignature),
        KeyUsage::ContentCommitment => Ku(B::ContentCommitment),
        KeyUsage::KeyEncipherment => Ku(B::KeyEncipherment),
        KeyUsage::KeyAgreement => Ku(B::KeyAgreement),
        KeyUsage::DataEncipherment => Ku(B::DataEncipherment),
        KeyUsage::CertSign => Ku(B::CertSign),
        KeyUsage::CrlSign => Ku(B::CrlSign),
        KeyUsage::EncipherOnly => Ku(B::EncipherOnly),
        KeyUsage::DecipherOnly => Ku(B::DecipherOnly),
        KeyUsage::Any => Extended(E::Any),
        KeyUsage::ServerAuth => Extended(E::ServerAuth),
        KeyUsage::ClientAuth => Extended(E::ClientAuth),
        KeyUsage::CodeSigning => Extended(E::CodeSigning),
        KeyUsage::EmailProtection | KeyUsage::Smime => Extended(E::EmailProtection),
        KeyUsage::IpsecEndSystem => Extended(E::IpsecEndSystem),
        KeyUsage::IpsecTunnel => Extended(E::IpsecTunnel),
        KeyUsage::IpsecUser => Extended(E::IpsecUser),
        KeyUsage::Timestamping => Extended(E::TimeStamping),
        KeyUsage::OcspSigning => Extended(E::OcspSigning),
        KeyUsage::MicrosoftSgc => Extended(E::MicrosoftServerGatedCrypto),
        KeyUsage::NetscapeSgc => Extended(E::NetscapeServerGatedCrypto),
    }
}

/// The certificate extensions that a list of usages asks for: the set KeyUsage bits and the
/// extended key usages, de-duplicated and in Go's enum order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CertificateUsages {
    pub(crate) key_usage: BTreeSet<KeyUsageBit>,
    pub(crate) extended: BTreeSet<ExtendedKeyUsage>,
}

impl CertificateUsages {
    pub(crate) fn from_usages(usages: &[KeyUsage]) -> Self {
        let mut out = Self::default();
        for usage in usages {
            match placement(*usage) {
                Placement::KeyUsage(bit) => {
                    out.key_usage.insert(bit);
                }
                Placement::Extended(eku) => {
                    out.extended.insert(eku);
                }
            }
        }
        out
    }

    /// The KeyUsage BIT STRING content: the bytes (bit 0 = most significant bit of the first
    /// byte) and the number of significant bits, trailing zero bits removed as DER requires.
    pub(crate) fn key_usage_bit_string(&self) -> Option<(Vec<u8>, usize)> {
        let bits = self.key_usage.iter().fold(0u16, |acc, bit| acc | (0x8000 >> (*bit as u16)));
        if bits == 0 {
            return None;
        }
        let len = (u16::BITS - bits.trailing_zeros()) as usize;
        let bytes = bits.to_be_bytes();
        Some((bytes[..len.div_ceil(8)].to_vec(), len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_usages_are_reported_together_like_go() {
        let err = parse_usages(&strings(&["digital signature", "bogus", "Client Auth"])).unwrap_err();
        assert_eq!(err, r#"unrecognized usage values: ["bogus" "Client Auth"]"#);
    }

    #[test]
    fn duplicates_are_found() {
        assert_eq!(first_duplicate(&strings(&["a", "b", "a"])), Some("a"));
        assert_eq!(first_duplicate(&strings(&["a", "b"])), None);
    }

    #[test]
    fn extended_key_usages_are_deduplicated_and_in_go_order() {
        use KeyUsage::*;
        let u = CertificateUsages::from_usages(&[
            ClientAuth,
            NetscapeSgc,
            Smime,
            ServerAuth,
            EmailProtection,
            Any,
            Timestamping,
            ClientAuth,
        ]);
        assert_eq!(
            u.extended.into_iter().collect::<Vec<_>>(),
            [
                ExtendedKeyUsage::Any,
                ExtendedKeyUsage::ServerAuth,
                ExtendedKeyUsage::ClientAuth,
                ExtendedKeyUsage::EmailProtection,
                ExtendedKeyUsage::TimeStamping,
                ExtendedKeyUsage::NetscapeServerGatedCrypto,
            ]
        );
    }

    #[test]
    fn key_usage_bit_string_is_minimal() {
        use KeyUsage::*;
        let bits = |u: &[KeyUsage]| CertificateUsages::from_usages(u).key_usage_bit_string();
        assert_eq!(bits(&[ClientAuth]), None);
        // digitalSignature only: one bit.
        assert_eq!(bits(&[DigitalSignature, Signing]), Some((vec![0x80], 1)));
        // digitalSignature + keyEncipherment: bits 0 and 2.
        assert_eq!(bits(&[KeyEncipherment, DigitalSignature]), Some((vec![0xa0], 3)));
        // decipherOnly is bit 8: needs a second byte.
        assert_eq!(bits(&[DecipherOnly]), Some((vec![0x00, 0x80], 9)));
        assert_eq!(bits(&[CertSign, CrlSign]), Some((vec![0x06], 7)));
    }
}
