//! The accept trace from a real run: one record per accept call and per
//! pending access, attributed to firmware, kernel or kexec.

use abi::layout::FOUR_GIB;
use abi::GIB;
use tests::{boot, config_with_kernel, in_each_profile, name, scratch};
use vmm::trace::{read, Kind, Who};

#[test]
fn the_trace_records_every_accept_and_who_asked() {
    in_each_profile("the_trace_records_every_accept_and_who_asked", |p| {
        let path = scratch(&format!("{}.trace", name(p)));
        let mut c = config_with_kernel(p, 8 * GIB, "fw.accept=64M kexec=1 workload=128M");
        c = c.trace(path.clone());
        let r = boot(c);
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{:?}", r.fatal);
        let records = read(std::fs::File::open(&path).unwrap()).unwrap();
        let accepts: Vec<_> = records.iter().filter(|r| r.kind == Kind::Accept).collect();
        assert_eq!(accepts.len() as u64, r.accept.calls);
        assert_eq!(r.trace.as_ref().unwrap().records, records.len() as u64);
        assert!(
            accepts.windows(2).all(|w| w[0].t_ns <= w[1].t_ns),
            "monotonic time"
        );
        let by = |who: Who| {
            accepts
                .iter()
                .filter(|a| a.who == who && a.status == 0)
                .count()
        };
        assert!(by(Who::Firmware) > 0 && by(Who::Kernel) > 0 && by(Who::Kexec) > 0);
        // In the kexec phase: the destination, and the bounce pool that
        // tdx_kexec_finish converts back and accepts again.
        let kexec_dest = r.kexec[0].dest_gpa.unwrap();
        let pool = r
            .guest_per_generation
            .iter()
            .find(|g| g.generation == Some(0))
            .map(|g| g.counters["bounce_pool"])
            .unwrap();
        assert!(accepts
            .iter()
            .filter(|a| a.who == Who::Kexec)
            .all(|a| a.generation == 0
                && ((a.gpa >= FOUR_GIB && a.gpa >= kexec_dest)
                    || (pool..pool + (2 << 20)).contains(&a.gpa))));
        // Bytes accepted add up.
        let bytes: u64 = accepts
            .iter()
            .filter(|a| a.status == 0)
            .map(|a| 4096u64 << (9 * a.level))
            .sum();
        assert_eq!(bytes, r.accept.bytes_accepted);
    });
}

#[test]
fn the_trace_records_the_pending_access() {
    in_each_profile("the_trace_records_the_pending_access", |p| {
        let path = scratch(&format!("pending-{}.trace", name(p)));
        let mut c = config_with_kernel(p, 8 * GIB, "kexec=1 kexec_accept=off");
        c = c.trace(path.clone());
        let r = boot(c);
        assert_eq!(r.outcome, vmm::Outcome::PendingAccess);
        let records = read(std::fs::File::open(&path).unwrap()).unwrap();
        let last = records.last().unwrap();
        assert_eq!(last.kind, Kind::PendingAccess);
        assert_eq!(Some(last.gpa), r.fatal.unwrap().gpa);
        assert_eq!(last.who, Who::Kexec, "recorded during the kexec copy");
    });
}
