//! Configuration layered with figment: built-in defaults < TOML file (`--config`) <
//! `KUBECERT_SIGNER_*` environment variables (`__` separates nested keys) < flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use kubecert_authority::{IssuancePolicy, PolicyConfig};
use serde::{Deserialize, Serialize};

use kubecert_cli::LogFormat;
use kubecert_reload::KeyExchange;

use crate::cli::CommonArgs;

/// Prefix of the environment variables.
pub const ENV_PREFIX: &str = "KUBECERT_SIGNER_";

/// Everything `serve` and `controller` can be told; the defaults are in `Default` below.
/// (These doc comments are the descriptions in docs/configuration/signer.md.)
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))] // docs/configuration/signer.md shows the serialized defaults.
#[serde(default, deny_unknown_fields)]
pub struct SignerConfig {
    /// `serve`: state, CA and admin.kubeconfig.
    pub data_dir: Option<PathBuf>,
    /// `serve`: HTTPS address of the API.
    pub listen: SocketAddr,
    /// Lifetime of issued certificates, and the most a request may ask for (Go duration).
    pub cluster_signing_duration: String,
    /// How far NotBefore lies before the signing time (Go duration).
    pub backdate: String,
    /// Address of the plain-HTTP metrics and /healthz endpoint (none when unset).
    pub metrics_addr: Option<SocketAddr>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// TLS key exchange of the API `serve` serves and of the API client of `controller`:
    /// `pq-preferred`, `pq-required` or `classic`.
    pub tls_key_exchange: KeyExchange,
    /// `controller`: kubeconfig of the API.
    pub kubeconfig: Option<PathBuf>,
    /// One CA for every signer name: certificate file. `serve` generates one in DATA_DIR/pki
    /// when neither this nor `signer_cas` is set.
    pub ca_cert: Option<PathBuf>,
    /// One CA for every signer name: key file.
    pub ca_key: Option<PathBuf>,
    /// Or one CA per signer name (SPEC SG-1; mixing with `ca_cert`/`ca_key` is an error).
    pub signer_cas: BTreeMap<String, CaFiles>,
    /// `controller`: hold a Lease while working.
    pub leader_elect: bool,
    /// `controller`: namespace of the Lease.
    pub lease_namespace: String,
    /// `controller`: name of the Lease.
    pub lease_name: String,
    /// `controller`: how long a Lease stays valid without renewal, i.e. how long a dead leader
    /// blocks the others (as kube-controller-manager's). The leader renews when a third of it is left.
    pub lease_duration: String,
    /// How often the cleaner runs (as upstream's).
    pub cleaner_interval: String,
    /// How often CA files are checked for changes.
    pub ca_reload_interval: String,
    /// Approval policy per signer name (see kubecert-authority's `PolicyConfig`).
    #[cfg_attr(test, serde(skip_serializing))] // Not Serialize; documented field by field.
    pub policy: PolicyConfig,
}

/// A CA's certificate and key files.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize))]
#[serde(deny_unknown_fields)]
pub struct CaFiles {
    /// Certificate (exactly one).
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

impl Default for SignerConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            cluster_signing_duration: "8760h".into(),
            backdate: "5m".into(),
            metrics_addr: None,
            log_format: LogFormat::Text,
            tls_key_exchange: KeyExchange::default(),
            kubeconfig: None,
            ca_cert: None,
            ca_key: None,
            signer_cas: BTreeMap::new(),
            leader_elect: false,
            lease_namespace: "kube-system".into(),
            lease_name: "kubecert-signer".into(),
            lease_duration: "15s".into(),
            cleaner_interval: "1h".into(),
            ca_reload_interval: "10s".into(),
            policy: PolicyConfig::default(),
        }
    }
}

/// Reads the layers. `flags` serializes only the flags that were given.
pub fn load(common: &CommonArgs, flags: &impl Serialize) -> Result<SignerConfig> {
    let mut figment = Figment::new();
    if let Some(path) = &common.config {
        // file_exact: a mistyped path is an error, not silently nothing.
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
        .merge(Serialized::defaults(flags))
        .extract::<SignerConfig>()
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))
}

/// Applies `--experimental-cluster-signing-duration`, the deprecated alias, to the flags (the
/// new flag wins when both are given). Returns whether the alias was used, for a warning.
pub fn apply_deprecated_alias(common: &mut CommonArgs) -> bool {
    let Some(value) = common.experimental_cluster_signing_duration.take() else { return false };
    common.cluster_signing_duration.get_or_insert(value);
    true
}

/// A Go-style duration (`8760h`, `5m`, `60s`, `0s`, `1h30m`), naming the setting on error.
pub fn duration(setting: &str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value)
        .with_context(|| format!("{setting}: {value:?} is not a duration such as 8760h or 5m"))
}

impl SignerConfig {
    /// The lifetime rules of issued certificates.
    pub fn issuance(&self) -> Result<IssuancePolicy> {
        let ttl = duration("cluster_signing_duration", &self.cluster_signing_duration)?;
        if ttl.is_zero() {
            bail!("cluster_signing_duration must be more than 0s");
        }
        Ok(IssuancePolicy { ttl, backdate: duration("backdate", &self.backdate)? })
    }

    /// The CA files to use, if any were configured (SPEC SG-1).
    pub fn ca_files(&self) -> Result<Option<CaSelection>> {
        match (&self.ca_cert, &self.ca_key, self.signer_cas.is_empty()) {
            (None, None, true) => Ok(None),
            (Some(cert), Some(key), true) => {
                Ok(Some(CaSelection::Shared(CaFiles { cert: cert.clone(), key: key.clone() })))
            }
            (None, None, false) => Ok(Some(CaSelection::PerSigner(self.signer_cas.clone()))),
            (Some(_), None, _) | (None, Some(_), _) => bail!("ca_cert and ca_key must be given together"),
            (Some(_), Some(_), false) => {
                bail!(
                    "ca_cert/ca_key (one CA for every signer) and signer_cas (one per signer) cannot be mixed"
                )
            }
        }
    }
}

/// Which CA files sign for which signer names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSelection {
    /// One CA for every signer name.
    Shared(CaFiles),
    /// One CA per listed signer name.
    PerSigner(BTreeMap<String, CaFiles>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn serve_args(argv: &[&str]) -> crate::cli::ServeArgs {
        match Cli::parse_from(argv).command {
            Command::Serve(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's Error.
    fn defaults_then_file_then_flags() {
        figment::Jail::expect_with(|jail| {
            let args = serve_args(&["signer", "serve", "--data-dir", "/d"]);
            let config = load(&args.common, &args).unwrap();
            assert_eq!(config.cluster_signing_duration, "8760h");
            assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 6443)));

            jail.create_file("signer.toml", "cluster_signing_duration = \"24h\"\nbackdate = \"1m\"\n")?;
            let args = serve_args(&["signer", "serve", "--config", "signer.toml", "--backdate", "0s"]);
            let config = load(&args.common, &args).unwrap();
            assert_eq!(config.cluster_signing_duration, "24h", "file over default");
            assert_eq!(config.backdate, "0s", "flag over file");

            jail.set_env("KUBECERT_SIGNER_CLUSTER_SIGNING_DURATION", "48h");
            let config = load(&args.common, &args).unwrap();
            assert_eq!(config.cluster_signing_duration, "48h", "env over file");
            let args = serve_args(&[
                "signer",
                "serve",
                "--config",
                "signer.toml",
                "--cluster-signing-duration",
                "60s",
            ]);
            assert_eq!(load(&args.common, &args).unwrap().cluster_signing_duration, "60s", "flag over env");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's Error.
    fn mistyped_config_path_and_unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            let args = serve_args(&["signer", "serve", "--config", "nope.toml"]);
            let err = load(&args.common, &args).unwrap_err().to_string();
            assert!(err.contains("nope.toml"), "{err}");
            jail.create_file("bad.toml", "cluster_signing_duraton = \"24h\"\n")?;
            let args = serve_args(&["signer", "serve", "--config", "bad.toml"]);
            let err = load(&args.common, &args).unwrap_err().to_string();
            assert!(err.contains("cluster_signing_duraton"), "{err}");
            Ok(())
        });
    }

    /// docs/configuration/signer.md: every command and flag, every key with its default, the
    /// nested tables.
    #[test]
    fn generated_docs_configuration() {
        use clap::CommandFactory as _;
        use kubecert_authority::POLICY_SIGNERS;

        use kubecert_cli::docgen::{self, Layering, Nested};

        let keys =
            docgen::keys(include_str!("config.rs"), "pub struct SignerConfig", &SignerConfig::default());
        let signers: Vec<String> = POLICY_SIGNERS.iter().map(|s| format!("`{s}`")).collect();
        let nested = [
            Nested {
                table: "signer_cas.\"<signer name>\"".into(),
                intro: "One CA per signer name, instead of `ca_cert` and `ca_key`.".into(),
                members: docgen::keys_without_defaults(include_str!("config.rs"), "pub struct CaFiles"),
            },
            Nested {
                table: "policy.signers.\"<signer name>\"".into(),
                intro: format!(
                    "The approval policy of each signer name: {}. A signer left out, or a key left out, \
                     keeps its default (kubecert-authority's `SignerPolicy::default()`).",
                    signers.join(", ")
                ),
                members: docgen::keys(
                    include_str!("../../../crates/authority/src/config.rs"),
                    "pub struct SignerPolicy",
                    &kubecert_authority::SignerPolicy::default(),
                ),
            },
        ];
        let layering = Layering {
            commands: &["signer serve", "signer controller"],
            env_prefix: ENV_PREFIX,
            keys: &keys,
            nested: &nested,
        };
        docgen::check_configuration("signer", Cli::command(), &layering);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's Error.
    fn docs_configuration_example_loads() {
        let example =
            kubecert_cli::docgen::toml_example(include_str!("../../../docs/configuration.md"), "signer.toml");
        figment::Jail::expect_with(|jail| {
            jail.create_file("signer.toml", example)?;
            let args = serve_args(&["signer", "serve", "--config", "signer.toml"]);
            let config = load(&args.common, &args).unwrap();
            assert!(config.metrics_addr.is_some() && config.ca_files().unwrap().is_some());
            config.issuance().unwrap();
            kubecert_authority::Policy::new(config.policy).unwrap();
            Ok(())
        });
    }

    #[test]
    fn deprecated_alias_sets_the_duration_unless_the_new_flag_is_given() {
        let mut args = serve_args(&["signer", "serve", "--experimental-cluster-signing-duration", "2h"]);
        assert!(apply_deprecated_alias(&mut args.common));
        assert_eq!(args.common.cluster_signing_duration.as_deref(), Some("2h"));
        let mut args = serve_args(&[
            "signer",
            "serve",
            "--experimental-cluster-signing-duration",
            "2h",
            "--cluster-signing-duration",
            "3h",
        ]);
        apply_deprecated_alias(&mut args.common);
        assert_eq!(args.common.cluster_signing_duration.as_deref(), Some("3h"));
    }

    #[test]
    fn durations_and_ca_selection() {
        let mut config = SignerConfig {
            backdate: "0s".into(),
            cluster_signing_duration: "60s".into(),
            ..Default::default()
        };
        assert_eq!(
            config.issuance().unwrap(),
            IssuancePolicy { ttl: Duration::from_secs(60), backdate: Duration::ZERO }
        );
        config.backdate = "5 parsecs".into();
        assert!(config.issuance().unwrap_err().to_string().starts_with("backdate: \"5 parsecs\""));
        assert_eq!(config.ca_files().unwrap(), None);
        config.ca_cert = Some("ca.crt".into());
        assert!(config.ca_files().unwrap_err().to_string().contains("together"));
        config.ca_key = Some("ca.key".into());
        config
            .signer_cas
            .insert("kubernetes.io/kubelet-serving".into(), CaFiles { cert: "a".into(), key: "b".into() });
        assert!(config.ca_files().unwrap_err().to_string().contains("cannot be mixed"));
    }
}
