//! What every node of one in-memory presence store shares: the state behind one
//! lock, the store's clock, and the task that queues `*.offline`/`*.vacated`
//! when a grace runs out.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::state::{Effects, State};

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Woken when an event is queued or handed back: every waiting `next()`
    /// looks again.
    pub(super) queued: Notify,
    /// Wakes the grace task when a new leave is pending (or the store is gone).
    /// Its own `Arc` so the task can wait on it without keeping the store alive.
    due: Arc<Notify>,
    clock: Clock,
    grace_task: OnceLock<()>,
}

impl Shared {
    pub(crate) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            queued: Notify::new(),
            due: Arc::new(Notify::new()),
            clock: Clock::new(),
            grace_task: OnceLock::new(),
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
            self.due.notify_one();
        }
    }

    /// Starts the grace task once, on the first node's start. It holds the store
    /// weakly and ends when the store is dropped.
    pub(super) fn start_grace_task(self: &Arc<Self>) {
        if self.grace_task.set(()).is_err() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "presence: no tokio runtime, offline and vacated events will not be sent"
            );
            return;
        };
        runtime.spawn(grace_task(Arc::downgrade(self)));
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Lets the grace task see the store is gone and end.
        self.due.notify_one();
    }
}

/// Queues each gone event when its grace runs out: sleeps until the earliest
/// pending leave falls due, or until a new one is pending.
async fn grace_task(store: Weak<Shared>) {
    loop {
        let Some(shared) = store.upgrade() else {
            return;
        };
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
        // The store is not held while waiting, so dropping it ends the task.
        let due = Arc::clone(&shared.due);
        drop(shared);
        let notified = due.notified();
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
struct Clock {
    start_ms: u64,
    start: Instant,
}

impl Clock {
    fn new() -> Clock {
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Clock {
            start_ms,
            start: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start_ms + self.start.elapsed().as_millis() as u64
    }

    fn instant_at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms.saturating_sub(self.start_ms))
    }
}
