//! Presence across nodes: each node keeps its part of the presence table
//! in Redis and refreshes it; readers merge every node's part.
//!
//! Node `N` writes the hash `ws-hub:presence:N` (field: room, value: a
//! JSON object user → member sessions) every third of `presence_ttl` and
//! gives it a TTL of `presence_ttl`, and lists itself in the set
//! `ws-hub:presence-nodes`. A node that stops or dies stops refreshing: its
//! hash expires and its users disappear from presence within
//! `presence_ttl`; readers drop it from the set when its hash is gone.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use ws_async::Runtime;
use ws_hub::{Command, PresenceQuery, UserId};

use super::api::ApiCall;
use super::hub_task::ToHub;
use crate::bus::url::RedisUrl;
use crate::bus::{ConnError, RedisClient};
use crate::shutdown::Shutdown;
use crate::task::unless;

/// The set of nodes that wrote presence.
const NODES: &str = "ws-hub:presence-nodes";

/// The hash of `node`'s part.
fn node_key(node: &str) -> String {
    format!("ws-hub:presence:{node}")
}

/// Users of one room with their member sessions.
pub(crate) type Users = BTreeMap<String, u64>;

/// Asks the hub task for every local room's presence.
async fn local_table(hub: &async_channel::Sender<ToHub>) -> Option<Map<String, Value>> {
    let (reply, answer) = async_channel::bounded(1);
    hub.send(ToHub::Api(ApiCall::PresenceTable, reply))
        .await
        .ok()?;
    match answer.recv().await.ok()?.1 {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Writes this node's part: a fresh hash renamed over the old one (so
/// readers never see it half written), with its TTL.
async fn write<R: Runtime>(
    client: &mut RedisClient<R>,
    node: &str,
    ttl: Duration,
    table: &Map<String, Value>,
) -> Result<(), ConnError> {
    let key = node_key(node);
    if table.is_empty() {
        client.command(["DEL", key.as_str()]).await?;
    } else {
        let tmp = format!("{key}:next");
        let mut args = vec!["HSET".to_owned(), tmp.clone()];
        for (room, users) in table {
            args.push(room.clone());
            args.push(users.to_string());
        }
        client.command(args).await?;
        let ms = ttl.as_millis().to_string();
        client
            .command(["PEXPIRE", tmp.as_str(), ms.as_str()])
            .await?;
        client
            .command(["RENAME", tmp.as_str(), key.as_str()])
            .await?;
    }
    client.command(["SADD", NODES, node]).await?;
    Ok(())
}

/// Keeps this node's part fresh until `shutdown`.
pub(crate) async fn keep<R: Runtime>(
    rt: R,
    url: RedisUrl,
    node: String,
    ttl: Duration,
    hub: async_channel::Sender<ToHub>,
    shutdown: Arc<Shutdown>,
) {
    let mut stop = pin!(shutdown.wait());
    let mut client: Option<RedisClient<R>> = None;
    loop {
        if let Some(table) = local_table(&hub).await {
            if client.is_none() {
                client = RedisClient::connect(rt.clone(), &url).await.ok();
            }
            if let Some(c) = &mut client
                && let Err(e) = write(c, &node, ttl, &table).await
            {
                tracing::debug!(error = %e, "presence refresh failed");
                client = None;
            }
        }
        let next = rt.now() + ttl / 3;
        if unless(stop.as_mut(), rt.sleep_until(next)).await.is_none() {
            return;
        }
    }
}

/// Adds every other node's users of `room` to `users`: what both
/// `GET /api/presence` and the cluster's `presence` / `presence_stats`
/// answers ([`answer_queries`]) read.
pub(crate) async fn add_other_nodes<R: Runtime>(
    client: &mut RedisClient<R>,
    node: &str,
    room: &str,
    users: &mut Users,
) -> Result<(), ConnError> {
    let nodes = client.command(["SMEMBERS", NODES]).await?;
    let crate::bus::resp::Value::Array(Some(nodes)) = nodes else {
        return Ok(());
    };
    for other in nodes {
        let Some(other) = other
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
        else {
            continue;
        };
        if other == node {
            continue;
        }
        let key = node_key(&other);
        let part = client.command(["HGET", key.as_str(), room]).await?;
        match part.as_bytes() {
            Some(json) => {
                let part: Users = serde_json::from_slice(json).unwrap_or_default();
                for (user, n) in part {
                    let total = users.entry(user).or_default();
                    *total = total.saturating_add(n);
                }
            }
            None => {
                let exists = client.command(["EXISTS", key.as_str()]).await?;
                if exists == crate::bus::resp::Value::Integer(0) {
                    client.command(["SREM", NODES, other.as_str()]).await?;
                }
            }
        }
    }
    Ok(())
}

/// Most cluster presence queries waiting for Redis; beyond, a query is
/// answered `unavailable` at once.
pub(crate) const MAX_QUERIES: usize = 256;

/// Answers the hub's cluster presence queries
/// ([`Action::QueryPresence`](ws_hub::Action::QueryPresence)), one after
/// the other on one Redis connection (opened again after an error): reads
/// the other nodes' parts of the room and feeds them back to the hub.
/// When Redis cannot be read, that query and every one already waiting
/// are answered `None` at once (so a Redis outage costs the waiting
/// clients one connection timeout, not one each). Runs until `shutdown`
/// (it holds a sender of the hub's inbox, which the hub task waits for).
pub(crate) async fn answer_queries<R: Runtime>(
    rt: R,
    url: RedisUrl,
    node: String,
    queries: async_channel::Receiver<PresenceQuery>,
    hub: async_channel::Sender<ToHub>,
    shutdown: Arc<Shutdown>,
) {
    let mut stop = pin!(shutdown.wait());
    let mut client: Option<RedisClient<R>> = None;
    while let Some(Ok(query)) = unless(stop.as_mut(), queries.recv()).await {
        let others = read_other_nodes(&rt, &url, &node, &mut client, query.room.as_str()).await;
        let failed = others.is_none();
        let mut answers = vec![Command::ClusterPresence { query, others }];
        if failed {
            answers.extend(std::iter::from_fn(|| queries.try_recv().ok()).map(|query| {
                Command::ClusterPresence {
                    query,
                    others: None,
                }
            }));
        }
        for answer in answers {
            if hub.send(ToHub::Command(answer)).await.is_err() {
                return;
            }
        }
    }
}

/// The other nodes' users of `room` with their sessions, on `client`
/// (connected first if need be; dropped after an error); `None` if Redis
/// cannot be read.
async fn read_other_nodes<R: Runtime>(
    rt: &R,
    url: &RedisUrl,
    node: &str,
    client: &mut Option<RedisClient<R>>,
    room: &str,
) -> Option<Vec<(UserId, u64)>> {
    if client.is_none() {
        *client = RedisClient::connect(rt.clone(), url).await.ok();
    }
    let mut users = Users::new();
    let read = add_other_nodes(client.as_mut()?, node, room, &mut users).await;
    if let Err(e) = read {
        tracing::debug!(error = %e, "cluster presence read failed");
        *client = None;
        return None;
    }
    Some(
        users
            .into_iter()
            .map(|(u, n)| (UserId::new(u), n))
            .collect(),
    )
}
