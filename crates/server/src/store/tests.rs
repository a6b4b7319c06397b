//! One suite for every [`Store`]: each test body is written once against
//! `&dyn Store` and instantiated (by `every_backend!` at the end) for
//! SQLite and PostgreSQL in both commit modes and for the in-memory
//! double, so a backend that drifts from the others fails here. Tests of
//! what only a file or a server can do (reopening, read-only access,
//! several servers on one database) follow the suite. PostgreSQL tests
//! each get a fresh database on one throwaway server (`store::testing`).

use super::testing::create_database;
use super::{
    ChannelStatus, CommitMode, DatabaseUrl, MemoryStore, OpenState, PgStore, SqliteStore, Store, StoreError,
    StoredChannel, Window,
};
use std::collections::HashMap;
use std::sync::Arc;
use tempfile::TempDir;
use tollstream_chain::memory::MemoryChain;
use tollstream_chain::{BlockRef, Chain, Fees, Inclusion, SignedTx};
use tollstream_protocol::{Address, Amount, B256, ChannelDomain, ChannelState, Signature, SigningKey, U256};

/// One window's price in these tests.
const PRICE: u64 = 100;

/// A signed opening state of channel `id` holding `deposit`.
fn signed_opening(key: &SigningKey, id: B256, deposit: u64) -> ChannelState {
    let domain = ChannelDomain::new(31337, Address::repeat_byte(0xc0));
    let mut state = ChannelState {
        channel_id: id,
        channel_address: domain.contract,
        client_wallet_address: Address::repeat_byte(0xa1),
        client_public_key: key.public_key(),
        client_balance: Amount(U256::from(deposit)),
        server_balance: Amount::ZERO,
        client_sequence_number: 0,
        client_signature: Signature([0; 65]),
    };
    state.sign(&domain, key);
    state
}

fn key(byte: u8) -> SigningKey {
    SigningKey::from_bytes([byte; 32]).unwrap()
}

/// Channel `id` of client `client`, with room for `windows` payments.
fn opening(client: u8, id: u8, windows: u64) -> ChannelState {
    signed_opening(&key(client), B256::repeat_byte(id), PRICE * windows)
}

fn window(first: u64) -> Window {
    Window { stream_id: "demo".into(), first_segment: first, segment_count: 1 }
}

fn pay(state: &ChannelState) -> ChannelState {
    state.pay(Amount::from(PRICE)).unwrap()
}

/// A close of `state` at `nonce`, signed as the settlement worker would.
async fn signed_close(state: &ChannelState, nonce: u64, max_fee_per_gas: u128) -> SignedTx {
    let fees = Fees { max_fee_per_gas, max_priority_fee_per_gas: max_fee_per_gas / 10 };
    MemoryChain::new().sign_close(state, nonce, 60_000, fees).await.unwrap()
}

async fn insert(store: &dyn Store, state: &ChannelState, settle_by: u64) -> StoredChannel {
    store.insert_channel(state, settle_by + 100, settle_by, OpenState::Confirmed, None).await.unwrap()
}

async fn stored(store: &dyn Store, state: &ChannelState) -> StoredChannel {
    store.channel(&state.channel_id).await.unwrap().unwrap()
}

async fn status(store: &dyn Store, state: &ChannelState) -> ChannelStatus {
    stored(store, state).await.status
}

fn ids(channels: Vec<StoredChannel>) -> Vec<B256> {
    channels.into_iter().map(|c| c.state.channel_id).collect()
}

fn is_conflict(result: Result<(), StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict))
}

// The suite.

async fn payments_advance_by_compare_and_swap_only(store: &dyn Store) {
    let first = opening(3, 1, 2);
    let stored_first = insert(store, &first, 900).await;
    assert_eq!(
        (stored_first.state, stored_first.status, stored_first.window),
        (first.clone(), ChannelStatus::Open, None)
    );

    // The opening state has no predecessor; an unknown channel none either.
    assert!(is_conflict(store.record_payment(&first, &window(0)).await));
    assert!(is_conflict(store.record_payment(&pay(&opening(3, 2, 2)), &window(0)).await));

    let one = pay(&first);
    store.record_payment(&one, &window(0)).await.unwrap();
    // The same successor again, or one that skips, loses the swap.
    assert!(is_conflict(store.record_payment(&one, &window(0)).await));
    let skip = one.pay(Amount::ZERO).unwrap().pay(Amount::ZERO).unwrap();
    assert!(is_conflict(store.record_payment(&skip, &window(5)).await));
    assert_eq!((stored(store, &first).await.state, stored(store, &first).await.window), (one.clone(), Some(window(0))));

    let two = pay(&one);
    store.record_payment(&two, &window(1)).await.unwrap();
    let last = stored(store, &first).await;
    assert_eq!((last.state, last.window, last.status), (two.clone(), Some(window(1)), ChannelStatus::Final));
    // A final channel takes no more payments.
    let three = ChannelState { client_sequence_number: 3, ..two };
    assert!(is_conflict(store.record_payment(&three, &window(2)).await));
}

async fn insert_is_idempotent_and_the_newest_channel_wins(store: &dyn Store) {
    let block = BlockRef { number: 5, hash: B256::repeat_byte(0x05) };
    let old = opening(4, 9, 3);
    let inserted = store.insert_channel(&old, 1_000, 900, OpenState::Pending, Some(block)).await.unwrap();
    assert_eq!(
        (inserted.expires_at, inserted.settle_by, inserted.open_state, inserted.open_block),
        (1_000, 900, OpenState::Pending, Some(block))
    );
    assert_eq!((inserted.close_tx, inserted.close_nonce), (None, None));
    let paid = pay(&old);
    store.record_payment(&paid, &window(0)).await.unwrap();
    // Announcing it again, with whatever else, returns the stored, paid
    // channel unchanged.
    let again = store.insert_channel(&old, 5_000, 4_900, OpenState::Confirmed, None).await.unwrap();
    assert_eq!(again, stored(store, &old).await);
    assert_eq!(
        (again.state, again.expires_at, again.open_state, again.open_block, again.created_at),
        (paid, 1_000, OpenState::Pending, Some(block), inserted.created_at)
    );

    // Newest by when it was stored, not by id; likely within one
    // millisecond, so the order stored breaks the tie.
    let middle = opening(4, 2, 3);
    let new = opening(4, 5, 3);
    insert(store, &middle, 1_900).await;
    let someone_else = opening(6, 7, 3);
    insert(store, &someone_else, 1_900).await;
    insert(store, &new, 1_900).await;
    let newest = store.newest_for_client(&key(4).public_key()).await.unwrap().unwrap();
    assert_eq!(newest.state.channel_id, new.channel_id);
    let unknown = key(5).public_key();
    assert!(store.newest_for_client(&unknown).await.unwrap().is_none());
    // The old channels, with their money, are all still there, newest first.
    let listed = ids(store.list().await.unwrap());
    assert_eq!(listed, [new.channel_id, someone_else.channel_id, middle.channel_id, old.channel_id]);
}

async fn closes_are_compare_and_swap_and_keep_every_version(store: &dyn Store) {
    let first = opening(1, 1, 3);
    insert(store, &first, 900).await;
    let paid = pay(&first);
    store.record_payment(&paid, &window(0)).await.unwrap();
    assert!(store.close_record(&first.channel_id).await.unwrap().is_none(), "open: no close in flight");

    // A close for a stale sequence, or of an unknown channel, loses.
    let signed = signed_close(&paid, 4, 100).await;
    assert!(is_conflict(store.record_close(&first.channel_id, 0, &signed, 7).await));
    assert!(is_conflict(store.record_close(&B256::repeat_byte(0xee), 1, &signed, 7).await));
    // Nothing to replace before a close is recorded.
    assert!(is_conflict(store.record_replacement(&first.channel_id, &signed, 7).await));
    store.record_close(&first.channel_id, 1, &signed, 7).await.unwrap();
    let closing = stored(store, &first).await;
    assert_eq!(
        (closing.status, closing.close_tx, closing.close_nonce),
        (ChannelStatus::Closing, Some(signed.hash), Some(4))
    );
    // Once: a closing channel is not closed again, nor paid.
    assert!(is_conflict(store.record_close(&first.channel_id, 1, &signed, 7).await));
    assert!(is_conflict(store.record_payment(&pay(&paid), &window(1)).await));

    // Replacements at the same nonce join the record, oldest first; one at
    // another nonce is not a replacement.
    let bumped = signed_close(&paid, 4, 113).await;
    let bumped_again = signed_close(&paid, 4, 128).await;
    assert!(is_conflict(store.record_replacement(&first.channel_id, &signed_close(&paid, 5, 113).await, 8).await));
    store.record_replacement(&first.channel_id, &bumped, 8).await.unwrap();
    store.record_replacement(&first.channel_id, &bumped_again, 9).await.unwrap();
    assert_eq!(stored(store, &first).await.close_tx, Some(bumped_again.hash));
    let mined = Inclusion { tx: bumped.hash, block: 10, block_hash: B256::repeat_byte(0x10), success: true };
    store.record_close_mined(&first.channel_id, Some(&mined)).await.unwrap();
    let record = store.close_record(&first.channel_id).await.unwrap().unwrap();
    assert_eq!(record.attempts, vec![signed.clone(), bumped.clone(), bumped_again.clone()]);
    assert_eq!((record.sequence, record.signed_at_block, record.mined), (1, 9, Some(mined)));
    // A reorg took the block away.
    store.record_close_mined(&first.channel_id, None).await.unwrap();
    assert_eq!(store.close_record(&first.channel_id).await.unwrap().unwrap().mined, None);
    store.record_close_mined(&first.channel_id, Some(&mined)).await.unwrap();

    // Abandoned, it is open again with no close in flight; a payment
    // lands, and a close at the old sequence is now stale.
    store.abandon_close(&first.channel_id).await.unwrap();
    let reopened = stored(store, &first).await;
    assert_eq!((reopened.status, reopened.close_tx, reopened.close_nonce), (ChannelStatus::Open, None, None));
    assert!(store.close_record(&first.channel_id).await.unwrap().is_none());
    let later = pay(&paid);
    store.record_payment(&later, &window(1)).await.unwrap();
    let fresh = signed_close(&later, 6, 100).await;
    assert!(is_conflict(store.record_close(&first.channel_id, 1, &fresh, 20).await));
    // A fresh close starts a fresh record: the abandoned versions are kept
    // but not returned, and nothing is mined yet.
    store.record_close(&first.channel_id, 2, &fresh, 20).await.unwrap();
    let record = store.close_record(&first.channel_id).await.unwrap().unwrap();
    assert_eq!((record.sequence, record.attempts, record.signed_at_block, record.mined), (2, vec![fresh], 20, None));

    // A final channel's abandoned close leaves it final.
    let spent = opening(2, 2, 1);
    insert(store, &spent, 900).await;
    let last = pay(&spent);
    store.record_payment(&last, &window(0)).await.unwrap();
    store.record_close(&spent.channel_id, 1, &signed_close(&last, 7, 100).await, 7).await.unwrap();
    store.abandon_close(&spent.channel_id).await.unwrap();
    assert_eq!(status(store, &spent).await, ChannelStatus::Final);
    // Abandoning with no close in flight changes nothing.
    store.abandon_close(&spent.channel_id).await.unwrap();
    assert_eq!(status(store, &spent).await, ChannelStatus::Final);
    assert_eq!(store.list().await.unwrap().len(), 2);
}

async fn batched_closes_are_all_or_nothing_and_share_their_versions(store: &dyn Store) {
    let states: Vec<ChannelState> = (1..=3).map(|n| opening(n, n, 3)).collect();
    let mut paid = Vec::new();
    for state in &states {
        insert(store, state, 900).await;
        let next = pay(state);
        store.record_payment(&next, &window(0)).await.unwrap();
        paid.push(next);
    }
    let entries: Vec<(B256, u64)> = paid.iter().map(|s| (s.channel_id, s.client_sequence_number)).collect();
    // One version closes every channel of the batch (the calldata does not
    // matter to the store).
    let batch = signed_close(&paid[0], 3, 100).await;
    // A payment landed on the second channel: nothing is recorded, and
    // the stale channel is named.
    let later = pay(&paid[1]);
    store.record_payment(&later, &window(1)).await.unwrap();
    assert_eq!(store.record_closes(&entries, &batch, 7).await.unwrap(), vec![paid[1].channel_id]);
    for state in &paid {
        assert_ne!(status(store, state).await, ChannelStatus::Closing, "all or nothing");
        assert!(store.close_record(&state.channel_id).await.unwrap().is_none());
    }
    // Signed again without it, the batch is recorded for every entry.
    let batch = signed_close(&paid[0], 3, 101).await;
    let without = [entries[0], entries[2]];
    assert!(store.record_closes(&without, &batch, 7).await.unwrap().is_empty());
    for id in [entries[0].0, entries[2].0] {
        let channel = store.channel(&id).await.unwrap().unwrap();
        assert_eq!(
            (channel.status, channel.close_tx, channel.close_nonce),
            (ChannelStatus::Closing, Some(batch.hash), Some(3))
        );
        let record = store.close_record(&id).await.unwrap().unwrap();
        assert_eq!((record.attempts, record.signed_at_block), (vec![batch.clone()], 7));
    }
    assert_eq!(status(store, &later).await, ChannelStatus::Open);
    // A replacement joins every record still at that nonce; a channel of
    // the batch refunded meanwhile is left alone.
    assert!(store.mark_refunded(&entries[2].0).await.unwrap().is_some());
    let bumped = signed_close(&paid[0], 3, 113).await;
    store.record_replacements(&[entries[0].0, entries[2].0], &bumped, 9).await.unwrap();
    let record = store.close_record(&entries[0].0).await.unwrap().unwrap();
    assert_eq!((record.attempts, record.signed_at_block), (vec![batch.clone(), bumped.clone()], 9));
    assert_eq!(status(store, &paid[2]).await, ChannelStatus::Refunded);
    // None at that nonce: a conflict.
    let elsewhere = signed_close(&paid[0], 4, 113).await;
    assert!(is_conflict(store.record_replacements(&[entries[0].0, entries[2].0], &elsewhere, 9).await));
    // Abandoning one channel of a batch leaves the others' versions live.
    let other = pay(&later);
    store.record_payment(&other, &window(2)).await.unwrap();
    let second = signed_close(&paid[0], 5, 100).await;
    assert!(store.record_closes(&[(other.channel_id, 3)], &second, 10).await.unwrap().is_empty());
    store.abandon_close(&other.channel_id).await.unwrap();
    assert!(store.close_record(&other.channel_id).await.unwrap().is_none());
    assert_eq!(store.close_record(&entries[0].0).await.unwrap().unwrap().attempts.len(), 2);
    // The same version recorded again for an abandoned channel is live again.
    assert!(store.record_closes(&[(other.channel_id, 3)], &second, 11).await.unwrap().is_empty());
    assert_eq!(store.close_record(&other.channel_id).await.unwrap().unwrap().attempts, vec![second]);
}

async fn gasless_channels_are_due_with_nothing_owed_when_superseded_or_late(store: &dyn Store) {
    // Client 1 opened gaslessly and paid nothing; client 2 the same, not gasless.
    let gasless = opening(1, 1, 2);
    assert!(!insert(store, &gasless, 900).await.gasless, "not gasless unless marked");
    store.mark_gasless(&gasless.channel_id).await.unwrap();
    store.mark_gasless(&gasless.channel_id).await.unwrap();
    assert!(stored(store, &gasless).await.gasless);
    assert!(matches!(store.mark_gasless(&B256::repeat_byte(0xee)).await, Err(StoreError::NotFound)));
    let plain = opening(2, 2, 2);
    insert(store, &plain, 900).await;
    // Not before its settlement margin ...
    assert!(store.awaiting_settlement(899).await.unwrap().is_empty());
    // ... then due, though it owes nothing; the plain one is never due.
    assert_eq!(ids(store.awaiting_settlement(900).await.unwrap()), [gasless.channel_id]);
    // Superseded by the client's newer channel: due at once.
    let other = opening(3, 3, 2);
    insert(store, &other, 5_000).await;
    store.mark_gasless(&other.channel_id).await.unwrap();
    assert!(store.awaiting_settlement(100).await.unwrap().is_empty());
    insert(store, &opening(3, 4, 2), 6_000).await;
    assert_eq!(ids(store.awaiting_settlement(100).await.unwrap()), [other.channel_id]);
    // Closed, it is done.
    assert!(store.mark_closed(&other.channel_id, None).await.unwrap());
    assert!(store.awaiting_settlement(100).await.unwrap().is_empty());
}

async fn due_channels_are_final_closing_late_or_superseded(store: &dyn Store) {
    // Client 1: nothing paid, ever; later superseded.
    let idle = opening(1, 1, 2);
    insert(store, &idle, 900).await;
    // Client 2: paid, due at 950.
    let owing = opening(2, 2, 2);
    insert(store, &owing, 950).await;
    store.record_payment(&pay(&owing), &window(0)).await.unwrap();
    // Client 3: spent in full, due whenever.
    let spent = opening(3, 3, 1);
    insert(store, &spent, 4_900).await;
    store.record_payment(&pay(&spent), &window(0)).await.unwrap();

    // Before settle_by only the final channel is due; nothing owed is never due.
    assert_eq!(ids(store.awaiting_settlement(100).await.unwrap()), [spent.channel_id]);
    assert_eq!(ids(store.awaiting_settlement(949).await.unwrap()), [spent.channel_id]);
    assert_eq!(ids(store.awaiting_settlement(950).await.unwrap()), [owing.channel_id, spent.channel_id]);
    assert_eq!(ids(store.awaiting_settlement(u64::MAX / 2).await.unwrap()), [owing.channel_id, spent.channel_id]);
    // What the payee's gas must cover: every channel that owes, due or not.
    assert_eq!(store.count_owing().await.unwrap(), 2);

    // Client 4 paid on an old channel, then opened a new one: the old one
    // will never be paid again, so it is due now; the new one is not.
    let old = opening(4, 4, 3);
    insert(store, &old, 5_000).await;
    store.record_payment(&pay(&old), &window(0)).await.unwrap();
    assert!(!ids(store.awaiting_settlement(100).await.unwrap()).contains(&old.channel_id));
    let new = opening(4, 5, 3);
    insert(store, &new, 6_000).await;
    store.record_payment(&pay(&new), &window(0)).await.unwrap();
    // Client 1's new channel supersedes one that owes nothing: not due.
    insert(store, &opening(1, 6, 2), 6_000).await;
    assert_eq!(ids(store.awaiting_settlement(100).await.unwrap()), [spent.channel_id, old.channel_id]);

    // A close in flight stays due until it is settled; settled channels
    // never are.
    let paid = stored(store, &owing).await.state;
    store.record_close(&owing.channel_id, 1, &signed_close(&paid, 1, 100).await, 7).await.unwrap();
    assert_eq!(
        ids(store.awaiting_settlement(100).await.unwrap()),
        [owing.channel_id, spent.channel_id, old.channel_id]
    );
    assert!(store.mark_closed(&owing.channel_id, None).await.unwrap());
    assert!(store.mark_closed(&spent.channel_id, None).await.unwrap());
    assert!(store.mark_refunded(&old.channel_id).await.unwrap().is_some());
    assert!(store.awaiting_settlement(100).await.unwrap().is_empty());
    assert_eq!(ids(store.awaiting_settlement(u64::MAX / 2).await.unwrap()), [new.channel_id]);
}

async fn open_states_are_stored_and_returned(store: &dyn Store) {
    let first = opening(1, 1, 2);
    let at = BlockRef { number: 12, hash: B256::repeat_byte(0x12) };
    let inserted = store.insert_channel(&first, 1_000, 900, OpenState::Pending, Some(at)).await.unwrap();
    assert_eq!((inserted.open_state, inserted.open_block), (OpenState::Pending, Some(at)));

    // No block keeps the one known.
    store.set_open(&first.channel_id, OpenState::Confirmed, None).await.unwrap();
    let confirmed = stored(store, &first).await;
    assert_eq!((confirmed.open_state, confirmed.open_block), (OpenState::Confirmed, Some(at)));
    store.set_open(&first.channel_id, OpenState::Missing, None).await.unwrap();
    assert_eq!(stored(store, &first).await.open_state, OpenState::Missing);
    // Back in another block.
    let moved = BlockRef { number: 13, hash: B256::repeat_byte(0x13) };
    store.set_open(&first.channel_id, OpenState::Pending, Some(moved)).await.unwrap();
    let back = stored(store, &first).await;
    assert_eq!((back.open_state, back.open_block), (OpenState::Pending, Some(moved)));
    // Listed as stored, and nothing else moved.
    assert_eq!(store.list().await.unwrap(), vec![back.clone()]);
    assert_eq!((back.state, back.status), (first, ChannelStatus::Open));

    // An unknown channel is no error, and is not created.
    store.set_open(&B256::repeat_byte(0xee), OpenState::Confirmed, Some(moved)).await.unwrap();
    assert!(store.channel(&B256::repeat_byte(0xee)).await.unwrap().is_none());
    assert_eq!(store.list().await.unwrap().len(), 1);
}

async fn channels_are_closed_or_refunded_once(store: &dyn Store) {
    let unknown = B256::repeat_byte(0xee);
    assert!(!store.mark_closed(&unknown, None).await.unwrap());
    assert!(store.mark_refunded(&unknown).await.unwrap().is_none());

    // Closed by someone else: the transaction seen on chain is recorded.
    let open = opening(1, 1, 2);
    insert(store, &open, 900).await;
    let seen = B256::repeat_byte(0x5e);
    assert!(store.mark_closed(&open.channel_id, Some(&seen)).await.unwrap());
    assert!(!store.mark_closed(&open.channel_id, None).await.unwrap(), "closed once");
    assert!(store.mark_refunded(&open.channel_id).await.unwrap().is_none(), "a closed channel is not refunded");
    let closed = stored(store, &open).await;
    assert_eq!((closed.status, closed.close_tx), (ChannelStatus::Closed, Some(seen)));

    // Closed by our own close: its hash stays when none is given.
    let ours = opening(2, 2, 2);
    insert(store, &ours, 900).await;
    let paid = pay(&ours);
    store.record_payment(&paid, &window(0)).await.unwrap();
    let close = signed_close(&paid, 3, 100).await;
    store.record_close(&ours.channel_id, 1, &close, 5).await.unwrap();
    assert!(store.mark_closed(&ours.channel_id, None).await.unwrap());
    let closed = stored(store, &ours).await;
    assert_eq!((closed.status, closed.close_tx), (ChannelStatus::Closed, Some(close.hash)));
    assert!(store.close_record(&ours.channel_id).await.unwrap().is_none(), "nothing in flight once closed");

    // Refunded: the caller learns what the channel held, once.
    let lost = opening(3, 3, 2);
    insert(store, &lost, 900).await;
    let paid = pay(&lost);
    store.record_payment(&paid, &window(0)).await.unwrap();
    let before = store.mark_refunded(&lost.channel_id).await.unwrap().unwrap();
    assert_eq!((before.state, before.status), (paid, ChannelStatus::Open));
    assert_eq!(status(store, &lost).await, ChannelStatus::Refunded);
    assert!(store.mark_refunded(&lost.channel_id).await.unwrap().is_none());
    assert!(!store.mark_closed(&lost.channel_id, None).await.unwrap(), "a refunded channel is not closed");

    // Nothing is forgotten.
    assert_eq!(store.list().await.unwrap().len(), 3);
}

async fn cursors_are_named_counters(store: &dyn Store) {
    assert_eq!(store.cursor("events").await.unwrap(), None);
    store.set_cursor("events", 7).await.unwrap();
    store.set_cursor("events", 9).await.unwrap();
    store.set_cursor("confirmations", u64::MAX).await.unwrap();
    assert_eq!(store.cursor("events").await.unwrap(), Some(9));
    assert_eq!(store.cursor("confirmations").await.unwrap(), Some(u64::MAX));
    assert_eq!(store.cursor("other").await.unwrap(), None);
}

/// Every channel pays twice at once with the same predecessor: exactly one
/// of each pair may win, whatever batch or lock they share.
async fn concurrent_payments_keep_their_own_compare_and_swap(store: Arc<dyn Store>) {
    let channels: Vec<ChannelState> = (0..200u16)
        .map(|n| {
            let mut id = [0u8; 32];
            id[..2].copy_from_slice(&n.to_be_bytes());
            signed_opening(&key(7), B256::from(id), 1_000)
        })
        .collect();
    for channel in &channels {
        store.insert_channel(channel, 10_000, 9_000, OpenState::Confirmed, None).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for channel in &channels {
        for amount in [100u64, 200] {
            let (store, next) = (store.clone(), channel.pay(Amount::from(amount)).unwrap());
            tasks.spawn(async move { (next.channel_id, store.record_payment(&next, &window(0)).await) });
        }
    }
    let mut wins = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (id, result) = joined.unwrap();
        match result {
            Ok(()) => *wins.entry(id).or_insert(0) += 1,
            Err(StoreError::Conflict) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(wins.len(), channels.len());
    assert!(wins.values().all(|&n| n == 1));
    for channel in &channels {
        let stored = stored(&*store, channel).await;
        assert_eq!(stored.state.client_sequence_number, 1);
        assert_eq!(stored.state.deposit(), channel.deposit());
    }
}

// The backends.

/// What a backend is opened as.
#[derive(Clone, Copy)]
enum Kind {
    Sqlite(CommitMode),
    Postgres(CommitMode),
    Memory,
}

/// A store under test, and the directory its file lives in.
struct Backend {
    store: Arc<dyn Store>,
    /// Dropped after the store (fields drop in order).
    _dir: Option<TempDir>,
}

impl Backend {
    async fn open(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite(mode) => {
                let dir = tempfile::tempdir().unwrap();
                let store = SqliteStore::open_with(&dir.path().join("t.sqlite"), mode).await.unwrap();
                Backend { store: Arc::new(store), _dir: Some(dir) }
            }
            Kind::Postgres(mode) => {
                let store = PgStore::open_with(&create_database().await, mode).await.unwrap();
                Backend { store: Arc::new(store), _dir: None }
            }
            Kind::Memory => Backend { store: Arc::new(MemoryStore::new()), _dir: None },
        }
    }
}

/// Instantiates each body for every backend, as
/// `store::tests::<backend>::<body>`: `borrowed` bodies take `&dyn Store`,
/// `shared` ones an `Arc<dyn Store>` to hand to tasks, on two threads.
macro_rules! every_backend {
    (borrowed: [$($name:ident),* $(,)?], shared: [$($shared:ident),* $(,)?] $(,)?) => {
        every_backend!(@one sqlite_group_commit, Kind::Sqlite(CommitMode::Group), [$($name),*], [$($shared),*]);
        every_backend!(@one sqlite_per_payment, Kind::Sqlite(CommitMode::PerPayment), [$($name),*], [$($shared),*]);
        every_backend!(@one postgres_group_commit, Kind::Postgres(CommitMode::Group), [$($name),*], [$($shared),*]);
        every_backend!(@one postgres_per_payment, Kind::Postgres(CommitMode::PerPayment), [$($name),*], [$($shared),*]);
        every_backend!(@one memory, Kind::Memory, [$($name),*], [$($shared),*]);
    };
    (@one $backend:ident, $kind:expr, [$($name:ident),*], [$($shared:ident),*]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let backend = Backend::open($kind).await;
                    super::$name(&*backend.store).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $shared() {
                    let backend = Backend::open($kind).await;
                    super::$shared(backend.store.clone()).await;
                }
            )*
        }
    };
}

every_backend! {
    borrowed: [
        payments_advance_by_compare_and_swap_only,
        insert_is_idempotent_and_the_newest_channel_wins,
        closes_are_compare_and_swap_and_keep_every_version,
        due_channels_are_final_closing_late_or_superseded,
        batched_closes_are_all_or_nothing_and_share_their_versions,
        gasless_channels_are_due_with_nothing_owed_when_superseded_or_late,
        open_states_are_stored_and_returned,
        channels_are_closed_or_refunded_once,
        cursors_are_named_counters,
    ],
    shared: [concurrent_payments_keep_their_own_compare_and_swap],
}

// What only the SQLite file does.

mod sqlite_only {
    use super::*;

    #[tokio::test]
    async fn a_committed_payment_and_close_survive_reopening_the_file() {
        for mode in [CommitMode::Group, CommitMode::PerPayment] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.sqlite");
            let first = opening(6, 9, 5);
            let one = pay(&first);
            let close = signed_close(&one, 2, 100).await;
            {
                let store = SqliteStore::open_with(&path, mode).await.unwrap();
                insert(&store, &first, 900).await;
                store.record_payment(&one, &window(0)).await.unwrap();
                store.record_close(&first.channel_id, 1, &close, 3).await.unwrap();
                store.set_cursor("events", 4).await.unwrap();
            }
            let store = SqliteStore::open_with(&path, mode).await.unwrap();
            let reopened = stored(&store, &first).await;
            assert_eq!(
                (reopened.state, reopened.window, reopened.status),
                (one, Some(window(0)), ChannelStatus::Closing)
            );
            let record = store.close_record(&first.channel_id).await.unwrap().unwrap();
            assert_eq!((record.sequence, record.attempts, record.signed_at_block), (1, vec![close], 3), "{mode:?}");
            assert_eq!(store.cursor("events").await.unwrap(), Some(4));
        }
    }

    #[tokio::test]
    async fn read_only_opening_reads_writes_nothing_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.sqlite");
        assert!(SqliteStore::open_read_only(&missing).await.is_err());
        assert!(!missing.exists(), "nothing created");

        let path = dir.path().join("t.sqlite");
        let first = opening(6, 9, 5);
        let writer = SqliteStore::open(&path).await.unwrap();
        insert(&writer, &first, 900).await;
        let reader = SqliteStore::open_read_only(&path).await.unwrap();
        assert_eq!(ids(reader.list().await.unwrap()), [first.channel_id]);
        // A payment the live server stores meanwhile is seen.
        let one = pay(&first);
        writer.record_payment(&one, &window(0)).await.unwrap();
        assert_eq!(stored(&reader, &first).await.state, one);

        assert!(matches!(reader.set_cursor("events", 1).await, Err(StoreError::Database(_))));
        assert!(matches!(reader.record_payment(&pay(&one), &window(1)).await, Err(StoreError::Database(_))));
        assert_eq!(stored(&writer, &first).await.state, one);
        assert_eq!(writer.cursor("events").await.unwrap(), None);
    }
}

// What only a PostgreSQL server does.

mod postgres_only {
    use super::*;

    #[tokio::test]
    async fn a_committed_payment_and_close_survive_reconnecting() {
        for mode in [CommitMode::Group, CommitMode::PerPayment] {
            let url = create_database().await;
            let first = opening(6, 9, 5);
            let one = pay(&first);
            let close = signed_close(&one, 2, 100).await;
            {
                let store = PgStore::open_with(&url, mode).await.unwrap();
                insert(&store, &first, 900).await;
                store.record_payment(&one, &window(0)).await.unwrap();
                store.record_close(&first.channel_id, 1, &close, 3).await.unwrap();
                store.set_cursor("events", 4).await.unwrap();
            }
            // Migrating an up-to-date database again changes nothing.
            let store = PgStore::open_with(&url, mode).await.unwrap();
            let reopened = stored(&store, &first).await;
            assert_eq!(
                (reopened.state, reopened.window, reopened.status),
                (one, Some(window(0)), ChannelStatus::Closing)
            );
            let record = store.close_record(&first.channel_id).await.unwrap().unwrap();
            assert_eq!((record.sequence, record.attempts, record.signed_at_block), (1, vec![close], 3), "{mode:?}");
            assert_eq!(store.cursor("events").await.unwrap(), Some(4));
        }
    }

    #[tokio::test]
    async fn read_only_opening_reads_and_writes_nothing() {
        let url = create_database().await;
        let first = opening(6, 9, 5);
        let writer = PgStore::open(&url).await.unwrap();
        insert(&writer, &first, 900).await;
        let reader = PgStore::open_read_only(&url).await.unwrap();
        assert_eq!(ids(reader.list().await.unwrap()), [first.channel_id]);
        // A payment the live server stores meanwhile is seen.
        let one = pay(&first);
        writer.record_payment(&one, &window(0)).await.unwrap();
        assert_eq!(stored(&reader, &first).await.state, one);

        assert!(matches!(reader.set_cursor("events", 1).await, Err(StoreError::Database(_))));
        assert!(matches!(reader.record_payment(&pay(&one), &window(1)).await, Err(StoreError::Database(_))));
        assert_eq!(stored(&writer, &first).await.state, one);
        assert_eq!(writer.cursor("events").await.unwrap(), None);

        // A database never migrated is not migrated by a reader.
        let empty = PgStore::open_read_only(&create_database().await).await.unwrap();
        assert!(matches!(empty.list().await, Err(StoreError::Database(_))));
    }

    /// Two servers, each with its own pool and group-commit writer, take
    /// payments on the same channels at once: exactly one payment of each
    /// pair is stored, whichever server took it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_servers_on_one_database_keep_the_compare_and_swap() {
        let url = create_database().await;
        let servers: [Arc<dyn Store>; 2] =
            [Arc::new(PgStore::open(&url).await.unwrap()), Arc::new(PgStore::open(&url).await.unwrap())];
        let channels: Vec<ChannelState> = (0..100u16)
            .map(|n| {
                let mut id = [0u8; 32];
                id[..2].copy_from_slice(&n.to_be_bytes());
                signed_opening(&key(8), B256::from(id), 1_000)
            })
            .collect();
        for channel in &channels {
            servers[0].insert_channel(channel, 10_000, 9_000, OpenState::Confirmed, None).await.unwrap();
        }
        let mut tasks = tokio::task::JoinSet::new();
        for channel in &channels {
            for (server, amount) in servers.iter().zip([100u64, 200]) {
                let (store, next) = (server.clone(), channel.pay(Amount::from(amount)).unwrap());
                tasks.spawn(async move { (next.clone(), store.record_payment(&next, &window(0)).await) });
            }
        }
        let mut won = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.unwrap() {
                (next, Ok(())) => assert!(won.insert(next.channel_id, next).is_none(), "two payments won"),
                (_, Err(StoreError::Conflict)) => {}
                (_, Err(other)) => panic!("{other}"),
            }
        }
        assert_eq!(won.len(), channels.len());
        for (server, channel) in servers.iter().zip(&channels) {
            assert_eq!(stored(&**server, channel).await.state, won[&channel.channel_id]);
        }
    }

    #[tokio::test]
    async fn open_picks_the_backend_from_the_url() {
        let url = create_database().await;
        let store = super::super::open(&url, CommitMode::Group).await.unwrap();
        insert(&*store, &opening(1, 1, 2), 900).await;
        let reader = super::super::open_read_only(&url.replacen("postgres://", "postgresql://", 1)).await.unwrap();
        assert_eq!(reader.list().await.unwrap().len(), 1);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let file = format!("sqlite://{}", path.display());
        assert!(super::super::open_read_only(&file).await.is_err(), "a reader creates nothing");
        let store = super::super::open(&file, CommitMode::PerPayment).await.unwrap();
        insert(&*store, &opening(1, 1, 2), 900).await;
        assert_eq!(super::super::open_read_only(&file).await.unwrap().list().await.unwrap().len(), 1);
    }
}

mod urls {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn database_urls_parse_by_scheme() {
        let parse = |url: &str| url.parse::<DatabaseUrl>();
        assert_eq!(
            parse("sqlite:///var/lib/t.sqlite").unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("/var/lib/t.sqlite"))
        );
        assert_eq!(parse("sqlite://t.sqlite").unwrap(), DatabaseUrl::Sqlite(PathBuf::from("t.sqlite")));
        assert_eq!(parse("sqlite:t.sqlite").unwrap(), DatabaseUrl::Sqlite(PathBuf::from("t.sqlite")));
        for url in ["postgres://u@db/tollstream", "postgresql://u:pw@db:5433/tollstream?sslmode=disable"] {
            assert_eq!(parse(url).unwrap(), DatabaseUrl::Postgres(url.into()));
        }
        for bad in ["sqlite://", "mysql://u:secret@db/x", "/var/lib/t.sqlite", "", "postgres://u:secret@db:notaport/x"]
        {
            match parse(bad) {
                Err(StoreError::BadUrl(why)) => assert!(!why.contains("secret"), "{why}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_displayed_url_hides_its_password() {
        let shown = |url: &str| url.parse::<DatabaseUrl>().unwrap().to_string();
        assert_eq!(
            shown("postgres://u:secret@db:5433/t?sslmode=disable"),
            "postgres://u:***@db:5433/t?sslmode=disable"
        );
        assert_eq!(shown("postgres://u@db/t"), "postgres://u@db/t");
        assert_eq!(shown("postgresql://db/t"), "postgresql://db/t");
        assert_eq!(shown("sqlite:///var/t.sqlite"), "sqlite:///var/t.sqlite");
        let debug = format!("{:?}", "postgres://u:secret@db/t".parse::<DatabaseUrl>().unwrap());
        assert!(!debug.contains("secret"), "{debug}");
    }
}
