//! `certificates.k8s.io/v1` CertificateSigningRequest objects (SPEC R-1).

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{
    CertificatePurpose, CertificateTemplate, Error, KeyUsage, PrivateKey,
    SIGNER_KUBE_APISERVER_CLIENT_KUBELET, bootstrap_csr_name, build_csr_pem, usages_for,
};

/// `metadata.generateName` of CSRs without a fixed name; the server appends five characters.
pub const GENERATE_NAME_PREFIX: &str = "csr-";

/// How the object is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CsrName {
    /// Exactly this name (the bootstrap path's `node-csr-…`).
    Fixed(String),
    /// A server-generated `csr-xxxxx` name (the rotation path).
    Generate,
}

/// A CSR object ready to create. `spec.request` holds the PEM bytes (the JSON encoding base64s
/// them); `expirationSeconds` is set only when a lifetime is requested (the kubelet never does).
pub fn csr_object(
    name: CsrName,
    signer_name: &str,
    request_pem: &str,
    usages: &[KeyUsage],
    expiration_seconds: Option<i32>,
) -> CertificateSigningRequest {
    let metadata = match name {
        CsrName::Fixed(name) => ObjectMeta { name: Some(name), ..ObjectMeta::default() },
        CsrName::Generate => {
            ObjectMeta { generate_name: Some(GENERATE_NAME_PREFIX.to_owned()), ..ObjectMeta::default() }
        }
    };
    CertificateSigningRequest {
        metadata,
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.as_bytes().to_vec()),
            signer_name: signer_name.to_owned(),
            usages: Some(usages.iter().map(|u| u.as_str().to_owned()).collect()),
            expiration_seconds,
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    }
}

/// The CSR a node submits when it bootstraps its client certificate with `key`: subject
/// `system:node:<node_name>` in `system:nodes`, signer `kube-apiserver-client-kubelet`, the
/// usages of the key type, and the fixed name `node-csr-<digest>` (SPEC B-13) so that a node
/// restarted mid-bootstrap finds its own request again.
pub fn node_bootstrap_csr(key: &PrivateKey, node_name: &str) -> Result<CertificateSigningRequest, Error> {
    let template = CertificateTemplate::node_client(node_name);
    let usages = usages_for(key.algorithm(), CertificatePurpose::Client);
    let pem = build_csr_pem(&template, key)?;
    let name =
        bootstrap_csr_name(key.public_key_der(), &template.common_name, &template.organizations, &usages);
    Ok(csr_object(CsrName::Fixed(name), SIGNER_KUBE_APISERVER_CLIENT_KUBELET, &pem, &usages, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyAlgorithm, parse_csr_pem};

    #[test]
    fn the_bootstrap_csr_is_named_by_its_key_and_asks_for_a_node_client_certificate() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let csr = node_bootstrap_csr(&key, "worker-1").unwrap();
        let name = csr.metadata.name.clone().unwrap();
        assert!(name.starts_with("node-csr-") && name.len() == 52, "{name}");
        assert_eq!(csr.spec.signer_name, SIGNER_KUBE_APISERVER_CLIENT_KUBELET);
        assert_eq!(csr.spec.usages.as_deref().unwrap(), ["digital signature", "client auth"]);
        assert_eq!(csr.spec.expiration_seconds, None);
        let info = parse_csr_pem(&csr.spec.request.0).unwrap();
        assert_eq!(info.subject.common_name.as_deref(), Some("system:node:worker-1"));
        assert_eq!(info.subject.organizations, ["system:nodes"]);
        // Same key, same name: a restarted agent finds its request again.
        assert_eq!(node_bootstrap_csr(&key, "worker-1").unwrap().metadata.name.unwrap(), name);
        let other = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert_ne!(node_bootstrap_csr(&other, "worker-1").unwrap().metadata.name.unwrap(), name);
    }

    #[test]
    fn fixed_and_generated_names() {
        let usages = [KeyUsage::DigitalSignature, KeyUsage::ClientAuth];
        let fixed = csr_object(
            CsrName::Fixed("node-csr-x".into()),
            SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
            "PEM",
            &usages,
            None,
        );
        assert_eq!(fixed.metadata.name.as_deref(), Some("node-csr-x"));
        assert_eq!(fixed.metadata.generate_name, None);
        assert_eq!(fixed.spec.expiration_seconds, None);

        let generated = csr_object(CsrName::Generate, "example.com/x", "PEM", &usages, Some(3600));
        assert_eq!(generated.metadata.name, None);
        assert_eq!(generated.metadata.generate_name.as_deref(), Some("csr-"));
        assert_eq!(generated.spec.expiration_seconds, Some(3600));
    }

    #[test]
    fn json_shape_matches_the_api() {
        let object = csr_object(
            CsrName::Generate,
            SIGNER_KUBE_APISERVER_CLIENT_KUBELET,
            "-----BEGIN CERTIFICATE REQUEST-----\n",
            &[KeyUsage::DigitalSignature, KeyUsage::ClientAuth],
            None,
        );
        let json = serde_json::to_value(&object).unwrap();
        assert_eq!(json["apiVersion"], "certificates.k8s.io/v1");
        assert_eq!(json["kind"], "CertificateSigningRequest");
        assert_eq!(json["spec"]["signerName"], "kubernetes.io/kube-apiserver-client-kubelet");
        assert_eq!(json["spec"]["usages"], serde_json::json!(["digital signature", "client auth"]));
        // Bytes are standard base64 on the wire.
        assert_eq!(json["spec"]["request"], "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K");
    }
}
