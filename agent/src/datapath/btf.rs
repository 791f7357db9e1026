//! Just enough of the kernel's BTF (`/sys/kernel/btf/*`) to find a kernel function's
//! type id by name: the id a kfunc call carries. vmlinux BTF is self-contained; a
//! module's is *split* BTF on top of vmlinux, so its type ids continue after vmlinux's
//! last one and its string offsets after vmlinux's string section.

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const BTF_KIND_FUNC: u32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF (bad magic or header)")]
    Header,
    #[error("BTF type section truncated at type {0}")]
    Truncated(u32),
    #[error("unknown BTF kind {kind} at type {id}")]
    Kind { kind: u32, id: u32 },
}

type Result<T> = std::result::Result<T, BtfError>;

/// What a split BTF needs from its base: the number of types (ids 1..=n) and the length
/// of the base's string section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Base {
    pub types: u32,
    pub strings: u32,
}

/// One parsed BTF blob.
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    base: Base,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    /// Parse `data`; `base` is `Base::default()` for vmlinux, vmlinux's `own()` for a
    /// module. BTF from the running kernel is in host byte order: little-endian here.
    pub fn parse(data: &'a [u8], base: Base) -> Result<Self> {
        let magic = data.get(0..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if magic != Some(BTF_MAGIC) {
            return Err(BtfError::Header);
        }
        let field = |at| u32_at(data, at).map(|v| v as usize).ok_or(BtfError::Header);
        let hdr_len = field(4)?;
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        if hdr_len < HEADER_LEN {
            return Err(BtfError::Header);
        }
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        Ok(Btf {
            types: section(type_off, type_len).ok_or(BtfError::Header)?,
            strings: section(str_off, str_len).ok_or(BtfError::Header)?,
            base,
        })
    }

    /// This blob as the base of a split BTF: ids and string offsets continue after it.
    pub fn as_base(&self) -> Result<Base> {
        let mut count = 0;
        self.walk(|_, _, _| {
            count += 1;
            false
        })?;
        Ok(Base {
            types: self.base.types + count,
            strings: self.base.strings + self.strings.len() as u32,
        })
    }

    /// The type id of the function `name`, if this blob defines it.
    pub fn function_id(&self, name: &str) -> Result<Option<u32>> {
        let mut found = None;
        self.walk(|id, kind, name_off| {
            if kind == BTF_KIND_FUNC && self.name(name_off) == Some(name.as_bytes()) {
                found = Some(id);
                return true;
            }
            false
        })?;
        Ok(found)
    }

    /// The NUL-terminated name at `offset`, when it lies in this blob's strings.
    fn name(&self, offset: u32) -> Option<&[u8]> {
        let local = offset.checked_sub(self.base.strings)? as usize;
        let rest = self.strings.get(local..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        Some(&rest[..end])
    }

    /// Visit every type as (id, kind, name offset) until `visit` returns true. Each
    /// kind is followed by a kind-specific tail whose size we must know to step over it.
    fn walk(&self, mut visit: impl FnMut(u32, u32, u32) -> bool) -> Result<()> {
        let mut at = 0;
        let mut id = self.base.types;
        while at < self.types.len() {
            id += 1;
            let (Some(name_off), Some(info)) = (u32_at(self.types, at), u32_at(self.types, at + 4))
            else {
                return Err(BtfError::Truncated(id));
            };
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let tail = match kind {
                // INT: one u32 of encoding.
                1 => 4,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                // ARRAY: element type, index type, count.
                3 => 12,
                // STRUCT, UNION: members of (name, type, offset).
                4 | 5 => 12 * vlen,
                // ENUM: (name, value).
                6 => 8 * vlen,
                // FUNC_PROTO: params of (name, type).
                13 => 8 * vlen,
                // VAR: linkage; DECL_TAG: component index.
                14 | 17 => 4,
                // DATASEC: (type, offset, size); ENUM64: (name, lo, hi).
                15 | 19 => 12 * vlen,
                other => return Err(BtfError::Kind { kind: other, id }),
            };
            if visit(id, kind, name_off) {
                return Ok(());
            }
            at += 12 + tail;
        }
        if at != self.types.len() {
            return Err(BtfError::Truncated(id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with the given types (each: kind, vlen, name) and string section.
    fn blob(types: &[(u32, u32, u32)], strings: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        for (kind, vlen, name_off) in types {
            t.extend_from_slice(&name_off.to_le_bytes());
            t.extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
            t.extend_from_slice(&0u32.to_le_bytes());
            let tail = match kind {
                1 | 14 => 4,
                4 => 12 * *vlen as usize,
                13 => 8 * *vlen as usize,
                _ => 0,
            };
            t.extend(std::iter::repeat_n(0u8, tail));
        }
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend(t);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn finds_functions_in_base_and_split_blobs() {
        // 1 INT "int", 2 STRUCT with 2 members, 3 FUNC_PROTO with 1 param, 4 FUNC "f".
        let strings = b"\0int\0s\0f\0";
        let base = blob(&[(1, 0, 1), (4, 2, 5), (13, 1, 0), (12, 0, 7)], strings);
        let vmlinux = Btf::parse(&base, Base::default()).unwrap();
        assert_eq!(vmlinux.function_id("f").unwrap(), Some(4));
        assert_eq!(
            vmlinux.function_id("int").unwrap(),
            None,
            "INT is not a FUNC"
        );
        let as_base = vmlinux.as_base().unwrap();
        assert_eq!(
            as_base,
            Base {
                types: 4,
                strings: strings.len() as u32
            }
        );

        // The module's strings start at offset 9 (after the base's), its ids at 5.
        let module = blob(&[(13, 0, 0), (12, 0, 9 + 1)], b"\0g\0");
        let module = Btf::parse(&module, as_base).unwrap();
        assert_eq!(module.function_id("g").unwrap(), Some(6));
        assert_eq!(module.function_id("f").unwrap(), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"nope", Base::default()).is_err());
        let mut b = blob(&[(12, 0, 1)], b"\0f\0");
        b.truncate(b.len() - 6); // cut into the type section
        assert!(Btf::parse(&b, Base::default()).is_err());
        let unknown = blob(&[(31, 0, 0)], b"\0");
        let btf = Btf::parse(&unknown, Base::default()).unwrap();
        assert!(btf.function_id("f").is_err());
    }
}
