//! CA generations on disk: the journal, each generation's key and certificates, the ledger of
//! what each key issued, and the commands that move a generation through its phases
//! (kubecert-authority's `CaGenerations` decides; this module writes, in an order that survives
//! a crash between any two writes).
//!
//! Layout of the state directory (`DATA_DIR/pki/generations` for `signer serve`, or
//! `--ca-state-dir`):
//!
//! ```text
//! journal.json          every generation, its phase and when it entered each phase
//! lock                  held while a command reads, changes and writes the journal
//! <n>/ca.key            generation n's key (0600)
//! <n>/ca.crt            its self-signed root
//! <n>/cross.crt         its root cross-signed by generation n-1 (n > 1)
//! <n>/issued-until      latest NotAfter generation n's key has issued (Unix seconds)
//! ```
//!
//! Write order, so that a crash anywhere resumes to a consistent state:
//!
//! - first use: generation 1's key and root are copied from the CA files, then the journal is
//!   written. Without a journal the copy is redone.
//! - prepare: key, root, cross-certificate, then the journal. Files of a generation the journal
//!   does not list are unused and are overwritten by the next prepare.
//! - publish: the trust bundles (canary, then live, then `--trust-bundle-out`), then the journal.
//!   A crash in between leaves the new root published early, which is harmless; publish
//!   again writes the same.
//! - activate: the journal only.
//! - retire: the journal, then the bundles without the retired root. Every command and the
//!   running signer's schedule rewrite the bundles from the journal, which heals a crash in
//!   between.

pub mod cli;
pub mod command;
pub mod publish;
pub mod runtime;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use kubecert_authority::{
    CaGenerations, CertificateAuthority, IssuanceLedger, from_unix_seconds, unix_seconds,
};
use kubecert_csr::{Certificate, parse_certificates_pem};

use crate::config::CaFiles;

/// Where bytes go. Durable in production; tests inject failures at each write.
pub trait Disk: Send + Sync {
    /// Writes `contents` to `path` atomically and durably, mode 0600.
    fn write(&self, path: &Path, contents: &[u8]) -> Result<()>;
}

/// Temporary file + fsync + rename + directory fsync (kubecert-store's `write_private_file`).
pub struct Durable;

impl Disk for Durable {
    fn write(&self, path: &Path, contents: &[u8]) -> Result<()> {
        kubecert_store::write_private_file(path, contents)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// A CA generations state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaDir {
    root: PathBuf,
}

impl CaDir {
    /// The state directory at `root`.
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    fn journal(&self) -> PathBuf {
        self.root.join("journal.json")
    }

    /// Generation `id`'s files: (key, root certificate, cross-certificate).
    pub fn files(&self, id: u32) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self.root.join(id.to_string());
        (dir.join("ca.key"), dir.join("ca.crt"), dir.join("cross.crt"))
    }

    fn issued_until_path(&self, id: u32) -> PathBuf {
        self.root.join(id.to_string()).join("issued-until")
    }

    /// Takes the directory's lock (blocking until other commands finish), creating the
    /// directory on first use.
    pub fn lock(&self) -> Result<File> {
        let (file, path) = self.lock_file()?;
        file.lock().with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    }

    /// Like [`CaDir::lock`] but gives up at once (`None`) when another command holds it.
    pub fn try_lock(&self) -> Result<Option<File>> {
        let (file, path) = self.lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    fn lock_file(&self) -> Result<(File, PathBuf)> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating CA state directory {}", self.root.display()))?;
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok((file, path))
    }

    /// The journal, or `None` before first use.
    pub fn read_journal(&self) -> Result<Option<CaGenerations>> {
        let path = self.journal();
        match std::fs::read(&path) {
            Ok(bytes) => CaGenerations::from_json(&bytes)
                .map(Some)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Journals `state`.
    pub fn write_journal(&self, disk: &dyn Disk, state: &CaGenerations) -> Result<()> {
        disk.write(&self.journal(), &state.to_json())
    }

    /// The journal; on first use, generation 1 is the CA in `import` (copied in, then journaled).
    /// Call with the lock held.
    pub fn open(&self, disk: &dyn Disk, import: &CaFiles, now: SystemTime) -> Result<CaGenerations> {
        if let Some(state) = self.read_journal()? {
            return Ok(state);
        }
        let ca = crate::pki::load_ca(import)?;
        let (key, cert, _) = self.files(1);
        disk.write(&key, ca.private_key_pem().as_bytes())?;
        disk.write(&cert, ca.certificate_pem().as_bytes())?;
        let root = ca.certificate();
        let state = CaGenerations::initial(root.not_before, root.not_after, now);
        self.write_journal(disk, &state)?;
        tracing::info!(dir = %self.root.display(), ca = %import.cert.display(), "CA generations start with generation 1");
        Ok(state)
    }

    /// Generation `id`'s CA, sending its cross-certificate after each leaf when `with_cross`.
    pub fn authority(&self, id: u32, with_cross: bool) -> Result<CertificateAuthority> {
        let (key, cert, _) = self.files(id);
        let ca = crate::pki::load_ca(&CaFiles { cert, key })?;
        if !with_cross {
            return Ok(ca);
        }
        Ok(ca.with_chain(vec![self.cross_certificate(id)?]))
    }

    fn cross_certificate(&self, id: u32) -> Result<Certificate> {
        let (_, _, path) = self.files(id);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut certs =
            parse_certificates_pem(&bytes).with_context(|| format!("parsing {}", path.display()))?;
        if certs.len() != 1 {
            bail!("{}: expected one certificate, found {}", path.display(), certs.len());
        }
        Ok(certs.remove(0))
    }

    /// Generation `id`'s root, as PEM.
    pub fn root_pem(&self, id: u32) -> Result<String> {
        let (_, cert, _) = self.files(id);
        std::fs::read_to_string(&cert).with_context(|| format!("reading {}", cert.display()))
    }

    /// The latest NotAfter generation `id`'s key issued, if it issued anything.
    pub fn issued_until(&self, id: u32) -> Result<Option<SystemTime>> {
        let path = self.issued_until_path(id);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                text.trim().parse::<u64>().map(|secs| Some(from_unix_seconds(secs))).with_context(|| {
                    format!("{}: {:?} is not a number of Unix seconds", path.display(), text.trim())
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Records the latest NotAfter the active generation's key issued in `<n>/issued-until`, rounded
/// up to `granularity` so that a burst of issuances writes the file once, not once per
/// certificate. The file is written (durably) before the certificate is handed out.
pub struct GenerationLedger {
    dir: CaDir,
    generation: u32,
    granularity: u64,
    recorded: Mutex<Option<u64>>,
    disk: Box<dyn Disk>,
}

impl GenerationLedger {
    /// The ledger of generation `generation`, for certificates of up to `ttl`: the granularity is
    /// a twentieth of it, between one second and an hour.
    pub fn new(dir: CaDir, generation: u32, ttl: Duration, disk: Box<dyn Disk>) -> Result<Self> {
        let recorded = dir.issued_until(generation)?.map(unix_seconds);
        let granularity = (ttl.as_secs() / 20).clamp(1, 3600);
        Ok(Self { dir, generation, granularity, recorded: Mutex::new(recorded), disk })
    }
}

impl IssuanceLedger for GenerationLedger {
    fn record(&self, _ca: &CertificateAuthority, not_after: SystemTime) -> std::result::Result<(), String> {
        let not_after = unix_seconds(not_after);
        let mut recorded = self.recorded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if recorded.is_some_and(|r| r >= not_after) {
            return Ok(());
        }
        let rounded = not_after.div_ceil(self.granularity) * self.granularity;
        let path = self.dir.issued_until_path(self.generation);
        self.disk
            .write(&path, format!("{rounded}\n").as_bytes())
            .map_err(|e| kubecert_cli::error_chain(&*e))?;
        *recorded = Some(rounded);
        Ok(())
    }
}

/// The common name of generation `id`, from the first generation's: `<base> generation <id>`.
pub fn generation_name(first: &CertificateAuthority, id: u32) -> String {
    let base = first.certificate().subject.common_name.clone().unwrap_or_else(|| "kubecert-ca".to_owned());
    format!("{base} generation {id}")
}

#[cfg(test)]
pub mod tests;
