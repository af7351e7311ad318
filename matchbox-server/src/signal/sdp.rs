//! Is this offer or answer one that webrtc-rs (and a browser) can apply to a data-channel
//! connection? Parsed with webrtc-rs's own parser, then every check its `set_remote_description`
//! and `create_answer` would fail on, each a little stricter where browsers are.

use std::collections::HashSet;
use std::io::Cursor;

use rtc_sdp::SessionDescription;
use rtc_sdp::description::common::Attribute;
use rtc_sdp::description::media::MediaDescription;

use super::SentDescription;
use super::candidate;

/// Which side of the exchange the description is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Offer,
    Answer,
}

/// ICE characters (RFC 8839): what browsers accept in `ice-ufrag` and `ice-pwd`.
fn is_ice_chars(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn attribute<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a Attribute> {
    attributes.iter().find(|a| a.key == key)
}

fn value<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a str> {
    attribute(attributes, key).and_then(|a| a.value.as_deref())
}

/// The checks; the error says what is wrong.
pub(super) fn check(role: Role, text: &str) -> Result<SentDescription, String> {
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes()))
        .map_err(|e| format!("does not parse: {e}"))?;
    if parsed.media_descriptions.is_empty() {
        return Err("no media section (a data channel needs m=application)".to_owned());
    }
    let mut mids = Vec::new();
    let mut seen = HashSet::new();
    for media in &parsed.media_descriptions {
        check_media(media)?;
        let mid = value(&media.attributes, "mid").unwrap_or("");
        if mid.is_empty() {
            return Err("a media section has no a=mid".to_owned());
        }
        if mid.len() > 32 || !mid.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a=mid is not a short token".to_owned());
        }
        if !seen.insert(mid) {
            return Err(format!("a=mid:{mid} appears twice"));
        }
        mids.push(mid.to_owned());
    }
    let ufrag = check_ice_credentials(&parsed)?;
    check_fingerprint(&parsed)?;
    check_setup(role, &parsed)?;
    Ok(SentDescription { mids, ufrag })
}

/// matchbox negotiates data channels only: any other section fails webrtc-rs's answer path
/// (no transceiver has its `mid`) or its codec negotiation.
fn check_media(media: &MediaDescription) -> Result<(), String> {
    let name = &media.media_name;
    if name.media != "application" || name.formats != ["webrtc-datachannel"] {
        return Err(format!(
            "only data-channel sections (m=application … webrtc-datachannel) are relayed, not m={}",
            name.media
        ));
    }
    for attr in &media.attributes {
        match attr.key.as_str() {
            "candidate" => {
                let line = attr
                    .value
                    .as_deref()
                    .ok_or("an a=candidate line is empty")?;
                candidate::check_line(line)?;
            }
            "sctp-port" => {
                attr.value
                    .as_deref()
                    .and_then(|v| v.parse::<u16>().ok())
                    .ok_or("a=sctp-port is not a port")?;
            }
            "max-message-size" => {
                attr.value
                    .as_deref()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or("a=max-message-size is not a number")?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// As webrtc-rs's `extract_ice_details`: one ufrag and one pwd for the session (sections marked
/// inactive only as a fallback), never conflicting; plus the length and characters of RFC 8839
/// that browsers enforce.
fn check_ice_credentials(parsed: &SessionDescription) -> Result<String, String> {
    let mut ufrag = value(&parsed.attributes, "ice-ufrag");
    let mut pwd = value(&parsed.attributes, "ice-pwd");
    let mut backup = (None, None);
    for media in &parsed.media_descriptions {
        let (m_ufrag, m_pwd) = (
            value(&media.attributes, "ice-ufrag"),
            value(&media.attributes, "ice-pwd"),
        );
        if attribute(&media.attributes, "inactive").is_some() {
            backup.0 = backup.0.or(m_ufrag);
            backup.1 = backup.1.or(m_pwd);
            continue;
        }
        ufrag = ufrag.or(m_ufrag);
        pwd = pwd.or(m_pwd);
        if m_ufrag.is_some() && m_ufrag != ufrag {
            return Err("conflicting a=ice-ufrag values".to_owned());
        }
        if m_pwd.is_some() && m_pwd != pwd {
            return Err("conflicting a=ice-pwd values".to_owned());
        }
    }
    let ufrag = ufrag.or(backup.0).ok_or("no a=ice-ufrag")?;
    let pwd = pwd.or(backup.1).ok_or("no a=ice-pwd")?;
    if !(4..=256).contains(&ufrag.len()) || !is_ice_chars(ufrag) {
        return Err("a=ice-ufrag must be 4 to 256 ICE characters".to_owned());
    }
    if !(22..=256).contains(&pwd.len()) || !is_ice_chars(pwd) {
        return Err("a=ice-pwd must be 22 to 256 ICE characters".to_owned());
    }
    Ok(ufrag.to_owned())
}

/// As webrtc-rs's `extract_fingerprint` (present, all equal, `<algorithm> <value>`), and a
/// SHA-256 one, which is what webrtc-rs verifies (any other fails the DTLS handshake) and what
/// every browser sends.
fn check_fingerprint(parsed: &SessionDescription) -> Result<(), String> {
    let mut fingerprints: Vec<&str> = value(&parsed.attributes, "fingerprint")
        .into_iter()
        .collect();
    fingerprints.extend(
        parsed
            .media_descriptions
            .iter()
            .filter_map(|m| value(&m.attributes, "fingerprint")),
    );
    let first = *fingerprints.first().ok_or("no a=fingerprint")?;
    if fingerprints.iter().any(|f| *f != first) {
        return Err("conflicting a=fingerprint values".to_owned());
    }
    let (algorithm, digest) = first
        .split_once(' ')
        .ok_or("a=fingerprint is not '<algorithm> <value>'")?;
    if !algorithm.eq_ignore_ascii_case("sha-256") {
        return Err("a=fingerprint must be sha-256".to_owned());
    }
    let bytes: Vec<&str> = digest.split(':').collect();
    if bytes.len() != 32
        || !bytes
            .iter()
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err("a=fingerprint is not 32 hex bytes".to_owned());
    }
    Ok(())
}

/// Each section says who starts DTLS (RFC 8842): an offer may leave it open (`actpass`), an
/// answer must choose; an answer that does not leaves both sides waiting forever.
fn check_setup(role: Role, parsed: &SessionDescription) -> Result<(), String> {
    let session = value(&parsed.attributes, "setup");
    for media in &parsed.media_descriptions {
        let setup = value(&media.attributes, "setup")
            .or(session)
            .ok_or("no a=setup")?;
        let allowed: &[&str] = match role {
            Role::Offer => &["actpass", "active", "passive"],
            Role::Answer => &["active", "passive"],
        };
        if !allowed.contains(&setup) {
            return Err(format!("a=setup:{setup} is not allowed in an {role:?}"));
        }
    }
    Ok(())
}
