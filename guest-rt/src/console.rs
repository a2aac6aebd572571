//! Console output: bytes to COM1's transmit register through GHCI
//! Instruction.IO (a TD has no direct port access), and `println!`.

use abi::vmcall::COM1_BASE;
use core::fmt::{self, Write};

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

#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => {{
        $crate::console::print(format_args!($($arg)*));
        $crate::console::print(format_args!("\n"));
    }};
}
