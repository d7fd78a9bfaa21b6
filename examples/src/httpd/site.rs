//! What the server serves: the built-in demo site, or the files under
//! `--root`, cached in payload buffers (pool chunks with `--alloc nta`).
//!
//! # Built-in site (no `--root`)
//!
//! `/` is a small HTML page; `/1k`, `/4k`, `/16k`, `/64k`, `/256k` and `/1m`
//! are generated text payloads of exactly that many bytes. All of it is
//! made once, at start, into buffers from the source, and served as
//! `Bytes` clones (a reference count, no copy).
//!
//! # Files (`--root DIR`)
//!
//! - Paths: the query is dropped, `%XX` is decoded; a `..` segment, a NUL,
//!   or a bad escape is refused (400); a path that resolves (through
//!   symlinks) outside the root is not found (404); a directory serves its
//!   `index.html`.
//! - Cache: a file is read once into one buffer of its exact size and kept.
//!   An entry is trusted for [`REVALIDATE_AFTER`]; then one `stat` tells
//!   whether the file changed (length or modification time), and a changed
//!   file is read again. Files over `--max-file-bytes` get 500; when the
//!   cache would pass [`CACHE_BUDGET_BYTES`], it starts over.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use nta_net::{BufSource, RxBuf};

use crate::httpd::buf::{append_bytes, copy_to};
use parking_lot::RwLock;

/// How long a cached file is served without a `stat`.
pub const REVALIDATE_AFTER: Duration = Duration::from_secs(1);

/// Most bytes of files the cache holds.
pub const CACHE_BUDGET_BYTES: usize = 256 << 20;

/// The generated payloads of the built-in site: path and length.
pub const PAYLOADS: [(&str, usize); 6] = [
    ("/1k", 1 << 10),
    ("/4k", 4 << 10),
    ("/16k", 16 << 10),
    ("/64k", 64 << 10),
    ("/256k", 256 << 10),
    ("/1m", 1 << 20),
];

/// A body and its type.
#[derive(Clone, Debug)]
pub struct Content {
    /// The bytes (a buffer from the source, shared).
    pub body: Bytes,
    /// `Content-Type`.
    pub content_type: &'static str,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// Serve this.
    Found(Content),
    /// 404.
    NotFound,
    /// 400: a path that cannot be served from any root.
    BadPath,
    /// 500: a file over `--max-file-bytes`.
    TooLarge,
    /// 503: no buffer for the file.
    Exhausted,
}

/// The content of the server. See the module notes.
#[derive(Debug)]
pub enum Site<S> {
    /// The built-in demo site.
    Demo(HashMap<&'static str, Content>),
    /// Files under a root.
    Files(FileCache<S>),
}

impl<S: BufSource> Site<S> {
    /// The built-in site, made in buffers from `source`.
    pub fn demo(source: &S) -> Result<Site<S>, String> {
        let mut pages = HashMap::new();
        let exhausted = || "payload buffers exhausted while building the demo site".to_string();
        let index = copy_to(source, demo_page().as_bytes()).ok_or_else(exhausted)?;
        pages.insert("/", Content { body: index.clone(), content_type: "text/html; charset=utf-8" });
        pages.insert("/index.html", Content { body: index, content_type: "text/html; charset=utf-8" });
        for (path, len_bytes) in PAYLOADS {
            let body = copy_to(source, &generated_payload(len_bytes)).ok_or_else(exhausted)?;
            pages.insert(path, Content { body, content_type: "text/plain" });
        }
        Ok(Site::Demo(pages))
    }

    /// The files under `root`, cached in buffers from `source`.
    pub fn files(root: &Path, source: S, max_file_bytes: usize) -> Result<Site<S>, String> {
        let root = root.canonicalize().map_err(|e| format!("--root {}: {e}", root.display()))?;
        if !root.is_dir() {
            return Err(format!("--root {}: not a directory", root.display()));
        }
        Ok(Site::Files(FileCache { root, source, max_file_bytes, entries: RwLock::default() }))
    }

    /// What `target` (a request target) names.
    pub fn lookup(&self, target: &str) -> Lookup {
        match self {
            Site::Demo(pages) => {
                let path = target.split(['?', '#']).next().unwrap_or(target);
                pages.get(path).map_or(Lookup::NotFound, |content| Lookup::Found(content.clone()))
            }
            Site::Files(cache) => cache.lookup(target),
        }
    }

    /// A line for the banner.
    pub fn describe(&self) -> String {
        match self {
            Site::Demo(_) => {
                let paths: Vec<&str> = PAYLOADS.iter().map(|(path, _)| *path).collect();
                format!("built-in demo page at /, payloads {}", paths.join(" "))
            }
            Site::Files(cache) => format!("files under {}", cache.root.display()),
        }
    }
}

/// Files under a root, cached. See the module notes.
#[derive(Debug)]
pub struct FileCache<S> {
    root: PathBuf,
    source: S,
    max_file_bytes: usize,
    entries: RwLock<HashMap<String, Entry>>,
}

#[derive(Clone, Debug)]
struct Entry {
    content: Content,
    len_bytes: u64,
    modified: Option<SystemTime>,
    checked_at: Instant,
}

impl<S: BufSource> FileCache<S> {
    fn lookup(&self, target: &str) -> Lookup {
        let Some(relative) = decode_path(target) else {
            return Lookup::BadPath;
        };
        let key = relative.to_string_lossy().into_owned();
        if let Some(entry) = self.entries.read().get(&key) {
            if entry.checked_at.elapsed() < REVALIDATE_AFTER {
                return Lookup::Found(entry.content.clone());
            }
        }
        self.lookup_slow(key, &relative)
    }

    /// Cold: a file not cached yet, or due for a `stat`.
    #[cold]
    #[inline(never)]
    fn lookup_slow(&self, key: String, relative: &Path) -> Lookup {
        let mut path = self.root.join(relative);
        if path.is_dir() {
            path.push("index.html");
        }
        let Ok(path) = path.canonicalize() else {
            return Lookup::NotFound;
        };
        let Ok(metadata) = std::fs::metadata(&path) else {
            return Lookup::NotFound;
        };
        if !path.starts_with(&self.root) || !metadata.is_file() {
            return Lookup::NotFound;
        }
        let (len_bytes, modified) = (metadata.len(), metadata.modified().ok());
        let now = Instant::now();
        if let Some(entry) = self.entries.write().get_mut(&key) {
            if entry.len_bytes == len_bytes && entry.modified == modified {
                entry.checked_at = now;
                return Lookup::Found(entry.content.clone());
            }
        }
        if len_bytes > self.max_file_bytes as u64 {
            return Lookup::TooLarge;
        }
        let body = match read_file(&self.source, &path, len_bytes as usize) {
            Ok(Some(body)) => body,
            Ok(None) => return Lookup::Exhausted,
            Err(_) => return Lookup::NotFound,
        };
        let content = Content { body, content_type: content_type(&path) };
        let mut entries = self.entries.write();
        let cached: usize = entries.values().map(|e| e.content.body.len()).sum();
        if cached + content.body.len() > CACHE_BUDGET_BYTES {
            entries.clear();
        }
        entries.insert(key, Entry { content: content.clone(), len_bytes, modified, checked_at: now });
        Lookup::Found(content)
    }
}

/// The path part of a request target as a relative path: the query and
/// fragment dropped, `%XX` decoded, `.` and empty segments skipped. `None`
/// for a target that is not an absolute path, a bad escape, a NUL, or a
/// `..` segment.
pub fn decode_path(target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?;
    if !path.starts_with('/') {
        return None;
    }
    let mut decoded = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = (bytes.next()? as char).to_digit(16)?;
            let low = (bytes.next()? as char).to_digit(16)?;
            decoded.push((high * 16 + low) as u8);
        } else {
            decoded.push(byte);
        }
    }
    if decoded.contains(&0) {
        return None;
    }
    let decoded = String::from_utf8(decoded).ok()?;
    let mut relative = PathBuf::new();
    for component in Path::new(&decoded).components() {
        match component {
            Component::Normal(segment) => relative.push(segment),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(relative)
}

/// Reads `path`, `len_bytes` long, into one exact buffer from `source`.
/// `Ok(None)` when the source is exhausted.
fn read_file<S: BufSource>(source: &S, path: &Path, len_bytes: usize) -> std::io::Result<Option<Bytes>> {
    let mut file = std::fs::File::open(path)?;
    let Ok(mut buf) = source.try_alloc(len_bytes) else {
        return Ok(None);
    };
    // Zeroed first: `read_exact` wants initialised bytes.
    append_bytes(&mut buf, &vec![0; len_bytes]);
    file.read_exact(&mut buf)?;
    Ok(Some(buf.freeze()))
}

/// `Content-Type` by file extension.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// `len_bytes` of printable text: numbered lines.
pub fn generated_payload(len_bytes: usize) -> Vec<u8> {
    let mut payload = Vec::with_capacity(len_bytes + 64);
    let mut line = 0usize;
    while payload.len() < len_bytes {
        payload.extend_from_slice(
            format!("{line:08} nta-httpd payload abcdefghijklmnopqrstuvwxyz0123456789..\n").as_bytes(),
        );
        line += 1;
    }
    payload.truncate(len_bytes);
    payload
}

fn demo_page() -> String {
    let links: String =
        PAYLOADS.iter().map(|(path, len)| format!("<li><a href=\"{path}\">{path}</a> ({len} bytes)</li>\n")).collect();
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>nta-httpd</title></head>\n<body>\n\
         <h1>nta-httpd</h1>\n<p>Served from NTA packet buffers: every payload on this site lives in the pool.</p>\n\
         <ul>\n{links}<li><a href=\"/stats\">/stats</a> (Prometheus metrics)</li>\n</ul>\n\
         <p><code>curl -d hello http://HOST/echo</code> returns the body.</p>\n</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_and_confined() {
        assert_eq!(decode_path("/a/b.txt?x=1"), Some(PathBuf::from("a/b.txt")));
        assert_eq!(decode_path("/a%20b/./c"), Some(PathBuf::from("a b/c")));
        assert_eq!(decode_path("/"), Some(PathBuf::new()));
        assert_eq!(decode_path("/../etc/passwd"), None);
        assert_eq!(decode_path("/a/%2e%2e/%2e%2e/etc"), None);
        assert_eq!(decode_path("/a%00b"), None);
        assert_eq!(decode_path("/a%zz"), None);
        assert_eq!(decode_path("http://x/a"), None);
    }

    #[test]
    fn generated_payloads_have_their_length() {
        for (_, len) in PAYLOADS {
            assert_eq!(generated_payload(len).len(), len);
        }
        assert!(generated_payload(1000).is_ascii());
    }

    #[test]
    fn files_are_cached_and_revalidated() {
        let dir = std::env::temp_dir().join(format!("nta-site-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/index.html"), "<p>hi</p>").unwrap();
        std::fs::write(dir.join("big.bin"), vec![1u8; 5000]).unwrap();
        let pool = nta_core::Pool::builder().capacity(8 << 20).checked(true).build().unwrap();
        let site = Site::files(&dir, pool.clone(), 4096).unwrap();
        match site.lookup("/sub/") {
            Lookup::Found(content) => {
                assert_eq!(&content.body[..], b"<p>hi</p>");
                assert_eq!(content.content_type, "text/html; charset=utf-8");
                assert!(pool.contains(content.body.as_ptr()), "cached in the pool");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(site.lookup("/big.bin"), Lookup::TooLarge));
        assert!(matches!(site.lookup("/missing"), Lookup::NotFound));
        assert!(matches!(site.lookup("/../x"), Lookup::BadPath));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
