//! Configuration layered with figment: built-in defaults < TOML file (`--config`) <
//! `KUBECERT_SIGNER_*` environment variables (`__` separates nested keys) < flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use kubecert_authority::{ActivationRules, IssuancePolicy, Policy, PolicyConfig, Schedule};
use kubecert_csr::SIGNER_KUBECERT_NODE_IDENTITY as NODE_IDENTITY;
use serde::{Deserialize, Serialize};

use kubecert_cli::LogFormat;
use kubecert_reload::KeyExchange;

use crate::ca::CaDir;
use crate::ca::command::CaSettings;
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
    /// `serve`: how long after expiry a node's client certificate still lets it recover with its
    /// key, at `POST /apis/kubecert.io/v1/recover` (Go duration; recovery is off when unset).
    pub recovery_max_expired: Option<String>,
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
    /// Directory of the ML-DSA-65 CA (ca.crt, ca.key) that signs `kubecert.io/node-identity`,
    /// generated there on first start (feature `ml-dsa`; without the feature setting it is an
    /// error). Unset: requests to that signer name are left alone, as kube-controller-manager
    /// leaves signer names it does not serve.
    pub node_identity_ca: Option<PathBuf>,
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
    /// CA generations state directory (journal, each generation's key and certificates).
    /// `serve` uses DATA_DIR/pki/generations when no CA files are configured; `controller` and
    /// `serve` with CA files roll the CA only when this is set, importing `ca_cert`/`ca_key` as
    /// generation 1 on first use.
    pub ca_state_dir: Option<PathBuf>,
    /// Lifetime of a CA root made by `signer ca prepare` (and of the CA `serve` creates on first
    /// start), Go duration.
    pub ca_lifetime: String,
    /// Run the CA roll by itself: prepare and publish at `ca_prepare_at` of the active root's
    /// lifetime, activate at `ca_activate_at`, retire once the old key's leaves have expired.
    pub ca_auto_roll: bool,
    /// Fraction of the active root's lifetime at which the automatic roll prepares.
    pub ca_prepare_at: f64,
    /// Fraction of the active root's lifetime at which the automatic roll activates.
    pub ca_activate_at: f64,
    /// How long a new root must have been published before activation (Go duration; unset: half
    /// the time between prepare and activate, at most 24h).
    pub ca_min_publish_age: Option<String>,
    /// Share of nodes (0–1) that must report trusting a new root before activation (unset: not
    /// checked). Until a fleet status source is wired in, setting it refuses activation.
    pub ca_min_trusting_share: Option<f64>,
    /// Also write the trust bundle (PEM roots of every trusted generation) to this file.
    pub trust_bundle_out: Option<PathBuf>,
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
            recovery_max_expired: None,
            cluster_signing_duration: "8760h".into(),
            backdate: "5m".into(),
            metrics_addr: None,
            log_format: LogFormat::Text,
            tls_key_exchange: KeyExchange::default(),
            kubeconfig: None,
            ca_cert: None,
            ca_key: None,
            node_identity_ca: None,
            signer_cas: BTreeMap::new(),
            leader_elect: false,
            lease_namespace: "kube-system".into(),
            lease_name: "kubecert-signer".into(),
            lease_duration: "15s".into(),
            cleaner_interval: "1h".into(),
            ca_reload_interval: "10s".into(),
            ca_state_dir: None,
            ca_lifetime: "87600h".into(),
            ca_auto_roll: false,
            ca_prepare_at: kubecert_authority::DEFAULT_PREPARE_AT,
            ca_activate_at: kubecert_authority::DEFAULT_ACTIVATE_AT,
            ca_min_publish_age: None,
            ca_min_trusting_share: None,
            trust_bundle_out: None,
            policy: PolicyConfig::default(),
        }
    }
}

/// Reads the layers. `flags` serializes only the flags that were given.
pub fn load(common: &CommonArgs, flags: &impl Serialize) -> Result<SignerConfig> {
    load_file(common.config.as_deref(), flags)
}

/// [`load`] with the configuration file given directly.
pub fn load_file(file: Option<&std::path::Path>, flags: &impl Serialize) -> Result<SignerConfig> {
    let mut figment = Figment::new();
    if let Some(path) = file {
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
            (Some(_), None, _) | (None, Some(_), _) => bail!("ca_cert and ca_key must be given together"),
            (Some(_), Some(_), false) => {
                bail!(
                    "ca_cert/ca_key (one CA for every signer) and signer_cas (one per signer) cannot be mixed"
                )
            }
            (None, None, false)
                if self.node_identity_ca.is_some() && self.signs_node_identity_by_signer_cas() =>
            {
                bail!(
                    "{NODE_IDENTITY}: give its CA once, as node_identity_ca or in signer_cas, not both (two signers would race for its requests)"
                )
            }
            (None, None, false) => Ok(Some(CaSelection::PerSigner(self.signer_cas.clone()))),
        }
    }

    fn signs_node_identity_by_signer_cas(&self) -> bool {
        self.signer_cas.contains_key(NODE_IDENTITY)
    }

    /// The approval policy. The approver acts on `kubecert.io/node-identity` only when this
    /// signer signs it (`node_identity_ca`, or that name in `signer_cas`): otherwise it leaves
    /// those requests alone, as kube-controller-manager does for signer names it does not
    /// serve, rather than approving what nothing here would sign.
    pub fn approval_policy(&self) -> Result<Policy> {
        Ok(Policy::new(self.approval_config())?)
    }

    fn approval_config(&self) -> PolicyConfig {
        let mut policy = self.policy.clone();
        if self.node_identity_ca.is_none()
            && !self.signs_node_identity_by_signer_cas()
            && let Some(rules) = policy.signers.get_mut(NODE_IDENTITY)
        {
            rules.enabled = false;
        }
        policy
    }
}

impl SignerConfig {
    /// The CA roll settings, if CA generations are in use (see `ca_state_dir`).
    pub fn ca_settings(&self) -> Result<Option<CaSettings>> {
        let data_ca = self.data_dir.as_ref().map(|d| crate::pki::DataDir::new(d).ca_files());
        let (dir, import) = match (&self.ca_state_dir, self.ca_files()?) {
            (_, Some(CaSelection::PerSigner(_))) if self.ca_state_dir.is_some() => {
                bail!(
                    "ca_state_dir: CA generations need one CA for every signer (ca_cert/ca_key), not signer_cas"
                )
            }
            (Some(dir), Some(CaSelection::Shared(files))) => (dir.clone(), files),
            (Some(dir), None) => match data_ca {
                Some(files) => (dir.clone(), files),
                None => bail!("ca_state_dir needs ca_cert and ca_key: generation 1 is imported from them"),
            },
            (None, None) => match &self.data_dir {
                Some(data) => (data.join("pki/generations"), crate::pki::DataDir::new(data).ca_files()),
                None => return Ok(None),
            },
            (_, Some(_)) => return Ok(None),
        };
        let ca_lifetime = duration("ca_lifetime", &self.ca_lifetime)?;
        let schedule = Schedule::new(ca_lifetime, self.ca_prepare_at, self.ca_activate_at)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let min_publish_age = match &self.ca_min_publish_age {
            Some(value) => duration("ca_min_publish_age", value)?,
            None => ca_lifetime
                .mul_f64((self.ca_activate_at - self.ca_prepare_at) / 2.0)
                .min(Duration::from_secs(24 * 3600)),
        };
        if let Some(share) = self.ca_min_trusting_share
            && !(0.0..=1.0).contains(&share)
        {
            bail!("ca_min_trusting_share: {share} is not between 0 and 1");
        }
        Ok(Some(CaSettings {
            dir: CaDir::new(&dir),
            import,
            schedule,
            rules: ActivationRules { min_publish_age, min_trusting_share: self.ca_min_trusting_share },
            reload_interval: duration("ca_reload_interval", &self.ca_reload_interval)?,
        }))
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

    /// The approver acts on kubecert.io/node-identity only where this signer signs it, and its
    /// CA is given once.
    #[cfg(feature = "ml-dsa")]
    #[test]
    fn node_identity_is_approved_only_where_it_is_signed() {
        let enabled = |config: &SignerConfig| config.approval_config().signers[NODE_IDENTITY].enabled;
        let files = CaFiles { cert: "id.crt".into(), key: "id.key".into() };
        let mut config = SignerConfig::default();
        assert!(!enabled(&config), "nothing signs it: left alone");
        config.node_identity_ca = Some("identity".into());
        assert!(enabled(&config));
        config.node_identity_ca = None;
        config.signer_cas.insert(NODE_IDENTITY.into(), files);
        assert!(enabled(&config));
        config.node_identity_ca = Some("identity".into());
        let err = config.ca_files().unwrap_err().to_string();
        assert!(err.contains("give its CA once, as node_identity_ca or in signer_cas"), "{err}");
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
    fn ca_generations_are_used_with_a_data_dir_ca_or_a_state_dir() {
        let serve = SignerConfig { data_dir: Some("/d".into()), ..Default::default() };
        let settings = serve.ca_settings().unwrap().expect("serve's own CA rolls");
        assert_eq!(settings.dir, CaDir::new(std::path::Path::new("/d/pki/generations")));
        assert_eq!(settings.import.cert, PathBuf::from("/d/pki/ca.crt"));
        // Defaults: ten-year roots, prepare at 1/2, activate at 5/6, publish age capped at 24h.
        assert_eq!(settings.schedule.ca_lifetime, Duration::from_secs(87600 * 3600));
        assert_eq!(settings.rules.min_publish_age, Duration::from_secs(24 * 3600));
        let rehearsal = SignerConfig { ca_lifetime: "600s".into(), ..serve };
        let settings = rehearsal.ca_settings().unwrap().unwrap();
        assert_eq!(settings.rules.min_publish_age, Duration::from_secs(100), "half of 5/6 - 1/2 of 600s");

        let files =
            SignerConfig { ca_cert: Some("c".into()), ca_key: Some("k".into()), ..Default::default() };
        assert!(files.ca_settings().unwrap().is_none(), "CA files without a state dir: no roll");
        let controller = SignerConfig { ca_state_dir: Some("/s".into()), ..files };
        let settings = controller.ca_settings().unwrap().unwrap();
        assert_eq!(settings.dir, CaDir::new(std::path::Path::new("/s")));
        assert_eq!(settings.import.key, PathBuf::from("k"));

        let bare = SignerConfig { ca_state_dir: Some("/s".into()), ..Default::default() };
        assert!(bare.ca_settings().unwrap_err().to_string().contains("needs ca_cert and ca_key"));
        let mut per_signer = SignerConfig { ca_state_dir: Some("/s".into()), ..Default::default() };
        per_signer
            .signer_cas
            .insert("kubernetes.io/kubelet-serving".into(), CaFiles { cert: "a".into(), key: "b".into() });
        assert!(per_signer.ca_settings().unwrap_err().to_string().contains("one CA for every signer"));
        let bad = SignerConfig { ca_min_trusting_share: Some(1.5), ..controller };
        assert!(bad.ca_settings().unwrap_err().to_string().contains("not between 0 and 1"));
        let bad = SignerConfig { ca_prepare_at: 0.9, ..Default::default() };
        let bad = SignerConfig { data_dir: Some("/d".into()), ..bad };
        assert!(bad.ca_settings().unwrap_err().to_string().contains("prepare (0.9) < activate"));
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
