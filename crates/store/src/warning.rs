//! Things worth a log line that do not stop the operation.

use std::fmt;
use std::path::PathBuf;

/// A problem found while loading or writing that did not make the operation fail.
///
/// The store does not log: it returns warnings with the result ([`crate::StoredPair::warnings`],
/// [`crate::PendingKey::warnings`]) and the caller logs them (their `Display` is a complete
/// sentence that names the file and never contains key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The file holding a private key can be read or written by its group or by others.
    KeyFileAccessibleByOthers {
        /// The key file (for a combined pair file, the pair file itself).
        path: PathBuf,
        /// Its permission bits, e.g. `0o644`.
        mode: u32,
    },
    /// The pending bootstrap key file was empty or did not parse, so a fresh key replaced it.
    PendingKeyReplaced {
        /// The pending key file.
        path: PathBuf,
        /// Why the old content was unusable.
        reason: String,
    },
    /// After a successful commit, deleting an old pair file failed; the commit itself stands.
    PruneFailed {
        /// The file that could not be deleted (or the directory that could not be listed).
        path: PathBuf,
        /// The error, as text.
        reason: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyFileAccessibleByOthers { path, mode } => write!(
                f,
                "private key file {} has mode {mode:04o}: group or others can access it (want 0600)",
                path.display()
            ),
            Self::PendingKeyReplaced { path, reason } => write!(
                f,
                "pending bootstrap key {} was unusable ({reason}); replaced it with a fresh key",
                path.display()
            ),
            Self::PruneFailed { path, reason } => {
                write!(f, "could not delete old certificate pair {}: {reason}", path.display())
            }
        }
    }
}
