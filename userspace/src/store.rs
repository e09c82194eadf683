//! The durable store: an embedded, transactional, crash-safe database (redb) in one file
//! under the state directory. Every change is one write transaction (R29): after a crash
//! the file holds the state before or after a request, never a mix.

mod eip_block;
mod eip_row;

use std::{
    fmt::{Display, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, Table, TableDefinition, WriteTransaction,
};

use crate::{
    model::{Change, Eip, Key, Kind, Resource, State},
    sorted::RisingMap,
};

/// `<kind>/<id>` → the resource as JSON, for every kind but EIPs.
const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
/// The first address of a /24 block, as a number → the block's EIPs ([`eip_block`]), for
/// every block that holds one. A row per block, not per EIP: a million EIPs are about 4000
/// inserts. Numbers keep the blocks in order of address, so that writing many appends to
/// the tree instead of splitting it all over.
const EIP_BLOCKS: TableDefinition<u32, &[u8]> = TableDefinition::new("eip_blocks");
/// Schema 4's EIPs, read only to migrate them: an EIP's address, as a number → the rest of
/// it ([`eip_row`]).
const EIPS_V4: TableDefinition<u32, &[u8]> = TableDefinition::new("eips");
/// Schema bookkeeping.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// 3: an ENI's `security_group` names a security group resource, or is null.
/// 4: EIPs are in a table of their own ("eips", a row per EIP), not in [`RESOURCES`].
/// 5: EIPs are stored a /24 per row in [`EIP_BLOCKS`].
const SCHEMA_VERSION: u64 = 5;

pub const STATE_FILE_NAME: &str = "eipgw.redb";

pub struct Store {
    /// `None` only if opening the file again after a failed write failed too.
    db: Option<Database>,
    path: PathBuf,
}

fn row_key(key: &Key) -> String {
    let mut row = String::new();
    write_row_key(&mut row, key.kind, &key.id);
    row
}

/// [`row_key`] into a buffer, which it replaces: an apply may write many rows.
fn write_row_key(row: &mut String, kind: Kind, id: &str) {
    row.clear();
    write!(row, "{}/{id}", kind.name()).expect("writing to a String does not fail");
}

impl Store {
    /// Opens the state file in `state_dir`, creating both if they do not exist. A file that
    /// cannot be read is left exactly as it is and reported.
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating state directory {}", state_dir.display()))?;
        let path = state_dir.join(STATE_FILE_NAME);
        let db = Database::create(&path).with_context(|| {
            format!(
                "opening state file {}: it was left untouched; if it is damaged, restore it \
                 from a backup or move it aside to start empty",
                path.display()
            )
        })?;
        let store = Self { db: Some(db), path };
        store.check_schema()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> anyhow::Result<&Database> {
        self.db.as_ref().with_context(|| {
            format!(
                "state file {} could not be opened again after a failed write; restart eipgwd",
                self.path.display()
            )
        })
    }

    /// Opens the file again after a commit failed: once a write has failed (a full disk,
    /// an I/O error), redb refuses every later transaction until then. What the file holds
    /// is the last commit that succeeded.
    pub fn reopen(&mut self) -> anyhow::Result<()> {
        // redb locks the file: the old handle goes before the new one opens.
        self.db = None;
        let db = Database::create(&self.path)
            .with_context(|| format!("opening state file {} again", self.path.display()))?;
        self.db = Some(db);
        Ok(())
    }

    fn check_schema(&self) -> anyhow::Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            let mut resources = txn.open_table(RESOURCES)?;
            let mut blocks = txn.open_table(EIP_BLOCKS)?;
            match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(from @ 2..=4) => {
                    let mut migrated = || -> anyhow::Result<()> {
                        if from == 2 {
                            migrate_eni_security_groups(&mut resources)?;
                        }
                        let eips = if from == 4 {
                            take_eip_rows(&txn)?
                        } else {
                            take_json_eips(&mut resources)?
                        };
                        write_blocks(&mut blocks, &eips, eips.keys().copied())
                    };
                    migrated().with_context(|| {
                        format!(
                            "migrating state file {} from schema version {from} (the file was \
                             left untouched)",
                            self.path.display()
                        )
                    })?;
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                    log::info!(
                        "state file {}: migrated from schema version {from} to {SCHEMA_VERSION}",
                        self.path.display()
                    );
                }
                Some(other) => bail!(
                    "state file {} has schema version {other}; this eipgwd reads version \
                     {SCHEMA_VERSION} (the file was left untouched)",
                    self.path.display()
                ),
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Reads the whole state.
    pub fn load(&self) -> anyhow::Result<State> {
        let txn = self.db()?.begin_read()?;
        let mut state = State::default();
        let damaged = |key: &dyn Display| {
            format!("state file {}: record {key} is damaged", self.path.display())
        };
        for row in txn.open_table(RESOURCES)?.range::<&str>(..)? {
            let (key, value) = row?;
            let resource: Resource =
                serde_json::from_slice(value.value()).with_context(|| damaged(&key.value()))?;
            if row_key(&resource.key()) != key.value() {
                bail!(
                    "state file {}: record {} describes {}",
                    self.path.display(),
                    key.value(),
                    resource.key()
                );
            }
            state.put(resource);
        }
        for row in txn.open_table(EIP_BLOCKS)?.range::<u32>(..)? {
            let (key, value) = row?;
            let block = key.value();
            let eips = eip_block::decode(block, value.value()).with_context(|| {
                damaged(&format_args!("{}/{}/24", Kind::Eip.name(), Ipv4Addr::from(block)))
            })?;
            for eip in eips {
                state.put_eip(eip);
            }
        }
        Ok(state)
    }

    /// Writes a change in one transaction; on error nothing of it is stored. `state` is the
    /// state with the change made: an EIP's block is written whole, as `state` has it.
    pub fn commit(&self, state: &State, change: &Change) -> anyhow::Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            // One buffer for every row and one for every key: an apply may write a million.
            let (mut value, mut row) = (Vec::new(), String::new());
            let mut resources = txn.open_table(RESOURCES)?;
            for changed in &change.others {
                write_row_key(&mut row, changed.key.kind, &changed.key.id);
                match &changed.after {
                    Some(resource) => {
                        value.clear();
                        serde_json::to_writer(&mut value, resource)?;
                        resources.insert(row.as_str(), value.as_slice())?;
                    }
                    None => {
                        resources.remove(row.as_str())?;
                    }
                }
            }
            let mut blocks = txn.open_table(EIP_BLOCKS)?;
            write_blocks(&mut blocks, &state.eips, change.eips.iter().map(|changed| changed.key))?;
        }
        txn.commit().context("committing to the state file")?;
        Ok(())
    }
}

/// Writes the row of each block that holds one of `addresses` (in rising order) as `eips`
/// has it, or removes it if `eips` has nothing in the block.
fn write_blocks(
    blocks: &mut Table<u32, &[u8]>,
    eips: &RisingMap<Ipv4Addr, Eip>,
    addresses: impl IntoIterator<Item = Ipv4Addr>,
) -> anyhow::Result<()> {
    // One buffer for every block: an apply may write 4000 of them.
    let mut row = Vec::new();
    let mut written = None;
    for address in addresses {
        let block = eip_block::block_of(address);
        if written == Some(block) {
            continue;
        }
        written = Some(block);
        eip_block::encode(eips.range(eip_block::addresses(block)).map(|(_, eip)| eip), &mut row);
        if row.is_empty() {
            blocks.remove(block)?;
        } else {
            blocks.insert(block, row.as_slice())?;
        }
    }
    Ok(())
}

/// Schema 4 → 5: takes the EIPs out of their rows in schema 4's table, which goes.
fn take_eip_rows(txn: &WriteTransaction) -> anyhow::Result<RisingMap<Ipv4Addr, Eip>> {
    let mut eips = RisingMap::default();
    let table = txn.open_table(EIPS_V4)?;
    for row in table.range::<u32>(..)? {
        let (key, value) = row?;
        let address = Ipv4Addr::from(key.value());
        let eip = eip_row::decode(address, value.value())
            .with_context(|| format!("record {}/{address} is damaged", Kind::Eip.name()))?;
        eips.insert(address, eip);
    }
    txn.delete_table(table)?;
    Ok(eips)
}

/// Schema 3 (or 2) → 5: takes the EIPs out of their JSON rows in `resources`.
fn take_json_eips(resources: &mut Table<&str, &[u8]>) -> anyhow::Result<RisingMap<Ipv4Addr, Eip>> {
    let eip_prefix = format!("{}/", Kind::Eip.name());
    let (mut moved, mut eips) = (Vec::new(), RisingMap::default());
    for row in resources.range::<&str>(eip_prefix.as_str()..)? {
        let (key, value) = row?;
        let key = key.value();
        if !key.starts_with(&eip_prefix) {
            break;
        }
        let resource: Resource = serde_json::from_slice(value.value())
            .with_context(|| format!("record {key} is damaged"))?;
        let Resource::Eip(eip) = resource else {
            bail!("record {key} describes {}", resource.key());
        };
        if key[eip_prefix.len()..] != eip.address.to_string() {
            bail!("record {key} describes the EIP {}", eip.address);
        }
        moved.push(key.to_owned());
        eips.insert(eip.address, eip);
    }
    for key in moved {
        resources.remove(key.as_str())?;
    }
    Ok(eips)
}

/// Schema 2 → 3: an ENI's security group was a free-form name, "default" unless one was
/// given, that filtered nothing. It now names a security group resource; a name that is no
/// such resource (all of them, in a version 2 file) becomes null, which is what the ENI had:
/// no filtering.
fn migrate_eni_security_groups(resources: &mut Table<&str, &[u8]>) -> anyhow::Result<()> {
    let eni_prefix = format!("{}/", Kind::Eni.name());
    let mut rewritten: Vec<(String, Vec<u8>)> = Vec::new();
    for row in resources.range::<&str>(..)? {
        let (key, value) = row?;
        let key = key.value();
        if !key.starts_with(&eni_prefix) {
            continue;
        }
        let mut eni: serde_json::Value = serde_json::from_slice(value.value())
            .with_context(|| format!("record {key} is damaged"))?;
        let Some(name) = eni.get("security_group").and_then(|g| g.as_str()) else {
            continue;
        };
        let group_row = row_key(&Key::new(Kind::SecurityGroup, name));
        if resources.get(group_row.as_str())?.is_none() {
            eni["security_group"] = serde_json::Value::Null;
            rewritten.push((key.to_owned(), serde_json::to_vec(&eni)?));
        }
    }
    for (key, json) in rewritten {
        resources.insert(key.as_str(), json.as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata as _;

    use super::*;
    use crate::model::{Association, Changed, Request};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "eipgw-store-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn committed_changes_survive_reopening() {
        let dir = temp_dir("reopen");
        let mut state = State::default();
        {
            let store = Store::open(&dir).unwrap();
            let requests: Vec<Request> = serde_json::from_str(
                r#"[
                {"op": "create_region", "id": "r1"},
                {"op": "allocate_eip", "address": "203.0.113.10"},
                {"op": "allocate_eip", "address": "203.0.113.11"},
                {"op": "release_eip", "eip": "203.0.113.11"}
            ]"#,
            )
            .unwrap();
            for request in requests {
                let (_, change) = state.run(&request).unwrap();
                store.commit(&state, &change).unwrap();
            }
        }
        let reopened = Store::open(&dir).unwrap().load().unwrap();
        assert_eq!(reopened, state);
        assert_eq!(reopened.eips.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_reported_and_left_untouched() {
        let dir = temp_dir("damaged");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(STATE_FILE_NAME);
        let garbage = b"this is not a redb file, and must not be overwritten".repeat(100);
        std::fs::write(&path, &garbage).unwrap();
        let error = format!("{:#}", Store::open(&dir).err().expect("a damaged file is refused"));
        assert!(error.contains("left untouched"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage, "the file was changed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_2_file_is_migrated_and_its_enis_become_unfiltered() {
        let dir = temp_dir("migrate-v2");
        std::fs::create_dir_all(&dir).unwrap();
        // A version 2 file as the previous eipgwd wrote it: ENIs name a free-form group.
        let rows = [
            ("region/r1", r#"{"resource":"region","id":"r1"}"#),
            (
                "vpc/vpc-1",
                r#"{"resource":"vpc","id":"vpc-1","region":"r1","cidr":"10.0.0.0/16",
                    "ipv6_cidr":null,"ipv4_gateway":false}"#,
            ),
            (
                "vswitch/vsw-a",
                r#"{"resource":"vswitch","id":"vsw-a","vpc":"vpc-1","zone":"z",
                    "cidr":"10.0.1.0/24","ipv6_cidr":null}"#,
            ),
            (
                "eni/eni-default",
                r#"{"resource":"eni","id":"eni-default","kind":"secondary","vswitch":"vsw-a",
                    "security_group":"default","primary_ip":"10.0.1.10","secondary_ips":[],
                    "ipv6":[],"ipv6_public":[],"instance":null}"#,
            ),
            (
                "eni/eni-named",
                r#"{"resource":"eni","id":"eni-named","kind":"secondary","vswitch":"vsw-a",
                    "security_group":"sg-web","primary_ip":"10.0.1.11","secondary_ips":[],
                    "ipv6":[],"ipv6_public":[],"instance":null}"#,
            ),
            (
                "eip/203.0.113.10",
                r#"{"resource":"eip","address":"203.0.113.10","region":"r1",
                    "bandwidth_mbps":null,"association":{"type":"eni","eni":"eni-named",
                    "private_ip":"10.0.1.11"}}"#,
            ),
        ];
        write_old_file(&dir, 2, &rows);
        let state = Store::open(&dir).unwrap().load().unwrap();
        assert_eq!(state.enis.len(), 2);
        for eni in state.enis.values() {
            assert_eq!(eni.security_group, None, "ENI {} is still filtered", eni.id);
        }
        assert_eq!(state.vswitches["vsw-a"].vpc, "vpc-1");
        assert_eq!(state.eips_of_eni("eni-named").count(), 1);
        // The file is of this version now: opening it again migrates nothing and loads the
        // same.
        let store = Store::open(&dir).unwrap();
        assert_eq!(schema_version(store.db().unwrap()), Some(SCHEMA_VERSION));
        assert_eq!(store.load().unwrap(), state);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes a file of another schema `version` holding `rows` of JSON resources.
    fn write_old_file(dir: &Path, version: u64, rows: &[(&str, &str)]) {
        let db = Database::create(dir.join(STATE_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(META).unwrap().insert("schema_version", version).unwrap();
            let mut table = txn.open_table(RESOURCES).unwrap();
            for (key, json) in rows {
                table.insert(*key, json.as_bytes()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    /// Adds schema 4's EIP rows to a file [`write_old_file`] wrote.
    fn write_v4_eip_rows(dir: &Path, rows: &[(Ipv4Addr, Vec<u8>)]) {
        let db = Database::create(dir.join(STATE_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(EIPS_V4).unwrap();
            for (address, row) in rows {
                table.insert(u32::from(*address), row.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    /// Opens a file of schema version `from` whose migration must fail: checks that the
    /// error names the version, and that the file is still of that version with no EIP
    /// blocks' table. Returns the error and the file, to look at its rows.
    fn refused_migration(dir: &Path, from: u64) -> (String, Database) {
        let error = format!("{:#}", Store::open(dir).err().expect("a damaged file is refused"));
        assert!(error.contains(&format!("from schema version {from}")), "{error}");
        let db = Database::create(dir.join(STATE_FILE_NAME)).unwrap();
        assert_eq!(schema_version(&db), Some(from));
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(EIP_BLOCKS).is_err(), "the EIP table was created");
        drop(txn);
        (error, db)
    }

    fn schema_version(db: &Database) -> Option<u64> {
        let meta = db.begin_read().unwrap().open_table(META).unwrap();
        meta.get("schema_version").unwrap().map(|v| v.value())
    }

    /// The keys of the EIP blocks' table, in order, as addresses.
    fn block_keys(db: &Database) -> Vec<Ipv4Addr> {
        let blocks = db.begin_read().unwrap().open_table(EIP_BLOCKS).unwrap();
        blocks.iter().unwrap().map(|row| row.unwrap().0.value().into()).collect()
    }

    /// The rows of the JSON table, in order.
    fn resource_rows(db: &Database) -> Vec<(String, Vec<u8>)> {
        let resources = db.begin_read().unwrap().open_table(RESOURCES).unwrap();
        let rows = resources.iter().unwrap();
        rows.map(|row| row.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())).unwrap())
            .collect()
    }

    #[test]
    fn a_version_3_file_is_migrated_and_its_eips_get_rows_of_their_own() {
        let dir = temp_dir("migrate-v3");
        std::fs::create_dir_all(&dir).unwrap();
        // A version 3 file as the previous eipgwd wrote it: EIPs as JSON among the rest,
        // their keys in the order of text, not of addresses.
        let rows = [
            ("region/r1", r#"{"resource":"region","id":"r1"}"#),
            (
                "eip/203.0.113.10",
                r#"{"resource":"eip","address":"203.0.113.10","region":"r1",
                    "bandwidth_mbps":5,"association":{"type":"nat_gateway",
                    "nat_gateway":"ngw-1"}}"#,
            ),
            (
                "eip/203.0.113.9",
                r#"{"resource":"eip","address":"203.0.113.9","region":"r1",
                    "bandwidth_mbps":null,"association":null}"#,
            ),
            (
                "instance_type/t1",
                r#"{"resource":"instance_type","id":"t1","max_enis":2,
                "max_private_ipv4_per_eni":2,"max_ipv6_per_eni":0}"#,
            ),
        ];
        write_old_file(&dir, 3, &rows);
        let store = Store::open(&dir).unwrap();
        assert_eq!(schema_version(store.db().unwrap()), Some(SCHEMA_VERSION));
        let state = store.load().unwrap();
        let mut expected = State::default();
        for (_, json) in rows {
            expected.put(serde_json::from_str(json).unwrap());
        }
        assert_eq!(state, expected);
        assert_eq!(state.eips.len(), 2);
        // The EIPs left the JSON table.
        let db = store.db().unwrap();
        let keys: Vec<String> = resource_rows(db).into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["instance_type/t1", "region/r1"]);
        assert_eq!(block_keys(db), [Ipv4Addr::new(203, 0, 113, 0)]);
        assert!(db.begin_read().unwrap().open_table(EIPS_V4).is_err(), "schema 4's table");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_eip_in_a_version_3_file_stops_the_migration_and_changes_nothing() {
        let dir = temp_dir("migrate-v3-damaged");
        std::fs::create_dir_all(&dir).unwrap();
        let rows = [
            ("region/r1", r#"{"resource":"region","id":"r1"}"#),
            ("eip/203.0.113.9", r#"{"resource":"region","id":"r2"}"#),
        ];
        write_old_file(&dir, 3, &rows);
        let (error, db) = refused_migration(&dir, 3);
        assert!(error.contains("record eip/203.0.113.9 describes region r2"), "{error}");
        // Every row where it was.
        let mut written: Vec<(String, Vec<u8>)> =
            rows.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
        written.sort();
        assert_eq!(resource_rows(&db), written);
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_4_file_is_migrated_and_its_eips_go_into_blocks() {
        let dir = temp_dir("migrate-v4");
        std::fs::create_dir_all(&dir).unwrap();
        // A version 4 file as the previous eipgwd wrote it: a row per EIP in "eips".
        let region = ("region/r1", r#"{"resource":"region","id":"r1"}"#);
        write_old_file(&dir, 4, &[region]);
        let eips = [
            eip([198, 51, 100, 1], Some(7), Some(instance_association())),
            eip([203, 0, 113, 9], None, None),
            eip([203, 0, 113, 10], Some(5), Some(nat_gateway_association())),
        ];
        let rows: Vec<(Ipv4Addr, Vec<u8>)> = eips
            .iter()
            .map(|eip| {
                let mut row = Vec::new();
                eip_row::append(eip, &mut row);
                (eip.address, row)
            })
            .collect();
        write_v4_eip_rows(&dir, &rows);
        let store = Store::open(&dir).unwrap();
        let db = store.db().unwrap();
        assert_eq!(schema_version(db), Some(SCHEMA_VERSION));
        let mut expected = State::default();
        expected.put(serde_json::from_str(region.1).unwrap());
        for eip in eips {
            expected.put_eip(eip);
        }
        assert_eq!(store.load().unwrap(), expected);
        // A row per block, and schema 4's table is gone.
        assert_eq!(block_keys(db), [Ipv4Addr::new(198, 51, 100, 0), Ipv4Addr::new(203, 0, 113, 0)]);
        assert!(db.begin_read().unwrap().open_table(EIPS_V4).is_err(), "schema 4's table");
        assert_eq!(resource_rows(db).len(), 1);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_eip_in_a_version_4_file_stops_the_migration_and_changes_nothing() {
        let dir = temp_dir("migrate-v4-damaged");
        std::fs::create_dir_all(&dir).unwrap();
        write_old_file(&dir, 4, &[]);
        let mut good = Vec::new();
        eip_row::append(&eip([203, 0, 113, 6], None, None), &mut good);
        let rows =
            [(Ipv4Addr::new(203, 0, 113, 6), good), (Ipv4Addr::new(203, 0, 113, 7), vec![1u8])];
        write_v4_eip_rows(&dir, &rows);
        let (error, db) = refused_migration(&dir, 4);
        assert!(error.contains("record eip/203.0.113.7 is damaged"), "{error}");
        // Every row where it was.
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(EIPS_V4).unwrap();
        let written: Vec<(Ipv4Addr, Vec<u8>)> = table
            .iter()
            .unwrap()
            .map(|row| row.map(|(k, v)| (k.value().into(), v.value().to_vec())).unwrap())
            .collect();
        assert_eq!(written, rows);
        drop((table, txn, db));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn eip(address: [u8; 4], bandwidth_mbps: Option<u32>, association: Option<Association>) -> Eip {
        Eip { address: address.into(), region: "r1".into(), bandwidth_mbps, association }
    }

    fn instance_association() -> Association {
        Association::Instance {
            instance: "i-1".into(),
            eni: "eni-1".into(),
            private_ip: [10, 0, 1, 10].into(),
        }
    }

    fn nat_gateway_association() -> Association {
        Association::NatGateway { nat_gateway: "ngw-1".into() }
    }

    /// Every kind of association, and none, the `i`th of them.
    fn association(i: usize) -> Option<Association> {
        let private_ip = Ipv4Addr::new(10, 0, 1, i as u8);
        match i % 6 {
            0 => None,
            1 => Some(instance_association()),
            2 => Some(Association::Eni { eni: format!("eni-{i}").into(), private_ip }),
            3 => Some(Association::CutThrough { eni: format!("eni-{i}").into() }),
            4 => Some(Association::MultiEip { eni: format!("eni-{i}").into() }),
            _ => Some(nat_gateway_association()),
        }
    }

    /// Sets the EIPs at some addresses in `state` (`None`: released), as the model's change
    /// would, and commits that change.
    fn set_eips(store: &Store, state: &mut State, eips: Vec<(Ipv4Addr, Option<Eip>)>) {
        let mut change = Change::default();
        for (key, after) in eips {
            let before = state.eips.get(&key).cloned().map(Box::new);
            state.restore_eip(key, after.clone());
            change.eips.push(Changed { key, before, after });
        }
        change.eips.sort_by_key(|changed| changed.key);
        store.commit(state, &change).unwrap();
    }

    /// A few blocks of EIPs, in order: one in 198.51.100.0/24, every third address of
    /// 203.0.113.0/24 (with .0 and .255), and all of 203.0.114.0/24.
    fn many_eips() -> Vec<Eip> {
        let addresses = [[198, 51, 100, 7]]
            .into_iter()
            .chain((0..=255).filter(|octet| octet % 3 == 0).map(|octet| [203, 0, 113, octet]))
            .chain((0..=255).map(|octet| [203, 0, 114, octet]));
        // Every kind of association with a cap and without one.
        let cap = |i: usize| (i % 4 < 2).then_some(i as u32 * 10);
        addresses.enumerate().map(|(i, address)| eip(address, cap(i), association(i))).collect()
    }

    /// The blocks of [`many_eips`].
    const BLOCKS: [Ipv4Addr; 3] = [
        Ipv4Addr::new(198, 51, 100, 0),
        Ipv4Addr::new(203, 0, 113, 0),
        Ipv4Addr::new(203, 0, 114, 0),
    ];

    #[test]
    fn eips_over_several_blocks_survive_reopening_a_row_per_block() {
        let dir = temp_dir("blocks");
        let eips = many_eips();
        assert_eq!(eips.iter().filter(|eip| eip.address.octets()[3] == 255).count(), 2);
        let mut state = State::default();
        {
            let store = Store::open(&dir).unwrap();
            // Two changes: the second adds to the blocks the first wrote.
            let (first, second): (Vec<_>, Vec<_>) =
                eips.iter().cloned().partition(|eip| eip.address.octets()[3] % 2 == 0);
            for part in [first, second] {
                set_eips(
                    &store,
                    &mut state,
                    part.into_iter().map(|e| (e.address, Some(e))).collect(),
                );
                assert_eq!(store.load().unwrap(), state);
            }
            assert_eq!(block_keys(store.db().unwrap()), BLOCKS);
        }
        let reopened = Store::open(&dir).unwrap().load().unwrap();
        assert_eq!(reopened, state);
        assert_eq!(reopened.eips.values().cloned().collect::<Vec<_>>(), eips);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_block_s_row_goes_with_its_last_eip_and_stays_with_the_others() {
        let dir = temp_dir("block-release");
        let store = Store::open(&dir).unwrap();
        let mut state = State::default();
        let eips = many_eips();
        set_eips(&store, &mut state, eips.iter().map(|e| (e.address, Some(e.clone()))).collect());
        let db = store.db().unwrap();
        let rows = |db: &Database| block_keys(db).len();
        assert_eq!(rows(db), 3);
        // One EIP of the full block changes: its 255 others stay as they were.
        let mut changed = state.eips[&Ipv4Addr::new(203, 0, 114, 128)].clone();
        changed.association = Some(Association::MultiEip { eni: "eni-other".into() });
        changed.bandwidth_mbps = None;
        set_eips(&store, &mut state, vec![(changed.address, Some(changed.clone()))]);
        let loaded = store.load().unwrap();
        assert_eq!(loaded, state);
        let full_block = Ipv4Addr::new(203, 0, 114, 0)..=Ipv4Addr::new(203, 0, 114, 255);
        assert_eq!(loaded.eips.range(full_block.clone()).count(), 256);
        for eip in eips.iter().filter(|eip| full_block.contains(&eip.address)) {
            let expected = if eip.address == changed.address { &changed } else { eip };
            assert_eq!(&loaded.eips[&eip.address], expected);
        }
        // Releasing an EIP of a block that keeps others keeps its row; releasing the block's
        // last EIP removes it, in the same change as another block's EIP.
        let released = [Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(203, 0, 114, 0)];
        set_eips(&store, &mut state, released.iter().map(|address| (*address, None)).collect());
        assert_eq!(block_keys(db), BLOCKS[1..]);
        let loaded = store.load().unwrap();
        assert_eq!(loaded, state);
        assert_eq!(loaded.eips.len(), eips.len() - 2);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_eip_block_is_reported_with_its_block_and_left_untouched() {
        let block = u32::from(Ipv4Addr::new(203, 0, 113, 0));
        let mut good = Vec::new();
        eip_block::encode(
            &[eip([203, 0, 113, 9], None, None), eip([203, 0, 113, 10], None, None)],
            &mut good,
        );
        let (ninth, tenth) = good.split_at(good.len() / 2);
        let cases: [(&str, u32, Vec<u8>, &str); 6] = [
            ("empty", block, vec![], "holds no EIP"),
            ("again", block, [ninth, ninth].concat(), "the EIP .9 follows .9"),
            ("falling", block, [tenth, ninth].concat(), "the addresses do not rise"),
            ("truncated", block, good[..good.len() - 1].to_vec(), "the EIP 203.0.113.10: "),
            ("trailing", block, [good.as_slice(), &[11]].concat(), "the EIP 203.0.113.11: "),
            ("off-block", block + 9, good.clone(), "not the first address of a /24"),
        ];
        for (name, key, row, what) in cases {
            let dir = temp_dir(&format!("damaged-block-{name}"));
            let store = Store::open(&dir).unwrap();
            let txn = store.db().unwrap().begin_write().unwrap();
            txn.open_table(EIP_BLOCKS).unwrap().insert(key, row.as_slice()).unwrap();
            txn.commit().unwrap();
            let error = format!("{:#}", store.load().unwrap_err());
            let record = format!("record eip/{}/24 is damaged", Ipv4Addr::from(key));
            assert!(error.contains(&record), "{name}: {error}");
            assert!(error.contains(what), "{name}: {error}");
            drop(store);
            // Opening it again changes nothing either: the row is as it was written.
            let store = Store::open(&dir).unwrap();
            let db = store.db().unwrap();
            assert_eq!(schema_version(db), Some(SCHEMA_VERSION));
            let blocks = db.begin_read().unwrap().open_table(EIP_BLOCKS).unwrap();
            assert_eq!(blocks.len().unwrap(), 1, "{name}");
            assert_eq!(blocks.get(key).unwrap().unwrap().value(), row.as_slice(), "{name}");
            assert!(store.load().is_err(), "{name}");
            drop((blocks, store));
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_untouched() {
        let dir = temp_dir("newer");
        std::fs::create_dir_all(&dir).unwrap();
        write_old_file(&dir, 99, &[]);
        let error = format!("{:#}", Store::open(&dir).err().expect("a newer file is refused"));
        assert!(error.contains("schema version 99"), "{error}");
        let db = Database::create(dir.join(STATE_FILE_NAME)).unwrap();
        assert_eq!(schema_version(&db), Some(99));
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn security_groups_and_the_enis_they_filter_survive_reopening() {
        let dir = temp_dir("security-groups");
        let mut state = State::default();
        {
            let store = Store::open(&dir).unwrap();
            let requests: Vec<Request> = serde_json::from_str(
                r#"[
                {"op": "create_region", "id": "r1"},
                {"op": "create_vpc", "id": "vpc-1", "region": "r1", "cidr": "10.0.0.0/16"},
                {"op": "create_vswitch", "id": "vsw-a", "vpc": "vpc-1", "zone": "z",
                 "cidr": "10.0.1.0/24"},
                {"op": "create_security_group", "id": "sg-web", "vpc": "vpc-1"},
                {"op": "authorize_security_group", "id": "sg-web",
                 "rule": {"protocol": "tcp", "ports": {"min": 80, "max": 80},
                          "source": "0.0.0.0/0"}},
                {"op": "create_eni", "id": "eni-1", "vswitch": "vsw-a",
                 "security_group": "sg-web"}
            ]"#,
            )
            .unwrap();
            for request in requests {
                let (_, change) = state.run(&request).unwrap();
                store.commit(&state, &change).unwrap();
            }
        }
        let reopened = Store::open(&dir).unwrap().load().unwrap();
        assert_eq!(reopened, state);
        assert_eq!(reopened.enis["eni-1"].security_group.as_deref(), Some("sg-web"));
        assert_eq!(reopened.enis_of_security_group("sg-web").count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
