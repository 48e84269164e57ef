//! Records and the store, over real sockets: what a server saved, the next one
//! loads; STATS reads the store; a record this code cannot read is kept, not
//! overwritten.

#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use connect_four::wire::{routes, status, End, Matched, Record};
use connect_four::Options;
use gatehouse::Status;
use gatehouse_store::{sqlite, MemoryStore, SaveWriter};
use prost::Message as _;
use support::{game_over, matched_pair, play_moves, record, start, status_of, Player, Scratch};

#[tokio::test]
async fn records_survive_a_server_restart() {
    let data = Scratch::new("restart");
    let (server, _) = start(sqlite::open(data.path()).await.unwrap(), Options::default()).await;
    let (mut red, mut yellow) = matched_pair(server.addr, "ada", "bob").await;
    play_moves(&mut red, &mut yellow, &[0, 1, 0, 1, 0, 1, 0]).await;
    assert_eq!(game_over(&mut red).await.0, End::FourInARow);
    assert_eq!(game_over(&mut yellow).await.0, End::FourInARow);
    // A second game is under way when the server stops: it counts for nobody.
    assert!(!red.queue().await.unwrap());
    assert!(yellow.queue().await.unwrap());
    let _: Matched = red.push(routes::MATCHED).await;
    let _: Matched = yellow.push(routes::MATCHED).await;
    play_moves(&mut red, &mut yellow, &[3]).await;
    // Returns once every disconnect hook has run and every save has landed.
    server.stop().await.unwrap();

    // The same file opened again, as the next process would.
    let (server, _) = start(sqlite::open(data.path()).await.unwrap(), Options::default()).await;
    let (ada, loaded) = Player::login(server.addr, "ada").await;
    assert_eq!(loaded, record(1, 0, 0));
    assert_eq!(ada.stats("bob").await, Ok(record(0, 1, 0)));
    server.stop().await.unwrap();
}

/// Queues `record` as `name`'s, as an earlier server would have saved it.
async fn save(writer: &SaveWriter<MemoryStore>, name: &str, data: Bytes) {
    let mut slot = writer.load(name).await.unwrap().slot;
    writer.save(&mut slot, data).unwrap();
}

#[tokio::test]
async fn stats_come_from_the_store_and_unknown_players_are_refused() {
    let (server, writer) = start(MemoryStore::new(), Options::default()).await;
    save(&writer, "cy", record(2, 1, 4).encode_to_vec().into()).await;
    let (ada, fresh) = Player::login(server.addr, "ada").await;
    assert_eq!(fresh, Record::default(), "a new player");
    assert_eq!(ada.stats("").await, Ok(Record::default()));
    assert_eq!(ada.stats("cy").await, Ok(record(2, 1, 4)));
    assert_eq!(ada.stats("nobody").await, Err(status::NO_SUCH_PLAYER));
    assert_eq!(ada.stats("no body").await, Err(status::BAD_NAME));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreadable_record_refuses_the_login_and_is_kept() {
    let store = MemoryStore::new();
    let (server, writer) = start(store.clone(), Options::default()).await;
    let garbage = Bytes::from_static(&[0xff; 5]);
    save(&writer, "dee", garbage.clone()).await;
    let mut dee = Player::connect(server.addr).await;
    let refused = dee.try_login("dee").await.unwrap_err();
    assert_eq!(status_of(refused), Status::INTERNAL_ERROR);
    // Nothing overwrote the record.
    server.stop().await.unwrap();
    assert_eq!(store.get("dee").unwrap().data, garbage);
}
