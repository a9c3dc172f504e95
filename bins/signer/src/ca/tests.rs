//! Crash-resume: every write of every step fails once in turn (as if the process died there);
//! the journal must then read back consistent, and running the step again must finish the roll.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use kubecert_authority::{ActivationRules, CertificateAuthority, Phase, Schedule, Transition};

use super::command::{CaSettings, NoFleetStatus, Steps};
use super::publish::{Stage, TrustPublisher};
use super::*;

/// Counts writes (files and bundles alike) and fails the `fail_at`-th one.
#[derive(Default)]
struct Faults {
    fail_at: Option<usize>,
    count: AtomicUsize,
}

impl Faults {
    fn check(&self, what: &str) -> Result<()> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        if self.fail_at == Some(n) {
            bail!("injected crash before write {n} ({what})");
        }
        Ok(())
    }
}

struct FaultyDisk(Arc<Faults>);

impl Disk for FaultyDisk {
    fn write(&self, path: &Path, contents: &[u8]) -> Result<()> {
        self.0.check(&path.display().to_string())?;
        Durable.write(path, contents)
    }
}

/// Records bundles per stage; the live one also goes to a file.
struct Bundles {
    faults: Arc<Faults>,
    written: Mutex<Vec<(Stage, String)>>,
    file: PathBuf,
}

impl TrustPublisher for Bundles {
    async fn write(&self, stage: Stage, pem: &str) -> Result<()> {
        self.faults.check(stage.suffix())?;
        if stage == Stage::Live {
            Durable.write(&self.file, pem.as_bytes())?;
        }
        self.written.lock().unwrap().push((stage, pem.to_owned()));
        Ok(())
    }
}

struct Fixture {
    _temp: tempfile::TempDir,
    settings: CaSettings,
    bundle_file: PathBuf,
    start: SystemTime,
}

fn fixture() -> Fixture {
    let temp = tempfile::tempdir().unwrap();
    let start = SystemTime::now();
    let ca = CertificateAuthority::generate_root(
        "test-ca",
        start - Duration::from_secs(10),
        start + Duration::from_secs(600),
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let import = CaFiles { cert: temp.path().join("ca.crt"), key: temp.path().join("ca.key") };
    std::fs::write(&import.cert, ca.certificate_pem()).unwrap();
    std::fs::write(&import.key, ca.private_key_pem()).unwrap();
    let settings = CaSettings {
        dir: CaDir::new(&temp.path().join("generations")),
        import,
        schedule: Schedule::new(Duration::from_secs(600), 0.5, 0.8).unwrap(),
        rules: ActivationRules { min_publish_age: Duration::ZERO, min_trusting_share: None },
        reload_interval: Duration::ZERO,
    };
    let bundle_file = temp.path().join("bundle.pem");
    Fixture { _temp: temp, settings, bundle_file, start }
}

/// The steps of a roll, in order: 0 first use, 1 prepare, 2 publish, 3 activate, 4 retire.
const STEPS: usize = 5;

async fn run_step(fixture: &Fixture, step: usize, faults: Arc<Faults>) -> Result<Transition> {
    let disk = FaultyDisk(faults.clone());
    let bundles = Bundles { faults, written: Mutex::default(), file: fixture.bundle_file.clone() };
    let steps =
        Steps { settings: &fixture.settings, disk: &disk, publisher: &bundles, share: &NoFleetStatus };
    let now = fixture.start + Duration::from_secs(step as u64 + 1);
    match step {
        0 => steps.open(now).map(|_| Transition::Changed),
        1 => steps.prepare(now),
        2 => steps.publish(now, false).await,
        3 => steps.activate(now),
        _ => steps.retire(now).await,
    }
}

/// What must hold whatever the journal says: every generation it lists has a key that matches
/// its root, every later generation a cross-certificate from its predecessor, and the phases
/// are those of a roll stopped at some step.
fn assert_consistent(fixture: &Fixture) {
    let dir = &fixture.settings.dir;
    let Some(state) = dir.read_journal().unwrap() else { return };
    for generation in state.generations() {
        let with_cross = generation.cross_signed_by.is_some();
        let ca = dir
            .authority(generation.id, with_cross)
            .unwrap_or_else(|e| panic!("generation {}: {e:#}", generation.id));
        assert_eq!(unix_seconds(ca.certificate().not_after), generation.root_not_after);
        if let Some(by) = generation.cross_signed_by {
            let signer = dir.authority(by, false).unwrap();
            assert_eq!(ca.chain()[0].issuer_der, signer.certificate().subject.der);
        }
    }
}

#[tokio::test]
async fn a_crash_at_any_write_of_any_step_resumes_to_a_consistent_state() {
    let mut crashes = 0;
    for step in 0..STEPS {
        for fail_at in 0.. {
            let fixture = fixture();
            for before in 0..step {
                run_step(&fixture, before, Arc::default()).await.unwrap();
            }
            let faults = Arc::new(Faults { fail_at: Some(fail_at), ..Faults::default() });
            let crashed = run_step(&fixture, step, faults).await.is_err();
            assert_consistent(&fixture);
            // Resume: the same step again, then the rest of the roll.
            for after in step..STEPS {
                run_step(&fixture, after, Arc::default()).await.unwrap_or_else(|e| {
                    panic!("step {after} after a crash in step {step} at write {fail_at}: {e:#}")
                });
                assert_consistent(&fixture);
            }
            let state = fixture.settings.dir.read_journal().unwrap().unwrap();
            let phases: Vec<Phase> = state.generations().iter().map(|g| g.phase).collect();
            assert_eq!(phases, [Phase::Retired, Phase::Active]);
            let bundle = std::fs::read_to_string(&fixture.bundle_file).unwrap();
            assert_eq!(bundle, fixture.settings.dir.root_pem(2).unwrap(), "only the new root is left");
            if !crashed {
                break;
            }
            crashes += 1;
        }
    }
    // first use 3 writes, prepare 4, publish 3 (canary, live, journal), activate 1, retire 3.
    assert_eq!(crashes, 14);
}

#[tokio::test]
async fn publish_writes_canary_then_live_and_activate_and_retire_wait_for_their_conditions() {
    let fixture = fixture();
    for step in 0..2 {
        run_step(&fixture, step, Arc::default()).await.unwrap();
    }
    let disk = Durable;
    let bundles =
        Bundles { faults: Arc::default(), written: Mutex::default(), file: fixture.bundle_file.clone() };
    let steps =
        Steps { settings: &fixture.settings, disk: &disk, publisher: &bundles, share: &NoFleetStatus };
    let now = fixture.start + Duration::from_secs(3);
    let canary = steps.publish(now, true).await.unwrap();
    assert!(matches!(canary, Transition::Unchanged(_)), "canary only: not published yet");
    let state = fixture.settings.dir.read_journal().unwrap().unwrap();
    assert_eq!(state.pending().unwrap().phase, Phase::Prepared);
    assert_eq!(steps.publish(now, false).await.unwrap(), Transition::Changed);
    let written = bundles.written.lock().unwrap().clone();
    let stages: Vec<Stage> = written.iter().map(|(s, _)| *s).collect();
    assert_eq!(stages, [Stage::Canary, Stage::Canary, Stage::Live]);
    let both =
        format!("{}{}", fixture.settings.dir.root_pem(1).unwrap(), fixture.settings.dir.root_pem(2).unwrap());
    assert_eq!(written[2].1, both, "old and new roots, oldest first");
    assert_eq!(
        steps.publish(now, false).await.unwrap(),
        Transition::Unchanged("generation 2 is already published".into())
    );

    // Activation with a minimum trusting share and no fleet view is refused, saying why.
    let mut gated = fixture.settings.clone();
    gated.rules.min_trusting_share = Some(0.5);
    let steps_gated = Steps { settings: &gated, disk: &disk, publisher: &bundles, share: &NoFleetStatus };
    let err = steps_gated.activate(now).unwrap_err().to_string();
    assert!(err.contains("no source of node trust reports is configured"), "{err}");
    steps.activate(now).unwrap();

    // A leaf of generation 1 still valid holds retire back.
    let ledger =
        GenerationLedger::new(fixture.settings.dir.clone(), 1, Duration::from_secs(60), Box::new(Durable))
            .unwrap();
    let old = fixture.settings.dir.authority(1, false).unwrap();
    ledger.record(&old, now + Duration::from_secs(30)).unwrap();
    let err = steps.retire(now).await.unwrap_err().to_string();
    assert!(err.contains("retire refused: generation 1 may have signed certificates valid until"), "{err}");
    assert_eq!(steps.retire(now + Duration::from_secs(33)).await.unwrap(), Transition::Changed);
}

#[test]
fn the_ledger_rounds_up_writes_once_per_step_and_a_failed_write_is_an_error() {
    let fixture = fixture();
    let dir = &fixture.settings.dir;
    let faults = Arc::new(Faults::default());
    let ledger =
        GenerationLedger::new(dir.clone(), 1, Duration::from_secs(200), Box::new(FaultyDisk(faults.clone())))
            .unwrap();
    let ca =
        CertificateAuthority::generate("x", fixture.start, &aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let t = kubecert_authority::from_unix_seconds(1_000_001);
    ledger.record(&ca, t).unwrap();
    assert_eq!(
        dir.issued_until(1).unwrap(),
        Some(kubecert_authority::from_unix_seconds(1_000_010)),
        "rounded up to 10s"
    );
    ledger.record(&ca, t + Duration::from_secs(5)).unwrap();
    assert_eq!(faults.count.load(Ordering::SeqCst), 1, "within the recorded bound: no write");
    ledger.record(&ca, t + Duration::from_secs(10)).unwrap();
    assert_eq!(dir.issued_until(1).unwrap(), Some(kubecert_authority::from_unix_seconds(1_000_020)));
    // A new ledger starts from the file.
    let again = GenerationLedger::new(dir.clone(), 1, Duration::from_secs(200), Box::new(Durable)).unwrap();
    again.record(&ca, t).unwrap();
    assert_eq!(dir.issued_until(1).unwrap(), Some(kubecert_authority::from_unix_seconds(1_000_020)));

    let failing = GenerationLedger::new(
        dir.clone(),
        1,
        Duration::from_secs(200),
        Box::new(FaultyDisk(Arc::new(Faults { fail_at: Some(0), ..Faults::default() }))),
    )
    .unwrap();
    let err = failing.record(&ca, t + Duration::from_secs(100)).unwrap_err();
    assert!(err.contains("injected crash"), "{err}");

    std::fs::write(dir.root.join("1/issued-until"), "soon\n").unwrap();
    let err = dir.issued_until(1).unwrap_err().to_string();
    assert!(err.contains("issued-until: \"soon\" is not a number of Unix seconds"), "{err}");
}

#[tokio::test]
async fn the_automatic_schedule_rolls_and_the_signer_follows_the_active_generation() {
    use super::publish::Publication;
    use super::runtime::{CaMetrics, CaRuntime};

    let fixture = fixture();
    let runtime = CaRuntime {
        settings: fixture.settings.clone(),
        issuance: kubecert_authority::IssuancePolicy::default(),
        metrics: CaMetrics::default(),
        auto_roll: true,
        publication: Publication::new(None, Some(fixture.bundle_file.clone())),
        follower: None,
    };
    let (_, signer) = runtime.start().unwrap();
    let signing_root = |signer: &arc_swap::ArcSwap<kubecert_authority::Signer>| {
        let signer = signer.load();
        let ca = signer.authorities().get(kubecert_csr::SIGNER_KUBELET_SERVING).unwrap().clone();
        (ca.certificate().subject.common_name.clone().unwrap(), ca.chain().len())
    };
    assert_eq!(signing_root(&signer), ("test-ca".to_owned(), 0));
    // Root: start-10 … start+600; prepare at 1/2 (start+295), activate at 0.8 (start+478).
    let at = |secs: u64| fixture.start + Duration::from_secs(secs);
    let phases = |runtime: &CaRuntime| -> Vec<Phase> {
        let state = runtime.settings.dir.read_journal().unwrap().unwrap();
        state.generations().iter().map(|g| g.phase).collect()
    };
    let step = |secs: u64| {
        let state = runtime.settings.dir.read_journal().unwrap().unwrap();
        let now = at(secs);
        let runtime = &runtime;
        async move { runtime.auto_step(&state, now).await.unwrap() }
    };
    step(290).await;
    assert_eq!(phases(&runtime), [Phase::Active]);
    step(296).await;
    assert_eq!(phases(&runtime), [Phase::Active, Phase::Prepared]);
    step(297).await;
    assert_eq!(phases(&runtime), [Phase::Active, Phase::Published]);
    assert_eq!(
        std::fs::read_to_string(&fixture.bundle_file).unwrap().matches("BEGIN CERTIFICATE").count(),
        2
    );
    step(470).await;
    assert_eq!(phases(&runtime), [Phase::Active, Phase::Published], "not before 5/6");
    step(479).await;
    assert_eq!(phases(&runtime), [Phase::Retiring, Phase::Active]);
    let (_, signer) = runtime.start().unwrap();
    assert_eq!(
        signing_root(&signer),
        ("test-ca generation 2".to_owned(), 1),
        "new key, with the cross-certificate"
    );
    step(480).await;
    assert_eq!(phases(&runtime), [Phase::Retired, Phase::Active], "nothing issued by generation 1");
    let (_, signer) = runtime.start().unwrap();
    assert_eq!(
        signing_root(&signer),
        ("test-ca generation 2".to_owned(), 0),
        "the old root is gone: leaf alone"
    );
    assert_eq!(
        std::fs::read_to_string(&fixture.bundle_file).unwrap(),
        fixture.settings.dir.root_pem(2).unwrap()
    );

    // The running signer rewrites the bundles from the journal, but never while a command holds
    // the lock (it may be between its bundle and journal writes).
    std::fs::write(&fixture.bundle_file, "stale").unwrap();
    let held = runtime.settings.dir.lock().unwrap();
    assert!(!runtime.sync_bundles().await.unwrap());
    assert_eq!(std::fs::read_to_string(&fixture.bundle_file).unwrap(), "stale");
    drop(held);
    assert!(runtime.sync_bundles().await.unwrap());
    assert_eq!(
        std::fs::read_to_string(&fixture.bundle_file).unwrap(),
        fixture.settings.dir.root_pem(2).unwrap()
    );
}
