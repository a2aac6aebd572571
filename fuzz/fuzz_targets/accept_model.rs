//! Differential: the VMM's accept state machine (`vmm::internals::accept_transition`
//! over its page-state table) against the reference model the guests use
//! (`models::accept`), for any sequence of RCX operands; afterwards the
//! accepted pages of the window agree page by page.
#![no_main]

use models::accept::{Expect, Model};
use abi::tdcall::{accept::encode, PageLevel};
use abi::{GIB, PAGE_2M, PAGE_4K};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vmm::internals::{PageState, PageStateTable};

#[derive(Arbitrary, Debug)]
enum Op {
    In4k(u16),
    In2m(u8),
    Raw2m(u16, u16),
    Word(u64),
}

const WINDOW: u64 = 16 << 20;

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (big, ops) = input;
    let mem = if big { 6 * GIB } else { 2 * GIB };
    let layout = vmm::internals::ram_layout(mem, 48).unwrap();
    let mut pages = PageStateTable::new(mem / PAGE_4K);
    let base = if big { 4 * GIB } else { GIB };
    let mut model = Model::new(layout, base, WINDOW).unwrap();
    for op in ops {
        let rcx = match op {
            Op::In4k(p) => encode(base + (p as u64 % 4096) * PAGE_4K, PageLevel::L4K),
            Op::In2m(c) => encode(base + (c as u64 % 8) * PAGE_2M, PageLevel::L2M),
            Op::Raw2m(p, low) => (base + (p as u64 % 4096) * PAGE_4K) | (low as u64 & 0xfff),
            Op::Word(w) => w,
        };
        let want = match model.accept(rcx) {
            Expect::Status(s) => s,
            Expect::Unknown => continue,
        };
        let got = vmm::internals::accept_transition(&layout, &mut pages, rcx);
        assert_eq!(got, want, "rcx {rcx:#x}");
    }
    let first = layout.ram_offset(base, 1).unwrap() / PAGE_4K;
    for p in 0..WINDOW / PAGE_4K {
        let accepted = pages.state(first + p) == PageState::Accepted;
        assert_eq!(accepted, model.is_accepted(base + p * PAGE_4K), "page {p}");
    }
});
