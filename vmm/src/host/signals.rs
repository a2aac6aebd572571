//! Stop signals (SIGINT, SIGTERM, SIGHUP from a closed terminal, SIGQUIT):
//! the `vmm` command installs their handler first thing, so from process
//! start a signal stops the guest at the next check (at once if none runs
//! yet), the report is still written, and the exit status is 128 + the
//! signal number (130, 143, 129, 131). The handler
//! only records the signal, sets every vCPU's `immediate_exit` (so a
//! KVM_RUN about to start returns at once) and kicks each vCPU thread out of
//! a KVM_RUN in progress; the run loops do the rest. One TD per process: a
//! library user running several TDs at once does not install the handlers,
//! and then `attach`/`detach` do nothing.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};

/// Most vCPUs the handler tracks (`vmm run --cpus` allows at most this).
pub const MAX_VCPUS: usize = 64;

static SIGNALLED: AtomicI32 = AtomicI32::new(0);
/// Per vCPU index: its thread (0 = none) and its `immediate_exit` byte.
static VCPU_THREADS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
static IMMEDIATE_EXITS: [AtomicPtr<u8>; MAX_VCPUS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_VCPUS];
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only async-signal-safe work: atomics, byte stores, pthread_kill.
    SIGNALLED.store(sig, Ordering::SeqCst);
    for exit in &IMMEDIATE_EXITS {
        let exit = exit.load(Ordering::SeqCst);
        if !exit.is_null() {
            // SAFETY: the pointer is the `immediate_exit` byte of a running
            // vCPU's kvm_run mapping; `detach` clears it before the vCPU goes.
            unsafe { exit.write_volatile(1) };
        }
    }
    // Without a kick handler the kick's default action would kill us;
    // `immediate_exit` and the next exit still stop the run.
    if !crate::host::watchdog::kick_installed() {
        return;
    }
    // SAFETY: pthread_self is async-signal-safe.
    let me = unsafe { libc::pthread_self() };
    for thread in &VCPU_THREADS {
        let vcpu = thread.load(Ordering::SeqCst) as libc::pthread_t;
        if vcpu != 0 && vcpu != me {
            // SAFETY: pthread_kill is async-signal-safe; the vCPU thread is
            // alive while its slot is set (cleared by `detach`).
            unsafe { libc::pthread_kill(vcpu, crate::host::watchdog::kick_signal()) };
        }
    }
}

/// The signals that stop a run.
pub const STOP_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

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

/// Installs the stop-signal handlers (the `vmm` command does, first
/// thing; a library user keeps its own) and unblocks those signals, so a
/// signal that arrived before (pending while blocked by our parent) is
/// acted on at once. SIGHUP, SIGINT and SIGQUIT stay ignored if they were
/// ignored when we started. Returns why not, if they cannot be installed.
pub fn install() -> Result<(), vmm_sys_util::errno::Error> {
    crate::host::watchdog::install_kick_handler();
    // SAFETY: a zeroed sigset_t is valid storage for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in STOP_SIGNALS {
        if sig != libc::SIGTERM && inherited_ignore(sig) {
            continue;
        }
        vmm_sys_util::signal::register_signal_handler(sig, on_stop)?;
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
    Ok(())
}

/// Tells the handler which thread runs vCPU `index` and where its
/// `immediate_exit` byte is. Valid until `detach(index)`.
pub fn attach(index: u32, immediate_exit: *mut u8) {
    let i = index as usize;
    if !INSTALLED.load(Ordering::SeqCst) || i >= MAX_VCPUS {
        return;
    }
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    IMMEDIATE_EXITS[i].store(immediate_exit, Ordering::SeqCst);
    VCPU_THREADS[i].store(me as u64, Ordering::SeqCst);
    // A signal that came before we were attached still stops this vCPU
    // before it runs (the run loop checks `pending` first).
}

/// Forgets vCPU `index` (before it is dropped).
pub fn detach(index: u32) {
    let i = index as usize;
    if !INSTALLED.load(Ordering::SeqCst) || i >= MAX_VCPUS {
        return;
    }
    VCPU_THREADS[i].store(0, Ordering::SeqCst);
    IMMEDIATE_EXITS[i].store(std::ptr::null_mut(), Ordering::SeqCst);
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

/// Name of a stop signal for messages and reports.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => "signal",
    }
}
