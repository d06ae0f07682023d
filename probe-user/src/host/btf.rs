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

/// Members one lookup may look at, anonymous structs' included: a kernel's largest structs
/// have a few hundred.
const MEMBERS_VISITED_AT_MOST: u32 = 100_000;

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
            bits = bits
                .checked_add(bit_offset)
                .ok_or_else(|| anyhow!("{struct_name}.{path}: offset out of range"))?;
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
        let mut budget = MEMBERS_VISITED_AT_MOST;
        self.find_member_within(members, name, 0, &mut budget)
    }

    fn find_member_within<'a>(
        &'a self,
        members: &'a [Member],
        name: &str,
        depth: u32,
        budget: &mut u32,
    ) -> anyhow::Result<Option<(u32, &'a Member)>> {
        // A kernel nests anonymous members a few levels deep. A malformed BTF may make a
        // struct its own anonymous member (twice, even): without both bounds the search would
        // overflow the stack, or take 2^depth steps.
        ensure!(
            depth < 32,
            "anonymous members nested too deep looking for {name}"
        );
        for member in members {
            *budget = budget
                .checked_sub(1)
                .ok_or_else(|| anyhow!("too many anonymous members looking for {name}"))?;
            if member.name == 0 {
                if let Type::Composite { members: inner } = &self.resolve(member.type_id)?.ty
                    && let Some((offset, found)) =
                        self.find_member_within(inner, name, depth + 1, budget)?
                {
                    let offset = member
                        .bit_offset
                        .checked_add(offset)
                        .ok_or_else(|| anyhow!("member {name}: offset out of range"))?;
                    return Ok(Some((offset, found)));
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

        blob(&types, &strings)
    }

    /// A BTF blob: the header, then `types`, then `strings`.
    fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
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
    fn a_struct_that_is_its_own_anonymous_member_is_an_error() {
        // 1: int; 2: struct loop { int a; <anonymous struct loop>; <anonymous struct loop> }
        let strings = b"\0int\0loop\0a\0".to_vec();
        let mut types = Vec::new();
        for word in [1u32, KIND_INT << 24, 4, 32] {
            types.extend(word.to_le_bytes());
        }
        for word in [5u32, KIND_STRUCT << 24 | 3, 8, 10, 1, 0, 0, 2, 0, 0, 2, 0] {
            types.extend(word.to_le_bytes());
        }
        let btf = Btf::parse(&blob(&types, &strings)).unwrap();
        assert_eq!(btf.member_offset("loop", "a").unwrap(), 0);
        assert!(btf.member_offset("loop", "missing").is_err());
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

    /// Malformed BTF (random, or the running kernel's with bytes changed) gives an error from
    /// the parser or from the lookups, never a panic, a hang or a stack overflow.
    mod properties {
        use std::sync::LazyLock;

        use proptest::prelude::*;

        use super::*;
        use crate::host::kernel_offsets;

        /// Every lookup synscope makes of the kernel's BTF, and a few of its own.
        fn look_up_everything(btf: &Btf, names: &[&str]) {
            let _ = kernel_offsets::resolve(btf);
            let _ = kernel_offsets::io_uring(btf);
            let _ = kernel_offsets::fexit_return(btf);
            let _ = kernel_offsets::listen_overflow_reason(btf);
            for name in probe_common::COUNTED_MIB_NAMES {
                let _ = btf.enumerator(name);
            }
            for outer in names {
                for inner in names {
                    let _ = btf.member_offset(outer, inner);
                    let _ = btf.member_offset(outer, &format!("{inner}.{outer}"));
                    let _ = btf.enum_value(outer, inner);
                }
                let _ = btf.function_params(outer);
                let _ = btf.tracepoint_arg_is_pointer(outer, 0);
            }
        }

        /// Names the random type sections refer to: some that synscope looks up, some not.
        const STRINGS: &[u8] = b"\0sock\0__sk_common\0skc_state\0io_kiocb\0cqe\0\
                                 btf_trace_io_uring_complete\0inet_csk_accept\0x\0\xff\xfe\0";
        const NAMES: [&str; 7] = [
            "sock",
            "__sk_common",
            "skc_state",
            "io_kiocb",
            "io_uring_complete",
            "inet_csk_accept",
            "x",
        ];

        /// Where each of [`STRINGS`]' names starts.
        fn string_offsets() -> Vec<u32> {
            (1..STRINGS.len())
                .filter(|&at| STRINGS[at - 1] == 0)
                .map(|at| at as u32)
                .collect()
        }

        /// The words that follow a type's header, by its kind and count.
        fn trailing_words(kind: u32, vlen: u32) -> usize {
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 1,
                KIND_ARRAY => 3,
                KIND_STRUCT | KIND_UNION | KIND_ENUM64 | KIND_DATASEC => 3 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 2 * vlen as usize,
                _ => 0,
            }
        }

        /// A type section of well-formed types (mostly of the kinds lookups follow, with small
        /// counts and ids that point at each other, so that loops and self-references come
        /// up), then sometimes words of any value.
        fn type_section() -> impl Strategy<Value = Vec<u8>> {
            let name = prop_oneof![
                3 => prop::sample::select(string_offsets()),
                1 => Just(0u32),
                1 => any::<u32>(),
            ];
            let kind = prop_oneof![
                3 => prop::sample::select(vec![
                    KIND_STRUCT,
                    KIND_UNION,
                    KIND_TYPEDEF,
                    KIND_PTR,
                    KIND_ENUM,
                    KIND_FUNC,
                    KIND_FUNC_PROTO,
                ]),
                1 => 0u32..22,
            ];
            // Member names (0: anonymous), type ids, offsets and values.
            let word = prop_oneof![
                4 => 0u32..6,
                2 => prop::sample::select(string_offsets()),
                1 => any::<u32>(),
            ];
            let header = (name, kind, 0u32..4, any::<bool>(), 0u32..6);
            let types = prop::collection::vec((header, prop::collection::vec(word, 12)), 0..12);
            // Mostly none: a section that ends inside a type is refused before any lookup.
            let garbage = prop_oneof![
                4 => Just(Vec::new()),
                1 => prop::collection::vec(any::<u8>(), 1..8),
            ];
            (types, garbage).prop_map(|(types, garbage)| {
                let mut bytes = Vec::new();
                for ((name, kind, vlen, kind_flag, target), words) in types {
                    let info = u32::from(kind_flag) << 31 | kind << 24 | vlen;
                    let trailing = words.into_iter().take(trailing_words(kind, vlen));
                    for word in [name, info, target].into_iter().chain(trailing) {
                        bytes.extend(word.to_le_bytes());
                    }
                }
                bytes.extend(garbage);
                bytes
            })
        }

        /// The running kernel's BTF cut down to its first 64 KiB of types (at a type's end)
        /// and all its strings; None where this machine has no BTF.
        static KERNEL_PREFIX: LazyLock<Option<Vec<u8>>> = LazyLock::new(|| {
            let data = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
            let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
            let header = u32_at(4) as usize;
            let (type_off, type_len) = (u32_at(8) as usize, u32_at(12) as usize);
            let (str_off, str_len) = (u32_at(16) as usize, u32_at(20) as usize);
            let types = &data[header + type_off..header + type_off + type_len];
            let strings = &data[header + str_off..header + str_off + str_len];
            let mut reader = Reader {
                data: types,
                pos: 0,
            };
            while reader.pos < 64 * 1024 {
                read_type(&mut reader).ok()?;
            }
            Some(blob(&types[..reader.pos], strings))
        });

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 512,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn any_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
                if let Ok(btf) = Btf::parse(&data) {
                    look_up_everything(&btf, &NAMES);
                }
            }

            #[test]
            fn random_types_behind_a_valid_header(types in type_section()) {
                if let Ok(btf) = Btf::parse(&blob(&types, STRINGS)) {
                    look_up_everything(&btf, &NAMES);
                }
            }

            #[test]
            fn random_header_fields(fields in prop::collection::vec(any::<u32>(), 5)) {
                let mut data = blob(&[0; 64], STRINGS);
                for (at, field) in fields.into_iter().enumerate() {
                    data[4 + 4 * at..8 + 4 * at].copy_from_slice(&field.to_le_bytes());
                }
                let _ = Btf::parse(&data);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 256,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn the_kernels_btf_with_bytes_changed(
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
                cut in any::<prop::sample::Index>(),
                truncate in any::<bool>(),
            ) {
                let Some(prefix) = KERNEL_PREFIX.as_ref() else {
                    return Ok(());
                };
                // The edits fall in the header and the types, where the parser's decisions are.
                let types_end = 24 + u32::from_le_bytes(prefix[12..16].try_into().unwrap()) as usize;
                let mut data = prefix.clone();
                for (at, byte) in edits {
                    data[at.index(types_end)] = byte;
                }
                if truncate {
                    data.truncate(cut.index(types_end));
                }
                if let Ok(btf) = Btf::parse(&data) {
                    look_up_everything(&btf, &NAMES);
                }
            }
        }

        #[test]
        fn the_kernels_btf_prefix_parses() {
            if let Some(prefix) = KERNEL_PREFIX.as_ref() {
                Btf::parse(prefix).unwrap();
            }
        }
    }
}
