//! `NatsLink` against a real nats-server: subjects (a publisher never hears itself),
//! requests (nobody there fails at once; an answer comes back), buckets (a watch
//! starts with every key, a stale conditional delete or put is a conflict, of two
//! creates one wins, a get reads the latest), and the link's
//! life with the server (down at start, killed and restarted, hung).
//!
//! Each test starts a nats-server of its own (`gatehouse_cluster::testing`) from the
//! binary named by `GATEHOUSE_TEST_NATS_SERVER`; without it, each prints a notice
//! and passes.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use gatehouse::cluster::{ClusterLink, KvChange, LinkError, LinkMessage, LinkStream};
use gatehouse_cluster::testing::{wait_until, NatsServer};
use gatehouse_cluster::NatsLink;

/// How long anything that should happen may take: generous, for a busy machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// How long to listen for a message that must not come.
const QUIET: Duration = Duration::from_millis(500);

/// A link of the node `name` to `nats`, connected.
async fn link(nats: &NatsServer, name: &str) -> NatsLink {
    let link = NatsLink::connect(&nats.url(), name).await.unwrap();
    assert!(
        wait_until(DEADLINE, || link.connected()).await,
        "{name} did not connect\n{}",
        nats.log()
    );
    link
}

/// Subscribes: once `subscribe` returned, the server has the subscription, and
/// another link's publish reaches it.
async fn subscribe(link: &NatsLink, subject: &str) -> LinkStream<LinkMessage> {
    link.subscribe(subject.into()).await.unwrap()
}

async fn next<T>(stream: &mut LinkStream<T>) -> T {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("nothing came in time")
        .expect("the stream ended")
}

fn bytes(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

fn change(key: &str, value: Option<&'static str>, revision: u64) -> KvChange {
    KvChange {
        key: key.into(),
        value: value.map(bytes),
        revision,
    }
}

#[tokio::test]
async fn a_publish_reaches_another_link_and_not_its_publisher() {
    let Some(nats) = NatsServer::from_env() else {
        return;
    };
    let (a, b) = (link(&nats, "a").await, link(&nats, "b").await);
    let mut at_a = subscribe(&a, "gatehouse.all").await;
    let mut at_b = subscribe(&b, "gatehouse.all").await;

    a.publish("gatehouse.all".into(), bytes("from a"))
        .await
        .unwrap();
    let heard = next(&mut at_b).await;
    assert_eq!(heard.subject, "gatehouse.all");
    assert_eq!(heard.payload, bytes("from a"));
    assert_eq!(heard.reply, None);

    // Had `a` heard its own message, the server would have queued it to `a` before
    // `b` got it, so before this one.
    b.publish("gatehouse.all".into(), bytes("from b"))
        .await
        .unwrap();
    assert_eq!(next(&mut at_a).await.payload, bytes("from b"));
    let more = tokio::time::timeout(QUIET, at_a.next()).await;
    assert!(more.is_err(), "a heard something else: {more:?}");
}

#[tokio::test]
async fn a_request_nobody_subscribes_to_fails_with_no_responders_at_once() {
    let Some(nats) = NatsServer::from_env() else {
        return;
    };
    let a = link(&nats, "a").await;
    let started = Instant::now();
    let refused = a
        .request("gatehouse.node.gone".into(), bytes("?"), DEADLINE)
        .await;
    assert_eq!(refused, Err(LinkError::NoResponders));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "NoResponders took {:?}: the timeout's, not the server's answer",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_request_is_answered_and_one_nobody_answers_times_out() {
    let Some(nats) = NatsServer::from_env() else {
        return;
    };
    let (a, b) = (link(&nats, "a").await, link(&nats, "b").await);
    let mut at_b = subscribe(&b, "gatehouse.node.b").await;
    let answering = tokio::spawn(async move {
        let request = next(&mut at_b).await;
        assert_eq!(request.payload, bytes("who?"));
        let reply = request.reply.expect("a request has a reply subject");
        b.publish(reply, bytes("b")).await.unwrap();
        // The second request is heard and left unanswered.
        let _ = next(&mut at_b).await;
        b
    });
    let answer = a
        .request("gatehouse.node.b".into(), bytes("who?"), DEADLINE)
        .await;
    assert_eq!(answer, Ok(bytes("b")));

    let silent = a
        .request(
            "gatehouse.node.b".into(),
            bytes("who?"),
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(silent, Err(LinkError::TimedOut));
    answering.await.unwrap();
}

#[tokio::test]
async fn a_watch_starts_with_every_key_then_follows_changes() {
    let Some(nats) = NatsServer::from_env() else {
        return;
    };
    let (a, b) = (link(&nats, "a").await, link(&nats, "b").await);
    let one = a.kv_put("nodes", "one".into(), bytes("1")).await.unwrap();
    let two = a.kv_put("nodes", "two".into(), bytes("2")).await.unwrap();
    let gone = a.kv_put("nodes", "gone".into(), bytes("x")).await.unwrap();
    let one_again = a.kv_put("nodes", "one".into(), bytes("1b")).await.unwrap();
    a.kv_delete("nodes", "gone".into(), None).await.unwrap();
    assert!(one < two && two < gone && gone < one_again);

    // Another link's watch: every key as it is now (the deleted one left out).
    let mut watch = b.kv_watch("nodes").await.unwrap();
    let mut now = vec![next(&mut watch).await, next(&mut watch).await];
    now.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(
        now,
        [
            change("one", Some("1b"), one_again),
            change("two", Some("2"), two)
        ]
    );

    // Then every change, deletes as None; the first after the keys is the next
    // put (not the deleted key's marker).
    let three = a.kv_put("nodes", "three".into(), bytes("3")).await.unwrap();
    assert_eq!(next(&mut watch).await, change("three", Some("3"), three));
    a.kv_delete("nodes", "two".into(), None).await.unwrap();
    let deleted = next(&mut watch).await;
    assert_eq!((deleted.key.as_str(), deleted.value), ("two", None));
    assert!(deleted.revision > three);

    // A watch of an empty bucket starts with nothing and hears the first put.
    let mut empty = b.kv_watch("players").await.unwrap();
    let first = a.kv_put("players", "p".into(), bytes("a")).await.unwrap();
    assert_eq!(next(&mut empty).await, change("p", Some("a"), first));
}

#[tokio::test]
async fn a_delete_with_a_stale_revision_is_a_conflict_and_with_the_latest_deletes() {
    let Some(nats) = NatsServer::from_env() else {
        return;
    };
    let a = link(&nats, "a").await;
    let first = a.kv_put("players", "p".into(), bytes("a")).await.unwrap();
    let second = a.kv_put("players", "p".into(), bytes("b")).await.unwrap();
    let mut watch = a.kv_watch("players").await.unwrap();
    assert_eq!(next(&mut watch).await, change("p", Some("b"), second));

    let stale = a.kv_delete("players", "p".into(), Some(first)).await;
    assert_eq!(stale, Err(LinkError::Conflict));
    let never = a.kv_delete("players", "nobody".into(), Some(second)).await;
    assert_eq!(never, Err(LinkError::Conflict), "a key that never was");

    a.kv_delete("players", "p".into(), Some(second))
        .await
        .unwrap();
    let deleted = next(&mut watch).await;
    assert_eq!((deleted.key.as_str(), deleted.value), ("p", None));
    assert!(deleted.revision > second);
    let again = a.kv_delete("players", "p".into(), Some(second)).await;
    assert_eq!(again, Err(LinkError::Conflict), "already deleted");
}

#[tokio::test]
async fn of_two_conditional_puts_one_wins_and_a_get_reads_the_latest() {
    let Some(nats) = NatsServer::from_env() else {
        return;
    };
    let (a, b) = (link(&nats, "a").await, link(&nats, "b").await);
    // Made where there is no value: the first wins.
    let first = a
        .kv_put_if("rooms", "r".into(), bytes("a"), None)
        .await
        .unwrap();
    let late = b.kv_put_if("rooms", "r".into(), bytes("b"), None).await;
    assert_eq!(late, Err(LinkError::Conflict));
    assert_eq!(
        b.kv_get("rooms", "r".into()).await.unwrap(),
        Some((bytes("a"), first))
    );
    assert_eq!(b.kv_get("rooms", "nobody".into()).await.unwrap(), None);
    // Replaced at the revision read: again the first wins.
    let second = b
        .kv_put_if("rooms", "r".into(), bytes("b"), Some(first))
        .await
        .unwrap();
    assert!(second > first);
    let stale = a
        .kv_put_if("rooms", "r".into(), bytes("a2"), Some(first))
        .await;
    assert_eq!(stale, Err(LinkError::Conflict));
    // Deleted: no value, and a put where there is none works again.
    a.kv_delete("rooms", "r".into(), Some(second))
        .await
        .unwrap();
    assert_eq!(a.kv_get("rooms", "r".into()).await.unwrap(), None);
    let again = a
        .kv_put_if("rooms", "r".into(), bytes("a3"), None)
        .await
        .unwrap();
    assert_eq!(
        b.kv_get("rooms", "r".into()).await.unwrap(),
        Some((bytes("a3"), again))
    );
}

#[tokio::test]
async fn a_link_made_while_nats_is_down_connects_once_nats_starts() {
    let Some(binary) = NatsServer::binary_from_env() else {
        return;
    };
    let mut nats = NatsServer::new(binary).unwrap();
    let started = Instant::now();
    let a = NatsLink::connect(&nats.url(), "a").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "connect waited for NATS"
    );
    assert!(!a.connected());
    let down = a.publish("gatehouse.all".into(), bytes("x")).await;
    assert_eq!(down, Err(LinkError::Disconnected));
    assert_eq!(
        a.kv_put("nodes", "a".into(), bytes("x")).await,
        Err(LinkError::Disconnected)
    );

    nats.start().unwrap();
    assert!(
        wait_until(DEADLINE, || a.connected()).await,
        "a did not connect once NATS started\n{}",
        nats.log()
    );
    let revision = a.kv_put("nodes", "a".into(), bytes("x")).await.unwrap();
    let mut watch = a.kv_watch("nodes").await.unwrap();
    assert_eq!(next(&mut watch).await, change("a", Some("x"), revision));
}

#[tokio::test]
async fn after_nats_is_killed_and_restarted_the_link_reconnects_and_keys_remain() {
    let Some(mut nats) = NatsServer::from_env() else {
        return;
    };
    let (a, b) = (link(&nats, "a").await, link(&nats, "b").await);
    let kept = a.kv_put("nodes", "a".into(), bytes("beat")).await.unwrap();
    let claim = b.kv_put("players", "p".into(), bytes("b")).await.unwrap();
    let mut old_subscription = subscribe(&b, "gatehouse.all").await;
    let mut old_watch = a.kv_watch("nodes").await.unwrap();
    assert_eq!(next(&mut old_watch).await, change("a", Some("beat"), kept));

    nats.kill().unwrap();
    assert!(
        wait_until(DEADLINE, || !a.connected() && !b.connected()).await,
        "the links did not notice the server was gone"
    );
    // A watch ends with the connection (the runtime watches again once it is back).
    let ended = tokio::time::timeout(DEADLINE, old_watch.next()).await;
    assert_eq!(ended, Ok(None), "the watch did not end");
    let down = a.publish("gatehouse.all".into(), bytes("lost")).await;
    assert_eq!(down, Err(LinkError::Disconnected));

    nats.restart().unwrap();
    assert!(
        wait_until(DEADLINE, || a.connected() && b.connected()).await,
        "the links did not reconnect\n{}",
        nats.log()
    );

    // A new subscription works, and the one made before (the client subscribes
    // again by itself) still hears.
    let mut new_subscription = subscribe(&b, "gatehouse.node.b").await;
    a.publish("gatehouse.node.b".into(), bytes("to b"))
        .await
        .unwrap();
    assert_eq!(next(&mut new_subscription).await.payload, bytes("to b"));
    a.publish("gatehouse.all".into(), bytes("to all"))
        .await
        .unwrap();
    assert_eq!(next(&mut old_subscription).await.payload, bytes("to all"));

    // The buckets were in the store: their keys are still there.
    let mut nodes = a.kv_watch("nodes").await.unwrap();
    assert_eq!(next(&mut nodes).await, change("a", Some("beat"), kept));
    let mut players = a.kv_watch("players").await.unwrap();
    assert_eq!(next(&mut players).await, change("p", Some("b"), claim));
    let later = b.kv_put("players", "q".into(), bytes("b")).await.unwrap();
    assert!(later > claim);
    assert_eq!(next(&mut players).await, change("q", Some("b"), later));
}

#[tokio::test]
async fn a_hung_server_is_noticed_and_the_link_comes_back_when_it_goes_on() {
    let Some(nats) = NatsServer::from_env() else {
        return;
    };
    let a = link(&nats, "a").await;
    nats.pause().unwrap();
    let paused = Instant::now();
    assert!(
        wait_until(DEADLINE, || !a.connected()).await,
        "a hung server went unnoticed"
    );
    // The link pings every second and gives up after two unanswered: about 3 s,
    // within the runtime's default dead_after (6 s); the client's default (every
    // 60 s) would take minutes. 10 s leaves room for a busy machine.
    assert!(
        paused.elapsed() < Duration::from_secs(10),
        "noticed after {:?}",
        paused.elapsed()
    );
    nats.resume().unwrap();
    assert!(
        wait_until(DEADLINE, || a.connected()).await,
        "a did not reconnect after the server went on\n{}",
        nats.log()
    );
    a.kv_put("nodes", "a".into(), bytes("x")).await.unwrap();
}
