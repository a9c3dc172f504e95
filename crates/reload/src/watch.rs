//! File-backed identity: follows a kubelet-style `<dir>/<prefix>-current.pem`, whoever switches it.
//!
//! The directory is watched, not the symlink: inotify on a symlink follows it to the old target,
//! which a switch never touches (rust-ecosystem.md P5). Access events are ignored (reading the
//! pair ourselves produces them), and only names of this pair (`<prefix>-*.pem`) count. Every event
//! only triggers a re-read: the file is parsed completely, its key checked against its leaf, and
//! compared with what is published, so a half-written or mismatched pair is never published and an
//! unchanged one is not re-published. A slow periodic re-check covers filesystems where inotify
//! misses events.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::{Error, Identity, LiveIdentity};

/// Default interval of the safety-net re-check.
pub const DEFAULT_RECHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Tuning of a [`PairFileWatcher`].
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// Quiet time after the last filesystem event before the pair is re-read; folds the several
    /// events of one switch into one re-read.
    pub debounce: Duration,
    /// Interval of the re-check that runs even without events.
    pub recheck_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self { debounce: Duration::from_millis(20), recheck_interval: DEFAULT_RECHECK_INTERVAL }
    }
}

/// What a [`PairFileWatcher`] has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchStatus {
    /// Times a changed pair was published.
    pub reloads: u64,
    /// Times the file could not be read or held an unusable pair (the previous identity was kept).
    pub errors: u64,
    /// Why the last attempt failed; cleared by the next successful read.
    pub last_error: Option<String>,
    /// When a changed pair was last published.
    pub last_reload: Option<SystemTime>,
}

/// Keeps a [`LiveIdentity`] in step with `<dir>/<prefix>-current.pem`. Stops when dropped.
pub struct PairFileWatcher {
    path: PathBuf,
    status: Arc<Mutex<WatchStatus>>,
    task: JoinHandle<()>,
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl PairFileWatcher {
    /// Reads the pair once (publishing it if it differs from what `identity` holds), then follows
    /// the file. An unreadable pair at start is recorded in the status like any later failure; only
    /// failing to watch the directory is an error.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (like `tokio::spawn`).
    pub fn start(
        dir: impl Into<PathBuf>,
        prefix: &str,
        identity: LiveIdentity,
        options: WatchOptions,
    ) -> Result<Self, Error> {
        let dir = dir.into();
        let path = dir.join(format!("{prefix}-current.pem"));
        let status = Arc::new(Mutex::new(WatchStatus::default()));
        let wake = Arc::new(Notify::new());

        let handler = {
            let wake = Arc::clone(&wake);
            let prefix = format!("{prefix}-");
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    let relevant = events.iter().any(|event| {
                        !matches!(event.kind, EventKind::Access(_))
                            && event.paths.iter().any(|p| is_pair_file(p.file_name(), &prefix))
                    });
                    if relevant {
                        wake.notify_one();
                    }
                }
                Err(errors) => {
                    for error in errors {
                        tracing::warn!(%error, "certificate directory watch reported an error");
                    }
                    wake.notify_one();
                }
            }
        };
        let mut debouncer = new_debouncer(options.debounce, None, handler)
            .map_err(|source| Error::Watch { path: dir.clone(), source })?;
        debouncer
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| Error::Watch { path: dir.clone(), source })?;

        record(&status, &path, std::fs::read(&path), &identity, SystemTime::now());
        let task = tokio::spawn(follow(path.clone(), identity, Arc::clone(&status), wake, options));
        Ok(Self { path, status, task, _debouncer: debouncer })
    }

    /// The followed file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters and the last error.
    pub fn status(&self) -> WatchStatus {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for PairFileWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for PairFileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairFileWatcher")
            .field("path", &self.path)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

fn is_pair_file(name: Option<&OsStr>, prefix: &str) -> bool {
    name.and_then(OsStr::to_str).is_some_and(|name| name.starts_with(prefix) && name.ends_with(".pem"))
}

async fn follow(
    path: PathBuf,
    identity: LiveIdentity,
    status: Arc<Mutex<WatchStatus>>,
    wake: Arc<Notify>,
    options: WatchOptions,
) {
    let mut recheck = tokio::time::interval_at(
        tokio::time::Instant::now() + options.recheck_interval,
        options.recheck_interval,
    );
    recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = wake.notified() => {}
            _ = recheck.tick() => {}
        }
        record(&status, &path, tokio::fs::read(&path).await, &identity, SystemTime::now());
    }
}

/// Publishes the pair read from `path` if it is usable and new; records the outcome.
fn record(
    status: &Mutex<WatchStatus>,
    path: &Path,
    read: std::io::Result<Vec<u8>>,
    identity: &LiveIdentity,
    now: SystemTime,
) {
    let outcome = read
        .map_err(|source| Error::Io { path: path.to_owned(), source })
        .and_then(|pem| Identity::from_pair_pem(&pem))
        .and_then(|loaded| not_expired_over_valid(loaded, identity, now))
        .map(|loaded| identity.swap_if_changed(loaded));
    let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
    match outcome {
        Ok(Some(generation)) => {
            status.reloads += 1;
            status.last_reload = Some(SystemTime::now());
            status.last_error = None;
            let current = identity.current();
            let leaf = current.as_ref().map(|identity| identity.leaf());
            tracing::info!(
                path = %path.display(),
                generation,
                subject = leaf.and_then(|leaf| leaf.subject.common_name.as_deref()),
                serial = leaf.map(|leaf| leaf.serial_hex.as_str()),
                "reloaded TLS identity from file"
            );
        }
        Ok(None) => status.last_error = None,
        Err(error) => {
            status.errors += 1;
            tracing::warn!(
                path = %path.display(),
                %error,
                "keeping the current TLS identity: the certificate file is not a usable pair"
            );
            status.last_error = Some(error.to_string());
        }
    }
}

/// `loaded`, unless it has expired while the identity in use has not: an operator who switches
/// to a stale pair by mistake should get a warning, not a node whose every handshake fails. An
/// expired pair still replaces an expired (or no) identity: it is no worse.
fn not_expired_over_valid(loaded: Identity, live: &LiveIdentity, now: SystemTime) -> Result<Identity, Error> {
    let held_valid = live.current().is_some_and(|held| !held.leaf().is_expired_at(now));
    let leaf = loaded.leaf();
    if held_valid && leaf.is_expired_at(now) {
        return Err(Error::Expired {
            subject: leaf.subject.common_name.clone().unwrap_or_default(),
            serial: leaf.serial_hex.clone(),
        });
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pem_files_of_the_pair_count() {
        let prefix = "kubelet-client-";
        for (name, expected) in [
            ("kubelet-client-current.pem", true),
            ("kubelet-client-updated.pem", true),
            ("kubelet-client-2026-11-28-18-00-00.pem", true),
            ("kubelet-server-current.pem", false),
            ("kubelet-client.key.tmp", false),
            ("kubelet.kubeconfig", false),
        ] {
            assert_eq!(is_pair_file(Some(OsStr::new(name)), prefix), expected, "{name}");
        }
        assert!(!is_pair_file(None, prefix));
    }

    #[test]
    fn a_failed_read_is_counted_and_cleared_by_the_next_good_one() {
        let ca = crate::identity::tests::TestCa::new();
        let live = LiveIdentity::empty();
        let status = Mutex::new(WatchStatus::default());
        let path = Path::new("/certs/kubelet-client-current.pem");
        record(&status, path, Err(std::io::ErrorKind::NotFound.into()), &live, SystemTime::now());
        let seen = status.lock().unwrap().clone();
        assert_eq!((seen.errors, seen.reloads), (1, 0));
        assert!(seen.last_error.unwrap().starts_with("/certs/kubelet-client-current.pem: "));

        let (cert, key) = ca.leaf("system:node:a");
        let pair = format!("{cert}{}", key.to_pem()).into_bytes();
        record(&status, path, Ok(pair.clone()), &live, SystemTime::now());
        record(&status, path, Ok(pair), &live, SystemTime::now());
        let seen = status.lock().unwrap().clone();
        assert_eq!((seen.errors, seen.reloads, seen.last_error), (1, 1, None));
        assert_eq!(live.generation(), 1, "the same pair is published once");
    }

    #[test]
    fn an_expired_pair_does_not_replace_a_valid_one() {
        let ca = crate::identity::tests::TestCa::new();
        let now = SystemTime::now();
        let hour = std::time::Duration::from_secs(3600);
        let pair = |not_after: SystemTime| {
            let (cert, key) = ca.leaf_until("system:node:a", not_after);
            format!("{cert}{}", key.to_pem()).into_bytes()
        };
        let (valid, expired) = (pair(now + hour), pair(now - hour));
        let status = Mutex::new(WatchStatus::default());
        let path = Path::new("/certs/kubelet-client-current.pem");
        let live = LiveIdentity::empty();
        record(&status, path, Ok(expired.clone()), &live, now);
        assert_eq!(live.generation(), 1, "with nothing valid in use, an expired pair is no worse");
        record(&status, path, Ok(valid), &live, now);
        assert_eq!(live.generation(), 2);
        record(&status, path, Ok(expired.clone()), &live, now);
        assert_eq!(live.generation(), 2, "the valid identity stays in use");
        let seen = status.lock().unwrap().clone();
        assert_eq!((seen.reloads, seen.errors), (2, 1));
        assert!(seen.last_error.unwrap().contains("has expired; keeping the valid one in use"));
        record(&status, path, Ok(expired), &live, now + 2 * hour);
        assert_eq!(live.generation(), 3, "once the one in use has expired too, the file wins");
    }
}
