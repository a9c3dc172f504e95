//! Metrics: the kubelet's certificate metrics under their kubelet names (SPEC §3.9), plus what
//! no peer exports: whether a rotation is overdue and by how long, the last rotation's time,
//! the expiry and deadline timestamps.
//!
//! Everything but the rotation histogram is computed when scraped, from the identities in use
//! and the rotation loops' status, so the TTL gauges are exact at scrape time and nothing ticks
//! in the background.
//!
//! The kubelet's two renew-error counters keep the kubelet's exact sample names: an OpenMetrics
//! counter would be exposed as `<name>_total`, which dashboards and alerts written for the
//! kubelet do not match, so they are typed `unknown` (still monotonic; `rate()` works).

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use kubecert_cli::TlsHandshakes;
use kubecert_reload::LiveIdentity;
use kubecert_rotation::RotationStatus;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Buckets of `kubelet_certificate_manager_server_rotation_seconds` (the kubelet's).
pub const ROTATION_BUCKETS: [f64; 10] =
    [60.0, 3600.0, 14400.0, 86400.0, 604800.0, 2592000.0, 7776000.0, 15552000.0, 31104000.0, 124416000.0];

/// Which certificate a sample is about (label `certificate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The client certificate (`kubelet-client`).
    Client,
    /// The serving certificate (`kubelet-server`).
    Server,
}

impl Which {
    fn label(self) -> [(&'static str, &'static str); 1] {
        [("certificate", if self == Which::Client { "client" } else { "server" })]
    }
}

/// One certificate: the identity in use, and its rotation loop's status once one runs.
#[derive(Debug)]
struct Tracked {
    which: Which,
    live: LiveIdentity,
    status: OnceLock<watch::Receiver<RotationStatus>>,
}

impl Tracked {
    fn status(&self) -> Option<RotationStatus> {
        self.status.get().map(|rx| rx.borrow().clone())
    }

    /// Whole seconds until the identity in use expires (negative once expired), +Inf without one.
    fn ttl_seconds(&self, now: SystemTime) -> f64 {
        match self.live.current() {
            None => f64::INFINITY,
            Some(identity) => seconds_between(now, identity.leaf().not_after).trunc(),
        }
    }
}

/// The agent's metrics. Clones share the state.
#[derive(Clone, Debug)]
pub struct Metrics {
    tracked: Arc<[Tracked; 2]>,
    server_rotation_seconds: Histogram,
    handshakes: TlsHandshakes,
}

impl Metrics {
    /// Metrics over the client and serving identities in use.
    pub fn new(client: LiveIdentity, server: LiveIdentity) -> Self {
        let tracked = |which, live| Tracked { which, live, status: OnceLock::new() };
        Self {
            tracked: Arc::new([tracked(Which::Client, client), tracked(Which::Server, server)]),
            server_rotation_seconds: Histogram::new(ROTATION_BUCKETS),
            handshakes: TlsHandshakes::default(),
        }
    }

    /// Reports `status` for `which` from now on (call once per certificate).
    pub fn track(&self, which: Which, status: watch::Receiver<RotationStatus>) {
        let _ = self.tracked[which as usize].status.set(status);
    }

    /// A registry with every metric.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        registry.register(
            "kubelet_certificate_manager_server_rotation_seconds",
            "Age in seconds of the serving certificate when it was replaced",
            self.server_rotation_seconds.clone(),
        );
        registry.register_collector(Box::new(self.clone()));
        self.handshakes.register(&mut registry);
        registry
    }

    /// The TLS handshakes of the agent's endpoint, by negotiated key-exchange group.
    pub fn handshakes(&self) -> &TlsHandshakes {
        &self.handshakes
    }

    /// Observes the serving certificate's rotations into the histogram until `cancel` (SPEC M-9 g).
    pub async fn observe_server_rotations(
        &self,
        mut status: watch::Receiver<RotationStatus>,
        cancel: CancellationToken,
    ) {
        let mut seen = status.borrow_and_update().rotations;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = status.changed() => if changed.is_err() { return },
            }
            let current = status.borrow_and_update().clone();
            if current.rotations > seen {
                seen = current.rotations;
                if let Some(age) = current.last_replaced_age {
                    self.server_rotation_seconds.observe(age.as_secs_f64());
                }
            }
        }
    }

    /// Whether the client identity in use is valid now (for `/healthz`).
    pub fn client_certificate_valid(&self, now: SystemTime) -> bool {
        self.tracked[Which::Client as usize]
            .live
            .current()
            .is_some_and(|identity| !identity.leaf().is_expired_at(now))
    }

    fn encode_at(&self, now: SystemTime, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let [client, server] = &*self.tracked;
        // The kubelet's names.
        gauge(
            encoder,
            "kubelet_certificate_manager_client_ttl_seconds",
            "Seconds until the client certificate expires (+Inf without one)",
            client.ttl_seconds(now),
        )?;
        gauge(
            encoder,
            "kubelet_certificate_manager_server_ttl_seconds",
            "Seconds until the serving certificate expires (+Inf without one)",
            server.ttl_seconds(now),
        )?;
        let renew_errors = |t: &Tracked| t.status().map_or(0, |s| s.renew_errors);
        kubelet_counter(
            encoder,
            "kubelet_certificate_manager_client_expiration_renew_errors",
            "Failed client certificate rotation attempts",
            renew_errors(client),
        )?;
        kubelet_counter(
            encoder,
            "kubelet_server_expiration_renew_errors",
            "Failed serving certificate rotation attempts",
            renew_errors(server),
        )?;

        // Ours, per rotating certificate.
        let rotating: Vec<(Which, RotationStatus)> =
            self.tracked.iter().filter_map(|t| t.status().map(|s| (t.which, s))).collect();
        let per_certificate = |encoder: &mut DescriptorEncoder<'_>,
                               name: &str,
                               help: &str,
                               value: &dyn Fn(&RotationStatus) -> Option<f64>|
         -> Result<(), std::fmt::Error> {
            let samples: Vec<(Which, f64)> =
                rotating.iter().filter_map(|(which, s)| value(s).map(|v| (*which, v))).collect();
            if samples.is_empty() {
                return Ok(());
            }
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (which, v) in samples {
                metric.encode_family(&which.label())?.encode_gauge(&v)?;
            }
            Ok(())
        };
        per_certificate(
            encoder,
            "kubecert_node_certificate_rotation_overdue",
            "1 when a rotation has been due for longer than the overdue threshold without success",
            &|s| {
                Some(if s.overdue_by_at(now).is_some_and(|late| late >= s.overdue_threshold) {
                    1.0
                } else {
                    0.0
                })
            },
        )?;
        per_certificate(
            encoder,
            "kubecert_node_certificate_rotation_overdue_seconds",
            "Seconds a rotation has been due without success (0 when none is due)",
            &|s| Some(s.overdue_by_at(now).map_or(0.0, |late| late.as_secs_f64().trunc())),
        )?;
        per_certificate(
            encoder,
            "kubecert_node_certificate_rotation_overdue_threshold_seconds",
            "How long a rotation may be due before it counts as overdue",
            &|s| Some(s.overdue_threshold.as_secs_f64()),
        )?;
        per_certificate(
            encoder,
            "kubecert_node_certificate_last_rotation_timestamp_seconds",
            "When the last rotation succeeded (Unix time)",
            &|s| s.last_success.map(unix_seconds),
        )?;
        per_certificate(
            encoder,
            "kubecert_node_certificate_expiration_timestamp_seconds",
            "NotAfter of the certificate in use (Unix time)",
            &|s| s.current_not_after.map(unix_seconds),
        )?;
        per_certificate(
            encoder,
            "kubecert_node_certificate_rotation_deadline_timestamp_seconds",
            "When the next rotation is due (Unix time)",
            &|s| s.deadline.map(|d| unix_seconds(d.at)),
        )?;
        per_certificate(
            encoder,
            "kubecert_node_certificate_consecutive_failures",
            "Failed rotation attempts since the last success",
            &|s| Some(f64::from(s.consecutive_failures)),
        )?;

        let rotations: Vec<(Which, u64)> = rotating.iter().map(|(w, s)| (*w, s.rotations)).collect();
        if !rotations.is_empty() {
            let mut metric = encoder.encode_descriptor(
                "kubecert_node_certificate_rotations",
                "Successful rotations",
                None,
                MetricType::Counter,
            )?;
            for (which, n) in rotations {
                metric.encode_family(&which.label())?.encode_counter::<NoLabelSet, u64, f64>(&n, None)?;
            }
        }
        Ok(())
    }
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.encode_at(SystemTime::now(), &mut encoder)
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = prometheus_client::metrics::gauge::ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A monotonic count under a kubelet name, without the `_total` an OpenMetrics counter adds.
fn kubelet_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, MetricType::Unknown)?.encode_gauge(&value)
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    seconds_between(UNIX_EPOCH, at).trunc()
}

/// The OpenMetrics text of `registry`.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kubecert_rotation::{Deadline, DeadlineReason, Phase};

    use super::*;

    fn status(now: SystemTime) -> RotationStatus {
        RotationStatus {
            phase: Phase::BackingOff,
            updated_at: now,
            current_not_before: Some(now - Duration::from_secs(100)),
            current_not_after: Some(now + Duration::from_secs(20)),
            current_serial: Some("01".into()),
            expired: false,
            deadline: None,
            due_since: Some(now - Duration::from_secs(10)),
            overdue_threshold: Duration::from_secs(3),
            overdue_by: None,
            overdue: false,
            last_success: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            last_error: None,
            last_error_at: None,
            consecutive_failures: 4,
            renew_errors: 7,
            rotations: 2,
            last_replaced_age: Some(Duration::from_secs(50)),
        }
    }

    /// docs/metrics/node-agent.md: every series, as exposed once both certificates rotate.
    #[test]
    fn generated_docs_metrics() {
        let now = SystemTime::now();
        let metrics = Metrics::new(LiveIdentity::empty(), LiveIdentity::empty());
        for which in [Which::Client, Which::Server] {
            let deadline = Some(Deadline { at: now, reason: DeadlineReason::Scheduled });
            let (_, rx) = watch::channel(RotationStatus { deadline, ..status(now) });
            metrics.track(which, rx);
        }
        metrics.handshakes().observe("apiserver-client", "X25519MLKEM768");
        metrics.handshakes().observe("serving", "X25519MLKEM768");
        let doc = format!(
            "{}# node-agent metrics\n\nServed at `/metrics` on `--metrics-addr`.\n\n{}",
            kubecert_cli::docgen::header("node-agent"),
            kubecert_cli::docgen::metrics(&scrape(&metrics)),
        );
        kubecert_cli::docgen::check_or_bless("node-agent", "docs/metrics/node-agent.md", &doc);
    }

    fn scrape(metrics: &Metrics) -> String {
        encode(&metrics.registry()).unwrap()
    }

    #[test]
    fn without_certificates_ttls_are_infinite_and_only_kubelet_metrics_show() {
        let metrics = Metrics::new(LiveIdentity::empty(), LiveIdentity::empty());
        let text = scrape(&metrics);
        assert!(text.contains("kubelet_certificate_manager_client_ttl_seconds inf\n"), "{text}");
        assert!(text.contains("kubelet_certificate_manager_server_ttl_seconds inf\n"), "{text}");
        assert!(
            text.contains("# TYPE kubelet_certificate_manager_client_expiration_renew_errors unknown\n"),
            "{text}"
        );
        assert!(text.contains("\nkubelet_certificate_manager_client_expiration_renew_errors 0\n"), "{text}");
        assert!(text.contains("\nkubelet_server_expiration_renew_errors 0\n"), "{text}");
        assert!(
            text.contains("kubelet_certificate_manager_server_rotation_seconds_bucket{le=\"60.0\"} 0"),
            "{text}"
        );
        assert!(!text.contains("kubecert_node_"), "{text}");
        assert!(!metrics.client_certificate_valid(SystemTime::now()));
    }

    #[test]
    fn rotation_status_becomes_overdue_and_counter_samples() {
        let metrics = Metrics::new(LiveIdentity::empty(), LiveIdentity::empty());
        let (_tx, rx) = watch::channel(status(SystemTime::now()));
        metrics.track(Which::Client, rx);
        let text = scrape(&metrics);
        for expected in [
            "\nkubelet_certificate_manager_client_expiration_renew_errors 7\n",
            "\nkubelet_server_expiration_renew_errors 0\n",
            "kubecert_node_certificate_rotation_overdue{certificate=\"client\"} 1.0\n",
            "kubecert_node_certificate_rotation_overdue_seconds{certificate=\"client\"} 10.0\n",
            "kubecert_node_certificate_last_rotation_timestamp_seconds{certificate=\"client\"} 1700000000.0\n",
            "kubecert_node_certificate_consecutive_failures{certificate=\"client\"} 4.0\n",
            "kubecert_node_certificate_rotations_total{certificate=\"client\"} 2\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("certificate=\"server\""), "{text}");
        assert!(
            !text.contains("kubecert_node_certificate_rotation_deadline_timestamp_seconds"),
            "no deadline yet"
        );
    }

    #[tokio::test]
    async fn each_serving_rotation_is_observed_once() {
        let metrics = Metrics::new(LiveIdentity::empty(), LiveIdentity::empty());
        let mut first = status(SystemTime::now());
        first.rotations = 0;
        let (tx, rx) = watch::channel(first.clone());
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (metrics, cancel) = (metrics.clone(), cancel.clone());
            async move { metrics.observe_server_rotations(rx, cancel).await }
        });
        tokio::task::yield_now().await;
        tx.send_replace(RotationStatus { rotations: 1, ..first.clone() });
        tokio::task::yield_now().await;
        tx.send_replace(RotationStatus { rotations: 1, renew_errors: 8, ..first });
        tokio::task::yield_now().await;
        cancel.cancel();
        task.await.unwrap();
        let text = scrape(&metrics);
        assert!(text.contains("kubelet_certificate_manager_server_rotation_seconds_count 1\n"), "{text}");
        assert!(
            text.contains("kubelet_certificate_manager_server_rotation_seconds_bucket{le=\"60.0\"} 1\n"),
            "{text}"
        );
    }
}
