//! The built web page (`--static-dir`, the wasm demo), served so that it loads quickly and never
//! mixes two builds.
//!
//! - **Compressed when the client accepts it.** A file's `.br` or `.gz` sibling (written by the
//!   build next to it) is sent instead, with `Content-Encoding`; the release `.wasm` shrinks to
//!   about a fifth. The sibling is sent as it is: the build must write both together.
//! - **Types browsers insist on.** `application/wasm` for `.wasm`, which
//!   `WebAssembly.instantiateStreaming` requires (without it wasm-bindgen's loader falls back to
//!   downloading the whole module before compiling it); `text/javascript` for module scripts;
//!   UTF-8 for text.
//! - **`Cache-Control: no-cache` on every file.** The build's names are not content-hashed:
//!   `demo.js` and `demo_bg.wasm` keep their names from one build to the next, and wasm-bindgen's
//!   glue only works with the module it was generated with. With a `max-age`, a browser could
//!   run a cached `demo.js` against a new `demo_bg.wasm` (or the reverse) until both expired, and
//!   fail at instantiation. `no-cache` lets the browser keep its copies but ask first: each load
//!   costs a conditional request per file (`If-None-Match` with the file's ETag, from its size
//!   and modification time), answered `304 Not Modified` with no body when nothing changed.
//! - **`Vary: Accept-Encoding`** on every answer about a file, so a cache between the lobby and a player never
//!   hands a compressed body to a client that did not ask for one.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use std::path::Path;
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// A static directory and how its files are sent.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    files: ServeDir,
}

impl Site {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            files: ServeDir::new(dir)
                .append_index_html_on_directories(true)
                .precompressed_br()
                .precompressed_gzip(),
        }
    }

    /// Answers a GET or HEAD for a file of the site.
    pub(crate) async fn serve(&self, request: Request) -> Response {
        let content_type = content_type(request.uri().path());
        let response = match self.files.clone().oneshot(request).await {
            Ok(response) => response.map(Body::new),
            Err(infallible) => match infallible {},
        };
        finish(response, content_type)
    }
}

/// The `Content-Type` for a requested path where the lobby knows better than a guess from the
/// extension; `None` leaves ServeDir's guess. A path ending in `/` is its `index.html`.
fn content_type(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or("");
    let extension = match name.rsplit_once('.') {
        Some((_, extension)) => extension,
        None if name.is_empty() => "html",
        None => return None,
    };
    Some(match extension.to_ascii_lowercase().as_str() {
        "wasm" => "application/wasm",
        "html" | "htm" => "text/html; charset=utf-8",
        // RFC 9239: `text/javascript` is the one JavaScript type.
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        _ => return None,
    })
}

/// Sets the caching headers on an answer about a file (200, 206, 304), and on a file its
/// content type.
fn finish(mut response: Response, content_type: Option<&'static str>) -> Response {
    let status = response.status();
    if !status.is_success() && status != StatusCode::NOT_MODIFIED {
        return response;
    }
    let headers = response.headers_mut();
    if let Some(content_type) = content_type
        && status.is_success()
    {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let varies = headers.get_all(header::VARY).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|name| name.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_path() {
        assert_eq!(content_type("/demo_bg.wasm"), Some("application/wasm"));
        assert_eq!(
            content_type("/demo.js"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(content_type("/"), Some("text/html; charset=utf-8"));
        assert_eq!(
            content_type("/games/INDEX.HTML"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(content_type("/logo.png"), None, "left to ServeDir's guess");
        assert_eq!(content_type("/LICENSE"), None);
    }
}
