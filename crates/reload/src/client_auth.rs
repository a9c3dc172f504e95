//! Server-side client-certificate verification that tolerates expiry.
//!
//! A node whose client certificate expired while it was off can still prove that it holds the
//! key the cluster CA once certified (step-ca's "renew after expiry" idea). The TLS layer must
//! then accept the expired certificate, and leave the decision to the request handler, which
//! knows the time and the policy. [`ExpiryTolerantClientVerifier`] checks everything webpki
//! checks — chain to a configured CA, signatures, the clientAuth extended key usage, the
//! handshake signature — but at the instant the leaf was last valid instead of now. What it does
//! not check is exactly the leaf's NotAfter; a certificate that is not yet valid is refused.
//!
//! kube-apiserver behaves the same way at the TLS layer (it requests a client certificate and
//! verifies it in its authenticator), so an expired certificate there is an HTTP 401, not a
//! failed handshake: a server using this verifier must check the time per request.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::Error;

/// A [`ClientCertVerifier`] that verifies client certificates against `roots` as of the moment
/// they were last valid (see the module docs). Client certificates are optional: a connection
/// without one is anonymous, so that bearer tokens work too.
#[derive(Debug)]
pub struct ExpiryTolerantClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ExpiryTolerantClientVerifier {
    /// A verifier for client certificates issued by one of `roots`, with `provider`'s algorithms.
    pub fn new(roots: Arc<RootCertStore>, provider: Arc<CryptoProvider>) -> Result<Self, Error> {
        let inner = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::ClientVerifier(e.to_string()))?;
        Ok(Self { inner })
    }
}

/// Checks that `leaf_der` is a client certificate the CAs in `roots_pem` trust at `now`: chain,
/// signatures, validity and the clientAuth usage, what an API server checks before it
/// authenticates a client with it. Uses the process's default crypto provider.
pub fn verify_client_certificate(roots_pem: &[u8], leaf_der: &[u8], now: SystemTime) -> Result<(), Error> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .ok_or_else(|| Error::ClientVerifier("no TLS crypto provider is installed".into()))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(roots_pem) {
        let ca = ca.map_err(|e| Error::ClientVerifier(format!("CA bundle: {e}")))?;
        roots.add(ca).map_err(Error::Tls)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| Error::ClientVerifier(e.to_string()))?;
    let at = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    verifier.verify_client_cert(&CertificateDer::from(leaf_der), &[], at).map_err(Error::Tls)?;
    Ok(())
}

/// The instant to verify `leaf` at: `now`, or its NotAfter once that has passed. A leaf that does
/// not parse is verified at `now` (webpki then refuses it with its own error).
fn verification_time(leaf: &CertificateDer<'_>, now: UnixTime) -> UnixTime {
    let Ok(cert) = kubecert_csr::Certificate::from_der(leaf) else { return now };
    let not_after = cert.not_after.duration_since(UNIX_EPOCH).unwrap_or_default();
    if now.as_secs() > not_after.as_secs() { UnixTime::since_unix_epoch(not_after) } else { now }
}

/// `time` as a [`SystemTime`] (for logs and tests).
fn system_time(time: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(time.as_secs())
}

impl ClientCertVerifier for ExpiryTolerantClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let at = verification_time(end_entity, now);
        if at != now {
            tracing::debug!(valid_until = ?system_time(at), "verifying an expired client certificate as of its last valid second");
        }
        self.inner.verify_client_cert(end_entity, intermediates, at)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };

    use super::*;

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        der: CertificateDer<'static>,
        pem: String,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        Ca { der: cert.der().clone(), pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf valid from `not_after − 1 day` to `not_after`, with `usage` as its only EKU.
    fn leaf(ca: &Ca, not_after: SystemTime, usage: ExtendedKeyUsagePurpose) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "system:node:n1");
        params.not_after = not_after.into();
        params.not_before = (not_after - Duration::from_secs(86_400)).into();
        params.extended_key_usages = vec![usage];
        params.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn verifier(ca: &Ca) -> ExpiryTolerantClientVerifier {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        ExpiryTolerantClientVerifier::new(Arc::new(roots), crate::KeyExchange::default().provider()).unwrap()
    }

    fn unix(t: SystemTime) -> UnixTime {
        UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap())
    }

    #[test]
    fn an_expired_certificate_from_the_ca_is_accepted_and_a_stranger_is_not() {
        let (ours, theirs) = (ca("cluster"), ca("elsewhere"));
        let verifier = verifier(&ours);
        let now = SystemTime::now();
        let expired_long_ago =
            leaf(&ours, now - Duration::from_secs(90 * 86_400), ExtendedKeyUsagePurpose::ClientAuth);
        assert!(verifier.verify_client_cert(&expired_long_ago, &[], unix(now)).is_ok());
        let valid = leaf(&ours, now + Duration::from_secs(3600), ExtendedKeyUsagePurpose::ClientAuth);
        assert!(verifier.verify_client_cert(&valid, &[], unix(now)).is_ok());

        let foreign = leaf(&theirs, now - Duration::from_secs(60), ExtendedKeyUsagePurpose::ClientAuth);
        assert!(verifier.verify_client_cert(&foreign, &[], unix(now)).is_err(), "unknown issuer");
        let serving = leaf(&ours, now - Duration::from_secs(60), ExtendedKeyUsagePurpose::ServerAuth);
        assert!(verifier.verify_client_cert(&serving, &[], unix(now)).is_err(), "no clientAuth usage");
    }

    #[test]
    fn a_client_certificate_is_verified_against_a_pem_bundle_now() {
        let _ = crate::KeyExchange::default().install();
        let (ours, theirs) = (ca("cluster"), ca("elsewhere"));
        let pem = ours.pem.clone();
        let now = SystemTime::now();
        let valid = leaf(&ours, now + Duration::from_secs(600), ExtendedKeyUsagePurpose::ClientAuth);
        assert!(verify_client_certificate(pem.as_bytes(), &valid, now).is_ok());
        let expired = leaf(&ours, now - Duration::from_secs(1), ExtendedKeyUsagePurpose::ClientAuth);
        assert!(verify_client_certificate(pem.as_bytes(), &expired, now).is_err());
        let foreign = leaf(&theirs, now + Duration::from_secs(600), ExtendedKeyUsagePurpose::ClientAuth);
        assert!(verify_client_certificate(pem.as_bytes(), &foreign, now).is_err());
    }

    #[test]
    fn a_certificate_that_is_not_yet_valid_is_refused() {
        let ours = ca("cluster");
        let now = SystemTime::now();
        let future = leaf(&ours, now + Duration::from_secs(3 * 86_400), ExtendedKeyUsagePurpose::ClientAuth);
        assert!(verifier(&ours).verify_client_cert(&future, &[], unix(now)).is_err());
    }

    #[test]
    fn verification_happens_at_not_after_only_once_it_has_passed() {
        let ours = ca("cluster");
        let now = SystemTime::now();
        let not_after = now - Duration::from_secs(10);
        let cert = leaf(&ours, not_after, ExtendedKeyUsagePurpose::ClientAuth);
        assert_eq!(verification_time(&cert, unix(now)).as_secs(), unix(not_after).as_secs());
        let earlier = unix(not_after - Duration::from_secs(5));
        assert_eq!(verification_time(&cert, earlier), earlier);
        let garbage = CertificateDer::from(vec![1, 2, 3]);
        assert_eq!(verification_time(&garbage, unix(now)), unix(now));
        assert!(system_time(unix(now)) <= now);
    }
}
