//! A player's record while they are online: loaded through the save writer at login,
//! changed only when one of their games ends, and queued for saving the moment it
//! changes. The player's session and the game room they sit in share it.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use gatehouse_store::{Loaded, SaveSlot, SaveWriter, Store, WriterClosed};
use prost::Message as _;
use tracing::error;

use crate::wire::Record;

/// What a finished game adds to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Score {
    Win,
    Loss,
    Draw,
}

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
    /// The account of a player whose record `loaded` holds (a new player has none).
    /// `Err` if the stored bytes are not a record: better refuse the login than
    /// overwrite a record this code cannot read.
    pub(crate) fn open<S: Store>(
        name: &str,
        loaded: Loaded,
        writer: &SaveWriter<S>,
    ) -> Result<Account, prost::DecodeError> {
        let record = match &loaded.data {
            Some(data) => Record::decode(data.as_ref())?,
            None => Record::default(),
        };
        let writer = writer.clone();
        Ok(Account {
            name: name.to_owned(),
            saved: Mutex::new((record, loaded.slot)),
            save: Box::new(move |slot, data| writer.save(slot, data)),
        })
    }

    fn saved(&self) -> MutexGuard<'_, (Record, SaveSlot)> {
        // Nothing under this lock can panic halfway through a change.
        self.saved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The player's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The record now.
    pub(crate) fn record(&self) -> Record {
        self.saved().0
    }

    /// Counts a finished game and queues the save (which never waits, so a room can
    /// call this from its hooks). Returns the new record.
    pub(crate) fn count(&self, score: Score) -> Record {
        let mut saved = self.saved();
        let (record, slot) = &mut *saved;
        let tally = match score {
            Score::Win => &mut record.wins,
            Score::Loss => &mut record.losses,
            Score::Draw => &mut record.draws,
        };
        *tally = tally.saturating_add(1);
        let record = *record;
        if let Err(e) = (self.save)(slot, record.encode_to_vec().into()) {
            // Not expected: the server closes the writer after its rooms have stopped.
            error!(player = %self.name, error = %e, "the record could not be saved");
        }
        record
    }
}
