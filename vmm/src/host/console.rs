//! The guest console: a 16550 (vm-superio) at COM1 that the guest drives
//! with GHCI Instruction.IO. Its output is captured for the report (capped)
//! and, optionally, echoed to the VMM's stdout line by line; and how any
//! guest-controlled text is made safe for a terminal or a log
//! (`terminal_safe` for the console's lines, `one_line` for text inside
//! one of the VMM's own lines).

use std::io::Write;
use vm_superio::{Serial, Trigger};

/// Most console bytes kept for the report.
pub const CAPTURE_LIMIT: usize = 1 << 20;
/// Longest line buffered for echo before it is flushed anyway.
const LINE_LIMIT: usize = 4096;

/// The guest has no interrupt controller; the UART's interrupt goes nowhere.
#[derive(Debug)]
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// Where the UART's transmitted bytes go.
#[derive(Debug, Default)]
pub struct Capture {
    bytes: Vec<u8>,
    line: Vec<u8>,
    dropped: u64,
    echo: bool,
}

/// Characters that are not control characters but change how a line
/// reads without showing themselves: zero-width ones, bidirectional
/// overrides and isolates (which reorder what follows), line and
/// paragraph separators, the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Makes guest output safe for a terminal: invalid UTF-8 becomes U+FFFD
/// and every control character but newline and tab (C0, DEL, C1: escape
/// sequences, carriage returns, bells) and every invisible one
/// (`invisible`) is shown as `\xNN` / `\u{NN}`.
pub fn terminal_safe(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() || invisible(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Guest text inside one of the VMM's own lines (a fatal message, a
/// log line): `terminal_safe`, and newline, carriage return and tab
/// escaped too (`\n`, `\r`, `\t`), so the text can neither start a line
/// of its own (a forged `vmm: outcome ok`) nor drive the terminal.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() || invisible(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The prefix of every line the VMM itself writes to stderr.
pub const VMM_LINE_PREFIX: &str = "vmm:";

/// One console line as echoed: `terminal_safe`, and a line that would
/// read as one of the VMM's own (starting with `vmm:`, after any
/// whitespace) is marked as the guest's with a `guest: ` prefix.
pub fn echo_line(line: &[u8]) -> String {
    let safe = terminal_safe(line);
    if safe.trim_start().starts_with(VMM_LINE_PREFIX) {
        format!("guest: {safe}")
    } else {
        safe
    }
}

impl Capture {
    fn flush_line(&mut self) {
        if self.echo && !self.line.is_empty() {
            let mut out = std::io::stdout().lock();
            // Console echo is best effort: a closed stdout must not stop the TD.
            let _ = out.write_all(echo_line(&self.line).as_bytes());
            let _ = out.flush();
        }
        self.line.clear();
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if self.bytes.len() < CAPTURE_LIMIT {
                self.bytes.push(b);
            } else {
                self.dropped += 1;
            }
            if self.echo {
                self.line.push(b);
                if b == b'\n' || self.line.len() >= LINE_LIMIT {
                    self.flush_line();
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// COM1 and its captured output.
pub struct Console {
    serial: Serial<NoInterrupt, vm_superio::serial::NoEvents, Capture>,
}

impl Console {
    /// A console that echoes guest output to stdout when `echo` is set.
    pub fn new(echo: bool) -> Self {
        Console {
            serial: Serial::new(
                NoInterrupt,
                Capture {
                    echo,
                    ..Default::default()
                },
            ),
        }
    }

    /// A guest write to UART register `offset`.
    pub fn write(&mut self, offset: u8, value: u8) {
        if let Err(e) = self.serial.write(offset, value) {
            log::warn!("console: UART write to register {offset} failed: {e:?}");
        }
    }

    /// A guest read of UART register `offset`.
    pub fn read(&mut self, offset: u8) -> u8 {
        self.serial.read(offset)
    }

    /// Console bytes the capture could not keep.
    pub fn dropped(&mut self) -> u64 {
        self.serial.writer_mut().dropped
    }

    /// Everything the guest printed (lossy UTF-8), with a note if capped.
    pub fn text(&mut self) -> String {
        let cap = self.serial.writer_mut();
        cap.flush_line();
        let mut s = String::from_utf8_lossy(&cap.bytes).into_owned();
        if cap.dropped > 0 {
            s.push_str(&format!(
                "\n[console capture full: {} more bytes not kept]\n",
                cap.dropped
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::{echo_line, one_line, terminal_safe};

    #[test]
    fn guest_text_in_a_vmm_line_stays_on_that_line() {
        let forged = "boom\nvmm: outcome ok exit_code 0\r\x1b[2K\tx\\n";
        let line = one_line(forged);
        assert!(!line.contains(['\n', '\r', '\t', '\x1b']), "{line}");
        assert_eq!(
            line,
            "boom\\nvmm: outcome ok exit_code 0\\r\\x1b[2K\\tx\\\\n"
        );
        assert_eq!(one_line("\u{85}next"), "\\u{85}next");
        assert_eq!(one_line("a\u{2028}b\u{202e}c"), "a\\u{2028}b\\u{202e}c");
    }

    #[test]
    fn a_console_line_that_reads_like_the_vmms_is_marked_as_the_guests() {
        assert_eq!(
            echo_line(b"vmm: outcome ok exit_code 0\n"),
            "guest: vmm: outcome ok exit_code 0\n"
        );
        assert_eq!(echo_line(b"  vmm: x\n"), "guest:   vmm: x\n");
        assert_eq!(echo_line(b"fw: vmm: x\n"), "fw: vmm: x\n");
        // A zero-width space before it hides nothing: it is shown.
        assert_eq!(
            echo_line("\u{200b}vmm: x\n".as_bytes()),
            "\\u{200b}vmm: x\n"
        );
    }

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(terminal_safe(b"ok\tline\n"), "ok\tline\n");
        assert_eq!(
            terminal_safe(b"\x1b[2J\x1b]0;owned\x07\r\x7f"),
            "\\x1b[2J\\x1b]0;owned\\x07\\x0d\\x7f"
        );
        // C1 CSI as UTF-8, and a raw 0x9b byte (invalid UTF-8).
        assert_eq!(terminal_safe("\u{9b}31m".as_bytes()), "\\u{9b}31m");
        assert_eq!(terminal_safe(b"\x9b31m"), "\u{fffd}31m");
    }
}
