//! Starting the kernel: load its ELF from the payload at an address the
//! allocator picks (relocating it there), write the boot info with the
//! system table and the command line, and jump.

use crate::memory::MEMORY;
use abi::boot::{BootInfo, BOOT_INFO_MAGIC, BOOT_INFO_VERSION};
use abi::efi::{memory_type, EFI_PAGE_SIZE};
use abi::report::Mark;
use guest_rt::fatal::code;
use guest_rt::{println, tdcall};
use models::elf::Image;

fn allocate(ty: u32, bytes: u64, what: &str) -> u64 {
    match MEMORY.with(|m| m.allocate(ty, bytes.div_ceil(EFI_PAGE_SIZE))) {
        Ok(at) => at,
        Err(e) => guest_rt::fatal!(code::PANIC, "no memory for {what} ({bytes} bytes): {e:?}"),
    }
}

/// Loads the kernel in `[image, image + size)` and enters it. Never returns.
pub fn start_kernel(image: u64, size: u64, cmdline: &str, system_table: u64) -> ! {
    // SAFETY: the payload is initial memory the host loaded and described
    // in the HOB; it is accepted, identity-mapped and not written by anyone.
    let file = unsafe { core::slice::from_raw_parts(image as *const u8, abi::to_usize(size)) };
    let elf = match Image::parse(file) {
        Ok(e) => e,
        Err(e) => guest_rt::fatal!(code::PANIC, "kernel payload: {e}"),
    };
    let base = allocate(memory_type::LOADER_CODE, elf.span, "the kernel image");
    // SAFETY: `base` is a fresh allocation of `span` bytes of accepted,
    // identity-mapped memory that nothing else uses.
    let dest = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, abi::to_usize(elf.span)) };
    let entry = match elf.load(dest, base) {
        Ok(e) => e,
        Err(e) => guest_rt::fatal!(code::PANIC, "loading the kernel: {e}"),
    };
    let info_bytes = core::mem::size_of::<BootInfo>() as u64 + cmdline.len() as u64;
    let info_at = allocate(memory_type::LOADER_DATA, info_bytes, "the boot info");
    let cmdline_at = info_at + core::mem::size_of::<BootInfo>() as u64;
    let info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        version: BOOT_INFO_VERSION,
        generation: 0,
        system_table,
        memory_map: 0,
        memory_map_size: 0,
        descriptor_size: 0,
        cmdline: cmdline_at,
        cmdline_len: cmdline.len() as u64,
        image,
        image_size: size,
        load_base: base,
        load_size: elf.span,
    };
    // SAFETY: the allocation holds the boot info followed by the command line.
    unsafe {
        (info_at as *mut BootInfo).write(info);
        core::ptr::copy_nonoverlapping(cmdline.as_ptr(), cmdline_at as *mut u8, cmdline.len());
    }
    println!(
        "fw: kernel loaded at {base:#x} ({} bytes), entry {entry:#x}, boot info at {info_at:#x}",
        elf.span
    );
    tdcall::counter(
        abi::report::Counter::FwAcceptRetries,
        tdcall::accept_retries(),
    );
    tdcall::mark(Mark::FwDone, 0);
    // SAFETY: `entry` is the relocated entry point of the image just
    // loaded; the kernel's contract is RDI = boot info and it never returns.
    unsafe {
        core::arch::asm!("jmp {entry}", entry = in(reg) entry, in("rdi") info_at, options(noreturn));
    }
}
