//! The pending bootstrap key `<cert_dir>/kubelet-client.key.tmp` (SPEC B-10, B-11).
//!
//! The key of a bootstrap CSR must survive a restart while the CSR waits for approval: the CSR's
//! name is derived from the public key (SPEC B-13), so the same key finds the same CSR again.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use kubecert_csr::{KeyAlgorithm, PrivateKey};

use crate::error::{Error, Result, io_error};
use crate::fsio;
use crate::warning::Warning;

/// File name of the pending key inside the cert dir, as the kubelet names it.
pub const PENDING_KEY_FILE_NAME: &str = "kubelet-client.key.tmp";

/// How [`PendingKey::load_or_create`] obtained the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingKeyOrigin {
    /// The file existed and held a usable key.
    Loaded,
    /// There was no file; a fresh ECDSA P-256 key was written.
    Created,
    /// The file was empty or unparsable; a fresh key replaced it (see [`Warning::PendingKeyReplaced`]).
    Replaced,
}

/// The private key of the bootstrap CSR in progress.
#[derive(Clone)]
pub struct PendingKey {
    /// The key.
    pub key: PrivateKey,
    /// The file it is stored in.
    pub path: PathBuf,
    /// Whether it was loaded, created or replaced a broken file.
    pub origin: PendingKeyOrigin,
    /// Things to log (a replaced file, a file readable by others).
    pub warnings: Vec<Warning>,
}

impl fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingKey")
            .field("key", &"<redacted>")
            .field("path", &self.path)
            .field("origin", &self.origin)
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl PendingKey {
    /// `<cert_dir>/kubelet-client.key.tmp`.
    pub fn path_in(cert_dir: &Path) -> PathBuf {
        cert_dir.join(PENDING_KEY_FILE_NAME)
    }

    /// Reads the pending key, or creates one: ECDSA P-256 written as SEC1 `EC PRIVATE KEY` PEM,
    /// mode 0600, the directory created with mode 0755 when missing. Unlike upstream, an empty or
    /// unparsable file does not fail every later bootstrap: a fresh key replaces it, with a
    /// [`Warning::PendingKeyReplaced`]. Writes are atomic (temporary file, fsync, rename, fsync
    /// of the directory), so a crash never leaves a half-written key behind.
    pub fn load_or_create(cert_dir: &Path) -> Result<Self> {
        let path = Self::path_in(cert_dir);
        let replaced_because = match std::fs::read(&path) {
            Ok(bytes) => match usable_key(&bytes, &path) {
                Ok(key) => {
                    let warnings = fsio::key_file_permission_warning(&path)?.into_iter().collect();
                    return Ok(Self { key, path, origin: PendingKeyOrigin::Loaded, warnings });
                }
                Err(reason) => Some(reason),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)
            .map_err(|source| Error::KeyGeneration { path: path.clone(), source })?;
        fsio::write_private_file(&path, key.to_pem().as_bytes())?;
        let (origin, warnings) = match replaced_because {
            None => (PendingKeyOrigin::Created, Vec::new()),
            Some(reason) => {
                (PendingKeyOrigin::Replaced, vec![Warning::PendingKeyReplaced { path: path.clone(), reason }])
            }
        };
        Ok(Self { key, path, origin, warnings })
    }

    /// Deletes the pending key after a successful bootstrap (SPEC B-11); a missing file is fine.
    pub fn remove(cert_dir: &Path) -> Result<()> {
        let path = Self::path_in(cert_dir);
        fsio::remove_if_exists(&path)?;
        match path.parent() {
            Some(dir) if fsio::exists(dir)? => fsio::sync_dir(dir),
            _ => Ok(()),
        }
    }
}

/// The key in `bytes`, or why there is none (as text for the warning).
fn usable_key(bytes: &[u8], path: &Path) -> Result<PrivateKey, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty".to_owned());
    }
    PrivateKey::from_pem(bytes)
        .map_err(|e| Error::PrivateKey { origin: path.display().to_string(), source: e }.to_string())
}

#[cfg(test)]
mod tests {
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_when_missing_then_loaded() {
        let root = tempfile::tempdir().unwrap();
        let cert_dir = root.path().join("var/lib/kubelet/pki");

        let created = PendingKey::load_or_create(&cert_dir).unwrap();
        assert_eq!(created.origin, PendingKeyOrigin::Created);
        assert_eq!(created.path, cert_dir.join("kubelet-client.key.tmp"));
        assert_eq!(created.key.algorithm(), KeyAlgorithm::EcdsaP256);
        assert!(created.warnings.is_empty());
        assert_eq!(mode(&created.path), 0o600);
        assert_eq!(mode(&cert_dir), 0o755);
        let text = fs::read_to_string(&created.path).unwrap();
        assert!(text.starts_with("-----BEGIN EC PRIVATE KEY-----"), "SEC1, as the kubelet writes");

        let loaded = PendingKey::load_or_create(&cert_dir).unwrap();
        assert_eq!(loaded.origin, PendingKeyOrigin::Loaded);
        assert_eq!(loaded.key.public_key_der(), created.key.public_key_der());
        assert!(!format!("{loaded:?}").contains("PRIVATE"), "Debug must not show the key");
        let names: Vec<_> = fs::read_dir(&cert_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["kubelet-client.key.tmp"], "no temporary files left");
    }

    #[test]
    fn empty_or_corrupt_files_are_replaced_with_a_warning() {
        let cases: [(&str, &[u8]); 4] = [
            ("empty", b""),
            ("whitespace", b"\n\n"),
            ("garbage", b"\x00\x01 not a key"),
            ("truncated", b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n"),
        ];
        for (name, content) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = PendingKey::path_in(dir.path());
            fs::write(&path, content).unwrap();

            let replaced = PendingKey::load_or_create(dir.path()).unwrap();
            assert_eq!(replaced.origin, PendingKeyOrigin::Replaced, "{name}");
            match replaced.warnings.as_slice() {
                [Warning::PendingKeyReplaced { path: p, reason }] => {
                    assert_eq!(p, &path, "{name}");
                    assert!(!reason.is_empty(), "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(mode(&path), 0o600, "{name}");
            let again = PendingKey::load_or_create(dir.path()).unwrap();
            assert_eq!(again.origin, PendingKeyOrigin::Loaded, "{name}");
            assert_eq!(again.key.public_key_der(), replaced.key.public_key_der(), "{name}");
        }
    }

    #[test]
    fn a_key_file_readable_by_others_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let created = PendingKey::load_or_create(dir.path()).unwrap();
        fs::set_permissions(&created.path, Permissions::from_mode(0o644)).unwrap();
        let loaded = PendingKey::load_or_create(dir.path()).unwrap();
        assert_eq!(
            loaded.warnings,
            [Warning::KeyFileAccessibleByOthers { path: created.path.clone(), mode: 0o644 }]
        );
    }

    #[test]
    fn remove_deletes_and_tolerates_absence() {
        let root = tempfile::tempdir().unwrap();
        let created = PendingKey::load_or_create(root.path()).unwrap();
        PendingKey::remove(root.path()).unwrap();
        assert!(!created.path.exists());
        PendingKey::remove(root.path()).unwrap();
        PendingKey::remove(&root.path().join("never-created")).unwrap();
    }

    #[test]
    fn an_unreadable_path_is_an_error_not_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(PendingKey::path_in(dir.path())).unwrap();
        let err = PendingKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("kubelet-client.key.tmp"), "{err}");
    }
}
