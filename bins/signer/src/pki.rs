//! The certificates `signer serve` makes for itself on first start and reuses after: the
//! cluster CA (DATA_DIR/pki/ca.crt, ca.key), the API's serving certificate
//! (pki/apiserver.crt, apiserver.key) and DATA_DIR/admin.kubeconfig (a `system:masters` client
//! certificate). Every file is written atomically with mode 0600.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use kubecert_authority::{CertificateAuthority, IssuancePolicy, validate_for_signer};
use kubecert_csr::{
    CertificateTemplate, KeyAlgorithm, PrivateKey, SIGNER_KUBE_APISERVER_CLIENT, SIGNER_LEGACY_UNKNOWN,
    build_csr_pem, parse_certificates_pem, parse_csr_pem,
};
use kubecert_store::kubeconfig::{
    BootstrapKubeconfig, ClusterEndpoint, Credentials, PemSource, write_kubeconfig,
};
use kubecert_store::write_private_file;

use crate::config::CaFiles;

/// Common name of the generated cluster CA.
const CA_NAME: &str = "kubecert-ca";
/// The admin user of admin.kubeconfig.
const ADMIN_USER: &str = "kubecert-admin";
/// Lifetime of the API serving certificate and the admin certificate.
const OWN_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Re-issue the serving certificate when less than this is left.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Paths under the data directory.
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    pub fn ca_files(&self) -> CaFiles {
        CaFiles { cert: self.root.join("pki/ca.crt"), key: self.root.join("pki/ca.key") }
    }

    fn serving(&self) -> (PathBuf, PathBuf) {
        (self.root.join("pki/apiserver.crt"), self.root.join("pki/apiserver.key"))
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.root.join("admin.kubeconfig")
    }

    pub fn api_state(&self) -> PathBuf {
        self.root.join("state")
    }
}

/// Reads a CA from its files.
pub fn load_ca(files: &CaFiles) -> Result<CertificateAuthority> {
    let cert = std::fs::read(&files.cert)
        .with_context(|| format!("reading CA certificate {}", files.cert.display()))?;
    let key = std::fs::read(&files.key).with_context(|| format!("reading CA key {}", files.key.display()))?;
    CertificateAuthority::from_pem(&cert, &key)
        .with_context(|| format!("CA {} / {}", files.cert.display(), files.key.display()))
}

/// The CA in DATA_DIR/pki, generated on first start with `lifetime`.
pub fn load_or_create_ca(dir: &DataDir, lifetime: Duration) -> Result<CertificateAuthority> {
    let files = dir.ca_files();
    if files.cert.exists() || files.key.exists() {
        return load_ca(&files);
    }
    let now = SystemTime::now();
    let ca = CertificateAuthority::generate_root(
        CA_NAME,
        now,
        now + lifetime,
        &aws_lc_rs::rand::SystemRandom::new(),
    )?;
    write_ca(&files, ca, "created the cluster CA")
}

/// Writes a generated CA's files (0600). Key first: a crash between the two writes leaves no
/// certificate without its key.
fn write_ca(files: &CaFiles, ca: CertificateAuthority, what: &str) -> Result<CertificateAuthority> {
    write_private_file(&files.key, ca.private_key_pem().as_bytes())?;
    write_private_file(&files.cert, ca.certificate_pem().as_bytes())?;
    tracing::info!(cert = %files.cert.display(), "{what}");
    Ok(ca)
}

/// The ML-DSA-65 CA of `kubecert.io/node-identity` in `dir` (ca.crt, ca.key), generated there on
/// first start (ten years, like the cluster CA). A CA of another algorithm is an error: the
/// signer's identities come from a CA of their own algorithm.
#[cfg(feature = "ml-dsa")]
pub fn load_or_create_node_identity_ca(dir: &Path) -> Result<CertificateAuthority> {
    let files = CaFiles { cert: dir.join("ca.crt"), key: dir.join("ca.key") };
    let ca = if files.cert.exists() || files.key.exists() {
        load_ca(&files)?
    } else {
        let ca = CertificateAuthority::generate_with(
            KeyAlgorithm::MlDsa65,
            NODE_IDENTITY_CA_NAME,
            SystemTime::now(),
            &aws_lc_rs::rand::SystemRandom::new(),
        )?;
        write_ca(&files, ca, "created the ML-DSA-65 node identity CA")?
    };
    let algorithm = ca.key_algorithm();
    if algorithm != KeyAlgorithm::MlDsa65 {
        anyhow::bail!(
            "node_identity_ca: {} is an {algorithm} key; kubecert.io/node-identity needs an ML-DSA-65 CA",
            files.key.display()
        );
    }
    Ok(ca)
}

/// Common name of the generated node identity CA.
#[cfg(feature = "ml-dsa")]
const NODE_IDENTITY_CA_NAME: &str = "kubecert-node-identity-ca";

/// Issues a certificate for a fresh key through the authority's own path (validation, random
/// serial, key identifiers). Returns (certificate PEM, key PEM).
fn issue(
    ca: &CertificateAuthority,
    template: &CertificateTemplate,
    signer_name: &str,
    usages: &[&str],
) -> Result<(String, String)> {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
    let request = parse_csr_pem(build_csr_pem(template, &key)?.as_bytes())?;
    let usages: Vec<String> = usages.iter().map(|u| u.to_string()).collect();
    let validated = validate_for_signer(signer_name, &request, &usages)
        .map_err(|f| anyhow::anyhow!("{}", f.message()))?;
    let policy = IssuancePolicy { ttl: OWN_CERT_LIFETIME, ..IssuancePolicy::default() };
    let issued =
        ca.issue(&validated, None, &policy, SystemTime::now(), &aws_lc_rs::rand::SystemRandom::new())?;
    Ok((issued.pem().to_owned(), key.to_pem().to_owned()))
}

/// Names the serving certificate covers: loopback, localhost, the host name and the listen IP.
fn serving_template(listen: SocketAddr) -> CertificateTemplate {
    let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
    if !listen.ip().is_unspecified() {
        ips.push(listen.ip());
    }
    let mut dns = vec!["localhost".to_owned()];
    if let Some(host) = host_name() {
        dns.push(host);
    }
    let mut template = CertificateTemplate::node_serving("unused", &dns, &ips);
    template.common_name = "kubecert-apiserver".into();
    template.organizations.clear();
    template
}

/// The API's serving certificate and key (PEM): reused while valid for another 30 days, signed
/// by `ca` and covering the listen address; issued anew otherwise.
pub fn serving_certificate(
    dir: &DataDir,
    ca: &CertificateAuthority,
    listen: SocketAddr,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let (cert_path, key_path) = dir.serving();
    let template = serving_template(listen);
    if let (Ok(cert), Ok(key)) = (std::fs::read(&cert_path), std::fs::read(&key_path)) {
        let usable = parse_certificates_pem(&cert).ok().zip(PrivateKey::from_pem(&key).ok()).is_some_and(
            |(chain, key)| {
                let leaf = &chain[0];
                leaf.matches_key(&key)
                    && leaf.issuer_der == ca.certificate().subject.der
                    && template.ip_addresses.iter().all(|ip| leaf.ip_addresses.contains(ip))
                    && !leaf.is_expired_at(SystemTime::now() + RENEW_BEFORE)
            },
        );
        if usable {
            return Ok((cert, key));
        }
    }
    let (cert, key) = issue(
        ca,
        &template,
        SIGNER_LEGACY_UNKNOWN,
        &["digital signature", "key encipherment", "server auth"],
    )?;
    write_private_file(&key_path, key.as_bytes())?;
    write_private_file(&cert_path, cert.as_bytes())?;
    tracing::info!(cert = %cert_path.display(), "issued the API serving certificate");
    Ok((cert.into_bytes(), key.into_bytes()))
}

/// The URL clients use for `listen` (an unspecified address is reached on loopback).
pub fn server_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, listen.port()))
}

/// DATA_DIR/admin.kubeconfig: kept when it points at `server`, trusts exactly
/// `trusted_roots_pem` (the API's client CAs: a CA roll changes them) and holds a certificate
/// issued by `ca`; written anew otherwise with a certificate from `ca`. Following the signing CA
/// means an activation re-issues it, so the retire that later drops the old root from the API's
/// client CAs never strands a `signer ca retire` that read this file just before the API did.
pub fn admin_kubeconfig(
    dir: &DataDir,
    ca: &CertificateAuthority,
    trusted_roots_pem: &[u8],
    server: &str,
) -> Result<PathBuf> {
    let path = dir.admin_kubeconfig();
    let current = BootstrapKubeconfig::load(&path).ok().filter(|k| k.cluster.server == server);
    let keep = current.is_some_and(|k| {
        let read = |source: Option<PemSource>| source.and_then(|pem| pem.read().ok());
        let issued_by_ca =
            read(k.client_certificate).and_then(|pem| parse_certificates_pem(&pem).ok()).is_some_and(
                |chain| chain.first().is_some_and(|leaf| leaf.issuer_der == ca.certificate().subject.der),
            );
        issued_by_ca && read(k.cluster.certificate_authority).is_some_and(|pem| pem == trusted_roots_pem)
    });
    if keep {
        return Ok(path);
    }
    let mut template = CertificateTemplate::node_client("unused");
    template.common_name = ADMIN_USER.into();
    template.organizations = vec!["system:masters".into()];
    let (cert_pem, key_pem) = issue(
        ca,
        &template,
        SIGNER_KUBE_APISERVER_CLIENT,
        &["digital signature", "key encipherment", "client auth"],
    )?;
    let cluster = ClusterEndpoint {
        server: server.to_owned(),
        certificate_authority: Some(PemSource::Inline(trusted_roots_pem.to_vec())),
        insecure_skip_tls_verify: false,
    };
    let credentials =
        Credentials::InlineCertificate { cert_pem: cert_pem.into_bytes(), key_pem: key_pem.into_bytes() };
    write_kubeconfig(&path, &cluster, &credentials)?;
    tracing::info!(path = %path.display(), "wrote the admin kubeconfig");
    Ok(path)
}

/// This machine's host name, if it has a usable one.
pub fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;

    use super::*;

    #[test]
    fn the_admin_kubeconfig_follows_the_trusted_roots_and_the_signing_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let now = SystemTime::now();
        let first = CertificateAuthority::generate("kc generation 1", now, &SystemRandom::new()).unwrap();
        let second = CertificateAuthority::generate("kc generation 2", now, &SystemRandom::new()).unwrap();
        let roots = format!("{}{}", first.certificate().to_pem(), second.certificate().to_pem());
        let server = "https://127.0.0.1:6443";
        let issuer = || {
            let kubeconfig = BootstrapKubeconfig::load(&dir.admin_kubeconfig()).unwrap();
            let pem = kubeconfig.client_certificate.unwrap().read().unwrap();
            parse_certificates_pem(&pem).unwrap()[0].issuer_der.clone()
        };

        admin_kubeconfig(&dir, &first, roots.as_bytes(), server).unwrap();
        let written = std::fs::read(dir.admin_kubeconfig()).unwrap();
        admin_kubeconfig(&dir, &first, roots.as_bytes(), server).unwrap();
        assert_eq!(std::fs::read(dir.admin_kubeconfig()).unwrap(), written, "kept while nothing changed");

        // Activation: the same trusted roots, another signing CA.
        admin_kubeconfig(&dir, &second, roots.as_bytes(), server).unwrap();
        assert_eq!(issuer(), second.certificate().subject.der, "re-issued by the signing CA");
        // Retirement: the roots change, the signing CA stays.
        let after = second.certificate().to_pem();
        admin_kubeconfig(&dir, &second, after.as_bytes(), server).unwrap();
        let kubeconfig = BootstrapKubeconfig::load(&dir.admin_kubeconfig()).unwrap();
        assert_eq!(kubeconfig.cluster.certificate_authority.unwrap().read().unwrap(), after.as_bytes());
        assert_eq!(issuer(), second.certificate().subject.der);
    }
}
