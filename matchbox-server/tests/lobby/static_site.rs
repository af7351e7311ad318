//! The static directory (`--static-dir`, the wasm demo): a file's `.gz` sibling when the client
//! accepts gzip, the types browsers insist on (`application/wasm` for streaming compilation),
//! `Cache-Control: no-cache` with ETag revalidation (the build's names are not content-hashed),
//! and `Vary: Accept-Encoding`.

use std::path::PathBuf;

use crate::support::client::*;

/// The first bytes of any wasm module: magic and version.
const WASM: &[u8] = b"\0asm\x01\0\0\0";
/// `WASM` gzip-compressed (`python3 -c 'import gzip; print(list(gzip.compress(b"\0asm\x01\0\0\0",
/// mtime=0)))'`): the lobby sends it as it is, but a real one keeps the test honest.
const WASM_GZ: &[u8] = &[
    31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 99, 72, 44, 206, 101, 100, 96, 96, 0, 0, 206, 51, 75, 28, 8,
    0, 0, 0,
];
const INDEX: &str = "<!doctype html><h1>demo</h1>";
const SCRIPT: &str = "export default function init() {}";

/// A directory removed when dropped, also when the test fails.
struct Site(PathBuf);

impl Site {
    /// What `web/build.sh` leaves: the page, wasm-bindgen's glue, the module and its `.gz`.
    fn demo(name: &str) -> Site {
        let dir = std::env::temp_dir().join(format!("peersync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), INDEX).unwrap();
        std::fs::write(dir.join("demo.js"), SCRIPT).unwrap();
        std::fs::write(dir.join("demo_bg.wasm"), WASM).unwrap();
        std::fs::write(dir.join("demo_bg.wasm.gz"), WASM_GZ).unwrap();
        Site(dir)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The headers every answer about a file carries.
fn assert_cache_headers(response: &HttpResponse, what: &str) {
    assert_eq!(
        response.header("cache-control"),
        Some("no-cache"),
        "{what}: the browser should revalidate every file, since the names are not content-hashed"
    );
    assert!(
        response.headers.iter().any(|(name, value)| name == "vary"
            && value.to_ascii_lowercase().contains("accept-encoding")),
        "{what}: a cache between lobby and browser should key on Accept-Encoding: {:?}",
        response.headers
    );
}

#[tokio::test]
async fn the_wasm_module_is_sent_gzipped_to_clients_that_accept_it() {
    let site = Site::demo("gzip");
    let lobby = lobby(|config| config.static_dir = Some(site.0.clone())).await;

    let gzipped = request(
        &lobby,
        "GET",
        "/demo_bg.wasm",
        "Accept-Encoding: gzip, deflate, br\r\n",
    )
    .await;
    assert_eq!(gzipped.status, 200);
    assert_eq!(
        gzipped.header("content-encoding"),
        Some("gzip"),
        "a client accepting gzip should get the .gz sibling"
    );
    assert_eq!(gzipped.body, WASM_GZ, "the body should be the .gz file");
    assert_eq!(
        gzipped.header("content-type"),
        Some("application/wasm"),
        "the module's type, not gzip's: streaming compilation needs it"
    );
    assert_cache_headers(&gzipped, "the gzipped module");

    for accept in [
        "",
        "Accept-Encoding: identity\r\n",
        "Accept-Encoding: gzip;q=0\r\n",
    ] {
        let plain = request(&lobby, "GET", "/demo_bg.wasm", accept).await;
        assert_eq!(plain.status, 200);
        assert_eq!(
            plain.header("content-encoding"),
            None,
            "{accept:?}: a client that does not accept gzip should get the file itself"
        );
        assert_eq!(
            plain.body, WASM,
            "{accept:?}: the body should be the module"
        );
        assert_eq!(plain.header("content-type"), Some("application/wasm"));
        assert_cache_headers(&plain, "the plain module");
    }
    let brotli_only = request(&lobby, "GET", "/demo_bg.wasm", "Accept-Encoding: br\r\n").await;
    assert_eq!(
        (
            brotli_only.header("content-encoding"),
            brotli_only.body.as_slice()
        ),
        (None, WASM),
        "without a .br sibling a brotli-only client should get the file itself"
    );

    let head = request(&lobby, "HEAD", "/demo_bg.wasm", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    assert_eq!(
        head.header("content-length"),
        Some(WASM_GZ.len().to_string().as_str()),
        "HEAD should announce the size of what GET would send"
    );
    assert!(head.body.is_empty(), "HEAD has no body");
    lobby.shutdown().await;
}

#[tokio::test]
async fn an_unchanged_file_is_revalidated_without_its_body() {
    let site = Site::demo("revalidate");
    let lobby = lobby(|config| config.static_dir = Some(site.0.clone())).await;
    for accept in ["Accept-Encoding: gzip\r\n", ""] {
        let first = request(&lobby, "GET", "/demo_bg.wasm", accept).await;
        let etag = first
            .header("etag")
            .unwrap_or_else(|| panic!("{accept:?}: a file should carry an ETag to revalidate with"))
            .to_owned();
        let again = request(
            &lobby,
            "GET",
            "/demo_bg.wasm",
            &format!("{accept}If-None-Match: {etag}\r\n"),
        )
        .await;
        assert_eq!(
            again.status, 304,
            "{accept:?}: the browser's copy is current, so no body should be sent again"
        );
        assert!(again.body.is_empty());
        assert_cache_headers(&again, "a 304");
    }
    let plain = request(&lobby, "GET", "/demo_bg.wasm", "").await;
    let gzipped_etag = request(&lobby, "GET", "/demo_bg.wasm", "Accept-Encoding: gzip\r\n")
        .await
        .header("etag")
        .map(str::to_owned);
    assert_ne!(
        plain.header("etag").map(str::to_owned),
        gzipped_etag,
        "the two encodings are different bytes, so different validators"
    );
    lobby.shutdown().await;
}

#[tokio::test]
async fn the_page_and_its_script_have_their_types() {
    let site = Site::demo("types");
    let lobby = lobby(|config| config.static_dir = Some(site.0.clone())).await;
    for path in ["/", "/index.html"] {
        let page = request(&lobby, "GET", path, "Accept-Encoding: gzip\r\n").await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.body, INDEX.as_bytes(), "{path}: the page");
        assert_eq!(
            page.header("content-encoding"),
            None,
            "{path}: no .gz sibling"
        );
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_cache_headers(&page, path);
    }
    let script = request(&lobby, "GET", "/demo.js", "").await;
    assert_eq!(script.body, SCRIPT.as_bytes());
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8"),
        "a module script needs a JavaScript type"
    );
    assert_cache_headers(&script, "the script");

    for path in [
        "/missing.wasm",
        "/..%2f..%2fetc%2fpasswd",
        "/%00",
        "/demo.js/x",
    ] {
        let status = request(&lobby, "GET", path, "").await.status;
        assert!(
            status == 404 || status == 400,
            "{path}: a file that is not in the directory should be refused, got {status}"
        );
    }
    // A WebSocket upgrade on the same path still joins the default room.
    let (_ws, _) = join(&lobby, "/").await;
    lobby.shutdown().await;
}
