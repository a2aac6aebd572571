//! Accept throughput against memset, in one process: boots the firmware
//! with `fw.accept=all` (2 MiB accepts through the real vCPU exit path),
//! then zero-fills the same number of bytes of fresh, THP-advised memory
//! with memset, and prints both rates and their ratio. Also times a
//! doorbell round trip in each CPU profile the host offers.
//!
//! `cargo run --release -p vmm --example accept_throughput -- FIRMWARE [MEM]`

use std::time::Instant;
use vmm::cpu::ProfileChoice;
use vmm::{Td, TdConfig};

fn boot(fw: &str, mem: u64, profile: ProfileChoice, cmdline: &str) -> vmm::Report {
    let mut c = TdConfig::new(fw.into());
    c.mem_bytes = mem;
    c.profile = profile;
    c.cmdline = cmdline.into();
    Td::build(c).expect("build TD").run()
}

fn memset_fresh(bytes: u64) -> f64 {
    let len = bytes as usize + (2 << 20);
    // SAFETY: fresh anonymous mapping, used only here and unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let aligned = (p as usize).next_multiple_of(2 << 20) as *mut u8;
        libc::madvise(aligned as *mut _, bytes as usize, libc::MADV_HUGEPAGE);
        let t = Instant::now();
        std::ptr::write_bytes(aligned, 0, bytes as usize);
        let secs = t.elapsed().as_secs_f64();
        libc::munmap(p, len);
        secs
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fw = args
        .get(1)
        .expect("usage: accept_throughput FIRMWARE [MEM]");
    let mem = args
        .get(2)
        .map(|m| vmm::size::parse_size(m).expect("size"))
        .unwrap_or(4 << 30);
    let gib = (1u64 << 30) as f64;
    // Warm-up: the host kernel's first touch of fresh physical memory is
    // much slower than later ones on a nested host; measure steady state.
    boot(fw, mem, ProfileChoice::Auto, "");
    memset_fresh(mem.min(3 << 30));
    let mut ratios = Vec::new();
    let mut accept_rates = Vec::new();
    let mut memset_rates = Vec::new();
    for round in 1..=5 {
        let r = boot(fw, mem, ProfileChoice::Auto, "");
        let bytes = r.accept.bytes_accepted;
        let phase_us = r.timing_us["fw_accept_done"] - r.timing_us["fw_start"];
        let accept_rate = bytes as f64 / gib / (phase_us as f64 / 1e6);
        let host_rate = bytes as f64 / gib / ((r.accept.zero_ns + r.accept.handle_ns) as f64 / 1e9);
        let memset_secs = memset_fresh(bytes);
        let memset_rate = bytes as f64 / gib / memset_secs;
        println!(
            "round {round} [{}]: {} x 2M + {} x 4K accepts, {:.2} GiB in {:.3} s = {:.2} GiB/s (VMM side alone {:.2} GiB/s, handling {:.1} us/accept excl. zeroing); memset of fresh memory {:.2} GiB/s; ratio accept/memset {:.2}",
            r.cpu_profile,
            r.accept.ok_2m,
            r.accept.ok_4k,
            bytes as f64 / gib,
            phase_us as f64 / 1e6,
            accept_rate,
            host_rate,
            r.accept.handle_ns as f64 / 1e3 / r.accept.calls.max(1) as f64,
            memset_rate,
            accept_rate / memset_rate
        );
        ratios.push(accept_rate / memset_rate);
        accept_rates.push(accept_rate);
        memset_rates.push(memset_rate);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median of 5: accept {:.2} GiB/s, memset {:.2} GiB/s, ratio {:.2}",
        median(&mut accept_rates),
        median(&mut memset_rates),
        median(&mut ratios)
    );
    for profile in [ProfileChoice::Standard, ProfileChoice::PvmNative] {
        let mut c = TdConfig::new(fw.into());
        c.profile = profile;
        c.cmdline = "fw.accept=none fw.bench=20000".into();
        match Td::build(c) {
            Ok(td) => {
                let r = td.run();
                let b = r.bench.expect("the firmware ran the doorbell benchmark");
                println!(
                    "doorbell round trip [{}]: {} ns ({} round trips)",
                    r.cpu_profile, b.doorbell_rtt_ns, b.round_trips
                );
            }
            Err(e) => println!("doorbell round trip [{profile:?}]: not available ({e})"),
        }
    }
}
