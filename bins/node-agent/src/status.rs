//! `node-agent status`: what is in a cert dir, for a person at a terminal.
//!
//! Read-only on purpose: it reads `<prefix>-current.pem` (or `<prefix>.crt` + `<prefix>.key`)
//! directly instead of opening a `CertificateStore`, whose `open` finishes interrupted switches
//! and deletes temporary files, which must not race with a running agent's commit.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kubecert_csr::{Certificate, PrivateKey, parse_certificates_pem};
use kubecert_rotation::{DEADLINE_JITTER_FRACTION, DEADLINE_MIN_FRACTION, lifetime};
use kubecert_store::{CLIENT_PREFIX, SERVER_PREFIX};

/// What was found for one prefix.
#[derive(Debug)]
enum Found {
    /// No files.
    Nothing,
    /// Files that could not be read or parsed.
    Broken { path: PathBuf, error: String },
    /// A certificate chain, with its key's state.
    Pair { shown_path: String, leaf: Box<Certificate>, key: String },
}

/// Prints the report for `cert_dir` to stdout; returns the exit status: 1 when a certificate
/// that is present has expired or cannot be read, else 0.
pub fn run(cert_dir: &Path) -> u8 {
    let (report, healthy) = report(cert_dir, SystemTime::now());
    print!("{report}");
    if healthy { 0 } else { 1 }
}

/// The report and whether every present certificate is readable and unexpired.
fn report(cert_dir: &Path, now: SystemTime) -> (String, bool) {
    let mut out = String::new();
    let mut healthy = true;
    for (title, prefix) in [("client certificate", CLIENT_PREFIX), ("serving certificate", SERVER_PREFIX)] {
        let _ = writeln!(out, "{title} ({prefix})");
        match find(cert_dir, prefix) {
            Found::Nothing => {
                let _ = writeln!(out, "  none in {}", cert_dir.display());
            }
            Found::Broken { path, error } => {
                healthy = false;
                let _ = writeln!(out, "  file:             {}\n  error:            {error}", path.display());
            }
            Found::Pair { shown_path, leaf, key } => {
                healthy &= !leaf.is_expired_at(now);
                out.push_str(&describe(&shown_path, &leaf, &key, now));
            }
        }
    }
    (out, healthy)
}

fn find(cert_dir: &Path, prefix: &str) -> Found {
    let current = cert_dir.join(format!("{prefix}-current.pem"));
    if fs::symlink_metadata(&current).is_ok() {
        let shown_path = match fs::read_link(&current) {
            Ok(target) => format!("{} -> {}", current.display(), target.display()),
            Err(_) => current.display().to_string(),
        };
        return load(&current, &current, shown_path);
    }
    let (cert, key) = (cert_dir.join(format!("{prefix}.crt")), cert_dir.join(format!("{prefix}.key")));
    if cert.exists() && key.exists() {
        let shown_path = format!("{} (key {})", cert.display(), key.display());
        return load(&cert, &key, shown_path);
    }
    Found::Nothing
}

fn load(cert_path: &Path, key_path: &Path, shown_path: String) -> Found {
    let broken = |path: &Path, error: String| Found::Broken { path: path.to_path_buf(), error };
    let read = |path: &Path| fs::read(path).map_err(|e: io::Error| broken(path, e.to_string()));
    let cert_pem = match read(cert_path) {
        Ok(bytes) => bytes,
        Err(found) => return found,
    };
    let leaf = match parse_certificates_pem(&cert_pem) {
        Ok(mut chain) => chain.remove(0),
        Err(e) => return broken(cert_path, e.to_string()),
    };
    let key = match read(key_path).map(|pem| PrivateKey::from_pem(&pem)) {
        Ok(Ok(key)) if leaf.matches_key(&key) => format!("{}, matches the certificate", key.algorithm()),
        Ok(Ok(key)) => format!("{}, DOES NOT MATCH the certificate", key.algorithm()),
        Ok(Err(e)) => format!("unreadable: {e}"),
        Err(Found::Broken { error, .. }) => format!("unreadable: {error}"),
        Err(_) => "unreadable".to_owned(),
    };
    Found::Pair { shown_path, leaf: Box::new(leaf), key }
}

/// The lines for one certificate.
fn describe(shown_path: &str, leaf: &Certificate, key: &str, now: SystemTime) -> String {
    let mut subject = Vec::new();
    subject.extend(leaf.subject.common_name.iter().map(|cn| format!("CN={cn}")));
    subject.extend(leaf.subject.organizations.iter().map(|o| format!("O={o}")));
    let total = lifetime(leaf);
    let window_start = leaf.not_before + total.mul_f64(DEADLINE_MIN_FRACTION);
    let window_end = leaf.not_before + total.mul_f64(DEADLINE_MIN_FRACTION + DEADLINE_JITTER_FRACTION);
    let window_state = if now < window_start {
        format!("opens in {}", human(window_start.duration_since(now).unwrap_or_default()))
    } else if now <= window_end {
        "open now".to_owned()
    } else {
        format!(
            "passed {} ago: rotation is overdue",
            human(now.duration_since(window_end).unwrap_or_default())
        )
    };
    let left = match leaf.not_after.duration_since(now) {
        Ok(left) => human(left),
        Err(past) => format!("none: EXPIRED {} ago", human(past.duration())),
    };
    let mut out = String::new();
    let mut line = |name: &str, value: &str| {
        let _ = writeln!(out, "  {:<18}{value}", format!("{name}:"));
    };
    line("file", shown_path);
    line("subject", &subject.join(", "));
    line("issuer", &leaf.issuer);
    line("serial", &leaf.serial_hex);
    line("not before", &timestamp(leaf.not_before));
    line("not after", &timestamp(leaf.not_after));
    line("time left", &left);
    line(
        "rotation window",
        &format!(
            "{} to {} (70-90 % of the lifetime), {window_state}",
            timestamp(window_start),
            timestamp(window_end)
        ),
    );
    let sans: Vec<String> = leaf
        .dns_names
        .iter()
        .map(|d| format!("DNS:{d}"))
        .chain(leaf.ip_addresses.iter().map(|ip| format!("IP:{ip}")))
        .collect();
    if !sans.is_empty() {
        line("names", &sans.join(", "));
    }
    line("key", key);
    out
}

fn timestamp(at: SystemTime) -> String {
    jiff::Timestamp::try_from(at).map_or_else(|_| format!("{at:?}"), |t| t.to_string())
}

/// `1d2h`, `3h4m`, `5m6s`, `7s`: the two largest units.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m{seconds}s"),
        (0, _, _) => format!("{hours}h{minutes}m"),
        _ => format!("{days}d{hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use kubecert_csr::KeyAlgorithm;
    use rcgen::{CertificateParams, DistinguishedName, DnType};

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn pair_pem(cn: &str, not_before: SystemTime, not_after: SystemTime) -> String {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut params = CertificateParams::new(vec!["n1.example".to_owned()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "system:nodes");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.self_signed(key.rcgen_key_pair()).unwrap();
        format!("{}{}", cert.pem(), key.to_pem())
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(7)), "7s");
        assert_eq!(human(Duration::from_secs(306)), "5m6s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 240)), "3h4m");
        assert_eq!(human(Duration::from_secs(86400 + 7200 + 5)), "1d2h");
    }

    #[test]
    fn valid_expired_missing_and_broken_pairs() {
        let dir = tempfile::tempdir().unwrap();
        // Whole seconds, as certificates carry them.
        let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(unix);
        let (report_text, healthy) = report(dir.path(), now);
        assert!(healthy, "nothing present is nothing expired");
        assert_eq!(report_text.matches("  none in ").count(), 2, "{report_text}");

        let file = dir.path().join("kubelet-client-2025-01-01-00-00-00.pem");
        fs::write(&file, pair_pem("system:node:n1", now - HOUR, now + 9 * HOUR)).unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("kubelet-client-current.pem")).unwrap();
        let (text, healthy) = report(dir.path(), now);
        assert!(healthy, "{text}");
        for expected in [
            "kubelet-client-current.pem -> ",
            "subject:          CN=system:node:n1, O=system:nodes",
            "time left:        9h0m",
            "(70-90 % of the lifetime), opens in 6h0m",
            "names:            DNS:n1.example",
            "key:              ECDSA P-256, matches the certificate",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }

        fs::write(
            dir.path().join("kubelet-server.crt"),
            pair_pem("system:node:n1", now - 2 * HOUR, now - HOUR),
        )
        .unwrap();
        fs::write(
            dir.path().join("kubelet-server.key"),
            PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap().to_pem(),
        )
        .unwrap();
        let (text, healthy) = report(dir.path(), now);
        assert!(!healthy, "an expired serving certificate");
        assert!(text.contains("none: EXPIRED 1h0m ago"), "{text}");
        assert!(text.contains("rotation is overdue"), "{text}");
        assert!(text.contains("DOES NOT MATCH"), "{text}");

        fs::remove_file(dir.path().join("kubelet-server.crt")).unwrap();
        fs::write(&file, "garbage").unwrap();
        let (text, healthy) = report(dir.path(), now);
        assert!(!healthy, "an unreadable client pair");
        assert!(text.contains("error:            certificate: no CERTIFICATE block found"), "{text}");
    }
}
