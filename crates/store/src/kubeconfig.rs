//! Kubeconfig files: reading a bootstrap kubeconfig, writing the kubeconfig that points at the
//! current pair (SPEC B-8, B-14) and the "is the existing kubeconfig still valid" check (SPEC B-12).
//!
//! Only the subset of the kubeconfig schema that node bootstrap needs is modelled; unknown fields
//! are ignored when reading. Relative file paths inside a kubeconfig are resolved against the
//! kubeconfig's own directory, as client-go does. When no `current-context` is set, a kubeconfig
//! with exactly one context uses that one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kubecert_csr::parse_certificates_pem;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_error};
use crate::fsio;

/// Cluster name in the kubeconfig we write (SPEC B-14).
pub const CLUSTER_NAME: &str = "default-cluster";
/// User name in the kubeconfig we write.
pub const USER_NAME: &str = "default-auth";
/// Context name in the kubeconfig we write.
pub const CONTEXT_NAME: &str = "default-context";
/// Namespace of the context we write.
pub const CONTEXT_NAMESPACE: &str = "default";

/// PEM data given either as a file path or inline in the kubeconfig (`*-data`, base64-decoded).
///
/// `Debug` shows the path or the length of inline data, never its bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file path, made absolute against the kubeconfig's directory.
    File(PathBuf),
    /// The decoded bytes of a `*-data` field.
    Inline(Vec<u8>),
}

impl PemSource {
    /// The PEM bytes (reads the file for [`PemSource::File`]).
    pub fn read(&self) -> Result<Vec<u8>> {
        match self {
            Self::File(path) => fsio::read(path),
            Self::Inline(bytes) => Ok(bytes.clone()),
        }
    }

    /// Where the data comes from, for messages.
    fn origin(&self, kubeconfig: &Path, field: &str) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Inline(_) => format!("{field} of {}", kubeconfig.display()),
        }
    }
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Inline(bytes) => write!(f, "Inline(<{} bytes>)", bytes.len()),
        }
    }
}

/// How to reach and trust the API server: what a kubeconfig's cluster entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEndpoint {
    /// The API server URL (`server`).
    pub server: String,
    /// The CA bundle (`certificate-authority` or `certificate-authority-data`), if any.
    pub certificate_authority: Option<PemSource>,
    /// `insecure-skip-tls-verify`.
    pub insecure_skip_tls_verify: bool,
}

/// The parts of a bootstrap kubeconfig that node-agent uses (context `current-context`).
///
/// `Debug` never shows the token or inline key data.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapKubeconfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// The cluster of the current context.
    pub cluster: ClusterEndpoint,
    /// The user's `token`, if set.
    pub token: Option<String>,
    /// The user's `tokenFile`, made absolute, if set.
    pub token_file: Option<PathBuf>,
    /// The user's client certificate, if set.
    pub client_certificate: Option<PemSource>,
    /// The user's client key, if set.
    pub client_key: Option<PemSource>,
}

impl fmt::Debug for BootstrapKubeconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapKubeconfig")
            .field("path", &self.path)
            .field("cluster", &self.cluster)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("client_certificate", &self.client_certificate)
            .field("client_key", &self.client_key)
            .finish()
    }
}

impl BootstrapKubeconfig {
    /// Reads `path` and picks the current context's cluster and user. Errors when the file is
    /// missing or unparsable or when the context or its cluster (with a `server`) is missing; a
    /// context without a user, or a missing user entry, gives no credentials.
    pub fn load(path: &Path) -> Result<Self> {
        let file = KubeconfigFile::read(path)?;
        let selected = file.select(path)?;
        let cluster = selected.cluster.ok_or_else(|| Error::KubeconfigIncomplete {
            path: path.to_path_buf(),
            what: format!("the current context's cluster {:?} is not defined", selected.cluster_name),
        })?;
        let server =
            cluster.server.clone().filter(|s| !s.is_empty()).ok_or_else(|| Error::KubeconfigIncomplete {
                path: path.to_path_buf(),
                what: format!("cluster {:?} has no server", selected.cluster_name),
            })?;
        let base = base_dir(path);
        let certificate_authority = pem_source(
            path,
            &base,
            cluster.certificate_authority.as_deref(),
            cluster.certificate_authority_data.as_deref(),
            "certificate-authority-data",
        )?;
        let user = selected.user.cloned().unwrap_or_default();
        let client_certificate = user.client_certificate(path, &base)?;
        Ok(Self {
            path: path.to_path_buf(),
            cluster: ClusterEndpoint {
                server,
                certificate_authority,
                insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
            },
            token: user.token.filter(|t| !t.is_empty()),
            token_file: non_empty(user.token_file.as_deref()).map(|f| base.join(f)),
            client_certificate,
            client_key: pem_source(
                path,
                &base,
                user.client_key.as_deref(),
                user.client_key_data.as_deref(),
                "client-key-data",
            )?,
        })
    }

    /// The bearer token: `token`, or else the trimmed content of `tokenFile`, or `None`.
    pub fn bearer_token(&self) -> Result<Option<String>> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        let Some(file) = &self.token_file else {
            return Ok(None);
        };
        let bytes = fsio::read(file)?;
        let text = String::from_utf8_lossy(&bytes).trim().to_owned();
        Ok(Some(text).filter(|t| !t.is_empty()))
    }
}

/// How the user of a kubeconfig we write authenticates.
///
/// `Debug` never shows the token or the inline key.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `client-certificate` and `client-key` both pointing at a combined pair file, such as
    /// `kubelet-client-current.pem` (SPEC B-14).
    PairFile(PathBuf),
    /// A bearer token (a bootstrap kubeconfig).
    Token(String),
    /// Inline `client-certificate-data` and `client-key-data` (an admin kubeconfig that can be
    /// copied to another machine).
    InlineCertificate {
        /// The certificate chain, PEM.
        cert_pem: Vec<u8>,
        /// The private key, PEM.
        key_pem: Vec<u8>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PairFile(path) => f.debug_tuple("PairFile").field(path).finish(),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::InlineCertificate { .. } => f.write_str("InlineCertificate { .. }"),
        }
    }
}

/// Writes the kubeconfig of SPEC B-14 to `kubeconfig_path`: cluster `default-cluster` (the
/// endpoint's server, CA file path or inline CA data, `insecure-skip-tls-verify`), user
/// `default-auth` whose `client-certificate` and `client-key` are both `current_pem`, context
/// `default-context` in namespace `default`, made current. See [`write_kubeconfig`].
pub fn write_for_current_pem(
    kubeconfig_path: &Path,
    cluster: &ClusterEndpoint,
    current_pem: &Path,
) -> Result<()> {
    write_kubeconfig(kubeconfig_path, cluster, &Credentials::PairFile(current_pem.to_path_buf()))
}

/// Writes a kubeconfig with one cluster (`default-cluster`), one user (`default-auth`, with
/// `credentials`) and one context (`default-context`, namespace `default`), made current. The
/// write is atomic (temporary file, fsync, rename, fsync of the directory), the file mode is 0600
/// and a missing parent directory is created with mode 0755.
pub fn write_kubeconfig(
    kubeconfig_path: &Path,
    cluster: &ClusterEndpoint,
    credentials: &Credentials,
) -> Result<()> {
    let (certificate_authority, certificate_authority_data) = match &cluster.certificate_authority {
        None => (None, None),
        Some(PemSource::File(path)) => (Some(path_string(path)), None),
        Some(PemSource::Inline(bytes)) => (None, Some(BASE64.encode(bytes))),
    };
    let user = match credentials {
        Credentials::PairFile(pem) => {
            let pem = path_string(pem);
            AuthInfo { client_certificate: Some(pem.clone()), client_key: Some(pem), ..AuthInfo::default() }
        }
        Credentials::Token(token) => AuthInfo { token: Some(token.clone()), ..AuthInfo::default() },
        Credentials::InlineCertificate { cert_pem, key_pem } => AuthInfo {
            client_certificate_data: Some(BASE64.encode(cert_pem)),
            client_key_data: Some(BASE64.encode(key_pem)),
            ..AuthInfo::default()
        },
    };
    let file = KubeconfigFile {
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        clusters: vec![NamedCluster {
            name: CLUSTER_NAME.to_owned(),
            cluster: Cluster {
                server: Some(cluster.server.clone()),
                certificate_authority,
                certificate_authority_data,
                insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.then_some(true),
            },
        }],
        contexts: vec![NamedContext {
            name: CONTEXT_NAME.to_owned(),
            context: Context {
                cluster: CLUSTER_NAME.to_owned(),
                user: Some(USER_NAME.to_owned()),
                namespace: Some(CONTEXT_NAMESPACE.to_owned()),
            },
        }],
        users: vec![NamedUser { name: USER_NAME.to_owned(), user }],
        current_context: Some(CONTEXT_NAME.to_owned()),
    };
    let yaml = serde_saphyr::to_string(&file)
        .map_err(|source| Error::KubeconfigSerialize { path: kubeconfig_path.to_path_buf(), source })?;
    fsio::write_private_file(kubeconfig_path, yaml.as_bytes())
}

/// The outcome of [`check_still_valid`].
#[derive(Debug)]
pub enum KubeconfigValidity {
    /// The kubeconfig's client certificates all parse and none has expired.
    Valid,
    /// There is no kubeconfig file.
    Missing,
    /// The file exists but is not usable; the reason is there for logging.
    NotValid(Error),
}

impl KubeconfigValidity {
    /// Whether it is [`KubeconfigValidity::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid)
    }
}

/// SPEC B-12: is the kubeconfig at `path` still usable at `now`? It is when the file exists and
/// parses, the current context's user has a client certificate (a file, resolved against the
/// kubeconfig's directory, or inline data) holding at least one certificate, and no certificate
/// in it expired before `now`. The key and CA are not checked (as upstream).
///
/// Problems with the file's content are [`KubeconfigValidity::NotValid`]; only a failure to stat
/// the file for a reason other than "not found" is an `Err`.
pub fn check_still_valid(path: &Path, now: SystemTime) -> Result<KubeconfigValidity> {
    if !fsio::exists(path)? {
        return Ok(KubeconfigValidity::Missing);
    }
    Ok(match client_certificates_valid_at(path, now) {
        Ok(()) => KubeconfigValidity::Valid,
        Err(reason) => KubeconfigValidity::NotValid(reason),
    })
}

fn client_certificates_valid_at(path: &Path, now: SystemTime) -> Result<()> {
    let file = KubeconfigFile::read(path)?;
    let selected = file.select(path)?;
    let source = selected
        .user
        .map(|u| u.client_certificate(path, &base_dir(path)))
        .transpose()?
        .flatten()
        .ok_or_else(|| Error::KubeconfigIncomplete {
            path: path.to_path_buf(),
            what: "the current context's user has no client certificate".to_owned(),
        })?;
    let origin = source.origin(path, "client-certificate-data");
    let certificates = parse_certificates_pem(&source.read()?)
        .map_err(|source| Error::Certificate { origin: origin.clone(), source })?;
    if certificates.is_empty() {
        return Err(Error::NoCertificate { origin });
    }
    match certificates.iter().find(|c| c.is_expired_at(now)) {
        Some(expired) => Err(Error::CertificateExpired { origin, not_after: expired.not_after, now }),
        None => Ok(()),
    }
}

/// The directory relative paths in the kubeconfig at `path` are resolved against (absolute).
fn base_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A file path (preferred when both are set, as client-go does) or decoded inline data.
fn pem_source(
    kubeconfig: &Path,
    base: &Path,
    file: Option<&str>,
    data: Option<&str>,
    data_field: &'static str,
) -> Result<Option<PemSource>> {
    if let Some(file) = non_empty(file) {
        return Ok(Some(PemSource::File(base.join(file))));
    }
    let Some(data) = non_empty(data) else {
        return Ok(None);
    };
    let compact: String = data.split_whitespace().collect();
    BASE64
        .decode(compact)
        .map(|bytes| Some(PemSource::Inline(bytes)))
        .map_err(|source| Error::KubeconfigData { path: kubeconfig.to_path_buf(), field: data_field, source })
}

// ---- the serde model of the kubeconfig subset we read and write ----

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct KubeconfigFile {
    #[serde(rename = "apiVersion", default, skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    clusters: Vec<NamedCluster>,
    #[serde(default, deserialize_with = "null_as_default")]
    contexts: Vec<NamedContext>,
    #[serde(default, deserialize_with = "null_as_default")]
    users: Vec<NamedUser>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current_context: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct NamedCluster {
    name: String,
    #[serde(default)]
    cluster: Cluster,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    insecure_skip_tls_verify: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
struct NamedContext {
    name: String,
    #[serde(default)]
    context: Context,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Context {
    #[serde(default)]
    cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: AuthInfo,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct AuthInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(rename = "tokenFile", default, skip_serializing_if = "Option::is_none")]
    token_file: Option<String>,
}

impl AuthInfo {
    fn client_certificate(&self, kubeconfig: &Path, base: &Path) -> Result<Option<PemSource>> {
        pem_source(
            kubeconfig,
            base,
            self.client_certificate.as_deref(),
            self.client_certificate_data.as_deref(),
            "client-certificate-data",
        )
    }
}

/// The entries the current context names (`None` where the name has no entry).
struct SelectedContext<'a> {
    cluster_name: &'a str,
    cluster: Option<&'a Cluster>,
    user: Option<&'a AuthInfo>,
}

impl KubeconfigFile {
    fn read(path: &Path) -> Result<Self> {
        let bytes = fsio::read(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| io_error("read", path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(&text)
            .map_err(|source| Error::KubeconfigParse { path: path.to_path_buf(), source: Box::new(source) })
    }

    fn select(&self, path: &Path) -> Result<SelectedContext<'_>> {
        let context = match non_empty(self.current_context.as_deref()) {
            Some(name) => {
                self.contexts.iter().find(|c| c.name == name).ok_or_else(|| Error::KubeconfigIncomplete {
                    path: path.to_path_buf(),
                    what: format!("current-context {name:?} is not defined"),
                })?
            }
            None => match self.contexts.as_slice() {
                [only] => only,
                _ => {
                    return Err(Error::KubeconfigIncomplete {
                        path: path.to_path_buf(),
                        what: "no current-context is set and there is not exactly one context".to_owned(),
                    });
                }
            },
        };
        let cluster_name = context.context.cluster.as_str();
        let user_name = non_empty(context.context.user.as_deref());
        Ok(SelectedContext {
            cluster_name,
            cluster: self.clusters.iter().find(|c| c.name == cluster_name).map(|c| &c.cluster),
            user: user_name.and_then(|name| self.users.iter().find(|u| u.name == name)).map(|u| &u.user),
        })
    }
}

/// Treats an explicit YAML `null` (e.g. `users: null`, or `users:` with nothing after it, which
/// `kubectl config` writes) like an absent field.
fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::test_support::{DAY, TestCa, now};

    fn endpoint(ca: Option<PemSource>, insecure: bool) -> ClusterEndpoint {
        ClusterEndpoint {
            server: "https://10.0.0.1:6443".to_owned(),
            certificate_authority: ca,
            insecure_skip_tls_verify: insecure,
        }
    }

    #[test]
    fn token_and_inline_certificate_kubeconfigs_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap.kubeconfig");
        let cluster = endpoint(Some(PemSource::Inline(b"CA".to_vec())), false);
        let token = Credentials::Token("abcdef.0123456789abcdef".to_owned());
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        write_kubeconfig(&path, &cluster, &token).unwrap();
        let read = BootstrapKubeconfig::load(&path).unwrap();
        assert_eq!(read.cluster, cluster);
        assert_eq!(read.token.as_deref(), Some("abcdef.0123456789abcdef"));
        assert_eq!(read.client_certificate, None);

        let inline = Credentials::InlineCertificate { cert_pem: b"CERT".to_vec(), key_pem: b"KEY".to_vec() };
        write_kubeconfig(&path, &cluster, &inline).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let read = BootstrapKubeconfig::load(&path).unwrap();
        assert_eq!(read.token, None);
        assert_eq!(read.client_certificate, Some(PemSource::Inline(b"CERT".to_vec())));
        assert_eq!(read.client_key, Some(PemSource::Inline(b"KEY".to_vec())));
    }

    #[test]
    fn written_kubeconfig_round_trips_with_ca_file_or_inline_data() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("pki/kubelet-client-current.pem");
        let cases = [
            endpoint(Some(PemSource::File(dir.path().join("ca.crt"))), false),
            endpoint(Some(PemSource::Inline(b"-----BEGIN CERTIFICATE-----\n".to_vec())), false),
            endpoint(None, true),
        ];
        for cluster in cases {
            let path = dir.path().join("etc/kubelet.conf");
            write_for_current_pem(&path, &cluster, &current).unwrap();
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o755);

            let read = BootstrapKubeconfig::load(&path).unwrap();
            assert_eq!(read.cluster, cluster);
            assert_eq!(read.client_certificate, Some(PemSource::File(current.clone())));
            assert_eq!(read.client_key, Some(PemSource::File(current.clone())));
            assert_eq!(read.token, None);

            let text = fs::read_to_string(&path).unwrap();
            for needle in [
                "apiVersion: v1",
                "kind: Config",
                "name: default-cluster",
                "name: default-auth",
                "name: default-context",
                "namespace: default",
                "current-context: default-context",
                "client-certificate: ",
                "client-key: ",
            ] {
                assert!(text.contains(needle), "{needle:?} missing from\n{text}");
            }
        }
    }

    #[test]
    fn bootstrap_kubeconfig_reads_tokens_relative_paths_and_ignores_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("token"), "abcdef.0123456789abcdef\n").unwrap();
        let path = dir.path().join("bootstrap-kubelet.conf");
        fs::write(
            &path,
            r#"apiVersion: v1
kind: Config
preferences: {}
clusters:
- cluster:
    certificate-authority: pki/ca.crt
    server: https://cp.example:6443
    extensions: []
    proxy-url: http://proxy:3128
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: tls-bootstrap-token-user
  name: tls-bootstrap-token-user@kubernetes
current-context: tls-bootstrap-token-user@kubernetes
users:
- name: tls-bootstrap-token-user
  user:
    tokenFile: token
    as-user-extra: {}
"#,
        )
        .unwrap();
        let read = BootstrapKubeconfig::load(&path).unwrap();
        assert_eq!(read.cluster.server, "https://cp.example:6443");
        assert_eq!(read.cluster.certificate_authority, Some(PemSource::File(dir.path().join("pki/ca.crt"))));
        assert_eq!(read.token_file, Some(dir.path().join("token")));
        assert_eq!(read.bearer_token().unwrap().as_deref(), Some("abcdef.0123456789abcdef"));
        assert!(!format!("{read:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn bootstrap_kubeconfig_inline_data_and_single_context_without_current() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap.conf");
        let ca = BASE64.encode("CA PEM");
        let cert = BASE64.encode("CERT PEM");
        let key = BASE64.encode("KEY PEM");
        fs::write(
            &path,
            format!(
                "clusters:\n- name: c\n  cluster:\n    server: https://a:1\n    certificate-authority-data: {ca}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: secret-token\n    client-certificate-data: {cert}\n    client-key-data: {key}\n"
            ),
        )
        .unwrap();
        let read = BootstrapKubeconfig::load(&path).unwrap();
        assert_eq!(read.cluster.certificate_authority, Some(PemSource::Inline(b"CA PEM".to_vec())));
        assert!(read.cluster.insecure_skip_tls_verify);
        assert_eq!(read.bearer_token().unwrap().as_deref(), Some("secret-token"));
        assert_eq!(read.client_certificate, Some(PemSource::Inline(b"CERT PEM".to_vec())));
        assert_eq!(read.client_key.as_ref().unwrap().read().unwrap(), b"KEY PEM");
        let debug = format!("{read:?}");
        assert!(!debug.contains("secret-token") && !debug.contains("KEY PEM"), "{debug}");
    }

    #[test]
    fn bootstrap_kubeconfig_errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "missing cluster",
                "contexts:\n- name: x\n  context:\n    cluster: nope\ncurrent-context: x\n",
                "cluster \"nope\"",
            ),
            (
                "no server",
                "clusters:\n- name: c\n  cluster: {}\ncontexts:\n- name: x\n  context:\n    cluster: c\ncurrent-context: x\n",
                "no server",
            ),
            ("unknown current context", "current-context: x\n", "current-context \"x\""),
            (
                "two contexts, none current",
                "contexts:\n- name: a\n  context: {cluster: c}\n- name: b\n  context: {cluster: c}\n",
                "exactly one context",
            ),
            (
                "bad base64",
                "clusters:\n- name: c\n  cluster: {server: 'https://a', certificate-authority-data: '%%%'}\ncontexts:\n- name: x\n  context: {cluster: c}\n",
                "certificate-authority-data",
            ),
            ("not yaml", "clusters: [\n", "cannot parse kubeconfig"),
        ];
        for (name, content, needle) in cases {
            let path = dir.path().join(format!("{}.conf", name.replace(' ', "-")));
            fs::write(&path, content).unwrap();
            let message = BootstrapKubeconfig::load(&path).unwrap_err().to_string();
            assert!(message.contains(needle), "{name}: {message}");
            assert!(message.contains(path.to_str().unwrap()), "{name}: {message}");
        }
        let missing = BootstrapKubeconfig::load(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
    }

    #[test]
    fn still_valid_check_follows_b12() {
        let ca = TestCa::new();
        let valid = ca.issue("valid");
        let expired = ca.issue_valid("expired", now() - 30 * DAY, now() - DAY);
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        fs::create_dir(&pki).unwrap();
        fs::write(pki.join("valid.pem"), format!("{}{}", valid.chain_pem, valid.key_pem)).unwrap();
        fs::write(pki.join("expired.pem"), format!("{}{}", expired.chain_pem, expired.key_pem)).unwrap();
        fs::write(pki.join("garbage.pem"), "garbage").unwrap();

        let user_file = |cert: &str| {
            format!(
                "clusters:\n- name: c\n  cluster: {{server: 'https://a'}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\nusers:\n- name: u\n  user:\n    client-certificate: {cert}\n    client-key: {cert}\n"
            )
        };
        let inline = format!(
            "contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n",
            BASE64.encode(&valid.chain_pem)
        );
        #[derive(Debug, PartialEq)]
        enum Want {
            Valid,
            Missing,
            NotValid(&'static str),
        }
        let absolute_valid = pki.join("valid.pem").display().to_string();
        let cases: Vec<(&str, Option<String>, Want)> = vec![
            ("missing file", None, Want::Missing),
            ("valid, absolute path", Some(user_file(&absolute_valid)), Want::Valid),
            ("valid, path relative to the kubeconfig", Some(user_file("pki/valid.pem")), Want::Valid),
            ("valid, inline data", Some(inline), Want::Valid),
            ("expired", Some(user_file("pki/expired.pem")), Want::NotValid("expired")),
            ("certificate file missing", Some(user_file("pki/absent.pem")), Want::NotValid("absent.pem")),
            ("certificate unparsable", Some(user_file("pki/garbage.pem")), Want::NotValid("garbage.pem")),
            ("yaml unparsable", Some("users: [\n".to_owned()), Want::NotValid("cannot parse")),
            ("empty file", Some(String::new()), Want::NotValid("current-context")),
            (
                "no client certificate",
                Some("contexts:\n- name: x\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {token: t}\n".to_owned()),
                Want::NotValid("no client certificate"),
            ),
        ];
        for (name, content, want) in cases {
            let path = dir.path().join("kubelet.conf");
            let _ = fs::remove_file(&path);
            if let Some(content) = content {
                fs::write(&path, content).unwrap();
            }
            let got = match check_still_valid(&path, now()).unwrap() {
                KubeconfigValidity::Valid => Want::Valid,
                KubeconfigValidity::Missing => Want::Missing,
                KubeconfigValidity::NotValid(reason) => {
                    let message = reason.to_string();
                    match &want {
                        Want::NotValid(needle) => assert!(message.contains(needle), "{name}: {message}"),
                        _ => panic!("{name}: unexpectedly not valid: {message}"),
                    }
                    Want::NotValid(match want {
                        Want::NotValid(n) => n,
                        _ => "",
                    })
                }
            };
            assert_eq!(got, want, "{name}");
        }
        // The boundary: valid exactly at NotAfter, expired one second later.
        let path = dir.path().join("kubelet.conf");
        fs::write(&path, user_file("pki/valid.pem")).unwrap();
        let not_after = kubecert_csr::parse_certificates_pem(valid.leaf_pem.as_bytes()).unwrap()[0].not_after;
        assert!(check_still_valid(&path, not_after).unwrap().is_valid());
        let later = not_after + std::time::Duration::from_secs(1);
        assert!(!check_still_valid(&path, later).unwrap().is_valid());
    }

    #[test]
    fn still_valid_check_is_an_error_when_the_file_cannot_be_stat_ed() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        fs::write(&not_a_dir, "x").unwrap();
        let err = check_still_valid(&not_a_dir.join("kubelet.conf"), now()).unwrap_err();
        assert!(matches!(err, Error::Io { action: "stat", .. }), "{err:?}");
    }

    #[test]
    fn our_written_kubeconfig_is_valid_while_the_current_pair_is() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::CertificateStore::open(crate::StoreConfig::new(
            dir.path().join("pki"),
            crate::CLIENT_PREFIX,
        ))
        .unwrap();
        let kubeconfig = dir.path().join("kubelet.conf");
        write_for_current_pem(&kubeconfig, &endpoint(None, false), store.current_path()).unwrap();
        assert!(!check_still_valid(&kubeconfig, now()).unwrap().is_valid(), "no pair yet");
        let pair = ca.issue("n");
        store.commit(pair.chain_pem.as_bytes(), pair.key_pem.as_bytes(), now()).unwrap();
        assert!(check_still_valid(&kubeconfig, now()).unwrap().is_valid());
        fs::set_permissions(&kubeconfig, Permissions::from_mode(0o600)).unwrap();
    }
}
