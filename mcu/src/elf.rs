//! Flash, RAM and the marker address of a firmware ELF.

/// Sizes and the marker address of a firmware ELF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    /// Bytes in flash: every allocated section with contents (vector table,
    /// code, read-only data, the initial values of `.data`, boot2).
    pub flash: u64,
    /// Bytes of static RAM: every allocated section placed in RAM
    /// (0x2000_0000..0x4000_0000): `.data`, `.bss`, `.uninit`.
    pub ram: u64,
    /// Address of `fdgr_mark` (Thumb bit cleared).
    pub marker: Option<u64>,
}

/// Reads section sizes and `fdgr_mark` from an ELF file.
pub fn elf_info(bytes: &[u8]) -> Result<ElfInfo, String> {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SectionFlags, SectionKind};
    let file = object::File::parse(bytes).map_err(|e| format!("not an ELF file: {e}"))?;
    let (mut flash, mut ram) = (0, 0);
    for s in file.sections() {
        let alloc = match s.flags() {
            SectionFlags::Elf { sh_flags } => sh_flags & u64::from(object::elf::SHF_ALLOC) != 0,
            _ => false,
        };
        if !alloc || s.size() == 0 {
            continue;
        }
        if (0x2000_0000..0x4000_0000).contains(&s.address()) {
            ram += s.size();
        }
        if s.kind() != SectionKind::UninitializedData {
            flash += s.size();
        }
    }
    let marker = file
        .symbols()
        .find(|s| s.name() == Ok("fdgr_mark"))
        .map(|s| s.address() & !1);
    Ok(ElfInfo { flash, ram, marker })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_an_elf() {
        assert!(elf_info(b"not an elf").is_err());
        assert!(elf_info(&[]).is_err());
    }
}
