//! Proof (issue 5, point 6): a kube watcher running over `kube_client` survives client-identity
//! rotation: its watch is cut after the grace period, re-established with the new certificate from
//! the last resourceVersion, and no event is lost.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::watcher;
use kubecert_reload::{LiveIdentity, kube_client};
use support::{ClientAuth, EchoServer, Handler, TestBody, TestCa, install_provider};
use tokio::sync::watch;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(10);
const OBJECTS: u64 = 120;

/// ConfigMaps `cm-1`, `cm-2`, … in namespace `default`; `cm-N` has resourceVersion N.
#[derive(Clone)]
struct FakeApi {
    latest: watch::Sender<u64>,
}

impl FakeApi {
    fn object(rv: u64) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{rv}"), "namespace": "default", "resourceVersion": rv.to_string()},
        })
    }

    fn handler(&self) -> Handler {
        let api = self.clone();
        Arc::new(move |request: Request<Incoming>, _cn| {
            let api = api.clone();
            Box::pin(async move { api.respond(&request) })
        })
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<TestBody> {
        let query = request.uri().query().unwrap_or_default();
        let param = |name: &str| {
            query.split('&').find_map(|pair| pair.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        let latest = *self.latest.borrow();
        if param("watch") != Some("true") {
            let list = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMapList",
                "metadata": {"resourceVersion": latest.to_string()},
                "items": (1..=latest).map(Self::object).collect::<Vec<_>>(),
            });
            return Response::new(TestBody::Once(Full::new(Bytes::from(list.to_string()))));
        }
        let mut from: u64 = param("resourceVersion").and_then(|rv| rv.parse().ok()).unwrap_or(0);
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let mut updates = self.latest.subscribe();
        tokio::spawn(async move {
            loop {
                let latest = *updates.borrow_and_update();
                for rv in from + 1..=latest {
                    let event = serde_json::json!({"type": "ADDED", "object": Self::object(rv)});
                    if sender.send(Bytes::from(format!("{event}\n"))).await.is_err() {
                        return;
                    }
                }
                from = latest;
                if updates.changed().await.is_err() {
                    return;
                }
            }
        });
        Response::new(TestBody::Channel(receiver))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_resumes_with_the_new_identity_without_losing_events() {
    install_provider();
    let ca = TestCa::new();
    let api = FakeApi { latest: watch::channel(0).0 };
    let server_identity = LiveIdentity::new(ca.identity("server"));
    let server =
        EchoServer::start_with(&server_identity, ClientAuth::Required(ca.roots()), api.handler()).await;
    let mut config = kube::Config::new(server.url("").parse().unwrap());
    config.root_cert = Some(vec![ca.der()]);
    let live = LiveIdentity::new(ca.identity("client-0"));
    let grace = Duration::from_millis(300);
    let client = kube_client(&config, live.clone(), grace).unwrap();

    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let watching = tokio::spawn({
        let seen = Arc::clone(&seen);
        let events = watcher(Api::<ConfigMap>::default_namespaced(client), watcher::Config::default());
        async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                // Errors (the cut watch) are skipped: the watcher re-watches by itself.
                if let Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) = event {
                    seen.lock().unwrap().insert(cm.metadata.name.unwrap_or_default());
                }
            }
        }
    });

    // Objects keep appearing every 10 ms; the identity is swapped a third of the way through.
    let mut swapped_at = None;
    for rv in 1..=OBJECTS {
        api.latest.send_replace(rv);
        tokio::time::sleep(Duration::from_millis(10)).await;
        if rv == OBJECTS / 3 {
            swapped_at = Some(Instant::now());
            live.swap(ca.identity("client-1"));
        }
    }
    let swapped_at = swapped_at.unwrap();

    let deadline = Instant::now() + LIMIT;
    while seen.lock().unwrap().len() < OBJECTS as usize {
        assert!(Instant::now() < deadline, "watcher saw {} of {OBJECTS} objects", seen.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    watching.abort();
    let expected: BTreeSet<_> = (1..=OBJECTS).map(|rv| format!("cm-{rv}")).collect();
    assert_eq!(*seen.lock().unwrap(), expected, "events lost");

    // The first watch ran with the old identity; it was re-established with the new one, from the
    // resourceVersion reached, without a second list.
    let requests = server.requests();
    let resource_version = |target: &str| -> u64 {
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
        query
            .split('&')
            .find_map(|p| p.strip_prefix("resourceVersion="))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let (lists, watches): (Vec<_>, Vec<_>) =
        requests.iter().partition(|(_, target)| !target.contains("watch=true"));
    assert_eq!(lists.len(), 1, "{requests:?}");
    assert_eq!(watches.first().and_then(|(cn, _)| cn.as_deref()), Some("client-0"), "{watches:?}");
    let (_, resumed) =
        watches.iter().find(|(cn, _)| cn.as_deref() == Some("client-1")).expect("no watch with client-1");
    assert!(resource_version(resumed) > OBJECTS / 3, "{resumed}");
    let rewatched_at = server.wait_for_client("client-1", LIMIT).await;
    eprintln!(
        "FIGURE (debug build) watch: swap -> first request with the new identity {:.2?}, watches: {:?}",
        rewatched_at.saturating_duration_since(swapped_at),
        watches.iter().map(|(cn, _)| cn.clone().unwrap_or_default()).collect::<Vec<_>>()
    );
}
