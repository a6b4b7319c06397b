//! `tollstream deploy`.

use clap::Args;
use std::path::PathBuf;
use tollstream_chain::{connect_provider, deploy};

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// JSON-RPC endpoint of the chain.
    #[arg(long, env = "TOLLSTREAM_RPC_URL", default_value = "http://127.0.0.1:8545")]
    rpc_url: String,
    /// File holding the deployer's private key (hex); or set TOLLSTREAM_WALLET_KEY.
    #[arg(long, env = "TOLLSTREAM_WALLET_KEY_FILE")]
    wallet_key_file: Option<PathBuf>,
}

pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let wallet = tollstream_client::wallet::load_wallet(args.wallet_key_file.as_deref())?;
    let provider = connect_provider(&args.rpc_url, Some(&wallet))?;
    let address = deploy(provider).await?;
    println!("{}", address.to_checksum(None));
    Ok(())
}
