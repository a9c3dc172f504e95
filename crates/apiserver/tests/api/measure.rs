//! Measurements, not assertions (run on demand):
//! `cargo test -p kubecert-apiserver --test api measure -- --ignored --nocapture`.
//! The crate is built unoptimised (dev profile) with dependencies at opt-level 2.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest as Csr;
use kube::api::{Api, PostParams, WatchParams};

use crate::common::{self, Credential, Pki};
use crate::durability::{spawn_child, write_child_pki};

fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn rate<F, Fut>(label: &str, total: usize, concurrency: usize, op: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c..total).step_by(concurrency) {
                op(i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "MEASURE {label}: {total} requests, concurrency {concurrency}, {secs:.2} s, {:.0} req/s",
        total as f64 / secs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run on demand"]
async fn measure_throughput_and_watch_memory() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    write_child_pki(&pki, dir.path());
    let (mut child, addr) = spawn_child(dir.path()).await;
    let pid = child.id().unwrap();
    let admin = pki.admin();
    let client = common::client(addr, &pki, Credential::Cert(&admin)).await;
    let csrs: Api<Csr> = Api::all(client.clone());
    let pems: Vec<String> =
        (0..64).map(|i| common::csr_pem(&format!("system:node:n{i}"), &["system:nodes"])).collect();

    for concurrency in [1, 16] {
        let api = csrs.clone();
        let pems = pems.clone();
        rate(
            &format!("CSR create (durable: one fsync per group commit) c{concurrency}"),
            400,
            concurrency,
            move |i| {
                let api = api.clone();
                let mut obj = common::node_csr(Some(&format!("m{concurrency}-{i}")), "n");
                obj["spec"]["request"] = serde_json::json!(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    &pems[i % 64]
                ));
                async move {
                    let obj: Csr = serde_json::from_value(obj).unwrap();
                    api.create(&PostParams::default(), &obj).await.unwrap();
                }
            },
        )
        .await;
    }
    for concurrency in [1, 16] {
        let api = csrs.clone();
        rate(&format!("CSR get c{concurrency}"), 4000, concurrency, move |i| {
            let api = api.clone();
            async move {
                api.get(&format!("m16-{}", i % 400)).await.unwrap();
            }
        })
        .await;
    }

    // Memory per open watch, measured on the server process (each kube-rs watch is its own
    // HTTP/1.1 + TLS connection, so this includes the connection).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = proc_status(pid, "VmRSS:");
    let threads_before = proc_status(pid, "Threads:");
    const WATCHES: usize = 1000;
    let mut streams = Vec::new();
    for _ in 0..WATCHES {
        let s = csrs.watch(&WatchParams::default().timeout(290), "0").await.unwrap().boxed();
        streams.push(s);
    }
    // Make sure every watch is established server-side: one event reaches all of them.
    let mut probe = serde_json::from_value::<Csr>(common::node_csr(Some("probe"), "n")).unwrap();
    probe = csrs.create(&PostParams::default(), &probe).await.unwrap();
    let _ = probe;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = proc_status(pid, "VmRSS:");
    let threads_after = proc_status(pid, "Threads:");
    println!(
        "MEASURE watches: {WATCHES} open watches: server RSS {rss_before} kB -> {rss_after} kB = {:.1} kB per watch (incl. TLS connection); threads {threads_before} -> {threads_after}",
        (rss_after.saturating_sub(rss_before)) as f64 / WATCHES as f64
    );
    drop(streams);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run on demand"]
async fn measure_in_memory_watch_state() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let dir = tempfile::tempdir().unwrap();
    let api = kubecert_apiserver::Api::open(&common::config(dir.path())).unwrap();
    let service = api.service_as(common::admin_user());
    let created = service
        .clone()
        .oneshot(
            http::Request::post(common::CSRS)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(serde_json::to_vec(&common::node_csr(Some("w"), "n")).unwrap()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    const WATCHES: usize = 10_000;
    let pid = std::process::id();
    let rss_before = proc_status(pid, "VmRSS:");
    let threads_before = proc_status(pid, "Threads:");
    let mut bodies = Vec::with_capacity(WATCHES);
    for _ in 0..WATCHES {
        let req = http::Request::get(format!("{}?watch=true&timeoutSeconds=600", common::CSRS))
            .body(axum::body::Body::empty())
            .unwrap();
        let mut body = service.clone().oneshot(req).await.unwrap().into_body();
        // The initial ADDED event: the watch is now parked waiting for changes.
        body.frame().await.unwrap().unwrap();
        bodies.push(body);
    }
    let rss_after = proc_status(pid, "VmRSS:");
    println!(
        "MEASURE in-memory watches: {WATCHES} parked watches: process RSS {rss_before} kB -> {rss_after} kB = {:.2} kB per watch; threads {threads_before} -> {}",
        (rss_after.saturating_sub(rss_before)) as f64 / WATCHES as f64,
        proc_status(pid, "Threads:")
    );
    drop(bodies);
}
