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

/// `--storm`, `--storm-large`, `--watches`, `--runs`, `--cluster`, `--json`.
#[derive(Debug)]
pub struct Options {
    storm: usize,
    /// Agents of the second, larger storm.
    storm_large: usize,
    watches: usize,
    /// How many times every section runs; the summary gives min, median and max.
    runs: usize,
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
            storm_large: 20_000,
            watches: 10_000,
            runs: 1,
            cluster: None,
            json: workspace_root().join("target/bench/report.json"),
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "--json" => options.json = PathBuf::from(rest.next().context("--json needs a path")?),
                "--storm" => options.storm = number(arg, rest.next())?,
                "--storm-large" => options.storm_large = number(arg, rest.next())?,
                "--watches" => options.watches = number(arg, rest.next())?,
                "--runs" => options.runs = number(arg, rest.next())?,
                "--cluster" => {
                    options.cluster = Some(match rest.as_slice().first().filter(|v| !v.starts_with("--")) {
                        Some(_) => number(arg, rest.next())?,
                        None => CLUSTER_STORM,
                    });
                }
                other => bail!(
                    "cargo xtask bench: unknown argument '{other}' \
                     (usage: {USAGE})"
                ),
            }
        }
        let counts = [options.storm, options.storm_large, options.watches, options.runs];
        if counts.contains(&0) || options.cluster == Some(0) {
            bail!("--storm, --storm-large, --watches, --runs and --cluster must be at least 1");
        }
        Ok(options)
    }
}

const USAGE: &str = "cargo xtask bench [--storm N] [--storm-large N] [--watches N] [--runs N] [--cluster [N]] \
                     [--json PATH]";

/// The value after `flag`, as a count.
fn number(flag: &str, value: Option<&String>) -> Result<usize> {
    let value = value.with_context(|| format!("{flag} needs a number"))?;
    value.parse().with_context(|| format!("{flag}: '{value}' is not a number"))
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
    println!("building the binaries and benchmarks (release; the node agent as shipped, profile agent)…");
    for build in [&["--release", "-p", "signer"][..], &["--profile", "agent", "-p", "node-agent"]] {
        let status = cargo().arg("build").args(build).status()?;
        if !status.success() {
            bail!("cargo build {} failed", build.join(" "));
        }
    }
    let executables = build_benches()?;
    let dir = options.json.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut runs = Vec::new();
    for run in 1..=options.runs {
        // Each run's sections write their files in a directory of their own.
        let run_dir = match options.runs {
            1 => dir.clone(),
            _ => dir.join(format!("run-{run}")),
        };
        std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        if options.runs > 1 {
            println!("\n=== run {run} of {} ===", options.runs);
        }
        let report = run_once(options, &executables, &run_dir)?;
        print_summary(&report);
        print_side_by_side(&report["storm_side_by_side"]);
        runs.push(report);
    }
    let report = match <[Value; 1]>::try_from(runs) {
        Ok([one]) => one,
        Err(runs) => {
            let spread = spread(&runs);
            print_spread(&spread, runs.len());
            json!({"runs": runs, "spread": spread})
        }
    };
    std::fs::write(&options.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", options.json.display()))?;
    println!("report: {}", options.json.display());
    Ok(())
}

/// Every section once; the report of the run, with the load average before and after it.
fn run_once(options: &Options, executables: &BTreeMap<String, PathBuf>, dir: &Path) -> Result<Value> {
    let exe = |name: &str| executables.get(name).with_context(|| format!("bench {name} was not built"));
    let load_before = load_average();
    let storm_agents = options.storm.to_string();
    println!("\n[1/8] sign path");
    let sign_path = sign_path(exe("sign_path")?)?;
    println!("\n[2/8] storm: {} agents", options.storm);
    let storm = section(exe("storm")?, &["--storm", &storm_agents], &dir.join("storm.json"))?;
    println!("\n[3/8] storm: {} agents", options.storm_large);
    let large = options.storm_large.to_string();
    let storm_large = section(exe("storm")?, &["--storm", &large], &dir.join("storm-large.json"))?;
    println!("\n[4/8] agent footprint, certmonger beside it (about 80 s)");
    let footprint = section(exe("footprint")?, &[], &dir.join("footprint.json"))?;
    println!("\n[5/8] reload");
    let reload = section(exe("reload")?, &[], &dir.join("reload.json"))?;
    println!("\n[6/8] agent restart");
    let restart = section(exe("restart")?, &[], &dir.join("restart.json"))?;
    println!("\n[7/8] cfssl side by side: {} clients", options.storm);
    let cfssl = section(exe("cfssl")?, &["--storm", &storm_agents], &dir.join("cfssl.json"))?;
    println!("\n[8/8] watches: {} pinned by name", options.watches);
    let watches =
        section(exe("watches")?, &["--watches", &options.watches.to_string()], &dir.join("watches.json"))?;

    let side_by_side = match options.cluster {
        Some(agents) => {
            kubecert_tests::kubernetes::binaries().map_err(anyhow::Error::msg)?;
            side_by_side(exe("storm")?, agents, dir)?
        }
        None => Value::Null,
    };
    Ok(json!({
        "load_average": {"before": load_before, "after": load_average()},
        "sign_path": sign_path,
        "storm": storm,
        "storm_large": storm_large,
        "agent_footprint": footprint,
        "reload": reload,
        "agent_restart": restart,
        "cfssl": cfssl,
        "watches": watches,
        "storm_side_by_side": side_by_side,
    }))
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), null where it cannot be read.
fn load_average() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loads: Vec<f64> = text.split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect();
    match loads[..] {
        [one, five, fifteen] => json!([one, five, fifteen]),
        _ => Value::Null,
    }
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
            "\n[9/9 {}/{}] storm side by side: {agents} agents against {name}",
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

/// One line of the summary: what, the figure (one number, or several shown as `a / b`), its
/// baseline (named) and their ratio.
struct Row {
    section: &'static str,
    figure: String,
    values: Vec<f64>,
    decimals: usize,
    baseline: String,
    ratio: Option<f64>,
}

impl Row {
    fn new(section: &'static str, figure: impl Into<String>, values: Vec<f64>, decimals: usize) -> Self {
        Self { section, figure: figure.into(), values, decimals, baseline: String::new(), ratio: None }
    }

    fn against(self, baseline: impl Into<String>, ratio: Option<f64>) -> Self {
        Self { baseline: baseline.into(), ratio, ..self }
    }

    fn value(&self) -> String {
        if self.values.is_empty() {
            return "skipped".into();
        }
        let shown: Vec<String> = self.values.iter().map(|v| format!("{v:.*}", self.decimals)).collect();
        shown.join(" / ")
    }
}

fn summary_rows(report: &Value) -> Vec<Row> {
    let f = |section: &str, key: &str| report[section][key].as_f64().unwrap_or(f64::NAN);
    let sign = f("sign_path", "approve_and_issue_per_second");
    let storm_rate = f("storm", "csrs_per_second");
    let rss = f("agent_footprint", "idle_rss_kib") / 1024.0;
    let sleep = f("agent_footprint", "baseline_sleep_rss_kib") / 1024.0;
    let mut rows = vec![Row::new("sign path", "approve + issue /s (1 core)", vec![sign], 0).against(
        format!("raw P-256 verify+sign {:.0}/s", f("sign_path", "raw_p256_verify_and_sign_per_second")),
        Some(f("sign_path", "ratio")),
    )];
    rows.extend(storm_rows(&report["storm"], "storm", sign));
    rows.extend(storm_rows(&report["storm_large"], "storm", sign));
    rows.extend([
        cfssl_row(&report["cfssl"], storm_rate),
        Row::new("agent", "idle RSS (MiB)", vec![rss], 1)
            .against(format!("sleep {sleep:.1} MiB"), Some(rss / sleep)),
        match report["agent_footprint"]["certmonger_idle_rss_kib"].as_f64() {
            Some(theirs) => Row::new("agent", "idle RSS (MiB) beside certmonger", vec![rss], 1).against(
                format!("certmonger {:.1} MiB", theirs / 1024.0),
                report["agent_footprint"]["rss_ratio_to_certmonger"].as_f64(),
            ),
            None => Row::new("agent", "idle RSS (MiB) beside certmonger", vec![], 1)
                .against("certmonger missing", None),
        },
        Row::new("agent", "wakeups / min idle", vec![f("agent_footprint", "wakeups_per_minute")], 1),
        Row::new(
            "agent",
            "restart: kill -> serving p50 / max (ms)",
            vec![f("agent_restart", "downtime_ms_p50"), f("agent_restart", "downtime_ms_max")],
            0,
        )
        .against(
            format!("--version p50 {:.1} ms", f("agent_restart", "baseline_version_ms_p50")),
            Some(f("agent_restart", "ratio_p50")),
        ),
    ]);
    rows.extend(reload_rows(&report["reload"]));
    rows.extend(watch_rows(&report["watches"]));
    rows
}

/// Rows of one storm: its rate against the sign path's, how long, latency, memory, CPU, and
/// what failed or was retried.
fn storm_rows(storm: &Value, section: &'static str, sign: f64) -> [Row; 6] {
    let f = |key: &str| storm[key].as_f64().unwrap_or(f64::NAN);
    let agents = &storm["agents"];
    let rate = f("csrs_per_second");
    [
        Row::new(section, format!("{agents} agents: CSRs/s"), vec![rate], 0)
            .against(format!("sign path {sign:.0}/s"), Some(rate / sign)),
        Row::new(section, format!("{agents}: until all issued (s)"), vec![f("seconds_until_all_issued")], 1),
        Row::new(
            section,
            format!("{agents}: latency p50 / p99 (ms)"),
            vec![f("latency_ms_p50"), f("latency_ms_p99")],
            0,
        ),
        Row::new(
            section,
            format!("{agents}: server peak RSS (MiB)"),
            vec![f("server_peak_rss_kib") / 1024.0],
            0,
        ),
        Row::new(
            section,
            format!("{agents}: CPU server / clients (s)"),
            vec![f("server_cpu_seconds"), f("client_cpu_seconds")],
            1,
        ),
        Row::new(
            section,
            format!("{agents}: failed / creates retried"),
            vec![f("failed"), f("create_retries")],
            0,
        ),
    ]
}

/// The storm's rate against cfssl's bare sign endpoint at the same concurrency.
fn cfssl_row(cfssl: &Value, storm_rate: f64) -> Row {
    let figure = "storm CSRs/s against cfssl signs/s";
    match cfssl["signs_per_second"].as_f64() {
        Some(signs) => Row::new("cfssl", figure, vec![storm_rate], 0)
            .against(format!("cfssl sign {signs:.0}/s"), Some(storm_rate / signs)),
        None => Row::new("cfssl", figure, vec![], 0)
            .against(cfssl["skipped"].as_str().unwrap_or("cfssl missing"), None),
    }
}

/// Rows of the watches section: the server's memory growth against its memory before, and the
/// latency of a change reaching its watcher.
fn watch_rows(watches: &Value) -> [Row; 2] {
    let f = |key: &str| watches[key].as_f64().unwrap_or(f64::NAN);
    let (before, growth) = (f("server_rss_before_kib"), f("server_rss_growth_kib"));
    [
        Row::new(
            "watches",
            format!("{} open: server RSS growth (MiB)", watches["watches"]),
            vec![growth / 1024.0],
            0,
        )
        .against(format!("server before {:.0} MiB", before / 1024.0), Some(growth / before)),
        Row::new(
            "watches",
            "create -> certificate at watcher p50/p99 (ms)",
            vec![f("latency_ms_p50"), f("latency_ms_p99")],
            0,
        ),
    ]
}

fn print_summary(report: &Value) {
    if let Some([one, five, fifteen]) = report["load_average"]["before"].as_array().map(Vec::as_slice) {
        println!("\nload average before the run: {one} {five} {fifteen}");
    }
    println!("{:<10} {:<44} {:>15}  {:<30} {:>7}", "section", "figure", "value", "baseline", "ratio");
    for row in summary_rows(report) {
        let ratio = row.ratio.map(|r| format!("{r:.2}")).unwrap_or_default();
        println!(
            "{:<10} {:<44} {:>15}  {:<30} {:>7}",
            row.section,
            row.figure,
            row.value(),
            row.baseline,
            ratio
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
            Row::new("reload", format!("{figure} p50/p99 (ms)"), vec![ms("p50_us"), ms("p99_us")], 2).against(
                format!("{baseline} p50 {:.2} ms", ms("baseline_p50_us")),
                reload[key]["ratio_p50"].as_f64(),
            )
        })
        .collect()
}

/// Min, median and max of `samples` (NaN-free; empty gives NaNs).
fn min_median_max(samples: &mut [f64]) -> [f64; 3] {
    samples.sort_by(f64::total_cmp);
    match samples {
        [] => [f64::NAN; 3],
        [first, ..] => [*first, samples[samples.len() / 2], samples[samples.len() - 1]],
    }
}

/// Every summary row over all runs: each of its numbers and its ratio as min, median, max, and
/// the load average before each run.
fn spread(runs: &[Value]) -> Value {
    let tables: Vec<Vec<Row>> = runs.iter().map(summary_rows).collect();
    let rows: Vec<Value> = tables[0]
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let column = |pick: &dyn Fn(&Row) -> Option<f64>| {
                let mut samples: Vec<f64> = tables
                    .iter()
                    .filter_map(|rows| rows.get(i).and_then(pick))
                    .filter(|v| !v.is_nan())
                    .collect();
                let [min, median, max] = min_median_max(&mut samples);
                json!({"min": min, "median": median, "max": max})
            };
            let values: Vec<Value> =
                (0..row.values.len()).map(|k| column(&|r| r.values.get(k).copied())).collect();
            json!({
                "section": row.section,
                "figure": row.figure,
                "decimals": row.decimals,
                "values": values,
                "baseline": row.baseline,
                "ratio": row.ratio.map(|_| column(&|r| r.ratio)),
            })
        })
        .collect();
    let loads: Vec<Value> = runs.iter().map(|run| run["load_average"].clone()).collect();
    json!({"rows": rows, "load_average": loads})
}

/// The spread table: median [min–max] of each figure and ratio over the runs.
fn print_spread(spread: &Value, runs: usize) {
    println!("\nover {runs} runs: median [min – max]");
    for (i, load) in spread["load_average"].as_array().into_iter().flatten().enumerate() {
        println!("run {}: load average before {} after {}", i + 1, load["before"], load["after"]);
    }
    let shown = |stat: &Value, decimals: usize| {
        let f = |key: &str| stat[key].as_f64().unwrap_or(f64::NAN);
        format!("{:.*} [{:.*} – {:.*}]", decimals, f("median"), decimals, f("min"), decimals, f("max"))
    };
    println!("{:<10} {:<44} {:>40}  {:>22}", "section", "figure", "value", "ratio");
    for row in spread["rows"].as_array().into_iter().flatten() {
        let decimals = row["decimals"].as_u64().unwrap_or(0) as usize;
        let values: Vec<String> =
            row["values"].as_array().into_iter().flatten().map(|v| shown(v, decimals)).collect();
        let ratio = if row["ratio"].is_null() { String::new() } else { shown(&row["ratio"], 2) };
        println!(
            "{:<10} {:<44} {:>40}  {:>22}",
            row["section"].as_str().unwrap_or_default(),
            row["figure"].as_str().unwrap_or_default(),
            values.join(" / "),
            ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rate: f64, ratio: f64) -> Value {
        json!({
            "load_average": {"before": [1.0, 0.5, 0.2], "after": [2.0, 1.0, 0.5]},
            "sign_path": {"approve_and_issue_per_second": 8000.0, "raw_p256_verify_and_sign_per_second": 10000.0, "ratio": ratio},
            "storm": {"agents": 5000, "csrs_per_second": rate, "latency_ms_p50": rate * 2.0, "latency_ms_p99": rate * 3.0},
            "cfssl": {"skipped": "cfssl is not on PATH"},
        })
    }

    #[test]
    fn min_median_max_of_odd_even_and_empty_samples() {
        assert_eq!(min_median_max(&mut [3.0, 1.0, 2.0]), [1.0, 2.0, 3.0]);
        assert_eq!(min_median_max(&mut [4.0, 1.0]), [1.0, 4.0, 4.0]);
        assert!(min_median_max(&mut []).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn the_spread_gives_each_figure_and_ratio_over_the_runs() {
        let spread = spread(&[report(300.0, 0.6), report(500.0, 0.7), report(400.0, 0.8)]);
        let rows = spread["rows"].as_array().unwrap();
        let row = |figure: &str| rows.iter().find(|r| r["figure"] == figure).unwrap();
        let sign = row("approve + issue /s (1 core)");
        assert_eq!(sign["ratio"], json!({"min": 0.6, "median": 0.7, "max": 0.8}));
        let storm = row("5000 agents: CSRs/s");
        assert_eq!(storm["values"][0], json!({"min": 300.0, "median": 400.0, "max": 500.0}));
        let latency = row("5000: latency p50 / p99 (ms)");
        assert_eq!(latency["values"][1], json!({"min": 900.0, "median": 1200.0, "max": 1500.0}));
        // A skipped section has no numbers, and says why.
        let cfssl = row("storm CSRs/s against cfssl signs/s");
        assert_eq!(cfssl["values"], json!([]));
        assert_eq!(cfssl["baseline"], "cfssl is not on PATH");
        assert_eq!(spread["load_average"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn counts_must_be_numbers_of_at_least_one() {
        let parse = |args: &[&str]| Options::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        let options = parse(&["--runs", "3", "--storm-large", "100"]).unwrap();
        assert_eq!((options.runs, options.storm_large, options.storm), (3, 100, 5000));
        assert!(parse(&["--runs", "0"]).unwrap_err().to_string().contains("at least 1"));
        assert!(parse(&["--runs", "x"]).unwrap_err().to_string().contains("--runs: 'x' is not a number"));
        assert!(parse(&["--runs"]).unwrap_err().to_string().contains("--runs needs a number"));
    }
}
