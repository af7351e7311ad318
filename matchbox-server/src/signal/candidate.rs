//! Is this trickled candidate one the receiver can add? Its JSON is the `RTCIceCandidateInit`
//! both matchbox sockets send, its line parses with webrtc-rs's own candidate parser (`rtc-ice`)
//! and with RFC 8839's grammar that browsers hold it to, and it names a section of a
//! description its sender sent the same receiver.

use serde::Deserialize;

use super::SentDescription;

/// The JSON of `RTCIceCandidateInit`: native matchbox sends
/// `{"candidate":"candidate:…","sdpMid":"","sdpMLineIndex":0}`, browsers add
/// `usernameFragment`, and the browser socket sends `null` when gathering ends.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateInit {
    candidate: String,
    #[serde(default)]
    sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default)]
    sdp_mline_index: Option<u16>,
    #[serde(default)]
    username_fragment: Option<String>,
}

/// Checks an `IceCandidate` signal's JSON text.
pub(super) fn check(json: &str, sent: Option<&SentDescription>) -> Result<(), String> {
    if json.trim() == "null" {
        return Ok(());
    }
    let init: CandidateInit =
        serde_json::from_str(json).map_err(|e| format!("not a candidate init: {e}"))?;
    if !init.candidate.is_empty() {
        let line = init
            .candidate
            .strip_prefix("candidate:")
            .ok_or("the candidate does not start with 'candidate:'")?;
        check_line(line)?;
    }
    let sent = sent.ok_or("sent before any offer or answer to this peer")?;
    match (init.sdp_mid.as_deref(), init.sdp_mline_index) {
        (Some(mid), _) if !mid.is_empty() => {
            if !sent.mids.iter().any(|m| m == mid) {
                return Err(format!(
                    "sdpMid {mid:?} names no section of its description"
                ));
            }
        }
        (_, Some(index)) => {
            if usize::from(index) >= sent.mids.len() {
                return Err(format!(
                    "sdpMLineIndex {index} names no section of its description"
                ));
            }
        }
        _ => return Err("neither sdpMid nor sdpMLineIndex is given".to_owned()),
    }
    if let Some(ufrag) = init.username_fragment.as_deref()
        && !ufrag.is_empty()
        && ufrag != sent.ufrag
    {
        return Err("usernameFragment is not its description's".to_owned());
    }
    Ok(())
}

fn is_port(text: &str) -> bool {
    text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

fn is_address(text: &str, mdns_allowed: bool) -> bool {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    // Browsers hide host addresses behind mDNS names (`<uuid>.local`).
    mdns_allowed
        && text.len() <= 253
        && text.ends_with(".local")
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Checks a candidate line without its `candidate:` prefix, as in an SDP `a=candidate:` line.
pub(super) fn check_line(line: &str) -> Result<(), String> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let bad = |what: &str| Err(format!("candidate {what}"));
    if fields.len() < 8 || !fields.len().is_multiple_of(2) {
        return bad("does not have its fields (and extensions in pairs)");
    }
    let foundation = fields[0];
    if foundation.is_empty()
        || foundation.len() > 32
        || !foundation
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return bad("foundation is not 1 to 32 ICE characters");
    }
    if !matches!(fields[1].parse::<u16>(), Ok(1..=256)) || fields[1].len() > 3 {
        return bad("component is not 1 to 256");
    }
    if !fields[2].eq_ignore_ascii_case("udp") && !fields[2].eq_ignore_ascii_case("tcp") {
        return bad("transport is not udp or tcp");
    }
    if fields[3].len() > 10 || fields[3].parse::<u32>().is_err() {
        return bad("priority is not a 32-bit number");
    }
    let kind = fields[7];
    if !is_address(fields[4], kind == "host") {
        return bad("address is not an IP address (or a host's .local name)");
    }
    if !is_port(fields[5]) {
        return bad("port is not a port");
    }
    if fields[6] != "typ" || !matches!(kind, "host" | "srflx" | "prflx" | "relay") {
        return bad("type is not 'typ host|srflx|prflx|relay'");
    }
    for pair in fields[8..].chunks_exact(2) {
        let ok = match pair[0] {
            "raddr" => is_address(pair[1], true),
            "rport" => is_port(pair[1]),
            "tcptype" => matches!(pair[1], "active" | "passive" | "so"),
            name => {
                !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }
        };
        if !ok {
            return bad(&format!("extension {:?} is malformed", pair[0]));
        }
    }
    // And webrtc-rs's own parser, which is what a native receiver runs.
    rtc_ice::candidate::unmarshal_candidate(line)
        .map(|_| ())
        .map_err(|e| format!("candidate does not parse: {e}"))
}
