//! Rooms shared by a cluster whose link is NATS (a nats-server of the test's own,
//! `GATEHOUSE_TEST_NATS_SERVER`; unset, the test prints a notice and passes): a room
//! joined from two nodes is one room, run by the node of its first joiner, whose
//! members on both hear each other; when that node stops, the member on the other
//! is told the room restarted and is joined again there, where the room now runs.
//! The same behaviour in more detail, over the in-process bus, is in `gatehouse`'s
//! `shared_rooms` tests.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use gatehouse::cluster::ClusterConfig;
use gatehouse::protocol::ROUTE_ROOM_RESTARTED;
use gatehouse::room::Rooms;
use gatehouse::{Config, Server, ServerHandle};
use gatehouse_client::{Client, ClientConfig, Pushes};
use gatehouse_cluster::testing::{wait_until, NatsServer};
use gatehouse_cluster::NatsLink;
use tokio::sync::oneshot;

#[path = "../../gatehouse/tests/support/chat.rs"]
mod chat;

use chat::{Game, JOIN, SAID, SAY};

const DEADLINE: Duration = Duration::from_secs(30);

/// A node of the cluster at `nats`: its address, its handle, and what stops it.
struct Node {
    addr: SocketAddr,
    handle: ServerHandle<()>,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
}

async fn node(nats: &NatsServer, name: &str) -> Node {
    let link = NatsLink::connect(&nats.url(), name).await.unwrap();
    assert!(
        wait_until(DEADLINE, || gatehouse::cluster::ClusterLink::connected(
            &link
        ))
        .await
    );
    let rooms = Rooms::new((), Default::default()).unwrap();
    let cluster = ClusterConfig {
        heartbeat: Duration::from_millis(200),
        dead_after: Duration::from_millis(600),
        ..ClusterConfig::for_node(name)
    };
    let game = Game {
        rooms: rooms.clone(),
    };
    let server = Server::new(Config::default(), game)
        .unwrap()
        .with_shared_rooms("chat", &rooms)
        .with_cluster(link, cluster)
        .unwrap();
    let handle = server.handle();
    let listener = gatehouse::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        let _ = server
            .run(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Node {
        addr,
        handle,
        stop: Some(stop),
        served,
    }
}

async fn join(node: &Node, room: &str, name: &str) -> (Client, Pushes, String) {
    let (client, pushes) = Client::connect(node.addr, ClientConfig::default())
        .await
        .unwrap();
    let host = client
        .request(JOIN, format!("{room} {name}"))
        .await
        .unwrap();
    (client, pushes, String::from_utf8(host.to_vec()).unwrap())
}

async fn next_on(pushes: &mut Pushes, route: u16) -> String {
    loop {
        let push = tokio::time::timeout(DEADLINE, pushes.next())
            .await
            .expect("a push in time")
            .expect("the connection is open");
        if push.route == route {
            return String::from_utf8(push.payload.to_vec()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_a_room_joined_from_two_nodes_is_one_room_and_outlives_its_node() {
    let Some(nats) = NatsServer::from_env() else {
        return;
    };
    let mut a = node(&nats, "a").await;
    let b = node(&nats, "b").await;
    for node in [&a, &b] {
        let handle = node.handle.clone();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while handle.cluster_counts().await.unwrap().nodes.len() != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the nodes never met"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (_ann, mut ann_hears, host) = join(&a, "pit", "ann").await;
    assert_eq!(host, "here");
    let (bob, mut bob_hears, host) = join(&b, "pit", "bob").await;
    assert_eq!(host, "a");
    bob.request(SAY, "hi").await.unwrap();
    assert_eq!(next_on(&mut ann_hears, SAID).await, "bob: hi");
    assert_eq!(next_on(&mut bob_hears, SAID).await, "bob: hi");

    // a stops: bob is joined again on b, where the room runs now.
    let _ = a.stop.take().unwrap().send(());
    tokio::time::timeout(DEADLINE, &mut a.served)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_on(&mut bob_hears, ROUTE_ROOM_RESTARTED).await, "pit");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        // Sent while bob is being joined again, a line waits for it.
        bob.request(SAY, "again").await.unwrap();
        let heard = tokio::time::timeout(Duration::from_millis(500), next_on(&mut bob_hears, SAID));
        if let Ok(line) = heard.await {
            assert_eq!(line, "bob: again");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob never heard himself again"
        );
    }
    let (_cid, _, host) = join(&b, "pit", "cid").await;
    assert_eq!(host, "here", "the room runs on b now");
}
