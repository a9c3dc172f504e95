//! SPEC T-3: exit when the node has had no valid client certificate for five minutes while the
//! API server answers, so that a supervisor restarts the agent into bootstrap.
//!
//! The check sleeps until the moment it could fire (the certificate's NotAfter plus five
//! minutes) instead of polling; a swapped identity wakes it early. Only when the API is not known
//! to be healthy does it re-check on a period, as the kubelet's transport does every 10 s.

use std::time::{Duration, SystemTime};

use kubecert_reload::LiveIdentity;
use kubecert_rotation::WALL_CLOCK_RECHECK;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::api::ApiHealth;

/// How long the node may be without a valid client certificate (kubelet: 5 minutes; the
/// `exit_after_expired` setting, for rehearsals with short lifetimes).
pub const EXIT_AFTER: Duration = Duration::from_secs(5 * 60);
/// Re-check period while the limit has passed but the API is not known to be healthy.
pub const UNHEALTHY_RECHECK: Duration = Duration::from_secs(10);

/// Since when the node has been without a valid certificate, as of `now`; `None` while it has
/// one. `valid_until` is the held certificate's NotAfter; `started` is when the agent started
/// (the kubelet counts from start-up when there never was a certificate).
pub fn missing_since(
    valid_until: Option<SystemTime>,
    started: SystemTime,
    now: SystemTime,
) -> Option<SystemTime> {
    match valid_until {
        Some(not_after) if now <= not_after => None,
        Some(not_after) => Some(not_after.max(started)),
        None => Some(started),
    }
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Sleep until this instant (or until the identity changes), then look again.
    SleepUntil(SystemTime),
    /// Exit: no valid certificate since the given instant, and the API answers.
    Exit(SystemTime),
}

/// The decision for `now` (pure).
pub fn verdict(
    valid_until: Option<SystemTime>,
    started: SystemTime,
    now: SystemTime,
    api_healthy: bool,
    limit: Duration,
) -> Verdict {
    let Some(since) = missing_since(valid_until, started, now) else {
        // Look again just after the certificate expires (`missing_since` counts `now > NotAfter`).
        let after_expiry = valid_until.map_or(now, |t| t + Duration::from_secs(1));
        return Verdict::SleepUntil(after_expiry);
    };
    let exit_at = since + limit;
    if now < exit_at {
        Verdict::SleepUntil(exit_at)
    } else if api_healthy {
        Verdict::Exit(since)
    } else {
        Verdict::SleepUntil(now + UNHEALTHY_RECHECK)
    }
}

/// Returns `Err` (for the process to exit non-zero) once [`verdict`] says so; `Ok` when
/// cancelled.
pub async fn run(
    live: LiveIdentity,
    health: ApiHealth,
    cancel: CancellationToken,
    limit: Duration,
) -> anyhow::Result<()> {
    watch(live, health, cancel, SystemTime::now, limit).await
}

/// [`run`] with a wall clock of the caller's (tests run it on tokio's paused time).
async fn watch(
    live: LiveIdentity,
    health: ApiHealth,
    cancel: CancellationToken,
    clock: impl Fn() -> SystemTime,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = clock();
    let mut swaps = live.subscribe();
    let mut warned = false;
    loop {
        let valid_until = live.current().map(|identity| identity.leaf().not_after);
        let now = clock();
        let healthy = health.is_healthy();
        let wake_at = match verdict(valid_until, started, now, healthy, limit) {
            Verdict::Exit(since) => {
                anyhow::bail!(
                    "no valid client certificate for {} s (since {}) while the API server answers; exiting so that \
                     a restart bootstraps again",
                    now.duration_since(since).unwrap_or_default().as_secs(),
                    jiff::Timestamp::try_from(since).map(|t| t.to_string()).unwrap_or_default()
                );
            }
            Verdict::SleepUntil(at) => at,
        };
        if !healthy && !warned && missing_since(valid_until, started, now).is_some_and(|s| now >= s + limit) {
            warned = true;
            error!(
                "no valid client certificate for more than {} s; not exiting because the API server is not known \
                 to be reachable",
                limit.as_secs()
            );
        }
        let sleep = wake_at.duration_since(now).unwrap_or_default().min(WALL_CLOCK_RECHECK);
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            changed = swaps.changed() => if changed.is_err() { return Ok(()) } else { warned = false },
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        T0 + Duration::from_secs(secs)
    }

    #[test]
    fn a_valid_certificate_is_looked_at_again_after_it_expires() {
        assert_eq!(verdict(Some(at(1000)), at(0), at(10), true, EXIT_AFTER), Verdict::SleepUntil(at(1001)));
    }

    #[test]
    fn missing_counts_from_expiry_or_from_start() {
        assert_eq!(missing_since(Some(at(100)), at(0), at(100)), None);
        assert_eq!(missing_since(Some(at(100)), at(0), at(101)), Some(at(100)));
        assert_eq!(missing_since(Some(at(100)), at(500), at(600)), Some(at(500)), "expired before start");
        assert_eq!(missing_since(None, at(50), at(60)), Some(at(50)));
    }

    #[test]
    fn exits_five_minutes_after_expiry_only_while_the_api_answers() {
        let expired = Some(at(100));
        assert_eq!(verdict(expired, at(0), at(200), true, EXIT_AFTER), Verdict::SleepUntil(at(400)));
        assert_eq!(verdict(expired, at(0), at(400), true, EXIT_AFTER), Verdict::Exit(at(100)));
        assert_eq!(verdict(expired, at(0), at(400), false, EXIT_AFTER), Verdict::SleepUntil(at(410)));
        assert_eq!(verdict(None, at(0), at(301), true, EXIT_AFTER), Verdict::Exit(at(0)));
    }

    /// An identity whose certificate expires `valid_for` after `now`.
    fn identity_until(now: SystemTime, valid_for: Duration) -> kubecert_reload::Identity {
        let key = kubecert_csr::PrivateKey::generate(kubecert_csr::KeyAlgorithm::EcdsaP256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + valid_for).into();
        let cert = params.self_signed(key.rcgen_key_pair()).unwrap();
        kubecert_reload::Identity::from_pem(cert.pem().as_bytes(), key.to_pem().as_bytes()).unwrap()
    }

    /// Runs the watchdog on paused time for at most `limit`; `Some(elapsed)` if it asked to exit.
    async fn exits_after(live: LiveIdentity, healthy: bool, limit: Duration) -> Option<Duration> {
        let (base, start) = (SystemTime::now(), tokio::time::Instant::now());
        let health = ApiHealth::default();
        health.set(healthy);
        let clock = move || base + start.elapsed();
        match tokio::time::timeout(limit, watch(live, health, CancellationToken::new(), clock, EXIT_AFTER))
            .await
        {
            Ok(result) => {
                let message = result.expect_err("the watchdog only returns to exit").to_string();
                assert!(message.contains("while the API server answers"), "{message}");
                Some(start.elapsed())
            }
            Err(_) => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn exits_five_minutes_after_the_certificate_expires_while_the_api_answers() {
        let live = LiveIdentity::new(identity_until(SystemTime::now(), Duration::from_secs(30)));
        let elapsed = exits_after(live, true, Duration::from_secs(3600)).await.expect("an exit");
        // NotAfter has whole seconds: expiry is 29–30 s away, then five minutes.
        assert!((Duration::from_secs(328)..=Duration::from_secs(332)).contains(&elapsed), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn never_exits_while_the_api_is_not_known_to_answer_or_a_new_certificate_arrives() {
        let expired = LiveIdentity::new(identity_until(SystemTime::now(), Duration::from_secs(30)));
        assert_eq!(exits_after(expired, false, Duration::from_secs(3600)).await, None);

        let live = LiveIdentity::new(identity_until(SystemTime::now(), Duration::from_secs(30)));
        let renewer = {
            let live = live.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(200)).await;
                live.swap(identity_until(
                    SystemTime::now() + Duration::from_secs(200),
                    Duration::from_secs(86400),
                ));
            })
        };
        assert_eq!(exits_after(live, true, Duration::from_secs(3600)).await, None, "renewed in time");
        renewer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_cancelled() {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(LiveIdentity::empty(), ApiHealth::default(), cancel.clone(), EXIT_AFTER));
        tokio::time::sleep(Duration::from_secs(60)).await;
        cancel.cancel();
        assert!(task.await.unwrap().is_ok());
    }
}
