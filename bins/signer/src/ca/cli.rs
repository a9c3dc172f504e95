//! `signer ca status|prepare|publish|activate|retire`: the steps of a CA roll by hand, against the
//! state directory of a `signer serve` data directory or of `--ca-state-dir`. A running signer
//! picks the change up within its `ca_reload_interval`.

use std::time::SystemTime;

use anyhow::{Context as _, Result};
use kubecert_authority::{CaGenerations, Schedule, Transition};
use serde_json::json;

use super::command::{NoFleetStatus, Steps};
use super::publish::Publication;
use super::{CaDir, Durable};
use crate::cli::{CaAction, CaArgs, OutputFormat};

/// Runs one `signer ca` command; prints what happened.
pub async fn run(args: CaArgs) -> Result<()> {
    let config = crate::config::load_file(args.config.as_deref(), &args)?;
    let settings = config.ca_settings()?.context(
        "CA generations are not in use: give --data-dir (signer serve's) or --ca-state-dir with --ca-cert and --ca-key",
    )?;
    let kubeconfig = config.kubeconfig.clone().or_else(|| {
        let admin = config.data_dir.as_ref().map(|d| crate::pki::DataDir::new(d).admin_kubeconfig());
        admin.filter(|path| path.exists())
    });
    let writes_bundles = matches!(args.action, CaAction::Publish { .. } | CaAction::Retire);
    let api = match (&kubeconfig, writes_bundles) {
        (Some(path), true) => Some(crate::controller::client_from_kubeconfig(path).await?),
        (None, true) => {
            eprintln!(
                "signer: not writing ClusterTrustBundles: no --kubeconfig (and no admin.kubeconfig in --data-dir)"
            );
            None
        }
        (_, false) => None,
    };
    let publication = Publication::new(api, config.trust_bundle_out.clone());
    let steps = Steps { settings: &settings, disk: &Durable, publisher: &publication, share: &NoFleetStatus };
    let _lock = settings.dir.lock()?;
    let now = SystemTime::now();
    let transition = match args.action {
        CaAction::Status { output } => {
            let state = steps.open(now)?;
            print!("{}", status(&settings.dir, &state, &settings.schedule, output, now)?);
            return Ok(());
        }
        CaAction::Prepare => steps.prepare(now)?,
        CaAction::Publish { canary } => steps.publish(now, canary).await?,
        CaAction::Activate => steps.activate(now)?,
        CaAction::Retire => steps.retire(now).await?,
    };
    let state = steps.open(now)?;
    match transition {
        Transition::Changed => println!("{}", summary(&state)),
        Transition::Unchanged(why) => println!("unchanged: {why}; {}", summary(&state)),
    }
    Ok(())
}

fn summary(state: &CaGenerations) -> String {
    let phases: Vec<String> =
        state.generations().iter().map(|g| format!("generation {} {}", g.id, g.phase.as_str())).collect();
    phases.join(", ")
}

fn timestamp(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| secs.to_string(), |t| t.to_string())
}

/// `signer ca status` output.
pub fn status(
    dir: &CaDir,
    state: &CaGenerations,
    schedule: &Schedule,
    output: OutputFormat,
    now: SystemTime,
) -> Result<String> {
    let chain = state.signing_chain(now);
    let active = state.active();
    let mut issued = Vec::new();
    for generation in state.generations() {
        issued.push(dir.issued_until(generation.id)?.map(kubecert_authority::unix_seconds));
    }
    if output == OutputFormat::Json {
        let generations: Vec<_> = state
            .generations()
            .iter()
            .zip(&issued)
            .map(|(g, until)| {
                let mut value = serde_json::to_value(g).unwrap_or_default();
                value["issued_until"] = json!(until);
                value
            })
            .collect();
        let trusted: Vec<u32> = state.trusted().map(|g| g.id).collect();
        let document = json!({
            "generations": generations,
            "signing": { "generation": chain.generation, "with_cross_certificate": chain.with_cross_certificate },
            "trusted": trusted,
            "schedule": {
                "prepare_at": schedule.prepare_time(active),
                "activate_at": schedule.activate_time(active),
            },
        });
        return Ok(format!("{}\n", serde_json::to_string_pretty(&document)?));
    }
    let mut out = format!(
        "{:<11} {:<10} {:<21} {:<21} {:<21} {}\n",
        "GENERATION", "PHASE", "ROOT NOT BEFORE", "ROOT NOT AFTER", "ISSUED UNTIL", "SINCE"
    );
    for (g, until) in state.generations().iter().zip(&issued) {
        out.push_str(&format!(
            "{:<11} {:<10} {:<21} {:<21} {:<21} {}\n",
            g.id,
            g.phase.as_str(),
            timestamp(g.root_not_before),
            timestamp(g.root_not_after),
            until.map_or_else(|| "-".to_owned(), timestamp),
            g.entered.get(g.phase).map_or_else(|| "-".to_owned(), timestamp),
        ));
    }
    out.push_str(&format!(
        "signing: generation {}{}\n",
        chain.generation,
        if chain.with_cross_certificate { ", leaf + cross-certificate" } else { "" }
    ));
    out.push_str(&format!(
        "schedule (with --ca-auto-roll): prepare at {}, activate at {}\n",
        timestamp(schedule.prepare_time(active)),
        timestamp(schedule.activate_time(active))
    ));
    Ok(out)
}
