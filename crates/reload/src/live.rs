//! The identity in use right now, swappable at any time, and the rustls glue that reads it on every
//! handshake.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use tokio::sync::watch;

use crate::{Error, Identity, KeyExchange};

/// What a [`LiveIdentity`] holds at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Counts publications: 0 for the initial value, then one more for every [`LiveIdentity::swap`]
    /// or [`LiveIdentity::clear`]. Connections and clients compare generations to know whether
    /// they were made with an identity that has since been replaced.
    pub generation: u64,
    /// The identity, or `None` while there is none (no client certificate is presented; a server
    /// refuses handshakes).
    pub identity: Option<Arc<Identity>>,
}

/// The TLS identity in use, shared by every connection that presents it.
///
/// Clones share the same slot. Handshakes read it lock-free ([`arc_swap`]); [`swap`](Self::swap)
/// publishes a new identity atomically, so a handshake sees either the old pair or the new one,
/// never a mix. Subscribers ([`subscribe`](Self::subscribe)) are told about every publication.
///
/// It implements rustls' [`ResolvesClientCert`] and [`ResolvesServerCert`]; the configs built by
/// [`client_config`](Self::client_config) and [`server_config`](Self::server_config) use it with TLS
/// session resumption off, because a resumed session carries the authentication of the session it
/// resumes, i.e. the old certificate.
#[derive(Clone)]
pub struct LiveIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<Snapshot>,
    updates: watch::Sender<Snapshot>,
    /// Serialises writers so generations are published in order.
    writer: Mutex<()>,
}

impl LiveIdentity {
    /// A slot holding `identity` (generation 0).
    pub fn new(identity: Identity) -> Self {
        Self::with(Some(Arc::new(identity)))
    }

    /// A slot with no identity yet (generation 0), e.g. while bootstrapping with a token.
    pub fn empty() -> Self {
        Self::with(None)
    }

    fn with(identity: Option<Arc<Identity>>) -> Self {
        let snapshot = Snapshot { generation: 0, identity };
        let (updates, _) = watch::channel(snapshot.clone());
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(snapshot),
                updates,
                writer: Mutex::new(()),
            }),
        }
    }

    /// Publishes `identity`; every handshake that starts after this returns presents it. Returns
    /// the new generation.
    ///
    /// Existing connections keep the identity they were made with: a client built by
    /// [`RotatingClient`](crate::RotatingClient) drains them.
    pub fn swap(&self, identity: Identity) -> u64 {
        self.publish(Some(Arc::new(identity)))
    }

    /// Removes the identity (handshakes go on without a client certificate; servers refuse them).
    /// Returns the new generation.
    pub fn clear(&self) -> u64 {
        self.publish(None)
    }

    /// Publishes `identity` unless the same certificate chain is already published (then nothing
    /// changes and connections are left alone). Returns the new generation if it published.
    pub fn swap_if_changed(&self, identity: Identity) -> Option<u64> {
        let _writer = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let unchanged = self
            .inner
            .current
            .load()
            .identity
            .as_ref()
            .is_some_and(|current| current.same_certificates(&identity));
        (!unchanged).then(|| self.publish_locked(Some(Arc::new(identity))))
    }

    fn publish(&self, identity: Option<Arc<Identity>>) -> u64 {
        let _writer = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.publish_locked(identity)
    }

    /// Publishes; the caller holds the writer lock.
    fn publish_locked(&self, identity: Option<Arc<Identity>>) -> u64 {
        let generation = self.inner.current.load().generation + 1;
        let snapshot = Snapshot { generation, identity };
        self.inner.current.store(Arc::new(snapshot.clone()));
        self.inner.updates.send_replace(snapshot);
        generation
    }

    /// What is published now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// The current identity, if any.
    pub fn current(&self) -> Option<Arc<Identity>> {
        self.inner.current.load().identity.clone()
    }

    /// The current generation (see [`Snapshot::generation`]).
    pub fn generation(&self) -> u64 {
        self.inner.current.load().generation
    }

    /// A receiver that sees every publication from now on (the current value is marked seen).
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.inner.updates.subscribe()
    }

    fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.inner.current.load().identity.as_ref().map(|identity| identity.certified_key())
    }

    /// A client config that verifies servers against `roots` and presents the live identity, with
    /// session resumption off (TLS 1.2 and 1.3, the key exchanges of `key_exchange`).
    pub fn client_config(
        &self,
        roots: RootCertStore,
        key_exchange: KeyExchange,
    ) -> Result<ClientConfig, Error> {
        let mut config = ClientConfig::builder_with_provider(key_exchange.provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(self.clone()));
        self.apply_to_client_config(&mut config);
        Ok(config)
    }

    /// Makes an existing client config (for example kube's, which carries the kubeconfig's CA and
    /// verifier) present the live identity, and turns session resumption off.
    pub fn apply_to_client_config(&self, config: &mut ClientConfig) {
        config.client_auth_cert_resolver = Arc::new(self.clone());
        config.resumption = Resumption::disabled();
    }

    /// A server config that serves the live identity, asks for client certificates with
    /// `client_verifier` (or none), and keeps no sessions for resumption (a resumed session would
    /// skip the new server certificate and keep the client's old one). It accepts the key
    /// exchanges of `key_exchange`.
    pub fn server_config(
        &self,
        client_verifier: Option<Arc<dyn ClientCertVerifier>>,
        key_exchange: KeyExchange,
    ) -> Result<ServerConfig, Error> {
        let builder = ServerConfig::builder_with_provider(key_exchange.provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?;
        let builder = match client_verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(self.clone()));
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }
}

impl fmt::Debug for LiveIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.inner.current.load();
        f.debug_struct("LiveIdentity")
            .field("generation", &snapshot.generation)
            .field("identity", &snapshot.identity)
            .finish()
    }
}

impl ResolvesClientCert for LiveIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // Offer the certificate only if the server accepts a scheme our key can sign with;
        // otherwise continue without one and let the server decide.
        self.certified_key().filter(|key| key.key.choose_scheme(sigschemes).is_some())
    }

    fn has_certs(&self) -> bool {
        self.inner.current.load().identity.is_some()
    }
}

impl ResolvesServerCert for LiveIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let key = self.certified_key();
        if key.is_none() {
            tracing::warn!("TLS handshake refused: no serving certificate available");
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::TestCa;

    #[test]
    fn swap_publishes_in_order_and_notifies() {
        let ca = TestCa::new();
        let live = LiveIdentity::empty();
        let mut updates = live.subscribe();
        assert_eq!(live.generation(), 0);
        assert!(!live.has_certs());
        assert_eq!(live.swap(ca.identity("a")), 1);
        assert_eq!(live.swap(ca.identity("b")), 2);
        assert!(updates.has_changed().unwrap());
        let seen = updates.borrow_and_update().clone();
        assert_eq!(seen.generation, 2);
        assert_eq!(seen.identity.unwrap().leaf().subject.common_name.as_deref(), Some("b"));
        assert_eq!(live.clear(), 3);
        assert!(live.current().is_none());
        assert!(updates.has_changed().unwrap());
    }

    #[test]
    fn swap_if_changed_skips_the_same_chain() {
        let ca = TestCa::new();
        let a = ca.identity("a");
        let live = LiveIdentity::new(a.clone());
        assert_eq!(live.swap_if_changed(a.clone()), None);
        assert_eq!(live.generation(), 0);
        assert_eq!(live.swap_if_changed(ca.identity("a")), Some(1));
        live.clear();
        assert_eq!(live.swap_if_changed(a), Some(3));
    }

    #[test]
    fn client_resolver_follows_swaps_and_respects_schemes() {
        let ca = TestCa::new();
        let live = LiveIdentity::new(ca.identity("a"));
        let ecdsa = [SignatureScheme::ECDSA_NISTP256_SHA256];
        let cn = |key: Arc<CertifiedKey>| {
            kubecert_csr::Certificate::from_der(key.end_entity_cert().unwrap()).unwrap().subject.common_name
        };
        assert_eq!(cn(ResolvesClientCert::resolve(&live, &[], &ecdsa).unwrap()).as_deref(), Some("a"));
        live.swap(ca.identity("b"));
        assert_eq!(cn(ResolvesClientCert::resolve(&live, &[], &ecdsa).unwrap()).as_deref(), Some("b"));
        assert!(ResolvesClientCert::resolve(&live, &[], &[SignatureScheme::ED25519]).is_none());
    }

    #[test]
    fn configs_disable_resumption() {
        let live = LiveIdentity::empty();
        let client = live.client_config(RootCertStore::empty(), KeyExchange::default()).unwrap();
        assert!(format!("{:?}", client.resumption).contains("Disabled"), "{:?}", client.resumption);
        let server = live.server_config(None, KeyExchange::default()).unwrap();
        assert_eq!(server.send_tls13_tickets, 0);
        assert!(!server.session_storage.can_cache());
    }
}
