//! `cargo xtask bench` section: cfssl side by side. `cfssl serve` (Debian's `golang-cfssl`) with
//! a P-256 CA of its own making, its bare `/api/v1/cfssl/sign` endpoint driven with the storm's
//! concurrency: N clients at once, each on its own connection, one P-256 node-client CSR each.
//! cfssl does no authentication, no authorization, no approval, no storage and no TLS here:
//! its rate is the ceiling a signing service reaches on this machine, and the storm's CSRs/s
//! is compared against it. Without cfssl on PATH the section says how to install it, writes
//! `{"skipped": …}` and succeeds.
//!
//! `cargo bench -p kubecert-tests --bench cfssl -- [--storm 5000] [--json PATH]`

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kubecert_tests::bench::{
    BenchArgs, cpu_time, find_program, millis, own_cpu_time, percentile, proc_status,
};
use kubecert_tests::{Process, free_local_addr, wait_for};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;

/// What to run when cfssl is missing.
const INSTALL: &str = "apt-get install -y golang-cfssl";

fn main() -> Result<(), String> {
    let args = BenchArgs::from_env();
    let clients = args.count("storm", 5000)?;
    let Some(cfssl) = find_program("cfssl") else {
        println!("cfssl: not found on PATH; skipping this section (install it with `{INSTALL}`)");
        return args.write_report(&json!({ "skipped": format!("cfssl not on PATH; `{INSTALL}`") }));
    };
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    make_ca(&cfssl, dir.path())?;
    let addr = free_local_addr();
    let port = addr.port().to_string();
    let (ca, ca_key) = (dir.path().join("ca.pem"), dir.path().join("ca-key.pem"));
    let serve_args = [
        "serve",
        "-address",
        "127.0.0.1",
        "-port",
        &port,
        "-ca",
        ca.to_str().ok_or("temporary directory is not UTF-8")?,
        "-ca-key",
        ca_key.to_str().ok_or("temporary directory is not UTF-8")?,
        "-loglevel",
        "5",
    ];
    let mut server = Process::spawn(&cfssl, &serve_args, &dir.path().join("cfssl.log"));
    wait_for("cfssl serve listening", Duration::from_secs(30), || std::net::TcpStream::connect(addr).is_ok());
    if let Some(status) = server.try_wait() {
        return Err(format!("cfssl serve exited with {status}:\n{}", server.log()));
    }

    // Requests are made before the clock starts, as in the storm.
    let bodies = support::node_requests(clients, "cfssl")?
        .into_iter()
        .map(|csr| {
            let pem = String::from_utf8(csr.spec.request.0).map_err(|e| e.to_string())?;
            Ok(json!({ "certificate_request": pem }).to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    let runtime = support::runtime()?;
    let pid = server.id();
    let (cpu_before, client_cpu_before) = (cpu_time(pid).unwrap_or_default(), own_cpu_time());
    let start = Instant::now();
    let (mut latencies, failures) = runtime.block_on(async move {
        let mut signs = JoinSet::new();
        for body in bodies {
            signs.spawn(async move {
                let started = Instant::now();
                sign(addr, &body).await.map(|()| started.elapsed())
            });
        }
        let (mut latencies, mut failures) = (Vec::new(), Vec::new());
        while let Some(joined) = signs.join_next().await {
            match joined.map_err(|e| e.to_string()).and_then(|outcome| outcome) {
                Ok(latency) => latencies.push(latency),
                Err(e) => failures.push(e),
            }
        }
        (latencies, failures)
    });
    let total = start.elapsed();
    let server_cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu_before);
    let client_cpu = own_cpu_time().saturating_sub(client_cpu_before);
    let peak_rss = proc_status(pid, "VmHWM").ok_or("cfssl serve exited during the run")?;
    server.kill();

    let signed = latencies.len();
    let rate = signed as f64 / total.as_secs_f64();
    let (p50, p99) = (percentile(&mut latencies, 0.5), percentile(&mut latencies, 0.99));
    println!(
        "cfssl serve: {signed}/{clients} signed in {:.1} s ({rate:.0} signs/s), latency p50 {:.0} ms \
         p99 {:.0} ms, server CPU {:.1} s, client CPU {:.1} s, peak RSS {} MiB",
        total.as_secs_f64(),
        millis(p50),
        millis(p99),
        server_cpu.as_secs_f64(),
        client_cpu.as_secs_f64(),
        peak_rss / 1024
    );
    args.write_report(&json!({
        "clients": clients,
        "signed": signed,
        "failed": failures.len(),
        "seconds": total.as_secs_f64(),
        "signs_per_second": rate,
        "latency_ms_p50": millis(p50),
        "latency_ms_p99": millis(p99),
        "server_cpu_seconds": server_cpu.as_secs_f64(),
        "client_cpu_seconds": client_cpu.as_secs_f64(),
        "server_peak_rss_kib": peak_rss,
        "note": "cfssl serve (Debian golang-cfssl), P-256 CA, plain HTTP on 127.0.0.1, POST \
                 /api/v1/cfssl/sign with one P-256 CSR per client, every client on its own \
                 connection and all at once; no authentication, approval or storage",
    }))?;
    match failures.first() {
        Some(first) => Err(format!("{} of {clients} signs failed; the first: {first}", failures.len())),
        None => Ok(()),
    }
}

/// A P-256 CA made by `cfssl gencert -initca`, as `ca.pem` and `ca-key.pem` in `dir`.
fn make_ca(cfssl: &Path, dir: &Path) -> Result<(), String> {
    let request = dir.join("ca-csr.json");
    std::fs::write(&request, r#"{"CN":"kubecert bench CA","key":{"algo":"ecdsa","size":256}}"#)
        .map_err(|e| format!("{}: {e}", request.display()))?;
    let output = Command::new(cfssl)
        .arg("gencert")
        .arg("-initca")
        .arg(&request)
        .output()
        .map_err(|e| format!("running cfssl gencert: {e}"))?;
    if !output.status.success() {
        return Err(format!("cfssl gencert -initca failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let made: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cfssl gencert's output: {e}"))?;
    for (field, file) in [("cert", "ca.pem"), ("key", "ca-key.pem")] {
        let pem = made[field].as_str().ok_or_else(|| format!("cfssl gencert's output has no {field:?}"))?;
        std::fs::write(dir.join(file), pem).map_err(|e| format!("writing {file}: {e}"))?;
    }
    Ok(())
}

/// One sign request on its own connection (HTTP/1.1, closed after the answer); an error unless
/// cfssl answers 200 with `"success":true`.
async fn sign(addr: std::net::SocketAddr, body: &str) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connecting: {e}"))?;
    let request = format!(
        "POST /api/v1/cfssl/sign HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("sending: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(|e| format!("reading the answer: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    if text.starts_with("HTTP/1.1 200") && text.contains(r#""success":true"#) {
        Ok(())
    } else {
        Err(format!("cfssl answered: {}", text.chars().take(300).collect::<String>()))
    }
}
