//! Recovery with an expired client certificate's key: whether a node that proved possession of
//! the key of its expired certificate may have a certificate for a new key, with the same
//! identity (step-ca's "renew after expiry", bounded by a window, with a deny list as its passive
//! revocation).
//!
//! The caller (the signer's recovery endpoint) has already checked that the certificate chains
//! to the cluster CA and that the client holds its key (TLS client authentication); this module
//! decides the rest, as a pure function of the certificate, the request's subject, the deny list,
//! the node's recent attempts and `now`. Every refusal has a machine-readable reason and a
//! message the node logs.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime};

use kubecert_csr::{Certificate, Subject};

/// The CN prefix of node identities.
const NODE_PREFIX: &str = "system:node:";
/// The organization of node identities.
const NODES_GROUP: &str = "system:nodes";

/// How far recovery reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// How long after its NotAfter a certificate still proves a node's identity.
    pub max_expired: Duration,
    /// Attempts a node may make per [`RecoveryPolicy::attempt_period`] (refused or not).
    pub max_attempts: usize,
    /// The period of the rate limit.
    pub attempt_period: Duration,
}

impl RecoveryPolicy {
    /// Default rate limit: 5 attempts per node per 10 minutes. A node agent backs off to one
    /// attempt every 32 s, so a node that keeps failing is limited, one that succeeds never is.
    pub const DEFAULT_MAX_ATTEMPTS: usize = 5;
    /// Period of the default rate limit.
    pub const DEFAULT_ATTEMPT_PERIOD: Duration = Duration::from_secs(600);

    /// A policy with window `max_expired` and the default rate limit.
    pub fn new(max_expired: Duration) -> Self {
        Self {
            max_expired,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            attempt_period: Self::DEFAULT_ATTEMPT_PERIOD,
        }
    }
}

/// Why a recovery is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryRefusal {
    /// The certificate is not a node client certificate (`system:node:<name>` in
    /// `system:nodes`).
    NotANode {
        /// The certificate's common name.
        common_name: String,
    },
    /// The certificate's serial is on the deny list (`signer deny-serial`).
    SerialDenied {
        /// The serial, lowercase hex.
        serial: String,
    },
    /// The certificate has not expired: the node renews with it the normal way.
    NotExpired {
        /// How long it is still valid.
        valid_for: Duration,
    },
    /// The certificate expired longer ago than the window allows.
    OutsideWindow {
        /// How long ago it expired.
        expired_for: Duration,
        /// The window.
        window: Duration,
    },
    /// The request's subject is not the certificate's.
    IdentityChanged {
        /// The certificate's subject (CN and organizations).
        certificate: String,
        /// The request's subject.
        request: String,
    },
    /// The node made too many attempts recently.
    RateLimited {
        /// Attempts in the period, this one included.
        attempts: usize,
        /// The period.
        period: Duration,
    },
}

impl RecoveryRefusal {
    /// A machine-readable reason (CamelCase, as a Kubernetes `Status` reason or condition reason).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotANode { .. } => "RecoveryNotANode",
            Self::SerialDenied { .. } => "RecoverySerialDenied",
            Self::NotExpired { .. } => "RecoveryNotExpired",
            Self::OutsideWindow { .. } => "RecoveryWindowExceeded",
            Self::IdentityChanged { .. } => "RecoveryIdentityChanged",
            Self::RateLimited { .. } => "RecoveryRateLimited",
        }
    }
}

impl fmt::Display for RecoveryRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotANode { common_name } => write!(
                f,
                "certificate for {common_name:?} is not a node client certificate ({NODE_PREFIX}<name> in {NODES_GROUP})"
            ),
            Self::SerialDenied { serial } => {
                write!(f, "certificate serial {serial} is on the signer's recovery deny list")
            }
            Self::NotExpired { valid_for } => {
                write!(f, "certificate is still valid for {} s; renew with it instead", valid_for.as_secs())
            }
            Self::OutsideWindow { expired_for, window } => write!(
                f,
                "certificate expired {} s ago, more than the recovery window of {} s",
                expired_for.as_secs(),
                window.as_secs()
            ),
            Self::IdentityChanged { certificate, request } => write!(
                f,
                "the request's subject ({request}) is not the expired certificate's ({certificate})"
            ),
            Self::RateLimited { attempts, period } => write!(
                f,
                "{attempts} recovery attempts by this node in the last {} s; try again later",
                period.as_secs()
            ),
        }
    }
}

/// Serials refused for recovery. Serials compare as lowercase hex without separators or leading
/// zeros, so `00:AB:cd` and `abcd` are the same serial.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyList(BTreeSet<String>);

impl DenyList {
    /// Parses one serial per line; blank lines and `#` comments are skipped. The first bad line
    /// is an error naming its number.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut serials = BTreeSet::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            serials.insert(normalize_serial(line).map_err(|e| format!("line {}: {e}", index + 1))?);
        }
        Ok(Self(serials))
    }

    /// Whether `serial` (any accepted spelling) is listed.
    pub fn contains(&self, serial: &str) -> bool {
        normalize_serial(serial).is_ok_and(|s| self.0.contains(&s))
    }
}

/// A serial in its canonical spelling: lowercase hex, no `:` separators, no leading zeros. An
/// error says what is wrong with `serial`.
pub fn normalize_serial(serial: &str) -> Result<String, String> {
    let digits: String = serial.trim().chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if digits.is_empty() {
        return Err(format!("serial {serial:?} is empty"));
    }
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("serial {serial:?} is not hexadecimal (found {bad:?})"));
    }
    let trimmed = digits.trim_start_matches('0');
    Ok(if trimmed.is_empty() { "0".to_owned() } else { trimmed.to_owned() })
}

/// Recent recovery attempts per node, for the rate limit. Bounded: attempts older than the
/// period are dropped whenever the node tries again, and nodes with none left are forgotten.
#[derive(Debug, Default)]
pub struct RecoveryAttempts(HashMap<String, VecDeque<SystemTime>>);

impl RecoveryAttempts {
    /// Records an attempt by `node` at `now`; returns the node's attempts within `period`
    /// before `now`, this one included.
    pub fn record(&mut self, node: &str, now: SystemTime, period: Duration) -> usize {
        self.0.retain(|_, times| times.back().is_some_and(|t| within(*t, now, period)));
        let times = self.0.entry(node.to_owned()).or_default();
        while times.front().is_some_and(|t| !within(*t, now, period)) {
            times.pop_front();
        }
        times.push_back(now);
        times.len()
    }
}

fn within(t: SystemTime, now: SystemTime, period: Duration) -> bool {
    now.duration_since(t).map_or(true, |age| age < period)
}

/// The node name of a node client certificate, if it is one.
pub fn node_name(cert: &Certificate) -> Option<&str> {
    let name = cert.subject.common_name.as_deref()?.strip_prefix(NODE_PREFIX)?;
    (!name.is_empty() && cert.subject.organizations.iter().any(|o| o == NODES_GROUP)).then_some(name)
}

fn describe(subject: &Subject) -> String {
    format!("CN={:?} O={:?}", subject.common_name.as_deref().unwrap_or_default(), subject.organizations)
}

/// Whether `cert` (expired, its key proven by the caller) may be exchanged for a certificate for
/// the request with subject `requested`. `attempts` counts this node's attempts in the policy's
/// period, this one included ([`RecoveryAttempts::record`]). Checked in this order: a node
/// certificate, the rate limit, the deny list, expired, within the window, same identity.
pub fn decide_recovery(
    policy: &RecoveryPolicy,
    cert: &Certificate,
    requested: &Subject,
    deny_list: &DenyList,
    attempts: usize,
    now: SystemTime,
) -> Result<(), RecoveryRefusal> {
    if node_name(cert).is_none() {
        return Err(RecoveryRefusal::NotANode {
            common_name: cert.subject.common_name.clone().unwrap_or_default(),
        });
    }
    if attempts > policy.max_attempts {
        return Err(RecoveryRefusal::RateLimited { attempts, period: policy.attempt_period });
    }
    if deny_list.contains(&cert.serial_hex) {
        return Err(RecoveryRefusal::SerialDenied { serial: cert.serial_hex.clone() });
    }
    // Expired as the kubelet counts it: now > NotAfter.
    let expired_for = match now.duration_since(cert.not_after) {
        Ok(expired_for) if !expired_for.is_zero() => expired_for,
        _ => {
            let valid_for = cert.not_after.duration_since(now).unwrap_or_default();
            return Err(RecoveryRefusal::NotExpired { valid_for });
        }
    };
    if expired_for > policy.max_expired {
        return Err(RecoveryRefusal::OutsideWindow { expired_for, window: policy.max_expired });
    }
    let same_orgs = {
        let set = |s: &Subject| s.organizations.iter().cloned().collect::<BTreeSet<_>>();
        set(&cert.subject) == set(requested)
    };
    if requested.common_name != cert.subject.common_name || !same_orgs {
        return Err(RecoveryRefusal::IdentityChanged {
            certificate: describe(&cert.subject),
            request: describe(requested),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn subject(cn: &str, orgs: &[&str]) -> Subject {
        Subject {
            common_name: Some(cn.to_owned()),
            organizations: orgs.iter().map(|o| (*o).to_owned()).collect(),
            der: Vec::new(),
        }
    }

    /// A node certificate that expired at `not_after` (only the fields the decision reads).
    fn certificate(not_after: SystemTime) -> Certificate {
        Certificate {
            der: Vec::new(),
            subject: subject("system:node:n1", &[NODES_GROUP]),
            issuer: "CN=ca".into(),
            issuer_der: Vec::new(),
            serial_hex: "00abcd".into(),
            not_before: not_after - HOUR,
            not_after,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            email_addresses: Vec::new(),
            uris: Vec::new(),
            public_key: kubecert_csr::PublicKey {
                algorithm: kubecert_csr::PublicKeyAlgorithm::EcdsaP256,
                spki_der: Vec::new(),
            },
            is_ca: false,
            key_usage: Vec::new(),
        }
    }

    fn decide(
        cert: &Certificate,
        requested: &Subject,
        deny: &DenyList,
        attempts: usize,
        now: SystemTime,
    ) -> Result<(), RecoveryRefusal> {
        decide_recovery(&RecoveryPolicy::new(720 * HOUR), cert, requested, deny, attempts, now)
    }

    #[test]
    fn an_expired_node_certificate_inside_the_window_recovers() {
        let now = SystemTime::UNIX_EPOCH + 1000 * HOUR;
        let cert = certificate(now - 719 * HOUR);
        let same = subject("system:node:n1", &[NODES_GROUP]);
        assert_eq!(decide(&cert, &same, &DenyList::default(), 1, now), Ok(()));
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let now = SystemTime::UNIX_EPOCH + 1000 * HOUR;
        let same = subject("system:node:n1", &[NODES_GROUP]);
        let none = DenyList::default();
        let cases: Vec<(Result<(), RecoveryRefusal>, &str, &str)> = vec![
            (
                decide(&certificate(now - 721 * HOUR), &same, &none, 1, now),
                "RecoveryWindowExceeded",
                "2595600 s ago",
            ),
            (decide(&certificate(now + HOUR), &same, &none, 1, now), "RecoveryNotExpired", "still valid"),
            (decide(&certificate(now), &same, &none, 1, now), "RecoveryNotExpired", "still valid"),
            (
                decide(&certificate(now - HOUR), &same, &DenyList::parse("AB:CD\n").unwrap(), 1, now),
                "RecoverySerialDenied",
                "00abcd",
            ),
            (
                decide(&certificate(now - HOUR), &subject("system:node:n2", &[NODES_GROUP]), &none, 1, now),
                "RecoveryIdentityChanged",
                "system:node:n2",
            ),
            (
                decide(
                    &certificate(now - HOUR),
                    &subject("system:node:n1", &["system:masters"]),
                    &none,
                    1,
                    now,
                ),
                "RecoveryIdentityChanged",
                "system:masters",
            ),
            (
                decide(&certificate(now - HOUR), &same, &none, 6, now),
                "RecoveryRateLimited",
                "6 recovery attempts",
            ),
        ];
        for (result, reason, message) in cases {
            let refusal = result.expect_err(reason);
            assert_eq!(refusal.reason(), reason, "{refusal}");
            assert!(refusal.to_string().contains(message), "{reason}: {refusal}");
        }
        let mut admin = certificate(now - HOUR);
        admin.subject = subject("admin", &["system:masters"]);
        let refusal = decide(&admin, &same, &none, 1, now).unwrap_err();
        assert_eq!(refusal.reason(), "RecoveryNotANode");
    }

    #[test]
    fn serials_compare_in_any_spelling_and_bad_ones_are_named() {
        let list = DenyList::parse("# revoked\n00:AB:CD # node n1\n\n7f\n").unwrap();
        assert!(list.contains("abcd") && list.contains("00abcd") && list.contains("7F"));
        assert!(!list.contains("abce") && !list.contains("zz"));
        assert_eq!(normalize_serial("000"), Ok("0".into()));
        let error = DenyList::parse("abcd\nnot-a-serial\n").unwrap_err();
        assert!(error.contains("line 2") && error.contains("not-a-serial"), "{error}");
        assert!(normalize_serial(" ").unwrap_err().contains("empty"));
    }

    #[test]
    fn attempts_count_within_the_period_and_old_nodes_are_forgotten() {
        let mut attempts = RecoveryAttempts::default();
        let t0 = SystemTime::UNIX_EPOCH + HOUR;
        let period = Duration::from_secs(600);
        assert_eq!(attempts.record("n1", t0, period), 1);
        assert_eq!(attempts.record("n1", t0 + Duration::from_secs(30), period), 2);
        assert_eq!(attempts.record("n2", t0 + Duration::from_secs(60), period), 1);
        assert_eq!(attempts.record("n1", t0 + Duration::from_secs(601), period), 2);
        assert_eq!(attempts.record("n3", t0 + Duration::from_secs(2000), period), 1);
        assert_eq!(attempts.0.len(), 1, "nodes without recent attempts are dropped: {attempts:?}");
    }
}
