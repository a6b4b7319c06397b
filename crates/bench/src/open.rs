//! Opening many channels from one wallet quickly: transactions are built
//! and signed locally with explicit sequential nonces and sent in waves;
//! within a wave nothing waits for a receipt, and the wave's receipts are
//! collected at its end.

use alloy::eips::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, TxHash, U256};
use alloy::providers::{DynProvider, Provider};
use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use indicatif::ProgressBar;
use std::time::{Duration, Instant};
use tollstream_chain::TollstreamChannels;

/// One `open` to send.
#[derive(Debug, Clone)]
pub struct ToOpen {
    pub signer: Address,
    pub salt: B256,
}

/// What every channel shares.
#[derive(Debug, Clone)]
pub struct OpenPlan {
    pub contract: Address,
    pub payee: Address,
    pub deposit: U256,
    pub expires_at: u64,
    pub chain_id: u64,
    /// Transactions per wave.
    pub wave: usize,
    /// Transactions in flight to the node at once within a wave.
    pub send_concurrency: usize,
    /// How long to wait for a wave's receipts.
    pub receipt_timeout: Duration,
}

/// Opens one channel per entry of `channels`, from `from`. Returns the
/// number of transactions and the gas used.
///
/// # Errors
/// When a transaction is refused, reverts, or is not mined in time.
pub async fn open_all(
    provider: &DynProvider,
    wallet: &EthereumWallet,
    from: Address,
    plan: &OpenPlan,
    channels: &[ToOpen],
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    if channels.is_empty() {
        return Ok(0);
    }
    let registry = TollstreamChannels::new(plan.contract, provider);
    let request = |to_open: &ToOpen| {
        registry
            .open(plan.payee, to_open.signer, plan.expires_at, to_open.salt)
            .value(plan.deposit)
            .into_transaction_request()
            .with_from(from)
            .with_chain_id(plan.chain_id)
    };

    let count = U256::from(channels.len());
    let balance = provider.get_balance(from).await.context("cannot read the wallet's balance")?;
    let deposits = plan.deposit * count;
    if balance < deposits {
        bail!(
            "wallet {} holds {balance} wei, but {} channels of {} wei need {deposits} wei, plus gas",
            from.to_checksum(None),
            channels.len(),
            plan.deposit
        );
    }

    // Every `open` writes the same three fresh slots, so one estimate (plus
    // headroom) serves them all.
    let gas = provider
        .estimate_gas(request(&channels[0]))
        .await
        .context("the node refuses the first `open` (gas estimate failed)")?;
    let gas_limit = gas + gas / 4;
    let fees = provider.estimate_eip1559_fees().await.context("cannot read the chain's fees")?;
    // Headroom for a base fee rising during the waves.
    let max_fee = fees.max_fee_per_gas.saturating_mul(2);
    let priority = fees.max_priority_fee_per_gas;
    let needed = deposits + U256::from(gas_limit) * U256::from(max_fee) * count;
    if balance < needed {
        bail!(
            "wallet {} holds {balance} wei, but {} channels need up to {needed} wei (deposits and gas)",
            from.to_checksum(None),
            channels.len()
        );
    }

    let mut nonce = provider.get_transaction_count(from).pending().await.context("cannot read the wallet's nonce")?;
    let mut gas_used = 0u64;
    for wave in channels.chunks(plan.wave.max(1)) {
        // Build and sign the whole wave locally, nonces in order.
        let mut raw = Vec::with_capacity(wave.len());
        for to_open in wave {
            let tx = request(to_open)
                .with_nonce(nonce)
                .with_gas_limit(gas_limit)
                .with_max_fee_per_gas(max_fee)
                .with_max_priority_fee_per_gas(priority);
            let envelope = tx.build(wallet).await.context("cannot sign an `open` transaction")?;
            raw.push((*envelope.tx_hash(), envelope.encoded_2718(), nonce));
            nonce += 1;
        }
        // Send without waiting for any receipt. A node may take a later
        // nonce before an earlier one; it queues it until the gap fills.
        let hashes: Vec<TxHash> = stream::iter(raw)
            .map(|(hash, bytes, nonce)| async move {
                // The hash is known already; receipts are polled at the wave's end.
                let _pending = provider
                    .send_raw_transaction(&bytes)
                    .await
                    .with_context(|| format!("the node refused the `open` with nonce {nonce}"))?;
                Ok::<TxHash, anyhow::Error>(hash)
            })
            .buffer_unordered(plan.send_concurrency.max(1))
            .try_collect()
            .await?;
        gas_used += wait_for_receipts(provider, hashes, plan.receipt_timeout, bar).await?;
    }
    Ok(gas_used)
}

/// Polls without a new receipt (each 100 ms after the last one ended)
/// after which the node is asked to mine.
const STALL_POLLS: u32 = 20;

/// Counts the polls since the number of pending transactions last fell.
fn polled_since_progress(last: &mut (usize, u32), pending: usize) -> u32 {
    if pending < last.0 {
        *last = (pending, 0);
    }
    last.1 += 1;
    last.1
}

/// Polls the receipts of `hashes` until all are mined; fails on a revert or
/// after `timeout`.
async fn wait_for_receipts(
    provider: &DynProvider,
    mut pending: Vec<TxHash>,
    timeout: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    let mut gas_used = 0u64;
    let mut last_progress = (pending.len(), 0);
    let mut can_ask_to_mine = true;
    loop {
        let polled: Vec<(TxHash, Option<(bool, u64)>)> = stream::iter(pending)
            .map(|hash| async move {
                let receipt = provider
                    .get_transaction_receipt(hash)
                    .await
                    .with_context(|| format!("cannot read the receipt of {hash:#x}"))?;
                Ok::<_, anyhow::Error>((hash, receipt.map(|r| (r.status(), r.gas_used))))
            })
            .buffer_unordered(32)
            .try_collect()
            .await?;
        pending = Vec::new();
        for (hash, receipt) in polled {
            match receipt {
                Some((true, used)) => {
                    gas_used += used;
                    bar.inc(1);
                }
                Some((false, _)) => bail!("the `open` transaction {hash:#x} reverted"),
                None => pending.push(hash),
            }
        }
        if pending.is_empty() {
            return Ok(gas_used);
        }
        if can_ask_to_mine && polled_since_progress(&mut last_progress, pending.len()) >= STALL_POLLS {
            // anvil's automine can leave ready transactions of a burst in
            // its pool until something else arrives (foundry-rs/foundry#10122):
            // ask for a block. A node without `evm_mine` refuses, once, and
            // its own block production mines them anyway.
            let mined: Result<serde_json::Value, _> = provider.raw_request("evm_mine".into(), ()).await;
            match mined {
                Ok(_) => tracing::info!(pending = pending.len(), "receipts stalled; asked the node to mine a block"),
                Err(error) => {
                    tracing::debug!(%error, "the node does not take evm_mine; waiting for its own blocks");
                    can_ask_to_mine = false;
                }
            }
            last_progress = (pending.len(), 0);
        }
        if Instant::now() >= deadline {
            bail!("{} `open` transactions were not mined within {timeout:?} (first: {:#x})", pending.len(), pending[0]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
