//! Operator commands on the server's store: `tollstream channels` and
//! `tollstream settle`.

use anyhow::{Context, bail};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use tollstream_chain::{Chain, EvmChain, Policy, TxManager};
use tollstream_protocol::{Address, B256};
use tollstream_server::confirmations::Opens;
use tollstream_server::metrics::Metrics;
use tollstream_server::settle::Settlement;
use tollstream_server::store::{ChannelStatus, CloseRecord, CommitMode, DatabaseUrl, Store, StoredChannel};

#[derive(Debug, Args)]
pub struct ChannelsArgs {
    /// The server's data directory.
    #[arg(long, env = "TOLLSTREAM_DATA_DIR", default_value = "tollstream-data")]
    data_dir: PathBuf,
    /// The server's database, when not the SQLite file of --data-dir
    /// (`postgres://…`).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// JSON-RPC endpoint of the chain, to count the confirmations of
    /// mined closes (without it, the block they were mined in is shown).
    #[arg(long)]
    rpc_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct SettleArgs {
    /// The server's data directory.
    #[arg(long, env = "TOLLSTREAM_DATA_DIR", default_value = "tollstream-data")]
    data_dir: PathBuf,
    /// The server's database, when not the SQLite file of --data-dir
    /// (`postgres://…`).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// JSON-RPC endpoint of the chain.
    #[arg(long, env = "TOLLSTREAM_RPC_URL", default_value = "http://127.0.0.1:8545")]
    rpc_url: String,
    /// How deep a close must be to count (as `serve --confirmations`).
    #[arg(long, env = "TOLLSTREAM_CONFIRMATIONS", default_value_t = 10)]
    confirmations: u64,
    /// The highest `maxFeePerGas` paid for a close, in wei.
    #[arg(long, env = "TOLLSTREAM_MAX_FEE_PER_GAS", default_value = "200000000000")]
    max_fee_per_gas: u128,
    /// How long to wait for each close to be confirmed, in seconds.
    #[arg(long, default_value_t = 120)]
    wait: u64,
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

/// The server's store: `database_url` when given, else the SQLite file of
/// `data_dir`, which must exist (a typo must not create an empty one).
async fn open_store(data_dir: &std::path::Path, database_url: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    let database = match database_url {
        Some(url) => url.parse::<DatabaseUrl>()?,
        None => {
            let path = data_dir.join("tollstream.sqlite");
            if !path.exists() {
                bail!("no server database at {}: pass the server's --data-dir or --database-url", path.display());
            }
            DatabaseUrl::Sqlite(path)
        }
    };
    database.open(CommitMode::Group).await.with_context(|| format!("cannot open the store {database}"))
}

pub async fn list(args: ChannelsArgs) -> anyhow::Result<()> {
    let store = open_store(&args.data_dir, args.database_url.as_deref()).await?;
    let channels = store.list().await?;
    if channels.is_empty() {
        println!("no channels");
        return Ok(());
    }
    println!(
        "{:<18} {:<14} {:>24} {:>24} {:>6} {:<9} {:<9} {:>12} {:<18} {:>6} {:>8} {:>16} {:>13}",
        "CHANNEL",
        "CLIENT",
        "DEPOSIT",
        "SERVER BALANCE",
        "SEQ",
        "STATUS",
        "OPEN",
        "EXPIRES",
        "CLOSE TX",
        "NONCE",
        "ATTEMPTS",
        "MAX FEE (WEI)",
        "CONFIRMATIONS"
    );
    let head = match &args.rpc_url {
        Some(url) => Some(EvmChain::connect(url, None, Address::ZERO).await?.head().await?.number),
        None => None,
    };
    for channel in &channels {
        let close = store.close_record(&channel.state.channel_id).await?;
        println!("{}", row(channel, close.as_ref(), head));
    }
    Ok(())
}

fn short(text: &str) -> String {
    if text.len() > 16 { format!("{}…{}", &text[..10], &text[text.len() - 5..]) } else { text.to_owned() }
}

/// One line of the listing; `head` (the latest block, when the chain was
/// given) counts a mined close's confirmations.
fn row(channel: &StoredChannel, close: Option<&CloseRecord>, head: Option<u64>) -> String {
    let state = &channel.state;
    let deposit = state.deposit().map(|d| d.to_string()).unwrap_or_default();
    let dash = || "-".to_owned();
    let nonce = close.and_then(|c| c.attempts.last()).map_or_else(dash, |a| a.nonce.to_string());
    let attempts = close.map_or_else(dash, |c| c.attempts.len().to_string());
    let fee = close.and_then(|c| c.attempts.last()).map_or_else(dash, |a| a.fees.max_fee_per_gas.to_string());
    let confirmations = match (close.and_then(|c| c.mined), head) {
        (Some(mined), Some(head)) => (head + 1).saturating_sub(mined.block).to_string(),
        (Some(mined), None) => format!("mined@{}", mined.block),
        (None, _) => dash(),
    };
    format!(
        "{:<18} {:<14} {:>24} {:>24} {:>6} {:<9} {:<9} {:>12} {:<18} {:>6} {:>8} {:>16} {:>13}",
        short(&format!("{:#x}", state.channel_id)),
        short(&state.client_wallet_address.to_checksum(None)),
        deposit,
        state.server_balance.to_string(),
        state.client_sequence_number,
        channel.status.to_string(),
        channel.open_state.as_str(),
        channel.expires_at,
        channel.close_tx.map(|tx| short(&format!("{tx:#x}"))).unwrap_or_else(|| "-".into()),
        nonce,
        attempts,
        fee,
        confirmations,
    )
}

pub async fn settle(args: SettleArgs) -> anyhow::Result<()> {
    let store = open_store(&args.data_dir, args.database_url.as_deref()).await?;
    let wallet = tollstream_server::read_wallet_key(&args.wallet_key_file)?;
    let chain = Arc::new(
        EvmChain::connect(&args.rpc_url, Some(&wallet), args.contract)
            .await
            .with_context(|| format!("cannot reach the chain at {}", args.rpc_url))?,
    );
    let policy =
        Policy { confirmations: args.confirmations, resubmit_blocks: 3, max_fee_per_gas: args.max_fee_per_gas };
    let manager = Arc::new(TxManager::new(chain.clone(), policy)?);
    // `settle` closes channels whose open the server already holds: the
    // server only stores channels it found on chain.
    let opens = Arc::new(Opens::new(1, 2_000));
    let mut settlement = Settlement::new(store.clone(), chain, manager, opens, Metrics::new(), 2_000);
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
        match settlement.settle_now(&channel, std::time::Duration::from_secs(args.wait)).await {
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
