//! The fleet view's data: what a node agent says about its certificates, published on the
//! node's own Lease in `kube-node-lease` as the JSON annotation [`STATUS_ANNOTATION`], and
//! read back by `signer fleet`.
//!
//! The node's Lease is the kubelet's way of saying something about a node that the node itself
//! may write: the Node authorizer lets `system:node:<name>` get, create, update and patch
//! Leases, and NodeRestriction limits it to its own (`kube-node-lease/<name>`). The status is
//! merged into the Lease's annotations, so the kubelet's heartbeat (the spec) and the status
//! never overwrite each other; a Lease that does not exist yet is created without a
//! `renewTime`, which is no heartbeat.
//!
//! CAs are named by key id: the `authorityKeyIdentifier` of a leaf names its issuer, the
//! `subjectKeyIdentifier` of a CA certificate names the CA (computed as RFC 7093 §2 method 1
//! when absent, as Go and rcgen compute it). Two generations of a CA have different keys, so
//! their key ids tell them apart whatever their names.

use std::time::SystemTime;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer as _, ParsedExtension, X509Certificate};

/// The annotation of a node's Lease that holds its [`NodeStatus`] as JSON.
pub const STATUS_ANNOTATION: &str = "kubecert.io/status";
/// Where node Leases live.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// What the kubelet sets as its Lease duration; used when the agent creates the Lease.
const NODE_LEASE_DURATION_SECONDS: i32 = 40;

/// One certificate of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Key id (lowercase hex) of the CA that issued it, when the certificate names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_key_id: Option<String>,
}

/// What a node agent publishes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The client certificate in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<CertificateStatus>,
    /// The serving certificate in use, when the node has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<CertificateStatus>,
    /// Key ids of the CA certificates the node trusts.
    #[serde(default)]
    pub trusted_key_ids: Vec<String>,
    /// A rotation has been due for longer than its threshold (the agent's overdue signal).
    #[serde(default)]
    pub overdue: bool,
    /// When the agent wrote this, RFC 3339.
    #[serde(default)]
    pub updated: String,
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map_or_else(|_| String::new(), |t| t.to_string())
}

/// Parses an RFC 3339 time as written by [`NodeStatus`].
pub fn parse_time(s: &str) -> Option<SystemTime> {
    s.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// The key id of a certificate's own key: its subject key identifier, else the leftmost 160
/// bits of the SHA-256 of its public key.
fn own_key_id(cert: &X509Certificate<'_>) -> String {
    let ski = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
        _ => None,
    });
    ski.map_or_else(
        || {
            let digest = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                &cert.public_key().subject_public_key.data,
            );
            kubecert_csr::hex(&digest.as_ref()[..20])
        },
        |id| kubecert_csr::hex(&id),
    )
}

/// The status of one DER certificate; `None` when it does not parse.
pub fn certificate_status(der: &[u8]) -> Option<CertificateStatus> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let issuer_key_id = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => {
            aki.key_identifier.as_ref().map(|id| kubecert_csr::hex(id.0))
        }
        _ => None,
    });
    let validity = cert.validity();
    let time =
        |t: i64| rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0).unsigned_abs()));
    Some(CertificateStatus {
        not_before: time(validity.not_before.timestamp()),
        not_after: time(validity.not_after.timestamp()),
        issuer_key_id,
    })
}

/// The key ids of the CA certificates in a PEM bundle, in order, without repeats; blocks that
/// are not certificates, or do not parse, are left out.
pub fn ca_key_ids(pem: &[u8]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem).flatten() {
        if block.label != "CERTIFICATE" {
            continue;
        }
        if let Ok((_, cert)) = X509Certificate::from_der(&block.contents) {
            let id = own_key_id(&cert);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// The annotation value of `status`.
pub fn encode(status: &NodeStatus) -> String {
    serde_json::to_string(status).unwrap_or_default()
}

/// Writes `status` (stamped with `now`) on node `node`'s Lease: a merge patch of the
/// annotation, or, when the Lease does not exist, a new Lease holding it.
pub async fn publish(
    client: &kube::Client,
    node: &str,
    status: &NodeStatus,
    now: SystemTime,
) -> kube::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let stamped = NodeStatus { updated: rfc3339(now), ..status.clone() };
    let value = encode(&stamped);
    let patch = serde_json::json!({"metadata": {"annotations": {STATUS_ANNOTATION: value}}});
    for _ in 0..2 {
        match leases.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            other => return other.map(drop),
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(node.to_string()),
                namespace: Some(NODE_LEASE_NAMESPACE.to_string()),
                annotations: Some([(STATUS_ANNOTATION.to_string(), value.clone())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(node.to_string()),
                lease_duration_seconds: Some(NODE_LEASE_DURATION_SECONDS),
                ..LeaseSpec::default()
            }),
        };
        match leases.create(&PostParams::default(), &lease).await {
            // Someone (the kubelet) created it meanwhile: patch that one.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            other => return other.map(drop),
        }
    }
    Ok(())
}

/// A node's published status as read back: the status, or why it could not be read.
pub type PublishedStatus = (String, Result<NodeStatus, String>);

/// Every node Lease that carries a status, by node name (the Lease's name).
pub async fn read_all(client: &kube::Client) -> kube::Result<Vec<PublishedStatus>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let list = leases.list(&ListParams::default()).await?;
    Ok(list.items.into_iter().filter_map(|lease| published(&lease)).collect())
}

/// The status on one Lease, if it has the annotation.
fn published(lease: &Lease) -> Option<PublishedStatus> {
    let name = lease.metadata.name.clone().unwrap_or_default();
    let value = lease.metadata.annotations.as_ref()?.get(STATUS_ANNOTATION)?;
    let status = serde_json::from_str(value).map_err(|e| format!("annotation {STATUS_ANNOTATION}: {e}"));
    Some((name, status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    #[test]
    fn leaves_name_their_issuer_and_bundles_their_cas() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["n1".to_string()]).unwrap();
        leaf_params.use_authority_key_identifier_extension = true;
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let ids = ca_key_ids(format!("{}junk\n{}", ca.pem(), ca.pem()).as_bytes());
        assert_eq!(ids.len(), 1, "repeats are left out");
        assert_eq!(ids[0].len(), 40);
        let status = certificate_status(leaf.der()).unwrap();
        assert_eq!(status.issuer_key_id.as_deref(), Some(ids[0].as_str()));
        assert!(parse_time(&status.not_after).unwrap() > parse_time(&status.not_before).unwrap());
        assert!(certificate_status(b"junk").is_none());
        assert!(ca_key_ids(b"no PEM here").is_empty());
    }

    #[test]
    fn status_round_trips_through_the_annotation() {
        let status = NodeStatus {
            client: Some(CertificateStatus {
                not_before: "2026-01-01T00:00:00Z".into(),
                not_after: "2027-01-01T00:00:00Z".into(),
                issuer_key_id: Some("ab".into()),
            }),
            serving: None,
            trusted_key_ids: vec!["ab".into(), "cd".into()],
            overdue: true,
            updated: "2026-06-01T00:00:00Z".into(),
        };
        let text = encode(&status);
        assert!(text.contains("\"trustedKeyIds\":[\"ab\",\"cd\"]") && !text.contains("serving"), "{text}");
        let mut lease = Lease::default();
        lease.metadata.name = Some("n1".into());
        assert_eq!(published(&lease), None);
        lease.metadata.annotations = Some([(STATUS_ANNOTATION.to_string(), text)].into());
        assert_eq!(published(&lease), Some(("n1".to_string(), Ok(status))));
        lease.metadata.annotations = Some([(STATUS_ANNOTATION.to_string(), "{".to_string())].into());
        let (_, err) = published(&lease).unwrap();
        assert!(err.unwrap_err().starts_with("annotation kubecert.io/status: "));
    }
}
