//! The demo page (`GET /demo/?room=ID`): `clients/web/` with the danmaku SDK and the two
//! player libraries (hls.js, mpegts.js) from `clients/node_modules`, served from memory.
//!
//! What is served is a fixed list ([`FILES`]): each URL name maps to one path under the
//! clients directory, with its content type. A request names an entry of that list or
//! gets a 404, so no path from a request ever reaches the filesystem (nothing to
//! traverse). The files are read once, when the routes are built at start (never on a
//! shard's event loop while it serves), each at most [`MAX_FILE_BYTES`]; a missing one
//! is left out and answers 404 with a hint (`npm ci --prefix clients` installs the
//! players). Edit the page, restart the server.
//!
//! The clients directory is `server.clients_dir`, or, when that is empty, the first of
//! `clients/` in the working directory and `clients/` of the repository the binary was
//! built in (`target/{debug,release}/liveshard` → `../../clients`) that holds
//! `web/index.html`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::http::{code, handler, Method, Reply, Request, Response, Router};

/// The largest file served (hls.js is ~0.5 MiB minified).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// URL name under `/demo/`, path under the clients directory, content type.
pub const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "web/index.html", HTML),
    ("demo.js", "web/demo.js", JS),
    ("demo.css", "web/demo.css", CSS),
    ("liveshard.mjs", "sdk/src/index.mjs", JS),
    ("hls.js", "node_modules/hls.js/dist/hls.min.js", JS),
    ("mpegts.js", "node_modules/mpegts.js/dist/mpegts.js", JS),
];

/// The demo's files, read once.
#[derive(Debug, Default)]
pub struct Files {
    dir: Option<PathBuf>,
    files: HashMap<&'static str, (&'static str, Bytes)>,
}

impl Files {
    /// Reads [`FILES`] from `dir` (what cannot be read, or is too large, is left out).
    pub fn load(dir: Option<PathBuf>) -> Files {
        let mut files = HashMap::new();
        if let Some(dir) = &dir {
            for &(name, path, kind) in FILES {
                if let Some(bytes) = read_bounded(&dir.join(path)) {
                    files.insert(name, (kind, bytes));
                }
            }
        }
        Files { dir, files }
    }

    pub fn get(&self, name: &str) -> Option<(&'static str, Bytes)> {
        self.files.get(name).map(|(k, b)| (*k, b.clone()))
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

fn read_bounded(path: &Path) -> Option<Bytes> {
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf).ok()?;
    (buf.len() as u64 <= MAX_FILE_BYTES).then(|| Bytes::from(buf))
}

/// The clients directory: `configured` if set, else the first candidate that holds
/// `web/index.html` (see the module documentation).
pub fn clients_dir(configured: &Path) -> Option<PathBuf> {
    if !configured.as_os_str().is_empty() {
        return Some(configured.to_path_buf());
    }
    let mut candidates = vec![PathBuf::from("clients")];
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/liveshard, or target/<profile>/deps/<test binary>.
        for up in exe.ancestors().skip(3).take(2) {
            candidates.push(up.join("clients"));
        }
    }
    candidates
        .into_iter()
        .find(|d| d.join("web/index.html").is_file())
}

/// The files of this process, read on first use (when the routes are built at start).
fn files(configured: &Path) -> Arc<Files> {
    static FILES_ONCE: OnceLock<Arc<Files>> = OnceLock::new();
    FILES_ONCE
        .get_or_init(|| Arc::new(Files::load(clients_dir(configured))))
        .clone()
}

/// Adds `/demo`, `/demo/` and `/demo/{file}` to `r`.
pub fn register<S: 'static>(r: &mut Router<S>, clients_dir: &Path) {
    let files = files(clients_dir);
    r.add(Method::Get, "/demo", handler(redirect));
    let index = files.clone();
    r.add(
        Method::Get,
        "/demo/",
        handler(move |_: Rc<S>, _req: Request| {
            let f = index.clone();
            async move { serve(&f, "index.html") }
        }),
    );
    r.add(
        Method::Get,
        "/demo/{file}",
        handler(move |_: Rc<S>, req: Request| {
            let f = files.clone();
            async move { serve(&f, req.param("file").unwrap_or("")) }
        }),
    );
}

/// `/demo?room=…` → `/demo/?room=…` (the page's own files are relative to it).
async fn redirect<S>(_: Rc<S>, req: Request) -> Reply {
    let query = req.head.query.as_deref().filter(|q| !q.is_empty());
    let location = match query {
        // The query is passed on as it came; a header value cannot hold CR or LF, which
        // the request line could not either.
        Some(q) => format!("/demo/?{q}"),
        None => "/demo/".to_string(),
    };
    Response::empty(301).header("Location", location).into()
}

fn serve(files: &Files, name: &str) -> Reply {
    match files.get(name) {
        Some((kind, body)) => Response::with_body(200, kind, body)
            .header("Cache-Control", "no-cache")
            .header("X-Content-Type-Options", "nosniff")
            .into(),
        None => {
            let why = match files.dir() {
                _ if !FILES.iter().any(|(n, _, _)| *n == name) => "no such file".to_string(),
                Some(dir) => format!(
                    "{name} is missing under {}: run `npm ci --prefix clients`",
                    dir.display()
                ),
                None => "the demo page was not found: set server.clients_dir".to_string(),
            };
            Response::error(404, code::NOT_FOUND, why).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_names_are_served_and_sizes_are_bounded() {
        let dir = std::env::temp_dir().join(format!("liveshard-web-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("web")).unwrap();
        std::fs::write(dir.join("web/index.html"), "<!doctype html>").unwrap();
        std::fs::write(
            dir.join("web/demo.js"),
            vec![b' '; MAX_FILE_BYTES as usize + 1],
        )
        .unwrap();
        std::fs::write(dir.join("secret.txt"), "no").unwrap();
        let f = Files::load(Some(dir.clone()));
        assert_eq!(f.get("index.html").unwrap().0, HTML);
        assert!(f.get("demo.js").is_none(), "over the bound");
        assert!(f.get("../secret.txt").is_none());
        assert!(f.get("secret.txt").is_none());
        assert!(f.get("web/index.html").is_none());
        assert!(f.get("").is_none());
        assert_eq!(clients_dir(&dir), Some(dir.clone()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
