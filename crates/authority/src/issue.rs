//! Issuing a certificate for a validated request (SPEC SG-4, SG-5, SG-6).
//!
//! The certificate is encoded here field by field rather than through rcgen's
//! `CertificateSigningRequestParams`, which copies the requester's wishes (CA:TRUE, key usages,
//! a 1975–4096 validity, a serial derived from the key; rust-ecosystem.md pitfall P4) and whose
//! name type holds one value per attribute type (a client certificate may carry several
//! organizations). Every field of the to-be-signed certificate is written below from the
//! validated request and the issuance policy; nothing else from the request reaches it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kubecert_csr::Certificate;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;
use yasna::models::{GeneralizedTime, ObjectIdentifier, UTCTime};
use yasna::{DERWriter, Tag};

use crate::Error;
use crate::subject::SubjectName;
use crate::usages::CertificateUsages;

/// Shortest lifetime a request may get (SPEC SG-4): twice the default backdate.
pub const MIN_DURATION: Duration = Duration::from_secs(10 * 60);
/// Below this lifetime NotAfter is not shortened by the backdate (SPEC SG-5).
pub const SHORT_LIVED_THRESHOLD: Duration = Duration::from_secs(8 * 60 * 60);
/// Upstream's `--cluster-signing-duration` default: 8760h.
pub const DEFAULT_TTL: Duration = Duration::from_secs(8760 * 60 * 60);
/// Upstream's backdate: 5 minutes.
pub const DEFAULT_BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Lifetime rules of a signer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuancePolicy {
    /// The lifetime of a certificate whose request has no `expirationSeconds`, and the most a
    /// request may get (`--cluster-signing-duration`, default 8760h).
    pub ttl: Duration,
    /// How far NotBefore lies before the signing time, against clock skew (default 5 minutes;
    /// 0 for rehearsals with very short lifetimes).
    pub backdate: Duration,
}

impl Default for IssuancePolicy {
    fn default() -> Self {
        Self { ttl: DEFAULT_TTL, backdate: DEFAULT_BACKDATE }
    }
}

/// The validity period of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl IssuancePolicy {
    /// The lifetime for a request (SPEC SG-4): no `expirationSeconds` → the TTL; more than the
    /// TTL → the TTL; less than ten minutes → ten minutes; otherwise as requested.
    pub fn duration(&self, expiration_seconds: Option<i32>) -> Duration {
        let Some(seconds) = expiration_seconds else { return self.ttl };
        let requested = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
        if requested > self.ttl {
            self.ttl
        } else if requested < MIN_DURATION {
            MIN_DURATION
        } else {
            requested
        }
    }

    /// The validity period for a certificate of `duration` signed at `now` (whole seconds) by a CA
    /// valid until `ca_not_after` (SPEC SG-5): NotBefore = now − backdate; NotAfter = now +
    /// duration when the duration is under 8 hours, else now + duration − backdate; NotAfter is
    /// capped at the CA's. Errors when NotBefore or now is not before the CA's NotAfter.
    pub fn validity(
        &self,
        now: SystemTime,
        duration: Duration,
        ca_not_after: SystemTime,
    ) -> Result<Validity, Error> {
        let now = whole_seconds(now)?;
        let out_of_range = || Error::TimeOutOfRange(format!("{duration:?} around {now:?}"));
        let not_before = now.checked_sub(self.backdate).ok_or_else(out_of_range)?;
        let mut not_after = if duration < SHORT_LIVED_THRESHOLD {
            now.checked_add(duration)
        } else {
            now.checked_add(duration).and_then(|t| t.checked_sub(self.backdate))
        }
        .ok_or_else(out_of_range)?;
        if not_after > ca_not_after {
            not_after = ca_not_after;
        }
        if not_before >= ca_not_after || now >= ca_not_after {
            return Err(Error::CaExpired {
                ca_not_after: unix_seconds(ca_not_after),
                now: unix_seconds(now),
            });
        }
        Ok(Validity { not_before, not_after })
    }
}

fn whole_seconds(t: SystemTime) -> Result<SystemTime, Error> {
    let since = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::TimeOutOfRange("a signing time before 1970".to_owned()))?;
    Ok(UNIX_EPOCH + Duration::from_secs(since.as_secs()))
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Where serial numbers come from: every aws-lc-rs (ring-compatible) `SecureRandom` (use `aws_lc_rs::rand::SystemRandom`),
/// or anything else a test wants to supply.
pub trait Randomness {
    /// Fills `dest` with random bytes.
    fn fill_random(&self, dest: &mut [u8]) -> Result<(), aws_lc_rs::error::Unspecified>;
}

impl<T: aws_lc_rs::rand::SecureRandom + ?Sized> Randomness for T {
    fn fill_random(&self, dest: &mut [u8]) -> Result<(), aws_lc_rs::error::Unspecified> {
        self.fill(dest)
    }
}

/// A random positive serial number of 16 bytes: the top bit is cleared so that the DER INTEGER
/// is positive without a padding byte, and an all-zero draw is redrawn (zero is not a valid
/// serial). Upstream draws uniformly below 2^128.
pub(crate) fn random_serial(rng: &dyn Randomness) -> Result<[u8; 16], Error> {
    for _ in 0..8 {
        let mut serial = [0u8; 16];
        rng.fill_random(&mut serial)
            .map_err(|_| Error::Randomness("could not draw a serial number".to_owned()))?;
        serial[0] &= 0x7f;
        if serial.iter().any(|b| *b != 0) {
            return Ok(serial);
        }
    }
    Err(Error::Randomness("drew only zero serial numbers".to_owned()))
}

/// A certificate issued for a request: its PEM and what the signer reports of it.
///
/// The certificate is not parsed back on the signing path (that cost a sixth of a signature):
/// its fields are known from what was encoded; [`IssuedCertificate::certificate`] parses it
/// when a caller wants the whole parsed form.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pem: String,
    der: Vec<u8>,
    serial: [u8; 16],
    not_after: SystemTime,
    common_name: String,
}

impl IssuedCertificate {
    pub(crate) fn new(der: Vec<u8>, contents: &CertificateContents<'_>, chain: &[Certificate]) -> Self {
        let mut pem = kubecert_csr::pem_block("CERTIFICATE", &der);
        for intermediate in chain {
            pem.push_str(&intermediate.to_pem());
        }
        Self {
            pem,
            der,
            serial: contents.serial,
            not_after: contents.validity.not_after,
            common_name: contents.subject.common_name().to_owned(),
        }
    }

    /// What goes into `status.certificate`: the leaf as one `CERTIFICATE` PEM block (SPEC SG-6),
    /// followed by the CA's chain when it has one (the cross-certificate of a new CA generation
    /// while the previous one is still trusted).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The leaf certificate as DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The serial number, lowercase hex.
    pub fn serial_hex(&self) -> String {
        kubecert_csr::hex(&self.serial)
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The subject's common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// The leaf certificate, parsed.
    pub fn certificate(&self) -> Result<Certificate, Error> {
        Certificate::from_der(&self.der)
            .map_err(|e| Error::Signing(format!("the issued certificate does not parse: {e}")))
    }
}

/// The key identifier of a public key (RFC 7093 §2 method 1: the leftmost 160 bits of the
/// SHA-256 of the subjectPublicKey bits), as Go ≥ 1.25 and rcgen compute it.
pub(crate) fn key_identifier(spki_der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| format!("public key does not parse: {e}"))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki.subject_public_key.data);
    Ok(digest.as_ref()[..20].to_vec())
}

/// The signature algorithm of a CA key: its OID and whether its parameters are an explicit NULL
/// (RSA) or absent (ECDSA, Ed25519, ML-DSA).
fn signature_algorithm(key: &impl rcgen::PublicKeyData) -> Result<(&'static [u64], bool), Error> {
    let algorithm = key.algorithm();
    let known: &[(&rcgen::SignatureAlgorithm, &'static [u64], bool)] = &[
        #[cfg(feature = "ml-dsa")]
        (&rcgen::PKCS_ML_DSA_65, &[2, 16, 840, 1, 101, 3, 4, 3, 18], false),
        (&rcgen::PKCS_ECDSA_P256_SHA256, &[1, 2, 840, 10045, 4, 3, 2], false),
        (&rcgen::PKCS_ECDSA_P384_SHA384, &[1, 2, 840, 10045, 4, 3, 3], false),
        (&rcgen::PKCS_ED25519, &[1, 3, 101, 112], false),
        (&rcgen::PKCS_RSA_SHA256, &[1, 2, 840, 113549, 1, 1, 11], true),
        (&rcgen::PKCS_RSA_SHA384, &[1, 2, 840, 113549, 1, 1, 12], true),
        (&rcgen::PKCS_RSA_SHA512, &[1, 2, 840, 113549, 1, 1, 13], true),
    ];
    known
        .iter()
        .find(|(alg, _, _)| *alg == algorithm)
        .map(|(_, oid, null)| (*oid, *null))
        .ok_or_else(|| Error::Signing(format!("CA key algorithm {algorithm:?} is not supported")))
}

/// Everything that goes into an issued certificate.
pub(crate) struct CertificateContents<'a> {
    pub(crate) serial: [u8; 16],
    pub(crate) validity: Validity,
    pub(crate) issuer_der: &'a [u8],
    pub(crate) authority_key_id: &'a [u8],
    pub(crate) subject: &'a SubjectName,
    pub(crate) spki_der: &'a [u8],
    pub(crate) usages: CertificateUsages,
    pub(crate) dns_names: &'a [String],
    pub(crate) email_addresses: &'a [String],
    pub(crate) ip_addresses: &'a [IpAddr],
    pub(crate) uris: &'a [String],
}

struct Extension {
    oid: &'static [u64],
    critical: bool,
    value: Vec<u8>,
}

const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
const OID_AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];

fn oid(arcs: &[u64]) -> ObjectIdentifier {
    ObjectIdentifier::from_slice(arcs)
}

impl CertificateContents<'_> {
    /// The extensions in the order Go writes them: key usage, extended key usage, basic
    /// constraints (CA:FALSE), subject and authority key identifiers, subject alternative names.
    fn extensions(&self) -> Result<Vec<Extension>, Error> {
        let mut extensions = Vec::new();
        if let Some((bytes, bits)) = self.usages.key_usage_bit_string() {
            let value = yasna::construct_der(|w| w.write_bitvec_bytes(&bytes, bits));
            extensions.push(Extension { oid: OID_KEY_USAGE, critical: true, value });
        }
        if !self.usages.extended.is_empty() {
            let value = yasna::construct_der(|w| {
                w.write_sequence(|seq| {
                    for eku in &self.usages.extended {
                        seq.next().write_oid(&oid(eku.oid()));
                    }
                })
            });
            extensions.push(Extension { oid: OID_EXT_KEY_USAGE, critical: false, value });
        }
        // cA defaults to FALSE and DER omits defaults: an empty sequence.
        let value = yasna::construct_der(|w| w.write_sequence(|_| {}));
        extensions.push(Extension { oid: OID_BASIC_CONSTRAINTS, critical: true, value });
        let subject_key_id = key_identifier(self.spki_der).map_err(Error::Signing)?;
        extensions.push(Extension {
            oid: OID_SUBJECT_KEY_ID,
            critical: false,
            value: yasna::construct_der(|w| w.write_bytes(&subject_key_id)),
        });
        extensions.push(Extension {
            oid: OID_AUTHORITY_KEY_ID,
            critical: false,
            value: yasna::construct_der(|w| {
                w.write_sequence(|seq| {
                    seq.next()
                        .write_tagged_implicit(Tag::context(0), |w| w.write_bytes(self.authority_key_id))
                })
            }),
        });
        if let Some(value) = self.subject_alt_names() {
            // RFC 5280 §4.2.1.6: critical when the subject is empty.
            extensions.push(Extension {
                oid: OID_SUBJECT_ALT_NAME,
                critical: self.subject.is_empty(),
                value,
            });
        }
        Ok(extensions)
    }

    /// GeneralNames in Go's order: DNS names, email addresses, IP addresses, URIs.
    fn subject_alt_names(&self) -> Option<Vec<u8>> {
        let empty = self.dns_names.is_empty()
            && self.email_addresses.is_empty()
            && self.ip_addresses.is_empty()
            && self.uris.is_empty();
        if empty {
            return None;
        }
        let string_entries = |seq: &mut yasna::DERWriterSeq<'_>, tag: u64, values: &[String]| {
            for value in values {
                seq.next().write_tagged_implicit(Tag::context(tag), |w| w.write_bytes(value.as_bytes()));
            }
        };
        Some(yasna::construct_der(|w| {
            w.write_sequence(|seq| {
                string_entries(seq, 2, self.dns_names);
                string_entries(seq, 1, self.email_addresses);
                for ip in self.ip_addresses {
                    let octets = match ip {
                        IpAddr::V4(v4) => v4.octets().to_vec(),
                        IpAddr::V6(v6) => v6.octets().to_vec(),
                    };
                    seq.next().write_tagged_implicit(Tag::context(7), |w| w.write_bytes(&octets));
                }
                string_entries(seq, 6, self.uris);
            })
        }))
    }

    /// Encodes and signs the certificate with `key`; returns its DER.
    pub(crate) fn sign(&self, key: &impl rcgen::SigningKey) -> Result<Vec<u8>, Error> {
        let (algorithm, null_parameters) = signature_algorithm(key)?;
        let write_algorithm = |w: DERWriter<'_>| {
            w.write_sequence(|seq| {
                seq.next().write_oid(&oid(algorithm));
                if null_parameters {
                    seq.next().write_null();
                }
            })
        };
        let not_before = x509_time(self.validity.not_before)?;
        let not_after = x509_time(self.validity.not_after)?;
        let extensions = self.extensions()?;
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|tbs| {
                tbs.next().write_tagged(Tag::context(0), |w| w.write_u8(2)); // v3
                tbs.next().write_bigint_bytes(&self.serial, true);
                write_algorithm(tbs.next());
                tbs.next().write_der(self.issuer_der);
                tbs.next().write_sequence(|validity| {
                    not_before.write(validity.next());
                    not_after.write(validity.next());
                });
                self.subject.write(tbs.next());
                tbs.next().write_der(self.spki_der);
                tbs.next().write_tagged(Tag::context(3), |w| {
                    w.write_sequence(|seq| {
                        for extension in &extensions {
                            seq.next().write_sequence(|ext| {
                                ext.next().write_oid(&oid(extension.oid));
                                if extension.critical {
                                    ext.next().write_bool(true);
                                }
                                ext.next().write_bytes(&extension.value);
                            });
                        }
                    })
                });
            })
        });
        let signature = key.sign(&tbs).map_err(|e| Error::Signing(e.to_string()))?;
        Ok(yasna::construct_der(|w| {
            w.write_sequence(|cert| {
                cert.next().write_der(&tbs);
                write_algorithm(cert.next());
                cert.next().write_bitvec_bytes(&signature, signature.len() * 8);
            })
        }))
    }
}

/// An X.509 time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
enum X509Time {
    Utc(UTCTime),
    Generalized(GeneralizedTime),
}

impl X509Time {
    fn write(&self, w: DERWriter<'_>) {
        match self {
            X509Time::Utc(t) => w.write_utctime(t),
            X509Time::Generalized(t) => w.write_generalized_time(t),
        }
    }
}

fn x509_time(t: SystemTime) -> Result<X509Time, Error> {
    let out_of_range = || Error::TimeOutOfRange(format!("{t:?}"));
    let datetime = OffsetDateTime::from_unix_timestamp(unix_seconds(t)).map_err(|_| out_of_range())?;
    if (1950..2050).contains(&datetime.year()) {
        UTCTime::from_datetime_opt(datetime).map(X509Time::Utc)
    } else {
        GeneralizedTime::from_datetime_opt(datetime).map(X509Time::Generalized)
    }
    .ok_or_else(out_of_range)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;
    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn duration_clamps_like_upstream() {
        let policy = IssuancePolicy::default();
        assert_eq!(policy.duration(None), DEFAULT_TTL);
        assert_eq!(policy.duration(Some(i32::MAX)), DEFAULT_TTL);
        assert_eq!(policy.duration(Some(3600)), HOUR);
        assert_eq!(policy.duration(Some(599)), MIN_DURATION);
        assert_eq!(policy.duration(Some(-5)), MIN_DURATION);
        // A TTL below the floor: upstream checks "more than the TTL" first.
        let rehearsal = IssuancePolicy { ttl: MINUTE, backdate: Duration::ZERO };
        assert_eq!(rehearsal.duration(None), MINUTE);
        assert_eq!(rehearsal.duration(Some(3600)), MINUTE);
        assert_eq!(rehearsal.duration(Some(30)), MIN_DURATION);
    }

    #[test]
    fn validity_backdates_and_shortens_long_lived_certificates() {
        let policy = IssuancePolicy::default();
        let far = at(T0 + 100 * 365 * 86_400);
        // SPEC SG-7: default TTL → exactly 8760h in total.
        let v = policy.validity(at(T0), DEFAULT_TTL, far).unwrap();
        assert_eq!(v.not_before, at(T0) - 5 * MINUTE);
        assert_eq!(v.not_after, at(T0) + DEFAULT_TTL - 5 * MINUTE);
        assert_eq!(v.not_after.duration_since(v.not_before).unwrap(), DEFAULT_TTL);
        // Under 8h: NotAfter is not shortened.
        let v = policy.validity(at(T0), HOUR, far).unwrap();
        assert_eq!(v.not_after, at(T0) + HOUR);
        let v = policy.validity(at(T0), SHORT_LIVED_THRESHOLD, far).unwrap();
        assert_eq!(v.not_after, at(T0) + SHORT_LIVED_THRESHOLD - 5 * MINUTE);
        // Sub-second signing times are truncated.
        let v = policy.validity(at(T0) + Duration::from_millis(999), HOUR, far).unwrap();
        assert_eq!(v.not_before, at(T0) - 5 * MINUTE);
    }

    #[test]
    fn validity_is_capped_at_the_ca_and_refused_past_it() {
        let policy = IssuancePolicy::default();
        let ca_not_after = at(T0 + 3600);
        let v = policy.validity(at(T0), DEFAULT_TTL, ca_not_after).unwrap();
        assert_eq!(v.not_after, ca_not_after);
        assert!(matches!(policy.validity(at(T0 + 3600), HOUR, ca_not_after), Err(Error::CaExpired { .. })));
        // now before the CA's end but NotBefore not: impossible with a positive backdate; with
        // zero backdate now == end is refused too.
        let zero = IssuancePolicy { ttl: DEFAULT_TTL, backdate: Duration::ZERO };
        assert!(zero.validity(at(T0 + 3600), HOUR, ca_not_after).is_err());
        assert!(zero.validity(at(T0 + 3599), HOUR, ca_not_after).is_ok());
    }

    struct Fixed(u8);
    impl Randomness for Fixed {
        fn fill_random(&self, dest: &mut [u8]) -> Result<(), aws_lc_rs::error::Unspecified> {
            dest.fill(self.0);
            Ok(())
        }
    }

    #[test]
    fn serials_are_positive_nonzero_and_random() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let a = random_serial(&rng).unwrap();
        let b = random_serial(&rng).unwrap();
        assert_ne!(a, b);
        assert!(a[0] < 0x80 && b[0] < 0x80);
        assert_eq!(random_serial(&Fixed(0xff)).unwrap()[0], 0x7f);
        assert!(matches!(random_serial(&Fixed(0)), Err(Error::Randomness(_))));
    }

    #[test]
    fn times_switch_to_generalized_in_2050() {
        assert!(matches!(x509_time(at(2_524_607_999)).unwrap(), X509Time::Utc(_))); // 2049-12-31T23:59:59Z
        assert!(matches!(x509_time(at(2_524_608_000)).unwrap(), X509Time::Generalized(_))); // 2050-01-01
    }
}
