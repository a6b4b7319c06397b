//! One module per subcommand.

pub mod bench;
pub mod channel;
pub mod channels;
pub mod demo;
pub mod deploy;
pub mod package;
pub mod serve;
pub mod wallet;
pub mod watch;

use tracing_subscriber::EnvFilter;

/// Logs go to stderr, filtered by `RUST_LOG` (default: info for Tollstream,
/// warnings for libraries), so stdout stays for what a command prints.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,tollstream=info,tollstream_server=info,tollstream_client=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
