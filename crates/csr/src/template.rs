//! What a node asks for, and building the PKCS#10 request that asks for it.

use std::net::IpAddr;

use rcgen::{CertificateParams, DistinguishedName, DnType, SanType};

use crate::{Certificate, Error, NODE_GROUP, NODE_USER_PREFIX, PrivateKey};

/// The subject and names a certificate should carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertificateTemplate {
    /// Subject common name.
    pub common_name: String,
    /// Subject organizations (groups, to the API server).
    pub organizations: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
}

impl CertificateTemplate {
    /// A node's client certificate: CN `system:node:<node>`, O `system:nodes`, no SANs.
    pub fn node_client(node_name: &str) -> Self {
        Self {
            common_name: format!("{NODE_USER_PREFIX}{node_name}"),
            organizations: vec![NODE_GROUP.to_owned()],
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        }
    }

    /// A node's serving certificate with the given names (SPEC SV-2): empty names dropped,
    /// duplicates removed, DNS names sorted, IP addresses sorted by their string form.
    pub fn node_serving(node_name: &str, dns_names: &[String], ip_addresses: &[IpAddr]) -> Self {
        let mut dns: Vec<String> = dns_names.iter().filter(|d| !d.is_empty()).cloned().collect();
        dns.sort();
        dns.dedup();
        let mut ips: Vec<(String, IpAddr)> = ip_addresses.iter().map(|ip| (ip.to_string(), *ip)).collect();
        ips.sort();
        ips.dedup();
        Self {
            dns_names: dns,
            ip_addresses: ips.into_iter().map(|(_, ip)| ip).collect(),
            ..Self::node_client(node_name)
        }
    }

    /// Whether `cert` satisfies this template (SPEC M-12): same common name, and every DNS name,
    /// IP address and organization of the template present in the certificate. Extra names in
    /// the certificate are fine.
    pub fn is_satisfied_by(&self, cert: &Certificate) -> bool {
        cert.subject.common_name.as_deref() == Some(self.common_name.as_str())
            && self.dns_names.iter().all(|d| cert.dns_names.contains(d))
            && self.ip_addresses.iter().all(|ip| cert.ip_addresses.contains(ip))
            && self.organizations.iter().all(|o| cert.subject.organizations.contains(o))
    }
}

/// A PKCS#10 request for `template`, signed by `key`, as a `CERTIFICATE REQUEST` PEM block. The
/// signature algorithm follows the key (SPEC M-11): ECDSA with SHA-256 (P-256) or SHA-384
/// (P-384), Ed25519, or RSA with SHA-256/384/512 by modulus size.
///
/// At most one organization is supported: rcgen encodes one value per attribute type, and no
/// node template needs more.
pub fn build_csr_pem(template: &CertificateTemplate, key: &PrivateKey) -> Result<String, Error> {
    let mut name = DistinguishedName::new();
    match template.organizations.as_slice() {
        [] => {}
        [organization] => name.push(DnType::OrganizationName, organization.as_str()),
        _ => return Err(Error::Unsupported("a certificate request with more than one organization".into())),
    }
    name.push(DnType::CommonName, template.common_name.as_str());

    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    for dns in &template.dns_names {
        let dns =
            dns.as_str().try_into().map_err(|_| Error::csr(format!("DNS name {dns:?} is not ASCII")))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params.subject_alt_names.extend(template.ip_addresses.iter().copied().map(SanType::IpAddress));
    let request = params.serialize_request(key.rcgen_key_pair()).map_err(Error::csr)?;
    request.pem().map_err(Error::csr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyAlgorithm, parse_csr_pem};

    #[test]
    fn node_client_template_is_the_kubelet_subject() {
        let t = CertificateTemplate::node_client("worker-1");
        assert_eq!(t.common_name, "system:node:worker-1");
        assert_eq!(t.organizations, ["system:nodes"]);
        assert!(t.dns_names.is_empty() && t.ip_addresses.is_empty());
    }

    #[test]
    fn serving_template_dedupes_and_sorts_names() {
        let ips: Vec<IpAddr> =
            ["10.0.0.9", "10.0.0.10", "10.0.0.9", "::1"].iter().map(|s| s.parse().unwrap()).collect();
        let dns = ["b.example".to_owned(), String::new(), "a.example".to_owned(), "b.example".to_owned()];
        let t = CertificateTemplate::node_serving("n", &dns, &ips);
        assert_eq!(t.dns_names, ["a.example", "b.example"]);
        // Sorted by string form, as upstream: "10.0.0.10" < "10.0.0.9".
        let as_strings: Vec<String> = t.ip_addresses.iter().map(|ip| ip.to_string()).collect();
        assert_eq!(as_strings, ["10.0.0.10", "10.0.0.9", "::1"]);
    }

    #[test]
    fn requests_carry_the_template_and_verify_for_every_key_type() {
        let template = CertificateTemplate::node_serving(
            "n1",
            &["n1.example".to_owned()],
            &["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()],
        );
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Ed25519] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let pem = build_csr_pem(&template, &key).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
            let info = parse_csr_pem(pem.as_bytes()).unwrap();
            assert_eq!(info.subject.common_name.as_deref(), Some("system:node:n1"));
            assert_eq!(info.subject.organizations, ["system:nodes"]);
            assert_eq!(info.dns_names, ["n1.example"]);
            assert_eq!(info.ip_addresses, template.ip_addresses);
            assert_eq!(info.public_key.spki_der, key.public_key_der());
            assert_eq!(info.requested_basic_constraints, None);
            assert!(info.requested_key_usage.is_empty());
        }
    }

    #[test]
    fn more_than_one_organization_is_refused() {
        let mut template = CertificateTemplate::node_client("n");
        template.organizations.push("other".into());
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert!(matches!(build_csr_pem(&template, &key), Err(Error::Unsupported(_))));
    }

    fn self_signed(cn: &str, orgs: &[&str], dns: &[&str], ips: &[&str]) -> Certificate {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        for d in dns {
            params.subject_alt_names.push(SanType::DnsName((*d).try_into().unwrap()));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(ip.parse().unwrap()));
        }
        let cert = params.self_signed(key.rcgen_key_pair()).unwrap();
        Certificate::from_der(cert.der()).unwrap()
    }

    #[test]
    fn satisfaction_follows_the_kubelet_rule() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let template = CertificateTemplate::node_serving("n", &["n.example".into()], &[ip]);
        let exact = self_signed("system:node:n", &["system:nodes"], &["n.example"], &["192.0.2.1"]);
        assert!(template.is_satisfied_by(&exact));
        // Extra names in the certificate are fine.
        let extra = self_signed(
            "system:node:n",
            &["system:nodes"],
            &["n.example", "x.example"],
            &["192.0.2.1", "::1"],
        );
        assert!(template.is_satisfied_by(&extra));
        for (why, cert) in [
            ("other CN", self_signed("system:node:m", &["system:nodes"], &["n.example"], &["192.0.2.1"])),
            ("missing O", self_signed("system:node:n", &[], &["n.example"], &["192.0.2.1"])),
            ("missing DNS", self_signed("system:node:n", &["system:nodes"], &[], &["192.0.2.1"])),
            ("missing IP", self_signed("system:node:n", &["system:nodes"], &["n.example"], &[])),
        ] {
            assert!(!template.is_satisfied_by(&cert), "{why}");
        }
        // A client template says nothing about names.
        assert!(CertificateTemplate::node_client("n").is_satisfied_by(&extra));
    }
}
