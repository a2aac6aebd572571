//! What the TD starts with: where initial memory goes and the identity map
//! and GDT in it (`plan`), the TD HOB (`hob`), the firmware and kernel
//! images checked and loaded (`image`), the MRTD of a TDVF image
//! (`mrtd`), and the vCPU's profile and initial state (`cpu`). Used once,
//! while the VM is built; nothing here runs during the TD's life.

pub mod cpu;
pub mod hob;
pub mod image;
pub mod mrtd;
pub mod plan;
