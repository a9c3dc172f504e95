//! What the integration tests share: building requests (with rcgen, or with openssl for key
//! types kubecert-csr does not generate) and running openssl.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use serde::Deserialize;

/// How to build a request; the corpus header documents each field.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub key: String,
    pub cn: Option<String>,
    #[serde(default)]
    pub o: Vec<String>,
    pub extra_cn: Option<String>,
    pub o_bmp: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub uris: Vec<String>,
    #[serde(default)]
    pub dns_count: usize,
    #[serde(default)]
    pub ca: bool,
    #[serde(default)]
    pub key_usage: Vec<String>,
    #[serde(default)]
    pub ext_key_usage: Vec<String>,
    pub mutate: Option<String>,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out =
        Command::new("openssl").args(args).output().expect("openssl must be installed (CI installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// An RSA key from openssl (kubecert-csr does not generate RSA keys), one per size per test run.
pub fn rsa_key(bits: u32) -> rcgen::KeyPair {
    static KEYS: OnceLock<Mutex<BTreeMap<u32, String>>> = OnceLock::new();
    let mut keys = KEYS.get_or_init(Default::default).lock().unwrap();
    let pem = keys.entry(bits).or_insert_with(|| {
        let bits = format!("rsa_keygen_bits:{bits}");
        String::from_utf8(openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", &bits])).unwrap()
    });
    rcgen::KeyPair::from_pem(pem).unwrap()
}

/// A request made entirely by openssl, for key types kubecert-csr does not generate.
fn openssl_request(spec: &RequestSpec, newkey: &[&str]) -> String {
    assert!(spec.extra_cn.is_none() && spec.o_bmp.is_none() && spec.dns.is_empty() && !spec.ca);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let mut subject = String::new();
    for o in &spec.o {
        subject.push_str(&format!("/O={o}"));
    }
    if let Some(cn) = &spec.cn {
        subject.push_str(&format!("/CN={cn}"));
    }
    let mut args = vec!["req", "-new", "-nodes", "-keyout", key.to_str().unwrap(), "-subj", &subject];
    args.extend_from_slice(newkey);
    String::from_utf8(openssl(&args)).unwrap()
}

fn eku(name: &str) -> rcgen::ExtendedKeyUsagePurpose {
    match name {
        "any" => rcgen::ExtendedKeyUsagePurpose::Any,
        "code-signing" => rcgen::ExtendedKeyUsagePurpose::CodeSigning,
        "server-auth" => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        "client-auth" => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        other => panic!("unknown ext_key_usage {other:?}"),
    }
}

fn ku(name: &str) -> rcgen::KeyUsagePurpose {
    match name {
        "cert-sign" => rcgen::KeyUsagePurpose::KeyCertSign,
        "crl-sign" => rcgen::KeyUsagePurpose::CrlSign,
        "digital-signature" => rcgen::KeyUsagePurpose::DigitalSignature,
        "key-encipherment" => rcgen::KeyUsagePurpose::KeyEncipherment,
        other => panic!("unknown key_usage {other:?}"),
    }
}

pub fn build_request(spec: &RequestSpec) -> String {
    let key = match spec.key.as_str() {
        "p256" => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        "p384" => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        "ed25519" => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        "rsa2048" => rsa_key(2048),
        "rsa1024" => return openssl_request(spec, &["-newkey", "rsa:1024"]),
        "p521" => return openssl_request(spec, &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"]),
        other => panic!("unknown key {other:?}"),
    };
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // rcgen keeps one value per attribute type; a second value of the same type goes in under
    // the same OID spelled as a custom type.
    let organization = rcgen::DnType::CustomDnType(vec![2, 5, 4, 10]);
    assert!(spec.o.len() + usize::from(spec.o_bmp.is_some()) <= 2, "at most two organizations");
    for (i, o) in spec.o.iter().enumerate() {
        let ty = if i == 0 { rcgen::DnType::OrganizationName } else { organization.clone() };
        params.distinguished_name.push(ty, o.as_str());
    }
    if let Some(hidden) = &spec.o_bmp {
        let value = rcgen::string::BmpString::try_from(hidden.as_str()).unwrap();
        params.distinguished_name.push(organization, rcgen::DnValue::BmpString(value));
    }
    if let Some(cn) = &spec.cn {
        params.distinguished_name.push(rcgen::DnType::CommonName, cn.as_str());
    }
    if let Some(cn) = &spec.extra_cn {
        params.distinguished_name.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]), cn.as_str());
    }
    let generated = (0..spec.dns_count).map(|i| format!("n{i}.nodes.example.com"));
    let sans =
        spec.dns.iter().cloned().chain(generated).map(|d| rcgen::SanType::DnsName(d.try_into().unwrap()));
    params.subject_alt_names = sans
        .chain(spec.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)))
        .chain(spec.emails.iter().map(|e| rcgen::SanType::Rfc822Name(e.clone().try_into().unwrap())))
        .chain(spec.uris.iter().map(|u| rcgen::SanType::URI(u.clone().try_into().unwrap())))
        .collect();
    if spec.ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    params.key_usages = spec.key_usage.iter().map(|k| ku(k)).collect();
    params.extended_key_usages = spec.ext_key_usage.iter().map(|e| eku(e)).collect();
    let mut der = params.serialize_request(&key).unwrap().der().to_vec();
    match spec.mutate.as_deref() {
        None => pem("CERTIFICATE REQUEST", &der),
        Some("flip-signature") => {
            let last = der.len() - 1;
            der[last] ^= 0x01;
            pem("CERTIFICATE REQUEST", &der)
        }
        Some("truncate") => pem("CERTIFICATE REQUEST", &der[..der.len() / 2]),
        Some("as-certificate-block") => pem("CERTIFICATE", &der),
        Some("base64-garbage") => pem("CERTIFICATE REQUEST", b"this is not DER, not even close"),
        Some(other) => panic!("unknown mutation {other:?}"),
    }
}
