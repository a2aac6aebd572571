//! Fatal errors: the message goes into a page-aligned buffer whose GPA is
//! handed to the host with GHCI ReportFatalError; the host stops the TD.
//! The panic handler and the exception handlers end here. Identity mapping
//! (VA = GPA) is assumed, as in every guest of this project.

use core::fmt::{self, Write};

pub use abi::vmcall::fatal_code as code;

#[repr(C, align(4096))]
struct MessagePage([u8; 4096]);

static mut MESSAGE: MessagePage = MessagePage([0; 4096]);

struct PageWriter<'a> {
    buf: &'a mut [u8; 4096],
    len: usize,
}

impl Write for PageWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // Keep the last byte for the terminating NUL.
            if self.len < self.buf.len() - 1 {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// Prints the message, reports it to the host and never returns.
pub fn fatal(code: u32, args: fmt::Arguments<'_>) -> ! {
    fatal_at(code, None, args)
}

/// `fatal` for a fault at `fault_rip`, which the host reports as the
/// stop's RIP.
pub fn fatal_at(code: u32, fault_rip: Option<u64>, args: fmt::Arguments<'_>) -> ! {
    crate::console::print(format_args!("FATAL: {}\n", args));
    // SAFETY: single vCPU, and `fatal` never returns, so this is the only
    // live reference to the message page for the rest of the TD's life.
    let page = unsafe { &mut *core::ptr::addr_of_mut!(MESSAGE) };
    let mut w = PageWriter {
        buf: &mut page.0,
        len: 0,
    };
    let _ = w.write_fmt(args);
    let len = w.len;
    page.0[len] = 0;
    // Identity map: the buffer's address is its GPA.
    crate::tdcall::report_fatal_error(code, page.0.as_ptr() as u64, fault_rip);
    crate::tdcall::shutdown(255)
}

#[macro_export]
macro_rules! fatal {
    ($code:expr, $($arg:tt)*) => { $crate::fatal::fatal($code, format_args!($($arg)*)) };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fatal(code::PANIC, format_args!("panic: {info}"))
}
