//! A /24 block's row of EIPs in the state file (schema 5). A million EIPs written one row
//! each cost a million inserts into the tree, each shifting the rest of its page; a row per
//! block of 256 addresses makes that about 4000 inserts.
//!
//! The row's key is the block's first address, as a number (a multiple of 256). Its value
//! is the block's EIPs in rising order of address, at least one, each:
//! - the last octet of its address: u8;
//! - the rest of it, as [`eip_row`] writes it.
//!
//! An EIP's row says where it ends, so the next EIP's octet follows it directly; nothing
//! follows the last. The octet is all of the address the value holds, so no EIP can lie
//! outside its block: a key that is not a block's first address is the damage instead. A
//! new field means a new schema version and a migration.

use std::net::Ipv4Addr;

use anyhow::{Context as _, bail};

use super::eip_row::{self, Reader};
use crate::model::Eip;

/// The key of the block that holds `address`: its first address.
pub fn block_of(address: Ipv4Addr) -> u32 {
    u32::from(address) & 0xFFFF_FF00
}

/// The addresses of the block whose key is `block`.
pub fn addresses(block: u32) -> std::ops::RangeInclusive<Ipv4Addr> {
    Ipv4Addr::from(block)..=Ipv4Addr::from(block | 0xFF)
}

/// Writes the row of a block into `row`, which it replaces: `eips` are the EIPs of one
/// block, in rising order of address. No EIP, an empty row: the block's row goes.
pub fn encode<'a>(eips: impl IntoIterator<Item = &'a Eip>, row: &mut Vec<u8>) {
    row.clear();
    let mut previous: Option<Ipv4Addr> = None;
    for eip in eips {
        debug_assert!(
            previous.is_none_or(|p| block_of(p) == block_of(eip.address) && p < eip.address),
            "EIP {} written after {previous:?} in one block",
            eip.address
        );
        previous = Some(eip.address);
        row.push(eip.address.octets()[3]);
        eip_row::append(eip, row);
    }
}

/// The EIPs of the block whose key is `block`, which `row` holds.
pub fn decode(block: u32, row: &[u8]) -> anyhow::Result<Vec<Eip>> {
    if block_of(Ipv4Addr::from(block)) != block {
        bail!("the key {} is not the first address of a /24", Ipv4Addr::from(block));
    }
    if row.is_empty() {
        bail!("the block holds no EIP");
    }
    let mut reader = Reader::new(row);
    let mut eips: Vec<Eip> = Vec::new();
    while !reader.is_empty() {
        let octet = reader.byte()?;
        if let Some(previous) = eips.last() {
            let previous = previous.address.octets()[3];
            if octet <= previous {
                bail!("the EIP .{octet} follows .{previous}: the addresses do not rise");
            }
        }
        let address = Ipv4Addr::from(block | u32::from(octet));
        let eip =
            eip_row::read(address, &mut reader).with_context(|| format!("the EIP {address}"))?;
        eips.push(eip);
    }
    Ok(eips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Association;

    fn eip(address: [u8; 4], association: Option<Association>) -> Eip {
        Eip { address: address.into(), region: "r1".into(), bandwidth_mbps: None, association }
    }

    #[test]
    fn a_block_reads_back_as_written() {
        let eips = [
            eip([203, 0, 113, 0], None),
            eip([203, 0, 113, 7], Some(Association::MultiEip { eni: "eni-1".into() })),
            eip([203, 0, 113, 255], Some(Association::NatGateway { nat_gateway: "n".into() })),
        ];
        let mut row = vec![1, 2, 3];
        encode(&eips, &mut row);
        assert_eq!(row[0], 0, "the first EIP's octet opens the row");
        let block = block_of(eips[1].address);
        assert_eq!(Ipv4Addr::from(block), Ipv4Addr::new(203, 0, 113, 0));
        assert_eq!(decode(block, &row).unwrap(), eips);
        encode(&[], &mut row);
        assert!(row.is_empty());
    }

    #[test]
    fn each_entry_is_its_octet_and_the_eip_s_row() {
        let eips = [eip([203, 0, 113, 9], None), eip([203, 0, 113, 10], None)];
        let mut row = Vec::new();
        encode(&eips, &mut row);
        let mut expected = vec![9];
        eip_row::append(&eips[0], &mut expected);
        expected.push(10);
        eip_row::append(&eips[1], &mut expected);
        assert_eq!(row, expected);
    }

    #[test]
    fn a_damaged_block_is_refused_with_what_is_wrong() {
        let block = u32::from(Ipv4Addr::new(203, 0, 113, 0));
        let refusal = |block: u32, row: &[u8]| format!("{:#}", decode(block, row).unwrap_err());
        let mut row = Vec::new();
        let eips = [eip([203, 0, 113, 9], None), eip([203, 0, 113, 10], None)];
        encode(&eips, &mut row);

        let error = refusal(block + 9, &row);
        assert!(error.contains("203.0.113.9 is not the first address of a /24"), "{error}");
        let error = refusal(block, &[]);
        assert!(error.contains("holds no EIP"), "{error}");
        // Truncated anywhere in the first EIP or the second (the first alone is a block).
        for len in (1..row.len()).filter(|len| *len != row.len() / 2) {
            let error = refusal(block, &row[..len]);
            assert!(error.contains("short"), "{len}: {error}");
        }
        // A byte too many begins an EIP that ends short.
        let error = refusal(block, &[row.as_slice(), &[11]].concat());
        assert!(error.contains("the EIP 203.0.113.11: the region: the row ends"), "{error}");
        // An EIP again, and one out of order.
        let (first, second) = row.split_at(row.len() / 2);
        assert_eq!(second[0], 10, "the second EIP begins half way");
        let error = refusal(block, &[first, first].concat());
        assert!(error.contains("the EIP .9 follows .9"), "{error}");
        let error = refusal(block, &[second, first].concat());
        assert!(error.contains("the EIP .9 follows .10: the addresses do not rise"), "{error}");
    }
}
