//! The message writer: group commit for chat lines.
//!
//! Every message is durable before it is acknowledged, and durability costs
//! a commit: an fsync of the WAL (SQLite, `synchronous=FULL`) or of
//! PostgreSQL's WAL. One commit per message caps a node at the disk's fsync
//! rate (about 500/s on the development VM, 2 ms each), far below the 2,000
//! messages/s that ten thousand open chats produce. So messages go through
//! one writer task: it takes every message waiting when it is free, stores
//! them in one transaction, and answers each caller after that commit. At
//! low load a batch is one message and costs what it did before; under load
//! the batches grow by themselves, and the rate becomes messages per commit
//! times commits per second.
//!
//! A failed batch is retried one message at a time, so one bad message
//! (say, a conversation deleted meanwhile) fails only its own caller.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Message, NewMessage, Store, StoreError};

/// Most messages in one transaction: bounds the latency a batch adds to
/// the messages that arrive while it is being written.
const MAX_BATCH: usize = 512;
/// Callers that may wait for the writer before `add` itself waits.
const QUEUE: usize = 8192;

type Job = (NewMessage, oneshot::Sender<Result<Message, StoreError>>);

#[derive(Clone)]
pub struct MessageWriter {
    tx: mpsc::Sender<Job>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the message writer has stopped")]
    Stopped,
}

impl MessageWriter {
    /// Starts the writer task; it ends when the last handle is dropped,
    /// after writing what it was given. Call inside the tokio runtime.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// Stores `message`; returns once it is committed.
    pub async fn add(&self, message: NewMessage) -> Result<Message, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((message, reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer
            .await
            .map_err(|_| WriteError::Stopped)?
            .map_err(Into::into)
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    let batch_size = metrics::histogram!("ccu_message_batch_size");
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        #[allow(clippy::cast_precision_loss)] // at most MAX_BATCH
        batch_size.record(jobs.len() as f64);
        let batch: Vec<NewMessage> = jobs.iter().map(|(m, _)| m.clone()).collect();
        match store.add_messages(&batch).await {
            Ok(stored) if stored.len() == jobs.len() => {
                for ((_, reply), message) in jobs.drain(..).zip(stored) {
                    // The caller may have gone (socket closed): the message
                    // is stored all the same, and a retry finds it.
                    let _ = reply.send(Ok(message));
                }
            }
            outcome => {
                if let Err(err) = outcome {
                    tracing::warn!(%err, size = jobs.len(), "message batch failed; one at a time");
                }
                for (m, reply) in jobs.drain(..) {
                    let result = store
                        .add_message(
                            m.conversation_id,
                            m.at,
                            m.direction,
                            m.author_user_id,
                            &m.body,
                            m.client_id.as_deref(),
                        )
                        .await;
                    let _ = reply.send(result);
                }
            }
        }
    }
}

/// A writer shared by the clones of one hub, started on first use.
#[derive(Clone, Default)]
pub struct LazyWriter(Arc<std::sync::OnceLock<MessageWriter>>);

impl LazyWriter {
    pub fn get(&self, store: &Store) -> &MessageWriter {
        self.0.get_or_init(|| MessageWriter::start(store.clone()))
    }
}
