//! Kernel functions (kfuncs) the programs call, bound to the running kernel: the
//! compiled object carries each kfunc call as `call -1` with an ELF relocation against
//! the function's name; binding one finds the function's BTF id in vmlinux or a module
//! and rewrites the call the way the verifier expects (`src_reg` = kfunc call, `imm` =
//! BTF id, `off` = index of the module's BTF fd in the load's `fd_array`, 0 = vmlinux).
//!
//! aya 0.14 neither relocates kfunc calls nor passes an `fd_array`; this file does the
//! first on the object's bytes, and `loader.rs` loads the programs that need the second.

use std::collections::BTreeMap;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::Path;

use super::btf::{Base, Btf};
use super::sys;

const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
const SHT_REL: u32 = 9;
const BTF_DIR: &str = "/sys/kernel/btf";

#[derive(Debug, thiserror::Error)]
pub enum KfuncError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("kernel BTF {name}: {source}")]
    Btf {
        name: String,
        source: super::btf::BtfError,
    },
    #[error("kernel function {0} not found in vmlinux or any loaded module's BTF")]
    NotFound(String),
    #[error("module {0} has BTF in {BTF_DIR} but no kernel BTF object of that name")]
    NoModuleBtf(String),
    #[error(transparent)]
    Sys(#[from] sys::SysError),
    #[error("malformed BPF object: {0}")]
    Elf(&'static str),
    #[error("configured: --translation-check stack-only")]
    Disabled,
}

type Result<T> = std::result::Result<T, KfuncError>;

/// Where one kfunc lives in the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub btf_id: u32,
    /// 0 for vmlinux, else the index of the module's BTF fd in `Bindings::fd_array`.
    pub fd_index: i16,
}

/// Every kfunc bound, with the module BTF fds their calls refer to.
#[derive(Debug, Default)]
pub struct Bindings {
    pub by_name: BTreeMap<String, Binding>,
    /// Index 0 is unused (off = 0 means vmlinux); kept open for the programs' loads.
    modules: Vec<OwnedFd>,
}

impl Bindings {
    /// The `fd_array` for `BPF_PROG_LOAD`: slot 0 unused, then the module BTF fds.
    pub fn fd_array(&self) -> Vec<i32> {
        std::iter::once(-1)
            .chain(self.modules.iter().map(|fd| fd.as_raw_fd()))
            .collect()
    }
}

/// Find every name in `names` in the running kernel's BTF.
pub fn bind(names: &[&str]) -> Result<Bindings> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| KfuncError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let vmlinux_data = read(&Path::new(BTF_DIR).join("vmlinux"))?;
    let btf_err = |name: &str| {
        let name = name.to_string();
        move |source| KfuncError::Btf { name, source }
    };
    let vmlinux = Btf::parse(&vmlinux_data, Base::default()).map_err(btf_err("vmlinux"))?;
    let mut bindings = Bindings::default();
    let mut missing = Vec::new();
    for name in names {
        match vmlinux.function_id(name).map_err(btf_err("vmlinux"))? {
            Some(btf_id) => {
                bindings.by_name.insert(
                    name.to_string(),
                    Binding {
                        btf_id,
                        fd_index: 0,
                    },
                );
            }
            None => missing.push(*name),
        }
    }
    if missing.is_empty() {
        return Ok(bindings);
    }
    let base = vmlinux.as_base().map_err(btf_err("vmlinux"))?;
    let modules = std::fs::read_dir(BTF_DIR).map_err(|source| KfuncError::Read {
        path: BTF_DIR.to_string(),
        source,
    })?;
    for entry in modules.filter_map(|e| e.ok()) {
        let Ok(module) = entry.file_name().into_string() else {
            continue;
        };
        if module == "vmlinux" || missing.is_empty() {
            continue;
        }
        let data = read(&entry.path())?;
        let btf = Btf::parse(&data, base).map_err(btf_err(&module))?;
        let mut found_here = Vec::new();
        for name in &missing {
            if let Some(btf_id) = btf.function_id(name).map_err(btf_err(&module))? {
                found_here.push((*name, btf_id));
            }
        }
        if found_here.is_empty() {
            continue;
        }
        bindings.modules.push(module_btf_fd(&module)?);
        let fd_index = bindings.modules.len() as i16;
        for (name, btf_id) in found_here {
            bindings
                .by_name
                .insert(name.to_string(), Binding { btf_id, fd_index });
            missing.retain(|m| *m != name);
        }
    }
    match missing.first() {
        Some(name) => Err(KfuncError::NotFound(name.to_string())),
        None => Ok(bindings),
    }
}

/// An fd of the kernel BTF object of `module`, found by walking the kernel's BTF ids.
fn module_btf_fd(module: &str) -> Result<OwnedFd> {
    let mut id = 0;
    while let Some(next) = sys::btf_next_id(id)? {
        id = next;
        // An object can go away between the walk and the open (a module unloading).
        let Ok(fd) = sys::btf_fd_by_id(id) else {
            continue;
        };
        if sys::kernel_btf_name(fd.as_fd())?.as_deref() == Some(module) {
            return Ok(fd);
        }
    }
    Err(KfuncError::NoModuleBtf(module.to_string()))
}

/// One call of a kfunc in the object: where its instruction is in the file, and whom it
/// calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSite {
    pub file_offset: usize,
    pub name: String,
}

/// The kfunc calls in an ELF BPF object: relocations of call instructions against
/// undefined symbols whose names are in `names`.
pub fn call_sites(elf: &[u8], names: &[&str]) -> Result<Vec<CallSite>> {
    let elf = Elf::new(elf)?;
    let mut sites = Vec::new();
    for rel in (0..elf.section_count).filter(|i| elf.section_type(*i) == Some(SHT_REL)) {
        let (rel_off, rel_size) = elf.section_range(rel)?;
        let symtab = elf.section_link(rel)?;
        let target = elf.section_info(rel)?;
        let (target_off, target_size) = elf.section_range(target)?;
        for entry in (rel_off..rel_off + rel_size).step_by(16) {
            let offset = elf.u64(entry)? as usize;
            let symbol = (elf.u64(entry + 8)? >> 32) as usize;
            let name = elf.symbol_name(symtab, symbol)?;
            if !names.contains(&name) {
                continue;
            }
            if offset + 8 > target_size {
                return Err(KfuncError::Elf("relocation outside its section"));
            }
            sites.push(CallSite {
                file_offset: target_off + offset,
                name: name.to_string(),
            });
        }
    }
    Ok(sites)
}

/// Rewrite each call site in `elf` as a kfunc call per `bindings`; call sites of kfuncs
/// not bound get BTF id 0, which the verifier refuses: a program that calls one cannot
/// load, and every other program still can.
pub fn patch(elf: &mut [u8], sites: &[CallSite], bindings: &Bindings) -> Result<()> {
    for site in sites {
        let binding = bindings
            .by_name
            .get(&site.name)
            .copied()
            .unwrap_or(Binding {
                btf_id: 0,
                fd_index: 0,
            });
        let insn = elf
            .get_mut(site.file_offset..site.file_offset + 8)
            .ok_or(KfuncError::Elf("call site outside the object"))?;
        // BPF_JMP | BPF_CALL
        if insn[0] != 0x85 {
            return Err(KfuncError::Elf(
                "kfunc relocation on a non-call instruction",
            ));
        }
        insn[1] = (insn[1] & 0x0f) | (BPF_PSEUDO_KFUNC_CALL << 4);
        insn[2..4].copy_from_slice(&binding.fd_index.to_le_bytes());
        insn[4..8].copy_from_slice(&binding.btf_id.to_le_bytes());
    }
    Ok(())
}

/// A bounds-checked view of an ELF64 little-endian file: the few header fields the
/// relocation walk needs, read without alignment requirements.
struct Elf<'a> {
    data: &'a [u8],
    shoff: usize,
    shentsize: usize,
    section_count: usize,
}

impl<'a> Elf<'a> {
    fn new(data: &'a [u8]) -> Result<Self> {
        if data.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
            return Err(KfuncError::Elf("not a 64-bit little-endian ELF file"));
        }
        let mut elf = Elf {
            data,
            shoff: 0,
            shentsize: 0,
            section_count: 0,
        };
        elf.shoff = elf.u64(0x28)? as usize;
        elf.shentsize = elf.u16(0x3a)? as usize;
        elf.section_count = elf.u16(0x3c)? as usize;
        if elf.shentsize < 64 {
            return Err(KfuncError::Elf("section header entries too small"));
        }
        let table_end = elf
            .shentsize
            .checked_mul(elf.section_count)
            .and_then(|size| size.checked_add(elf.shoff));
        if table_end.is_none_or(|end| end > data.len()) {
            return Err(KfuncError::Elf("section header table outside the file"));
        }
        Ok(elf)
    }

    fn bytes<const N: usize>(&self, at: usize) -> Result<[u8; N]> {
        self.data
            .get(
                at..at
                    .checked_add(N)
                    .ok_or(KfuncError::Elf("offset overflow"))?,
            )
            .and_then(|b| b.try_into().ok())
            .ok_or(KfuncError::Elf("read past the end"))
    }
    fn u16(&self, at: usize) -> Result<u16> {
        self.bytes::<2>(at).map(u16::from_le_bytes)
    }
    fn u32(&self, at: usize) -> Result<u32> {
        self.bytes::<4>(at).map(u32::from_le_bytes)
    }
    fn u64(&self, at: usize) -> Result<u64> {
        self.bytes::<8>(at).map(u64::from_le_bytes)
    }

    fn header(&self, index: usize) -> Result<usize> {
        if index >= self.section_count {
            return Err(KfuncError::Elf("section index out of range"));
        }
        Ok(self.shoff + index * self.shentsize)
    }
    fn section_type(&self, index: usize) -> Option<u32> {
        self.u32(self.header(index).ok()? + 4).ok()
    }
    fn section_range(&self, index: usize) -> Result<(usize, usize)> {
        let h = self.header(index)?;
        let (off, size) = (self.u64(h + 24)? as usize, self.u64(h + 32)? as usize);
        if off
            .checked_add(size)
            .is_none_or(|end| end > self.data.len())
        {
            return Err(KfuncError::Elf("section outside the file"));
        }
        Ok((off, size))
    }
    fn section_link(&self, index: usize) -> Result<usize> {
        Ok(self.u32(self.header(index)? + 40)? as usize)
    }
    fn section_info(&self, index: usize) -> Result<usize> {
        Ok(self.u32(self.header(index)? + 44)? as usize)
    }

    /// The name of symbol `index` of the symbol table in section `symtab`.
    fn symbol_name(&self, symtab: usize, index: usize) -> Result<&'a str> {
        let (sym_off, sym_size) = self.section_range(symtab)?;
        let at = index * 24;
        if at + 24 > sym_size {
            return Err(KfuncError::Elf("symbol index out of range"));
        }
        let name_off = self.u32(sym_off + at)? as usize;
        let (str_off, str_size) = self.section_range(self.section_link(symtab)?)?;
        let strings = &self.data[str_off..str_off + str_size];
        let rest = strings
            .get(name_off..)
            .ok_or(KfuncError::Elf("symbol name outside the string table"))?;
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(KfuncError::Elf("unterminated symbol name"))?;
        std::str::from_utf8(&rest[..end]).map_err(|_| KfuncError::Elf("symbol name not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_object_calls_the_conntrack_kfuncs_and_patches_cleanly() {
        let object = super::super::loader::object();
        let names = super::super::loader::KFUNCS;
        let sites = call_sites(object, names).unwrap();
        for name in names {
            assert!(sites.iter().any(|s| s.name == *name), "no call of {name}");
        }
        let mut bindings = Bindings::default();
        bindings.by_name.insert(
            names[0].to_string(),
            Binding {
                btf_id: 4242,
                fd_index: 1,
            },
        );
        let mut copy = object.to_vec();
        patch(&mut copy, &sites, &bindings).unwrap();
        for site in &sites {
            let insn = &copy[site.file_offset..site.file_offset + 8];
            assert_eq!(insn[1] >> 4, BPF_PSEUDO_KFUNC_CALL);
            let (off, imm) = if site.name == names[0] {
                (1i16, 4242u32)
            } else {
                (0, 0)
            };
            assert_eq!(i16::from_le_bytes([insn[2], insn[3]]), off);
            assert_eq!(u32::from_le_bytes(insn[4..8].try_into().unwrap()), imm);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(call_sites(b"not an elf", &["x"]).is_err());
        let mut truncated = super::super::loader::object().to_vec();
        truncated.truncate(200);
        assert!(call_sites(&truncated, &["x"]).is_err());
    }
}
