//! `tollstream wallet new|show`.

use clap::Subcommand;
use std::path::PathBuf;
use tollstream_client::wallet::{load_wallet, random_key, save_wallet, session_key};

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create a new wallet key file (mode 0600) and print its address.
    New {
        /// Where to write the key; never overwritten.
        #[arg(long, default_value = "wallet.key")]
        out: PathBuf,
    },
    /// Print a wallet's address and the session key address it derives.
    Show {
        /// The wallet key file; or set TOLLSTREAM_WALLET_KEY.
        #[arg(long, env = "TOLLSTREAM_WALLET_KEY_FILE")]
        wallet_key_file: Option<PathBuf>,
    },
}

pub fn run(command: WalletCommand) -> anyhow::Result<()> {
    match command {
        WalletCommand::New { out } => {
            let key = random_key();
            save_wallet(&out, &key)?;
            println!("wallet {} written to {}", key.address().to_checksum(None), out.display());
        }
        WalletCommand::Show { wallet_key_file } => {
            let key = load_wallet(wallet_key_file.as_deref())?;
            println!("wallet address:      {}", key.address().to_checksum(None));
            let session = session_key(&key);
            println!("session key address: {}", session.address().to_checksum(None));
            println!("session public key:  {}", session.public_key());
        }
    }
    Ok(())
}
