//! The real `kubectl` against the server (issue 3 "done when" #2), in every version on the
//! machine (issue 16: kubectl before 1.29 reads OpenAPI v2). Without kubectl on PATH the tests
//! print a notice and pass, unless `KUBECERT_REQUIRE_KUBECTL=1`, when they fail.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::{self, ClientCert, Credential, Pki};

/// Every kubectl on the machine, oldest first: the `kubectl.1.<minor>` files next to the
/// resolved `kubectl` on PATH (symlinks followed; the machine image carries 1.27 … 1.33
/// there), then `kubectl` itself. Empty, with a notice, when PATH has no kubectl; a failure
/// instead under `KUBECERT_REQUIRE_KUBECTL=1`.
fn kubectls() -> Vec<PathBuf> {
    kubecert_tests::kubectls_with_minor().into_iter().map(|(_, path)| path).collect()
}

struct Kubectl {
    program: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(&self.cache).args(args);
        cmd.env("HOME", self.cache.parent().unwrap_or(Path::new("/tmp")));
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .expect("kubectl finished in time")
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args).await;
        assert!(ok, "{} {args:?} failed:\n{out}\n{err}", self.program.display());
        out
    }
}

/// A server (data under the tempdir), its admin credential and the kubectls to drive it with.
struct Cluster {
    pki: Pki,
    dir: tempfile::TempDir,
    server: kubecert_apiserver::RunningServer,
    admin: ClientCert,
    /// See [`kubectls`]; the last is `kubectl` itself.
    kubectls: Vec<PathBuf>,
}

impl Cluster {
    /// `None` when there is no kubectl (see [`kubectls`]).
    async fn start() -> Option<Self> {
        let kubectls = kubectls();
        if kubectls.is_empty() {
            return None;
        }
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let server = common::start(&pki, &dir.path().join("data")).await;
        let admin = pki.admin();
        Some(Self { pki, dir, server, admin, kubectls })
    }

    /// `program` with its own kubeconfig and cache, `name`d, authenticating with `cred`.
    fn kubectl(&self, program: &Path, name: &str, cred: Credential<'_>) -> Kubectl {
        let kubeconfig = self.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&kubeconfig, common::kubeconfig_yaml(self.server.local_addr(), &self.pki, cred))
            .unwrap();
        Kubectl {
            program: program.to_path_buf(),
            kubeconfig,
            cache: self.dir.path().join(format!("{name}-cache")),
        }
    }

    /// `kubectl` itself.
    fn default_kubectl(&self) -> &Path {
        self.kubectls.last().expect("at least kubectl")
    }

    /// `kubectl` itself as the admin.
    fn admin(&self) -> Kubectl {
        self.kubectl(self.default_kubectl(), "admin", Credential::Cert(&self.admin))
    }

    /// A file with a node client CSR named `name` for `node`.
    fn csr_file(&self, name: &str, node: &str) -> PathBuf {
        let req = common::node_csr(Some(name), node);
        let request = req["spec"]["request"].as_str().unwrap();
        let file = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client-kubelet\n  expirationSeconds: 86400\n  usages:\n  - digital signature\n  - client auth\n"
            ),
        )
        .unwrap();
        file
    }
}

fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The line of `kubectl get` output whose first column is `name`.
fn row<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .map(columns)
        .find(|c| c.first() == Some(&name))
        .unwrap_or_else(|| panic!("no {name} in\n{out}"))
}

/// Every kubectl version against one server, one after the other: create -f, apply -f, get,
/// get -w, approve, deny, explain, delete, and a bootstrap token's create, can-i and refusals.
#[tokio::test]
async fn kubectl_of_every_version_creates_applies_explains_approves_denies_watches_deletes() {
    let Some(cluster) = Cluster::start().await else { return };
    let out = create_bootstrap_token(&cluster.admin()).await;
    assert_eq!(out.trim(), "secret/bootstrap-token-abcdef created");
    for program in &cluster.kubectls {
        let started = Instant::now();
        one_version(&cluster, program).await;
        eprintln!("{}: {:.1?}", program.display(), started.elapsed());
    }
    cluster.server.shutdown().await.unwrap();
}

async fn one_version(cluster: &Cluster, program: &Path) {
    let label = program.file_name().unwrap().to_str().unwrap().replace('.', "-");
    let k = cluster.kubectl(program, &format!("{label}-admin"), Credential::Cert(&cluster.admin));
    let node =
        cluster.kubectl(program, &format!("{label}-node"), Credential::Token("abcdef.0123456789abcdef"));
    let (one, two, from_node) = (format!("{label}-one"), format!("{label}-two"), format!("{label}-node"));

    // create -f with default flags (validation strict, schemas through OpenAPI v2 before 1.29).
    for (name, by) in [(&one, &k), (&two, &k), (&from_node, &node)] {
        let file = cluster.csr_file(name, "n1");
        let out = by.ok(&["create", "-f", file.to_str().unwrap()]).await;
        assert_eq!(out.trim(), format!("certificatesigningrequest.certificates.k8s.io/{name} created"));
    }
    // The bootstrap token authenticated the node's CSR; its RBAC allows creating, not deleting.
    let user = k.ok(&["get", "csr", &from_node, "-o", "jsonpath={.spec.username}"]).await;
    assert_eq!(user, "system:bootstrap:abcdef");
    assert_eq!(node.ok(&["auth", "can-i", "create", "certificatesigningrequests"]).await.trim(), "yes");
    let (ok, out, _) = node.run(&["auth", "can-i", "delete", "csr"]).await;
    assert!(!ok && out.trim() == "no", "{out}");
    let (ok, _, err) = node.run(&["delete", "csr", &from_node]).await;
    assert!(!ok && err.contains("forbidden"), "{err}");
    let bad = cluster.kubectl(program, &format!("{label}-bad"), Credential::Token("abcdef.0123456789abcdee"));
    let (ok, _, err) = bad.run(&["get", "csr"]).await;
    assert!(!ok && err.contains("must be logged in"), "{err}");

    // apply -f of an existing object is accepted too.
    let out = k.ok(&["apply", "-f", cluster.dir.path().join(format!("{one}.yaml")).to_str().unwrap()]).await;
    assert!(out.contains(&format!("certificatesigningrequest.certificates.k8s.io/{one}")), "{out}");

    // get csr: upstream columns and values (KC-1, KC-2).
    let out = k.ok(&["get", "csr"]).await;
    assert_eq!(
        columns(out.lines().next().unwrap_or_default()),
        ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"],
        "{out}"
    );
    let one_row = row(&out, &one);
    assert!(one_row[1].ends_with('s'), "{out}");
    assert_eq!(
        &one_row[2..],
        ["kubernetes.io/kube-apiserver-client-kubelet", "kubernetes-admin", "24h", "Pending"],
        "{out}"
    );

    // get csr -w sees later changes.
    let mut watch =
        k.command(&["get", "csr", "-w"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut watch_lines = BufReader::new(watch.stdout.take().unwrap()).lines();

    // certificate approve / deny (KC-5…KC-7); a second approve sends nothing.
    let out = k.ok(&["certificate", "approve", &one]).await;
    assert_eq!(out.trim(), format!("certificatesigningrequest.certificates.k8s.io/{one} approved"));
    let rv = k.ok(&["get", "csr", &one, "-o", "jsonpath={.metadata.resourceVersion}"]).await;
    let out = k.ok(&["certificate", "approve", &one]).await;
    assert_eq!(out.trim(), format!("certificatesigningrequest.certificates.k8s.io/{one} approved"));
    assert_eq!(k.ok(&["get", "csr", &one, "-o", "jsonpath={.metadata.resourceVersion}"]).await, rv);
    let out = k.ok(&["certificate", "deny", &two]).await;
    assert_eq!(out.trim(), format!("certificatesigningrequest.certificates.k8s.io/{two} denied"));
    let (ok, _, err) = k.run(&["certificate", "deny", &one]).await;
    assert!(!ok && err.contains("is already Approved"), "{err}");

    let saw = tokio::time::timeout(Duration::from_secs(30), async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = watch_lines.next_line().await {
            seen.push(line.clone());
            if line.contains(&two) && line.contains("Denied") {
                break;
            }
        }
        seen
    })
    .await
    .expect("kubectl get -w printed the changes");
    assert!(saw.iter().any(|l| l.contains(&one) && l.contains("Approved")), "{saw:?}");
    let _ = watch.kill().await;

    let out = k.ok(&["get", "csr"]).await;
    assert_eq!(row(&out, &one).last(), Some(&"Approved"), "{out}");
    assert_eq!(row(&out, &two).last(), Some(&"Denied"), "{out}");

    // explain: the type and a field (printed from OpenAPI v3; before 1.29 kubectl reads v2 first),
    // and with the printer that reads nothing but OpenAPI v2, which every version has.
    for (path, field) in [("csr", "spec"), ("csr.spec", "signerName")] {
        let out = k.ok(&["explain", path]).await;
        assert!(out.lines().any(|l| columns(l) == ["KIND:", "CertificateSigningRequest"]), "{out}");
        assert!(out.contains(field), "{out}");
    }
    let out = k.ok(&["explain", "csr.spec", "--output=plaintext-openapiv2"]).await;
    assert!(out.lines().any(|l| columns(l) == ["RESOURCE:", "spec", "<Object>"]), "{out}");
    assert!(out.lines().any(|l| columns(l) == ["signerName", "<string>", "-required-"]), "{out}");

    // delete csr
    let out = k.ok(&["delete", "csr", &one]).await;
    assert_eq!(out.trim(), format!("certificatesigningrequest.certificates.k8s.io \"{one}\" deleted"));
    let (ok, _, err) = k.run(&["get", "csr", &one]).await;
    assert!(!ok && (err.contains("NotFound") || err.contains("not found")), "{err}");
    let (ok, out, err) = k.run(&["certificate", "approve", "nothing-here"]).await;
    assert!(!ok, "{out}{err}");
}

/// What reads differently across kubectl versions, with `kubectl` itself: api-resources,
/// version, raw discovery, describe, yaml output and Secrets.
#[tokio::test]
async fn kubectl_discovery_describe_and_secrets() {
    let Some(cluster) = Cluster::start().await else { return };
    let k = cluster.admin();
    let file = cluster.csr_file("csr-one", "n1");
    k.ok(&["create", "-f", file.to_str().unwrap()]).await;
    k.ok(&["certificate", "approve", "csr-one"]).await;

    let resources = k.ok(&["api-resources"]).await;
    assert!(
        resources.lines().any(|l| columns(l).starts_with(&[
            "certificatesigningrequests",
            "csr",
            "certificates.k8s.io/v1",
            "false"
        ])),
        "{resources}"
    );
    let version = k.ok(&["version"]).await;
    assert!(version.contains("Server Version: v1.33.0"), "{version}");

    // get --raw of the group-version document.
    let raw: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/apis/certificates.k8s.io/v1"]).await).unwrap();
    assert_eq!(raw["kind"], "APIResourceList");
    assert_eq!(raw["resources"][0]["name"], "certificatesigningrequests");

    // describe (also lists events, which this server does not serve) and yaml output.
    let out = k.ok(&["describe", "csr", "csr-one"]).await;
    assert!(
        out.contains("Requesting User:     kubernetes-admin")
            && out.contains("Status:              Approved"),
        "{out}"
    );
    let yaml = k.ok(&["get", "csr", "csr-one", "-o", "yaml"]).await;
    assert!(yaml.contains("signerName: kubernetes.io/kube-apiserver-client-kubelet"), "{yaml}");

    create_bootstrap_token(&k).await;
    let out = k.ok(&["-n", "kube-system", "get", "secrets"]).await;
    assert!(out.contains("bootstrap-token-abcdef") && out.contains("bootstrap.kubernetes.io/token"), "{out}");
    let (ok, _, err) =
        k.run(&["-n", "default", "create", "secret", "generic", "x", "--from-literal=a=b"]).await;
    assert!(!ok && err.contains("forbidden"), "{err}");
    cluster.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn kubectl_auth_whoami_with_a_certificate_and_a_token() {
    let Some(cluster) = Cluster::start().await else { return };
    let k = cluster.admin();
    let out = k.ok(&["auth", "whoami"]).await;
    let rows: Vec<Vec<&str>> = out.lines().map(columns).collect();
    assert_eq!(rows[0], ["ATTRIBUTE", "VALUE"], "{out}");
    assert_eq!(rows[1], ["Username", "kubernetes-admin"], "{out}");
    assert_eq!(rows[2], ["Groups", "[system:masters", "system:authenticated]"], "{out}");
    assert!(
        out.contains("authentication.kubernetes.io/credential-id") && out.contains("X509SHA256="),
        "{out}"
    );

    create_bootstrap_token(&k).await;
    let node =
        cluster.kubectl(cluster.default_kubectl(), "bootstrap", Credential::Token("abcdef.0123456789abcdef"));
    let review: serde_json::Value =
        serde_json::from_str(&node.ok(&["auth", "whoami", "-o", "json"]).await).unwrap();
    assert_eq!(review["apiVersion"], "authentication.k8s.io/v1", "{review}");
    assert_eq!(review["kind"], "SelfSubjectReview", "{review}");
    assert_eq!(
        review["status"]["userInfo"],
        serde_json::json!({"username": "system:bootstrap:abcdef",
            "groups": ["system:bootstrappers", "system:authenticated"]})
    );
    let out = k.ok(&["explain", "selfsubjectreviews.status.userInfo"]).await;
    assert!(out.contains("KIND:       SelfSubjectReview") && out.contains("username"), "{out}");
    let resources = k.ok(&["api-resources", "--api-group", "authentication.k8s.io"]).await;
    assert!(
        resources.lines().any(|l| columns(l)
            == ["selfsubjectreviews", "authentication.k8s.io/v1", "false", "SelfSubjectReview"]),
        "{resources}"
    );
    cluster.server.shutdown().await.unwrap();
}

/// `kubectl create secret` of bootstrap token `abcdef.0123456789abcdef`; kubectl's output.
async fn create_bootstrap_token(k: &Kubectl) -> String {
    k.ok(&[
        "-n",
        "kube-system",
        "create",
        "secret",
        "generic",
        "bootstrap-token-abcdef",
        "--type",
        "bootstrap.kubernetes.io/token",
        "--from-literal=token-id=abcdef",
        "--from-literal=token-secret=0123456789abcdef",
        "--from-literal=usage-bootstrap-authentication=true",
    ])
    .await
}

/// A CA certificate in PEM, indented for a YAML block scalar.
fn ca_pem_yaml(cn: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

/// ClusterTrustBundles with every kubectl: create -f (strict validation through OpenAPI),
/// get (upstream's NAME and SIGNERNAME columns), the field selector, describe, and a refusal.
#[tokio::test]
async fn kubectl_creates_gets_and_describes_cluster_trust_bundles() {
    let Some(cluster) = Cluster::start().await else { return };
    for program in &cluster.kubectls {
        let label = program.file_name().unwrap().to_str().unwrap().replace('.', "-");
        let k = cluster.kubectl(program, &format!("{label}-ctb"), Credential::Cert(&cluster.admin));
        let (linked, unlinked) =
            (format!("kubernetes.io:kube-apiserver-client-kubelet:{label}"), format!("{label}-roots"));
        let file = cluster.dir.path().join(format!("{label}-bundles.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: certificates.k8s.io/v1beta1\nkind: ClusterTrustBundle\nmetadata:\n  name: {linked}\nspec:\n  signerName: kubernetes.io/kube-apiserver-client-kubelet\n  trustBundle: |\n{}---\napiVersion: certificates.k8s.io/v1beta1\nkind: ClusterTrustBundle\nmetadata:\n  name: {unlinked}\nspec:\n  trustBundle: |\n{}",
                ca_pem_yaml("linked"),
                ca_pem_yaml("unlinked")
            ),
        )
        .unwrap();
        let out = k.ok(&["create", "-f", file.to_str().unwrap()]).await;
        assert!(out.contains(&format!("clustertrustbundle.certificates.k8s.io/{linked} created")), "{out}");

        let out = k.ok(&["get", "clustertrustbundles"]).await;
        assert_eq!(columns(out.lines().next().unwrap_or_default()), ["NAME", "SIGNERNAME"], "{out}");
        assert_eq!(
            row(&out, &linked),
            [linked.as_str(), "kubernetes.io/kube-apiserver-client-kubelet"],
            "{out}"
        );
        assert_eq!(row(&out, &unlinked), [unlinked.as_str(), "<none>"], "{out}");
        let out = k
            .ok(&[
                "get",
                "clustertrustbundles",
                "--field-selector",
                "spec.signerName=kubernetes.io/kube-apiserver-client-kubelet",
                "-o",
                "name",
            ])
            .await;
        assert!(out.contains(&linked) && !out.contains(&unlinked), "{out}");

        let out = k.ok(&["describe", "clustertrustbundle", &linked]).await;
        assert!(out.lines().any(|l| columns(l) == ["Name:", linked.as_str()]), "{out}");
        assert!(out.contains("Signer Name:") && out.contains("BEGIN CERTIFICATE"), "{out}");

        // A bundle without anchors is refused with upstream's sentence.
        let (ok, _, err) = k
            .run(&[
                "patch",
                "clustertrustbundle",
                &unlinked,
                "--type=merge",
                "-p",
                r#"{"spec":{"trustBundle":"none"}}"#,
            ])
            .await;
        assert!(!ok && err.contains("at least one trust anchor must be provided"), "{err}");
    }
    cluster.server.shutdown().await.unwrap();
}
