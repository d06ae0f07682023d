//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct member offsets and
//! enum values by name.
//!
//! Rust eBPF has no CO-RE, so the offsets the programs use are resolved here at start. aya's
//! public BTF API does not expose members or enumerators, and the maintained BTF crate is
//! LGPL-licensed, so this reads the (small, stable) format directly: see the kernel's
//! Documentation/bpf/btf.rst.

use std::collections::HashMap;

use anyhow::{Context as _, anyhow, bail, ensure};

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// Struct or union with its members.
    Composite {
        members: Vec<Member>,
    },
    /// A type that only refers to another (typedef, const, volatile, restrict, type tag).
    Alias {
        target: u32,
    },
    Enum {
        values: Vec<(u32, i64)>,
    },
    /// A function, by its prototype.
    Func {
        proto: u32,
    },
    FuncProto {
        /// Each parameter's type.
        params: Vec<u32>,
    },
    Pointer {
        target: u32,
    },
    Other,
}

#[derive(Debug, Clone)]
struct TypeEntry {
    name: u32,
    kind: u32,
    ty: Type,
}

/// Parsed BTF: every type, plus an index of named structs, unions and enums.
pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is `void`.
    types: Vec<TypeEntry>,
    by_name: HashMap<String, Vec<u32>>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> anyhow::Result<u32> {
        let bytes = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| anyhow!("BTF type section truncated at byte {}", self.pos))?;
        self.pos += 4;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    fn skip(&mut self, bytes: usize) {
        self.pos += bytes;
    }
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_kernel() -> anyhow::Result<Self> {
        const PATH: &str = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(PATH).with_context(|| {
            format!("cannot read {PATH}: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF), which synscope needs to read kernel structures")
        })?;
        Self::parse(&data).with_context(|| format!("cannot parse {PATH}"))
    }

    pub fn parse(data: &[u8]) -> anyhow::Result<Self> {
        ensure!(data.len() >= 24, "too short for a BTF header");
        let u16_at = |at: usize| u16::from_le_bytes([data[at], data[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        ensure!(
            u16_at(0) == BTF_MAGIC,
            "bad BTF magic (big-endian BTF is not supported)"
        );
        let header_len = u32_at(4) as usize;
        let (type_off, type_len) = (u32_at(8) as usize, u32_at(12) as usize);
        let (str_off, str_len) = (u32_at(16) as usize, u32_at(20) as usize);
        let type_section = data
            .get(header_len + type_off..header_len + type_off + type_len)
            .ok_or_else(|| anyhow!("type section out of bounds"))?;
        let strings = data
            .get(header_len + str_off..header_len + str_off + str_len)
            .ok_or_else(|| anyhow!("string section out of bounds"))?
            .to_vec();

        let mut btf = Btf {
            strings,
            types: vec![TypeEntry {
                name: 0,
                kind: 0,
                ty: Type::Other,
            }],
            by_name: HashMap::new(),
        };
        let mut reader = Reader {
            data: type_section,
            pos: 0,
        };
        while reader.pos < type_section.len() {
            let entry = read_type(&mut reader)?;
            let id = btf.types.len() as u32;
            if entry.name != 0
                && matches!(
                    entry.kind,
                    KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64
                )
            {
                let name = btf.string(entry.name)?.to_owned();
                btf.by_name.entry(name).or_default().push(id);
            }
            btf.types.push(entry);
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> anyhow::Result<&str> {
        let tail = self
            .strings
            .get(offset as usize..)
            .ok_or_else(|| anyhow!("string offset {offset} out of bounds"))?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).context("BTF string is not UTF-8")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> anyhow::Result<&TypeEntry> {
        for _ in 0..32 {
            let entry = self
                .types
                .get(id as usize)
                .ok_or_else(|| anyhow!("type id {id} out of bounds"))?;
            match entry.ty {
                Type::Alias { target } => id = target,
                _ => return Ok(entry),
            }
        }
        bail!("type chain too long at id {id}")
    }

    fn composite(&self, struct_name: &str) -> anyhow::Result<&[Member]> {
        let ids = self
            .by_name
            .get(struct_name)
            .ok_or_else(|| anyhow!("struct {struct_name} not found in the kernel's BTF"))?;
        ids.iter()
            .find_map(|&id| match &self.types[id as usize].ty {
                Type::Composite { members } if !members.is_empty() => Some(members.as_slice()),
                _ => None,
            })
            .ok_or_else(|| anyhow!("{struct_name} is not a struct in the kernel's BTF"))
    }

    /// Byte offset of `struct_name.path`, where `path` is dot-separated (`__sk_common.skc_family`).
    /// Members of anonymous structs and unions are found as if they were direct members, as in C.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> anyhow::Result<u32> {
        let mut members = self.composite(struct_name)?;
        let mut bits = 0u32;
        for (depth, field) in path.split('.').enumerate() {
            let (bit_offset, member) = self.find_member(members, field)?.ok_or_else(|| {
                anyhow!("{struct_name} has no member {path} in this kernel's BTF")
            })?;
            bits += bit_offset;
            if depth + 1 < path.split('.').count() {
                members = match &self.resolve(member.type_id)?.ty {
                    Type::Composite { members } => members,
                    _ => bail!("{struct_name}.{path}: {field} is not a struct"),
                };
            }
        }
        ensure!(bits.is_multiple_of(8), "{struct_name}.{path} is a bitfield");
        Ok(bits / 8)
    }

    /// Finds `name` among `members`, descending into anonymous structs and unions.
    /// Returns the member's bit offset from the start of `members`' struct.
    fn find_member<'a>(
        &'a self,
        members: &'a [Member],
        name: &str,
    ) -> anyhow::Result<Option<(u32, &'a Member)>> {
        for member in members {
            if member.name == 0 {
                if let Type::Composite { members: inner } = &self.resolve(member.type_id)?.ty
                    && let Some((offset, found)) = self.find_member(inner, name)?
                {
                    return Ok(Some((member.bit_offset + offset, found)));
                }
            } else if self.string(member.name)? == name {
                return Ok(Some((member.bit_offset, member)));
            }
        }
        Ok(None)
    }

    /// Value of enumerator `name` in whichever enum has it (for anonymous enums such as the
    /// MIB counters').
    pub fn enumerator(&self, name: &str) -> anyhow::Result<i64> {
        for entry in &self.types {
            if let Type::Enum { values } = &entry.ty {
                for &(value_name, value) in values {
                    if self.string(value_name)? == name {
                        return Ok(value);
                    }
                }
            }
        }
        bail!("no enumerator {name} in this kernel's BTF")
    }

    /// Value of enumerator `name` in enum `enum_name` (enum values such as drop reasons move
    /// between kernels).
    pub fn enum_value(&self, enum_name: &str, name: &str) -> anyhow::Result<i64> {
        let ids = self
            .by_name
            .get(enum_name)
            .ok_or_else(|| anyhow!("enum {enum_name} not found in the kernel's BTF"))?;
        for &id in ids {
            if let Type::Enum { values } = &self.types[id as usize].ty {
                for &(value_name, value) in values {
                    if self.string(value_name)? == name {
                        return Ok(value);
                    }
                }
            }
        }
        bail!("enum {enum_name} has no value {name} in this kernel's BTF")
    }
}

impl Btf {
    /// How many parameters the kernel function `name` takes: an fexit program finds the
    /// function's return value in the context slot after them.
    pub fn function_params(&self, name: &str) -> anyhow::Result<u32> {
        for entry in &self.types {
            let Type::Func { proto } = entry.ty else {
                continue;
            };
            if self.string(entry.name)? != name {
                continue;
            }
            return match self.types.get(proto as usize).map(|t| &t.ty) {
                Some(Type::FuncProto { params }) => Ok(params.len() as u32),
                _ => bail!("function {name} has no prototype in this kernel's BTF"),
            };
        }
        bail!("function {name} not found in this kernel's BTF")
    }

    /// Whether argument `index` of tracepoint `event` (as its programs see it) is a pointer.
    /// A BTF tracepoint's arguments are those of its `btf_trace_<event>` prototype, after the
    /// leading `void *__data`.
    pub fn tracepoint_arg_is_pointer(&self, event: &str, index: usize) -> anyhow::Result<bool> {
        let typedef = format!("btf_trace_{event}");
        let entry = self
            .types
            .iter()
            .find(|t| t.kind == KIND_TYPEDEF && self.string(t.name).is_ok_and(|n| n == typedef))
            .ok_or_else(|| anyhow!("tracepoint {event} not found in this kernel's BTF"))?;
        let Type::Alias { target } = entry.ty else {
            bail!("{typedef} is not a typedef");
        };
        let Type::Pointer { target: proto } = self.resolve(target)?.ty else {
            bail!("{typedef} is not a function pointer");
        };
        let Type::FuncProto { params } = &self.resolve(proto)?.ty else {
            bail!("{typedef} is not a function pointer");
        };
        let param = *params
            .get(index + 1)
            .ok_or_else(|| anyhow!("tracepoint {event} has no argument {index}"))?;
        Ok(matches!(self.resolve(param)?.ty, Type::Pointer { .. }))
    }
}

fn read_type(reader: &mut Reader<'_>) -> anyhow::Result<TypeEntry> {
    let name = reader.u32()?;
    let info = reader.u32()?;
    let size_or_type = reader.u32()?;
    let vlen = (info & 0xffff) as usize;
    let kind = (info >> 24) & 0x1f;
    let kind_flag = info >> 31 == 1;
    let ty = match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => {
            reader.skip(4);
            Type::Other
        }
        KIND_FUNC => Type::Func {
            proto: size_or_type,
        },
        KIND_PTR => Type::Pointer {
            target: size_or_type,
        },
        KIND_FWD | KIND_FLOAT => Type::Other,
        KIND_ARRAY => {
            reader.skip(12);
            Type::Other
        }
        KIND_STRUCT | KIND_UNION => {
            let mut members = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let name = reader.u32()?;
                let type_id = reader.u32()?;
                let offset = reader.u32()?;
                // With kind_flag the top 8 bits hold a bitfield size.
                let bit_offset = if kind_flag {
                    offset & 0xff_ffff
                } else {
                    offset
                };
                members.push(Member {
                    name,
                    type_id,
                    bit_offset,
                });
            }
            Type::Composite { members }
        }
        KIND_ENUM => {
            let mut values = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let name = reader.u32()?;
                let value = reader.u32()?;
                let value = if kind_flag {
                    value as i32 as i64
                } else {
                    value as i64
                };
                values.push((name, value));
            }
            Type::Enum { values }
        }
        KIND_ENUM64 => {
            let mut values = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let name = reader.u32()?;
                let low = reader.u32()? as u64;
                let high = reader.u32()? as u64;
                values.push((name, (high << 32 | low) as i64));
            }
            Type::Enum { values }
        }
        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => Type::Alias {
            target: size_or_type,
        },
        KIND_FUNC_PROTO => {
            let mut params = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                reader.skip(4); // the name
                params.push(reader.u32()?);
            }
            Type::FuncProto { params }
        }
        KIND_DATASEC => {
            reader.skip(12 * vlen);
            Type::Other
        }
        other => bail!("unknown BTF kind {other}"),
    };
    Ok(TypeEntry { name, kind, ty })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob by hand: struct outer { int a; union { int b; struct { int c; }; }; }
    /// plus enum color { RED = 1, BLUE = -2 }.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0color\0RED\0BLUE\0".to_vec();
        let at = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_le_bytes()));
        // 1: int
        push(&[at("int"), KIND_INT << 24, 4, 32]);
        // 2: anonymous inner struct { int c; }
        push(&[0, KIND_STRUCT << 24 | 1, 4, at("c"), 1, 0]);
        // 3: anonymous union { int b; struct 2; }
        push(&[0, KIND_UNION << 24 | 2, 4, at("b"), 1, 0, 0, 2, 0]);
        // 4: typedef of the union, to check that aliases are followed
        push(&[0, KIND_TYPEDEF << 24, 3]);
        // 5: struct outer { int a; <anon> at 32 bits }
        push(&[
            at("outer"),
            KIND_STRUCT << 24 | 2,
            8,
            at("a"),
            1,
            0,
            0,
            4,
            32,
        ]);
        // 6: signed enum color
        push(&[
            at("color"),
            KIND_ENUM << 24 | 1 << 31 | 2,
            4,
            at("RED"),
            1,
            at("BLUE"),
            (-2i32) as u32,
        ]);

        let mut blob = Vec::new();
        blob.extend(BTF_MAGIC.to_le_bytes());
        blob.extend([1u8, 0]);
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend(word.to_le_bytes());
        }
        blob.extend(types);
        blob.extend(strings);
        blob
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_typedefs() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 4);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 4);
        assert!(btf.member_offset("outer", "missing").is_err());
        assert!(btf.member_offset("nosuch", "a").is_err());
    }

    #[test]
    fn reads_signed_enum_values() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.enum_value("color", "RED").unwrap(), 1);
        assert_eq!(btf.enum_value("color", "BLUE").unwrap(), -2);
        assert!(btf.enum_value("color", "GREEN").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, definitely not").is_err());
        let mut truncated = sample();
        truncated.truncate(40);
        assert!(Btf::parse(&truncated).is_err());
    }

    #[test]
    fn counts_a_kernel_functions_parameters() {
        // Every kernel synscope supports has BTF; inet_csk_accept took 4 arguments before
        // 6.10 (sk, flags, err, kern) and 2 since (sk, arg).
        let Ok(btf) = Btf::from_kernel() else {
            return;
        };
        let params = btf.function_params("inet_csk_accept").unwrap();
        assert!(params == 2 || params == 4, "{params}");
        assert_eq!(btf.function_params("tcp_rtx_synack").unwrap(), 2);
        assert!(btf.function_params("no_such_function_here").is_err());
    }
}
