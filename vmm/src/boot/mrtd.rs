//! MRTD of a TDVF image: the SHA-384 the TDX module accumulates as the VMM
//! adds the image's sections (TDH.MEM.PAGE.ADD of each page, TDH.MR.EXTEND
//! of each 256-byte chunk of an MR.EXTEND section), computed over the image
//! as given, before the TDCALL patch. The order and the buffers are
//! `models::tdvf::mrtd_stream`; this module only hashes them.

use abi::tdvf::MRTD_LEN;
use models::tdvf::{mrtd_stream, TdvfError, TdvfImage};
use sha2::{Digest, Sha384};

/// The MRTD a TDX module would report for a TD built from `image` (the
/// unpatched bytes `tdvf` was parsed from). Linear in the sections'
/// memory sizes: check them against the TD's memory first.
pub fn mrtd(tdvf: &TdvfImage, image: &[u8]) -> Result<[u8; MRTD_LEN], TdvfError> {
    let mut hash = Sha384::new();
    mrtd_stream(tdvf, image, |bytes| hash.update(bytes))?;
    Ok(hash.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The td-shim image `name` from `$TDSHIM_DIR` (default: beside the
    /// repository), or `None`, said past the harness's capture; a failure
    /// under `REQUIRE_TDSHIM=1`.
    fn image(name: &str) -> Option<Vec<u8>> {
        use std::io::Write;
        let dir = std::env::var_os("TDSHIM_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/tdshim"),
            PathBuf::from,
        );
        let path = dir.join(name);
        if let Ok(bytes) = std::fs::read(&path) {
            return Some(bytes);
        }
        assert!(
            std::env::var("REQUIRE_TDSHIM").as_deref() != Ok("1"),
            "{} is absent and REQUIRE_TDSHIM=1",
            path.display()
        );
        let line = format!("SKIPPED: no td-shim image at {}\n", path.display());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        None
    }

    /// `digest` in lower-case hex, as td-shim's tool prints it.
    fn hex(digest: &[u8]) -> String {
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// MRTDs of the td-shim images, computed independently by td-shim's
    /// own `td_shim_tee_info_hash.py` (upstream 125eeab,
    /// `td-shim-tools/src/bin/td-shim-tee-info-hash/`). All nine images
    /// agree; the test hashes four (each 16 MiB) to stay quick: both
    /// payloads, with and without logging, upstream's 1 GiB-page build.
    const KNOWN: [(&str, &str); 4] = [
        ("example-2m-quiet.bin", "9374b99f0fbfc2c01eb2227069d1213f96595eee52303406e974e1fdb9149eb7a12b44dba97a6dfbf0aabe49a612650e"),
        ("example-upstream.bin", "967e93ce8425bcd99ffa3916c38ed7841380f1fabb435b4ed3ddd77610659d01847c9bdf577c5403b0900beed3eee238"),
        ("test1-2m-quiet.bin", "3649770ca63dbc32545004bfd9621fc6f1263ff3e703f4f82df39c9d3ba4829726344dc70638b9f3aa03c3e46fb7b847"),
        ("test1-2m.bin", "8edfb17f9b57c5025bd6ff8d3c94462b633ebbdda0b6b84c408b74b45cb645f21e19e0858f6d5f5888142a31eebef934"),
    ];

    #[test]
    fn matches_td_shims_own_tool_on_the_real_images() {
        let mut checked = 0;
        for (name, want) in KNOWN {
            let Some(image) = image(name) else {
                continue;
            };
            let tdvf = TdvfImage::parse(&image).unwrap();
            assert_eq!(hex(&mrtd(&tdvf, &image).unwrap()), want, "{name}");
            // The CFV (the test configuration) is added, not measured.
            checked += 1;
        }
        eprintln!("MRTD checked on {checked} images");
    }

    #[test]
    fn refuses_other_bytes() {
        let Some(image) = image("example-2m-quiet.bin") else {
            return;
        };
        let tdvf = TdvfImage::parse(&image).unwrap();
        assert!(matches!(
            mrtd(&tdvf, &image[1..]),
            Err(TdvfError::ImageLength { .. })
        ));
    }
}
