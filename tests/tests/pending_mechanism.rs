//! `--pending memslots|uffd-poison`: the two ways the VMM keeps pending
//! memory out of the guest's reach give the same guest-visible behaviour
//! (statuses, page states, bytes, the exact GPA and access of a pending
//! access), in every CPU profile; `uffd-poison` does 4 KiB accepts without
//! memslot changes or first-touch exits. Cases that need userfaultfd with
//! UFFDIO_POISON skip with a message on hosts without it.

use abi::{GIB, PAGE_4K};
use tests::{boot, config, config_with_kernel, in_each_profile, name};
use vmm::internals::PoisonedChunks;
use vmm::PendingMechanism;
use vmm::Report;

const MIB: u64 = 1 << 20;

fn with(c: vmm::TdConfig, m: PendingMechanism) -> vmm::TdConfig {
    c.pending(Some(m))
}

/// True when this host offers `uffd-poison`; says so when it does not.
fn poison_available(test: &str) -> bool {
    match PoisonedChunks::open(1) {
        Ok(_) => true,
        Err(e) => {
            tests::skip(format_args!("{test} (uffd-poison part): {e}"));
            false
        }
    }
}

fn ok(r: &Report, ctx: &str) {
    assert_eq!(
        r.outcome,
        vmm::Outcome::Ok,
        "{ctx}: {:?}\n{}",
        r.fatal,
        r.console
    );
    assert_eq!(r.exit_code, Some(0), "{ctx}: {}", r.console);
}

/// A write to a pending page beside an accepted one: with `uffd-poison`
/// the page sits poisoned inside its chunk's memslot, and the TD still
/// stops at the exact GPA, as a write, at the writing instruction.
#[test]
fn a_poisoned_page_stops_the_td_at_its_exact_gpa() {
    let test = "a_poisoned_page_stops_the_td_at_its_exact_gpa";
    let poison = poison_available(test);
    in_each_profile(test, |p| {
        let mut rips = Vec::new();
        for m in [PendingMechanism::Memslots, PendingMechanism::UffdPoison] {
            if m == PendingMechanism::UffdPoison && !poison {
                continue;
            }
            let ctx = format!("{} {}", name(p), m.as_str());
            let r = boot(with(
                config(p, 4 * GIB, "fw.accept=none fw.selftest=touch-poisoned"),
                m,
            ));
            assert_eq!(r.host.pending_mechanism, m, "{ctx}");
            assert_eq!(
                r.outcome,
                vmm::Outcome::PendingAccess,
                "{ctx}: {}",
                r.console
            );
            let f = r.fatal.as_ref().expect("a fatal record");
            // The first pending page above 4 GiB is accepted; the write
            // goes 8 bytes into the next one.
            assert_eq!(f.gpa, Some(4 * GIB + PAGE_4K + 8), "{ctx}");
            assert_eq!(f.access, Some(vmm::report::Access::Write), "{ctx}");
            rips.push(f.rip.expect("a RIP"));
            assert_eq!(r.accept.ok_4k, 1, "{ctx}");
            if m == PendingMechanism::UffdPoison {
                assert_eq!(r.host.poisoned_chunks, 1, "{ctx}");
                assert_eq!(r.host.pages_filled, 1, "{ctx}");
                // The whole chunk was pending at its first accept: all of
                // it is poisoned, then the accepted page filled.
                assert_eq!(r.host.pages_poisoned, 512, "{ctx}");
            }
        }
        // Both mechanisms name the same instruction.
        assert!(rips.windows(2).all(|w| w[0] == w[1]), "{rips:x?}");
    });
}

/// 4 KiB acceptance with either mechanism: the same statuses, bytes,
/// page states and bitmap; `uffd-poison` installs a memslot per chunk at
/// most (none per page) and takes no first-touch exit.
#[test]
fn both_mechanisms_agree_and_uffd_poison_needs_no_slot_per_page() {
    let test = "both_mechanisms_agree_and_uffd_poison_needs_no_slot_per_page";
    if !poison_available(test) {
        return;
    }
    in_each_profile(test, |p| {
        for (fw, cmdline) in [
            (true, "fw.accept=64M fw.accept_page=4k"),
            (false, "fw.accept=none accept_memory=lazy workload=32M"),
        ] {
            let ctx = format!("{} {cmdline}", name(p));
            let make = |m| {
                let mut c = if fw {
                    config(p, 256 * MIB, cmdline)
                } else {
                    config_with_kernel(p, GIB, cmdline)
                };
                c = c.sept_level(vmm::SeptLevel::L4K);
                with(c, m)
            };
            let slots = boot(make(PendingMechanism::Memslots));
            let poison = boot(make(PendingMechanism::UffdPoison));
            ok(&slots, &ctx);
            ok(&poison, &ctx);
            assert_eq!(slots.host.pending_mechanism, PendingMechanism::Memslots);
            assert_eq!(poison.host.pending_mechanism, PendingMechanism::UffdPoison);
            let (a, b) = (&slots.accept, &poison.accept);
            assert_eq!(
                (
                    a.calls,
                    a.ok_4k,
                    a.ok_2m,
                    a.size_mismatch,
                    a.already_accepted
                ),
                (
                    b.calls,
                    b.ok_4k,
                    b.ok_2m,
                    b.size_mismatch,
                    b.already_accepted
                ),
                "{ctx}"
            );
            assert_eq!(
                slots.pages.accepted_bytes, poison.pages.accepted_bytes,
                "{ctx}"
            );
            assert_eq!(slots.guest, poison.guest, "{ctx}");
            if !fw {
                assert_eq!(
                    poison.bitmap_mismatches,
                    Some(0),
                    "{ctx}: {:?}",
                    poison.bitmap_error
                );
            }
            // Every page filled was a 4 KiB accept (initial memory aside,
            // nothing else is accepted), in chunks registered once each.
            assert_eq!(poison.host.pages_filled, b.ok_4k, "{ctx}");
            let chunks = poison.host.poisoned_chunks;
            assert!(
                chunks > 0 && chunks * 512 >= b.ok_4k,
                "{ctx}: {chunks} chunks"
            );
            assert_eq!(poison.exits.first_touch_maps, 0, "{ctx}");
            assert!(
                poison.host.memslots_installed <= 2 * chunks + 4,
                "{ctx}: {} installs for {chunks} chunks",
                poison.host.memslots_installed
            );
            assert!(
                poison.host.memslots_peak < 8,
                "{ctx}: {}",
                poison.host.memslots_peak
            );
            // Pending memory costs nothing either way.
            let slack = 4 * MIB;
            assert!(
                poison.host.guest_resident_bytes <= slots.host.guest_resident_bytes + slack,
                "{ctx}: {} vs {}",
                poison.host.guest_resident_bytes,
                slots.host.guest_resident_bytes
            );
        }
    });
}

/// Asking for a mechanism by name is honoured and reported; `auto` says
/// why it fell back when it did.
#[test]
fn the_report_names_the_mechanism_that_ran() {
    let test = "the_report_names_the_mechanism_that_ran";
    let poison = poison_available(test);
    in_each_profile(test, |p| {
        let r = boot(with(config(p, 128 * MIB, ""), PendingMechanism::Memslots));
        ok(&r, name(p));
        assert_eq!(r.host.pending_mechanism, PendingMechanism::Memslots);
        assert_eq!(
            r.host.pending_fallback.as_deref(),
            Some("--pending memslots")
        );
        assert_eq!(r.inputs.pending, Some(PendingMechanism::Memslots));
        let auto = boot(config(p, 128 * MIB, ""));
        ok(&auto, name(p));
        assert_eq!(auto.inputs.pending, None);
        if poison {
            assert_eq!(auto.host.pending_mechanism, PendingMechanism::UffdPoison);
            assert_eq!(auto.host.pending_fallback, None);
        } else {
            assert_eq!(auto.host.pending_mechanism, PendingMechanism::Memslots);
            assert!(auto.host.pending_fallback.is_some());
        }
    });
}
