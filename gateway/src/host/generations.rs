//! The log generations file (`<data_dir>/log-generations`): what
//! [`crate::site::generations`] keeps, on disk. Written atomically (temp file, fsync, rename)
//! before any record of a new generation is handed to a delegator.
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tern_node::core::PartitionId;

pub use crate::site::generations::{SEQ_BITS, generation_of, seq_of, wan_seq};

const HEADER: &str = "tern-log-generations v1";
const TRAILER: &str = "end";

#[derive(Debug, thiserror::Error)]
pub enum GenerationsError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// The current generation of every partition whose log ever restarted (others: 0).
#[derive(Debug)]
pub struct Generations {
    path: PathBuf,
    by_partition: BTreeMap<PartitionId, u64>,
}

impl Generations {
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("log-generations")
    }

    /// Loads the file (none yet: every generation is 0). A damaged file is an error: starting
    /// from 0 could reuse seqs the peers already hold.
    pub fn load(path: PathBuf) -> Result<Self, GenerationsError> {
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Self {
                    path,
                    by_partition: BTreeMap::new(),
                });
            }
            Err(source) => {
                return Err(GenerationsError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let corrupt = |reason: String| GenerationsError::Corrupt {
            path: path.clone(),
            reason,
        };
        let lines: Vec<&str> = text.lines().collect();
        if lines.first() != Some(&HEADER) || lines.last() != Some(&TRAILER) {
            return Err(corrupt("missing header or trailer (torn write?)".into()));
        }
        let mut by_partition = BTreeMap::new();
        for line in &lines[1..lines.len() - 1] {
            let parsed = line
                .split_once(' ')
                .and_then(|(p, g)| Some((p.parse::<u16>().ok()?, g.parse::<u64>().ok()?)));
            let Some((p, g)) = parsed else {
                return Err(corrupt(format!("bad line {line:?}")));
            };
            by_partition.insert(PartitionId(p), g);
        }
        Ok(Self { path, by_partition })
    }

    pub fn get(&self, partition: PartitionId) -> u64 {
        self.by_partition.get(&partition).copied().unwrap_or(0)
    }

    /// Raises `partition`'s generation above both its current one and `at_least - 1`, and
    /// persists it before returning it.
    pub fn bump(&mut self, partition: PartitionId, at_least: u64) -> Result<u64, GenerationsError> {
        let next = (self.get(partition) + 1).max(at_least);
        let previous = self.by_partition.insert(partition, next);
        if let Err(error) = self.store() {
            match previous {
                Some(g) => self.by_partition.insert(partition, g),
                None => self.by_partition.remove(&partition),
            };
            return Err(error);
        }
        Ok(next)
    }

    fn store(&self) -> Result<(), GenerationsError> {
        save(&self.path, &self.by_partition)
    }

    /// Every partition's generation, for the site gateway core.
    pub fn into_map(self) -> BTreeMap<PartitionId, u64> {
        self.by_partition
    }
}

/// Replaces the file at `path` with `by_partition`, durably.
pub fn save(
    path: &Path,
    by_partition: &BTreeMap<PartitionId, u64>,
) -> Result<(), GenerationsError> {
    let io_error = |action, path: &Path| {
        let path = path.to_owned();
        move |source| GenerationsError::Io {
            action,
            path,
            source,
        }
    };
    let mut text = format!("{HEADER}\n");
    for (p, g) in by_partition {
        text.push_str(&format!("{} {g}\n", p.0));
    }
    text.push_str(TRAILER);
    text.push('\n');
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(io_error("create", &tmp))?;
    file.write_all(text.as_bytes())
        .map_err(io_error("write", &tmp))?;
    file.sync_all().map_err(io_error("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("rename into", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_persist_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = Generations::path_in(dir.path());
        let mut gens = Generations::load(path.clone()).expect("empty");
        assert_eq!(gens.get(PartitionId(2)), 0);
        assert_eq!(gens.bump(PartitionId(2), 0).expect("bump"), 1);
        assert_eq!(gens.bump(PartitionId(2), 5).expect("bump"), 5);
        assert_eq!(gens.bump(PartitionId(2), 0).expect("bump"), 6);
        let again = Generations::load(path.clone()).expect("reload");
        assert_eq!(again.get(PartitionId(2)), 6);
        assert_eq!(again.get(PartitionId(3)), 0);
        std::fs::write(&path, "tern-log-generations v1\n2 6\n").expect("tear");
        assert!(Generations::load(path).is_err(), "a torn file is refused");
    }
}
