//! `signer token create`: a bootstrap token as `kubeadm token create` makes it (a Secret
//! `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`), printed as
//! `<id>.<secret>`, and optionally a bootstrap kubeconfig for node-agent.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};
use aws_lc_rs::rand::SecureRandom as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kubecert_store::kubeconfig::{
    BootstrapKubeconfig, ClusterEndpoint, Credentials, PemSource, write_kubeconfig,
};

use crate::cli::TokenCreateArgs;
use crate::config::duration;
use crate::controller::client_from_kubeconfig;

const TOKEN_ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `n` characters from `[a-z0-9]`, uniformly (rejection sampling of random bytes).
pub fn random_chars(n: usize) -> Result<String> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut byte = [0u8; 1];
        rng.fill(&mut byte).map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        // 252 = 7 × 36: bytes above it would favour the first characters.
        if byte[0] < 252 {
            out.push(char::from(TOKEN_ALPHABET[usize::from(byte[0] % 36)]));
        }
    }
    Ok(out)
}

/// Whether `group` may be given to a bootstrap token: `system:bootstrappers:` followed by
/// `[a-z0-9:-]{0,255}[a-z0-9]` (SPEC §1).
fn valid_extra_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else { return false };
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '-';
    !rest.is_empty()
        && rest.len() <= 256
        && rest.chars().all(allowed)
        && rest.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The Secret for a token.
fn token_secret(id: &str, secret: &str, expiration: &str, groups: &[String]) -> Secret {
    let mut data: BTreeMap<String, ByteString> = [
        ("token-id", id),
        ("token-secret", secret),
        ("expiration", expiration),
        ("usage-bootstrap-authentication", "true"),
        ("usage-bootstrap-signing", "true"),
        ("description", "Created by kubecert signer token create."),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect();
    if !groups.is_empty() {
        data.insert("auth-extra-groups".into(), ByteString(groups.join(",").into_bytes()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some("kube-system".into()),
            ..ObjectMeta::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        data: Some(data),
        ..Secret::default()
    }
}

pub async fn create(args: TokenCreateArgs) -> Result<()> {
    let ttl = duration("--ttl", &args.ttl)?;
    if let Some(bad) = args.groups.iter().find(|g| !valid_extra_group(g)) {
        bail!("--groups: {bad:?} is not a bootstrap group (system:bootstrappers:[a-z0-9:-]*[a-z0-9])");
    }
    // Read the kubeconfig's cluster before creating anything, so a bad file creates no token.
    let endpoint = match &args.write_bootstrap_kubeconfig {
        Some(_) => Some(cluster_of(&args.kubeconfig)?),
        None => None,
    };
    let client = client_from_kubeconfig(&args.kubeconfig).await?;
    let (id, secret) = (random_chars(6)?, random_chars(16)?);
    let expires = jiff::Timestamp::try_from(SystemTime::now() + ttl).context("--ttl is too long")?;
    let object = token_secret(&id, &secret, &expires.to_string(), &args.groups);
    Api::<Secret>::namespaced(client, "kube-system")
        .create(&PostParams::default(), &object)
        .await
        .context("creating the bootstrap-token Secret in kube-system")?;
    let token = format!("{id}.{secret}");
    if let (Some(path), Some(cluster)) = (&args.write_bootstrap_kubeconfig, endpoint) {
        write_kubeconfig(path, &cluster, &Credentials::Token(token.clone()))?;
        tracing::info!(path = %path.display(), "wrote the bootstrap kubeconfig");
    }
    println!("{token}");
    Ok(())
}

/// The cluster of a kubeconfig with its CA inlined, so the bootstrap kubeconfig can be copied to
/// a node.
fn cluster_of(kubeconfig: &std::path::Path) -> Result<ClusterEndpoint> {
    let loaded = BootstrapKubeconfig::load(kubeconfig)?;
    let mut cluster = loaded.cluster;
    if let Some(ca) = &cluster.certificate_authority {
        cluster.certificate_authority = Some(PemSource::Inline(ca.read()?));
    }
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_the_bootstrap_token_format() {
        for _ in 0..50 {
            let id = random_chars(6).unwrap();
            let secret = random_chars(16).unwrap();
            let token = format!("{id}.{secret}");
            assert_eq!(token.len(), 23);
            assert!(
                token.chars().all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{token}"
            );
        }
    }

    #[test]
    fn extra_groups_follow_the_upstream_pattern() {
        for ok in [
            "system:bootstrappers:kubeadm:default-node-token",
            "system:bootstrappers:a",
            "system:bootstrappers:x-1",
        ] {
            assert!(valid_extra_group(ok), "{ok}");
        }
        for bad in [
            "system:bootstrappers:",
            "system:nodes",
            "system:bootstrappers:A",
            "system:bootstrappers:a-",
            "x",
        ] {
            assert!(!valid_extra_group(bad), "{bad}");
        }
    }

    #[test]
    fn secret_has_the_upstream_shape() {
        let secret = token_secret(
            "abcdef",
            "0123456789abcdef",
            "2030-01-01T00:00:00Z",
            &["system:bootstrappers:x".into()],
        );
        assert_eq!(secret.metadata.name.as_deref(), Some("bootstrap-token-abcdef"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(secret.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        let data = secret.data.unwrap();
        assert_eq!(data["token-id"].0, b"abcdef");
        assert_eq!(data["usage-bootstrap-authentication"].0, b"true");
        assert_eq!(data["auth-extra-groups"].0, b"system:bootstrappers:x");
    }
}
