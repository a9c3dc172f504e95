//! CA generations: rolling the cluster CA with overlap, as a pure state machine.
//!
//! A generation is one CA key and its self-signed root. Exactly one generation is `Active` (it
//! signs); a roll adds the next one and moves it through
//! `Prepared → Published → Active → Retiring → Retired`:
//!
//! - **prepare** makes the new key, its root and a cross-certificate of the new root signed by
//!   the active key (the edge makes them; [`CaGenerations::plan_prepare`] says with which
//!   validity). Nothing trusts it yet.
//! - **publish**: the new root joins the trust bundles ([`CaGenerations::trusted`]).
//! - **activate**: the new key signs; the old generation becomes `Retiring` (still trusted, no
//!   longer signing). Issued chains are leaf + cross-certificate while the old root is still
//!   trusted ([`CaGenerations::signing_chain`]), so a client that only has the old root verifies
//!   them too.
//! - **retire**: once every leaf the old key signed has expired, the old root leaves the bundles.
//!
//! Preconditions are checked here; a refused transition leaves the state unchanged and says why.
//! Every command is idempotent: asking for a state that already holds answers
//! [`Transition::Unchanged`]. Times are whole Unix seconds so that the journal (JSON) carries
//! them exactly; every function takes `now` as an argument.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Where a generation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Key, root and cross-certificate exist; no one trusts the root yet.
    Prepared,
    /// The root is in the trust bundles; the key does not sign yet.
    Published,
    /// The key signs every new certificate.
    Active,
    /// Replaced by a newer generation: still trusted, signs nothing, waits for its last leaf to
    /// expire.
    Retiring,
    /// Out of the trust bundles.
    Retired,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 5] =
        [Phase::Prepared, Phase::Published, Phase::Active, Phase::Retiring, Phase::Retired];

    /// The name used in the journal, `signer ca status` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prepared => "prepared",
            Phase::Published => "published",
            Phase::Active => "active",
            Phase::Retiring => "retiring",
            Phase::Retired => "retired",
        }
    }

    /// Whether the root of a generation in this phase belongs in the trust bundles.
    pub fn is_trusted(self) -> bool {
        matches!(self, Phase::Published | Phase::Active | Phase::Retiring)
    }
}

/// One CA generation as the journal records it. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// 1 for the first CA, then one more per roll.
    pub id: u32,
    /// Where it is in its life.
    pub phase: Phase,
    /// The root's NotBefore.
    pub root_not_before: u64,
    /// The root's NotAfter.
    pub root_not_after: u64,
    /// The generation whose key signed this one's cross-certificate (none for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_signed_by: Option<u32>,
    /// The cross-certificate's NotAfter (at most the cross-signer's root NotAfter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_not_after: Option<u64>,
    /// When each phase was entered (`None` for phases it has not reached, or skipped: the first
    /// generation starts active).
    #[serde(default)]
    pub entered: PhaseTimes,
}

/// When a generation entered each phase (Unix seconds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseTimes {
    /// Prepared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared: Option<u64>,
    /// Published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u64>,
    /// Active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<u64>,
    /// Retiring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring: Option<u64>,
    /// Retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<u64>,
}

impl PhaseTimes {
    /// When `phase` was entered.
    pub fn get(&self, phase: Phase) -> Option<u64> {
        match phase {
            Phase::Prepared => self.prepared,
            Phase::Published => self.published,
            Phase::Active => self.active,
            Phase::Retiring => self.retiring,
            Phase::Retired => self.retired,
        }
    }

    fn set(&mut self, phase: Phase, at: u64) {
        let slot = match phase {
            Phase::Prepared => &mut self.prepared,
            Phase::Published => &mut self.published,
            Phase::Active => &mut self.active,
            Phase::Retiring => &mut self.retiring,
            Phase::Retired => &mut self.retired,
        };
        *slot = Some(at);
    }
}

impl Generation {
    fn enter(&mut self, phase: Phase, now: u64) {
        self.phase = phase;
        self.entered.set(phase, now);
    }
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The state changed: journal it.
    Changed,
    /// The state already was what the command leads to; nothing to write.
    Unchanged(String),
}

/// The validity of a generation about to be prepared: the edge makes a key, a self-signed root
/// valid `not_before..not_after` and a cross-certificate of it signed by generation
/// `cross_signer`, valid until `cross_not_after`, then calls [`CaGenerations::commit_prepare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreparePlan {
    /// The new generation's id.
    pub id: u32,
    /// Root NotBefore (Unix seconds).
    pub not_before: u64,
    /// Root NotAfter (Unix seconds).
    pub not_after: u64,
    /// The active generation, whose key signs the cross-certificate.
    pub cross_signer: u32,
    /// Cross-certificate NotAfter: the new root's, but never after the cross-signer's root.
    pub cross_not_after: u64,
}

/// Which certificates an issued leaf is sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningChain {
    /// The generation whose key signs.
    pub generation: u32,
    /// Whether the signing generation's cross-certificate follows the leaf: while the
    /// generation that signed it is still trusted and the cross-certificate valid.
    pub with_cross_certificate: bool,
}

/// What a share-of-nodes check found (the fleet view answers it; see
/// [`ActivationRules::min_trusting_share`]).
#[derive(Clone, Debug, PartialEq)]
pub enum TrustingShare {
    /// This share (0.0–1.0) of the nodes reports trusting the generation.
    Known(f64),
    /// No source of node reports: the reason, shown in the refusal.
    Unknown(String),
}

/// When activation is allowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationRules {
    /// How long the new root must have been published.
    pub min_publish_age: Duration,
    /// If set, the share of nodes that must report trusting the new root.
    pub min_trusting_share: Option<f64>,
}

/// The automatic roll: when to prepare and when to activate, as fractions of the active root's
/// lifetime, and how long a new root lives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Lifetime of a root made by prepare.
    pub ca_lifetime: Duration,
    /// Prepare (and publish) at this fraction of the active root's lifetime (default 1/2).
    pub prepare_at: f64,
    /// Activate at this fraction (default 5/6), once the activation rules allow.
    pub activate_at: f64,
}

/// Default [`Schedule::prepare_at`].
pub const DEFAULT_PREPARE_AT: f64 = 0.5;
/// Default [`Schedule::activate_at`].
pub const DEFAULT_ACTIVATE_AT: f64 = 5.0 / 6.0;

impl Schedule {
    /// A schedule with the default fractions; checks that 0 < prepare < activate < 1 and that
    /// the lifetime is at least a minute.
    pub fn new(ca_lifetime: Duration, prepare_at: f64, activate_at: f64) -> Result<Self, Error> {
        if !(0.0 < prepare_at && prepare_at < activate_at && activate_at < 1.0) {
            return Err(Error::Config(format!(
                "CA schedule: need 0 < prepare ({prepare_at}) < activate ({activate_at}) < 1"
            )));
        }
        if ca_lifetime < Duration::from_secs(60) {
            return Err(Error::Config(format!("CA lifetime {ca_lifetime:?} is shorter than a minute")));
        }
        Ok(Self { ca_lifetime, prepare_at, activate_at })
    }

    /// When the schedule prepares the successor of `active` (Unix seconds).
    pub fn prepare_time(&self, active: &Generation) -> u64 {
        self.point(active, self.prepare_at)
    }

    /// When the schedule activates the successor of `active` (Unix seconds), publish age allowing.
    pub fn activate_time(&self, active: &Generation) -> u64 {
        self.point(active, self.activate_at)
    }

    fn point(&self, generation: &Generation, fraction: f64) -> u64 {
        let lifetime = generation.root_not_after.saturating_sub(generation.root_not_before);
        // Lifetimes fit f64's 53-bit mantissa; truncation to whole seconds is the intent.
        generation.root_not_before + (lifetime as f64 * fraction) as u64
    }
}

/// A step the automatic schedule wants now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Make the next generation.
    Prepare,
    /// Publish the prepared one.
    Publish,
    /// Activate the published one.
    Activate,
    /// Retire the retiring one.
    Retire,
}

/// The journal's content: every generation, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaGenerations {
    generations: Vec<Generation>,
}

/// Whole Unix seconds of `t` (0 before 1970).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The time `secs` Unix seconds stand for.
pub fn from_unix_seconds(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn refused(command: &'static str, reason: impl Into<String>) -> Error {
    Error::CaRollRefused { command, reason: reason.into() }
}

impl CaGenerations {
    /// The first generation, active from `now`, for an existing root valid
    /// `root_not_before..root_not_after`.
    pub fn initial(root_not_before: SystemTime, root_not_after: SystemTime, now: SystemTime) -> Self {
        let mut first = Generation {
            id: 1,
            phase: Phase::Active,
            root_not_before: unix_seconds(root_not_before),
            root_not_after: unix_seconds(root_not_after),
            cross_signed_by: None,
            cross_not_after: None,
            entered: PhaseTimes::default(),
        };
        first.entered.set(Phase::Active, unix_seconds(now));
        Self { generations: vec![first] }
    }

    /// Reads and checks a journal (untrusted bytes: a hand-edited or corrupt file is an error
    /// naming what is wrong, never a panic).
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let state: Self =
            serde_json::from_slice(bytes).map_err(|e| Error::CaJournal(format!("does not parse: {e}")))?;
        state.check().map_err(Error::CaJournal)?;
        Ok(state)
    }

    /// The journal as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// The invariants every reachable state keeps: ids 1, 2, … in order; exactly one active
    /// generation; at most one prepared or published one, newer than the active one; at most one
    /// retiring one, older than the active one; retired ones older than all others; each
    /// generation's phase times present for the phases it went through and never decreasing.
    pub fn check(&self) -> Result<(), String> {
        if self.generations.is_empty() {
            return Err("no generations".into());
        }
        let mut active = None;
        for (index, generation) in self.generations.iter().enumerate() {
            let id = generation.id;
            if usize::try_from(id).ok() != Some(index + 1) {
                return Err(format!("generation ids must be 1, 2, …; found {id} at position {}", index + 1));
            }
            if generation.root_not_after <= generation.root_not_before {
                return Err(format!("generation {id}: root NotAfter is not after NotBefore"));
            }
            match (generation.cross_signed_by, generation.cross_not_after) {
                (None, None) => {}
                (Some(by), Some(until)) if by < id && until <= generation.root_not_after => {}
                _ => return Err(format!("generation {id}: inconsistent cross-certificate")),
            }
            let mut last = 0;
            for phase in Phase::ALL {
                let entered = generation.entered.get(phase);
                // The first generation of a journal starts active; a later one went through every
                // phase up to its own.
                let required = phase <= generation.phase && (id > 1 || phase >= Phase::Active);
                match entered {
                    Some(t) if phase > generation.phase => {
                        return Err(format!(
                            "generation {id} is {} but entered {} at {t}",
                            generation.phase.as_str(),
                            phase.as_str()
                        ));
                    }
                    Some(t) if t < last => {
                        return Err(format!("generation {id}: {} time goes backwards", phase.as_str()));
                    }
                    Some(t) => last = t,
                    None if required => {
                        return Err(format!("generation {id}: no time for phase {}", phase.as_str()));
                    }
                    None => {}
                }
            }
            if generation.phase == Phase::Active {
                if active.is_some() {
                    return Err("more than one active generation".into());
                }
                active = Some(index);
            }
        }
        let Some(active) = active else { return Err("no active generation".into()) };
        for (index, generation) in self.generations.iter().enumerate() {
            let allowed: &[Phase] = if index < active {
                if index + 1 == active { &[Phase::Retiring, Phase::Retired] } else { &[Phase::Retired] }
            } else if index == active {
                &[Phase::Active]
            } else if index == active + 1 {
                &[Phase::Prepared, Phase::Published]
            } else {
                &[]
            };
            if !allowed.contains(&generation.phase) {
                return Err(format!(
                    "generation {} cannot be {} next to active generation {}",
                    generation.id,
                    generation.phase.as_str(),
                    active + 1
                ));
            }
        }
        Ok(())
    }

    /// Every generation, oldest first.
    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// The generation with this id.
    pub fn get(&self, id: u32) -> Option<&Generation> {
        self.generations.iter().find(|g| g.id == id)
    }

    fn find(&self, phase: Phase) -> Option<&Generation> {
        self.generations.iter().find(|g| g.phase == phase)
    }

    fn find_mut(&mut self, phase: Phase) -> Option<&mut Generation> {
        self.generations.iter_mut().find(|g| g.phase == phase)
    }

    /// The generation that signs.
    pub fn active(&self) -> &Generation {
        // check() guarantees one; fall back to the newest rather than panic.
        self.find(Phase::Active).unwrap_or_else(|| &self.generations[self.generations.len() - 1])
    }

    /// The prepared or published generation, if a roll is under way.
    pub fn pending(&self) -> Option<&Generation> {
        self.generations.iter().find(|g| matches!(g.phase, Phase::Prepared | Phase::Published))
    }

    /// The retiring generation, if any.
    pub fn retiring(&self) -> Option<&Generation> {
        self.find(Phase::Retiring)
    }

    /// The generations whose roots belong in the trust bundles, oldest first.
    pub fn trusted(&self) -> impl Iterator<Item = &Generation> {
        self.generations.iter().filter(|g| g.phase.is_trusted())
    }

    /// The trusted generations if the prepared one were published too: what `publish` writes
    /// before it journals the change.
    pub fn trusted_after_publish(&self) -> impl Iterator<Item = &Generation> {
        self.generations.iter().filter(|g| g.phase.is_trusted() || g.phase == Phase::Prepared)
    }

    /// Which certificates go with a leaf signed at `now`: the active key's, followed by its
    /// cross-certificate while the cross-signer is still trusted and the cross-certificate valid.
    pub fn signing_chain(&self, now: SystemTime) -> SigningChain {
        let active = self.active();
        let now = unix_seconds(now);
        let with_cross_certificate = match (active.cross_signed_by, active.cross_not_after) {
            (Some(by), Some(until)) => {
                self.get(by).is_some_and(|signer| signer.phase.is_trusted()) && now < until
            }
            _ => false,
        };
        SigningChain { generation: active.id, with_cross_certificate }
    }

    /// Whether prepare may run now, and with which validity: no roll under way (else
    /// [`Transition::Unchanged`] through `Ok(None)`), no generation still retiring, the active
    /// root not expired.
    pub fn plan_prepare(&self, now: SystemTime, lifetime: Duration) -> Result<Option<PreparePlan>, Error> {
        if self.pending().is_some() {
            return Ok(None);
        }
        if let Some(retiring) = self.retiring() {
            return Err(refused(
                "prepare",
                format!("generation {} is still retiring; retire it first", retiring.id),
            ));
        }
        let now = unix_seconds(now);
        let active = self.active();
        if now >= active.root_not_after {
            return Err(refused(
                "prepare",
                format!(
                    "the active generation {} expired at {}; it cannot cross-sign a new root",
                    active.id, active.root_not_after
                ),
            ));
        }
        let not_after = now
            .checked_add(lifetime.as_secs())
            .ok_or_else(|| refused("prepare", format!("CA lifetime {lifetime:?} is out of range")))?;
        Ok(Some(PreparePlan {
            id: active.id + 1,
            not_before: now,
            not_after,
            cross_signer: active.id,
            cross_not_after: not_after.min(active.root_not_after),
        }))
    }

    /// Records a prepared generation made according to `plan` (from [`Self::plan_prepare`] on
    /// this very state).
    pub fn commit_prepare(&mut self, plan: &PreparePlan, now: SystemTime) -> Result<Transition, Error> {
        if let Some(pending) = self.pending() {
            return Ok(Transition::Unchanged(format!(
                "generation {} is already {}",
                pending.id,
                pending.phase.as_str()
            )));
        }
        let active = self.active();
        if plan.id != active.id + 1 || plan.cross_signer != active.id || self.retiring().is_some() {
            return Err(refused("prepare", "the state changed since the new generation was planned"));
        }
        let mut generation = Generation {
            id: plan.id,
            phase: Phase::Prepared,
            root_not_before: plan.not_before,
            root_not_after: plan.not_after,
            cross_signed_by: Some(plan.cross_signer),
            cross_not_after: Some(plan.cross_not_after),
            entered: PhaseTimes::default(),
        };
        generation.enter(Phase::Prepared, unix_seconds(now));
        self.generations.push(generation);
        Ok(Transition::Changed)
    }

    /// Prepared → Published.
    pub fn publish(&mut self, now: SystemTime) -> Result<Transition, Error> {
        match self.pending() {
            None => Err(refused("publish", "no generation is prepared; run prepare first")),
            Some(g) if g.phase == Phase::Published => {
                Ok(Transition::Unchanged(format!("generation {} is already published", g.id)))
            }
            Some(_) => {
                let now = unix_seconds(now);
                if let Some(g) = self.find_mut(Phase::Prepared) {
                    g.enter(Phase::Published, now);
                }
                Ok(Transition::Changed)
            }
        }
    }

    /// Published → Active, the active one → Retiring; refused until the new root has been
    /// published for `rules.min_publish_age` and, when configured, enough nodes trust it.
    pub fn activate(
        &mut self,
        now: SystemTime,
        rules: &ActivationRules,
        share: impl FnOnce(u32) -> TrustingShare,
    ) -> Result<Transition, Error> {
        let now_secs = unix_seconds(now);
        let pending = match self.pending() {
            Some(g) => g,
            None => {
                return match self.retiring() {
                    Some(_) => Ok(Transition::Unchanged(format!(
                        "generation {} is already active",
                        self.active().id
                    ))),
                    None => {
                        Err(refused("activate", "no generation is published; run prepare and publish first"))
                    }
                };
            }
        };
        let id = pending.id;
        let Some(published) = pending.entered.published.filter(|_| pending.phase == Phase::Published) else {
            return Err(refused(
                "activate",
                format!("generation {id} is prepared but not published; run publish first"),
            ));
        };
        let age = now_secs.saturating_sub(published);
        let min = rules.min_publish_age.as_secs();
        if age < min {
            return Err(refused(
                "activate",
                format!(
                    "generation {id} has been published for {age}s, less than the minimum publish age of {min}s ({}s to go)",
                    min - age
                ),
            ));
        }
        if now_secs < pending.root_not_before {
            return Err(refused("activate", format!("generation {id}'s root is not valid yet")));
        }
        if let Some(min_share) = rules.min_trusting_share {
            match share(id) {
                TrustingShare::Known(s) if s >= min_share => {}
                TrustingShare::Known(s) => {
                    return Err(refused(
                        "activate",
                        format!(
                            "{:.1}% of nodes report trusting generation {id}; at least {:.1}% must",
                            s * 100.0,
                            min_share * 100.0
                        ),
                    ));
                }
                TrustingShare::Unknown(why) => {
                    return Err(refused(
                        "activate",
                        format!("a minimum trusting share is set but the share is unknown: {why}"),
                    ));
                }
            }
        }
        if let Some(old) = self.find_mut(Phase::Active) {
            old.enter(Phase::Retiring, now_secs);
        }
        if let Some(new) = self.find_mut(Phase::Published) {
            new.enter(Phase::Active, now_secs);
        }
        Ok(Transition::Changed)
    }

    /// Retiring → Retired; refused while a leaf signed by the retiring key may still be valid:
    /// `issued_until` is the latest NotAfter that key issued (`None`: it issued nothing).
    pub fn retire(&mut self, now: SystemTime, issued_until: Option<SystemTime>) -> Result<Transition, Error> {
        let now_secs = unix_seconds(now);
        let Some(retiring) = self.retiring() else {
            return match self.generations.iter().rev().find(|g| g.phase == Phase::Retired) {
                Some(g) => Ok(Transition::Unchanged(format!("generation {} is already retired", g.id))),
                None => Err(refused("retire", "no generation is retiring; activate a new one first")),
            };
        };
        let id = retiring.id;
        if let Some(until) = issued_until.map(unix_seconds)
            && until > now_secs
        {
            return Err(refused(
                "retire",
                format!(
                    "generation {id} may have signed certificates valid until {until} (unix seconds), {}s from now",
                    until - now_secs
                ),
            ));
        }
        if let Some(g) = self.find_mut(Phase::Retiring) {
            g.enter(Phase::Retired, now_secs);
        }
        Ok(Transition::Changed)
    }

    /// What the automatic schedule does now, if anything: retire once the retiring key's leaves
    /// have expired; publish a prepared generation at once; activate at
    /// [`Schedule::activate_at`] once the new root has been published for the minimum age;
    /// prepare at [`Schedule::prepare_at`] of the active root's lifetime.
    pub fn due(
        &self,
        now: SystemTime,
        schedule: &Schedule,
        rules: &ActivationRules,
        retiring_issued_until: Option<SystemTime>,
    ) -> Option<Step> {
        let now_secs = unix_seconds(now);
        if self.retiring().is_some() && retiring_issued_until.is_none_or(|t| unix_seconds(t) <= now_secs) {
            return Some(Step::Retire);
        }
        let active = self.active();
        match self.pending() {
            Some(g) if g.phase == Phase::Prepared => Some(Step::Publish),
            Some(g) => {
                let published = g.entered.published.unwrap_or(u64::MAX);
                let old_enough = now_secs.saturating_sub(published) >= rules.min_publish_age.as_secs();
                (now_secs >= schedule.point(active, schedule.activate_at) && old_enough)
                    .then_some(Step::Activate)
            }
            None if self.retiring().is_none() && now_secs >= schedule.point(active, schedule.prepare_at) => {
                Some(Step::Prepare)
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T0: u64 = 1_700_000_000;
    const DAY: u64 = 86_400;

    fn at(secs: u64) -> SystemTime {
        from_unix_seconds(secs)
    }

    fn rules(min_age: u64) -> ActivationRules {
        ActivationRules { min_publish_age: Duration::from_secs(min_age), min_trusting_share: None }
    }

    fn no_share(_: u32) -> TrustingShare {
        TrustingShare::Unknown("not configured".into())
    }

    fn first() -> CaGenerations {
        CaGenerations::initial(at(T0), at(T0 + 600), at(T0))
    }

    fn prepare(state: &mut CaGenerations, now: u64, lifetime: u64) -> Transition {
        match state.plan_prepare(at(now), Duration::from_secs(lifetime)).unwrap() {
            Some(plan) => state.commit_prepare(&plan, at(now)).unwrap(),
            None => Transition::Unchanged("pending".into()),
        }
    }

    fn reason(result: Result<Transition, Error>) -> String {
        match result {
            Err(Error::CaRollRefused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_whole_roll_goes_through_every_phase_and_is_idempotent() {
        let mut s = first();
        assert_eq!(s.trusted().map(|g| g.id).collect::<Vec<_>>(), [1]);
        assert_eq!(prepare(&mut s, T0 + 300, 600), Transition::Changed);
        let new = s.get(2).unwrap().clone();
        assert_eq!(
            (new.phase, new.root_not_before, new.root_not_after),
            (Phase::Prepared, T0 + 300, T0 + 900)
        );
        assert_eq!(new.cross_signed_by, Some(1));
        assert_eq!(new.cross_not_after, Some(T0 + 600), "not after the old root's expiry");
        assert!(matches!(prepare(&mut s, T0 + 301, 600), Transition::Unchanged(_)));
        assert_eq!(s.trusted().count(), 1, "a prepared root is not trusted yet");
        assert_eq!(s.trusted_after_publish().count(), 2);

        assert_eq!(s.publish(at(T0 + 310)).unwrap(), Transition::Changed);
        assert!(matches!(s.publish(at(T0 + 311)).unwrap(), Transition::Unchanged(_)));
        assert_eq!(s.trusted().map(|g| g.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            s.signing_chain(at(T0 + 311)),
            SigningChain { generation: 1, with_cross_certificate: false }
        );

        let refusal = reason(s.activate(at(T0 + 350), &rules(60), no_share));
        assert!(
            refusal.contains("published for 40s, less than the minimum publish age of 60s (20s to go)"),
            "{refusal}"
        );
        assert_eq!(s.activate(at(T0 + 370), &rules(60), no_share).unwrap(), Transition::Changed);
        assert!(matches!(s.activate(at(T0 + 371), &rules(60), no_share).unwrap(), Transition::Unchanged(_)));
        assert_eq!(s.active().id, 2);
        assert_eq!(s.retiring().unwrap().id, 1);
        assert_eq!(
            s.signing_chain(at(T0 + 371)),
            SigningChain { generation: 2, with_cross_certificate: true }
        );
        assert_eq!(s.trusted().count(), 2);

        let refusal = reason(s.retire(at(T0 + 400), Some(at(T0 + 430))));
        assert!(refusal.contains("valid until 1700000430 (unix seconds), 30s from now"), "{refusal}");
        assert_eq!(s.retire(at(T0 + 430), Some(at(T0 + 430))).unwrap(), Transition::Changed);
        assert!(matches!(s.retire(at(T0 + 431), None).unwrap(), Transition::Unchanged(_)));
        assert_eq!(s.trusted().map(|g| g.id).collect::<Vec<_>>(), [2]);
        assert_eq!(
            s.signing_chain(at(T0 + 431)),
            SigningChain { generation: 2, with_cross_certificate: false }
        );
        let g1 = s.get(1).unwrap();
        assert_eq!(g1.entered.retiring, Some(T0 + 370));
        assert_eq!(g1.entered.retired, Some(T0 + 430));
        s.check().unwrap();
        assert_eq!(CaGenerations::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn commands_out_of_order_are_refused_with_a_reason() {
        let mut s = first();
        assert!(reason(s.publish(at(T0))).contains("no generation is prepared"));
        assert!(reason(s.activate(at(T0), &rules(0), no_share)).contains("no generation is published"));
        assert!(reason(s.retire(at(T0), None)).contains("no generation is retiring"));
        prepare(&mut s, T0 + 10, 600);
        assert!(reason(s.activate(at(T0 + 20), &rules(0), no_share)).contains("prepared but not published"));
        s.publish(at(T0 + 20)).unwrap();
        s.activate(at(T0 + 30), &rules(0), no_share).unwrap();
        let err = s.plan_prepare(at(T0 + 40), Duration::from_secs(600)).unwrap_err().to_string();
        assert!(err.contains("generation 1 is still retiring; retire it first"), "{err}");
        // An expired active root cannot cross-sign.
        let s = first();
        let err = s.plan_prepare(at(T0 + 600), Duration::from_secs(600)).unwrap_err().to_string();
        assert!(err.contains("expired"), "{err}");
    }

    #[test]
    fn the_trusting_share_gates_activation_when_configured() {
        let mut s = first();
        prepare(&mut s, T0 + 10, 600);
        s.publish(at(T0 + 20)).unwrap();
        let gated = ActivationRules { min_publish_age: Duration::ZERO, min_trusting_share: Some(0.9) };
        let refusal = reason(s.activate(at(T0 + 30), &gated, no_share));
        assert!(refusal.contains("the share is unknown: not configured"), "{refusal}");
        let refusal = reason(s.activate(at(T0 + 30), &gated, |id| {
            assert_eq!(id, 2);
            TrustingShare::Known(0.5)
        }));
        assert!(
            refusal.contains("50.0% of nodes report trusting generation 2; at least 90.0% must"),
            "{refusal}"
        );
        assert_eq!(
            s.activate(at(T0 + 30), &gated, |_| TrustingShare::Known(0.95)).unwrap(),
            Transition::Changed
        );
    }

    #[test]
    fn the_schedule_prepares_at_half_and_activates_at_five_sixths() {
        let schedule =
            Schedule::new(Duration::from_secs(600), DEFAULT_PREPARE_AT, DEFAULT_ACTIVATE_AT).unwrap();
        let rules = rules(60);
        let mut s = first();
        assert_eq!(s.due(at(T0 + 299), &schedule, &rules, None), None);
        assert_eq!(s.due(at(T0 + 300), &schedule, &rules, None), Some(Step::Prepare));
        prepare(&mut s, T0 + 300, 600);
        assert_eq!(s.due(at(T0 + 300), &schedule, &rules, None), Some(Step::Publish));
        s.publish(at(T0 + 300)).unwrap();
        assert_eq!(s.due(at(T0 + 499), &schedule, &rules, None), None);
        assert_eq!(s.due(at(T0 + 500), &schedule, &rules, None), Some(Step::Activate));
        s.activate(at(T0 + 500), &rules, no_share).unwrap();
        assert_eq!(s.due(at(T0 + 510), &schedule, &rules, Some(at(T0 + 520))), None);
        assert_eq!(s.due(at(T0 + 520), &schedule, &rules, Some(at(T0 + 520))), Some(Step::Retire));
        s.retire(at(T0 + 520), Some(at(T0 + 520))).unwrap();
        // The new root (T0+300 … T0+900): prepare at T0+600.
        assert_eq!(s.due(at(T0 + 599), &schedule, &rules, None), None);
        assert_eq!(s.due(at(T0 + 600), &schedule, &rules, None), Some(Step::Prepare));
        // A publish too recent holds activation back past 5/6.
        let mut late = first();
        prepare(&mut late, T0 + 480, 600);
        late.publish(at(T0 + 480)).unwrap();
        assert_eq!(late.due(at(T0 + 500), &schedule, &rules, None), None);
        assert_eq!(late.due(at(T0 + 540), &schedule, &rules, None), Some(Step::Activate));
        assert!(Schedule::new(Duration::from_secs(600), 0.9, 0.5).is_err());
        assert!(Schedule::new(Duration::from_secs(10), 0.5, 0.8).is_err());
    }

    #[test]
    fn a_long_lived_ca_keeps_the_cross_certificate_within_the_old_root() {
        let mut s = CaGenerations::initial(at(T0), at(T0 + 3650 * DAY), at(T0));
        prepare(&mut s, T0 + 1825 * DAY, 3650 * DAY);
        let new = s.get(2).unwrap();
        assert_eq!(new.cross_not_after, Some(T0 + 3650 * DAY));
        assert_eq!(new.root_not_after, T0 + 5475 * DAY);
        // Past the cross-certificate's end, leaves go out alone.
        s.publish(at(T0 + 1826 * DAY)).unwrap();
        s.activate(at(T0 + 1827 * DAY), &rules(0), no_share).unwrap();
        assert!(s.signing_chain(at(T0 + 3649 * DAY)).with_cross_certificate);
        assert!(!s.signing_chain(at(T0 + 3650 * DAY)).with_cross_certificate);
    }

    #[test]
    fn corrupt_journals_are_errors_that_say_what_is_wrong() {
        let err = |json: &str| CaGenerations::from_json(json.as_bytes()).unwrap_err().to_string();
        assert!(err("{").contains("CA journal: does not parse"));
        assert!(err(r#"{"generations":[]}"#).contains("no generations"));
        let generation = |id: u32, phase: &str, times: &str| {
            format!(
                r#"{{"id":{id},"phase":"{phase}","root_not_before":1,"root_not_after":100,{}"entered":{{{times}}}}}"#,
                if id > 1 {
                    format!(r#""cross_signed_by":{},"cross_not_after":100,"#, id - 1)
                } else {
                    String::new()
                }
            )
        };
        let journal = |gens: &[String]| format!(r#"{{"generations":[{}]}}"#, gens.join(","));
        let two_active = journal(&[
            generation(1, "active", r#""active":1"#),
            generation(2, "active", r#""prepared":1,"published":1,"active":1"#),
        ]);
        assert!(err(&two_active).contains("more than one active"), "{}", err(&two_active));
        let none_active = journal(&[generation(1, "retired", r#""active":1,"retiring":1,"retired":1"#)]);
        assert!(err(&none_active).contains("no active generation"));
        let backwards = journal(&[
            generation(1, "retiring", r#""active":5,"retiring":4"#),
            generation(2, "active", r#""prepared":1,"published":1,"active":4"#),
        ]);
        assert!(err(&backwards).contains("time goes backwards"), "{}", err(&backwards));
        let missing = journal(&[
            generation(1, "active", r#""active":1"#),
            generation(2, "published", r#""prepared":1"#),
        ]);
        assert!(err(&missing).contains("no time for phase published"), "{}", err(&missing));
        let gap = journal(&[
            generation(1, "active", r#""active":1"#),
            generation(3, "prepared", r#""prepared":1"#),
        ]);
        assert!(err(&gap).contains("found 3 at position 2"), "{}", err(&gap));
        let unknown = r#"{"generations":[],"extra":1}"#;
        assert!(err(unknown).contains("unknown field"));
    }

    /// A command of the random walk.
    #[derive(Clone, Debug)]
    enum Command {
        Wait(u64),
        Prepare(u64),
        Publish,
        Activate { min_age: u64, share: Option<(f64, f64)> },
        Retire { leaves_for: Option<u64> },
        Issue(u64),
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (0u64..400).prop_map(Command::Wait),
            (1u64..2000).prop_map(Command::Prepare),
            Just(Command::Publish),
            (0u64..200, proptest::option::of((0.0f64..1.0, 0.0f64..1.0)))
                .prop_map(|(min_age, share)| Command::Activate { min_age, share }),
            proptest::option::of(0u64..300).prop_map(|leaves_for| Command::Retire { leaves_for }),
            (1u64..300).prop_map(Command::Issue),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random sequences of commands never reach a state that breaks the invariants, a refused
        /// command changes nothing, exactly one generation signs and its root is trusted, and no
        /// generation is retired while a leaf it signed is still valid.
        #[test]
        fn random_commands_never_reach_an_invalid_state(commands in proptest::collection::vec(command(), 1..60)) {
            let mut now = T0;
            let mut state = first();
            // Latest NotAfter issued per generation.
            let mut issued: std::collections::BTreeMap<u32, u64> = Default::default();
            for command in commands {
                let before = state.clone();
                let result = match command {
                    Command::Wait(secs) => { now += secs; Ok(Transition::Unchanged(String::new())) }
                    Command::Prepare(lifetime) => match state.plan_prepare(at(now), Duration::from_secs(lifetime)) {
                        Ok(Some(plan)) => state.commit_prepare(&plan, at(now)),
                        Ok(None) => Ok(Transition::Unchanged(String::new())),
                        Err(e) => Err(e),
                    },
                    Command::Publish => state.publish(at(now)),
                    Command::Activate { min_age, share } => {
                        let rules = ActivationRules {
                            min_publish_age: Duration::from_secs(min_age),
                            min_trusting_share: share.map(|(min, _)| min),
                        };
                        state.activate(at(now), &rules, |_| share.map_or(TrustingShare::Unknown("none".into()), |(_, s)| TrustingShare::Known(s)))
                    }
                    Command::Retire { leaves_for } => {
                        let until = state.retiring().and_then(|g| issued.get(&g.id)).copied();
                        let until = until.or(leaves_for.map(|d| now + d));
                        if let Some(t) = until { issued.entry(state.retiring().map_or(0, |g| g.id)).or_insert(t); }
                        state.retire(at(now), until.map(at))
                    }
                    Command::Issue(ttl) => {
                        let active = state.active();
                        if now < active.root_not_after {
                            let until = (now + ttl).min(active.root_not_after);
                            let entry = issued.entry(active.id).or_insert(until);
                            *entry = (*entry).max(until);
                        }
                        Ok(Transition::Unchanged(String::new()))
                    }
                };
                prop_assert!(state.check().is_ok(), "{:?}", state.check());
                match result {
                    Err(e) => {
                        prop_assert!(matches!(e, Error::CaRollRefused { .. }), "{e}");
                        prop_assert_eq!(&state, &before, "a refused command changed the state");
                    }
                    Ok(Transition::Unchanged(_)) => prop_assert_eq!(&state, &before),
                    Ok(Transition::Changed) => prop_assert_ne!(&state, &before),
                }
                prop_assert!(state.active().phase.is_trusted());
                for g in state.generations() {
                    if g.phase == Phase::Retired {
                        let retired = g.entered.retired.unwrap_or(0);
                        prop_assert!(issued.get(&g.id).is_none_or(|&until| until <= retired),
                            "generation {} retired at {retired} before its leaves expired", g.id);
                    }
                }
                let reparsed = CaGenerations::from_json(&state.to_json());
                prop_assert_eq!(reparsed.ok(), Some(state.clone()));
            }
        }
    }
}
