//! The probe accounting of one agent: which failed probes were a planned outage and which were
//! failures, and how long each restart kept the agent from serving.
//!
//! The harness tells the ledger when it kills the agent ([`Ledger::killed`], just before the
//! SIGKILL) and when the old process is gone and the new one is being spawned
//! ([`Ledger::respawning`], after the old one is reaped); the probe thread records every probe
//! with the instants it started and finished. The rules:
//!
//! - **Starting**: until the agent has served one probe it is bootstrapping, and by design
//!   refuses handshakes until it has a serving certificate (SPEC SV-4); probes are not judged.
//! - **Up**: every probe that does not get `200 OK` is a failure.
//! - **Down**, from the kill until the first probe *started after the respawn* is served: a
//!   refused, reset or cut connection is a planned refusal (the old process is dead, or the new
//!   one does not listen yet); a TLS, certificate or HTTP error or a timeout is still a failure.
//!   The downtime of the restart is that first served probe's finish minus the kill.
//! - A probe that finished before the kill is judged as Up, whenever it is recorded.
//! - An agent still down when the run ends never came back: [`Ledger::failures`] counts that.

use std::time::{Duration, Instant};

use kubecert_tests::probe::Outcome;

/// A restart in progress.
#[derive(Clone, Copy, Debug)]
struct Outage {
    killed_at: Instant,
    /// When the old process was reaped and the new one spawned; `None` until then.
    respawned_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Starting,
    Up,
    Down(Outage),
}

/// Probe counts and restart downtimes of one agent.
#[derive(Debug)]
pub struct Ledger {
    phase: Phase,
    served: u64,
    planned_refusals: u64,
    failed_probes: u64,
    last_failure: Option<String>,
    downtimes: Vec<Duration>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            phase: Phase::Starting,
            served: 0,
            planned_refusals: 0,
            failed_probes: 0,
            last_failure: None,
            downtimes: Vec::new(),
        }
    }
}

impl Ledger {
    /// The harness is about to SIGKILL the agent.
    pub fn killed(&mut self, at: Instant) {
        self.phase = Phase::Down(Outage { killed_at: at, respawned_at: None });
    }

    /// The killed process has been reaped; the new one is spawned now.
    pub fn respawning(&mut self, at: Instant) {
        if let Phase::Down(outage) = &mut self.phase {
            outage.respawned_at = Some(at);
        }
    }

    /// Records one probe, `started` and `finished` as the probe thread measured them.
    pub fn record(&mut self, started: Instant, finished: Instant, outcome: Outcome) {
        let phase = match self.phase {
            Phase::Down(outage) if finished < outage.killed_at => Phase::Up,
            phase => phase,
        };
        match (phase, outcome) {
            (Phase::Starting, Outcome::Served) => {
                self.served += 1;
                self.phase = Phase::Up;
            }
            (Phase::Starting, _) => {}
            (_, Outcome::Served) => {
                self.served += 1;
                if let Phase::Down(outage) = phase
                    && outage.respawned_at.is_some_and(|respawned| started >= respawned)
                {
                    self.downtimes.push(finished.saturating_duration_since(outage.killed_at));
                    self.phase = Phase::Up;
                }
            }
            (Phase::Down(_), Outcome::ConnectionLost(_)) => self.planned_refusals += 1,
            (_, Outcome::ConnectionLost(error) | Outcome::Failed(error)) => {
                self.failed_probes += 1;
                self.last_failure = Some(error);
            }
        }
    }

    /// Whether a restart is in progress (the prober then probes more often, for the downtime's
    /// sake).
    pub fn is_down(&self) -> bool {
        matches!(self.phase, Phase::Down(_))
    }

    /// Whether the agent has served at least once and is not down.
    pub fn is_serving(&self) -> bool {
        matches!(self.phase, Phase::Up)
    }

    /// Probes answered `200 OK`.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// Refused or lost connections while the agent was down on purpose.
    pub fn planned_refusals(&self) -> u64 {
        self.planned_refusals
    }

    /// Kill → first successful probe, for each restart that has ended.
    pub fn downtimes(&self) -> &[Duration] {
        &self.downtimes
    }

    /// What counts against the run: failed probes (with the last error) and, as one more, a
    /// restart that has not ended (the agent never served again).
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.failed_probes > 0 {
            failures.push(format!(
                "{} failed probes (last: {})",
                self.failed_probes,
                self.last_failure.as_deref().unwrap_or_default()
            ));
        }
        if self.is_down() {
            failures.push("killed by the harness and never served again".to_owned());
        }
        failures
    }

    /// Failed probes so far (a restart that has not ended is not counted here).
    pub fn failed_probes(&self) -> u64 {
        self.failed_probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What happens to the ledger, in order; times are milliseconds after an origin.
    #[derive(Clone, Copy)]
    enum Event {
        Kill(u64),
        Respawn(u64),
        /// started, finished, outcome.
        Probe(u64, u64, Kind),
    }

    #[derive(Clone, Copy)]
    enum Kind {
        Ok,
        Refused,
        Tls,
    }

    use Event::{Kill, Probe, Respawn};
    use Kind::{Ok, Refused, Tls};

    /// (served, planned refusals, failed probes, downtimes in ms, down at the end).
    type Expected = (u64, u64, u64, &'static [u64], bool);

    fn replay(events: &[Event]) -> Ledger {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        let mut ledger = Ledger::default();
        for event in events {
            match *event {
                Kill(t) => ledger.killed(at(t)),
                Respawn(t) => ledger.respawning(at(t)),
                Probe(started, finished, kind) => {
                    let outcome = match kind {
                        Ok => Outcome::Served,
                        Refused => Outcome::ConnectionLost("Connection refused (os error 111)".into()),
                        Tls => Outcome::Failed("invalid peer certificate: Expired".into()),
                    };
                    ledger.record(at(started), at(finished), outcome);
                }
            }
        }
        ledger
    }

    #[test]
    fn probes_are_judged_by_what_the_harness_did_to_the_agent() {
        let cases: &[(&str, &[Event], Expected)] = &[
            (
                "errors while bootstrapping are not judged",
                &[Probe(0, 1, Refused), Probe(10, 11, Tls), Probe(20, 21, Ok), Probe(30, 31, Ok)],
                (2, 0, 0, &[], false),
            ),
            (
                "a refusal while up is a failure",
                &[Probe(0, 1, Ok), Probe(10, 11, Refused)],
                (1, 0, 1, &[], false),
            ),
            (
                "a TLS error while up is a failure",
                &[Probe(0, 1, Ok), Probe(10, 11, Tls)],
                (1, 0, 1, &[], false),
            ),
            (
                "refusals between kill and the first served probe are planned; downtime kill -> served",
                &[
                    Probe(0, 1, Ok),
                    Kill(100),
                    Probe(101, 102, Refused),
                    Respawn(110),
                    Probe(112, 113, Refused),
                    Probe(150, 160, Ok),
                    Probe(200, 201, Ok),
                ],
                (3, 2, 0, &[60], false),
            ),
            (
                "the new process not listening yet is part of the outage",
                &[Probe(0, 1, Ok), Kill(100), Respawn(105), Probe(106, 107, Refused), Probe(140, 141, Ok)],
                (2, 1, 0, &[41], false),
            ),
            (
                "a TLS error during the outage is still a failure",
                &[Probe(0, 1, Ok), Kill(100), Respawn(105), Probe(106, 107, Tls), Probe(140, 141, Ok)],
                (2, 0, 1, &[41], false),
            ),
            (
                "a refusal after the restart has served once is a failure",
                &[Probe(0, 1, Ok), Kill(100), Respawn(105), Probe(140, 141, Ok), Probe(150, 151, Refused)],
                (2, 0, 1, &[41], false),
            ),
            (
                "a probe served by the old process before the kill does not end the outage",
                &[Probe(0, 1, Ok), Kill(100), Probe(99, 101, Ok), Respawn(110), Probe(111, 112, Refused)],
                (2, 1, 0, &[], true),
            ),
            (
                "a probe served before the respawn does not end the outage",
                &[Probe(0, 1, Ok), Kill(100), Probe(101, 104, Ok), Respawn(110), Probe(130, 131, Ok)],
                (3, 0, 0, &[31], false),
            ),
            (
                "a refusal that finished before the kill is a failure even if recorded after it",
                &[Probe(0, 1, Ok), Kill(100), Probe(90, 95, Refused)],
                (1, 0, 1, &[], true),
            ),
            (
                "a connection cut by the kill is planned",
                &[Probe(0, 1, Ok), Kill(100), Probe(98, 102, Refused)],
                (1, 1, 0, &[], true),
            ),
            (
                "an agent that never comes back stays down",
                &[
                    Probe(0, 1, Ok),
                    Kill(100),
                    Respawn(105),
                    Probe(106, 107, Refused),
                    Probe(200, 201, Refused),
                ],
                (1, 2, 0, &[], true),
            ),
            (
                "two restarts, two downtimes",
                &[
                    Probe(0, 1, Ok),
                    Kill(100),
                    Respawn(101),
                    Probe(110, 120, Ok),
                    Kill(1000),
                    Respawn(1001),
                    Probe(1002, 1003, Refused),
                    Probe(1200, 1250, Ok),
                ],
                (3, 1, 0, &[20, 250], false),
            ),
        ];
        for (name, events, (served, planned, failed, downtimes, down)) in cases {
            let ledger = replay(events);
            let measured: Vec<u64> = ledger.downtimes().iter().map(|d| d.as_millis() as u64).collect();
            assert_eq!(ledger.served(), *served, "{name}: served");
            assert_eq!(ledger.planned_refusals(), *planned, "{name}: planned refusals");
            assert_eq!(ledger.failed_probes(), *failed, "{name}: failed probes");
            assert_eq!(measured, *downtimes, "{name}: downtimes");
            assert_eq!(ledger.is_down(), *down, "{name}: down at the end");
        }
    }

    #[test]
    fn failures_name_the_last_error_and_a_restart_that_never_ended() {
        let ledger = replay(&[Probe(0, 1, Ok), Probe(10, 11, Tls), Kill(100), Respawn(105)]);
        assert_eq!(
            ledger.failures(),
            [
                "1 failed probes (last: invalid peer certificate: Expired)",
                "killed by the harness and never served again"
            ]
        );
        assert!(replay(&[Probe(0, 1, Ok)]).failures().is_empty());
    }
}
