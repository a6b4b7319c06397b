//! `tollstream demo`: everything a new user needs to watch a paid stream,
//! started by one command: a local chain, the contract, funded wallets, a
//! packaged demo video and the server.

use super::package::package_with_progress;
use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;
use tollstream_chain::anvil::{Anvil, AnvilOptions};
use tollstream_chain::{Chain, EvmChain, TestStablecoin, connect_provider, deploy, deploy_test_stablecoin};
use tollstream_media::{KeyStore, PackageOptions, generate_test_video, load_stream};
use tollstream_protocol::{Amount, SigningKey, U256, format_price_per_hour};
use tollstream_server::{CancellationToken, ServeConfig};

/// The stream id of the demo video.
const STREAM: &str = "demo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port of the server (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Where the demo keeps its database, keys, wallets and video.
    #[arg(long, default_value = "tollstream-demo")]
    data_dir: PathBuf,
    /// Seconds of stream one payment buys.
    #[arg(long, default_value_t = 10.0)]
    window_seconds: f64,
    /// Price of one window, in the deposit's smallest unit [default: in
    /// ETH 100000000000000 wei; with --token 200 units (0.0002 dollar) per
    /// second of window, i.e. $0.72 an hour].
    #[arg(long)]
    window_price: Option<Amount>,
    /// Sell in a test stablecoin instead of ETH: deploys a 6-decimal test
    /// dollar (EIP-2612 permits, EIP-3009 authorizations), gives each
    /// viewer 1,000 of it and no ETH at all, so viewers start with a
    /// gasless open whose gas the server pays.
    #[arg(long)]
    token: bool,
    /// A video to sell instead of the generated test pattern.
    #[arg(long)]
    video: Option<PathBuf>,
    /// Length of the generated test pattern, in seconds.
    #[arg(long, default_value_t = 180)]
    video_seconds: u32,
    /// Use this chain instead of starting anvil; it must fund anvil's
    /// default dev accounts (as any anvil does).
    #[arg(long)]
    rpc_url: Option<String>,
    /// Keep the server's channels in this database (`postgres://…`)
    /// instead of the SQLite file in the data directory.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Serve the demo over https with this PEM certificate chain (leaf
    /// first), as `serve --tls-cert` does; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// anvil's well-known default dev keys (its default mnemonic), used when
/// the chain is given with --rpc-url and so prints no keys to us.
const ANVIL_DEV_KEYS: [&str; 4] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
];

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;

    // The chain. Its dev accounts pay for everything: account 0 deploys,
    // account 1 is the server's wallet, the rest are viewers.
    let (anvil, rpc_url, dev_keys) = match &args.rpc_url {
        Some(url) => {
            let keys = ANVIL_DEV_KEYS.iter().map(|k| SigningKey::from_hex(k).expect("valid dev key")).collect();
            (None, url.clone(), keys)
        }
        None => {
            eprintln!("starting anvil…");
            let options = AnvilOptions { die_with_parent_thread: true, ..Default::default() };
            let anvil = Anvil::spawn_with(&options).context("cannot start anvil (run `npm ci` first)")?;
            let url = anvil.endpoint().to_owned();
            let keys = anvil.dev_keys().to_vec();
            (Some(anvil), url, keys)
        }
    };
    if dev_keys.len() < 3 {
        bail!("the chain offers {} dev accounts; the demo needs 3", dev_keys.len());
    }
    let contract = deploy(connect_provider(&rpc_url, Some(&dev_keys[0]))?)
        .await
        .with_context(|| format!("cannot deploy the contract on {rpc_url}"))?;
    let chain_id = EvmChain::connect(&rpc_url, None, contract).await?.chain_id();
    eprintln!("deployed the channel contract at {}", contract.to_checksum(None));

    // This run's contract knows none of an earlier run's channels: their
    // store is moved aside, never deleted (signed states are money while
    // their chain lives).
    if data_dir.join("tollstream.sqlite").exists() {
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let aside = data_dir.join("previous-runs").join(stamp.to_string());
        std::fs::create_dir_all(&aside)?;
        for file in ["tollstream.sqlite", "tollstream.sqlite-wal", "tollstream.sqlite-shm"] {
            if data_dir.join(file).exists() {
                std::fs::rename(data_dir.join(file), aside.join(file))?;
            }
        }
        eprintln!("moved the previous run's store to {}", aside.display());
    }
    let server_key_file = data_dir.join("server.key");
    write_key(&server_key_file, &dev_keys[1])?;
    let token = match args.token {
        true => Some(deploy_token(&rpc_url, &dev_keys[0]).await?),
        false => None,
    };
    // With a token, fresh viewers holding the token and no ETH: the only
    // way they can start is gasless.
    let fresh_viewers: Vec<SigningKey>;
    let viewers: &[SigningKey] = match token {
        Some(token) => {
            fresh_viewers = (0..2).map(|_| tollstream_client::wallet::random_key()).collect();
            fund_viewers(&rpc_url, &dev_keys[0], token, &fresh_viewers).await?;
            &fresh_viewers
        }
        None => &dev_keys[2..],
    };
    let window_price = match (args.window_price, token) {
        (Some(price), _) => price,
        (None, Some(_)) => Amount::from(TOKEN_UNITS_PER_SECOND * args.window_seconds.ceil().max(1.0) as u64),
        (None, None) => Amount::from(100_000_000_000_000u64),
    };
    for (index, key) in viewers.iter().enumerate() {
        write_key(&data_dir.join(format!("viewer-{}.key", index + 1)), key)?;
    }

    prepare_video(&args, &data_dir).await?;

    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let scheme = if args.tls_cert.is_some() { "https" } else { "http" };
    let server_url = format!("{scheme}://{}", listener.local_addr()?);
    let mut demo = json!({
        "server_url": server_url,
        "rpc_url": rpc_url,
        "chain_id": chain_id,
        "contract": contract.to_checksum(None),
        "viewer_private_keys": viewers.iter().map(|k| format!("0x{}", hex(&k.to_bytes()))).collect::<Vec<_>>(),
    });
    if let Some(token) = token {
        demo["token"] = json!(token.to_checksum(None));
        demo["token_symbol"] = json!(TOKEN_SYMBOL);
        demo["token_decimals"] = json!(TOKEN_DECIMALS);
    }
    std::fs::write(data_dir.join("demo.json"), serde_json::to_string_pretty(&demo)? + "\n")?;

    let config = ServeConfig {
        listen: vec![listener.local_addr()?],
        data_dir: data_dir.clone(),
        database_url: args.database_url.clone(),
        process_name: None,
        media_dir: None,
        segment_base_url: None,
        keys_dir: None,
        rpc_url: vec![rpc_url.clone()],
        rpc_timeout: 5.0,
        // anvil mines each transaction at once and never reorgs: the
        // latest block is final, so the demo sells at once.
        confirmations: 1,
        unconfirmed_windows: 0,
        max_fee_per_gas: Amount::from(200_000_000_000u64),
        resubmit_blocks: 3,
        log_range_blocks: 2_000,
        contract,
        wallet_key_file: server_key_file,
        window_seconds: args.window_seconds,
        window_price,
        token,
        no_gasless_open: false,
        gasless_opens: 8,
        pay_timeout: 10.0,
        min_channel_seconds: 86_400,
        settle_margin: 3_600,
        settle_interval: 2.0,
        close_batch_size: 20,
        streams: Vec::new(),
        commit_per_payment: false,
        // Loopback only, a handful of viewers: the limits a public server
        // starts with (`serve`'s defaults).
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        requests_per_second: 10,
        request_burst: 20,
        flood_limit: 200,
        max_connections_per_address: 64,
        new_connections_per_second: 200,
        chain_lookups: 16,
        negative_cache_seconds: 5.0,
        demo: Some(demo),
    };
    let state = tollstream_server::build_state(&config, CancellationToken::new()).await?;

    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "tollstream".into());
    println!("tollstream listening on {server_url}");
    println!();
    println!("Tollstream demo is running.");
    println!("  player page:  {server_url}/");
    println!("  chain:        {rpc_url} (chain {chain_id}), contract {}", contract.to_checksum(None));
    let (symbol, decimals) = if token.is_some() { (TOKEN_SYMBOL, TOKEN_DECIMALS) } else { ("ETH", 18) };
    println!(
        "  price:        {} ({window_price} units per {} s window)",
        format_price_per_hour(window_price.0, args.window_seconds, decimals, symbol),
        args.window_seconds
    );
    if let Some(token) = token {
        println!("  token:        {TOKEN_SYMBOL} at {}; viewers hold 1,000 of it and no ETH", token.to_checksum(None));
    }
    let ca_cert = args.tls_cert.as_ref().map(|cert| format!(" --ca-cert {}", cert.display())).unwrap_or_default();
    println!("  watch it:     {exe} watch {server_url}{ca_cert} --rpc-url {rpc_url} \\");
    println!(
        "                  --wallet-key-file {} --minutes 1 -o - | ffplay -",
        data_dir.join("viewer-1.key").display()
    );
    println!("  details:      {}", data_dir.join("demo.json").display());
    println!("Press Ctrl-C to stop everything.");
    std::io::stdout().flush()?;

    tollstream_server::run(state, vec![listener], super::shutdown_signal()).await?;
    drop(anvil);
    eprintln!("demo stopped");
    Ok(())
}

/// The test dollar's symbol and decimals (contracts/TestStablecoin.sol).
const TOKEN_SYMBOL: &str = "tUSD";
const TOKEN_DECIMALS: u8 = 6;
/// The token demo's default price: 200 units (0.0002 dollar) a second.
const TOKEN_UNITS_PER_SECOND: u64 = 200;
/// What each token-demo viewer is given: 1,000 dollars.
const VIEWER_DOLLARS: u64 = 1_000;

/// Deploys the test dollar with the deployer as its minter.
async fn deploy_token(rpc_url: &str, deployer: &SigningKey) -> anyhow::Result<tollstream_protocol::Address> {
    let token = deploy_test_stablecoin(connect_provider(rpc_url, Some(deployer))?)
        .await
        .with_context(|| format!("cannot deploy the test dollar on {rpc_url}"))?;
    eprintln!("deployed the test dollar ({TOKEN_SYMBOL}) at {}", token.to_checksum(None));
    Ok(token)
}

/// Mints each viewer its dollars, and nothing else: they hold no ETH.
async fn fund_viewers(
    rpc_url: &str,
    minter: &SigningKey,
    token: tollstream_protocol::Address,
    viewers: &[SigningKey],
) -> anyhow::Result<()> {
    let contract = TestStablecoin::new(token, connect_provider(rpc_url, Some(minter))?);
    let amount = U256::from(VIEWER_DOLLARS) * U256::from(10u64).pow(U256::from(TOKEN_DECIMALS));
    for viewer in viewers {
        contract
            .mint(viewer.address(), amount)
            .send()
            .await
            .context("cannot mint the test dollar")?
            .get_receipt()
            .await
            .context("cannot mint the test dollar")?;
    }
    Ok(())
}

/// Packages the demo video unless an earlier run already did with the same
/// source and segment length.
async fn prepare_video(args: &DemoArgs, data_dir: &Path) -> anyhow::Result<()> {
    let out_dir = data_dir.join("media").join(STREAM);
    let source = match &args.video {
        Some(video) => video.canonicalize().with_context(|| format!("no video at {}", video.display()))?,
        None => data_dir.join(format!("test-pattern-{}s.mp4", args.video_seconds)),
    };
    let marker = format!("{}\n{}\n", source.display(), args.window_seconds);
    let marker_path = data_dir.join("media-source.txt");
    if std::fs::read_to_string(&marker_path).ok().as_deref() == Some(marker.as_str()) && load_stream(&out_dir).is_ok() {
        eprintln!("using the packaged video in {}", out_dir.display());
        return Ok(());
    }
    if args.video.is_none() && !source.exists() {
        eprintln!("generating a {} s test video with ffmpeg…", args.video_seconds);
        let seconds = args.video_seconds;
        let path = source.clone();
        tokio::task::spawn_blocking(move || generate_with_progress(&path, seconds)).await??;
    }
    let options = PackageOptions {
        input: source,
        stream_id: STREAM.into(),
        title: Some(match &args.video {
            Some(video) => video.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| STREAM.into()),
            None => "Test pattern with a clock".into(),
        }),
        out_dir,
        segment_seconds: args.window_seconds,
    };
    let keys = KeyStore::new(data_dir.join("keys"));
    tokio::task::spawn_blocking(move || package_with_progress(&options, &keys)).await??;
    std::fs::write(marker_path, marker)?;
    Ok(())
}

fn generate_with_progress(path: &Path, seconds: u32) -> Result<(), tollstream_media::MediaError> {
    let bar = indicatif::ProgressBar::new(u64::from(seconds));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} generating [{bar:30}] {pos}/{len} s")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    let result = generate_test_video(path, seconds, &mut |progress| bar.set_position(progress.done_seconds as u64));
    bar.finish_and_clear();
    result
}

fn write_key(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "0x{}", hex(&key.to_bytes()))?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
