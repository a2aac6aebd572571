//! The TDVF reader on real td-shim images (`../shared/tdshim/*.bin`,
//! test data kept outside the repository): their metadata table and their
//! TDCALL sites. Read from `$TDSHIM_DIR` (default: beside the repository);
//! skips, saying so, when the images are absent, fails instead under
//! `REQUIRE_TDSHIM=1`.

use abi::tdcall::{TDCALL_INSN, TDCALL_PATCH};
use abi::tdvf::{TdvfSectionType as T, ATTR_MR_EXTEND};
use models::tdvf::{find_tdcalls, patch_tdcalls, TdcallSite, TdvfImage};
use std::path::PathBuf;

fn dir() -> PathBuf {
    std::env::var_os("TDSHIM_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/tdshim"),
        PathBuf::from,
    )
}

/// Says, past the harness's capture, that the images are absent; a
/// failure under `REQUIRE_TDSHIM=1`.
fn absent(what: &str) {
    use std::io::Write;
    assert!(
        std::env::var("REQUIRE_TDSHIM").as_deref() != Ok("1"),
        "{what} is absent and REQUIRE_TDSHIM=1"
    );
    let line = format!("SKIPPED: no td-shim image: {what} is absent\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn images() -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        absent(&dir().display().to_string());
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn example_image_has_the_documented_table() {
    let path = dir().join("example-2m-quiet.bin");
    let Ok(img) = std::fs::read(&path) else {
        absent(&path.display().to_string());
        return;
    };
    let t = TdvfImage::parse(&img).unwrap();
    assert!(t.located().guided_table && t.located().tdshim_pointer);
    assert_eq!(t.base_gpa(), 0xff00_0000);
    assert_eq!(t.descriptor_offset(), 0xcae010);
    let rows: Vec<_> = t
        .sections()
        .iter()
        .map(|s| {
            (
                s.kind,
                s.data_offset,
                s.raw_size,
                s.gpa,
                s.mem_size,
                s.attributes,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                T::Bfv,
                0x81000,
                0xf7f000,
                0xff08_1000,
                0xf7f000,
                ATTR_MR_EXTEND
            ),
            (T::Cfv, 0, 0x40000, 0xff00_0000, 0x40000, 0),
            (T::TempMem, 0, 0, 0xff04_1000, 0x20000, 0),
            (T::TempMem, 0, 0, 0xff06_1000, 0x20000, 0),
            (T::TempMem, 0, 0, 0xff04_0000, 0x1000, 0),
            (T::TdHob, 0, 0, 0x80_0000, 0x20000, 0),
        ]
    );
}

#[test]
fn every_image_parses_and_has_ten_tdcalls_in_its_bfv() {
    for (name, mut img) in images() {
        let t = TdvfImage::parse(&img).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut sites: Vec<TdcallSite> = Vec::new();
        find_tdcalls(&t, &img, |s| sites.push(s)).unwrap();
        let offsets: Vec<String> = sites.iter().map(|s| format!("{:#x}", s.offset)).collect();
        eprintln!(
            "{name}: {} sections, {} TDCALLs at {}",
            t.sections().len(),
            sites.len(),
            offsets.join(" ")
        );
        assert_eq!(sites.len(), 10, "{name}");
        if name == "example-upstream.bin" {
            // td-shim.md section 6, the offsets in `final-elf.bin`.
            let want = [
                0x87364, 0x873e7, 0x87487, 0xcbd5d2, 0xcbd648, 0xcbf6c4, 0xcbf747, 0xcbf7e7,
                0xfff190, 0xfff1fd,
            ];
            let got: Vec<u64> = sites.iter().map(|s| s.offset).collect();
            assert_eq!(got, want);
        }
        // Whole-file count: the BFV holds every one (none in the CFV).
        let all = img.windows(4).filter(|w| *w == TDCALL_INSN).count();
        assert_eq!(all, 10, "{name}");
        for s in &sites {
            assert_eq!(
                s.addr,
                t.base_gpa() + s.offset,
                "{name}: the BFV is in place"
            );
        }
        assert_eq!(patch_tdcalls(&t, &mut img, |_| {}).unwrap(), 10);
        assert_eq!(img.windows(4).filter(|w| *w == TDCALL_INSN).count(), 0);
        for s in &sites {
            let at = usize::try_from(s.offset).unwrap();
            assert_eq!(img[at..at + 4], TDCALL_PATCH);
        }
        // The reset vector's two sites (end of the image), as td-shim.md
        // section 6 lists them for every build.
        let tail: Vec<u64> = sites
            .iter()
            .map(|s| s.offset)
            .filter(|&o| o >= 0xfff000)
            .collect();
        assert_eq!(tail, [0xfff190, 0xfff1fd], "{name}");
    }
}
