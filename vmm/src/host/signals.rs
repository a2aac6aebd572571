//! The VMM's signal policy, decided per signal (the signal table of docs/failure-modes.md
//! is this file in prose):
//!
//! - **Stop signals** (every catchable signal whose default action would
//!   end the process without a report: SIGHUP, SIGINT, SIGQUIT, SIGTERM,
//!   SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGXCPU, SIGIO, SIGPWR,
//!   SIGSTKFLT and every real-time signal): the `vmm` command installs
//!   their handler first thing, so from process start a signal stops the
//!   guest at the next check (at once if none runs yet), the report is
//!   still written with outcome `interrupted`, and the exit status is
//!   128 + the signal number. The handler only records the first signal
//!   and kicks the vCPUs of every TD that `watch`es for it through its
//!   vCPU register (`vcpu_threads`: each vCPU's `immediate_exit` set, so a KVM_RUN about to
//!   start returns at once, and each vCPU thread kicked out of a KVM_RUN
//!   in progress); the run loops do the rest. A signal ignored by whoever
//!   started us (`nohup`, a shell's background job) stays ignored, except
//!   SIGTERM.
//! - **SIGXFSZ** (a write past `ulimit -f`) is ignored, so the write fails
//!   with EFBIG and the output that could not be written is reported
//!   (exit 3) instead of the process dying mid-write.
//! - **SIGURG** is the vCPU kick (`watchdog::kick_signal`): a standard
//!   signal, so sending it never fails for want of a signal-queue slot
//!   (`ulimit -i`), unlike a real-time one. Sent from outside, it only
//!   makes a vCPU check for stops and run on.
//! - SIGPIPE stays ignored (Rust's runtime ignores it: a closed pipe is a
//!   write error); SIGCHLD, SIGWINCH and SIGCONT keep their default
//!   (nothing); SIGTSTP, SIGTTIN and SIGTTOU keep job control; SIGSEGV,
//!   SIGBUS (but see `poison_signal`), SIGILL, SIGFPE, SIGTRAP and SIGSYS are
//!   faults of the VMM itself and keep their default; SIGKILL and SIGSTOP
//!   cannot be caught.
//!
//! A library user running several TDs with the handlers installed has
//! each TD stopped by a signal (up to `MAX_WATCHED` running at once).

use crate::host::vcpu_threads::VcpuThreads;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, Ordering};

/// Most TDs a stop signal reaches at once (a slot each).
pub const MAX_WATCHED: usize = 64;

static SIGNALLED: AtomicI32 = AtomicI32::new(0);
/// The vCPU registers of the running TDs that watch for stop signals
/// (null = free): each TD's one register, its stop board's.
static BOARDS: [AtomicPtr<VcpuThreads>; MAX_WATCHED] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_WATCHED];
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Handlers running now: a `Watch` ending waits for it to drop to zero
/// after clearing its slot, so no handler still uses the board it read.
static IN_HANDLER: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_stop(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Counted before any slot is read (see `detach`).
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    stop_all(sig);
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
}

/// The handler's work: only async-signal-safe calls (atomics, byte
/// stores, pthread_kill). The first signal is the run's; later ones
/// (SIGXCPU repeats every second) only kick again.
fn stop_all(sig: libc::c_int) {
    let _ = SIGNALLED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    for board in &BOARDS {
        let board = board.load(Ordering::SeqCst);
        if !board.is_null() {
            // SAFETY: a set slot points to the vCPU register of a running
            // TD; its `Watch` clears the slot and waits for this handler
            // before the register can go. `kick` is async-signal-safe.
            unsafe { (*board).kick(true) };
        }
    }
}

/// The standard signals that stop a run (the real-time ones are added by
/// `stop_signals`).
const STANDARD_STOP_SIGNALS: [(i32, &str); 13] = [
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
];

/// Every signal that stops a run: the standard ones above and every
/// real-time signal (SIGRTMIN..=SIGRTMAX as the C library numbers them).
pub fn stop_signals() -> Vec<i32> {
    let rt = vmm_sys_util::signal::SIGRTMIN()..=vmm_sys_util::signal::SIGRTMAX();
    STANDARD_STOP_SIGNALS
        .iter()
        .map(|&(s, _)| s)
        .chain(rt)
        .collect()
}

/// True when `sig` was ignored by whoever started us (`nohup` ignores
/// SIGHUP; a shell ignores SIGINT and SIGQUIT for background jobs).
fn inherited_ignore(sig: i32) -> bool {
    // SAFETY: a zeroed sigaction is a valid out-parameter; a null new
    // action makes sigaction(2) only read the current one.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Installs the signal policy (the `vmm` command does, first thing; a
/// library user only with `TdConfig::stop_on_signals`): the stop-signal
/// handlers, SIGXFSZ ignored, the kick handler; then unblocks those
/// signals, so a signal that arrived before (pending while blocked by our
/// parent) is acted on at once. Returns why not, if a handler cannot be
/// installed. Once per process: later calls return the first's result
/// (installing again would take our own handlers for the dispositions
/// inherited from the parent).
pub fn install() -> Result<(), vmm_sys_util::errno::Error> {
    static RESULT: std::sync::OnceLock<Result<(), vmm_sys_util::errno::Error>> =
        std::sync::OnceLock::new();
    *RESULT.get_or_init(install_now)
}

/// True once `install` ran.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::SeqCst)
}

fn install_now() -> Result<(), vmm_sys_util::errno::Error> {
    crate::host::watchdog::install_kick_handler();
    // SAFETY: a zeroed sigset_t is valid storage for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: ignoring SIGXFSZ installs no handler; every write past the
    // file-size limit then fails with EFBIG, which the outputs report.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let mut first_error = None;
    for sig in stop_signals() {
        if sig != libc::SIGTERM && inherited_ignore(sig) {
            continue;
        }
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(sig, on_stop) {
            first_error.get_or_insert(e);
            continue;
        }
        // SAFETY: `set` is a valid, initialised sigset_t.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    // The vCPU kick must reach KVM_RUN whatever mask we inherited.
    // SAFETY: `set` is a valid, initialised sigset_t.
    unsafe { libc::sigaddset(&mut set, crate::host::watchdog::kick_signal()) };
    INSTALLED.store(true, Ordering::SeqCst);
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(vmm_sys_util::errno::Error::new(rc));
    }
    first_error.map_or(Ok(()), Err)
}

/// A TD's vCPU register watching for stop signals: while it lives, a stop
/// signal kicks the TD's vCPUs out of the guest (they then see
/// `pending`). Without the handlers installed, or with `MAX_WATCHED`
/// TDs watching already, it does nothing (the vCPUs still see `pending`
/// at their next exit).
pub struct Watch<'a> {
    slot: Option<usize>,
    board: PhantomData<&'a VcpuThreads>,
}

/// Starts watching for stop signals on behalf of the TD whose vCPUs
/// `board` holds (`StopBoard::threads`).
pub fn watch(board: &VcpuThreads) -> Watch<'_> {
    let mut slot = None;
    if INSTALLED.load(Ordering::SeqCst) {
        let ptr = std::ptr::from_ref(board).cast_mut();
        slot = BOARDS.iter().position(|b| {
            b.compare_exchange(
                std::ptr::null_mut(),
                ptr,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        });
        if slot.is_none() {
            log::warn!(
                "{MAX_WATCHED} TDs watch stop signals already: a signal reaches this one at its next exit"
            );
        }
    }
    Watch {
        slot,
        board: PhantomData,
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot else {
            return;
        };
        BOARDS[slot].store(std::ptr::null_mut(), Ordering::SeqCst);
        // A handler that read the slot before it was cleared finishes
        // first. (One interrupting this very thread runs to its end
        // before the loop goes on; handlers never wait.)
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

/// Forgets the signal that stopped a run (the run's report carries it).
pub fn clear() {
    if INSTALLED.load(Ordering::SeqCst) {
        SIGNALLED.store(0, Ordering::SeqCst);
    }
}

/// The stop signal received, if any (only with the handlers installed).
pub fn pending() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Name of a signal for messages and reports: `SIGTERM`, `SIGRTMIN+3`.
pub fn name(sig: i32) -> String {
    if let Some((_, n)) = STANDARD_STOP_SIGNALS.iter().find(|&&(s, _)| s == sig) {
        return (*n).to_string();
    }
    let (min, max) = (
        vmm_sys_util::signal::SIGRTMIN(),
        vmm_sys_util::signal::SIGRTMAX(),
    );
    match sig {
        s if s == libc::SIGXFSZ => "SIGXFSZ".into(),
        s if s == libc::SIGURG => "SIGURG".into(),
        s if s == min => "SIGRTMIN".into(),
        s if s > min && s <= max => format!("SIGRTMIN+{}", s - min),
        s => format!("signal {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stop_signal_has_a_name_and_none_is_the_kick_or_a_fault() {
        let all = stop_signals();
        assert!(all.len() >= STANDARD_STOP_SIGNALS.len() + 30, "{all:?}");
        for s in &all {
            assert!(name(*s).starts_with("SIG"), "{s}: {}", name(*s));
        }
        for not in [
            crate::host::watchdog::kick_signal(),
            libc::SIGXFSZ,
            libc::SIGBUS,
            libc::SIGSEGV,
            libc::SIGPIPE,
            libc::SIGCHLD,
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGTSTP,
        ] {
            assert!(!all.contains(&not), "{} must not stop a run", name(not));
        }
        assert_eq!(name(libc::SIGUSR1), "SIGUSR1");
        assert_eq!(name(vmm_sys_util::signal::SIGRTMIN() + 2), "SIGRTMIN+2");
    }
}
