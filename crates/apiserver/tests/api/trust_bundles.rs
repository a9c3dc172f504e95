//! ClusterTrustBundles: every validation rule with upstream's code, reason and message, the
//! attest admission, both served versions of one object, the field selector and watch.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{Value, json};

use crate::common::{Mem, admin_user};
use kubecert_apiserver::{SIGNER_USER, UserInfo};

const V1: &str = "/apis/certificates.k8s.io/v1/clustertrustbundles";
const V1BETA1: &str = "/apis/certificates.k8s.io/v1beta1/clustertrustbundles";
const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// A self-signed certificate in PEM, a CA or not.
fn certificate(cn: &str, ca: bool) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params.self_signed(&key).unwrap().pem()
}

fn bundle(name: &str, signer: Option<&str>, pem: &str) -> Value {
    let mut b = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "ClusterTrustBundle",
        "metadata": {"name": name},
        "spec": {"trustBundle": pem},
    });
    if let Some(signer) = signer {
        b["spec"]["signerName"] = json!(signer);
    }
    b
}

fn signer_user() -> UserInfo {
    UserInfo::authenticated(SIGNER_USER, vec![])
}

/// `code`, `reason` and the whole `message` of a Status answer.
fn assert_status(resp: &(u16, Value), code: u16, reason: &str, message: &str) {
    assert_eq!(resp.0, code, "{}", resp.1);
    assert_eq!(resp.1["kind"], "Status", "{}", resp.1);
    assert_eq!(resp.1["reason"], reason, "{}", resp.1);
    assert_eq!(resp.1["message"], message, "{}", resp.1);
}

#[tokio::test]
async fn every_validation_rule_is_enforced_with_upstreams_message() {
    let mem = Mem::new();
    let (ca, other_ca, leaf) =
        (certificate("ca", true), certificate("other", true), certificate("leaf", false));
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    let with_headers = ca.replacen("-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n", 1);
    let huge = format!("{ca}{}", " ".repeat(1024 * 1024));
    let omitted = "Invalid value: \"<value omitted>\"";
    let cases: Vec<(&str, Value, String)> = vec![
        (
            "name required",
            bundle("", None, &ca),
            "metadata.name: Required value: name or generateName is required".into(),
        ),
        (
            "unlinked names have no colon",
            bundle("a:b", None, &ca),
            "metadata.name: Invalid value: \"a:b\": ClusterTrustBundle without signer name must not have \":\" in its name".into(),
        ),
        (
            "linked names start with the signer",
            bundle("roots", Some("example.com/x"), &ca),
            "metadata.name: Invalid value: \"roots\": ClusterTrustBundle for signerName example.com/x must be named with prefix example.com:x:".into(),
        ),
        (
            "the rest of a linked name is a subdomain",
            bundle("example.com:x:Roots", Some("example.com/x"), &ca),
            "metadata.name: Invalid value: \"example.com:x:Roots\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into(),
        ),
        (
            "signer names are domain/path",
            bundle("example.com:v1", Some("example.com"), &ca),
            "spec.signerName: Invalid value: \"example.com\": must be a fully qualified domain and path of the form 'example.com/signer-name'".into(),
        ),
        ("empty bundle", bundle("empty", None, ""), format!("spec.trustBundle: {omitted}: at least one trust anchor must be provided")),
        ("no PEM", bundle("text", None, "just text"), format!("spec.trustBundle: {omitted}: at least one trust anchor must be provided")),
        (
            "only CERTIFICATE blocks",
            bundle("key", None, &format!("{ca}{key}")),
            format!("spec.trustBundle: {omitted}: entry 1 has bad block type: PRIVATE KEY"),
        ),
        ("no PEM headers", bundle("headers", None, &with_headers), format!("spec.trustBundle: {omitted}: entry 0 has PEM block headers")),
        ("X.509", bundle("garbage", None, garbage), format!("spec.trustBundle: {omitted}: entry 0 does not parse as X.509")),
        ("CAs only", bundle("leaf", None, &format!("{ca}{leaf}")), format!("spec.trustBundle: {omitted}: entry 1 does not have the CA bit set")),
        (
            "no duplicates",
            bundle("dup", None, &format!("{ca}{other_ca}{ca}")),
            format!("spec.trustBundle: {omitted}: duplicate trust anchor (indices [0 2])"),
        ),
        ("at most 1 MiB", bundle("huge", None, &huge), "spec.trustBundle: Too long: may not be more than 1048576 bytes".into()),
    ];
    for (what, body, cause) in cases {
        let name = body["metadata"]["name"].as_str().unwrap().to_string();
        let resp = mem.json("POST", V1, &body).await;
        let message = format!("ClusterTrustBundle.certificates.k8s.io {name:?} is invalid: {cause}");
        assert_status(&resp, 422, "Invalid", &message);
        assert_eq!(resp.1["details"]["kind"], "ClusterTrustBundle", "{what}");
    }
    // Text between and after the blocks is fine, as upstream.
    let resp =
        mem.json("POST", V1, &bundle("ok", None, &format!("# roots\n{ca}\n-- \n{other_ca}trailer"))).await;
    assert_eq!(resp.0, 201, "{}", resp.1);
}

#[tokio::test]
async fn updates_keep_the_signer_and_need_a_resource_version() {
    let mem = Mem::new();
    let (ca, other) = (certificate("ca", true), certificate("other", true));
    let created = mem.json("POST", V1, &bundle("example.com:x:v1", Some("example.com/x"), &ca)).await;
    assert_eq!(created.0, 201, "{}", created.1);
    let item = format!("{V1}/example.com:x:v1");

    let mut moved = created.1.clone();
    moved["spec"]["signerName"] = json!("example.com/y");
    let resp = mem.json("PUT", &item, &moved).await;
    assert_eq!(resp.0, 422, "{}", resp.1);
    let causes = resp.1["details"]["causes"].as_array().unwrap();
    assert!(
        causes.iter().any(|c| c["field"] == "spec.signerName"
            && c["message"] == "Invalid value: \"example.com/y\": field is immutable"),
        "{}",
        resp.1
    );

    let mut unconditional = created.1.clone();
    unconditional["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    unconditional["spec"]["trustBundle"] = json!(other);
    let resp = mem.json("PUT", &item, &unconditional).await;
    assert_status(
        &resp,
        422,
        "Invalid",
        "clustertrustbundles.certificates.k8s.io \"example.com:x:v1\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update",
    );
    assert_eq!(resp.1["details"]["kind"], "clustertrustbundles");

    // A merge patch carries the stored version; an invalid new bundle is refused.
    let resp = mem.json("PATCH", &item, &json!({"spec": {"trustBundle": format!("{ca}{other}")}})).await;
    assert_eq!(resp.0, 200, "{}", resp.1);
    let resp = mem.json("PATCH", &item, &json!({"spec": {"trustBundle": "nothing"}})).await;
    assert_eq!(resp.0, 422, "{}", resp.1);
}

#[tokio::test]
async fn signer_linked_bundles_need_attest() {
    let mem = Mem::new();
    let ca = certificate("ca", true);
    let node = UserInfo::authenticated("system:node:n1", vec!["system:nodes".into()]);
    let signer = signer_user();

    // The embedded signer attests for the signers it issues for, and for no other.
    let kubelet = bundle("kubernetes.io:kube-apiserver-client-kubelet:live", Some(KUBELET_SIGNER), &ca);
    let resp = mem.json_as(&signer, "POST", V1, &kubelet).await;
    assert_eq!(resp.0, 201, "{}", resp.1);
    let resp =
        mem.json_as(&signer, "POST", V1, &bundle("example.com:x:v1", Some("example.com/x"), &ca)).await;
    assert_status(
        &resp,
        403,
        "Forbidden",
        "clustertrustbundles.certificates.k8s.io \"example.com:x:v1\" is forbidden: user not permitted to attest for signerName \"example.com/x\"",
    );
    // Unlinked bundles need no attest.
    let resp = mem.json_as(&signer, "POST", V1, &bundle("roots", None, &ca)).await;
    assert_eq!(resp.0, 201, "{}", resp.1);
    // Nodes read bundles but may not write them (RBAC, before admission).
    let resp = mem.json_as(&node, "POST", V1, &bundle("mine", None, &ca)).await;
    assert_eq!((resp.0, resp.1["reason"].as_str()), (403, Some("Forbidden")), "{}", resp.1);
    assert_eq!(mem.send_as(&node, "GET", V1, &[], vec![]).await.0, 200);

    // An admin bundle of another signer: the signer may change its finalizers only.
    let created = mem.json("POST", V1, &bundle("example.com:x:v1", Some("example.com/x"), &ca)).await;
    assert_eq!(created.0, 201, "{}", created.1);
    let item = format!("{V1}/example.com:x:v1");
    let resp = mem
        .json_as(&signer, "PATCH", &item, &json!({"metadata": {"finalizers": ["kubecert.io/keep"]}}))
        .await;
    assert_eq!(resp.0, 200, "{}", resp.1);
    let resp = mem.json_as(&signer, "PATCH", &item, &json!({"metadata": {"labels": {"a": "b"}}})).await;
    assert_eq!(
        (resp.0, resp.1["message"].as_str()),
        (
            403,
            Some(
                "clustertrustbundles.certificates.k8s.io \"example.com:x:v1\" is forbidden: user not permitted to attest for signerName \"example.com/x\""
            )
        )
    );
    // Deleting needs no attest.
    let resp = mem.send_as(&signer, "DELETE", &item, &[], vec![]).await;
    assert_eq!(resp.0, 200, "{}", resp.1);
}

#[tokio::test]
async fn one_object_in_both_versions_with_field_selector_and_watch() {
    let mem = Mem::new();
    let ca = certificate("ca", true);
    let start = mem.get(V1).await.1["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let linked = bundle("kubernetes.io:kube-apiserver-client-kubelet:a", Some(KUBELET_SIGNER), &ca);
    assert_eq!(mem.json("POST", V1, &linked).await.0, 201);
    let mut beta = bundle("roots", None, &ca);
    beta["apiVersion"] = json!("certificates.k8s.io/v1beta1");
    let created = mem.json("POST", V1BETA1, &beta).await;
    assert_eq!(created.0, 201, "{}", created.1);
    assert_eq!(created.1["apiVersion"], "certificates.k8s.io/v1beta1");

    let (code, got) = mem.get(&format!("{V1}/roots")).await;
    assert_eq!(
        (code, &got["apiVersion"], &got["kind"]),
        (200, &json!("certificates.k8s.io/v1"), &json!("ClusterTrustBundle"))
    );
    assert_eq!(got["spec"]["trustBundle"], ca);
    let list = mem.get(V1BETA1).await.1;
    assert_eq!(
        (&list["kind"], &list["apiVersion"]),
        (&json!("ClusterTrustBundleList"), &json!("certificates.k8s.io/v1beta1"))
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    let selected = mem.get(&format!("{V1}?fieldSelector=spec.signerName%3D{KUBELET_SIGNER}")).await.1;
    let names: Vec<&str> = selected["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kubernetes.io:kube-apiserver-client-kubelet:a"]);
    let unlinked = mem.get(&format!("{V1}?fieldSelector=spec.signerName%3D")).await.1;
    assert_eq!(unlinked["items"][0]["metadata"]["name"], "roots");
    let bad = mem.get(&format!("{V1}?fieldSelector=spec.trustBundle%3Dx")).await;
    assert_status(&bad, 400, "BadRequest", "field label not supported: spec.trustBundle");

    // The watch shows each event in the version asked for, filtered by the selector.
    let (code, body) = mem
        .get(&format!("{V1BETA1}?watch=true&resourceVersion={start}&fieldSelector=spec.signerName%3D{KUBELET_SIGNER}&timeoutSeconds=1"))
        .await;
    assert_eq!(code, 200);
    let text = match body {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "{text}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["apiVersion"], "certificates.k8s.io/v1beta1");
    assert_eq!(events[0]["object"]["metadata"]["name"], "kubernetes.io:kube-apiserver-client-kubelet:a");

    // Table: NAME and SIGNERNAME, as kube-apiserver prints them.
    let table = mem
        .send_as(
            &admin_user(),
            "GET",
            V1,
            &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
            vec![],
        )
        .await
        .1;
    let columns: Vec<&str> =
        table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Name", "SignerName"]);
    assert_eq!(table["rows"][1]["cells"], json!(["roots", "<none>"]));
}
