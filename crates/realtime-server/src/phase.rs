//! Where one HTTP connection is in its life (reading a request head, serving a
//! request, handing a WebSocket over, streaming events, idle between requests)
//! and the deadline that phase allows under the [`HttpLimits`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use realtime::StreamAbort;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::limits::HttpLimits;

#[derive(Debug, Clone)]
enum Phase {
    /// Waiting for a request head that began at `started`: the accept, or the
    /// first byte after an idle period.
    Head { started: Instant },
    /// A request is with the app (its body being read, its handler running) or
    /// its response is being written, until `deadline`.
    Serving { deadline: Instant },
    /// A WebSocket handshake that must reach its session by `deadline`.
    Upgrading { deadline: Instant },
    /// Writing an event stream: no deadline (the engine's heartbeat, token
    /// expiry and write timeout bound it) until the engine gives it up.
    Streaming { abort: StreamAbort },
    /// Between requests since `since`.
    Idle { since: Instant },
}

/// The phase of one connection, shared by its socket, its service and the task
/// that drives it; the task sleeps until [`deadline`](Self::deadline) and is told
/// through [`changed`](Self::changed) when it moves.
#[derive(Debug)]
pub(crate) struct ConnectionPhase {
    header_read_timeout: Duration,
    request_timeout: Duration,
    keep_alive_timeout: Duration,
    upgrade_timeout: Duration,
    phase: Mutex<Phase>,
    /// Mirrors `Phase::Idle` so the read path checks an atomic, not the lock.
    idle: AtomicBool,
    /// The app produced a response whose head is the next thing written.
    response_ready: AtomicBool,
    changed: Notify,
}

impl ConnectionPhase {
    /// A connection accepted now, waiting for its first request head.
    pub(crate) fn accepted(limits: &HttpLimits) -> ConnectionPhase {
        ConnectionPhase {
            header_read_timeout: limits.header_read_timeout,
            request_timeout: limits.request_timeout,
            keep_alive_timeout: limits.keep_alive_timeout,
            upgrade_timeout: limits.upgrade_timeout,
            phase: Mutex::new(Phase::Head {
                started: Instant::now(),
            }),
            idle: AtomicBool::new(false),
            response_ready: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// When the connection must be closed if it is still in its current phase;
    /// `None` while it streams events.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match *self.lock() {
            Phase::Head { started } => Some(started + self.header_read_timeout),
            Phase::Serving { deadline } | Phase::Upgrading { deadline } => Some(deadline),
            Phase::Streaming { .. } => None,
            Phase::Idle { since } => Some(since + self.keep_alive_timeout),
        }
    }

    /// The abort signal of the event stream being written, if one is.
    pub(crate) fn stream_abort(&self) -> Option<StreamAbort> {
        match &*self.lock() {
            Phase::Streaming { abort } => Some(abort.clone()),
            _ => None,
        }
    }

    /// Resolves once the phase has moved since the last call (or immediately if
    /// it moved while nobody waited).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Bytes arrived: on an idle connection, a new request head has begun and the
    /// header-read timeout runs from now.
    pub(crate) fn bytes_read(&self) {
        if !self.idle.load(Ordering::Relaxed) {
            return;
        }
        let mut phase = self.lock();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                started: Instant::now(),
            };
            self.idle.store(false, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A request head is complete. A WebSocket handshake must reach its session
    /// within the upgrade timeout of the request's start; returns false when that
    /// time is already over.
    pub(crate) fn request(&self, upgrade: bool) -> bool {
        let mut phase = self.lock();
        let now = Instant::now();
        let started = match *phase {
            Phase::Head { started } => started,
            // A pipelined request parsed from bytes read earlier.
            _ => now,
        };
        self.idle.store(false, Ordering::Relaxed);
        self.changed.notify_one();
        let handshake_deadline = started + self.upgrade_timeout;
        if upgrade && now < handshake_deadline {
            *phase = Phase::Upgrading {
                deadline: handshake_deadline,
            };
            return true;
        }
        // A plain request; or a late handshake, answered (and its connection
        // closed) like one, so its refusal is not cut off by the deadline it missed.
        *phase = Phase::Serving {
            deadline: now + self.request_timeout,
        };
        !upgrade
    }

    /// The response to the current request is an event stream: it is written
    /// for as long as the engine streams, not within the request timeout.
    pub(crate) fn streaming(&self, abort: StreamAbort) {
        *self.lock() = Phase::Streaming { abort };
        self.changed.notify_one();
    }

    /// The response to the current request is ready; its head is written next.
    pub(crate) fn response_ready(&self) {
        self.response_ready.store(true, Ordering::Release);
    }

    /// Whether the head about to be written is the app's (as opposed to one
    /// hyper writes itself after a parse error); consumes the mark.
    pub(crate) fn take_response_ready(&self) -> bool {
        self.response_ready.swap(false, Ordering::Acquire)
    }

    /// The response has been written (or abandoned). Unless it switched protocols,
    /// the connection is idle from now.
    pub(crate) fn response_done(&self, switched_protocols: bool) {
        if switched_protocols {
            return;
        }
        let mut phase = self.lock();
        *phase = Phase::Idle {
            since: Instant::now(),
        };
        self.idle.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        // The phase is plain data: a panic elsewhere cannot leave it inconsistent.
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }
}
