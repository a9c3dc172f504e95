//! Small file-system building blocks: durable writes through a temporary file, directory fsync,
//! stale temporary file cleanup and permission checks.
//!
//! Temporary files are named `.<stem>.tmp-XXXXXX` (hidden, random suffix) in the directory of the
//! file they become, so the final `rename` never crosses a file system. `<stem>` is the store's
//! prefix for pair files and the final file name otherwise. Cleanup deletes only regular files
//! whose name starts with `.<stem>.tmp-`.

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::{Result, io_error};
use crate::warning::Warning;

/// Mode of every file we write that holds a private key (pair files, pending key, kubeconfig).
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of directories we create (as upstream: `0755`).
pub(crate) const DIR_MODE: u32 = 0o755;

/// The name prefix of temporary files for `stem`.
pub(crate) fn temp_prefix(stem: &str) -> String {
    format!(".{stem}.tmp-")
}

/// Creates `dir` and its missing parents with mode 0755.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(io_error("create directory", dir))
}

/// Flushes a directory's entries (new names, renames, deletions) to stable storage.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("fsync directory", dir))
}

/// Writes `contents` to a new 0600 temporary file in `dir` and fsyncs it. The caller gives it its
/// final name; if the caller fails or returns early the temporary file is deleted on drop.
pub(crate) fn write_temp(dir: &Path, stem: &str, contents: &[u8]) -> Result<NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix(&temp_prefix(stem))
        .permissions(Permissions::from_mode(PRIVATE_FILE_MODE))
        .tempfile_in(dir)
        .map_err(io_error("create a temporary file in", dir))?;
    let written = file.write_all(contents).and_then(|()| file.as_file().sync_all());
    written.map_err(io_error("write temporary file", file.path()))?;
    Ok(file)
}

/// Writes a file that may hold secrets (a key, a kubeconfig with credentials) crash-safely: it is
/// either the old file or the complete new one, mode 0600, and durable on return (temporary
/// file, fsync, rename, fsync of the directory). A missing parent directory is created (0755).
/// Stale temporary files of an earlier crashed write to the same path are removed first.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let (dir, name) = split_file_path(path)?;
    create_dir_all(&dir)?;
    remove_stale_temps(&dir, &name)?;
    let temp = write_temp(&dir, &name, contents)?;
    temp.persist(path).map_err(|e| io_error("rename a temporary file to", path)(e.error))?;
    sync_dir(&dir)
}

/// Splits a file path into its (non-empty) directory and file name.
pub(crate) fn split_file_path(path: &Path) -> Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            io_error("use", path)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path does not end in a UTF-8 file name",
            ))
        })?
        .to_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Deletes the regular files in `dir` named `.<stem>.tmp-*` (left by a crash during a write).
/// A missing directory has nothing to clean. Returns how many files were deleted.
pub(crate) fn remove_stale_temps(dir: &Path, stem: &str) -> Result<usize> {
    let prefix = temp_prefix(stem);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error("list directory", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_error("list directory", dir))?;
        let is_ours = entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix));
        if !is_ours {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_error("stat", &path))?;
        if file_type.is_file() {
            remove_if_exists(&path)?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Deletes `path`; a file that is already gone is fine.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}

/// `fs::symlink_metadata` with "does not exist" as `None`.
pub(crate) fn symlink_metadata_if_exists(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("stat", path)(e)),
    }
}

/// Whether `path` exists, following symbolic links (a dangling link does not exist). Errors other
/// than "not found" are reported, as upstream does.
pub(crate) fn exists(path: &Path) -> Result<bool> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("stat", path)(e)),
    }
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(io_error("read", path))
}

/// A warning when the file holding a private key can be read or written by group or others.
pub(crate) fn key_file_permission_warning(key_path: &Path) -> Result<Option<Warning>> {
    let mode = fs::metadata(key_path).map_err(io_error("stat", key_path))?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then(|| Warning::KeyFileAccessibleByOthers { path: key_path.to_path_buf(), mode }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_file_is_0600_creates_parents_and_cleans_stale_temps() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/config");
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let stale = dir.path().join("a/b/.config.tmp-XYZ123");
        let unrelated = dir.path().join("a/b/.other.tmp-XYZ123");
        fs::write(&stale, b"half").unwrap();
        fs::write(&unrelated, b"keep").unwrap();

        write_private_file(&target, b"one").unwrap();
        write_private_file(&target, b"two").unwrap();

        assert_eq!(fs::read(&target).unwrap(), b"two");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!stale.exists());
        assert!(unrelated.exists());
        let names: Vec<_> =
            fs::read_dir(dir.path().join("a/b")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "only the target and the unrelated file: {names:?}");
    }

    #[test]
    fn new_directories_are_0755() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("x/y");
        create_dir_all(&nested).unwrap();
        for d in [dir.path().join("x"), nested] {
            assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o755);
        }
    }

    #[test]
    fn permission_warning_only_for_group_or_other_bits() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        fs::write(&key, b"k").unwrap();
        for (mode, warns) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            fs::set_permissions(&key, Permissions::from_mode(mode)).unwrap();
            let warning = key_file_permission_warning(&key).unwrap();
            assert_eq!(warning.is_some(), warns, "mode {mode:o}");
        }
    }
}
