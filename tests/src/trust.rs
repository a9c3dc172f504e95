//! What the CA-roll tests of `signer serve` (`tests/ca_roll.rs`) and of `signer controller`
//! against the real kube-apiserver (`tests/kubernetes.rs`) check alike: the signer-linked
//! ClusterTrustBundles as kubectl lists them, and the PEM blocks of a chain.

use std::collections::BTreeMap;
use std::path::Path;

use crate::run_ok;

/// The signers a kubecert CA signs for, each with a canary and a live bundle.
pub const SIGNERS: [&str; 4] = [
    "kubernetes.io/kubelet-serving",
    "kubernetes.io/kube-apiserver-client-kubelet",
    "kubernetes.io/kube-apiserver-client",
    "kubernetes.io/legacy-unknown",
];

/// The ClusterTrustBundles an API holds, as `kubectl --kubeconfig KUBECONFIG get
/// clustertrustbundles -o json` lists them: name → (spec.signerName, spec.trustBundle).
pub fn bundles_in_api(kubectl: &Path, kubeconfig: &Path) -> BTreeMap<String, (String, String)> {
    let kubeconfig = kubeconfig.to_string_lossy();
    let out = run_ok(kubectl, &["--kubeconfig", &kubeconfig, "get", "clustertrustbundles", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("kubectl JSON");
    let items = list["items"].as_array().expect("items").iter();
    items
        .map(|b| {
            let spec = &b["spec"];
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (text(&b["metadata"]["name"]), (text(&spec["signerName"]), text(&spec["trustBundle"])))
        })
        .collect()
}

/// Asserts that every signer-linked canary and live bundle of [`SIGNERS`] holds exactly `pem`,
/// with its signer name.
pub fn assert_bundles_hold(bundles: &BTreeMap<String, (String, String)>, pem: &str) {
    for signer in SIGNERS {
        for stage in ["canary", "live"] {
            let name = format!("{}:{stage}", signer.replace('/', ":"));
            let (signer_name, trust_bundle) =
                bundles.get(&name).unwrap_or_else(|| panic!("no ClusterTrustBundle {name}: {bundles:?}"));
            assert_eq!(signer_name, signer, "{name}");
            assert_eq!(trust_bundle, pem, "{name}");
        }
    }
}

/// The PEM blocks of kind `kind` (e.g. `CERTIFICATE`) in `pem`, each with its END line.
pub fn pem_blocks(pem: &str, kind: &str) -> Vec<String> {
    let begin = format!("-----BEGIN {kind}-----");
    let end = format!("-----END {kind}-----");
    pem.split(&begin)
        .skip(1)
        .map(|rest| format!("{begin}{}{end}\n", rest.split(&end).next().expect("END line")))
        .collect()
}
