//! The TD HOB parser the firmware runs on what the VMM hands it: any bytes
//! parse or are refused, and a parsed list's accessors stay in bounds.
//! Half the inputs start from a well-formed list built by the VMM's HOB
//! builder (from fuzzed RAM sizes and command line) and then corrupt a few
//! of its bytes, so the fuzzer gets past the PHIT checks.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vmm::internals::{build_td_hob, TdHobSpec};

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Built {
        low_mib: u16,
        high_mib: u16,
        payload_len: u32,
        cmdline: String,
        corrupt: Vec<(u16, u8)>,
        truncate: Option<u16>,
    },
}

const BASE: u64 = 0x80_0000;

fn check(bytes: &[u8]) {
    if let Ok(list) = abi::hob::HobList::parse(bytes, BASE) {
        assert!(list.len() <= bytes.len());
        let _ = list.phit();
        for r in list.memory_resources() {
            let _ = r.physical_start.checked_add(r.resource_length);
        }
        for hob in list.iter() {
            let _ = hob;
        }
        if let Some(Ok((payload, cmdline))) = list.payload_info() {
            let _ = (payload.image_base, cmdline.len());
        }
    }
}

fuzz_target!(|input: Input| match input {
    Input::Raw(bytes) => check(&bytes),
    Input::Built {
        low_mib,
        high_mib,
        payload_len,
        cmdline,
        corrupt,
        truncate,
    } => {
        let low = (low_mib as u64 % 3072 + 16) << 20;
        let mut ram = vec![(0, low)];
        if high_mib > 0 {
            ram.push((4 << 30, (high_mib as u64) << 20));
        }
        let spec = TdHobSpec {
            base: BASE,
            ram,
            initial: (0x10_0000, 0x80_0000),
            free: (0x90_0000, 0x1_0000),
            payload: (0xa0_0000, payload_len as u64 % (64 << 20)),
            cmdline: &cmdline,
        };
        let Ok(mut bytes) = build_td_hob(&spec) else {
            return;
        };
        // The untouched list must parse.
        abi::hob::HobList::parse(&bytes, BASE).expect("the builder's own list parses");
        for (at, value) in corrupt.into_iter().take(4) {
            let at = at as usize % bytes.len();
            bytes[at] = value;
        }
        if let Some(t) = truncate {
            bytes.truncate(t as usize % (bytes.len() + 1));
        }
        check(&bytes);
    }
});
