//! The five ways a message finds its recipients.

use serde::{Deserialize, Serialize};

use crate::connection::ConnectionId;
use crate::topic::Topic;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Route {
    /// Every connection of one user.
    User(String),
    /// Every connection whose token carries this role.
    Role(String),
    /// One connection.
    Connection(ConnectionId),
    /// Every connection.
    Broadcast,
    /// Every connection subscribed to the topic.
    Topic(Topic),
}

impl Route {
    /// A short stable name, used as a metrics label.
    pub const fn kind(&self) -> RouteKind {
        match self {
            Route::User(_) => RouteKind::User,
            Route::Role(_) => RouteKind::Role,
            Route::Connection(_) => RouteKind::Connection,
            Route::Broadcast => RouteKind::Broadcast,
            Route::Topic(_) => RouteKind::Topic,
        }
    }
}

/// The kind of a [`Route`], without its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    User,
    Role,
    Connection,
    Broadcast,
    Topic,
}

impl RouteKind {
    pub const ALL: [RouteKind; 5] = [
        RouteKind::User,
        RouteKind::Role,
        RouteKind::Connection,
        RouteKind::Broadcast,
        RouteKind::Topic,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RouteKind::User => "user",
            RouteKind::Role => "role",
            RouteKind::Connection => "connection",
            RouteKind::Broadcast => "broadcast",
            RouteKind::Topic => "topic",
        }
    }
}
