//! Viewer commands on the viewer's own channels: `tollstream channel
//! status` and `tollstream channel refund`.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tollstream_chain::{Chain, ChannelStatus, channels_opened_by, refund_channel};
use tollstream_client::viewer::connect_chain;
use tollstream_client::wallet::load_wallet;
use tollstream_client::{Client, Tls, ViewerError};
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
    /// A Tollstream server whose contract to use (http:// or https://).
    #[arg(long)]
    server: Option<String>,
    /// Also trust the CA certificates in this PEM file for an https
    /// --server (a private CA's, or a self-signed server's own certificate).
    #[arg(long, value_name = "FILE", requires = "server")]
    ca_cert: Option<PathBuf>,
    /// The wallet that opened the channels (hex key file); or set TOLLSTREAM_WALLET_KEY.
    #[arg(long, env = "TOLLSTREAM_WALLET_KEY_FILE")]
    wallet_key_file: Option<PathBuf>,
}

async fn contract(args: &ChannelArgs) -> anyhow::Result<Address> {
    if let Some(contract) = args.contract {
        return Ok(contract);
    }
    let url = args.server.as_deref().expect("clap requires --contract or --server");
    let tls = Tls::new(args.ca_cert.as_deref())?;
    let client = Client::connect_with(url, &tls).await.with_context(|| format!("cannot reach the server at {url}"))?;
    let info = client.public_key().await?;
    client.close().await;
    Ok(info.channel_address)
}

/// The chain's time, read through --rpc-url.
async fn now(args: &ChannelArgs, contract: Address) -> anyhow::Result<u64> {
    let chain = connect_chain(&args.rpc_url, contract).await.map_err(|e| super::watch::rpc_error(e, None))?;
    chain.now().await.map_err(|e| super::watch::rpc_error(ViewerError::from_chain(&args.rpc_url, e), None))
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
    let now = now(args, contract).await?;
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
        println!("{id:#x}  {:?}  deposit {}  {expiry}", channel.status, deposit(&channel));
    }
    Ok(())
}

async fn refund(args: &ChannelArgs, only: Option<B256>) -> anyhow::Result<()> {
    let wallet = load_wallet(args.wallet_key_file.as_deref())?;
    let contract = contract(args).await?;
    let now = now(args, contract).await?;
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
                println!("{id:#x}: refunded {} (tx {tx:#x})", deposit(&channel));
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

/// A channel's deposit with its unit: wei, or the token's smallest unit.
fn deposit(channel: &tollstream_chain::OnChainChannel) -> String {
    if channel.token.is_zero() {
        format!("{} wei", channel.deposit)
    } else {
        format!("{} units of token {}", channel.deposit, channel.token.to_checksum(None))
    }
}
