//! Per-object retry delays for controller steps (SPEC §1: 200 ms doubling to 1000 s).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const FIRST: Duration = Duration::from_millis(200);
const LAST: Duration = Duration::from_secs(1000);

/// Consecutive failures per object name.
#[derive(Debug, Default)]
pub(crate) struct ItemBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ItemBackoff {
    /// The delay before retrying `name` after one more failure.
    pub(crate) fn next_delay(&self, name: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(name.to_owned()).or_insert(0);
        let delay = FIRST.saturating_mul(1u32.checked_shl(*count).unwrap_or(u32::MAX)).min(LAST);
        *count = count.saturating_add(1);
        delay
    }

    /// `name` succeeded (or went away): start over next time.
    pub(crate) fn forget(&self, name: &str) {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_200ms_to_1000s_per_object() {
        let backoff = ItemBackoff::default();
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay("a").as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200]);
        assert_eq!(backoff.next_delay("b"), FIRST, "objects are independent");
        for _ in 0..40 {
            backoff.next_delay("a");
        }
        assert_eq!(backoff.next_delay("a"), LAST);
        backoff.forget("a");
        assert_eq!(backoff.next_delay("a"), FIRST);
    }
}
