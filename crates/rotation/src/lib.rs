//! When to rotate a node certificate, and the loop that does it.
//!
//! This crate owns two things. The pure half ([`rotation_deadline`], [`retry_delay`],
//! [`template_change_cancels_request`], [`overdue_by`], …) implements the kubelet's rotation
//! rules (SPEC §3.5, M-2…M-16): a deadline at a random 70–90 % of the certificate's lifetime,
//! forced rotation when there is no usable certificate, backoff of 2, 4, 8, 16 s then every
//! 32 s, and the template-change rule. It takes `now` and the random draw as arguments and reads
//! no clock. The loop ([`Rotator`]) runs those rules on tokio: a new key for every rotation, a
//! request through a [`CertificateSource`], the result to a [`CredentialsSink`], and a
//! [`RotationStatus`] on a watch channel, with a "rotation overdue" warning when the deadline
//! has passed and nothing has succeeded for a while (see [`overdue_threshold`]).
//!
//! It does not talk to the API, touch files or know about TLS: the node agent implements the
//! source (CSR create and wait), the sink (store commit, identity swap, connection drain) and the
//! metrics over the status. Loading the certificate in use at start-up (store or bootstrap data)
//! is also the caller's job; the result is passed in as an [`InitialCertificate`].
//!
//! `kubecert-k8s`'s `CsrSource` is a ready source over the Kubernetes API; see
//! `examples/src/bin/mtls-client.rs` in the repository for another agent reusing these crates.

mod error;
mod rotator;
mod schedule;
mod seam;
mod status;
#[cfg(test)]
mod testutil;

pub use error::{BoxError, Error};
pub use rotator::{
    InitialCertificate, LOOP_RESTART_PERIOD, RotationConfig, Rotator, WALL_CLOCK_RECHECK, fixed_template,
};
pub use schedule::{
    BACKOFF_ATTEMPTS, BACKOFF_FACTOR, BACKOFF_INITIAL, BACKOFF_JITTER, BOOTSTRAP_WAIT_TIMEOUT,
    DEADLINE_JITTER_FRACTION, DEADLINE_MIN_FRACTION, Deadline, DeadlineReason, OVERDUE_THRESHOLD_MAX,
    OVERDUE_THRESHOLD_NO_CERTIFICATE, RETRY_PERIOD, ROTATION_WAIT_TIMEOUT, lifetime, overdue_by,
    overdue_threshold, retry_delay, rotation_deadline, satisfies_template, scheduled_deadline,
    template_change_cancels_request,
};
pub use seam::{CertificateRequest, CertificateSource, CredentialsSink, Identity};
pub use status::{Phase, RotationStatus};
