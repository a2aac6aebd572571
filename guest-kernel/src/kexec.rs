//! kexec inside the TD: load the kernel image kept in memory (the payload)
//! as segments at destinations taken top-down from RAM the running kernel
//! does not use (on a lazy guest: parked, unaccepted blocks), check them
//! like Linux's `sanity_check_segment_list` (`models::kexec`), accept their destinations
//! through the bitmap (`kexec_accept=on`, the upstream fix; `off`
//! reproduces the bug), stage their contents, and jump to a relocation
//! routine in a control page that copies them into place and enters the
//! new kernel with its boot info.

use crate::{mm, stub, unaccepted};
use abi::boot::{BootInfo, BOOT_INFO_MAGIC, BOOT_INFO_VERSION};
use abi::efi::MemoryDescriptor;
use abi::report::{Counter, Mark};
use guest_mm::buddy::{BLOCK, PAGE};
use guest_mm::hold::{Held, Holder, Release};
use guest_rt::spin::SpinLock;
use guest_rt::{println, tdcall};
use models::elf::Image;
use models::kexec::{build_segments, MAX_SEGMENTS};

pub use models::kexec::Segment;

/// How kexec runs, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub accept: bool,
    /// `kexec_unshare` (default on): convert every shared page back to
    /// private before the jump (`tdx_kexec_finish`).
    pub unshare: bool,
    /// `kexec_test=overlap|outside`: corrupt the segment list to show the
    /// sanity check refusing it.
    pub corrupt: Option<Corruption>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    Overlap,
    Outside,
}

core::arch::global_asm!(
    ".pushsection .text.kexec, \"ax\"",
    ".global kexec_relocate_start",
    ".global kexec_relocate_end",
    // rdi = segment table of (src, dst, len), rsi = count, rdx = entry,
    // rcx = boot info. Runs from the control page; touches only the
    // segments and the table.
    "kexec_relocate_start:",
    "mov %rdx, %r8",
    "mov %rcx, %r9",
    "mov %rdi, %r10",
    "mov %rsi, %r11",
    "1:",
    "test %r11, %r11",
    "jz 2f",
    "mov (%r10), %rsi",
    "mov 8(%r10), %rdi",
    "mov 16(%r10), %rcx",
    "cld",
    "rep movsb",
    "add $24, %r10",
    "dec %r11",
    "jmp 1b",
    "2:",
    "mov %r9, %rdi",
    "jmp *%r8",
    "kexec_relocate_end:",
    ".popsection",
    options(att_syntax),
);

extern "C" {
    static kexec_relocate_start: u8;
    static kexec_relocate_end: u8;
}

/// Where held memory goes back: the kernel's allocator.
struct Allocator;

impl Release for Allocator {
    fn release(&mut self, held: Held) {
        match held {
            Held::Parked(block) => mm::park(block),
            Held::Pages { addr, order } => mm::free(addr, order),
        }
    }
}

/// Allocates at least `bytes` (a power of two of pages) and holds them.
fn alloc_held(holder: &mut Holder<Allocator, 4>, bytes: u64) -> Option<u64> {
    let order = bytes.div_ceil(PAGE).next_power_of_two().trailing_zeros();
    let addr = mm::alloc(order)?;
    holder.hold(Held::Pages { addr, order }).ok()?;
    Some(addr)
}

/// Loads and executes the next kernel. Returns only if loading was
/// refused (the reason is printed; the running kernel carries on, and
/// everything taken for the load is given back through one `Holder`).
pub fn load_and_execute(info: &BootInfo, cmdline: &str, opts: Options) -> &'static str {
    // The buffers live in static memory, not on the 64 KiB kernel stack
    // (together they are over 40 KiB). The lock is never released by a
    // load that succeeds: that kernel is gone.
    SCRATCH.with(|s| load(info, cmdline, opts, s))
}

/// The load's large buffers: the next command line, a copy of the memory
/// map this kernel was booted with and the next kernel's map.
struct Scratch {
    cmdline: [u8; abi::hob::MAX_CMDLINE_LEN + 32],
    ram: [MemoryDescriptor; stub::MAX_DESCRIPTORS],
    next_map: [MemoryDescriptor; stub::MAX_DESCRIPTORS],
}

static SCRATCH: SpinLock<Scratch> = SpinLock::new(Scratch {
    cmdline: [0; abi::hob::MAX_CMDLINE_LEN + 32],
    ram: [MemoryDescriptor::ZERO; stub::MAX_DESCRIPTORS],
    next_map: [MemoryDescriptor::ZERO; stub::MAX_DESCRIPTORS],
});

fn load(info: &BootInfo, cmdline: &str, opts: Options, scratch: &mut Scratch) -> &'static str {
    let generation = info.generation as u64;
    tdcall::mark(Mark::KexecLoad, generation);
    let Scratch {
        cmdline: next_cmd,
        ram,
        next_map: storage,
    } = scratch;
    let Some(len) = abi::cmdline::next_generation(cmdline, generation + 1, next_cmd) else {
        return "the command line is too long";
    };
    let cmdline = &next_cmd[..len];
    // SAFETY: the payload is loader data the kernel keeps for kexec.
    let file = unsafe {
        core::slice::from_raw_parts(info.image as *const u8, abi::to_usize(info.image_size))
    };
    let image = match Image::parse(file) {
        Ok(i) => i,
        Err(_) => return "the kernel image does not parse",
    };
    let params_bytes = core::mem::size_of::<BootInfo>() as u64
        + cmdline.len() as u64
        + (stub::MAX_DESCRIPTORS * core::mem::size_of::<MemoryDescriptor>()) as u64;
    let params_len = params_bytes.next_multiple_of(PAGE);
    if image.span + params_len > BLOCK {
        return "the kernel image and its parameters exceed one 4 MiB block";
    }
    // Everything taken from here on goes back if loading is refused.
    let mut holder: Holder<Allocator, 4> = Holder::new(Allocator);
    // Destination: the highest block the running kernel does not use.
    // Destinations must end below KEXEC_DESTINATION_MEMORY_LIMIT.
    let limit = models::kexec::DESTINATION_LIMIT_4LEVEL & !(PAGE - 1);
    let dest = match mm::take_parked_below(limit) {
        Some(block) => holder.hold(Held::Parked(block)).map(|()| block).ok(),
        None => mm::alloc(guest_mm::buddy::MAX_ORDER).and_then(|addr| {
            let held = Held::Pages {
                addr,
                order: guest_mm::buddy::MAX_ORDER,
            };
            holder.hold(held).ok()?;
            (addr + BLOCK <= limit).then_some(addr)
        }),
    };
    let Some(dest) = dest else {
        return "no 4 MiB block free for the destination";
    };
    let params_dest = dest + image.span;

    // Staging: the relocated image and the parameters, in allocator pages.
    let Some(staging) = alloc_held(&mut holder, image.span + params_len) else {
        println!("kexec: no memory for staging");
        return "out of memory for staging";
    };
    // SAFETY: a fresh allocation of at least span + params_len bytes.
    let stage = unsafe {
        core::slice::from_raw_parts_mut(staging as *mut u8, abi::to_usize(image.span + params_len))
    };
    let Ok(entry) = image.load(&mut stage[..abi::to_usize(image.span)], dest) else {
        return "the kernel image does not load";
    };

    // Segments: the image's loadable segments (page rounded, touching ones
    // merged) and the boot parameters.
    let mut segs = [Segment::default(); MAX_SEGMENTS];
    let Ok(n) = build_segments(
        &image,
        dest,
        staging,
        (staging + image.span, params_len),
        &mut segs,
    ) else {
        return "the kernel image has too many segments";
    };
    // The map this kernel was booted with: the RAM the checks see, and the
    // base of the next kernel's map.
    let ram_len = stub::BOOTED.with(|m| {
        let d = &m.descs[..m.len];
        ram[..d.len()].copy_from_slice(d);
        d.len()
    });
    let map = &ram[..ram_len];
    match opts.corrupt {
        Some(Corruption::Overlap) => segs[n - 1].mem = segs[0].mem,
        Some(Corruption::Outside) => {
            segs[n - 1].mem = map.iter().map(|d| d.end()).max().unwrap_or(0) + BLOCK
        }
        None => {}
    }
    // Linux's sanity_check_segment_list rules, then this project's extra
    // "inside RAM" rule (Linux leaves that to kexec-tools).
    let checked = models::kexec::linux_checks(
        &segs[..n],
        models::kexec::total_ram_pages(map),
        models::kexec::DESTINATION_LIMIT_4LEVEL,
    )
    .and_then(|()| models::kexec::inside_ram(&segs[..n], map));
    if let Err(why) = checked {
        return why.as_str();
    }

    // The control page (the relocation routine and the segment table),
    // taken before the destinations are accepted: nothing after the
    // accept can fail for want of memory.
    let Some(control) = alloc_held(&mut holder, PAGE) else {
        return "out of memory for the control page";
    };

    // The upstream fix, the end of sanity_check_segment_list: accept every
    // destination before anything is copied.
    tdcall::counter(Counter::KexecDest, dest);
    if opts.accept {
        let before = unaccepted::units_accepted();
        models::kexec::accept_segments(&segs[..n], unaccepted::accept_memory);
        let units = unaccepted::units_accepted() - before;
        tdcall::counter(
            Counter::KexecDestAccepted,
            units * abi::unaccepted::UNIT_SIZE,
        );
    }

    // The new kernel's memory map (models::memmap::next_kernel_map): the map
    // this kernel was booted with, loader memory free again, the payload
    // in use, and what the bitmap still marks unaccepted as type 15. The
    // same map every generation: nothing this kernel reserved for itself
    // is handed on.
    let mut from = 0;
    let unaccepted_ranges = core::iter::from_fn(|| {
        let (a, b) = unaccepted::next_unaccepted(from)?;
        from = b;
        Some((a, b))
    });
    let entries = match models::memmap::next_kernel_map(
        map,
        (info.image, info.image + info.image_size),
        unaccepted_ranges,
        storage,
    ) {
        Ok(entries) => entries,
        Err(e) => {
            println!(
                "kexec: the new kernel's memory map: {}",
                stub::MapErrorText(e)
            );
            return "the memory map for the new kernel does not fit";
        }
    };
    let map_off = core::mem::size_of::<BootInfo>() as u64 + cmdline.len() as u64;
    let map_off = map_off.next_multiple_of(8);
    let next = BootInfo {
        magic: BOOT_INFO_MAGIC,
        version: BOOT_INFO_VERSION,
        generation: info.generation + 1,
        system_table: info.system_table,
        memory_map: params_dest + map_off,
        memory_map_size: core::mem::size_of_val(entries) as u64,
        descriptor_size: core::mem::size_of::<MemoryDescriptor>() as u64,
        cmdline: params_dest + core::mem::size_of::<BootInfo>() as u64,
        cmdline_len: cmdline.len() as u64,
        image: info.image,
        image_size: info.image_size,
        load_base: dest,
        load_size: image.span,
    };
    let p = staging + image.span;
    // SAFETY: the staging allocation has params_len bytes after the image;
    // boot info, command line and map fit (checked when sizing params_len).
    unsafe {
        (p as *mut BootInfo).write(next);
        core::ptr::copy_nonoverlapping(
            cmdline.as_ptr(),
            (p + core::mem::size_of::<BootInfo>() as u64) as *mut u8,
            cmdline.len(),
        );
        core::ptr::copy_nonoverlapping(
            entries.as_ptr(),
            (p + map_off) as *mut MemoryDescriptor,
            entries.len(),
        );
    }

    let code_start = core::ptr::addr_of!(kexec_relocate_start) as u64;
    let code_len = core::ptr::addr_of!(kexec_relocate_end) as u64 - code_start;
    let table = control + 256;
    // SAFETY: `control` is a fresh page; the routine (under 256 bytes) and
    // up to 16 table entries of 24 bytes fit in it.
    unsafe {
        core::ptr::copy_nonoverlapping(
            code_start as *const u8,
            control as *mut u8,
            abi::to_usize(code_len),
        );
        for (i, s) in segs[..n].iter().enumerate() {
            let e = (table + i as u64 * 24) as *mut u64;
            e.write(s.src);
            e.add(1).write(s.mem);
            e.add(2).write(s.memsz);
        }
    }
    println!(
        "kexec: generation {generation} -> {}: {n} segments at {dest:#x}, entry {entry:#x}, destinations {}accepted first",
        generation + 1,
        if opts.accept { "" } else { "NOT " }
    );
    // From here the load cannot fail: keep what it holds.
    holder.commit();
    // machine_shutdown (native_machine_shutdown): no new private<->shared
    // conversion while the other CPUs still run; they leave for the
    // firmware's reset vector, where the next kernel wakes them again;
    // then every shared page goes back to private.
    crate::shared::kexec_begin();
    if !crate::smp::offline_all() {
        println!("kexec: no reset vector in the MADT: the other CPUs stay behind");
    }
    if opts.unshare {
        let found = crate::shared::kexec_finish();
        tdcall::counter(Counter::KexecUnsharedPages, found);
        println!("kexec: {found} shared pages converted back to private and accepted");
    } else {
        let left = crate::shared::kexec_leave_shared();
        println!(
            "kexec: kexec_unshare=off: {left} pages stay shared; the next kernel's bitmap says they are accepted private memory"
        );
    }
    crate::stack::check("the kexec jump");
    tdcall::mark(Mark::KexecJump, generation);
    type Relocate = extern "sysv64" fn(u64, u64, u64, u64) -> !;
    // SAFETY: the control page holds a copy of the position-independent
    // routine above; identity mapping makes it executable where it is.
    let relocate: Relocate = unsafe { core::mem::transmute::<u64, Relocate>(control) };
    relocate(table, n as u64, entry, params_dest)
}
