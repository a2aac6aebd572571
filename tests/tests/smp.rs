//! A TD with several vCPUs, in every CPU profile: lazy and eager boots on
//! 4 vCPUs with a parallel workload, a kexec chain that keeps its CPUs,
//! the race Linux's `accepting_list` prevents (`unaccepted_lock=none`),
//! firmware parallel acceptance giving the serial page states, and a stop
//! raised on a vCPU other than 0.

use abi::GIB;
use tests::{boot, config, config_with_kernel, in_each_profile, name};
use vmm::Report;

fn ctx(p: vmm::ProfileChoice, r: &Report) -> String {
    format!("{}: {:?}\n{}", name(p), r.fatal, r.console)
}

fn with_cpus(c: vmm::TdConfig, n: u32) -> vmm::TdConfig {
    c.cpus(n)
}

#[test]
fn four_vcpus_boot_lazy_and_eager_with_a_parallel_workload() {
    in_each_profile(
        "four_vcpus_boot_lazy_and_eager_with_a_parallel_workload",
        |p| {
            for mode in ["lazy", "eager"] {
                let cmdline = format!("accept_memory={mode} workload=256M");
                let r = boot(with_cpus(config_with_kernel(p, 8 * GIB, &cmdline), 4));
                let c = ctx(p, &r);
                assert_eq!(r.outcome, vmm::Outcome::Ok, "{mode}: {c}");
                assert_eq!(r.vcpus, 4, "{c}");
                assert_eq!(r.per_vcpu.len(), 4, "{c}");
                assert!(r.console.contains("kernel: 4 CPUs online"), "{c}");
                assert_eq!(r.guest.get("workload_bytes"), Some(&(256 << 20)), "{c}");
                // Every vCPU ran guest code and the APs accepted memory (the
                // firmware's parallel accept, and their share of the workload).
                for v in &r.per_vcpu {
                    assert!(v.exits > 0, "vCPU {} never exited: {c}", v.index);
                    assert!(v.accepts > 0, "vCPU {} accepted nothing: {c}", v.index);
                }
                assert_eq!(r.bitmap_mismatches, Some(0), "{c}");
                assert_eq!(r.accept.already_accepted, 0, "{c}");
                let per_vcpu_busy: u64 = r.per_vcpu.iter().map(|v| v.busy).sum();
                assert_eq!(per_vcpu_busy, r.accept.busy + r.accept.busy_injected, "{c}");
            }
        },
    );
}

#[test]
fn a_kexec_chain_keeps_all_cpus() {
    in_each_profile("a_kexec_chain_keeps_all_cpus", |p| {
        let r = boot(with_cpus(
            config_with_kernel(p, 8 * GIB, "kexec=3 workload=32M"),
            4,
        ));
        let c = ctx(p, &r);
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{c}");
        assert_eq!(r.kexecs, 3, "{c}");
        assert_eq!(r.accept.already_accepted, 0, "{c}");
        assert_eq!(r.bitmap_mismatches, Some(0), "{c}");
        // Each generation brought all four CPUs online again.
        assert_eq!(r.console.matches("kernel: 4 CPUs online").count(), 4, "{c}");
    });
}

#[test]
fn without_accepting_list_two_cpus_accept_one_unit_and_the_kernel_panics() {
    in_each_profile(
        "without_accepting_list_two_cpus_accept_one_unit_and_the_kernel_panics",
        |p| {
            // With Linux's protocol, the same race is harmless.
            for policy in ["list", "global"] {
                let cmdline = format!("kernel.selftest=accept-race unaccepted_lock={policy}");
                let r = boot(with_cpus(config_with_kernel(p, 8 * GIB, &cmdline), 4));
                let c = ctx(p, &r);
                assert_eq!(r.outcome, vmm::Outcome::Ok, "{policy}: {c}");
                assert!(r.console.contains("accept-race: every CPU returned"), "{c}");
                assert_eq!(r.accept.already_accepted, 0, "{policy}: {c}");
                assert_eq!(r.accept.busy, 0, "{policy}: {c}");
                assert_eq!(r.bitmap_mismatches, Some(0), "{c}");
            }
            let r = boot(with_cpus(
                config_with_kernel(
                    p,
                    8 * GIB,
                    "kernel.selftest=accept-race unaccepted_lock=none",
                ),
                4,
            ));
            let c = ctx(p, &r);
            assert_eq!(r.outcome, vmm::Outcome::GuestPanic, "{c}");
            let f = r.fatal.as_ref().expect("a fatal diagnostic");
            assert!(f.message.contains("TDX: Failed to accept memory"), "{c}");
            assert!(
                f.message.contains("TDX_OPERAND_BUSY")
                    || f.message.contains("TDX_PAGE_ALREADY_ACCEPTED"),
                "{c}"
            );
            assert!(
                r.accept.busy + r.accept.already_accepted > 0,
                "the VMM saw the double accept: {c}"
            );
        },
    );
}

#[test]
fn firmware_parallel_acceptance_gives_the_serial_page_states() {
    in_each_profile(
        "firmware_parallel_acceptance_gives_the_serial_page_states",
        |p| {
            let serial = boot(with_cpus(config(p, 3 * GIB, "fw.accept_cpus=1"), 4));
            let parallel = boot(with_cpus(config(p, 3 * GIB, ""), 4));
            for r in [&serial, &parallel] {
                assert_eq!(r.outcome, vmm::Outcome::Ok, "{}", ctx(p, r));
            }
            assert_eq!(serial.pages.accepted_bytes, parallel.pages.accepted_bytes);
            assert_eq!(serial.pages.pending_bytes, parallel.pages.pending_bytes);
            assert_eq!(serial.accept.bytes_accepted, parallel.accept.bytes_accepted);
            assert_eq!(parallel.accept.already_accepted, 0);
            // Serial: only the BSP accepted; parallel: every vCPU did.
            assert!(
                serial.per_vcpu[1..].iter().all(|v| v.accepts == 0),
                "{:?}",
                serial.per_vcpu
            );
            assert!(
                parallel.per_vcpu.iter().all(|v| v.accepts > 0),
                "{:?}",
                parallel.per_vcpu
            );
            // Everything below the hole is accepted either way.
            assert_eq!(parallel.pages.pending_bytes, 0, "{}", ctx(p, &parallel));
        },
    );
}

#[test]
fn a_stop_on_another_vcpu_names_it_with_the_exact_gpa() {
    in_each_profile("a_stop_on_another_vcpu_names_it_with_the_exact_gpa", |p| {
        let r = boot(with_cpus(
            config_with_kernel(p, 8 * GIB, "kernel.selftest=ap-touch-pending"),
            3,
        ));
        let c = ctx(p, &r);
        assert_eq!(r.outcome, vmm::Outcome::PendingAccess, "{c}");
        let f = r.fatal.as_ref().expect("a fatal diagnostic");
        assert_eq!(f.vcpu, Some(2), "{c}");
        assert_eq!(f.access, Some(vmm::report::Access::Read), "{c}");
        let gpa = f.gpa.expect("a GPA");
        assert!(
            r.console.contains(&format!("reads {gpa:#x}")),
            "the GPA the kernel named: {c}"
        );
        assert!(f.rip.is_some(), "{c}");
    });
}
