//! Integration tests of the embedded API server: kube-rs, kubectl, negative cases, durability.

mod common;
mod durability;
mod kube_rs;
mod kubectl;
mod measure;
mod negative;
mod trust_bundles;
