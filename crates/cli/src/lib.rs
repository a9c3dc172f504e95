//! What kubecert's binaries (`signer`, `node-agent`, and the `mtls-client` example) share at
//! their edges, so that they look and behave alike to an operator:
//!
//! * [`LogFormat`] (`--log-format text|json`) and [`init_logging`]: logs on stderr, filtered by
//!   `RUST_LOG` (default `info`), colours only on a terminal;
//! * [`cancel_on_signals`]: SIGTERM and SIGINT cancel a token that the whole process shuts down
//!   on;
//! * [`error_chain`]: an error and its causes on one line, each said once;
//! * [`TlsHandshakes`]: the handshake counter by endpoint and negotiated key-exchange group;
//! * with the `docgen` feature, for the binaries' tests: [`docgen`], which renders the
//!   configuration and metrics references under `docs/` from the code and checks the files.
//!
//! It owns no configuration and no behaviour of either binary.

#[cfg(feature = "docgen")]
pub mod docgen;
mod handshakes;

pub use handshakes::TlsHandshakes;

use std::io::IsTerminal as _;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// What can go wrong setting up the process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A signal handler could not be installed.
    #[error("installing the {signal} handler: {source}")]
    Signal {
        /// `SIGTERM` or `SIGINT`.
        signal: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// `error` and its causes, joined by `: `, as anyhow's `{:#}` does, except that a cause whose
/// text already ends the line is left out. The library errors here (and kube's, serde's…) often
/// write their source into their own message *and* return it from `source()`; `{:#}` then says
/// it twice ("cannot parse kubeconfig k: line 1: bad: line 1: bad").
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = error.source();
    }
    line
}

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber: stderr (stdout carries command output, such as the
/// token `signer token create` prints), `RUST_LOG` or `info`, ANSI colours only on a terminal
/// (journald and log files get plain text).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT, logging which. Must be called inside a
/// tokio runtime.
pub fn cancel_on_signals(shutdown: CancellationToken) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| Error::Signal { signal: name, source })
    };
    let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    /// An error that says its cause in its own message, or not.
    #[derive(Debug)]
    struct Layer {
        text: &'static str,
        cause: Option<Box<Layer>>,
        repeats_cause: bool,
    }

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match (&self.cause, self.repeats_cause) {
                (Some(cause), true) => write!(f, "{}: {cause}", self.text),
                _ => f.write_str(self.text),
            }
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.cause.as_deref().map(|c| c as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn error_chain_says_each_cause_once() {
        let layer = |text, cause: Option<Layer>, repeats_cause| Layer {
            text,
            cause: cause.map(Box::new),
            repeats_cause,
        };
        // context (anyhow-like, does not repeat) → store error (repeats) → YAML error → I/O error.
        let io = layer("unexpected end of file", None, false);
        let yaml = layer("line 1 column 10: unclosed bracket", Some(io), false);
        let store = layer("cannot parse kubeconfig bk", Some(yaml), true);
        let context = layer("reading bootstrap kubeconfig bk", Some(store), false);
        assert_eq!(
            super::error_chain(&context),
            "reading bootstrap kubeconfig bk: cannot parse kubeconfig bk: line 1 column 10: unclosed \
             bracket: unexpected end of file"
        );
        let alone = layer("no such file", None, false);
        assert_eq!(super::error_chain(&alone), "no such file");
    }

    use super::*;

    #[test]
    fn log_format_reads_as_flag_and_as_configuration() {
        use serde::de::IntoDeserializer as _;
        use serde::de::value::{Error, StrDeserializer};
        assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
        assert!(LogFormat::from_str("yaml", false).is_err());
        let text: StrDeserializer<'_, Error> = "text".into_deserializer();
        assert_eq!(LogFormat::deserialize(text), Ok(LogFormat::Text));
    }

    #[tokio::test]
    async fn a_signal_cancels_the_token() {
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone()).unwrap();
        assert!(!shutdown.is_cancelled());
        // SIGINT to ourselves; the handler installed above replaces the default (exit).
        std::process::Command::new("kill").args(["-INT", &std::process::id().to_string()]).status().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), shutdown.cancelled()).await.unwrap();
    }
}
