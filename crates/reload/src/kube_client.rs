//! A `kube::Client` over [`RotatingClient`]: the stack `kube::Client::try_from(config)` builds,
//! with the client certificate taken from a [`LiveIdentity`] instead of the kubeconfig.

use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use rustls_pki_types::ServerName;
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

use crate::{Error, LiveIdentity, RotatingClient};

/// A `kube::Client` for `config` whose client certificate is whatever `identity` holds at each
/// handshake (SPEC T-1), with connections drained on every swap (T-2, without the hard close: see
/// [`RotatingClient`]).
///
/// Taken from `config`: the server URL and default namespace, the CA (or the platform verifier
/// when there is none, or `insecure-skip-tls-verify`), `tls-server-name`, bearer-token / token-file
/// / exec / basic auth (so a bootstrap-token kubeconfig works through the same path before any
/// certificate exists), extra headers, the connect/read/write timeouts, and kube's default retry
/// of 429/503/504 when `default_retry` is set. Ignored: the kubeconfig's client certificate and
/// key (they belong in `identity`). Missing compared with `Client::try_from`: the tracing layer,
/// gzip, and proxies (a `proxy-url` is refused).
///
/// Connections speak HTTP/1.1 only, like kube's default connector. kube builds the TLS config
/// from the process-default crypto provider, so its key exchanges are those of the
/// [`KeyExchange`](crate::KeyExchange) the binary installed.
///
/// # Panics
///
/// Outside a Tokio runtime (like `kube::Client::new`).
pub fn kube_client(
    config: &kube::Config,
    identity: LiveIdentity,
    drain_grace: Duration,
) -> Result<kube::Client, Error> {
    if let Some(proxy) = &config.proxy_url {
        return Err(Error::Unsupported(format!("proxy-url {proxy} (connect to the API server directly)")));
    }
    let mut tls = without_client_certificate(config).rustls_client_config().map_err(Error::Kube)?;
    identity.apply_to_client_config(&mut tls);

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut https = HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    if let Some(name) = &config.tls_server_name {
        let server_name = ServerName::try_from(name.clone())
            .map_err(|source| Error::InvalidServerName { name: name.clone(), source })?;
        https = https.with_server_name_resolver(FixedServerNameResolver::new(server_name));
    }
    let mut connector = TimeoutConnector::new(https.enable_http1().wrap_connector(http));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);

    let rotating = RotatingClient::new(identity, connector, drain_grace);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer().map_err(Error::Kube)?)
        .layer(config.extra_headers_layer().map_err(Error::Kube)?)
        .map_err(BoxError::from)
        .service(rotating);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// `config` without a client certificate, so kube neither reads the files (which may not exist
/// yet during bootstrap) nor pins the pair it finds there.
fn without_client_certificate(config: &kube::Config) -> kube::Config {
    let mut config = config.clone();
    let auth = &mut config.auth_info;
    auth.client_certificate = None;
    auth.client_certificate_data = None;
    auth.client_key = None;
    auth.client_key_data = None;
    config
}
