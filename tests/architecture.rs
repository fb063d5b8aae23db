//! The module structure, kept true by reading the source tree.
//!
//! The import graph between files comes from their `use` declarations and their inline
//! `crate::`/`super::`/`self::` paths, with comments, string literals and a trailing
//! `#[cfg(test)] mod … { … }` left out; a path names the file of its longest module prefix.
//! On that graph: circles stay inside one directory, the wiring (`app`, `shard`, `routes`,
//! `server`) sits on top, the engines do not reach into each other, the leaves stay
//! leaves, and only the connection drivers touch sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

/// `FILES !> FORBIDDEN…`: no file under the first prefix imports a file under the others
/// (a prefix ending in `/` is a directory, any other a file).
const RULES: &[&str] = &[
    // The wiring sits on top: below it nothing sees App, Shard, the route table or serve.
    "src/ !> src/app.rs src/shard.rs src/routes.rs src/server.rs",
    "src/danmaku/ !> src/live/ src/api/",
    "src/live/ !> src/danmaku/ src/api/",
    "src/store/ !> src/danmaku/ src/live/ src/api/ src/http/",
    "src/media/ !> src/live/ src/danmaku/ src/api/ src/store/ src/http/",
    // The cluster threads move bytes for rooms; what the bytes mean is the engines'.
    "src/cluster/ !> src/danmaku/ src/live/ src/api/ src/store/ src/http/",
    "src/ids.rs !> src/",
    "src/codes.rs !> src/",
    "src/port.rs !> src/",
    "src/clock.rs !> src/",
    "src/text.rs !> src/",
    "src/threads.rs !> src/",
];

/// Edges allowed in spite of [`RULES`].
const ALLOWED: &[&str] = &[
    "src/shard.rs -> src/app.rs",     // a shard builds its App
    "src/routes.rs -> src/app.rs",    // the route table dispatches into the App
    "src/server.rs -> src/app.rs",    // serve builds the process-wide parts
    "src/server.rs -> src/shard.rs",  // serve starts the shards
    "src/shard.rs -> src/routes.rs",  // a shard serves the route table
    "src/server.rs -> src/routes.rs", // serve builds the route table once
    "src/main.rs -> src/server.rs",   // the binary runs `server::run`, nothing else of it
    "src/port.rs -> src/ids.rs",      // ports carry typed ids
];

/// The files that may touch sockets (`monoio::net`, `TcpStream`, `crate::sockio`,
/// `send_now*`), each with its reason. A file named here that does not exist is fine.
const SOCKET_FILES: &[&str] = &[
    "src/sockio.rs: the socket helpers themselves",
    "src/sock.rs: the stream type the drivers serve (TCP, or the inside of TLS)",
    "src/tls.rs: the TLS handshake and the pump between the client's socket and the inside",
    "src/shard.rs: the accept loop hands each TcpStream to its front",
    "src/http/mod.rs: the upgrade hook takes over the connection's stream",
    "src/http/conn.rs: the HTTP/1.1 connection driver",
    "src/danmaku/conn.rs: the WebSocket danmaku connection driver",
    "src/danmaku/park.rs: idle danmaku connections' sockets wait in the shard's epoll set",
    "src/live/rtmp_conn.rs: the RTMP connection driver",
    "src/live/flv.rs: the HTTP-FLV player connection",
    "src/live/pull.rs: the HTTP-FLV connection that pulls a stream from another node",
    "src/api/sse.rs: the SSE event stream holds its connection",
    "src/api/vod.rs: a VOD body is streamed in chunks on its connection",
    "src/outq/: the shared outbound queue",
];

/// One crate's files, by path (`src/danmaku/room.rs`).
struct Graph {
    /// from → to → the path that made the edge (for the failure messages).
    edges: BTreeMap<String, BTreeMap<String, String>>,
    /// Why a file touches sockets, for those that do.
    sockets: BTreeMap<String, String>,
}

/// Comments dropped, string and char literals emptied; lifetimes stay.
fn strip(src: &str) -> String {
    let (b, mut out, mut i) = (src.as_bytes(), String::with_capacity(src.len()), 0);
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            i += b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .unwrap_or(b.len() - i);
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    (depth, i) = (depth + 1, i + 2);
                } else if b[i..].starts_with(b"*/") {
                    (depth, i) = (depth - 1, i + 2);
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some((hashes, body)) = raw_string(b, i) {
            let close = format!("\"{}", "#".repeat(hashes));
            i = src[body..]
                .find(&close)
                .map_or(b.len(), |e| body + e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if let Some(len) = (b[i] == b'\'')
            .then(|| char_literal(&src[i + 1..]))
            .flatten()
        {
            i += 1 + len;
            out.push_str("' '");
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// `r"…"`, `r#"…"#`, `br"…"` starting at `i`: the number of `#` and where the body starts.
fn raw_string(b: &[u8], i: usize) -> Option<(usize, usize)> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return None;
    }
    let r = i + usize::from(b[i] == b'b');
    if b.get(r) != Some(&b'r') {
        return None;
    }
    let hashes = b[r + 1..].iter().take_while(|&&c| c == b'#').count();
    (b.get(r + 1 + hashes) == Some(&b'"')).then_some((hashes, r + 2 + hashes))
}

/// After an opening quote: the rest of a char literal ('"', '\'', '\u{e9}', 'é'), if it is
/// one and not a lifetime.
fn char_literal(s: &str) -> Option<usize> {
    let first = s.chars().next()?;
    if first == '\\' {
        return s.get(2..)?.find('\'').map(|p| p + 3);
    }
    let len = first.len_utf8();
    s[len..].starts_with('\'').then_some(len + 1)
}

/// Identifiers, `::` and single punctuation characters, up to a `#[cfg(test)] mod x {`.
fn tokens(s: &str) -> Vec<&str> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    let (b, mut t, mut i) = (s.as_bytes(), Vec::new(), 0);
    while i < b.len() {
        let start = i;
        if word(b[i]) {
            i += b[i..].iter().position(|&c| !word(c)).unwrap_or(b.len() - i);
        } else {
            i += if b[i..].starts_with(b"::") { 2 } else { 1 };
        }
        if !b[start].is_ascii_whitespace() {
            t.push(&s[start..i]);
        }
    }
    const TEST_MOD: [&str; 8] = ["#", "[", "cfg", "(", "test", ")", "]", "mod"];
    let test_mod = |w: &[&str]| w[..8] == TEST_MOD && is_ident(w[8]) && w[9] == "{";
    if let Some(at) = t.windows(10).position(test_mod) {
        t.truncate(at);
    }
    t
}

fn is_ident(t: &str) -> bool {
    t.bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80)
}

/// Expands one use tree (`a::{b::{c, d as e}, self}`) into its paths.
fn use_tree(t: &[&str], pos: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    while *pos < t.len() {
        match t[*pos] {
            "::" => *pos += 1,
            "{" => {
                *pos += 1;
                while *pos < t.len() && t[*pos] != "}" {
                    let before = *pos;
                    use_tree(t, pos, prefix.clone(), out);
                    *pos = (*pos).max(before + 1) + usize::from(t.get(*pos) == Some(&","));
                }
                *pos += 1;
                return;
            }
            id if is_ident(id) => {
                *pos += 1;
                if id != "self" || prefix.is_empty() {
                    prefix.push(id.to_string());
                }
                *pos += if t.get(*pos) == Some(&"as") { 2 } else { 0 };
                if t.get(*pos) != Some(&"::") {
                    break;
                }
            }
            _ => break, // `*`, or the end of the tree
        }
    }
    if !prefix.is_empty() {
        out.push(prefix);
    }
}

/// Every path a file names: its expanded `use` trees, then the inline `crate::…`,
/// `super::…`, `self::…` paths outside them (and `liveshard::…` in the binary).
fn paths(t: &[&str], binary: bool) -> Vec<Vec<String>> {
    let (mut out, mut i) = (Vec::new(), 0);
    while i < t.len() {
        if t[i] == "use" {
            let end = (i..t.len()).find(|&j| t[j] == ";").unwrap_or(t.len());
            let mut pos = i + 1;
            while pos < end {
                let before = pos;
                use_tree(&t[..end], &mut pos, Vec::new(), &mut out);
                pos = pos.max(before + 1);
            }
            i = end;
        } else if matches!(t[i], "crate" | "super" | "self") || (binary && t[i] == "liveshard") {
            let mut p = vec![t[i].to_string()];
            while t.get(i + 1) == Some(&"::") && t.get(i + 2).is_some_and(|x| is_ident(x)) {
                p.push(t[i + 2].to_string());
                i += 2;
            }
            if p.len() > 1 {
                out.push(p);
            }
        }
        i += 1;
    }
    out
}

/// The module a path names (`crate`, `super` repeated, `self`, or a child module of
/// `here`), cut to its longest prefix that is a file.
fn resolve(
    here: &[String],
    p: &[String],
    mods: &BTreeMap<Vec<String>, String>,
    binary: bool,
) -> Option<Vec<String>> {
    let full: Vec<String> = match p.first()?.as_str() {
        "crate" => p[1..].to_vec(),
        "liveshard" if binary => p[1..].to_vec(),
        "super" => {
            let ups = p.iter().take_while(|s| *s == "super").count();
            here[..here.len().saturating_sub(ups)]
                .iter()
                .chain(&p[ups..])
                .cloned()
                .collect()
        }
        "self" => here.iter().chain(&p[1..]).cloned().collect(),
        _ if mods.contains_key(&[here, &p[..1]].concat()) => [here, p].concat(),
        _ => return None,
    };
    (1..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| mods.contains_key(m))
}

/// A file's module: `a/b.rs` → a::b, `a/mod.rs` → a, `main.rs` and `lib.rs` → the root.
fn module_of(rel: &str) -> Vec<String> {
    let mut m: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if m.last().is_some_and(|s| s == "mod") || m == ["main"] || m == ["lib"] {
        m.pop();
    }
    m
}

/// The graph of one crate from (path, source) pairs, `root` being the paths' prefix.
fn build(root: &str, sources: &[(String, String)]) -> Graph {
    let module = |path: &str| module_of(&path[root.len() + 1..]);
    let mods: BTreeMap<_, _> = sources
        .iter()
        .map(|(p, _)| (module(p), p.clone()))
        .collect();
    let mut g = Graph {
        edges: BTreeMap::new(),
        sockets: BTreeMap::new(),
    };
    for (path, src) in sources {
        let (here, binary) = (module(path), root == "src" && path == "src/main.rs");
        let stripped = strip(src);
        let t = tokens(&stripped);
        let names = paths(&t, binary);
        let out = g.edges.entry(path.clone()).or_default();
        for p in &names {
            // An edge to the crate root (`lib.rs`, `main.rs`) or to itself does not count.
            match resolve(&here, p, &mods, binary) {
                Some(m) if !m.is_empty() && m != here => {
                    out.entry(mods[&m].clone()).or_insert_with(|| p.join("::"));
                }
                _ => {}
            }
        }
        let net = |p: &[String]| p.len() > 1 && p[0] == "monoio" && p[1] == "net";
        let why = if let Some(p) = out.get("src/sockio.rs") {
            Some(format!("imports `{p}`"))
        } else if names.iter().any(|p| net(p)) || t.windows(3).any(|w| w == ["monoio", "::", "net"])
        {
            Some("names `monoio::net`".to_string())
        } else {
            t.iter()
                .find(|w| **w == "TcpStream" || w.starts_with("send_now"))
                .map(|w| format!("names `{w}`"))
        };
        g.sockets.extend(why.map(|w| (path.clone(), w)));
    }
    g
}

fn read_tree(root: &str) -> Graph {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    walk(&base.join(root), base, &mut sources);
    build(root, &sources)
}

fn src() -> &'static Graph {
    static G: OnceLock<Graph> = OnceLock::new();
    G.get_or_init(|| read_tree("src"))
}

fn edge(g: &Graph, from: &str, to: &str) -> String {
    format!("  {from} -> {to}   (`{}`)", g.edges[from][to])
}

/// Strongly connected sets of files (Tarjan), each sorted.
fn sccs(g: &Graph) -> Vec<Vec<String>> {
    struct T {
        adj: Vec<Vec<usize>>,
        idx: Vec<usize>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T, v: usize) {
        let n = t.stack.len() + t.out.iter().map(Vec::len).sum::<usize>();
        (t.idx[v], t.low[v], t.on[v]) = (n, n, true);
        t.stack.push(v);
        for w in t.adj[v].clone() {
            if t.idx[w] == usize::MAX {
                visit(t, w);
                t.low[v] = t.low[v].min(t.low[w]);
            } else if t.on[w] {
                t.low[v] = t.low[v].min(t.idx[w]);
            }
        }
        if t.low[v] == t.idx[v] {
            let at = t.stack.iter().position(|&w| w == v).unwrap();
            let set = t.stack.split_off(at);
            set.iter().for_each(|&w| t.on[w] = false);
            t.out.push(set);
        }
    }
    let names: Vec<&String> = g.edges.keys().collect();
    let at = |f: &String| names.binary_search(&f).unwrap();
    let adj = g
        .edges
        .values()
        .map(|ts| ts.keys().map(at).collect())
        .collect();
    let n = names.len();
    let mut t = T {
        adj,
        idx: vec![usize::MAX; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: vec![],
        out: vec![],
    };
    for v in 0..n {
        if t.idx[v] == usize::MAX {
            visit(&mut t, v);
        }
    }
    let named = t
        .out
        .iter()
        .map(|s| s.iter().map(|&v| names[v].clone()).collect::<BTreeSet<_>>());
    named.map(|s| s.into_iter().collect()).collect()
}

/// Circles that leave a directory, with the edges across directories in them.
fn wide_circles(g: &Graph) -> Vec<String> {
    let dir = |f: &str| f.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let mut bad = Vec::new();
    for set in sccs(g) {
        let dirs: BTreeSet<String> = set.iter().map(|f| dir(f)).collect();
        if dirs.len() > 1 {
            bad.push(format!(
                "circle across {dirs:?} through {set:?}, its edges across directories:"
            ));
            for f in &set {
                let across = g.edges[f]
                    .keys()
                    .filter(|t| set.contains(t) && dir(t) != dir(f));
                bad.extend(across.map(|t| edge(g, f, t)));
            }
        }
    }
    bad
}

#[test]
fn circles_stay_in_one_directory() {
    for (root, g) in [("src", src()), ("loadgen/src", &read_tree("loadgen/src"))] {
        let bad = wide_circles(g);
        let msg = "files that import each other in a circle must share a directory; break an edge";
        assert!(bad.is_empty(), "{root}: {msg}:\n{}", bad.join("\n"));
    }
}

/// Does `file` fall under `prefix`: a directory (`src/live/`) or the file itself.
fn under(file: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        file.starts_with(prefix)
    } else {
        file == prefix
    }
}

fn layering_violations(g: &Graph) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, to) in g
        .edges
        .iter()
        .flat_map(|(f, ts)| ts.keys().map(move |t| (f, t)))
    {
        let broken = RULES.iter().any(|rule| {
            let (files, forbidden) = rule.split_once(" !> ").unwrap();
            under(from, files) && forbidden.split(' ').any(|p| under(to, p))
        });
        if broken && !ALLOWED.contains(&format!("{from} -> {to}").as_str()) {
            bad.push(edge(g, from, to));
        }
    }
    bad
}

#[test]
fn layering() {
    let bad = layering_violations(src());
    let msg = "imports against the layering (ARCHITECTURE.md; RULES and ALLOWED in this file)";
    assert!(bad.is_empty(), "{msg}:\n{}", bad.join("\n"));
}

fn socket_violations(g: &Graph) -> Vec<String> {
    let allowed = |f: &str| {
        SOCKET_FILES
            .iter()
            .any(|e| under(f, e.split_once(": ").unwrap().0))
    };
    g.sockets
        .iter()
        .filter(|(f, _)| !allowed(f))
        .map(|(f, why)| format!("  {f} {why}"))
        .collect()
}

#[test]
fn only_connection_drivers_touch_sockets() {
    let bad = socket_violations(src());
    let msg = "only the connection drivers touch sockets: go through one, or add the file to \
               SOCKET_FILES with its reason";
    assert!(bad.is_empty(), "{msg}:\n{}", bad.join("\n"));
}

#[test]
fn graph_of_the_real_tree_is_not_trivial() {
    let (g, loadgen) = (src(), read_tree("loadgen/src"));
    let files = g.edges.len() + loadgen.edges.len();
    assert!(files > 100, "only {files} source files found");
    let count = |g: &Graph| g.edges.values().map(BTreeMap::len).sum::<usize>();
    assert!(
        count(g) > 200 && count(&loadgen) > 20,
        "too few edges: {} and {}",
        count(g),
        count(&loadgen)
    );
    let app = &g.edges["src/app.rs"];
    let to_danmaku =
        app.contains_key("src/danmaku/engine.rs") || app.contains_key("src/danmaku/mod.rs");
    assert!(to_danmaku, "src/app.rs -> danmaku not found: {app:?}");
    assert!(
        g.edges["src/main.rs"].contains_key("src/server.rs"),
        "{:?}",
        g.edges["src/main.rs"]
    );
    assert!(
        g.sockets.contains_key("src/http/conn.rs") && g.sockets.len() >= 8,
        "{:?}",
        g.sockets
    );
}

fn snippet(files: &[(&str, &str)]) -> Graph {
    let leaves = ["lib", "a/mod", "a/b/mod", "a/b/c", "a/f", "x", "y"]
        .map(|f| (format!("src/{f}.rs"), String::new()));
    let mut sources: BTreeMap<String, String> = leaves.into_iter().collect();
    sources.extend(files.iter().map(|(p, s)| (p.to_string(), s.to_string())));
    build("src", &sources.into_iter().collect::<Vec<_>>())
}

fn targets(g: &Graph, f: &str) -> Vec<String> {
    g.edges[f].keys().cloned().collect()
}

#[test]
fn parser_expands_nested_use_trees() {
    let src = "pub(crate) use crate::a::{b::{c::Thing, self as bee}, f as eff, *};\n\
               use std::{fmt, io::{self, Read}};";
    let got: Vec<String> = paths(&tokens(&strip(src)), false)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    let want = [
        "crate::a::b::c::Thing",
        "crate::a::b",
        "crate::a::f",
        "crate::a",
        "std::fmt",
        "std::io",
    ];
    assert_eq!(got, [&want[..], &["std::io::Read"]].concat());
    let g = snippet(&[("src/y.rs", src)]);
    assert_eq!(
        targets(&g, "src/y.rs"),
        [
            "src/a/b/c.rs",
            "src/a/b/mod.rs",
            "src/a/f.rs",
            "src/a/mod.rs"
        ]
    );
}

#[test]
fn parser_resolves_super_self_and_children() {
    let g = snippet(&[
        (
            "src/a/b/c.rs",
            "use super::super::f::F; fn g() { self::h(); super::Z; }",
        ),
        (
            "src/a/mod.rs",
            "mod b; use b::c::C; use bytes::Bytes; fn g() { super::x::X; }",
        ),
    ]);
    assert_eq!(
        targets(&g, "src/a/b/c.rs"),
        ["src/a/b/mod.rs", "src/a/f.rs"]
    );
    assert_eq!(targets(&g, "src/a/mod.rs"), ["src/a/b/c.rs", "src/x.rs"]);
}

#[test]
fn parser_ignores_strings_comments_and_test_modules() {
    let src = "// use crate::a::f;\n/* use crate::x; /* nested */ crate::x */\n\
               const S: &str = \"crate::x \\\" crate::a //\"; const U: &str = \"http://h\";\n\
               const R: &str = r#\"use crate::a::f; \"crate::x\"#; const Q: char = '\"';\n\
               fn l<'a>(_: &'a str) -> char { '\\'' }\n\
               use crate::a::b::c::C;\n#[cfg(test)]\nmod tests {\n    use crate::x;\n}\n";
    let g = snippet(&[("src/y.rs", src)]);
    assert_eq!(targets(&g, "src/y.rs"), ["src/a/b/c.rs"]);
}

#[test]
fn rules_fail_on_forbidden_edges() {
    let g = snippet(&[
        ("src/danmaku/mod.rs", "use crate::live::Live;"),
        (
            "src/live/mod.rs",
            "fn f(x: monoio::net::TcpListener) { crate::danmaku::go() }",
        ),
        (
            "src/live/flv.rs",
            "use crate::app::App; fn s(x: monoio::net::TcpListener) {}",
        ),
        ("src/app.rs", ""),
    ]);
    let circles: Vec<_> = sccs(&g).into_iter().filter(|s| s.len() > 1).collect();
    assert_eq!(circles, [["src/danmaku/mod.rs", "src/live/mod.rs"]]);
    let wide = wide_circles(&g);
    assert_eq!(wide.len(), 3, "{wide:?}");
    assert_eq!(
        wide[1],
        "  src/danmaku/mod.rs -> src/live/mod.rs   (`crate::live::Live`)"
    );
    let layering = layering_violations(&g);
    assert_eq!(layering.len(), 3, "{layering:?}");
    assert!(
        layering[1].contains("src/live/flv.rs -> src/app.rs"),
        "{layering:?}"
    );
    assert_eq!(
        socket_violations(&g),
        ["  src/live/mod.rs names `monoio::net`"]
    );
    let sockio = snippet(&[
        ("src/sockio.rs", ""),
        ("src/y.rs", "use crate::sockio::send_now;"),
    ]);
    assert_eq!(
        socket_violations(&sockio),
        ["  src/y.rs imports `crate::sockio::send_now`"]
    );
}
