//! What the pins an earlier agent left decide about the maps this one loads.
//!
//! The object is loaded with its maps pinned by name, and aya reuses a pinned map only if
//! the object defines it alike. After an upgrade or a change of options two things can
//! differ, and neither may empty a table under the running program:
//! - the size of the maps sized by `--max-mappings`: a pinned map keeps the size it was
//!   made with, and the loader is told that size;
//! - the flags of a map (an agent before [`MAPPING_MAP_FLAGS`] made the mapping maps with
//!   a random seed): the pinned map is retired, a new one is made, and every entry of the
//!   old goes into the new before the new program takes over from the old one, which reads
//!   the old map until then. The retired pin goes once the start has succeeded; a start
//!   that fails puts it back.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::{Pod, maps::MapData};
use eipgw_common::{EipEntry, MAP_EIPS, MAP_PRIVATE_IPS, MAPPING_MAP_FLAGS, PrivateEntry};

use super::mirror::{read_batches, update_batches};

/// Copies every entry of one map into another of the same key and value types; says how
/// many.
type CopyEntries = fn(&MapData, &MapData) -> anyhow::Result<usize>;

/// The maps whose pins are retired when their flags are not these, and how their entries
/// are carried over.
const FLAGGED_MAPS: [(&str, u32, CopyEntries); 2] = [
    (MAP_EIPS, MAPPING_MAP_FLAGS, copy_entries::<u32, EipEntry>),
    (MAP_PRIVATE_IPS, MAPPING_MAP_FLAGS, copy_entries::<u32, PrivateEntry>),
];

/// A pinned map put aside for a new one with other flags, until its entries are in the
/// new one.
pub struct Retired {
    name: &'static str,
    path: PathBuf,
    copy: CopyEntries,
}

/// Where a retired map is pinned. Not `<name>.retired`: bpffs keeps dots in names for
/// itself (EPERM).
fn retired_path(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(format!("{name}:retired"))
}

fn open_pinned(path: &Path) -> anyhow::Result<Option<MapData>> {
    if !path.exists() {
        return Ok(None);
    }
    let map = MapData::from_pin(path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    Ok(Some(map))
}

/// The size of the map an earlier agent pinned as `name` (or retired under that name), if
/// it left one.
pub fn pinned_max_entries(pin_dir: &Path, name: &str) -> anyhow::Result<Option<u32>> {
    for path in [pin_dir.join(name), retired_path(pin_dir, name)] {
        if let Some(map) = open_pinned(&path)? {
            let info = map.info().with_context(|| format!("reading {}", path.display()))?;
            return Ok(Some(info.max_entries()));
        }
    }
    Ok(None)
}

/// Puts aside the pinned maps whose flags are not the object's, so that the loader makes
/// new ones. A map found retired already is one an interrupted start put aside: the map
/// pinned in its place, if any, holds at most part of its entries, which are carried over
/// again.
fn retire_changed(pin_dir: &Path) -> anyhow::Result<Vec<Retired>> {
    let mut retired = Vec::new();
    for (name, flags, copy) in FLAGGED_MAPS {
        let (path, retired_at) = (pin_dir.join(name), retired_path(pin_dir, name));
        if open_pinned(&retired_at)?.is_some() {
            retired.push(Retired { name, path: retired_at, copy });
            continue;
        }
        let Some(map) = open_pinned(&path)? else { continue };
        let info = map.info().with_context(|| format!("reading {}", path.display()))?;
        if info.map_flags() == flags {
            continue;
        }
        log::warn!(
            "map {name} was made with flags {:#x}, not {flags:#x}: moving its entries to a new one",
            info.map_flags()
        );
        std::fs::rename(&path, &retired_at)
            .with_context(|| format!("moving pin {} aside", path.display()))?;
        retired.push(Retired { name, path: retired_at, copy });
    }
    Ok(retired)
}

/// Copies every entry of the retired maps into the maps pinned in their place. The loaded
/// object must have made those maps, and no program may read them yet.
pub fn carry_over(pin_dir: &Path, retired: &[Retired]) -> anyhow::Result<()> {
    for map in retired {
        let (old, new) = (open_pinned(&map.path)?, open_pinned(&pin_dir.join(map.name))?);
        let (Some(old), Some(new)) = (old, new) else {
            bail!("map {} or its retired copy is no longer pinned", map.name);
        };
        let count =
            (map.copy)(&old, &new).with_context(|| format!("carrying map {} over", map.name))?;
        log::info!("map {}: {count} entries carried over into its new map", map.name);
    }
    Ok(())
}

/// Runs `start` (which loads the object and carries the retired maps over) with the maps
/// whose flags changed put aside. They stay pinned, as retired, until it has succeeded:
/// a start that fails, before or after the new program took over, puts them back, so that
/// the agent that made them can run again on its pins.
pub fn while_retired<T>(
    pin_dir: &Path,
    start: impl FnOnce(&[Retired]) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let retired = retire_changed(pin_dir)?;
    let started = start(&retired);
    if started.is_err() {
        restore(pin_dir, &retired);
        return started;
    }
    for map in &retired {
        // Left behind, it would be carried over again at the next start, before that
        // start's reconciling corrects what it carried.
        if let Err(e) = std::fs::remove_file(&map.path) {
            log::error!("removing pin {}: {e}", map.path.display());
        }
    }
    started
}

/// Puts the retired maps back where they were, in place of the maps made for them.
fn restore(pin_dir: &Path, retired: &[Retired]) {
    for map in retired {
        let path = pin_dir.join(map.name);
        let restored = match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .and_then(|()| std::fs::rename(&map.path, &path));
        if let Err(e) = restored {
            log::error!("putting pin {} back: {e}", map.path.display());
        }
    }
}

fn copy_entries<K: Pod, V: Pod>(from: &MapData, to: &MapData) -> anyhow::Result<usize> {
    let rows: Vec<(K, V)> = read_batches(from)?;
    let (keys, values): (Vec<K>, Vec<V>) = rows.into_iter().unzip();
    update_batches(to.fd().as_fd().as_raw_fd(), &keys, &values).context("writing in batches")?;
    Ok(keys.len())
}
