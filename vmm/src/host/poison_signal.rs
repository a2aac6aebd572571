//! SIGBUS from a poisoned guest page (`--pending uffd-poison`): in the
//! pvm-native profile a guest access to a poisoned page makes `KVM_RUN`
//! return EINTR and sends the vCPU thread a SIGBUS (`BUS_MCEERR_AR`) with
//! the page's host address. The handler records that address for the
//! thread's run loop, which turns it into the GPA and stops the TD. A
//! SIGBUS anywhere else (outside KVM_RUN, or of another kind) is not ours:
//! it goes to the handler that was there before (a program embedding the
//! VMM keeps its own), or, if there was none, takes the default action.

use std::cell::Cell;
use std::sync::{Once, OnceLock};

thread_local! {
    /// This thread is inside KVM_RUN.
    static IN_RUN: Cell<bool> = const { Cell::new(false) };
    /// Host address of the poisoned page the last KVM_RUN hit (0: none).
    static HIT: Cell<u64> = const { Cell::new(0) };
}

static HANDLER: Once = Once::new();

/// The SIGBUS action in place before ours: set once, before our handler is
/// installed, and only read after.
struct Previous(libc::sigaction);
// SAFETY: plain data (a handler address, flags, a mask), never written
// after it is set.
unsafe impl Sync for Previous {}
// SAFETY: as above.
unsafe impl Send for Previous {}
static PREVIOUS: OnceLock<Previous> = OnceLock::new();

/// Hands a SIGBUS that is not ours to `previous`: its handler if it had
/// one (with the siginfo if it asked for it), else the default action
/// (SIG_DFL, or SIG_IGN: a fault cannot be ignored, so both mean the
/// default) restored and the signal raised again.
///
/// # Safety
///
/// `info` and `ctx` must be what the kernel passed to the running signal
/// handler for `sig`; only async-signal-safe work may follow.
unsafe fn forward(
    previous: &libc::sigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    let handler = previous.sa_sigaction;
    if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
        if previous.sa_flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the previous action asked for SA_SIGINFO, so its
            // address is such a handler; the arguments are the kernel's.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(handler) };
            f(sig, info, ctx);
        } else {
            // SAFETY: without SA_SIGINFO the address is a plain handler.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
            f(sig);
        }
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

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Only async-signal-safe work: const thread-locals without destructors
    // (plain TLS reads and writes), sigaction and raise.
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as u64) };
    if code == libc::BUS_MCEERR_AR && IN_RUN.with(Cell::get) {
        HIT.with(|h| h.set(addr.max(1)));
        return;
    }
    // SAFETY: zeroed is SIG_DFL with no flags, a valid action.
    let default = Previous(unsafe { std::mem::zeroed() });
    let previous = PREVIOUS.get().unwrap_or(&default);
    // SAFETY: `info` and `ctx` are this handler's own arguments.
    unsafe { forward(&previous.0, sig, info, ctx) };
}

/// Installs the SIGBUS handler (once per process). Returns why not.
pub fn install() -> Result<(), std::io::Error> {
    let mut result = Ok(());
    HANDLER.call_once(|| {
        // The action before ours, kept for what is not ours.
        // SAFETY: a zeroed sigaction is a valid out-parameter; a null new
        // action only reads the current one.
        let previous = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old);
            old
        };
        let _ = PREVIOUS.set(Previous(previous));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI32, Ordering};

    static SEEN: AtomicI32 = AtomicI32::new(0);

    extern "C" fn embedder(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the test passes a valid siginfo.
        let code = unsafe { (*info).si_code };
        SEEN.store(sig * 1000 + code, Ordering::SeqCst);
    }

    #[test]
    fn a_sigbus_that_is_not_ours_reaches_the_handler_that_was_there() {
        // SAFETY: zeroed sigaction and siginfo are valid plain data.
        let (mut previous, mut info): (libc::sigaction, libc::siginfo_t) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        previous.sa_sigaction = embedder as *const () as usize;
        previous.sa_flags = libc::SA_SIGINFO;
        info.si_code = libc::BUS_ADRERR;
        // SAFETY: the arguments are valid for the handler, which only
        // stores to an atomic.
        unsafe { forward(&previous, libc::SIGBUS, &mut info, std::ptr::null_mut()) };
        assert_eq!(
            SEEN.load(Ordering::SeqCst),
            libc::SIGBUS * 1000 + libc::BUS_ADRERR
        );
    }
}
