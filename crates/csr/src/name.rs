//! The deterministic name of a bootstrap CSR (SPEC B-13).

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::KeyUsage;

/// `node-csr-` followed by the unpadded base64url SHA-512/256 digest of the public key (DER
/// SubjectPublicKeyInfo), the common name, each organization and each usage in request order,
/// each item base64url-encoded and followed by `|`.
///
/// The same key and request give the same name, so a node that restarts during bootstrap finds
/// its own pending CSR again instead of creating another.
pub fn bootstrap_csr_name(
    public_key_der: &[u8],
    common_name: &str,
    organizations: &[String],
    usages: &[KeyUsage],
) -> String {
    let mut context = digest::Context::new(&digest::SHA512_256);
    let items = [public_key_der, common_name.as_bytes()]
        .into_iter()
        .chain(organizations.iter().map(|o| o.as_bytes()))
        .chain(usages.iter().map(|u| u.as_str().as_bytes()));
    for item in items {
        context.update(URL_SAFE_NO_PAD.encode(item).as_bytes());
        context.update(b"|");
    }
    format!("node-csr-{}", URL_SAFE_NO_PAD.encode(context.finish()))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    /// Expected value computed independently with Python's hashlib (no Rust involved):
    ///
    /// ```text
    /// openssl ecparam -name prime256v1 -genkey -noout -out tv.key
    /// openssl ec -in tv.key -pubout -outform DER -out tv.pub
    /// python3 -c 'import base64,hashlib; pub=open("tv.pub","rb").read(); h=hashlib.new("sha512_256")
    /// for it in [pub,b"system:node:worker-1",b"system:nodes",b"digital signature",b"client auth"]:
    ///     h.update(base64.urlsafe_b64encode(it).rstrip(b"=")); h.update(b"|")
    /// print("node-csr-"+base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode())'
    /// ```
    #[test]
    fn matches_an_independent_implementation() {
        let spki = base64::engine::general_purpose::STANDARD
            .decode("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEOOzlnD08IUmAFAHMn+hTyGY2ejRW8JFfSvu2ZyXTjJ0l8u14nF1ZYq7gxOnWEq0n4yv3vDX4rgTadYYz7HfltQ==")
            .unwrap();
        let name = bootstrap_csr_name(
            &spki,
            "system:node:worker-1",
            &["system:nodes".to_owned()],
            &[KeyUsage::DigitalSignature, KeyUsage::ClientAuth],
        );
        assert_eq!(name, "node-csr-1vdwH01LPmt1cK3B9TysOETbWW4cAS7QyiSYlZUZk9U");
        assert_eq!(name.len(), 52);
    }

    #[test]
    fn every_input_changes_the_name() {
        let orgs = ["system:nodes".to_owned()];
        let usages = [KeyUsage::DigitalSignature, KeyUsage::ClientAuth];
        let base = bootstrap_csr_name(b"key", "cn", &orgs, &usages);
        assert_ne!(base, bootstrap_csr_name(b"key2", "cn", &orgs, &usages));
        assert_ne!(base, bootstrap_csr_name(b"key", "cn2", &orgs, &usages));
        assert_ne!(base, bootstrap_csr_name(b"key", "cn", &[], &usages));
        // Usage order matters, as upstream.
        assert_ne!(
            base,
            bootstrap_csr_name(b"key", "cn", &orgs, &[KeyUsage::ClientAuth, KeyUsage::DigitalSignature])
        );
        assert_eq!(base, bootstrap_csr_name(b"key", "cn", &orgs, &usages));
    }
}
