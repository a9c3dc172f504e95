//! A negative test for every validation (V-*), admission (AD-*) and authentication (AU-*)
//! rule, each asserting upstream's code and reason; plus malformed input and limits.

use serde_json::{Value, json};

use crate::common::{self, CSRS, KUBELET_SIGNER, Mem, admin_user, csr_json, csr_pem, node_csr};
use kubecert_apiserver::{SIGNER_USER, UserInfo};

fn assert_status(resp: &(u16, Value), code: u16, reason: &str) {
    assert_eq!(resp.0, code, "{}", resp.1);
    assert_eq!(resp.1["kind"], "Status", "{}", resp.1);
    assert_eq!(resp.1["code"], code, "{}", resp.1);
    assert_eq!(resp.1["reason"], reason, "{}", resp.1);
}

/// 422 Invalid with a cause on `field` of type `cause`.
fn assert_invalid(resp: &(u16, Value), field: &str, cause: &str) {
    assert_status(resp, 422, "Invalid");
    let causes = resp.1["details"]["causes"].as_array().unwrap();
    assert!(
        causes.iter().any(|c| c["field"] == field && c["reason"] == cause),
        "no {cause} on {field} in {}",
        resp.1
    );
}

fn signer_user() -> UserInfo {
    UserInfo::authenticated(SIGNER_USER, vec![])
}

async fn create(mem: &Mem, body: Value) -> Value {
    let resp = mem.json("POST", CSRS, &body).await;
    assert_eq!(resp.0, 201, "{}", resp.1);
    resp.1
}

fn with_conditions(mut csr: Value, conditions: Value) -> Value {
    csr["status"]["conditions"] = conditions;
    csr
}

#[tokio::test]
async fn create_validation_rules() {
    let mem = Mem::new();
    let good = || node_csr(Some("x"), "n1");
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "V-1 name",
            {
                let mut c = good();
                c["metadata"] = json!({});
                c
            },
            "metadata.name",
            "FieldValueRequired",
        ),
        (
            "V-2 request",
            {
                let mut c = good();
                c["spec"]["request"] = json!("Z2FyYmFnZQ==");
                c
            },
            "spec.request",
            "FieldValueInvalid",
        ),
        (
            "V-3 empty usages",
            {
                let mut c = good();
                c["spec"]["usages"] = json!([]);
                c
            },
            "spec.usages",
            "FieldValueRequired",
        ),
        (
            "V-3 unknown usage",
            {
                let mut c = good();
                c["spec"]["usages"] = json!(["client auth", "flying"]);
                c
            },
            "spec.usages[1]",
            "FieldValueNotSupported",
        ),
        (
            "V-3 duplicate usage",
            {
                let mut c = good();
                c["spec"]["usages"] = json!(["client auth", "client auth"]);
                c
            },
            "spec.usages[1]",
            "FieldValueDuplicate",
        ),
        (
            "V-4 missing signer",
            {
                let mut c = good();
                c["spec"]["signerName"] = json!("");
                c
            },
            "spec.signerName",
            "FieldValueRequired",
        ),
        (
            "V-4 legacy signer",
            {
                let mut c = good();
                c["spec"]["signerName"] = json!("kubernetes.io/legacy-unknown");
                c
            },
            "spec.signerName",
            "FieldValueInvalid",
        ),
        (
            "V-4 no path",
            {
                let mut c = good();
                c["spec"]["signerName"] = json!("example.com");
                c
            },
            "spec.signerName",
            "FieldValueInvalid",
        ),
        (
            "V-4 one label",
            {
                let mut c = good();
                c["spec"]["signerName"] = json!("example/x");
                c
            },
            "spec.signerName",
            "FieldValueInvalid",
        ),
        (
            "V-4 bad path",
            {
                let mut c = good();
                c["spec"]["signerName"] = json!("example.com/Bad_Path");
                c
            },
            "spec.signerName",
            "FieldValueInvalid",
        ),
        (
            "V-4 too long",
            {
                let mut c = good();
                c["spec"]["signerName"] = json!(format!("{}.com/{}", "a".repeat(60), "b.".repeat(300) + "c"));
                c
            },
            "spec.signerName",
            "FieldValueTooLong",
        ),
        (
            "V-5 short duration",
            {
                let mut c = good();
                c["spec"]["expirationSeconds"] = json!(599);
                c
            },
            "spec.expirationSeconds",
            "FieldValueInvalid",
        ),
    ];
    for (rule, body, field, cause) in cases {
        let resp = mem.json("POST", CSRS, &body).await;
        assert_invalid(&resp, field, cause);
        assert!(
            resp.1["message"]
                .as_str()
                .unwrap()
                .starts_with("CertificateSigningRequest.certificates.k8s.io \""),
            "{rule}: {}",
            resp.1
        );
    }
    let resp = mem
        .json("POST", CSRS, &{
            let mut c = good();
            c["spec"]["expirationSeconds"] = json!(599);
            c
        })
        .await;
    assert_eq!(
        resp.1["message"],
        "CertificateSigningRequest.certificates.k8s.io \"x\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"
    );
    // Nothing was stored by the refused creates.
    assert_eq!(mem.get(CSRS).await.1["items"].as_array().unwrap().len(), 0);
    // V-1: a namespace on a cluster-scoped object is dropped, and odd names are fine.
    let mut c = node_csr(Some("node-csr-Ab_c-x"), "n1");
    c["metadata"]["namespace"] = json!("default");
    let created = create(&mem, c).await;
    assert!(created["metadata"].get("namespace").is_none());
    // A-1: pre-approved or pre-issued objects cannot be created.
    let c = with_conditions(node_csr(Some("pre"), "n1"), json!([{"type": "Approved", "status": "True"}]));
    let created = create(&mem, c).await;
    assert!(created["status"].get("conditions").is_none(), "{created}");
}

#[tokio::test]
async fn condition_and_update_rules() {
    let mem = Mem::new();
    let csr = create(&mem, node_csr(Some("c"), "n1")).await;
    let approval = format!("{CSRS}/c/approval");
    let status = format!("{CSRS}/c/status");
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "V-6 empty type",
            json!([{"type": "", "status": "True"}]),
            "status.conditions[0].type",
            "FieldValueRequired",
        ),
        (
            "V-6 empty status",
            json!([{"type": "Approved", "status": ""}]),
            "status.conditions[0].status",
            "FieldValueRequired",
        ),
        (
            "V-6 Approved False",
            json!([{"type": "Approved", "status": "False"}]),
            "status.conditions[0].status",
            "FieldValueNotSupported",
        ),
        (
            "V-6 other Maybe",
            json!([{"type": "Custom", "status": "Maybe"}]),
            "status.conditions[0].status",
            "FieldValueNotSupported",
        ),
        (
            "V-6 duplicate",
            json!([{"type": "Approved", "status": "True"}, {"type": "Approved", "status": "True"}]),
            "status.conditions[1].type",
            "FieldValueDuplicate",
        ),
        (
            "V-6 approved+denied",
            json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]),
            "status.conditions",
            "FieldValueInvalid",
        ),
    ];
    for (rule, conditions, field, cause) in cases {
        let resp = mem.json("PUT", &approval, &with_conditions(csr.clone(), conditions)).await;
        assert_invalid(&resp, field, cause);
        let _ = rule;
    }
    // V-9: Approved/Denied cannot be added through /status.
    let resp = mem
        .json("PUT", &status, &with_conditions(csr.clone(), json!([{"type": "Approved", "status": "True"}])))
        .await;
    assert_invalid(&resp, "status.conditions", "FieldValueForbidden");
    assert!(
        resp.1["message"].as_str().unwrap().contains("updates may not add a condition of type \"Approved\"")
    );
    // V-12: Failed may be added through /status.
    let failed = mem
        .json(
            "PUT",
            &status,
            &with_conditions(
                csr.clone(),
                json!([{"type": "Failed", "status": "True", "reason": "SignerValidationFailure"}]),
            ),
        )
        .await;
    assert_eq!(failed.0, 200, "{}", failed.1);
    // Approve, then V-8: an update may not remove it.
    let approved = mem.json("PUT", &approval, &with_conditions(failed.1.clone(), json!([{"type": "Failed", "status": "True", "reason": "SignerValidationFailure"}, {"type": "Approved", "status": "True"}]))).await;
    assert_eq!(approved.0, 200, "{}", approved.1);
    let resp = mem
        .json(
            "PUT",
            &approval,
            &with_conditions(approved.1.clone(), json!([{"type": "Failed", "status": "True"}])),
        )
        .await;
    assert_invalid(&resp, "status.conditions", "FieldValueForbidden");
    assert!(
        resp.1["message"]
            .as_str()
            .unwrap()
            .contains("updates may not remove a condition of type \"Approved\"")
    );
    // V-7: the certificate must be PEM CERTIFICATE blocks.
    let mut bad_cert = approved.1.clone();
    bad_cert["status"]["certificate"] = json!("Z2FyYmFnZQ==");
    assert_invalid(&mem.json("PUT", &status, &bad_cert).await, "status.certificate", "FieldValueInvalid");
    // V-10: set once through /status, then immutable.
    let pki = common::Pki::new();
    let mut issued = approved.1.clone();
    issued["status"]["certificate"] = json!(base64_pem(&pki.issue_pem("system:node:n1")));
    let issued = mem.json("PUT", &status, &issued).await;
    assert_eq!(issued.0, 200, "{}", issued.1);
    let mut again = issued.1.clone();
    again["status"]["certificate"] = json!(base64_pem(&pki.issue_pem("system:node:n1")));
    let resp = mem.json("PUT", &status, &again).await;
    assert_invalid(&resp, "status.certificate", "FieldValueForbidden");
    assert!(
        resp.1["message"].as_str().unwrap().contains("updates may not modify existing certificate content")
    );
    // A-2/A-4: spec and certificate changes through the main resource or /approval are ignored.
    let mut sneaky = issued.1.clone();
    sneaky["spec"]["signerName"] = json!("example.com/other");
    sneaky["metadata"]["labels"] = json!({"a": "b"});
    let main = mem.json("PUT", &format!("{CSRS}/c"), &sneaky).await;
    assert_eq!(main.0, 200, "{}", main.1);
    assert_eq!(main.1["spec"]["signerName"], KUBELET_SIGNER);
    assert_eq!(main.1["metadata"]["labels"]["a"], "b");
    // W-9: stale resourceVersion.
    let resp = mem.json("PUT", &format!("{CSRS}/c"), &issued.1).await;
    assert_status(&resp, 409, "Conflict");
    assert!(resp.1["message"].as_str().unwrap().ends_with(
        "the object has been modified; please apply your changes to the latest version and try again"
    ));
}

fn base64_pem(pem: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(pem)
}

#[tokio::test]
async fn admission_rules() {
    let mem = Mem::new();
    // AD-3
    let masters = csr_json(
        Some("m"),
        "kubernetes.io/kube-apiserver-client",
        &csr_pem("evil", &["system:masters"]),
        &["client auth"],
    );
    let resp = mem.json("POST", CSRS, &masters).await;
    assert_status(&resp, 403, "Forbidden");
    assert_eq!(
        resp.1["message"],
        "certificatesigningrequests.certificates.k8s.io \"m\" is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"
    );
    // AD-1: the signer may update /approval but not approve an arbitrary signer.
    let other =
        create(&mem, csr_json(Some("o"), "example.com/x", &csr_pem("u", &[]), &["client auth"])).await;
    let resp = mem
        .json_as(
            &signer_user(),
            "PUT",
            &format!("{CSRS}/o/approval"),
            &with_conditions(other.clone(), json!([{"type": "Approved", "status": "True"}])),
        )
        .await;
    assert_status(&resp, 403, "Forbidden");
    assert_eq!(
        resp.1["message"],
        "certificatesigningrequests.certificates.k8s.io \"o\" is forbidden: user not permitted to approve requests with signerName \"example.com/x\""
    );
    // AD-2: nor sign for it.
    let approved = mem
        .json(
            "PUT",
            &format!("{CSRS}/o/approval"),
            &with_conditions(other, json!([{"type": "Approved", "status": "True"}])),
        )
        .await
        .1;
    let mut issued = approved;
    issued["status"]["certificate"] = json!(base64_pem(&common::Pki::new().issue_pem("u")));
    let resp = mem.json_as(&signer_user(), "PUT", &format!("{CSRS}/o/status"), &issued).await;
    assert_status(&resp, 403, "Forbidden");
    assert!(
        resp.1["message"]
            .as_str()
            .unwrap()
            .ends_with("user not permitted to sign requests with signerName \"example.com/x\"")
    );
    // ... while its own signer is fine.
    let kubelet = create(&mem, node_csr(Some("k"), "n1")).await;
    let resp = mem
        .json_as(
            &signer_user(),
            "PUT",
            &format!("{CSRS}/k/approval"),
            &with_conditions(kubelet, json!([{"type": "Approved", "status": "True"}])),
        )
        .await;
    assert_eq!(resp.0, 200, "{}", resp.1);
    // Authorization (AD-5): a node may not approve, and the message is RBAC's.
    let node = UserInfo::authenticated("system:node:n1", vec!["system:nodes".into()]);
    let resp = mem.json_as(&node, "PUT", &format!("{CSRS}/k/approval"), &resp.1).await;
    assert_status(&resp, 403, "Forbidden");
    assert_eq!(
        resp.1["message"],
        "certificatesigningrequests.certificates.k8s.io \"k\" is forbidden: User \"system:node:n1\" cannot update resource \"certificatesigningrequests/approval\" in API group \"certificates.k8s.io\" at the cluster scope"
    );
    let resp = mem.json_as(&node, "DELETE", &format!("{CSRS}/k"), &json!({})).await;
    assert_status(&resp, 403, "Forbidden");
}

#[tokio::test]
async fn malformed_requests_and_limits() {
    let mem = Mem::with(|c| c.max_body_bytes = 64 * 1024);
    let admin = admin_user();
    let resp = mem
        .send_as(&admin, "POST", CSRS, &[("content-type", "application/json")], b"{not json".to_vec())
        .await;
    assert_status(&resp, 400, "BadRequest");
    let resp =
        mem.send_as(&admin, "POST", CSRS, &[("content-type", "application/json")], b"[1,2]".to_vec()).await;
    assert_status(&resp, 400, "BadRequest");
    let resp = mem
        .send_as(&admin, "POST", CSRS, &[("content-type", "application/json")], vec![b' '; 65 * 1024])
        .await;
    assert_status(&resp, 413, "RequestEntityTooLarge");
    let resp =
        mem.send_as(&admin, "POST", CSRS, &[("content-type", "application/cbor")], b"x".to_vec()).await;
    assert_status(&resp, 415, "UnsupportedMediaType");
    let resp = mem
        .send_as(
            &admin,
            "POST",
            CSRS,
            &[("content-type", "application/vnd.kubernetes.protobuf")],
            b"x".to_vec(),
        )
        .await;
    assert_status(&resp, 400, "BadRequest");
    let resp = mem
        .send_as(&admin, "GET", CSRS, &[("accept", "application/vnd.kubernetes.protobuf")], Vec::new())
        .await;
    assert_status(&resp, 406, "NotAcceptable");
    let mut wrong_kind = node_csr(Some("w"), "n1");
    wrong_kind["kind"] = json!("Secret");
    assert_status(&mem.json("POST", CSRS, &wrong_kind).await, 400, "BadRequest");
    for path in [
        "/apis/certificates.k8s.io/v1beta1/certificatesigningrequests",
        "/apis/certificates.k8s.io/v1alpha1",
        "/apis/apps/v1/deployments",
        "/api/v1/pods",
        "/nope",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/x/nope",
    ] {
        assert_status(&mem.get(path).await, 404, "NotFound");
    }
    assert_status(&mem.get(&format!("{CSRS}/missing")).await, 404, "NotFound");
    assert_eq!(
        mem.get(&format!("{CSRS}/missing")).await.1["message"],
        "certificatesigningrequests.certificates.k8s.io \"missing\" not found"
    );
    assert_status(&mem.get(&format!("{CSRS}?fieldSelector=spec.username%3Dx")).await, 400, "BadRequest");
    assert_status(&mem.get(&format!("{CSRS}?continue=garbage")).await, 400, "BadRequest");
    let resp = mem
        .send_as(&admin, "PATCH", &format!("{CSRS}/x"), &[("content-type", "text/plain")], b"{}".to_vec())
        .await;
    assert_status(&resp, 415, "UnsupportedMediaType");
}

#[tokio::test]
async fn secrets_only_bootstrap_tokens_in_kube_system() {
    let mem = Mem::new();
    let secret = |ns: &str, ty: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bootstrap-token-abcdef", "namespace": ns}, "type": ty, "stringData": {"token-id": "abcdef"}});
    let resp = mem
        .json(
            "POST",
            "/api/v1/namespaces/default/secrets",
            &secret("default", "bootstrap.kubernetes.io/token"),
        )
        .await;
    assert_status(&resp, 403, "Forbidden");
    let resp =
        mem.json("POST", "/api/v1/namespaces/kube-system/secrets", &secret("kube-system", "Opaque")).await;
    assert_invalid(&resp, "type", "FieldValueNotSupported");
    assert_eq!(mem.get("/api/v1/secrets").await.1["items"].as_array().unwrap().len(), 0);
    let resp = mem
        .json(
            "POST",
            "/api/v1/namespaces/kube-system/secrets",
            &secret("other", "bootstrap.kubernetes.io/token"),
        )
        .await;
    assert_status(&resp, 400, "BadRequest");
    let resp = mem
        .json(
            "POST",
            "/api/v1/namespaces/kube-system/secrets",
            &secret("kube-system", "bootstrap.kubernetes.io/token"),
        )
        .await;
    assert_eq!(resp.0, 201, "{}", resp.1);
    assert_eq!(resp.1["data"]["token-id"], "YWJjZGVm");
    assert!(resp.1.get("stringData").is_none());
    let resp =
        mem.json("PUT", "/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef", &resp.1).await;
    assert_status(&resp, 405, "MethodNotAllowed");
}

#[tokio::test]
async fn leases_use_optimistic_concurrency() {
    let mem = Mem::new();
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "signer"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    let created = mem.json("POST", leases, &lease).await;
    assert_eq!(created.0, 201, "{}", created.1);
    assert_status(&mem.json("POST", leases, &lease).await, 409, "AlreadyExists");
    let mut next = created.1.clone();
    next["spec"]["holderIdentity"] = json!("b");
    let updated = mem.json("PUT", &format!("{leases}/signer"), &next).await;
    assert_eq!(updated.0, 200, "{}", updated.1);
    assert_status(&mem.json("PUT", &format!("{leases}/signer"), &next).await, 409, "Conflict");
    let patched =
        mem.json("PATCH", &format!("{leases}/signer"), &json!({"spec": {"holderIdentity": "c"}})).await;
    assert_eq!(patched.1["spec"]["holderIdentity"], "c");
    let json_patch = mem
        .send_as(
            &admin_user(),
            "PATCH",
            &format!("{leases}/signer"),
            &[("content-type", "application/json-patch+json")],
            br#"[{"op":"test","path":"/spec/holderIdentity","value":"zzz"}]"#.to_vec(),
        )
        .await;
    assert_status(&json_patch, 422, "Invalid");
    let bad_duration = json!({"metadata": {"name": "d"}, "spec": {"leaseDurationSeconds": 0}});
    assert_invalid(
        &mem.json("POST", leases, &bad_duration).await,
        "spec.leaseDurationSeconds",
        "FieldValueInvalid",
    );
    let bad_name = json!({"metadata": {"name": "Bad_Name"}, "spec": {}});
    assert_invalid(&mem.json("POST", leases, &bad_name).await, "metadata.name", "FieldValueInvalid");
    let gone = mem
        .json("DELETE", &format!("{leases}/signer"), &json!({"preconditions": {"resourceVersion": "1"}}))
        .await;
    assert_status(&gone, 409, "Conflict");
    let gone = mem.json("DELETE", &format!("{leases}/signer"), &json!({})).await;
    assert_eq!((gone.0, gone.1["status"].as_str()), (200, Some("Success")));
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_is_expired() {
    let mem = Mem::with(|c| c.event_log_capacity = 2);
    for i in 0..4 {
        create(&mem, node_csr(Some(&format!("w{i}")), "n1")).await;
    }
    let (code, body) = mem.get(&format!("{CSRS}?watch=true&resourceVersion=1&timeoutSeconds=1")).await;
    assert_eq!(code, 200);
    let text = stream_text(body);
    let event: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    let (_, body) = mem.get(&format!("{CSRS}?watch=true&resourceVersion=3&timeoutSeconds=1")).await;
    let text = stream_text(body);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"w3\""), "{text}");
}

/// A watch body as text (one JSON line parses as a value, several do not).
fn stream_text(body: Value) -> String {
    match body {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

/// A server (in a tempdir, returned to keep it) that stores the bootstrap token
/// `abcdef.0123456789abcdef`, and an admin client of it.
async fn server_with_bootstrap_token()
-> (common::Pki, tempfile::TempDir, kubecert_apiserver::RunningServer, common::Raw) {
    let pki = common::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(&pki, dir.path()).await;
    let admin = pki.admin();
    let raw_admin = common::Raw::new(server.local_addr(), &pki, common::Credential::Cert(&admin)).await;
    assert_eq!(
        raw_admin.json("POST", "/api/v1/namespaces/kube-system/secrets", &bootstrap_token_secret()).await.0,
        201
    );
    (pki, dir, server, raw_admin)
}

/// Over TLS and HTTP/1.1, a request head must fit hyper's read buffer (`READ_BUFFER`, kept
/// small for servers with thousands of open watches): a larger one is answered 431. Bodies are
/// not limited by it.
#[tokio::test]
async fn request_heads_fit_the_read_buffer_and_bodies_do_not_need_to() {
    let (_pki, _dir, _server, raw_admin) = server_with_bootstrap_token().await;
    const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";
    let limit = kubecert_apiserver::READ_BUFFER;
    let header = |len: usize| [("x-padding", "p".repeat(len))];
    assert_eq!(raw_admin.get_with_headers(SECRETS, &header(limit - 1024)).await, 200);
    assert_eq!(raw_admin.get_with_headers(SECRETS, &header(limit)).await, 431);
    let mut big = bootstrap_token_secret();
    big["metadata"]["name"] = json!("big");
    big["stringData"]["data"] = json!("d".repeat(256 * 1024));
    let resp = raw_admin.json("POST", SECRETS, &big).await;
    assert_eq!(resp.0, 201, "{}", resp.1);
    let resp =
        raw_admin.send("GET", "/api/v1/namespaces/kube-system/secrets/big", "application/json", vec![]).await;
    assert_eq!(resp.1["data"]["data"].as_str().map(str::len), Some(256 * 1024 / 3 * 4 + 4));
}

#[tokio::test]
async fn bootstrap_token_authentication_over_tls() {
    let (pki, _dir, server, raw_admin) = server_with_bootstrap_token().await;
    let addr = server.local_addr();
    let expired = json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": "bootstrap-token-expird", "namespace": "kube-system"},
        "stringData": {"token-id": "expird", "token-secret": "0123456789abcdef", "usage-bootstrap-authentication": "true", "expiration": "2001-01-01T00:00:00Z"}});
    assert_eq!(raw_admin.json("POST", "/api/v1/namespaces/kube-system/secrets", &expired).await.0, 201);

    // AU-1 success: user, groups (AU-3 adds system:authenticated), CSR creation allowed.
    let token = common::Raw::new(addr, &pki, common::Credential::Token("abcdef.0123456789abcdef")).await;
    let resp = token.json("POST", CSRS, &node_csr(None, "n1")).await;
    assert_eq!(resp.0, 201, "{}", resp.1);
    assert_eq!(resp.1["spec"]["username"], "system:bootstrap:abcdef");
    assert_eq!(
        resp.1["spec"]["groups"],
        json!(["system:bootstrappers", "system:bootstrappers:worker", "system:authenticated"])
    );
    assert_status(
        &token
            .json("DELETE", &format!("{CSRS}/{}", resp.1["metadata"]["name"].as_str().unwrap()), &json!({}))
            .await,
        403,
        "Forbidden",
    );

    // AU-1 failures are 401.
    for bad in
        ["abcdef.0123456789abcdee", "abcdef.short", "zzzzzz.0123456789abcdef", "expird.0123456789abcdef"]
    {
        let raw = common::Raw::new(addr, &pki, common::Credential::Token(bad)).await;
        assert_status(&raw.json("POST", CSRS, &node_csr(None, "n1")).await, 401, "Unauthorized");
    }
    // No credentials: system:anonymous, which RBAC lets read health and version only (403
    // otherwise, as kube-apiserver with anonymous authentication on, kubeadm's default).
    let anon = common::Raw::new(addr, &pki, common::Credential::None).await;
    let resp = anon.json("GET", CSRS, &json!({})).await;
    assert_status(&resp, 403, "Forbidden");
    assert!(
        resp.1["message"].as_str().unwrap().contains("User \"system:anonymous\" cannot list"),
        "{}",
        resp.1
    );
    assert_eq!(anon.send("GET", "/healthz", "text/plain", Vec::new()).await.0, 200);
    // AU-2: certificate without clientAuth, or from another CA, fails the handshake.
    let server_only = pki.client_with_usage("x", &[], rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    assert!(
        common::Raw::new(addr, &pki, common::Credential::Cert(&server_only))
            .await
            .try_send("GET", CSRS)
            .await
            .is_err()
    );
    let foreign = common::Pki::new().admin();
    assert!(
        common::Raw::new(addr, &pki, common::Credential::Cert(&foreign))
            .await
            .try_send("GET", CSRS)
            .await
            .is_err()
    );
    // An expired certificate from the CA passes the handshake (the TLS layer does not check the
    // time, as kube-apiserver's) and every request with it is 401, never anonymous.
    let expired = pki.expired_client("kubernetes-admin", &["system:masters"]);
    let raw_expired = common::Raw::new(addr, &pki, common::Credential::Cert(&expired)).await;
    assert_status(&raw_expired.json("GET", CSRS, &json!({})).await, 401, "Unauthorized");
    assert_status(&raw_expired.json("GET", "/version", &json!({})).await, 401, "Unauthorized");
    // AU-2: CN/O become user/groups.
    let node = pki.client("system:node:n7", &["system:nodes"]);
    let raw_node = common::Raw::new(addr, &pki, common::Credential::Cert(&node)).await;
    let resp = raw_node.json("POST", CSRS, &node_csr(None, "n7")).await;
    assert_eq!(resp.1["spec"]["username"], "system:node:n7");
    assert_eq!(resp.1["spec"]["groups"], json!(["system:nodes", "system:authenticated"]));
    assert!(
        resp.1["spec"]["extra"]["authentication.kubernetes.io/credential-id"][0]
            .as_str()
            .unwrap()
            .starts_with("X509SHA256=")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn subject_access_reviews() {
    let mem = Mem::new();
    let sar = |user: &str, group: &str, sub: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": [group], "resourceAttributes": {"group": "certificates.k8s.io", "resource": "certificatesigningrequests", "verb": "create", "subresource": sub}}})
    };
    let resp = mem
        .json_as(
            &signer_user(),
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            &sar("system:bootstrap:a", "system:bootstrappers", "nodeclient"),
        )
        .await;
    assert_eq!(resp.0, 201, "{}", resp.1);
    assert_eq!(resp.1["status"]["allowed"], true);
    let resp = mem
        .json(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            &sar("system:bootstrap:a", "system:bootstrappers", "selfnodeclient"),
        )
        .await;
    assert_eq!(resp.1["status"]["allowed"], false);
    let resp = mem
        .json("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", &json!({"spec": {"user": "x"}}))
        .await;
    assert_status(&resp, 422, "Invalid");
    let node = UserInfo::authenticated("system:node:n1", vec!["system:nodes".into()]);
    let resp = mem
        .json_as(&node, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", &sar("x", "y", ""))
        .await;
    assert_status(&resp, 403, "Forbidden");
}

#[tokio::test]
async fn list_paging_selectors_patch_and_deletecollection() {
    let mem = Mem::new();
    for i in 0..5 {
        let mut c = node_csr(Some(&format!("p{i}")), "n1");
        c["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        create(&mem, c).await;
    }
    let page = mem.get(&format!("{CSRS}?limit=2")).await.1;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["metadata"]["remainingItemCount"], 3);
    let token = page["metadata"]["continue"].as_str().unwrap();
    let rest = mem.get(&format!("{CSRS}?limit=10&continue={token}")).await.1;
    let names: Vec<&str> =
        rest["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["p2", "p3", "p4"]);
    assert!(rest["metadata"].get("continue").is_none());
    let odd = mem.get(&format!("{CSRS}?labelSelector=parity%3Dodd")).await.1;
    assert_eq!(odd["items"].as_array().unwrap().len(), 2);
    let patched =
        mem.json("PATCH", &format!("{CSRS}/p0"), &json!({"metadata": {"labels": {"x": "y"}}})).await;
    assert_eq!(patched.1["metadata"]["labels"]["x"], "y");
    let jp = mem
        .send_as(&admin_user(), "PATCH", &format!("{CSRS}/p0/approval"), &[("content-type", "application/json-patch+json")],
            br#"[{"op":"add","path":"/status/conditions","value":[{"type":"Approved","status":"True","reason":"R"}]}]"#.to_vec())
        .await;
    assert_eq!(jp.1["status"]["conditions"][0]["type"], "Approved", "{}", jp.1);
    let table = mem
        .send_as(
            &admin_user(),
            "GET",
            CSRS,
            &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")],
            Vec::new(),
        )
        .await
        .1;
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["rows"][0]["cells"][5], "Approved");
    let deleted = mem
        .send_as(&admin_user(), "DELETE", &format!("{CSRS}?labelSelector=parity%3Deven"), &[], Vec::new())
        .await
        .1;
    assert_eq!(deleted["items"].as_array().unwrap().len(), 3);
    assert_eq!(mem.get(CSRS).await.1["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn field_validation_and_dry_run() {
    let mem = Mem::new();
    let mut body = node_csr(Some("fv"), "n1");
    body["spec"]["bogus"] = json!(1);
    let resp = mem.json("POST", &format!("{CSRS}?fieldValidation=Strict"), &body).await;
    assert_status(&resp, 400, "BadRequest");
    assert_eq!(
        resp.1["message"],
        "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: strict decoding error: unknown field \"spec.bogus\""
    );
    let resp = mem.json("POST", &format!("{CSRS}?fieldValidation=Nope"), &body).await;
    assert_status(&resp, 400, "BadRequest");
    // Warn (the default) and Ignore store the object without the unknown field.
    let resp = mem.json("POST", CSRS, &body).await;
    assert_eq!(resp.0, 201, "{}", resp.1);
    assert!(resp.1["spec"].get("bogus").is_none());
    let patch = mem
        .send_as(
            &admin_user(),
            "PATCH",
            &format!("{CSRS}/fv?fieldValidation=Strict"),
            &[("content-type", "application/merge-patch+json")],
            br#"{"metadata":{"bogus":1}}"#.to_vec(),
        )
        .await;
    assert_status(&patch, 400, "BadRequest");
    // dryRun=All validates and answers but stores nothing.
    let resp = mem.json("POST", &format!("{CSRS}?dryRun=All"), &node_csr(Some("dry"), "n1")).await;
    assert_eq!(resp.0, 201, "{}", resp.1);
    assert_status(&mem.get(&format!("{CSRS}/dry")).await, 404, "NotFound");
    let resp = mem.json("POST", &format!("{CSRS}?dryRun=All"), &node_csr(Some("fv"), "n1")).await;
    assert_status(&resp, 409, "AlreadyExists");
    let resp = mem.json("DELETE", &format!("{CSRS}/fv?dryRun=All"), &json!({})).await;
    assert_eq!(resp.0, 200);
    assert_eq!(mem.get(&format!("{CSRS}/fv")).await.0, 200);
}

#[tokio::test]
async fn label_selector_watch_sees_objects_move_in_and_out() {
    let mem = Mem::new();
    // resourceVersion 0 would mean "current state first"; start after an unrelated write.
    create(&mem, node_csr(Some("unrelated"), "n1")).await;
    let start = mem.get(CSRS).await.1["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut c = node_csr(Some("l"), "n1");
    c["metadata"]["labels"] = json!({"env": "dev"});
    create(&mem, c).await;
    let label = |labels: Value| json!({"metadata": {"labels": labels}});
    for labels in [json!({"env": "prod"}), json!({"env": "prod", "x": "1"}), json!({"env": "dev"})] {
        let resp = mem.json("PATCH", &format!("{CSRS}/l"), &label(labels)).await;
        assert_eq!(resp.0, 200, "{}", resp.1);
    }
    let (_, body) = mem
        .get(&format!("{CSRS}?watch=1&labelSelector=env%3Dprod&resourceVersion={start}&timeoutSeconds=1"))
        .await;
    let text = stream_text(body);
    let types: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"], "{text}");
}

#[tokio::test]
async fn strategic_merge_patch_is_a_merge_without_directives() {
    let mem = Mem::new();
    create(&mem, node_csr(Some("s"), "n1")).await;
    let resp = mem
        .send_as(
            &admin_user(),
            "PATCH",
            &format!("{CSRS}/s?fieldValidation=Strict"),
            &[("content-type", "application/strategic-merge-patch+json")],
            br#"{"$setElementOrder/finalizers":[],"metadata":{"labels":{"a":"b"},"$retainKeys":["labels"]}}"#
                .to_vec(),
        )
        .await;
    assert_eq!(resp.0, 200, "{}", resp.1);
    assert_eq!(resp.1["metadata"]["labels"]["a"], "b");
}

#[tokio::test]
async fn server_side_apply_conflicts_between_managers() {
    let mem = Mem::new();
    let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l";
    let created = apply_lease(&mem, "fieldManager=a", "a").await;
    assert_eq!(created.0, 201, "{}", created.1);
    assert_eq!(created.1["metadata"]["managedFields"][0]["manager"], "a");
    let resp = apply_lease(&mem, "fieldManager=b", "b").await;
    assert_status(&resp, 409, "Conflict");
    assert_eq!(resp.1["message"], "Apply failed with 1 conflict: conflict with \"a\": .spec.holderIdentity");
    assert_eq!(resp.1["details"]["causes"][0]["reason"], "FieldManagerConflict");
    let forced = apply_lease(&mem, "fieldManager=b&force=true", "b").await;
    assert_eq!(forced.1["spec"]["holderIdentity"], "b", "{}", forced.1);
    assert_status(&apply_lease(&mem, "", "c").await, 400, "BadRequest");
    assert_eq!(mem.get(lease).await.1["spec"]["holderIdentity"], "b");
}

async fn apply_lease(mem: &Mem, query: &str, holder: &str) -> (u16, Value) {
    let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {"holderIdentity": holder}});
    mem.send_as(
        &admin_user(),
        "PATCH",
        &format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l?{query}"),
        &[("content-type", "application/apply-patch+yaml")],
        serde_json::to_vec(&body).unwrap(),
    )
    .await
}

const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

fn self_subject_review() -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw}` around a SelfSubjectReview with empty metadata.
fn whoami_protobuf() -> Vec<u8> {
    fn field(number: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2, u8::try_from(payload.len()).unwrap()];
        out.extend_from_slice(payload);
        out
    }
    let type_meta = [field(1, b"authentication.k8s.io/v1"), field(2, b"SelfSubjectReview")].concat();
    let unknown = [field(1, &type_meta), field(2, &field(1, &[]))].concat();
    [b"k8s\0".as_slice(), &unknown].concat()
}

/// `status.userInfo` of a successful SelfSubjectReview.
fn reviewed_user(resp: &(u16, Value)) -> &Value {
    assert_eq!(resp.0, 201, "{}", resp.1);
    assert_eq!(resp.1["apiVersion"], "authentication.k8s.io/v1", "{}", resp.1);
    assert_eq!(resp.1["kind"], "SelfSubjectReview", "{}", resp.1);
    assert!(resp.1["metadata"]["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", resp.1);
    &resp.1["status"]["userInfo"]
}

#[tokio::test]
async fn self_subject_reviews_return_the_authenticated_user() {
    let (pki, _dir, server, raw_admin) = server_with_bootstrap_token().await;
    let addr = server.local_addr();

    let token = common::Raw::new(addr, &pki, common::Credential::Token("abcdef.0123456789abcdef")).await;
    let resp = token.json("POST", WHOAMI, &self_subject_review()).await;
    assert_eq!(
        reviewed_user(&resp),
        &json!({"username": "system:bootstrap:abcdef",
            "groups": ["system:bootstrappers", "system:bootstrappers:worker", "system:authenticated"]})
    );

    let node = pki.client("system:node:n1", &["system:nodes"]);
    let raw_node = common::Raw::new(addr, &pki, common::Credential::Cert(&node)).await;
    // The body's metadata is not echoed: the answer is a new object, as upstream.
    let mut named = self_subject_review();
    named["metadata"] = json!({"name": "me", "labels": {"a": "b"}});
    let resp = raw_node.json("POST", WHOAMI, &named).await;
    let user = reviewed_user(&resp);
    assert_eq!(user["username"], "system:node:n1");
    assert_eq!(user["groups"], json!(["system:nodes", "system:authenticated"]));
    assert!(user.get("uid").is_none(), "{user}");
    let credential = &user["extra"]["authentication.kubernetes.io/credential-id"];
    assert!(credential[0].as_str().is_some_and(|c| c.starts_with("X509SHA256=")), "{user}");
    assert_eq!(resp.1["metadata"].as_object().unwrap().len(), 1, "{}", resp.1);

    // Protobuf bodies (what typed Go clients send) are accepted too.
    let resp = raw_admin.send("POST", WHOAMI, "application/vnd.kubernetes.protobuf", whoami_protobuf()).await;
    let user = reviewed_user(&resp);
    assert_eq!(user["username"], "kubernetes-admin");
    assert_eq!(user["groups"], json!(["system:masters", "system:authenticated"]));

    // Create-only and never stored: reading is refused as for SubjectAccessReviews (405 when
    // authorized, 403 otherwise), anonymous is 403, another kind is a 400 naming it.
    assert_status(&raw_admin.json("GET", WHOAMI, &json!({})).await, 405, "MethodNotAllowed");
    assert_status(&raw_admin.json("GET", &format!("{WHOAMI}/x"), &json!({})).await, 405, "MethodNotAllowed");
    assert_status(&raw_node.json("GET", WHOAMI, &json!({})).await, 403, "Forbidden");
    let anon = common::Raw::new(addr, &pki, common::Credential::None).await;
    assert_status(&anon.json("POST", WHOAMI, &self_subject_review()).await, 403, "Forbidden");
    let wrong = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview"});
    let resp = raw_node.json("POST", WHOAMI, &wrong).await;
    assert_status(&resp, 400, "BadRequest");
    let message = resp.1["message"].as_str().unwrap();
    assert!(
        message.contains("(authorization.k8s.io/v1)") && message.contains("is not SelfSubjectReview"),
        "{message}"
    );
    let resp = token.send("POST", WHOAMI, "application/json", b"[1]".to_vec()).await;
    assert_status(&resp, 400, "BadRequest");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn self_subject_review_returns_uid_and_extra_in_memory() {
    let mem = Mem::new();
    let mut user = UserInfo::authenticated("alice", vec!["devs".into()]);
    user.uid = "u-1".into();
    user.extra.insert("scopes".into(), vec!["a".into(), "b".into()]);
    let resp = mem.json_as(&user, "POST", WHOAMI, &self_subject_review()).await;
    assert_eq!(
        reviewed_user(&resp),
        &json!({"username": "alice", "uid": "u-1", "groups": ["devs", "system:authenticated"],
            "extra": {"scopes": ["a", "b"]}})
    );
    assert_status(
        &mem.json("PUT", &format!("{WHOAMI}/x"), &self_subject_review()).await,
        405,
        "MethodNotAllowed",
    );
    assert_status(&mem.json("DELETE", WHOAMI, &json!({})).await, 405, "MethodNotAllowed");
}

/// The Secret of bootstrap token `abcdef.0123456789abcdef`, with extra group
/// `system:bootstrappers:worker`.
fn bootstrap_token_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
        "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef",
            "usage-bootstrap-authentication": "true", "auth-extra-groups": "system:bootstrappers:worker"}})
}
