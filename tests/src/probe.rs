//! One `GET /healthz` against a node agent's endpoint, and what it met: what `cargo xtask e2e`
//! probes the agents with, and what the restart benchmark measures downtime with. A prober can
//! also present a client certificate and ask for another path (`cargo xtask e2e --ca-roll` uses
//! each node's client certificate against the API that way).
//!
//! The outcome separates a connection that was refused or lost (nothing listening, or the
//! process died under the request) from every other error (TLS, certificate, HTTP status,
//! timeout): only the caller knows whether the process was down on purpose at that moment, so
//! only it can say which refusals were planned.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How long a probe may take to connect, and then to get its answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What one probe met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `200 OK`.
    Served,
    /// The connection was refused, reset or closed before an answer (the error, as a chain):
    /// nothing was listening, or the process went away during the request.
    ConnectionLost(String),
    /// Anything else (the error, as a chain): a TLS or certificate error, another HTTP status, a
    /// timeout.
    Failed(String),
}

/// The path probed unless [`Prober::https_as_client`] names another.
const HEALTHZ: &str = "/healthz";

/// Probes one agent's `/healthz`: over HTTPS, verifying the serving certificate against a CA,
/// or over plain HTTP (agents without serving certificates).
#[derive(Clone)]
pub struct Prober {
    addr: SocketAddr,
    path: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Prober {
    /// Plain HTTP to `addr`.
    pub fn http(addr: SocketAddr) -> Self {
        Self { addr, path: HEALTHZ.to_owned(), tls: None }
    }

    /// HTTPS to `addr`, trusting the certificates in `ca_pem`, without session resumption (every
    /// probe makes a full handshake, so it sees the certificate served now). Needs the process's
    /// rustls crypto provider installed.
    pub fn https(addr: SocketAddr, ca_pem: &[u8]) -> Result<Self, String> {
        let config = tls_client(ca_pem)?.with_no_client_auth();
        Ok(Self::with_tls(addr, HEALTHZ, config))
    }

    /// HTTPS `GET path` to `addr` like [`Prober::https`], presenting the certificate chain and
    /// private key in `client_pem` (a kubelet-style `*-current.pem` pair: the certificates, then
    /// the key).
    pub fn https_as_client(
        addr: SocketAddr,
        ca_pem: &[u8],
        client_pem: &[u8],
        path: &str,
    ) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(client_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("reading the client certificate: {e}"))?;
        let key =
            PrivateKeyDer::from_pem_slice(client_pem).map_err(|e| format!("reading the client key: {e}"))?;
        let config = tls_client(ca_pem)?
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("using the client certificate: {e}"))?;
        Ok(Self::with_tls(addr, path, config))
    }

    fn with_tls(addr: SocketAddr, path: &str, mut config: rustls::ClientConfig) -> Self {
        config.resumption = rustls::client::Resumption::disabled();
        Self { addr, path: path.to_owned(), tls: Some(Arc::new(config)) }
    }

    /// The address probed.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One request, on a new connection.
    pub fn probe(&self) -> Outcome {
        match self.exchange() {
            Ok(response) if response.starts_with(b"HTTP/1.1 200") => Outcome::Served,
            Ok(response) => {
                let status_line = response.split(|&b| b == b'\r').next().unwrap_or_default();
                Outcome::Failed(format!("HTTP: {}", String::from_utf8_lossy(status_line)))
            }
            Err(error) => classify(&error),
        }
    }

    /// Sends the request; the response's bytes.
    fn exchange(&self) -> std::io::Result<Vec<u8>> {
        let tcp = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)?;
        // Without it, the request written right after the handshake's last flight waits for the
        // server's delayed ACK (40 ms on Linux): a delay of this client, not of the agent.
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(READ_TIMEOUT))?;
        tcp.set_write_timeout(Some(READ_TIMEOUT))?;
        match &self.tls {
            None => request(tcp, self.addr, &self.path),
            Some(config) => {
                let connection =
                    rustls::ClientConnection::new(config.clone(), ServerName::from(self.addr.ip()))
                        .map_err(std::io::Error::other)?;
                request(rustls::StreamOwned::new(connection, tcp), self.addr, &self.path)
            }
        }
    }
}

/// A TLS client configuration trusting the certificates in `ca_pem`, before its client
/// authentication is chosen.
fn tls_client(
    ca_pem: &[u8],
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("reading the CA certificate: {e}"))?;
        roots.add(cert).map_err(|e| format!("trusting the CA certificate: {e}"))?;
    }
    Ok(rustls::ClientConfig::builder().with_root_certificates(roots))
}

/// `GET path` with `Connection: close`; everything the server sends back.
fn request(mut stream: impl Read + Write, addr: SocketAddr, path: &str) -> std::io::Result<Vec<u8>> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => Ok(response),
        // Some servers close without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => Ok(response),
        Err(e) => Err(e),
    }
}

/// A refused, reset or cut connection is [`Outcome::ConnectionLost`]; TLS errors (rustls reports
/// them as `InvalidData`), timeouts and the rest are [`Outcome::Failed`].
fn classify(error: &std::io::Error) -> Outcome {
    use std::io::ErrorKind::{
        BrokenPipe, ConnectionAborted, ConnectionRefused, ConnectionReset, UnexpectedEof,
    };
    let text = kubecert_cli::error_chain(error);
    match error.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
            Outcome::ConnectionLost(text)
        }
        _ => Outcome::Failed(text),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn refused_reset_and_cut_connections_are_lost_the_rest_failed() {
        let cases = [
            (ErrorKind::ConnectionRefused, true),
            (ErrorKind::ConnectionReset, true),
            (ErrorKind::ConnectionAborted, true),
            (ErrorKind::BrokenPipe, true),
            (ErrorKind::UnexpectedEof, true),
            (ErrorKind::InvalidData, false),
            (ErrorKind::TimedOut, false),
            (ErrorKind::WouldBlock, false),
            (ErrorKind::Other, false),
        ];
        for (kind, lost) in cases {
            let outcome = classify(&Error::new(kind, "x"));
            assert_eq!(matches!(outcome, Outcome::ConnectionLost(_)), lost, "{kind:?}: {outcome:?}");
        }
    }

    #[test]
    fn a_tls_error_is_a_failure_with_its_cause() {
        let tls = Error::new(
            ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        );
        assert_eq!(classify(&tls), Outcome::Failed("received fatal alert: HandshakeFailure".into()));
    }

    #[test]
    fn nothing_listening_is_a_lost_connection() {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(matches!(Prober::http(addr).probe(), Outcome::ConnectionLost(_)));
    }

    /// A one-shot HTTP server on loopback answering `response`.
    fn answer(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0; 1024];
            let _ = stream.read(&mut request);
            stream.write_all(response.as_bytes()).unwrap();
        });
        addr
    }

    #[test]
    fn a_200_is_served_another_status_failed() {
        let ok = answer("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        assert_eq!(Prober::http(ok).probe(), Outcome::Served);
        let unavailable = answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            Prober::http(unavailable).probe(),
            Outcome::Failed("HTTP: HTTP/1.1 503 Service Unavailable".into())
        );
    }

    #[test]
    fn a_client_pair_without_a_key_or_certificate_is_refused_naming_it() {
        let _ = kubecert_reload::KeyExchange::default().install();
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let error = Prober::https_as_client(addr, b"", b"no PEM here", "/").err().unwrap();
        assert!(error.starts_with("reading the client key: "), "{error}");
        let key_only = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let error = Prober::https_as_client(addr, b"", key_only.as_bytes(), "/").err().unwrap();
        assert!(error.starts_with("using the client certificate: "), "{error}");
    }

    #[test]
    fn https_to_a_plain_server_is_a_tls_failure() {
        let _ = kubecert_reload::KeyExchange::default().install();
        let plain = answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let outcome = Prober::https(plain, b"").unwrap().probe();
        assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    }
}
