//! Watch streams (SPEC W-11, W-12, KC-11): newline-delimited JSON events from the store's
//! event log. A watch is a small state machine polled by hyper — no task or thread of its
//! own — so open watches cost memory only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{StatusCode, header};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::handlers::AppState;
use crate::resources::ResourceType;
use crate::selector::Selector;
use crate::status::ApiError;
use crate::store::{Event, EventType, Store};
use crate::table::{self, IncludeObject};

struct Watch {
    store: Arc<Store>,
    /// Changes on every write, or only on writes to `name` when the selector pins one.
    rx: tokio::sync::watch::Receiver<u64>,
    name: Option<String>,
    rt: &'static ResourceType,
    prefix: String,
    selector: Selector,
    as_table: Option<IncludeObject>,
    /// Every event up to here has been looked at.
    cursor: u64,
    /// The store has answered up to `cursor` while `rx` followed `name` (see
    /// [`Store::events_after_named`]).
    following: bool,
    initial: Option<Vec<Value>>,
    /// `sendInitialEvents=true`: end the initial events with the marking BOOKMARK.
    initial_events_end: bool,
    deadline: Instant,
    bookmarks: Option<(Duration, Instant)>,
    done: bool,
    /// A Table event went out: later ones leave `columnDefinitions` null, as upstream's do.
    columns_sent: bool,
}

fn line(kind: &str, object: Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

impl Watch {
    fn render(&mut self, kind: &str, object: &Value, out: &mut Vec<u8>) {
        let object = self.rt.present(object.clone());
        let object = match self.as_table {
            Some(include) => {
                let meta = json!({"resourceVersion": crate::objects::meta_str(&object, "resourceVersion")});
                let mut table =
                    table::table(self.rt, std::slice::from_ref(&object), meta, SystemTime::now(), include);
                if std::mem::replace(&mut self.columns_sent, true) {
                    table["columnDefinitions"] = Value::Null;
                }
                table
            }
            None => object,
        };
        out.extend(line(kind, object));
    }

    /// A BOOKMARK object at the cursor; `initial_end` marks the end of the initial events of a
    /// `sendInitialEvents` watch.
    fn bookmark(&self, initial_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": self.cursor.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": metadata})
    }

    /// The event type this watcher sees for `event`, if any.
    fn classify(&self, event: &Event) -> Option<&'static str> {
        if !event.key.starts_with(&self.prefix) {
            return None;
        }
        let now = self.selector.matches(&event.object);
        if event.kind != EventType::Modified || !self.selector.has_labels() {
            return now.then(|| event.kind.as_str());
        }
        let before = self.selector.matches_with_labels(&event.object, event.prev_labels.as_ref());
        match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        }
    }

    /// The next chunk of output, or `None` when the watch ends.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            if let Some(initial) = self.initial.take() {
                let mut out = Vec::new();
                for obj in &initial {
                    self.render("ADDED", obj, &mut out);
                }
                if self.initial_events_end {
                    out.extend(line("BOOKMARK", self.bookmark(true)));
                }
                if !out.is_empty() {
                    return Some(out.into());
                }
            }
            self.rx.borrow_and_update();
            match self.store.events_after_named(self.cursor, self.name.as_deref(), self.following) {
                Err(expired) => {
                    self.done = true;
                    let status = ApiError::expired(format!(
                        "too old resource version: {} ({})",
                        expired.requested, expired.oldest
                    ));
                    return Some(line("ERROR", status.to_status()).into());
                }
                Ok((events, newest)) if newest > self.cursor => {
                    self.following = true;
                    let mut out = Vec::new();
                    for event in &events {
                        if let Some(kind) = self.classify(event) {
                            self.render(kind, &event.object, &mut out);
                        }
                    }
                    self.cursor = newest;
                    if !out.is_empty() {
                        return Some(out.into());
                    }
                    continue;
                }
                Ok(_) => self.following = true,
            }
            let bookmark_at = self.bookmarks.map(|(_, at)| at);
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        self.done = true;
                    }
                }
                () = tokio::time::sleep_until(self.deadline) => {
                    self.done = true;
                }
                () = sleep_until_opt(bookmark_at) => {
                    if let Some((every, at)) = self.bookmarks.as_mut() {
                        *at += *every;
                    }
                    return Some(line("BOOKMARK", self.bookmark(false)).into());
                }
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            // The receiver must be gone before the store looks whether anyone still listens:
            // hand it over, leaving a (cheap) receiver of every write in its place.
            let rx = std::mem::replace(&mut self.rx, self.store.subscribe());
            self.store.unsubscribe_name(&name, rx);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts a watch response.
pub(crate) fn serve(
    state: AppState,
    rt: &'static ResourceType,
    prefix: String,
    selector: Selector,
    query: &HashMap<String, String>,
    as_table: Option<IncludeObject>,
) -> Response {
    let store = state.store.clone();
    let name = selector.pinned_name().map(str::to_owned);
    let rx = match &name {
        Some(name) => store.subscribe_name(name),
        None => store.subscribe(),
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(state.limits.default_watch_timeout, Duration::from_secs);
    let bookmarks = matches!(query.get("allowWatchBookmarks").map(String::as_str), Some("true" | "1"))
        .then(|| (state.limits.bookmark_interval, Instant::now() + state.limits.bookmark_interval));
    let requested = query.get("resourceVersion").map(String::as_str).unwrap_or_default();
    // Streaming lists: the current state first (never older than any requested version),
    // then a BOOKMARK annotated `k8s.io/initial-events-end`.
    let initial_events_end = matches!(query.get("sendInitialEvents").map(String::as_str), Some("true"));
    if initial_events_end && bookmarks.is_none() {
        return axum::response::IntoResponse::into_response(ApiError::bad_request(
            "sendInitialEvents requires allowWatchBookmarks=true",
        ));
    }
    let (cursor, initial) = match requested.parse::<u64>() {
        Ok(rv) if rv > 0 && !initial_events_end => (rv, None),
        _ => match store.list(&prefix, selector.pinned_name(), None, 0, &|o| selector.matches(o)) {
            Ok(listing) => (listing.rv, Some(listing.items.into_iter().map(|(_, v)| v).collect())),
            Err(e) => return axum::response::IntoResponse::into_response(e),
        },
    };
    let watch = Watch {
        store,
        rx,
        name,
        rt,
        prefix,
        selector,
        as_table,
        cursor,
        following: false,
        initial,
        initial_events_end,
        deadline: Instant::now() + timeout,
        bookmarks,
        done: false,
        columns_sent: false,
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        w.next_chunk().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), w))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| axum::response::IntoResponse::into_response(ApiError::internal(e.to_string())))
}
