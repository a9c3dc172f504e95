//! What each signer accepts (SPEC AP-4, SG-3), with upstream's messages word for word.

use std::collections::BTreeSet;
use std::fmt;

use kubecert_csr::{
    CsrInfo, KeyUsage, NODE_GROUP, NODE_USER_PREFIX, SIGNER_KUBE_APISERVER_CLIENT,
    SIGNER_KUBE_APISERVER_CLIENT_KUBELET, SIGNER_KUBELET_SERVING, SIGNER_LEGACY_UNKNOWN,
};

use crate::subject::SubjectName;
use crate::usages::parse_usages;

/// Which part of a request a [`ValidationFailure`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The PEM or DER does not parse, or its self-signature does not verify.
    Request,
    /// The subject name: organization, common name, or an attribute that cannot be read
    /// unambiguously.
    Subject,
    /// The subject alternative names.
    SubjectAltNames,
    /// `spec.usages`.
    Usages,
    /// The signer name is not one this crate knows how to validate.
    Signer,
}

/// Why a signer refuses a request (SPEC SG-3). On the CSR object this becomes a `Failed`
/// condition with reason `SignerValidationFailure` and [`ValidationFailure::message`] as
/// message; the policy turns it into a `Denied` condition instead (see [`crate::DenyReason`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationFailure {
    kind: FailureKind,
    message: String,
}

impl ValidationFailure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// What the failure is about.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The message, for upstream's rules exactly upstream's text (for example
    /// `subject organization is not system:nodes`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ValidationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationFailure {}

/// A request that passed its signer's validation, ready to be issued by
/// [`crate::CertificateAuthority::issue`]. Only [`validate_for_signer`] makes one.
#[derive(Clone, Debug)]
pub struct ValidatedRequest<'a> {
    pub(crate) info: &'a CsrInfo,
    pub(crate) subject: SubjectName,
    pub(crate) usages: Vec<KeyUsage>,
}

impl ValidatedRequest<'_> {
    /// The parsed request.
    pub fn info(&self) -> &CsrInfo {
        self.info
    }

    /// The usages, parsed, in the order `spec.usages` lists them.
    pub fn usages(&self) -> &[KeyUsage] {
        &self.usages
    }

    /// The subject common name ("" when there is none).
    pub fn common_name(&self) -> &str {
        self.subject.common_name()
    }
}

/// Checks a parsed request against what `signer_name` accepts (SPEC SG-3), in upstream's order
/// and with upstream's messages:
///
/// - `kubernetes.io/kube-apiserver-client-kubelet`: the kubelet-client rules of SPEC AP-4;
/// - `kubernetes.io/kubelet-serving`: organization `[system:nodes]`, at least one DNS or IP SAN,
///   no email or URI SAN, usages {digital signature, (key encipherment,) server auth}, common
///   name `system:node:…`;
/// - `kubernetes.io/kube-apiserver-client`: usages among digital signature, key encipherment and
///   client auth, client auth required;
/// - `kubernetes.io/legacy-unknown`: nothing upstream.
///
/// Beyond upstream, for every signer: the subject must read unambiguously (at most one common
/// name; string attributes only, see the `subject` module), DNS, email and URI SANs must be
/// printable ASCII (they are IA5Strings), and every usage must be one of the 23 known strings
/// (upstream fails such requests later, at signing, with the same message). Any other signer
/// name fails with [`FailureKind::Signer`].
///
/// Upstream's extra usage rule for ML-DSA keys is not implemented: ML-DSA keys fail every
/// `kubernetes.io/` signer here ([`FailureKind::Request`], see [`ml_dsa_for_kubernetes`]), so
/// the signer refuses them even when a person approves one by hand.
pub fn validate_for_signer<'a>(
    signer_name: &str,
    info: &'a CsrInfo,
    usages: &[String],
) -> Result<ValidatedRequest<'a>, ValidationFailure> {
    if let Some(message) = ml_dsa_for_kubernetes(signer_name, info) {
        return Err(ValidationFailure::new(FailureKind::Request, message));
    }
    let subject = SubjectName::from_der(&info.subject.der)
        .map_err(|m| ValidationFailure::new(FailureKind::Subject, m))?;
    let request = RequestView { info, subject: &subject, usages };
    match signer_name {
        SIGNER_KUBE_APISERVER_CLIENT_KUBELET => request.kubelet_client()?,
        SIGNER_KUBELET_SERVING => request.kubelet_serving()?,
        SIGNER_KUBE_APISERVER_CLIENT => request.kube_apiserver_client()?,
        SIGNER_LEGACY_UNKNOWN => {}
        #[cfg(feature = "ml-dsa")]
        kubecert_csr::SIGNER_KUBECERT_NODE_IDENTITY => request.node_identity()?,
        other => {
            return Err(ValidationFailure::new(
                FailureKind::Signer,
                format!("signer name {other:?} is not one this signer validates"),
            ));
        }
    }
    let texts = info.dns_names.iter().chain(&info.email_addresses).chain(&info.uris);
    if let Some(bad) = texts.into_iter().find(|t| !t.bytes().all(|b| b.is_ascii_graphic())) {
        return Err(ValidationFailure::new(
            FailureKind::SubjectAltNames,
            format!("subjectAltName {bad:?} is not printable ASCII"),
        ));
    }
    let usages = parse_usages(usages).map_err(|m| ValidationFailure::new(FailureKind::Usages, m))?;
    Ok(ValidatedRequest { info, subject, usages })
}

/// The upstream kubelet-client test (SPEC AP-4) on its own: what the approver's recognizers use.
pub(crate) fn validate_kubelet_client(info: &CsrInfo, usages: &[String]) -> Result<(), ValidationFailure> {
    let subject = SubjectName::from_der(&info.subject.der)
        .map_err(|m| ValidationFailure::new(FailureKind::Subject, m))?;
    RequestView { info, subject: &subject, usages }.kubelet_client()
}

/// The signer names Kubernetes reserves.
const KUBERNETES_SIGNER_PREFIX: &str = "kubernetes.io/";

/// Why an ML-DSA key is never certified by a `kubernetes.io/` signer, or `None` when `info`'s
/// key is not ML-DSA or the signer is kubecert's own: kube-apiserver, the kubelet and client-go
/// cannot verify ML-DSA certificates yet, so such a certificate would authenticate no one.
pub(crate) fn ml_dsa_for_kubernetes(signer_name: &str, info: &CsrInfo) -> Option<String> {
    match info.public_key.algorithm {
        kubecert_csr::PublicKeyAlgorithm::MlDsa { level }
            if signer_name.starts_with(KUBERNETES_SIGNER_PREFIX) =>
        {
            Some(format!(
                "ML-DSA-{level} keys are not certified by {signer_name}: the Kubernetes components \
                 (kube-apiserver, kubelet, client-go) cannot verify ML-DSA yet; request an ECDSA P-256 key"
            ))
        }
        _ => None,
    }
}

const KUBELET_CLIENT_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];
const KUBELET_SERVING_USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

struct RequestView<'r> {
    info: &'r CsrInfo,
    subject: &'r SubjectName,
    /// `spec.usages` as listed.
    usages: &'r [String],
}

fn fail(kind: FailureKind, message: &str) -> Result<(), ValidationFailure> {
    Err(ValidationFailure::new(kind, message))
}

impl RequestView<'_> {
    fn organization_is_system_nodes(&self) -> Result<(), ValidationFailure> {
        if self.subject.organizations() != [NODE_GROUP] {
            return fail(FailureKind::Subject, "subject organization is not system:nodes");
        }
        Ok(())
    }

    fn common_name_is_a_node(&self) -> Result<(), ValidationFailure> {
        if !self.subject.common_name().starts_with(NODE_USER_PREFIX) {
            return fail(FailureKind::Subject, "subject common name does not begin with system:node:");
        }
        Ok(())
    }

    fn no_email_or_uri(&self) -> Result<(), ValidationFailure> {
        if !self.info.email_addresses.is_empty() {
            return fail(FailureKind::SubjectAltNames, "Email subjectAltNames are not allowed");
        }
        if !self.info.uris.is_empty() {
            return fail(FailureKind::SubjectAltNames, "URI subjectAltNames are not allowed");
        }
        Ok(())
    }

    /// The usage set is `full` or `full` without key encipherment; the message lists `full`
    /// sorted, as Go's `sets.String.List()` prints it.
    fn usages_match(&self, full: [&str; 3]) -> Result<(), ValidationFailure> {
        let requested: BTreeSet<&str> = self.usages.iter().map(String::as_str).collect();
        let with: BTreeSet<&str> = full.into_iter().collect();
        let without: BTreeSet<&str> = full.into_iter().filter(|u| *u != "key encipherment").collect();
        if requested != with && requested != without {
            let listed: Vec<&str> = with.into_iter().collect();
            return Err(ValidationFailure::new(
                FailureKind::Usages,
                format!("usages did not match [{}]", listed.join(" ")),
            ));
        }
        Ok(())
    }

    fn kubelet_client(&self) -> Result<(), ValidationFailure> {
        self.organization_is_system_nodes()?;
        let info = self.info;
        if !info.dns_names.is_empty() {
            return fail(FailureKind::SubjectAltNames, "DNS subjectAltNames are not allowed");
        }
        if !info.email_addresses.is_empty() {
            return fail(FailureKind::SubjectAltNames, "Email subjectAltNames are not allowed");
        }
        if !info.ip_addresses.is_empty() {
            return fail(FailureKind::SubjectAltNames, "IP subjectAltNames are not allowed");
        }
        if !info.uris.is_empty() {
            return fail(FailureKind::SubjectAltNames, "URI subjectAltNames are not allowed");
        }
        self.common_name_is_a_node()?;
        self.usages_match(KUBELET_CLIENT_USAGES)
    }

    /// A kubelet client certificate's subject and usages, on an ML-DSA-65 key (which cannot
    /// encipher keys).
    #[cfg(feature = "ml-dsa")]
    fn node_identity(&self) -> Result<(), ValidationFailure> {
        if self.info.public_key.algorithm != (kubecert_csr::PublicKeyAlgorithm::MlDsa { level: 65 }) {
            return fail(FailureKind::Request, "kubecert.io/node-identity certifies ML-DSA-65 keys only");
        }
        self.kubelet_client()?;
        if self.usages.iter().any(|u| u == "key encipherment") {
            return fail(FailureKind::Usages, "ML-DSA keys cannot encipher keys: usage key encipherment");
        }
        Ok(())
    }

    fn kubelet_serving(&self) -> Result<(), ValidationFailure> {
        self.organization_is_system_nodes()?;
        if self.info.dns_names.is_empty() && self.info.ip_addresses.is_empty() {
            return fail(FailureKind::SubjectAltNames, "DNS or IP subjectAltName is required");
        }
        self.no_email_or_uri()?;
        self.usages_match(KUBELET_SERVING_USAGES)?;
        self.common_name_is_a_node()
    }

    /// Upstream walks `spec.usages` in order, so the first offending usage is the one named.
    fn kube_apiserver_client(&self) -> Result<(), ValidationFailure> {
        let mut has_client_auth = false;
        for usage in self.usages {
            match usage.as_str() {
                "digital signature" | "key encipherment" => {}
                "client auth" => has_client_auth = true,
                other => {
                    return Err(ValidationFailure::new(
                        FailureKind::Usages,
                        format!("invalid usage for client certificate: {other}"),
                    ));
                }
            }
        }
        if !has_client_auth {
            return fail(FailureKind::Usages, "missing required usage for client certificate: client auth");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kubecert_csr::KeyAlgorithm;

    use super::*;
    use crate::test_support::{node_client, request, strings};

    const CLIENT: &[&str] = &["digital signature", "client auth"];
    const SERVING: &[&str] = &["digital signature", "server auth"];

    fn check(signer: &str, info: &CsrInfo, usages: &[&str]) -> Result<(), (FailureKind, String)> {
        validate_for_signer(signer, info, &strings(usages))
            .map(|_| ())
            .map_err(|f| (f.kind(), f.message().to_owned()))
    }

    fn message(signer: &str, info: &CsrInfo, usages: &[&str]) -> String {
        check(signer, info, usages).unwrap_err().1
    }

    #[test]
    fn kubelet_client_accepts_both_usage_sets_in_any_order_and_with_repeats() {
        let info = node_client("a").info();
        let signer = SIGNER_KUBE_APISERVER_CLIENT_KUBELET;
        assert_eq!(check(signer, &info, CLIENT), Ok(()));
        assert_eq!(check(signer, &info, &["client auth", "key encipherment", "digital signature"]), Ok(()));
        assert_eq!(check(signer, &info, &["client auth", "digital signature", "client auth"]), Ok(()));
        let validated = validate_for_signer(signer, &info, &strings(CLIENT)).unwrap();
        assert_eq!(validated.common_name(), "system:node:a");
        assert_eq!(validated.usages(), [KeyUsage::DigitalSignature, KeyUsage::ClientAuth]);
    }

    #[test]
    fn kubelet_client_failures_in_upstream_order_with_upstream_messages() {
        let signer = SIGNER_KUBE_APISERVER_CLIENT_KUBELET;
        let everything = request(KeyAlgorithm::EcdsaP256, "bob", &["system:masters"])
            .dns(&["a.example"])
            .ips(&["10.0.0.1"])
            .emails(&["a@example.com"])
            .uris(&["spiffe://x/y"]);
        assert_eq!(
            message(signer, &everything.info(), &["server auth"]),
            "subject organization is not system:nodes"
        );
        let base = request(KeyAlgorithm::EcdsaP256, "bob", &["system:nodes"]);
        let cases = [
            (base.clone().dns(&["a"]).emails(&["e@x"]), "DNS subjectAltNames are not allowed"),
            (base.clone().emails(&["e@x"]).ips(&["10.0.0.1"]), "Email subjectAltNames are not allowed"),
            (base.clone().ips(&["10.0.0.1"]).uris(&["spiffe://x"]), "IP subjectAltNames are not allowed"),
            (base.clone().uris(&["spiffe://x"]), "URI subjectAltNames are not allowed"),
            (base.clone(), "subject common name does not begin with system:node:"),
        ];
        for (builder, expected) in cases {
            let (kind, got) = check(signer, &builder.info(), &["server auth"]).unwrap_err();
            assert_eq!(got, expected);
            assert_ne!(kind, FailureKind::Usages);
        }
        assert_eq!(
            check(signer, &node_client("a").info(), &["digital signature", "server auth"]),
            Err((
                FailureKind::Usages,
                "usages did not match [client auth digital signature key encipherment]".into()
            ))
        );
        assert_eq!(
            message(signer, &node_client("a").info(), &["digital signature", "client auth", "bogus"]),
            "usages did not match [client auth digital signature key encipherment]"
        );
        // Multiple organizations are not [system:nodes] either.
        let two = request(KeyAlgorithm::EcdsaP256, "system:node:a", &["system:nodes", "system:masters"]);
        assert_eq!(message(signer, &two.info(), CLIENT), "subject organization is not system:nodes");
    }

    #[test]
    fn kubelet_serving_rules_in_upstream_order() {
        let signer = SIGNER_KUBELET_SERVING;
        let good = node_client("a").dns(&["a.example"]).ips(&["10.0.0.1"]);
        assert_eq!(check(signer, &good.info(), SERVING), Ok(()));
        assert_eq!(
            check(signer, &good.info(), &["key encipherment", "server auth", "digital signature"]),
            Ok(())
        );
        assert_eq!(
            message(signer, &request(KeyAlgorithm::EcdsaP256, "x", &[]).info(), SERVING),
            "subject organization is not system:nodes"
        );
        assert_eq!(
            message(signer, &node_client("a").info(), SERVING),
            "DNS or IP subjectAltName is required"
        );
        assert_eq!(
            message(signer, &node_client("a").ips(&["10.0.0.1"]).emails(&["e@x"]).info(), SERVING),
            "Email subjectAltNames are not allowed"
        );
        assert_eq!(
            message(signer, &node_client("a").ips(&["10.0.0.1"]).uris(&["spiffe://x"]).info(), SERVING),
            "URI subjectAltNames are not allowed"
        );
        assert_eq!(
            message(signer, &good.info(), CLIENT),
            "usages did not match [digital signature key encipherment server auth]"
        );
        let not_node = request(KeyAlgorithm::EcdsaP256, "a", &["system:nodes"]).ips(&["10.0.0.1"]);
        assert_eq!(
            message(signer, &not_node.info(), SERVING),
            "subject common name does not begin with system:node:"
        );
    }

    #[test]
    fn kube_apiserver_client_names_the_first_bad_usage() {
        let signer = SIGNER_KUBE_APISERVER_CLIENT;
        let info = request(KeyAlgorithm::EcdsaP256, "alice", &["devs", "ops"]).info();
        assert_eq!(check(signer, &info, &["client auth"]), Ok(()));
        assert_eq!(check(signer, &info, &["key encipherment", "client auth", "digital signature"]), Ok(()));
        assert_eq!(
            message(signer, &info, &["client auth", "server auth", "cert sign"]),
            "invalid usage for client certificate: server auth"
        );
        assert_eq!(
            message(signer, &info, &["digital signature"]),
            "missing required usage for client certificate: client auth"
        );
        assert_eq!(message(signer, &info, &[]), "missing required usage for client certificate: client auth");
    }

    #[test]
    fn legacy_unknown_checks_only_what_issuing_needs() {
        let signer = SIGNER_LEGACY_UNKNOWN;
        let info =
            request(KeyAlgorithm::EcdsaP256, "anything", &["system:masters"]).hostile_extensions().info();
        assert_eq!(check(signer, &info, &["cert sign", "any"]), Ok(()));
        assert_eq!(
            check(signer, &info, &["cert sign", "Bogus", "x"]),
            Err((FailureKind::Usages, r#"unrecognized usage values: ["Bogus" "x"]"#.into()))
        );
    }

    #[test]
    fn sans_must_be_printable_ascii() {
        let mut info = node_client("a").info();
        info.dns_names = vec!["bücher.example".into()];
        assert_eq!(
            check(SIGNER_LEGACY_UNKNOWN, &info, CLIENT),
            Err((
                FailureKind::SubjectAltNames,
                r#"subjectAltName "bücher.example" is not printable ASCII"#.into()
            ))
        );
        info.dns_names = vec![];
        info.uris = vec!["spiffe://x/a b".into()];
        assert_eq!(check(SIGNER_LEGACY_UNKNOWN, &info, CLIENT).unwrap_err().0, FailureKind::SubjectAltNames);
    }

    #[test]
    fn unknown_signer_is_refused() {
        let info = node_client("a").info();
        assert_eq!(check("example.com/custom", &info, CLIENT).unwrap_err().0, FailureKind::Signer);
    }
}
