//! `Global<T>`: mutable global state for a single-vCPU guest with no
//! interrupts, with re-entrancy caught at run time instead of assumed.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A global that hands out one `&mut T` at a time.
pub struct Global<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the guests run on one vCPU without interrupts, and `with` refuses
// a second concurrent borrow, so `&mut T` is never aliased.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub const fn new(value: T) -> Self {
        Global {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with exclusive access; panics on re-entry.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        assert!(
            !self.busy.swap(true, Ordering::Acquire),
            "re-entrant use of a guest global"
        );
        // SAFETY: `busy` was false and is now true, so no other `&mut T`
        // exists until it is cleared below.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        r
    }
}
