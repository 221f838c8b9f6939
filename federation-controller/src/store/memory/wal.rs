//! The memory store's files (format in `docs/store.md`):
//! - `LOCK`: held with an exclusive file lock while a store has the directory open;
//! - `wal.jsonl`: one line per group commit (one or more transactions), appended and fsynced
//!   before any of its writes is visible;
//! - `snapshot.jsonl`: every object at one revision, replaced atomically (write a temporary
//!   file, fsync, rename, fsync the directory), after which the log starts over.
//!
//! Recovery loads the snapshot, then replays log records newer than it. A last line without
//! its newline, or that does not parse, is a write that was cut short by a crash: it was never
//! acknowledged, so it is dropped and the file truncated. A bad line anywhere else is
//! corruption and recovery stops with an error naming the line.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::StoreError;

const WAL: &str = "wal.jsonl";
const SNAPSHOT: &str = "snapshot.jsonl";
const SNAPSHOT_TMP: &str = "snapshot.jsonl.tmp";
const LOCK: &str = "LOCK";
const SNAPSHOT_FORMAT: &str = "causeway-store-snapshot";
const SNAPSHOT_VERSION: u32 = 1;

/// What a log record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RecordOp {
    /// Store `object` under `key`.
    Put,
    /// Remove `key`.
    Delete,
}

/// One write inside a log record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub op: RecordOp,
    /// The object's key path (`GROUP/KIND/NAMESPACE/NAME`).
    pub key: String,
    /// The stored object, for puts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

/// One transaction: all its writes share one revision and one log line, so that a torn line
/// loses whole transactions, never half of one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    /// The revision this transaction created.
    pub rev: u64,
    pub ops: Vec<Entry>,
}

/// One line of the write-ahead log: the transactions of one group commit, written with one
/// fsync. Only the last line can be damaged by a crash, and then none of its transactions was
/// acknowledged.
#[derive(Serialize)]
struct LineOut<'a> {
    txns: &'a [Record],
}

#[derive(Deserialize)]
struct LineIn {
    txns: Vec<Record>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    format: String,
    version: u32,
    revision: u64,
    objects: usize,
}

#[derive(Serialize)]
struct RowOut<'a> {
    key: &'a str,
    object: &'a Value,
}

#[derive(Deserialize)]
struct RowIn {
    key: String,
    object: Value,
}

/// The open log of a data directory.
pub(super) struct Wal {
    dir: PathBuf,
    file: File,
    /// Length of the log up to its last complete record.
    len: u64,
    records: usize,
    /// Set when a failed append could not be undone: the log's end is unknown.
    broken: bool,
    /// Keeps the directory's lock for as long as the store is open.
    _lock: File,
}

/// What recovery found.
pub(super) struct Recovered {
    /// The snapshot's objects.
    pub objects: BTreeMap<String, Value>,
    /// The snapshot's revision (0 without a snapshot).
    pub revision: u64,
    /// Log records after the snapshot, in order, not yet applied.
    pub records: Vec<Record>,
    pub wal: Wal,
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// Opens (creating if needed) a data directory and reads back its contents.
pub(super) fn recover(dir: &Path) -> Result<Recovered, StoreError> {
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let lock_path = dir.join(LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io(&lock_path, e))?;
    if let Err(e) = lock.try_lock() {
        return Err(StoreError::Io {
            path: lock_path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "{e}: another controller has this data directory open; stop it or use a \
                     different --data-dir"
                ),
            ),
        });
    }

    // A temporary snapshot is one that was never renamed into place: the log still has
    // everything it held.
    let tmp = dir.join(SNAPSHOT_TMP);
    if tmp.exists() {
        fs::remove_file(&tmp).map_err(|e| io(&tmp, e))?;
    }
    let (objects, revision) = read_snapshot(&dir.join(SNAPSHOT))?;

    let wal_path = dir.join(WAL);
    let data = match fs::read(&wal_path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&wal_path, e)),
    };
    let (records, good_len, total) = parse_wal(&wal_path, &data, revision)?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&wal_path)
        .map_err(|e| io(&wal_path, e))?;
    if good_len < data.len() {
        tracing::warn!(
            path = %wal_path.display(),
            dropped_bytes = data.len() - good_len,
            "dropping an incomplete last record of the store log (a write cut short by a crash; \
             it was never acknowledged)"
        );
        file.set_len(good_len as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| io(&wal_path, e))?;
    }
    sync_dir(dir)?;
    Ok(Recovered {
        objects,
        revision,
        records,
        wal: Wal {
            dir: dir.to_owned(),
            file,
            len: good_len as u64,
            records: total,
            broken: false,
            _lock: lock,
        },
    })
}

fn read_snapshot(path: &Path) -> Result<(BTreeMap<String, Value>, u64), StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((BTreeMap::new(), 0)),
        Err(e) => return Err(io(path, e)),
    };
    let corrupt = |line: usize, message: String| StoreError::Corrupt {
        location: format!("{} line {line}", path.display()),
        message: format!(
            "{message}; the snapshot is written atomically, so this is damage from outside: \
             restore the data directory from a backup"
        ),
    };
    let mut lines = BufReader::new(file).lines();
    let header: SnapshotHeader = match lines.next() {
        Some(line) => {
            let line = line.map_err(|e| io(path, e))?;
            serde_json::from_str(&line).map_err(|e| corrupt(1, format!("bad header: {e}")))?
        }
        None => return Err(corrupt(1, "the file is empty".to_owned())),
    };
    if header.format != SNAPSHOT_FORMAT || header.version != SNAPSHOT_VERSION {
        return Err(corrupt(
            1,
            format!(
                "format {:?} version {} is not {SNAPSHOT_FORMAT:?} version {SNAPSHOT_VERSION}",
                header.format, header.version
            ),
        ));
    }
    let mut objects = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| io(path, e))?;
        let row: RowIn =
            serde_json::from_str(&line).map_err(|e| corrupt(i + 2, format!("bad object: {e}")))?;
        objects.insert(row.key, row.object);
    }
    if objects.len() != header.objects {
        return Err(corrupt(
            1,
            format!(
                "the header announces {} objects but the file has {}",
                header.objects,
                objects.len()
            ),
        ));
    }
    Ok((objects, header.revision))
}

/// Parses the log: the records after `after`, the length of the well-formed part, and the
/// number of records in it.
fn parse_wal(
    path: &Path,
    data: &[u8],
    after: u64,
) -> Result<(Vec<Record>, usize, usize), StoreError> {
    let mut records = Vec::new();
    let mut offset = 0;
    let mut total = 0;
    let mut last_rev = after;
    let mut line_no = 0;
    while offset < data.len() {
        let Some(end) = data[offset..].iter().position(|b| *b == b'\n') else {
            break; // no newline: torn
        };
        let end = offset + end;
        line_no += 1;
        let line = &data[offset..end];
        match serde_json::from_slice::<LineIn>(line) {
            Ok(batch) => {
                let corrupt = |message: String| StoreError::Corrupt {
                    location: format!("{} line {line_no}", path.display()),
                    message,
                };
                for record in batch.txns {
                    total += 1;
                    if record.rev <= after {
                        continue;
                    }
                    if record.rev <= last_rev {
                        return Err(corrupt(format!(
                            "revision {} does not follow {last_rev}; restore the data \
                             directory from a backup",
                            record.rev
                        )));
                    }
                    if record
                        .ops
                        .iter()
                        .any(|e| e.op == RecordOp::Put && e.object.is_none())
                    {
                        return Err(corrupt("a put without its object".to_owned()));
                    }
                    last_rev = record.rev;
                    records.push(record);
                }
                offset = end + 1;
            }
            Err(e) => {
                if data[end + 1..].iter().all(u8::is_ascii_whitespace) {
                    break; // the last line: torn
                }
                return Err(StoreError::Corrupt {
                    location: format!("{} line {line_no}", path.display()),
                    message: format!(
                        "{e}; the records after it cannot be trusted. Move the file aside to \
                         start from the last snapshot (losing the writes since), or restore the \
                         data directory from a backup"
                    ),
                });
            }
        }
    }
    Ok((records, offset, total))
}

impl Wal {
    /// Records in the log since the last snapshot.
    pub(super) fn records(&self) -> usize {
        self.records
    }

    /// Appends records and waits until they are on disk (one fsync for all).
    pub(super) fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let path = self.dir.join(WAL);
        if self.broken {
            return Err(io(
                &path,
                std::io::Error::other(
                    "an earlier write to the store log failed and could not be undone; fix the \
                     disk and restart the controller (recovery drops the incomplete record)",
                ),
            ));
        }
        let mut line =
            serde_json::to_vec(&LineOut { txns: records }).map_err(|e| StoreError::Corrupt {
                location: format!("revisions from {}", records.first().map_or(0, |r| r.rev)),
                message: format!("cannot encode an object: {e}"),
            })?;
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += line.len() as u64;
                self.records += records.len();
                Ok(())
            }
            Err(e) => {
                // Cut the partial record off, so the next append does not land after garbage.
                if self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data())
                    .is_err()
                {
                    self.broken = true;
                }
                Err(io(&path, e))
            }
        }
    }

    /// Writes every object at `revision` as the new snapshot and empties the log.
    pub(super) fn snapshot(
        &mut self,
        revision: u64,
        objects: &BTreeMap<String, Value>,
    ) -> Result<(), StoreError> {
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let write = || -> std::io::Result<()> {
            let mut out = BufWriter::new(File::create(&tmp)?);
            let header = SnapshotHeader {
                format: SNAPSHOT_FORMAT.to_owned(),
                version: SNAPSHOT_VERSION,
                revision,
                objects: objects.len(),
            };
            serde_json::to_writer(&mut out, &header)?;
            out.write_all(b"\n")?;
            for (key, object) in objects {
                serde_json::to_writer(&mut out, &RowOut { key, object })?;
                out.write_all(b"\n")?;
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
        };
        write().map_err(|e| io(&tmp, e))?;
        let target = self.dir.join(SNAPSHOT);
        fs::rename(&tmp, &target).map_err(|e| io(&target, e))?;
        sync_dir(&self.dir)?;
        // From here the snapshot holds everything; records left in the log are older than it
        // and skipped by recovery, so failing to empty the log loses nothing.
        self.records = 0;
        let wal = self.dir.join(WAL);
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| io(&wal, e))?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(rev: u64) -> String {
        let r = Record {
            rev,
            ops: vec![Entry {
                op: RecordOp::Put,
                key: format!("g/K/ns/o{rev}"),
                object: Some(json!({"n": rev})),
            }],
        };
        let mut s = serde_json::to_string(&LineOut { txns: &[r] }).unwrap();
        s.push('\n');
        s
    }

    #[test]
    fn torn_last_line_is_dropped() {
        let p = Path::new("wal.jsonl");
        let mut data = line(1) + &line(2);
        let good = data.len();
        data.push_str("{\"txns\":[{\"rev\":3,\"ops\":[{\"op\":\"pu");
        let (records, len, _) = parse_wal(p, data.as_bytes(), 0).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(len, good);
        // A complete but garbled last line is a torn write as well.
        let data = line(1) + "{\"txns\":[{\"rev\":2,\"ops\0\0\0\n";
        let (records, len, _) = parse_wal(p, data.as_bytes(), 0).unwrap();
        assert_eq!((records.len(), len), (1, line(1).len()));
    }

    #[test]
    fn bad_line_in_the_middle_is_corruption() {
        let data = line(1) + "not json\n" + &line(3);
        let e = parse_wal(Path::new("wal.jsonl"), data.as_bytes(), 0)
            .err()
            .unwrap();
        assert!(e.to_string().contains("wal.jsonl line 2"), "{e}");
    }

    #[test]
    fn records_covered_by_the_snapshot_are_skipped() {
        let data = line(1) + &line(2) + &line(3);
        let (records, _, total) = parse_wal(Path::new("w"), data.as_bytes(), 2).unwrap();
        assert_eq!(records.iter().map(|r| r.rev).collect::<Vec<_>>(), [3]);
        assert_eq!(total, 3);
    }
}
