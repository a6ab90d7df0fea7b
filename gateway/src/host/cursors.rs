//! The sinks' applied cursors on disk, one file per source site. Written atomically (temp file,
//! fsync, rename) every `cursor_persist_ms` when changed. A cursor older than the data only makes
//! the source resend records, which apply idempotently (each carries the entry's full state and
//! `reconcile` keeps the dominant version), so a lost update of this file costs time, not data.
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tern_node::core::PartitionId;

const HEADER: &str = "tern-sink-cursors v1";
const TRAILER: &str = "end";

#[derive(Debug, thiserror::Error)]
pub enum CursorFileError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: line {line}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
}

/// Where the cursors of the sink for `source_site` live under the gateway's data dir.
pub fn cursor_path(data_dir: &Path, source_site: &str) -> PathBuf {
    data_dir
        .join("sinks")
        .join(format!("{source_site}.cursors"))
}

/// The cursors saved for a source; empty when there is no file yet. A damaged file (torn or
/// edited) is an error: the caller decides (the host starts from zero, i.e. full resend).
pub fn load(path: &Path) -> Result<BTreeMap<PartitionId, u64>, CursorFileError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(CursorFileError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |line: usize, reason| CursorFileError::Corrupt {
        path: path.to_owned(),
        line,
        reason,
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.first() != Some(&HEADER) {
        return Err(corrupt(1, "missing header"));
    }
    if lines.last() != Some(&TRAILER) {
        return Err(corrupt(lines.len(), "missing trailer (torn write)"));
    }
    let mut cursors = BTreeMap::new();
    for (index, line) in lines[1..lines.len() - 1].iter().enumerate() {
        let mut parts = line.split(' ');
        let (Some(p), Some(seq), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(corrupt(index + 2, "expected `partition seq`"));
        };
        let p: u16 = p.parse().map_err(|_| corrupt(index + 2, "bad partition"))?;
        let seq: u64 = seq.parse().map_err(|_| corrupt(index + 2, "bad seq"))?;
        cursors.insert(PartitionId(p), seq);
    }
    Ok(cursors)
}

/// Replaces the file with `cursors`, durably.
pub fn store(
    path: &Path,
    cursors: impl IntoIterator<Item = (PartitionId, u64)>,
) -> Result<(), CursorFileError> {
    let io_error = |action, path: &Path| {
        let path = path.to_owned();
        move |source| CursorFileError::Io {
            action,
            path,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
    }
    let mut text = format!("{HEADER}\n");
    for (p, seq) in cursors {
        if seq > 0 {
            text.push_str(&format!("{} {seq}\n", p.0));
        }
    }
    text.push_str(TRAILER);
    text.push('\n');
    let tmp = path.with_extension("cursors.tmp");
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
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = cursor_path(dir.path(), "b");
        assert!(load(&path).expect("no file is empty").is_empty());
        let saved = [
            (PartitionId(0), 7),
            (PartitionId(3), 0),
            (PartitionId(9), 42),
        ];
        store(&path, saved).expect("store");
        let loaded = load(&path).expect("load");
        assert_eq!(
            loaded.into_iter().collect::<Vec<_>>(),
            vec![(PartitionId(0), 7), (PartitionId(9), 42)]
        );
        let cases: &[(&str, &str)] = &[
            ("torn", "tern-sink-cursors v1\n0 7\n"),
            ("no header", "0 7\nend\n"),
            ("bad seq", "tern-sink-cursors v1\n0 x\nend\n"),
            ("extra field", "tern-sink-cursors v1\n0 7 8\nend\n"),
        ];
        for (name, text) in cases {
            std::fs::write(&path, text).expect("write");
            assert!(load(&path).is_err(), "{name} must be refused");
        }
    }
}
