//! The real TDCALL instruction in guests: the loader patches every TDCALL
//! of our firmware and kernel (and nothing else) to the doorbell before
//! the TD starts, and a TDCALL written at run time, which no loader saw,
//! still runs as a TDCALL where KVM reports its bytes (both profiles on
//! kvm_pvm).

use abi::tdcall::TDCALL_PATCH;
use abi::vmcall::{ghci, EXPOSE_R10_R15, GHCI_STANDARD};
use std::collections::BTreeSet;
use tests::process::{tiny_firmware, Code};
use vmm::{Outcome, Td, TdConfig};

/// The addresses objdump decodes as `tdcall` instructions in `path`'s
/// executable sections: instruction boundaries from a disassembler, which
/// the loader's byte scan must match exactly.
fn disassembled_tdcalls(path: &std::path::Path) -> Option<BTreeSet<u64>> {
    let out = match std::process::Command::new("objdump")
        .arg("-d")
        .arg(path)
        .output()
    {
        Ok(out) if out.status.success() => out,
        other => {
            assert!(
                std::env::var("REQUIRE_KVM").as_deref() != Ok("1"),
                "objdump -d {} failed: {other:?}",
                path.display()
            );
            tests::skip(format_args!("disassembled_tdcalls: no objdump here"));
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter(|l| l.split('\t').nth(2).is_some_and(|m| m.trim() == "tdcall"))
            .map(|l| {
                let addr = l.split(':').next().unwrap().trim();
                u64::from_str_radix(addr, 16).unwrap()
            })
            .collect(),
    )
}

#[test]
fn the_loader_patches_every_tdcall_of_our_guests_and_nothing_else() {
    let guests = tests::guests();
    for path in [&guests.firmware, &guests.kernel] {
        let original = std::fs::read(path).unwrap();
        let mut patched = original.clone();
        let mut sites = Vec::new();
        let n = models::elf::patch_tdcalls(&mut patched, |s| sites.push(s)).unwrap();
        // Our guests issue TDCALLs only through the real instruction.
        assert!(n > 10, "{}: {n} TDCALLs", path.display());
        // Each site is a whole instruction the disassembler decodes as
        // TDCALL, and every TDCALL it decodes is a site: no false match
        // inside another instruction or data, none missed.
        let addrs: BTreeSet<u64> = sites.iter().map(|s| s.addr).collect();
        if let Some(want) = disassembled_tdcalls(path) {
            assert_eq!(addrs, want, "{}", path.display());
        }
        // Only those 4 bytes per site changed, each to the doorbell.
        let changed = original
            .iter()
            .zip(&patched)
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed <= 4 * n, "{changed} bytes changed for {n} sites");
        for s in &sites {
            let at = abi::to_usize(s.offset);
            assert_eq!(patched[at..at + 4], TDCALL_PATCH);
        }
    }
}

#[test]
fn our_guests_boot_through_patched_tdcalls_and_the_report_lists_them() {
    let test = "our_guests_boot_through_patched_tdcalls_and_the_report_lists_them";
    tests::in_each_profile(test, |p| {
        let r = tests::boot(tests::config_with_kernel(p, 1 << 30, ""));
        assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.fatal);
        let guests = tests::guests();
        let count = |path: &std::path::Path| {
            let mut bytes = std::fs::read(path).unwrap();
            models::elf::patch_tdcalls(&mut bytes, |_| {}).unwrap()
        };
        assert_eq!(r.inputs.tdcall_sites.len(), count(&guests.firmware));
        assert_eq!(r.inputs.kernel_tdcall_sites.len(), count(&guests.kernel));
        // Firmware sites are GPAs in its window.
        let window = abi::layout::FIRMWARE_BASE..abi::layout::FIRMWARE_BASE + (16 << 20);
        assert!(r.inputs.tdcall_sites.iter().all(|a| window.contains(a)));
        // Every TDCALL went through the doorbell: none was left unpatched.
        assert!(r.exits.doorbell > 0);
        assert_eq!(r.exits.unpatched_tdcalls, 0);
        // Each TDCALL kind is timed once per call, but for the call that
        // stopped the TD (the shutdown), with quantiles in order.
        let timed: u64 = r.tdcall_time.values().map(|t| t.count).sum();
        let called: u64 = r.tdcalls.get("TDG.VP.VMCALL").copied().unwrap_or(0)
            + r.tdcalls
                .iter()
                .filter(|(k, _)| k.starts_with("TDG.") && *k != "TDG.VP.VMCALL")
                .map(|(_, n)| n)
                .sum::<u64>();
        assert_eq!(timed + 1, called, "{:?} {:?}", r.tdcall_time, r.tdcalls);
        let accepts = &r.tdcall_time["TDG.MEM.PAGE.ACCEPT"];
        assert_eq!(accepts.count, r.tdcalls["TDG.MEM.PAGE.ACCEPT"]);
        assert!(0 < accepts.p50_ns && accepts.p50_ns <= accepts.p99_ns);
        assert!(accepts.total_ns >= accepts.count * 50);
        // And the vCPU's time split between KVM_RUN and the VMM.
        let v = &r.per_vcpu[0];
        assert!(v.kvm_run_ns > 0 && v.vmm_ns >= accepts.total_ns, "{v:?}");
    });
}

/// A firmware whose code writes a TDCALL (TDG.VP.INFO) at run time and
/// jumps to it; after it, a TDCALL the loader patched reports a fatal
/// error whose code is VP.INFO's RCX (the GPAW). Returns the image and
/// the GPA of the run-time TDCALL and of the patched one.
fn runtime_tdcall_firmware() -> (Vec<u8>, u64, u64) {
    let (rcx, rbx, r10, r11) = (1, 3, 10, 11);
    let base = abi::layout::FIRMWARE_BASE;
    // Data (executed): 4 bytes the code overwrites with a TDCALL, then
    // r12 = rcx and ReportFatalError through a TDCALL in the file.
    let mut tail = Code::default();
    tail.raw(&[0x90; 4])
        .raw(&[0x49, 0x89, 0xcc]) // mov r12, rcx
        .mov32(rcx, u32::try_from(EXPOSE_R10_R15).unwrap())
        .mov32(r10, u32::try_from(GHCI_STANDARD).unwrap())
        .mov32(r11, u32::try_from(ghci::REPORT_FATAL_ERROR).unwrap())
        .zero_rax();
    let patched_at = tail.0.len() as u64;
    tail.tdcall().spin();
    let code = |data: u64| {
        let mut c = Code::default();
        c.mov64(rbx, data)
            // eax = 0xcc010f65 + 1: the TDCALL's bytes, never in the file.
            .raw(&[0xb8, 0x65, 0x0f, 0x01, 0xcc, 0xff, 0xc0])
            .raw(&[0x89, 0x03]) // mov [rbx], eax
            .mov32(0, u32::from(abi::tdcall::leaf::VP_INFO))
            .raw(&[0xff, 0xe3]); // jmp rbx
        c.0
    };
    let (_, data) = tiny_firmware(base, &code(0), &tail.0);
    let (image, at) = tiny_firmware(base, &code(data), &tail.0);
    assert_eq!(at, data);
    (image, data, data + patched_at)
}

#[test]
fn a_tdcall_written_at_run_time_runs_as_a_tdcall() {
    let test = "a_tdcall_written_at_run_time_runs_as_a_tdcall";
    let (image, runtime_at, patched_at) = runtime_tdcall_firmware();
    let path = tests::scratch("runtime-tdcall.elf");
    std::fs::write(&path, image).unwrap();
    tests::in_each_profile(test, |p| {
        let config = TdConfig::new(&path)
            .mem_bytes(1 << 30)
            .cpu_profile(p)
            .echo_console(false)
            .timeout(std::time::Duration::from_secs(60));
        let r = Td::build(config).expect("building the TD").run();
        // The loader saw only the TDCALL in the file.
        assert_eq!(r.inputs.tdcall_sites, vec![patched_at]);
        // The run-time one came back as an emulation failure with its
        // bytes, ran as TDG.VP.INFO, and the guest went on after it: the
        // fatal error's code is VP.INFO's RCX, the GPAW (48).
        assert_eq!(r.exits.unpatched_tdcalls, 1, "{:?}", r.exits);
        assert_eq!(r.tdcalls.get("TDG.VP.INFO"), Some(&1), "{:?}", r.tdcalls);
        assert_eq!(r.outcome, Outcome::GuestPanic, "{:?}", r.fatal);
        let fatal = r.fatal.as_ref().unwrap();
        assert!(
            fatal.message.starts_with("guest fatal error 0x30 "),
            "{}",
            fatal.message
        );
        // Stopped at the patched TDCALL: past its `out`, before its NOP.
        assert_eq!(fatal.rip, Some(patched_at + 2));
        assert_ne!(runtime_at, patched_at);
    });
    let _ = std::fs::remove_file(path);
}
