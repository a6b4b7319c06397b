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

/// Raises the open-files limit as far as allowed and returns it: a server
/// or a load generator holds one socket per viewer, and the usual soft
/// limit of 1024 would cap it there. The soft limit goes up to the hard
/// one; a privileged process also lifts the hard limit to the kernel's
/// `fs.nr_open`, at most 2^20 (children inherit the limit, and some close
/// every descriptor up to it).
pub fn raise_open_files_limit() -> u64 {
    let nr_open: libc::rlim_t = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(0)
        .min(1 << 20);
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if nr_open > limit.rlim_max {
            let lifted = libc::rlimit { rlim_cur: nr_open, rlim_max: nr_open };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lifted) == 0 {
                return nr_open;
            }
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}
