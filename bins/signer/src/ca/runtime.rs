//! CA generations inside a running `serve` or `controller`: the signer follows the journal
//! (the active generation's key, with its cross-certificate while the previous root is still
//! trusted, recording every issuance in that generation's ledger), metrics show where the roll
//! is, and with `--ca-auto-roll` the schedule runs the steps itself.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;
use kubecert_authority::{
    CaGenerations, CertificateAuthority, IssuancePolicy, Phase, Signer, SignerAuthorities, SigningChain,
    Transition,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::command::{CaSettings, NoFleetStatus, Steps};
use super::publish::Publication;
use super::{CaDir, Durable, GenerationLedger};

/// Label of a generation's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenerationLabel {
    /// The generation id.
    pub generation: String,
}

/// Label of a generation's phase series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The generation id.
    pub generation: String,
    /// The phase.
    pub phase: String,
}

/// Series of the CA roll (`kubecert_signer_ca_*`).
#[derive(Clone, Debug, Default)]
pub struct CaMetrics {
    /// The generation that signs.
    pub active_generation: Gauge,
    /// 1 for each generation's current phase, 0 for the others.
    pub phase: Family<PhaseLabel, Gauge>,
    /// When each generation entered each phase it went through.
    pub transition_timestamp: Family<PhaseLabel, Gauge>,
    /// The latest NotAfter each generation's key issued.
    pub issued_until: Family<GenerationLabel, Gauge>,
}

impl CaMetrics {
    /// Adds the series to `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        let ca = registry.sub_registry_with_prefix("ca");
        ca.register("active_generation", "The CA generation that signs", self.active_generation.clone());
        ca.register("generation_phase", "1 for each CA generation's current phase", self.phase.clone());
        ca.register_with_unit(
            "transition_timestamp",
            "When each CA generation entered each phase (Unix time)",
            prometheus_client::registry::Unit::Seconds,
            self.transition_timestamp.clone(),
        );
        ca.register_with_unit(
            "issued_until_timestamp",
            "The latest NotAfter each CA generation's key issued (Unix time)",
            prometheus_client::registry::Unit::Seconds,
            self.issued_until.clone(),
        );
    }

    fn observe(&self, state: &CaGenerations, dir: &CaDir) {
        self.active_generation.set(i64::from(state.active().id));
        for generation in state.generations() {
            for phase in Phase::ALL {
                let label =
                    PhaseLabel { generation: generation.id.to_string(), phase: phase.as_str().to_owned() };
                self.phase.get_or_create(&label).set(i64::from(generation.phase == phase));
                if let Some(at) = generation.entered.get(phase) {
                    self.transition_timestamp
                        .get_or_create(&label)
                        .set(i64::try_from(at).unwrap_or(i64::MAX));
                }
            }
            if let Ok(Some(until)) = dir.issued_until(generation.id) {
                let secs = i64::try_from(kubecert_authority::unix_seconds(until)).unwrap_or(i64::MAX);
                self.issued_until
                    .get_or_create(&GenerationLabel { generation: generation.id.to_string() })
                    .set(secs);
            }
        }
    }
}

/// The signer for the journal's active generation and chain.
fn build_signer(dir: &CaDir, chain: SigningChain, issuance: IssuancePolicy) -> Result<Signer> {
    let ca = dir.authority(chain.generation, chain.with_cross_certificate)?;
    let ledger = GenerationLedger::new(dir.clone(), chain.generation, issuance.ttl, Box::new(Durable))?;
    Ok(Signer::new(SignerAuthorities::shared(ca)?, issuance).with_ledger(Arc::new(ledger)))
}

/// Told the trusted roots (PEM) and the signing CA at start and whenever either changes (e.g. the
/// embedded API's own certificates follow the roll).
pub type TrustFollower = Box<dyn Fn(&str, &CertificateAuthority) -> Result<()> + Send + Sync>;

/// A running signer's view of the CA generations.
pub struct CaRuntime {
    /// Settings.
    pub settings: CaSettings,
    /// Lifetime rules of issued certificates.
    pub issuance: IssuancePolicy,
    /// Metrics.
    pub metrics: CaMetrics,
    /// Whether the schedule runs the steps.
    pub auto_roll: bool,
    /// Where bundles go.
    pub publication: Publication,
    /// Who else follows the roll.
    pub follower: Option<TrustFollower>,
}

impl CaRuntime {
    /// The runtime for `settings` as `config` asks (auto roll, bundle file), writing bundles
    /// through `client`.
    pub fn connect(
        settings: CaSettings,
        config: &crate::config::SignerConfig,
        client: kube::Client,
        metrics: CaMetrics,
    ) -> Result<Self> {
        Ok(Self {
            settings,
            issuance: config.issuance()?,
            metrics,
            auto_roll: config.ca_auto_roll,
            publication: Publication::new(Some(client), config.trust_bundle_out.clone()),
            follower: None,
        })
    }

    fn steps(&self) -> Steps<'_, Publication> {
        Steps {
            settings: &self.settings,
            disk: &Durable,
            publisher: &self.publication,
            share: &NoFleetStatus,
        }
    }

    /// The PEM roots of every trusted generation.
    pub fn trusted_roots(&self, state: &CaGenerations) -> Result<String> {
        self.steps().bundle(state.trusted())
    }

    /// Opens the journal (importing generation 1 on first use) and returns the signer of its
    /// active generation.
    pub fn start(&self) -> Result<(CaGenerations, Arc<ArcSwap<Signer>>)> {
        let now = SystemTime::now();
        let state = {
            let _lock = self.settings.dir.lock()?;
            self.steps().open(now)?
        };
        let signer = build_signer(&self.settings.dir, state.signing_chain(now), self.issuance)?;
        self.metrics.observe(&state, &self.settings.dir);
        Ok((state, Arc::new(ArcSwap::from_pointee(signer))))
    }

    /// Follows the journal every reload interval until `shutdown`: swaps the signer when the
    /// active generation or its chain changes, rewrites the bundles from the journal at start and
    /// whenever it changes (healing a crash between a retire's journal and bundle writes), and
    /// runs due steps with `--ca-auto-roll`.
    pub async fn run(
        self,
        mut state: CaGenerations,
        signer: Arc<ArcSwap<Signer>>,
        shutdown: CancellationToken,
    ) {
        let mut chain = state.signing_chain(SystemTime::now());
        // The journal the bundles were last written for; what the follower was last told.
        let mut synced: Option<CaGenerations> = None;
        let mut followed: Option<(String, SigningChain)> = None;
        let mut ticks = tokio::time::interval(self.settings.reload_interval);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = SystemTime::now();
            if self.auto_roll
                && let Err(e) = self.auto_step(&state, now).await
            {
                tracing::warn!(error = %kubecert_cli::error_chain(&*e), "CA roll step");
            }
            match self.settings.dir.read_journal() {
                Ok(Some(read)) => state = read,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %kubecert_cli::error_chain(&*e), "reading the CA journal"),
            }
            if synced.as_ref() != Some(&state) {
                match self.sync_bundles().await {
                    Ok(true) => synced = Some(state.clone()),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %kubecert_cli::error_chain(&*e), "writing the trust bundles")
                    }
                }
            }
            self.metrics.observe(&state, &self.settings.dir);
            let now_chain = state.signing_chain(now);
            if now_chain != chain {
                match build_signer(&self.settings.dir, now_chain, self.issuance) {
                    Ok(new) => {
                        signer.store(Arc::new(new));
                        chain = now_chain;
                        tracing::info!(
                            generation = chain.generation,
                            cross_certificate = chain.with_cross_certificate,
                            "signing with a new CA generation"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %kubecert_cli::error_chain(&*e), "loading the active CA generation")
                    }
                }
            }
            if let Err(e) = self.follow(&state, chain, &signer, &mut followed) {
                tracing::warn!(error = %kubecert_cli::error_chain(&*e), "following the CA roll");
            }
        }
    }

    /// Tells the follower when the trusted roots or the signing chain changed.
    fn follow(
        &self,
        state: &CaGenerations,
        chain: SigningChain,
        signer: &ArcSwap<Signer>,
        followed: &mut Option<(String, SigningChain)>,
    ) -> Result<()> {
        let Some(follower) = &self.follower else { return Ok(()) };
        let now = (self.trusted_roots(state)?, chain);
        if followed.as_ref() == Some(&now) {
            return Ok(());
        }
        let signer = signer.load();
        let ca = signer.authorities().get(kubecert_csr::SIGNER_KUBE_APISERVER_CLIENT_KUBELET);
        follower(&now.0, ca.context("no signing CA")?)?;
        *followed = Some(now);
        Ok(())
    }

    /// Writes the bundles as the journal says, under the lock (a command holding it may be
    /// between its bundle and journal writes): `false` when a command holds it.
    pub(super) async fn sync_bundles(&self) -> Result<bool> {
        let Some(_lock) = self.settings.dir.try_lock()? else { return Ok(false) };
        if let Some(state) = self.settings.dir.read_journal()? {
            self.steps().sync_bundles(&state).await?;
        }
        Ok(true)
    }

    pub(super) async fn auto_step(&self, state: &CaGenerations, now: SystemTime) -> Result<()> {
        let steps = self.steps();
        let until = steps.retiring_issued_until(state)?;
        let Some(step) = state.due(now, &self.settings.schedule, &self.settings.rules, until) else {
            return Ok(());
        };
        // A `signer ca` command holds the lock: try again next tick.
        let Some(_lock) = self.settings.dir.try_lock()? else { return Ok(()) };
        if let Transition::Unchanged(why) = steps.run(step, now).await? {
            tracing::debug!(?step, %why, "CA roll step changed nothing");
        }
        Ok(())
    }
}
