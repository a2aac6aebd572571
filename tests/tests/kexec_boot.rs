//! kexec inside the TD, in every CPU profile: the fixed chain, the bug
//! without the fix, the double accept without bitmap reuse, and segment
//! lists the sanity check must refuse.

use abi::layout::FOUR_GIB;
use abi::GIB;
use tests::{boot, config_with_kernel, in_each_profile, name};

const BLOCK: u64 = 4 << 20;

#[test]
fn a_chain_of_three_kexecs_accepts_each_destination_once() {
    in_each_profile(
        "a_chain_of_three_kexecs_accepts_each_destination_once",
        |p| {
            let r = boot(config_with_kernel(p, 8 * GIB, "kexec=3 workload=16M"));
            let ctx = format!("{}: {:?}\n{}", name(p), r.fatal, r.console);
            assert_eq!(r.outcome, vmm::Outcome::Ok, "{ctx}");
            assert_eq!(r.kexecs, 3, "{ctx}");
            assert_eq!(r.bitmap_mismatches, Some(0), "{ctx}");
            assert_eq!(
                r.accept.already_accepted, 0,
                "no page accepted twice: {ctx}"
            );
            assert!(r.timing_us.contains_key("gen3.kernel_entry"), "{ctx}");
            // Each next kernel runs in the GiB above 4 GiB its predecessor
            // mapped for it, and keeps that page directory out of its
            // allocator (it is in memory the map hands on as free).
            assert_eq!(
                r.console
                    .matches("kernel: kept 1 page-table pages an earlier kernel added")
                    .count(),
                3,
                "{ctx}"
            );
            for (i, k) in r.kexec.iter().enumerate() {
                assert_eq!(k.from_generation, i as u64);
                let dest = k.dest_gpa.expect("destination");
                // Destinations were pending: the VMM accepted them, above 4 GiB,
                // between kexec_load and kexec_jump, as much as the guest says,
                // and the bounce pool, converted back to private and accepted
                // again (tdx_kexec_finish): nothing else.
                let pool = r
                    .guest_per_generation
                    .iter()
                    .find(|g| g.generation == Some(i as u64))
                    .map(|g| g.counters["bounce_pool"])
                    .expect("the generation's counters");
                assert!(dest >= FOUR_GIB && dest % BLOCK == 0, "{ctx}");
                assert_eq!(k.vmm_lowest_gpa_accepted, Some(dest.min(pool)), "{ctx}");
                assert_eq!(
                    k.vmm_bytes_accepted,
                    k.dest_bytes_accepted + (2 << 20),
                    "{ctx}"
                );
                assert_eq!(k.shared_bytes_at_jump, 0, "{ctx}");
                assert!(k.dest_bytes_accepted > 0, "{ctx}");
                assert!(
                    k.load_us <= k.jump_us.unwrap() && k.jump_us <= k.next_entry_us,
                    "{ctx}"
                );
            }
        },
    );
}

#[test]
fn without_the_fix_the_copy_touches_pending_memory() {
    in_each_profile("without_the_fix_the_copy_touches_pending_memory", |p| {
        let r = boot(config_with_kernel(p, 8 * GIB, "kexec=1 kexec_accept=off"));
        let f = r.fatal.as_ref().expect("a fatal diagnostic");
        assert_eq!(r.outcome, vmm::Outcome::PendingAccess, "{}: {f:?}", name(p));
        let dest = r.kexec[0].dest_gpa.expect("destination");
        let gpa = f.gpa.expect("GPA");
        assert!(gpa >= FOUR_GIB, "{f:?}");
        assert!(
            (dest..dest + BLOCK).contains(&gpa),
            "{gpa:#x} not in the destination {dest:#x}"
        );
        assert_eq!(gpa, dest, "the copy starts with the first segment");
        assert_eq!(f.access, Some(vmm::report::Access::Write));
        assert_eq!(f.generation, Some(0));
        assert_eq!(f.phase, Some(vmm::report::Phase::KexecCopy));
        assert_eq!(r.kexecs, 0);
    });
}

#[test]
fn without_bitmap_reuse_the_second_kernel_accepts_twice_and_panics() {
    in_each_profile(
        "without_bitmap_reuse_the_second_kernel_accepts_twice_and_panics",
        |p| {
            let r = boot(config_with_kernel(
                p,
                8 * GIB,
                "kexec=1 kexec_reuse_bitmap=off",
            ));
            let f = r.fatal.as_ref().expect("a fatal diagnostic");
            assert_eq!(r.outcome, vmm::Outcome::GuestPanic, "{}: {f:?}", name(p));
            assert!(
                f.message.contains("TDX_PAGE_ALREADY_ACCEPTED"),
                "{}",
                f.message
            );
            assert_eq!(f.generation, Some(1));
            assert_eq!(
                r.accept.already_accepted, 1,
                "the first re-accept is the last"
            );
            assert_eq!(r.kexecs, 1);
        },
    );
}

#[test]
fn bad_segment_lists_are_refused_and_the_kernel_carries_on() {
    in_each_profile(
        "bad_segment_lists_are_refused_and_the_kernel_carries_on",
        |p| {
            for (test, why) in [
                ("overlap", "two segments overlap"),
                ("outside", "a segment lies outside RAM"),
            ] {
                let r = boot(config_with_kernel(
                    p,
                    8 * GIB,
                    &format!("kexec=1 kexec_test={test}"),
                ));
                let ctx = format!("{} {test}: {:?}", name(p), r.fatal);
                assert_eq!(r.outcome, vmm::Outcome::Ok, "{ctx}");
                assert_eq!(r.exit_code, Some(0), "{ctx}");
                assert!(
                    r.console.contains(&format!("kernel: kexec refused: {why}")),
                    "{ctx}\n{}",
                    r.console
                );
                assert_eq!(r.kexecs, 0);
                assert_eq!(r.bitmap_mismatches, Some(0), "{ctx}");
            }
        },
    );
}

#[test]
fn both_memslot_policies_give_the_same_results() {
    in_each_profile("both_memslot_policies_give_the_same_results", |p| {
        let mut reports = Vec::new();
        for on_touch in [false, true] {
            let mut c = config_with_kernel(p, 8 * GIB, "kexec=1 workload=64M");
            c = c.map_on_touch(on_touch);
            let r = boot(c);
            assert_eq!(
                r.outcome,
                vmm::Outcome::Ok,
                "{} on_touch={on_touch}: {:?}",
                name(p),
                r.fatal
            );
            assert_eq!(r.kexecs, 1);
            assert_eq!(r.bitmap_mismatches, Some(0));
            assert_eq!(r.exits.first_touch_maps > 0, on_touch);
            reports.push(r);
        }
        // Same acceptances either way: mapping policy is invisible to the guest.
        assert_eq!(
            reports[0].accept.bytes_accepted,
            reports[1].accept.bytes_accepted
        );
        assert_eq!(
            reports[0].pages.pending_bytes,
            reports[1].pages.pending_bytes
        );
        assert_eq!(reports[0].kexec[0].dest_gpa, reports[1].kexec[0].dest_gpa);
    });
}

#[test]
fn kexec_works_without_an_unaccepted_table() {
    in_each_profile("kexec_works_without_an_unaccepted_table", |p| {
        // 2 GiB: the firmware accepts all of it, so no table is installed
        // and Linux's accept_memory is a no-op.
        let r = boot(config_with_kernel(p, 2 * GIB, "kexec=2 workload=16M"));
        let ctx = format!("{}: {:?}\n{}", name(p), r.fatal, r.console);
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{ctx}");
        assert_eq!(r.exit_code, Some(0), "{ctx}");
        assert_eq!(r.kexecs, 2, "{ctx}");
        // Nothing pending but the last kernel's bounce pool (shared).
        assert_eq!(r.pages.pending_bytes, r.pages.shared_bytes, "{ctx}");
        assert_eq!(r.pages.shared_bytes, 2 << 20, "{ctx}");
        assert_eq!(r.bitmap_state, vmm::report::BitmapState::NoTable, "{ctx}");
        assert_eq!(r.bitmap_mismatches, None, "{ctx}");
        assert_eq!(r.accept.already_accepted, 0, "{ctx}");
        assert!(r.timing_us.contains_key("gen2.workload_done"), "{ctx}");
    });
}

#[test]
fn kexec_destinations_stay_below_the_linux_limit() {
    if !tests::require_kvm("kexec_destinations_stay_below_the_linux_limit") {
        return;
    }
    // One profile: the fastest this host has. (The standard profile on a
    // kvm_pvm host emulates ring 0, and a 64 TiB kexec_load then scans a
    // 4 MiB bitmap for minutes; on a VMX host it runs natively.)
    let p = *tests::profiles("kexec_destinations_stay_below_the_linux_limit")
        .last()
        .expect("a profile");
    // 64 TiB of RAM (plus the hole) reaches past MAXMEM - 1 = 2^46 - 1:
    // the destination is taken below it, as Linux's rule requires.
    let r = boot(config_with_kernel(p, 64 << 40, "fw.accept=none kexec=1"));
    let ctx = format!("{}: {:?}\n{}", name(p), r.fatal, r.console);
    assert_eq!(r.outcome, vmm::Outcome::Ok, "{ctx}");
    assert_eq!(r.kexecs, 1, "{ctx}");
    let dest = r.kexec[0].dest_gpa.expect("destination");
    assert!(
        dest + BLOCK <= models::kexec::DESTINATION_LIMIT_4LEVEL,
        "{dest:#x}"
    );
    assert!(
        dest >= (1 << 46) - 64 * BLOCK,
        "still near the top: {dest:#x}"
    );
}

#[test]
fn a_chain_of_1000_kexecs_keeps_the_memory_map_the_same_size() {
    let test = "a_chain_of_1000_kexecs_keeps_the_memory_map_the_same_size";
    if !tests::require_kvm(test) {
        return;
    }
    // One profile: the fastest this host has. On a kvm_pvm host the
    // standard profile emulates every ring-0 instruction, and the 1000
    // allocator hand-overs of 2 GiB take about 9 minutes there (5 s in
    // pvm-native); on a VMX host the standard profile runs natively.
    let p = *tests::profiles(test).last().expect("a profile");
    // Lazy, so the unaccepted table is reused a thousand times and checked
    // at the end. Each generation once added two descriptors to the map
    // it handed on, and the chain stopped at generation 251 (512 entries).
    let mut c = config_with_kernel(p, 2 * GIB, "fw.accept=none kexec=1000");
    c = c.timeout(std::time::Duration::from_secs(300));
    let r = boot(c);
    let cut = (r.console.len().saturating_sub(4000)..r.console.len())
        .find(|&i| r.console.is_char_boundary(i))
        .unwrap_or(r.console.len());
    let tail = &r.console[cut..];
    let ctx = format!("{}: {:?}\n{tail}", name(p), r.fatal);
    assert_eq!(r.outcome, vmm::Outcome::Ok, "{ctx}");
    assert_eq!(r.exit_code, Some(0), "{ctx}");
    assert_eq!(r.bitmap_state, vmm::report::BitmapState::Checked, "{ctx}");
    assert_eq!(r.bitmap_mismatches, Some(0), "{ctx}");
    assert_eq!(r.accept.already_accepted, 0, "{ctx}");
    // Counted whole; the records stop at their cap and say so.
    assert_eq!(r.kexecs, 1000, "{ctx}");
    let kept = vmm::internals::MAX_KEXEC_RECORDS;
    assert_eq!(r.kexec.len(), kept);
    assert_eq!(r.truncated.kexec, 1000 - kept as u64);
    // Every generation booted, in order, and the last one is 1000.
    let generations: Vec<u64> = r
        .console
        .lines()
        .filter_map(|l| l.strip_prefix("kernel: generation "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(generations, (0..=1000).collect::<Vec<u64>>(), "{ctx}");
    assert!(
        r.console
            .contains("kexec: generation 999 -> 1000: 2 segments at "),
        "{ctx}"
    );
    // The map each kernel was booted with: the firmware's, then one map
    // handed on unchanged from generation to generation.
    let entries: Vec<u64> = r
        .console
        .lines()
        .filter_map(|l| l.strip_prefix("kernel: booted with a memory map of "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(entries.len(), 1001, "{ctx}");
    let handed_on = entries[1];
    assert!(handed_on <= entries[0], "{entries:?}");
    assert!(
        entries[1..].iter().all(|&n| n == handed_on),
        "the map grew: {entries:?}"
    );
    // The report's counter says the same for the generations it keeps.
    for g in &r.guest_per_generation {
        if let Some(gen) = g.generation {
            assert_eq!(
                g.counters.get("memory_map_entries"),
                Some(&entries[abi::to_usize(gen)]),
                "generation {gen}"
            );
        }
    }
}
