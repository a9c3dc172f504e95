//! Reload latency (issue 6, `cargo xtask bench` point 4), each figure next to a baseline measured in
//! the same run:
//!
//! * serving identity swap → first handshake that presents the new server certificate, against the
//!   same connect + handshake with a never-swapped identity;
//! * client identity swap → first handshake in which the server sees the new client certificate,
//!   against the same with a never-swapped client identity;
//! * kubelet-style switch of `<prefix>-current.pem` → [`PairFileWatcher`] publishes the new pair,
//!   against a raw `notify` watcher's first event for the same rename.
//!
//! `cargo bench -p kubecert-reload --bench reload -- [--samples N] [--json PATH]`: `N` handshake
//! samples per TLS measurement (default 300) and `ceil(N / 3)` file switches (default 100); `PATH`
//! receives the figures as JSON (relative paths are relative to `crates/reload`, where cargo runs
//! benches). Flags it does not know (cargo passes `--bench`) are ignored. Run without `--bench`
//! and without `--samples` (`cargo test --benches`) it takes a few samples only, as a smoke test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kubecert_csr::{KeyAlgorithm, PrivateKey};
use kubecert_reload::{Identity, KeyExchange, LiveIdentity, PairFileWatcher, WatchOptions};
use notify::{EventKind, RecursiveMode, Watcher};
use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};
use rustls::client::Resumption;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Handshake samples per TLS measurement by default; file switches are a third of it.
const DEFAULT_SAMPLES: usize = 300;
/// Samples when run as a smoke test (`cargo test --benches`).
const SMOKE_SAMPLES: usize = 6;
/// Untimed handshakes on every endpoint before measuring.
const WARMUP: usize = 20;
/// Handshakes after a swap before giving up on seeing the new certificate.
const MAX_ATTEMPTS: usize = 100;
/// Bound on every single wait; exceeding it is an error, not a sample.
const LIMIT: Duration = Duration::from_secs(5);
/// The kubelet's client pair prefix.
const PREFIX: &str = "kubelet-client";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let _ = KeyExchange::default().install();
    let args = Args::parse(std::env::args().skip(1))?;
    let ca = TestCa::new()?;
    let measurements = [
        measure_server_swap(&ca, args.samples).await.context("server identity swap")?,
        measure_client_swap(&ca, args.samples).await.context("client identity swap")?,
        measure_file_switch(&ca, args.samples.div_ceil(3)).await.context("file switch")?,
    ];
    print_table(&measurements)?;
    if let Some(path) = &args.json {
        write_json(path, &measurements)?;
    }
    Ok(())
}

/// The command line.
struct Args {
    samples: usize,
    json: Option<PathBuf>,
}

impl Args {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self> {
        let (mut samples, mut json, mut bench) = (None, None, false);
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--json" => json = Some(PathBuf::from(args.next().context("--json needs a path")?)),
                "--samples" => {
                    let value = args.next().context("--samples needs a number")?;
                    let n: usize = value.parse().with_context(|| format!("--samples {value:?}"))?;
                    ensure!(n > 0, "--samples must be at least 1");
                    samples = Some(n);
                }
                "--bench" => bench = true,
                _ => {}
            }
        }
        let default = if bench { DEFAULT_SAMPLES } else { SMOKE_SAMPLES };
        Ok(Self { samples: samples.unwrap_or(default), json })
    }
}

/// A CA issuing the benchmark's certificates (valid for 127.0.0.1).
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "kubecert-reload-bench-ca");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let der = params.self_signed(&key)?.der().clone();
        Ok(Self { issuer: Issuer::new(params, key), der })
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone())?;
        Ok(roots)
    }

    /// A kubelet-style pair file for `cn`: the certificate, then a fresh P-256 key.
    fn pair_pem(&self, cn: &str) -> Result<String> {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(key.rcgen_key_pair(), &self.issuer)?;
        Ok(format!("{}{}", cert.pem(), key.to_pem()))
    }

    fn identity(&self, cn: &str) -> Result<Identity> {
        Ok(Identity::from_pair_pem(self.pair_pem(cn)?.as_bytes())?)
    }

    /// Identities `<stem>-1` … `<stem>-n`, made before anything is timed.
    fn identities(&self, stem: &str, n: usize) -> Result<Vec<Identity>> {
        (1..=n).map(|i| self.identity(&format!("{stem}-{i}"))).collect()
    }
}

fn leaf(identity: &Identity) -> Result<CertificateDer<'static>> {
    identity.certified_key().cert.first().cloned().context("identity without a certificate")
}

/// A never-swapped identity for `cn` and its leaf certificate.
fn fixed(ca: &TestCa, cn: &str) -> Result<(LiveIdentity, CertificateDer<'static>)> {
    let identity = ca.identity(cn)?;
    let leaf = leaf(&identity)?;
    Ok((LiveIdentity::new(identity), leaf))
}

/// When a server completed a handshake, and the client's leaf certificate if one was presented.
type Seen = (Instant, Option<CertificateDer<'static>>);

/// A TLS server on 127.0.0.1 that completes handshakes and reports each one.
struct TlsServer {
    addr: SocketAddr,
    seen: UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl TlsServer {
    async fn start(config: ServerConfig) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (report, seen) = unbounded_channel();
        let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(Arc::new(config)), report));
        Ok(Self { addr, seen, task })
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, report: UnboundedSender<Seen>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Out of descriptors or similar: the waiting client times out and says so.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, report) = (acceptor.clone(), report.clone());
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let at = Instant::now();
                let client_leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
                let _ = report.send((at, client_leaf));
            }
        });
    }
}

/// Which side's certificate a measurement watches.
#[derive(Clone, Copy)]
enum Side {
    /// The server's, as the client sees it when its handshake completes.
    Server,
    /// The client's, as the server sees it when its handshake completes.
    Client,
}

/// A client connector and the server it connects to.
struct Endpoint {
    server: TlsServer,
    connector: TlsConnector,
    side: Side,
}

impl Endpoint {
    /// One connect + handshake; when the watched certificate was seen, and which it was.
    async fn handshake(&mut self) -> Result<(Instant, CertificateDer<'static>)> {
        while self.server.seen.try_recv().is_ok() {} // reports of earlier handshakes
        let addr = self.server.addr;
        let tls = timeout(LIMIT, async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            self.connector.connect(ServerName::IpAddress(addr.ip().into()), tcp).await
        })
        .await
        .with_context(|| format!("handshake with {addr} not done within {LIMIT:?}"))?
        .with_context(|| format!("handshake with {addr}"))?;
        match self.side {
            Side::Server => {
                let at = Instant::now();
                let server_leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
                Ok((at, server_leaf.context("the server presented no certificate")?))
            }
            Side::Client => {
                // The client stays connected until the server has finished its side.
                let seen = timeout(LIMIT, self.server.seen.recv()).await;
                drop(tls);
                let (at, client_leaf) = seen
                    .ok()
                    .flatten()
                    .with_context(|| format!("server {addr} did not complete the handshake"))?;
                Ok((at, client_leaf.context("the server saw no client certificate")?))
            }
        }
    }

    /// Shakes hands until the watched side presents `expected`; returns when that was first seen
    /// and how many handshakes it took.
    async fn until_presents(&mut self, expected: &CertificateDer<'_>) -> Result<(Instant, usize)> {
        for attempt in 1..=MAX_ATTEMPTS {
            let (at, presented) = self.handshake().await?;
            if presented == *expected {
                return Ok((at, attempt));
            }
        }
        bail!("the expected certificate was not presented in {MAX_ATTEMPTS} handshakes")
    }

    async fn warm_up(&mut self, expected: &CertificateDer<'_>) -> Result<()> {
        for _ in 0..WARMUP {
            self.until_presents(expected).await?;
        }
        Ok(())
    }
}

fn client_config(roots: RootCertStore) -> Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(KeyExchange::default().provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// One measured figure with its baseline.
struct Measurement {
    /// Its key in the JSON report.
    key: &'static str,
    /// Its row in the table.
    label: &'static str,
    /// What was timed (one line, in the JSON report).
    note: String,
    samples: Vec<Duration>,
    baseline: Vec<Duration>,
    /// Further figures and parameters for the JSON report.
    extra: Vec<(&'static str, Value)>,
}

/// Alternates baseline samples (`fixed`, which keeps presenting `fixed_leaf`) with swap samples
/// (`live` swapped to the next identity, then `swapped` connects until it presents it).
async fn measure_swaps(
    fixed: &mut Endpoint,
    fixed_leaf: &CertificateDer<'_>,
    swapped: &mut Endpoint,
    live: &LiveIdentity,
    next: Vec<Identity>,
) -> Result<(Vec<Duration>, Vec<Duration>, usize)> {
    fixed.warm_up(fixed_leaf).await?;
    let current = live.current().context("the live identity is empty")?;
    swapped.warm_up(&leaf(&current)?).await?;
    let (mut samples, mut baseline, mut stale) = (Vec::new(), Vec::new(), 0);
    for identity in next {
        let start = Instant::now();
        let (at, attempts) = fixed.until_presents(fixed_leaf).await?;
        ensure!(attempts == 1, "the never-swapped identity was not presented at once");
        baseline.push(at.saturating_duration_since(start));

        let expected = leaf(&identity)?;
        let start = Instant::now();
        live.swap(identity);
        let (at, attempts) = swapped.until_presents(&expected).await?;
        samples.push(at.saturating_duration_since(start));
        stale += attempts - 1;
    }
    Ok((samples, baseline, stale))
}

async fn measure_server_swap(ca: &TestCa, n: usize) -> Result<Measurement> {
    let (fixed_identity, fixed_leaf) = fixed(ca, "server-fixed")?;
    let live = LiveIdentity::new(ca.identity("server-0")?);
    let next = ca.identities("server", n)?;
    let connector = TlsConnector::from(Arc::new(client_config(ca.roots()?)?));
    let endpoint = |server| Endpoint { server, connector: connector.clone(), side: Side::Server };
    let mut fixed =
        endpoint(TlsServer::start(fixed_identity.server_config(None, KeyExchange::default())?).await?);
    let mut swapped = endpoint(TlsServer::start(live.server_config(None, KeyExchange::default())?).await?);
    let (samples, baseline, stale) =
        measure_swaps(&mut fixed, &fixed_leaf, &mut swapped, &live, next).await?;
    Ok(Measurement {
        key: "server_swap_to_handshake",
        label: "server identity swap -> first handshake with it",
        note: "LiveIdentity::swap of the serving identity until a new client connection (TCP + TLS \
               handshake, resumption off) completes with the new server certificate; baseline: the \
               same connect + handshake against a server whose identity is never swapped"
            .to_owned(),
        samples,
        baseline,
        extra: vec![("stale_handshakes", json!(stale))],
    })
}

async fn measure_client_swap(ca: &TestCa, n: usize) -> Result<Measurement> {
    let server_identity = LiveIdentity::new(ca.identity("mtls-server")?);
    let verifier = || -> Result<_> { Ok(WebPkiClientVerifier::builder(Arc::new(ca.roots()?)).build()?) };
    let (fixed_client, fixed_leaf) = fixed(ca, "client-fixed")?;
    let live = LiveIdentity::new(ca.identity("client-0")?);
    let next = ca.identities("client", n)?;
    let mut endpoints = Vec::new();
    for client in [&fixed_client, &live] {
        endpoints.push(Endpoint {
            server: TlsServer::start(
                server_identity.server_config(Some(verifier()?), KeyExchange::default())?,
            )
            .await?,
            connector: TlsConnector::from(Arc::new(
                client.client_config(ca.roots()?, KeyExchange::default())?,
            )),
            side: Side::Client,
        });
    }
    let [mut fixed, mut swapped] = <[Endpoint; 2]>::try_from(endpoints).ok().context("two endpoints")?;
    let (samples, baseline, stale) =
        measure_swaps(&mut fixed, &fixed_leaf, &mut swapped, &live, next).await?;
    Ok(Measurement {
        key: "client_swap_to_handshake",
        label: "client identity swap -> server sees it",
        note: "LiveIdentity::swap of the client identity until a server requiring client certificates \
               completes a handshake with the new one (new connection, resumption off); baseline: the \
               same with a client identity that is never swapped"
            .to_owned(),
        samples,
        baseline,
        extra: vec![("stale_handshakes", json!(stale))],
    })
}

/// `<prefix>-YYYY-MM-DD-HH-MM-SS.pem`, one second apart per `index`, like the kubelet's names.
fn pair_file_name(base: time::OffsetDateTime, index: usize) -> Result<String> {
    let offset = time::Duration::seconds(i64::try_from(index)?);
    let t = base.checked_add(offset).context("timestamp out of range")?;
    let (date, clock) = (t.date(), t.time());
    Ok(format!(
        "{PREFIX}-{:04}-{:02}-{:02}-{:02}-{:02}-{:02}.pem",
        date.year(),
        u8::from(date.month()),
        date.day(),
        clock.hour(),
        clock.minute(),
        clock.second()
    ))
}

/// Points `<prefix>-current.pem` at `pair_file` the way kubecert-store does: a new
/// `<prefix>-updated.pem` symlink (absolute target) renamed over the current one.
fn switch_current(dir: &Path, pair_file: &Path) -> Result<()> {
    let updated = dir.join(format!("{PREFIX}-updated.pem"));
    std::os::unix::fs::symlink(pair_file, &updated)
        .with_context(|| format!("create symlink {}", updated.display()))?;
    std::fs::rename(&updated, dir.join(format!("{PREFIX}-current.pem")))
        .with_context(|| format!("rename {} over the current link", updated.display()))
}

async fn measure_file_switch(ca: &TestCa, n: usize) -> Result<Measurement> {
    let options = WatchOptions::default();
    // Writing a pair file is itself an event of the pair; let its re-read finish before timing.
    let settle = options.debounce * 5;
    let pairs = (0..=n)
        .map(|i| {
            let pem = ca.pair_pem(&format!("system:node:bench-{i}"))?;
            let identity = Identity::from_pair_pem(pem.as_bytes())?;
            Ok((pem, identity))
        })
        .collect::<Result<Vec<_>>>()?;
    let tempdir = tempfile::tempdir().context("create a temporary certificate directory")?;
    let dir = tempdir.path();
    let base = time::OffsetDateTime::now_utc();
    let first = dir.join(pair_file_name(base, 0)?);
    std::fs::write(&first, &pairs[0].0).with_context(|| format!("write {}", first.display()))?;
    switch_current(dir, &first)?;

    let live = LiveIdentity::empty();
    let watcher = PairFileWatcher::start(dir, PREFIX, live.clone(), options)?;
    ensure!(live.current().is_some(), "the first pair was not loaded: {:?}", watcher.status().last_error);
    let current_name = format!("{PREFIX}-current.pem");
    let (raw_events, mut raw) = unbounded_channel();
    let mut raw_watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let names_current = event.paths.iter().any(|p| p.file_name().is_some_and(|n| *n == *current_name));
        if names_current && !matches!(event.kind, EventKind::Access(_)) {
            let _ = raw_events.send(Instant::now());
        }
    })?;
    raw_watcher.watch(dir, RecursiveMode::NonRecursive)?;

    let mut updates = live.subscribe();
    let (mut samples, mut baseline) = (Vec::new(), Vec::new());
    for (i, (pem, expected)) in pairs.iter().enumerate().skip(1) {
        let pair_file = dir.join(pair_file_name(base, i)?);
        std::fs::write(&pair_file, pem).with_context(|| format!("write {}", pair_file.display()))?;
        tokio::time::sleep(settle).await;
        while raw.try_recv().is_ok() {}
        ensure!(!updates.has_changed()?, "the identity changed before the switch (sample {i})");

        let start = Instant::now();
        switch_current(dir, &pair_file)?;
        timeout(LIMIT, updates.changed())
            .await
            .with_context(|| format!("no reload within {LIMIT:?} (sample {i})"))??;
        samples.push(start.elapsed());
        let raw_at = timeout(LIMIT, raw.recv())
            .await
            .ok()
            .flatten()
            .with_context(|| format!("no raw notify event within {LIMIT:?} (sample {i})"))?;
        baseline.push(raw_at.saturating_duration_since(start));

        let published = updates.borrow_and_update().identity.clone();
        ensure!(
            published.is_some_and(|identity| identity.same_certificates(expected)),
            "sample {i}: the reloaded identity is not the pair switched to"
        );
    }
    let status = watcher.status();
    ensure!(status.errors == 0, "the watcher recorded errors: {:?}", status.last_error);
    Ok(Measurement {
        key: "file_switch_to_reload",
        label: "-current.pem switch -> identity reloaded",
        note: format!(
            "symlink + rename of {PREFIX}-current.pem (kubelet layout, tempdir on the local disk) until \
             PairFileWatcher (default options: debounce {:?}, re-check {:?}) has published the new pair \
             to a LiveIdentity subscriber; baseline: a raw notify watcher's first event naming \
             {PREFIX}-current.pem for the same rename",
            options.debounce, options.recheck_interval
        ),
        samples,
        baseline,
        extra: vec![
            ("debounce_ms", json!(options.debounce.as_millis())),
            ("recheck_interval_ms", json!(options.recheck_interval.as_millis())),
            ("settle_before_switch_ms", json!(settle.as_millis())),
        ],
    })
}

/// Median, 99th percentile (nearest rank) and maximum.
struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: &[Duration]) -> Result<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank = |p: f64| -> Result<Duration> {
            // Nearest rank: the smallest sample with at least p of all samples at or below it.
            let rank = (p * sorted.len() as f64).ceil() as usize;
            sorted.get(rank.clamp(1, sorted.len()) - 1).copied().context("no samples")
        };
        Ok(Self { p50: rank(0.50)?, p99: rank(0.99)?, max: rank(1.0)? })
    }
}

fn micros(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

fn ratio(measured: Duration, baseline: Duration) -> f64 {
    (measured.as_secs_f64() / baseline.as_secs_f64() * 100.0).round() / 100.0
}

fn print_table(measurements: &[Measurement]) -> Result<()> {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("reload latency ({profile} build; baseline measured in the same run)");
    println!(
        "{:<50} {:>5} {:>10} {:>10} {:>13} {:>13} {:>8}",
        "measurement", "n", "p50", "p99", "baseline p50", "baseline p99", "ratio"
    );
    for m in measurements {
        let (s, b) = (Stats::of(&m.samples)?, Stats::of(&m.baseline)?);
        println!(
            "{:<50} {:>5} {:>10} {:>10} {:>13} {:>13} {:>8.2}",
            m.label,
            m.samples.len(),
            format!("{:.1?}", s.p50),
            format!("{:.1?}", s.p99),
            format!("{:.1?}", b.p50),
            format!("{:.1?}", b.p99),
            ratio(s.p50, b.p50)
        );
    }
    Ok(())
}

fn write_json(path: &Path, measurements: &[Measurement]) -> Result<()> {
    let mut report = serde_json::Map::new();
    report.insert("profile".into(), json!(if cfg!(debug_assertions) { "debug" } else { "release" }));
    for m in measurements {
        let (s, b) = (Stats::of(&m.samples)?, Stats::of(&m.baseline)?);
        let mut entry = json!({
            "note": m.note,
            "samples": m.samples.len(),
            "p50_us": micros(s.p50),
            "p99_us": micros(s.p99),
            "max_us": micros(s.max),
            "baseline_samples": m.baseline.len(),
            "baseline_p50_us": micros(b.p50),
            "baseline_p99_us": micros(b.p99),
            "baseline_max_us": micros(b.max),
            "ratio_p50": ratio(s.p50, b.p50),
        });
        if let Value::Object(fields) = &mut entry {
            fields.extend(m.extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        }
        report.insert(m.key.to_owned(), entry);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&Value::Object(report))?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    println!("wrote {}", std::path::absolute(path).unwrap_or_else(|_| path.to_owned()).display());
    Ok(())
}
