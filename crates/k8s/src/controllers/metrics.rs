//! Prometheus metrics of the signer's controllers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A label set with one `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A machine-readable reason (a deny reason, or a [`Failure`]).
    pub reason: String,
}

/// What went wrong, as the `reason` label of the failures counter: a request the signer refused
/// at signing time, or a controller step that errored and will be retried. Variant names are
/// the label values (the generated metrics reference lists them with these doc comments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The approver could not read or write a request (an API error); it retries with backoff.
    ApproverError,
    /// The signer refused an approved request at signing time (its CSR, usages or signer name
    /// fail the issuance checks) and wrote a `Failed` condition on it, with this same reason.
    SignerValidationFailure,
    /// The signer could not sign or store a certificate (an API error); it retries with backoff.
    SignerError,
    /// A cleaning pass could not list or delete requests; the next pass tries again.
    CleanerError,
}

impl Failure {
    /// Every failure, in declaration order.
    pub const ALL: [Failure; 4] = [
        Failure::ApproverError,
        Failure::SignerValidationFailure,
        Failure::SignerError,
        Failure::CleanerError,
    ];

    /// The label value: the variant's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::ApproverError => "ApproverError",
            Failure::SignerValidationFailure => "SignerValidationFailure",
            Failure::SignerError => "SignerError",
            Failure::CleanerError => "CleanerError",
        }
    }
}

/// A label set with one `signer` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignerLabel {
    /// The signer name.
    pub signer: String,
}

/// Everything the controllers count. Clones share the same series.
#[derive(Clone, Debug)]
pub struct SignerMetrics {
    /// Requests approved.
    pub approvals: Counter,
    /// Requests denied, by deny reason.
    pub denials: Family<ReasonLabel, Counter>,
    /// Certificates issued, by signer name (renewal canaries excluded).
    pub issuances: Family<SignerLabel, Counter>,
    /// Certificates issued for node-agent's renewal canary (annotation `kubecert.io/canary`).
    pub canary_issuances: Counter,
    /// Requests failed by the signer (validation) or steps that errored, by reason.
    pub failures: Family<ReasonLabel, Counter>,
    /// Seconds from the `Approved` condition to the certificate being stored.
    pub approve_to_issue_seconds: Histogram,
    /// Requests seen in the cache that still await a decision or a signature.
    pub queue_depth: Gauge,
    /// 1 while this replica leads (always 1 without leader election).
    pub leader: Gauge,
}

impl Default for SignerMetrics {
    fn default() -> Self {
        Self {
            approvals: Counter::default(),
            denials: Family::default(),
            issuances: Family::default(),
            canary_issuances: Counter::default(),
            failures: Family::default(),
            approve_to_issue_seconds: Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            queue_depth: Gauge::default(),
            leader: Gauge::default(),
        }
    }
}

impl SignerMetrics {
    /// Registers every series under `registry` (use a registry prefixed `kubecert_signer`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("approvals", "Certificate signing requests approved", self.approvals.clone());
        registry.register("denials", "Certificate signing requests denied, by reason", self.denials.clone());
        registry.register(
            "issuances",
            "Certificates issued, by signer name (renewal canaries excluded)",
            self.issuances.clone(),
        );
        registry.register(
            "canary_issuances",
            "Certificates issued for node renewal canaries (not renewals)",
            self.canary_issuances.clone(),
        );
        registry.register(
            "failures",
            "Requests failed or controller steps that errored, by reason",
            self.failures.clone(),
        );
        registry.register_with_unit(
            "approve_to_issue",
            "Time from approval to the certificate being stored",
            Unit::Seconds,
            self.approve_to_issue_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests awaiting a decision or a signature",
            self.queue_depth.clone(),
        );
        registry.register("leader", "1 while this replica is the leader", self.leader.clone());
    }

    /// Counts one `failure`.
    pub fn fail(&self, failure: Failure) {
        self.failures.get_or_create(&ReasonLabel { reason: failure.as_str().to_owned() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names() {
        let metrics = SignerMetrics::default();
        let mut registry = Registry::with_prefix("kubecert_signer");
        metrics.register(&mut registry);
        metrics.approvals.inc();
        metrics.denials.get_or_create(&ReasonLabel { reason: "SANNotAllowed".into() }).inc();
        metrics.approve_to_issue_seconds.observe(0.2);
        metrics.fail(Failure::CleanerError);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for expected in [
            "kubecert_signer_approvals_total 1",
            "kubecert_signer_denials_total{reason=\"SANNotAllowed\"} 1",
            "kubecert_signer_approve_to_issue_seconds_count 1",
            "kubecert_signer_failures_total{reason=\"CleanerError\"} 1",
            "kubecert_signer_leader 0",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
