//! Group commit: one writer owns a connection and stores the payments of
//! all concurrent sessions in one transaction, so one durable commit makes
//! a whole batch durable. A commit costs a flush of the log to disk (an
//! fsync: SQLite with `synchronous = FULL`, PostgreSQL with
//! `synchronous_commit = on`), plus a round trip to PostgreSQL; a server
//! that commits every payment alone is capped at a few thousand payments a
//! second by that.
//!
//! There is no waiting for a batch to fill: while one commit runs, the
//! next batch gathers, so under light load a payment commits alone and
//! under heavy load batches grow by themselves. Each payment is answered
//! only after the commit that holds it returned.
//!
//! The writer is generic over the database: each SQL store says how it
//! stores one payment ([`PaymentSql`]) and hands the writer a connection
//! and the options to open another.

use super::{StoreError, Window};
use async_trait::async_trait;
use sqlx::{ConnectOptions, Connection, Database};
use tokio::sync::{mpsc, oneshot};
use tollstream_protocol::ChannelState;

/// The most payments one transaction holds.
const MAX_BATCH: usize = 1024;

/// A database the writer can store payments in.
#[async_trait]
pub(super) trait PaymentSql: Database {
    /// Stores `next` with the compare-and-swap of
    /// [`Store::record_payment`](super::Store::record_payment), on a
    /// connection inside the writer's transaction.
    ///
    /// # Errors
    /// `Conflict` when the compare-and-swap fails; `Database`.
    async fn update_payment(
        connection: &mut Self::Connection,
        next: &ChannelState,
        window: &Window,
    ) -> Result<(), StoreError>;
}

/// The options that open another connection like the writer's.
type Options<DB> = <<DB as Database>::Connection as Connection>::Options;

struct PaymentWrite {
    next: ChannelState,
    window: Window,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle of the writer task.
#[derive(Debug, Clone)]
pub struct PaymentWriter {
    queue: mpsc::Sender<PaymentWrite>,
}

impl PaymentWriter {
    /// Starts the writer on `connection`; after a database failure it
    /// drops that connection (it may be broken, or hold an aborted
    /// transaction) and opens another with `options`.
    pub(super) fn spawn<DB: PaymentSql>(connection: DB::Connection, options: Options<DB>) -> Self {
        let (queue, requests) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run::<DB>(Some(connection), options, requests));
        PaymentWriter { queue }
    }

    /// Stores `next` as [`Store::record_payment`](super::Store::record_payment)
    /// does; returns once the batch holding it is committed.
    ///
    /// # Errors
    /// `Conflict` when the compare-and-swap fails; `Database`.
    pub async fn record(&self, next: &ChannelState, window: &Window) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        let write = PaymentWrite { next: next.clone(), window: window.clone(), done };
        self.queue.send(write).await.map_err(|_| StoreError::database_text("the payment writer stopped"))?;
        result.await.map_err(|_| StoreError::database_text("the payment writer stopped"))?
    }
}

async fn run<DB: PaymentSql>(
    mut connection: Option<DB::Connection>,
    options: Options<DB>,
    mut requests: mpsc::Receiver<PaymentWrite>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results = match connection.as_mut() {
            Some(open) => write_batch::<DB>(open, &batch).await,
            None => match options.connect().await {
                Ok(fresh) => write_batch::<DB>(connection.insert(fresh), &batch).await,
                Err(error) => Err(StoreError::database(error)),
            },
        };
        tracing::trace!(payments = batch.len(), "group commit");
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                tracing::warn!(error = %tollstream_chain::error::causes(&error), "group commit failed");
                connection = None;
                vec![Err(error); batch.len()]
            }
        };
        for (write, result) in batch.drain(..).zip(results) {
            // The session may be gone; its payment is stored all the same.
            let _ = write.done.send(result);
        }
    }
}

/// Stores `batch` in one transaction: every payment's own result, or one
/// error that fails them all, none of them stored.
async fn write_batch<DB: PaymentSql>(
    connection: &mut DB::Connection,
    batch: &[PaymentWrite],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut transaction = connection.begin().await.map_err(StoreError::database)?;
    // In channel order, so two writers (two servers on one PostgreSQL)
    // take row locks in the same order and cannot deadlock; the sort is
    // stable, so two payments of one channel keep their order of arrival.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| batch[i].next.channel_id);
    let mut results = vec![Ok(()); batch.len()];
    for i in order {
        match DB::update_payment(&mut transaction, &batch[i].next, &batch[i].window).await {
            // A failed statement aborts a PostgreSQL transaction, whose
            // COMMIT then rolls back without an error: the payments before
            // it would be answered as stored and are not. So any failure
            // other than a lost compare-and-swap fails the whole batch.
            Err(StoreError::Conflict) => results[i] = Err(StoreError::Conflict),
            Err(error) => return Err(error),
            Ok(()) => {}
        }
    }
    // Nothing of the batch is durable until this returns: if it fails,
    // every payment in it fails, and no secret is released for any.
    transaction.commit().await.map_err(StoreError::database)?;
    Ok(results)
}
