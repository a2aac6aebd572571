//! The CMOS device that TDG.VP.VMCALL<Instruction.IO> reaches at ports
//! 0x70 (index) and 0x71 (data): 128 bytes of RAM, zero at start, with no
//! clock behind them. td-shim's test payload writes index 0x32 and reads,
//! increments and reads back the data port with 1- and 4-byte accesses.

use abi::vmcall::{CMOS_DATA_PORT, CMOS_INDEX_PORT, CMOS_LEN};

/// Bits 6:0 of the index select the byte; bit 7 (NMI disable) is ignored.
const INDEX_MASK: u8 = 0x7f;

/// The device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmos {
    index: u8,
    ram: [u8; CMOS_LEN],
}

impl Default for Cmos {
    fn default() -> Self {
        Cmos {
            index: 0,
            ram: [0; CMOS_LEN],
        }
    }
}

impl Cmos {
    /// Whether `port` is one of the device's.
    pub fn claims(port: u16) -> bool {
        port == CMOS_INDEX_PORT || port == CMOS_DATA_PORT
    }

    /// A 1-byte read of `port` (one of the device's): the selected byte
    /// at the data port; the index port is write-only and reads as 0xff.
    pub fn read(&self, port: u16) -> u8 {
        if port == CMOS_DATA_PORT {
            self.ram[usize::from(self.index)]
        } else {
            0xff
        }
    }

    /// A 1-byte write of `value` to `port` (one of the device's).
    pub fn write(&mut self, port: u16, value: u8) {
        if port == CMOS_DATA_PORT {
            self.ram[usize::from(self.index)] = value;
        } else {
            self.index = value & INDEX_MASK;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_selects_the_byte_the_data_port_reaches() {
        let mut c = Cmos::default();
        c.write(CMOS_INDEX_PORT, 0x32);
        assert_eq!(c.read(CMOS_DATA_PORT), 0, "zero at start");
        c.write(CMOS_DATA_PORT, 0x21);
        assert_eq!(c.read(CMOS_DATA_PORT), 0x21);
        // NMI disable (bit 7) does not change the byte selected.
        c.write(CMOS_INDEX_PORT, 0x80 | 0x32);
        assert_eq!(c.read(CMOS_DATA_PORT), 0x21);
        c.write(CMOS_INDEX_PORT, 0x7f);
        assert_eq!(c.read(CMOS_DATA_PORT), 0);
        assert_eq!(c.read(CMOS_INDEX_PORT), 0xff, "write-only");
        assert!(Cmos::claims(0x70) && Cmos::claims(0x71) && !Cmos::claims(0x72));
    }
}
