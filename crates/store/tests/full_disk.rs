//! A full file system and a read-only one: the write fails with an error naming the path and
//! the operating system's reason, and the current pair stays intact and loadable.
//!
//! Both use a small tmpfs mounted for the test (`mount -t tmpfs -o size=…`, then
//! `mount -o remount,ro` for the read-only case). That needs root with CAP_SYS_ADMIN, which the
//! developers' machines and CI have (everything runs as root there); permission bits cannot be
//! used instead because root ignores them. If mounting fails the tests fail, unless
//! `KUBECERT_SKIP_MOUNT_TESTS=1` is set, in which case they say loudly that they skipped.

mod support;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use kubecert_store::{CertificateStore, Error, PendingKey, StoreConfig, kubeconfig};
use support::{TestCa, now};

/// A tmpfs mounted on a fresh temporary directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after printing why) when skipping is allowed and mounting is not possible.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "kubecert-test"])
            .arg(dir.path())
            .output();
        let failure = match output {
            Ok(o) if o.status.success() => return Some(Self { dir }),
            Ok(o) => format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => e.to_string(),
        };
        if std::env::var_os("KUBECERT_SKIP_MOUNT_TESTS").is_some_and(|v| v == "1") {
            println!("SKIPPED: cannot mount a tmpfs ({failure}) and KUBECERT_SKIP_MOUNT_TESTS=1");
            return None;
        }
        panic!(
            "cannot mount a tmpfs for the full-disk/read-only tests ({failure}); these tests need \
             root with CAP_SYS_ADMIN. Set KUBECERT_SKIP_MOUNT_TESTS=1 to skip them knowingly."
        );
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount").args(["-o", "remount,ro"]).arg(self.path()).status().unwrap();
        assert!(status.success(), "remount read-only failed: {status}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so that a still-open file cannot keep the mount (and the test's tempdir) alive.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn store(dir: &Path) -> CertificateStore {
    let mut config = StoreConfig::new(dir, kubecert_store::CLIENT_PREFIX);
    config.time_zone = TimeZone::UTC;
    CertificateStore::open(config).unwrap()
}

/// Fills the file system with one file until the kernel says it is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    path
}

/// Checks that `result` failed with an [`Error::Io`] of `kind` for a path under `dir`; returns
/// the message.
fn assert_io_error<T: std::fmt::Debug>(result: Result<T, Error>, kind: io::ErrorKind, dir: &Path) -> String {
    let err = result.expect_err("the write must fail");
    match &err {
        Error::Io { path, source, .. } => {
            assert_eq!(source.kind(), kind, "{err}");
            assert!(path.starts_with(dir), "{err}: path not under {}", dir.display());
        }
        other => panic!("expected an I/O error of kind {kind:?}, got {other:?}"),
    }
    err.to_string()
}

fn temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn a_full_disk_fails_the_commit_and_keeps_the_current_pair() {
    let Some(fs) = Tmpfs::mount("256k") else {
        return;
    };
    let ca = TestCa::new();
    let old = ca.issue("old");
    let new = ca.issue("new");
    let store = store(fs.path());
    store.commit(old.chain_pem.as_bytes(), old.key_pem.as_bytes(), now()).unwrap();
    let filler = fill(fs.path());

    let later = now() + Duration::from_secs(60);
    let result = store.commit(new.chain_pem.as_bytes(), new.key_pem.as_bytes(), later);
    let message = assert_io_error(result, io::ErrorKind::StorageFull, fs.path());
    assert!(message.contains("No space left on device"), "{message}");
    assert!(temporaries(fs.path()).is_empty(), "the temporary file was removed");
    assert!(is_current(&store, &old));
    assert_eq!(store.pair_files().unwrap().len(), 1);

    // The pending key and kubeconfig writers fail the same way and leave nothing behind.
    assert_io_error(PendingKey::load_or_create(fs.path()), io::ErrorKind::StorageFull, fs.path());
    let endpoint = kubeconfig::ClusterEndpoint {
        server: "https://127.0.0.1:6443".to_owned(),
        certificate_authority: None,
        insecure_skip_tls_verify: false,
    };
    let kubeconfig_path = fs.path().join("kubelet.conf");
    assert_io_error(
        kubeconfig::write_for_current_pem(&kubeconfig_path, &endpoint, store.current_path()),
        io::ErrorKind::StorageFull,
        fs.path(),
    );
    assert!(!kubeconfig_path.exists());
    assert!(temporaries(fs.path()).is_empty());

    // Space again: the same commit goes through. The kernel may give the filler's pages back
    // to the tmpfs a moment after the unlink (CI saw ENOSPC once right after it, on a busy
    // machine), so a commit that still finds the disk full is retried for at most 2 s.
    fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match store.commit(new.chain_pem.as_bytes(), new.key_pem.as_bytes(), later) {
            Ok(_) => break,
            Err(Error::Io { source, .. })
                if source.kind() == io::ErrorKind::StorageFull && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the commit after freeing space: {e}"),
        }
    }
    assert!(is_current(&store, &new));
}

#[test]
fn a_read_only_file_system_fails_the_commit_and_keeps_the_current_pair() {
    let Some(fs) = Tmpfs::mount("1m") else {
        return;
    };
    let ca = TestCa::new();
    let old = ca.issue("old");
    let new = ca.issue("new");
    let store = store(fs.path());
    store.commit(old.chain_pem.as_bytes(), old.key_pem.as_bytes(), now()).unwrap();
    fs.remount_read_only();

    let result =
        store.commit(new.chain_pem.as_bytes(), new.key_pem.as_bytes(), now() + Duration::from_secs(60));
    let message = assert_io_error(result, io::ErrorKind::ReadOnlyFilesystem, fs.path());
    assert!(message.contains("Read-only file system"), "{message}");

    // Opening (recovery, temporary cleanup) still works on a read-only directory.
    let reopened = self::store(fs.path());
    assert!(is_current(&reopened, &old));
    assert_io_error(PendingKey::load_or_create(fs.path()), io::ErrorKind::ReadOnlyFilesystem, fs.path());
}

/// Whether the store's current pair is `pair`.
fn is_current(store: &CertificateStore, pair: &support::IssuedPair) -> bool {
    let leaf = kubecert_csr::parse_certificates_pem(pair.leaf_pem.as_bytes()).unwrap();
    store.current().unwrap().unwrap().leaf().der == leaf[0].der
}
