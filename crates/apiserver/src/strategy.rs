//! The CSR registry strategy (SPEC A-1…A-5): what the server itself changes on create and on
//! each update path, before validation. Pure: `now` is an argument.

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest as Csr, CertificateSigningRequestCondition as Condition,
    CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::auth::UserInfo;
use crate::validation::UpdatePath;

/// the requester fields come from the authenticated user; status starts empty.
pub(crate) fn prepare_for_create(csr: &mut Csr, user: &UserInfo) {
    let spec = &mut csr.spec;
    spec.username = Some(user.name.clone());
    spec.uid = (!user.uid.is_empty()).then(|| user.uid.clone());
    spec.groups = (!user.groups.is_empty()).then(|| user.groups.clone());
    spec.extra = (!user.extra.is_empty()).then(|| user.extra.clone());
    csr.status = Some(CertificateSigningRequestStatus::default());
}

fn conditions_mut(csr: &mut Csr) -> &mut Vec<Condition> {
    csr.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new)
}

fn conditions(csr: &Csr) -> &[Condition] {
    csr.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or(&[])
}

/// A-2…A-4: resets what the update path may not change.
pub(crate) fn prepare_for_update(new: &mut Csr, old: &Csr, path: UpdatePath, now: &Time) {
    new.spec = old.spec.clone();
    match path {
        UpdatePath::Main => new.status = old.status.clone(),
        UpdatePath::Status => {
            for t in ["Approved", "Denied"] {
                preserve_condition_instances(new, old, t);
            }
            populate_condition_timestamps(new, old, now);
        }
        UpdatePath::Approval => {
            populate_condition_timestamps(new, old, now);
            let submitted = new.status.as_ref().and_then(|s| s.conditions.clone());
            let mut status = old.status.clone().unwrap_or_default();
            status.conditions = submitted;
            new.status = Some(status);
        }
    }
    normalize_status(new);
}

/// Keeps `status.conditions` absent rather than an empty list, as Go's omitempty does.
fn normalize_status(csr: &mut Csr) {
    if let Some(status) = csr.status.as_mut()
        && status.conditions.as_ref().is_some_and(Vec::is_empty)
    {
        status.conditions = None;
    }
}

/// Copies the stored instances of condition type `t` over the new ones when their count did
/// not change.
fn preserve_condition_instances(new: &mut Csr, old: &Csr, t: &str) {
    let old_instances: Vec<Condition> = conditions(old).iter().filter(|c| c.type_ == t).cloned().collect();
    let new_indices: Vec<usize> =
        conditions(new).iter().enumerate().filter(|(_, c)| c.type_ == t).map(|(i, _)| i).collect();
    if old_instances.len() != new_indices.len() {
        return;
    }
    let list = conditions_mut(new);
    for (i, c) in new_indices.into_iter().zip(old_instances) {
        list[i] = c;
    }
}

///
fn populate_condition_timestamps(new: &mut Csr, old: &Csr, now: &Time) {
    let old_conditions = conditions(old).to_vec();
    let Some(list) = new.status.as_mut().and_then(|s| s.conditions.as_mut()) else {
        return;
    };
    for c in list {
        if c.last_update_time.is_none() {
            c.last_update_time = Some(now.clone());
        }
        if c.last_transition_time.is_none() {
            let previous = old_conditions
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status && o.last_transition_time.is_some())
                .and_then(|o| o.last_transition_time.clone());
            c.last_transition_time = Some(previous.unwrap_or_else(|| now.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    fn cond(t_: &str, status: &str, transition: Option<Time>) -> Condition {
        Condition {
            type_: t_.into(),
            status: status.into(),
            last_transition_time: transition,
            ..Condition::default()
        }
    }

    fn csr_with(conditions: Vec<Condition>, cert: &[u8]) -> Csr {
        let mut c = Csr::default();
        c.spec.signer_name = "example.com/x".into();
        c.status = Some(CertificateSigningRequestStatus {
            conditions: Some(conditions),
            certificate: (!cert.is_empty()).then(|| ByteString(cert.to_vec())),
        });
        c
    }

    #[test]
    fn create_sets_requester_and_clears_status() {
        let mut c = csr_with(vec![cond("Approved", "True", None)], b"x");
        c.spec.username = Some("forged".into());
        c.spec.groups = Some(vec!["system:masters".into()]);
        let user = UserInfo::authenticated("system:node:n1", vec!["system:nodes".into()]);
        prepare_for_create(&mut c, &user);
        assert_eq!(c.spec.username.as_deref(), Some("system:node:n1"));
        assert_eq!(c.spec.groups, Some(vec!["system:nodes".into(), "system:authenticated".into()]));
        assert_eq!(c.spec.uid, None);
        assert_eq!(c.status, Some(CertificateSigningRequestStatus::default()));
    }

    #[test]
    fn main_update_keeps_spec_and_status() {
        let old = csr_with(vec![cond("Failed", "True", Some(t(1)))], b"");
        let mut new = csr_with(vec![cond("Approved", "True", None)], b"cert");
        new.spec.signer_name = "other.io/y".into();
        prepare_for_update(&mut new, &old, UpdatePath::Main, &t(10));
        assert_eq!(new.spec, old.spec);
        assert_eq!(new.status, old.status);
    }

    #[test]
    fn status_update_restores_approval_conditions() {
        let old = csr_with(vec![cond("Approved", "True", Some(t(5)))], b"");
        let mut new =
            csr_with(vec![cond("Approved", "True", Some(t(99))), cond("Failed", "True", None)], b"cert");
        prepare_for_update(&mut new, &old, UpdatePath::Status, &t(10));
        let cs = conditions(&new);
        assert_eq!(cs[0].last_transition_time, Some(t(5)));
        assert_eq!(cs[1].last_transition_time, Some(t(10)));
        assert_eq!(cs[1].last_update_time, Some(t(10)));
        assert!(new.status.unwrap().certificate.is_some());
    }

    #[test]
    fn approval_update_keeps_only_conditions() {
        let old = csr_with(vec![cond("Approved", "True", Some(t(5)))], b"");
        let mut new = csr_with(vec![cond("Approved", "True", None)], b"cert");
        prepare_for_update(&mut new, &old, UpdatePath::Approval, &t(10));
        assert_eq!(conditions(&new)[0].last_transition_time, Some(t(5)));
        assert_eq!(conditions(&new)[0].last_update_time, Some(t(10)));
        assert!(new.status.unwrap().certificate.is_none());
    }
}
