//! ClusterTrustBundle rules (upstream's `ValidateClusterTrustBundle`): the name tied to the
//! signer, the signer name, and `spec.trustBundle` as PEM CA certificates. Pure.
//!
//! `spec.trustBundle` is read the way Go's `encoding/pem` reads it, because that decides what
//! upstream accepts: text outside blocks is skipped, and so is a block that looks like one but
//! does not decode (no end line, bad base64); what is left must be headerless `CERTIFICATE`
//! blocks, each one X.509 certificate with basic constraints CA=true, none twice, at least one.

use base64::Engine as _;
use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle;

use crate::status::{FieldError, quote};
use crate::validation::{dns1123_subdomain_errors, validate_signer_name};

/// Upstream's `MaxTrustBundleSize`: 1 MiB.
pub(crate) const MAX_TRUST_BUNDLE_SIZE: usize = 1024 * 1024;

const TRUST_BUNDLE: &str = "spec.trustBundle";
/// What upstream shows instead of the bundle in its errors.
const OMITTED: &str = "<value omitted>";

/// One PEM block as Go's `pem.Decode` returns it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PemBlock {
    pub label: String,
    pub has_headers: bool,
    pub der: Vec<u8>,
}

const PEM_START: &[u8] = b"\n-----BEGIN ";
const PEM_END: &[u8] = b"\n-----END ";
const DASHES: &[u8] = b"-----";

/// Go's `getLine`: a line without its end of line and trailing spaces and tabs, the rest
/// after it, and how many bytes that consumed.
fn get_line(data: &[u8]) -> (&[u8], &[u8], usize) {
    let (mut end, next) = match data.iter().position(|&b| b == b'\n') {
        None => (data.len(), data.len()),
        Some(i) => (i, i + 1),
    };
    if next > end && end > 0 && data[end - 1] == b'\r' {
        end -= 1;
    }
    let mut line = &data[..end];
    while let [head @ .., b' ' | b'\t'] = line {
        line = head;
    }
    (line, &data[next..], next)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Go's lenient standard base64 (non-zero trailing bits allowed).
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The blocks of `data`, as Go's `pem.Decode` called until it finds no more.
pub(crate) fn pem_blocks(data: &str) -> Vec<PemBlock> {
    let mut blocks = Vec::new();
    let mut rest = data.as_bytes();
    while let Some((block, after)) = decode_one(rest) {
        blocks.push(block);
        rest = after;
    }
    blocks
}

/// A port of Go's `pem.Decode` (Go 1.26): the first END line, the last BEGIN line before
/// it, and a block between them that is well formed, else the next END line.
fn decode_one(data: &[u8]) -> Option<(PemBlock, &[u8])> {
    let mut rest = data;
    // Offsets into `rest`; they go negative when the lines they point into were consumed.
    let mut end_trailer: isize = 0;
    loop {
        rest = rest.get(usize::try_from(end_trailer).ok()?..)?;
        let end = find(rest, PEM_END)?;
        end_trailer = (end + PEM_END.len()) as isize;
        let Some(begin) = rfind(&rest[..end], &PEM_START[1..]) else { continue };
        if begin > 0 && rest[begin - 1] != b'\n' {
            continue;
        }
        let skip = begin + PEM_START.len() - 1;
        rest = &rest[skip..];
        let mut end = end as isize - skip as isize;
        end_trailer -= skip as isize;
        let (type_line, after, consumed) = get_line(rest);
        rest = after;
        end -= consumed as isize;
        end_trailer -= consumed as isize;
        let Some(label) = type_line.strip_suffix(DASHES) else { continue };
        let mut has_headers = false;
        loop {
            if rest.is_empty() {
                return None;
            }
            let (line, next, consumed) = get_line(rest);
            if !line.contains(&b':') {
                break;
            }
            has_headers = true;
            rest = next;
            end -= consumed as isize;
            end_trailer -= consumed as isize;
        }
        if has_headers && end < 0 {
            continue;
        }
        let Some(trailer) = usize::try_from(end_trailer).ok().and_then(|t| rest.get(t..)) else { continue };
        let trailer_len = label.len() + DASHES.len();
        if trailer.len() < trailer_len {
            continue;
        }
        let (named, rest_of_line) = trailer.split_at(trailer_len);
        if !named.starts_with(label) || !named.ends_with(DASHES) || !get_line(rest_of_line).0.is_empty() {
            continue;
        }
        let der = if end > 0 {
            let body: Vec<u8> =
                rest[..end as usize].iter().copied().filter(|b| !b" \t\r\n".contains(b)).collect();
            match BASE64.decode(body) {
                Ok(der) => der,
                Err(_) => continue,
            }
        } else {
            Vec::new()
        };
        let after_end = (end + PEM_END.len() as isize - 1) as usize;
        let (_, after, _) = get_line(&rest[after_end..]);
        let label = String::from_utf8_lossy(label).into_owned();
        return Some((PemBlock { label, has_headers, der }, after));
    }
}

/// Whether `der` is exactly one certificate, and whether it is a CA (basic constraints
/// present with CA=true). `None` when it does not parse.
fn ca_bit(der: &[u8]) -> Option<bool> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    Some(cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca))
}

/// The rules on `spec.trustBundle`.
pub(crate) fn trust_bundle_errors(bundle: &str) -> Vec<FieldError> {
    if bundle.len() > MAX_TRUST_BUNDLE_SIZE {
        return vec![FieldError::too_long(TRUST_BUNDLE, MAX_TRUST_BUNDLE_SIZE)];
    }
    let invalid = |detail: String| FieldError::invalid(TRUST_BUNDLE, quote(OMITTED), detail);
    let mut errs = Vec::new();
    // Each distinct certificate with the indices it appears at, in order of first appearance.
    let mut seen: Vec<(&[u8], Vec<usize>)> = Vec::new();
    let blocks = pem_blocks(bundle);
    for (i, block) in blocks.iter().enumerate() {
        if block.label != "CERTIFICATE" {
            errs.push(invalid(format!("entry {i} has bad block type: {}", block.label)));
        } else if block.has_headers {
            errs.push(invalid(format!("entry {i} has PEM block headers")));
        } else {
            match ca_bit(&block.der) {
                None => errs.push(invalid(format!("entry {i} does not parse as X.509"))),
                Some(false) => errs.push(invalid(format!("entry {i} does not have the CA bit set"))),
                Some(true) => match seen.iter_mut().find(|(der, _)| *der == block.der.as_slice()) {
                    Some((_, indices)) => indices.push(i),
                    None => seen.push((&block.der, vec![i])),
                },
            }
        }
    }
    // A malformed block says enough; no further errors about duplicates or emptiness.
    if !errs.is_empty() {
        return errs;
    }
    if seen.is_empty() {
        errs.push(invalid("at least one trust anchor must be provided".into()));
    }
    for (_, indices) in seen.iter().filter(|(_, indices)| indices.len() > 1) {
        let shown: Vec<String> = indices.iter().map(ToString::to_string).collect();
        errs.push(invalid(format!("duplicate trust anchor (indices [{}])", shown.join(" "))));
    }
    errs
}

/// The name rule: a signer-linked bundle is named `<signer with / as :>:<subdomain>`, an
/// unlinked one is a subdomain without `:`.
fn name_errors(name: &str, signer: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required("metadata.name", "name or generateName is required")];
    }
    let invalid = |detail: String| FieldError::invalid("metadata.name", quote(name), detail);
    let rest = if signer.is_empty() {
        if name.contains(':') {
            return vec![invalid(
                "ClusterTrustBundle without signer name must not have \":\" in its name".into(),
            )];
        }
        name
    } else {
        let prefix = format!("{}:", signer.replace('/', ":"));
        match name.strip_prefix(&prefix) {
            Some(rest) => rest,
            None => {
                return vec![invalid(format!(
                    "ClusterTrustBundle for signerName {signer} must be named with prefix {prefix}"
                ))];
            }
        }
    };
    dns1123_subdomain_errors(rest).into_iter().map(invalid).collect()
}

fn signer(bundle: &ClusterTrustBundle) -> &str {
    bundle.spec.signer_name.as_deref().unwrap_or_default()
}

/// Create rules; `parse_bundle` false skips the trust bundle (an update that keeps it).
pub(crate) fn validate(bundle: &ClusterTrustBundle, parse_bundle: bool) -> Vec<FieldError> {
    let signer = signer(bundle);
    let mut errs = name_errors(bundle.metadata.name.as_deref().unwrap_or_default(), signer);
    if !signer.is_empty() {
        errs.extend(validate_signer_name("spec.signerName", signer));
    }
    if parse_bundle {
        errs.extend(trust_bundle_errors(&bundle.spec.trust_bundle));
    }
    errs
}

/// Update rules: as on create (the bundle is parsed only when it changes, so that a parser
/// that became stricter does not lock stored objects), and the signer name is immutable.
pub(crate) fn validate_update(new: &ClusterTrustBundle, old: &ClusterTrustBundle) -> Vec<FieldError> {
    let mut errs = validate(new, new.spec.trust_bundle != old.spec.trust_bundle);
    if signer(new) != signer(old) {
        errs.push(FieldError::invalid("spec.signerName", quote(signer(new)), "field is immutable"));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    fn cert(ca: bool) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params.self_signed(&key).unwrap().pem()
    }

    fn details(bundle: &str) -> Vec<String> {
        trust_bundle_errors(bundle).iter().map(|e| e.detail.clone()).collect()
    }

    #[test]
    fn pem_is_read_as_go_reads_it() {
        let ca = cert(true);
        let blocks = pem_blocks(&format!("junk before\n{ca}between\n{ca}trailing"));
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "CERTIFICATE");
        assert_eq!(blocks[0], blocks[1]);
        // A block without an end line, or with bad base64, is skipped.
        assert!(pem_blocks("-----BEGIN CERTIFICATE-----\nAAAA\n").is_empty());
        assert!(pem_blocks("-----BEGIN X-----\n!!!!\n-----END X-----\n").is_empty());
        let headers = pem_blocks("-----BEGIN X-----\nProc-Type: 4\n\nAAAA\n-----END X-----\n");
        assert_eq!(headers, [PemBlock { label: "X".into(), has_headers: true, der: vec![0, 0, 0] }]);
        // BEGIN must start a line; spaces and CRLF inside the body are fine.
        assert!(pem_blocks("x -----BEGIN X-----\nAAAA\n-----END X-----\n").is_empty());
        assert_eq!(pem_blocks("-----BEGIN X-----\r\nAA AA\r\n-----END X-----\r\n")[0].der, [0, 0, 0]);
        // The END line must name the same type.
        assert!(pem_blocks("-----BEGIN X-----\nAAAA\n-----END Y-----\n").is_empty());
    }

    #[test]
    fn every_cut_of_a_bundle_is_read_without_panicking() {
        let ca = cert(true);
        let text = format!("-----BEGIN X-----\nProc-Type: 4\n\n-----END X-----\n{ca}\r\n{ca}");
        for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            for start in [0, 1, 17, 40] {
                if start <= end {
                    let _ = trust_bundle_errors(&text[start..end]);
                }
            }
        }
        assert_eq!(pem_blocks(&text).len(), 3);
    }

    #[test]
    fn trust_bundle_rules() {
        let (ca, other, leaf) = (cert(true), cert(true), cert(false));
        assert!(details(&format!("{ca}{other}")).is_empty());
        assert_eq!(details(""), ["at least one trust anchor must be provided"]);
        assert_eq!(details("not PEM at all"), ["at least one trust anchor must be provided"]);
        assert_eq!(details(&format!("{ca}{other}{ca}")), ["duplicate trust anchor (indices [0 2])"]);
        assert_eq!(details(&format!("{ca}{leaf}")), ["entry 1 does not have the CA bit set"]);
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            details(&format!("{key}{ca}{ca}")),
            ["entry 0 has bad block type: PRIVATE KEY"],
            "a malformed entry hides the duplicates"
        );
        let with_headers = ca.replacen("-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n", 1);
        assert_eq!(details(&with_headers), ["entry 0 has PEM block headers"]);
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(details(garbage), ["entry 0 does not parse as X.509"]);
        let huge = "x".repeat(MAX_TRUST_BUNDLE_SIZE + 1);
        let errs = trust_bundle_errors(&huge);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].to_string(), "spec.trustBundle: Too long: may not be more than 1048576 bytes");
        assert_eq!(
            trust_bundle_errors("")[0].to_string(),
            "spec.trustBundle: Invalid value: \"<value omitted>\": at least one trust anchor must be provided"
        );
    }

    #[test]
    fn names_follow_the_signer() {
        let ok = [("example.com:foo:v1", "example.com/foo"), ("plain-name", ""), ("a.b", "")];
        for (name, signer) in ok {
            assert!(name_errors(name, signer).is_empty(), "{name} {signer}");
        }
        assert_eq!(
            name_errors("example.com:foo", "").iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "metadata.name: Invalid value: \"example.com:foo\": ClusterTrustBundle without signer name must not have \":\" in its name"
            ]
        );
        assert_eq!(
            name_errors("other:v1", "example.com/foo")[0].detail,
            "ClusterTrustBundle for signerName example.com/foo must be named with prefix example.com:foo:"
        );
        let bad_rest = name_errors("example.com:foo:Bad", "example.com/foo");
        assert_eq!(bad_rest.len(), 1);
        assert!(bad_rest[0].detail.starts_with("a lowercase RFC 1123 subdomain"), "{bad_rest:?}");
        assert_eq!(name_errors("", "")[0].reason(), "FieldValueRequired");
    }
}
