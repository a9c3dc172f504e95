//! Proof (issue 5, point 8, server side): the serving certificate is swapped under continuous new
//! handshakes; none fails, and no handshake that starts after a swap sees an older certificate.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubecert_reload::{KeyExchange, LiveIdentity};
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls_pki_types::ServerName;
use support::{ClientAuth, EchoServer, TestCa, generation_of, install_provider, report};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

const ROTATIONS: u64 = 50;
const CLIENTS: usize = 4;
const PACE: Duration = Duration::from_millis(20);
const LIMIT: Duration = Duration::from_secs(10);

fn connector(ca: &TestCa) -> TlsConnector {
    let mut config = ClientConfig::builder_with_provider(KeyExchange::default().provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// Connects, shakes hands, sends one request; returns the server certificate's CN and when the
/// handshake completed.
async fn handshake_and_request(
    connector: &TlsConnector,
    server: &EchoServer,
) -> Result<(String, Instant), String> {
    let tcp = TcpStream::connect(server.addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(server.addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let handshake_done = Instant::now();
    let cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| kubecert_csr::Certificate::from_der(der).ok())
        .and_then(|cert| cert.subject.common_name)
        .ok_or("no server certificate")?;
    tls.write_all(b"GET /echo HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await.map_err(|e| e.to_string())?;
    if !response.starts_with("HTTP/1.1 200 OK") {
        return Err(format!("unexpected response {response:?}"));
    }
    Ok((cn, handshake_done))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_certificate_rotates_50_times_under_continuous_handshakes() {
    install_provider();
    let ca = TestCa::new();
    let serving = LiveIdentity::new(ca.identity("server-0"));
    let server = Arc::new(EchoServer::start(&serving, ClientAuth::None).await);
    let identities: Vec<_> = (1..=ROTATIONS).map(|i| ca.identity(&format!("server-{i}"))).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, stale) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_seen = Arc::new(Mutex::new(HashMap::<u64, Instant>::new()));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (serving, server, connector) = (serving.clone(), Arc::clone(&server), connector(&ca));
            let (stop, ok, failed, stale) = (stop.clone(), ok.clone(), failed.clone(), stale.clone());
            let (first_seen, problems) = (first_seen.clone(), problems.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started_at = serving.generation();
                    match handshake_and_request(&connector, &server).await {
                        Ok((cn, handshake_done)) => {
                            let seen = generation_of(&cn);
                            let mut first_seen = first_seen.lock().unwrap();
                            let first = first_seen.entry(seen).or_insert(handshake_done);
                            *first = (*first).min(handshake_done);
                            drop(first_seen);
                            if seen < started_at {
                                stale.fetch_add(1, Ordering::Relaxed);
                                problems.lock().unwrap().push(format!("{cn} after generation {started_at}"));
                            }
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            problems.lock().unwrap().push(error);
                        }
                    }
                }
            })
        })
        .collect();

    let mut latencies = Vec::new();
    for (generation, identity) in (1..).zip(identities) {
        tokio::time::sleep(PACE).await;
        let swapped_at = Instant::now();
        assert_eq!(serving.swap(identity), generation);
        let deadline = swapped_at + LIMIT;
        let seen_at = loop {
            if let Some(at) = first_seen.lock().unwrap().get(&generation) {
                break *at;
            }
            assert!(Instant::now() < deadline, "no client saw server-{generation}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push(seen_at.saturating_duration_since(swapped_at));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        tokio::time::timeout(LIMIT, client).await.unwrap().unwrap();
    }

    report("server swap -> first client handshake seeing the new serving cert", &latencies);
    let (ok, failed, stale) =
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), stale.load(Ordering::Relaxed));
    eprintln!(
        "FIGURE (debug build) handshakes during {ROTATIONS} serving rotations: ok={ok} failed={failed} stale={stale}"
    );
    let problems = problems.lock().unwrap();
    assert_eq!(failed, 0, "{problems:?}");
    assert_eq!(stale, 0, "{problems:?}");
    assert!(ok >= ROTATIONS, "too few handshakes to prove anything: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_without_an_identity_refuses_handshakes_until_one_is_published() {
    install_provider();
    let ca = TestCa::new();
    let serving = LiveIdentity::empty();
    let server = EchoServer::start(&serving, ClientAuth::None).await;
    let connector = connector(&ca);
    let refused = handshake_and_request(&connector, &server).await.unwrap_err();
    assert!(refused.starts_with("handshake:"), "{refused}");
    serving.swap(ca.identity("server-1"));
    assert_eq!(handshake_and_request(&connector, &server).await.unwrap().0, "server-1");
    serving.clear();
    assert!(handshake_and_request(&connector, &server).await.is_err());
}
