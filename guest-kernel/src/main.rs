//! guest-kernel: the Linux role. For now a placeholder that the firmware
//! can be handed as payload: if entered, it shuts the TD down with exit
//! code 0 through the emulated TDCALL doorbell. The EFI stub phase, the
//! unaccepted bitmap and the page allocator come with the boot-to-kernel work.
#![no_std]
#![no_main]

use abi::tdcall::{leaf, DOORBELL_PORT};
use abi::vmcall::{emu, EXPOSE_R10_R15, VENDOR_EMU};

#[no_mangle]
extern "C" fn _start() -> ! {
    loop {
        // SAFETY: the `out` traps to the VMM, which ends the TD on this
        // vendor VMCALL; only the listed registers are read or written.
        unsafe {
            core::arch::asm!(
                "out {port}, al",
                port = const DOORBELL_PORT,
                inout("rax") leaf::VP_VMCALL as u64 => _,
                inout("rcx") EXPOSE_R10_R15 => _,
                inout("r10") VENDOR_EMU => _,
                inout("r11") emu::SHUTDOWN => _,
                in("r12") 0u64,
                options(nostack),
            );
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
