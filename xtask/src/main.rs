//! `cargo xtask`: project automation (matklad's xtask convention).

use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some(name @ ("e2e" | "bench")) => {
            eprintln!(
                "cargo xtask {name}: not built yet; it needs the signer and node-agent binaries (see the open issues)"
            );
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("usage: cargo xtask <e2e|bench>");
            ExitCode::from(2)
        }
    }
}
