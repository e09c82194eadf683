//! The durable store: an embedded, transactional, crash-safe database (redb) in one file
//! under the state directory. Every change is one write transaction (R29): after a crash
//! the file holds the state before or after a request, never a mix.

mod eip_row;

use std::{
    fmt::{Display, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use redb::{Database, ReadableDatabase as _, ReadableTable as _, Table, TableDefinition};

use crate::model::{Change, Key, Kind, Resource, State};

/// `<kind>/<id>` → the resource as JSON, for every kind but EIPs.
const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
/// An EIP's address, as a number → the rest of it ([`eip_row`]). Numbers keep a run of
/// addresses in order, so that writing many appends to the tree instead of splitting it all
/// over.
const EIPS: TableDefinition<u32, &[u8]> = TableDefinition::new("eips");
/// Schema bookkeeping.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// 3: an ENI's `security_group` names a security group resource, or is null.
/// 4: EIPs are in [`EIPS`], not in [`RESOURCES`].
const SCHEMA_VERSION: u64 = 4;

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
            let mut eips = txn.open_table(EIPS)?;
            match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(from @ (2 | 3)) => {
                    let mut migrated = || -> anyhow::Result<()> {
                        if from == 2 {
                            migrate_eni_security_groups(&mut resources)?;
                        }
                        migrate_eips(&mut resources, &mut eips)
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
        for row in txn.open_table(EIPS)?.range::<u32>(..)? {
            let (key, value) = row?;
            let address = Ipv4Addr::from(key.value());
            let eip = eip_row::decode(address, value.value())
                .with_context(|| damaged(&format_args!("{}/{address}", Kind::Eip.name())))?;
            state.put_eip(eip);
        }
        Ok(state)
    }

    /// Writes a change in one transaction; on error nothing of it is stored.
    pub fn commit(&self, change: &Change) -> anyhow::Result<()> {
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
            let mut eips = txn.open_table(EIPS)?;
            for changed in &change.eips {
                let key = u32::from(changed.key);
                match &changed.after {
                    Some(eip) => {
                        eip_row::encode(eip, &mut value);
                        eips.insert(key, value.as_slice())?;
                    }
                    None => {
                        eips.remove(key)?;
                    }
                }
            }
        }
        txn.commit().context("committing to the state file")?;
        Ok(())
    }
}

/// Schema 3 → 4: EIPs move from JSON rows in `resources` to rows of their own in `eips`.
fn migrate_eips(
    resources: &mut Table<&str, &[u8]>,
    eips: &mut Table<u32, &[u8]>,
) -> anyhow::Result<()> {
    let eip_prefix = format!("{}/", Kind::Eip.name());
    let mut moved = Vec::new();
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
        moved.push((key.to_owned(), eip));
    }
    let mut row = Vec::new();
    for (key, eip) in moved {
        eip_row::encode(&eip, &mut row);
        eips.insert(u32::from(eip.address), row.as_slice())?;
        resources.remove(key.as_str())?;
    }
    Ok(())
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
    use crate::model::Request;

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
                store.commit(&change).unwrap();
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

    fn schema_version(db: &Database) -> Option<u64> {
        let meta = db.begin_read().unwrap().open_table(META).unwrap();
        meta.get("schema_version").unwrap().map(|v| v.value())
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
        assert_eq!(db.begin_read().unwrap().open_table(EIPS).unwrap().len().unwrap(), 2);
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
        let error = format!("{:#}", Store::open(&dir).err().expect("a damaged file is refused"));
        assert!(error.contains("from schema version 3"), "{error}");
        assert!(error.contains("record eip/203.0.113.9 describes region r2"), "{error}");
        // Still version 3, with every row where it was.
        let db = Database::create(dir.join(STATE_FILE_NAME)).unwrap();
        assert_eq!(schema_version(&db), Some(3));
        let mut written: Vec<(String, Vec<u8>)> =
            rows.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
        written.sort();
        assert_eq!(resource_rows(&db), written);
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(EIPS).is_err(), "the EIP table was created");
        drop((txn, db));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_eip_row_is_reported_with_its_address() {
        let dir = temp_dir("damaged-eip");
        let store = Store::open(&dir).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        txn.open_table(EIPS)
            .unwrap()
            .insert(u32::from(Ipv4Addr::new(203, 0, 113, 7)), &[1u8][..])
            .unwrap();
        txn.commit().unwrap();
        let error = format!("{:#}", store.load().unwrap_err());
        assert!(error.contains("record eip/203.0.113.7 is damaged"), "{error}");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
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
                store.commit(&change).unwrap();
            }
        }
        let reopened = Store::open(&dir).unwrap().load().unwrap();
        assert_eq!(reopened, state);
        assert_eq!(reopened.enis["eni-1"].security_group.as_deref(), Some("sg-web"));
        assert_eq!(reopened.enis_of_security_group("sg-web").count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
