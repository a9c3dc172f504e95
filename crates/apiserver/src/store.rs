//! Persistent state: one redb file, one write transaction per API write, a global monotonic
//! resourceVersion, and a bounded event log (persisted and mirrored in memory) that feeds
//! watches.
//!
//! Objects are JSON keyed by `<resource.group>/<namespace>/<name>`. Every write bumps the
//! resourceVersion by one and records exactly one event, so the log is contiguous in
//! resourceVersion: a watch from `rv` is served from the log when every event after `rv` is
//! still kept (`rv >= floor`), else it is told `410 Expired`.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;

use crate::Error;
use crate::status::{ApiError, ApiResult};

const OBJECTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("objects");
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const META_RV: &str = "resource_version";
const META_FLOOR: &str = "event_floor";

/// Name of the database file inside the data directory.
pub(crate) const DB_FILE: &str = "kubecert-apiserver.redb";

/// The kind of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "ADDED" => Some(EventType::Added),
            "MODIFIED" => Some(EventType::Modified),
            "DELETED" => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// One recorded change.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub kind: EventType,
    /// The object key (see [`object_key`]).
    pub key: String,
    /// The object after the change (for deletes: the last state, carrying the delete's rv).
    pub object: Value,
    /// For modifications: the labels before the change (watches with label selectors turn
    /// objects moving in or out of the selection into ADDED / DELETED).
    pub prev_labels: Option<Value>,
}

/// What a write closure decided.
pub(crate) enum Mutation {
    /// Store this object (its metadata.resourceVersion must already be the new rv).
    Put(Value),
    /// Delete the object; the value is the last state with the new rv, for the event.
    Delete(Value),
    /// Nothing changes; answer with this object.
    Unchanged(Value),
}

/// The stored key of an object.
pub(crate) fn object_key(qualified_resource: &str, namespace: &str, name: &str) -> String {
    format!("{qualified_resource}/{namespace}/{name}")
}

struct EventLog {
    events: VecDeque<Arc<Event>>,
    /// Every event with rv > floor is in `events`.
    floor: u64,
}

/// The store. Cheap to share behind an `Arc`.
pub(crate) struct Store {
    db: Database,
    write_lock: Mutex<()>,
    log: RwLock<EventLog>,
    capacity: usize,
    latest: tokio::sync::watch::Sender<u64>,
    /// Channels of watches that follow one object name (`fieldSelector=metadata.name=…`, what
    /// every waiting node does), told only of writes to objects of that name: a storm of N
    /// nodes each waiting for its own CSR costs N wakeups per write otherwise.
    named: Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>,
}

/// A consistent read of many objects.
pub(crate) struct Listing {
    pub items: Vec<(String, Value)>,
    pub rv: u64,
    /// The key to continue after, when the listing was cut by a limit.
    pub next: Option<String>,
    /// How many matching keys follow `next` (only when cut).
    pub remaining: u64,
}

/// Why events after a resourceVersion cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expired {
    pub requested: u64,
    pub oldest: u64,
}

fn storage(e: impl Into<redb::Error>) -> Error {
    Error::Storage(e.into())
}

fn internal(e: Error) -> ApiError {
    tracing::error!(error = %e, "storage failure");
    ApiError::internal(e.to_string())
}

impl Store {
    /// Opens (or creates) the database in `data_dir`, keeping the last `capacity` events.
    pub fn open(data_dir: &Path, capacity: usize) -> Result<Self, Error> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| Error::Io { path: data_dir.to_path_buf(), source })?;
        let db = Database::create(data_dir.join(DB_FILE)).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(OBJECTS).map_err(storage)?;
            txn.open_table(EVENTS).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;

        let read = db.begin_read().map_err(storage)?;
        let meta = read.open_table(META).map_err(storage)?;
        let rv = meta.get(META_RV).map_err(storage)?.map_or(0, |g| g.value());
        let floor = meta.get(META_FLOOR).map_err(storage)?.map_or(0, |g| g.value());
        let events_table = read.open_table(EVENTS).map_err(storage)?;
        let mut events = VecDeque::new();
        for entry in events_table.range(floor.saturating_add(1)..).map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            events.push_back(Arc::new(decode_event(k.value(), v.value())?));
        }
        let (latest, _) = tokio::sync::watch::channel(rv);
        Ok(Self {
            db,
            write_lock: Mutex::new(()),
            log: RwLock::new(EventLog { events, floor }),
            capacity: capacity.max(1),
            latest,
            named: Mutex::new(HashMap::new()),
        })
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        *self.latest.borrow()
    }

    /// Reads one object.
    pub fn get(&self, key: &str) -> ApiResult<Option<Value>> {
        self.get_inner(key).map_err(internal)
    }

    fn get_inner(&self, key: &str) -> Result<Option<Value>, Error> {
        let read = self.db.begin_read().map_err(storage)?;
        let table = read.open_table(OBJECTS).map_err(storage)?;
        match table.get(key).map_err(storage)? {
            Some(v) => Ok(Some(decode_object(key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Lists objects whose key starts with `prefix` (and, given `name`, whose name is `name`:
    /// decided from the key, so the other objects are not even decoded), in key order, starting
    /// after `after`, keeping those `keep` accepts, at most `limit` of them (0 = all).
    pub fn list(
        &self,
        prefix: &str,
        name: Option<&str>,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&Value) -> bool,
    ) -> ApiResult<Listing> {
        self.list_inner(prefix, name, after, limit, keep).map_err(internal)
    }

    fn list_inner(
        &self,
        prefix: &str,
        name: Option<&str>,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&Value) -> bool,
    ) -> Result<Listing, Error> {
        let read = self.db.begin_read().map_err(storage)?;
        let rv =
            read.open_table(META).map_err(storage)?.get(META_RV).map_err(storage)?.map_or(0, |g| g.value());
        let table = read.open_table(OBJECTS).map_err(storage)?;
        let start = after.unwrap_or(prefix);
        let mut listing = Listing { items: Vec::new(), rv, next: None, remaining: 0 };
        // One namespace (or the cluster scope, `<q>//`) and one name: exactly one key to read.
        let exact = name.filter(|_| prefix.matches('/').count() == 2).map(|name| format!("{prefix}{name}"));
        let entries = match &exact {
            Some(key) => table.range(key.as_str()..=key.as_str()),
            None => table.range(start..),
        };
        for entry in entries.map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if Some(key) == after || name.is_some_and(|name| object_name(key) != name) {
                continue;
            }
            let object = decode_object(key, v.value())?;
            if !keep(&object) {
                continue;
            }
            if limit > 0 && listing.items.len() == limit {
                listing.remaining += 1;
                continue;
            }
            listing.items.push((key.to_string(), object));
        }
        if listing.remaining > 0 {
            listing.next = listing.items.last().map(|(k, _)| k.clone());
        }
        Ok(listing)
    }

    /// Runs one write: `decide` sees the stored object and the resourceVersion the write will
    /// get, and returns what to do. Writes are serialized; the event is published before the
    /// next write starts, so watchers see events in resourceVersion order.
    /// With `dry_run`, everything runs but nothing is committed or published.
    pub fn mutate<F>(&self, key: &str, dry_run: bool, decide: F) -> ApiResult<(EventOutcome, Value)>
    where
        F: FnOnce(Option<Value>, u64) -> ApiResult<Mutation>,
    {
        let _serial = self.write_lock.lock().map_err(|_| ApiError::internal("store write lock poisoned"))?;
        let txn = self.db.begin_write().map_err(|e| internal(storage(e)))?;
        let (current, rv) = {
            let objects = txn.open_table(OBJECTS).map_err(|e| internal(storage(e)))?;
            let current = match objects.get(key).map_err(|e| internal(storage(e)))? {
                Some(v) => Some(decode_object(key, v.value()).map_err(internal)?),
                None => None,
            };
            let meta = txn.open_table(META).map_err(|e| internal(storage(e)))?;
            let rv = meta.get(META_RV).map_err(|e| internal(storage(e)))?.map_or(0, |g| g.value());
            (current, rv)
        };
        let existed = current.is_some();
        let prev_labels = current.as_ref().and_then(|c| c.pointer("/metadata/labels").cloned());
        let next_rv = rv + 1;
        let (kind, object) = match decide(current, next_rv)? {
            Mutation::Unchanged(v) => {
                txn.abort().map_err(|e| internal(storage(e)))?;
                return Ok((EventOutcome::Unchanged, v));
            }
            Mutation::Put(v) if existed => (EventType::Modified, v),
            Mutation::Put(v) => (EventType::Added, v),
            Mutation::Delete(v) => (EventType::Deleted, v),
        };
        if dry_run {
            txn.abort().map_err(|e| internal(storage(e)))?;
            return Ok((EventOutcome::from(kind), object));
        }
        let prev_labels = if kind == EventType::Modified { prev_labels } else { None };
        let event = Event { rv: next_rv, kind, key: key.to_string(), object, prev_labels };
        let new_floor = self.write_event(&txn, &event).map_err(internal)?;
        txn.commit().map_err(|e| internal(storage(e)))?;

        let event = Arc::new(event);
        {
            let mut log = self.log.write().map_err(|_| ApiError::internal("event log lock poisoned"))?;
            log.events.push_back(event.clone());
            while log.events.len() > self.capacity {
                log.events.pop_front();
            }
            log.floor = new_floor;
        }
        self.latest.send_replace(next_rv);
        if let Ok(named) = self.named.lock()
            && let Some(watchers) = named.get(object_name(key))
        {
            watchers.send_replace(next_rv);
        }
        Ok((EventOutcome::from(kind), event.object.clone()))
    }

    /// Writes the object change, the rv, the event and trims old events; returns the new floor.
    fn write_event(&self, txn: &redb::WriteTransaction, event: &Event) -> Result<u64, Error> {
        let mut objects = txn.open_table(OBJECTS).map_err(storage)?;
        match event.kind {
            EventType::Deleted => {
                objects.remove(event.key.as_str()).map_err(storage)?;
            }
            _ => {
                let bytes = serde_json::to_vec(&event.object).map_err(Error::Encode)?;
                objects.insert(event.key.as_str(), bytes.as_slice()).map_err(storage)?;
            }
        }
        let mut meta = txn.open_table(META).map_err(storage)?;
        meta.insert(META_RV, event.rv).map_err(storage)?;
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let encoded = serde_json::to_vec(&serde_json::json!({
            "type": event.kind.as_str(),
            "key": event.key,
            "object": event.object,
            "prevLabels": event.prev_labels,
        }))
        .map_err(Error::Encode)?;
        events.insert(event.rv, encoded.as_slice()).map_err(storage)?;
        let mut floor = meta.get(META_FLOOR).map_err(storage)?.map_or(0, |g| g.value());
        let keep = self.capacity as u64;
        if event.rv.saturating_sub(floor) > keep {
            let new_floor = event.rv - keep;
            for old in floor + 1..=new_floor {
                events.remove(old).map_err(storage)?;
            }
            floor = new_floor;
            meta.insert(META_FLOOR, floor).map_err(storage)?;
        }
        Ok(floor)
    }

    /// Every event with rv greater than `after`, oldest first.
    pub fn events_after(&self, after: u64) -> Result<Vec<Arc<Event>>, Expired> {
        let Ok(log) = self.log.read() else {
            return Err(Expired { requested: after, oldest: self.resource_version() });
        };
        if after < log.floor {
            return Err(Expired { requested: after, oldest: log.floor + 1 });
        }
        let start = log.events.partition_point(|e| e.rv <= after);
        Ok(log.events.iter().skip(start).cloned().collect())
    }

    /// A receiver that changes whenever a write is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// A receiver that changes whenever an object named `name` (of any type or namespace) is
    /// written. Call [`Store::unsubscribe_name`] when dropping it.
    pub fn subscribe_name(&self, name: &str) -> tokio::sync::watch::Receiver<u64> {
        let mut named = self.named.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match named.get(name) {
            Some(watchers) => watchers.subscribe(),
            None => {
                let (watchers, rx) = tokio::sync::watch::channel(self.resource_version());
                named.insert(name.to_owned(), watchers);
                rx
            }
        }
    }

    /// Forgets the channel of `name` once its last receiver (`rx`, consumed here) is gone.
    pub fn unsubscribe_name(&self, name: &str, rx: tokio::sync::watch::Receiver<u64>) {
        let mut named = self.named.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(rx);
        if named.get(name).is_some_and(|watchers| watchers.receiver_count() == 0) {
            named.remove(name);
        }
    }

    /// How many names have watchers (tests).
    #[cfg(test)]
    fn named_channels(&self) -> usize {
        self.named.lock().map_or(0, |named| named.len())
    }
}

/// The name part of a storage key (`<resource.group>/<namespace>/<name>`).
fn object_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// What a [`Store::mutate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventOutcome {
    Created,
    Updated,
    Deleted,
    Unchanged,
}

impl From<EventType> for EventOutcome {
    fn from(kind: EventType) -> Self {
        match kind {
            EventType::Added => EventOutcome::Created,
            EventType::Modified => EventOutcome::Updated,
            EventType::Deleted => EventOutcome::Deleted,
        }
    }
}

fn decode_object(key: &str, bytes: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Corrupt { what: format!("object {key}"), source })
}

fn decode_event(rv: u64, bytes: &[u8]) -> Result<Event, Error> {
    let corrupt = |detail: &str| Error::Corrupt {
        what: format!("event {rv}"),
        source: serde::de::Error::custom(detail),
    };
    let mut v: Value = serde_json::from_slice(bytes)
        .map_err(|source| Error::Corrupt { what: format!("event {rv}"), source })?;
    let kind = v["type"].as_str().and_then(EventType::parse).ok_or_else(|| corrupt("unknown event type"))?;
    let key = v["key"].as_str().ok_or_else(|| corrupt("missing key"))?.to_string();
    let prev_labels = Some(v["prevLabels"].take()).filter(|l| !l.is_null());
    Ok(Event { rv, kind, key, object: v["object"].take(), prev_labels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(store: &Store, key: &str, n: i64) -> u64 {
        let (_, v) = store
            .mutate(key, false, |_, rv| {
                Ok(Mutation::Put(json!({"metadata": {"resourceVersion": rv.to_string()}, "n": n})))
            })
            .unwrap();
        v["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
    }

    #[test]
    fn rv_is_monotonic_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), 10).unwrap();
            assert_eq!(put(&s, "r/ns/a", 1), 1);
            assert_eq!(put(&s, "r/ns/b", 2), 2);
            assert_eq!(put(&s, "r/ns/a", 3), 3);
        }
        let s = Store::open(dir.path(), 10).unwrap();
        assert_eq!(s.resource_version(), 3);
        assert_eq!(s.get("r/ns/a").unwrap().unwrap()["n"], 3);
        let events = s.events_after(1).unwrap();
        assert_eq!(events.iter().map(|e| e.rv).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(events[1].kind, EventType::Modified);
    }

    #[test]
    fn named_watchers_hear_only_of_their_name_and_are_forgotten_after() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 10).unwrap();
        let mut a = s.subscribe_name("a");
        let mut a2 = s.subscribe_name("a");
        let mut all = s.subscribe();
        put(&s, "r/ns/b", 1);
        assert!(!a.has_changed().unwrap(), "a write to b does not wake a's watchers");
        assert!(all.has_changed().unwrap());
        all.borrow_and_update();
        put(&s, "r/ns/a", 2);
        assert!(a.has_changed().unwrap() && a2.has_changed().unwrap() && all.has_changed().unwrap());
        assert_eq!(*a.borrow_and_update(), 2);
        assert_eq!(s.named_channels(), 1);
        s.unsubscribe_name("a", a);
        assert_eq!(s.named_channels(), 1, "a2 still listens");
        a2.borrow_and_update();
        s.unsubscribe_name("a", a2);
        assert_eq!(s.named_channels(), 0);
    }

    #[test]
    fn old_events_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 2).unwrap();
        for i in 0..5 {
            put(&s, "r//x", i);
        }
        assert_eq!(s.events_after(1).err(), Some(Expired { requested: 1, oldest: 4 }));
        assert_eq!(s.events_after(3).unwrap().len(), 2);
        drop(s);
        let s = Store::open(dir.path(), 2).unwrap();
        assert!(s.events_after(2).is_err());
        assert_eq!(s.events_after(3).unwrap().len(), 2);
    }

    #[test]
    fn list_pages_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 10).unwrap();
        for name in ["c", "a", "b"] {
            put(&s, &format!("r//{name}"), 0);
        }
        put(&s, "q//z", 0);
        let page = s.list("r/", None, None, 2, &|_| true).unwrap();
        let keys: Vec<_> = page.items.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["r//a", "r//b"]);
        assert_eq!(page.remaining, 1);
        let rest = s.list("r/", None, page.next.as_deref(), 2, &|_| true).unwrap();
        assert_eq!(rest.items.len(), 1);
        assert!(rest.next.is_none());
        let named = s.list("r/", Some("b"), None, 0, &|_| true).unwrap();
        assert_eq!(named.items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["r//b"]);
        let exact = s.list("r//", Some("c"), None, 0, &|_| true).unwrap();
        assert_eq!(exact.items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["r//c"]);
        assert!(s.list("r//", Some("zz"), None, 0, &|_| true).unwrap().items.is_empty());
    }

    #[test]
    fn unchanged_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 10).unwrap();
        put(&s, "r//a", 1);
        let (o, _) = s.mutate("r//a", false, |cur, _| Ok(Mutation::Unchanged(cur.unwrap()))).unwrap();
        assert_eq!(o, EventOutcome::Unchanged);
        assert_eq!(s.resource_version(), 1);
    }
}
