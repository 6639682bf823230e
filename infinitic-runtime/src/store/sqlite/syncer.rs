//! The sync thread: makes committed batches durable (one fsync of the log for every batch
//! committed before it started) and answers them, in commit order.

use super::stats::Counters;
use super::writer::Committed;
use crate::store::StoreError;
use infinitic_core::WorkflowId;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, OnceLock};
use tokio::sync::{broadcast, watch};

/// Makes committed batches durable and answers them, in commit order.
pub(super) struct Syncer {
    pub(super) stats: Arc<Counters>,
    /// The write-ahead log to fsync; `None` when SQLite syncs inside the commit, or nothing is
    /// on disk.
    pub(super) wal: Option<WalLog>,
    /// Why an fsync failed, once one has: from then on nothing is answered as done.
    pub(super) broken: Arc<OnceLock<String>>,
    pub(super) notify: watch::Sender<u64>,
    pub(super) finished: broadcast::Sender<WorkflowId>,
}

impl Syncer {
    pub(super) fn run(self, committed: mpsc::Receiver<Committed>) {
        while let Ok(first) = committed.recv() {
            let mut group = vec![first];
            group.extend(committed.try_iter());
            // One fsync covers every commit that returned before it started.
            if let Some(wal) = &self.wal {
                if self.broken.get().is_none() && group.iter().any(|c| c.wrote) {
                    if let Err(reason) = wal.sync() {
                        let _ = self.broken.set(reason);
                    }
                    self.stats.log_syncs.fetch_add(1, Ordering::Relaxed);
                }
            }
            for batch in group {
                // After a failed fsync, a commit is visible but maybe not durable (and a later
                // fsync may succeed without covering it): its outcome is unknown.
                let failure = batch.failure.or_else(|| {
                    self.broken.get().map(|reason| match batch.wrote {
                        true => StoreError::OutcomeUnknown(reason.clone()),
                        false => StoreError::Broken(reason.clone()),
                    })
                });
                if batch.wrote && failure.is_none() {
                    self.stats.answered_writes.fetch_add(1, Ordering::Relaxed);
                }
                for answer in batch.answers {
                    answer.send(failure.as_ref());
                }
                if failure.is_none() {
                    if batch.published {
                        self.notify.send_modify(|n| *n += 1);
                    }
                    for id in batch.finished {
                        let _ = self.finished.send(id);
                    }
                }
                drop(batch.spent);
            }
        }
    }
}

/// SQLite's write-ahead log, kept open to fsync it: always the file SQLite writes, wherever
/// the path given at open time points later.
#[derive(Debug)]
pub(super) struct WalLog {
    pub(super) file: std::fs::File,
    pub(super) path: PathBuf,
}

impl WalLog {
    pub(super) fn open(connection: &Connection, given: &Path) -> Result<Self, StoreError> {
        let resolved = connection
            .path()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| given.to_path_buf());
        let mut path = resolved.into_os_string();
        path.push("-wal");
        let path = PathBuf::from(path);
        // The log exists while a connection is open in WAL mode: the writer's stays open.
        let file = std::fs::File::open(&path).map_err(|e| StoreError::Corrupt {
            path: given.display().to_string(),
            reason: format!("cannot open its write-ahead log {}: {e}", path.display()),
        })?;
        Ok(Self { file, path })
    }

    /// Fsyncs the log. A log removed under the store is an error too: what SQLite wrote
    /// there is gone when its connection closes.
    fn sync(&self) -> Result<(), String> {
        let failed = |e: std::io::Error| {
            format!(
                "cannot fsync {}: {e}; the last commits may not be on disk",
                self.path.display()
            )
        };
        self.file.sync_data().map_err(failed)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if self.file.metadata().map_err(failed)?.nlink() == 0 {
                return Err(format!(
                    "the write-ahead log {} was deleted under the store; the last commits are \
                     not on disk",
                    self.path.display()
                ));
            }
        }
        Ok(())
    }
}
