//! Durability (a server process SIGKILLed after acknowledged writes keeps every one of them,
//! with the same resourceVersion) and serialization of many concurrent writers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest as Csr;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PostParams};

use crate::common::{self, Credential, Pki};

const CHILD_ENV: &str = "KUBECERT_APISERVER_TEST_CHILD_DIR";

/// Entry point of the server child process; a no-op in a normal test run.
#[test]
fn child_server_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let tls = kubecert_apiserver::TlsConfig {
        cert_chain_pem: read("server.crt"),
        key_pem: read("server.key"),
        client_ca_pem: read("ca.crt"),
        key_exchange: kubecert_reload::KeyExchange::default(),
        handshakes: None,
    };
    common::install_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = kubecert_apiserver::start(
            "127.0.0.1:0".parse().unwrap(),
            tls,
            &common::config(&dir.join("data")),
        )
        .await
        .unwrap();
        std::fs::write(dir.join("addr.tmp"), server.local_addr().to_string()).unwrap();
        std::fs::rename(dir.join("addr.tmp"), dir.join("addr")).unwrap();
        std::future::pending::<()>().await;
    });
}

pub async fn spawn_child(dir: &Path) -> (tokio::process::Child, std::net::SocketAddr) {
    let _ = std::fs::remove_file(dir.join("addr"));
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["durability::child_server_process", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(a) = std::fs::read_to_string(dir.join("addr")) {
                return a.parse().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("child server started");
    (child, addr)
}

/// Writes the TLS material a child server reads.
pub fn write_child_pki(pki: &Pki, dir: &Path) {
    std::fs::write(dir.join("server.crt"), &pki.server_cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &pki.server_key_pem).unwrap();
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
}

#[tokio::test]
async fn sigkill_keeps_every_acknowledged_write() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    write_child_pki(&pki, dir.path());
    let admin = pki.admin();

    let (mut child, addr) = spawn_child(dir.path()).await;
    let client = common::client(addr, &pki, Credential::Cert(&admin)).await;
    // Writers keep creating; the process is killed while they run.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let mut writers = Vec::new();
    for w in 0..8 {
        let csrs: Api<Csr> = Api::all(client.clone());
        let tx = tx.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let obj: Csr = serde_json::from_value(common::node_csr(Some(&name), "n1")).unwrap();
                match csrs.create(&PostParams::default(), &obj).await {
                    Ok(o) => {
                        let _ = tx.send((name, o.metadata.resource_version.unwrap()));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    drop(tx);
    let mut acked = BTreeMap::new();
    while acked.len() < 40 {
        let (name, rv) = rx.recv().await.unwrap();
        acked.insert(name, rv);
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    while let Ok((name, rv)) = rx.try_recv() {
        acked.insert(name, rv);
    }

    let (mut child, addr) = spawn_child(dir.path()).await;
    let csrs: Api<Csr> = Api::all(common::client(addr, &pki, Credential::Cert(&admin)).await);
    let list = csrs.list(&ListParams::default()).await.unwrap();
    let stored: BTreeMap<String, String> = list
        .items
        .iter()
        .map(|o| (o.metadata.name.clone().unwrap(), o.metadata.resource_version.clone().unwrap()))
        .collect();
    for (name, rv) in &acked {
        assert_eq!(stored.get(name), Some(rv), "acknowledged {name} lost or changed");
    }
    let max_acked = acked.values().map(|v| v.parse::<u64>().unwrap()).max().unwrap();
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= max_acked);
    let next = csrs
        .create(
            &PostParams::default(),
            &serde_json::from_value(common::node_csr(Some("after"), "n1")).unwrap(),
        )
        .await
        .unwrap();
    assert!(next.metadata.resource_version.unwrap().parse::<u64>().unwrap() > list_rv);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn many_concurrent_writers_serialize() {
    const WRITERS: usize = 64;
    const INCREMENTS: i32 = 3;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(&pki, dir.path()).await;
    let admin = pki.admin();
    let client = common::client(server.local_addr(), &pki, Credential::Cert(&admin)).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "counter"}, "spec": {"leaseTransitions": 0}
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    // A watch from here must see every write, in resourceVersion order, none twice.
    let mut events = leases
        .watch(
            &kube::api::WatchParams::default().timeout(60),
            &created.metadata.resource_version.clone().unwrap(),
        )
        .await
        .unwrap()
        .boxed();

    // Every writer increments the counter with read-modify-write and retries on 409, and also
    // creates CSRs; no increment may be lost and every write gets its own resourceVersion.
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let leases = leases.clone();
        let csrs: Api<Csr> = Api::all(client.clone());
        tasks.push(tokio::spawn(async move {
            let mut rvs = Vec::new();
            let mut conflicts = 0;
            for _ in 0..INCREMENTS {
                loop {
                    let mut l = leases.get("counter").await.unwrap();
                    let spec = l.spec.get_or_insert_with(Default::default);
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    match leases.replace("counter", &PostParams::default(), &l).await {
                        Ok(o) => {
                            rvs.push(o.metadata.resource_version.unwrap());
                            break;
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            let obj: Csr = serde_json::from_value(common::node_csr(Some(&format!("c{w}")), "n1")).unwrap();
            rvs.push(
                csrs.create(&PostParams::default(), &obj).await.unwrap().metadata.resource_version.unwrap(),
            );
            (rvs, conflicts)
        }));
    }
    let mut all_rvs = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (rvs, c) = t.await.unwrap();
        all_rvs.extend(rvs);
        conflicts += c;
    }
    let final_lease = leases.get("counter").await.unwrap();
    assert_eq!(final_lease.spec.unwrap().lease_transitions, Some(WRITERS as i32 * INCREMENTS));
    let total = all_rvs.len();
    all_rvs.sort();
    all_rvs.dedup();
    assert_eq!(all_rvs.len(), total, "resourceVersions are unique");
    assert!(conflicts > 0, "concurrent read-modify-write must have produced conflicts");
    let mut seen = Vec::new();
    while seen.len() < WRITERS * INCREMENTS as usize {
        let event =
            tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap().unwrap();
        match event {
            kube::api::WatchEvent::Modified(l) => {
                seen.push(l.metadata.resource_version.unwrap().parse::<u64>().unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "watch events in resourceVersion order");
    let csrs: Api<Csr> = Api::all(client);
    assert_eq!(csrs.list(&ListParams::default()).await.unwrap().items.len(), WRITERS);
    server.shutdown().await.unwrap();
}
