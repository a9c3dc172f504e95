//! Trust anchors that change while connections are made: a CA roll adds a new root next to the
//! old one, later the old one leaves. Clients verify servers, and servers verify clients, against
//! whatever [`LiveRoots`] holds at each handshake; established connections are not touched (they
//! were verified when made).

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::Error;
use crate::KeyExchange;

struct Verifiers {
    generation: u64,
    roots: usize,
    server: Arc<WebPkiServerVerifier>,
    client: Arc<dyn ClientCertVerifier>,
}

/// The roots in use, swapped atomically: a handshake sees the old set or the new one.
///
/// [`LiveRoots::server_verifier`] goes into a client's config (it verifies servers);
/// [`LiveRoots::client_verifier`] into a server's (it verifies client certificates when a client
/// presents one, and lets clients without one through, as the kubelet does with its client CA).
#[derive(Clone)]
pub struct LiveRoots {
    current: Arc<ArcSwap<Verifiers>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for LiveRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("LiveRoots")
            .field("generation", &current.generation)
            .field("roots", &current.roots)
            .finish()
    }
}

fn verifiers(pem: &[u8], generation: u64) -> Result<Verifiers, Error> {
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::Roots(format!("not PEM certificates: {e}")))?;
        store.add(cert).map_err(Error::Tls)?;
    }
    if store.is_empty() {
        return Err(Error::Roots("no certificate in the bundle".to_owned()));
    }
    let roots = store.len();
    let store = Arc::new(store);
    let server =
        WebPkiServerVerifier::builder_with_provider(store.clone(), KeyExchange::default().provider())
            .build()
            .map_err(|e| Error::Roots(e.to_string()))?;
    let client = WebPkiClientVerifier::builder_with_provider(store, KeyExchange::default().provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::Roots(e.to_string()))?;
    Ok(Verifiers { generation, roots, server, client })
}

impl LiveRoots {
    /// Roots from PEM `CERTIFICATE` blocks (at least one).
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let algorithms = KeyExchange::default().provider().signature_verification_algorithms;
        Ok(Self { current: Arc::new(ArcSwap::from_pointee(verifiers(pem, 0)?)), algorithms })
    }

    /// Replaces the roots; a bundle that does not parse leaves the current ones. Returns the new
    /// generation (one more per swap).
    pub fn swap_pem(&self, pem: &[u8]) -> Result<u64, Error> {
        let generation = self.current.load().generation + 1;
        self.current.store(Arc::new(verifiers(pem, generation)?));
        Ok(generation)
    }

    /// How many swaps happened.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// A verifier of server certificates that uses the current roots.
    pub fn server_verifier(&self) -> Arc<dyn ServerCertVerifier> {
        Arc::new(ServerSide(self.clone()))
    }

    /// A verifier of client certificates that uses the current roots.
    pub fn client_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(ClientSide(self.clone()))
    }
}

/// The handshake signature checks of both verifiers: they do not depend on the roots, only on
/// the crypto provider's algorithms.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.algorithms.supported_schemes()
        }
    };
}

#[derive(Debug)]
struct ServerSide(LiveRoots);

impl ServerCertVerifier for ServerSide {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let current = self.0.current.load();
        current.server.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    handshake_signatures!();
}

#[derive(Debug)]
struct ClientSide(LiveRoots);

impl ClientCertVerifier for ClientSide {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would borrow from roots that may be swapped; they are optional.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.current.load().client.verify_client_cert(end_entity, intermediates, now)
    }

    handshake_signatures!();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::{ClientConfig, ServerConfig};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::{Identity, LiveIdentity};

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn leaf(ca: &Ca, name: &str) -> Identity {
        let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }

    /// One handshake of a client trusting `client_roots` (presenting `client_identity`) with a
    /// server presenting `server_identity` and verifying clients with `server_roots`.
    async fn handshake(
        client_roots: &LiveRoots,
        client_identity: &LiveIdentity,
        server_roots: &LiveRoots,
        server_identity: &LiveIdentity,
    ) -> Result<(), String> {
        let server: ServerConfig = server_identity
            .server_config(Some(server_roots.client_verifier()), KeyExchange::default())
            .unwrap();
        let mut client: ClientConfig =
            client_identity.client_config(RootCertStore::empty(), KeyExchange::default()).unwrap();
        client.dangerous().set_certificate_verifier(client_roots.server_verifier());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let serving = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.map_err(|e| format!("client: {e}"))?;
        let mut buf = Vec::new();
        let read = tls.read_to_end(&mut buf).await;
        let served = serving.await.unwrap();
        served.map_err(|e| format!("server: {e}"))?;
        read.map_err(|e| format!("client read: {e}"))?;
        Ok(())
    }

    #[tokio::test]
    async fn handshakes_follow_swapped_roots_on_both_sides() {
        let (old, new) = (ca("old"), ca("new"));
        let server_identity = LiveIdentity::new(leaf(&new, "localhost"));
        let client_identity = LiveIdentity::new(leaf(&new, "node"));
        let roots = LiveRoots::from_pem(old.pem.as_bytes()).unwrap();
        let err = handshake(&roots, &LiveIdentity::empty(), &roots, &server_identity).await.unwrap_err();
        assert!(err.contains("client: invalid peer certificate"), "{err}");

        assert_eq!(roots.swap_pem(format!("{}{}", old.pem, new.pem).as_bytes()).unwrap(), 1);
        handshake(&roots, &client_identity, &roots, &server_identity).await.unwrap();
        // Without a client certificate the server lets the client in (authorization decides).
        handshake(&roots, &LiveIdentity::empty(), &roots, &server_identity).await.unwrap();

        // Clients are checked too: a certificate from a CA no longer trusted is refused.
        let server_old = LiveIdentity::new(leaf(&old, "localhost"));
        let client_roots = LiveRoots::from_pem(format!("{}{}", old.pem, new.pem).as_bytes()).unwrap();
        let server_roots = LiveRoots::from_pem(old.pem.as_bytes()).unwrap();
        let err = handshake(&client_roots, &client_identity, &server_roots, &server_old).await.unwrap_err();
        assert!(err.contains("server:") || err.contains("client read"), "{err}");
        server_roots.swap_pem(new.pem.as_bytes()).unwrap();
        handshake(&client_roots, &client_identity, &server_roots, &server_old).await.unwrap();

        // A broken bundle leaves the roots as they were.
        assert!(roots.swap_pem(b"garbage").is_err());
        assert_eq!(roots.generation(), 1);
        handshake(&roots, &client_identity, &roots, &server_identity).await.unwrap();
    }
}
