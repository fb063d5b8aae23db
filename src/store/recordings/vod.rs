//! The vod thread: the list, and a recording's length and bytes for `GET /vod/{id}.flv`,
//! looked up by id in the index (never by a path from a request).

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::sync::mpsc::Receiver;

use bytes::Bytes;

use super::{valid_id, Entry, Index, Stat, VodReq, LIST_MAX, READ_CHUNK};
use crate::store::StoreError;

pub(super) fn serve(dir: &Path, index: &Index, rx: &Receiver<VodReq>) {
    let find = |id: &str| -> Option<Entry> {
        if !valid_id(id) {
            return None;
        }
        let index = index.lock().unwrap_or_else(|p| p.into_inner());
        index.iter().find(|e| e.id == id).cloned()
    };
    while let Ok(req) = rx.recv() {
        match req {
            VodReq::Stop => return,
            VodReq::List { stream, reply } => {
                let index = index.lock().unwrap_or_else(|p| p.into_inner());
                let list = index
                    .iter()
                    .rev()
                    .filter(|e| stream.as_deref().is_none_or(|s| &*e.stream == s))
                    .take(LIST_MAX)
                    .cloned()
                    .collect();
                drop(index);
                let _ = reply.send(Ok(list));
            }
            VodReq::Stat { id, reply } => {
                let stat = find(&id).and_then(|entry| {
                    let len = std::fs::metadata(dir.join(entry.file_name())).ok()?.len();
                    Some(Stat { entry, len })
                });
                let _ = reply.send(Ok(stat));
            }
            VodReq::Read {
                id,
                offset,
                len,
                reply,
            } => {
                let read =
                    find(&id).map(|entry| read_at(&dir.join(entry.file_name()), offset, len));
                let answer = match read {
                    None => Ok(None),
                    Some(Ok(b)) => Ok(Some(b)),
                    Some(Err(e)) => Err(StoreError::Backend(e.to_string())),
                };
                let _ = reply.send(answer);
            }
        }
    }
}

fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len.min(READ_CHUNK));
    f.take(len.min(READ_CHUNK) as u64).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}
