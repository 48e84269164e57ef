//! A player's record while they are online: loaded through the save writer at login,
//! changed only when one of their games ends, and queued for saving the moment it
//! changes. The player's session and the game room they sit in share it.

use std::sync::Mutex;

use bytes::Bytes;
use gatehouse_store::{SaveSlot, SaveWriter, Store, WriterClosed};
use prost::Message as _;
use tracing::error;

use crate::lock;
use crate::wire::Record;

/// Queues a save through the writer: boxed, so that rooms and sessions need not
/// know the store's type.
type Saver = Box<dyn Fn(&mut SaveSlot, Bytes) -> Result<(), WriterClosed> + Send + Sync>;

/// One player's record and where it is saved.
pub(crate) struct Account {
    name: String,
    /// The record and the slot it is saved through, changed together: each save
    /// builds on the version the previous one queued.
    saved: Mutex<(Record, SaveSlot)>,
    save: Saver,
}

impl Account {
    /// The account of `name`, whose record (default for a new player) was loaded
    /// with `slot`.
    pub(crate) fn new<S: Store>(
        name: &str,
        record: Record,
        slot: SaveSlot,
        writer: &SaveWriter<S>,
    ) -> Account {
        let writer = writer.clone();
        Account {
            name: name.to_owned(),
            saved: Mutex::new((record, slot)),
            save: Box::new(move |slot, data| writer.save(slot, data)),
        }
    }

    /// The player's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The record now.
    pub(crate) fn record(&self) -> Record {
        lock(&self.saved).0
    }

    /// Counts a finished game in the record's `tally` (wins, losses or draws) and
    /// queues the save (which never waits, so a room can call this from its hooks).
    /// Returns the new record.
    pub(crate) fn count(&self, tally: fn(&mut Record) -> &mut u32) -> Record {
        let mut saved = lock(&self.saved);
        let (record, slot) = &mut *saved;
        let tally = tally(record);
        *tally = tally.saturating_add(1);
        let record = *record;
        if let Err(e) = (self.save)(slot, record.encode_to_vec().into()) {
            // Not expected: the server closes the writer after its rooms have stopped.
            error!(player = %self.name, error = %e, "the record could not be saved");
        }
        record
    }
}
