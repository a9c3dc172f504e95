//! Requests verified once per process. In `signer serve` one request's bytes are parsed and
//! their self-signature verified on create, on every update of the object (approval, status),
//! by the approver and by the signer: five P-256 verifications for one CSR. The result of
//! [`parse_csr_pem`] depends on nothing but the bytes, so it is kept, keyed by the exact bytes
//! (not a digest of them), and reused: a request is verified once, whoever asks first.
//! Failures are not kept (they are answered once and the request is gone).
//!
//! The memo is bounded: past [`CAPACITY`] requests the oldest is dropped (first in, first out),
//! and a dropped request is simply parsed again when asked for.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};

use crate::{CsrInfo, Error, parse_csr_pem};

/// Requests kept at most: a bootstrap storm's worth between create and issue (about 1.5 KiB each).
const CAPACITY: usize = 8192;

static MEMO: LazyLock<Mutex<Memo>> = LazyLock::new(|| Mutex::new(Memo::new(CAPACITY)));

/// [`parse_csr_pem`], verified once per process for the same bytes: the first call parses and
/// verifies, later ones with equal bytes get the same result (while it is still kept).
pub fn parse_csr_pem_once(pem: &[u8]) -> Result<Arc<CsrInfo>, Error> {
    if let Some(info) = memo().get(pem) {
        return Ok(info);
    }
    // Parse outside the lock: verifying is the slow part and other requests need not wait.
    let info = Arc::new(parse_csr_pem(pem)?);
    memo().insert(pem, info.clone());
    Ok(info)
}

fn memo() -> std::sync::MutexGuard<'static, Memo> {
    // A panic while holding the lock leaves a consistent map (every change is one call).
    MEMO.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Verified requests by their exact bytes, oldest dropped first past `capacity`.
struct Memo {
    capacity: usize,
    by_bytes: HashMap<Arc<[u8]>, Arc<CsrInfo>>,
    order: VecDeque<Arc<[u8]>>,
}

impl Memo {
    fn new(capacity: usize) -> Self {
        Self { capacity, by_bytes: HashMap::new(), order: VecDeque::new() }
    }

    fn get(&self, pem: &[u8]) -> Option<Arc<CsrInfo>> {
        self.by_bytes.get(pem).cloned()
    }

    fn insert(&mut self, pem: &[u8], info: Arc<CsrInfo>) {
        if self.by_bytes.contains_key(pem) {
            return;
        }
        let key: Arc<[u8]> = Arc::from(pem);
        self.by_bytes.insert(key.clone(), info);
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.by_bytes.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateTemplate, KeyAlgorithm, PrivateKey, build_csr_pem};

    fn request(node: &str) -> String {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        build_csr_pem(&CertificateTemplate::node_client(node), &key).unwrap()
    }

    #[test]
    fn the_same_bytes_give_the_same_verified_request() {
        let pem = request("memo-1");
        let first = parse_csr_pem_once(pem.as_bytes()).unwrap();
        let second = parse_csr_pem_once(pem.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "the second call must reuse the first's result");
        assert_eq!(first.subject.common_name.as_deref(), Some("system:node:memo-1"));
        let other = parse_csr_pem_once(request("memo-2").as_bytes()).unwrap();
        assert_eq!(other.subject.common_name.as_deref(), Some("system:node:memo-2"));
    }

    #[test]
    fn bad_bytes_fail_every_time_and_are_not_kept() {
        let pem = request("memo-bad");
        // One flipped byte inside the base64 body: the signature (or the DER) breaks.
        let mut broken = pem.clone().into_bytes();
        let at = broken.len() / 2;
        broken[at] = if broken[at] == b'A' { b'B' } else { b'A' };
        assert!(parse_csr_pem_once(&broken).is_err());
        assert!(parse_csr_pem_once(&broken).is_err());
        assert!(memo().get(&broken).is_none());
        assert!(parse_csr_pem_once(pem.as_bytes()).is_ok());
    }

    #[test]
    fn the_oldest_is_dropped_past_the_capacity() {
        let mut memo = Memo::new(2);
        let info = Arc::new(parse_csr_pem(request("cap").as_bytes()).unwrap());
        for key in [b"a", b"b", b"c"] {
            memo.insert(key, info.clone());
        }
        memo.insert(b"c", info.clone());
        assert!(memo.get(b"a").is_none());
        assert!(memo.get(b"b").is_some() && memo.get(b"c").is_some());
        assert_eq!(memo.order.len(), 2);
    }
}
