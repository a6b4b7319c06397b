//! Operator commands on the server's store: `tollstream channels` and
//! `tollstream settle`.

use anyhow::{Context, bail};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use tollstream_chain::EvmChain;
use tollstream_protocol::{Address, B256};
use tollstream_server::metrics::Metrics;
use tollstream_server::settle::Settlement;
use tollstream_server::store::{ChannelStatus, SqliteStore, Store, StoredChannel};

#[derive(Debug, Args)]
pub struct ChannelsArgs {
    /// The server's data directory.
    #[arg(long, env = "TOLLSTREAM_DATA_DIR", default_value = "tollstream-data")]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct SettleArgs {
    /// The server's data directory.
    #[arg(long, env = "TOLLSTREAM_DATA_DIR", default_value = "tollstream-data")]
    data_dir: PathBuf,
    /// JSON-RPC endpoint of the chain.
    #[arg(long, env = "TOLLSTREAM_RPC_URL", default_value = "http://127.0.0.1:8545")]
    rpc_url: String,
    /// The channel registry contract.
    #[arg(long, env = "TOLLSTREAM_CONTRACT")]
    contract: Address,
    /// The server wallet's key file (the payee, who sends closes).
    #[arg(long, env = "TOLLSTREAM_WALLET_KEY_FILE")]
    wallet_key_file: PathBuf,
    /// Close every channel holding server money now, not only those due.
    #[arg(long, conflicts_with = "channel")]
    all: bool,
    /// Close this channel now.
    channel: Option<B256>,
}

async fn open_store(data_dir: &std::path::Path) -> anyhow::Result<SqliteStore> {
    let path = data_dir.join("tollstream.sqlite");
    if !path.exists() {
        bail!("no server database at {}: pass the server's --data-dir", path.display());
    }
    Ok(SqliteStore::open(&path).await?)
}

pub async fn list(args: ChannelsArgs) -> anyhow::Result<()> {
    let channels = open_store(&args.data_dir).await?.list().await?;
    if channels.is_empty() {
        println!("no channels");
        return Ok(());
    }
    println!(
        "{:<18} {:<14} {:>24} {:>24} {:>6} {:<9} {:>12} {:<18}",
        "CHANNEL", "CLIENT", "DEPOSIT", "SERVER BALANCE", "SEQ", "STATUS", "EXPIRES", "CLOSE TX"
    );
    for channel in &channels {
        println!("{}", row(channel));
    }
    Ok(())
}

fn short(text: &str) -> String {
    if text.len() > 16 { format!("{}…{}", &text[..10], &text[text.len() - 5..]) } else { text.to_owned() }
}

fn row(channel: &StoredChannel) -> String {
    let state = &channel.state;
    let deposit = state.deposit().map(|d| d.to_string()).unwrap_or_default();
    format!(
        "{:<18} {:<14} {:>24} {:>24} {:>6} {:<9} {:>12} {:<18}",
        short(&format!("{:#x}", state.channel_id)),
        short(&state.client_wallet_address.to_checksum(None)),
        deposit,
        state.server_balance.to_string(),
        state.client_sequence_number,
        channel.status.to_string(),
        channel.expires_at,
        channel.close_tx.map(|tx| short(&format!("{tx:#x}"))).unwrap_or_else(|| "-".into()),
    )
}

pub async fn settle(args: SettleArgs) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(open_store(&args.data_dir).await?);
    let wallet = tollstream_server::read_wallet_key(&args.wallet_key_file)?;
    let chain = Arc::new(
        EvmChain::connect(&args.rpc_url, Some(&wallet), args.contract)
            .await
            .with_context(|| format!("cannot reach the chain at {}", args.rpc_url))?,
    );
    let mut settlement = Settlement::new(store.clone(), chain, Metrics::new());
    let chosen: Vec<StoredChannel> = match (&args.channel, args.all) {
        (Some(id), _) => vec![store.channel(id).await?.with_context(|| format!("no channel {id:#x} in the store"))?],
        (None, true) => store
            .list()
            .await?
            .into_iter()
            .filter(|c| {
                !matches!(c.status, ChannelStatus::Closed | ChannelStatus::Refunded)
                    && !c.state.server_balance.is_zero()
            })
            .collect(),
        (None, false) => {
            settlement.pass().await;
            println!("settlement pass done; see `tollstream channels`");
            return Ok(());
        }
    };
    let mut failed = 0;
    for channel in chosen {
        match settlement.settle_now(&channel).await {
            Ok(outcome) => println!("{:#x}: {outcome:?}", channel.state.channel_id),
            Err(error) => {
                failed += 1;
                println!("{:#x}: failed: {error}", channel.state.channel_id);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} channel(s) could not be settled");
    }
    Ok(())
}
