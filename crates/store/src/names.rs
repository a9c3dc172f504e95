//! File names of the kubelet layout (SPEC §1 "File-store prefixes", FS-3).
//!
//! Timestamped pair files are `<prefix>-YYYY-MM-DD-HH-MM-SS.pem` in local time, as the kubelet
//! names them. When that name is taken (a second commit within the same second) we append `-1`,
//! `-2`, … before `.pem`: `<prefix>-YYYY-MM-DD-HH-MM-SS-1.pem`. The kubelet never parses these
//! names (it only follows `-current.pem`), so the suffix costs nothing in compatibility, and the
//! names still sort by time when read by a person.

use std::cmp::Ordering;
use std::time::SystemTime;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::error::{Error, Result};

/// `<prefix>-current.pem`.
pub(crate) fn current_link_name(prefix: &str) -> String {
    format!("{prefix}-current.pem")
}

/// `<prefix>-updated.pem`.
pub(crate) fn updated_link_name(prefix: &str) -> String {
    format!("{prefix}-updated.pem")
}

/// The `YYYY-MM-DD-HH-MM-SS` stamp of `now` in `time_zone`.
pub(crate) fn timestamp(now: SystemTime, time_zone: &TimeZone) -> Result<String> {
    let instant = Timestamp::try_from(now).map_err(|source| Error::Timestamp { now, source })?;
    Ok(instant.to_zoned(time_zone.clone()).strftime("%Y-%m-%d-%H-%M-%S").to_string())
}

/// The pair file name for `stamp`, with `-<attempt>` appended from the second attempt on.
pub(crate) fn pair_file_name(prefix: &str, stamp: &str, attempt: usize) -> String {
    match attempt {
        0 => format!("{prefix}-{stamp}.pem"),
        n => format!("{prefix}-{stamp}-{n}.pem"),
    }
}

/// The sort key of a pair file name: the six stamp fields, then the collision suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PairFileKey {
    stamp: [u32; 6],
    suffix: u64,
}

/// Parses a name made by [`pair_file_name`] (or by a kubelet) for `prefix`; `None` for anything
/// else. Only names for which this returns `Some` are ever deleted by retention.
pub(crate) fn parse_pair_file_name(prefix: &str, name: &str) -> Option<PairFileKey> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?.strip_suffix(".pem")?;
    let fields: Vec<&str> = rest.split('-').collect();
    if !(6..=7).contains(&fields.len()) {
        return None;
    }
    let widths = [4, 2, 2, 2, 2, 2];
    let mut stamp = [0u32; 6];
    for ((slot, field), width) in stamp.iter_mut().zip(&fields).zip(widths) {
        if field.len() != width || !field.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = field.parse().ok()?;
    }
    let suffix = match fields.get(6) {
        None => 0,
        Some(s) if is_canonical_number(s) => s.parse().ok().filter(|n| *n > 0)?,
        Some(_) => return None,
    };
    Some(PairFileKey { stamp, suffix })
}

impl PairFileKey {
    /// The collision suffix after which a new file with `self`'s stamp must go: one past the
    /// highest suffix among `existing` files of the same second, or 0 when there are none.
    /// Starting there (rather than at 0) keeps name order equal to commit order even after
    /// retention deleted the lower suffixes.
    pub(crate) fn first_free_suffix<'a>(&self, existing: impl IntoIterator<Item = &'a PairFileKey>) -> usize {
        existing
            .into_iter()
            .filter(|k| k.stamp == self.stamp)
            .map(|k| usize::try_from(k.suffix).unwrap_or(usize::MAX).saturating_add(1))
            .max()
            .unwrap_or(0)
    }
}

/// Digits only, no leading zero.
fn is_canonical_number(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit())
}

/// Newest first.
pub(crate) fn newest_first(a: &PairFileKey, b: &PairFileKey) -> Ordering {
    b.cmp(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamp_uses_the_given_zone() {
        // 2024-03-05T06:07:08Z
        let now = UNIX_EPOCH + Duration::from_secs(1_709_618_828);
        assert_eq!(timestamp(now, &TimeZone::UTC).unwrap(), "2024-03-05-06-07-08");
        let plus_two = TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(timestamp(now, &plus_two).unwrap(), "2024-03-05-08-07-08");
    }

    #[test]
    fn names_round_trip_and_sort() {
        let a = pair_file_name("kubelet-client", "2024-03-05-06-07-08", 0);
        let b = pair_file_name("kubelet-client", "2024-03-05-06-07-08", 2);
        let c = pair_file_name("kubelet-client", "2024-03-05-06-07-08", 10);
        assert_eq!(a, "kubelet-client-2024-03-05-06-07-08.pem");
        assert_eq!(b, "kubelet-client-2024-03-05-06-07-08-2.pem");
        let ka = parse_pair_file_name("kubelet-client", &a).unwrap();
        let kb = parse_pair_file_name("kubelet-client", &b).unwrap();
        let kc = parse_pair_file_name("kubelet-client", &c).unwrap();
        assert!(ka < kb && kb < kc, "numeric, not lexical, suffix order");
        let next_second =
            parse_pair_file_name("kubelet-client", "kubelet-client-2024-03-05-06-07-09.pem").unwrap();
        assert!(kc < next_second);
    }

    #[test]
    fn only_our_pattern_parses() {
        let rejected = [
            "kubelet-client-current.pem",
            "kubelet-client-updated.pem",
            "kubelet-client.crt",
            "kubelet-client.key.tmp",
            ".kubelet-client.tmp-abc123",
            "kubelet-client-2024-03-05-06-07-08.pem.bak",
            "kubelet-client-2024-03-05-06-07.pem",
            "kubelet-client-2024-3-05-06-07-08.pem",
            "kubelet-client-2024-03-05-06-07-08-0.pem",
            "kubelet-client-2024-03-05-06-07-08-01.pem",
            "kubelet-client-2024-03-05-06-07-08-1-2.pem",
            "kubelet-client-2024-03-05-06-07-0x.pem",
            "kubelet-server-2024-03-05-06-07-08.pem",
        ];
        for name in rejected {
            assert_eq!(parse_pair_file_name("kubelet-client", name), None, "{name}");
        }
        // A shorter prefix must not claim another prefix's files.
        assert_eq!(parse_pair_file_name("kubelet", "kubelet-client-2024-03-05-06-07-08.pem"), None);
    }
}
