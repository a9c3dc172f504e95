//! `cargo xtask cluster up|down|build`: the real Kubernetes on loopback for trying kubecert by hand.
//!
//! `build` only builds the Go programs (CI does it as a step of its own); `up` builds etcd, kube-apiserver, kube-controller-manager and `kubelet-certs` from the pinned
//! Go module in `tests/kubernetes/` (once per machine), then starts etcd and kube-apiserver
//! configured as a kubeadm cluster is for node certificates (and, with `--controller-manager`,
//! kube-controller-manager with only its CSR controllers), leaves them running and prints the
//! admin kubeconfig. `down` stops them. The code is the tests' own
//! (`kubecert_tests::kubernetes`), so what works here is what the tests run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use kubecert_tests::kubernetes::{Cluster, ClusterOptions, target_dir};

const USAGE: &str = "usage: cargo xtask cluster up [--dir DIR] [--controller-manager] [--signing-duration SECONDS]\n       \
                     cargo xtask cluster down [--dir DIR]\n       \
                     cargo xtask cluster build";

/// What to do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Up,
    Down,
    Build,
}

/// What to do, and where.
pub struct Options {
    action: Action,
    dir: PathBuf,
    cluster: ClusterOptions,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let action = match args.first().map(String::as_str) {
            Some("up") => Action::Up,
            Some("down") => Action::Down,
            Some("build") => Action::Build,
            _ => bail!("{USAGE}"),
        };
        let up = action == Action::Up;
        let mut options =
            Self { action, dir: target_dir().join("kubernetes/cluster"), cluster: ClusterOptions::default() };
        let mut rest = args[1..].iter();
        while let Some(arg) = rest.next() {
            let mut value =
                |name: &str| rest.next().with_context(|| format!("{name} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--dir" if action != Action::Build => options.dir = PathBuf::from(value("--dir")?),
                "--controller-manager" if up => options.cluster.controller_manager = true,
                "--signing-duration" if up => {
                    let v = value("--signing-duration")?;
                    let seconds: u64 = v
                        .parse()
                        .with_context(|| format!("--signing-duration: {v:?} is not a number of seconds"))?;
                    options.cluster.signing_duration = Duration::from_secs(seconds);
                }
                other => bail!("cargo xtask cluster: unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

fn pids_file(options: &Options) -> PathBuf {
    options.dir.join("pids")
}

/// Whether process `pid` is alive (`kill -0`).
fn alive(pid: &str) -> bool {
    Command::new("kill").args(["-0", pid]).output().is_ok_and(|out| out.status.success())
}

pub fn run(options: &Options) -> Result<()> {
    if options.action == Action::Build {
        let bin = kubecert_tests::kubernetes::binaries().map_err(anyhow::Error::msg)?;
        println!("{}: up to date", bin.display());
        return Ok(());
    }
    let pids = pids_file(options);
    let running: Vec<String> = std::fs::read_to_string(&pids)
        .map(|text| text.split_whitespace().filter(|pid| alive(pid)).map(str::to_owned).collect())
        .unwrap_or_default();
    if options.action == Action::Down {
        if running.is_empty() {
            println!("no cluster is running in {}", options.dir.display());
        } else {
            let status = Command::new("kill").args(&running).status().context("running kill")?;
            if !status.success() {
                bail!("kill {} failed", running.join(" "));
            }
            println!("stopped processes {}", running.join(" "));
        }
        let _ = std::fs::remove_file(&pids);
        return Ok(());
    }
    if !running.is_empty() {
        bail!(
            "a cluster is already running in {} (processes {}): cargo xtask cluster down first",
            options.dir.display(),
            running.join(" ")
        );
    }
    if options.dir.exists() {
        std::fs::remove_dir_all(&options.dir)
            .with_context(|| format!("removing the old {}", options.dir.display()))?;
    }
    kubecert_tests::kubernetes::binaries().map_err(anyhow::Error::msg)?;
    // Cluster::start is the tests' code and fails by panicking; its message is the error (without
    // the panic hook's location and backtrace).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = std::panic::catch_unwind(|| Cluster::start(&options.dir, &options.cluster));
    std::panic::set_hook(hook);
    let cluster = started
        .map_err(|panic| anyhow::anyhow!("starting the cluster failed: {}", panic_message(&*panic)))?;
    let (api, admin) = (cluster.api, cluster.admin_kubeconfig());
    let ids: Vec<String> = cluster.detach().iter().map(u32::to_string).collect();
    std::fs::write(&pids, ids.join(" ")).with_context(|| format!("writing {}", pids.display()))?;
    println!("kube-apiserver is serving on https://{api}");
    println!("admin kubeconfig: {}", admin.display());
    println!("  kubectl --kubeconfig {} get csr", admin.display());
    println!("stop it with: cargo xtask cluster down{}", dir_flag(options));
    Ok(())
}

fn dir_flag(options: &Options) -> String {
    if options.dir == target_dir().join("kubernetes/cluster") {
        String::new()
    } else {
        format!(" --dir {}", options.dir.display())
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)")
}
