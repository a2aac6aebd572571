//! Console output: bytes to COM1's transmit register through GHCI
//! Instruction.IO (a TD has no direct port access; `print`, which the
//! fatal path uses), and `println!`, which sends each line in one vendor
//! console write and whose lines from several CPUs never interleave. Once
//! a kernel has shared memory (`use_shared_buffer`), a line goes through
//! it, as a TD's I/O goes through its bounce buffers: the host reads
//! only memory the guest shared.

use abi::vmcall::{emu, COM1_BASE, VENDOR_EMU};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The shared console buffer: its address (identity-mapped, shared) and
/// its GPA with the shared bit; 0 when there is none.
static SHARED_VA: AtomicU64 = AtomicU64::new(0);
static SHARED_GPA: AtomicU64 = AtomicU64::new(0);

/// From now on lines go through the `CONSOLE_WRITE_MAX` bytes of shared
/// memory at `va`, whose GPA with the shared bit is `shared_gpa`; `(0, 0)`
/// goes back to private lines (before the memory is made private again).
pub fn use_shared_buffer(va: u64, shared_gpa: u64) {
    SHARED_VA.store(0, Ordering::SeqCst);
    SHARED_GPA.store(shared_gpa, Ordering::SeqCst);
    SHARED_VA.store(va, Ordering::SeqCst);
}

/// Writes text to COM1.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            crate::tdcall::io_write8(COM1_BASE, b);
        }
        Ok(())
    }
}

/// Prints formatted text to the console.
pub fn print(args: fmt::Arguments<'_>) {
    let _ = Console.write_fmt(args);
}

/// Bytes a line is sent in (one vendor console write each).
const LINE_BYTES: usize = abi::to_usize(emu::CONSOLE_WRITE_MAX);

/// A line being formatted: sent to the host in chunks of `LINE_BYTES`
/// with one `emu::CONSOLE_WRITE` each (one TD exit instead of one per
/// byte); byte by byte through COM1 if the host refuses the call.
struct Line {
    buf: [u8; LINE_BYTES],
    len: usize,
    /// This CPU holds the console lock.
    owned: bool,
}

impl Line {
    /// Sends the line: through the shared buffer when there is one and
    /// this CPU holds the console (`owned`), else from where it is.
    fn flush(&mut self, owned: bool) {
        if self.len == 0 {
            return;
        }
        let bytes = &self.buf[..self.len];
        let shared = SHARED_VA.load(Ordering::SeqCst);
        let gpa = if owned && shared != 0 {
            // SAFETY: `shared` is the kernel's shared console buffer of
            // CONSOLE_WRITE_MAX bytes, used only under the console lock
            // (`owned`); `bytes` is at most that long.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), shared as *mut u8, bytes.len())
            };
            SHARED_GPA.load(Ordering::SeqCst)
        } else {
            bytes.as_ptr() as u64
        };
        let r10 = crate::tdcall::vmcall(
            VENDOR_EMU,
            emu::CONSOLE_WRITE,
            gpa,
            bytes.len() as u64,
            0,
            0,
        )
        .r10;
        if r10 != 0 {
            for &b in bytes {
                crate::tdcall::io_write8(COM1_BASE, b);
            }
        }
        self.len = 0;
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == LINE_BYTES {
                self.flush(self.owned);
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Held while a CPU prints a line.
static LINE: AtomicBool = AtomicBool::new(false);

/// How long a CPU waits for another's line before printing anyway (a CPU
/// that stopped mid-line, or a fault handler interrupting its own CPU's
/// line, must not hang the console).
const LINE_WAIT_SPINS: u32 = 1 << 22;

/// Prints one line, whole: another CPU's line is finished first.
pub fn print_line(args: fmt::Arguments<'_>) {
    let mut spins = 0;
    let owned = loop {
        if LINE
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            break true;
        }
        spins += 1;
        if spins >= LINE_WAIT_SPINS {
            break false;
        }
        core::hint::spin_loop();
    };
    let mut line = Line {
        buf: [0; LINE_BYTES],
        len: 0,
        owned,
    };
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    line.flush(owned);
    if owned {
        LINE.store(false, Ordering::Release);
    }
}

#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}
