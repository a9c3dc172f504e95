//! The four steps of a CA roll against a state directory, shared by `signer ca …` and the
//! automatic schedule of `serve` and `controller`. The caller holds the directory's lock.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use kubecert_authority::{
    ActivationRules, CaGenerations, Schedule, Step, Transition, TrustingShare, from_unix_seconds,
};

use super::publish::{Stage, TrustPublisher};
use super::{CaDir, Disk, generation_name};
use crate::config::CaFiles;

/// What the steps need to know besides the journal.
#[derive(Clone, Debug)]
pub struct CaSettings {
    /// The state directory.
    pub dir: CaDir,
    /// Generation 1 on first use.
    pub import: CaFiles,
    /// The schedule (and the lifetime of a prepared root).
    pub schedule: Schedule,
    /// When activation is allowed.
    pub rules: ActivationRules,
    /// How long a running signer may keep signing with a generation after it stopped being
    /// active (it re-reads the journal this often): retire waits at least this long after
    /// activation.
    pub reload_interval: Duration,
}

/// The share of nodes that trust a generation: the seam for the fleet view. Activation asks it
/// only when `--ca-min-trusting-share` is set.
pub trait ShareSource: Send + Sync {
    /// The share of nodes reporting that they trust generation `generation`.
    fn share(&self, generation: u32) -> TrustingShare;
}

/// The share source until a fleet view is wired in: it knows nothing and says so, so a configured
/// minimum share refuses activation instead of passing silently.
pub struct NoFleetStatus;

impl ShareSource for NoFleetStatus {
    fn share(&self, _: u32) -> TrustingShare {
        TrustingShare::Unknown("no source of node trust reports is configured".to_owned())
    }
}

/// Everything a step uses.
pub struct Steps<'a, P> {
    /// Settings.
    pub settings: &'a CaSettings,
    /// Where files go.
    pub disk: &'a dyn Disk,
    /// Where trust bundles go.
    pub publisher: &'a P,
    /// Who answers the trusting share.
    pub share: &'a dyn ShareSource,
}

impl<P: TrustPublisher> Steps<'_, P> {
    fn dir(&self) -> &CaDir {
        &self.settings.dir
    }

    /// The journal, importing generation 1 on first use.
    pub fn open(&self, now: SystemTime) -> Result<CaGenerations> {
        self.dir().open(self.disk, &self.settings.import, now)
    }

    /// Runs `step`.
    pub async fn run(&self, step: Step, now: SystemTime) -> Result<Transition> {
        match step {
            Step::Prepare => self.prepare(now),
            Step::Publish => self.publish(now, false).await,
            Step::Activate => self.activate(now),
            Step::Retire => self.retire(now).await,
        }
    }

    /// Makes the next generation: key, root and cross-certificate, then the journal.
    pub fn prepare(&self, now: SystemTime) -> Result<Transition> {
        let mut state = self.open(now)?;
        let Some(plan) = state.plan_prepare(now, self.settings.schedule.ca_lifetime)? else {
            let pending =
                state.pending().map(|g| format!("generation {} is already {}", g.id, g.phase.as_str()));
            return Ok(Transition::Unchanged(pending.unwrap_or_default()));
        };
        let signer = self.dir().authority(plan.cross_signer, false)?;
        let first = self.dir().authority(1, false)?;
        let (new, cross) = signer.successor(
            &generation_name(&first, plan.id),
            from_unix_seconds(plan.not_before),
            from_unix_seconds(plan.not_after),
            from_unix_seconds(plan.cross_not_after),
            &aws_lc_rs::rand::SystemRandom::new(),
        )?;
        let (key, cert, cross_path) = self.dir().files(plan.id);
        self.disk.write(&key, new.private_key_pem().as_bytes())?;
        self.disk.write(&cert, new.certificate_pem().as_bytes())?;
        self.disk.write(&cross_path, cross.to_pem().as_bytes())?;
        let transition = state.commit_prepare(&plan, now)?;
        self.dir().write_journal(self.disk, &state)?;
        tracing::info!(generation = plan.id, "prepared a new CA generation");
        Ok(transition)
    }

    /// Writes the trust bundles with the prepared root added (canary, then live unless
    /// `canary_only`), then journals it as published.
    pub async fn publish(&self, now: SystemTime, canary_only: bool) -> Result<Transition> {
        let mut state = self.open(now)?;
        let mut next = state.clone();
        let transition = next.publish(now)?;
        let pem = self.bundle(next.trusted())?;
        self.publisher.write(Stage::Canary, &pem).await?;
        if canary_only {
            return Ok(Transition::Unchanged("wrote the canary bundles only".to_owned()));
        }
        self.publisher.write(Stage::Live, &pem).await?;
        if transition == Transition::Changed {
            state = next;
            self.dir().write_journal(self.disk, &state)?;
            tracing::info!(generation = state.pending().map_or(0, |g| g.id), "published a new CA generation");
        }
        Ok(transition)
    }

    /// Makes the published generation the signing one.
    pub fn activate(&self, now: SystemTime) -> Result<Transition> {
        let mut state = self.open(now)?;
        let transition = state.activate(now, &self.settings.rules, |id| self.share.share(id))?;
        if transition == Transition::Changed {
            self.dir().write_journal(self.disk, &state)?;
            tracing::info!(generation = state.active().id, "activated a new CA generation");
        }
        Ok(transition)
    }

    /// The latest time a leaf of the retiring generation may be valid: what its ledger says,
    /// and no earlier than a reload interval after activation (a running signer may not have
    /// switched keys yet).
    pub fn retiring_issued_until(&self, state: &CaGenerations) -> Result<Option<SystemTime>> {
        let Some(retiring) = state.retiring() else { return Ok(None) };
        let ledger = self.dir().issued_until(retiring.id)?;
        let switched =
            retiring.entered.retiring.map(|t| from_unix_seconds(t) + self.settings.reload_interval);
        Ok(ledger.into_iter().chain(switched).max())
    }

    /// Retires the retiring generation once its leaves have expired, then drops its root from
    /// the bundles.
    pub async fn retire(&self, now: SystemTime) -> Result<Transition> {
        let mut state = self.open(now)?;
        let until = self.retiring_issued_until(&state)?;
        let transition = state.retire(now, until)?;
        if transition == Transition::Changed {
            self.dir().write_journal(self.disk, &state)?;
            tracing::info!("retired a CA generation");
        }
        self.sync_bundles(&state).await?;
        Ok(transition)
    }

    /// Writes the bundles as the journal says (canary, then live).
    pub async fn sync_bundles(&self, state: &CaGenerations) -> Result<()> {
        let pem = self.bundle(state.trusted())?;
        self.publisher.write(Stage::Canary, &pem).await?;
        self.publisher.write(Stage::Live, &pem).await
    }

    /// The PEM roots of `generations`, oldest first.
    pub fn bundle<'g>(
        &self,
        generations: impl Iterator<Item = &'g kubecert_authority::Generation>,
    ) -> Result<String> {
        let mut pem = String::new();
        for generation in generations {
            let root = self.dir().root_pem(generation.id)?;
            let certs = kubecert_csr::parse_certificates_pem(root.as_bytes())
                .with_context(|| format!("root of generation {}", generation.id))?;
            for cert in certs {
                pem.push_str(&cert.to_pem());
            }
        }
        Ok(pem)
    }
}
