//! What storing a payment costs on SQLite, per row, against the floor of
//! the same statement on a bare connection (BENCHMARKS.md, "The store").
//!
//! `cargo bench -p tollstream-server --bench store [-- SECONDS]` prints,
//! for each case, payments per second and the process's CPU per payment
//! (user + system, every thread: the runtime and SQLite's connection
//! thread). Run it pinned to one core (`taskset -c 0`) to read the CPU as
//! the server's would be. The database is a temporary file with the
//! server's settings (WAL, `synchronous = FULL`), so every commit waits
//! for an fsync.
//!
//! Cases:
//! - `group commit, N sessions`: N tasks each paying its own channel in a
//!   loop through `Store::record_payment`, as N streaming sessions would;
//!   the writer commits whatever is queued as one transaction.
//! - `bare statement, batches of B`: the payment's `UPDATE` run B times in
//!   one transaction on a plain connection, then `COMMIT`: what the writer
//!   cannot go below, since it runs the same statements.
//! - the same with `status` in the `SET` list, as every payment set it
//!   before: whether an indexed column that does not change still costs.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollstream_protocol::{Address, Amount, B256, ChannelState, PublicKey, Signature, SigningKey, U256};
use tollstream_server::store::{OpenState, SqliteStore, Store, Window};

const DEPOSIT: u64 = 1_000_000_000_000_000_000;
const PRICE: u64 = 1;

fn opening_state(index: u32, key: PublicKey) -> ChannelState {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&index.to_be_bytes());
    ChannelState {
        channel_id: B256::from(id),
        channel_address: Address::repeat_byte(0xc0),
        client_wallet_address: Address::repeat_byte(0xa1),
        client_public_key: key,
        client_balance: Amount(U256::from(DEPOSIT)),
        server_balance: Amount::ZERO,
        client_sequence_number: 0,
        // The store does not check signatures; any 65 bytes do.
        client_signature: Signature([0x1b; 65]),
    }
}

/// User + system CPU of this process, every thread.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn report(case: &str, rows: u64, wall: Duration, cpu: Duration) {
    println!(
        "{case:<44} {rows:>8} rows  {:>8.0} rows/s  {:>6.1} µs CPU/row  {:>6.1} µs wall/row",
        rows as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / rows as f64,
        wall.as_secs_f64() * 1e6 / rows as f64,
    );
}

async fn group_commit(store: Arc<SqliteStore>, channels: Vec<ChannelState>, seconds: f64) {
    let sessions = channels.len();
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let (wall, cpu) = (Instant::now(), cpu_time());
    let tasks: Vec<_> = channels
        .into_iter()
        .map(|mut state| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut paid = 0u64;
                let window = Window { stream_id: "bench".into(), first_segment: 0, segment_count: 1 };
                while Instant::now() < stop {
                    state = state.pay(Amount::from(PRICE)).expect("the deposit covers the run");
                    store.record_payment(&state, &window).await.expect("a payment is stored");
                    paid += 1;
                }
                paid
            })
        })
        .collect();
    let mut rows = 0;
    for task in tasks {
        rows += task.await.unwrap();
    }
    report(&format!("group commit, {sessions} sessions"), rows, wall.elapsed(), cpu_time() - cpu);
}

async fn bare_statement(path: &std::path::Path, states: &mut [ChannelState], batch: usize, seconds: f64, sql: &str) {
    let mut connection = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .unwrap();
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let (wall, cpu) = (Instant::now(), cpu_time());
    let mut rows = 0u64;
    let mut next = 0;
    while Instant::now() < stop {
        let mut transaction = connection.begin().await.unwrap();
        for _ in 0..batch {
            let count = states.len();
            let state = &mut states[next % count];
            next += 1;
            let paid = state.pay(Amount::from(PRICE)).unwrap();
            let result = sqlx::query(sql)
                .bind(paid.client_balance.to_string())
                .bind(paid.server_balance.to_string())
                .bind(paid.client_sequence_number as i64)
                .bind(paid.client_signature.to_string())
                .bind("bench")
                .bind(0i64)
                .bind(1i64)
                .bind(0i64)
                .bind(format!("{:#x}", paid.channel_id))
                .bind(state.client_sequence_number as i64)
                .execute(&mut *transaction)
                .await
                .unwrap();
            assert_eq!(result.rows_affected(), 1, "the bare statement found its row");
            *state = paid;
            rows += 1;
        }
        transaction.commit().await.unwrap();
    }
    let label = if sql.contains("status = 'open', ") { "bare, status set" } else { "bare statement" };
    report(&format!("{label}, batches of {batch}"), rows, wall.elapsed(), cpu_time() - cpu);
}

const UPDATE: &str = "UPDATE channels SET client_balance = ?, server_balance = ?, sequence = ?, signature = ?, \
     window_stream = ?, window_first_segment = ?, window_segment_count = ?, updated_at = ? \
     WHERE channel_id = ? AND sequence = ? AND status = 'open'";
const UPDATE_SETTING_STATUS: &str = "UPDATE channels SET client_balance = ?, server_balance = ?, sequence = ?, \
     signature = ?, window_stream = ?, window_first_segment = ?, window_segment_count = ?, status = 'open', \
     updated_at = ? WHERE channel_id = ? AND sequence = ? AND status = 'open'";

fn main() {
    let seconds: f64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3.0);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        let key = SigningKey::from_bytes([7; 32]).unwrap().public_key();
        // 10,000 channels, as many as viewers in the load runs; the group
        // commit cases pay the first ones, the bare cases the rest.
        let channels: Vec<ChannelState> = (0..10_000).map(|i| opening_state(i, key)).collect();
        for state in &channels {
            store.insert_channel(state, u64::MAX / 2, u64::MAX / 4, OpenState::Confirmed, None).await.unwrap();
        }
        println!("SQLite, WAL, synchronous = FULL; {seconds} s per case");
        let mut first = 0;
        for sessions in [1, 64, 1000] {
            group_commit(store.clone(), channels[first..first + sessions].to_vec(), seconds).await;
            first += sessions;
        }
        // The bare cases go round the remaining channels, each state
        // carried from one case to the next.
        let mut rest = channels[first..].to_vec();
        for batch in [1, 16, 64, 256] {
            bare_statement(&path, &mut rest, batch, seconds, UPDATE).await;
        }
        for batch in [16, 256] {
            bare_statement(&path, &mut rest, batch, seconds, UPDATE_SETTING_STATUS).await;
        }
    });
}
