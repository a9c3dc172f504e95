//! `signer fleet`: every node's certificates from the status node agents publish on their own
//! Lease (see `kubecert_k8s::fleet`), riskiest first: overdue or expired (and unreadable)
//! nodes, then nodes on an old CA (a certificate issued by, or a trust without, the current
//! CA), then the soonest expiry.
//!
//! The current CA is `--ca-cert` when given, else the CA that issued the newest certificate in
//! the fleet: after a CA is activated every new certificate comes from it, so nodes still
//! holding another CA's certificate are the ones left on the old generation. CAs are shown by
//! the first 8 hex digits of their key id (`-o json` has them whole).
//!
//! The decisions are pure ([`rows`], [`table`]); the command reads the Leases and prints.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use kubecert_k8s::fleet::{self, CertificateStatus, NodeStatus, PublishedStatus, parse_time};
use serde::Serialize;

use crate::cli::{FleetArgs, FleetOutput};

/// A status older than this means the agent stopped writing it (agents write at least every
/// five minutes).
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// How many hex digits of a key id the table shows.
const SHORT_KEY_ID: usize = 8;

/// What puts a node at risk, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Risk {
    /// Its status annotation does not parse.
    Unreadable,
    /// A certificate has expired.
    Expired,
    /// A rotation is overdue.
    Overdue,
    /// A certificate was issued by another CA than the current one.
    OldCA,
    /// The node does not trust the current CA.
    NotTrustingCA,
    /// The status was not refreshed for [`STALE_AFTER`].
    Stale,
}

impl Risk {
    /// Sort rank: overdue (and worse) first, then an old CA, then the rest.
    fn rank(self) -> u8 {
        match self {
            Risk::Unreadable | Risk::Expired | Risk::Overdue => 0,
            Risk::OldCA | Risk::NotTrustingCA => 1,
            Risk::Stale => 2,
        }
    }
}

/// One node of the view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The node (its Lease's name).
    pub node: String,
    /// End of validity of the client certificate, RFC 3339.
    pub client_expires: Option<String>,
    /// End of validity of the serving certificate, RFC 3339.
    pub serving_expires: Option<String>,
    /// Key ids of the CAs that issued its certificates (client first).
    pub issuers: Vec<String>,
    /// Key ids of the CAs it trusts.
    pub trusts: Vec<String>,
    /// What is wrong, worst first; empty when all is well.
    pub risks: Vec<Risk>,
    /// When the agent last wrote its status.
    pub updated: Option<String>,
    /// Why the status could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The JSON output.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    /// Key id of the current CA, when known.
    pub current_ca: Option<String>,
    /// The nodes, riskiest first.
    pub nodes: Vec<Row>,
}

/// The CA that issued the newest certificate (latest NotBefore) of the fleet.
pub fn newest_issuer(statuses: &[PublishedStatus]) -> Option<String> {
    statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok())
        .flat_map(|s| [&s.client, &s.serving])
        .flatten()
        .filter_map(|c| Some((parse_time(&c.not_before)?, c.issuer_key_id.clone()?)))
        .max_by_key(|(not_before, _)| *not_before)
        .map(|(_, id)| id)
}

fn row(node: &str, status: &NodeStatus, current_ca: Option<&str>, now: SystemTime) -> Row {
    let certificates: Vec<&CertificateStatus> =
        [&status.client, &status.serving].into_iter().flatten().collect();
    let mut issuers: Vec<String> = Vec::new();
    for id in certificates.iter().filter_map(|c| c.issuer_key_id.clone()) {
        if !issuers.contains(&id) {
            issuers.push(id);
        }
    }
    let mut risks = Vec::new();
    if certificates.iter().any(|c| parse_time(&c.not_after).is_some_and(|t| t <= now)) {
        risks.push(Risk::Expired);
    }
    if status.overdue {
        risks.push(Risk::Overdue);
    }
    if let Some(current) = current_ca {
        if issuers.iter().any(|id| id != current) {
            risks.push(Risk::OldCA);
        }
        if !status.trusted_key_ids.iter().any(|id| id == current) {
            risks.push(Risk::NotTrustingCA);
        }
    }
    let stale = parse_time(&status.updated)
        .is_none_or(|updated| now.duration_since(updated).is_ok_and(|age| age > STALE_AFTER));
    if stale {
        risks.push(Risk::Stale);
    }
    Row {
        node: node.to_string(),
        client_expires: status.client.as_ref().map(|c| c.not_after.clone()),
        serving_expires: status.serving.as_ref().map(|c| c.not_after.clone()),
        issuers,
        trusts: status.trusted_key_ids.clone(),
        risks,
        updated: Some(status.updated.clone()).filter(|u| !u.is_empty()),
        error: None,
    }
}

/// The soonest end of validity of a row's certificates.
fn soonest_expiry(row: &Row) -> Option<SystemTime> {
    [&row.client_expires, &row.serving_expires].into_iter().flatten().filter_map(|t| parse_time(t)).min()
}

/// The rows of `statuses`, riskiest first: by risk rank, then soonest expiry (nodes without
/// a certificate last), then name.
pub fn rows(statuses: &[PublishedStatus], current_ca: Option<&str>, now: SystemTime) -> Vec<Row> {
    let mut rows: Vec<Row> = statuses
        .iter()
        .map(|(node, status)| match status {
            Ok(status) => row(node, status, current_ca, now),
            Err(e) => Row {
                node: node.clone(),
                client_expires: None,
                serving_expires: None,
                issuers: vec![],
                trusts: vec![],
                risks: vec![Risk::Unreadable],
                updated: None,
                error: Some(e.clone()),
            },
        })
        .collect();
    rows.sort_by_cached_key(|r| {
        let rank = r.risks.iter().map(|risk| risk.rank()).min().unwrap_or(u8::MAX);
        let expiry = soonest_expiry(r);
        (rank, expiry.is_none(), expiry, r.node.clone())
    });
    rows
}

/// Time left until `t` as kubectl prints ages, `expired` when past, `<none>` without.
fn expires_cell(t: Option<&String>, now: SystemTime) -> String {
    let Some(t) = t.and_then(|t| parse_time(t)) else { return "<none>".into() };
    match t.duration_since(now) {
        Ok(left) => kubecert_apiserver::human_duration(i64::try_from(left.as_secs()).unwrap_or(i64::MAX)),
        Err(_) => "expired".into(),
    }
}

fn short_ids(ids: &[String]) -> String {
    if ids.is_empty() {
        return "<none>".into();
    }
    ids.iter().map(|id| id.chars().take(SHORT_KEY_ID).collect::<String>()).collect::<Vec<_>>().join(",")
}

/// The table: NODE, CLIENT-EXPIRES, SERVING-EXPIRES, CA, TRUSTS, STATUS, columns padded as
/// kubectl pads them.
pub fn table(rows: &[Row], now: SystemTime) -> String {
    let mut cells: Vec<[String; 6]> =
        vec![["NODE", "CLIENT-EXPIRES", "SERVING-EXPIRES", "CA", "TRUSTS", "STATUS"].map(String::from)];
    for r in rows {
        let status = if r.risks.is_empty() {
            "OK".to_string()
        } else {
            r.risks.iter().map(|risk| format!("{risk:?}")).collect::<Vec<_>>().join(",")
        };
        cells.push([
            r.node.clone(),
            expires_cell(r.client_expires.as_ref(), now),
            expires_cell(r.serving_expires.as_ref(), now),
            short_ids(&r.issuers),
            short_ids(&r.trusts),
            status,
        ]);
    }
    let widths: Vec<usize> =
        (0..6).map(|i| cells.iter().map(|c| c[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for line in &cells {
        let padded: Vec<String> = line.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(padded.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// The key id of the first certificate in a PEM file.
fn ca_key_id(path: &Path) -> Result<String> {
    let pem = std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))?;
    match fleet::ca_key_ids(&pem).into_iter().next() {
        Some(id) => Ok(id),
        None => bail!("--ca-cert {}: no PEM CERTIFICATE block that parses", path.display()),
    }
}

/// `signer fleet`.
pub async fn run(args: FleetArgs) -> Result<()> {
    let client = match &args.kubeconfig {
        Some(path) => crate::controller::client_from_kubeconfig(path).await?,
        None => kube::Client::try_default()
            .await
            .context("building the API client (KUBECONFIG or ~/.kube/config)")?,
    };
    let statuses = fleet::read_all(&client)
        .await
        .with_context(|| format!("listing the node Leases in {}", fleet::NODE_LEASE_NAMESPACE))?;
    let current_ca = match &args.ca_cert {
        Some(path) => Some(ca_key_id(path)?),
        None => newest_issuer(&statuses),
    };
    let now = SystemTime::now();
    let rows = rows(&statuses, current_ca.as_deref(), now);
    match args.output {
        FleetOutput::Table if rows.is_empty() => {
            eprintln!("No node has published a certificate status in {}.", fleet::NODE_LEASE_NAMESPACE);
        }
        FleetOutput::Table => print!("{}", table(&rows, now)),
        FleetOutput::Json => {
            println!("{}", serde_json::to_string_pretty(&View { current_ca, nodes: rows })?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn at(offset_secs: i64) -> String {
        let t = jiff::Timestamp::from_second(i64::try_from(NOW).unwrap() + offset_secs).unwrap();
        t.to_string()
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn cert(issued: i64, expires: i64, issuer: &str) -> Option<CertificateStatus> {
        Some(CertificateStatus {
            not_before: at(issued),
            not_after: at(expires),
            issuer_key_id: Some(issuer.into()),
        })
    }

    fn node(
        name: &str,
        client: Option<CertificateStatus>,
        trusts: &[&str],
        overdue: bool,
    ) -> PublishedStatus {
        let status = NodeStatus {
            client,
            serving: None,
            trusted_key_ids: trusts.iter().map(|t| t.to_string()).collect(),
            overdue,
            updated: at(-60),
        };
        (name.to_string(), Ok(status))
    }

    #[test]
    fn riskiest_first() {
        let day = 86_400;
        let statuses = vec![
            node("fine-later", cert(-day, 300 * day, "new"), &["old", "new"], false),
            node("fine-sooner", cert(-day, 30 * day, "new"), &["new"], false),
            node("old-ca", cert(-10 * day, 200 * day, "old"), &["old", "new"], false),
            node("untrusting", cert(-day, 200 * day, "new"), &["old"], false),
            node("overdue", cert(-300 * day, 60 * day, "new"), &["old", "new"], true),
            node("expired", cert(-400 * day, -day, "old"), &["old"], false),
            ("garbled".to_string(), Err("annotation kubecert.io/status: EOF".to_string())),
        ];
        assert_eq!(newest_issuer(&statuses).as_deref(), Some("new"));
        let rows = rows(&statuses, Some("new"), now());
        let order: Vec<(&str, &[Risk])> =
            rows.iter().map(|r| (r.node.as_str(), r.risks.as_slice())).collect();
        assert_eq!(
            order,
            [
                ("expired", &[Risk::Expired, Risk::OldCA, Risk::NotTrustingCA][..]),
                ("overdue", &[Risk::Overdue][..]),
                ("garbled", &[Risk::Unreadable][..]),
                ("old-ca", &[Risk::OldCA][..]),
                ("untrusting", &[Risk::NotTrustingCA][..]),
                ("fine-sooner", &[][..]),
                ("fine-later", &[][..]),
            ]
        );
    }

    #[test]
    fn stale_and_unknown_current_ca() {
        let mut stale = node("quiet", cert(-60, 3600, "a"), &["a"], false);
        if let Ok(status) = &mut stale.1 {
            status.updated = at(-(16 * 60));
        }
        let rows = rows(&[stale, node("b", None, &[], false)], None, now());
        assert_eq!(rows[0].risks, [Risk::Stale]);
        assert_eq!((rows[1].node.as_str(), rows[1].risks.as_slice()), ("b", &[][..]));
    }

    #[test]
    fn table_cells() {
        let statuses = vec![
            node(
                "n1",
                cert(-60, 90 * 86_400, "0123456789abcdef"),
                &["0123456789abcdef", "fedcba9876543210"],
                false,
            ),
            node("n2", cert(-60, -5, "0123456789abcdef"), &["0123456789abcdef"], true),
        ];
        let rows = rows(&statuses, Some("0123456789abcdef"), now());
        let text = table(&rows, now());
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["NODE", "CLIENT-EXPIRES", "SERVING-EXPIRES", "CA", "TRUSTS", "STATUS"]);
        assert_eq!(lines[1], ["n2", "expired", "<none>", "01234567", "01234567", "Expired,Overdue"]);
        assert_eq!(lines[2], ["n1", "90d", "<none>", "01234567", "01234567,fedcba98", "OK"]);
        // Columns line up: every row's CA starts where the header's does.
        let ca_at = text.lines().next().unwrap().find("CA ").unwrap();
        assert!(text.lines().skip(1).all(|l| &l[ca_at..ca_at + 8] == "01234567"), "{text}");
        let json = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(json["risks"], serde_json::json!([]));
        assert_eq!(json["issuers"][0], "0123456789abcdef");
    }
}
