//! Addresses of kernel symbols, from /proc/kallsyms.

use anyhow::{Context as _, anyhow, bail};

/// Addresses read as zeros: the preflight check names what is missing before this is reached.
const HIDDEN: &str = "/proc/kallsyms hides kernel addresses: synscope needs CAP_SYSLOG to see \
                      them, and kernel.kptr_restrict below 2 (which hides them from root too)";

/// The kernel's symbol table, read once for all the lookups of a start: the kernel formats
/// it line by line on each read, which takes half a second on a kernel under emulation.
pub struct Kallsyms(String);

impl Kallsyms {
    pub fn read() -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        Ok(Self(text))
    }

    /// `[start, end)` of the text symbol `name`: from its address to the next symbol's.
    pub fn function_range(&self, name: &str) -> anyhow::Result<(u64, u64)> {
        function_range_in(&self.0, name)
    }

    /// Address of the kernel data symbol `name` (listed only on kernels built with
    /// CONFIG_KALLSYMS_ALL, as distributions build them).
    pub fn data_address(&self, name: &str) -> anyhow::Result<u64> {
        data_address_in(&self.0, name)
    }
}

/// One line of /proc/kallsyms, `ADDRESS KIND NAME[\tMODULE]`, split without a general-purpose
/// tokenizer: the file has over a hundred thousand lines, read at every start.
struct Line<'a> {
    address: &'a str,
    kind: u8,
    /// The name, and the module's after a tab for a module's symbol.
    rest: &'a str,
}

impl<'a> Line<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (address, rest) = line.split_once(' ')?;
        let (kind, rest) = rest.split_at_checked(1)?;
        Some(Self {
            address,
            kind: kind.as_bytes()[0],
            rest: rest.strip_prefix(' ')?,
        })
    }

    fn is_text(&self) -> bool {
        matches!(self.kind, b't' | b'T')
    }

    fn is_data(&self) -> bool {
        matches!(self.kind, b'd' | b'D' | b'b' | b'B' | b'r' | b'R')
    }

    /// Whether this is the core kernel's (not a module's) symbol `name`.
    fn names(&self, name: &str) -> bool {
        self.rest == name
    }

    fn address(&self) -> anyhow::Result<u64> {
        u64::from_str_radix(self.address, 16).context("bad address in /proc/kallsyms")
    }
}

fn lines(kallsyms: &str) -> impl Iterator<Item = Line<'_>> {
    kallsyms.lines().filter_map(Line::parse)
}

fn function_range_in(kallsyms: &str, name: &str) -> anyhow::Result<(u64, u64)> {
    let mut text = lines(kallsyms).filter(Line::is_text);
    let start = text
        .find(|line| line.names(name))
        .ok_or_else(|| anyhow!("kernel function {name} not found in /proc/kallsyms"))?
        .address()?;
    if start == 0 {
        bail!(HIDDEN);
    }
    // The core kernel's symbols are listed sorted by address, and whatever follows them
    // (modules, BPF programs, trampolines) lies above the kernel's text: the end is the next
    // text symbol listed at a higher address (aliases share the start).
    let end = text
        .map(|line| line.address())
        .find(|address| address.as_ref().map_or(true, |&a| a > start))
        .ok_or_else(|| anyhow!("no symbol after {name} in /proc/kallsyms"))??;
    Ok((start, end))
}

fn data_address_in(kallsyms: &str, name: &str) -> anyhow::Result<u64> {
    let address = lines(kallsyms)
        .find(|line| line.is_data() && line.names(name))
        .ok_or_else(|| {
            anyhow!("/proc/kallsyms has no {name} (kernel built without CONFIG_KALLSYMS_ALL)")
        })?
        .address()?;
    if address == 0 {
        bail!(HIDDEN);
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff82022000 T tcp_rcv_synsent
ffffffff82022bc0 T tcp_rcv_state_process
ffffffff82024000 d some_data
ffffffff82024200 T tcp_conn_request
ffffffff82022bc0 t tcp_rcv_state_process\t[some_module]
";

    #[test]
    fn range_ends_at_the_next_text_symbol() {
        let (start, end) = function_range_in(SAMPLE, "tcp_rcv_state_process").unwrap();
        assert_eq!(start, 0xffffffff82022bc0);
        assert_eq!(end, 0xffffffff82024200);
    }

    #[test]
    fn data_symbols_only() {
        assert_eq!(
            data_address_in(SAMPLE, "some_data").unwrap(),
            0xffffffff82024000
        );
        assert!(data_address_in(SAMPLE, "tcp_conn_request").is_err());
        assert!(data_address_in("0000000000000000 d some_data\n", "some_data").is_err());
    }

    #[test]
    fn missing_or_hidden_symbols_are_errors() {
        assert!(function_range_in(SAMPLE, "nope").is_err());
        let hidden = "0000000000000000 T tcp_rcv_state_process\n0000000000000000 T x\n";
        assert!(function_range_in(hidden, "tcp_rcv_state_process").is_err());
    }
}
