//! Console output: bytes to COM1's transmit register through GHCI
//! Instruction.IO (a TD has no direct port access), and `println!`, whose
//! lines from several CPUs never interleave.

use abi::vmcall::COM1_BASE;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

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
    let _ = Console.write_fmt(args);
    let _ = Console.write_str("\n");
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
