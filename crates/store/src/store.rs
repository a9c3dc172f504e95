//! The certificate store: timestamped pair files and the `-current.pem` link (SPEC §3.4).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use jiff::tz::TimeZone;

use crate::error::{Error, Result, io_error};
use crate::fsio;
use crate::names;
use crate::pair::{PairSource, StoredPair, parse_pair};
use crate::warning::Warning;

/// How many timestamped pair files [`CertificateStore::commit`] keeps by default.
pub const DEFAULT_RETAIN: usize = 5;
/// The prefix of the kubelet's client certificate files.
pub const CLIENT_PREFIX: &str = "kubelet-client";
/// The prefix of the kubelet's serving certificate files.
pub const SERVER_PREFIX: &str = "kubelet-server";

/// Upper bound on same-second collision suffixes tried before giving up.
const MAX_NAME_ATTEMPTS: usize = 1000;

/// Where a [`CertificateStore`] keeps its files and how many old pairs it keeps.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the pair files and links (kubelet `--cert-dir`). Made absolute when the
    /// store opens, so the links' targets are absolute (SPEC FS-4).
    pub cert_dir: PathBuf,
    /// Directory of the fallback `<prefix>.key` (upstream lets it differ from `cert_dir`).
    pub key_dir: PathBuf,
    /// File name prefix, e.g. [`CLIENT_PREFIX`] or [`SERVER_PREFIX`].
    pub prefix: String,
    /// A configured certificate file, used when `-current.pem` is absent and both it and
    /// `key_file` exist (SPEC FS-2 step 2; the kubelet's `--tls-cert-file` for serving).
    pub cert_file: Option<PathBuf>,
    /// The configured key file paired with `cert_file`.
    pub key_file: Option<PathBuf>,
    /// How many of the newest timestamped pair files a commit keeps; the current pair is kept
    /// even when it is not among them. `0` keeps only the current pair. "Newest" is by file
    /// name (timestamp, then same-second suffix), so a file's mtime does not matter; only names
    /// of the form `<prefix>-YYYY-MM-DD-HH-MM-SS[-N].pem` are ever deleted.
    pub retain: usize,
    /// Zone of the timestamp in pair file names; the kubelet uses local time, so the default is
    /// the system zone. Tests set UTC.
    pub time_zone: TimeZone,
}

impl StoreConfig {
    /// Keys and certificates in `cert_dir` under `prefix`, no configured files, keep
    /// [`DEFAULT_RETAIN`] pairs, local time.
    pub fn new(cert_dir: impl Into<PathBuf>, prefix: impl Into<String>) -> Self {
        let cert_dir = cert_dir.into();
        Self {
            key_dir: cert_dir.clone(),
            cert_dir,
            prefix: prefix.into(),
            cert_file: None,
            key_file: None,
            retain: DEFAULT_RETAIN,
            time_zone: TimeZone::system(),
        }
    }
}

/// Crash-safe storage of one certificate/key pair in the kubelet's layout.
///
/// On disk (SPEC FS-3/FS-4): `<cert_dir>/<prefix>-YYYY-MM-DD-HH-MM-SS.pem` (mode 0600, the
/// certificate chain as `CERTIFICATE` blocks leaf first, then the key block) and
/// `<cert_dir>/<prefix>-current.pem`, a symbolic link with an absolute target, switched by
/// renaming `<prefix>-updated.pem` over it. A kubelet reads our directory and we read its.
///
/// Beyond upstream, [`commit`](Self::commit) writes the pair under a temporary name, fsyncs it,
/// renames it into place and fsyncs the directory after each rename and after the switch; it
/// never overwrites an existing pair file; it keeps only [`StoreConfig::retain`] old pairs; it
/// refuses a key that does not match the certificate before writing anything. A process killed at
/// any point leaves a directory that [`open`](Self::open) turns back into the old or the new pair.
///
/// One process should own a store's directory and prefix at a time: `open` deletes temporary
/// files of this prefix, which would break a concurrent writer's commit.
#[derive(Debug, Clone)]
pub struct CertificateStore {
    config: StoreConfig,
    current_link: PathBuf,
    updated_link: PathBuf,
}

impl CertificateStore {
    /// Opens the store: makes `cert_dir` absolute, finishes an interrupted link switch (SPEC FS-1)
    /// and deletes temporary files left by an interrupted commit. The directory need not exist.
    ///
    /// Errors: an invalid prefix; `<prefix>-updated.pem` being a regular file while
    /// `-current.pem` is absent ([`Error::NotASymlink`]); file-system failures.
    pub fn open(mut config: StoreConfig) -> Result<Self> {
        validate_prefix(&config.prefix)?;
        config.cert_dir =
            std::path::absolute(&config.cert_dir).map_err(io_error("resolve", &config.cert_dir))?;
        let current_link = config.cert_dir.join(names::current_link_name(&config.prefix));
        let updated_link = config.cert_dir.join(names::updated_link_name(&config.prefix));
        let store = Self { config, current_link, updated_link };
        store.recover_interrupted_switch()?;
        fsio::remove_stale_temps(&store.config.cert_dir, &store.config.prefix)?;
        Ok(store)
    }

    /// The configuration, with `cert_dir` made absolute.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// `<cert_dir>/<prefix>-current.pem`: the path a kubeconfig's `client-certificate` and
    /// `client-key` point at (SPEC B-8, B-14).
    pub fn current_path(&self) -> &Path {
        &self.current_link
    }

    /// SPEC FS-1: when `-current.pem` is missing and `-updated.pem` is a symlink, a switch was
    /// interrupted after the old link was removed; finish it.
    fn recover_interrupted_switch(&self) -> Result<()> {
        if fsio::symlink_metadata_if_exists(&self.current_link)?.is_some() {
            return Ok(());
        }
        match fsio::symlink_metadata_if_exists(&self.updated_link)? {
            None => Ok(()),
            Some(m) if m.file_type().is_symlink() => {
                fs::rename(&self.updated_link, &self.current_link)
                    .map_err(io_error("rename", &self.updated_link))?;
                fsio::sync_dir(&self.config.cert_dir)
            }
            Some(_) => Err(Error::NotASymlink { path: self.updated_link.clone() }),
        }
    }

    /// The pair in use, searched in the order of SPEC FS-2: `-current.pem`; the configured
    /// `cert_file` + `key_file` when both exist; `<cert_dir>/<prefix>.crt` +
    /// `<key_dir>/<prefix>.key` when both exist.
    ///
    /// `Ok(None)` when none of these exists (upstream's `NoCertKeyError`: the node must
    /// bootstrap). A candidate that exists but does not load (unreadable, no certificate, no key,
    /// key not matching) is an error, not a reason to try the next one.
    pub fn current(&self) -> Result<Option<StoredPair>> {
        if fsio::exists(&self.current_link)? {
            let file = resolve_link(&self.current_link)?;
            let source = PairSource::Current { link: self.current_link.clone(), file };
            return load(&self.current_link, &self.current_link, source).map(Some);
        }
        if let (Some(cert_file), Some(key_file)) = (&self.config.cert_file, &self.config.key_file)
            && fsio::exists(cert_file)?
            && fsio::exists(key_file)?
        {
            let source =
                PairSource::ConfiguredFiles { cert_file: cert_file.clone(), key_file: key_file.clone() };
            return load(cert_file, key_file, source).map(Some);
        }
        let cert_file = self.config.cert_dir.join(format!("{}.crt", self.config.prefix));
        let key_file = self.config.key_dir.join(format!("{}.key", self.config.prefix));
        if fsio::exists(&cert_file)? && fsio::exists(&key_file)? {
            let source =
                PairSource::DefaultFiles { cert_file: cert_file.clone(), key_file: key_file.clone() };
            return load(&cert_file, &key_file, source).map(Some);
        }
        Ok(None)
    }

    /// Stores a new pair and makes it current; returns it parsed from exactly the bytes written.
    ///
    /// `cert_chain_pem`: the certificate chain, leaf first (other PEM blocks are ignored);
    /// `key_pem`: its private key (the first private-key PEM block is used). `now` names the file.
    ///
    /// Steps: parse and check that the key matches the leaf (nothing is written otherwise);
    /// check that the links are links; write a temporary file (0600) and fsync it; rename it to
    /// the first free name `<prefix>-<stamp>[-N].pem` (never replacing a file) and fsync the
    /// directory; point `-updated.pem` at it (absolute path) and fsync the directory; rename
    /// `-updated.pem` over `-current.pem` and fsync the directory; delete old pair files beyond
    /// [`StoreConfig::retain`]. Unlike upstream, the old `-current.pem` is not removed before the
    /// rename, so there is no moment without a current link. A failure to delete old pairs does
    /// not fail the commit; it is reported in [`StoredPair::warnings`].
    pub fn commit(&self, cert_chain_pem: &[u8], key_pem: &[u8], now: SystemTime) -> Result<StoredPair> {
        let parsed = parse_pair(
            cert_chain_pem,
            "the certificate chain to store",
            key_pem,
            "the private key to store",
        )?;
        self.ensure_link_or_absent(&self.current_link)?;
        self.ensure_link_or_absent(&self.updated_link)?;
        let stamp = names::timestamp(now, &self.config.time_zone)?;

        let dir = &self.config.cert_dir;
        fsio::create_dir_all(dir)?;
        let temp = fsio::write_temp(dir, &self.config.prefix, parsed.combined_pem().as_bytes())?;
        let pair_file = self.persist_under_free_name(temp, &stamp)?;
        fsio::sync_dir(dir)?;

        fsio::remove_if_exists(&self.updated_link)?;
        symlink(&pair_file, &self.updated_link).map_err(io_error("create symlink", &self.updated_link))?;
        fsio::sync_dir(dir)?;
        fs::rename(&self.updated_link, &self.current_link).map_err(io_error("rename", &self.updated_link))?;
        fsio::sync_dir(dir)?;

        let mut warnings = Vec::new();
        self.prune(&pair_file, &mut warnings);
        let source = PairSource::Current { link: self.current_link.clone(), file: pair_file };
        Ok(parsed.stored(source, warnings))
    }

    /// Refuses to go on when `path` exists and is not a symlink (SPEC FS-4).
    fn ensure_link_or_absent(&self, path: &Path) -> Result<()> {
        match fsio::symlink_metadata_if_exists(path)? {
            Some(m) if !m.file_type().is_symlink() => Err(Error::NotASymlink { path: path.to_path_buf() }),
            _ => Ok(()),
        }
    }

    /// Renames `temp` to `<prefix>-<stamp>.pem`, or `-1`, `-2`, … when taken (continuing after
    /// the highest suffix of that second already present); never replaces a file.
    fn persist_under_free_name(&self, mut temp: tempfile::NamedTempFile, stamp: &str) -> Result<PathBuf> {
        let base_name = names::pair_file_name(&self.config.prefix, stamp, 0);
        let existing = self.pair_files_with_keys()?;
        let first = names::parse_pair_file_name(&self.config.prefix, &base_name)
            .map_or(0, |base| base.first_free_suffix(existing.iter().map(|(k, _)| k)));
        for attempt in first..first.saturating_add(MAX_NAME_ATTEMPTS) {
            let name = names::pair_file_name(&self.config.prefix, stamp, attempt);
            let path = self.config.cert_dir.join(name);
            match temp.persist_noclobber(&path) {
                Ok(_) => return Ok(path),
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => temp = e.file,
                Err(e) => return Err(io_error("rename a temporary file to", &path)(e.error)),
            }
        }
        Err(Error::NoFreePairName { base: self.config.cert_dir.join(base_name), tried: MAX_NAME_ATTEMPTS })
    }

    /// Deletes timestamped pair files of this prefix beyond the newest `retain`, never `keep`
    /// (the pair just made current) nor whatever `-current.pem` points at.
    fn prune(&self, keep: &Path, warnings: &mut Vec<Warning>) {
        let dir = &self.config.cert_dir;
        let mut report = |path: &Path, error: Error| {
            warnings.push(Warning::PruneFailed { path: path.to_path_buf(), reason: error.to_string() });
        };
        let candidates = match self.pair_files() {
            Ok(c) => c,
            Err(e) => return report(dir, e),
        };
        let current_target = fs::read_link(&self.current_link).ok();
        let protected: Vec<&std::ffi::OsStr> = [Some(keep), current_target.as_deref()]
            .into_iter()
            .flatten()
            .filter_map(Path::file_name)
            .collect();
        let mut removed_any = false;
        for path in candidates.into_iter().skip(self.config.retain) {
            if path.file_name().is_some_and(|n| protected.contains(&n)) {
                continue;
            }
            match fsio::remove_if_exists(&path) {
                Ok(()) => removed_any = true,
                Err(e) => report(&path, e),
            }
        }
        if removed_any && let Err(e) = fsio::sync_dir(dir) {
            report(dir, e);
        }
    }

    /// The timestamped pair files of this prefix (regular files only), newest first by name.
    pub fn pair_files(&self) -> Result<Vec<PathBuf>> {
        Ok(self.pair_files_with_keys()?.into_iter().map(|(_, path)| path).collect())
    }

    fn pair_files_with_keys(&self) -> Result<Vec<(names::PairFileKey, PathBuf)>> {
        let dir = &self.config.cert_dir;
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list directory", dir)(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("list directory", dir))?;
            let Some(key) =
                entry.file_name().to_str().and_then(|n| names::parse_pair_file_name(&self.config.prefix, n))
            else {
                continue;
            };
            let path = entry.path();
            if entry.file_type().map_err(io_error("stat", &path))?.is_file() {
                found.push((key, path));
            }
        }
        found.sort_by(|a, b| names::newest_first(&a.0, &b.0));
        Ok(found)
    }
}

/// A prefix must be a plain, visible file name component.
fn validate_prefix(prefix: &str) -> Result<()> {
    let reason = if prefix.is_empty() {
        "it is empty"
    } else if prefix.contains('/') || prefix.contains('\0') {
        "it contains '/' or NUL"
    } else if prefix.starts_with('.') {
        "it starts with '.'"
    } else {
        return Ok(());
    };
    Err(Error::InvalidPrefix { prefix: prefix.to_owned(), reason })
}

/// The target of `link` made absolute, or `link` itself when it is not a symlink.
fn resolve_link(link: &Path) -> Result<PathBuf> {
    let meta = fs::symlink_metadata(link).map_err(io_error("stat", link))?;
    if !meta.file_type().is_symlink() {
        return Ok(link.to_path_buf());
    }
    let target = fs::read_link(link).map_err(io_error("read symlink", link))?;
    Ok(match link.parent() {
        Some(dir) if target.is_relative() => dir.join(target),
        _ => target,
    })
}

/// Reads the pair from `cert_file` and `key_file` (read once when they are the same file, so a
/// concurrent link switch cannot mix two pairs) and checks the key file's permissions.
fn load(cert_file: &Path, key_file: &Path, source: PairSource) -> Result<StoredPair> {
    let cert_bytes = fsio::read(cert_file)?;
    let key_bytes = if key_file == cert_file { None } else { Some(fsio::read(key_file)?) };
    let parsed = parse_pair(
        &cert_bytes,
        &cert_file.display().to_string(),
        key_bytes.as_deref().unwrap_or(&cert_bytes),
        &key_file.display().to_string(),
    )?;
    let warnings = fsio::key_file_permission_warning(source.key_file())?.into_iter().collect();
    Ok(parsed.stored(source, warnings))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
