//! Configuration layered with figment: built-in defaults < TOML file (`--config`) <
//! `KUBECERT_NODE_*` environment variables (`__` separates nested keys) < flags.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};

use kubecert_cli::LogFormat;
use kubecert_reload::KeyExchange;

use crate::cli::{Cli, IdentityKeyAlgorithm, KeyAlgorithmName};

/// The kubelet's default `--cert-dir`.
pub const DEFAULT_CERT_DIR: &str = "/var/lib/kubelet/pki";
/// The kubeconfig path kubeadm gives the kubelet.
pub const DEFAULT_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";
/// Default metrics address: loopback, outside the ports of kubelet (10248, 10250, 10255),
/// kube-proxy (10249, 10256) and the control plane (10257, 10259).
pub const DEFAULT_METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10271);
/// Prefix of the environment variables.
pub const ENV_PREFIX: &str = "KUBECERT_NODE_";

/// Everything the agent can be told; the defaults are in `Default` below. (These doc comments are
/// the descriptions in docs/configuration/node-agent.md.)
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Kubeconfig with bootstrap credentials (a bootstrap token), used when `kubeconfig` holds no
    /// valid client certificate.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// The node's kubeconfig, written after bootstrap.
    pub kubeconfig: PathBuf,
    /// Directory of the certificate and key files.
    pub cert_dir: PathBuf,
    /// Node name; unset: the host name, lowercased.
    pub node_name: Option<String>,
    /// Rotate the client certificate before it expires.
    pub rotate_certificates: bool,
    /// Request and rotate a serving certificate.
    pub rotate_server_certificates: bool,
    /// Serving certificate IP addresses; empty: the host's addresses other than loopback and
    /// link-local, followed as they change.
    pub node_ip: Vec<IpAddr>,
    /// Serving certificate DNS names; empty: the host name.
    pub node_dns: Vec<String>,
    /// Address of /metrics and /healthz.
    pub metrics_addr: SocketAddr,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Key type generated for rotations.
    pub key_algorithm: KeyAlgorithmName,
    /// Key type of the post-quantum node identity requested from `kubecert.io/node-identity`
    /// and stored as kubelet-identity-*.pem (`ml-dsa-65`, feature `ml-dsa`; off when unset).
    pub node_identity_key_algorithm: Option<IdentityKeyAlgorithm>,
    /// TLS key exchange of the API clients and the HTTPS endpoint: `pq-preferred`,
    /// `pq-required` or `classic`.
    pub tls_key_exchange: KeyExchange,
    /// Kubelet feature gates (a table of name = bool), accepted for compatibility.
    pub feature_gates: BTreeMap<String, bool>,
    /// How long the node may be without a valid client certificate while the API server answers
    /// before the agent exits for a restart into bootstrap (SPEC T-3; the kubelet's is fixed at
    /// 5m). Shorter values are for rehearsals with short lifetimes (Go duration).
    pub exit_after_expired: String,
    /// How often the renewal canary runs (Go duration; off when unset): a throwaway-key renewal
    /// through the approver and signer, verified, used to authenticate, then deleted.
    pub canary_interval: Option<String>,
    /// `bundles` or a PEM file: the trusted roots to follow (unset: the kubeconfig's CA, fixed).
    pub trust_source: Option<String>,
    /// The ClusterTrustBundle followed by `trust_source = "bundles"`.
    pub trust_bundle_name: String,
    /// Where the trusted roots are written (the kubelet's clientCAFile); unset: nowhere.
    pub client_ca_file: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            bootstrap_kubeconfig: None,
            kubeconfig: DEFAULT_KUBECONFIG.into(),
            cert_dir: DEFAULT_CERT_DIR.into(),
            node_name: None,
            rotate_certificates: true,
            rotate_server_certificates: false,
            node_ip: Vec::new(),
            node_dns: Vec::new(),
            metrics_addr: DEFAULT_METRICS_ADDR,
            log_format: LogFormat::Text,
            key_algorithm: KeyAlgorithmName::EcdsaP256,
            node_identity_key_algorithm: None,
            tls_key_exchange: KeyExchange::default(),
            feature_gates: BTreeMap::new(),
            exit_after_expired: humantime::format_duration(crate::watchdog::EXIT_AFTER).to_string(),
            canary_interval: None,
            trust_source: None,
            trust_bundle_name: crate::trust::DEFAULT_TRUST_BUNDLE.to_owned(),
            client_ca_file: None,
        }
    }
}

/// Reads the layers; `cli` contributes only the flags that were given.
pub fn load(cli: &Cli) -> Result<AgentConfig> {
    let mut figment = Figment::from(Serialized::defaults(AgentConfig::default()));
    if let Some(path) = &cli.config {
        // file_exact: a mistyped path is an error, not silently nothing.
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
        .merge(Serialized::defaults(cli))
        .extract::<AgentConfig>()
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))
}

/// What the agent says about a feature gate it was given (kubelet gates mean nothing here).
pub fn feature_gate_notice(name: &str, enabled: bool) -> String {
    match name.to_ascii_lowercase().as_str() {
        "rotatekubeletclientcertificate" => format!(
            "feature gate RotateKubeletClientCertificate={enabled} is accepted for compatibility: \
             client certificate rotation is always available; --rotate-certificates turns it on or off"
        ),
        "rotatekubeletservercertificate" => format!(
            "feature gate RotateKubeletServerCertificate={enabled} is accepted for compatibility: \
             --rotate-server-certificates turns serving certificate rotation on or off"
        ),
        _ => format!("feature gate {name}={enabled} means nothing to node-agent; ignored"),
    }
}

impl AgentConfig {
    /// `canary_interval` as a duration, if set; an error names the setting and the value.
    pub fn canary_interval(&self) -> Result<Option<std::time::Duration>> {
        let Some(value) = &self.canary_interval else { return Ok(None) };
        let interval = humantime::parse_duration(value)
            .with_context(|| format!("canary_interval: {value:?} is not a duration such as 1h or 30s"))?;
        anyhow::ensure!(!interval.is_zero(), "canary_interval must be more than 0s");
        Ok(Some(interval))
    }

    /// `exit_after_expired` as a duration; an error names the setting and the value.
    pub fn exit_after_expired(&self) -> Result<std::time::Duration> {
        humantime::parse_duration(&self.exit_after_expired).with_context(|| {
            format!("exit_after_expired: {:?} is not a duration such as 5m or 30s", self.exit_after_expired)
        })
    }

    /// The node name: configured, else the host name lowercased (as the kubelet does).
    pub fn node_name(&self) -> Result<String> {
        match &self.node_name {
            Some(name) if !name.trim().is_empty() => Ok(name.trim().to_owned()),
            _ => crate::addresses::hostname()
                .map(|h| h.to_lowercase())
                .context("no --node-name given and the host name cannot be read"),
        }
    }

    /// The serving certificate's DNS names and IP addresses: each list as configured, or its
    /// default when not configured (the host name; the host's addresses).
    pub fn serving_names(&self) -> Result<(Vec<String>, Vec<IpAddr>)> {
        let dns = if self.node_dns.is_empty() {
            vec![crate::addresses::hostname().context("reading the host name for --node-dns")?.to_lowercase()]
        } else {
            self.node_dns.iter().map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()).collect()
        };
        let ips = if self.node_ip.is_empty() {
            crate::addresses::host_addresses().context("listing the host's addresses for --node-ip")?
        } else {
            self.node_ip.clone()
        };
        Ok((dns, ips))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn load_from(argv: &[&str]) -> Result<AgentConfig> {
        load(&Cli::parse_from(argv))
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's Error.
    fn defaults_then_file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(load_from(&["node-agent"]).unwrap(), AgentConfig::default());

            jail.create_file(
                "agent.toml",
                "cert_dir = \"/file/pki\"\nnode_name = \"from-file\"\nrotate_certificates = false\n\
                 node_ip = [\"10.0.0.1\"]\n[feature_gates]\nRotateKubeletClientCertificate = true\n",
            )?;
            let config = load_from(&["node-agent", "--config", "agent.toml"]).unwrap();
            assert_eq!(config.cert_dir, PathBuf::from("/file/pki"), "file over default");
            assert!(!config.rotate_certificates);
            assert_eq!(config.node_ip, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
            assert_eq!(config.feature_gates.get("RotateKubeletClientCertificate"), Some(&true));
            assert_eq!(config.metrics_addr, DEFAULT_METRICS_ADDR, "default kept");

            jail.set_env("KUBECERT_NODE_NODE_NAME", "from-env");
            jail.set_env("KUBECERT_NODE_ROTATE_CERTIFICATES", "true");
            let config = load_from(&["node-agent", "--config", "agent.toml"]).unwrap();
            assert_eq!(config.node_name.as_deref(), Some("from-env"), "env over file");
            assert!(config.rotate_certificates);

            jail.set_env("KUBECERT_NODE_NODE_IP", "[10.0.0.5, fd00::5]");
            let config = load_from(&["node-agent", "--config", "agent.toml"]).unwrap();
            assert_eq!(
                config.node_ip,
                ["10.0.0.5", "fd00::5"].map(|ip| ip.parse::<IpAddr>().unwrap()),
                "env list"
            );

            let config = load_from(&[
                "node-agent",
                "--config",
                "agent.toml",
                "--node-name",
                "from-flag",
                "--rotate-certificates=false",
                "--node-ip",
                "10.0.0.9",
            ])
            .unwrap();
            assert_eq!(config.node_name.as_deref(), Some("from-flag"), "flag over env");
            assert!(!config.rotate_certificates, "flag over env");
            assert_eq!(config.node_ip, ["10.0.0.9".parse::<IpAddr>().unwrap()], "flag list replaces");
            assert_eq!(config.cert_dir, PathBuf::from("/file/pki"), "unflagged keys keep the file's value");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's Error.
    fn mistyped_config_path_unknown_keys_and_bad_values_are_errors() {
        figment::Jail::expect_with(|jail| {
            let err = load_from(&["node-agent", "--config", "nope.toml"]).unwrap_err().to_string();
            assert!(err.contains("nope.toml"), "{err}");
            jail.create_file("bad.toml", "cert_dri = \"/x\"\n")?;
            let err = load_from(&["node-agent", "--config", "bad.toml"]).unwrap_err().to_string();
            assert!(err.contains("cert_dri"), "{err}");
            jail.create_file("bad-ip.toml", "node_ip = [\"10.0.0.300\"]\n")?;
            let err = load_from(&["node-agent", "--config", "bad-ip.toml"]).unwrap_err().to_string();
            assert!(err.contains("node_ip"), "{err}");
            jail.set_env("KUBECERT_NODE_CERT_DRI", "/x");
            let err = load_from(&["node-agent"]).unwrap_err().to_string();
            assert!(err.contains("cert_dri"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's Error.
    fn an_empty_node_dns_flag_means_no_dns_name() {
        // In a jail too: the other tests set KUBECERT_NODE_* variables in this process.
        figment::Jail::expect_with(|_| {
            let config = load_from(&["node-agent", "--node-dns=", "--node-ip=127.0.0.1"]).unwrap();
            let ip: IpAddr = "127.0.0.1".parse().unwrap();
            assert_eq!(config.serving_names().unwrap(), (vec![], vec![ip]));
            Ok(())
        });
    }

    #[test]
    fn configured_names_win_and_empty_names_mean_none() {
        let config = AgentConfig {
            node_name: Some(" Worker-1 ".into()),
            node_dns: vec![String::new()],
            node_ip: vec!["127.0.0.1".parse().unwrap()],
            ..AgentConfig::default()
        };
        assert_eq!(config.node_name().unwrap(), "Worker-1", "a configured name is kept as given");
        let (dns, ips) = config.serving_names().unwrap();
        assert!(dns.is_empty());
        assert_eq!(ips, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    /// docs/configuration/node-agent.md: every command and flag, every key with its default.
    #[test]
    fn generated_docs_configuration() {
        use clap::CommandFactory as _;

        use kubecert_cli::docgen::{self, Layering};

        let keys = docgen::keys(include_str!("config.rs"), "pub struct AgentConfig", &AgentConfig::default());
        let layering =
            Layering { commands: &["node-agent"], env_prefix: ENV_PREFIX, keys: &keys, nested: &[] };
        docgen::check_configuration("node-agent", Cli::command(), &layering);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's Error.
    fn docs_configuration_example_loads() {
        let example = kubecert_cli::docgen::toml_example(
            include_str!("../../../docs/configuration.md"),
            "node-agent.toml",
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file("node-agent.toml", example)?;
            let config = load_from(&["node-agent", "--config", "node-agent.toml"]).unwrap();
            assert!(config.rotate_server_certificates && !config.feature_gates.is_empty());
            Ok(())
        });
    }

    #[test]
    fn feature_gate_notices_name_the_flag_that_matters() {
        assert!(
            feature_gate_notice("RotateKubeletClientCertificate", true).contains("--rotate-certificates")
        );
        assert!(
            feature_gate_notice("rotatekubeletservercertificate", false)
                .contains("--rotate-server-certificates")
        );
        assert!(feature_gate_notice("Foo", true).contains("ignored"));
    }
}
