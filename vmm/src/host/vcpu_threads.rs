//! The register of one TD's vCPU threads and their `kvm_run.immediate_exit`
//! bytes, and the kick that gets them out of KVM_RUN: lock-free (atomics,
//! and a count of kicks a leaving vCPU waits for), so both the stop board
//! and the stop-signal handler use it, and it is the only such register.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// A vCPU thread: its id (0 when none) and its `immediate_exit` byte
/// (null when none).
struct Slot {
    thread: AtomicU64,
    immediate_exit: AtomicPtr<u8>,
}

/// The vCPU threads of one TD.
pub struct VcpuThreads {
    slots: Box<[Slot]>,
    /// Kicks reading `slots` now: `detach` waits for none after clearing
    /// its slot, so no kick writes a byte that has gone.
    kickers: AtomicU32,
}

impl VcpuThreads {
    /// A register for `vcpus` vCPUs, none attached.
    pub fn new(vcpus: u32) -> Self {
        VcpuThreads {
            slots: (0..vcpus)
                .map(|_| Slot {
                    thread: AtomicU64::new(0),
                    immediate_exit: AtomicPtr::new(std::ptr::null_mut()),
                })
                .collect(),
            kickers: AtomicU32::new(0),
        }
    }

    /// Registers the calling thread as vCPU `index`, whose kvm_run has
    /// `immediate_exit` at that address; valid until `detach(index)`.
    pub fn attach(&self, index: u32, immediate_exit: *mut u8) {
        if let Some(slot) = self.slots.get(index as usize) {
            // SAFETY: pthread_self has no preconditions.
            let thread = unsafe { libc::pthread_self() };
            slot.immediate_exit.store(immediate_exit, Ordering::SeqCst);
            slot.thread.store(thread as u64, Ordering::SeqCst);
        }
    }

    /// Unregisters vCPU `index` before its kvm_run mapping goes away: its
    /// slot is cleared, then every kick that may have read it finishes.
    /// (A kick from a signal handler interrupting this very thread ends
    /// before the loop goes on; kicks never wait, so this cannot
    /// deadlock.)
    pub fn detach(&self, index: u32) {
        if let Some(slot) = self.slots.get(index as usize) {
            slot.thread.store(0, Ordering::SeqCst);
            slot.immediate_exit
                .store(std::ptr::null_mut(), Ordering::SeqCst);
            while self.kickers.load(Ordering::SeqCst) != 0 {
                std::hint::spin_loop();
            }
        }
    }

    /// Makes every attached vCPU leave KVM_RUN: `immediate` also sets its
    /// `immediate_exit` (a KVM_RUN about to start returns at once); the
    /// kick signal interrupts one in progress. Async-signal-safe (atomics,
    /// a byte store, `pthread_kill`): the stop-signal handler calls it.
    pub fn kick(&self, immediate: bool) {
        let signal = crate::host::watchdog::kick_installed();
        if !signal && !immediate {
            return;
        }
        // Counted before any slot is read (see `detach`).
        self.kickers.fetch_add(1, Ordering::SeqCst);
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        for slot in self.slots.iter() {
            if immediate {
                let exit = slot.immediate_exit.load(Ordering::SeqCst);
                if !exit.is_null() {
                    // SAFETY: a set pointer is the `immediate_exit` byte of
                    // an attached vCPU's live kvm_run mapping: `detach`
                    // clears it and waits for this kick before the vCPU
                    // goes. KVM documents writing it from another thread.
                    unsafe { exit.write_volatile(1) };
                }
            }
            let thread = slot.thread.load(Ordering::SeqCst);
            if signal && thread != 0 && thread != me {
                // The thread is alive: it detaches, and waits for this
                // kick, before it returns.
                crate::host::watchdog::kick_thread(thread as libc::pthread_t);
            }
        }
        self.kickers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_sets_every_attached_byte_and_skips_detached_ones() {
        let threads = VcpuThreads::new(3);
        let mut bytes = [0u8; 3];
        threads.attach(0, &mut bytes[0]);
        threads.attach(2, &mut bytes[2]);
        threads.attach(7, &mut bytes[1]); // no such vCPU: ignored
        threads.kick(true);
        threads.detach(0);
        threads.detach(2);
        assert_eq!(bytes, [1, 0, 1]);
        bytes = [0; 3];
        threads.kick(true);
        assert_eq!(bytes, [0; 3], "detached bytes are never written");
    }
}
