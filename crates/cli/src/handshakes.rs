//! `kubecert_tls_handshakes_total{endpoint, group}`: the TLS handshakes a binary's endpoints
//! completed, by the key-exchange group they negotiated, so that an operator sees whether peers
//! speak post-quantum X25519MLKEM768 before requiring it (`--tls-key-exchange pq-required`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of one series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    /// Which endpoint of the binary (e.g. `apiserver`, `serving`).
    endpoint: &'static str,
    /// The negotiated group as TLS names it (e.g. `X25519MLKEM768`, `X25519`).
    group: &'static str,
}

/// The handshake counter. Clones share the series.
#[derive(Clone, Debug, Default)]
pub struct TlsHandshakes(Family<Labels, Counter>);

impl TlsHandshakes {
    /// Registers the counter as `kubecert_tls_handshakes_total` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubecert_tls_handshakes",
            "TLS handshakes completed, by endpoint and negotiated key-exchange group",
            self.0.clone(),
        );
    }

    /// Counts one handshake of `endpoint` that negotiated `group`.
    pub fn observe(&self, endpoint: &'static str, group: &'static str) {
        self.0.get_or_create(&Labels { endpoint, group }).inc();
    }

    /// A callback that counts the handshakes of `endpoint`, given each one's group (what
    /// kubecert-reload's `HandshakeObserver` is).
    pub fn observer(&self, endpoint: &'static str) -> Arc<dyn Fn(&'static str) + Send + Sync> {
        let handshakes = self.clone();
        Arc::new(move |group| handshakes.observe(endpoint, group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_endpoint_and_group() {
        let handshakes = TlsHandshakes::default();
        let mut registry = Registry::default();
        handshakes.register(&mut registry);
        let observe = handshakes.observer("apiserver");
        observe("X25519MLKEM768");
        observe("X25519MLKEM768");
        handshakes.observe("serving", "X25519");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("kubecert_tls_handshakes_total{endpoint=\"apiserver\",group=\"X25519MLKEM768\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("kubecert_tls_handshakes_total{endpoint=\"serving\",group=\"X25519\"} 1"),
            "{text}"
        );
    }
}
