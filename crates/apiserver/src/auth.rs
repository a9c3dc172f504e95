//! Authentication: who is asking (SPEC AU-1…AU-3).
//!
//! Order as upstream's union authenticator: a verified client certificate first, then a bearer
//! token (bootstrap tokens only). A request that brings neither is `system:anonymous`, which the
//! authorizer lets read health and version endpoints only (403 for the rest, as kube-apiserver
//! with anonymous authentication on, kubeadm's default); a bad token is always 401.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The authenticated requester, attached to every request as an extension.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// User name (`system:node:n1`, `system:bootstrap:abcdef`, …).
    pub name: String,
    /// Optional UID.
    #[serde(default)]
    pub uid: String,
    /// Groups, including `system:authenticated` for authenticated users.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Extra attributes.
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The group every authenticated user gets (AU-3).
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The group of the anonymous user.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The anonymous user name.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// Group of every bootstrap-token user.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// Secret type of bootstrap tokens.
pub const BOOTSTRAP_TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Name prefix of bootstrap-token Secrets.
pub const BOOTSTRAP_TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";
/// Namespace holding bootstrap-token Secrets.
pub const BOOTSTRAP_TOKEN_NAMESPACE: &str = "kube-system";

impl UserInfo {
    /// A user with the given name and groups; `system:authenticated` is appended (AU-3).
    pub fn authenticated(name: impl Into<String>, groups: Vec<String>) -> Self {
        let mut user = Self { name: name.into(), groups, ..Self::default() };
        user.add_authenticated_group();
        user
    }

    /// The anonymous user.
    pub fn anonymous() -> Self {
        Self { name: ANONYMOUS_USER.into(), groups: vec![UNAUTHENTICATED_GROUP.into()], ..Self::default() }
    }

    fn add_authenticated_group(&mut self) {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
    }
}

/// The user of a verified client certificate (AU-2): CN, O as groups, and the credential id.
/// `None` when the certificate cannot be parsed or has no CN.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    let mut user = UserInfo::authenticated(name, groups);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let hex = kubecert_csr::hex(digest.as_ref());
    user.extra.insert("authentication.kubernetes.io/credential-id".into(), vec![format!("X509SHA256={hex}")]);
    Some(user)
}

/// A client certificate that chained to the client CA, with the user it names and its validity.
#[derive(Clone, Debug)]
pub(crate) struct PeerCertificate {
    /// The user it names (AU-2).
    pub user: UserInfo,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl PeerCertificate {
    /// Parses a verified leaf; `None` as for [`user_from_certificate`].
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let user = user_from_certificate(der)?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let at = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0).unsigned_abs())
        };
        Some(Self {
            user,
            not_before: at(cert.validity().not_before),
            not_after: at(cert.validity().not_after),
        })
    }

    /// The user, if the certificate is valid at `now` (x509 authenticator: expired → 401).
    pub fn user_at(&self, now: SystemTime) -> Option<&UserInfo> {
        (self.not_before <= now && now <= self.not_after).then_some(&self.user)
    }
}

/// Splits a bootstrap token `<id>.<secret>` (regex `^[a-z0-9]{6}\.[a-z0-9]{16}$`).
pub fn parse_bootstrap_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

fn valid_extra_group(g: &str) -> bool {
    let Some(rest) = g.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-';
    let last_ok = rest.bytes().last().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    !rest.is_empty() && rest.len() <= 256 && rest.bytes().all(allowed) && last_ok
}

/// Constant-time equality of two byte strings (length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a data key of a Secret JSON object (base64 in `data`).
fn secret_data(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret.get("data")?.get(key)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// Authenticates a bootstrap token against its Secret (AU-1). `secret` is the stored
/// `kube-system/bootstrap-token-<id>` object, if any. `None` means "not authenticated".
pub fn authenticate_bootstrap_token(
    token: &str,
    secret: Option<&Value>,
    now: SystemTime,
) -> Option<UserInfo> {
    let (id, token_secret) = parse_bootstrap_token(token)?;
    let secret = secret?;
    if secret.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        return None;
    }
    if secret.get("type")?.as_str()? != BOOTSTRAP_TOKEN_SECRET_TYPE {
        return None;
    }
    let stored_secret = secret_data(secret, "token-secret")?;
    if !constant_time_eq(stored_secret.as_bytes(), token_secret.as_bytes()) {
        return None;
    }
    if secret_data(secret, "token-id")? != id {
        return None;
    }
    if let Some(expiration) = secret_data(secret, "expiration") {
        let expires: jiff::Timestamp = expiration.parse().ok()?;
        let now = jiff::Timestamp::try_from(now).ok()?;
        if now >= expires {
            return None;
        }
    }
    if secret_data(secret, "usage-bootstrap-authentication")? != "true" {
        return None;
    }
    let mut groups = vec![BOOTSTRAPPERS_GROUP.to_string()];
    if let Some(extra) = secret_data(secret, "auth-extra-groups") {
        for g in extra.split(',').map(str::trim) {
            if !valid_extra_group(g) {
                return None;
            }
            groups.push(g.to_string());
        }
    }
    groups.sort();
    groups.dedup();
    Some(UserInfo::authenticated(format!("system:bootstrap:{id}"), groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(pairs: &[(&str, &str)]) -> Value {
        let data: serde_json::Map<String, Value> =
            pairs.iter().map(|(k, v)| ((*k).into(), json!(b64(v)))).collect();
        json!({"type": BOOTSTRAP_TOKEN_SECRET_TYPE, "metadata": {"name": "bootstrap-token-abcdef"}, "data": data})
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
        ]
    }

    const TOKEN: &str = "abcdef.0123456789abcdef";

    #[test]
    fn accepts_a_valid_token() {
        let mut pairs = good();
        pairs.push(("auth-extra-groups", "system:bootstrappers:worker,system:bootstrappers:a"));
        let user = authenticate_bootstrap_token(TOKEN, Some(&secret(&pairs)), SystemTime::now()).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:a",
                "system:bootstrappers:worker",
                "system:authenticated"
            ]
        );
        assert!(user.uid.is_empty());
    }

    #[test]
    fn rejects_every_au1_violation() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let with = |k: &'static str, v: &'static str| {
            let mut p: Vec<_> = good().into_iter().filter(|(key, _)| *key != k).collect();
            if !v.is_empty() {
                p.push((k, v));
            }
            secret(&p)
        };
        let cases: Vec<(&str, &str, Option<Value>)> = vec![
            ("bad format", "abcdef.short", Some(secret(&good()))),
            ("upper case", "ABCDEF.0123456789abcdef", Some(secret(&good()))),
            ("no secret", TOKEN, None),
            ("wrong secret", TOKEN, Some(with("token-secret", "0123456789abcdee"))),
            ("wrong id", TOKEN, Some(with("token-id", "abcdeg"))),
            ("expired", TOKEN, Some(with("expiration", "2020-01-01T00:00:00Z"))),
            ("bad expiration", TOKEN, Some(with("expiration", "tomorrow"))),
            ("usage false", TOKEN, Some(with("usage-bootstrap-authentication", "false"))),
            ("usage missing", TOKEN, Some(with("usage-bootstrap-authentication", ""))),
            ("bad extra group", TOKEN, Some(with("auth-extra-groups", "system:masters"))),
        ];
        for (what, token, s) in cases {
            assert_eq!(authenticate_bootstrap_token(token, s.as_ref(), now), None, "{what}");
        }
        let mut wrong_type = secret(&good());
        wrong_type["type"] = json!("Opaque");
        assert_eq!(authenticate_bootstrap_token(TOKEN, Some(&wrong_type), now), None);
        let mut deleting = secret(&good());
        deleting["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
        assert_eq!(authenticate_bootstrap_token(TOKEN, Some(&deleting), now), None);
        assert!(
            authenticate_bootstrap_token(TOKEN, Some(&with("expiration", "2100-01-01T00:00:00Z")), now)
                .is_some()
        );
    }

    #[test]
    fn authenticated_group_is_added_once() {
        let u = UserInfo::authenticated("x", vec![AUTHENTICATED_GROUP.into()]);
        assert_eq!(u.groups, [AUTHENTICATED_GROUP]);
    }
}
