//! kube-rs round trips over real TLS (issue 3 "done when" #1) and through the in-memory service.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest as Csr, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubecert_apiserver::{SIGNER_USER, UserInfo};

use crate::common::{self, Credential, Pki};

fn csr(name: Option<&str>, node: &str) -> Csr {
    serde_json::from_value(common::node_csr(name, node)).unwrap()
}

fn approved(mut c: Csr) -> Csr {
    let status = c.status.get_or_insert_with(Default::default);
    status.conditions.get_or_insert_with(Vec::new).push(CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some("AutoApproved".into()),
        message: Some("approved by test".into()),
        ..Default::default()
    });
    c
}

fn api_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("not an API error: {other}"),
    }
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Csr>>> + Unpin),
) -> WatchEvent<Csr> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch event in time")
        .expect("stream open")
        .unwrap()
}

#[tokio::test]
async fn create_list_watch_approve_status_delete() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(&pki, dir.path()).await;
    let admin = pki.admin();
    let client = common::client(server.local_addr(), &pki, Credential::Cert(&admin)).await;
    let csrs: Api<Csr> = Api::all(client);

    let list = csrs.list(&ListParams::default()).await.unwrap();
    assert!(list.items.is_empty());
    let rv = list.metadata.resource_version.unwrap();
    let mut events = csrs.watch(&WatchParams::default().timeout(30), &rv).await.unwrap().boxed();

    let created = csrs.create(&PostParams::default(), &csr(None, "n1")).await.unwrap();
    let name = created.metadata.name.clone().unwrap();
    assert!(name.starts_with("csr-") && name.len() == 9, "{name}");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(created.spec.username.as_deref(), Some("kubernetes-admin"));
    assert_eq!(created.spec.groups, Some(vec!["system:masters".into(), "system:authenticated".into()]));
    match next_event(&mut events).await {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some(name.as_str())),
        other => panic!("expected ADDED, got {other:?}"),
    }

    let by_name = csrs.list(&ListParams::default().fields(&format!("metadata.name={name}"))).await.unwrap();
    assert_eq!(by_name.items.len(), 1);
    let by_signer =
        csrs.list(&ListParams::default().fields("spec.signerName=example.com/none")).await.unwrap();
    assert!(by_signer.items.is_empty());

    let approved_csr = csrs
        .replace_subresource("approval", &name, &PostParams::default(), &approved(created.clone()))
        .await
        .unwrap();
    let cond = &approved_csr.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
    assert_eq!(cond.type_, "Approved");
    assert!(cond.last_update_time.is_some() && cond.last_transition_time.is_some());
    match next_event(&mut events).await {
        WatchEvent::Modified(o) => {
            assert_eq!(o.metadata.resource_version, approved_csr.metadata.resource_version)
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    let mut issued = approved_csr.clone();
    issued.status.get_or_insert_with(CertificateSigningRequestStatus::default).certificate =
        Some(ByteString(pki.issue_pem("system:node:n1").into_bytes()));
    let issued = csrs.replace_status(&name, &PostParams::default(), &issued).await.unwrap();
    assert!(issued.status.as_ref().unwrap().certificate.is_some());
    assert!(matches!(next_event(&mut events).await, WatchEvent::Modified(_)));

    let stale = csrs.replace_status(&name, &PostParams::default(), &approved_csr).await.unwrap_err();
    assert_eq!(api_error(stale), (409, "Conflict".into()));

    csrs.delete(&name, &DeleteParams::default()).await.unwrap();
    assert!(matches!(next_event(&mut events).await, WatchEvent::Deleted(_)));
    assert_eq!(api_error(csrs.get(&name).await.unwrap_err()), (404, "NotFound".into()));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fixed_name_conflict_then_get() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(&pki, dir.path()).await;
    let admin = pki.admin();
    let csrs: Api<Csr> = Api::all(common::client(server.local_addr(), &pki, Credential::Cert(&admin)).await);
    let name = "node-csr-Ab_c-0123456789";
    let first = csrs.create(&PostParams::default(), &csr(Some(name), "n1")).await.unwrap();
    let err = csrs.create(&PostParams::default(), &csr(Some(name), "n1")).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
            assert_eq!(
                s.message,
                format!("certificatesigningrequests.certificates.k8s.io \"{name}\" already exists")
            );
        }
        other => panic!("{other}"),
    }
    let got = csrs.get(name).await.unwrap();
    assert_eq!(got.metadata.uid, first.metadata.uid);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_resumes_after_restart() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(&pki, dir.path()).await;
    let addr = server.local_addr();
    let admin = pki.admin();
    let client = common::client(addr, &pki, Credential::Cert(&admin)).await;
    let csrs: Api<Csr> = Api::all(client.clone());

    // A runtime watcher that lives across the restart.
    let seen = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    let watcher_task = tokio::spawn(async move {
        let stream =
            watcher(Api::<Csr>::all(client), watcher::Config::default()).default_backoff().applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(o)) = stream.try_next().await {
            seen2.lock().await.push(o.metadata.name.unwrap_or_default());
        }
    });

    let rv0 = csrs.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let a = csrs.create(&PostParams::default(), &csr(Some("a"), "n1")).await.unwrap();
    server.shutdown().await.unwrap();

    let server = common::start_at(&pki, dir.path(), addr).await;
    let got = csrs.get("a").await.unwrap();
    assert_eq!(got.metadata.resource_version, a.metadata.resource_version);
    csrs.create(&PostParams::default(), &csr(Some("b"), "n2")).await.unwrap();

    // A watch from the RV before the restart replays what happened since, in order.
    let mut events = csrs.watch(&WatchParams::default().timeout(10), &rv0).await.unwrap().boxed();
    let mut names = Vec::new();
    for _ in 0..2 {
        match next_event(&mut events).await {
            WatchEvent::Added(o) => names.push(o.metadata.name.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(names, ["a", "b"]);

    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if seen.lock().await.iter().any(|n| n == "b") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the runtime watcher saw the object created after the restart");
    watcher_task.abort();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn in_memory_service_with_fixed_identity() {
    let dir = tempfile::tempdir().unwrap();
    let api = kubecert_apiserver::Api::open(&common::config(dir.path())).unwrap();
    let admin = kube::Client::new(
        api.service_as(UserInfo::authenticated("admin", vec!["system:masters".into()])),
        "default",
    );
    let signer = kube::Client::new(api.service_as(UserInfo::authenticated(SIGNER_USER, vec![])), "default");
    let as_admin: Api<Csr> = Api::all(admin);
    let as_signer: Api<Csr> = Api::all(signer);
    // A controller-style watcher over the in-memory service (streaming bodies, no sockets).
    let stream = watcher(as_signer.clone(), watcher::Config::default()).applied_objects();
    let mut stream = Box::pin(stream);
    let created = as_admin.create(&PostParams::default(), &csr(None, "n1")).await.unwrap();
    let seen =
        tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(seen.metadata.name, created.metadata.name);
    let name = created.metadata.name.clone().unwrap();
    assert_eq!(as_signer.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let approved = as_signer
        .replace_subresource("approval", &name, &PostParams::default(), &approved(created))
        .await
        .unwrap();
    assert_eq!(approved.status.unwrap().conditions.unwrap()[0].type_, "Approved");
    let seen =
        tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert!(seen.status.unwrap().conditions.is_some());
    let denied = as_signer.create(&PostParams::default(), &csr(None, "n2")).await.unwrap_err();
    assert_eq!(api_error(denied), (403, "Forbidden".into()));
}

#[tokio::test]
async fn streaming_list_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let api = kubecert_apiserver::Api::open(&common::config(dir.path())).unwrap();
    let admin = kube::Client::new(
        api.service_as(UserInfo::authenticated("admin", vec!["system:masters".into()])),
        "default",
    );
    let csrs: Api<Csr> = Api::all(admin);
    csrs.create(&PostParams::default(), &csr(Some("before"), "n1")).await.unwrap();
    // sendInitialEvents=true: initial ADDED events, then the initial-events-end BOOKMARK.
    let stream = watcher(csrs.clone(), watcher::Config::default().streaming_lists()).applied_objects();
    let mut stream = Box::pin(stream);
    let first =
        tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("before"));
    csrs.create(&PostParams::default(), &csr(Some("after"), "n1")).await.unwrap();
    let second =
        tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.metadata.name.as_deref(), Some("after"));
}

#[tokio::test]
async fn leader_election_with_kube_lease_manager() {
    use kube_lease_manager::LeaseManagerBuilder;
    let dir = tempfile::tempdir().unwrap();
    let api = kubecert_apiserver::Api::open(&common::config(dir.path())).unwrap();
    let client =
        || kube::Client::new(api.service_as(UserInfo::authenticated(SIGNER_USER, vec![])), "kube-system");
    let manager = |id: &str| {
        LeaseManagerBuilder::new(client(), "kubecert-signer")
            .with_namespace("kube-system")
            .with_identity(id)
            .with_duration(3)
            .with_grace(1)
            .build()
    };
    let (a, a_task) = manager("a").await.unwrap().watch().await;
    let (b, b_task) = manager("b").await.unwrap().watch().await;
    // Both race for the free lease: exactly one leads at any time, for several lease periods.
    let mut leaders_seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        let (la, lb) = (*a.borrow(), *b.borrow());
        assert!(!(la && lb), "two leaders at once");
        if la {
            leaders_seen.insert("a");
        }
        if lb {
            leaders_seen.insert("b");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leaders_seen.len(), 1, "the first leader keeps the lease while it renews");
    // The leader stops renewing; the other takes over once the lease expires.
    let a_leads = leaders_seen.contains("a");
    let (mut follower, leader_task, follower_task) =
        if a_leads { (b, a_task, b_task) } else { (a, b_task, a_task) };
    leader_task.abort();
    let took_over = tokio::time::timeout(Duration::from_secs(15), follower.wait_for(|l| *l)).await;
    assert!(took_over.is_ok(), "the follower takes over after the lease expires");
    follower_task.abort();
}
