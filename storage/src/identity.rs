//! The node's identity on disk, kept in `node.json` in the data directory: the id the
//! controller gave it, so a restarted node rejoins as the same member with its data, and a
//! random token made when the directory was first used, which proves to the controller that a
//! registration, heartbeat or catch-up report really comes from this data directory (the
//! controller keeps only its digest; see `docs/security.md`). Also the newest partition map the
//! node installed, kept in `map.json`, so a restarted node knows what it held and a controller
//! that lost its state can adopt the cluster from its nodes.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use common::placement::NodeId;

const FILE: &str = "node.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    #[serde(default)]
    node_id: Option<NodeId>,
    /// Absent in directories made before tokens existed: one is made on the next start.
    #[serde(default)]
    token: Option<String>,
}

/// Reads and writes `node.json` in one data directory.
#[derive(Debug, Clone)]
pub struct IdentityFile {
    path: PathBuf,
    token: String,
}

impl IdentityFile {
    /// Opens the identity in `data_dir`: the remembered id (`None` for a new node) and the
    /// token, made and saved now if the directory has none. A file that cannot be parsed is an
    /// error, not a fresh start: joining under a new id would orphan the data in the directory.
    pub fn open(data_dir: &Path) -> anyhow::Result<(Self, Option<NodeId>)> {
        let path = data_dir.join(FILE);
        let saved = match common::atomic_file::read(&path)? {
            None => Identity { node_id: None, token: None },
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is corrupt ({e}); restore it or move the data directory away",
                    path.display()
                )
            })?,
        };
        let Some(token) = saved.token else {
            let file = Self { path, token: new_token() };
            file.save(saved.node_id)?;
            return Ok((file, saved.node_id));
        };
        Ok((Self { path, token }, saved.node_id))
    }

    /// The token that proves this node's identity.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Remembers `node_id` (with the token) durably.
    pub fn save(&self, node_id: Option<NodeId>) -> std::io::Result<()> {
        let identity = Identity { node_id, token: Some(self.token.clone()) };
        common::atomic_file::write(&self.path, &serde_json::to_vec(&identity).expect("identity encodes"))
    }
}

/// 128 random bits in hex.
fn new_token() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
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
    fn ids_and_tokens_round_trip_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (file, id) = IdentityFile::open(dir.path()).unwrap();
        assert_eq!(id, None);
        assert_eq!(file.token().len(), 32);
        file.save(Some(7)).unwrap();
        let (again, id) = IdentityFile::open(dir.path()).unwrap();
        assert_eq!((again.token(), id), (file.token(), Some(7)), "the token outlives restarts");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(IdentityFile::open(other.path()).unwrap().0.token(), file.token());
        // A directory from before tokens: the id is kept and a token is added.
        std::fs::write(dir.path().join(FILE), br#"{"node_id":3}"#).unwrap();
        let (upgraded, id) = IdentityFile::open(dir.path()).unwrap();
        assert_eq!(id, Some(3));
        assert_eq!(IdentityFile::open(dir.path()).unwrap().0.token(), upgraded.token());
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let err = IdentityFile::open(dir.path()).unwrap_err().to_string();
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
