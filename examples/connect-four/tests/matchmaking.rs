//! Logging in and matchmaking, over real sockets: one connection per name, the
//! waiting line, and who is matched with whom.

#![allow(clippy::unwrap_used)]

mod support;

use connect_four::wire::{routes, status, Matched};
use connect_four::Options;
use gatehouse::Status;
use gatehouse_store::MemoryStore;
use support::{eventually, matched_pair, start, status_of, Player};

#[tokio::test]
async fn requests_before_login_and_bad_names_are_refused() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    let mut stranger = Player::connect(server.addr).await;
    for route in [routes::QUEUE, routes::STATS, routes::MOVE, routes::RESIGN] {
        let refused = stranger
            .client
            .request(route, Vec::new())
            .await
            .unwrap_err();
        assert_eq!(status_of(refused), status::NOT_LOGGED_IN, "route {route}");
    }
    for bad in ["", "has space", "seventeen_letters", "tab\t"] {
        let refused = stranger.try_login(bad).await.unwrap_err();
        assert_eq!(status_of(refused), status::BAD_NAME, "{bad:?}");
    }
    let garbage = stranger.client.request(routes::LOGIN, vec![0xff; 3]);
    assert_eq!(status_of(garbage.await.unwrap_err()), Status::BAD_REQUEST);
    stranger.try_login("ada").await.unwrap();
    let again = stranger.try_login("ada").await.unwrap_err();
    assert_eq!(status_of(again), status::ALREADY_LOGGED_IN);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_name_already_online_is_refused_until_its_player_leaves() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    let (ada, _) = Player::login(server.addr, "ada").await;
    let mut impostor = Player::connect(server.addr).await;
    let refused = impostor.try_login("ada").await.unwrap_err();
    assert_eq!(status_of(refused), status::NAME_TAKEN);
    ada.disconnect();
    // The name is free once the disconnect hook has run: each try is a new
    // connection, as a player retrying would be.
    eventually("ada's name is free", || {
        Player::login_if_free(server.addr, "ada")
    })
    .await;
    impostor.try_login("bob").await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn of_many_logins_to_one_name_at_once_one_gets_it() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    let logins: Vec<_> = (0..8)
        .map(|_| tokio::spawn(Player::login_if_free(server.addr, "ada")))
        .collect();
    let mut players = Vec::new();
    for login in logins {
        // The others are refused NAME_TAKEN (login_if_free checks).
        players.extend(login.await.unwrap());
    }
    assert_eq!(players.len(), 1, "one login has the name");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn two_queued_players_are_matched_into_one_game() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    // Colours, opponents and the game's name are checked by matched_pair.
    let (red, _yellow) = matched_pair(server.addr, "ada", "bob").await;
    // Playing, so not free to queue.
    let busy = red.queue().await.unwrap_err();
    assert_eq!(status_of(busy), status::BUSY);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn leaving_the_queue_works() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    let (ada, _) = Player::login(server.addr, "ada").await;
    assert!(!ada.queue().await.unwrap());
    assert_eq!(status_of(ada.queue().await.unwrap_err()), status::BUSY);
    ada.send(routes::LEAVE_QUEUE, Vec::new()).await.unwrap();
    let again = ada.send(routes::LEAVE_QUEUE, Vec::new()).await;
    assert_eq!(again, Err(status::NOT_QUEUED));
    // Nobody waits: the next player to queue waits in turn, matched with nobody.
    let (bob, _) = Player::login(server.addr, "bob").await;
    assert!(!bob.queue().await.unwrap());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn disconnecting_while_queued_removes_them() {
    let (server, _) = start(MemoryStore::new(), Options::default()).await;
    let (ada, _) = Player::login(server.addr, "ada").await;
    assert!(!ada.queue().await.unwrap());
    ada.disconnect();
    // ada's name is free once her disconnect hook, which takes her out of the
    // line, has run.
    eventually("ada has left", || Player::login_if_free(server.addr, "ada")).await;
    let (mut bob, _) = Player::login(server.addr, "bob").await;
    // bob waits, and is matched with the next player, not with ada's ghost.
    assert!(!bob.queue().await.unwrap());
    let (mut cy, _) = Player::login(server.addr, "cy").await;
    assert!(cy.queue().await.unwrap());
    let to_bob: Matched = bob.push(routes::MATCHED).await;
    let to_cy: Matched = cy.push(routes::MATCHED).await;
    assert_eq!(
        (to_bob.opponent.as_str(), to_cy.opponent.as_str()),
        ("cy", "bob")
    );
    server.stop().await.unwrap();
}
