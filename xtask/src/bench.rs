//! `cargo xtask bench [--storm N] [--json PATH]`: every benchmark of the workspace, one report.
//!
//! The benchmark programs are built once, in release, together with both binaries, and run
//! directly (not through `cargo bench` per section, which would resolve features again):
//!
//! 1. sign path (`crates/authority/benches/sign_path.rs`, criterion): approve + issue on one
//!    core against raw P-256 verify + sign (aws-lc-rs);
//! 2. storm (`tests/benches/storm.rs`): N agents bootstrapping at once against `signer serve`;
//! 3. footprint (`tests/benches/footprint.rs`): an idle node agent's memory and wakeups;
//! 4. reload (`crates/reload/benches/reload.rs`): identity swap and file switch latencies;
//! 5. restart (`tests/benches/restart.rs`): a node agent killed and started again, kill →
//!    serving over HTTPS, against spawn → exit of `node-agent --version`;
//! 6. cfssl (`tests/benches/cfssl.rs`): `cfssl serve`'s bare sign endpoint driven with the
//!    storm's concurrency, the baseline of the storm's rate (skipped, with the install command,
//!    when cfssl is not on PATH); section 3 likewise measures certmonger beside the agent;
//! 7. watches (`tests/benches/watches.rs`): `--watches N` (default 10,000) watches pinned by
//!    name, each on its own TLS connection, then their CSRs issued: server memory growth and
//!    event latency.
//!
//! With `--cluster [N]` a further section runs the storm side by side (N agents, default 1,000)
//! against `signer serve`, the real kube-apiserver with kubecert's `signer controller`, and the
//! real kube-apiserver with kube-controller-manager's CSR controllers (built from the pinned Go
//! module, see `kubecert_tests::kubernetes`), with the upstream pair as the baseline.
//!
//! Each section writes its own JSON; the report (`target/bench/report.json` by default) holds
//! them all under their section names, and a summary table ends the run. Every figure that has a
//! baseline measured in the same run is shown with it and the ratio: machines are shared and
//! noisy, and absolute numbers travel badly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{cargo, workspace_root};

/// `--storm`, `--watches`, `--cluster`, `--json`.
pub struct Options {
    storm: usize,
    watches: usize,
    /// Agents of the side-by-side storm, when asked for.
    cluster: Option<usize>,
    json: PathBuf,
}

/// Agents of the side-by-side storm unless `--cluster N` says otherwise.
const CLUSTER_STORM: usize = 1000;

/// The side-by-side storm's targets (`--target` of the storm bench) and their names; the last is
/// the baseline.
const SIDE_BY_SIDE: [(&str, &str); 3] = [
    ("serve", "signer serve"),
    ("controller", "kube-apiserver + signer controller"),
    ("kcm", "kube-apiserver + kube-controller-manager"),
];

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            storm: 5000,
            watches: 10_000,
            cluster: None,
            json: workspace_root().join("target/bench/report.json"),
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "--json" => options.json = PathBuf::from(rest.next().context("--json needs a path")?),
                "--storm" => {
                    let v = rest.next().context("--storm needs a number")?;
                    options.storm = v.parse().with_context(|| format!("--storm: '{v}' is not a number"))?;
                }
                "--watches" => {
                    let v = rest.next().context("--watches needs a number")?;
                    options.watches =
                        v.parse().with_context(|| format!("--watches: '{v}' is not a number"))?;
                }
                "--cluster" => {
                    options.cluster = Some(match rest.as_slice().first().filter(|v| !v.starts_with("--")) {
                        Some(v) => {
                            rest.next();
                            v.parse().with_context(|| format!("--cluster: {v:?} is not a number"))?
                        }
                        None => CLUSTER_STORM,
                    });
                }
                other => bail!(
                    "cargo xtask bench: unknown argument '{other}' \
                     (usage: cargo xtask bench [--storm N] [--watches N] [--cluster [N]] [--json PATH])"
                ),
            }
        }
        if options.storm == 0 || options.watches == 0 || options.cluster == Some(0) {
            bail!("--storm, --watches and --cluster must be at least 1");
        }
        Ok(options)
    }
}

/// The benchmark programs: (package, bench target).
const BENCHES: [(&str, &str); 7] = [
    ("kubecert-authority", "sign_path"),
    ("kubecert-tests", "storm"),
    ("kubecert-tests", "footprint"),
    ("kubecert-reload", "reload"),
    ("kubecert-tests", "restart"),
    ("kubecert-tests", "cfssl"),
    ("kubecert-tests", "watches"),
];

pub fn run(options: &Options) -> Result<()> {
    println!("building the binaries and benchmarks (release)…");
    let status = cargo().args(["build", "--release", "-p", "signer", "-p", "node-agent"]).status()?;
    if !status.success() {
        bail!("cargo build --release -p signer -p node-agent failed");
    }
    let executables = build_benches()?;
    let exe = |name: &str| executables.get(name).with_context(|| format!("bench {name} was not built"));
    let dir = options.json.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let storm_agents = options.storm.to_string();
    println!("\n[1/7] sign path");
    let sign_path = sign_path(exe("sign_path")?)?;
    println!("\n[2/7] storm: {} agents", options.storm);
    let storm = section(exe("storm")?, &["--storm", &storm_agents], &dir.join("storm.json"))?;
    println!("\n[3/7] agent footprint, certmonger beside it (about 80 s)");
    let footprint = section(exe("footprint")?, &[], &dir.join("footprint.json"))?;
    println!("\n[4/7] reload");
    let reload = section(exe("reload")?, &[], &dir.join("reload.json"))?;
    println!("\n[5/7] agent restart");
    let restart = section(exe("restart")?, &[], &dir.join("restart.json"))?;
    println!("\n[6/7] cfssl side by side: {} clients", options.storm);
    let cfssl = section(exe("cfssl")?, &["--storm", &storm_agents], &dir.join("cfssl.json"))?;
    println!("\n[7/7] watches: {} pinned by name", options.watches);
    let watches =
        section(exe("watches")?, &["--watches", &options.watches.to_string()], &dir.join("watches.json"))?;

    let side_by_side = match options.cluster {
        Some(agents) => {
            kubecert_tests::kubernetes::binaries().map_err(anyhow::Error::msg)?;
            side_by_side(exe("storm")?, agents, &dir)?
        }
        None => Value::Null,
    };

    let report = json!({
        "sign_path": sign_path,
        "storm": storm,
        "agent_footprint": footprint,
        "reload": reload,
        "agent_restart": restart,
        "cfssl": cfssl,
        "watches": watches,
        "storm_side_by_side": side_by_side,
    });
    print_summary(&report);
    print_side_by_side(&report["storm_side_by_side"]);
    std::fs::write(&options.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", options.json.display()))?;
    println!("report: {}", options.json.display());
    Ok(())
}

/// Builds every benchmark in one cargo invocation; their executables by target name.
fn build_benches() -> Result<BTreeMap<String, PathBuf>> {
    let mut command = cargo();
    command.args(["bench", "--no-run", "--message-format=json-render-diagnostics"]);
    for (package, bench) in BENCHES {
        command.args(["-p", package, "--bench", bench]);
    }
    let output = command.stderr(std::process::Stdio::inherit()).output().context("running cargo bench")?;
    if !output.status.success() {
        bail!("cargo bench --no-run failed");
    }
    let mut executables = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else { continue };
        let is_bench = message["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bench"));
        if let (true, Some(name), Some(exe)) =
            (is_bench, message["target"]["name"].as_str(), message["executable"].as_str())
        {
            executables.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    Ok(executables)
}

/// Runs a section's program with `--json out` and returns what it wrote. `--bench` is what
/// `cargo bench` passes: it asks for a full measurement rather than a smoke run.
fn section(exe: &Path, args: &[&str], out: &Path) -> Result<Value> {
    let _ = std::fs::remove_file(out);
    let status = std::process::Command::new(exe)
        .current_dir(workspace_root())
        .arg("--bench")
        .args(args)
        .arg("--json")
        .arg(out)
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", exe.display());
    }
    let text = std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", out.display()))
}

/// The storm of `agents` against each of [`SIDE_BY_SIDE`], one after the other.
fn side_by_side(storm: &Path, agents: usize, dir: &Path) -> Result<Value> {
    let mut runs = serde_json::Map::new();
    for (i, (target, name)) in SIDE_BY_SIDE.iter().enumerate() {
        println!(
            "\n[8/8 {}/{}] storm side by side: {agents} agents against {name}",
            i + 1,
            SIDE_BY_SIDE.len()
        );
        let args = ["--storm", &agents.to_string(), "--target", target];
        runs.insert((*target).to_owned(), section(storm, &args, &dir.join(format!("storm-{target}.json")))?);
    }
    Ok(Value::Object(runs))
}

/// The side-by-side table: each target's figures and its rate against the upstream pair's.
fn print_side_by_side(runs: &Value) {
    if runs.is_null() {
        return;
    }
    let (baseline_target, baseline_name) = SIDE_BY_SIDE[SIDE_BY_SIDE.len() - 1];
    let baseline = runs[baseline_target]["csrs_per_second"].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nstorm side by side ({} agents; ratio: CSRs/s against {baseline_name})",
        runs[baseline_target]["agents"]
    );
    println!(
        "{:<42} {:>8} {:>10} {:>17} {:>10} {:>10} {:>7}",
        "server", "CSRs/s", "all (s)", "p50 / p99 (ms)", "CPU (s)", "RSS (MiB)", "ratio"
    );
    for (target, name) in SIDE_BY_SIDE {
        let f = |key: &str| runs[target][key].as_f64().unwrap_or(f64::NAN);
        println!(
            "{name:<42} {:>8.0} {:>10.1} {:>17} {:>10.1} {:>10.0} {:>7.2}",
            f("csrs_per_second"),
            f("seconds_until_all_issued"),
            format!("{:.0} / {:.0}", f("latency_ms_p50"), f("latency_ms_p99")),
            f("server_cpu_seconds"),
            f("server_peak_rss_kib") / 1024.0,
            f("csrs_per_second") / baseline
        );
    }
}

/// Section 1 through criterion, whose estimates land in `<target>/criterion`.
fn sign_path(exe: &Path) -> Result<Value> {
    // <target>/release/deps/sign_path-<hash>
    let target = exe.ancestors().nth(3).context("the bench executable is not in a target directory")?;
    let status = std::process::Command::new(exe)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target)
        .args(["--bench", "--warm-up-time", "2", "--measurement-time", "5", "--noplot"])
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", exe.display());
    }
    let mean = |bench: &str| criterion_mean_ns(&target.join("criterion/sign_path").join(bench));
    let signer = 1e9 / mean("approve_and_issue")?;
    let raw = 1e9 / mean("raw_p256_verify_and_sign")?;
    Ok(json!({
        "approve_and_issue_per_second": signer,
        "raw_p256_verify_and_sign_per_second": raw,
        "ratio": signer / raw,
        "note": "one core (criterion runs one thread); a new CSR each time: verified once (the API \
                 server's create, kept for the approver and the signer), approved and signed; the \
                 baseline verifies once and signs once"
    }))
}

/// Criterion's mean estimate of the bench in `dir`, in nanoseconds.
fn criterion_mean_ns(dir: &Path) -> Result<f64> {
    let path = dir.join("new/estimates.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let estimates: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    estimates["mean"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("{}: no mean.point_estimate", path.display()))
}

/// One line of the summary: what, the figure, its baseline (named) and their ratio.
struct Row {
    section: &'static str,
    figure: String,
    value: String,
    baseline: String,
    ratio: Option<f64>,
}

fn summary_rows(report: &Value) -> Vec<Row> {
    let f = |section: &str, key: &str| report[section][key].as_f64().unwrap_or(f64::NAN);
    let row = |section, figure: &str, value: String| Row {
        section,
        figure: figure.to_owned(),
        value,
        baseline: String::new(),
        ratio: None,
    };
    let sign = f("sign_path", "approve_and_issue_per_second");
    let storm_rate = f("storm", "csrs_per_second");
    let rss = f("agent_footprint", "idle_rss_kib");
    let sleep = f("agent_footprint", "baseline_sleep_rss_kib");
    let agent_rss = |figure: &str, baseline, ratio| Row {
        section: "agent",
        figure: figure.to_owned(),
        value: format!("{:.1}", rss / 1024.0),
        baseline,
        ratio,
    };
    let mut rows = vec![
        Row {
            section: "sign path",
            figure: "approve + issue /s (1 core)".into(),
            value: format!("{sign:.0}"),
            baseline: format!(
                "raw P-256 verify+sign {:.0}/s",
                f("sign_path", "raw_p256_verify_and_sign_per_second")
            ),
            ratio: Some(f("sign_path", "ratio")),
        },
        Row {
            section: "storm",
            figure: format!("{} agents: CSRs/s", report["storm"]["agents"]),
            value: format!("{storm_rate:.0}"),
            baseline: format!("sign path {sign:.0}/s"),
            ratio: Some(storm_rate / sign),
        },
        row("storm", "until all issued (s)", format!("{:.1}", f("storm", "seconds_until_all_issued"))),
        row(
            "storm",
            "latency p50 / p99 (ms)",
            format!("{:.0} / {:.0}", f("storm", "latency_ms_p50"), f("storm", "latency_ms_p99")),
        ),
        row("storm", "server peak RSS (MiB)", format!("{:.0}", f("storm", "server_peak_rss_kib") / 1024.0)),
        row(
            "storm",
            "CPU server / clients (s)",
            format!("{:.1} / {:.1}", f("storm", "server_cpu_seconds"), f("storm", "client_cpu_seconds")),
        ),
        cfssl_row(&report["cfssl"], storm_rate),
        agent_rss("idle RSS (MiB)", format!("sleep {:.1} MiB", sleep / 1024.0), Some(rss / sleep)),
        agent_rss(
            "idle RSS (MiB) beside certmonger",
            match report["agent_footprint"]["certmonger_idle_rss_kib"].as_f64() {
                Some(theirs) => format!("certmonger {:.1} MiB", theirs / 1024.0),
                None => "certmonger missing".into(),
            },
            report["agent_footprint"]["rss_ratio_to_certmonger"].as_f64(),
        ),
        row("agent", "wakeups / min idle", format!("{:.1}", f("agent_footprint", "wakeups_per_minute"))),
        Row {
            section: "agent",
            figure: "restart: kill -> serving p50 / max (ms)".into(),
            value: format!(
                "{:.0} / {:.0}",
                f("agent_restart", "downtime_ms_p50"),
                f("agent_restart", "downtime_ms_max")
            ),
            baseline: format!("--version p50 {:.1} ms", f("agent_restart", "baseline_version_ms_p50")),
            ratio: Some(f("agent_restart", "ratio_p50")),
        },
    ];
    rows.extend(reload_rows(&report["reload"]));
    rows.extend(watch_rows(&report["watches"]));
    rows
}

/// The storm's rate against cfssl's bare sign endpoint at the same concurrency.
fn cfssl_row(cfssl: &Value, storm_rate: f64) -> Row {
    let section = "cfssl";
    let figure = "storm CSRs/s against cfssl signs/s".to_owned();
    match cfssl["signs_per_second"].as_f64() {
        Some(signs) => Row {
            section,
            figure,
            value: format!("{storm_rate:.0}"),
            baseline: format!("cfssl sign {signs:.0}/s"),
            ratio: Some(storm_rate / signs),
        },
        None => Row {
            section,
            figure,
            value: "skipped".into(),
            baseline: cfssl["skipped"].as_str().unwrap_or("cfssl missing").into(),
            ratio: None,
        },
    }
}

/// Rows of the watches section: the server's memory growth against its memory before, and the
/// latency of a change reaching its watcher.
fn watch_rows(watches: &Value) -> [Row; 2] {
    let f = |key: &str| watches[key].as_f64().unwrap_or(f64::NAN);
    let (before, growth) = (f("server_rss_before_kib"), f("server_rss_growth_kib"));
    [
        Row {
            section: "watches",
            figure: format!("{} open: server RSS growth (MiB)", watches["watches"]),
            value: format!("{:.0}", growth / 1024.0),
            baseline: format!("server before {:.0} MiB", before / 1024.0),
            ratio: Some(growth / before),
        },
        Row {
            section: "watches",
            figure: "create -> certificate at watcher p50/p99 (ms)".into(),
            value: format!("{:.0} / {:.0}", f("latency_ms_p50"), f("latency_ms_p99")),
            baseline: String::new(),
            ratio: None,
        },
    ]
}

fn print_summary(report: &Value) {
    println!("\n{:<10} {:<44} {:>15}  {:<30} {:>7}", "section", "figure", "value", "baseline", "ratio");
    for row in summary_rows(report) {
        let ratio = row.ratio.map(|r| format!("{r:.2}")).unwrap_or_default();
        println!(
            "{:<10} {:<44} {:>15}  {:<30} {:>7}",
            row.section, row.figure, row.value, row.baseline, ratio
        );
    }
}

/// Rows of the reload section: p50 / p99 of each latency, its baseline's p50 and the ratio.
fn reload_rows(reload: &Value) -> Vec<Row> {
    let measurements = [
        ("server_swap_to_handshake", "server swap -> new handshake", "plain handshake"),
        ("client_swap_to_handshake", "client swap -> new handshake", "plain handshake"),
        ("file_switch_to_reload", "-current.pem switch -> reload", "raw notify event"),
    ];
    measurements
        .into_iter()
        .map(|(key, figure, baseline)| {
            let ms = |field: &str| reload[key][field].as_f64().unwrap_or(f64::NAN) / 1e3;
            Row {
                section: "reload",
                figure: format!("{figure} p50/p99 (ms)"),
                value: format!("{:.2} / {:.2}", ms("p50_us"), ms("p99_us")),
                baseline: format!("{baseline} p50 {:.2} ms", ms("baseline_p50_us")),
                ratio: reload[key]["ratio_p50"].as_f64(),
            }
        })
        .collect()
}
