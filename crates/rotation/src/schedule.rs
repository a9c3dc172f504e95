//! The pure half: when to rotate, how long to wait between attempts, and when a rotation is late.
//!
//! Nothing here reads a clock or draws a random number. `now` and the uniform draw `r` (a number
//! in `[0, 1)`) are arguments, so every rule is a table test. Out-of-range or non-finite draws are
//! clamped into `[0, 1]` rather than rejected: a bad random source must not stop rotation.

use std::fmt;
use std::time::{Duration, SystemTime};

use kubecert_csr::{Certificate, CertificateTemplate};

/// Earliest point of the rotation deadline, as a fraction of the certificate's lifetime (SPEC M-7).
pub const DEADLINE_MIN_FRACTION: f64 = 0.7;
/// Width of the jittered window after [`DEADLINE_MIN_FRACTION`]: deadlines fall in 70–90 %.
pub const DEADLINE_JITTER_FRACTION: f64 = 0.2;
/// First sleep after a failed attempt (SPEC M-8).
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(2);
/// Each sleep of the backoff phase is the previous one times this.
pub const BACKOFF_FACTOR: u32 = 2;
/// Each backoff sleep is stretched by up to this fraction: `sleep × (1 + 0.1·r)`.
pub const BACKOFF_JITTER: f64 = 0.1;
/// Attempts made in the backoff phase (at t≈0, then after 2, 4, 8 and 16 s).
pub const BACKOFF_ATTEMPTS: u32 = 5;
/// Period of the retries once the backoff phase is exhausted; they go on forever.
pub const RETRY_PERIOD: Duration = Duration::from_secs(32);
/// How long one rotation request may wait for its certificate (SPEC M-9 e, `certificateWaitTimeout`).
pub const ROTATION_WAIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long the bootstrap path waits for its certificate (SPEC B-11). The bootstrap flow itself
/// lives with the API code; the constant is here so that both waits are defined in one place.
pub const BOOTSTRAP_WAIT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Upper bound of the default overdue threshold (see [`overdue_threshold`]).
pub const OVERDUE_THRESHOLD_MAX: Duration = Duration::from_secs(3600);
/// Overdue threshold when no certificate is held at all: the node is without an identity.
pub const OVERDUE_THRESHOLD_NO_CERTIFICATE: Duration = Duration::from_secs(5 * 60);
/// The default overdue threshold is the lifetime divided by this (5 %), up to [`OVERDUE_THRESHOLD_MAX`].
const OVERDUE_LIFETIME_DIVISOR: u32 = 20;

/// Why a rotation is due when it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadlineReason {
    /// The held certificate came from bootstrap data and must be replaced at once (SPEC M-2).
    BootstrapData,
    /// No certificate is held (SPEC M-2, M-7).
    NoCertificate,
    /// The held certificate has expired (SPEC M-2).
    Expired,
    /// The held certificate does not satisfy the current template (SPEC M-7, M-12).
    TemplateNotSatisfied,
    /// The jittered point at 70–90 % of the held certificate's lifetime (SPEC M-7).
    Scheduled,
}

impl fmt::Display for DeadlineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeadlineReason::BootstrapData => "the certificate came from bootstrap data",
            DeadlineReason::NoCertificate => "no certificate is held",
            DeadlineReason::Expired => "the certificate has expired",
            DeadlineReason::TemplateNotSatisfied => "the certificate does not satisfy the template",
            DeadlineReason::Scheduled => "scheduled at 70-90 % of the lifetime",
        })
    }
}

/// When the next rotation is due, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// The instant (wall clock). `now` for every reason but [`DeadlineReason::Scheduled`].
    pub at: SystemTime,
    /// Why.
    pub reason: DeadlineReason,
}

/// The rotation deadline (SPEC M-7, with the forced cases of M-2 and M-12), in this order:
/// `forced` (a certificate from bootstrap data), no certificate, an expired certificate, a
/// certificate that does not satisfy `template` → `now`; otherwise
/// [`scheduled_deadline`]`(held, r)`. A missing template (`None`) is satisfied by any certificate.
pub fn rotation_deadline(
    now: SystemTime,
    held: Option<&Certificate>,
    template: Option<&CertificateTemplate>,
    forced: bool,
    r: f64,
) -> Deadline {
    let reason = match held {
        _ if forced => DeadlineReason::BootstrapData,
        None => DeadlineReason::NoCertificate,
        Some(cert) if cert.is_expired_at(now) => DeadlineReason::Expired,
        Some(cert) if !satisfies_template(Some(cert), template) => DeadlineReason::TemplateNotSatisfied,
        Some(cert) => return Deadline { at: scheduled_deadline(cert, r), reason: DeadlineReason::Scheduled },
    };
    Deadline { at: now, reason }
}

/// `NotBefore + lifetime × (0.7 + 0.2·r)` (SPEC M-7). A certificate whose NotAfter is not after
/// its NotBefore has a lifetime of zero, so its deadline is its NotBefore.
pub fn scheduled_deadline(cert: &Certificate, r: f64) -> SystemTime {
    let fraction = DEADLINE_MIN_FRACTION + DEADLINE_JITTER_FRACTION * unit(r);
    let into_lifetime = lifetime(cert).mul_f64(fraction);
    cert.not_before.checked_add(into_lifetime).unwrap_or(cert.not_after)
}

/// Whether `held` satisfies `template` (SPEC M-12): there is a certificate and, if there is a
/// template, the certificate satisfies it (see [`CertificateTemplate::is_satisfied_by`]).
pub fn satisfies_template(held: Option<&Certificate>, template: Option<&CertificateTemplate>) -> bool {
    held.is_some_and(|cert| template.is_none_or(|t| t.is_satisfied_by(cert)))
}

/// The template-change rule (SPEC M-13): a new `current` template cancels a pending request and
/// rotates at once when the held certificate does not satisfy it **and** it differs from the
/// template of the last request sent. The second condition stops a template that the signer
/// cannot satisfy from restarting the request over and over.
pub fn template_change_cancels_request(
    held: Option<&Certificate>,
    current: Option<&CertificateTemplate>,
    last_requested: Option<&CertificateTemplate>,
) -> bool {
    !satisfies_template(held, current) && current != last_requested
}

/// The sleep after the `failures`-th consecutive failed attempt (SPEC M-8): 2, 4, 8 and 16 s,
/// each stretched by `1 + 0.1·r`, after failures 1–4; then [`RETRY_PERIOD`] (32 s) for ever.
/// `failures == 0` (nothing failed yet) is treated as the first failure.
pub fn retry_delay(failures: u32, r: f64) -> Duration {
    if failures >= BACKOFF_ATTEMPTS {
        return RETRY_PERIOD;
    }
    let exponent = failures.saturating_sub(1);
    (BACKOFF_INITIAL * BACKOFF_FACTOR.pow(exponent)).mul_f64(1.0 + BACKOFF_JITTER * unit(r))
}

/// How long after its deadline a rotation may stay undone before it counts as overdue and a
/// warning is logged: 5 % of the held certificate's lifetime, at most one hour; five minutes
/// when no certificate is held.
///
/// Why these numbers: a deadline falls at 70–90 % of the lifetime, so with 5 % the warning comes
/// while at least 5 % of the lifetime is left; the one-hour cap keeps a year-long certificate
/// from failing silently for weeks (kubernetes #138763 went 38 days unnoticed) while still
/// letting a normal rotation — a few retries and one approval round trip — finish first. For a
/// one-minute rehearsal certificate the threshold is three seconds.
pub fn overdue_threshold(held: Option<&Certificate>) -> Duration {
    match held {
        None => OVERDUE_THRESHOLD_NO_CERTIFICATE,
        Some(cert) => (lifetime(cert) / OVERDUE_LIFETIME_DIVISOR).min(OVERDUE_THRESHOLD_MAX),
    }
}

/// How late a rotation is: `now − deadline` when the deadline has passed and nothing has
/// succeeded since (`last_success` absent or before the deadline); `None` otherwise.
pub fn overdue_by(
    now: SystemTime,
    deadline: SystemTime,
    last_success: Option<SystemTime>,
) -> Option<Duration> {
    if last_success.is_some_and(|success| success >= deadline) {
        return None;
    }
    now.duration_since(deadline).ok().filter(|late| !late.is_zero())
}

/// `NotAfter − NotBefore`, or zero for a certificate that ends before it starts.
pub fn lifetime(cert: &Certificate) -> Duration {
    cert.not_after.duration_since(cert.not_before).unwrap_or_default()
}

/// A random draw forced into `[0, 1]`; NaN counts as 0.
fn unit(r: f64) -> f64 {
    if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testutil::{mint, secs, t0};

    fn client() -> CertificateTemplate {
        CertificateTemplate::node_client("n1")
    }

    fn serving(ip: &str) -> CertificateTemplate {
        CertificateTemplate::node_serving("n1", &[], &[ip.parse().unwrap()])
    }

    /// A client certificate for n1 valid from t0() for `lifetime_secs`.
    fn cert(lifetime_secs: u64) -> Certificate {
        mint(&client(), t0(), t0() + secs(lifetime_secs)).leaf
    }

    #[test]
    fn scheduled_deadline_is_70_to_90_percent_of_the_lifetime() {
        let c = cert(1000);
        for (r, expected) in [(0.0, 700), (0.5, 800), (0.999_999, 900), (1.0, 900), (-3.0, 700), (7.0, 900)] {
            let at = scheduled_deadline(&c, r);
            let offset = at.duration_since(t0()).unwrap().as_secs_f64();
            assert!((offset - f64::from(expected)).abs() < 0.01, "r={r}: {offset}");
        }
        assert_eq!(scheduled_deadline(&c, f64::NAN), t0() + secs(700));
    }

    #[test]
    fn a_certificate_ending_before_it_starts_is_due_at_its_start() {
        let backwards = mint(&client(), t0() + secs(100), t0()).leaf;
        assert_eq!(lifetime(&backwards), Duration::ZERO);
        assert_eq!(scheduled_deadline(&backwards, 0.5), t0() + secs(100));
    }

    #[test]
    fn forced_reasons_rotate_now_in_order() {
        let c = cert(1000);
        let now = t0() + secs(10);
        let after_expiry = t0() + secs(2000);
        let other = serving("192.0.2.1");
        for (case, now, held, template, forced, reason) in [
            ("bootstrap data first", now, Some(&c), None, true, DeadlineReason::BootstrapData),
            ("bootstrap data even without cert", now, None, None, true, DeadlineReason::BootstrapData),
            ("nothing held", now, None, Some(&other), false, DeadlineReason::NoCertificate),
            ("expired", after_expiry, Some(&c), Some(&other), false, DeadlineReason::Expired),
            (
                "template not satisfied",
                now,
                Some(&c),
                Some(&other),
                false,
                DeadlineReason::TemplateNotSatisfied,
            ),
        ] {
            assert_eq!(
                rotation_deadline(now, held, template, forced, 0.5),
                Deadline { at: now, reason },
                "{case}"
            );
        }
    }

    #[test]
    fn a_valid_certificate_rotates_at_its_scheduled_deadline() {
        let c = cert(1000);
        let expected = Deadline { at: t0() + secs(800), reason: DeadlineReason::Scheduled };
        for template in [None, Some(&client())] {
            assert_eq!(rotation_deadline(t0() + secs(10), Some(&c), template, false, 0.5), expected);
        }
        // Exactly at NotAfter the certificate is not expired yet (the kubelet's `now > NotAfter`).
        let at_expiry = rotation_deadline(t0() + secs(1000), Some(&c), None, false, 0.5);
        assert_eq!(at_expiry.reason, DeadlineReason::Scheduled);
    }

    #[test]
    fn template_change_rule() {
        let ip1 = serving("192.0.2.1");
        let ip2 = serving("192.0.2.2");
        let held = mint(&ip1, t0(), t0() + secs(1000)).leaf;
        for (case, held, current, last, cancels) in [
            ("satisfied by the held cert", Some(&held), Some(&ip1), None, false),
            ("not satisfied, new", Some(&held), Some(&ip2), Some(&ip1), true),
            ("not satisfied, already requested", Some(&held), Some(&ip2), Some(&ip2), false),
            ("no cert, new template", None, Some(&ip1), None, true),
            ("no cert, template removed after a request", None, None, Some(&ip1), true),
            ("no cert, no template, nothing requested", None, None, None, false),
            ("cert held, template removed", Some(&held), None, Some(&ip1), false),
        ] {
            assert_eq!(template_change_cancels_request(held, current, last), cancels, "{case}");
        }
    }

    #[test]
    fn retry_delays_follow_the_kubelet_backoff() {
        for (failures, r, expected_ms) in [
            (0, 0.0, 2000),
            (1, 0.0, 2000),
            (1, 0.5, 2100),
            (2, 0.0, 4000),
            (3, 0.0, 8000),
            (4, 0.0, 16000),
            (4, 1.0, 17600),
            (5, 0.9, 32000),
            (6, 0.0, 32000),
            (u32::MAX, 0.5, 32000),
        ] {
            let delay = retry_delay(failures, r).as_millis();
            assert!(delay.abs_diff(expected_ms) <= 1, "failures={failures} r={r}: {delay} ms");
        }
    }

    #[test]
    fn overdue_threshold_is_five_percent_capped_at_an_hour() {
        assert_eq!(overdue_threshold(None), Duration::from_secs(300));
        assert_eq!(overdue_threshold(Some(&cert(60))), Duration::from_secs(3));
        assert_eq!(overdue_threshold(Some(&cert(3600))), Duration::from_secs(180));
        assert_eq!(overdue_threshold(Some(&cert(365 * 86_400))), Duration::from_secs(3600));
    }

    #[test]
    fn overdue_by_counts_from_the_deadline_until_a_success() {
        let deadline = t0() + secs(100);
        for (case, now, last_success, expected) in [
            ("before the deadline", t0() + secs(50), None, None),
            ("at the deadline", deadline, None, None),
            ("after, never succeeded", t0() + secs(130), None, Some(secs(30))),
            ("after, last success before the deadline", t0() + secs(130), Some(t0()), Some(secs(30))),
            ("after, succeeded since", t0() + secs(130), Some(t0() + secs(101)), None),
        ] {
            assert_eq!(overdue_by(now, deadline, last_success), expected, "{case}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn deadlines_stay_inside_the_window(r in proptest::num::f64::ANY) {
            let c = cert(10_000);
            let offset = scheduled_deadline(&c, r).duration_since(t0()).unwrap();
            prop_assert!(offset >= secs(7000) && offset <= secs(9000), "{offset:?}");
        }

        #[test]
        fn retry_delays_stay_inside_their_jitter_band(failures in 0u32..40, r in proptest::num::f64::ANY) {
            let base = if failures >= BACKOFF_ATTEMPTS {
                RETRY_PERIOD
            } else {
                BACKOFF_INITIAL * 2u32.pow(failures.saturating_sub(1))
            };
            let delay = retry_delay(failures, r);
            let ceiling = if failures >= BACKOFF_ATTEMPTS { base } else { base.mul_f64(1.1) };
            prop_assert!(delay >= base && delay <= ceiling, "{failures} {r}: {delay:?}");
        }
    }
}
