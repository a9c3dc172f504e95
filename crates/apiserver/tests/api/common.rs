//! Test helpers: an rcgen PKI, a started server, kube clients and kubeconfigs.

use std::net::SocketAddr;
use std::path::Path;

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kubecert_apiserver::{Config, RunningServer, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// A CA with a serving certificate for 127.0.0.1.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

/// A client credential in PEM.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn install_provider() {
    let _ = kubecert_reload::KeyExchange::default().install();
}

impl Pki {
    pub fn new() -> Self {
        install_provider();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "kubecert-test-ca");
        let ca_pem = params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut sp = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        sp.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert_pem = sp.signed_by(&server_key, &issuer).unwrap().pem();
        Self { ca_pem, issuer, server_cert_pem, server_key_pem: server_key.serialize_pem() }
    }

    pub fn tls(&self) -> TlsConfig {
        TlsConfig {
            cert_chain_pem: self.server_cert_pem.clone().into_bytes(),
            key_pem: self.server_key_pem.clone().into_bytes(),
            client_ca_pem: self.ca_pem.clone().into_bytes(),
            key_exchange: kubecert_reload::KeyExchange::default(),
            handshakes: None,
        }
    }

    /// A client certificate (clientAuth) with CN and O.
    pub fn client(&self, cn: &str, orgs: &[&str]) -> ClientCert {
        self.client_with_usage(cn, orgs, ExtendedKeyUsagePurpose::ClientAuth)
    }

    pub fn client_with_usage(&self, cn: &str, orgs: &[&str], eku: ExtendedKeyUsagePurpose) -> ClientCert {
        self.client_with(cn, orgs, |p| p.extended_key_usages = vec![eku])
    }

    /// A client certificate (clientAuth) with CN and O that expired a day ago.
    pub fn expired_client(&self, cn: &str, orgs: &[&str]) -> ClientCert {
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        self.client_with(cn, orgs, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            p.not_before = (now - 2 * day).into();
            p.not_after = (now - day).into();
        })
    }

    fn client_with(
        &self,
        cn: &str,
        orgs: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> ClientCert {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        adjust(&mut p);
        ClientCert { cert_pem: p.signed_by(&key, &self.issuer).unwrap().pem(), key_pem: key.serialize_pem() }
    }

    pub fn admin(&self) -> ClientCert {
        self.client("kubernetes-admin", &["system:masters"])
    }

    /// A certificate for `key` signed by the CA (what a signer would issue).
    pub fn issue_pem(&self, cn: &str) -> String {
        self.client(cn, &[]).cert_pem
    }
}

/// A PEM CSR with CN and O.
pub fn csr_pem(cn: &str, orgs: &[&str]) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name.push(DnType::OrganizationName, *o);
    }
    p.serialize_request(&key).unwrap().pem().unwrap()
}

pub fn config(dir: &Path) -> Config {
    Config::new(dir)
}

pub async fn start(pki: &Pki, dir: &Path) -> RunningServer {
    start_at(pki, dir, "127.0.0.1:0".parse().unwrap()).await
}

pub async fn start_at(pki: &Pki, dir: &Path, addr: SocketAddr) -> RunningServer {
    kubecert_apiserver::start(addr, pki.tls(), &config(dir)).await.unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// How a kubeconfig user authenticates.
pub enum Credential<'a> {
    Cert(&'a ClientCert),
    Token(&'a str),
    None,
}

pub fn kubeconfig_yaml(addr: SocketAddr, pki: &Pki, cred: Credential<'_>) -> String {
    let user = match cred {
        Credential::Cert(c) => format!(
            "  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&c.cert_pem),
            b64(&c.key_pem)
        ),
        Credential::Token(t) => format!("  user:\n    token: {t}\n"),
        Credential::None => "  user: {}\n".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\nusers:\n- name: test\n{user}",
        b64(&pki.ca_pem)
    )
}

pub async fn client(addr: SocketAddr, pki: &Pki, cred: Credential<'_>) -> kube::Client {
    install_provider();
    let kc = Kubeconfig::from_yaml(&kubeconfig_yaml(addr, pki, cred)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A raw HTTPS client (hyper) for requests kube-rs would not send.
pub struct Raw {
    client: kube::Client,
}

impl Raw {
    pub async fn new(addr: SocketAddr, pki: &Pki, cred: Credential<'_>) -> Self {
        Self { client: client(addr, pki, cred).await }
    }

    /// Sends a request and returns (status, JSON body).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(body)
            .unwrap();
        let resp = self.client.send(req.map(kube::client::Body::from)).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (code, v)
    }

    /// Sends a bodiless GET with extra `headers`; the status.
    pub async fn get_with_headers(&self, path: &str, headers: &[(&str, String)]) -> u16 {
        let mut req = http::Request::builder().method("GET").uri(path);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(Vec::new()).unwrap();
        self.client.send(req.map(kube::client::Body::from)).await.unwrap().status().as_u16()
    }

    /// Sends a bodiless request; `Err` when the connection or handshake fails.
    pub async fn try_send(&self, method: &str, path: &str) -> Result<u16, kube::Error> {
        let req = http::Request::builder().method(method).uri(path).body(Vec::new()).unwrap();
        Ok(self.client.send(req.map(kube::client::Body::from)).await?.status().as_u16())
    }

    pub async fn json(&self, method: &str, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.send(method, path, "application/json", serde_json::to_vec(body).unwrap()).await
    }
}

pub const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

/// A CSR object as JSON.
pub fn csr_json(name: Option<&str>, signer: &str, request_pem: &str, usages: &[&str]) -> serde_json::Value {
    let mut meta = serde_json::json!({});
    match name {
        Some(n) => meta["name"] = n.into(),
        None => meta["generateName"] = "csr-".into(),
    }
    serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": meta,
        "spec": {"request": b64(request_pem), "signerName": signer, "usages": usages},
    })
}

pub const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

pub fn node_csr(name: Option<&str>, node: &str) -> serde_json::Value {
    csr_json(
        name,
        KUBELET_SIGNER,
        &csr_pem(&format!("system:node:{node}"), &["system:nodes"]),
        &["digital signature", "client auth"],
    )
}

/// The API in memory, with a chosen identity per request.
pub struct Mem {
    pub api: kubecert_apiserver::Api,
    _dir: tempfile::TempDir,
}

pub fn admin_user() -> kubecert_apiserver::UserInfo {
    kubecert_apiserver::UserInfo::authenticated("admin", vec!["system:masters".into()])
}

impl Mem {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        tweak(&mut cfg);
        Self { api: kubecert_apiserver::Api::open(&cfg).unwrap(), _dir: dir }
    }

    pub async fn send_as(
        &self,
        user: &kubecert_apiserver::UserInfo,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        use tower::ServiceExt as _;
        let mut req = http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(axum::body::Body::from(body)).unwrap();
        let resp = self.api.service_as(user.clone()).oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (code, v)
    }

    pub async fn json_as(
        &self,
        user: &kubecert_apiserver::UserInfo,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let ct = if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
        self.send_as(user, method, path, &[("content-type", ct)], serde_json::to_vec(body).unwrap()).await
    }

    pub async fn json(&self, method: &str, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.json_as(&admin_user(), method, path, body).await
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send_as(&admin_user(), "GET", path, &[], Vec::new()).await
    }
}
