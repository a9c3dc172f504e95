//! Command-line interface. Flags that may also come from the config file or the environment are
//! `Option`s and serialized only when given, so that they override those layers and nothing else
//! (a clap default would silently override the file).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use kubecert_cli::LogFormat;
use kubecert_reload::KeyExchange;
use serde::Serialize;

/// kubecert signer: approves what policy allows, denies the rest with a reason, signs with the
/// cluster CA and cleans up old certificate signing requests.
#[derive(Debug, Parser)]
#[command(name = "signer", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the embedded Kubernetes-compatible API and the controllers in one process.
    Serve(ServeArgs),
    /// Runs the controllers against any Kubernetes API (a real cluster, or `signer serve`).
    Controller(ControllerArgs),
    /// Bootstrap tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Shows every node's certificates, riskiest first, from the status node agents publish on
    /// their Leases in kube-node-lease.
    Fleet(FleetArgs),
    /// Refuses recovery (`serve --recovery-max-expired`) to the certificate with this serial,
    /// from the next attempt on: writes it to DATA_DIR/recovery-deny-list.
    DenySerial(DenySerialArgs),
    /// CA generations: roll the cluster CA with overlap (status, prepare, publish, activate,
    /// retire).
    Ca(CaArgs),
}

#[derive(Debug, Args)]
pub struct DenySerialArgs {
    /// The certificate's serial number in hex (`node-agent status` shows it; `:` separators and
    /// upper case are fine).
    pub serial: String,
    /// The data directory of `signer serve`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// CA roll flags shared by `serve`, `controller` and `signer ca`.
#[derive(Debug, Args, Serialize)]
pub struct CaFlags {
    /// CA generations state directory (serve: DATA_DIR/pki/generations by default).
    #[arg(long, value_name = "DIR", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_state_dir: Option<PathBuf>,
    /// Lifetime of a new CA root (Go duration, e.g. 87600h; 600s for a rehearsal).
    #[arg(long, value_name = "D", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_lifetime: Option<String>,
    /// How long a new root must have been published before activation (Go duration).
    #[arg(long, value_name = "D", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_min_publish_age: Option<String>,
    /// Share of nodes (0–1) that must report trusting a new root before activation.
    #[arg(long, value_name = "F", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_min_trusting_share: Option<f64>,
    /// Also write the trust bundle (PEM roots of every trusted generation) to this file.
    #[arg(long, value_name = "FILE", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_bundle_out: Option<PathBuf>,
}

/// Flags shared by `serve` and `controller`; every one can also be set in the config file or as
/// `KUBECERT_SIGNER_<NAME>`.
#[derive(Debug, Args, Serialize)]
pub struct CommonArgs {
    /// TOML configuration file (layers: defaults < file < KUBECERT_SIGNER_* env < flags).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Lifetime of issued certificates, and the most a request may ask for (Go duration, e.g. 8760h).
    #[arg(long, value_name = "D")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_signing_duration: Option<String>,
    /// Deprecated alias of --cluster-signing-duration (kube-controller-manager's old flag).
    #[arg(long, value_name = "D", hide = true)]
    #[serde(skip)]
    pub experimental_cluster_signing_duration: Option<String>,
    /// How far NotBefore lies before the signing time (0s for rehearsals with short lifetimes).
    #[arg(long, value_name = "D")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backdate: Option<String>,
    /// Sign `kubecert.io/node-identity` with the ML-DSA-65 CA in DIR (ca.crt, ca.key; generated
    /// there when absent). Needs a signer built with the `ml-dsa` feature.
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_identity_ca: Option<PathBuf>,
    /// Serve Prometheus metrics and /healthz here (plain HTTP; keep it on loopback).
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    /// Log format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// TLS key exchange of every connection, served (the API of `serve`) or made (the API
    /// client of `controller`): pq-preferred (X25519MLKEM768, then X25519, secp256r1),
    /// pq-required (X25519MLKEM768 only) or classic (no ML-KEM) [default: pq-preferred].
    #[arg(long, value_enum, value_name = "KX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_exchange: Option<KeyExchange>,
    /// Roll the CA by itself: prepare at 1/2 and activate at 5/6 of the active root's lifetime.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ca_auto_roll: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub ca: CaFlags,
}

/// `signer ca`: which signer's CA, and what to do with it.
#[derive(Debug, Args, Serialize)]
pub struct CaArgs {
    #[command(subcommand)]
    #[serde(skip)]
    pub action: CaAction,
    /// TOML configuration file of the signer (its CA settings apply).
    #[arg(long, value_name = "FILE", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The data directory of `signer serve`.
    #[arg(long, value_name = "DIR", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Kubeconfig for writing ClusterTrustBundles (default with --data-dir: its admin.kubeconfig).
    #[arg(long, value_name = "FILE", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Generation 1's CA certificate, imported on first use of --ca-state-dir.
    #[arg(long, value_name = "FILE", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Generation 1's CA key.
    #[arg(long, value_name = "FILE", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub ca: CaFlags,
}

#[derive(Debug, Subcommand)]
pub enum CaAction {
    /// Shows every generation, its phase and when it entered each phase, what signs, and when
    /// the schedule acts next.
    Status {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Makes the next generation: key, self-signed root, cross-certificate signed by the active key.
    Prepare,
    /// Adds the prepared root to the trust bundles (canary, then live).
    Publish {
        /// Write the canary bundles only.
        #[arg(long)]
        canary: bool,
    },
    /// Makes the published generation sign (refused until it has been published long enough).
    Activate,
    /// Drops the retiring generation's root from the bundles (refused while its leaves are valid).
    Retire,
}

/// Output formats of `signer ca status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table.
    Text,
    /// JSON.
    Json,
}

#[derive(Debug, Args, Serialize)]
pub struct ServeArgs {
    /// Where state, the CA and admin.kubeconfig live.
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTPS API.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Let nodes whose client certificate expired less than this long ago recover with its key
    /// (Go duration, e.g. 720h; off when unset).
    #[arg(long, value_name = "D")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_max_expired: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args, Serialize)]
pub struct ControllerArgs {
    /// Kubeconfig of the API to work against (default: the in-cluster service account, else
    /// KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// CA certificate for every signer name.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// CA private key for every signer name.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<PathBuf>,
    /// Run only while holding a coordination.k8s.io/v1 Lease, so that several replicas can run.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, value_name = "NS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_namespace: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a bootstrap token (a Secret in kube-system, as `kubeadm token create` does) and
    /// prints it.
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// Kubeconfig of an identity allowed to create Secrets in kube-system.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,
    /// How long the token stays valid (Go duration).
    #[arg(long, value_name = "D", default_value = "24h")]
    pub ttl: String,
    /// Extra groups, each `system:bootstrappers:…`.
    #[arg(long, value_name = "G,…", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Also write a bootstrap kubeconfig for node-agent (server and CA from --kubeconfig).
    #[arg(long, value_name = "PATH")]
    pub write_bootstrap_kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Kubeconfig of an identity allowed to list Leases in kube-node-lease (default: KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The current CA certificate (default: the CA that issued the newest certificate in the fleet).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value = "table")]
    pub output: FleetOutput,
}

/// How `signer fleet` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FleetOutput {
    /// Aligned columns.
    Table,
    /// The rows and the current CA as JSON.
    Json,
}
