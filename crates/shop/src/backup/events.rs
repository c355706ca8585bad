//! The events in flight at a distributed cut, kept with the backup: a JetStream stream
//! cannot be frozen with the databases, so after the snapshots each stream's events with a
//! seq in (the lowest floor of its consumers, its producer's committed seq at the cut] are
//! read back from the bus and written to `events/<stream>.jsonl`, one envelope a line.
//! Events above the committed seq were committed after the producer's snapshot: they are
//! not taken (the restored producer commits its own under those seqs).

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use kit::bus::{Bus, Message};
use serde::{Deserialize, Serialize};

use super::BackupError;

/// The folder of a backup that holds the exported events.
pub const DIR: &str = "events";

/// One exported event: the bus message, its body as the envelope it is.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    stream: String,
    seq: u64,
    id: String,
    key: String,
    envelope: serde_json::Value,
}

/// The file of `stream`'s events, relative to the backup.
pub fn file_of(stream: &str) -> String {
    format!("{DIR}/{stream}.jsonl")
}

/// Reads `stream`'s events with a seq in `(after, upto]` from the bus, once each, in seq
/// order. The bus is read backwards from its newest message until `after + 1` is met.
pub async fn in_flight(
    bus: &dyn Bus,
    stream: &str,
    after: u64,
    upto: u64,
) -> Result<Vec<Message>, BackupError> {
    if upto <= after {
        return Ok(Vec::new());
    }
    let unreadable = |e: kit::bus::BusError| BackupError::io(format!("cannot read {stream} from the bus"), e);
    let mut limit = (upto - after) as usize + 64;
    loop {
        let found = bus.recent(stream, limit).await.map_err(unreadable)?;
        let whole = found.len() < limit || found.iter().any(|m| m.seq <= after + 1);
        if whole {
            let by_seq: BTreeMap<u64, Message> =
                found.into_iter().filter(|m| m.seq > after && m.seq <= upto).map(|m| (m.seq, m)).collect();
            return Ok(by_seq.into_values().collect());
        }
        limit *= 2;
    }
}

/// Writes `events` of `stream` into the backup in `dir`; answers the file's path.
pub fn write(dir: &Path, stream: &str, events: &[Message]) -> Result<PathBuf, BackupError> {
    let path = dir.join(file_of(stream));
    let failed = |e: std::io::Error| BackupError::io(format!("cannot write {}", path.display()), e);
    std::fs::create_dir_all(dir.join(DIR)).map_err(failed)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(failed)?);
    for m in events {
        let envelope = serde_json::from_slice(&m.body).map_err(|e| {
            BackupError::io(format!("{stream} seq {} on the bus is not an envelope", m.seq), e)
        })?;
        let line =
            Line { stream: m.stream.clone(), seq: m.seq, id: m.id.clone(), key: m.key.clone(), envelope };
        serde_json::to_writer(&mut out, &line).map_err(|e| BackupError::io("writing the events", e))?;
        out.write_all(b"\n").map_err(failed)?;
    }
    out.flush().map_err(failed)?;
    Ok(path)
}

/// Reads the events of the file `file` (relative to `dir`).
pub fn read(dir: &Path, file: &str) -> Result<Vec<Message>, BackupError> {
    let damaged = |what: String| BackupError::Damaged { file: file.to_owned(), what };
    let opened = std::fs::File::open(dir.join(file)).map_err(|_| damaged("missing".into()))?;
    let mut events = Vec::new();
    for (n, line) in std::io::BufReader::new(opened).lines().enumerate() {
        let line = line.map_err(|e| damaged(e.to_string()))?;
        let line: Line = serde_json::from_str(&line).map_err(|e| damaged(format!("line {}: {e}", n + 1)))?;
        let body = serde_json::to_vec(&line.envelope).map_err(|e| damaged(e.to_string()))?;
        events.push(Message { id: line.id, stream: line.stream, seq: line.seq, key: line.key, body });
    }
    Ok(events)
}
