//! Proof (issue 5, point 7): the file-backed identity follows a kubelet-style switch of
//! `<prefix>-current.pem` within 100 ms, and refuses half-written and mismatched pairs.

mod support;

use std::path::Path;
use std::time::Duration;

use kubecert_reload::{LiveIdentity, PairFileWatcher, WatchOptions};
use support::{TestCa, install_provider, report};
use tokio::time::Instant;

const PREFIX: &str = "kubelet-client";
const LIMIT: Duration = Duration::from_secs(5);
const SWITCHES: usize = 20;

/// What the kubelet does: write the new pair file, point `-updated.pem` at it, rename that over
/// `-current.pem`. Returns when the rename is done.
fn kubelet_switch(dir: &Path, name: &str, contents: &[u8]) -> Instant {
    std::fs::write(dir.join(name), contents).unwrap();
    let updated = dir.join(format!("{PREFIX}-updated.pem"));
    std::os::unix::fs::symlink(name, &updated).unwrap();
    std::fs::rename(&updated, dir.join(format!("{PREFIX}-current.pem"))).unwrap();
    Instant::now()
}

fn cn(live: &LiveIdentity) -> Option<String> {
    live.current().and_then(|identity| identity.leaf().subject.common_name.clone())
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_style_symlink_switch_is_reloaded_within_100ms() {
    install_provider();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    kubelet_switch(dir.path(), "kubelet-client-0.pem", ca.pair_pem("system:node:n-0").as_bytes());
    let live = LiveIdentity::empty();
    let watcher = PairFileWatcher::start(dir.path(), PREFIX, live.clone(), WatchOptions::default()).unwrap();
    assert_eq!(cn(&live).as_deref(), Some("system:node:n-0"), "loaded at start");
    assert_eq!(watcher.status().reloads, 1);

    let mut updates = live.subscribe();
    let mut latencies = Vec::new();
    for i in 1..=SWITCHES {
        let pair = ca.pair_pem(&format!("system:node:n-{i}"));
        let switched_at = kubelet_switch(dir.path(), &format!("kubelet-client-{i}.pem"), pair.as_bytes());
        tokio::time::timeout(LIMIT, updates.changed()).await.unwrap().unwrap();
        latencies.push(switched_at.elapsed());
        let snapshot = updates.borrow_and_update().clone();
        let loaded = snapshot.identity.unwrap().leaf().subject.common_name.clone();
        assert_eq!(loaded, Some(format!("system:node:n-{i}")));
        // Reading the pair back produces access events; they must not cause more reloads.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!updates.has_changed().unwrap(), "reloaded again without a change (switch {i})");
    }
    report("kubelet-style symlink switch -> identity published", &latencies);
    let (p50, _, _) = support::percentiles(&latencies);
    assert!(p50 < Duration::from_millis(100), "median reload latency {p50:?}");
    let status = watcher.status();
    assert_eq!(status.reloads, 1 + SWITCHES as u64);
    assert_eq!(status.errors, 0);
    assert_eq!(live.generation(), 1 + SWITCHES as u64, "one publication per switch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_written_and_mismatched_pairs_are_refused_and_the_old_identity_kept() {
    install_provider();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    kubelet_switch(dir.path(), "kubelet-client-good.pem", ca.pair_pem("system:node:good").as_bytes());
    let live = LiveIdentity::empty();
    let watcher = PairFileWatcher::start(dir.path(), PREFIX, live.clone(), WatchOptions::default()).unwrap();
    let generation = live.generation();

    // Half-written: the certificate cut off in the middle.
    let full = ca.pair_pem("system:node:next");
    kubelet_switch(dir.path(), "kubelet-client-half.pem", &full.as_bytes()[..full.len() / 3]);
    wait_until("error recorded for the half-written pair", || watcher.status().errors >= 1).await;
    let status = watcher.status();
    assert!(status.last_error.as_deref().unwrap().contains("certificate"), "{status:?}");
    assert_eq!(live.generation(), generation);
    assert_eq!(cn(&live).as_deref(), Some("system:node:good"));

    // Mismatched: the certificate of one pair with the key of another.
    let (cert, _) = ca.leaf("system:node:mismatch");
    let (_, other_key) = ca.leaf("system:node:other");
    let errors = watcher.status().errors;
    kubelet_switch(
        dir.path(),
        "kubelet-client-mismatch.pem",
        format!("{cert}{}", other_key.to_pem()).as_bytes(),
    );
    wait_until("error recorded for the mismatched pair", || watcher.status().errors > errors).await;
    let status = watcher.status();
    assert!(status.last_error.as_deref().unwrap().contains("does not match"), "{status:?}");
    assert_eq!(live.generation(), generation);
    assert_eq!(cn(&live).as_deref(), Some("system:node:good"));

    // The pair the link points at is then completed in place: picked up, error cleared.
    std::fs::write(dir.path().join("kubelet-client-mismatch.pem"), &full).unwrap();
    wait_until("completed pair published", || cn(&live).as_deref() == Some("system:node:next")).await;
    assert_eq!(live.generation(), generation + 1);
    assert_eq!(watcher.status().last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pair_at_start_is_reported_and_picked_up_when_it_appears() {
    install_provider();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let live = LiveIdentity::empty();
    let watcher = PairFileWatcher::start(dir.path(), PREFIX, live.clone(), WatchOptions::default()).unwrap();
    let status = watcher.status();
    assert_eq!(status.errors, 1);
    assert!(status.last_error.as_deref().unwrap().contains("kubelet-client-current.pem"), "{status:?}");
    assert!(live.current().is_none());

    kubelet_switch(dir.path(), "kubelet-client-1.pem", ca.pair_pem("system:node:late").as_bytes());
    wait_until("pair published", || cn(&live).as_deref() == Some("system:node:late")).await;
    assert_eq!(watcher.status().last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_recheck_finds_a_change_without_events() {
    install_provider();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    kubelet_switch(dir.path(), "kubelet-client-0.pem", ca.pair_pem("system:node:a").as_bytes());
    // A file name outside this pair's prefix gives no event that counts: only the re-check sees it.
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("pair.pem");
    std::fs::write(&target, ca.pair_pem("system:node:a")).unwrap();
    let current = dir.path().join(format!("{PREFIX}-current.pem"));
    std::fs::remove_file(&current).unwrap();
    std::os::unix::fs::symlink(&target, &current).unwrap();

    let live = LiveIdentity::empty();
    let options = WatchOptions { recheck_interval: Duration::from_millis(300), ..WatchOptions::default() };
    let _watcher = PairFileWatcher::start(dir.path(), PREFIX, live.clone(), options).unwrap();
    assert_eq!(cn(&live).as_deref(), Some("system:node:a"));
    let changed_at = Instant::now();
    std::fs::write(&target, ca.pair_pem("system:node:b")).unwrap();
    wait_until("re-check picked up the change", || cn(&live).as_deref() == Some("system:node:b")).await;
    let took = changed_at.elapsed();
    assert!(took >= Duration::from_millis(100), "found after {took:?}: an event must have fired");
}
