//! guest-kernel: the Linux role. For now a placeholder that the firmware
//! can be handed as payload: if entered, it shuts the TD down with exit
//! code 0. The EFI stub phase, the unaccepted bitmap and the page allocator
//! come with the boot-to-kernel work.
#![no_std]
#![no_main]

#[no_mangle]
extern "C" fn _start() -> ! {
    guest_rt::tdcall::shutdown(0)
}
