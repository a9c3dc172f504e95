//! Keys, PKCS#10 certificate signing requests and the Kubernetes vocabulary around them.
//!
//! This crate owns everything about certificate *contents* that both halves of kubecert share:
//!
//! - private keys: generating ECDSA P-256 (the kubelet's default), P-384 and Ed25519 keys, loading
//!   those and RSA keys from SEC1, PKCS#8 or PKCS#1 PEM, and writing EC keys as SEC1 so that a
//!   kubelet can read our files ([`PrivateKey`]);
//! - PKCS#10 requests built from a [`CertificateTemplate`] ([`build_csr_pem`]) and the
//!   `certificates.k8s.io/v1` objects that carry them ([`csr_object`]);
//! - the deterministic bootstrap name `node-csr-…` ([`bootstrap_csr_name`], SPEC B-13);
//! - inspection of requests and certificates from untrusted bytes ([`parse_csr_pem`],
//!   [`parse_certificates_pem`]): every failure is a typed [`Error`], never a panic; a
//!   request's bytes are verified once per process when read through [`parse_csr_pem_once`];
//! - the signer names and the 23 key-usage strings of the Kubernetes API ([`KeyUsage`]).
//!
//! It is pure: no files, no network, no clock. Callers pass `now` where time matters. Storing
//! keys is `kubecert-store`'s job; deciding whether a request is acceptable and signing it is
//! `kubecert-authority`'s.

mod error;
mod inspect;
mod keys;
mod name;
mod object;
mod template;
mod usage;
mod verified;

pub use error::Error;
pub use inspect::{
    BasicConstraints, Certificate, CsrInfo, PublicKey, PublicKeyAlgorithm, Subject, hex,
    parse_certificates_pem, parse_csr_der, parse_csr_pem, pem_block,
};
pub use keys::{KeyAlgorithm, PrivateKey};
pub use name::bootstrap_csr_name;
pub use object::{CsrName, GENERATE_NAME_PREFIX, csr_object, node_bootstrap_csr};
pub use template::{CertificateTemplate, build_csr_pem};
pub use usage::{
    CertificatePurpose, KeyUsage, NODE_GROUP, NODE_USER_PREFIX, SIGNER_KUBE_APISERVER_CLIENT,
    SIGNER_KUBE_APISERVER_CLIENT_KUBELET, SIGNER_KUBECERT_NODE_IDENTITY, SIGNER_KUBELET_SERVING,
    SIGNER_LEGACY_UNKNOWN, UnknownKeyUsage, usages_for,
};
pub use verified::parse_csr_pem_once;
