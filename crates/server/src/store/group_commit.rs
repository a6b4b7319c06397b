//! Group commit: one writer owns a connection and stores the payments of
//! all concurrent sessions in one transaction, so one fsync makes a whole
//! batch durable. With `synchronous = FULL` a commit costs an fsync (a few
//! hundred microseconds to milliseconds), which would cap a server that
//! commits every payment alone at a few thousand payments a second.
//!
//! There is no waiting for a batch to fill: while one commit runs, the
//! next batch gathers, so under light load a payment commits alone and
//! under heavy load batches grow by themselves. Each payment is answered
//! only after the commit that holds it returned.

use super::sqlite::update_payment;
use super::{StoreError, Window};
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tollstream_protocol::ChannelState;

/// The most payments one transaction holds.
const MAX_BATCH: usize = 1024;

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
    /// Starts the writer on its own connection.
    pub fn spawn(connection: SqliteConnection) -> Self {
        let (queue, requests) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(connection, requests));
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

async fn run(mut connection: SqliteConnection, mut requests: mpsc::Receiver<PaymentWrite>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results = write_batch(&mut connection, &batch).await;
        tracing::trace!(payments = batch.len(), "group commit");
        for (write, result) in batch.drain(..).zip(results) {
            // The session may be gone; its payment is stored all the same.
            let _ = write.done.send(result);
        }
    }
}

async fn write_batch(connection: &mut SqliteConnection, batch: &[PaymentWrite]) -> Vec<Result<(), StoreError>> {
    let mut transaction = match connection.begin().await {
        Ok(transaction) => transaction,
        Err(error) => {
            let error = StoreError::database(error);
            return batch.iter().map(|_| Err(error.clone())).collect();
        }
    };
    let mut results = Vec::with_capacity(batch.len());
    for write in batch {
        results.push(update_payment(&mut *transaction, &write.next, &write.window).await);
    }
    match transaction.commit().await {
        Ok(()) => results,
        // Nothing of the batch is durable: every payment in it fails, and
        // no secret is released for any of them.
        Err(error) => {
            let error = StoreError::database(error);
            batch.iter().map(|_| Err(error.clone())).collect()
        }
    }
}
