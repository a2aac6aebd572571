//! `SpinLock<T>`: mutual exclusion between the vCPUs of a guest with no
//! interrupts and no scheduler (Linux's `spin_lock_irqsave` in this
//! world), with the time spent waiting measured in TSC ticks, and
//! `rdtsc`.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the time-stamp counter (not disabled by the
    // VMM: CR4.TSD is clear in both profiles).
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// A test-and-test-and-set spin lock around a `T`.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out one `&mut T` at a time (the guard), so a `T`
// that may be sent between vCPUs may be shared through it.
unsafe impl<T: Send> Sync for SpinLock<T> {}

/// Exclusive access to the value until dropped.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        self.lock_timed().0
    }

    /// Takes the lock; also returns the TSC ticks spent waiting for it
    /// (0 when it was free).
    pub fn lock_timed(&self) -> (SpinGuard<'_, T>, u64) {
        if self.try_take() {
            return (SpinGuard { lock: self }, 0);
        }
        let started = rdtsc();
        loop {
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
            if self.try_take() {
                return (SpinGuard { lock: self }, rdtsc().wrapping_sub(started));
            }
        }
    }

    fn try_take(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Runs `f` with the lock held.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while `locked` is held by us.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes this the only
        // reference handed out by this guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
