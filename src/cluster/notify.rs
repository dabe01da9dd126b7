//! Replicas waking each other: `NOTIFY` on a few channels, with JSON payloads, and one
//! `LISTEN`ing connection per replica (`PgListener`, its own connection). A notification is
//! delivered only to sessions listening when it commits, so after the listener loses its
//! connection it reports `Event::Missed` and the receiver catches up by itself (the leader
//! reconciles every user again). What replicas tell each other of the state they keep in memory
//! (a tenant's token endpoint, its phone system) a replica that starts, whose listener
//! reconnects, or that stops leading asks for again (`Event::NewsWanted`): it may have missed
//! the telling.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::model::CalendarKey;

/// A user's data changed on a follower: the leader reconciles them.
pub const PRESENCE: &str = "gwsync_presence";
/// A tenant's settings or phone system changed on a follower: the leader reconciles its users.
pub const PRESENCE_TENANT: &str = "gwsync_presence_tenant";
/// A tenant's key or settings changed: every replica drops what it cached of it.
pub const TENANT: &str = "gwsync_tenant";
/// A deletion left channels to stop: the leader's keeper sweeps now.
pub const KEEPER: &str = "gwsync_keeper";
/// A tenant's phonebook changed: every replica rebuilds its caller-ID index from the store.
pub const CONTACTS: &str = "gwsync_contacts";
/// A replica found a tenant's token endpoint failing, or answering again: every replica shows
/// it and holds the tenant's jobs alike.
pub const TENANT_TOKEN: &str = "gwsync_tenant_token";
/// The leader tells how a tenant's phone system is doing: followers show the same.
pub const PHONE_SYSTEM: &str = "gwsync_phone_system";
/// A replica started listening (or listens again, or stopped leading): the others tell it
/// what they know.
pub const NEWS: &str = "gwsync_news";

const CHANNELS: [&str; 8] = [PRESENCE, PRESENCE_TENANT, TENANT, KEEPER, CONTACTS, TENANT_TOKEN, PHONE_SYSTEM, NEWS];

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Presence(CalendarKey),
    PresenceTenant {
        tenant: String,
        new_receiver: bool,
    },
    Tenant {
        tenant: String,
    },
    Keeper,
    Contacts {
        tenant: String,
    },
    /// `failure`: the tenant's token failure as JSON (`sync::tenant_auth::TokenFailure`, which
    /// this module does not know); none when the endpoint answers again.
    TenantToken {
        tenant: String,
        failure: Option<String>,
        /// The key the token was asked with (`ServiceAccount::key_identity`): news about an
        /// older key says nothing about the tenant now.
        key: String,
    },
    /// `health`: the tenant's phone-system health as JSON (`presence::outbox::PhoneSystemHealth`).
    PhoneSystem {
        tenant: String,
        health: String,
    },
    /// Replica `replica` started listening, listens again after losing its connection, or
    /// stopped leading: the others tell it again what they told before (every replica the
    /// token failures it holds; the leader how each phone system is doing).
    NewsWanted {
        replica: String,
    },
    /// The listener reconnected: notifications may have been lost meanwhile.
    Missed,
}

pub async fn send(pool: &PgPool, channel: &str, event: &Event) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(pool).await?;
    Ok(())
}

pub async fn listen(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let Some(shared) = &cluster.shared else { return };
    let mut first = true;
    loop {
        let result: Result<(), sqlx::Error> = tokio::select! {
            () = shutdown.cancelled() => return,
            r = session(&cluster, shared, &mut first) => r,
        };
        if let Err(e) = result {
            tracing::warn!(error = %super::scrub(e, &shared.url), "the replica listener lost the database; reconnecting");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One listening connection, until it fails.
async fn session(cluster: &Cluster, shared: &super::Shared, first: &mut bool) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(shared.url.expose_secret()).await?;
    listener.listen_all(CHANNELS).await?;
    if !std::mem::take(first) {
        let _ = cluster.events.send(Event::Missed);
    }
    // Listening: what was told while this replica was not is told again.
    cluster.ask_for_news().await;
    loop {
        match listener.try_recv().await? {
            Some(n) => match serde_json::from_str::<Event>(n.payload()) {
                Ok(Event::Missed) | Err(_) => {
                    tracing::warn!(channel = n.channel(), "ignoring a notification gwsync did not send")
                }
                Ok(event) => {
                    let _ = cluster.events.send(event);
                }
            },
            // Reconnected (by the listener itself) after losing its connection.
            None => {
                let _ = cluster.events.send(Event::Missed);
                cluster.ask_for_news().await;
            }
        }
    }
}
