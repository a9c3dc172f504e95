//! Building requests and CSR objects for unit tests.

use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use kubecert_csr::{CsrInfo, KeyAlgorithm, PrivateKey};

/// A PKCS#10 request to build with rcgen, which puts whatever it is told into the request.
#[derive(Clone)]
pub(crate) struct RequestBuilder {
    key: PrivateKey,
    common_name: Option<String>,
    organizations: Vec<String>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    emails: Vec<String>,
    uris: Vec<String>,
    ca: bool,
    key_usages: Vec<rcgen::KeyUsagePurpose>,
    extended_key_usages: Vec<rcgen::ExtendedKeyUsagePurpose>,
}

/// A request for `common_name` with these organizations and a fresh key of `algorithm`.
pub(crate) fn request(algorithm: KeyAlgorithm, common_name: &str, organizations: &[&str]) -> RequestBuilder {
    RequestBuilder {
        key: PrivateKey::generate(algorithm).unwrap(),
        common_name: Some(common_name.to_owned()),
        organizations: organizations.iter().map(|s| s.to_string()).collect(),
        dns: Vec::new(),
        ips: Vec::new(),
        emails: Vec::new(),
        uris: Vec::new(),
        ca: false,
        key_usages: Vec::new(),
        extended_key_usages: Vec::new(),
    }
}

/// A node client request: CN `system:node:<node>`, O `system:nodes`, P-256.
pub(crate) fn node_client(node: &str) -> RequestBuilder {
    request(KeyAlgorithm::EcdsaP256, &format!("system:node:{node}"), &["system:nodes"])
}

impl RequestBuilder {
    pub(crate) fn dns(mut self, names: &[&str]) -> Self {
        self.dns = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub(crate) fn ips(mut self, ips: &[&str]) -> Self {
        self.ips = ips.iter().map(|s| s.parse().unwrap()).collect();
        self
    }

    pub(crate) fn emails(mut self, emails: &[&str]) -> Self {
        self.emails = emails.iter().map(|s| s.to_string()).collect();
        self
    }

    pub(crate) fn uris(mut self, uris: &[&str]) -> Self {
        self.uris = uris.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Asks for CA:TRUE, certificate and CRL signing, and the `any` and code-signing EKUs.
    pub(crate) fn hostile_extensions(mut self) -> Self {
        self.ca = true;
        self.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        self.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::Any, rcgen::ExtendedKeyUsagePurpose::CodeSigning];
        self
    }

    pub(crate) fn pem(&self) -> String {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        // rcgen keeps one value per attribute type: extra organizations go in under the same OID
        // spelled as a custom type.
        for (i, organization) in self.organizations.iter().enumerate() {
            let ty = if i == 0 {
                rcgen::DnType::OrganizationName
            } else {
                rcgen::DnType::CustomDnType(vec![2, 5, 4, 10])
            };
            params.distinguished_name.push(ty, organization.as_str());
        }
        if let Some(cn) = &self.common_name {
            params.distinguished_name.push(rcgen::DnType::CommonName, cn.as_str());
        }
        params.subject_alt_names = self
            .dns
            .iter()
            .map(|d| rcgen::SanType::DnsName(d.clone().try_into().unwrap()))
            .chain(self.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)))
            .chain(self.emails.iter().map(|e| rcgen::SanType::Rfc822Name(e.clone().try_into().unwrap())))
            .chain(self.uris.iter().map(|u| rcgen::SanType::URI(u.clone().try_into().unwrap())))
            .collect();
        if self.ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        params.key_usages = self.key_usages.clone();
        params.extended_key_usages = self.extended_key_usages.clone();
        params.serialize_request(self.key.rcgen_key_pair()).unwrap().pem().unwrap()
    }

    pub(crate) fn info(&self) -> CsrInfo {
        kubecert_csr::parse_csr_pem(self.pem().as_bytes()).unwrap()
    }
}

/// A CSR object as the API server stores it after creation by `username` in `groups`.
pub(crate) fn object(
    signer: &str,
    request_pem: &str,
    usages: &[&str],
    username: &str,
    groups: &[&str],
) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: Default::default(),
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.as_bytes().to_vec()),
            signer_name: signer.to_owned(),
            usages: Some(usages.iter().map(|s| s.to_string()).collect()),
            username: Some(username.to_owned()),
            groups: Some(groups.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    }
}

pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
