//! `tollstream`: one binary, a subcommand per job. Each subcommand lives in
//! `commands/`; this file only parses and dispatches.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Sell and watch media streams paid by the second over payment channels.
#[derive(Debug, Parser)]
#[command(name = "tollstream", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a complete local demo: chain, contract, wallets, video, server.
    Demo(commands::demo::DemoArgs),
    /// Run the server: Socket.IO payments and HTTP on one port.
    Serve(Box<tollstream_server::ServeConfig>),
    /// Watch a stream, paying for it window by window.
    Watch(commands::watch::WatchArgs),
    /// Cut a video into encrypted HLS segments for the server to sell.
    Package(commands::package::PackageArgs),
    /// Create or show a wallet key file.
    #[command(subcommand)]
    Wallet(commands::wallet::WalletCommand),
    /// Deploy the channel registry contract and print its address.
    Deploy(commands::deploy::DeployArgs),
    /// List the server's channels (operator).
    Channels(commands::channels::ChannelsArgs),
    /// Close channels on chain now (operator): due ones, --all, or one.
    Settle(commands::channels::SettleArgs),
    /// A viewer's channels on chain: status, refund after expiry.
    #[command(subcommand)]
    Channel(commands::channel::ChannelCommand),
    /// Load-test a server: many viewers playing and paying at once.
    Bench(commands::bench::BenchArgs),
    /// Load-test a server's connection capacity: hold many idle connections
    /// and report its memory per connection.
    BenchConnections(commands::bench::ConnectionsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    commands::init_logging();
    commands::raise_open_files_limit();
    tollstream_chain::rpc::install_default_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Serve(config) => commands::serve::run(*config).await,
            Command::Watch(args) => commands::watch::run(args).await,
            Command::Package(args) => commands::package::run(args).await,
            Command::Wallet(command) => commands::wallet::run(command),
            Command::Deploy(args) => commands::deploy::run(args).await,
            Command::Channels(args) => commands::channels::list(args).await,
            Command::Settle(args) => commands::channels::settle(args).await,
            Command::Channel(command) => commands::channel::run(command).await,
            Command::Bench(args) => commands::bench::run(args).await,
            Command::BenchConnections(args) => commands::bench::run_connections(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
