//! The log generations file (`<data_dir>/log-generations`): what
//! [`crate::site::generations`] keeps, on disk — only the format; the rule (bump, save before
//! use) is the core's. Written atomically (temp file, fsync, rename).
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tern_node::core::PartitionId;

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

/// Where the file lives in the gateway's data directory.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join("log-generations")
}

/// Loads the file (none yet: every generation is 0). A damaged file is an error: starting
/// from 0 could reuse seqs the peers already hold.
pub fn load(path: &Path) -> Result<BTreeMap<PartitionId, u64>, GenerationsError> {
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(BTreeMap::new());
        }
        Err(source) => {
            return Err(GenerationsError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |reason: String| GenerationsError::Corrupt {
        path: path.to_owned(),
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
    Ok(by_partition)
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
    fn saved_generations_reload_and_a_torn_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_in(dir.path());
        assert_eq!(load(&path).expect("no file yet"), BTreeMap::new());
        let saved = BTreeMap::from([(PartitionId(2), 6), (PartitionId(7), 1)]);
        save(&path, &saved).expect("save");
        assert_eq!(load(&path).expect("reload"), saved);
        std::fs::write(&path, "tern-log-generations v1\n2 6\n").expect("tear");
        assert!(load(&path).is_err(), "a torn file is refused");
    }
}
