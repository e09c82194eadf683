//! An EIP's row in the state file: a few bytes instead of JSON, since a cloud holds far
//! more EIPs than anything else, and one apply may write a million of them. The address is
//! not in the row: it was the row's key in schema 4, and is the row's place in its block
//! since schema 5 ([`super::eip_block`]).
//!
//! Layout (integers little-endian):
//! - the region: text;
//! - the bandwidth cap: 0 for none, or 1 and a u32 in Mbit/s;
//! - the association: 0 for none; 1 instance: text instance, text ENI, the private address
//!   (4 bytes); 2 ENI: text ENI, the private address; 3 cut-through: text ENI;
//!   4 multi-EIP: text ENI; 5 NAT gateway: text id;
//! - text: a u32 length, then that many bytes of UTF-8.
//!
//! Every field says where it ends, so rows can follow one another ([`read`]); a row that
//! stands alone ([`decode`]) is followed by nothing. A new field means a new schema version
//! and a migration.

use std::net::Ipv4Addr;

use anyhow::{Context as _, bail};

use crate::model::{Association, Eip, Id};

const NO_CAP: u8 = 0;
const CAP: u8 = 1;

const UNASSOCIATED: u8 = 0;
const INSTANCE: u8 = 1;
const ENI: u8 = 2;
const CUT_THROUGH: u8 = 3;
const MULTI_EIP: u8 = 4;
const NAT_GATEWAY: u8 = 5;

/// Appends `eip`'s row to `row`.
pub fn append(eip: &Eip, row: &mut Vec<u8>) {
    put_text(row, &eip.region);
    match eip.bandwidth_mbps {
        None => row.push(NO_CAP),
        Some(mbps) => {
            row.push(CAP);
            row.extend_from_slice(&mbps.to_le_bytes());
        }
    }
    match &eip.association {
        None => row.push(UNASSOCIATED),
        Some(Association::Instance { instance, eni, private_ip }) => {
            row.push(INSTANCE);
            put_text(row, instance);
            put_text(row, eni);
            row.extend_from_slice(&private_ip.octets());
        }
        Some(Association::Eni { eni, private_ip }) => {
            row.push(ENI);
            put_text(row, eni);
            row.extend_from_slice(&private_ip.octets());
        }
        Some(Association::CutThrough { eni }) => {
            row.push(CUT_THROUGH);
            put_text(row, eni);
        }
        Some(Association::MultiEip { eni }) => {
            row.push(MULTI_EIP);
            put_text(row, eni);
        }
        Some(Association::NatGateway { nat_gateway }) => {
            row.push(NAT_GATEWAY);
            put_text(row, nat_gateway);
        }
    }
}

/// The EIP at `address` that `row` describes, which nothing may follow.
pub fn decode(address: Ipv4Addr, row: &[u8]) -> anyhow::Result<Eip> {
    let mut reader = Reader::new(row);
    let eip = read(address, &mut reader)?;
    if !reader.is_empty() {
        bail!("{} bytes follow the association", reader.0.len());
    }
    Ok(eip)
}

/// The EIP at `address` whose row `reader` is at, leaving `reader` just after it.
pub fn read(address: Ipv4Addr, reader: &mut Reader<'_>) -> anyhow::Result<Eip> {
    let region = reader.text().context("the region")?;
    let bandwidth_mbps = match reader.byte().context("the bandwidth cap")? {
        NO_CAP => None,
        CAP => Some(reader.u32().context("the bandwidth cap")?),
        other => bail!("the bandwidth cap is marked {other}, neither 0 nor 1"),
    };
    let association = match reader.byte().context("the association")? {
        UNASSOCIATED => None,
        INSTANCE => Some(Association::Instance {
            instance: reader.text().context("the instance")?,
            eni: reader.text().context("the ENI")?,
            private_ip: reader.ipv4().context("the private address")?,
        }),
        ENI => Some(Association::Eni {
            eni: reader.text().context("the ENI")?,
            private_ip: reader.ipv4().context("the private address")?,
        }),
        CUT_THROUGH => Some(Association::CutThrough { eni: reader.text().context("the ENI")? }),
        MULTI_EIP => Some(Association::MultiEip { eni: reader.text().context("the ENI")? }),
        NAT_GATEWAY => {
            Some(Association::NatGateway { nat_gateway: reader.text().context("the NAT gateway")? })
        }
        other => bail!("the association is of an unknown kind ({other})"),
    };
    Ok(Eip { address, region, bandwidth_mbps, association })
}

fn put_text(row: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).expect("an id is shorter than 4 GiB");
    row.extend_from_slice(&len.to_le_bytes());
    row.extend_from_slice(text.as_bytes());
}

/// What is left of a row to read.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(row: &'a [u8]) -> Self {
        Self(row)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take(&mut self, len: usize) -> anyhow::Result<&'a [u8]> {
        if self.0.len() < len {
            bail!("the row ends {} bytes short", len - self.0.len());
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    pub fn byte(&mut self) -> anyhow::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn ipv4(&mut self) -> anyhow::Result<Ipv4Addr> {
        Ok(Ipv4Addr::from(<[u8; 4]>::try_from(self.take(4)?).expect("4 bytes")))
    }

    fn text(&mut self) -> anyhow::Result<Id> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        Ok(Id::from(std::str::from_utf8(bytes).context("the text is not UTF-8")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eip(bandwidth_mbps: Option<u32>, association: Option<Association>) -> Eip {
        Eip {
            address: Ipv4Addr::new(203, 0, 113, 10),
            region: "cn-hangzhou".into(),
            bandwidth_mbps,
            association,
        }
    }

    /// `eip`'s row alone in `row`.
    fn encode(eip: &Eip, row: &mut Vec<u8>) {
        row.clear();
        append(eip, row);
    }

    fn every_kind() -> Vec<Eip> {
        let private_ip = Ipv4Addr::new(10, 0, 1, 10);
        vec![
            eip(None, None),
            eip(Some(0), None),
            eip(Some(u32::MAX), None),
            eip(
                Some(5),
                Some(Association::Instance {
                    instance: "i-1".into(),
                    eni: "eni-1".into(),
                    private_ip,
                }),
            ),
            eip(None, Some(Association::Eni { eni: "eni-ü".into(), private_ip })),
            eip(None, Some(Association::CutThrough { eni: "eni-2".into() })),
            eip(None, Some(Association::MultiEip { eni: "".into() })),
            eip(None, Some(Association::NatGateway { nat_gateway: "ngw-1".into() })),
        ]
    }

    #[test]
    fn every_kind_of_eip_reads_back_as_written() {
        let mut row = Vec::new();
        for eip in every_kind() {
            encode(&eip, &mut row);
            assert_eq!(decode(eip.address, &row).unwrap(), eip);
        }
    }

    #[test]
    fn rows_that_follow_one_another_are_read_one_at_a_time() {
        let eips = every_kind();
        let mut rows = Vec::new();
        for eip in &eips {
            append(eip, &mut rows);
        }
        let mut reader = Reader::new(&rows);
        for eip in &eips {
            assert_eq!(&read(eip.address, &mut reader).unwrap(), eip);
        }
        assert!(reader.is_empty());
    }

    #[test]
    fn an_eni_association_is_a_few_bytes() {
        let eip = eip(
            None,
            Some(Association::Eni { eni: "eni-1".into(), private_ip: [10, 0, 1, 10].into() }),
        );
        let mut row = Vec::new();
        encode(&eip, &mut row);
        // Region, no cap, kind, ENI, address.
        assert_eq!(row.len(), (4 + 11) + 1 + 1 + (4 + 5) + 4);
        assert_eq!(&row[..4], &11u32.to_le_bytes());
        assert_eq!(&row[row.len() - 4..], &[10, 0, 1, 10]);
    }

    #[test]
    fn a_damaged_row_is_refused_with_what_is_wrong() {
        let mut row = Vec::new();
        let address = Ipv4Addr::new(203, 0, 113, 10);
        for eip in every_kind() {
            encode(&eip, &mut row);
            // Every shorter row is refused, and so is one with a byte too many.
            for len in 0..row.len() {
                let error = decode(address, &row[..len]).expect_err("a truncated row");
                assert!(format!("{error:#}").contains("short"), "{error:#}");
            }
            row.push(0);
            let error = format!("{:#}", decode(address, &row).unwrap_err());
            assert!(error.contains("1 bytes follow"), "{error}");
        }
        encode(&eip(None, None), &mut row);
        let kind = row.len() - 1;
        row[kind] = 9;
        let error = format!("{:#}", decode(address, &row).unwrap_err());
        assert!(error.contains("unknown kind (9)"), "{error}");
        row[kind - 1] = 2;
        let error = format!("{:#}", decode(address, &row).unwrap_err());
        assert!(error.contains("neither 0 nor 1"), "{error}");
        let mut row = Vec::new();
        put_text(&mut row, "\u{ff}");
        row[4] = 0xff;
        let error = format!("{:#}", decode(address, &row).unwrap_err());
        assert!(error.contains("the region: the text is not UTF-8"), "{error}");
    }
}
