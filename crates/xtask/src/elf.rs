//! Just enough ELF reading to tell a static executable from a dynamic one: an
//! executable that needs a dynamic loader names it in a PT_INTERP program header
//! (ELF gABI, "Program Header"). Static-pie binaries have PT_DYNAMIC but no
//! PT_INTERP, and run FROM scratch; that is the property images need.

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};

const PT_INTERP: u32 = 3;

/// Returns the dynamic loader `path` asks for, or `None` if it is static.
pub fn interpreter(path: &Path) -> Result<Option<String>> {
    let bytes =
        fs::read(path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
    parse_interpreter(&bytes).ok_or_else(|| {
        Error::new(format!(
            "{} is not a 64-bit little-endian ELF executable",
            path.display()
        ))
    })
}

/// `None` if `bytes` is not a well-formed ELF64 LE file; `Some(loader)` otherwise.
fn parse_interpreter(bytes: &[u8]) -> Option<Option<String>> {
    if bytes.get(..4)? != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    // Elf64_Ehdr: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? == PT_INTERP {
            // Elf64_Phdr: p_offset at +8, p_filesz at +32.
            let offset = usize::try_from(u64_at(ph + 8)?).ok()?;
            let size = usize::try_from(u64_at(ph + 32)?).ok()?;
            let name = bytes.get(offset..offset.checked_add(size)?)?;
            let name = String::from_utf8_lossy(name);
            return Some(Some(name.trim_end_matches('\0').to_string()));
        }
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PT_LOAD: u32 = 1;

    /// A minimal ELF64 LE image: header, the given program headers, then `tail`.
    fn elf(program_headers: &[(u32, u64, u64)], tail: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // ELFDATA2LSB
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(program_headers.len() as u16).to_le_bytes());
        for &(p_type, offset, size) in program_headers {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&p_type.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[32..40].copy_from_slice(&size.to_le_bytes());
            b.extend(ph);
        }
        b.extend_from_slice(tail);
        b
    }

    #[test]
    fn a_dynamic_executable_names_its_loader() {
        let loader = b"/lib64/ld-linux-x86-64.so.2\0";
        let at = 64 + 2 * 56;
        let bytes = elf(
            &[(PT_LOAD, 0, 0), (PT_INTERP, at, loader.len() as u64)],
            loader,
        );
        assert_eq!(
            parse_interpreter(&bytes),
            Some(Some("/lib64/ld-linux-x86-64.so.2".to_string()))
        );
    }

    #[test]
    fn a_static_executable_has_no_loader() {
        let bytes = elf(
            &[(PT_LOAD, 0, 0), (2 /* PT_DYNAMIC: static-pie */, 0, 0)],
            b"",
        );
        assert_eq!(parse_interpreter(&bytes), Some(None));
    }

    #[test]
    fn truncated_or_foreign_files_are_not_elf() {
        assert_eq!(parse_interpreter(b"#!/bin/sh\n"), None);
        let mut truncated = elf(&[(PT_INTERP, 1000, 10)], b"");
        assert_eq!(parse_interpreter(&truncated), None);
        truncated.truncate(70);
        assert_eq!(parse_interpreter(&truncated), None);
    }

    #[test]
    fn a_non_elf_file_is_an_error_that_names_it() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let err = interpreter(&manifest).expect_err("Cargo.toml is not ELF");
        assert!(err.message.contains("Cargo.toml"), "{}", err.message);
    }
}
