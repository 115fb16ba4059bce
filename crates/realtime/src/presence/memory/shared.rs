//! What every node of one in-memory presence store shares: the state behind one
//! lock, the store's clock, and the loop each node runs that queues
//! `*.offline`/`*.vacated` when a grace runs out.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::NodeSelf;
use super::state::{Effects, State};

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Woken when an event is queued or handed back: every waiting `next()`
    /// looks again.
    pub(super) queued: Notify,
    /// Wakes every node's grace loop when a new leave is pending (or the store
    /// is gone). Its own `Arc` so a loop can wait on it without keeping the
    /// store alive.
    due: Arc<Notify>,
    clock: Clock,
}

impl Shared {
    pub(crate) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            queued: Notify::new(),
            due: Arc::new(Notify::new()),
            clock: Clock::new(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Runs `change` on the state at the store's now, then wakes whoever its
    /// effects concern (outside the lock).
    pub(super) fn apply<T>(&self, change: impl FnOnce(&mut State, u64, &mut Effects) -> T) -> T {
        let mut effects = Effects::default();
        let out = {
            let mut state = self.lock();
            change(&mut state, self.now_ms(), &mut effects)
        };
        self.wake(effects);
        out
    }

    pub(super) fn wake(&self, effects: Effects) {
        if effects.queued {
            self.queued.notify_waiters();
        }
        if effects.pending {
            self.due.notify_waiters();
        }
    }

    /// Starts `node`'s grace loop on the caller's runtime. Every started node
    /// runs one, so events keep coming while any node of the hub is alive
    /// (one loop on the first node's runtime would die with it); the sweep
    /// pops each due entry under the state lock, so each event is queued once.
    pub(super) fn start_grace_loop(self: &Arc<Self>, node: Weak<NodeSelf>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "presence: no tokio runtime, offline and vacated events will not be sent"
            );
            return;
        };
        runtime.spawn(grace_loop(Arc::downgrade(self), node));
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Lets the grace loops see the store is gone and end.
        self.due.notify_waiters();
    }
}

/// One node's grace loop: queues each gone event when its grace runs out,
/// sleeping until the earliest pending leave falls due or a new one is pending.
/// Ends when the store is dropped or the node stops (halted, left, dropped): a
/// killed node does nothing more, the others' loops carry on.
async fn grace_loop(store: Weak<Shared>, node: Weak<NodeSelf>) {
    let Some(due) = store.upgrade().map(|s| Arc::clone(&s.due)) else {
        return;
    };
    loop {
        // Registered before the sweep reads the state: a leave made pending in
        // between still wakes this loop.
        let notified = due.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(shared) = store.upgrade() else {
            return;
        };
        if !node.upgrade().is_some_and(|n| n.is_running()) {
            return;
        }
        let mut effects = Effects::default();
        let next = {
            let mut state = shared.lock();
            state.sweep(shared.now_ms(), &mut effects)
        };
        shared.wake(Effects {
            pending: false,
            ..effects
        });
        let wake_at = next.map(|ms| shared.clock.instant_at(ms));
        // The store is not held while waiting, so dropping it ends the loop.
        drop(shared);
        match wake_at {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Milliseconds since the Unix epoch, advancing with tokio's clock (so a test
/// that pauses time moves leases and graces too), from the wall clock at start.
/// Rounded down once, from the exact sum, so a stamp is never more than a
/// millisecond behind the wall clock it started from.
struct Clock {
    /// The wall clock at start, exactly.
    start_wall: Duration,
    start_ms: u64,
    start: Instant,
}

impl Clock {
    fn new() -> Clock {
        let start_wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            start_wall,
            start_ms: start_wall.as_millis() as u64,
            start: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        (self.start_wall + self.start.elapsed()).as_millis() as u64
    }

    fn instant_at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms.saturating_sub(self.start_ms))
    }
}
