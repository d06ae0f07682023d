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

fn function_range_in(kallsyms: &str, name: &str) -> anyhow::Result<(u64, u64)> {
    let mut addresses: Vec<u64> = Vec::new();
    let mut start = None;
    for line in kallsyms.lines() {
        let mut fields = line.split_whitespace();
        let (Some(address), Some(kind), Some(symbol)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        let address = u64::from_str_radix(address, 16).context("bad address in /proc/kallsyms")?;
        if symbol == name && fields.next().is_none() {
            start = Some(address);
        }
        addresses.push(address);
    }
    let start =
        start.ok_or_else(|| anyhow!("kernel function {name} not found in /proc/kallsyms"))?;
    if start == 0 {
        bail!(HIDDEN);
    }
    let end = addresses
        .into_iter()
        .filter(|&a| a > start)
        .min()
        .ok_or_else(|| anyhow!("no symbol after {name} in /proc/kallsyms"))?;
    Ok((start, end))
}

fn data_address_in(kallsyms: &str, name: &str) -> anyhow::Result<u64> {
    let address = kallsyms
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (address, kind, symbol) = (fields.next()?, fields.next()?, fields.next()?);
            let data = matches!(kind, "d" | "D" | "b" | "B" | "r" | "R");
            (data && symbol == name && fields.next().is_none()).then_some(address)
        })
        .ok_or_else(|| {
            anyhow!("/proc/kallsyms has no {name} (kernel built without CONFIG_KALLSYMS_ALL)")
        })?;
    let address = u64::from_str_radix(address, 16).context("bad address in /proc/kallsyms")?;
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
