//! Crash safety, proven by killing: a child process commits pairs in a loop and is SIGKILLed
//! after a pseudo-random delay, over and over; after every kill the store must open and yield a
//! valid, matching pair that is either the last completed commit (old) or the one in flight (new).
//!
//! The child is this test binary itself, re-executed with `--exact crash_child`; `crash_child`
//! does nothing unless `KUBECERT_CRASH_DIR` is set. Knobs (environment): `KUBECERT_CRASH_KILLS`
//! (default 1200).
//!
//! Besides the kill count, the test reports how many distinct on-disk states the kills left
//! (which of: temporary file, pair files, `-updated.pem`, `-current.pem` and where the links
//! point, with pair files named by rank) and how many distinct (state, newest pair file) points
//! that makes. The directory is on the machine's real file system, so fsync really runs.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use jiff::tz::TimeZone;
use kubecert_store::{CertificateStore, PairSource, StoreConfig};
use support::TestCa;

const DIR_ENV: &str = "KUBECERT_CRASH_DIR";
const FIXTURES_ENV: &str = "KUBECERT_CRASH_FIXTURES";
const SEQ_ENV: &str = "KUBECERT_CRASH_SEQ";
const KILLS_ENV: &str = "KUBECERT_CRASH_KILLS";
const PAIRS: usize = 4;
const SIGKILL: i32 = 9;
/// A child is normally killed within milliseconds.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);
/// The whole test normally takes 10-30 s on a busy 2-core machine.
const TEST_TIME_LIMIT: Duration = Duration::from_secs(300);
const RETAIN: usize = 3;
/// Commits per child are far fewer than this, so sequence numbers never repeat across children.
const SEQ_STRIDE: u64 = 100_000;

fn store_config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir, kubecert_store::CLIENT_PREFIX);
    config.retain = RETAIN;
    config.time_zone = TimeZone::UTC;
    config
}

/// Two commits per second of file-name time, so the same-second suffix path runs too.
fn commit_time(seq: u64) -> SystemTime {
    support::now() + Duration::from_secs(seq / 2)
}

fn fixture_paths(fixtures: &Path, index: usize) -> (PathBuf, PathBuf) {
    (fixtures.join(format!("pair-{index}.chain.pem")), fixtures.join(format!("pair-{index}.key.pem")))
}

/// The child: open the store, then commit fixture pairs forever, printing `begin S` before and
/// `done S` after each commit of sequence number S.
#[test]
fn crash_child() {
    let (Some(dir), Some(fixtures), Some(seq)) =
        (std::env::var_os(DIR_ENV), std::env::var_os(FIXTURES_ENV), std::env::var(SEQ_ENV).ok())
    else {
        return;
    };
    let fixtures = PathBuf::from(fixtures);
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..PAIRS)
        .map(|i| {
            let (chain, key) = fixture_paths(&fixtures, i);
            (fs::read(chain).unwrap(), fs::read(key).unwrap())
        })
        .collect();
    let store = CertificateStore::open(store_config(Path::new(&dir))).unwrap();
    println!("crash-child ready");
    let mut seq: u64 = seq.parse().unwrap();
    // Never outlive a parent that failed to kill us.
    let started = Instant::now();
    while started.elapsed() < CHILD_LIFETIME {
        let (chain, key) = &pairs[(seq % PAIRS as u64) as usize];
        println!("crash-child begin {seq}");
        store.commit(chain, key, commit_time(seq)).unwrap();
        println!("crash-child done {seq}");
        seq += 1;
    }
    panic!("crash child was not killed within {CHILD_LIFETIME:?}");
}

/// SplitMix64: small, deterministic, good enough to spread kill delays.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a kill left on disk, in structural terms: pair file names are replaced by their rank,
/// newest first, so states of different commits compare equal.
fn on_disk_state(dir: &Path, store: &CertificateStore) -> String {
    let temps = fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with(".kubelet-client.tmp-")
        })
        .count();
    let pairs: Vec<_> =
        store.pair_files().unwrap().into_iter().map(|p| p.file_name().unwrap().to_owned()).collect();
    let link = |name: &str| match fs::read_link(dir.join(name)) {
        Err(_) => "absent".to_owned(),
        Ok(target) => match pairs.iter().position(|p| Some(p.as_os_str()) == target.file_name()) {
            Some(rank) => format!("newest-{rank}"),
            None => "dangling".to_owned(),
        },
    };
    format!(
        "temp={temps} pairs={} updated={} current={}",
        pairs.len(),
        link("kubelet-client-updated.pem"),
        link("kubelet-client-current.pem")
    )
}

/// What the child reported on stdout, read line by line.
struct ChildProgress {
    stdout: BufReader<ChildStdout>,
    ready: bool,
    begun: Option<u64>,
    done: Option<u64>,
    /// When the last `begin` line was read, to time commits.
    begun_at: Option<Instant>,
}

impl ChildProgress {
    fn new(child: &mut Child) -> Self {
        Self {
            stdout: BufReader::new(child.stdout.take().unwrap()),
            ready: false,
            begun: None,
            done: None,
            begun_at: None,
        }
    }

    /// Reads one line; `None` at end of output. Returns the duration of a commit when the line
    /// completed one.
    fn read_line(&mut self) -> Option<Option<Duration>> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        // libtest may have written "test crash_child ... " on the same line first.
        let Some(at) = line.find("crash-child ") else {
            return Some(None);
        };
        let mut words = line[at..].split_whitespace().skip(1);
        match (words.next(), words.next().and_then(|n| n.parse().ok())) {
            (Some("ready"), _) => self.ready = true,
            (Some("begin"), Some(n)) => {
                self.begun = Some(n);
                self.begun_at = Some(Instant::now());
            }
            (Some("done"), Some(n)) => {
                self.done = Some(n);
                return Some(self.begun_at.take().map(|t| t.elapsed()));
            }
            _ => {}
        }
        Some(None)
    }

    /// Reads until the child is ready and then until it completed `commits` commits; feeds the
    /// commit durations to `timer`. False when the output ended first.
    fn wait_for_commits(&mut self, commits: u64, timer: &mut CommitTimer) -> bool {
        let mut seen = 0;
        while !self.ready || seen < commits {
            match self.read_line() {
                None => return false,
                Some(Some(duration)) if self.ready => {
                    timer.record(duration);
                    seen += 1;
                }
                Some(_) => {}
            }
        }
        true
    }

    /// After the kill: reads the rest of the output.
    fn finish(&mut self) {
        while self.read_line().is_some() {}
    }
}

/// A moving average of the child's commit duration, so kill delays cover a whole commit however
/// fast or slow fsync is on this machine.
struct CommitTimer {
    average_us: f64,
}

impl CommitTimer {
    fn record(&mut self, duration: Duration) {
        self.average_us = 0.8 * self.average_us + 0.2 * duration.as_micros() as f64;
    }

    /// A delay uniformly spread over 1.2 average commits.
    fn random_delay(&self, rng: &mut SplitMix) -> Duration {
        let span = (self.average_us * 1.2).max(50.0) as u64;
        Duration::from_micros(rng.below(span))
    }
}

#[test]
fn commits_survive_sigkill_at_any_point() {
    let started = Instant::now();
    std::thread::spawn(|| {
        std::thread::sleep(TEST_TIME_LIMIT);
        eprintln!("crash test: no result after {TEST_TIME_LIMIT:?}; giving up");
        std::process::exit(1);
    });
    let kills: usize = std::env::var(KILLS_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(1200);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pki");
    let fixtures = root.path().join("fixtures");
    fs::create_dir(&fixtures).unwrap();

    let ca = TestCa::new();
    let mut leaf_of_pair = HashMap::new();
    for i in 0..PAIRS {
        let pair = ca.issue(&format!("node-{i}"));
        let (chain, key) = fixture_paths(&fixtures, i);
        fs::write(chain, &pair.chain_pem).unwrap();
        fs::write(key, &pair.key_pem).unwrap();
        let leaf = kubecert_csr::parse_certificates_pem(pair.leaf_pem.as_bytes()).unwrap();
        leaf_of_pair.insert(leaf[0].der.clone(), i);
    }

    // A first pair, so there is always an "old" one.
    let store = CertificateStore::open(store_config(&dir)).unwrap();
    let (chain, key) = fixture_paths(&fixtures, 0);
    store.commit(&fs::read(chain).unwrap(), &fs::read(key).unwrap(), commit_time(0)).unwrap();
    let mut current_pair = 0usize;

    let exe = std::env::current_exe().unwrap();
    let mut rng = SplitMix(0x6b75_6265_6365_7274);
    let mut timer = CommitTimer { average_us: 2_000.0 };
    let mut states = BTreeSet::new();
    let mut points = BTreeSet::new();
    let mut completed_commits = 0u64;
    for iteration in 0..kills {
        let seq_start = (iteration as u64 + 1) * SEQ_STRIDE;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, &dir)
            .env(FIXTURES_ENV, &fixtures)
            .env(SEQ_ENV, seq_start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut progress = ChildProgress::new(&mut child);
        // Mostly kill during the commit loop, after 0-2 completed commits plus a random part of
        // one more; sometimes during start-up and recovery.
        if rng.below(10) != 0 {
            let commits = rng.below(3);
            assert!(
                progress.wait_for_commits(commits, &mut timer),
                "kill {iteration}: the child's output ended early"
            );
            spin_for(timer.random_delay(&mut rng));
        } else {
            spin_for(Duration::from_micros(rng.below(3_000)));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.signal() != Some(SIGKILL) {
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            panic!("kill {iteration}: the child ended by itself ({status}):\n{stderr}");
        }
        progress.finish();
        let (begun, done) = (progress.begun, progress.done);

        let state = on_disk_state(&dir, &store);
        let newest = store.pair_files().unwrap().first().cloned();
        points.insert(format!("{state} newest={newest:?}"));
        states.insert(state.clone());

        let reopened = CertificateStore::open(store_config(&dir))
            .unwrap_or_else(|e| panic!("kill {iteration} ({state}): open failed: {e}"));
        let pair = reopened
            .current()
            .unwrap_or_else(|e| panic!("kill {iteration} ({state}): current() failed: {e}"))
            .unwrap_or_else(|| panic!("kill {iteration} ({state}): no pair"));
        assert!(pair.leaf().matches_key(&pair.key), "kill {iteration} ({state}): mismatched key");
        assert!(matches!(pair.source, PairSource::Current { .. }));
        let loaded = *leaf_of_pair
            .get(&pair.leaf().der)
            .unwrap_or_else(|| panic!("kill {iteration} ({state}): unknown certificate"));

        let pair_of = |seq: u64| (seq % PAIRS as u64) as usize;
        let old = done.map_or(current_pair, pair_of);
        let new = begun.map_or(old, pair_of);
        assert!(
            loaded == old || loaded == new,
            "kill {iteration} ({state}): loaded pair {loaded}, expected old {old} or new {new} (begun {begun:?}, done {done:?})"
        );
        if let Some(done) = done {
            completed_commits += done - seq_start + 1;
        }
        current_pair = loaded;
    }
    let elapsed = started.elapsed();
    println!(
        "crash test: {kills} kills, {} distinct on-disk states, all recovered \
         ({} distinct (state, newest pair) points, {completed_commits} commits completed by children, {:.1} s)",
        states.len(),
        points.len(),
        elapsed.as_secs_f64()
    );
    println!("  average commit in the child: {:.0} µs", timer.average_us);
    for state in &states {
        println!("  state: {state}");
    }
    // Sanity check that the kills spread over commits rather than bunching up.
    assert!(
        points.len() * 2 >= kills,
        "kills landed on too few distinct (state, newest pair) points: {}",
        points.len()
    );
    assert!(states.len() >= 4, "kills landed in too few on-disk states: {states:?}");
}

/// Busy-waits: `thread::sleep` rounds short delays up to the timer slack, which would bunch the
/// kills together.
fn spin_for(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}
