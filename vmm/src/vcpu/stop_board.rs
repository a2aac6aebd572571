//! How the vCPUs of one TD stop together. The first vCPU to stop (a guest
//! shutdown, a fatal error, the watchdog, a stop signal) posts its `Stop`
//! here with its index; the board then kicks every other vCPU out of
//! KVM_RUN (`immediate_exit` plus the kick signal), and each of them sees
//! `stopped()` before it runs the guest again. vCPUs idling in the
//! emulated HLT wait on the board, so a stop wakes them at once.
//!
//! The board's register of vCPU threads and their `immediate_exit` bytes
//! (`host::vcpu_threads`) is the only one: the stop-signal handler kicks
//! through it too (`host::signals::watch`).

use crate::host::vcpu_threads::VcpuThreads;
use crate::stop::Stop;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The stop state shared by the vCPUs of one TD.
pub struct StopBoard {
    stopped: AtomicBool,
    first: Mutex<Option<(u32, Stop)>>,
    /// The vCPU threads, to kick out of KVM_RUN.
    threads: VcpuThreads,
    idle: Condvar,
    /// A memslot merge wants every vCPU out of the guest.
    pausing: AtomicBool,
    /// vCPUs inside KVM_RUN (or about to enter it).
    in_guest: AtomicU32,
    /// IPIs not yet taken, a bit per vCPU (at most 64): a HLT with its bit
    /// set returns at once, as a pending interrupt ends HLT.
    wakes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StopBoard {
    /// A board for `vcpus` vCPUs, none stopped.
    pub fn new(vcpus: u32) -> Self {
        StopBoard {
            stopped: AtomicBool::new(false),
            first: Mutex::new(None),
            threads: VcpuThreads::new(vcpus),
            idle: Condvar::new(),
            pausing: AtomicBool::new(false),
            in_guest: AtomicU32::new(0),
            wakes: AtomicU64::new(0),
        }
    }

    /// Registers the calling thread as vCPU `index`, whose kvm_run has
    /// `immediate_exit` at that address; valid until `detach(index)`.
    pub fn attach(&self, index: u32, immediate_exit: *mut u8) {
        self.threads.attach(index, immediate_exit);
    }

    /// Unregisters vCPU `index` before its kvm_run mapping goes away.
    pub fn detach(&self, index: u32) {
        self.threads.detach(index);
    }

    /// The vCPU threads (the stop-signal handler kicks them too).
    pub fn threads(&self) -> &VcpuThreads {
        &self.threads
    }

    /// True once any vCPU stopped the TD.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// vCPU `index` stopped the TD with `stop`: the first stop posted is
    /// the TD's; every vCPU is kicked and idle ones are woken.
    pub fn stop(&self, index: u32, stop: Stop) {
        {
            let mut first = lock(&self.first);
            if first.is_none() {
                *first = Some((index, stop));
            }
            self.stopped.store(true, Ordering::SeqCst);
        }
        self.kick(true);
        self.idle.notify_all();
    }

    /// Makes every attached vCPU leave KVM_RUN (the watchdog's kick, and
    /// a stop's, which also sets `immediate_exit` so a vCPU about to enter
    /// KVM_RUN returns at once).
    pub fn kick(&self, immediate: bool) {
        self.threads.kick(immediate);
    }

    /// The emulated HLT of vCPU `index`: parks it for at most `max`, until
    /// an IPI reaches it (one sent before the HLT counts: it was pending),
    /// or until the TD stops.
    pub fn idle(&self, index: u32, max: Duration) {
        let bit = 1u64 << (index % 64);
        let first = lock(&self.first);
        if self.stopped() || self.wakes.fetch_and(!bit, Ordering::SeqCst) & bit != 0 {
            return;
        }
        // `wake` sets the bit and notifies with `first` held, so a wake
        // after the check above is seen by the predicate, never lost.
        let _ = self.idle.wait_timeout_while(first, max, |_| {
            !self.stopped() && self.wakes.load(Ordering::SeqCst) & bit == 0
        });
        self.wakes.fetch_and(!bit, Ordering::SeqCst);
    }

    /// An IPI to the vCPUs in `targets` (a bit per index): ends their HLT,
    /// or the next one if they are running.
    pub fn wake(&self, targets: u64) {
        if targets == 0 {
            return;
        }
        self.wakes.fetch_or(targets, Ordering::SeqCst);
        let _first = lock(&self.first);
        self.idle.notify_all();
    }

    /// Called by a vCPU before KVM_RUN, with its `immediate_exit` already
    /// cleared: waits while a merge has the vCPUs paused, then counts the
    /// vCPU in. Pair with `leave_guest`.
    pub fn enter_guest(&self) {
        loop {
            while self.pausing.load(Ordering::SeqCst) && !self.stopped() {
                std::thread::yield_now();
            }
            self.in_guest.fetch_add(1, Ordering::SeqCst);
            // Dekker with `pause_guests`: either it sees us counted, or we
            // see it pausing (and its immediate_exit store follows our
            // clear, so KVM_RUN would return at once anyway).
            if !self.pausing.load(Ordering::SeqCst) || self.stopped() {
                return;
            }
            self.in_guest.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Called by a vCPU when KVM_RUN returned.
    pub fn leave_guest(&self) {
        self.in_guest.fetch_sub(1, Ordering::SeqCst);
    }

    /// Gets every other vCPU out of the guest and keeps it out until
    /// `resume_guests` (the caller, a vCPU thread handling an exit, is
    /// not in the guest itself).
    pub fn pause_guests(&self) {
        self.pausing.store(true, Ordering::SeqCst);
        self.kick(true);
        while self.in_guest.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Lets the vCPUs run the guest again.
    pub fn resume_guests(&self) {
        self.pausing.store(false, Ordering::SeqCst);
    }

    /// The TD's stop and the vCPU that posted it.
    pub fn take(&self) -> Option<(u32, Stop)> {
        lock(&self.first).take()
    }
}

impl crate::memory::memslots::GuestPause for StopBoard {
    fn pause_guests(&self) {
        StopBoard::pause_guests(self);
    }

    fn resume_guests(&self) {
        StopBoard::resume_guests(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::report::Outcome;

    #[test]
    fn the_first_stop_wins_and_names_its_vcpu() {
        let board = StopBoard::new(3);
        assert!(!board.stopped());
        board.stop(2, Stop::error("first".into(), None));
        board.stop(0, Stop::shutdown(0));
        assert!(board.stopped());
        let (index, stop) = board.take().unwrap();
        assert_eq!(index, 2);
        assert_eq!(stop.outcome, Outcome::Error);
    }

    #[test]
    fn a_stop_sets_immediate_exit_of_every_attached_vcpu_and_wakes_idlers() {
        let board = std::sync::Arc::new(StopBoard::new(2));
        let mut flags = [0u8; 2];
        board.attach(0, &mut flags[0]);
        board.attach(1, &mut flags[1]);
        let b = board.clone();
        let idler = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            b.idle(0, Duration::from_secs(30));
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        board.stop(1, Stop::shutdown(0));
        let waited = idler.join().unwrap();
        assert!(
            waited < Duration::from_secs(30),
            "the idle vCPU was not woken"
        );
        board.detach(0);
        board.detach(1);
        assert_eq!(flags, [1, 1]);
    }

    #[test]
    fn an_ipi_ends_the_targets_hlt_and_a_pending_one_the_next() {
        let board = std::sync::Arc::new(StopBoard::new(3));
        let b = board.clone();
        let idler = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            b.idle(2, Duration::from_secs(30));
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        // An IPI to another vCPU does not wake vCPU 2.
        board.wake(1 << 1);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!idler.is_finished(), "an IPI to vCPU 1 woke vCPU 2");
        board.wake(1 << 2);
        assert!(idler.join().unwrap() < Duration::from_secs(30));
        // vCPU 1's IPI stayed pending: its next HLT returns at once, and
        // only once.
        let t = std::time::Instant::now();
        board.idle(1, Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(30));
        let t = std::time::Instant::now();
        board.idle(1, Duration::from_millis(20));
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "the IPI was taken twice"
        );
    }
}
