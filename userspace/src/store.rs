//! The durable store: an embedded, transactional, crash-safe database (redb) in one file
//! under the state directory. Every change is one write transaction (R29): after a crash
//! the file holds the state before or after a request, never a mix.

use std::{
    fmt::{Display, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use redb::{Database, ReadableDatabase as _, ReadableTable as _, Table, TableDefinition};
use serde::Serialize;

use crate::model::{Change, Eip, Key, Kind, Resource, State};

/// `<kind>/<id>` → the resource as JSON.
const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
/// Schema bookkeeping.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// 3: an ENI's `security_group` names a security group resource, or is null.
const SCHEMA_VERSION: u64 = 3;

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

/// [`row_key`] into a buffer, which it replaces: an apply may write a million rows. An
/// EIP's id is its address, written as it is without making a [`Key`].
fn write_row_key(row: &mut String, kind: Kind, id: impl Display) {
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
            match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(2) => {
                    migrate_eni_security_groups(&mut txn.open_table(RESOURCES)?).with_context(
                        || {
                            format!(
                                "migrating state file {} from schema version 2 (the file was \
                                 left untouched)",
                                self.path.display()
                            )
                        },
                    )?;
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                    log::info!(
                        "state file {}: migrated from schema version 2 to {SCHEMA_VERSION}",
                        self.path.display()
                    );
                }
                Some(other) => bail!(
                    "state file {} has schema version {other}; this eipgwd reads version \
                     {SCHEMA_VERSION} (the file was left untouched)",
                    self.path.display()
                ),
            }
            txn.open_table(RESOURCES)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Reads the whole state.
    pub fn load(&self) -> anyhow::Result<State> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(RESOURCES)?;
        let mut state = State::default();
        for row in table.range::<&str>(..)? {
            let (key, value) = row?;
            let resource: Resource = serde_json::from_slice(value.value()).with_context(|| {
                format!("state file {}: record {} is damaged", self.path.display(), key.value())
            })?;
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
        Ok(state)
    }

    /// Writes a change in one transaction; on error nothing of it is stored.
    pub fn commit(&self, change: &Change) -> anyhow::Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut table = txn.open_table(RESOURCES)?;
            // One buffer for every row and one for every key: an apply may write a million.
            let (mut json, mut row) = (Vec::new(), String::new());
            let mut write = |row: &str, resource: Option<Row<'_>>| -> anyhow::Result<()> {
                match resource {
                    Some(resource) => {
                        json.clear();
                        serde_json::to_writer(&mut json, &resource)?;
                        table.insert(row, json.as_slice())?;
                    }
                    None => {
                        table.remove(row)?;
                    }
                }
                Ok(())
            };
            for changed in &change.others {
                write_row_key(&mut row, changed.key.kind, &changed.key.id);
                write(&row, changed.after.as_ref().map(Row::Other))?;
            }
            for changed in &change.eips {
                write_row_key(&mut row, Kind::Eip, changed.key);
                write(&row, changed.after.as_ref().map(|eip| Row::Eip(EipRow::Eip(eip))))?;
            }
        }
        txn.commit().context("committing to the state file")?;
        Ok(())
    }
}

/// A row's value: a resource as [`Resource`] encodes it, borrowed from a change.
#[derive(Serialize)]
#[serde(untagged)]
enum Row<'a> {
    Other(&'a Resource),
    Eip(EipRow<'a>),
}

/// An EIP encoded as `Resource::Eip` would be, without making one.
#[derive(Serialize)]
#[serde(tag = "resource", rename_all = "snake_case")]
enum EipRow<'a> {
    Eip(&'a Eip),
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
    fn an_eip_row_is_encoded_as_its_resource() {
        let eip: crate::model::Eip = serde_json::from_str(
            r#"{"address": "203.0.113.10", "region": "r1", "bandwidth_mbps": 5,
                "association": {"type": "eni", "eni": "eni-1", "private_ip": "10.0.1.10"}}"#,
        )
        .unwrap();
        let row = serde_json::to_string(&Row::Eip(EipRow::Eip(&eip))).unwrap();
        assert_eq!(row, serde_json::to_string(&Resource::Eip(eip.clone())).unwrap());
        assert_eq!(serde_json::from_str::<Resource>(&row).unwrap(), Resource::Eip(eip));
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
        ];
        {
            let db = Database::create(dir.join(STATE_FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                txn.open_table(META).unwrap().insert("schema_version", 2).unwrap();
                let mut table = txn.open_table(RESOURCES).unwrap();
                for (key, json) in rows {
                    table.insert(key, json.as_bytes()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let state = Store::open(&dir).unwrap().load().unwrap();
        assert_eq!(state.enis.len(), 2);
        for eni in state.enis.values() {
            assert_eq!(eni.security_group, None, "ENI {} is still filtered", eni.id);
        }
        assert_eq!(state.vswitches["vsw-a"].vpc, "vpc-1");
        // The file is version 3 now: opening it again migrates nothing and loads the same.
        let store = Store::open(&dir).unwrap();
        let version = store.db().unwrap().begin_read().unwrap().open_table(META).unwrap();
        assert_eq!(version.get("schema_version").unwrap().map(|v| v.value()), Some(3));
        assert_eq!(store.load().unwrap(), state);
        drop(version);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_untouched() {
        let dir = temp_dir("newer");
        std::fs::create_dir_all(&dir).unwrap();
        {
            let db = Database::create(dir.join(STATE_FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema_version", 99).unwrap();
            txn.commit().unwrap();
        }
        let error = format!("{:#}", Store::open(&dir).err().expect("a newer file is refused"));
        assert!(error.contains("schema version 99"), "{error}");
        let db = Database::create(dir.join(STATE_FILE_NAME)).unwrap();
        let meta = db.begin_read().unwrap().open_table(META).unwrap();
        assert_eq!(meta.get("schema_version").unwrap().map(|v| v.value()), Some(99));
        drop(meta);
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
