//! The signer's Prometheus registry: the controllers' series (kubecert-k8s's `SignerMetrics`)
//! under the `kubecert_signer_` prefix and the API's TLS handshakes
//! (`kubecert_tls_handshakes_total`, shared with node-agent), as `--metrics-addr` serves them.

use kubecert_cli::TlsHandshakes;
use kubecert_k8s::controllers::SignerMetrics;
use prometheus_client::registry::Registry;

/// A registry with every series of `metrics` and `handshakes`.
pub fn registry(metrics: &SignerMetrics, handshakes: &TlsHandshakes) -> Registry {
    let mut registry = Registry::default();
    metrics.register(registry.sub_registry_with_prefix("kubecert_signer"));
    handshakes.register(&mut registry);
    registry
}

#[cfg(test)]
mod tests {
    use kubecert_authority::DenyReason;
    use kubecert_k8s::controllers::{Failure, ReasonLabel, SignerLabel};

    use super::*;
    use kubecert_cli::docgen::{self, UNLISTED};

    /// docs/metrics/signer.md: every series, and the deny and failure reasons with their meaning.
    #[test]
    fn generated_docs_metrics() {
        let metrics = SignerMetrics::default();
        // Families show their label names only once they hold a series.
        for reason in DenyReason::ALL {
            metrics.denials.get_or_create_owned(&ReasonLabel { reason: reason.as_str().to_owned() });
        }
        metrics.issuances.get_or_create_owned(&SignerLabel { signer: UNLISTED.to_owned() });
        for failure in Failure::ALL {
            metrics.fail(failure);
        }
        let handshakes = TlsHandshakes::default();
        handshakes.observe("apiserver", "X25519MLKEM768");
        handshakes.observe("apiserver-client", "X25519MLKEM768");
        let mut exposition = String::new();
        prometheus_client::encoding::text::encode(&mut exposition, &registry(&metrics, &handshakes)).unwrap();

        let reasons = docgen::member_docs(
            include_str!("../../../crates/authority/src/policy.rs"),
            "pub enum DenyReason",
        );
        let names: Vec<&str> = reasons.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, DenyReason::ALL.map(DenyReason::as_str), "DenyReason's variants are its reasons");
        let failures = docgen::member_docs(
            include_str!("../../../crates/k8s/src/controllers/metrics.rs"),
            "pub enum Failure",
        );
        let names: Vec<&str> = failures.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, Failure::ALL.map(Failure::as_str), "Failure's variants are its reasons");

        let doc = format!(
            "{}# signer metrics\n\nServed at `/metrics` on `--metrics-addr`.\n\n{}\
             ## Deny reasons\n\nThe `reason` label of `kubecert_signer_denials_total`, also the `reason` of \
             the `Denied` condition written on the request:\n\n{}\
             ## Failure reasons\n\nThe `reason` label of `kubecert_signer_failures_total`:\n\n{}",
            docgen::header("signer"),
            docgen::metrics(&exposition),
            docgen::members_table("Reason", &reasons),
            docgen::members_table("Reason", &failures),
        );
        docgen::check_or_bless("signer", "docs/metrics/signer.md", &doc);
    }
}
