//! Viewer commands on the viewer's own channels: `tollstream channel
//! status` and `tollstream channel refund`.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tollstream_chain::{Chain, ChannelStatus, EvmChain, channels_opened_by, refund_channel};
use tollstream_client::Client;
use tollstream_client::wallet::load_wallet;
use tollstream_protocol::{Address, B256};

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// List the channels this wallet opened, as the chain sees them.
    Status(ChannelArgs),
    /// Take back the deposit of expired channels nobody closed.
    Refund {
        #[command(flatten)]
        args: ChannelArgs,
        /// Refund only this channel (default: every expired open one).
        channel: Option<B256>,
    },
}

#[derive(Debug, Args)]
pub struct ChannelArgs {
    /// JSON-RPC endpoint of the chain.
    #[arg(long, env = "TOLLSTREAM_RPC_URL", default_value = "http://127.0.0.1:8545")]
    rpc_url: String,
    /// The channel registry contract (or give --server to ask it).
    #[arg(long, env = "TOLLSTREAM_CONTRACT", required_unless_present = "server")]
    contract: Option<Address>,
    /// A Tollstream server whose contract to use.
    #[arg(long)]
    server: Option<String>,
    /// The wallet that opened the channels (hex key file); or set TOLLSTREAM_WALLET_KEY.
    #[arg(long, env = "TOLLSTREAM_WALLET_KEY_FILE")]
    wallet_key_file: Option<PathBuf>,
}

async fn contract(args: &ChannelArgs) -> anyhow::Result<Address> {
    if let Some(contract) = args.contract {
        return Ok(contract);
    }
    let url = args.server.as_deref().expect("clap requires --contract or --server");
    let client = Client::connect(url).await.with_context(|| format!("cannot reach the server at {url}"))?;
    let info = client.public_key().await?;
    client.close().await;
    Ok(info.channel_address)
}

pub async fn run(command: ChannelCommand) -> anyhow::Result<()> {
    match command {
        ChannelCommand::Status(args) => status(&args).await,
        ChannelCommand::Refund { args, channel } => refund(&args, channel).await,
    }
}

async fn status(args: &ChannelArgs) -> anyhow::Result<()> {
    let wallet = load_wallet(args.wallet_key_file.as_deref())?;
    let contract = contract(args).await?;
    let now = EvmChain::connect(&args.rpc_url, None, contract).await?.now().await?;
    let channels = channels_opened_by(&args.rpc_url, contract, wallet.address()).await?;
    if channels.is_empty() {
        println!("wallet {} has opened no channel", wallet.address().to_checksum(None));
    }
    for (id, channel) in channels {
        let expiry = if channel.expires_at > now {
            format!("expires in {} s", channel.expires_at - now)
        } else {
            "expired".to_owned()
        };
        println!("{id:#x}  {:?}  deposit {} wei  {expiry}", channel.status, channel.deposit);
    }
    Ok(())
}

async fn refund(args: &ChannelArgs, only: Option<B256>) -> anyhow::Result<()> {
    let wallet = load_wallet(args.wallet_key_file.as_deref())?;
    let contract = contract(args).await?;
    let now = EvmChain::connect(&args.rpc_url, None, contract).await?.now().await?;
    let candidates: Vec<_> = channels_opened_by(&args.rpc_url, contract, wallet.address())
        .await?
        .into_iter()
        .filter(|(id, _)| only.is_none_or(|only| only == *id))
        .collect();
    if candidates.is_empty() {
        bail!("no such channel opened by {}", wallet.address().to_checksum(None));
    }
    let mut refunded = 0;
    for (id, channel) in candidates {
        match channel.status {
            ChannelStatus::Open if channel.expires_at <= now => {
                let tx = refund_channel(&args.rpc_url, &wallet, contract, id).await?;
                println!("{id:#x}: refunded {} wei (tx {tx:#x})", channel.deposit);
                refunded += 1;
            }
            ChannelStatus::Open => println!("{id:#x}: not expired yet ({} s left)", channel.expires_at - now),
            other => println!("{id:#x}: {other:?}, nothing to refund"),
        }
    }
    if refunded == 0 && only.is_some() {
        bail!("nothing was refunded");
    }
    Ok(())
}
