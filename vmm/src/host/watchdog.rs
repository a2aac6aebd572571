//! The run timeout: a thread that, once the deadline passes, keeps kicking
//! the TD's vCPU threads out of KVM_RUN with a signal until a run loop
//! notices; and the kick itself (the signal, its handler, the send and the
//! count of sends that failed). The kick handler is process-wide and stays
//! installed: it does nothing but interrupt the system call the thread is
//! in, then hands the signal to the handler that was installed before it,
//! if there was one (a program embedding the VMM keeps its own SIGURG
//! handling, and sees a kick as one more SIGURG).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

static HANDLER: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The kick signal's action before ours: set once, before our handler is
/// installed, and only read after.
struct Previous(libc::sigaction);
// SAFETY: plain data (a handler address, flags, a mask), never written
// after it is set.
unsafe impl Sync for Previous {}
// SAFETY: as above.
unsafe impl Send for Previous {}
static PREVIOUS: OnceLock<Previous> = OnceLock::new();

extern "C" fn on_kick(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Interrupting KVM_RUN is the signal's whole work for us; a handler
    // that was there before still gets it (SIG_DFL and SIG_IGN of SIGURG
    // both mean nothing happens).
    let Some(Previous(previous)) = PREVIOUS.get() else {
        return;
    };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return;
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action asked for SA_SIGINFO, so its address
        // is such a handler; the arguments are the kernel's.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the address is a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// The signal that interrupts a vCPU thread's KVM_RUN: SIGURG, a
/// standard signal. A real-time signal needs a slot in the user's signal
/// queue (`ulimit -i`), and with none left `pthread_kill` fails with
/// EAGAIN and the vCPU runs on; a standard signal is always delivered (a
/// second one while the first is pending merges with it, which is all a
/// kick needs). Its default action is to do nothing, so one sent from
/// outside is harmless.
pub fn kick_signal() -> libc::c_int {
    libc::SIGURG
}

static KICK_FAILURES: AtomicU64 = AtomicU64::new(0);
static KICK_ERRNO: AtomicI32 = AtomicI32::new(0);

/// Sends the kick to `thread` (async-signal-safe). A failed send is
/// counted (`kick_failures`) and the caller's retries go on: the watchdog
/// kicks every 20 ms, and `immediate_exit` stops a vCPU at its next entry.
pub fn kick_thread(thread: libc::pthread_t) {
    // SAFETY: pthread_kill is async-signal-safe; callers pass a vCPU
    // thread that is alive while it is registered with them.
    let rc = unsafe { libc::pthread_kill(thread, kick_signal()) };
    if rc != 0 {
        KICK_FAILURES.fetch_add(1, Ordering::SeqCst);
        KICK_ERRNO.store(rc, Ordering::SeqCst);
    }
}

/// Kicks that could not be sent since process start, and the last error.
pub fn kick_failures() -> (u64, Option<i32>) {
    let n = KICK_FAILURES.load(Ordering::SeqCst);
    (n, (n > 0).then(|| KICK_ERRNO.load(Ordering::SeqCst)))
}

/// True when the kick signal's handler is in place (sending it is safe).
pub fn kick_installed() -> bool {
    INSTALLED.load(Ordering::SeqCst)
}

/// Installs the handler of the kick signal, once per process (see the
/// module's comment: it chains to the one it replaces).
pub fn install_kick_handler() {
    HANDLER.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid out-parameter; a null new
        // action only reads the current one.
        let previous = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(kick_signal(), std::ptr::null(), &mut old);
            old
        };
        let _ = PREVIOUS.set(Previous(previous));
        match vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
            Ok(()) => INSTALLED.store(true, Ordering::SeqCst),
            Err(e) => log::error!(
                "cannot install the vCPU kick signal handler ({e}): timeouts and stop signals are only seen at the next vCPU exit"
            ),
        }
    });
}

/// Armed for one run; disarmed on drop.
pub struct Watchdog {
    fired: Arc<AtomicBool>,
    /// Also checked directly, in case the thread could not start.
    deadline: std::time::Instant,
    cancel: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a timeout of `after`; once it passes, `kick` is called every
    /// 20 ms (it kicks the vCPU threads) until the watchdog is dropped.
    pub fn arm(after: Duration, kick: impl Fn() + Send + 'static) -> Self {
        install_kick_handler();
        let fired = Arc::new(AtomicBool::new(false));
        let (cancel, cancelled) = channel::<()>();
        let flag = fired.clone();
        let deadline = std::time::Instant::now() + after;
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                if cancelled.recv_timeout(after) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                flag.store(true, Ordering::SeqCst);
                while INSTALLED.load(Ordering::SeqCst) {
                    kick();
                    if cancelled.recv_timeout(Duration::from_millis(20))
                        != Err(RecvTimeoutError::Timeout)
                    {
                        return;
                    }
                }
            });
        let thread = spawned
            .map_err(|e| {
                log::error!(
                    "cannot start the timeout thread ({e}): the timeout is only seen at vCPU exits"
                )
            })
            .ok();
        Watchdog {
            fired,
            deadline,
            cancel: Some(cancel),
            thread,
        }
    }

    /// True once the deadline has passed.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst) || std::time::Instant::now() >= self.deadline
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
