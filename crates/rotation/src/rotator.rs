//! The rotation loop (SPEC M-5…M-14): wait for the deadline, request with a new key, retry on
//! the kubelet's backoff, publish, repeat.

use std::fmt;
use std::future::{Future, pending};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kubecert_csr::{
    Certificate, CertificatePurpose, CertificateTemplate, KeyAlgorithm, PrivateKey, build_csr_pem, usages_for,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::schedule::{
    Deadline, DeadlineReason, ROTATION_WAIT_TIMEOUT, overdue_threshold, retry_delay, rotation_deadline,
    template_change_cancels_request,
};
use crate::{CertificateRequest, CertificateSource, CredentialsSink, Error, Identity, Phase, RotationStatus};

/// Pause after a successful rotation before the next deadline is computed, as the kubelet's
/// one-second loop period: a certificate that is already due when it arrives cannot spin the loop.
pub const LOOP_RESTART_PERIOD: Duration = Duration::from_secs(1);

/// Longest single sleep while waiting for a wall-clock instant. The loop re-reads the wall
/// clock at least this often, so a suspended machine or a clock step is noticed within five
/// minutes (tokio's timers follow the monotonic clock, which stops during suspend).
pub const WALL_CLOCK_RECHECK: Duration = Duration::from_secs(5 * 60);

/// Reads the wall clock.
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;
/// Draws a number in `[0, 1)`.
type Random = Box<dyn FnMut() -> f64 + Send>;

/// What to rotate and how.
#[derive(Clone, Debug)]
pub struct RotationConfig {
    /// Name in logs (SPEC M-16), e.g. `kubelet-client` or `kubelet-server`.
    pub name: String,
    /// Client or serving certificate: picks the requested usages (SPEC M-10).
    pub purpose: CertificatePurpose,
    /// Algorithm of the key generated for each rotation. Default: ECDSA P-256, as the kubelet.
    pub key_algorithm: KeyAlgorithm,
    /// How long one request may wait for its certificate. Default: 15 minutes (SPEC M-9 e).
    pub wait_timeout: Duration,
    /// Overrides [`overdue_threshold`](crate::overdue_threshold) (5 % of the lifetime, at most an hour).
    pub overdue_threshold: Option<Duration>,
}

impl RotationConfig {
    /// The defaults: P-256 keys, 15-minute wait, overdue threshold from the certificate's lifetime.
    pub fn new(name: impl Into<String>, purpose: CertificatePurpose) -> Self {
        Self {
            name: name.into(),
            purpose,
            key_algorithm: KeyAlgorithm::EcdsaP256,
            wait_timeout: ROTATION_WAIT_TIMEOUT,
            overdue_threshold: None,
        }
    }
}

/// The certificate in use when the loop starts (the caller loads it: SPEC M-2, FS-2, B-5).
#[derive(Clone, Debug)]
pub enum InitialCertificate {
    /// Nothing usable: rotate at once.
    None,
    /// The certificate currently in use, e.g. the store's current pair. Rotated at its
    /// deadline, or at once if it has expired or does not satisfy the template.
    Current(Certificate),
    /// A certificate from bootstrap data (a kubeconfig's embedded client certificate): in use,
    /// but replaced at once (SPEC M-2).
    BootstrapData(Certificate),
}

/// A template channel for a template that never changes, such as a node's client certificate.
pub fn fixed_template(template: CertificateTemplate) -> watch::Receiver<Option<CertificateTemplate>> {
    watch::channel(Some(template)).1
}

/// The rotation loop for one certificate, generic over where certificates come from and where
/// they go. Build it with [`Rotator::new`], keep a [`Rotator::status`] receiver, then
/// [`Rotator::run`] it until the token is cancelled.
pub struct Rotator<S, K> {
    source: S,
    sink: K,
    core: Core,
}

impl<S: CertificateSource, K: CredentialsSink> Rotator<S, K> {
    /// A loop that requests from `source`, publishes to `sink`, and takes the template from
    /// `templates` (`None`: no template yet, so no request: SPEC SV-3). Uses the system clock
    /// and the operating system's random numbers; see [`Rotator::with_clock`] and
    /// [`Rotator::with_random`].
    pub fn new(
        config: RotationConfig,
        source: S,
        sink: K,
        templates: watch::Receiver<Option<CertificateTemplate>>,
        initial: InitialCertificate,
    ) -> Self {
        let (held, forced) = match initial {
            InitialCertificate::None => (None, false),
            InitialCertificate::Current(cert) => (Some(cert), false),
            InitialCertificate::BootstrapData(cert) => (Some(cert), true),
        };
        let clock: Clock = Arc::new(SystemTime::now);
        let now = clock();
        let state = State { held, forced, ..State::default() };
        let status = watch::Sender::new(state.snapshot(&config, now));
        let core = Core {
            config,
            templates,
            templates_closed: false,
            clock,
            random: Box::new(os_random),
            cancel: CancellationToken::new(),
            status,
            state,
        };
        Self { source, sink, core }
    }

    /// Replaces the wall clock (tests advance a fake one in step with tokio's paused time).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.core.clock = Arc::new(clock);
        self.core.publish_status();
        self
    }

    /// Replaces the random source; it must return numbers in `[0, 1)` (others are clamped).
    pub fn with_random(mut self, random: impl FnMut() -> f64 + Send + 'static) -> Self {
        self.core.random = Box::new(random);
        self
    }

    /// A receiver of the loop's [`RotationStatus`], updated on every change.
    pub fn status(&self) -> watch::Receiver<RotationStatus> {
        self.core.status.subscribe()
    }

    /// Runs until `cancel` is cancelled. Never returns early: every failure is retried. A
    /// pending request is abandoned on cancellation; a publish already begun is finished first.
    pub async fn run(self, cancel: CancellationToken) {
        let Self { source, sink, mut core } = self;
        core.cancel = cancel;
        let span = info_span!("certificate_rotation", name = %core.config.name);
        core.run(&source, &sink).instrument(span).await;
    }
}

/// Everything but the source and the sink, so that a request future can borrow those while the
/// loop's own state changes.
struct Core {
    config: RotationConfig,
    templates: watch::Receiver<Option<CertificateTemplate>>,
    /// The template sender is gone: the template can no longer change.
    templates_closed: bool,
    clock: Clock,
    random: Random,
    cancel: CancellationToken,
    status: watch::Sender<RotationStatus>,
    state: State,
}

#[derive(Default)]
struct State {
    held: Option<Certificate>,
    /// The held certificate came from bootstrap data; cleared once a deadline has used it.
    forced: bool,
    last_requested: Option<CertificateTemplate>,
    /// The random draw of the held certificate's deadline. Drawn once per certificate, so that
    /// restarting the cycle (a template change, a template arriving) does not move a deadline;
    /// the kubelet draws again on every pass of its loop.
    deadline_draw: Option<f64>,
    deadline: Option<Deadline>,
    /// When the loop reached the deadline; cleared by a success.
    due_since: Option<SystemTime>,
    phase: Phase,
    last_success: Option<SystemTime>,
    last_error: Option<Arc<Error>>,
    last_error_at: Option<SystemTime>,
    consecutive_failures: u32,
    renew_errors: u64,
    rotations: u64,
    last_replaced_age: Option<Duration>,
    warned_overdue: bool,
    warned_expired: bool,
}

impl State {
    fn overdue_threshold(&self, config: &RotationConfig) -> Duration {
        config.overdue_threshold.unwrap_or_else(|| overdue_threshold(self.held.as_ref()))
    }

    fn snapshot(&self, config: &RotationConfig, now: SystemTime) -> RotationStatus {
        let held = self.held.as_ref();
        let mut status = RotationStatus {
            phase: self.phase,
            updated_at: now,
            current_not_before: held.map(|c| c.not_before),
            current_not_after: held.map(|c| c.not_after),
            current_serial: held.map(|c| c.serial_hex.clone()),
            expired: held.is_some_and(|c| c.is_expired_at(now)),
            deadline: self.deadline,
            due_since: self.due_since,
            overdue_threshold: self.overdue_threshold(config),
            overdue_by: None,
            overdue: false,
            last_success: self.last_success,
            last_error: self.last_error.clone(),
            last_error_at: self.last_error_at,
            consecutive_failures: self.consecutive_failures,
            renew_errors: self.renew_errors,
            rotations: self.rotations,
            last_replaced_age: self.last_replaced_age,
        };
        status.overdue_by = status.overdue_by_at(now);
        status.overdue = status.overdue_by.is_some_and(|late| late >= status.overdue_threshold);
        status
    }
}

/// Which template changes end a [`Core::wait`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    Nothing,
    Any,
    /// Only changes that meet the template-change rule (SPEC M-13).
    CancelRule,
}

enum Wake<T> {
    Done(T),
    TemplateChanged,
    Cancelled,
}

enum Attempt {
    Rotated,
    Failed(Error),
    /// A template change cancelled the pending request (SPEC M-13).
    Superseded,
    Cancelled,
}

enum Rotation {
    Rotated,
    NoTemplate,
    Cancelled,
}

impl Core {
    async fn run<S: CertificateSource, K: CredentialsSink>(&mut self, source: &S, sink: &K) {
        info!("certificate rotation started");
        while self.cycle(source, sink).await {}
        self.set_phase(Phase::Stopped);
        info!("certificate rotation stopped");
    }

    /// One deadline and the rotation that follows it. `false` once cancelled.
    async fn cycle<S: CertificateSource, K: CredentialsSink>(&mut self, source: &S, sink: &K) -> bool {
        let template = self.templates.borrow_and_update().clone();
        let forced = std::mem::take(&mut self.state.forced);
        let draw = *self.state.deadline_draw.get_or_insert_with(&mut self.random);
        let deadline =
            rotation_deadline(self.now(), self.state.held.as_ref(), template.as_ref(), forced, draw);
        self.state.deadline = Some(deadline);
        self.set_phase(Phase::Waiting);
        if deadline.reason == DeadlineReason::Scheduled {
            info!(at = %WallTime(deadline.at), "next rotation scheduled");
        }
        match self.wait(sleep_until_wall(self.clock.clone(), deadline.at), Watch::CancelRule).await {
            Wake::Cancelled => return false,
            Wake::TemplateChanged => return true,
            Wake::Done(()) => {}
        }
        // Counted from now rather than from `deadline.at`: a deadline that passed while the
        // process was down or the machine asleep is not yet a failure to rotate.
        let now = self.now();
        self.state.due_since.get_or_insert(now);
        info!(reason = %deadline.reason, "rotating certificate");

        let settle = match self.rotate(source, sink).await {
            Rotation::Cancelled => return false,
            Rotation::Rotated => self.wait(tokio::time::sleep(LOOP_RESTART_PERIOD), Watch::Nothing).await,
            Rotation::NoTemplate => {
                info!("rotation is due but there is no certificate template yet; waiting for one");
                self.set_phase(Phase::NoTemplate);
                self.wait(pending::<()>(), Watch::Any).await
            }
        };
        !matches!(settle, Wake::Cancelled)
    }

    /// Attempts on the backoff schedule (SPEC M-8) until one succeeds.
    async fn rotate<S: CertificateSource, K: CredentialsSink>(&mut self, source: &S, sink: &K) -> Rotation {
        let mut failures = 0;
        loop {
            let Some(template) = self.templates.borrow_and_update().clone() else {
                return Rotation::NoTemplate;
            };
            let error = match self.attempt(source, sink, template).await {
                Attempt::Rotated => return Rotation::Rotated,
                Attempt::Cancelled => return Rotation::Cancelled,
                Attempt::Superseded => continue,
                Attempt::Failed(error) => error,
            };
            failures += 1;
            let delay = retry_delay(failures, (self.random)());
            self.record_failure(error, delay);
            if let Wake::Cancelled = self.wait(tokio::time::sleep(delay), Watch::Nothing).await {
                return Rotation::Cancelled;
            }
        }
    }

    /// One request with a new key (SPEC M-9), then publish.
    async fn attempt<S: CertificateSource, K: CredentialsSink>(
        &mut self,
        source: &S,
        sink: &K,
        template: CertificateTemplate,
    ) -> Attempt {
        let request = match self.prepare(template) {
            Ok(request) => request,
            Err(error) => return Attempt::Failed(error),
        };
        self.state.last_requested = Some(request.template.clone());
        self.set_phase(Phase::Requesting);
        debug!(algorithm = %request.key.algorithm(), "requesting a certificate");

        let timeout = self.config.wait_timeout;
        let obtain = tokio::time::timeout(timeout, source.obtain(&request));
        let chain_pem = match self.wait(obtain, Watch::CancelRule).await {
            Wake::Cancelled => return Attempt::Cancelled,
            Wake::TemplateChanged => {
                info!("certificate template changed while a request was pending; requesting again");
                return Attempt::Superseded;
            }
            Wake::Done(Err(_elapsed)) => return Attempt::Failed(Error::TimedOut(timeout)),
            Wake::Done(Ok(Err(error))) => return Attempt::Failed(error),
            Wake::Done(Ok(Ok(chain_pem))) => chain_pem,
        };
        let identity = match accept(&chain_pem, &request, self.now()) {
            Ok(identity) => identity,
            Err(error) => return Attempt::Failed(error),
        };
        let leaf = identity.leaf().clone();
        self.set_phase(Phase::Publishing);
        if let Err(error) = sink.publish(identity).await {
            return Attempt::Failed(Error::Publish(error));
        }
        self.record_success(leaf);
        Attempt::Rotated
    }

    fn prepare(&self, template: CertificateTemplate) -> Result<CertificateRequest, Error> {
        let algorithm = self.config.key_algorithm;
        let key = PrivateKey::generate(algorithm).map_err(Error::Prepare)?;
        let csr_pem = build_csr_pem(&template, &key).map_err(Error::Prepare)?;
        let now = self.now();
        Ok(CertificateRequest {
            template,
            key,
            csr_pem,
            usages: usages_for(algorithm, self.config.purpose),
            current: self.state.held.as_ref().filter(|cert| !cert.is_expired_at(now)).cloned(),
        })
    }

    /// Waits for `work`, for cancellation, or for a template change selected by `watch`,
    /// logging overdue and expiry warnings when their time comes meanwhile.
    async fn wait<T>(&mut self, work: impl Future<Output = T>, watch: Watch) -> Wake<T> {
        enum Event {
            Template { open: bool },
            Alarm,
        }
        let mut work = pin!(work);
        loop {
            let alarm = self.next_alarm();
            let watching = watch != Watch::Nothing && !self.templates_closed;
            let event = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Wake::Cancelled,
                out = &mut work => return Wake::Done(out),
                changed = self.templates.changed(), if watching => Event::Template { open: changed.is_ok() },
                () = sleep_until_wall(self.clock.clone(), alarm.unwrap_or(SystemTime::UNIX_EPOCH)),
                    if alarm.is_some() => Event::Alarm,
            };
            match event {
                Event::Template { open: false } => self.templates_closed = true,
                Event::Template { open: true } => {
                    if watch == Watch::Any || self.cancel_rule_met() {
                        return Wake::TemplateChanged;
                    }
                }
                Event::Alarm => self.raise_alarms(),
            }
        }
    }

    fn cancel_rule_met(&mut self) -> bool {
        let current = self.templates.borrow_and_update();
        template_change_cancels_request(
            self.state.held.as_ref(),
            current.as_ref(),
            self.state.last_requested.as_ref(),
        )
    }

    /// When the overdue warning is due: the threshold after `due_since`, unless already given.
    fn overdue_alarm(&self) -> Option<SystemTime> {
        let due = self.state.due_since.filter(|_| !self.state.warned_overdue)?;
        due.checked_add(self.state.overdue_threshold(&self.config))
    }

    /// When the expiry error is due: the first second after NotAfter, unless already given.
    fn expiry_alarm(&self) -> Option<SystemTime> {
        let held = self.state.held.as_ref().filter(|_| !self.state.warned_expired)?;
        held.not_after.checked_add(Duration::from_secs(1))
    }

    fn next_alarm(&self) -> Option<SystemTime> {
        self.overdue_alarm().into_iter().chain(self.expiry_alarm()).min()
    }

    /// Logs the warnings whose time has come, once per crossing. An alarm whose time has come is
    /// always consumed, so a wall clock that steps backwards cannot make it fire in a loop.
    fn raise_alarms(&mut self) {
        let now = self.now();
        let status = self.state.snapshot(&self.config, now);
        if self.overdue_alarm().is_some_and(|at| now >= at) {
            self.state.warned_overdue = true;
            warn!(
                due_since = status.due_since.map(WallTime).map(tracing::field::display),
                overdue_by = ?status.overdue_by,
                consecutive_failures = status.consecutive_failures,
                last_error = status.last_error.as_ref().map(tracing::field::display),
                "certificate rotation is overdue: it has been due for longer than the threshold and \
                 no rotation has succeeded since"
            );
        }
        if self.expiry_alarm().is_some_and(|at| now >= at) {
            self.state.warned_expired = true;
            error!(
                not_after = status.current_not_after.map(WallTime).map(tracing::field::display),
                "the certificate in use has expired; it stays in use until a new one is issued"
            );
        }
        self.status.send_replace(status);
    }

    fn record_failure(&mut self, error: Error, retry_in: Duration) {
        let now = self.now();
        self.state.consecutive_failures += 1;
        self.state.renew_errors += 1;
        let failures = self.state.consecutive_failures;
        // Full warnings for failures 1, 2, 4, 8, …: a long outage is visible without a line
        // every 32 s. The overdue warning covers the outage as a whole.
        const MESSAGE: &str = "certificate rotation attempt failed";
        // The innermost cause (connection refused, unknown issuer, …) unless the message already
        // ends with it: request errors often stop at "client error (Connect)" on their own.
        let message = error.to_string();
        let cause = std::iter::successors(std::error::Error::source(&error), |e| e.source())
            .last()
            .map(ToString::to_string)
            .filter(|cause| !message.ends_with(cause.as_str()));
        macro_rules! report {
            ($level:ident) => {
                $level!(
                    error = %message,
                    cause = cause.as_deref().map(tracing::field::display),
                    kind = error.kind(),
                    failures,
                    ?retry_in,
                    "{MESSAGE}"
                )
            };
        }
        if failures.is_power_of_two() {
            report!(warn);
        } else {
            report!(debug);
        }
        self.state.last_error = Some(Arc::new(error));
        self.state.last_error_at = Some(now);
        self.set_phase(Phase::BackingOff);
    }

    fn record_success(&mut self, leaf: Certificate) {
        let now = self.now();
        info!(
            serial = %leaf.serial_hex,
            not_before = %WallTime(leaf.not_before),
            not_after = %WallTime(leaf.not_after),
            "certificate rotated"
        );
        let state = &mut self.state;
        state.last_replaced_age =
            state.held.as_ref().map(|old| now.duration_since(old.not_before).unwrap_or_default());
        state.held = Some(leaf);
        state.last_success = Some(now);
        state.consecutive_failures = 0;
        state.rotations += 1;
        state.due_since = None;
        state.deadline = None;
        state.deadline_draw = None;
        state.warned_overdue = false;
        state.warned_expired = false;
        self.set_phase(Phase::Waiting);
    }

    fn now(&self) -> SystemTime {
        (self.clock)()
    }

    fn set_phase(&mut self, phase: Phase) {
        self.state.phase = phase;
        self.publish_status();
    }

    fn publish_status(&mut self) {
        self.status.send_replace(self.state.snapshot(&self.config, self.now()));
    }
}

/// Checks an issued chain before it is published: the leaf is for our key, has not expired,
/// and carries what was asked for. The kubelet publishes whatever it gets and, when the
/// template is not satisfied, asks again a second later; we keep the old identity and retry on
/// the backoff schedule instead, so a signer that rewrites subjects cannot cause a request storm.
fn accept(chain_pem: &str, request: &CertificateRequest, now: SystemTime) -> Result<Identity, Error> {
    let identity = Identity::new(chain_pem, request.key.clone())?;
    let leaf = identity.leaf();
    if leaf.is_expired_at(now) {
        return Err(Error::Issued(format!(
            "certificate (serial {}) expired at {}",
            leaf.serial_hex,
            WallTime(leaf.not_after)
        )));
    }
    if !request.template.is_satisfied_by(leaf) {
        return Err(Error::Issued(format!(
            "certificate (serial {}, CN {:?}, O {:?}, DNS {:?}, IP {:?}) lacks part of the requested \
             template {:?}",
            leaf.serial_hex,
            leaf.subject.common_name,
            leaf.subject.organizations,
            leaf.dns_names,
            leaf.ip_addresses,
            request.template,
        )));
    }
    Ok(identity)
}

/// Sleeps until the wall clock reaches `at`, re-reading it at least every [`WALL_CLOCK_RECHECK`].
async fn sleep_until_wall(clock: Clock, at: SystemTime) {
    loop {
        let left = at.duration_since(clock()).unwrap_or_default();
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(WALL_CLOCK_RECHECK)).await;
    }
}

/// A uniform draw in `[0, 1)` from the operating system. Jitter is not a secret: should the
/// system generator ever fail, the middle of the range is good enough.
fn os_random() -> f64 {
    let bytes = aws_lc_rs::rand::generate::<[u8; 8]>(&aws_lc_rs::rand::SystemRandom::new())
        .map(|random| random.expose())
        .unwrap_or([0x80, 0, 0, 0, 0, 0, 0, 0]);
    // The top 53 bits fill an f64 mantissa exactly.
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// A wall-clock instant shown as RFC 3339 in logs and messages.
struct WallTime(SystemTime);

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::try_from(self.0) {
            Ok(timestamp) => write!(f, "{timestamp}"),
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}

#[cfg(test)]
mod tests;
