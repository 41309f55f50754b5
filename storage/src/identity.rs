//! The node's identity on disk: the id the controller gave it, kept in `node.json` in the data
//! directory so a restarted node rejoins as the same member with its data; and the newest
//! partition map it installed, kept in `map.json`, so a restarted node knows what it held and a
//! controller that lost its state can adopt the cluster from its nodes.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use common::placement::NodeId;

const FILE: &str = "node.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    node_id: NodeId,
}

/// Reads and writes `node.json` in one data directory.
#[derive(Debug, Clone)]
pub struct IdentityFile {
    path: PathBuf,
}

impl IdentityFile {
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join(FILE) }
    }

    /// The remembered id, `None` for a new node. A file that cannot be parsed is an error, not a
    /// fresh start: joining under a new id would orphan the data in the directory.
    pub fn load(&self) -> anyhow::Result<Option<NodeId>> {
        let Some(bytes) = common::atomic_file::read(&self.path)? else { return Ok(None) };
        let identity: Identity = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is corrupt ({e}); restore it or move the data directory away",
                self.path.display()
            )
        })?;
        Ok(Some(identity.node_id))
    }

    /// Remembers `node_id` durably.
    pub fn save(&self, node_id: NodeId) -> std::io::Result<()> {
        let json = serde_json::to_vec(&Identity { node_id }).expect("identity encodes");
        common::atomic_file::write(&self.path, &json)
    }
}

const MAP_FILE: &str = "map.json";

/// Reads and writes `map.json` in one data directory.
#[derive(Debug, Clone)]
pub struct MapFile {
    path: PathBuf,
}

impl MapFile {
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join(MAP_FILE) }
    }

    /// The saved map, `None` if there is none. A file that cannot be parsed is an error.
    pub fn load(&self) -> anyhow::Result<Option<common::placement::PartitionMap>> {
        let Some(bytes) = common::atomic_file::read(&self.path)? else { return Ok(None) };
        let map = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is corrupt ({e}); remove it (the controller sends the map again)",
                self.path.display()
            )
        })?;
        Ok(Some(map))
    }

    /// Saves `map` durably.
    pub fn save(&mut self, map: &common::placement::PartitionMap) -> std::io::Result<()> {
        common::atomic_file::write(&self.path, &serde_json::to_vec(map).expect("maps encode"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let file = IdentityFile::new(dir.path());
        assert_eq!(file.load().unwrap(), None);
        file.save(7).unwrap();
        assert_eq!(file.load().unwrap(), Some(7));
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn maps_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = MapFile::new(dir.path());
        assert!(file.load().unwrap().is_none());
        let members = (1..=3).map(|id| common::placement::Member::up(id, format!("s{id}:1"))).collect();
        let map = common::placement::PartitionMap::build(4, members, 2).unwrap();
        file.save(&map).unwrap();
        assert_eq!(file.load().unwrap(), Some(map));
    }
}
