//! Persistent state: one redb file, group-committed write transactions, a global monotonic
//! resourceVersion, and a bounded event log (persisted and mirrored in memory) that feeds
//! watches.
//!
//! Objects are JSON keyed by `<resource.group>/<namespace>/<name>`. Every write bumps the
//! resourceVersion by one and records exactly one event, so the log is contiguous in
//! resourceVersion: a watch from `rv` is served from the log when every event after `rv` is
//! still kept (`rv >= floor`), else it is told `410 Expired`.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};

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

impl Mutation {
    /// The change this makes to an object that `existed` (or not): its event type and object;
    /// `Err` with the answer when nothing changes.
    fn into_change(self, existed: bool) -> Result<(EventType, Value), Value> {
        match self {
            Mutation::Put(v) if existed => Ok((EventType::Modified, v)),
            Mutation::Put(v) => Ok((EventType::Added, v)),
            Mutation::Delete(v) => Ok((EventType::Deleted, v)),
            Mutation::Unchanged(v) => Err(v),
        }
    }
}

/// The stored key of an object.
pub(crate) fn object_key(qualified_resource: &str, namespace: &str, name: &str) -> String {
    format!("{qualified_resource}/{namespace}/{name}")
}

struct EventLog {
    events: VecDeque<Arc<Event>>,
    /// Every event with rv > floor is in `events`.
    floor: u64,
    /// The same events by object name, oldest first: a watch pinned to one name finds its
    /// events without going through everyone else's (a storm's thousands of waiting nodes
    /// would each scan the whole log on every wake).
    by_name: HashMap<String, Named>,
}

/// The kept events of one name, and the rv of its newest dropped event. A name is forgotten
/// when it has no kept event and no watcher; while it has a watcher, `dropped` tells that
/// watcher whether it missed anything, so a waiting node's watch that no write has woken stays
/// valid however far the log has moved on (as upstream's watch cache keeps it).
#[derive(Default)]
struct Named {
    events: VecDeque<Arc<Event>>,
    dropped: u64,
}

impl EventLog {
    fn new(floor: u64) -> Self {
        Self { events: VecDeque::new(), floor, by_name: HashMap::new() }
    }

    fn push(&mut self, event: Arc<Event>) {
        self.by_name.entry(object_name(&event.key).to_owned()).or_default().events.push_back(event.clone());
        self.events.push_back(event);
    }

    /// Drops the oldest event (from both views); its name is forgotten with its last event
    /// unless `watched` says someone follows it.
    fn pop_front(&mut self, watched: impl Fn(&str) -> bool) {
        let Some(oldest) = self.events.pop_front() else { return };
        let name = object_name(&oldest.key);
        if let Some(named) = self.by_name.get_mut(name) {
            named.events.pop_front();
            named.dropped = oldest.rv;
            if named.events.is_empty() && !watched(name) {
                self.by_name.remove(name);
            }
        }
    }

    /// Forgets `name` if it has no kept event (its last watcher is gone).
    fn forget_if_empty(&mut self, name: &str) {
        if self.by_name.get(name).is_some_and(|named| named.events.is_empty()) {
            self.by_name.remove(name);
        }
    }

    /// The events with rv greater than `after` of objects named `name`, or of every object.
    fn after(&self, after: u64, name: Option<&str>) -> Vec<Arc<Event>> {
        let events = match name {
            Some(name) => match self.by_name.get(name) {
                Some(named) => &named.events,
                None => return Vec::new(),
            },
            None => &self.events,
        };
        let start = events.partition_point(|e| e.rv <= after);
        events.range(start..).cloned().collect()
    }
}

/// The decision of one write, run inside the write transaction.
type Decide = Box<dyn FnOnce(Option<Value>, u64) -> ApiResult<Mutation> + Send>;

/// What a write returns.
type WriteResult = ApiResult<(EventOutcome, Value)>;

/// A write waiting for the next commit.
struct QueuedWrite {
    key: String,
    decide: Decide,
    answer: tokio::sync::oneshot::Sender<WriteResult>,
}

/// The store. Cheap to share behind an `Arc`.
pub(crate) struct Store {
    db: Database,
    /// Held by the writer that commits (the leader of a group commit).
    write_lock: Mutex<()>,
    /// Writes waiting for the next commit.
    queue: Mutex<Vec<QueuedWrite>>,
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

/// The answer of a write whose sender was dropped unanswered (never, unless a decision panicked).
pub(crate) fn lost() -> ApiError {
    ApiError::internal("the write was lost before its commit")
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
        let mut log = EventLog::new(floor);
        for entry in events_table.range(floor.saturating_add(1)..).map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            log.push(Arc::new(decode_event(k.value(), v.value())?));
        }
        let (latest, _) = tokio::sync::watch::channel(rv);
        Ok(Self {
            db,
            write_lock: Mutex::new(()),
            queue: Mutex::new(Vec::new()),
            log: RwLock::new(log),
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

    /// Runs one write, blocking until it is durable (committed, fsync'd) and its event
    /// published: [`Store::enqueue`] then [`Store::commit_queued`]. With `dry_run`, everything
    /// runs but nothing is committed or published.
    pub fn mutate<F>(&self, key: &str, dry_run: bool, decide: F) -> WriteResult
    where
        F: FnOnce(Option<Value>, u64) -> ApiResult<Mutation> + Send + 'static,
    {
        if dry_run {
            return self.dry_run(key, decide);
        }
        let answer = self.enqueue(key, decide);
        self.commit_queued();
        answer.blocking_recv().unwrap_or_else(|_| Err(lost()))
    }

    /// Queues one write: `decide` will see the stored object and the resourceVersion the write
    /// gets, and returns what to do. The answer comes once the write is durable and its event
    /// published, after someone calls [`Store::commit_queued`].
    pub fn enqueue<F>(&self, key: &str, decide: F) -> tokio::sync::oneshot::Receiver<WriteResult>
    where
        F: FnOnce(Option<Value>, u64) -> ApiResult<Mutation> + Send + 'static,
    {
        let (answer, result) = tokio::sync::oneshot::channel();
        let write = QueuedWrite { key: key.to_owned(), decide: Box::new(decide), answer };
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(write);
        result
    }

    /// Commits the queued writes (blocking: transactions and fsync), unless another thread is
    /// committing: then that one commits them, and this returns at once.
    ///
    /// Writes are group-committed: while one commit runs, the writes that arrive queue up, and
    /// the committing thread applies all of them in the next transaction, in arrival order, with
    /// one fsync; then it publishes their events in resourceVersion order and answers each. A
    /// storm of N concurrent writes costs a few fsyncs, not N, and one thread, not N: the
    /// writers wait for their answers without holding a thread each.
    pub fn commit_queued(&self) {
        loop {
            let leader = match self.write_lock.try_lock() {
                Ok(leader) => leader,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            loop {
                let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
                if batch.is_empty() {
                    break;
                }
                self.commit(batch);
            }
            drop(leader);
            // A write queued after the last look, while the lock was still held here, was left
            // to this thread by its writer (who found the lock taken).
            if self.queue.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                return;
            }
        }
    }

    /// `decide` against the stored object, in a transaction that is then dropped.
    fn dry_run<F>(&self, key: &str, decide: F) -> WriteResult
    where
        F: FnOnce(Option<Value>, u64) -> ApiResult<Mutation>,
    {
        let _leader = self.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let txn = self.db.begin_write().map_err(|e| internal(storage(e)))?;
        let (current, rv) = read_for_write(&txn, key).map_err(internal)?;
        let existed = current.is_some();
        let answer = match decide(current, rv + 1)?.into_change(existed) {
            Ok((kind, object)) => (EventOutcome::from(kind), object),
            Err(unchanged) => (EventOutcome::Unchanged, unchanged),
        };
        txn.abort().map_err(|e| internal(storage(e)))?;
        Ok(answer)
    }

    /// Applies `batch` in one transaction and answers every write in it. A write whose decision
    /// fails gets its error and changes nothing; if the commit itself fails, every write gets
    /// that error and no event is published.
    fn commit(&self, batch: Vec<QueuedWrite>) {
        if batch.is_empty() {
            return;
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let applied = self.apply(batch, &mut answers, &mut events);
        let committed = applied.and_then(|(txn, floor)| {
            txn.commit().map_err(|e| internal(storage(e)))?;
            Ok(floor)
        });
        match committed {
            Ok(floor) => {
                self.publish(events, floor);
                for (answer, result) in answers {
                    let _ = answer.send(result);
                }
            }
            Err(error) => {
                for (answer, _) in answers {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }

    /// Runs every decision of `batch` in one write transaction (each sees the writes before it),
    /// collecting the answers and events; returns the transaction to commit and the new floor.
    fn apply(
        &self,
        batch: Vec<QueuedWrite>,
        answers: &mut Vec<(tokio::sync::oneshot::Sender<WriteResult>, WriteResult)>,
        events: &mut Vec<Arc<Event>>,
    ) -> ApiResult<(redb::WriteTransaction, Option<u64>)> {
        let txn = self.db.begin_write().map_err(|e| internal(storage(e)))?;
        let mut floor = None;
        for QueuedWrite { key, decide, answer } in batch {
            let (current, rv) = read_for_write(&txn, &key).map_err(internal)?;
            let existed = current.is_some();
            let prev_labels = current.as_ref().and_then(|c| c.pointer("/metadata/labels").cloned());
            let (kind, object) = match decide(current, rv + 1).map(|m| m.into_change(existed)) {
                Err(error) => {
                    answers.push((answer, Err(error)));
                    continue;
                }
                Ok(Err(unchanged)) => {
                    answers.push((answer, Ok((EventOutcome::Unchanged, unchanged))));
                    continue;
                }
                Ok(Ok(change)) => change,
            };
            let prev_labels = if kind == EventType::Modified { prev_labels } else { None };
            let event = Event { rv: rv + 1, kind, key, object, prev_labels };
            floor = Some(self.write_event(&txn, &event).map_err(internal)?);
            answers.push((answer, Ok((EventOutcome::from(kind), event.object.clone()))));
            events.push(Arc::new(event));
        }
        Ok((txn, floor))
    }

    /// Makes committed events visible to watchers, in resourceVersion order.
    fn publish(&self, events: Vec<Arc<Event>>, floor: Option<u64>) {
        let Some(last) = events.last().map(|e| e.rv) else { return };
        {
            let mut log = self.log.write().unwrap_or_else(PoisonError::into_inner);
            for event in &events {
                log.push(event.clone());
            }
            if log.events.len() > self.capacity {
                // Lock order: the log, then the named channels (as in unsubscribe_name).
                let named = self.named.lock().unwrap_or_else(PoisonError::into_inner);
                let watched = |name: &str| named.get(name).is_some_and(|w| w.receiver_count() > 0);
                while log.events.len() > self.capacity {
                    log.pop_front(watched);
                }
            }
            if let Some(floor) = floor {
                log.floor = floor;
            }
        }
        self.latest.send_replace(last);
        let named = self.named.lock().unwrap_or_else(PoisonError::into_inner);
        for event in &events {
            if let Some(watchers) = named.get(object_name(&event.key)) {
                watchers.send_replace(event.rv);
            }
        }
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
        let encoded = serde_json::to_vec(&StoredEvent::from(event)).map_err(Error::Encode)?;
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

    /// The events with rv greater than `after` (only those of objects named `name`, when given:
    /// picked under the lock, so a watcher of one name does not copy the whole log), oldest
    /// first, and the rv of the newest event looked at.
    ///
    /// `following`: the caller has held a receiver of [`Store::subscribe_name`]`(name)` since
    /// an earlier call that answered up to `after`. Then only a dropped event *of that name*
    /// newer than `after` expires it, not the log's floor passing `after`: a node waiting for
    /// its CSR, not woken while thousands of others were served, is still exactly up to date.
    pub fn events_after_named(
        &self,
        after: u64,
        name: Option<&str>,
        following: bool,
    ) -> Result<(Vec<Arc<Event>>, u64), Expired> {
        let Ok(log) = self.log.read() else {
            return Err(Expired { requested: after, oldest: self.resource_version() });
        };
        let expired = match name {
            Some(name) if following => log.by_name.get(name).is_some_and(|named| named.dropped > after),
            _ => after < log.floor,
        };
        if expired {
            return Err(Expired { requested: after, oldest: log.floor + 1 });
        }
        let newest = log.events.back().map_or(after, |e| e.rv.max(after));
        Ok((log.after(after, name), newest))
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
        let mut log = self.log.write().unwrap_or_else(PoisonError::into_inner);
        let mut named = self.named.lock().unwrap_or_else(PoisonError::into_inner);
        drop(rx);
        if named.get(name).is_some_and(|watchers| watchers.receiver_count() == 0) {
            named.remove(name);
            log.forget_if_empty(name);
        }
    }

    /// How many names have watchers (tests).
    #[cfg(test)]
    fn named_channels(&self) -> usize {
        self.named.lock().map_or(0, |named| named.len())
    }
}

/// The stored object at `key` (if any) and the current resourceVersion, inside a write
/// transaction (so earlier writes of the same transaction are seen).
fn read_for_write(txn: &redb::WriteTransaction, key: &str) -> Result<(Option<Value>, u64), Error> {
    let objects = txn.open_table(OBJECTS).map_err(storage)?;
    let current = match objects.get(key).map_err(storage)? {
        Some(v) => Some(decode_object(key, v.value())?),
        None => None,
    };
    let meta = txn.open_table(META).map_err(storage)?;
    let rv = meta.get(META_RV).map_err(storage)?.map_or(0, |g| g.value());
    Ok((current, rv))
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

/// An event as stored (the event table's value; read back by [`decode_event`]), borrowed from
/// the event: encoding it copies nothing.
#[derive(serde::Serialize)]
struct StoredEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    key: &'a str,
    object: &'a Value,
    #[serde(rename = "prevLabels")]
    prev_labels: Option<&'a Value>,
}

impl<'a> From<&'a Event> for StoredEvent<'a> {
    fn from(event: &'a Event) -> Self {
        Self {
            kind: event.kind.as_str(),
            key: &event.key,
            object: &event.object,
            prev_labels: event.prev_labels.as_ref(),
        }
    }
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
    use std::collections::BTreeMap;

    #[test]
    fn stored_events_read_back_as_written() {
        let object = json!({"metadata": {"name": "n", "labels": {"a": "b"}}, "spec": {"x": "\"quoted\""}});
        for prev_labels in [None, Some(json!({"a": "c"}))] {
            let event = Event {
                rv: 7,
                kind: EventType::Modified,
                key: "k/ns/n".into(),
                object: object.clone(),
                prev_labels,
            };
            let read = decode_event(7, &serde_json::to_vec(&StoredEvent::from(&event)).unwrap()).unwrap();
            assert_eq!(
                (read.rv, read.kind, read.key, read.object, read.prev_labels),
                (event.rv, event.kind, event.key, event.object, event.prev_labels)
            );
        }
    }

    impl Store {
        fn events_after(&self, after: u64) -> Result<Vec<Arc<Event>>, Expired> {
            self.events_after_named(after, None, false).map(|(events, _)| events)
        }
    }

    fn put(store: &Store, key: &str, n: i64) -> u64 {
        let (_, v) = store
            .mutate(key, false, move |_, rv| {
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
    fn concurrent_writes_are_group_committed_in_order_and_each_sees_the_ones_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 10_000).unwrap());
        let increment = |cur: Option<Value>, rv: u64| {
            let n = cur.map_or(0, |c| c["n"].as_i64().unwrap());
            Ok(Mutation::Put(json!({"metadata": {"resourceVersion": rv.to_string()}, "n": n + 1})))
        };
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        store.mutate("r//counter", false, increment).unwrap();
                        if i % 5 == 0 {
                            let refused =
                                store.mutate("r//counter", false, |_, _| Err(ApiError::bad_request("no")));
                            assert_eq!(refused.unwrap_err().code, 400, "a failed decision is its own answer");
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(store.get("r//counter").unwrap().unwrap()["n"], 400, "no increment lost");
        let rvs: Vec<u64> = store.events_after(0).unwrap().iter().map(|e| e.rv).collect();
        assert_eq!(rvs, (1..=400).collect::<Vec<_>>(), "one event per write, in order");
        drop(Arc::into_inner(store));
        let reopened = Store::open(dir.path(), 10_000).unwrap();
        assert_eq!(reopened.resource_version(), 400);
        assert_eq!(reopened.get("r//counter").unwrap().unwrap()["n"], 400);
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
        put(&s, "r//y", 5);
        let rvs = |after, name| {
            let (events, newest) = s.events_after_named(after, name, false).unwrap();
            (events.iter().map(|e| e.rv).collect::<Vec<_>>(), newest)
        };
        assert_eq!(rvs(4, Some("x")), (vec![5], 6), "y's event is looked at, not returned");
        assert_eq!(rvs(4, None), (vec![5, 6], 6));
        assert_eq!(rvs(6, Some("x")), (vec![], 6));
        drop(s);
        let s = Store::open(dir.path(), 2).unwrap();
        assert!(s.events_after(3).is_err());
        assert_eq!(s.events_after(4).unwrap().len(), 2);
    }

    #[test]
    fn events_by_name_follow_the_log_as_it_drops_old_events_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 3).unwrap();
        for (i, key) in ["a/ns/x", "b//y", "a/ns/x", "b//y", "c//x", "a/ns/z"].into_iter().enumerate() {
            put(&s, key, i as i64);
        }
        // Kept: rv 4 (y), 5 (x, another type and namespace), 6 (z).
        let named = |s: &Store, after, name| {
            s.events_after_named(after, Some(name), false).unwrap().0.iter().map(|e| e.rv).collect::<Vec<_>>()
        };
        assert_eq!(named(&s, 3, "x"), [5], "x's dropped events are gone from its index too");
        assert_eq!(named(&s, 3, "y"), [4]);
        assert_eq!(named(&s, 4, "y"), Vec::<u64>::new());
        assert_eq!(named(&s, 3, "nobody"), Vec::<u64>::new());
        let sizes = |s: &Store| {
            let log = s.log.read().unwrap();
            log.by_name
                .iter()
                .map(|(name, named)| (name.clone(), named.events.len()))
                .collect::<BTreeMap<_, _>>()
        };
        let kept = BTreeMap::from([("x".to_owned(), 1), ("y".to_owned(), 1), ("z".to_owned(), 1)]);
        assert_eq!(sizes(&s), kept, "the index keeps exactly the log's events");
        put(&s, "b//w", 6);
        put(&s, "b//v", 7);
        put(&s, "b//u", 8);
        assert!(!sizes(&s).contains_key("x"), "names with no kept event are forgotten");
        drop(s);
        let s = Store::open(dir.path(), 3).unwrap();
        assert_eq!((named(&s, 6, "w"), named(&s, 6, "u"), named(&s, 6, "x")), (vec![7], vec![9], vec![]));
    }

    #[test]
    fn a_followed_name_expires_only_when_its_own_event_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 2).unwrap();
        let start = put(&s, "r//other", 0);
        let rx = s.subscribe_name("w");
        assert!(s.events_after_named(start, Some("w"), false).is_ok());
        for i in 1..=5 {
            put(&s, "r//other", i);
        }
        assert!(s.events_after_named(start, Some("w"), false).is_err(), "a new watch this old expires");
        let (events, newest) = s.events_after_named(start, Some("w"), true).unwrap();
        assert!(events.is_empty() && newest == start + 5, "nothing of w was missed");
        let w = put(&s, "r//w", 6);
        for i in 7..=9 {
            put(&s, "r//other", i);
        }
        assert_eq!(
            s.events_after_named(w - 1, Some("w"), true).err(),
            Some(Expired { requested: w - 1, oldest: w + 2 }),
            "w's own event was dropped before it was read"
        );
        assert!(s.events_after_named(w, Some("w"), true).is_ok());
        assert!(s.log.read().unwrap().by_name.contains_key("w"), "kept while followed");
        s.unsubscribe_name("w", rx);
        assert!(!s.log.read().unwrap().by_name.contains_key("w"), "forgotten with its last watcher");
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
