//! The loop in virtual time: tokio's clock is paused and auto-advances, and the loop's wall clock
//! is `t0() + (tokio now − start)` (plus a jump, when a test simulates a suspended machine), so
//! deadlines computed from certificate dates and tokio timers agree. A fake source signs CSRs
//! with a test CA (or fails, hangs, misbehaves, as scripted); a fake sink records what was
//! published; a tracing layer records what was logged.

use std::fmt::Write as _;
use std::future::pending;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kubecert_csr::{Certificate, CertificatePurpose, CertificateTemplate, KeyUsage, build_csr_pem};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Level;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use super::*;
use crate::testutil::{Ca, secs, t0};
use crate::{BoxError, Deadline};

// === fake source ===

#[derive(Clone, Debug)]
struct Call {
    /// Virtual time since the start of the test.
    at: Duration,
    template: CertificateTemplate,
    current_serial: Option<String>,
    usages: Vec<KeyUsage>,
    public_key: Vec<u8>,
    /// Dropped before it completed (cancelled by the loop).
    cancelled: bool,
}

enum Reply {
    /// Sign the CSR, valid from now for this long.
    Issue(Duration),
    /// Sign the CSR with this validity.
    IssueWindow(SystemTime, SystemTime),
    /// Sign a request for another subject made with the request's key.
    WrongSubject,
    /// A valid chain for a key the loop did not generate.
    OtherKey,
    Fail(Error),
    /// Never answer.
    Hang,
}

type Behaviour = Arc<dyn Fn(usize, &Call) -> Reply + Send + Sync>;

struct FakeSource {
    ca: Arc<Ca>,
    clock: TestClock,
    calls: Arc<Mutex<Vec<Call>>>,
    behaviour: Behaviour,
}

/// Marks the call cancelled if its future is dropped before it completed.
struct PendingCall {
    calls: Arc<Mutex<Vec<Call>>>,
    index: usize,
    finished: bool,
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.finished {
            self.calls.lock().unwrap()[self.index].cancelled = true;
        }
    }
}

impl CertificateSource for FakeSource {
    async fn obtain(&self, request: &CertificateRequest) -> Result<String, Error> {
        let call = Call {
            at: self.clock.elapsed(),
            template: request.template.clone(),
            current_serial: request.current.as_ref().map(|c| c.serial_hex.clone()),
            usages: request.usages.clone(),
            public_key: request.key.public_key_der().to_vec(),
            cancelled: false,
        };
        let reply = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(call.clone());
            (self.behaviour)(calls.len() - 1, &call)
        };
        let mut pending_call = PendingCall {
            calls: self.calls.clone(),
            index: self.calls.lock().unwrap().len() - 1,
            finished: false,
        };
        let now = self.clock.now();
        let result = match reply {
            Reply::Issue(lifetime) => Ok(self.ca.sign(&request.csr_pem, now, now + lifetime)),
            Reply::IssueWindow(not_before, not_after) => {
                Ok(self.ca.sign(&request.csr_pem, not_before, not_after))
            }
            Reply::WrongSubject => {
                let csr =
                    build_csr_pem(&CertificateTemplate::node_client("someone-else"), &request.key).unwrap();
                Ok(self.ca.sign(&csr, now, now + secs(1000)))
            }
            Reply::OtherKey => Ok(self.ca.mint(&request.template, now, now + secs(1000)).chain_pem),
            Reply::Fail(error) => Err(error),
            Reply::Hang => pending().await,
        };
        pending_call.finished = true;
        result
    }
}

// === fake sink ===

#[derive(Clone, Debug)]
struct Published {
    at: Duration,
    leaf: Certificate,
    public_key: Vec<u8>,
}

struct FakeSink {
    start: Instant,
    published: Arc<Mutex<Vec<Published>>>,
    failures_left: Arc<AtomicUsize>,
}

impl CredentialsSink for FakeSink {
    async fn publish(&self, identity: Identity) -> Result<(), BoxError> {
        let fail = self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if fail.is_ok() {
            return Err("store: disk full".into());
        }
        self.published.lock().unwrap().push(Published {
            at: self.start.elapsed(),
            leaf: identity.leaf().clone(),
            public_key: identity.key().public_key_der().to_vec(),
        });
        Ok(())
    }
}

// === log capture ===

type Logs = Arc<Mutex<Vec<(Level, String)>>>;

struct Capture(Logs);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Fields(String);
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={:?} ", field.name(), value);
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push((*event.metadata().level(), fields.0));
    }
}

// === harness ===

/// The wall clock of a test: `t0()` plus tokio's (virtual) time since the start, plus any jump
/// made with [`TestClock::jump`] (a suspended machine: the wall clock moves, tokio's does not).
#[derive(Clone)]
struct TestClock {
    start: Instant,
    jumped: Arc<AtomicU64>,
}

impl TestClock {
    fn new() -> Self {
        Self { start: Instant::now(), jumped: Arc::default() }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn now(&self) -> SystemTime {
        t0() + self.elapsed() + secs(self.jumped.load(Ordering::SeqCst))
    }

    fn jump(&self, by: Duration) {
        self.jumped.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

fn client() -> CertificateTemplate {
    CertificateTemplate::node_client("n1")
}

fn serving(ip: &str) -> CertificateTemplate {
    CertificateTemplate::node_serving("n1", &[], &[ip.parse().unwrap()])
}

/// A random source that returns `draws` in order, then repeats the last one.
fn draws<const N: usize>(draws: [f64; N]) -> impl FnMut() -> f64 + Send + 'static {
    let mut draws = draws.into_iter();
    let mut last = 0.5;
    move || {
        last = draws.next().unwrap_or(last);
        last
    }
}

struct Harness {
    clock: TestClock,
    calls: Arc<Mutex<Vec<Call>>>,
    published: Arc<Mutex<Vec<Published>>>,
    status: watch::Receiver<RotationStatus>,
    logs: Logs,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    _log_guard: tracing::subscriber::DefaultGuard,
}

struct Setup {
    ca: Arc<Ca>,
    initial: InitialCertificate,
    templates: watch::Receiver<Option<CertificateTemplate>>,
    random: Box<dyn FnMut() -> f64 + Send>,
    purpose: CertificatePurpose,
    publish_failures: usize,
}

impl Setup {
    fn new(initial: InitialCertificate, templates: watch::Receiver<Option<CertificateTemplate>>) -> Self {
        Self::with_ca(Arc::new(Ca::new()), initial, templates)
    }

    fn with_ca(
        ca: Arc<Ca>,
        initial: InitialCertificate,
        templates: watch::Receiver<Option<CertificateTemplate>>,
    ) -> Self {
        Self {
            ca,
            initial,
            templates,
            random: Box::new(draws([0.5])),
            purpose: CertificatePurpose::Client,
            publish_failures: 0,
        }
    }

    fn random(mut self, random: impl FnMut() -> f64 + Send + 'static) -> Self {
        self.random = Box::new(random);
        self
    }

    /// Spawns the loop with the fake source and sink.
    fn start(self, behaviour: impl Fn(usize, &Call) -> Reply + Send + Sync + 'static) -> Harness {
        let logs = Logs::default();
        let log_guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(Capture(logs.clone())));
        let clock = TestClock::new();
        let calls = Arc::default();
        let published = Arc::default();
        let source = FakeSource {
            ca: self.ca,
            clock: clock.clone(),
            calls: Arc::clone(&calls),
            behaviour: Arc::new(behaviour),
        };
        let sink = FakeSink {
            start: clock.start,
            published: Arc::clone(&published),
            failures_left: Arc::new(AtomicUsize::new(self.publish_failures)),
        };
        let config = RotationConfig::new("test", self.purpose);
        let rotator = Rotator::new(config, source, sink, self.templates, self.initial)
            .with_clock({
                let clock = clock.clone();
                move || clock.now()
            })
            .with_random(self.random);
        let status = rotator.status();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(rotator.run(cancel.clone()));
        Harness { clock, calls, published, status, logs, cancel, task, _log_guard: log_guard }
    }
}

impl Harness {
    /// Lets virtual time run until `at` seconds after the start.
    async fn advance_to(&self, at: f64) {
        tokio::time::sleep_until(self.clock.start + Duration::from_secs_f64(at)).await;
    }

    fn wall(&self) -> SystemTime {
        self.clock.now()
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn published(&self) -> Vec<Published> {
        self.published.lock().unwrap().clone()
    }

    fn status(&self) -> RotationStatus {
        self.status.borrow().clone()
    }

    /// Logged lines at one of `levels` that contain `needle`.
    fn logged(&self, levels: &[Level], needle: &str) -> usize {
        let logs = self.logs.lock().unwrap();
        logs.iter().filter(|(level, line)| levels.contains(level) && line.contains(needle)).count()
    }

    /// Cancels the loop and checks that it stops at once.
    async fn stop(self) -> Vec<Call> {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_millis(1), self.task)
            .await
            .expect("the loop stops as soon as it is cancelled")
            .unwrap();
        assert_eq!(self.status.borrow().phase, Phase::Stopped);
        self.calls.lock().unwrap().clone()
    }
}

/// `actual` is `expected` seconds, give or take the millisecond granularity of tokio's timers.
#[track_caller]
fn assert_at(actual: Duration, expected: f64) {
    let diff = (actual.as_secs_f64() - expected).abs();
    assert!(diff < 0.003, "expected {expected} s, got {actual:?}");
}

#[track_caller]
fn assert_wall(actual: Option<SystemTime>, expected: f64) {
    assert_at(actual.expect("a time").duration_since(t0()).unwrap(), expected);
}

fn request_error() -> Error {
    Error::request("connect: connection refused")
}

// === tests ===

#[tokio::test(start_paused = true)]
async fn rotates_at_the_computed_deadline_with_a_new_key_each_time() {
    let ca = Arc::new(Ca::new());
    let initial = ca.mint(&client(), t0(), t0() + secs(1000));
    let h = Setup::with_ca(ca, InitialCertificate::Current(initial.leaf.clone()), fixed_template(client()))
        .start(|_, _| Reply::Issue(secs(1000)));

    // r = 0.5: NotBefore + 1000 s × (0.7 + 0.2 × 0.5).
    h.advance_to(799.5).await;
    assert!(h.calls().is_empty(), "nothing before the deadline");
    let status = h.status();
    assert_eq!(status.phase, Phase::Waiting);
    assert_eq!(status.deadline, Some(Deadline { at: t0() + secs(800), reason: DeadlineReason::Scheduled }));

    h.advance_to(800.5).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 1);
    assert_at(calls[0].at, 800.0);
    assert_eq!(calls[0].template, client());
    assert_eq!(calls[0].usages, [KeyUsage::DigitalSignature, KeyUsage::ClientAuth]);
    assert_eq!(calls[0].current_serial.as_ref(), Some(&initial.leaf.serial_hex), "authenticates with it");
    let published = h.published();
    assert_eq!(published.len(), 1);
    assert_at(published[0].at, 800.0);
    assert_eq!(published[0].public_key, calls[0].public_key);
    assert_ne!(published[0].public_key, initial.key.public_key_der(), "new key");

    // The new certificate (NotBefore = 800 s) is due at 800 + 800 s.
    h.advance_to(1600.5).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 2);
    assert_at(calls[1].at, 1600.0);
    assert_eq!(calls[1].current_serial.as_ref(), Some(&published[0].leaf.serial_hex));
    assert_ne!(calls[1].public_key, calls[0].public_key, "new key again");
    assert_eq!(h.published().len(), 2);
    assert_eq!(h.status().deadline, None, "the next deadline comes after the loop's one-second pause");

    h.advance_to(1602.0).await;
    let status = h.status();
    assert_eq!((status.rotations, status.renew_errors, status.consecutive_failures), (2, 0, 0));
    assert_wall(status.last_success, 1600.0);
    assert_eq!(status.current_not_before, Some(t0() + secs(1600)));
    assert_eq!(status.current_not_after, Some(t0() + secs(2600)));
    assert_at(status.last_replaced_age.unwrap(), 800.0);
    assert_eq!(status.deadline.map(|d| d.at), Some(t0() + secs(2400)));
    assert_eq!(status.ttl_at(t0() + secs(2000)), Some(secs(600)));
    assert!(status.due_since.is_none() && !status.overdue);
    h.stop().await;
}

/// An error whose message stops short of its cause, as kube's "client error (Connect)" does.
#[derive(Debug)]
struct Shallow(std::io::Error);

impl std::fmt::Display for Shallow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client error (Connect)")
    }
}

impl std::error::Error for Shallow {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_logged_with_its_innermost_cause_once() {
    let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    let h = Setup::new(InitialCertificate::None, fixed_template(client()))
        .start(move |_, _| Reply::Fail(Error::request(Shallow(refused()))));
    h.advance_to(1.0).await;
    assert_eq!(
        h.logged(
            &[Level::WARN],
            "error=certificate request: client error (Connect) cause=connection refused "
        ),
        1
    );
    h.stop().await;

    // A cause the message already ends with is not repeated.
    let h = Setup::new(InitialCertificate::None, fixed_template(client()))
        .start(move |_, _| Reply::Fail(Error::request(refused())));
    h.advance_to(1.0).await;
    assert_eq!(h.logged(&[Level::WARN], "error=certificate request: connection refused kind="), 1);
    assert_eq!(h.logged(&[Level::WARN], "cause="), 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_is_2_4_8_16_seconds_with_jitter_then_every_32_seconds() {
    // The first draw is the deadline's (unused: nothing is held); then one per failure.
    let h = Setup::new(InitialCertificate::None, fixed_template(client()))
        .random(draws([0.3, 0.0, 0.5, 0.9999, 0.2, 0.7]))
        .start(|_, _| Reply::Fail(request_error()));
    h.advance_to(200.0).await;

    let calls = h.calls();
    let gaps: Vec<Duration> = calls.windows(2).map(|pair| pair[1].at - pair[0].at).collect();
    assert_at(calls[0].at, 0.0);
    // Each backoff sleep is base × (1 + 0.1 r) with its own draw:
    // inside 2–2.2, 4–4.4, 8–8.8 and 16–17.6 s.
    for (gap, expected) in gaps.iter().zip([2.0, 4.0 * 1.05, 8.0 * 1.099_99, 16.0 * 1.02]) {
        assert_at(*gap, expected);
    }
    // Then 32 s apart, for ever: attempts at 0, 2, 6.2, 15.0, 31.3, 63.3, …, 191.3.
    assert_eq!(calls.len(), 10);
    for gap in &gaps[4..] {
        assert_at(*gap, 32.0);
    }
    assert!(calls.iter().all(|call| call.current_serial.is_none()), "no certificate to authenticate with");

    let status = h.status();
    assert_eq!((status.consecutive_failures, status.renew_errors, status.rotations), (10, 10, 0));
    assert_eq!(status.last_error.as_ref().map(|e| e.kind()), Some("request"));
    assert_wall(status.last_error_at, calls[9].at.as_secs_f64());
    assert_eq!(status.phase, Phase::BackingOff);
    assert!(h.published().is_empty());
    // Failures 1, 2, 4 and 8 are warnings; the others are debug lines.
    assert_eq!(h.logged(&[Level::WARN], "attempt failed"), 4);
    assert_eq!(h.logged(&[Level::DEBUG], "attempt failed"), 6);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn api_down_for_hours_keeps_the_old_identity_and_rotates_once_back() {
    const DAY: u64 = 86_400;
    let deadline = 69_120.0; // 0.8 × one day
    let back = deadline + 3.0 * 3600.0;
    let ca = Arc::new(Ca::new());
    let initial = ca.mint(&client(), t0(), t0() + secs(DAY));
    let h = Setup::with_ca(ca, InitialCertificate::Current(initial.leaf.clone()), fixed_template(client()))
        .start(move |_, call| {
            if call.at.as_secs_f64() < back { Reply::Fail(request_error()) } else { Reply::Issue(secs(DAY)) }
        });

    h.advance_to(deadline + 2.0 * 3600.0).await;
    let status = h.status();
    assert!(h.published().is_empty(), "nothing new to publish");
    assert_eq!(
        status.current_serial.as_ref(),
        Some(&initial.leaf.serial_hex),
        "the old certificate is in use"
    );
    assert!(!status.expired);
    assert_eq!(status.overdue_threshold, secs(3600), "5 % of a day, capped at an hour");
    assert!(status.overdue);
    assert_eq!(status.due_since, Some(t0() + secs(69_120)));
    assert_at(status.overdue_by_at(h.wall()).unwrap(), 7200.0);
    assert_eq!(h.logged(&[Level::WARN], "overdue"), 1);

    h.advance_to(back + 60.0).await;
    let calls = h.calls();
    let published = h.published();
    assert_eq!(published.len(), 1, "rotated once");
    assert!((back..back + 32.0).contains(&published[0].at.as_secs_f64()), "{:?}", published[0].at);
    assert_eq!(published[0].public_key, calls.last().unwrap().public_key);
    assert_at(calls[0].at, deadline);
    for pair in calls[4..].windows(2) {
        assert_at(pair[1].at - pair[0].at, 32.0);
    }
    let failures = calls.len() - 1;
    assert!(failures > 300, "{failures}");

    let status = h.status();
    assert_eq!((status.rotations, status.consecutive_failures), (1, 0));
    assert_eq!(status.renew_errors, failures as u64);
    assert!(!status.overdue && status.due_since.is_none() && status.overdue_by.is_none());
    assert_eq!(h.logged(&[Level::WARN], "overdue"), 1, "one overdue warning per crossing");
    // Warnings for failures 1, 2, 4, …, 256 only: no line every 32 s.
    assert_eq!(h.logged(&[Level::WARN], "attempt failed"), failures.ilog2() as usize + 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_certificate_expiring_during_an_outage_stays_published_and_shows_as_expired() {
    let ca = Arc::new(Ca::new());
    let initial = ca.mint(&client(), t0(), t0() + secs(1000));
    let h =
        Setup::with_ca(ca, InitialCertificate::Current(initial.leaf.clone()), fixed_template(client()))
            .start(|_, call| {
                if call.at < secs(1200) { Reply::Fail(request_error()) } else { Reply::Issue(secs(1000)) }
            });

    h.advance_to(990.0).await;
    let status = h.status();
    assert!(status.overdue && !status.expired, "overdue 50 s after the deadline at 800 s");
    assert!(h.calls().iter().all(|c| c.current_serial.as_ref() == Some(&initial.leaf.serial_hex)));

    h.advance_to(1100.0).await;
    let status = h.status();
    assert!(status.expired);
    assert_eq!(status.ttl_at(h.wall()), Some(Duration::ZERO));
    assert_eq!(status.current_serial.as_ref(), Some(&initial.leaf.serial_hex), "still the identity in use");
    assert!(h.published().is_empty());
    assert_eq!(h.logged(&[Level::ERROR], "has expired"), 1);
    let after_expiry: Vec<Call> = h.calls().into_iter().filter(|c| c.at > secs(1000)).collect();
    assert!(!after_expiry.is_empty());
    assert!(after_expiry.iter().all(|c| c.current_serial.is_none()), "bootstrap credentials from now on");

    h.advance_to(1300.0).await;
    assert_eq!(h.published().len(), 1);
    let status = h.status();
    assert!(!status.expired && !status.overdue);
    assert_eq!(status.rotations, 1);
    assert_eq!(h.logged(&[Level::ERROR], "has expired"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_template_change_cancels_the_pending_request_and_requests_the_new_template() {
    let (templates, receiver) = watch::channel(Some(serving("192.0.2.1")));
    let mut setup = Setup::new(InitialCertificate::None, receiver);
    setup.purpose = CertificatePurpose::Serving;
    let h = setup.start(|_, call| {
        if call.template == serving("192.0.2.1") { Reply::Hang } else { Reply::Issue(secs(1000)) }
    });

    h.advance_to(10.0).await;
    assert_eq!(h.calls().len(), 1, "a request for the first template is pending");
    templates.send_replace(Some(serving("192.0.2.2")));
    h.advance_to(11.0).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[0].cancelled, "the pending request was cancelled");
    assert_eq!(calls[1].template, serving("192.0.2.2"));
    assert_eq!(calls[1].usages, [KeyUsage::DigitalSignature, KeyUsage::ServerAuth]);
    assert_at(calls[1].at, 10.0);
    assert!(!calls[1].cancelled);
    let published = h.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].leaf.ip_addresses, ["192.0.2.2".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(h.status().renew_errors, 0, "a cancelled request is not a failure");

    // The same template again starts nothing: the new certificate satisfies it.
    h.advance_to(15.0).await;
    templates.send_replace(Some(serving("192.0.2.2")));
    h.advance_to(20.0).await;
    assert_eq!(h.calls().len(), 2);

    // One the held certificate does not satisfy rotates at once, long before the deadline.
    templates.send_replace(Some(serving("192.0.2.1")));
    h.advance_to(21.0).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 3);
    assert_at(calls[2].at, 20.0);
    assert_eq!(calls[2].current_serial.as_ref(), Some(&published[0].leaf.serial_hex));

    let calls = h.stop().await;
    assert!(calls[2].cancelled, "stopping abandons the pending request");
}

#[tokio::test(start_paused = true)]
async fn without_a_template_nothing_is_requested_and_the_rotation_becomes_overdue() {
    let ca = Arc::new(Ca::new());
    let initial = ca.mint(&client(), t0(), t0() + secs(1000));
    let (templates, receiver) = watch::channel(None);
    let h = Setup::with_ca(ca, InitialCertificate::Current(initial.leaf.clone()), receiver)
        .start(|_, _| Reply::Issue(secs(1000)));

    // Due at 800 s; overdue 50 s (5 % of the lifetime) later.
    h.advance_to(849.0).await;
    let status = h.status();
    assert_eq!(status.phase, Phase::NoTemplate);
    assert!(!status.overdue);
    assert_eq!(h.logged(&[Level::WARN], "overdue"), 0);
    h.advance_to(851.0).await;
    assert!(h.status().overdue);
    assert_eq!(h.logged(&[Level::WARN], "overdue"), 1);

    h.advance_to(2000.0).await;
    assert!(h.calls().is_empty(), "no template, no request");
    assert!(h.status().expired);
    assert_eq!(h.logged(&[Level::ERROR], "has expired"), 1);
    assert_eq!(h.logged(&[Level::WARN], "overdue"), 1);

    templates.send_replace(Some(serving("192.0.2.1")));
    h.advance_to(2001.0).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 1);
    assert_at(calls[0].at, 2000.0);
    assert_eq!(calls[0].current_serial, None, "the held certificate has expired");
    assert_eq!(h.published().len(), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_request_never_answered_times_out_after_15_minutes() {
    let h = Setup::new(InitialCertificate::None, fixed_template(client()))
        .random(draws([0.0]))
        .start(|_, _| Reply::Hang);
    h.advance_to(1900.0).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 3);
    assert_at(calls[1].at, 902.0);
    assert_at(calls[2].at, 900.0 + 2.0 + 900.0 + 4.0);
    assert!(calls[0].cancelled && calls[1].cancelled && !calls[2].cancelled);
    let status = h.status();
    assert_eq!(
        status.last_error.as_ref().map(|e| e.to_string()).as_deref(),
        Some("no certificate issued within 900 s")
    );
    assert_eq!((status.consecutive_failures, status.phase), (2, Phase::Requesting));

    let calls = h.stop().await;
    assert!(calls[2].cancelled, "stopping abandons the pending request");
}

#[tokio::test(start_paused = true)]
async fn denied_and_unusable_certificates_are_failures_and_are_not_published() {
    let ca = Arc::new(Ca::new());
    let initial = ca.mint(&client(), t0(), t0() + secs(1000));
    let h = Setup::with_ca(ca, InitialCertificate::Current(initial.leaf), fixed_template(client()))
        .random(draws([0.0]))
        .start(|index, _| match index {
            0 => Reply::Fail(Error::Denied { reason: "NotAllowed".into(), message: "not this node".into() }),
            1 => Reply::OtherKey,
            2 => Reply::IssueWindow(t0(), t0() + secs(1)),
            3 => Reply::WrongSubject,
            _ => Reply::Issue(secs(1000)),
        });

    // Due at 700 s (r = 0); attempts at 700, 702, 706, 714 and 730 s.
    h.advance_to(731.0).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 5);
    let published = h.published();
    assert_eq!(published.len(), 1);
    assert_at(published[0].at, 730.0);
    assert_eq!(published[0].public_key, calls[4].public_key);
    let status = h.status();
    assert_eq!((status.renew_errors, status.consecutive_failures, status.rotations), (4, 0, 1));

    let any = [Level::WARN, Level::DEBUG];
    assert_eq!(h.logged(&any, "kind=\"denied\""), 1);
    assert_eq!(h.logged(&any, "denied (NotAllowed): not this node"), 1);
    assert_eq!(h.logged(&any, "kind=\"issued\""), 3);
    assert_eq!(h.logged(&any, "is not for the key generated for this request"), 1);
    assert_eq!(h.logged(&any, "expired at 2023-11-14T22:13:21Z"), 1);
    assert_eq!(h.logged(&any, "lacks part of the requested template"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bootstrap_data_is_replaced_at_once_and_a_failed_publish_is_retried_with_a_new_key() {
    let ca = Arc::new(Ca::new());
    let bootstrap = ca.mint(&client(), t0(), t0() + secs(1000));
    let mut setup = Setup::with_ca(
        ca,
        InitialCertificate::BootstrapData(bootstrap.leaf.clone()),
        fixed_template(client()),
    )
    .random(draws([0.0]));
    setup.publish_failures = 1;
    let h = setup.start(|_, _| Reply::Issue(secs(1000)));

    h.advance_to(3.0).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 2);
    assert_at(calls[0].at, 0.0);
    assert_at(calls[1].at, 2.0);
    assert!(calls.iter().all(|c| c.current_serial.as_ref() == Some(&bootstrap.leaf.serial_hex)));
    assert_ne!(calls[0].public_key, calls[1].public_key);
    let published = h.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].public_key, calls[1].public_key);

    let status = h.status();
    assert_eq!((status.renew_errors, status.rotations), (1, 1));
    assert_eq!(status.last_error.as_ref().map(|e| e.kind()), Some("publish"));
    assert_at(status.last_replaced_age.unwrap(), 2.0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_is_noticed_within_five_minutes() {
    const DAY: u64 = 86_400;
    let ca = Arc::new(Ca::new());
    let initial = ca.mint(&client(), t0(), t0() + secs(DAY));
    let h = Setup::with_ca(ca, InitialCertificate::Current(initial.leaf), fixed_template(client()))
        .start(|_, _| Reply::Issue(secs(DAY)));

    // The machine sleeps through the deadline (0.8 day): the wall clock moves, tokio's does not.
    h.advance_to(100.0).await;
    h.clock.jump(secs(80_000));
    h.advance_to(400.0).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 1);
    assert_at(calls[0].at, WALL_CLOCK_RECHECK.as_secs_f64());
    assert_eq!(h.published().len(), 1);
    // The rotation counts as due from when the loop noticed, so waking up is not "overdue".
    assert_eq!(h.logged(&[Level::WARN], "overdue"), 0);
    h.stop().await;
}

#[test]
fn os_random_draws_are_in_the_unit_interval_and_vary() {
    let draws: Vec<f64> = (0..64).map(|_| os_random()).collect();
    assert!(draws.iter().all(|r| (0.0..1.0).contains(r)), "{draws:?}");
    assert!(draws.windows(2).any(|pair| pair[0] != pair[1]));
}
