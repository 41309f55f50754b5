//! The node's identity on disk: the id the controller gave it, kept in `node.json` in the data
//! directory so a restarted node rejoins as the same member with its data.

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
}
