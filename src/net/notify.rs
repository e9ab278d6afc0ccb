//! A single-task wake-up flag, for tasks of one core (nothing here is `Send`).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A single-task wake-up flag: `notify` sets it and wakes the waiter, `notified` waits for it.
#[derive(Default)]
pub(crate) struct Notify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// Sets the flag and wakes the waiting task, if any.
    pub(crate) fn notify(&self) {
        self.flag.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits until the flag is set, and clears it.
    pub(crate) async fn notified(&self) {
        poll_fn(|cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}
