//! The built-in authorizer: upstream's default RBAC for the resources served here (SPEC
//! AD-5…AD-7) plus the kubeadm-style bindings, as data. A pure function used for requests and
//! for SubjectAccessReviews.

use crate::auth::{AUTHENTICATED_GROUP, UNAUTHENTICATED_GROUP, UserInfo};

/// The user name of the embedded signer/controllers. It holds the certificate-controller role,
/// may approve kubelet-serving CSRs (our policy approves them after SAN checks) and manage
/// Leases for leader election.
pub const SIGNER_USER: &str = "system:kube-controller-manager";
/// The service account upstream's certificate controllers run as; holds the
/// `system:controller:certificate-controller` role.
pub const CERTIFICATE_CONTROLLER_USER: &str = "system:serviceaccount:kube-system:certificate-controller";
/// The service account kube-controller-manager publishes the kube-apiserver serving CA as
/// (a ClusterTrustBundle of signer `kubernetes.io/kube-apiserver-serving`); upstream's
/// default RBAC lets it attest for that signer only.
pub const SERVING_BUNDLE_PUBLISHER_USER: &str =
    "system:serviceaccount:kube-system:kube-apiserver-serving-clustertrustbundle-publisher";
/// Members may do everything.
pub const MASTERS_GROUP: &str = "system:masters";

/// What a request wants to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `create`, `approve`, …
    pub verb: String,
    /// Set for resource requests.
    pub resource: Option<ResourceAttributes>,
    /// The URL path, for non-resource requests.
    pub path: String,
}

/// The resource part of [`Attributes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    /// API group ("" = core).
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource, may be empty.
    pub subresource: String,
    /// Namespace, empty for cluster scope.
    pub namespace: String,
    /// Object name, may be empty.
    pub name: String,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with the reason (which binding allowed it).
    Allow(String),
    /// Not allowed; the text is upstream's denial sentence.
    Deny(String),
}

impl Decision {
    /// Whether access is allowed.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

struct Rule {
    verbs: &'static [&'static str],
    groups: &'static [&'static str],
    /// `resource` or `resource/subresource`.
    resources: &'static [&'static str],
    names: &'static [&'static str],
    /// Non-resource URL patterns (`/healthz`, `/api/*`).
    paths: &'static [&'static str],
}

const fn rule(
    verbs: &'static [&'static str],
    groups: &'static [&'static str],
    resources: &'static [&'static str],
) -> Rule {
    Rule { verbs, groups, resources, names: &[], paths: &[] }
}

const fn named(
    verbs: &'static [&'static str],
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    names: &'static [&'static str],
) -> Rule {
    Rule { verbs, groups, resources, names, paths: &[] }
}

const fn paths(verbs: &'static [&'static str], paths: &'static [&'static str]) -> Rule {
    Rule { verbs, groups: &[], resources: &[], names: &[], paths }
}

enum Subject {
    User(&'static str),
    Group(&'static str),
    /// A service account: namespace and name (user `system:serviceaccount:<ns>:<name>`).
    ServiceAccount(&'static str, &'static str),
}

struct Binding {
    name: &'static str,
    role: &'static str,
    subjects: &'static [Subject],
    rules: &'static [Rule],
}

const CERTS: &str = "certificates.k8s.io";
const CSRS: &str = "certificatesigningrequests";
const BUNDLES: &str = "clustertrustbundles";
const READ: &[&str] = &["get", "list", "watch"];
const ALL_VERBS: &[&str] = &["*"];

const CSR_REQUESTER: &[Rule] = &[rule(&["create", "get", "list", "watch"], &[CERTS], &[CSRS])];

const CERTIFICATE_CONTROLLER: &[Rule] = &[
    rule(&["get", "list", "watch", "delete"], &[CERTS], &[CSRS]),
    rule(
        &["update"],
        &[CERTS],
        &["certificatesigningrequests/status", "certificatesigningrequests/approval"],
    ),
    named(&["approve"], &[CERTS], &["signers"], &["kubernetes.io/kube-apiserver-client-kubelet"]),
    named(
        &["sign"],
        &[CERTS],
        &["signers"],
        &[
            "kubernetes.io/legacy-unknown",
            "kubernetes.io/kube-apiserver-client",
            "kubernetes.io/kube-apiserver-client-kubelet",
            "kubernetes.io/kubelet-serving",
        ],
    ),
    rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
];

/// The signers `signer serve`'s CA signs for (kubecert-authority's `CA_SIGNERS`), whose
/// trust bundles it publishes.
const ISSUED_SIGNERS: [&str; 4] = [
    "kubernetes.io/kube-apiserver-client-kubelet",
    "kubernetes.io/kubelet-serving",
    "kubernetes.io/kube-apiserver-client",
    "kubernetes.io/legacy-unknown",
];

const BINDINGS: &[Binding] = &[
    Binding {
        name: "cluster-admin",
        role: "cluster-admin",
        subjects: &[Subject::Group(MASTERS_GROUP)],
        rules: &[rule(ALL_VERBS, &["*"], &["*"]), paths(ALL_VERBS, &["*"])],
    },
    Binding {
        name: "system:public-info-viewer",
        role: "system:public-info-viewer",
        subjects: &[Subject::Group(AUTHENTICATED_GROUP), Subject::Group(UNAUTHENTICATED_GROUP)],
        rules: &[paths(&["get"], &["/healthz", "/livez", "/readyz", "/version", "/version/"])],
    },
    Binding {
        name: "system:discovery",
        role: "system:discovery",
        subjects: &[Subject::Group(AUTHENTICATED_GROUP)],
        rules: &[paths(
            &["get"],
            &[
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/openapi",
                "/openapi/*",
                "/healthz",
                "/livez",
                "/readyz",
                "/version",
                "/version/",
            ],
        )],
    },
    Binding {
        name: "system:basic-user",
        role: "system:basic-user",
        subjects: &[Subject::Group(AUTHENTICATED_GROUP)],
        rules: &[
            rule(&["create"], &["authorization.k8s.io"], &["selfsubjectaccessreviews"]),
            rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
        ],
    },
    Binding {
        name: "system:node-bootstrapper",
        role: "system:node-bootstrapper",
        subjects: &[Subject::Group("system:bootstrappers")],
        rules: CSR_REQUESTER,
    },
    Binding {
        name: "kubeadm:node-autoapprove-bootstrap",
        role: "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        subjects: &[Subject::Group("system:bootstrappers")],
        rules: &[rule(&["create"], &[CERTS], &["certificatesigningrequests/nodeclient"])],
    },
    Binding {
        name: "system:node",
        role: "system:node",
        subjects: &[Subject::Group("system:nodes")],
        rules: &[
            rule(&["create", "get", "list", "watch"], &[CERTS], &[CSRS]),
            rule(&["get", "create", "update", "patch", "delete"], &["coordination.k8s.io"], &["leases"]),
            // For the kubelet's clusterTrustBundle projected volumes (and kubecert's trust source).
            rule(READ, &[CERTS], &[BUNDLES]),
        ],
    },
    Binding {
        name: "system:cluster-trust-bundle-discovery",
        role: "system:cluster-trust-bundle-discovery",
        subjects: &[Subject::Group("system:serviceaccounts")],
        rules: &[rule(READ, &[CERTS], &[BUNDLES])],
    },
    Binding {
        name: "kubeadm:node-autoapprove-certificate-rotation",
        role: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        subjects: &[Subject::Group("system:nodes")],
        rules: &[rule(&["create"], &[CERTS], &["certificatesigningrequests/selfnodeclient"])],
    },
    Binding {
        name: "system:controller:certificate-controller",
        role: "system:controller:certificate-controller",
        subjects: &[
            Subject::ServiceAccount("kube-system", "certificate-controller"),
            Subject::User(SIGNER_USER),
        ],
        rules: CERTIFICATE_CONTROLLER,
    },
    Binding {
        name: "system:controller:kube-apiserver-serving-clustertrustbundle-publisher",
        role: "system:controller:kube-apiserver-serving-clustertrustbundle-publisher",
        subjects: &[Subject::ServiceAccount(
            "kube-system",
            "kube-apiserver-serving-clustertrustbundle-publisher",
        )],
        rules: &[
            named(&["attest"], &[CERTS], &["signers"], &["kubernetes.io/kube-apiserver-serving"]),
            rule(&["create", "update", "delete", "list", "watch"], &[CERTS], &[BUNDLES]),
        ],
    },
    Binding {
        name: "kubecert:signer",
        role: "kubecert:signer",
        subjects: &[Subject::User(SIGNER_USER)],
        rules: &[
            named(&["approve"], &[CERTS], &["signers"], &["kubernetes.io/kubelet-serving"]),
            // kubecert.io/node-identity: kubecert's own ML-DSA-65 identities (signer feature
            // `ml-dsa`), for kubecert's signer only, not upstream's certificate controller.
            named(&["approve", "sign"], &[CERTS], &["signers"], &["kubecert.io/node-identity"]),
            rule(ALL_VERBS, &["coordination.k8s.io"], &["leases"]),
            rule(READ, &[CERTS], &[CSRS]),
            // Publishing the CAs of the signers it issues for, as kube-controller-manager's
            // kube-apiserver-serving bundle publisher does for its signer.
            named(&["attest"], &[CERTS], &["signers"], &ISSUED_SIGNERS),
            rule(&["create", "update", "patch", "delete", "get", "list", "watch"], &[CERTS], &[BUNDLES]),
        ],
    },
];

fn matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

fn rule_allows(rule: &Rule, attrs: &Attributes) -> bool {
    if !rule.verbs.iter().any(|v| matches(v, &attrs.verb)) {
        return false;
    }
    match &attrs.resource {
        None => rule.paths.iter().any(|p| path_matches(p, &attrs.path)),
        Some(r) => {
            let combined = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            rule.groups.iter().any(|g| matches(g, &r.group))
                && rule.resources.iter().any(|res| matches(res, &combined))
                && (rule.names.is_empty() || rule.names.contains(&r.name.as_str()))
        }
    }
}

fn subject_matches(subject: &Subject, user: &UserInfo) -> Option<String> {
    match subject {
        Subject::User(u) if *u == user.name => Some(format!("User {}", quote(u))),
        Subject::Group(g) if user.groups.iter().any(|ug| ug == g) => Some(format!("Group {}", quote(g))),
        Subject::ServiceAccount(ns, name) if user.name == format!("system:serviceaccount:{ns}:{name}") => {
            Some(format!("ServiceAccount {}", quote(&format!("{name}/{ns}"))))
        }
        _ => None,
    }
}

fn quote(s: &str) -> String {
    crate::status::quote(s)
}

/// Decides whether `user` may do `attrs`.
pub fn authorize(user: &UserInfo, attrs: &Attributes) -> Decision {
    for binding in BINDINGS {
        let Some(who) = binding.subjects.iter().find_map(|s| subject_matches(s, user)) else {
            continue;
        };
        if binding.rules.iter().any(|r| rule_allows(r, attrs)) {
            return Decision::Allow(format!(
                "RBAC: allowed by ClusterRoleBinding {} of ClusterRole {} to {who}",
                quote(binding.name),
                quote(binding.role)
            ));
        }
    }
    Decision::Deny(denial(user, attrs))
}

/// Upstream's sentence for a denied request (SPEC W-10).
fn denial(user: &UserInfo, attrs: &Attributes) -> String {
    match &attrs.resource {
        None => format!("User {} cannot {} path {}", quote(&user.name), attrs.verb, quote(&attrs.path)),
        Some(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {}", quote(&r.namespace))
            };
            format!(
                "User {} cannot {} resource {} in API group {} {scope}",
                quote(&user.name),
                attrs.verb,
                quote(&resource),
                quote(&r.group)
            )
        }
    }
}

/// Attributes for a verb on a named signer (`signers` in `certificates.k8s.io`).
pub fn signer_attributes(verb: &str, signer_name: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        resource: Some(ResourceAttributes {
            group: CERTS.into(),
            resource: "signers".into(),
            name: signer_name.into(),
            ..ResourceAttributes::default()
        }),
        path: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo::authenticated(name, groups.iter().map(|g| (*g).to_string()).collect())
    }

    fn csr(verb: &str, sub: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource: Some(ResourceAttributes {
                group: CERTS.into(),
                resource: CSRS.into(),
                subresource: sub.into(),
                ..ResourceAttributes::default()
            }),
            path: String::new(),
        }
    }

    #[test]
    fn default_rbac_table() {
        let bootstrap = user("system:bootstrap:abcdef", &["system:bootstrappers"]);
        let node = user("system:node:n1", &["system:nodes"]);
        let admin = user("admin", &[MASTERS_GROUP]);
        let signer = user(SIGNER_USER, &[]);
        let nobody = user("nobody", &[]);
        let cases = [
            (&bootstrap, csr("create", ""), true),
            (&bootstrap, csr("watch", ""), true),
            (&bootstrap, csr("delete", ""), false),
            (&bootstrap, csr("create", "nodeclient"), true),
            (&bootstrap, csr("create", "selfnodeclient"), false),
            (&bootstrap, csr("update", "approval"), false),
            (&node, csr("create", "selfnodeclient"), true),
            (&node, csr("create", "nodeclient"), false),
            (&node, csr("list", ""), true),
            (&admin, csr("deletecollection", ""), true),
            (&signer, csr("update", "approval"), true),
            (&signer, csr("update", "status"), true),
            (&signer, csr("delete", ""), true),
            (&signer, csr("create", ""), false),
            (&nobody, csr("get", ""), false),
        ];
        for (u, a, want) in cases {
            assert_eq!(authorize(u, &a).allowed(), want, "{} {a:?}", u.name);
        }
        assert!(
            authorize(&signer, &signer_attributes("approve", "kubernetes.io/kube-apiserver-client-kubelet"))
                .allowed()
        );
        assert!(authorize(&signer, &signer_attributes("sign", "kubernetes.io/kubelet-serving")).allowed());
        assert!(
            !authorize(&signer, &signer_attributes("approve", "kubernetes.io/kube-apiserver-client"))
                .allowed()
        );
        assert!(!authorize(&node, &signer_attributes("approve", "kubernetes.io/kubelet-serving")).allowed());
        // kubecert's own signer name: kubecert's signer only, not upstream's certificate controller.
        let controller = user(
            "system:serviceaccount:kube-system:certificate-controller",
            &["system:serviceaccounts", "system:serviceaccounts:kube-system"],
        );
        for verb in ["approve", "sign"] {
            let attrs = signer_attributes(verb, "kubecert.io/node-identity");
            assert!(authorize(&signer, &attrs).allowed(), "{verb}");
            assert!(!authorize(&controller, &attrs).allowed(), "{verb}");
        }
        assert!(
            authorize(&controller, &signer_attributes("sign", "kubernetes.io/kubelet-serving")).allowed()
        );
    }

    #[test]
    fn who_reads_and_writes_trust_bundles() {
        let bundles = |verb: &str| Attributes {
            verb: verb.into(),
            resource: Some(ResourceAttributes {
                group: CERTS.into(),
                resource: BUNDLES.into(),
                ..ResourceAttributes::default()
            }),
            path: String::new(),
        };
        let node = user("system:node:n1", &["system:nodes"]);
        let sa = user("system:serviceaccount:default:x", &["system:serviceaccounts"]);
        let signer = user(SIGNER_USER, &[]);
        let bootstrap = user("system:bootstrap:abcdef", &["system:bootstrappers"]);
        for verb in ["get", "list", "watch"] {
            assert!(authorize(&node, &bundles(verb)).allowed(), "{verb}");
            assert!(authorize(&sa, &bundles(verb)).allowed(), "{verb}");
        }
        for verb in ["create", "update", "delete"] {
            assert!(!authorize(&node, &bundles(verb)).allowed(), "{verb}");
            assert!(authorize(&signer, &bundles(verb)).allowed(), "{verb}");
        }
        assert!(!authorize(&bootstrap, &bundles("list")).allowed());
        for s in ISSUED_SIGNERS {
            assert!(authorize(&signer, &signer_attributes("attest", s)).allowed(), "{s}");
            assert!(!authorize(&node, &signer_attributes("attest", s)).allowed(), "{s}");
        }
        assert!(!authorize(&signer, &signer_attributes("attest", "example.com/x")).allowed());
        let publisher = user(SERVING_BUNDLE_PUBLISHER_USER, &["system:serviceaccounts"]);
        assert_eq!(
            authorize(&publisher, &signer_attributes("attest", "kubernetes.io/kube-apiserver-serving")),
            Decision::Allow("RBAC: allowed by ClusterRoleBinding \"system:controller:kube-apiserver-serving-clustertrustbundle-publisher\" of ClusterRole \"system:controller:kube-apiserver-serving-clustertrustbundle-publisher\" to ServiceAccount \"kube-apiserver-serving-clustertrustbundle-publisher/kube-system\"".into())
        );
        assert!(!authorize(&publisher, &signer_attributes("attest", ISSUED_SIGNERS[0])).allowed());
        assert!(
            authorize(&user(CERTIFICATE_CONTROLLER_USER, &[]), &signer_attributes("sign", ISSUED_SIGNERS[0]))
                .allowed()
        );
    }

    #[test]
    fn every_authenticated_user_may_review_itself() {
        let whoami = |verb: &str| Attributes {
            verb: verb.into(),
            resource: Some(ResourceAttributes {
                group: "authentication.k8s.io".into(),
                resource: "selfsubjectreviews".into(),
                ..ResourceAttributes::default()
            }),
            path: String::new(),
        };
        for u in [user("system:bootstrap:abcdef", &["system:bootstrappers"]), user("nobody", &[])] {
            assert_eq!(
                authorize(&u, &whoami("create")),
                Decision::Allow("RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\" to Group \"system:authenticated\"".into())
            );
            assert!(!authorize(&u, &whoami("list")).allowed());
        }
        assert!(!authorize(&UserInfo::anonymous(), &whoami("create")).allowed());
    }

    #[test]
    fn non_resource_paths() {
        let anon = UserInfo::anonymous();
        let get = |p: &str| Attributes { verb: "get".into(), path: p.into(), resource: None };
        assert!(authorize(&anon, &get("/healthz")).allowed());
        assert!(!authorize(&anon, &get("/apis")).allowed());
        assert!(authorize(&user("x", &[]), &get("/apis/certificates.k8s.io/v1")).allowed());
        assert_eq!(
            authorize(&anon, &get("/metrics")),
            Decision::Deny("User \"system:anonymous\" cannot get path \"/metrics\"".into())
        );
    }

    #[test]
    fn denial_sentence_matches_upstream() {
        let d = authorize(&user("system:node:n1", &["system:nodes"]), &csr("update", "approval"));
        assert_eq!(
            d,
            Decision::Deny("User \"system:node:n1\" cannot update resource \"certificatesigningrequests/approval\" in API group \"certificates.k8s.io\" at the cluster scope".into())
        );
    }

    #[test]
    fn allow_reason_names_the_binding() {
        let d =
            authorize(&user("system:bootstrap:a", &["system:bootstrappers"]), &csr("create", "nodeclient"));
        assert_eq!(
            d,
            Decision::Allow("RBAC: allowed by ClusterRoleBinding \"kubeadm:node-autoapprove-bootstrap\" of ClusterRole \"system:certificates.k8s.io:certificatesigningrequests:nodeclient\" to Group \"system:bootstrappers\"".into())
        );
    }
}
