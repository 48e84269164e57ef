//! Games, over real sockets: the room checks every move, and every way a game ends
//! leaves the right record for both players, in the store.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use connect_four::board::A_DRAWN_GAME;
use connect_four::wire::{routes, status, Colour, End, Matched, Moved, Record};
use connect_four::Options;
use gatehouse::Status;
use gatehouse_store::{
    DeadLetter, MemoryStore, Outcome, Record as Stored, Store, StoreError, Write, WriterConfig,
};
use prost::Message as _;
use support::{
    eventually, game_over, matched_pair, play_moves, record, start, start_with, status_of, Player,
    PATIENCE,
};
use tokio::sync::{watch, Notify};

/// What the store holds for `name` (read directly, not through the server).
fn stored(store: &MemoryStore, name: &str) -> Record {
    Record::decode(store.get(name).unwrap().data).unwrap()
}

#[tokio::test]
async fn four_in_a_row_wins_and_both_records_are_saved() {
    let store = MemoryStore::new();
    let (server, writer) = start(store.clone(), Options::default()).await;
    let (mut red, mut yellow) = matched_pair(server.addr, "ada", "bob").await;
    // Red stacks column 0; yellow answers in column 1.
    play_moves(&mut red, &mut yellow, &[0, 1, 0, 1, 0, 1]).await;
    red.play(0).await.unwrap();
    for player in [&mut red, &mut yellow] {
        let moved: Moved = player.push(routes::MOVED).await;
        assert_eq!(moved.colour(), Colour::Red);
        assert_eq!((moved.column, moved.row), (0, 3));
        assert_eq!(
            moved.next(),
            Colour::Nobody,
            "nobody moves after the last move"
        );
        assert_eq!(
            &moved.board[..8],
            [1, 2, 0, 0, 0, 0, 0, 1],
            "bottom row, then one up"
        );
    }
    let win = (End::FourInARow, Colour::Red);
    assert_eq!(game_over(&mut red).await, (win.0, win.1, record(1, 0, 0)));
    assert_eq!(
        game_over(&mut yellow).await,
        (win.0, win.1, record(0, 1, 0))
    );
    // In the store itself once the writer has landed what was queued.
    writer.flush(PATIENCE).await.unwrap();
    assert_eq!(stored(&store, "ada"), record(1, 0, 0));
    assert_eq!(stored(&store, "bob"), record(0, 1, 0));
    assert_eq!(yellow.stats("ada").await, Ok(record(1, 0, 0)));
    assert_eq!(yellow.stats("").await, Ok(record(0, 1, 0)));
    assert_eq!(
        red.play(2).await,
        Err(status::NOT_PLAYING),
        "the game is over"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_board_is_a_draw_for_both() {
    let store = MemoryStore::new();
    let (server, writer) = start(store.clone(), Options::default()).await;
    let (mut red, mut yellow) = matched_pair(server.addr, "ada", "bob").await;
    play_moves(&mut red, &mut yellow, &A_DRAWN_GAME).await;
    for player in [&mut red, &mut yellow] {
        let draw = (End::BoardFull, Colour::Nobody, record(0, 0, 1));
        assert_eq!(game_over(player).await, draw);
    }
    writer.flush(PATIENCE).await.unwrap();
    assert_eq!(stored(&store, "ada"), record(0, 0, 1));
    assert_eq!(stored(&store, "bob"), record(0, 0, 1));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_move_out_of_turn_is_refused() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    let (mut red, mut yellow) = matched_pair(server.addr, "ada", "bob").await;
    assert_eq!(
        yellow.play(3).await,
        Err(status::NOT_YOUR_TURN),
        "red starts"
    );
    play_moves(&mut red, &mut yellow, &[3]).await;
    assert_eq!(
        red.play(3).await,
        Err(status::NOT_YOUR_TURN),
        "twice in a row"
    );
    // The refused moves changed nothing: yellow's piece lands on red's.
    yellow.play(3).await.unwrap();
    for player in [&mut red, &mut yellow] {
        let moved: Moved = player.push(routes::MOVED).await;
        assert_eq!((moved.colour(), moved.row), (Colour::Yellow, 1));
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_moves_are_refused_with_clear_statuses() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    let (idle, _) = Player::login(server.addr, "cy").await;
    assert_eq!(idle.play(0).await, Err(status::NOT_PLAYING));
    let resign = idle.send(routes::RESIGN, Vec::new()).await;
    assert_eq!(resign, Err(status::NOT_PLAYING));

    let (mut red, mut yellow) = matched_pair(server.addr, "ada", "bob").await;
    for column in [7, 200] {
        assert_eq!(red.play(column).await, Err(status::BAD_COLUMN));
    }
    for payload in [vec![], vec![0, 1]] {
        let refused = red.send(routes::MOVE, payload).await;
        assert_eq!(refused, Err(Status::BAD_REQUEST));
    }
    play_moves(&mut red, &mut yellow, &[0; 6]).await;
    assert_eq!(red.play(0).await, Err(status::COLUMN_FULL));
    // Still red's move, and the game goes on.
    play_moves(&mut red, &mut yellow, &[1]).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_player_who_resigns_loses() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    let (mut red, mut yellow) = matched_pair(server.addr, "ada", "bob").await;
    play_moves(&mut red, &mut yellow, &[3]).await;
    // Any time, not only on one's turn.
    red.send(routes::RESIGN, Vec::new()).await.unwrap();
    let win = (End::Resigned, Colour::Yellow);
    assert_eq!(game_over(&mut red).await, (win.0, win.1, record(0, 1, 0)));
    assert_eq!(
        game_over(&mut yellow).await,
        (win.0, win.1, record(1, 0, 0))
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_player_who_disconnects_mid_game_loses() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    let (mut red, mut yellow) = matched_pair(server.addr, "ada", "bob").await;
    play_moves(&mut red, &mut yellow, &[3, 4]).await;
    yellow.disconnect();
    // bob's name is free once the disconnect hook has run, and the hook waits for
    // the game to count the loss: the first login to get the name loads it.
    let (_, bob) = eventually("bob's name is free", || {
        Player::login_if_free(server.addr, "bob")
    })
    .await;
    assert_eq!(bob, record(0, 1, 0), "bob's next login loads the loss");
    let end = game_over(&mut red).await;
    assert_eq!(end, (End::Disconnected, Colour::Red, record(1, 0, 0)));
    assert_eq!(red.stats("bob").await, Ok(record(0, 1, 0)));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn after_a_game_both_players_can_queue_again() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    let (mut red, mut yellow) = matched_pair(server.addr, "ada", "bob").await;
    yellow.send(routes::RESIGN, Vec::new()).await.unwrap();
    let first: Vec<_> = [game_over(&mut red).await, game_over(&mut yellow).await].into();
    assert_eq!(first[0].0, End::Resigned);
    // Straight after GAME_OVER: bob waits first this time, so bob plays red.
    assert!(!yellow.queue().await.unwrap());
    assert!(red.queue().await.unwrap());
    let to_bob: Matched = yellow.push(routes::MATCHED).await;
    let to_ada: Matched = red.push(routes::MATCHED).await;
    assert_eq!(
        (to_bob.colour(), to_ada.colour()),
        (Colour::Red, Colour::Yellow)
    );
    assert_eq!(to_bob.game, to_ada.game);
    yellow.play(6).await.unwrap();
    server.stop().await.unwrap();
}

/// A store whose loads of the key `held` wait until the test lets them go.
#[derive(Clone)]
struct Held {
    inner: MemoryStore,
    go: watch::Receiver<bool>,
    /// Told when such a load starts.
    holding: Arc<Notify>,
}

impl Store for Held {
    async fn load(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        if key == "held" {
            self.holding.notify_one();
            let _ = self.go.clone().wait_for(|go| *go).await;
        }
        self.inner.load(key).await
    }

    async fn save_batch(&self, writes: &[Write]) -> Result<Vec<Outcome>, StoreError> {
        self.inner.save_batch(writes).await
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.inner.dead_letter(letter).await
    }
}

#[tokio::test]
async fn a_game_whose_first_player_never_sits_down_ends_without_a_result() {
    let (go, held) = watch::channel(false);
    let holding = Arc::new(Notify::new());
    let store = Held {
        inner: MemoryStore::new(),
        go: held,
        holding: holding.clone(),
    };
    let options = Options {
        join_time: Duration::from_millis(200),
        ..Options::default()
    };
    let writer = WriterConfig {
        call_timeout: PATIENCE,
        ..WriterConfig::default()
    };
    let (server, _) = start_with(store, options, writer).await;
    let (mut ada, _) = Player::login(server.addr, "ada").await;
    let (mut bob, _) = Player::login(server.addr, "bob").await;
    assert!(!ada.queue().await.unwrap());
    // ada's connection is busy (a STATS waiting for the store), so the invitation
    // to sit down waits behind it.
    let busy = ada.client.clone();
    let stats = tokio::spawn(async move {
        let asked = connect_four::wire::StatsRequest {
            name: "held".into(),
        };
        busy.request(routes::STATS, asked.encode_to_vec()).await
    });
    tokio::time::timeout(PATIENCE, holding.notified())
        .await
        .expect("ada's STATS reaches the store");
    assert!(bob.queue().await.unwrap());
    let nobody = (End::Abandoned, Colour::Nobody, record(0, 0, 0));
    assert_eq!(
        game_over(&mut bob).await,
        nobody,
        "bob waited for ada in vain"
    );
    go.send_replace(true);
    let refused = stats.await.unwrap().unwrap_err();
    assert_eq!(status_of(refused), status::NO_SUCH_PLAYER);
    assert_eq!(game_over(&mut ada).await, nobody, "ada came too late");
    // Both are free again, and nothing was counted.
    assert!(!ada.queue().await.unwrap());
    assert!(bob.queue().await.unwrap());
    assert_eq!(bob.stats("").await, Ok(record(0, 0, 0)));
    server.stop().await.unwrap();
}
