//! What the loop is doing, for metrics, health checks and `node-agent status`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::Error;
use crate::schedule::{Deadline, overdue_by};

/// What the loop is doing right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Built, not running yet.
    #[default]
    Idle,
    /// Sleeping until the rotation deadline.
    Waiting,
    /// The deadline has passed but there is no template to request yet (SPEC SV-3).
    NoTemplate,
    /// A certificate request is in flight.
    Requesting,
    /// Handing a new identity to the sink.
    Publishing,
    /// Sleeping after a failed attempt.
    BackingOff,
    /// Cancelled; the loop has returned.
    Stopped,
}

/// A snapshot of the rotation loop, sent on a `tokio::sync::watch` channel after every change.
///
/// Counters only grow. Time-dependent values (`expired`, `overdue_by`, `overdue`) are as of
/// `updated_at`; exporters that want them as of scrape time use [`RotationStatus::ttl_at`] and
/// [`RotationStatus::overdue_by_at`].
///
/// What a metrics exporter reads (names are the node agent's to choose; SPEC §3.9):
///
/// | Metric | From |
/// |---|---|
/// | renew errors (`…_expiration_renew_errors`) | `renew_errors` |
/// | TTL (`…_ttl_seconds`; +Inf without a certificate) | [`RotationStatus::ttl_at`] |
/// | rotation histogram (`…_rotation_seconds`) | `last_replaced_age`, once per increase of `rotations` |
/// | last rotation timestamp | `last_success` |
/// | rotation overdue (0/1, or seconds) | `overdue`, [`RotationStatus::overdue_by_at`] |
/// | expiry timestamp | `current_not_after` |
///
/// A watch channel keeps only the newest value: two rotations between two reads show as one
/// `last_replaced_age`. Rotations are minutes apart at the very least, so this does not happen
/// in practice.
#[derive(Clone, Debug)]
pub struct RotationStatus {
    /// What the loop is doing.
    pub phase: Phase,
    /// When this snapshot was taken (wall clock).
    pub updated_at: SystemTime,
    /// NotBefore of the certificate in use, if any.
    pub current_not_before: Option<SystemTime>,
    /// NotAfter of the certificate in use, if any.
    pub current_not_after: Option<SystemTime>,
    /// Serial number (lowercase hex) of the certificate in use, if any.
    pub current_serial: Option<String>,
    /// The certificate in use has expired. It stays published: nothing newer exists.
    pub expired: bool,
    /// The current rotation deadline and its reason; `None` until computed, which happens at
    /// the start and one second ([`LOOP_RESTART_PERIOD`](crate::LOOP_RESTART_PERIOD)) after each rotation.
    pub deadline: Option<Deadline>,
    /// Since when a rotation has been due without success: when the loop reached the deadline
    /// (later than the deadline itself only if the process was not running or the machine was
    /// asleep then). `None` before the deadline and after a success.
    pub due_since: Option<SystemTime>,
    /// How long a rotation may stay due before it counts as overdue.
    pub overdue_threshold: Duration,
    /// How long the rotation has been due without success, as of `updated_at`.
    pub overdue_by: Option<Duration>,
    /// `overdue_by` has reached `overdue_threshold`: the "rotation overdue" signal.
    pub overdue: bool,
    /// When the last rotation succeeded (the new identity was published).
    pub last_success: Option<SystemTime>,
    /// The most recent failure; kept after a later success (see `consecutive_failures`).
    pub last_error: Option<Arc<Error>>,
    /// When `last_error` happened.
    pub last_error_at: Option<SystemTime>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Failed attempts in total: the renew-error counter (SPEC §3.9 `…_renew_errors`).
    pub renew_errors: u64,
    /// Successful rotations in total.
    pub rotations: u64,
    /// At the last rotation, how long the replaced certificate had been valid (`now −
    /// NotBefore`): the observation of the rotation histogram (SPEC M-9 g, §3.9).
    pub last_replaced_age: Option<Duration>,
}

impl RotationStatus {
    /// Time left until the certificate in use expires (zero once expired); `None` without a
    /// certificate, which the kubelet's TTL gauge reports as +Inf.
    pub fn ttl_at(&self, now: SystemTime) -> Option<Duration> {
        self.current_not_after.map(|not_after| not_after.duration_since(now).unwrap_or_default())
    }

    /// [`overdue_by`] as of `now`.
    pub fn overdue_by_at(&self, now: SystemTime) -> Option<Duration> {
        self.due_since.and_then(|due| overdue_by(now, due, self.last_success))
    }
}
