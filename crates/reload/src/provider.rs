//! kubecert's one crypto provider (aws-lc-rs) and the key exchanges it offers: every rustls
//! config of the workspace, client or server, is built from [`KeyExchange::provider`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::crypto::{
    ActiveKeyExchange, CompletedKeyExchange, CryptoProvider, SharedSecret, SupportedKxGroup,
};
use rustls::{CommonState, NamedGroup, ProtocolVersion, SupportedProtocolVersion};

use crate::Error;

/// Which TLS key exchanges are offered (client) and accepted (server): `--tls-key-exchange`.
///
/// Go 1.24+ (kubectl, kube-apiserver 1.33+) offers the hybrid post-quantum X25519MLKEM768 first,
/// as rustls does; `pq-preferred` speaks it with them and still connects to peers without it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum, serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "cli", serde(rename_all = "kebab-case"))]
pub enum KeyExchange {
    /// X25519MLKEM768 first, then X25519 and secp256r1: post-quantum with every peer that has
    /// it, classical with the others.
    #[default]
    PqPreferred,
    /// X25519MLKEM768 only: a peer without ML-KEM fails the handshake.
    PqRequired,
    /// X25519 and secp256r1 only, no ML-KEM.
    Classic,
}

impl KeyExchange {
    /// Every policy, in declaration order.
    pub const ALL: [KeyExchange; 3] =
        [KeyExchange::PqPreferred, KeyExchange::PqRequired, KeyExchange::Classic];

    /// The flag value: `pq-preferred`, `pq-required` or `classic`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyExchange::PqPreferred => "pq-preferred",
            KeyExchange::PqRequired => "pq-required",
            KeyExchange::Classic => "classic",
        }
    }

    /// The key-exchange groups, most preferred first.
    pub fn groups(self) -> Vec<&'static dyn SupportedKxGroup> {
        match self {
            KeyExchange::PqPreferred => vec![kx_group::X25519MLKEM768, kx_group::X25519, kx_group::SECP256R1],
            KeyExchange::PqRequired => vec![kx_group::X25519MLKEM768],
            KeyExchange::Classic => vec![kx_group::X25519, kx_group::SECP256R1],
        }
    }

    /// aws-lc-rs's provider (its cipher suites and signature algorithms) with these groups.
    pub fn provider(self) -> Arc<CryptoProvider> {
        Arc::new(self.unshared_provider())
    }

    fn unshared_provider(self) -> CryptoProvider {
        CryptoProvider { kx_groups: self.groups(), ..aws_lc_rs::default_provider() }
    }

    /// Installs [`provider`](Self::provider) as the process default, which the rustls configs
    /// built by other crates use (kube's, so every `kube::Client` and [`kube_client`](crate::kube_client)).
    /// Binaries call it once, before any TLS; installing the same policy again is fine, another
    /// one is refused (the process would otherwise speak two policies).
    pub fn install(self) -> Result<(), Error> {
        self.install_provider(self.unshared_provider())
    }

    /// [`install`](Self::install) with `observe` told the group of every key exchange the
    /// process default provider completes, i.e. of every handshake of kube's clients.
    pub fn install_observed(self, observe: HandshakeObserver) -> Result<(), Error> {
        let provider = Arc::unwrap_or_clone(self.observed_provider(observe));
        self.install_provider(provider)
    }

    /// [`provider`](Self::provider) whose key exchanges tell `observe` the group of every
    /// exchange they complete: client side, the group the server chose (also when it chose the
    /// classical half of a hybrid share); server side, the group it negotiated. rustls wants its
    /// groups `'static`, so each call leaks one small wrapper per group: build it once per
    /// process (as [`install_observed`](Self::install_observed) does).
    pub fn observed_provider(self, observe: HandshakeObserver) -> Arc<CryptoProvider> {
        let kx_groups = self
            .groups()
            .into_iter()
            .map(|inner| -> &'static dyn SupportedKxGroup {
                Box::leak(Box::new(Observed { inner, observe: Arc::clone(&observe) }))
            })
            .collect();
        Arc::new(CryptoProvider { kx_groups, ..aws_lc_rs::default_provider() })
    }

    fn install_provider(self, provider: CryptoProvider) -> Result<(), Error> {
        if provider.install_default().is_ok() {
            return Ok(());
        }
        let installed = CryptoProvider::get_default().map(|p| p.kx_groups.iter().map(|g| g.name()).collect());
        let wanted: Vec<_> = self.groups().iter().map(|g| g.name()).collect();
        if installed.as_ref() == Some(&wanted) {
            Ok(())
        } else {
            Err(Error::Unsupported(format!(
                "TLS key exchange {self}: another crypto provider is already installed in this process"
            )))
        }
    }
}

impl fmt::Display for KeyExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyExchange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            Error::Unsupported(format!(
                "TLS key exchange {s:?} (expected one of {})",
                Self::ALL.map(KeyExchange::as_str).join(", ")
            ))
        })
    }
}

/// Told the negotiated key-exchange group ([`negotiated_group`]) of each handshake an endpoint
/// completes; binaries count them in a metric.
pub type HandshakeObserver = Arc<dyn Fn(&'static str) + Send + Sync>;

/// The key-exchange group a completed handshake negotiated, as TLS names it (`X25519MLKEM768`,
/// `X25519`, `secp256r1`, …); `none` before the handshake completes or for a resumed TLS 1.2
/// session, `unknown` for a group without a name.
pub fn negotiated_group(connection: &CommonState) -> &'static str {
    match connection.negotiated_key_exchange_group() {
        Some(group) => group_name(group.name()),
        None => "none",
    }
}

fn group_name(group: NamedGroup) -> &'static str {
    group.as_str().unwrap_or("unknown")
}

/// A key-exchange group that reports the exchanges it completes.
struct Observed {
    inner: &'static dyn SupportedKxGroup,
    observe: HandshakeObserver,
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl SupportedKxGroup for Observed {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let inner = self.inner.start()?;
        Ok(Box::new(ObservedExchange { inner, observe: Arc::clone(&self.observe) }))
    }

    fn start_and_complete(&self, peer_pub_key: &[u8]) -> Result<CompletedKeyExchange, rustls::Error> {
        let completed = self.inner.start_and_complete(peer_pub_key)?;
        (self.observe)(group_name(completed.group));
        Ok(completed)
    }

    fn name(&self) -> NamedGroup {
        self.inner.name()
    }

    fn fips(&self) -> bool {
        self.inner.fips()
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        self.inner.usable_for_version(version)
    }
}

/// One exchange of an [`Observed`] group.
struct ObservedExchange {
    inner: Box<dyn ActiveKeyExchange>,
    observe: HandshakeObserver,
}

impl ActiveKeyExchange for ObservedExchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let group = self.inner.group();
        let secret = self.inner.complete(peer_pub_key)?;
        (self.observe)(group_name(group));
        Ok(secret)
    }

    fn complete_for_tls_version(
        self: Box<Self>,
        peer_pub_key: &[u8],
        tls_version: &SupportedProtocolVersion,
    ) -> Result<SharedSecret, rustls::Error> {
        let group = self.inner.group();
        let secret = self.inner.complete_for_tls_version(peer_pub_key, tls_version)?;
        (self.observe)(group_name(group));
        Ok(secret)
    }

    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        self.inner.hybrid_component()
    }

    fn complete_hybrid_component(
        self: Box<Self>,
        peer_pub_key: &[u8],
    ) -> Result<SharedSecret, rustls::Error> {
        let group = self.inner.hybrid_component().map_or_else(|| self.inner.group(), |(group, _)| group);
        let secret = self.inner.complete_hybrid_component(peer_pub_key)?;
        (self.observe)(group_name(group));
        Ok(secret)
    }

    fn pub_key(&self) -> &[u8] {
        self.inner.pub_key()
    }

    fn group(&self) -> NamedGroup {
        self.inner.group()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_order_their_groups() {
        let names = |k: KeyExchange| k.provider().kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>();
        assert_eq!(
            names(KeyExchange::PqPreferred),
            [NamedGroup::X25519MLKEM768, NamedGroup::X25519, NamedGroup::secp256r1]
        );
        assert_eq!(names(KeyExchange::PqRequired), [NamedGroup::X25519MLKEM768]);
        assert_eq!(names(KeyExchange::Classic), [NamedGroup::X25519, NamedGroup::secp256r1]);
        assert_eq!(KeyExchange::default(), KeyExchange::PqPreferred);
    }

    #[test]
    fn flag_values_round_trip_and_bad_ones_are_named() {
        for k in KeyExchange::ALL {
            assert_eq!(k.as_str().parse::<KeyExchange>().unwrap(), k);
        }
        let err = "pq".parse::<KeyExchange>().unwrap_err().to_string();
        assert!(err.contains("\"pq\"") && err.contains("pq-preferred, pq-required, classic"), "{err}");
    }
}
