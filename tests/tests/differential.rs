//! Differential conformance: one list of API requests, sent in order to the real kube-apiserver
//! (configured as kubeadm leaves it, see `kubecert_tests::kubernetes::Cluster`) and to the
//! embedded API of `signer serve`, each with identities of its own CA. The answers are
//! normalised (uids, timestamps, resourceVersion values, generated names, credential ids, table
//! ages) and compared: status code, media type, and every field of the body.
//!
//! A request either answers the same on both servers, or its difference is pinned: the test
//! asserts the exact lines of the difference, and `docs/compatibility.md` says why kubecert keeps
//! it (each pin names its section there). Requests whose difference was fixed in the embedded
//! API say so with `fixed`, so the counts printed at the end tell what the suite found.
//!
//! Requests go through `curl` (loopback only). Without Go (or kubectl) the test prints a notice
//! and checks nothing, unless `KUBECERT_REQUIRE_KUBERNETES=1` (`KUBECERT_REQUIRE_KUBECTL=1`) makes
//! that a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kubecert_tests::kubernetes::{
    BOOTSTRAP_GROUP, Cluster, ClusterOptions, go_or_skip, write_client_certificate,
};
use kubecert_tests::{SignerServe, TempDir, kubectl, run_ok, workspace_root};
use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::{Value, json};

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
const BUNDLES: &str = "/apis/certificates.k8s.io/v1/clustertrustbundles";
const BUNDLES_V1BETA1: &str = "/apis/certificates.k8s.io/v1beta1/clustertrustbundles";
/// The name prefix of bundles of [`SIGNER`].
const SIGNER_BUNDLE: &str = "example.com:differential:";
const SERVING_SIGNER: &str = "kubernetes.io/kube-apiserver-serving";
const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";
const NODE_LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
const SAR: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
const SIGNER: &str = "example.com/differential";
const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const NODE: &str = "system:node:diff-node";
/// The signer names whose approval policy `signer serve` has.
const POLICY_SIGNERS: [&str; 3] =
    [KUBELET_CLIENT, "kubernetes.io/kubelet-serving", "kubernetes.io/kube-apiserver-client"];

/// The bootstrap tokens: valid, expired, and one whose Secret does not allow authentication.
const TOKEN: &str = "abcdef.0123456789abcdef";
const EXPIRED_TOKEN: &str = "expire.0123456789abcdef";
const NO_USAGE_TOKEN: &str = "nousag.0123456789abcdef";
const WRONG_SECRET_TOKEN: &str = "abcdef.ffffffffffffffff";

/// Who sends a request. Certificates are issued per server by that server's CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    /// `kubernetes-admin`, group `system:masters`.
    Admin,
    /// `system:node:diff-node`, group `system:nodes`.
    Node,
    /// The user upstream's certificate controllers run as (its default RBAC role).
    Controller,
    /// kube-controller-manager's publisher of the kube-apiserver serving CA bundle: may write
    /// ClusterTrustBundles and attest for `kubernetes.io/kube-apiserver-serving` only.
    Publisher,
    /// An authenticated user without any binding.
    Nobody,
    /// `system:node:diff-node` with a certificate from the CA that expired a day ago.
    ExpiredNode,
    /// Bootstrap tokens.
    Token(&'static str),
    /// No credentials.
    Anonymous,
}

const CERTIFICATE_USERS: [(Who, &str, &str, &[&str]); 6] = [
    (Who::Admin, "admin", "kubernetes-admin", &["system:masters"]),
    (Who::Node, "node", NODE, &["system:nodes"]),
    (Who::ExpiredNode, "expired-node", NODE, &["system:nodes"]),
    (Who::Controller, "controller", "system:serviceaccount:kube-system:certificate-controller", &[]),
    (Who::Nobody, "nobody", "jane", &[]),
    (
        Who::Publisher,
        "publisher",
        "system:serviceaccount:kube-system:kube-apiserver-serving-clustertrustbundle-publisher",
        &[],
    ),
];

/// A request body.
enum Payload {
    Json(Value),
    Raw { content_type: &'static str, bytes: Vec<u8> },
}

/// How the two answers relate.
enum Expect {
    /// Identical after normalisation.
    Same,
    /// Identical after a fix of the embedded API (what the fix was).
    Fixed(&'static str),
    /// A difference kept on purpose: the section of docs/compatibility.md, and the exact lines
    /// of the difference (real first, embedded second).
    Pinned(&'static str, &'static [&'static str]),
}

/// One entry of the list. `$name` in the path or in a body string is replaced by the value
/// captured under that name on the same server.
struct Request {
    name: &'static str,
    who: Who,
    method: &'static str,
    path: String,
    accept: Option<&'static str>,
    body: Option<Payload>,
    capture: Vec<(&'static str, &'static str)>,
    view: Option<fn(Value) -> Value>,
    expect: Expect,
}

fn request(name: &'static str, who: Who, method: &'static str, path: impl Into<String>) -> Request {
    Request {
        name,
        who,
        method,
        path: path.into(),
        accept: None,
        body: None,
        capture: vec![],
        view: None,
        expect: Expect::Same,
    }
}

fn get(name: &'static str, who: Who, path: impl Into<String>) -> Request {
    request(name, who, "GET", path)
}

fn send(name: &'static str, who: Who, method: &'static str, path: impl Into<String>, body: Value) -> Request {
    request(name, who, method, path).body(Payload::Json(body))
}

impl Request {
    fn body(mut self, body: Payload) -> Self {
        self.body = Some(body);
        self
    }
    fn accept(mut self, accept: &'static str) -> Self {
        self.accept = Some(accept);
        self
    }
    /// Keeps the value at JSON pointer `pointer` of the answer as `$var`.
    fn capture(mut self, var: &'static str, pointer: &'static str) -> Self {
        self.capture.push((var, pointer));
        self
    }
    /// Compares only what `view` keeps of both answers (the part the embedded API serves).
    fn view(mut self, view: fn(Value) -> Value) -> Self {
        self.view = Some(view);
        self
    }
    /// Asks for a Table, compared without the column descriptions (compared once, by the
    /// request "table: column descriptions").
    fn table(self) -> Self {
        self.accept(TABLE).view(without_descriptions)
    }
    fn fixed(mut self, what: &'static str) -> Self {
        self.expect = Expect::Fixed(what);
        self
    }
    fn pinned(mut self, section: &'static str, lines: &'static [&'static str]) -> Self {
        self.expect = Expect::Pinned(section, lines);
        self
    }
}

/// PEM-encodes DER.
fn pem(label: &str, der: &[u8]) -> String {
    let text = B64.encode(der);
    let lines: Vec<&str> =
        text.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A PKCS#10 request (PEM) for `cn` and `orgs`, with a new P-256 key.
fn csr_pem(cn: &str, orgs: &[&str]) -> String {
    let key = KeyPair::generate().expect("generate a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CSR parameters");
    params.distinguished_name.push(DnType::CommonName, cn);
    for org in orgs {
        params.distinguished_name.push(DnType::OrganizationName, *org);
    }
    params.serialize_request(&key).expect("serialize the CSR").pem().expect("PEM")
}

/// The materials every request uses, made once so that both servers get the same bytes.
struct Materials {
    /// `spec.request` (base64 of the PEM) of a node client request.
    node_request: String,
    /// One whose subject is in `system:masters`.
    masters_request: String,
    /// The node request with a broken signature.
    tampered_request: String,
    /// A certificate (PEM, base64) to put in `status.certificate`.
    certificate: String,
    /// Another one.
    other_certificate: String,
    /// CA certificates (PEM) for trust bundles.
    ca: String,
    other_ca: String,
    /// A certificate that is no CA (PEM).
    leaf: String,
}

impl Materials {
    fn new() -> Self {
        let node = csr_pem(NODE, &["system:nodes"]);
        let mut der = B64
            .decode(node.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .expect("PEM body");
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let certificate_pem = |cn: &str, ca: bool| {
            let key = KeyPair::generate().expect("generate a key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("certificate parameters");
            params.distinguished_name.push(DnType::CommonName, cn);
            if ca {
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            }
            params.self_signed(&key).expect("self-sign").pem()
        };
        let certificate = |cn: &str| B64.encode(certificate_pem(cn, false));
        Self {
            node_request: B64.encode(&node),
            masters_request: B64.encode(csr_pem("someone", &["system:masters"])),
            tampered_request: B64.encode(pem("CERTIFICATE REQUEST", &der)),
            certificate: certificate("issued"),
            other_certificate: certificate("other"),
            ca: certificate_pem("ca", true),
            other_ca: certificate_pem("other ca", true),
            leaf: certificate_pem("leaf", false),
        }
    }

    /// Each string with the name it is shown as after normalisation.
    fn known(&self) -> Vec<(String, &'static str)> {
        vec![
            (self.node_request.clone(), "<node request>"),
            (self.masters_request.clone(), "<masters request>"),
            (self.tampered_request.clone(), "<tampered request>"),
            (self.certificate.clone(), "<certificate>"),
            (self.other_certificate.clone(), "<other certificate>"),
            (self.ca.clone(), "<ca>"),
            (self.other_ca.clone(), "<other ca>"),
            (self.leaf.clone(), "<leaf>"),
        ]
    }
}

/// A CertificateSigningRequest body.
fn csr(name: &str, signer: &str, usages: &[&str], request: &str) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": request, "signerName": signer, "usages": usages},
    })
}

/// `value` with `key` set to `v` in the object at JSON pointer `parent`.
fn with(mut value: Value, parent: &str, key: &str, v: Value) -> Value {
    value.pointer_mut(parent).expect("parent exists")[key] = v;
    value
}

fn condition(kind: &str, status: &str, reason: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": format!("{reason} by the suite")})
}

/// A bootstrap-token Secret (as `kubeadm token create` writes it), `data` as plain strings.
fn token_secret(id: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(k, v)| ((*k).to_owned(), json!(B64.encode(v)))).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": data,
    })
}

fn lease(namespace: &str, name: &str, holder: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 40, "renewTime": "2026-01-01T00:00:00.000000Z"},
    })
}

/// A ClusterTrustBundle (v1) body; `signer` may be empty.
fn bundle(name: &str, signer: &str, pem: &str) -> Value {
    let mut body = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "ClusterTrustBundle",
        "metadata": {"name": name},
        "spec": {"trustBundle": pem},
    });
    if !signer.is_empty() {
        body["spec"]["signerName"] = json!(signer);
    }
    body
}

fn sar(user: &str, groups: &[&str], attributes: Value) -> Value {
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": attributes},
    })
}

fn self_subject_review() -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
}

/// Protobuf wire format, just enough for a CertificateSigningRequest in the `k8s\0` envelope.
mod proto {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field.
    pub fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        varint(number << 3 | 2, &mut out);
        varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    /// `runtime.Unknown{typeMeta, raw}` after the magic bytes.
    pub fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        [b"k8s\0".to_vec(), field(1, &type_meta), field(2, raw)].concat()
    }
}

/// A CertificateSigningRequest as protobuf (metadata.name; spec request, usages, signerName).
fn csr_protobuf(name: &str, request_pem: &[u8], usages: &[&str], signer: &str) -> Vec<u8> {
    let meta = proto::field(1, name.as_bytes());
    let mut spec = proto::field(1, request_pem);
    for usage in usages {
        spec.extend(proto::field(5, usage.as_bytes()));
    }
    spec.extend(proto::field(7, signer.as_bytes()));
    let raw = [proto::field(1, &meta), proto::field(2, &spec)].concat();
    proto::envelope("certificates.k8s.io/v1", "CertificateSigningRequest", &raw)
}

/// Keeps the entries of `list` (at `pointer`) whose `key` is one of `keep`.
fn keep_entries(mut value: Value, pointer: &str, key: &str, keep: &[&str]) -> Value {
    if let Some(Value::Array(items)) = value.pointer_mut(pointer) {
        items.retain(|item| item[key].as_str().is_some_and(|k| keep.contains(&k)));
    }
    value
}

/// Keeps the list's (or Table's) bundles that this test created: `signer serve` publishes
/// the trust bundles of its own CA generations as well, which kube-apiserver has no
/// counterpart of.
fn only_test_bundles(mut value: Value) -> Value {
    for (list, name) in [("/items", "/metadata/name"), ("/rows", "/object/metadata/name")] {
        if let Some(Value::Array(items)) = value.pointer_mut(list) {
            items.retain(|item| {
                item.pointer(name).and_then(Value::as_str).is_some_and(|n| n.contains("diff"))
            });
        }
    }
    value
}

/// Drops the descriptions of Table columns (also inside watch events).
fn without_descriptions(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            if let Some(Value::Array(columns)) = map.get_mut("columnDefinitions") {
                columns.iter_mut().filter_map(Value::as_object_mut).for_each(|c| {
                    c.remove("description");
                });
            }
            for v in map.values_mut() {
                *v = without_descriptions(v.take());
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| *v = without_descriptions(v.take())),
        _ => {}
    }
    value
}

/// The groups the embedded API serves.
const SERVED_GROUPS: [&str; 4] =
    ["certificates.k8s.io", "coordination.k8s.io", "authentication.k8s.io", "authorization.k8s.io"];

/// Object keys of `value` at `pointer`, sorted (for documents too large to compare whole).
fn keys_at(value: &Value, pointer: &str) -> Value {
    let keys: Vec<&String> =
        value.pointer(pointer).and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k).collect();
    json!(keys)
}

/// The whole list, in order.
fn requests(m: &Materials) -> Vec<Request> {
    let node_csr =
        |name: &str, signer: &str| csr(name, signer, &["digital signature", "client auth"], &m.node_request);
    let far = "2099-01-01T00:00:00Z";
    let approval = |name: &str, rv: &str, conditions: Value| {
        let mut body = node_csr(name, SIGNER);
        body["metadata"]["resourceVersion"] = json!(rv);
        body["status"] = json!({"conditions": conditions});
        body
    };
    let status = |name: &str, rv: &str, certificate: &str| {
        let mut body = node_csr(name, SIGNER);
        body["metadata"]["resourceVersion"] = json!(rv);
        body["status"] =
            json!({"conditions": [condition("Approved", "True", "Approve")], "certificate": certificate});
        body
    };
    let approved = || json!([condition("Approved", "True", "Approve")]);
    let csr_path = |name: &str| format!("{CSRS}/{name}");
    let node_attributes = json!({"group": "certificates.k8s.io", "resource": "certificatesigningrequests", "verb": "create", "subresource": "selfnodeclient"});
    vec![
        // Bootstrap-token Secrets, then token authentication (AU-1).
        send("secret: valid token", Who::Admin, "POST", SECRETS, token_secret("abcdef", &[("token-id", "abcdef"), ("token-secret", "0123456789abcdef"), ("usage-bootstrap-authentication", "true"), ("auth-extra-groups", BOOTSTRAP_GROUP), ("expiration", far)])),
        send("secret: expired token", Who::Admin, "POST", SECRETS, token_secret("expire", &[("token-id", "expire"), ("token-secret", "0123456789abcdef"), ("usage-bootstrap-authentication", "true"), ("expiration", "2020-01-01T00:00:00Z")])),
        send("secret: token without authentication usage", Who::Admin, "POST", SECRETS, token_secret("nousag", &[("token-id", "nousag"), ("token-secret", "0123456789abcdef"), ("usage-bootstrap-signing", "true")])),
        send("secret: the same name again", Who::Admin, "POST", SECRETS, token_secret("abcdef", &[("token-id", "abcdef")])).fixed("Status details leave out an empty group and name"),
        get("secret: list by type", Who::Admin, format!("{SECRETS}?fieldSelector=type%3Dbootstrap.kubernetes.io%2Ftoken")).fixed("list items carry no apiVersion and kind"),
        get("secret: get as Table", Who::Admin, format!("{SECRETS}/bootstrap-token-abcdef")).table(),
        get("token: valid, list CSRs", Who::Token(TOKEN), CSRS),
        get("token: expired", Who::Token(EXPIRED_TOKEN), CSRS),
        get("certificate: expired, from the CA", Who::ExpiredNode, CSRS),
        get("token: without usage-bootstrap-authentication", Who::Token(NO_USAGE_TOKEN), CSRS),
        get("token: wrong secret", Who::Token(WRONG_SECRET_TOKEN), CSRS),
        get("token: not a bootstrap token", Who::Token("not-a-token"), CSRS),
        send("token: SelfSubjectReview", Who::Token(TOKEN), "POST", WHOAMI, self_subject_review()),
        get("token: secrets are forbidden", Who::Token(TOKEN), SECRETS).fixed("Status details leave out an empty group and name"),
        request("token: delete is forbidden", Who::Token(TOKEN), "DELETE", csr_path("missing")),
        // No credentials.
        get("anonymous: /healthz", Who::Anonymous, "/healthz"),
        get("anonymous: /readyz", Who::Anonymous, "/readyz"),
        get("anonymous: /livez", Who::Anonymous, "/livez"),
        get("anonymous: /version", Who::Anonymous, "/version").view(|v| keys_at(&v, "")).pinned("/version", &[r##": 13 items | 9 items"##, r##"/2: "emulationMajor" | "gitCommit""##, r##"/3: "emulationMinor" | "gitTreeState""##, r##"/4: "gitCommit" | "gitVersion""##, r##"/5: "gitTreeState" | "goVersion""##, r##"/6: "gitVersion" | "major""##, r##"/7: "goVersion" | "minor""##, r##"/8: "major" | "platform""##]),
        get("anonymous: list CSRs", Who::Anonymous, CSRS).fixed("no credentials is system:anonymous, denied by RBAC with 403"),
        get("anonymous: discovery", Who::Anonymous, "/apis").fixed("no credentials is system:anonymous; path denials carry empty details"),
        send("anonymous: SelfSubjectReview", Who::Anonymous, "POST", WHOAMI, self_subject_review()).fixed("no credentials is system:anonymous, denied by RBAC with 403"),
        // CSR create, valid (A-1).
        send("csr: bootstrap token creates a node client request", Who::Token(TOKEN), "POST", CSRS, node_csr("node-csr-boot", KUBELET_CLIENT)),
        send("csr: node creates its own", Who::Node, "POST", CSRS, node_csr("diff-node-own", KUBELET_CLIENT)),
        send("csr: admin, labels and expirationSeconds", Who::Admin, "POST", CSRS, with(with(node_csr("diff-a", SIGNER), "/metadata", "labels", json!({"team": "a"})), "/spec", "expirationSeconds", json!(3600))).capture("rv_created", "/metadata/resourceVersion"),
        send("csr: generateName", Who::Admin, "POST", CSRS, json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"generateName": "gen-", "labels": {"team": "b"}}, "spec": {"request": m.node_request, "signerName": SIGNER, "usages": ["client auth"]}})),
        request("csr: protobuf body", Who::Admin, "POST", CSRS).body(Payload::Raw { content_type: PROTOBUF, bytes: csr_protobuf("diff-proto", &B64.decode(&m.node_request).expect("base64"), &["digital signature", "client auth"], SIGNER) }),
        send("csr: name with upper case and underscore (V-1)", Who::Admin, "POST", CSRS, node_csr("Node-CSR_Upper", SIGNER)),
        send("csr: status on create is dropped (A-1)", Who::Admin, "POST", CSRS, with(node_csr("diff-preset", SIGNER), "", "status", json!({"conditions": approved(), "certificate": m.certificate}))),
        send("csr: namespace on a cluster-scoped object", Who::Admin, "POST", CSRS, with(node_csr("diff-namespaced", SIGNER), "/metadata", "namespace", json!("default"))),
        send("csr: the same name again", Who::Admin, "POST", CSRS, node_csr("diff-a", SIGNER)),
        // CSR create, invalid (V-*, AD-3).
        send("csr: no name (V-1)", Who::Admin, "POST", CSRS, node_csr("", SIGNER)).fixed("Status details leave out an empty name"),
        send("csr: request is not PEM (V-2)", Who::Admin, "POST", CSRS, csr("v2-pem", SIGNER, &["client auth"], &B64.encode("hello"))).fixed("V-2 shows the request bytes and upstream's PEM sentence"),
        send("csr: request signature broken (V-2)", Who::Admin, "POST", CSRS, csr("v2-sig", SIGNER, &["client auth"], &m.tampered_request)).pinned("Signature errors", &[r##"/details/causes/0/message: "Invalid value: \"<tampered request>\": x509: ECDSA verification failure" | "Invalid value: \"<tampered request>\": certificate request: signature does not verify: signature verification error""##, r##"/message: "CertificateSigningRequest.certificates.k8s.io \"v2-sig\" is invalid: spec.request: Invalid value: \"<tampered request>\": x509: ECDSA verification failure" | "CertificateSigningRequest.certificates.k8s.io \"v2-sig\" is invalid: spec.request: Invalid value: \"<tampered request>\": certificate request: signature does not verify: signature verification error""##]),
        send("csr: no usages (V-3)", Who::Admin, "POST", CSRS, csr("v3-empty", SIGNER, &[], &m.node_request)),
        send("csr: unknown usage (V-3)", Who::Admin, "POST", CSRS, csr("v3-unknown", SIGNER, &["client auth", "flying"], &m.node_request)),
        send("csr: duplicate usage (V-3)", Who::Admin, "POST", CSRS, csr("v3-dup", SIGNER, &["client auth", "client auth"], &m.node_request)),
        send("csr: no signerName (V-4)", Who::Admin, "POST", CSRS, node_csr("v4-empty", "")),
        send("csr: legacy signer (V-4)", Who::Admin, "POST", CSRS, node_csr("v4-legacy", "kubernetes.io/legacy-unknown")),
        send("csr: signerName without a path (V-4)", Who::Admin, "POST", CSRS, node_csr("v4-noslash", "example.com")),
        send("csr: signerName with two slashes (V-4)", Who::Admin, "POST", CSRS, node_csr("v4-slashes", "example.com/a/b")),
        send("csr: signerName domain of one label (V-4)", Who::Admin, "POST", CSRS, node_csr("v4-label", "example/a")),
        send("csr: expirationSeconds below 600 (V-5)", Who::Admin, "POST", CSRS, with(node_csr("v5", SIGNER), "/spec", "expirationSeconds", json!(599))),
        send("csr: system:masters with kube-apiserver-client (AD-3)", Who::Admin, "POST", CSRS, csr("ad3", "kubernetes.io/kube-apiserver-client", &["client auth"], &m.masters_request)),
        send("csr: unknown field, strict", Who::Admin, "POST", format!("{CSRS}?fieldValidation=Strict"), with(node_csr("strict", SIGNER), "/spec", "color", json!("blue"))).fixed("strict decoding errors name the kind and version"),
        request("csr: malformed JSON", Who::Admin, "POST", CSRS).body(Payload::Raw { content_type: "application/json", bytes: b"{\"kind\":".to_vec() }).pinned("Decoding errors", &[r##"/message: "the object provided is unrecognized (must be of type CertificateSigningRequest): couldn't get version/kind; json parse error: unexpected end of JSON input ({\"kind\":)" | "couldn't get version/kind; json parse error: EOF while parsing a value at line 1 column 8""##]),
        send("csr: another kind in the body", Who::Admin, "POST", CSRS, token_secret("kindxx", &[])).pinned("Decoding errors", &[r##"/message: "Secret in version \"v1\" cannot be handled as a CertificateSigningRequest: converting (v1.Secret) to (certificates.CertificateSigningRequest): unknown conversion" | "the API version in the data (v1) does not match the expected API version (certificates.k8s.io/v1) or the kind (Secret) is not CertificateSigningRequest""##]),
        request("csr: protobuf garbage", Who::Admin, "POST", CSRS).body(Payload::Raw { content_type: PROTOBUF, bytes: b"k8s\0\x0a\xff".to_vec() }).pinned("Decoding errors", &[r##"/message: "the object provided is unrecognized (must be of type CertificateSigningRequest): unexpected EOF (6b3873000aff)" | "unable to decode protobuf body: truncated varint""##]),
        send("csr: nobody may not create", Who::Nobody, "POST", CSRS, node_csr("nobody", SIGNER)).fixed("Status details leave out an empty name"),
        send("csr: AD-3 with generateName (AD-4)", Who::Admin, "POST", CSRS, json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"generateName": "gen-"}, "spec": {"request": m.masters_request, "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"]}})),
        send("csr: dry run", Who::Admin, "POST", format!("{CSRS}?dryRun=All"), node_csr("diff-dry", SIGNER)).fixed("a dry-run create answers without a resourceVersion"),
        get("csr: a dry run stores nothing", Who::Admin, format!("{CSRS}/diff-dry")),
        // Get and list, selectors, paging, Table.
        get("get", Who::Admin, csr_path("diff-a")).capture("rv_a", "/metadata/resourceVersion").capture("uid_a", "/metadata/uid"),
        get("get: not found", Who::Admin, csr_path("missing")),
        get("get: as Table", Who::Admin, csr_path("diff-a")).table(),
        get("list: field selector metadata.name", Who::Admin, format!("{CSRS}?fieldSelector=metadata.name%3Ddiff-a")).fixed("list items carry no apiVersion and kind"),
        get("list: field selector spec.signerName", Who::Admin, format!("{CSRS}?fieldSelector=spec.signerName%3Dexample.com%2Fdifferential")).fixed("list items carry no apiVersion and kind"),
        get("list: field selector not supported", Who::Admin, format!("{CSRS}?fieldSelector=spec.username%3Dx")),
        get("list: label selector", Who::Admin, format!("{CSRS}?labelSelector=team%3Da")).fixed("list items carry no apiVersion and kind"),
        get("list: label selector, set", Who::Admin, format!("{CSRS}?labelSelector=team%20in%20(a%2Cb)")).fixed("list items carry no apiVersion and kind"),
        get("list: label selector malformed", Who::Admin, format!("{CSRS}?labelSelector=team%3D%3D%3D")).fixed("an operator where a label value must be is a 400"),
        get("list: first page", Who::Admin, format!("{CSRS}?limit=3")).capture("continue", "/metadata/continue").fixed("list items carry no apiVersion and kind"),
        get("list: next page", Who::Admin, format!("{CSRS}?limit=3&continue=$continue")).fixed("list items carry no apiVersion and kind"),
        get("list: as Table", Who::Admin, CSRS).table(),
        get("table: column descriptions", Who::Admin, CSRS).accept(TABLE).pinned("Table column descriptions", &[r##"/columnDefinitions/0/description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primari… | "Name of the object, unique within its scope.""##, r##"/columnDefinitions/1/description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this… | "Time since the object was created.""##, r##"/columnDefinitions/2/description: "Requested signer for the request. It is a qualified name in the form: `scope-hostname.io/name`. If empty, it will be defaulted:\n 1. If it's a kubelet client certificate, it is assigned\n    \"kubern… | "The signer that is asked to sign the request.""##, r##"/columnDefinitions/3/description: "Base64-encoded PKCS#10 CSR data" | "The user that created the request.""##, r##"/columnDefinitions/4/description: "expirationSeconds is the requested duration of validity of the issued certificate. The certificate signer may issue a certificate with a different validity duration so a client must check the delta b… | "The requested validity of the certificate.""##, r##"/columnDefinitions/5/description: "Conditions applied to the request, such as approval or denial." | "Approval, failure and issuance state.""##]),
        get("list: node", Who::Node, format!("{CSRS}?fieldSelector=metadata.name%3Ddiff-node-own")).fixed("list items carry no apiVersion and kind"),
        get("list: nobody", Who::Nobody, CSRS).fixed("Status details leave out an empty name"),
        get("get: protobuf only", Who::Admin, csr_path("diff-a")).accept(PROTOBUF).pinned("Protobuf responses", &[r##"code: 200 | 406"##, r##"content-type: application/vnd.kubernetes.protobuf | application/json"##, r##": "<protobuf, magic true>" | {"apiVersion":"v1","code":406,"kind":"Status","message":"only the following media types are accepted: application/json, application/yaml","metadata":{},"reason":"NotAcceptable","status":"Failure"}"##]),
        // /approval and /status (A-3…A-5, V-6…V-12, AD-1, AD-2).
        send("approval: approve", Who::Admin, "PUT", format!("{}/approval", csr_path("diff-a")), approval("diff-a", "$rv_a", approved())).capture("rv_approved", "/metadata/resourceVersion"),
        send("approval: stale resourceVersion", Who::Admin, "PUT", format!("{}/approval", csr_path("diff-a")), approval("diff-a", "$rv_a", approved())),
        send("approval: approve twice (V-6)", Who::Admin, "PUT", format!("{}/approval", csr_path("diff-a")), approval("diff-a", "$rv_approved", json!([condition("Approved", "True", "Approve"), condition("Approved", "True", "Again")]))),
        send("approval: deny an approved request (V-6)", Who::Admin, "PUT", format!("{}/approval", csr_path("diff-a")), approval("diff-a", "$rv_approved", json!([condition("Approved", "True", "Approve"), condition("Denied", "True", "Deny")]))).fixed("V-6 exclusivity reported once for status.conditions, in upstream's words"),
        send("approval: remove the approval (V-8)", Who::Admin, "PUT", format!("{}/approval", csr_path("diff-a")), approval("diff-a", "$rv_approved", json!([]))),
        send("status: add Denied (V-9)", Who::Admin, "PUT", format!("{}/status", csr_path("diff-a")), approval("diff-a", "$rv_approved", json!([condition("Approved", "True", "Approve"), condition("Denied", "True", "Deny")]))).fixed("V-6 exclusivity reported after the update rules"),
        send("status: certificate not PEM (V-7)", Who::Admin, "PUT", format!("{}/status", csr_path("diff-a")), status("diff-a", "$rv_approved", &B64.encode("junk"))),
        send("status: issue", Who::Admin, "PUT", format!("{}/status", csr_path("diff-a")), status("diff-a", "$rv_approved", &m.certificate)).capture("rv_issued", "/metadata/resourceVersion"),
        send("status: stale resourceVersion", Who::Admin, "PUT", format!("{}/status", csr_path("diff-a")), status("diff-a", "$rv_approved", &m.certificate)),
        send("status: replace the certificate (V-10)", Who::Admin, "PUT", format!("{}/status", csr_path("diff-a")), status("diff-a", "$rv_issued", &m.other_certificate)),
        send("update: spec and status are kept (A-2)", Who::Admin, "PUT", csr_path("diff-a"), with(with(node_csr("diff-a", "example.com/other"), "/metadata", "labels", json!({"team": "a", "updated": "yes"})), "", "status", json!({}))),
        send("approval: empty condition type (V-6)", Who::Admin, "PUT", format!("{}/approval", csr_path("diff-preset")), approval("diff-preset", "", json!([{"type": "", "status": "True"}]))),
        send("approval: Approved=False (V-6)", Who::Admin, "PUT", format!("{}/approval", csr_path("diff-preset")), approval("diff-preset", "", json!([condition("Approved", "False", "No")]))),
        send("approval: controller, signer it may not approve (AD-1)", Who::Controller, "PUT", format!("{}/approval", csr_path("diff-proto")), approval("diff-proto", "", approved())),
        send("approval: node may not approve", Who::Node, "PUT", format!("{}/approval", csr_path("diff-node-own")), approval("diff-node-own", "", approved())),
        send("approval: deny", Who::Admin, "PUT", format!("{}/approval", csr_path("diff-proto")), approval("diff-proto", "", json!([condition("Denied", "True", "Deny")]))),
        send("approval: approve a denied request (V-6)", Who::Admin, "PUT", format!("{}/approval", csr_path("diff-proto")), approval("diff-proto", "", json!([condition("Denied", "True", "Deny"), condition("Approved", "True", "Approve")]))).fixed("V-6 exclusivity reported once for status.conditions, in upstream's words"),
        send("approval: approve for the sign test", Who::Admin, "PUT", format!("{}/approval", csr_path("Node-CSR_Upper")), approval("Node-CSR_Upper", "", approved())),
        send("status: controller, signer it may not sign (AD-2)", Who::Controller, "PUT", format!("{}/status", csr_path("Node-CSR_Upper")), status("Node-CSR_Upper", "", &m.certificate)),
        send("status: add Failed (V-12)", Who::Admin, "PUT", format!("{}/status", csr_path("diff-preset")), with(node_csr("diff-preset", SIGNER), "", "status", json!({"conditions": [condition("Failed", "True", "SignerValidationFailure")]}))),
        get("approval: get", Who::Admin, format!("{}/approval", csr_path("diff-preset"))),
        request("patch: merge labels", Who::Admin, "PATCH", csr_path("diff-preset")).body(Payload::Raw { content_type: "application/merge-patch+json", bytes: br#"{"metadata":{"labels":{"patched":"yes"}}}"#.to_vec() }),
        request("patch: unsupported media type", Who::Admin, "PATCH", csr_path("diff-preset")).body(Payload::Raw { content_type: "application/xml", bytes: b"<patch/>".to_vec() }).fixed("a PATCH of no patch type is upstream's bare 415"),
        // Watch from a resourceVersion (W-11, W-12).
        get("watch: from the created resourceVersion", Who::Admin, format!("{CSRS}?watch=true&resourceVersion=$rv_created&fieldSelector=metadata.name%3Ddiff-a&timeoutSeconds=1")),
        get("watch: as Table", Who::Admin, format!("{CSRS}?watch=true&resourceVersion=$rv_approved&fieldSelector=metadata.name%3Ddiff-a&timeoutSeconds=1")).table().fixed("Table watch events after the first leave columnDefinitions null"),
        // ClusterTrustBundles: validation, attest admission, versions, selectors, watch.
        send("ctb: unlinked", Who::Admin, "POST", BUNDLES, bundle("diff-roots", "", &format!("{}{}", m.ca, m.other_ca))).capture("rv_roots", "/metadata/resourceVersion"),
        send("ctb: linked to a signer", Who::Admin, "POST", BUNDLES, bundle(&format!("{SIGNER_BUNDLE}v1"), SIGNER, &m.ca)).capture("rv_linked", "/metadata/resourceVersion"),
        send("ctb: v1beta1", Who::Admin, "POST", BUNDLES_V1BETA1, with(bundle("diff-beta", "", &m.ca), "", "apiVersion", json!("certificates.k8s.io/v1beta1"))),
        send("ctb: text around the blocks", Who::Admin, "POST", BUNDLES, bundle("diff-text", "", &format!("# roots\n{}\n-- \n{}trailer", m.ca, m.other_ca))),
        send("ctb: no name", Who::Admin, "POST", BUNDLES, bundle("", "", &m.ca)),
        send("ctb: unlinked name with a colon", Who::Admin, "POST", BUNDLES, bundle("diff:roots", "", &m.ca)),
        send("ctb: linked name without the signer prefix", Who::Admin, "POST", BUNDLES, bundle("diff-linked", SIGNER, &m.ca)),
        send("ctb: linked name, rest not a subdomain", Who::Admin, "POST", BUNDLES, bundle(&format!("{SIGNER_BUNDLE}Upper"), SIGNER, &m.ca)),
        send("ctb: signerName without a path", Who::Admin, "POST", BUNDLES, bundle("example.com:v1", "example.com", &m.ca)),
        send("ctb: empty bundle", Who::Admin, "POST", BUNDLES, bundle("diff-empty", "", "")),
        send("ctb: no PEM", Who::Admin, "POST", BUNDLES, bundle("diff-text-only", "", "hello")),
        send("ctb: a key block", Who::Admin, "POST", BUNDLES, bundle("diff-key", "", &format!("{}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", m.ca))),
        send("ctb: PEM headers", Who::Admin, "POST", BUNDLES, bundle("diff-headers", "", &m.ca.replacen("-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n", 1))),
        send("ctb: not X.509", Who::Admin, "POST", BUNDLES, bundle("diff-garbage", "", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")),
        send("ctb: not a CA", Who::Admin, "POST", BUNDLES, bundle("diff-leaf", "", &format!("{}{}", m.ca, m.leaf))),
        send("ctb: duplicate", Who::Admin, "POST", BUNDLES, bundle("diff-dup", "", &format!("{}{}{}", m.ca, m.other_ca, m.ca))),
        send("ctb: larger than 1 MiB", Who::Admin, "POST", BUNDLES, bundle("diff-huge", "", &format!("{}{}", m.ca, " ".repeat(1024 * 1024)))),
        send("ctb: unknown field, strict", Who::Admin, "POST", format!("{BUNDLES}?fieldValidation=Strict"), with(bundle("diff-strict", "", &m.ca), "/spec", "color", json!("blue"))),
        get("ctb: get", Who::Admin, format!("{BUNDLES}/diff-beta")),
        get("ctb: get v1beta1", Who::Admin, format!("{BUNDLES_V1BETA1}/{SIGNER_BUNDLE}v1")),
        get("ctb: get as Table", Who::Admin, format!("{BUNDLES}/{SIGNER_BUNDLE}v1")).table(),
        get("ctb: list by signer", Who::Admin, format!("{BUNDLES}?fieldSelector=spec.signerName%3Dexample.com%2Fdifferential")),
        get("ctb: list unlinked", Who::Admin, format!("{BUNDLES_V1BETA1}?fieldSelector=spec.signerName%3D")),
        get("ctb: field selector not supported", Who::Admin, format!("{BUNDLES}?fieldSelector=spec.trustBundle%3Dx")),
        get("ctb: list as Table", Who::Admin, BUNDLES).table().view(|v| only_test_bundles(without_descriptions(v))),
        get("ctb: node lists", Who::Node, BUNDLES).view(only_test_bundles),
        send("ctb: node may not create", Who::Node, "POST", BUNDLES, bundle("diff-node", "", &m.ca)),
        get("ctb: nobody may not list", Who::Nobody, BUNDLES),
        send("ctb: signerName is immutable", Who::Admin, "PUT", format!("{BUNDLES}/{SIGNER_BUNDLE}v1"), with(bundle(&format!("{SIGNER_BUNDLE}v1"), "example.com/other", &m.ca), "/metadata", "resourceVersion", json!("$rv_linked"))),
        send("ctb: update without resourceVersion", Who::Admin, "PUT", format!("{BUNDLES}/{SIGNER_BUNDLE}v1"), bundle(&format!("{SIGNER_BUNDLE}v1"), SIGNER, &m.other_ca)),
        send("ctb: update", Who::Admin, "PUT", format!("{BUNDLES}/{SIGNER_BUNDLE}v1"), with(bundle(&format!("{SIGNER_BUNDLE}v1"), SIGNER, &format!("{}{}", m.ca, m.other_ca)), "/metadata", "resourceVersion", json!("$rv_linked"))).capture("rv_linked2", "/metadata/resourceVersion"),
        send("ctb: update, stale resourceVersion", Who::Admin, "PUT", format!("{BUNDLES}/{SIGNER_BUNDLE}v1"), with(bundle(&format!("{SIGNER_BUNDLE}v1"), SIGNER, &m.ca), "/metadata", "resourceVersion", json!("$rv_linked"))),
        send("ctb: publisher attests for its signer", Who::Publisher, "POST", BUNDLES, bundle("kubernetes.io:kube-apiserver-serving:diff", SERVING_SIGNER, &m.ca)),
        send("ctb: publisher may not attest for another", Who::Publisher, "POST", BUNDLES, bundle(&format!("{SIGNER_BUNDLE}publisher"), SIGNER, &m.ca)),
        send("ctb: publisher, unlinked needs no attest", Who::Publisher, "POST", BUNDLES, bundle("diff-publisher", "", &m.ca)),
        send("ctb: publisher may not relabel another signer's", Who::Publisher, "PUT", format!("{BUNDLES}/{SIGNER_BUNDLE}v1"), with(with(bundle(&format!("{SIGNER_BUNDLE}v1"), SIGNER, &format!("{}{}", m.ca, m.other_ca)), "/metadata", "resourceVersion", json!("$rv_linked2")), "/metadata", "labels", json!({"a": "b"}))),
        send("ctb: publisher may add a finalizer to another signer's", Who::Publisher, "PUT", format!("{BUNDLES}/{SIGNER_BUNDLE}v1"), with(with(bundle(&format!("{SIGNER_BUNDLE}v1"), SIGNER, &format!("{}{}", m.ca, m.other_ca)), "/metadata", "resourceVersion", json!("$rv_linked2")), "/metadata", "finalizers", json!(["example.com/keep"]))),
        send("ctb: sar, publisher attest", Who::Admin, "POST", SAR, sar("system:serviceaccount:kube-system:kube-apiserver-serving-clustertrustbundle-publisher", &["system:serviceaccounts", "system:authenticated"], json!({"group": "certificates.k8s.io", "resource": "signers", "verb": "attest", "name": SERVING_SIGNER}))),
        get("ctb: watch by signer", Who::Admin, format!("{BUNDLES_V1BETA1}?watch=true&resourceVersion=$rv_roots&fieldSelector=spec.signerName%3Dexample.com%2Fdifferential&timeoutSeconds=1")),
        request("ctb: delete", Who::Admin, "DELETE", format!("{BUNDLES}/diff-text")),
        // SubjectAccessReview and SelfSubjectReview.
        send("sar: node renews its own client certificate", Who::Admin, "POST", SAR, sar(NODE, &["system:nodes", "system:authenticated"], node_attributes.clone())).fixed("SubjectAccessReview answers carry empty metadata"),
        send("sar: bootstrap token, nodeclient", Who::Admin, "POST", SAR, sar("system:bootstrap:abcdef", &["system:bootstrappers", BOOTSTRAP_GROUP, "system:authenticated"], json!({"group": "certificates.k8s.io", "resource": "certificatesigningrequests", "verb": "create", "subresource": "nodeclient"}))).pinned("Bootstrap-token bindings", &[r##"/status/reason: "RBAC: allowed by ClusterRoleBinding \"kubeadm:node-autoapprove-bootstrap\" of ClusterRole \"system:certificates.k8s.io:certificatesigningrequests:nodeclient\" to Group \"system:bootstrappers:kubeadm:… | "RBAC: allowed by ClusterRoleBinding \"kubeadm:node-autoapprove-bootstrap\" of ClusterRole \"system:certificates.k8s.io:certificatesigningrequests:nodeclient\" to Group \"system:bootstrappers\"""##]),
        send("sar: bootstrap token, selfnodeclient denied", Who::Admin, "POST", SAR, sar("system:bootstrap:abcdef", &["system:bootstrappers", "system:authenticated"], node_attributes.clone())).fixed("SubjectAccessReview answers carry empty metadata"),
        send("sar: no user (invalid)", Who::Admin, "POST", SAR, sar("", &[], node_attributes.clone())).pinned("SubjectAccessReview validation message", &[r##"/details/kind: <absent> | "SubjectAccessReview""##, r##"/message: ".authorization.k8s.io \"\" is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified" | "SubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified""##]),
        send("sar: nobody may not ask", Who::Nobody, "POST", SAR, sar(NODE, &["system:nodes"], node_attributes)).fixed("Status details leave out an empty name"),
        send("whoami: node", Who::Node, "POST", WHOAMI, self_subject_review()),
        send("whoami: admin", Who::Admin, "POST", WHOAMI, self_subject_review()),
        // Leases.
        send("lease: node creates its own", Who::Node, "POST", NODE_LEASES, lease("kube-node-lease", "diff-node", "diff-node")).capture("rv_lease", "/metadata/resourceVersion"),
        send("lease: node renews", Who::Node, "PUT", format!("{NODE_LEASES}/diff-node"), with(lease("kube-node-lease", "diff-node", "diff-node"), "/metadata", "resourceVersion", json!("$rv_lease"))),
        request("lease: node annotates its own (fleet status)", Who::Node, "PATCH", format!("{NODE_LEASES}/diff-node")).body(Payload::Raw { content_type: "application/merge-patch+json", bytes: br#"{"metadata":{"annotations":{"kubecert.io/status":"{\"overdue\":false}"}}}"#.to_vec() }),
        send("lease: conflict", Who::Node, "PUT", format!("{NODE_LEASES}/diff-node"), with(lease("kube-node-lease", "diff-node", "diff-node"), "/metadata", "resourceVersion", json!("$rv_lease"))),
        send("lease: node creates another node's", Who::Node, "POST", NODE_LEASES, lease("kube-node-lease", "other-node", "other-node")).fixed("NodeRestriction for node Leases"),
        send("lease: admin in default", Who::Admin, "POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", lease("default", "diff-lease", "me")),
        send("lease: namespace mismatch", Who::Admin, "POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", lease("kube-system", "diff-lease", "me")),
        send("lease: invalid duration", Who::Admin, "POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", with(lease("default", "bad-lease", "me"), "/spec", "leaseDurationSeconds", json!(0))),
        get("lease: list as Table", Who::Admin, NODE_LEASES).table().fixed("NodeRestriction for node Leases (no other node's Lease in the list)"),
        // Delete.
        send("delete: uid precondition", Who::Admin, "DELETE", csr_path("Node-CSR_Upper"), json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})).fixed("precondition conflicts say which precondition failed"),
        request("delete", Who::Admin, "DELETE", csr_path("diff-a")),
        request("delete: again", Who::Admin, "DELETE", csr_path("diff-a")),
        request("delete: lease", Who::Admin, "DELETE", "/apis/coordination.k8s.io/v1/namespaces/default/leases/diff-lease"),
        request("delete: bootstrap-token Secret", Who::Admin, "DELETE", format!("{SECRETS}/bootstrap-token-expire")).fixed("Status details leave out an empty group"),
        // Discovery, OpenAPI v3.
        get("discovery: /api", Who::Admin, "/api").pinned("Server addresses", &[r##"/serverAddressByClientCIDRs: 1 items | 0 items"##]),
        get("discovery: /apis", Who::Admin, "/apis").view(|v| keep_entries(v, "/groups", "name", &SERVED_GROUPS)).fixed("groups in kube-apiserver's order"),
        get("discovery: /apis aggregated", Who::Admin, "/apis").accept("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json").view(keep_aggregated).pinned("Aggregated discovery", &[r##"/apiVersion: "apidiscovery.k8s.io/v2" | "v1""##, r##"/groups: <absent> | [{"name":"authentication.k8s.io","preferredVersion":{"groupVersion":"authentication.k8s.io/v1","version":"v1"},"versions":[{"groupVersion":"authentication.k8s.io/v1","version":"v1"}]},{"name":"authori…"##, r##"/items: [{"metadata":{"name":"authentication.k8s.io"},"versions":[{"freshness":"Current","resources":[{"resource":"selfsubjectreviews","responseKind":{"group":"","kind":"SelfSubjectReview","version":""},"scop… | <absent>"##, r##"/kind: "APIGroupDiscoveryList" | "APIGroupList""##, r##"/metadata: {} | <absent>"##]),
        get("discovery: certificates.k8s.io", Who::Admin, "/apis/certificates.k8s.io"),
        get("discovery: certificates.k8s.io/v1", Who::Admin, "/apis/certificates.k8s.io/v1").view(|v| {
            keep_entries(v, "/resources", "name", &["certificatesigningrequests", "certificatesigningrequests/approval", "certificatesigningrequests/status", "clustertrustbundles"])
        }).fixed("storageVersionHash"),
        get("discovery: certificates.k8s.io/v1beta1", Who::Admin, "/apis/certificates.k8s.io/v1beta1").view(|v| keep_entries(v, "/resources", "name", &["clustertrustbundles"])),
        get("discovery: coordination.k8s.io/v1", Who::Admin, "/apis/coordination.k8s.io/v1").fixed("storageVersionHash; no empty shortNames"),
        get("discovery: authentication.k8s.io/v1", Who::Admin, "/apis/authentication.k8s.io/v1").view(|v| keep_entries(v, "/resources", "name", &["selfsubjectreviews"])).fixed("no empty shortNames"),
        get("discovery: authorization.k8s.io/v1", Who::Admin, "/apis/authorization.k8s.io/v1").view(|v| keep_entries(v, "/resources", "name", &["subjectaccessreviews", "selfsubjectaccessreviews"])).fixed("no empty shortNames"),
        get("discovery: /api/v1", Who::Admin, "/api/v1").view(|v| keep_entries(v, "/resources", "name", &["secrets"])).pinned("Secrets", &[r##"/resources/0/verbs: 8 items | 5 items"##, r##"/resources/0/verbs/2: "deletecollection" | "get""##, r##"/resources/0/verbs/3: "get" | "list""##, r##"/resources/0/verbs/4: "list" | "watch""##]),
        get("discovery: unknown group", Who::Admin, "/apis/nope.example.com/v1").pinned("Unknown paths", &[r##"content-type: text/plain | application/json"##, r##": "404 page not found\n" | {"apiVersion":"v1","code":404,"kind":"Status","message":"the server could not find the requested resource","metadata":{},"reason":"NotFound","status":"Failure"}"##]),
        get("openapi: v2 CertificateSigningRequest definition", Who::Admin, "/openapi/v2")
            .view(|v| {
                json!({"definition": v.pointer("/definitions/io.k8s.api.certificates.v1.CertificateSigningRequest")})
            })
            .fixed("OpenAPI: metadata is not a required field"),
        get("openapi: v2 ClusterTrustBundle definitions", Who::Admin, "/openapi/v2").view(|v| {
            let names = ["io.k8s.api.certificates.v1.ClusterTrustBundle", "io.k8s.api.certificates.v1.ClusterTrustBundleSpec", "io.k8s.api.certificates.v1beta1.ClusterTrustBundle", "io.k8s.api.certificates.v1beta1.ClusterTrustBundleSpec"];
            json!(names.iter().map(|n| (n.to_string(), v.pointer(&format!("/definitions/{n}")).cloned().unwrap_or(Value::Null))).collect::<serde_json::Map<_, _>>())
        }).pinned("OpenAPI", &[r##"/io.k8s.api.certificates.v1.ClusterTrustBundle/description: "ClusterTrustBundle is a cluster-scoped container for X.509 trust anchors (root certificates).\n\nClusterTrustBundle objects are considered to be readable by any authenticated user in the cluster, bec… | "ClusterTrustBundle is a cluster-scoped container for X.509 trust anchors (root certificates).\n\nClusterTrustBundle objects are considered to be readable by any authenticated user in the cluster, bec…"##, r##"/io.k8s.api.certificates.v1beta1.ClusterTrustBundle/description: "ClusterTrustBundle is a cluster-scoped container for X.509 trust anchors (root certificates).\n\nClusterTrustBundle objects are considered to be readable by any authenticated user in the cluster, bec… | "ClusterTrustBundle is a cluster-scoped container for X.509 trust anchors (root certificates).\n\nClusterTrustBundle objects are considered to be readable by any authenticated user in the cluster, bec…"##]),
        get("openapi: v2 Lease definition", Who::Admin, "/openapi/v2")
            .view(|v| json!({"definition": v.pointer("/definitions/io.k8s.api.coordination.v1.Lease")}))
            .pinned("OpenAPI", &[r##"/definition/properties/metadata/description: "metadata is the standard object metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata" | "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata""##]),
        get("openapi: v3 root", Who::Admin, "/openapi/v3").view(|v| keep_entries_of_object(v, "/paths", &["apis/certificates.k8s.io/v1", "apis/certificates.k8s.io/v1beta1", "apis/coordination.k8s.io/v1"])).pinned("OpenAPI", &[r##"content-type: text/plain | application/json"##]),
        get("openapi: v3 certificates.k8s.io/v1 paths", Who::Admin, "/openapi/v3/apis/certificates.k8s.io/v1").view(|v| keys_at(&v, "/paths")).pinned("OpenAPI", &[r##": 18 items | 6 items"##, r##"/0: "/apis/certificates.k8s.io/v1/" | "/apis/certificates.k8s.io/v1/certificatesigningrequests""##, r##"/1: "/apis/certificates.k8s.io/v1/certificatesigningrequests" | "/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}""##, r##"/2: "/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}" | "/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval""##, r##"/3: "/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval" | "/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/status""##, r##"/4: "/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/status" | "/apis/certificates.k8s.io/v1/clustertrustbundles""##, r##"/5: "/apis/certificates.k8s.io/v1/clustertrustbundles" | "/apis/certificates.k8s.io/v1/clustertrustbundles/{name}""##]),
        get("openapi: unknown group-version", Who::Admin, "/openapi/v3/apis/nope.example.com/v1").pinned("OpenAPI", &[r##"content-type:  | application/json"##, r##": "" | {"apiVersion":"v1","code":404,"kind":"Status","message":"the server could not find the requested resource","metadata":{},"reason":"NotFound","status":"Failure"}"##]),
    ]
}

fn keep_aggregated(mut value: Value) -> Value {
    if let Some(Value::Array(items)) = value.pointer_mut("/items") {
        items.retain(|item| {
            item.pointer("/metadata/name").and_then(Value::as_str).is_some_and(|n| SERVED_GROUPS.contains(&n))
        });
    }
    value
}

fn keep_entries_of_object(mut value: Value, pointer: &str, keep: &[&str]) -> Value {
    if let Some(Value::Object(map)) = value.pointer_mut(pointer) {
        map.retain(|k, _| keep.contains(&k.as_str()));
    }
    value
}

/// Credentials of one identity on one server.
enum Credential {
    Certificate { crt: PathBuf, key: PathBuf },
    Token(&'static str),
    None,
}

/// One of the two servers.
struct Server {
    url: String,
    ca: PathBuf,
    certificates: BTreeMap<Who, (PathBuf, PathBuf)>,
    scratch: PathBuf,
    vars: BTreeMap<String, String>,
    /// The materials' strings, for [`Normaliser`].
    known: Vec<(String, &'static str)>,
}

impl Server {
    fn new(url: String, (ca, ca_key): (&Path, &Path), m: &Materials, scratch: &Path) -> Self {
        std::fs::create_dir_all(scratch).expect("scratch dir");
        let certificates = CERTIFICATE_USERS
            .iter()
            .map(|(who, file, cn, orgs)| {
                let (crt, key) = (scratch.join(format!("{file}.crt")), scratch.join(format!("{file}.key")));
                write_client_certificate(ca, ca_key, cn, orgs, (&crt, &key), *who == Who::ExpiredNode);
                (*who, (crt, key))
            })
            .collect();
        Self {
            url,
            ca: ca.to_path_buf(),
            certificates,
            scratch: scratch.to_path_buf(),
            vars: BTreeMap::new(),
            known: m.known(),
        }
    }

    fn credential(&self, who: Who) -> Credential {
        match who {
            Who::Token(token) => Credential::Token(token),
            Who::Anonymous => Credential::None,
            other => {
                let (crt, key) = &self.certificates[&other];
                Credential::Certificate { crt: crt.clone(), key: key.clone() }
            }
        }
    }

    fn substitute(&self, text: &str) -> String {
        self.vars.iter().rev().fold(text.to_owned(), |acc, (k, v)| acc.replace(&format!("${k}"), v))
    }

    fn substitute_json(&self, value: &mut Value) {
        match value {
            Value::String(s) if s.starts_with('$') => *s = self.substitute(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.substitute_json(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.substitute_json(v)),
            _ => {}
        }
    }

    /// Sends one request with curl and returns the answer, normalised.
    fn send(&mut self, index: usize, r: &Request) -> Answer {
        let out = self.scratch.join(format!("{index}.out"));
        let path = self.substitute(&r.path);
        let mut args: Vec<String> =
            vec!["-sS".into(), "--max-time".into(), "20".into(), "--cacert".into(), s(&self.ca)];
        args.extend([
            "-X".into(),
            r.method.into(),
            "-o".into(),
            s(&out),
            "-w".into(),
            "%{http_code} %{content_type}".into(),
        ]);
        match self.credential(r.who) {
            Credential::Certificate { crt, key } => {
                args.extend(["--cert".into(), s(&crt), "--key".into(), s(&key)])
            }
            Credential::Token(token) => args.extend(["-H".into(), format!("Authorization: Bearer {token}")]),
            Credential::None => {}
        }
        if let Some(accept) = r.accept {
            args.extend(["-H".into(), format!("Accept: {accept}")]);
        }
        if let Some(body) = &r.body {
            let (content_type, bytes) = match body {
                Payload::Json(value) => {
                    let mut value = value.clone();
                    self.substitute_json(&mut value);
                    ("application/json", serde_json::to_vec(&value).expect("JSON"))
                }
                Payload::Raw { content_type, bytes } => (*content_type, bytes.clone()),
            };
            let file = self.scratch.join(format!("{index}.in"));
            std::fs::write(&file, bytes).expect("write the body");
            args.extend([
                "-H".into(),
                format!("Content-Type: {content_type}"),
                "--data-binary".into(),
                format!("@{}", s(&file)),
            ]);
        }
        args.push(format!("{}{path}", self.url));
        // Both servers answer a request they refuse before reading its body; over HTTP/2 curl
        // then sometimes reports the stream as broken (18 or 92) although the answer came. Such
        // a request changed nothing, so it is sent again; a failure that stays is an answer too.
        let curl = || Command::new("curl").args(&args).output().expect("run curl");
        let output = (1..3).fold(curl(), |output, _| if output.status.success() { output } else { curl() });
        if !output.status.success() {
            let error = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Answer { code: 0, media: String::new(), body: json!(error) };
        }
        let written = String::from_utf8_lossy(&output.stdout).into_owned();
        let (code, content_type) = written.split_once(' ').unwrap_or((&written, ""));
        let bytes = std::fs::read(&out).unwrap_or_default();
        let raw = parse_body(&bytes, content_type, path.contains("watch=true"));
        for (var, pointer) in &r.capture {
            let value = raw.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned();
            self.vars.insert((*var).to_owned(), value);
        }
        let mut body = Normaliser { known: &self.known, age_column: None }.value(raw);
        if let Some(view) = r.view {
            body = view(body);
        }
        let media = content_type.split(';').next().unwrap_or_default().trim().to_owned();
        Answer { code: code.parse().unwrap_or_default(), media, body }
    }
}

fn s(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A normalised answer.
struct Answer {
    code: u16,
    media: String,
    body: Value,
}

/// JSON (a watch stream as an array of events), protobuf as a marker, anything else as text.
fn parse_body(bytes: &[u8], content_type: &str, watch: bool) -> Value {
    if content_type.contains("protobuf") {
        return json!(format!("<protobuf, magic {}>", bytes.starts_with(b"k8s\0")));
    }
    if watch {
        let events: Result<Vec<Value>, _> = serde_json::Deserializer::from_slice(bytes).into_iter().collect();
        if let Ok(events) = events {
            return Value::Array(events);
        }
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(bytes)))
}

/// Values that differ between any two servers, or between runs.
const VOLATILE: [&str; 6] =
    ["uid", "creationTimestamp", "resourceVersion", "lastUpdateTime", "lastTransitionTime", "continue"];

/// Normalises one answer: volatile values become `<name>` placeholders, and so do the
/// materials' bytes (shown whole in some messages) and UUIDs and hashes inside strings.
struct Normaliser<'a> {
    /// Known strings (the materials' base64) and what to show instead.
    known: &'a [(String, &'static str)],
    /// The Age column of the last Table seen: a watch sends the columns with its first event only.
    age_column: Option<usize>,
}

impl Normaliser<'_> {
    fn value(&mut self, value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut map: serde_json::Map<String, Value> = map
                    .into_iter()
                    .filter(|(k, _)| k != "managedFields")
                    .map(|(k, v)| match v {
                        Value::String(s) if VOLATILE.contains(&k.as_str()) && !s.is_empty() => {
                            (k.clone(), json!(format!("<{k}>")))
                        }
                        other => (k, self.value(other)),
                    })
                    .collect();
                if map.get("kind").and_then(Value::as_str) == Some("Table") {
                    self.blank_ages(&mut map);
                }
                Value::Object(map)
            }
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.value(v)).collect()),
            Value::String(s) => json!(self.text(s)),
            other => other,
        }
    }

    fn text(&self, s: String) -> String {
        if s.starts_with("X509SHA256=") {
            return "X509SHA256=<digest>".into();
        }
        let s = blank_generated_names(&s);
        let s = self.known.iter().fold(s, |acc, (text, name)| acc.replace(text.as_str(), name));
        let s = match s.split_once("?hash=") {
            Some((path, _)) => format!("{path}?hash=<hash>"),
            None => s,
        };
        blank_uuids(&s)
    }

    /// Table rows carry the age of each object: `<age>` instead.
    fn blank_ages(&mut self, table: &mut serde_json::Map<String, Value>) {
        if let Some(columns) = table.get("columnDefinitions").and_then(Value::as_array) {
            self.age_column = columns.iter().position(|c| c["name"] == "Age");
        }
        if let (Some(age), Some(Value::Array(rows))) = (self.age_column, table.get_mut("rows")) {
            for row in rows {
                if let Some(cell) = row.pointer_mut(&format!("/cells/{age}")) {
                    *cell = json!("<age>");
                }
            }
        }
    }
}

/// Replaces the five random characters after every `gen-` (the suite's generateName) in `s`.
fn blank_generated_names(s: &str) -> String {
    let mut parts = s.split("gen-");
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        let generated = part.len() >= 5 && part.bytes().take(5).all(|b| b.is_ascii_alphanumeric());
        out.push_str(if generated { "gen-<generated>" } else { "gen-" });
        out.push_str(if generated { &part[5..] } else { part });
    }
    out
}

/// Replaces every UUID (8-4-4-4-12 hex digits) in `s` with `<uuid>`.
fn blank_uuids(s: &str) -> String {
    let is_uuid = |candidate: &[u8]| {
        candidate.len() == 36
            && candidate.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
    };
    let bytes = s.as_bytes();
    let (mut out, mut i) = (String::new(), 0);
    while i < bytes.len() {
        if bytes.len() - i >= 36 && is_uuid(&bytes[i..i + 36]) {
            out.push_str("<uuid>");
            i += 36;
        } else {
            let c = s[i..].chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The lines of difference between two answers (real first, embedded second), empty when equal.
fn difference(real: &Answer, embedded: &Answer) -> Vec<String> {
    let mut lines = vec![];
    if real.code != embedded.code {
        lines.push(format!("code: {} | {}", real.code, embedded.code));
    }
    if real.media != embedded.media {
        lines.push(format!("content-type: {} | {}", real.media, embedded.media));
    }
    json_difference("", Some(&real.body), Some(&embedded.body), &mut lines);
    lines
}

fn show(value: Option<&Value>) -> String {
    let text = value.map_or_else(|| "<absent>".to_owned(), Value::to_string);
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

fn json_difference(path: &str, a: Option<&Value>, b: Option<&Value>, lines: &mut Vec<String>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                json_difference(&format!("{path}/{key}"), x.get(key), y.get(key), lines);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            if x.len() != y.len() {
                lines.push(format!("{path}: {} items | {} items", x.len(), y.len()));
            }
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                json_difference(&format!("{path}/{i}"), Some(u), Some(v), lines);
            }
        }
        _ if a != b => lines.push(format!("{path}: {} | {}", show(a), show(b))),
        _ => {}
    }
}

#[test]
fn the_embedded_api_answers_as_kube_apiserver_does() {
    if !go_or_skip() {
        return;
    }
    if kubectl().is_none() {
        return;
    }
    let started = Instant::now();
    let dir = TempDir::new("differential");
    let cluster = Cluster::start(&dir.path().join("cluster"), &ClusterOptions::default());
    // The embedded controllers approve and sign kubernetes.io requests; the cluster here runs
    // no kube-controller-manager. Off, so that both keep what the requests did.
    let config = dir.path().join("signer.toml");
    let policy: String = POLICY_SIGNERS
        .iter()
        .map(|signer| format!("[policy.signers.\"{signer}\"]\nenabled = false\n"))
        .collect();
    std::fs::write(&config, policy).expect("write signer.toml");
    let serve = SignerServe::start(&dir.path().join("serve"), &["--config", &s(&config)]);
    let materials = Materials::new();
    let list = requests(&materials);
    assert!(list.len() >= 60, "the list has {} requests", list.len());

    let mut real = Server::new(
        format!("https://{}", cluster.api),
        (&cluster.ca_cert(), &cluster.ca_key()),
        &materials,
        &dir.path().join("real"),
    );
    // signer serve keeps its CA key as SEC1 ("EC PRIVATE KEY"); rcgen reads PKCS#8.
    let ca_key = dir.path().join("serve-ca.pkcs8.key");
    let sec1 = s(&serve.data_dir.join("pki/ca.key"));
    run_ok(Path::new("openssl"), &["pkcs8", "-topk8", "-nocrypt", "-in", &sec1, "-out", &s(&ca_key)]);
    let mut embedded = Server::new(
        format!("https://{}", serve.addr),
        (&serve.ca_cert(), &ca_key),
        &materials,
        &dir.path().join("embedded"),
    );
    let (real_answers, embedded_answers) = std::thread::scope(|scope| {
        let real = scope.spawn(|| list.iter().enumerate().map(|(i, r)| real.send(i, r)).collect::<Vec<_>>());
        let embedded =
            scope.spawn(|| list.iter().enumerate().map(|(i, r)| embedded.send(i, r)).collect::<Vec<_>>());
        (real.join().expect("real run"), embedded.join().expect("embedded run"))
    });

    let doc = std::fs::read_to_string(workspace_root().join("docs/compatibility.md"))
        .expect("read docs/compatibility.md");
    let (mut identical, mut fixed, mut explained, mut failures) = (0, 0, 0, vec![]);
    for (r, (a, b)) in list.iter().zip(real_answers.iter().zip(&embedded_answers)) {
        let lines = difference(a, b);
        let expected: &[&str] = match r.expect {
            Expect::Same => {
                identical += 1;
                &[]
            }
            Expect::Fixed(what) => {
                fixed += 1;
                eprintln!("fixed in the embedded API: {}: {what}", r.name);
                &[]
            }
            Expect::Pinned(section, pinned) => {
                explained += 1;
                if !doc.contains(&format!("### {section}")) {
                    failures
                        .push(format!("{}: docs/compatibility.md has no section \"### {section}\"", r.name));
                }
                pinned
            }
        };
        if lines != expected {
            failures.push(format!(
                "{} ({} {}): {} {}\n  got:\n    {}\n  expected:\n    {}",
                r.name,
                r.method,
                r.path,
                a.code,
                b.code,
                lines.join("\n    "),
                expected.join("\n    ")
            ));
        }
    }
    eprintln!(
        "differential: {} requests: {identical} identical, {fixed} identical after a fix of the embedded API, {explained} pinned differences (docs/compatibility.md); {:.1?}",
        list.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests differ unexpectedly:\n{}",
        failures.len(),
        list.len(),
        failures.join("\n")
    );
}
