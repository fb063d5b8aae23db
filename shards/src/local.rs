//! Wake-up primitives for tasks of one shard.
//!
//! Everything on a shard runs on one thread, so these use `Cell`/`RefCell` and no atomics;
//! they are `!Send` and `!Sync` by construction (they hold `Rc`s or are used behind one).
//! Cross-shard wake-ups go through [`crate::mesh`], never through these.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// An edge-triggered wake-up for exactly one waiting task (a connection's writer, a flusher).
///
/// `notify()` before `notified()` is remembered (one permit), so a wake-up is never lost
/// between a check and the wait. Several `notify()` calls collapse into one permit.
#[derive(Default)]
pub struct Notify {
    permit: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the waiting task, or leaves a permit for the next `notified()`.
    pub fn notify(&self) {
        self.permit.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Completes when a permit is available and consumes it.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }

    /// Has the next `notify()` wake `waker`, as a waiting task's would be, for a waiter
    /// that is not a task. True, and nothing registered, if a permit is already there
    /// (it stays for the next `notified()`).
    pub fn watch(&self, waker: &Waker) -> bool {
        if self.permit.get() {
            return true;
        }
        *self.waker.borrow_mut() = Some(waker.clone());
        false
    }

    /// Forgets a registered waker.
    pub fn unwatch(&self) {
        self.waker.borrow_mut().take();
    }
}

pub struct Notified<'a> {
    notify: &'a Notify,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.permit.replace(false) {
            return Poll::Ready(());
        }
        let mut slot = self.notify.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// A level-triggered flag many tasks can wait on (shutdown, "stream ended").
/// Once raised it stays raised.
///
/// A waiter that goes away before the signal is raised (its future dropped, say the losing
/// branch of a `select!`) takes its waker out again: a waker holds its task's memory, so a
/// signal that every connection waits on must not collect them.
#[derive(Default)]
pub struct Signal {
    raised: Cell<bool>,
    waiters: RefCell<Vec<Option<Waker>>>,
    /// Free slots in `waiters`, reused before the list grows.
    free: RefCell<Vec<usize>>,
}

impl Signal {
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    pub fn raise(&self) {
        if self.raised.replace(true) {
            return;
        }
        self.free.borrow_mut().clear();
        for w in self.waiters.take().into_iter().flatten() {
            w.wake();
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// Completes once the signal is raised.
    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait {
            signal: self,
            slot: None,
        }
    }

    /// Tasks waiting right now.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().iter().filter(|w| w.is_some()).count()
    }
}

pub struct SignalWait<'a> {
    signal: &'a Signal,
    slot: Option<usize>,
}

impl Future for SignalWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.raised.get() {
            return Poll::Ready(());
        }
        let signal = self.signal;
        let mut waiters = signal.waiters.borrow_mut();
        match self.slot {
            Some(i) => match &mut waiters[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            },
            None => {
                let i = match signal.free.borrow_mut().pop() {
                    Some(i) => {
                        waiters[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        waiters.push(Some(cx.waker().clone()));
                        waiters.len() - 1
                    }
                };
                drop(waiters);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for SignalWait<'_> {
    fn drop(&mut self) {
        let Some(i) = self.slot else { return };
        if self.signal.raised.get() {
            return;
        }
        if let Some(w) = self.signal.waiters.borrow_mut().get_mut(i) {
            *w = None;
            self.signal.free.borrow_mut().push(i);
        }
    }
}

/// Gives every other ready task of this shard a turn before continuing.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        // Re-queued at the back of the run queue: the tasks already ready run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn notify_before_wait_is_not_lost() {
        let n = Notify::new();
        n.notify();
        n.notify();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut f = Box::pin(n.notified());
        assert!(f.as_mut().poll(&mut cx).is_ready());
        // The two notifies collapsed into one permit.
        let mut f = Box::pin(n.notified());
        assert!(f.as_mut().poll(&mut cx).is_pending());
        n.notify();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(f.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_dropped_waiter_leaves_no_waker_behind() {
        let s = Signal::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1000 {
            let mut w = Box::pin(s.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(s.waiting(), 0);
        assert!(s.waiters.borrow().len() <= 1, "slots are reused");
        // The waker's own count: only the test holds it.
        assert_eq!(Arc::strong_count(&count), 2);
        let mut kept = Box::pin(s.wait());
        assert!(kept.as_mut().poll(&mut cx).is_pending());
        assert_eq!(s.waiting(), 1);
        s.raise();
        assert!(kept.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn signal_wakes_every_waiter_once() {
        let s = Signal::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut a = Box::pin(s.wait());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        s.raise();
        s.raise();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(Box::pin(s.wait()).as_mut().poll(&mut cx).is_ready());
    }
}
