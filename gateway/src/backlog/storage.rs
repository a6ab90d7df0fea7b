//! The storage seam: the few file operations a backlog needs, in one flat directory.
//!
//! [`FsStorage`] is the real one; [`MemStorage`](super::MemStorage) is an in-memory disk that
//! simulators use to inject torn writes, failed fsyncs, corrupted bytes and crashes.
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// File operations on one directory, by plain file name.
///
/// Durability contract (what the backlog relies on): data passed to `append` may be lost on a
/// crash until `sync` of that file returns `Ok`; `create`, `rename` and `remove` reach stable
/// storage after `sync_dir`; `rename` replaces the target atomically.
pub trait SegmentStorage: std::fmt::Debug {
    /// Names of the files in the directory, in no particular order.
    fn list(&mut self) -> io::Result<Vec<String>>;
    /// Create `name` empty (truncating it if it exists), ready for appends.
    fn create(&mut self, name: &str) -> io::Result<()>;
    /// Open an existing `name` for reads and appends; returns its length.
    fn open(&mut self, name: &str) -> io::Result<u64>;
    /// Append `bytes` at the end of `name`.
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Up to `len` bytes of `name` from `offset` (fewer at the end of the file).
    fn read(&mut self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Cut `name` down to `len` bytes.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Force the data of `name` to stable storage.
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Force the directory's entries (creates, renames, removes) to stable storage.
    fn sync_dir(&mut self) -> io::Result<()>;
    /// Rename `from` to `to`, replacing `to` atomically if it exists.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&mut self, name: &str) -> io::Result<()>;
}

/// [`SegmentStorage`] on a real directory. Open handles are cached per file so appends cost
/// one `write` syscall each.
#[derive(Debug)]
pub struct FsStorage {
    dir: PathBuf,
    files: BTreeMap<String, File>,
}

impl FsStorage {
    /// Use `dir`, creating it (and its parents) if missing.
    pub fn open_dir(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            files: BTreeMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        // Names come from the backlog itself; refusing anything but a plain name keeps a bug
        // from ever touching a file outside the directory.
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is not a plain file name"),
            ));
        }
        Ok(self.dir.join(name))
    }

    fn handle(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.files.contains_key(name) {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(self.path(name)?)?;
            self.files.insert(name.to_string(), file);
        }
        self.files
            .get_mut(name)
            .ok_or_else(|| io::Error::other("file handle vanished from the cache"))
    }
}

impl SegmentStorage for FsStorage {
    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        self.files.remove(name);
        File::create(self.path(name)?)?;
        self.handle(name).map(|_| ())
    }

    fn open(&mut self, name: &str) -> io::Result<u64> {
        Ok(self.handle(name)?.metadata()?.len())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.handle(name)?.write_all(bytes)
    }

    fn read(&mut self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.handle(name)?;
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.handle(name)?.set_len(len)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.handle(name)?.sync_data()
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.files.remove(from);
        self.files.remove(to);
        std::fs::rename(self.path(from)?, self.path(to)?)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.files.remove(name);
        std::fs::remove_file(self.path(name)?)
    }
}
