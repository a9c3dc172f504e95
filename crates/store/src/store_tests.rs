use std::collections::BTreeMap;
use std::fs::{self, Permissions};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::test_support::{IssuedPair, TestCa, now};

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir, CLIENT_PREFIX);
    config.time_zone = TimeZone::UTC;
    config
}

fn config_with_prefix(dir: &Path, prefix: &str) -> StoreConfig {
    let mut config = config(dir);
    config.prefix = prefix.to_owned();
    config
}

fn open(dir: &Path) -> CertificateStore {
    CertificateStore::open(config(dir)).unwrap()
}

fn commit(store: &CertificateStore, pair: &IssuedPair, at: SystemTime) -> StoredPair {
    store.commit(pair.chain_pem.as_bytes(), pair.key_pem.as_bytes(), at).unwrap()
}

fn leaf_der(pair: &IssuedPair) -> Vec<u8> {
    kubecert_csr::parse_certificates_pem(pair.leaf_pem.as_bytes()).unwrap()[0].der.clone()
}

/// Every entry of `dir`: name → symlink target, or file content.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let value = if e.file_type().unwrap().is_symlink() {
                format!("-> {}", fs::read_link(e.path()).unwrap().display())
            } else {
                String::from_utf8_lossy(&fs::read(e.path()).unwrap()).into_owned()
            };
            (name, value)
        })
        .collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    snapshot(dir).into_keys().collect()
}

fn write_combined(path: &Path, pair: &IssuedPair) {
    fs::write(path, format!("{}{}", pair.chain_pem, pair.key_pem)).unwrap();
    fs::set_permissions(path, Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn commit_writes_the_kubelet_layout_and_current_reads_it_back() {
    let ca = TestCa::new();
    let pair = ca.issue("n1");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    let committed = commit(&store, &pair, now());

    let pair_file = dir.path().join("kubelet-client-2024-03-05-06-07-08.pem");
    assert_eq!(
        file_names(dir.path()),
        ["kubelet-client-2024-03-05-06-07-08.pem", "kubelet-client-current.pem"]
    );
    let target = fs::read_link(dir.path().join("kubelet-client-current.pem")).unwrap();
    assert!(target.is_absolute(), "link target must be absolute (FS-4): {target:?}");
    assert_eq!(target, pair_file);
    assert_eq!(fs::metadata(&pair_file).unwrap().permissions().mode() & 0o777, 0o600);
    let blocks = pem::parse_many(fs::read(&pair_file).unwrap()).unwrap();
    let tags: Vec<_> = blocks.iter().map(|b| b.tag()).collect();
    assert_eq!(tags, ["CERTIFICATE", "CERTIFICATE", "EC PRIVATE KEY"], "chain leaf first, then SEC1 key");

    let loaded = store.current().unwrap().expect("a pair");
    assert_eq!(loaded.leaf().der, leaf_der(&pair));
    assert_eq!(loaded.chain.len(), 2);
    assert_eq!(loaded.key.public_key_der(), pair.key.public_key_der());
    assert_eq!(
        loaded.source,
        PairSource::Current { link: dir.path().join("kubelet-client-current.pem"), file: pair_file }
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(committed.source, loaded.source);
    assert_eq!(committed.cert_pem, loaded.cert_pem);
    assert!(!format!("{loaded:?}").contains("PRIVATE KEY"), "Debug must not show the key");
}

#[test]
fn commits_within_one_second_never_overwrite() {
    let ca = TestCa::new();
    let pairs = [ca.issue("a"), ca.issue("b"), ca.issue("c")];
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let same_second = now() + Duration::from_millis(300);

    let files: Vec<PathBuf> = pairs
        .iter()
        .map(|p| match commit(&store, p, same_second).source {
            PairSource::Current { file, .. } => file,
            other => panic!("unexpected source {other:?}"),
        })
        .collect();

    let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "kubelet-client-2024-03-05-06-07-08.pem",
            "kubelet-client-2024-03-05-06-07-08-1.pem",
            "kubelet-client-2024-03-05-06-07-08-2.pem"
        ]
    );
    for (file, pair) in files.iter().zip(&pairs) {
        let bytes = fs::read(file).unwrap();
        assert!(String::from_utf8_lossy(&bytes).starts_with(&pair.leaf_pem), "{file:?} kept its own pair");
    }
    assert_eq!(store.current().unwrap().unwrap().leaf().der, leaf_der(&pairs[2]));
    assert_eq!(store.pair_files().unwrap(), files.into_iter().rev().collect::<Vec<_>>());
}

#[test]
fn retention_keeps_the_newest_pairs_and_only_touches_our_names() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.retain = 2;
    let store = CertificateStore::open(cfg).unwrap();
    let unrelated = [
        "kubelet-client.crt",
        "kubelet-client.key.tmp",
        "kubelet-server-2020-01-01-00-00-00.pem",
        "kubelet-client-2020-01-01-00-00-00.pem.bak",
        "notes.txt",
    ];
    for name in unrelated {
        fs::write(dir.path().join(name), name).unwrap();
    }

    let pair = ca.issue("n");
    for i in 0..5 {
        commit(&store, &pair, now() + Duration::from_secs(60 * i));
    }

    let mut expected: Vec<String> = unrelated.iter().map(|s| s.to_string()).collect();
    expected.extend([
        "kubelet-client-2024-03-05-06-10-08.pem".to_owned(),
        "kubelet-client-2024-03-05-06-11-08.pem".to_owned(),
        "kubelet-client-current.pem".to_owned(),
    ]);
    expected.sort();
    assert_eq!(file_names(dir.path()), expected);
}

#[test]
fn retention_never_deletes_the_current_pair() {
    // Files named in the future (clock went backwards): the new current pair is the oldest by
    // name, yet it must survive pruning.
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let future = [
        "kubelet-client-2030-01-01-00-00-00.pem",
        "kubelet-client-2030-01-01-00-00-01.pem",
        "kubelet-client-2030-01-01-00-00-02.pem",
    ];
    let old = ca.issue("old");
    for name in future {
        write_combined(&dir.path().join(name), &old);
    }
    let mut cfg = config(dir.path());
    cfg.retain = 2;
    let store = CertificateStore::open(cfg).unwrap();

    commit(&store, &ca.issue("new"), now());

    assert_eq!(
        file_names(dir.path()),
        [
            "kubelet-client-2024-03-05-06-07-08.pem",
            "kubelet-client-2030-01-01-00-00-01.pem",
            "kubelet-client-2030-01-01-00-00-02.pem",
            "kubelet-client-current.pem"
        ]
    );
}

#[test]
fn retain_zero_keeps_only_the_current_pair() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.retain = 0;
    let store = CertificateStore::open(cfg).unwrap();
    let pair = ca.issue("n");
    commit(&store, &pair, now());
    commit(&store, &pair, now() + Duration::from_secs(1));
    assert_eq!(
        file_names(dir.path()),
        ["kubelet-client-2024-03-05-06-07-09.pem", "kubelet-client-current.pem"]
    );
}

#[test]
fn refused_commits_change_nothing() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = ca.issue("first");
    commit(&store, &first, now());
    let other = ca.issue("other");
    let before = snapshot(dir.path());

    let later = now() + Duration::from_secs(5);
    let mismatched = store.commit(other.chain_pem.as_bytes(), first.key_pem.as_bytes(), later);
    assert!(matches!(mismatched, Err(Error::KeyMismatch { .. })), "{mismatched:?}");
    let no_key = store.commit(other.chain_pem.as_bytes(), other.chain_pem.as_bytes(), later);
    assert!(matches!(no_key, Err(Error::NoPrivateKey { .. })), "{no_key:?}");
    let no_cert = store.commit(other.key_pem.as_bytes(), other.key_pem.as_bytes(), later);
    assert!(matches!(no_cert, Err(Error::Certificate { .. })), "{no_cert:?}");
    let garbage_key = store.commit(
        other.chain_pem.as_bytes(),
        b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        later,
    );
    assert!(matches!(garbage_key, Err(Error::PrivateKey { .. })), "{garbage_key:?}");

    assert_eq!(snapshot(dir.path()), before);
    let message = mismatched.unwrap_err().to_string();
    assert!(message.contains("does not match"), "{message}");
}

#[test]
fn commit_refuses_links_that_are_regular_files() {
    let ca = TestCa::new();
    let pair = ca.issue("n");
    for name in ["kubelet-client-current.pem", "kubelet-client-updated.pem"] {
        let dir = tempfile::tempdir().unwrap();
        if name.contains("updated") {
            // A regular `updated` next to a valid current link.
            open(dir.path());
            commit(&open(dir.path()), &pair, now());
        }
        write_combined(&dir.path().join(name), &pair);
        let store = open(dir.path());
        let before = snapshot(dir.path());
        let result = store.commit(pair.chain_pem.as_bytes(), pair.key_pem.as_bytes(), now() + DAY_SECS);
        match result {
            Err(Error::NotASymlink { path }) => assert_eq!(path, dir.path().join(name)),
            other => panic!("{name}: expected NotASymlink, got {other:?}"),
        }
        assert_eq!(snapshot(dir.path()), before, "{name}: nothing written");
    }
}

const DAY_SECS: Duration = Duration::from_secs(86_400);

/// Which candidate [`CertificateStore::current`] picked, by leaf.
#[test]
fn lookup_order_follows_fs2() {
    let ca = TestCa::new();
    let current = ca.issue("current");
    let configured = ca.issue("configured");
    let default = ca.issue("default");

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Want {
        Current,
        Configured,
        Default,
        Nothing,
    }
    // (current link, configured cert, configured key, default crt, default key, dangling current) → want
    let cases = [
        ((false, false, false, false, false, false), Want::Nothing),
        ((false, false, false, true, false, false), Want::Nothing),
        ((false, false, false, false, true, false), Want::Nothing),
        ((false, false, false, true, true, false), Want::Default),
        ((false, true, false, true, true, false), Want::Default),
        ((false, false, true, true, true, false), Want::Default),
        ((false, true, true, true, true, false), Want::Configured),
        ((false, true, true, false, false, false), Want::Configured),
        ((true, true, true, true, true, false), Want::Current),
        ((true, false, false, false, false, false), Want::Current),
        ((false, false, false, true, true, true), Want::Default),
        ((false, false, false, false, false, true), Want::Nothing),
    ];
    for ((has_current, has_cfg_cert, has_cfg_key, has_crt, has_key, dangling), want) in cases {
        let root = tempfile::tempdir().unwrap();
        let cert_dir = root.path().join("certs");
        let key_dir = root.path().join("keys");
        let other = root.path().join("etc");
        for d in [&cert_dir, &key_dir, &other] {
            fs::create_dir(d).unwrap();
        }
        let mut cfg = config(&cert_dir);
        cfg.key_dir = key_dir.clone();
        cfg.cert_file = Some(other.join("tls.crt"));
        cfg.key_file = Some(other.join("tls.key"));
        if has_current {
            let target = cert_dir.join("kubelet-client-2023-01-01-00-00-00.pem");
            write_combined(&target, &current);
            symlink(&target, cert_dir.join("kubelet-client-current.pem")).unwrap();
        }
        if dangling {
            symlink(cert_dir.join("gone.pem"), cert_dir.join("kubelet-client-current.pem")).unwrap();
        }
        if has_cfg_cert {
            fs::write(other.join("tls.crt"), &configured.chain_pem).unwrap();
        }
        if has_cfg_key {
            fs::write(other.join("tls.key"), &configured.key_pem).unwrap();
        }
        if has_crt {
            fs::write(cert_dir.join("kubelet-client.crt"), &default.chain_pem).unwrap();
        }
        if has_key {
            fs::write(key_dir.join("kubelet-client.key"), &default.key_pem).unwrap();
        }
        let store = CertificateStore::open(cfg).unwrap();
        let found = store.current().unwrap();
        let got = match found.as_ref().map(|p| &p.source) {
            None => Want::Nothing,
            Some(PairSource::Current { .. }) => Want::Current,
            Some(PairSource::ConfiguredFiles { .. }) => Want::Configured,
            Some(PairSource::DefaultFiles { key_file, .. }) => {
                assert_eq!(key_file, &key_dir.join("kubelet-client.key"));
                Want::Default
            }
        };
        assert_eq!(
            got,
            want,
            "case {:?}",
            (has_current, has_cfg_cert, has_cfg_key, has_crt, has_key, dangling)
        );
        if let Some(pair) = found {
            let expected = match want {
                Want::Current => &current,
                Want::Configured => &configured,
                _ => &default,
            };
            assert_eq!(pair.leaf().der, leaf_der(expected));
        }
    }
}

#[test]
fn a_candidate_that_exists_but_does_not_load_is_an_error() {
    let ca = TestCa::new();
    let a = ca.issue("a");
    let b = ca.issue("b");

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("kubelet-client-current.pem"), "not pem at all").unwrap();
    let err = open(dir.path()).current().unwrap_err();
    assert!(matches!(err, Error::Certificate { .. }), "{err:?}");
    assert!(err.to_string().contains("kubelet-client-current.pem"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("kubelet-client.crt"), &a.chain_pem).unwrap();
    fs::write(dir.path().join("kubelet-client.key"), &b.key_pem).unwrap();
    let err = open(dir.path()).current().unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("kubelet-client.key"), "{err}");
}

#[test]
fn open_recovers_per_fs1_and_removes_stale_temporaries() {
    let ca = TestCa::new();
    let pair = ca.issue("n");

    struct Case {
        name: &'static str,
        current: Option<&'static str>,
        updated: Option<&'static str>,
        expect_current_target: Option<&'static str>,
        expect_updated_left: bool,
        expect_error: bool,
    }
    let cases = [
        Case {
            name: "switch interrupted after removing current",
            current: None,
            updated: Some("link:new"),
            expect_current_target: Some("new"),
            expect_updated_left: false,
            expect_error: false,
        },
        Case {
            name: "updated is a regular file and current missing",
            current: None,
            updated: Some("file"),
            expect_current_target: None,
            expect_updated_left: true,
            expect_error: true,
        },
        Case {
            name: "stale updated next to current is left alone",
            current: Some("link:old"),
            updated: Some("link:new"),
            expect_current_target: Some("old"),
            expect_updated_left: true,
            expect_error: false,
        },
        Case {
            name: "clean directory",
            current: Some("link:old"),
            updated: None,
            expect_current_target: Some("old"),
            expect_updated_left: false,
            expect_error: false,
        },
    ];
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("kubelet-client-2024-01-01-00-00-00.pem");
        let new = dir.path().join("kubelet-client-2024-01-02-00-00-00.pem");
        write_combined(&old, &pair);
        write_combined(&new, &pair);
        let path_of = |which: &str| if which.ends_with("new") { new.clone() } else { old.clone() };
        for (link, spec) in
            [("kubelet-client-current.pem", case.current), ("kubelet-client-updated.pem", case.updated)]
        {
            match spec {
                Some("file") => write_combined(&dir.path().join(link), &pair),
                Some(target) => symlink(path_of(target), dir.path().join(link)).unwrap(),
                None => {}
            }
        }
        let stale = dir.path().join(".kubelet-client.tmp-Ab12Cd");
        let foreign = dir.path().join(".kubelet-server.tmp-Ab12Cd");
        fs::write(&stale, "half a pair").unwrap();
        fs::write(&foreign, "someone else's").unwrap();

        let result = CertificateStore::open(config(dir.path()));
        if case.expect_error {
            match result {
                Err(Error::NotASymlink { path }) => {
                    assert_eq!(path, dir.path().join("kubelet-client-updated.pem"))
                }
                other => panic!("{}: expected NotASymlink, got {other:?}", case.name),
            }
            continue;
        }
        let store = result.unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let target = fs::read_link(dir.path().join("kubelet-client-current.pem")).ok();
        assert_eq!(target, case.expect_current_target.map(path_of), "{}", case.name);
        assert_eq!(
            fs::symlink_metadata(dir.path().join("kubelet-client-updated.pem")).is_ok(),
            case.expect_updated_left,
            "{}",
            case.name
        );
        assert!(!stale.exists(), "{}: stale temporary removed", case.name);
        assert!(foreign.exists(), "{}: other prefix's temporary kept", case.name);
        assert!(store.current().unwrap().is_some(), "{}", case.name);
    }
}

#[test]
fn a_commit_after_a_stale_updated_link_replaces_it() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    commit(&store, &ca.issue("a"), now());
    symlink(dir.path().join("nowhere.pem"), dir.path().join("kubelet-client-updated.pem")).unwrap();
    let b = ca.issue("b");
    commit(&store, &b, now() + DAY_SECS);
    assert!(fs::symlink_metadata(dir.path().join("kubelet-client-updated.pem")).is_err());
    assert_eq!(store.current().unwrap().unwrap().leaf().der, leaf_der(&b));
}

#[test]
fn key_files_readable_by_others_are_reported() {
    let ca = TestCa::new();
    let pair = ca.issue("n");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let PairSource::Current { file, .. } = commit(&store, &pair, now()).source else {
        panic!("commit makes the pair current");
    };
    assert!(store.current().unwrap().unwrap().warnings.is_empty());

    fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
    let warnings = store.current().unwrap().unwrap().warnings;
    assert_eq!(warnings, [Warning::KeyFileAccessibleByOthers { path: file.clone(), mode: 0o644 }]);
    assert!(warnings[0].to_string().contains("0644"), "{}", warnings[0]);

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("kubelet-client.crt"), &pair.chain_pem).unwrap();
    let key = dir.path().join("kubelet-client.key");
    fs::write(&key, &pair.key_pem).unwrap();
    fs::set_permissions(&key, Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(dir.path().join("kubelet-client.crt"), Permissions::from_mode(0o644)).unwrap();
    let warnings = open(dir.path()).current().unwrap().unwrap().warnings;
    assert_eq!(warnings, [Warning::KeyFileAccessibleByOthers { path: key, mode: 0o640 }]);
}

/// A directory as a kubelet leaves it: SEC1 key after the chain in a timestamped file, an
/// absolute `-current.pem` link, the serving pair next to it, a pending key file.
#[test]
fn a_kubelet_made_directory_loads_and_accepts_our_commits() {
    let ca = TestCa::new();
    let kubelet_pair = ca.issue("kubelet");
    let dir = tempfile::tempdir().unwrap();
    let kubelet_file = dir.path().join("kubelet-client-2023-11-02-10-20-30.pem");
    // Go's pem.Encode output: 64-column base64, LF endings; certificate(s) first, then the key.
    assert!(kubelet_pair.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
    write_combined(&kubelet_file, &kubelet_pair);
    symlink(&kubelet_file, dir.path().join("kubelet-client-current.pem")).unwrap();
    let serving = ca.issue("serving");
    let serving_file = dir.path().join("kubelet-server-2023-11-02-10-20-31.pem");
    write_combined(&serving_file, &serving);
    symlink(&serving_file, dir.path().join("kubelet-server-current.pem")).unwrap();
    fs::write(dir.path().join("kubelet-client.key.tmp"), &kubelet_pair.key_pem).unwrap();

    let store = open(dir.path());
    let loaded = store.current().unwrap().unwrap();
    assert_eq!(loaded.leaf().der, leaf_der(&kubelet_pair));
    assert!(loaded.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert!(loaded.warnings.is_empty());

    let ours = ca.issue("ours");
    commit(&store, &ours, now());
    assert!(kubelet_file.exists(), "the kubelet's pair is kept (retention 5)");
    assert_eq!(store.current().unwrap().unwrap().leaf().der, leaf_der(&ours));
    let server_store = CertificateStore::open(config_with_prefix(dir.path(), SERVER_PREFIX)).unwrap();
    assert_eq!(server_store.current().unwrap().unwrap().leaf().der, leaf_der(&serving));
    assert!(dir.path().join("kubelet-client.key.tmp").exists());
}

#[test]
fn relative_links_made_by_hand_also_load() {
    let ca = TestCa::new();
    let pair = ca.issue("n");
    let dir = tempfile::tempdir().unwrap();
    write_combined(&dir.path().join("kubelet-client-2024-01-01-00-00-00.pem"), &pair);
    symlink("kubelet-client-2024-01-01-00-00-00.pem", dir.path().join("kubelet-client-current.pem")).unwrap();
    let loaded = open(dir.path()).current().unwrap().unwrap();
    assert_eq!(loaded.source.key_file(), dir.path().join("kubelet-client-2024-01-01-00-00-00.pem"));
}

#[test]
fn bad_prefixes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for prefix in ["", "a/b", ".hidden"] {
        let result = CertificateStore::open(config_with_prefix(dir.path(), prefix));
        assert!(matches!(result, Err(Error::InvalidPrefix { .. })), "{prefix:?}");
    }
}

#[test]
fn a_missing_directory_is_created_on_commit_and_is_empty_before() {
    let ca = TestCa::new();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("var/lib/kubelet/pki");
    let store = open(&dir);
    assert!(store.current().unwrap().is_none());
    assert!(store.pair_files().unwrap().is_empty());
    commit(&store, &ca.issue("n"), now());
    assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o755);
    assert!(store.current().unwrap().is_some());
}
