//! `vmm run` as a process, for the tests that try it as a hostile user or
//! guest would: bounded waits (the bugs they guard against are hangs),
//! resource limits set in the child, report and stderr readers, and tiny
//! hand-assembled firmware images that do what no guest of ours would.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `vmm` binary under test: `default` (the one cargo built), or the
/// one `VMM_UNDER_TEST` names (to show which tests an older build fails).
pub fn vmm_binary(default: &str) -> String {
    std::env::var("VMM_UNDER_TEST").unwrap_or_else(|_| default.to_string())
}

/// Waits for `child` at most `limit`; a child still running then is
/// killed and the test fails (the bug these tests guard against is a
/// hang, so they must not hang themselves).
pub fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the VMM was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr collected) for at most
/// `limit`.
pub fn run_within(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the vmm");
    wait_bounded(child, limit, what)
}

/// `run_within` a minute.
pub fn run_bounded(cmd: &mut Command, what: &str) -> Output {
    run_within(cmd, Duration::from_secs(60), what)
}

/// The child's stderr as text.
pub fn err_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON report at `path`.
pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading report {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("report is not JSON ({e}): {text}"))
}

/// The run was refused before any guest ran (exit 2), with every needle
/// in its stderr.
pub fn expect_refused(o: &Output, needles: &[&str]) {
    let err = err_text(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    assert!(
        !err.contains("fw:") && !String::from_utf8_lossy(&o.stdout).contains("fw:"),
        "no guest may run: {err}"
    );
}

/// Sets soft and hard limit of `resource` in the child before it runs.
pub fn with_rlimit(cmd: &mut Command, resource: libc::__rlimit_resource_t, soft: u64, hard: u64) {
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing
    // else.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(resource, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// x86-64 machine code for hand-made guests, one instruction at a time.
#[derive(Default)]
pub struct Code(pub Vec<u8>);

impl Code {
    /// `xor eax, eax`: RAX = 0 (TDG.VP.VMCALL's leaf).
    pub fn zero_rax(&mut self) -> &mut Self {
        self.0.extend_from_slice(&[0x31, 0xc0]);
        self
    }

    /// `mov r32, imm32` (zero-extended into the 64-bit register) for
    /// RCX (1), R10 (10) .. R13 (13).
    pub fn mov32(&mut self, reg: u8, imm: u32) -> &mut Self {
        if reg >= 8 {
            self.0.push(0x41);
        }
        self.0.push(0xb8 + (reg & 7));
        self.0.extend_from_slice(&imm.to_le_bytes());
        self
    }

    /// `movabs r64, imm64` for any general-purpose register number.
    pub fn mov64(&mut self, reg: u8, imm: u64) -> &mut Self {
        self.0.push(if reg >= 8 { 0x49 } else { 0x48 });
        self.0.push(0xb8 + (reg & 7));
        self.0.extend_from_slice(&imm.to_le_bytes());
        self
    }

    /// `out imm8, al`: the doorbell (what the loader patches a TDCALL to).
    pub fn out(&mut self, port: u8) -> &mut Self {
        self.0.extend_from_slice(&[0xe6, port]);
        self
    }

    /// The TDCALL instruction (`66 0F 01 CC`), as a guest writes it; the
    /// loader patches it to the doorbell.
    pub fn tdcall(&mut self) -> &mut Self {
        self.0.extend_from_slice(&abi::tdcall::TDCALL_INSN);
        self
    }

    /// Instruction bytes not covered by a helper.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// `jmp $`: spin.
    pub fn spin(&mut self) -> &mut Self {
        self.0.extend_from_slice(&[0xeb, 0xfe]);
        self
    }
}

/// A firmware ELF (`ET_EXEC`, one read-write-execute `PT_LOAD` at `base`)
/// whose entry is `code` and which carries `data` right after it; returns
/// the image and the address of `data`.
pub fn tiny_firmware(base: u64, code: &[u8], data: &[u8]) -> (Vec<u8>, u64) {
    const HEADERS: usize = 64 + 56;
    let data_at = HEADERS + code.len();
    let mut b = vec![0u8; data_at + data.len()];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1; // version
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[24..32].copy_from_slice(&(base + HEADERS as u64).to_le_bytes()); // entry
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    b[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    b[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    b[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
    let ph = 64;
    let len = b.len() as u64;
    b[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b[ph + 4..ph + 8].copy_from_slice(&7u32.to_le_bytes()); // RWX
    b[ph + 16..ph + 24].copy_from_slice(&base.to_le_bytes());
    b[ph + 24..ph + 32].copy_from_slice(&base.to_le_bytes());
    b[ph + 32..ph + 40].copy_from_slice(&len.to_le_bytes());
    b[ph + 40..ph + 48].copy_from_slice(&len.to_le_bytes());
    b[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    b[HEADERS..data_at].copy_from_slice(code);
    b[data_at..].copy_from_slice(data);
    (b, base + data_at as u64)
}

/// File offset of the `r_info` of the first `Elf64_Rela` entry of a
/// static PIE (through PT_DYNAMIC's DT_RELA and the PT_LOAD that holds it).
pub fn first_relocation_info(image: &[u8]) -> usize {
    let u64_at = |o: usize| u64::from_le_bytes(image[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(image[o..o + 2].try_into().unwrap()) as usize;
    let phoff = abi::to_usize(u64_at(0x20));
    let headers: Vec<usize> = (0..u16_at(0x38))
        .map(|i| phoff + i * u16_at(0x36))
        .collect();
    let file_offset = |vaddr: u64| -> usize {
        let h = *headers
            .iter()
            .find(|&&h| {
                u32_at(h) == 1 && vaddr >= u64_at(h + 16) && vaddr < u64_at(h + 16) + u64_at(h + 32)
            })
            .expect("a PT_LOAD holds the address");
        abi::to_usize(u64_at(h + 8) + vaddr - u64_at(h + 16))
    };
    let dynamic = *headers
        .iter()
        .find(|&&h| u32_at(h) == 2)
        .expect("PT_DYNAMIC");
    let mut at = abi::to_usize(u64_at(dynamic + 8));
    loop {
        match u64_at(at) {
            0 => panic!("no DT_RELA"),
            7 => return file_offset(u64_at(at + 8)) + 8,
            _ => at += 16,
        }
    }
}
