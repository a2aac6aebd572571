//! Firmware-to-kernel hand-off under KVM, in every CPU profile: the kernel
//! is loaded (relocated) and entered with the boot info and system table.

use abi::GIB;
use tests::{boot, config_with_kernel, in_each_profile, name};

#[test]
fn firmware_loads_and_enters_the_kernel() {
    in_each_profile("firmware_loads_and_enters_the_kernel", |p| {
        for fw_accept in ["all", "none"] {
            let r = boot(config_with_kernel(
                p,
                2 * GIB,
                &format!("fw.accept={fw_accept}"),
            ));
            let ctx = format!(
                "{} fw.accept={fw_accept}: {:?}\n{}",
                name(p),
                r.fatal,
                r.console
            );
            assert_eq!(r.outcome, "ok", "{ctx}");
            assert_eq!(r.exit_code, Some(0), "{ctx}");
            let fw_done = r.timing_us["fw_done"];
            let entry = r
                .timing_us
                .get("kernel_entry")
                .copied()
                .expect("kernel_entry mark");
            assert!(entry >= fw_done, "{ctx}");
            assert!(
                r.console.contains("kernel: generation 0 loaded at"),
                "{ctx}"
            );
            if fw_accept == "none" {
                // The kernel, its boot info and the system table fit in the
                // firmware's scratch memory: nothing had to be accepted.
                assert_eq!(r.accept.calls, 0, "{ctx}");
            }
        }
    });
}
