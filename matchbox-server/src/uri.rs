//! What a request's URL says: the room its path names and its query parameters.
//!
//! Pure functions over strings, so the rules for room names (which also decide which names can
//! never be rooms, e.g. the reserved `/admin`) are tested without a socket.

use std::collections::HashMap;

/// Longest room name, in bytes: long enough for any game's naming scheme, short enough that
/// room names cannot be used to make the lobby hold much memory per room.
pub const MAX_ROOM_NAME: usize = 128;

/// The room a path names: the path without its leading `/`, percent-decoded.
///
/// A name may not contain `/` (so sharding proxies that hash the path see one room per name, and
/// names starting with `/` are free for reserved scopes such as admin tokens) nor control
/// characters (they would end up in logs and the lobby browser).
pub fn room_name(path: &str) -> Result<String, String> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    let name =
        percent_decode(raw, false).ok_or_else(|| "room name is not valid UTF-8".to_owned())?;
    if name.len() > MAX_ROOM_NAME {
        return Err(format!("room name longer than {MAX_ROOM_NAME} bytes"));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err("room name may not contain '/' or control characters".to_owned());
    }
    Ok(name)
}

/// Decodes `%XX` escapes (and `+` as a space in query strings); `None` if malformed or not
/// UTF-8.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                // Two hex digits: `from_str_radix` alone would also take a sign (`%+1`).
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The query's parameters, decoded; malformed pairs are skipped (a later check refuses what
/// it needed and did not find), and of repeated keys the last wins.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(key, true)?, percent_decode(value, true)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert_eq!(room_name("/"), Ok(String::new()));
        assert_eq!(room_name("/my%20room"), Ok("my room".to_owned()));
        assert_eq!(room_name("/a+b"), Ok("a+b".to_owned()));
        assert!(room_name("/a/b").is_err());
        assert!(room_name("/a%2Fb").is_err());
        assert!(room_name("/%zz").is_err());
        assert!(room_name("/%e9").is_err(), "not UTF-8");
        assert!(room_name("/%").is_err());
        assert!(room_name("/%+1").is_err(), "a sign is not a hex digit");
        assert!(room_name(&format!("/{}", "x".repeat(200))).is_err());
        assert!(room_name("/a%0Ab").is_err(), "control characters");
    }

    #[test]
    fn queries() {
        let query = parse_query("next=2&token=a%2Bb&&flag");
        assert_eq!(query.get("next").map(String::as_str), Some("2"));
        assert_eq!(query.get("token").map(String::as_str), Some("a+b"));
        assert_eq!(query.get("flag").map(String::as_str), Some(""));
        assert!(parse_query("bad=%zz").is_empty());
    }
}
