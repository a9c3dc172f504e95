//! Command-line interface, with the kubelet's flag names.
//!
//! Flags that may also come from the config file or the environment are `Option`s (or empty
//! lists) serialized only when given, so that they override those layers and nothing else: a
//! clap default would silently override the file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kubecert_cli::LogFormat;
use kubecert_reload::KeyExchange;
use serde::{Deserialize, Serialize, Serializer};

use crate::config::DEFAULT_CERT_DIR;

/// kubecert node agent: bootstraps the node's client certificate with a bootstrap token, rotates
/// the client and serving certificates before they expire and swaps them into live connections.
///
/// Every flag can also be set in the --config file (same name, `_` for `-`) or as
/// KUBECERT_NODE_<NAME>; flags win over the environment, which wins over the file.
#[derive(Debug, Parser, Serialize)]
#[command(name = "node-agent", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,
    /// TOML configuration file (layers: defaults < file < KUBECERT_NODE_* env < flags).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Kubeconfig with bootstrap credentials (a bootstrap token), used when --kubeconfig holds no
    /// valid client certificate.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Kubeconfig of the node; written after bootstrap, pointing at
    /// <cert-dir>/kubelet-client-current.pem [default: /etc/kubernetes/kubelet.conf].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Directory of the certificate and key files [default: /var/lib/kubelet/pki].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_dir: Option<PathBuf>,
    /// Node name: the certificates are for system:node:<name> [default: the host name, lowercased].
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Rotate the client certificate before it expires [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotate_certificates: Option<bool>,
    /// Request and rotate a serving certificate (signer kubernetes.io/kubelet-serving) and serve
    /// --metrics-addr over HTTPS with it [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotate_server_certificates: Option<bool>,
    /// IP address for the serving certificate; repeat or separate with commas [default: the
    /// host's addresses other than loopback and link-local, followed as they change].
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_ip: Vec<IpAddr>,
    /// DNS name for the serving certificate; repeat or separate with commas; an empty value
    /// (--node-dns=) means none [default: the host name].
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_dns: Vec<String>,
    /// Address of /metrics and /healthz (HTTPS with the serving certificate when
    /// --rotate-server-certificates is on) [default: 127.0.0.1:10271].
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    /// Log format [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Key type of the keys generated for rotations [default: ecdsa-p256]. The bootstrap key is
    /// always ECDSA P-256, as the kubelet's.
    #[arg(long, value_enum, value_name = "ALG")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_algorithm: Option<KeyAlgorithmName>,
    /// Also request and rotate a post-quantum node identity from signer
    /// kubecert.io/node-identity with keys of this type, stored as kubelet-identity-*.pem in the
    /// cert dir (off when unset). Needs a node agent built with the `ml-dsa` feature.
    #[arg(long, value_enum, value_name = "ALG")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_identity_key_algorithm: Option<IdentityKeyAlgorithm>,
    /// TLS key exchange of every connection: the API clients and the HTTPS endpoint:
    /// pq-preferred (X25519MLKEM768, then X25519, secp256r1), pq-required (X25519MLKEM768 only)
    /// or classic (no ML-KEM) [default: pq-preferred].
    #[arg(long, value_enum, value_name = "KX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_exchange: Option<KeyExchange>,
    /// Kubelet feature gates, NAME=BOOL,…; accepted for command-line compatibility
    /// (e.g. RotateKubeletClientCertificate=true): rotation is always available here.
    #[arg(long, value_name = "NAME=BOOL,…", value_delimiter = ',', value_parser = parse_feature_gate)]
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "gates_as_map")]
    pub feature_gates: Vec<(String, bool)>,
    /// Exit when the node has had no valid client certificate this long while the API server
    /// answers, so that a restart bootstraps again (kubelet: 5m; shorter for rehearsals)
    /// [default: 5m].
    #[arg(long, value_name = "D")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_after_expired: Option<String>,
    /// Run the renewal canary this often (Go duration, e.g. 1h; off when unset): a throwaway-key
    /// renewal through the approver and signer, verified, used to authenticate, then deleted.
    #[arg(long, value_name = "D")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_interval: Option<String>,
    /// Follow the trusted roots of a CA roll: `bundles` (the ClusterTrustBundle named by
    /// --trust-bundle-name) or a PEM file.
    #[arg(long, value_name = "bundles|FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_source: Option<String>,
    /// The ClusterTrustBundle `--trust-source bundles` follows (a canary node: `…:canary`).
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_bundle_name: Option<String>,
    /// Write the trusted roots here (the kubelet's clientCAFile), atomically, on every change.
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

/// Subcommands; without one, the agent runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Shows the client and serving certificates in a cert dir; exits with 1 when one of them
    /// has expired or cannot be read.
    Status(StatusArgs),
    /// Runs the renewal canary once: a throwaway-key renewal through the cluster's approver and
    /// signer, verified and used to authenticate, then deleted; exits with 1 naming the failing
    /// stage.
    Canary(CanaryArgs),
}

/// `node-agent canary`.
#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// Run once and exit (the only mode; the agent runs it periodically with --canary-interval).
    #[arg(long, required = true)]
    pub once: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The node's kubeconfig: its client certificate is the live one.
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_KUBECONFIG)]
    pub kubeconfig: PathBuf,
    /// Node name [default: from the client certificate's system:node:<name>].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Key exchange of the canary's TLS connections to the API server.
    #[arg(long, value_name = "POLICY", default_value_t = KeyExchange::default())]
    pub tls_key_exchange: KeyExchange,
}

/// `node-agent status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Directory of the certificate and key files.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CERT_DIR)]
    pub cert_dir: PathBuf,
}

/// Key types the agent can generate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithmName {
    /// ECDSA on P-256 with SHA-256, the kubelet's default.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithmName {
    /// The algorithm as `kubecert-csr` names it.
    pub fn algorithm(self) -> kubecert_csr::KeyAlgorithm {
        match self {
            KeyAlgorithmName::EcdsaP256 => kubecert_csr::KeyAlgorithm::EcdsaP256,
            KeyAlgorithmName::EcdsaP384 => kubecert_csr::KeyAlgorithm::EcdsaP384,
            KeyAlgorithmName::Ed25519 => kubecert_csr::KeyAlgorithm::Ed25519,
        }
    }
}

/// Key types of the post-quantum node identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityKeyAlgorithm {
    /// ML-DSA-65 (FIPS 204).
    #[value(name = "ml-dsa-65")]
    #[serde(rename = "ml-dsa-65")]
    MlDsa65,
}

impl IdentityKeyAlgorithm {
    /// The algorithm as `kubecert-csr` names it; an error in a build without the `ml-dsa`
    /// feature.
    pub fn algorithm(self) -> anyhow::Result<kubecert_csr::KeyAlgorithm> {
        match self {
            #[cfg(feature = "ml-dsa")]
            IdentityKeyAlgorithm::MlDsa65 => Ok(kubecert_csr::KeyAlgorithm::MlDsa65),
            #[cfg(not(feature = "ml-dsa"))]
            IdentityKeyAlgorithm::MlDsa65 => anyhow::bail!(
                "node_identity_key_algorithm ml-dsa-65: this node agent was built without the ml-dsa \
                 feature (cargo build --features node-agent/ml-dsa)"
            ),
        }
    }
}

/// `Name=true` → `("Name", true)`, as the kubelet's `--feature-gates` takes them.
fn parse_feature_gate(gate: &str) -> Result<(String, bool), String> {
    let (name, value) = gate.split_once('=').ok_or_else(|| format!("{gate:?} is not NAME=BOOL"))?;
    let value = match value.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => true,
        "false" | "f" | "0" => false,
        other => return Err(format!("feature gate {name}: {other:?} is not true or false")),
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{gate:?} has no gate name"));
    }
    Ok((name.to_owned(), value))
}

/// Feature gates go to the configuration as a table, like the config file's `[feature_gates]`.
fn gates_as_map<S: Serializer>(gates: &[(String, bool)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(gates.iter().map(|(name, value)| (name, value)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_node_identity_algorithm_needs_the_ml_dsa_feature() {
        let cli = Cli::parse_from(["node-agent", "--node-identity-key-algorithm", "ml-dsa-65"]);
        let algorithm = cli.node_identity_key_algorithm.expect("parsed").algorithm();
        #[cfg(feature = "ml-dsa")]
        assert_eq!(algorithm.unwrap(), kubecert_csr::KeyAlgorithm::MlDsa65);
        #[cfg(not(feature = "ml-dsa"))]
        assert!(algorithm.unwrap_err().to_string().contains("built without the ml-dsa feature"));
    }

    #[test]
    fn kubelet_style_boolean_flags() {
        let cli =
            Cli::parse_from(["node-agent", "--rotate-certificates=false", "--rotate-server-certificates"]);
        assert_eq!(cli.rotate_certificates, Some(false));
        assert_eq!(cli.rotate_server_certificates, Some(true));
        let cli = Cli::parse_from(["node-agent"]);
        assert_eq!((cli.rotate_certificates, cli.rotate_server_certificates), (None, None));
    }

    #[test]
    fn repeated_and_comma_separated_lists() {
        let cli = Cli::parse_from([
            "node-agent",
            "--node-ip",
            "10.0.0.1,fd00::1",
            "--node-ip=10.0.0.2",
            "--node-dns",
            "a.example",
            "--feature-gates=RotateKubeletClientCertificate=true,Other=false",
        ]);
        assert_eq!(cli.node_ip.len(), 3);
        assert_eq!(cli.node_dns, ["a.example"]);
        assert_eq!(
            cli.feature_gates,
            [("RotateKubeletClientCertificate".to_owned(), true), ("Other".to_owned(), false)]
        );
    }

    #[test]
    fn bad_feature_gates_are_refused_with_the_reason() {
        let err = Cli::try_parse_from(["node-agent", "--feature-gates=Rotate"]).unwrap_err().to_string();
        assert!(err.contains("is not NAME=BOOL"), "{err}");
        let err = Cli::try_parse_from(["node-agent", "--feature-gates=A=maybe"]).unwrap_err().to_string();
        assert!(err.contains("not true or false"), "{err}");
    }

    #[test]
    fn status_takes_its_own_cert_dir_and_no_agent_flags() {
        let cli = Cli::parse_from(["node-agent", "status", "--cert-dir", "/tmp/pki"]);
        assert!(
            matches!(cli.command, Some(Command::Status(StatusArgs { cert_dir })) if cert_dir == Path::new("/tmp/pki"))
        );
        assert!(Cli::try_parse_from(["node-agent", "--node-name", "n", "status"]).is_err());
    }
}
