//! The guest kernel's page allocator, kept free of guest-only code so the
//! host tests it against a model.
//!
//! - `buddy`: a buddy allocator over physical memory with orders 0 (4 KiB)
//!   to 10 (4 MiB). Its metadata scales with 4 MiB blocks in use, not with
//!   RAM: a directory word per block, kept in sections (`directory`) so
//!   that a run of absent or parked blocks costs one word per 2 GiB, plus
//!   256 bytes of free bits only for blocks currently split into smaller
//!   pieces. Free lists live inside the free blocks, which are always
//!   accepted memory.
//! - Lazy acceptance (Linux's `__free_unaccepted`, `cond_accept_memory`,
//!   `try_to_accept_memory_one`): 4 MiB blocks that contain unaccepted
//!   memory are parked in the directory (never touched) and accepted one at
//!   a time when free memory runs below the watermark.
//! - `free_run`: boot-time hand-over of usable memory, chunk by chunk, as
//!   Linux's `__free_pages_core` does (park, or accept with the guard unit).
//! - `hold`: memory a multi-step operation holds, released in one place.
#![cfg_attr(not(test), no_std)]

pub mod buddy;
pub mod directory;
pub mod free_run;
pub mod hold;

/// Memory for the tests: a sparse map of words, zero where never written.
#[cfg(test)]
pub(crate) mod test_mem {
    use crate::buddy::Phys;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct Mem(HashMap<u64, u64>);

    impl Phys for Mem {
        fn read(&self, addr: u64) -> u64 {
            self.0.get(&addr).copied().unwrap_or(0)
        }
        fn write(&mut self, addr: u64, value: u64) {
            self.0.insert(addr, value);
        }
    }
}
