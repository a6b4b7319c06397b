//! `tollstream serve`.

use anyhow::Context;
use std::io::Write;
use tokio::net::TcpListener;
use tollstream_server::{CancellationToken, ServeConfig};

pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let state = tollstream_server::build_state(&config, shutdown.clone()).await?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    // The one line on stdout: scripts and tests read the port from it.
    println!("tollstream listening on http://{address}");
    std::io::stdout().flush()?;
    tracing::info!(
        %address,
        chain_id = state.domain.chain_id,
        contract = %state.domain.contract,
        payee = %state.wallet.address(),
        window_seconds = config.window_seconds,
        window_price = %config.window_price,
        streams = state.info.streams.len(),
        "serving"
    );
    tollstream_server::run(state, listener, super::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
