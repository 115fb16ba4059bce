//! What every transport does once its connection exists: wait (bounded) until
//! it is reachable from every node, make it reachable, and subscribe the
//! server-side topics its admission names.

use std::sync::Arc;

use realtime_core::{CloseCode, Topic};

use crate::cluster::bus::BusFuture;
use crate::handle::ConnectionHandle;
use crate::service::Realtime;

/// Makes an opened connection reachable. In a cluster the welcome means
/// "reachable from every node": first wait (bounded by `close_timeout`) until
/// this node receives the user's and roles' channels. If the bus is down the
/// interest is re-applied when it returns; the client is served meanwhile.
pub(crate) async fn start(rt: &Realtime, handle: &Arc<ConnectionHandle>, ready: Option<BusFuture>) {
    if let Some(ready) = ready {
        match tokio::time::timeout(rt.config().close_timeout, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "connection accepted while the bus is down")
            }
            Err(_) => {
                tracing::debug!("connection accepted before the bus confirmed its channels")
            }
        }
    }
    rt.activate(handle);
    let info = handle.info();
    tracing::debug!(connection = %info.id, user = %info.user_id, transport = info.transport.as_str(), "connection opened");
    if !rt.is_accepting() {
        // The handshake raced the start of a shutdown that has already notified everyone.
        handle.close(CloseCode::ServerShutdown);
    }
}

/// Subscribes the connection to `topics` on the server's authority, as the HTTP
/// API does: no topic policy, not counted against `max_subscriptions`, and no
/// frame to the client (on a history topic no replay: delivery starts now). A
/// topic that cannot be subscribed (its history store is down) is skipped.
pub(crate) async fn subscribe_server_side(
    rt: &Realtime,
    handle: &Arc<ConnectionHandle>,
    topics: Vec<Topic>,
) {
    for topic in topics {
        if handle.is_closing() {
            return;
        }
        if let Err(e) = rt.subscribe_local(handle, &topic).await {
            tracing::debug!(connection = %handle.id(), topic = topic.as_str(), error = %e, "server-side topic of the admission not subscribed");
        }
    }
}
