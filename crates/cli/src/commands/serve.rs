//! `tollstream serve`.

use anyhow::Context;
use std::io::Write;
use tokio::net::TcpListener;
use tollstream_server::{CancellationToken, ServeConfig};

pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let state = tollstream_server::build_state(&config, shutdown.clone()).await?;
    let mut listeners = Vec::with_capacity(config.listen.len());
    for address in &config.listen {
        let listener = TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
        listeners.push(listener);
    }
    // Printed once every address is bound: one line per address, in the
    // order given, which scripts and tests read the ports from.
    let scheme = if state.tls.is_some() { "https" } else { "http" };
    for listener in &listeners {
        println!("tollstream listening on {scheme}://{}", listener.local_addr()?);
    }
    std::io::stdout().flush()?;
    let addresses: Vec<String> = listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.to_string()).collect();
    tracing::info!(
        addresses = addresses.join(" "),
        chain_id = state.domain.chain_id,
        contract = %state.domain.contract,
        payee = %state.wallet.address(),
        window_seconds = config.window_seconds,
        window_price = %config.window_price,
        streams = state.info.streams.len(),
        tls = state.tls.is_some(),
        max_connections_per_address = config.max_connections_per_address,
        new_connections_per_second = config.new_connections_per_second,
        requests_per_second = config.requests_per_second,
        "serving"
    );
    tollstream_server::run(state, listeners, super::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
