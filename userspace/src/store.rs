//! The durable store: an embedded, transactional, crash-safe database (redb) in one file
//! under the state directory. Every change is one write transaction (R29): after a crash
//! the file holds the state before or after a request, never a mix.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::model::{Change, Key, Resource, State};

/// `<kind>/<id>` → the resource as JSON.
const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
/// Schema bookkeeping.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_VERSION: u64 = 2;

pub const STATE_FILE_NAME: &str = "eipgw.redb";

pub struct Store {
    db: Database,
    path: PathBuf,
}

fn row_key(key: &Key) -> String {
    format!("{}/{}", key.kind.name(), key.id)
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
        let store = Self { db, path };
        store.check_schema()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_schema(&self) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
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
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RESOURCES)?;
            for (key, after) in &change.after {
                let row = row_key(key);
                match after {
                    Some(resource) => {
                        let json = serde_json::to_vec(resource)?;
                        table.insert(row.as_str(), json.as_slice())?;
                    }
                    None => {
                        table.remove(row.as_str())?;
                    }
                }
            }
        }
        txn.commit().context("committing to the state file")?;
        Ok(())
    }
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
}
