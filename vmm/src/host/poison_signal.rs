//! SIGBUS from a poisoned guest page (`--pending uffd-poison`): in the
//! pvm-native profile a guest access to a poisoned page makes `KVM_RUN`
//! return EINTR and sends the vCPU thread a SIGBUS (`BUS_MCEERR_AR`) with
//! the page's host address. The handler records that address for the
//! thread's run loop, which turns it into the GPA and stops the TD. A
//! SIGBUS anywhere else (outside KVM_RUN, or of another kind) is a real
//! fault: the handler restores the default action and re-raises it.

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    /// This thread is inside KVM_RUN.
    static IN_RUN: Cell<bool> = const { Cell::new(false) };
    /// Host address of the poisoned page the last KVM_RUN hit (0: none).
    static HIT: Cell<u64> = const { Cell::new(0) };
}

static HANDLER: Once = Once::new();

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only async-signal-safe work: const thread-locals without destructors
    // (plain TLS reads and writes), sigaction and raise.
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as u64) };
    if code == libc::BUS_MCEERR_AR && IN_RUN.with(Cell::get) {
        HIT.with(|h| h.set(addr.max(1)));
        return;
    }
    // SAFETY: restoring the default action of this signal and raising it
    // again are async-signal-safe; a zeroed sigaction with SIG_DFL is a
    // valid argument.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
        libc::raise(sig);
    }
}

/// Installs the SIGBUS handler (once per process). Returns why not.
pub fn install() -> Result<(), std::io::Error> {
    let mut result = Ok(());
    HANDLER.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler only does
        // async-signal-safe work (see `on_sigbus`).
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigbus as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            result = Err(std::io::Error::last_os_error());
        }
    });
    result
}

/// Runs `run` (one KVM_RUN) with the handler armed for this thread;
/// returns its result and the host address of the poisoned page it hit.
pub fn around_run<T>(run: impl FnOnce() -> T) -> (T, Option<u64>) {
    IN_RUN.with(|r| r.set(true));
    let result = run();
    IN_RUN.with(|r| r.set(false));
    let hit = HIT.with(|h| h.replace(0));
    (result, (hit != 0).then_some(hit))
}
