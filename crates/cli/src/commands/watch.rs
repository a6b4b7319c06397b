//! `tollstream watch URL`: the seed's client. Find the channel (or buy
//! one), play, pay window by window, and stop at the final payment or on
//! Ctrl-C (keeping the channel for next time).

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use tollstream_client::player::MediaFetcher;
use tollstream_client::wallet::load_wallet;
use tollstream_client::{Event, Step, Tls, Viewer, ViewerError};
use tollstream_protocol::{ChannelState, U256};
use tollstream_protocol::{ErrorCode, ProtocolError, Secret};
use tollstream_protocol::{format_amount, format_price_per_hour};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The server, e.g. https://stream.example or http://127.0.0.1:8080.
    url: String,
    /// The stream to watch (default: the server's first).
    #[arg(long)]
    stream: Option<String>,
    /// The first segment to buy keys for.
    #[arg(long, default_value_t = 0)]
    from_segment: u64,
    /// With no channel yet, buy this many hours without asking.
    #[arg(long, group = "amount")]
    hours: Option<f64>,
    /// With no channel yet, buy this many minutes without asking.
    #[arg(long, group = "amount")]
    minutes: Option<f64>,
    /// With no channel yet, buy this many payment windows without asking.
    #[arg(long, group = "amount")]
    windows: Option<u64>,
    /// Stop (keeping the channel) after this many payments.
    #[arg(long)]
    max_payments: Option<u64>,
    /// JSON-RPC endpoint of the server's chain, used to open a channel.
    #[arg(long, env = "TOLLSTREAM_RPC_URL", default_value = "http://127.0.0.1:8545")]
    rpc_url: String,
    /// Also trust the CA certificates in this PEM file for an https server
    /// (a private CA's, or a self-signed server's own certificate).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The wallet that funds channels (hex key file); or set TOLLSTREAM_WALLET_KEY.
    #[arg(long, env = "TOLLSTREAM_WALLET_KEY_FILE")]
    wallet_key_file: Option<PathBuf>,
    /// Lifetime of a new channel in seconds (default: twice the server's minimum).
    #[arg(long)]
    channel_lifetime: Option<u64>,
    /// Write the decrypted MPEG-TS here as windows are paid ("-" for
    /// stdout, e.g. `-o - | ffplay -`). Without it, only keys are bought.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let wallet = load_wallet(args.wallet_key_file.as_deref())?;
    let tls = Tls::new(args.ca_cert.as_deref())?;
    let mut viewer = Viewer::connect_with(&args.url, &tls, wallet)
        .await
        .with_context(|| format!("cannot reach the server at {}", args.url))?;
    let info = viewer.info().clone();
    let stream = match &args.stream {
        Some(id) => id.clone(),
        None => match info.streams.first() {
            Some(stream) => stream.id.clone(),
            None => bail!("the server sells no streams"),
        },
    };
    if !info.streams.iter().any(|s| s.id == stream) {
        let ids: Vec<&str> = info.streams.iter().map(|s| s.id.as_str()).collect();
        bail!("the server has no stream {stream:?}; it has {ids:?}");
    }

    let channel = match viewer.resume().await? {
        Some(state) => {
            eprintln!(
                "resuming channel {} at payment {} ({} left)",
                state.channel_id,
                state.client_sequence_number,
                amount(&info, state.client_balance)
            );
            state
        }
        None => {
            let windows = windows_to_buy(&args, info.window_seconds)?;
            let lifetime = args.channel_lifetime.unwrap_or(2 * info.min_channel_seconds.max(3_600));
            let how = if info.gasless_open && info.token != tollstream_protocol::NATIVE_TOKEN {
                "gasless: one signature, the server sends the open"
            } else {
                "a transaction of this wallet"
            };
            eprintln!(
                "opening a channel for {windows} windows ({} s) at {} ({} per window; {how})…",
                (windows as f64 * info.window_seconds).round(),
                format_price_per_hour(
                    info.window_price.0,
                    info.window_seconds,
                    info.token_decimals,
                    &info.token_symbol
                ),
                amount(&info, info.window_price),
            );
            viewer.buy(&args.rpc_url, windows, lifetime).await.map_err(|e| rpc_error(e, Some(info.chain_id)))?
        }
    };

    let mut media = match &args.output {
        Some(path) => {
            let listed = info.streams.iter().find(|s| s.id == stream).expect("checked above");
            let fetcher = MediaFetcher::open_with(&tls, &args.url, &stream, &listed.playlist)
                .await
                .with_context(|| format!("stream {stream:?} has no playable media"))?;
            Some(Output { fetcher, writer: open_output(path)?, from: args.from_segment })
        }
        None => None,
    };

    let total_windows = windows_in(&channel, info.window_price.0);
    let bar = progress_bar(total_windows);
    bar.set_position(channel.client_sequence_number);
    viewer.play(&stream, args.from_segment).await?;

    let mut payments = 0u64;
    let outcome = loop {
        let event = tokio::select! {
            event = viewer.next_event() => event,
            _ = super::shutdown_signal() => break Outcome::Interrupted,
        };
        let step = match event {
            Event::Pay(request, answer) => {
                // Never pay for a window whose segments cannot be fetched.
                let fetched = match &mut media {
                    Some(out) => out.fetcher.prefetch(request.first_segment, request.segment_count).await,
                    None => Ok(()),
                };
                match fetched {
                    Ok(()) => viewer.answer_pay(request, answer).await,
                    Err(error) => {
                        let reason = ProtocolError::new(ErrorCode::PaymentRefused, error.to_string());
                        viewer.refuse_pay(request, answer, reason).await
                    }
                }
            }
            Event::Step(step) => step,
        };
        match step {
            Step::Paid { state, .. } => {
                payments += 1;
                bar.set_position(state.client_sequence_number);
                bar.set_message(format!(
                    "{} left · {} s bought",
                    amount(&info, state.client_balance),
                    (state.client_sequence_number as f64 * info.window_seconds).round()
                ));
                tracing::debug!(seq = state.client_sequence_number, "paid");
            }
            Step::Keys(secret) => {
                tracing::info!(seq = secret.client_sequence_number, keys = secret.keys.len(), "window keys received");
                if let Some(out) = &mut media {
                    out.write(&secret).await?;
                }
                if args.max_payments.is_some_and(|max| payments >= max) {
                    break Outcome::Enough;
                }
            }
            Step::Final(secret) => {
                tracing::info!(seq = secret.client_sequence_number, "final window keys received");
                if let Some(out) = &mut media {
                    out.write(&secret).await?;
                }
                break Outcome::Spent;
            }
            Step::Refused { request, reason } => {
                tracing::warn!(seq = request.client_sequence_number, %reason, "refused a payment request");
            }
            Step::Stopped(error) => break Outcome::Stopped(error),
            Step::Disconnected => break Outcome::Disconnected,
        }
    };
    bar.finish_and_clear();

    // With the stream on stdout, the summary goes to stderr.
    let to_stdout = args.output.as_deref().is_none_or(|path| path.as_os_str() != "-");
    let say = |line: String| if to_stdout { println!("{line}") } else { eprintln!("{line}") };
    match outcome {
        Outcome::Interrupted | Outcome::Enough => {
            let _ = viewer.stop().await;
            let left = viewer.channel().map(|c| amount(&info, c.client_balance)).unwrap_or_default();
            say(format!("paid {payments} windows; stopped; channel kept with {left} for next time"));
        }
        Outcome::Spent => say(format!("paid {payments} windows; the channel is spent")),
        Outcome::Stopped(error) if error.code == tollstream_protocol::ErrorCode::StreamEnded => {
            say(format!("paid {payments} windows; the stream ended"));
        }
        Outcome::Stopped(error) if error.code == ErrorCode::SessionReplaced => bail!(
            "stopped after {payments} payments: this wallet's channel started streaming on another connection \
             (another `tollstream watch` or a player page with the same wallet took it over); the channel is \
             kept, so running watch again takes it back"
        ),
        Outcome::Stopped(error) => bail!("the server stopped streaming after {payments} payments: {error}"),
        Outcome::Disconnected => bail!("the connection closed after {payments} payments"),
    }
    viewer.client().close().await;
    Ok(())
}

/// A viewer's error, with what to do when the chain RPC is the trouble:
/// said once, naming the flag to pass and the chain it must reach.
pub(crate) fn rpc_error(error: ViewerError, chain_id: Option<u64>) -> anyhow::Error {
    match error {
        ViewerError::ChainUnreachable { .. } | ViewerError::WrongChain { .. } => {
            let which = match chain_id {
                Some(id) => format!("of chain {id}, the server's chain"),
                None => "of the chain".to_owned(),
            };
            anyhow::anyhow!("{error}; pass --rpc-url with a JSON-RPC endpoint {which} (or set TOLLSTREAM_RPC_URL)")
        }
        other => other.into(),
    }
}

/// Where decrypted segments go.
struct Output {
    fetcher: MediaFetcher,
    writer: Box<dyn Write + Send>,
    /// Segments before this one are not written (a resumed window's keys
    /// may be re-sent).
    from: u64,
}

impl Output {
    async fn write(&mut self, secret: &Secret) -> anyhow::Result<()> {
        for key in &secret.keys {
            if key.segment < self.from {
                continue;
            }
            let plaintext = self.fetcher.decrypt(key).await?;
            self.writer.write_all(&plaintext).context("cannot write the output")?;
            self.from = key.segment + 1;
        }
        self.writer.flush().context("cannot write the output")?;
        Ok(())
    }
}

fn open_output(path: &std::path::Path) -> anyhow::Result<Box<dyn Write + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdout()));
    }
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Box::new(std::io::BufWriter::new(file)))
}

enum Outcome {
    Interrupted,
    Enough,
    Spent,
    Stopped(tollstream_protocol::ProtocolError),
    Disconnected,
}

fn windows_in(state: &ChannelState, price: U256) -> u64 {
    match state.deposit() {
        Some(deposit) if !price.is_zero() => u64::try_from(deposit.0 / price).unwrap_or(u64::MAX),
        _ => 0,
    }
}

/// How many windows to buy: from the flags, else asked on the terminal.
fn windows_to_buy(args: &WatchArgs, window_seconds: f64) -> anyhow::Result<u64> {
    let from_seconds = |seconds: f64| -> anyhow::Result<u64> {
        if !(seconds.is_finite() && seconds > 0.0) {
            bail!("buy a positive amount of time");
        }
        Ok((seconds / window_seconds).ceil().max(1.0) as u64)
    };
    if let Some(windows) = args.windows {
        if windows == 0 {
            bail!("--windows must be at least 1");
        }
        return Ok(windows);
    }
    if let Some(hours) = args.hours {
        return from_seconds(hours * 3600.0);
    }
    if let Some(minutes) = args.minutes {
        return from_seconds(minutes * 60.0);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no channel yet: pass --hours, --minutes or --windows to buy one");
    }
    eprint!("You have no channel with this server. Buy how many hours? [1] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let hours =
        if line.trim().is_empty() { 1.0 } else { line.trim().parse::<f64>().context("not a number of hours")? };
    from_seconds(hours * 3600.0)
}

fn progress_bar(total_windows: u64) -> ProgressBar {
    let bar = ProgressBar::new(total_windows);
    bar.set_style(
        ProgressStyle::with_template("{spinner} paid {pos}/{len} windows [{bar:30}] {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar
}

/// An amount in the server's token, as a person reads it ("$0.60",
/// "0.0001 ETH").
fn amount(info: &tollstream_protocol::ServerInfo, value: tollstream_protocol::Amount) -> String {
    format_amount(value.0, info.token_decimals, &info.token_symbol)
}
