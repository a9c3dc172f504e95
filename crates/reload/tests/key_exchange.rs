//! `--tls-key-exchange` on our own client and server (issue 15): both ends negotiate the hybrid
//! post-quantum X25519MLKEM768 by default, a classical-only peer is served under `pq-preferred`
//! and refused under `pq-required`, and the group a handshake chose is what the server reports.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubecert_reload::{KeyExchange, LiveIdentity, negotiated_group};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use support::TestCa;

const LIMIT: Duration = Duration::from_secs(10);

/// One handshake between a client speaking `client` and a server accepting `server`: the group
/// each side saw, or the client's error when the handshake failed.
async fn handshake(
    ca: &TestCa,
    client: KeyExchange,
    server: KeyExchange,
) -> Result<(String, String), String> {
    let config = LiveIdentity::empty().client_config(ca.roots(), client).unwrap();
    handshake_with(ca, config, server).await
}

/// [`handshake`] with any client config.
async fn handshake_with(
    ca: &TestCa,
    config: ClientConfig,
    server: KeyExchange,
) -> Result<(String, String), String> {
    let serving = LiveIdentity::new(ca.identity("localhost"));
    let acceptor = TlsAcceptor::from(Arc::new(serving.server_config(None, server).unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(negotiated_group(tls.get_ref().1))
    });

    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let connected =
        tokio::time::timeout(LIMIT, connector.connect(name, tcp)).await.expect("bounded handshake");
    let server_side = tokio::time::timeout(LIMIT, accepted).await.expect("bounded accept").unwrap();
    let tls = connected.map_err(|e| e.to_string())?;
    let server_group = server_side?;
    Ok((negotiated_group(tls.get_ref().1).to_owned(), server_group.to_owned()))
}

#[tokio::test]
async fn our_client_and_server_negotiate_x25519mlkem768_by_default() {
    let ca = TestCa::new();
    let groups = handshake(&ca, KeyExchange::default(), KeyExchange::default()).await.unwrap();
    assert_eq!(groups, ("X25519MLKEM768".to_owned(), "X25519MLKEM768".to_owned()));
    let required = handshake(&ca, KeyExchange::PqRequired, KeyExchange::PqRequired).await.unwrap();
    assert_eq!(required.1, "X25519MLKEM768");
}

#[tokio::test]
async fn a_classical_only_client_is_served_when_preferred_and_refused_when_required() {
    let ca = TestCa::new();
    let served = handshake(&ca, KeyExchange::Classic, KeyExchange::PqPreferred).await.unwrap();
    assert_eq!(served, ("X25519".to_owned(), "X25519".to_owned()));

    let refused = handshake(&ca, KeyExchange::Classic, KeyExchange::PqRequired).await.unwrap_err();
    assert!(refused.contains("HandshakeFailure"), "{refused}");
}

#[tokio::test]
async fn a_post_quantum_only_client_cannot_reach_a_classic_server() {
    let ca = TestCa::new();
    let refused = handshake(&ca, KeyExchange::PqRequired, KeyExchange::Classic).await.unwrap_err();
    assert!(refused.contains("HandshakeFailure"), "{refused}");
    // A pq-preferred client falls back to X25519 with a classic server.
    let fallback = handshake(&ca, KeyExchange::PqPreferred, KeyExchange::Classic).await.unwrap();
    assert_eq!(fallback.1, "X25519");
}

/// What node-agent and `signer controller` count as `endpoint="apiserver-client"`: the observed
/// provider reports the group each client handshake completed with, also when the server took
/// the classical half of the hybrid key share.
#[tokio::test]
async fn the_observed_provider_reports_the_group_of_each_client_handshake() {
    let ca = TestCa::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let provider =
        KeyExchange::PqPreferred.observed_provider(Arc::new(move |group| log.lock().unwrap().push(group)));
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    handshake_with(&ca, config.clone(), KeyExchange::PqPreferred).await.unwrap();
    handshake_with(&ca, config.clone(), KeyExchange::Classic).await.unwrap();
    handshake_with(&ca, config, KeyExchange::PqRequired).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["X25519MLKEM768", "X25519", "X25519MLKEM768"]);
}
